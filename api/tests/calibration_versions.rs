//! Calibration versions against the real server: each recalibration linked onto the scale
//! of the active version, candidates that wait for an educator, and activation.

mod common;

use std::path::Path;

use common::{Server, ServerOptions, write_bank};
use examflow_engine::irt::SplitMix64;
use serde_json::{Value, json};

const ITEMS: usize = 10;

fn start(dir: &Path, config: &str) -> Server {
    let banks = dir.join("banks");
    write_bank(&banks, "algebra", ITEMS, |i| {
        format!("Question {i}: which option is right?")
    });
    let mut options = ServerOptions::new(&dir.join("data"));
    options.banks = banks;
    let path = dir.join("examflow-test.toml");
    std::fs::write(&path, config).unwrap();
    options.config_file = Some(path);
    Server::start(options)
}

/// Submits the fixed-form exam for `n` students with θ ~ N(mean, 1), answering from a 2PL
/// model (a = 1.4, b from −1.5 to 1.5 in bank order).
async fn submit_simulated(server: &Server, first: usize, n: usize, mean: f64, seed: u64) {
    submit_with(server, first, n, mean, seed, &[]).await;
}

/// [`submit_simulated`], but the items in `misfitting` follow a U-shaped curve: students
/// far from the average get them right, average ones wrong (no monotone model fits that).
async fn submit_with(
    server: &Server,
    first: usize,
    n: usize,
    mean: f64,
    seed: u64,
    misfitting: &[usize],
) {
    let mut rng = SplitMix64::new(seed);
    for s in first..first + n {
        let token = server.token(&format!("s{s}@example.com"), "student");
        let theta = mean + rng.normal();
        let answers: Vec<Value> = (0..ITEMS)
            .map(|i| {
                let b = -1.5 + 3.0 * i as f64 / (ITEMS - 1) as f64;
                let p = if misfitting.contains(&i) {
                    1.0 / (1.0 + (-3.0 * ((theta - mean).abs() - 0.8)).exp())
                } else {
                    1.0 / (1.0 + (-1.4 * (theta - b)).exp())
                };
                json!(if rng.uniform() < p { "right" } else { "wrong" })
            })
            .collect();
        let (status, body) = server
            .post(
                "/api/exams/algebra/submissions",
                Some(&token),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

fn difficulties(calibration: &Value) -> Vec<f64> {
    calibration["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["b"].as_f64().unwrap())
        .collect()
}

/// Version 1 defines the scale; version 2 is fitted after abler students (θ ~ N(1, 1))
/// joined, so on its own N(0, 1) scale every item looks about 0.5 easier. Linked, its
/// difficulties stay where version 1 put them. With `auto = false` it waits as a
/// candidate: sessions keep starting on version 1 until an educator activates it.
#[tokio::test]
async fn a_recalibration_is_linked_to_the_active_scale_and_waits_for_activation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "[adaptive]\nmin_item_responses = 50\n[adaptive.activation]\nauto = false\n",
    );
    let educator = server.token("ed@example.com", "educator");
    let student = server.token("ada@example.com", "student");
    submit_simulated(&server, 0, 400, 0.0, 7).await;
    let calibrate = "/api/exams/algebra/calibrate";
    let (status, first) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["version"], 1);
    assert_eq!(
        first["status"], "active",
        "the first version always goes live"
    );
    assert_eq!(first["summary"]["linking"]["status"], "first", "{first}");

    submit_simulated(&server, 400, 400, 1.0, 8).await;
    let (status, second) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["version"], 2);
    assert_eq!(second["status"], "candidate", "{second}");
    let linking = &second["summary"]["linking"];
    assert_eq!(linking["status"], "linked", "{linking}");
    assert_eq!(linking["method"], "stocking_lord");
    // The fit's population has mean 0.5 and SD √1.25 ≈ 1.12 on version 1's scale.
    let (big_a, big_b) = (
        linking["A"].as_f64().unwrap(),
        linking["B"].as_f64().unwrap(),
    );
    assert!((big_a - 1.12).abs() < 0.15, "A = {big_a}");
    assert!((big_b - 0.5).abs() < 0.15, "B = {big_b}");
    assert_eq!(
        linking["anchors"].as_array().unwrap().len(),
        ITEMS,
        "{linking}"
    );
    assert_eq!(linking["drift"].as_array().unwrap().len(), ITEMS);
    let (b1, b2) = (difficulties(&first), difficulties(&second));
    let moved: f64 = b1.iter().zip(&b2).map(|(x, y)| (x - y).abs()).sum::<f64>() / ITEMS as f64;
    assert!(
        moved < 0.15,
        "linked difficulties moved by {moved} on average: {b1:?} {b2:?}"
    );
    let reasons = &second["summary"]["activation"];
    assert_eq!(reasons["auto"], false);
    assert_eq!(reasons["replaces"], 1);

    // Sessions start on the active version, reports and the listing say which it is.
    let session = "/api/adaptive/algebra/sessions";
    let (status, started) = server.post(session, Some(&student), &json!({})).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["calibration_version"], 1);
    let (_, listed) = server
        .get("/api/exams/algebra/calibrations", Some(&educator))
        .await;
    let statuses: Vec<(i64, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(2, "candidate"), (1, "active")]);

    // Only staff activate, only versions that exist.
    let activate = "/api/exams/algebra/calibrations/2/activate";
    let (status, _) = server.post(activate, Some(&student), &json!({})).await;
    assert_eq!(status, 403);
    let (status, body) = server
        .post(
            "/api/exams/algebra/calibrations/9/activate",
            Some(&educator),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let (status, active) = server.post(activate, Some(&educator), &json!({})).await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["status"], "active");
    let other = server.token("bo@example.com", "student");
    let (status, started) = server.post(session, Some(&other), &json!({})).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["calibration_version"], 2);
    let (_, one) = server
        .get("/api/exams/algebra/calibrations/1", Some(&educator))
        .await;
    assert_eq!(one["status"], "retired");

    // Rolling back: version 1 again.
    let (status, back) = server
        .post(
            "/api/exams/algebra/calibrations/1/activate",
            Some(&educator),
            &json!({}),
        )
        .await;
    assert_eq!((status, back["status"].as_str()), (200, Some("active")));
    let third = server.token("cy@example.com", "student");
    let (_, started) = server.post(session, Some(&third), &json!({})).await;
    assert_eq!(started["calibration_version"], 1);
}

/// With the checks on (the default), the same recalibration goes live by itself; one
/// whose anchors are too few for `min_anchor_items` waits with that reason.
#[tokio::test]
async fn checks_decide_whether_a_recalibration_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "[adaptive]\nmin_item_responses = 50\n");
    let educator = server.token("ed@example.com", "educator");
    submit_simulated(&server, 0, 300, 0.0, 11).await;
    let calibrate = "/api/exams/algebra/calibrate";
    let (_, first) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(first["status"], "active");
    submit_simulated(&server, 300, 300, 0.5, 12).await;
    let (status, second) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["status"], "active", "{second}");
    assert_eq!(second["summary"]["activation"]["checks_passed"], true);
    assert_eq!(second["summary"]["linking"]["status"], "linked");
    drop(server);

    let server = start(
        dir.path(),
        "[adaptive]\nmin_item_responses = 50\n[adaptive.activation]\nmin_anchor_items = 20\n",
    );
    let educator = server.token("ed@example.com", "educator");
    submit_simulated(&server, 600, 100, 0.0, 13).await;
    let (status, third) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{third}");
    assert_eq!(third["version"], 3);
    assert_eq!(third["status"], "candidate", "{third}");
    let reasons = third["summary"]["activation"]["reasons"]
        .as_array()
        .unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("min_anchor_items is 20")),
        "{reasons:?}"
    );
}

/// Two of ten items that no monotone curve fits: the recalibration flags both (S-X2) with
/// their reasons, and waits as a candidate because 20 % misfit (the default allows 10 %).
/// The fit statistics are stored with the version.
#[tokio::test]
async fn misfitting_items_keep_a_recalibration_from_going_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "[adaptive]\nmin_item_responses = 50\n");
    let educator = server.token("ed@example.com", "educator");
    submit_simulated(&server, 0, 300, 0.0, 21).await;
    let calibrate = "/api/exams/algebra/calibrate";
    let (_, first) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(first["status"], "active");
    let fit = &first["summary"]["fit"];
    assert_eq!(fit["n_complete"], 300, "{fit}");
    assert_eq!(fit["items"].as_array().unwrap().len(), ITEMS);
    assert!(
        fit["persons"]["with_statistic"].as_u64().unwrap() > 250,
        "{fit}"
    );

    submit_with(&server, 300, 900, 0.0, 22, &[2, 6]).await;
    let (status, second) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["status"], "candidate", "{second}");
    let fit = &second["summary"]["fit"];
    let misfitting: Vec<&str> = fit["misfitting_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ids: Vec<String> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_string())
        .collect();
    assert!(
        misfitting.contains(&ids[2].as_str()) && misfitting.contains(&ids[6].as_str()),
        "{misfitting:?}"
    );
    let reasons = second["summary"]["activation"]["reasons"].to_string();
    assert!(reasons.contains("items misfit"), "{reasons}");
    let flags = second["items"][2]["flags"].to_string();
    assert!(flags.contains("misfit: S-X2"), "{flags}");
    // Stored: the version read back carries the same statistics.
    let (_, stored) = server
        .get("/api/exams/algebra/calibrations/2", Some(&educator))
        .await;
    assert_eq!(stored["summary"]["fit"], *fit);
}

/// `linking = "fixed_anchors"`: the second version holds the anchors at version 1's
/// parameters and estimates the students' distribution (about N(0.5, 1.12²) on version 1's
/// scale, as in the linking test), so the other items and the scale stay put.
#[tokio::test]
async fn fixed_anchors_hold_the_active_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "[adaptive]\nmin_item_responses = 50\nlinking = \"fixed_anchors\"\n",
    );
    let educator = server.token("ed@example.com", "educator");
    submit_simulated(&server, 0, 400, 0.0, 7).await;
    let calibrate = "/api/exams/algebra/calibrate";
    let (_, first) = server.post(calibrate, Some(&educator), &json!({})).await;
    submit_simulated(&server, 400, 400, 1.0, 8).await;
    let (status, second) = server.post(calibrate, Some(&educator), &json!({})).await;
    assert_eq!(status, 201, "{second}");
    let linking = &second["summary"]["linking"];
    assert_eq!(linking["status"], "fixed_anchors", "{linking}");
    assert_eq!(linking["method"], "fixed_anchors");
    let mean = linking["latent_mean"].as_f64().unwrap();
    let sd = linking["latent_sd"].as_f64().unwrap();
    assert!(
        (mean - 0.5).abs() < 0.15 && (sd - 1.12).abs() < 0.15,
        "{mean} {sd}"
    );
    let anchors: Vec<&str> = linking["anchors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(anchors.len() >= 8, "{linking}");
    for (old, new) in first["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["items"].as_array().unwrap())
    {
        if anchors.contains(&old["item"].as_str().unwrap()) {
            assert_eq!(old["a"], new["a"], "an anchor is held");
            assert_eq!(old["b"], new["b"], "an anchor is held");
        }
    }
    let (b1, b2) = (difficulties(&first), difficulties(&second));
    let moved: f64 = b1.iter().zip(&b2).map(|(x, y)| (x - y).abs()).sum::<f64>() / ITEMS as f64;
    assert!(moved < 0.15, "difficulties moved by {moved} on average");
    assert_eq!(second["status"], "active", "{second}");
}

//! Score reports over HTTP and from the command line: a real server, results submitted as
//! students, the report in every format, the roles, the errors, and `examflow report`
//! offline from the same data dir.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, ServerOptions, answer_key, eventually, sample_banks, wrong_answers};
use serde_json::{Value, json};

const EXAM: &str = "intro-statistics";

/// Submits `n` results; student `i` answers the first `i % 11` questions right.
async fn submit_results(server: &Server, n: usize) -> Vec<u64> {
    let key = answer_key(&sample_banks(), EXAM);
    let wrong = wrong_answers(&sample_banks(), EXAM);
    let mut scores = Vec::new();
    for i in 0..n {
        let right = i % (key.len() + 1);
        let answers: Vec<&String> = (0..key.len())
            .map(|q| if q < right { &key[q] } else { &wrong[q] })
            .collect();
        let token = server.token(&format!("student{i}@example.org"), "student");
        let (status, doc) = server
            .post(
                &format!("/api/exams/{EXAM}/submissions"),
                Some(&token),
                &json!({ "answers": answers }),
            )
            .await;
        assert_eq!(status, 201, "{doc}");
        scores.push(right as u64);
    }
    scores
}

async fn get_raw(
    server: &Server,
    path: &str,
    token: &str,
    accept: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut req = server.client.get(server.url(path)).bearer_auth(token);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn reports_in_every_format_for_staff_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let scores = submit_results(&server, 24).await;
    let educator = server.token("teacher@example.org", "educator");
    let path = format!("/api/reports/exams/{EXAM}");

    // Stored results reach the lake's tail at once; the report reads the live tables.
    let report = eventually(Duration::from_secs(10), || async {
        let (status, report) = server.get(&path, Some(&educator)).await;
        assert_eq!(status, 200, "{report}");
        (report["summary"]["results"] == 24).then_some(report)
    })
    .await
    .expect("the report counts all 24 results");
    let summary = &report["summary"];
    assert_eq!(summary["takers"], 24);
    let mean_score = scores.iter().sum::<u64>() as f64 / 24.0;
    assert!((summary["mean_score"].as_f64().unwrap() - mean_score).abs() < 1e-9);
    // The pass mark is 50%.
    let passed = scores.iter().filter(|&&s| s >= 5).count() as u64;
    assert_eq!(summary["passed"], passed, "{summary}");
    assert_eq!(summary["failed"], 24 - passed);
    let histogram = report["histogram"].as_array().unwrap();
    assert_eq!(histogram.len(), 10);
    let hist_total: u64 = histogram.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(hist_total, 24);
    // The last bin holds 90% and 100%.
    let top = scores.iter().filter(|&&s| s >= 9).count() as u64;
    assert_eq!(histogram[9]["count"], top);
    assert_eq!(
        histogram[0]["count"],
        scores.iter().filter(|&&s| s == 0).count() as u64
    );
    let items = report["items"].as_array().unwrap();
    let key = answer_key(&sample_banks(), EXAM);
    assert_eq!(items.len(), key.len());
    // Question q is right for students with i % 11 > q: p-value falls with q.
    let p: Vec<f64> = items
        .iter()
        .map(|i| i["p_value"].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    assert!(
        items
            .iter()
            .all(|i| i["item"].is_string() && i["flags"].is_array())
    );
    assert_eq!(report["reliability"]["persons"], 24);
    assert!(report["reliability"]["alpha"].as_f64().unwrap() > 0.8);
    assert_eq!(report["students"].as_array().unwrap().len(), 24);
    assert!(!report["trend"].as_array().unwrap().is_empty());
    let distractors = report["distractors"].as_array().unwrap();
    assert!(distractors.iter().any(|d| d["is_key"] == true));
    // Bank options nobody chose are listed too: 4 options × 10 questions.
    assert_eq!(distractors.len(), 40, "{distractors:?}");

    // HTML by Accept, as a browser asks.
    let (status, content_type, body) = get_raw(
        &server,
        &path,
        &educator,
        Some("text/html,application/xhtml+xml,*/*;q=0.8"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<svg class=\"chart\""));
    assert!(html.contains("Score report: intro-statistics"));
    assert!(!html.contains("<script"));

    // One CSV table, and the zip of all.
    let (status, content_type, body) = get_raw(
        &server,
        &format!("{path}?format=csv&table=items"),
        &educator,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("item,question,topic,responses,p_value"));
    assert_eq!(text.lines().count(), key.len() + 1);
    let (status, content_type, body) =
        get_raw(&server, &path, &educator, Some("application/zip")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/zip");
    // Read by an independent implementation: Python's zipfile (checks the CRCs too).
    let zip_path = dir.path().join("report.zip");
    std::fs::write(&zip_path, &body).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             print(sorted(z.namelist())); print(len(z.read('students.csv').decode().splitlines()))",
        ])
        .arg(&zip_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "['adaptive.csv', 'adaptive_calibrations.csv', 'adaptive_distributions.csv', \
         'adaptive_exposure.csv', 'adaptive_stop_reasons.csv', 'distractors.csv', 'histogram.csv', \
         'items.csv', 'moodle_questions.csv', 'moodle_test.csv', 'students.csv', 'summary.csv', \
         'trend.csv']\n25\n"
    );

    // The list of exams.
    let (status, list) = server.get("/api/reports/exams", Some(&educator)).await;
    assert_eq!(status, 200, "{list}");
    let exams = list["exams"].as_array().unwrap();
    let entry = exams.iter().find(|e| e["exam"] == EXAM).unwrap();
    assert_eq!(entry["results"], 24);
    assert_eq!(entry["has_bank"], true);
    assert!(
        exams
            .iter()
            .any(|e| e["exam"] == "world-geography" && e["results"] == 0)
    );

    // Roles and errors.
    let student = server.token("student1@example.org", "student");
    let (status, body) = server.get(&path, Some(&student)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].is_string());
    let (status, _) = server.get("/api/reports/exams", Some(&student)).await;
    assert_eq!(status, 403);
    let (status, _) = server.get(&path, None).await;
    assert_eq!(status, 401);
    let (status, body) = server
        .get("/api/reports/exams/no-such-exam", Some(&educator))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .get(&format!("{path}?format=pdf"), Some(&educator))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("pdf"));
    let (status, body) = server
        .get(&format!("{path}?format=csv&table=nope"), Some(&educator))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("items"));
    let (status, _, _) = get_raw(&server, &path, &educator, Some("image/png")).await;
    assert_eq!(status, 406);

    // Offline, from the data dir, once the store's feed has committed the results.
    let out = dir.path().join("report.json");
    let offline = eventually(Duration::from_secs(15), || {
        let out = out.clone();
        let data_dir = dir.path().to_path_buf();
        async move {
            let status = Command::new(env!("CARGO_BIN_EXE_examflow"))
                .args(["report", "--exam", EXAM, "--format", "json", "-o"])
                .arg(&out)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--banks")
                .arg(sample_banks())
                .status()
                .unwrap();
            assert!(status.success());
            let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            // `score_changes` and `score_detail_changes` are committed one after the other:
            // wait for both.
            (report["summary"]["results"] == 24 && report["reliability"]["persons"] == 24)
                .then_some(report)
        }
    })
    .await
    .expect("examflow report sees the 24 committed results and their questions");
    assert_eq!(offline["items"], report["items"]);
    assert_eq!(offline["reliability"], report["reliability"]);
}

#[test]
fn report_command_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_examflow"))
            .args(args)
            .output()
            .unwrap()
    };
    let missing = dir.path().join("nothing-here");
    let out = run(&[
        "report",
        "--exam",
        EXAM,
        "-o",
        "-",
        "--data-dir",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing-here") && err.contains("does not exist"),
        "{err}"
    );
    let out = run(&[
        "report", "--exam", EXAM, "-o", "-", "--format", "html", "--table", "items",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format csv"));
    // An exam nobody knows, in an empty data dir.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let out = run(&[
        "report",
        "--exam",
        "ghost",
        "-o",
        "-",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
}

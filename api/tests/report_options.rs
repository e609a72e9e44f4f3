//! The score report's options and sections over HTTP against a real server: which attempts
//! count (`?attempts=`), a range of submission times (`?from=&to=`), the 400s for bad
//! values, Moodle's statistics, the adaptive section of an exam taken adaptively, and the
//! same options on `examflow report`.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{Server, ServerOptions, answer_key, eventually, sample_banks, write_bank};
use serde_json::{Value, json};

const EXAM: &str = "intro-statistics";

async fn get_text(server: &Server, path: &str, token: &str) -> (u16, String) {
    let resp = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Submits a result of EXAM for `email` with the first `right` questions right.
async fn submit(server: &Server, email: &str, right: usize) {
    let key = answer_key(&sample_banks(), EXAM);
    let wrong = common::wrong_answers(&sample_banks(), EXAM);
    let answers: Vec<&String> = (0..key.len())
        .map(|q| if q < right { &key[q] } else { &wrong[q] })
        .collect();
    let token = server.token(email, "student");
    let (status, doc) = server
        .post(
            &format!("/api/exams/{EXAM}/submissions"),
            Some(&token),
            &json!({ "answers": answers }),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
}

fn p_values(report: &Value) -> Vec<f64> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["p_value"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn attempts_and_dates_choose_the_results_a_report_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let before = Utc::now() - chrono::Duration::seconds(5);
    // ann twice (nothing right, then everything), bob once (all), cy once (the first 5).
    submit(&server, "ann@example.org", 0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    submit(&server, "ann@example.org", 10).await;
    submit(&server, "bob@example.org", 10).await;
    submit(&server, "cy@example.org", 5).await;
    let educator = server.token("teacher@example.org", "educator");
    let path = format!("/api/reports/exams/{EXAM}");
    let all = eventually(Duration::from_secs(15), || async {
        let (status, report) = server
            .get(&format!("{path}?attempts=all"), Some(&educator))
            .await;
        assert_eq!(status, 200, "{report}");
        (report["summary"]["results"] == 4 && report["reliability"]["persons"] == 4)
            .then_some(report)
    })
    .await
    .expect("the report counts all 4 results");
    assert_eq!(
        all["options"],
        json!({"attempts": "all", "from": null, "to": null, "group": null})
    );
    // Question 1: right in ann's second, bob's and cy's results; question 6: not cy's.
    let p = p_values(&all);
    assert_eq!((p[0], p[5]), (0.75, 0.5), "{p:?}");
    assert_eq!(all["moodle"]["test"]["attempts"], 4);
    assert_eq!(all["adaptive"], Value::Null, "no adaptive session");

    // The default: each student's first result (ann's first: nothing right).
    let (status, first) = server.get(&path, Some(&educator)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["options"],
        json!({"attempts": "first", "from": null, "to": null, "group": null})
    );
    assert_eq!(first["summary"]["results"], 3);
    assert_eq!(first["summary"]["takers"], 3);
    let p = p_values(&first);
    assert_eq!((p[0], p[5]), (2.0 / 3.0, 1.0 / 3.0), "{p:?}");
    let ann: Vec<&Value> = first["students"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["email"] == "ann@example.org")
        .collect();
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0]["score"], 0.0);
    // Moodle's section on the same three attempts: facility 2/3 of question 1; every
    // question has 4 options, so a random guess scores 25%.
    let moodle = &first["moodle"];
    assert_eq!(moodle["test"]["attempts"], 3);
    assert_eq!(moodle["test"]["max_score"], 10.0);
    let questions = moodle["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 10);
    let f = questions[0]["facility_index"].as_f64().unwrap();
    assert!((f - 200.0 / 3.0).abs() < 1e-9, "{f}");
    assert_eq!(questions[0]["random_guess_score"], 25.0);
    assert_eq!(questions[0]["intended_weight"], 10.0);
    for key in [
        "standard_deviation",
        "effective_weight",
        "discrimination_index",
        "discriminative_efficiency",
    ] {
        assert!(questions[0][key].is_number(), "{key}: {}", questions[0]);
    }
    for key in [
        "skewness",
        "coefficient_of_internal_consistency",
        "error_ratio",
        "standard_error",
    ] {
        assert!(moodle["test"][key].is_number(), "{key}: {}", moodle["test"]);
    }

    // last and highest: ann's second result (all right).
    for attempts in ["last", "highest"] {
        let (status, report) = server
            .get(&format!("{path}?attempts={attempts}"), Some(&educator))
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["options"]["attempts"], attempts);
        assert_eq!(report["summary"]["results"], 3);
        let p = p_values(&report);
        assert_eq!((p[0], p[5]), (1.0, 2.0 / 3.0), "{attempts}: {p:?}");
    }

    // A time range around the submissions counts them; one after them, none.
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let later = Utc::now() + chrono::Duration::hours(1);
    let (status, inside) = server
        .get(
            &format!(
                "{path}?attempts=all&from={}&to={}",
                stamp(before),
                stamp(later)
            ),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 200, "{inside}");
    assert_eq!(inside["summary"]["results"], 4);
    assert_eq!(inside["options"]["from"], stamp(before));
    let (status, none) = server
        .get(&format!("{path}?from={}", stamp(later)), Some(&educator))
        .await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["summary"]["results"], 0);
    assert_eq!(none["moodle"]["test"]["attempts"], 0);
    // A plain date `to` includes that whole day: today's results are in.
    let today = Utc::now().date_naive().to_string();
    let tomorrow = (Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .to_string();
    let (status, report) = server
        .get(
            &format!("{path}?attempts=all&from={today}&to={today}"),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    // (Unless the day changed between the submissions and now.)
    if Utc::now().date_naive().to_string() == today && before.date_naive().to_string() == today {
        assert_eq!(report["summary"]["results"], 4, "{}", report["options"]);
    }
    assert_eq!(report["options"]["to"], format!("{today}T23:59:59.999999Z"));
    let (_, report) = server
        .get(&format!("{path}?from={tomorrow}"), Some(&educator))
        .await;
    assert_eq!(report["summary"]["results"], 0);

    // Bad values: 400 naming the parameter.
    for (query, code, parameter) in [
        ("attempts=best", "invalid_attempts", "attempts"),
        ("from=yesterday", "invalid_from", "from"),
        ("to=2026-13-01", "invalid_to", "to"),
        ("from=2026-12-02&to=2026-12-01", "from_after_to", "from"),
        (
            "from=2026-12-01T10:00:00Z&to=2026-12-01T09:59:59Z",
            "from_after_to",
            "from",
        ),
    ] {
        let (status, body) = server
            .get(&format!("{path}?{query}"), Some(&educator))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{parameter}:")), "{message}");
    }
    // The options hold in every format.
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=students&attempts=all"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=students"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=moodle_questions"),
        &educator,
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.starts_with("item,question,max_mark,facility_index,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 11);
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=summary&attempts=highest"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.contains("options_attempts,highest"), "{csv}");
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=adaptive_exposure"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv.trim(), "item,sessions,exposure_rate");
    let (status, html) = get_text(
        &server,
        &format!("{path}?format=html&attempts=last"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("each student's last result"),
        "the page says what counts"
    );
    assert!(html.contains("Moodle quiz statistics"));
    assert!(!html.contains("Adaptive sessions"));
    let (status, body) = server
        .get(&format!("{path}?format=html&to=nope"), Some(&educator))
        .await;
    assert_eq!(status, 400, "{body}");

    // `examflow report` has the same options, offline from the data dir.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_examflow"))
            .args(["report", "--exam", EXAM, "--format", "json", "-o", "-"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--banks")
            .arg(sample_banks())
            .output()
            .unwrap()
    };
    let offline = eventually(Duration::from_secs(15), || async {
        let out = run(&["--attempts", "all"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (report["summary"]["results"] == 4 && report["reliability"]["persons"] == 4)
            .then_some(report)
    })
    .await
    .expect("examflow report sees the 4 committed results");
    assert_eq!(offline["options"]["attempts"], "all");
    let out = run(&[]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["results"], 3);
    assert_eq!(report["moodle"], first["moodle"]);
    let out = run(&["--attempts", "last", "--to", &stamp(before)]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["results"], 0);
    let out = run(&["--attempts", "best"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--attempts"), "{err}");
    let out = run(&["--from", "2026-12-02", "--to", "2026-12-01"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}

/// Starts a session of `exam` for `email` and answers until it finishes (right on even
/// numbers); returns the final response and the items given.
async fn adaptive_session(server: &Server, exam: &str, email: &str) -> (Value, Vec<String>) {
    let token = server.token(email, "student");
    let (status, started) = server
        .post(
            &format!("/api/adaptive/{exam}/sessions"),
            Some(&token),
            &json!({"max_length": 6}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let session = started["session"].as_str().unwrap().to_string();
    let mut question = started["question"].clone();
    let mut seen = Vec::new();
    for n in 0..50 {
        seen.push(question["id"].as_str().unwrap().to_string());
        let answer = if n % 2 == 0 { "right" } else { "wrong" };
        let (status, body) = server
            .post(
                &format!("/api/adaptive/sessions/{session}/answers"),
                Some(&token),
                &json!({"item": question["id"], "answer": answer}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "finished" {
            return (body, seen);
        }
        question = body["question"].clone();
    }
    panic!("the session never finished");
}

#[tokio::test]
async fn an_adaptive_exam_gets_an_adaptive_section() {
    let dir = tempfile::tempdir().unwrap();
    let banks = dir.path().join("banks");
    write_bank(&banks, "algebra", 20, |i| format!("Question {i}?"));
    let mut options = ServerOptions::new(&dir.path().join("data"));
    options.banks = banks.clone();
    let server = Server::start(options);
    // Four students, the first twice.
    let mut sessions = Vec::new();
    for email in [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
        "a@example.org",
    ] {
        sessions.push(adaptive_session(&server, "algebra", email).await);
    }
    let educator = server.token("teacher@example.org", "educator");
    let path = "/api/reports/exams/algebra";
    let all = eventually(Duration::from_secs(15), || async {
        let (status, report) = server
            .get(&format!("{path}?attempts=all"), Some(&educator))
            .await;
        assert_eq!(status, 200, "{report}");
        (report["adaptive"]["sessions"] == 5).then_some(report)
    })
    .await
    .expect("the adaptive section counts the 5 finished sessions");
    let a = &all["adaptive"];
    let n = sessions.len() as f64;
    // Test length and θ from the sessions' own answers.
    let lengths: Vec<f64> = sessions.iter().map(|(_, seen)| seen.len() as f64).collect();
    let mean_length = lengths.iter().sum::<f64>() / n;
    assert_eq!(a["test_length"]["count"], 5);
    let got = a["test_length"]["mean"].as_f64().unwrap();
    assert!((got - mean_length).abs() < 1e-9, "{got} vs {mean_length}");
    let mean_theta = sessions
        .iter()
        .map(|(done, _)| done["theta"].as_f64().unwrap())
        .sum::<f64>()
        / n;
    let got = a["theta"]["mean"].as_f64().unwrap();
    assert!((got - mean_theta).abs() < 1e-9, "{got} vs {mean_theta}");
    let bins: u64 = a["theta"]["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bins, 5);
    assert_eq!(a["se"]["count"], 5);
    // Stop reasons as the sessions reported them.
    let mut reasons: Vec<(String, u64)> = a["stop_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stop_reason"].as_str().unwrap().to_string(),
                r["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    reasons.sort();
    let mut expected: Vec<(String, u64)> = Vec::new();
    for (done, _) in &sessions {
        let reason = done["stop_reason"].as_str().unwrap().to_string();
        match expected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += 1,
            None => expected.push((reason, 1)),
        }
    }
    expected.sort();
    assert_eq!(reasons, expected);
    assert_eq!(
        a["calibration_versions"],
        json!([{"calibration_version": 1, "sessions": 5}])
    );
    // Exposure: per bank item, the share of sessions that gave it.
    let exposure = a["exposure"].as_array().unwrap();
    assert_eq!(exposure.len(), 20);
    for e in exposure {
        let item = e["item"].as_str().unwrap();
        let given = sessions
            .iter()
            .filter(|(_, seen)| seen.iter().any(|s| s == item))
            .count();
        assert_eq!(e["sessions"], given as u64, "{item}");
        let rate = e["exposure_rate"].as_f64().unwrap();
        assert!((rate - given as f64 / n).abs() < 1e-12, "{item}");
    }
    // Overlap: the items two sessions share, over every pair, relative to the mean length.
    let sets: Vec<HashSet<&String>> = sessions.iter().map(|(_, s)| s.iter().collect()).collect();
    let mut shared = 0usize;
    let mut pairs = 0usize;
    for i in 0..sets.len() {
        for j in i + 1..sets.len() {
            shared += sets[i].intersection(&sets[j]).count();
            pairs += 1;
        }
    }
    let mean_shared = shared as f64 / pairs as f64;
    let got = a["mean_shared_items"].as_f64().unwrap();
    assert!((got - mean_shared).abs() < 1e-12, "{got} vs {mean_shared}");
    let got = a["overlap_rate"].as_f64().unwrap();
    assert!(
        (got - mean_shared / mean_length).abs() < 1e-12,
        "{got} vs {}",
        mean_shared / mean_length
    );

    // By default a's second session is left out with its result.
    let (status, first) = server.get(path, Some(&educator)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["adaptive"]["sessions"], 4);
    assert_eq!(first["summary"]["results"], 4);

    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=adaptive_exposure&attempts=all"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 21, "{csv}");
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=adaptive"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.contains("\nsessions,4\n"), "{csv}");
    assert!(csv.contains("overlap_rate,"), "{csv}");
    let (status, csv) = get_text(
        &server,
        &format!("{path}?format=csv&table=adaptive_calibrations"),
        &educator,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(csv, "calibration_version,sessions\n1,4\n");
    let (status, html) = get_text(&server, &format!("{path}?format=html"), &educator).await;
    assert_eq!(status, 200);
    assert!(html.contains("Adaptive sessions") && html.contains("id=\"adaptive-exposure\""));
}

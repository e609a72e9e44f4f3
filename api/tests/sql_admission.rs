//! Hostile or heavy queries cannot take the server down: admission control of SQL over HTTP
//! and pgwire together (`[sql] max_concurrent_queries`, 503 `busy` with `Retry-After`,
//! SQLSTATE 53300), the JSON result counted against `[sql] memory_limit_bytes`, and
//! `[sql] max_value_bytes` for string functions, against the real server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::psql::{pgwire_port, psql, psql_available, psql_command};
use common::{Server, ServerOptions};
use serde_json::{Value, json};

const CONFIG: &str = "[sql]\nmax_concurrent_queries = 1\nqueue_timeout_ms = 300\ntimeout_secs = 6\n\
                      memory_limit_bytes = 5000000\n\n[pgwire]\nlisten = \"127.0.0.1:0\"\n";

fn start(dir: &std::path::Path) -> Server {
    let file = dir.join("examflow.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let mut options = ServerOptions::new(&dir.join("data"));
    options.config_file = Some(file);
    Server::start(options)
}

/// `POST /api/sql`: status, headers and the body as JSON (when it is).
async fn sql(server: &Server, token: &str, sql: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = server
        .client
        .post(server.url("/api/sql"))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_past_the_limit_are_busy_over_http_and_pgwire() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");
    let psql_here = psql_available();
    let port = pgwire_port(&server);
    assert_eq!(sql(&server, &token, "SELECT 1 AS one").await.0, 200);

    // A streamed result nobody reads holds the one slot.
    let held = server
        .client
        .post(server.url("/api/sql?format=csv"))
        .bearer_auth(&token)
        .json(&json!({"sql": "SELECT value FROM generate_series(1, 1000000000)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status().as_u16(), 200);

    // The next query waits `queue_timeout_ms`, then is refused.
    let started = std::time::Instant::now();
    let (status, headers, body) = sql(&server, &token, "SELECT 1 AS one").await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[sql] max_concurrent_queries"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    // Over pgwire too: the slots are the server's.
    if psql_here {
        let out = psql(
            port,
            analyst,
            &token,
            &["-v", "VERBOSITY=verbose", "-c", "SELECT 1"],
        );
        assert!(!out.success, "{}", out.stdout);
        assert!(out.stderr.contains("53300"), "{}", out.stderr);
    }

    // The dropped stream gives it back.
    drop(held);
    let back = common::eventually(Duration::from_secs(5), || async {
        (sql(&server, &token, "SELECT 1 AS one").await.0 == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "{}", server.log());

    if !psql_here {
        return;
    }
    // A pgwire query holds the slot while it runs (here until `timeout_secs` stops it).
    let long = psql_command(port, analyst, &token)
        .args(["-v", "VERBOSITY=verbose"])
        .args([
            "-c",
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let busy = common::eventually(Duration::from_secs(4), || async {
        let (status, _, body) = sql(&server, &token, "SELECT 1 AS one").await;
        (status == 503 && body["error"]["code"] == "busy").then_some(())
    })
    .await;
    assert!(
        busy.is_some(),
        "HTTP is refused while pgwire runs the query"
    );
    let ended = tokio::task::spawn_blocking(move || long.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(
        stderr.contains("57014"),
        "stopped at its time limit: {stderr}"
    );
    assert_eq!(sql(&server, &token, "SELECT 1 AS one").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_results_and_string_functions_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");

    // About 11 MB of JSON: over the 5 MB of memory a query may use. As CSV it streams.
    let rows = "SELECT repeat('x', 100) AS s FROM generate_series(1, 100000)";
    let (status, _, body) = sql(&server, &token, rows).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Resources exhausted") && message.contains("JSON result"),
        "{body}"
    );
    let csv = server
        .client
        .post(server.url("/api/sql?format=csv"))
        .bearer_auth(&token)
        .json(&json!({ "sql": rows }))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    assert_eq!(csv.text().await.unwrap().lines().count(), 100_001);
    let (status, headers, small) = sql(&server, &token, "SELECT repeat('ab', 2) AS s").await;
    assert_eq!((status, small), (200, json!([{"s": "abab"}])));
    assert_eq!(headers["content-length"], "14");

    // A value over `[sql] max_value_bytes` is refused before it is built.
    let started = std::time::Instant::now();
    let (status, _, body) = sql(&server, &token, "SELECT repeat('x', 1000000000) AS s").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("repeat would build a value of 1000000000 bytes, over the limit of 16777216 bytes ([sql] max_value_bytes)"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    if psql_available() {
        let out = psql(
            pgwire_port(&server),
            analyst,
            &token,
            &["-c", "SELECT length(lpad('a', 2000000000))"],
        );
        assert!(!out.success);
        assert!(
            out.stderr
                .contains("lpad would build a value of 2000000000 bytes"),
            "{}",
            out.stderr
        );
    }
}

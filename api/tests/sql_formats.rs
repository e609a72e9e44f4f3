//! `POST /api/sql` result formats (JSON, NDJSON, CSV, Arrow IPC, Parquet), streaming of
//! large results, and the row, memory and time limits, against the real server.

mod common;

use common::{Server, ServerOptions};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use serde_json::{Value, json};

fn start(dir: &std::path::Path, config: Option<&str>) -> Server {
    let mut options = ServerOptions::new(dir);
    if let Some(text) = config {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("sql-test.toml");
        std::fs::write(&path, text).unwrap();
        options.config_file = Some(path);
    }
    Server::start(options)
}

/// Sends a query; returns status, content type, headers and body bytes.
async fn query(
    server: &Server,
    token: &str,
    sql: &str,
    accept: Option<&str>,
    format: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap, Vec<u8>) {
    let url = match format {
        Some(f) => server.url(&format!("/api/sql?format={f}")),
        None => server.url("/api/sql"),
    };
    let mut req = server
        .client
        .post(url)
        .bearer_auth(token)
        .json(&json!({"sql": sql}));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        headers,
        resp.bytes().await.unwrap().to_vec(),
    )
}

fn sum_column(batches: &[RecordBatch], column: usize) -> i64 {
    batches
        .iter()
        .map(|b| {
            b.column(column)
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_carries_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), None);
    let analyst = server.token("ana@example.com", "analyst");
    let sql = "SELECT value AS n, value * 2 AS twice FROM generate_series(1, 5) ORDER BY n";

    let (status, ctype, headers, body) = query(&server, &analyst, sql, None, None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/json"));
    assert_eq!(headers["x-examflow-truncated"], "false");
    let rows: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows[4], json!({"n": 5, "twice": 10}));

    let (status, ctype, _, body) = query(&server, &analyst, sql, Some("text/csv"), None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "n,twice\n1,2\n2,4\n3,6\n4,8\n5,10\n"
    );

    let (status, ctype, _, body) = query(&server, &analyst, sql, None, Some("ndjson")).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0], json!({"n": 1, "twice": 2}));

    let (status, ctype, _, body) = query(
        &server,
        &analyst,
        sql,
        Some("application/vnd.apache.arrow.stream"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/vnd.apache.arrow.stream");
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
    assert_eq!(sum_column(&batches, 1), 30);

    let (status, ctype, _, body) = query(&server, &analyst, sql, None, Some("parquet")).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/vnd.apache.parquet");
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        axum::body::Bytes::from(body),
    );
    let batches: Vec<RecordBatch> = reader
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sum_column(&batches, 0), 15);

    // No rows: CSV still has its header, Arrow its schema.
    let empty = "SELECT value AS n FROM generate_series(1, 5) WHERE value > 99";
    let (_, _, _, body) = query(&server, &analyst, empty, Some("text/csv"), None).await;
    assert_eq!(String::from_utf8(body).unwrap(), "n\n");
    let (_, _, _, body) = query(&server, &analyst, empty, None, Some("arrow")).await;
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .unwrap();
    assert_eq!(reader.schema().field(0).name(), "n");

    // Formats nobody supports, and SQL errors before the first byte, are clean 4xx.
    let (status, _, _, body) = query(&server, &analyst, sql, Some("text/html"), None).await;
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
    let (status, _, _, body) = query(&server, &analyst, sql, None, Some("xml")).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _, body) =
        query(&server, &analyst, "SELECT nope", Some("text/csv"), None).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "invalid_sql");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_results_stream_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("data"),
        Some("[sql]\nmax_stream_rows = 1500000\nmemory_limit_bytes = 20000000\ntimeout_secs = 2\n"),
    );
    let analyst = server.token("ana@example.com", "analyst");

    // Two million rows asked, the stream carries the configured 1.5 million.
    let sql = "SELECT value AS n FROM generate_series(1, 2000000)";
    let (status, _, headers, body) = query(&server, &analyst, sql, None, Some("arrow")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-examflow-row-limit"], "1500000");
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert!(
        batches.len() > 10,
        "one batch per DataFusion batch, not one blob"
    );
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        1_500_000
    );
    // JSON stops at 100,000 rows and says so.
    let (_, _, headers, body) = query(&server, &analyst, sql, None, None).await;
    assert_eq!(headers["x-examflow-truncated"], "true");
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&body).unwrap().len(),
        100_000
    );

    // An aggregation that needs more than 20 MB of memory is refused (no spilling), not
    // run out of memory.
    let (status, _, _, body) = query(
        &server,
        &analyst,
        "SELECT s, count(*) AS n FROM (SELECT value || 'x' AS s FROM generate_series(1, 3000000)) GROUP BY s",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("resources exhausted"),
        "{error}"
    );

    // A query running past 2 s is stopped.
    let (status, _, _, body) = query(
        &server,
        &analyst,
        "SELECT count(*) AS n FROM generate_series(1, 200000) a CROSS JOIN generate_series(1, 200000) b WHERE a.value + b.value = 7",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "query_timeout", "{error}");
}

/// Without Kafka, stored results reach `scores` / `score_details` through the embedded
/// store's change feed: live within a second, once each across restarts.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_results_reach_the_scores_view_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data, None);
    // Emails as stored: staff see them (analysts see pseudonyms, tests/pseudonyms.rs).
    let staff = server.token("edu@example.com", "educator");
    let key = common::answer_key(&common::sample_banks(), "rust-basics");
    let submit = |server: &Server, email: &str| {
        let token = server.token(email, "student");
        let url = server.url("/api/exams/rust-basics/submissions");
        let client = server.client.clone();
        let key = key.clone();
        async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"answers": key}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            resp.json::<Value>().await.unwrap()
        }
    };
    let first = submit(&server, "a@example.com").await;
    let count_sql =
        json!({"sql": "SELECT count(*) AS n, count(DISTINCT document_id) AS docs FROM scores"});
    let seen = common::eventually(std::time::Duration::from_secs(5), || async {
        let (_, rows) = server.post("/api/sql", Some(&staff), &count_sql).await;
        (rows[0]["n"] == 1).then_some(rows)
    })
    .await;
    assert!(seen.is_some(), "{}", server.log());
    let (_, rows) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT document_id, email, exam, score, total, source_topic FROM scores"}),
        )
        .await;
    assert_eq!(rows[0]["document_id"], first["_id"]);
    assert_eq!(rows[0]["email"], "a@example.com");
    assert_eq!(rows[0]["score"], first["score"]);
    assert_eq!(rows[0]["source_topic"], "embedded-outbox");
    let (_, details) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT count(*) AS n FROM score_details"}),
        )
        .await;
    assert_eq!(details[0]["n"].as_u64().unwrap() as usize, key.len());

    // Restart: nothing is fed twice; a new result is added.
    server.kill9();
    let server = start(&data, None);
    submit(&server, "b@example.com").await;
    let seen = common::eventually(std::time::Duration::from_secs(5), || async {
        let (_, rows) = server.post("/api/sql", Some(&staff), &count_sql).await;
        (rows[0]["docs"] == 2).then_some(rows)
    })
    .await
    .unwrap_or_else(|| panic!("{}", server.log()));
    assert_eq!(seen[0]["n"], 2, "{seen}");
    let (_, changes) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT count(*) AS n FROM score_changes"}),
        )
        .await;
    assert_eq!(changes[0]["n"], 2, "each change event is stored once");

    // The views out of the box.
    let (status, summary) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT exam, results, takers, pass_rate, mean_percentage FROM exam_summary"}),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary[0]["exam"], "rust-basics");
    assert_eq!(summary[0]["results"], 2);
    assert_eq!(summary[0]["takers"], 2);
    assert_eq!(summary[0]["pass_rate"], 1.0);
    assert_eq!(summary[0]["mean_percentage"], 100.0);
    let (status, items) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT count(*) AS n, min(p_value) AS low, max(responses) AS most FROM question_difficulty"}),
        )
        .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items[0]["n"].as_u64().unwrap() as usize, key.len());
    assert_eq!(items[0]["low"], 1.0);
    assert_eq!(items[0]["most"], 2);
    let (status, history) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT email, attempt, percentage FROM student_history ORDER BY email"}),
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history,
        json!([{"email": "a@example.com", "attempt": 1, "percentage": 100},
               {"email": "b@example.com", "attempt": 1, "percentage": 100}])
    );
    let (status, _) = server
        .post(
            "/api/sql",
            Some(&staff),
            &json!({"sql": "SELECT count(*) AS n FROM attempt_question_difficulty"}),
        )
        .await;
    assert_eq!(status, 200);
}

/// `EXPLAIN` stays the root of its plan (the row limits are not put above it), in JSON and
/// in the streamed formats; text cells that start like a formula are neutralised in CSV.
#[tokio::test(flavor = "multi_thread")]
async fn explain_and_csv_cells_that_look_like_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), None);
    let educator = server.token("edu@example.com", "educator");
    let sql = "EXPLAIN SELECT count(*) AS n FROM attempts";
    let (status, _, _, body) = query(&server, &educator, sql, None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert!(
        rows.iter().any(|r| r["plan_type"] == "physical_plan"),
        "{rows:?}"
    );
    let (status, _, _, body) = query(&server, &educator, sql, None, Some("csv")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let (status, _, _, body) = query(
        &server,
        &educator,
        "SELECT '=1+1' AS f, '-x' AS g, -1.5 AS h, 'a=b' AS i",
        None,
        Some("csv"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "f,g,h,i\n'=1+1,'-x,-1.5,a=b\n"
    );
}

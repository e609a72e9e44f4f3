//! Analysts see pseudonyms, not student emails, in SQL over HTTP (every format) and over the
//! PostgreSQL wire protocol; educators see emails; `auth.analyst_sees_emails` turns it off.
//! And CSV cells that would run as spreadsheet formulas are neutralised everywhere.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const ANA: &str = "ana@example.org";
const BOB: &str = "Bob.Student@Example.org";
/// Every student email ends so; staff tokens use example.com.
const STUDENT_DOMAIN: &str = "example.org";
const EXAM: &str = "inject-test";

/// The pseudonym of an email under a secret, computed independently of the server.
fn pseudonym(secret: &[u8], email: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(email.trim().to_lowercase().as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("s_{}", hex::encode(&digest[..12]))
}

fn secret_file(data: &Path) -> Vec<u8> {
    std::fs::read_to_string(data.join("pseudonym-secret"))
        .unwrap()
        .trim()
        .as_bytes()
        .to_vec()
}

/// The sample banks plus one whose question and options look like spreadsheet formulas.
fn banks(dir: &Path) -> PathBuf {
    let banks = dir.join("banks");
    std::fs::create_dir_all(&banks).unwrap();
    for entry in std::fs::read_dir(common::sample_banks()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, banks.join(path.file_name().unwrap())).unwrap();
    }
    let bank = json!([
        {
            "question": "=HYPERLINK(\"http://evil.example\",\"click\")",
            "options": ["=1+1", "-5", "@SUM(A1)", "plain"],
            "correct_answer": "=1+1"
        },
        {
            "question": "+cmd|' /C calc'!A0 and more",
            "options": ["yes", "no"],
            "correct_answer": "yes"
        }
    ]);
    std::fs::write(banks.join(format!("{EXAM}.json")), bank.to_string()).unwrap();
    banks
}

fn start(dir: &Path, config: Option<&str>) -> Server {
    let mut options = ServerOptions::new(&dir.join("data"));
    options.banks = banks(dir);
    if let Some(text) = config {
        let path = dir.join("examflow.toml");
        std::fs::write(&path, text).unwrap();
        options.config_file = Some(path);
    }
    Server::start(options)
}

async fn submit(server: &Server, email: &str, answers: &[&str]) {
    let token = server.token(email, "student");
    let (status, body) = server
        .post(
            &format!("/api/exams/{EXAM}/submissions"),
            Some(&token),
            &json!({ "answers": answers }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Two students' results, visible in `scores` (waits for the change feed).
async fn two_results(server: &Server) {
    submit(server, ANA, &["=1+1", "yes"]).await;
    submit(server, BOB, &["-5", "no"]).await;
    let educator = server.token("edu@example.com", "educator");
    let seen = common::eventually(Duration::from_secs(10), || async {
        let (_, rows) = server
            .post(
                "/api/sql",
                Some(&educator),
                &json!({"sql": "SELECT count(*) AS n FROM scores"}),
            )
            .await;
        (rows[0]["n"] == 2).then_some(())
    })
    .await;
    assert!(seen.is_some(), "{}", server.log());
}

/// A query's status and raw body in a format.
async fn sql_raw(server: &Server, token: &str, sql: &str, format: &str) -> (u16, Vec<u8>) {
    let resp = server
        .client
        .post(server.url(&format!("/api/sql?format={format}")))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn rows(server: &Server, token: &str, sql: &str) -> Vec<Value> {
    let (status, body) = sql_raw(server, token, sql, "json").await;
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 200, "{sql}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn analysts_see_pseudonyms_in_every_table_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None);
    two_results(&server).await;
    // Ana also has an adaptive session.
    let ana = server.token(ANA, "student");
    let (status, body) = server
        .post(
            "/api/adaptive/intro-statistics/sessions",
            Some(&ana),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let secret = secret_file(&server.data_dir);
    assert_eq!(
        secret.len(),
        64,
        "a generated secret of 32 random bytes in hex"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.data_dir.join("pseudonym-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ana_p, bob_p) = (pseudonym(&secret, ANA), pseudonym(&secret, BOB));
    let analyst = server.token("ana.lyst@example.com", "analyst");
    let educator = server.token("edu@example.com", "educator");

    // `scores`: the pseudonyms, exactly (the email trimmed and lowercased, HMAC-SHA256).
    let emails = rows(&server, &analyst, "SELECT email FROM scores ORDER BY email").await;
    let mut expected = [ana_p.clone(), bob_p.clone()];
    expected.sort();
    assert_eq!(
        emails,
        expected
            .iter()
            .map(|e| json!({ "email": e }))
            .collect::<Vec<_>>()
    );
    // The result document in `score_changes` carries the same pseudonym, and no email.
    let documents = rows(
        &server,
        &analyst,
        "SELECT email, document FROM score_changes ORDER BY email",
    )
    .await;
    for row in &documents {
        let document: Value = serde_json::from_str(row["document"].as_str().unwrap()).unwrap();
        assert_eq!(document["email"], row["email"], "{row}");
        assert!(
            document["email"].as_str().unwrap().starts_with("s_"),
            "{row}"
        );
        assert_eq!(document["exam"], EXAM);
    }
    // The same pseudonym in every table: joins on email match.
    for (sql, n) in [
        (
            "SELECT count(*) AS n FROM scores s JOIN score_changes c ON s.email = c.email",
            2,
        ),
        (
            "SELECT count(*) AS n FROM scores s JOIN student_history h ON s.email = h.email",
            2,
        ),
        (
            "SELECT count(DISTINCT d.email) AS n FROM score_details d JOIN scores s ON d.email = s.email",
            2,
        ),
        (
            "SELECT count(*) AS n FROM adaptive_sessions a JOIN scores s ON a.email = s.email",
            1,
        ),
    ] {
        assert_eq!(rows(&server, &analyst, sql).await[0]["n"], n, "{sql}");
    }
    let sessions = rows(&server, &analyst, "SELECT email FROM adaptive_sessions").await;
    assert_eq!(sessions, vec![json!({ "email": ana_p })]);
    // The real email matches nothing, however it is asked; the pseudonym does.
    for sql in [
        format!("SELECT count(*) AS n FROM scores WHERE email = '{ANA}'"),
        format!(
            "SELECT count(*) AS n FROM scores WHERE lower(email) = '{}'",
            BOB.to_lowercase()
        ),
        "SELECT count(*) AS n FROM scores WHERE email LIKE '%@%'".to_string(),
        format!("SELECT count(*) AS n FROM score_changes WHERE document LIKE '%{ANA}%'"),
        "SELECT count(*) AS n FROM score_changes WHERE strpos(document, '@example.org') > 0"
            .to_string(),
        format!("SELECT count(*) AS n FROM score_details WHERE email = '{ANA}'"),
        format!("SELECT count(*) AS n FROM student_history WHERE email = '{ANA}'"),
        format!("SELECT count(*) AS n FROM adaptive_sessions WHERE email = '{ANA}'"),
    ] {
        assert_eq!(rows(&server, &analyst, &sql).await[0]["n"], 0, "{sql}");
    }
    let by_pseudonym = format!("SELECT count(*) AS n FROM scores WHERE email = '{ana_p}'");
    assert_eq!(rows(&server, &analyst, &by_pseudonym).await[0]["n"], 1);
    let takers = rows(&server, &analyst, "SELECT takers FROM exam_summary").await;
    assert_eq!(takers[0]["takers"], 2);

    // No student email anywhere in any response body, in any format.
    for table in [
        "scores",
        "score_changes",
        "score_details",
        "student_history",
        "adaptive_sessions",
        "dead_letters",
        "exam_summary",
    ] {
        for format in ["json", "ndjson", "csv", "arrow", "parquet"] {
            let sql = format!("SELECT * FROM {table}");
            let (status, body) = sql_raw(&server, &analyst, &sql, format).await;
            assert_eq!(
                status,
                200,
                "{sql} {format}: {}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                !contains(&body, STUDENT_DOMAIN),
                "{sql} as {format} shows an email: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // Min/max and EXPLAIN do not reach the raw values either; EXPLAIN VERBOSE (which prints
    // the files' statistics) is refused.
    let (status, body) = sql_raw(
        &server,
        &analyst,
        "SELECT min(email) AS a, max(email) AS b, min(document) AS c FROM score_changes",
        "csv",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !contains(&body, STUDENT_DOMAIN),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = sql_raw(
        &server,
        &analyst,
        "EXPLAIN VERBOSE SELECT email FROM scores",
        "json",
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, body) = sql_raw(
        &server,
        &analyst,
        "EXPLAIN SELECT email FROM scores WHERE email = 'x'",
        "json",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Educators (and admins) see the emails as stored.
    for token in [&educator, &server.token("root@example.com", "admin")] {
        let emails = rows(&server, token, "SELECT email FROM scores ORDER BY email").await;
        assert_eq!(
            emails,
            vec![json!({ "email": BOB }), json!({ "email": ANA })],
            "sorted by the raw text"
        );
        let (_, body) = sql_raw(&server, token, "SELECT document FROM score_changes", "csv").await;
        assert!(contains(&body, ANA), "{}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analyst_sees_emails_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some("[auth]\nanalyst_sees_emails = true\n"));
    two_results(&server).await;
    let analyst = server.token("ana.lyst@example.com", "analyst");
    let emails = rows(&server, &analyst, "SELECT email FROM scores ORDER BY email").await;
    assert_eq!(
        emails,
        vec![json!({ "email": BOB }), json!({ "email": ANA })]
    );
    let (_, body) = sql_raw(
        &server,
        &analyst,
        "SELECT document FROM score_changes",
        "csv",
    )
    .await;
    assert!(contains(&body, ANA));
    // EXPLAIN VERBOSE is fine then.
    let (status, _) = sql_raw(
        &server,
        &analyst,
        "EXPLAIN VERBOSE SELECT email FROM scores",
        "json",
    )
    .await;
    assert_eq!(status, 200);
}

/// Cells of text that start like a formula get a quote in every CSV: `POST /api/sql`
/// (educator and analyst), the score report's tables and zip, and `examflow sql`; numbers,
/// also negative ones, do not.
#[tokio::test(flavor = "multi_thread")]
async fn csv_outputs_neutralise_formula_cells() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None);
    two_results(&server).await;
    let educator = server.token("edu@example.com", "educator");
    let analyst = server.token("ana.lyst@example.com", "analyst");
    let sql = "SELECT question, user_answer, -1.5 AS delta, -2 AS n FROM score_details \
               ORDER BY email, question_index";
    for token in [&educator, &analyst] {
        let (status, body) = sql_raw(&server, token, sql, "csv").await;
        assert_eq!(status, 200);
        let mut reader = csv::Reader::from_reader(body.as_slice());
        let cells: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        assert_eq!(cells.len(), 4, "{cells:?}");
        let answers: Vec<&str> = cells.iter().map(|r| r[1].as_str()).collect();
        // Bob (`bob.student@…` sorts first for the educator, as a pseudonym either way
        // round for the analyst): compare as sets.
        let mut answers = answers.clone();
        answers.sort();
        assert_eq!(answers, ["'-5", "'=1+1", "no", "yes"]);
        for row in &cells {
            assert!(
                row[0] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
                    || row[0] == "'+cmd|' /C calc'!A0 and more",
                "{row:?}"
            );
            assert_eq!(row[2], "-1.5", "numbers stay numbers");
            assert_eq!(row[3], "-2");
        }
    }
    // Other formats carry the text as it is.
    let json_rows = rows(&server, &educator, sql).await;
    assert!(json_rows.iter().any(|r| r["user_answer"] == "=1+1"));

    // The score report: one table, and the zip of all.
    let resp = server
        .client
        .get(server.url(&format!("/api/reports/exams/{EXAM}?format=csv&table=items")))
        .bearer_auth(&educator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let items = resp.text().await.unwrap();
    assert!(
        items.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\""),
        "{items}"
    );
    assert!(items.contains("'+cmd|"), "{items}");
    let resp = server
        .client
        .get(server.url(&format!(
            "/api/reports/exams/{EXAM}?format=csv&table=distractors"
        )))
        .bearer_auth(&educator)
        .send()
        .await
        .unwrap();
    let distractors = resp.text().await.unwrap();
    for cell in ["'=1+1", "'-5"] {
        assert!(
            distractors
                .lines()
                .any(|l| l.split(',').nth(1) == Some(cell)),
            "{cell}: {distractors}"
        );
    }
    let resp = server
        .client
        .get(server.url(&format!("/api/reports/exams/{EXAM}?format=csv")))
        .bearer_auth(&educator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let zip = resp.bytes().await.unwrap();
    let unzip = Command::new("python3")
        .args([
            "-c",
            "import io, sys, zipfile; z = zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())); \
             print(z.read('items.csv').decode())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = unzip {
        child.stdin.take().unwrap().write_all(&zip).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("'=HYPERLINK"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // `examflow sql --format csv` on the committed tables (committed every 2 s).
    let data = server.data_dir.clone();
    let committed = common::eventually(Duration::from_secs(20), || {
        let data = data.clone();
        async move {
            let out = Command::new(env!("CARGO_BIN_EXE_examflow"))
                .args([
                    "sql",
                    "SELECT user_answer, -0.5 AS x FROM score_detail_changes ORDER BY user_answer",
                    "--format",
                    "csv",
                    "--data-dir",
                ])
                .arg(&data)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && text.lines().count() == 5).then_some(text)
        }
    })
    .await
    .unwrap_or_else(|| panic!("nothing committed: {}", server.log()));
    assert_eq!(
        committed,
        "user_answer,x\n'-5,-0.5\n'=1+1,-0.5\nno,-0.5\nyes,-0.5\n"
    );
}

// ---- pgwire --------------------------------------------------------------------------

fn psql(port: u16, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(["-d", "examflow", "-c", sql])
        .output()
        .expect("running psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn pgwire_port(server: &Server) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(port) = log
            .lines()
            .find_map(|l| l.split("pgwire listening on ").nth(1))
            .and_then(|addr| addr.trim().rsplit(':').next()?.parse().ok())
        {
            return port;
        }
        assert!(Instant::now() < deadline, "no pgwire line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A query over the extended protocol (Parse, Bind, Execute, Sync), as drivers such as
/// psycopg and JDBC send it; the text of each row's first column, or the error.
fn extended_query(port: u16, user: &str, token: &str, sql: &str) -> Result<Vec<String>, String> {
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }
    fn read(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).unwrap();
        (head[0], body)
    }
    fn error_text(body: &[u8]) -> String {
        String::from_utf8_lossy(body).replace('\0', " ")
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    for part in ["user", user, "database", "examflow", ""] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    let mut first = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    first.extend_from_slice(&startup);
    stream.write_all(&first).unwrap();
    loop {
        let (kind, body) = read(&mut stream);
        match kind {
            b'R' if body[..4] == 3i32.to_be_bytes() => {
                let mut password = token.as_bytes().to_vec();
                password.push(0);
                stream.write_all(&message(b'p', &password)).unwrap();
            }
            b'E' => return Err(error_text(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut bind = vec![0u8, 0u8];
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut execute = vec![0u8];
    execute.extend_from_slice(&0i32.to_be_bytes());
    let mut out = message(b'P', &parse);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', &execute));
    out.extend(message(b'S', &[]));
    stream.write_all(&out).unwrap();
    let mut rows = Vec::new();
    let mut failed = None;
    loop {
        let (kind, body) = read(&mut stream);
        match kind {
            b'D' => {
                let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
                rows.push(if len < 0 {
                    String::new()
                } else {
                    String::from_utf8_lossy(&body[6..6 + len as usize]).to_string()
                });
            }
            b'E' => failed = Some(error_text(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    let _ = stream.write_all(&message(b'X', &[]));
    match failed {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_analysts_see_pseudonyms_and_educators_emails() {
    let has_psql = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_psql {
        eprintln!("SKIPPED: the `psql` client is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = "a configured pseudonym secret";
    let server = start(
        dir.path(),
        Some(&format!(
            "[pgwire]\nlisten = \"127.0.0.1:0\"\n\n[auth]\npseudonym_secret = \"{secret}\"\n"
        )),
    );
    let port = pgwire_port(&server);
    // A connection opened before the results exist sees them (live tables).
    two_results(&server).await;
    assert!(
        !server.data_dir.join("pseudonym-secret").exists(),
        "a configured secret is not written"
    );
    let (ana_p, bob_p) = (
        pseudonym(secret.as_bytes(), ANA),
        pseudonym(secret.as_bytes(), BOB),
    );
    let mut expected = [ana_p.clone(), bob_p.clone()];
    expected.sort();

    let analyst = "ana.lyst@example.com";
    let token = server.token(analyst, "analyst");
    let query = |user: &str, token: &str, sql: &str| {
        let (ok, out, err) = psql(port, user, token, sql);
        assert!(ok, "{sql}: {err}");
        out
    };
    assert_eq!(
        query(analyst, &token, "SELECT email FROM scores ORDER BY email"),
        expected.join("\n")
    );
    let documents = query(analyst, &token, "SELECT document FROM score_changes");
    assert!(!documents.contains(STUDENT_DOMAIN), "{documents}");
    assert!(documents.contains(&ana_p), "{documents}");
    for table in [
        "scores",
        "score_changes",
        "score_details",
        "student_history",
        "adaptive_sessions",
        "dead_letters",
    ] {
        let all = query(analyst, &token, &format!("SELECT * FROM {table}"));
        assert!(!all.contains(STUDENT_DOMAIN), "{table}: {all}");
    }
    assert_eq!(
        query(
            analyst,
            &token,
            "SELECT count(*) FROM scores s JOIN score_details d ON s.email = d.email"
        ),
        "4"
    );
    assert_eq!(
        query(
            analyst,
            &token,
            &format!("SELECT count(*) FROM scores WHERE email = '{ANA}'")
        ),
        "0"
    );
    assert_eq!(
        query(
            analyst,
            &token,
            &format!("SELECT count(*) FROM scores WHERE email = '{ana_p}'")
        ),
        "1"
    );
    // A cursor (DECLARE … FETCH) reads the same catalog.
    let cursor = query(
        analyst,
        &token,
        "BEGIN; DECLARE c CURSOR FOR SELECT email FROM scores ORDER BY email; FETCH ALL FROM c; COMMIT",
    );
    assert!(cursor.contains(&expected[0]), "{cursor}");
    assert!(!cursor.contains(STUDENT_DOMAIN), "{cursor}");
    let (ok, _, err) = psql(
        port,
        analyst,
        &token,
        "EXPLAIN VERBOSE SELECT email FROM scores",
    );
    assert!(!ok);
    assert!(err.contains("statistics"), "{err}");
    // The extended protocol (Parse/Bind/Execute) too.
    let mut extended = extended_query(
        port,
        analyst,
        &token,
        "SELECT email FROM scores ORDER BY email",
    )
    .unwrap();
    extended.sort();
    assert_eq!(extended, expected);

    let educator = "edu@example.com";
    let educator_token = server.token(educator, "educator");
    assert_eq!(
        query(
            educator,
            &educator_token,
            "SELECT email FROM scores ORDER BY email"
        ),
        format!("{BOB}\n{ANA}")
    );
    let documents = query(
        educator,
        &educator_token,
        "SELECT document FROM score_changes",
    );
    assert!(documents.contains(ANA), "{documents}");
    assert_eq!(
        extended_query(
            port,
            educator,
            &educator_token,
            "SELECT email FROM scores ORDER BY email"
        )
        .unwrap(),
        vec![BOB.to_string(), ANA.to_string()]
    );
    // Another analyst connection after the educator's: still pseudonyms.
    assert_eq!(
        query(analyst, &token, "SELECT min(email) FROM scores"),
        expected[0]
    );
}

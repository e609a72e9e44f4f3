//! The PostgreSQL wire protocol (`[pgwire] listen`), driven by the real `psql` client (and
//! psycopg, for the extended protocol, when Python has it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::kafka::{create_topic, test_brokers};
use common::lake::{count, generate_attempts, produce_attempts};
use common::psql::{pgwire_port, psql, psql_available, psql_command, query};
use common::{Server, ServerOptions, unique};

/// One `psql` connection fed statements one at a time (to see what a connection that is
/// already open sees later).
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn open(port: u16, user: &str, password: &str) -> Session {
        let mut child = psql_command(port, user, password)
            .args(["-v", "ON_ERROR_STOP=0", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running psql");
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Session {
            child,
            stdin,
            lines,
        }
    }

    /// The one line a single-row, single-column query prints (or its error).
    fn one(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql};").unwrap();
        self.stdin.flush().unwrap();
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no answer to {sql}"))
    }

    /// Asks `sql` until it prints `expected`.
    fn until(&mut self, sql: &str, expected: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.one(sql);
            if got == expected || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, config: &str, kafka: Option<String>) -> (Server, u16) {
    let file = dir.join("examflow.toml");
    std::fs::write(&file, config).unwrap();
    let mut options = ServerOptions::new(&dir.join("data"));
    options.config_file = Some(file);
    options.kafka_brokers = kafka;
    let server = Server::start(options);
    let port = pgwire_port(&server);
    (server, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_signs_in_with_a_token_reads_live_tables_and_cannot_write() {
    if !psql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = start(
        dir.path(),
        "[sql]\ntimeout_secs = 3\n\n[pgwire]\nlisten = \"127.0.0.1:0\"\n",
        None,
    );
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");

    // Queries, the lake (empty: no Kafka here), its views and the other tables.
    assert_eq!(
        query(
            port,
            analyst,
            &token,
            "SELECT sum(value) FROM generate_series(1, 10)"
        ),
        "55"
    );
    assert_eq!(
        query(port, analyst, &token, "SELECT count(*) FROM attempts"),
        "0"
    );
    for table in ["scores", "score_details", "abilities", "calibrations"] {
        query(
            port,
            analyst,
            &token,
            &format!("SELECT count(*) FROM {table}"),
        );
    }
    assert_eq!(
        query(port, analyst, &token, "SELECT current_database()"),
        "examflow"
    );
    // Catalog listing as psql does it.
    let tables = query(port, analyst, &token, "\\dt");
    for table in [
        "attempts",
        "attempt_questions",
        "adaptive_sessions",
        "calibrations",
    ] {
        assert!(
            tables.lines().any(|l| l.split('|').nth(1) == Some(table)),
            "{table} missing from \\dt:\n{tables}"
        );
    }
    let columns = query(port, analyst, &token, "\\d attempts");
    assert!(columns.contains("keen_id"), "{columns}");

    // Nothing that writes, defines or reads files.
    for sql in [
        "DROP TABLE attempts",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
        "CREATE TABLE t AS SELECT 1 AS a",
        "CREATE VIEW v AS SELECT 1 AS a",
        "INSERT INTO attempts SELECT * FROM attempts",
        "DELETE FROM attempts",
        "SELECT 1 AS a INTO t",
        "COPY (SELECT 1) TO '/tmp/examflow-pgwire-copy.csv'",
        "EXPLAIN CREATE TABLE t AS SELECT 1",
    ] {
        let out = psql(port, analyst, &token, &["-c", sql]);
        assert!(!out.success, "{sql} was not refused: {}", out.stdout);
        assert!(
            out.stderr.contains("read-only"),
            "{sql}: unclear refusal: {}",
            out.stderr
        );
    }
    for set in [
        "SET datafusion.runtime.memory_limit = '100G'",
        "SET \"datafusion.runtime.memory_limit\" = '1T'",
        "SET LOCAL \"DataFusion\".runtime.temp_directory = '/tmp'",
    ] {
        let out = psql(port, analyst, &token, &["-c", set]);
        assert!(!out.success, "{set} was not refused");
        assert!(
            out.stderr.contains("fixed by the server"),
            "{set}: {}",
            out.stderr
        );
    }
    let out = psql(
        port,
        analyst,
        &token,
        &["-c", "SELECT * FROM '/etc/passwd'"],
    );
    assert!(!out.success, "{}", out.stdout);
    assert!(!Path::new("/tmp/examflow-pgwire-copy.csv").exists());
    // Session settings clients send are fine.
    assert_eq!(
        query(
            port,
            analyst,
            &token,
            "SET statement_timeout = 10000; SET application_name = 'test'; SELECT 1"
        ),
        "SET\nSET\n1"
    );

    // One connection's time zone is not another's (the DataFusion session is shared).
    let before = query(port, analyst, &token, "SELECT arrow_typeof(now())");
    query(port, analyst, &token, "SET timezone = 'Europe/Paris'");
    assert_eq!(
        query(port, analyst, &token, "SELECT arrow_typeof(now())"),
        before
    );

    // Sign-in: token as password, user name = its email, analytics roles only.
    let student = server.token("stu@example.com", "student");
    let out = psql(port, "stu@example.com", &student, &["-c", "SELECT 1"]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("SQL needs the analyst, educator or admin role"),
        "{}",
        out.stderr
    );
    let out = psql(port, analyst, "not-a-token", &["-c", "SELECT 1"]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    let out = psql(port, "someone@example.com", &token, &["-c", "SELECT 1"]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("does not match the token"),
        "{}",
        out.stderr
    );
    let educator = server.token("edu@example.com", "educator");
    assert_eq!(query(port, "edu@example.com", &educator, "SELECT 1"), "1");

    // Live: a connection opened before a row exists sees it afterwards.
    let mut session = Session::open(port, analyst, &token);
    assert_eq!(session.one("SELECT count(*) FROM adaptive_sessions"), "0");
    let student_token = server.token("live@example.com", "student");
    let (status, body) = server
        .post(
            "/api/adaptive/intro-statistics/sessions",
            Some(&student_token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Analysts see a pseudonym (tests/pseudonyms.rs checks its value).
    let seen = session.one("SELECT count(*) || ' ' || min(email) FROM adaptive_sessions");
    assert!(seen.starts_with("1 s_") && !seen.contains('@'), "{seen}");
    // A refused statement does not end the session.
    assert!(session.one("DROP TABLE attempts").contains("read-only"));
    assert_eq!(session.one("SELECT 2"), "2");
    drop(session);

    // [sql] timeout_secs bounds a query, also while its rows stream.
    for sql in [
        "SELECT count(*) FROM generate_series(1, 100000000000)",
        "SELECT value FROM generate_series(1, 100000000000)",
    ] {
        let started = Instant::now();
        let out = psql(port, analyst, &token, &["-c", sql]);
        assert!(!out.success);
        assert!(out.stderr.contains("ran longer than 3 s"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    extended_protocol_with_psycopg(port, analyst, &token);
}

/// psycopg uses the extended protocol (Parse/Bind/Execute) and server-side cursors.
fn extended_protocol_with_psycopg(port: u16, user: &str, token: &str) {
    let has_psycopg = Command::new("python3")
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_psycopg {
        eprintln!(
            "SKIPPED (part): Python psycopg is not installed; the extended protocol is untested"
        );
        return;
    }
    let script = r#"
import sys, psycopg
port, user, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with psycopg.connect(host="127.0.0.1", port=port, user=user, password=token, dbname="examflow") as conn:
    cur = conn.cursor()
    cur.execute("SELECT sum(value) + %s FROM generate_series(1, 10)", (1,))
    print(cur.fetchone()[0])
    cur.execute("SELECT count(*) FROM adaptive_sessions WHERE exam = %s", ("intro-statistics",))
    print(cur.fetchone()[0])
    for sql in ["DROP TABLE attempts", "SELECT 1 AS a INTO t"]:
        try:
            cur.execute(sql)
            print("not refused:", sql)
        except psycopg.errors.ReadOnlySqlTransaction:
            print("refused")
            conn.rollback()
    with conn.cursor(name="c") as named:
        named.execute("SELECT value FROM generate_series(1, 5)")
        print(sum(row[0] for row in named.fetchall()))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), user, token])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "56\n1\nrefused\nrefused\n15");
}

/// Rows the ingest takes in after a connection opened: first from the in-memory tail,
/// then committed, then committed plus a newer tail, never twice.
#[test]
fn psql_sees_lake_rows_that_arrive_after_it_connected() {
    if !psql_available() {
        return;
    }
    let (brokers, _own) = test_brokers();
    let dir = tempfile::tempdir().unwrap();
    let attempts_topic = unique("exams");
    // Before the server subscribes: the rows come only after psql has connected.
    create_topic(&brokers, &attempts_topic, 1);
    let config = format!(
        "[kafka]\ntopic_prefix = \"{}\"\nsession_timeout_ms = 6000\n\n\
         [ingest]\nattempts_topic = \"{attempts_topic}\"\ncommit_interval_ms = 1000\n\n\
         [pgwire]\nlisten = \"127.0.0.1:0\"\n",
        unique("pg")
    );
    let (server, port) = start(dir.path(), &config, Some(brokers.clone()));
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");
    let mut session = Session::open(port, analyst, &token);
    let attempts = "SELECT count(*) FROM attempts";
    assert_eq!(session.one(attempts), "0");

    let first = dir.path().join("first.jsonl");
    generate_attempts(&first, 40, 11, 0.0, "lines");
    produce_attempts(&first, &brokers, &attempts_topic, 1);
    let seen = session.until(attempts, "40", Duration::from_secs(60));
    assert_eq!(seen, "40", "log:\n{}", server.log());
    // Committed by now or soon; the count stays 40 across the swap.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&server.data_dir, "SELECT count(*) AS n FROM attempts") < 40 {
        assert!(
            Instant::now() < deadline,
            "not committed:\n{}",
            server.log()
        );
        assert_eq!(session.one(attempts), "40");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(session.one(attempts), "40");

    let second = dir.path().join("second.jsonl");
    generate_attempts(&second, 25, 12, 0.0, "lines");
    produce_attempts(&second, &brokers, &attempts_topic, 1);
    let seen = session.until(attempts, "65", Duration::from_secs(60));
    assert_eq!(seen, "65", "log:\n{}", server.log());
    // The views and joins over the live tables work too.
    assert_eq!(
        session.one(
            "SELECT count(*) FROM attempts \
             WHERE keen_id IN (SELECT keen_id FROM attempts)"
        ),
        "65"
    );
}

/// With a certificate configured, sign-in needs TLS: the token never crosses in the clear.
#[test]
fn with_a_certificate_only_tls_connections_sign_in() {
    if !psql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        eprintln!("SKIPPED: `openssl` could not make a test certificate");
        return;
    }
    let config = format!(
        "[pgwire]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (server, port) = start(dir.path(), &config, None);
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");
    let mut secure = psql_command(port, analyst, &token);
    secure.env("PGSSLMODE", "require").args(["-c", "SELECT 1"]);
    let out = secure.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let mut plain = psql_command(port, analyst, &token);
    plain.env("PGSSLMODE", "disable").args(["-c", "SELECT 1"]);
    let out = plain.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accepts only TLS connections"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Slots of `[pgwire] max_connections` go to signed-in connections only, a connection that
/// does not sign in is closed after `sign_in_timeout_secs`, and one whose token expires is
/// ended at its next statement.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_take_no_slot_and_connections_end_with_their_token() {
    if !psql_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = start(
        dir.path(),
        "[pgwire]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nsign_in_timeout_secs = 2\n",
        None,
    );
    let analyst = "ana@example.com";
    let token = server.token(analyst, "analyst");

    // Ten sockets that never sign in do not keep a user out.
    let idle: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert_eq!(query(port, analyst, &token, "SELECT 40 + 2"), "42");

    // They are closed once the sign-in timeout passes (read sees end of stream).
    std::thread::sleep(Duration::from_secs(3));
    for mut socket in idle {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let read = socket.read(&mut buf);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle socket is closed after the sign-in timeout, not kept open: {read:?}"
        );
    }

    // Two signed-in sessions take both slots; a third sign-in is refused with 53300.
    // (Interactive psql sessions, kept open on their stdin.)
    let mut held: Vec<Child> = (0..2)
        .map(|_| {
            let mut child = psql_command(port, analyst, &token)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(b"SELECT 1;\n")
                .unwrap();
            child
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let third = psql(port, analyst, &token, &["-c", "SELECT 1"]);
    assert!(!third.success, "a third session got in: {}", third.stdout);
    assert!(
        third.stderr.contains("too many clients"),
        "{}",
        third.stderr
    );
    for child in &mut held {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        query(port, analyst, &token, "SELECT 1"),
        "1",
        "slots come back"
    );

    // A connection ends at its first statement after its token expired.
    let short = common::token_with_ttl(&server.data_dir, analyst, "analyst", 2);
    let script = dir.path().join("slow.sql");
    std::fs::write(&script, "SELECT 'first';\n\\! sleep 3\nSELECT 'second';\n").unwrap();
    let out = psql(port, analyst, &short, &["-f", script.to_str().unwrap()]);
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stdout.contains("first"), "{}", out.stdout);
    assert!(!out.stdout.contains("second"), "{}", out.stdout);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
}

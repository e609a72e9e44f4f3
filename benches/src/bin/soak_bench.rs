//! Soak benchmark (issue 20): minutes of steady mixed load against the release
//! `examflow serve` with Kafka and pgwire on, sampling the server's memory, open files and
//! per-kind p99 latency every few seconds, then checking that nothing was lost.
//!
//! Load (open loop: requests leave on schedule whether or not earlier ones came back):
//!
//! * one-shot submissions (`POST /api/exams/{exam}/submissions`, the three sample banks);
//! * fixed-form attempts: start, every answer saved (`PUT .../answers/{index}`, a short
//!   pause between answers), submit;
//! * adaptive answers over a few concurrent sessions on a 200-item exam with imported 3PL
//!   parameters; a finished session is replaced by a new one of the same student;
//! * SQL over HTTP (`POST /api/sql`, analyst) and over pgwire (`psql`, a new connection per
//!   query), rotating through a few queries of the live lake;
//! * ingest: attempt documents from `data/gen_attempts.py` produced to the attempts topic.
//!
//! Every `--sample-secs` the harness reads the server's VmRSS, threads and open files
//! (/proc), the requests, errors and p99 of each kind over that window, and the ingest lag
//! (produced minus rows visible in the lake, results acknowledged minus `scores` rows). At
//! the end it stops the load, waits for the lake to catch up, stops the server with SIGTERM
//! and checks the stored results (SQLite), the outbox and the committed lake tables
//! (`examflow sql`) against what the server and the broker acknowledged.
//!
//! ```text
//! cargo build --release -p examflow -p examflow-benches --bin examflow --bin soak-bench
//! $CARGO_TARGET_DIR/release/soak-bench [--quick] [--minutes M] [--sample-secs S] ...
//! ```
//!
//! Exit status 1 when a request failed or a row is missing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use examflow_benches::{Broker, Rng, examflow_binary, loadavg, repo_root};
use examflow_ingest::KafkaSettings;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const ADAPTIVE_EXAM: &str = "adaptive-soak";
const ADAPTIVE_ITEMS: usize = 200;
const ADMIN: &str = "admin@example.com";
const ANALYST: &str = "analyst@example.com";
/// Distinct students of the one-shot submissions.
const SUBMIT_STUDENTS: usize = 30;
/// Students taking fixed-form attempts (each may have one open attempt per exam).
const ATTEMPT_STUDENTS: usize = 24;

/// Queries of the HTTP SQL load (analyst), in turn.
const SQL_QUERIES: &[&str] = &[
    "SELECT count(*) AS n FROM attempts",
    "SELECT exam, count(*) AS n, avg(percentage) AS mean FROM scores GROUP BY exam ORDER BY exam",
    "SELECT * FROM exam_summary ORDER BY exam",
    "SELECT exam_name, count(*) AS n, avg(CASE WHEN user_correct THEN 1.0 ELSE 0.0 END) AS p \
     FROM attempt_questions GROUP BY exam_name ORDER BY n DESC LIMIT 10",
    "SELECT count(*) AS n FROM abilities",
    "SELECT * FROM question_difficulty ORDER BY responses DESC LIMIT 20",
    "SELECT status, count(*) AS n FROM adaptive_sessions GROUP BY status ORDER BY status",
];

/// Queries of the pgwire load (analyst, `psql -c`), in turn.
const PG_QUERIES: &[&str] = &[
    "SELECT count(*) FROM scores",
    "SELECT exam, results, takers FROM exam_summary ORDER BY exam",
    "SELECT count(*) FROM attempt_options",
    "SELECT count(*) FROM student_history",
];

// ---------------------------------------------------------------- arguments

struct Args {
    minutes: f64,
    sample_secs: f64,
    submissions: f64,
    attempts: f64,
    adaptive: f64,
    adaptive_sessions: usize,
    sql: f64,
    pgwire_every: f64,
    ingest: f64,
    answer_gap_ms: u64,
    settle_secs: u64,
    slope_limit: f64,
    work_dir: Option<PathBuf>,
    /// Create the attempts topic before the server starts (default; `--no-create-topic`
    /// leaves it to the first produced message).
    create_topic: bool,
    /// Ask the lake for its counts at every sample (the lag columns); `--no-lag` leaves
    /// the server without any query but the load's.
    lag: bool,
    /// Diagnosis instead of the soak: this many Delta commits in this process.
    commit_loop: Option<usize>,
    /// Attempts per tail batch in `--commit-loop` (20 per commit).
    commit_loop_batch: usize,
    /// Diagnosis instead of the soak: the lake ingest in this process, fed at `--ingest`/s.
    ingest_loop: bool,
}

const USAGE: &str = "soak-bench [--quick] [--minutes M (10)] [--sample-secs S (10)] \
[--submissions R (20/s)] [--attempts R (5/s)] [--adaptive R (5 answers/s)] \
[--adaptive-sessions N (8)] [--sql R (1/s)] [--pgwire-every SECS (2)] [--ingest R (20/s)] \
[--answer-gap-ms MS (100)] [--settle-secs S (60)] [--slope-limit MB_PER_MIN (1)] \
[--work-dir DIR (keep data and logs)] [--no-create-topic] [--no-lag]
       soak-bench --commit-loop N [--commit-loop-batch B (20)]   (diagnosis: N lake commits of
       20 attempts in this process, tail batches of B attempts, RSS as they go)
       soak-bench --ingest-loop [--minutes M] [--ingest R] [--sample-secs S]   (diagnosis: the
       lake ingest (LakeIngest, 2 s commits) in this process, fed from the broker at R/s)";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        minutes: 10.0,
        sample_secs: 10.0,
        submissions: 20.0,
        attempts: 5.0,
        adaptive: 5.0,
        adaptive_sessions: 8,
        sql: 1.0,
        pgwire_every: 2.0,
        ingest: 20.0,
        answer_gap_ms: 100,
        settle_secs: 60,
        slope_limit: 1.0,
        work_dir: None,
        create_topic: true,
        lag: true,
        commit_loop: None,
        commit_loop_batch: 20,
        ingest_loop: false,
    };
    let mut minutes = None;
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |flag: &str| -> Result<f64> {
            let v: f64 = it
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag}: not a number"))?;
            ensure!(v >= 0.0 && v.is_finite(), "{flag}: must be ≥ 0");
            Ok(v)
        };
        match x.as_str() {
            "--quick" => quick = true,
            "--no-create-topic" => a.create_topic = false,
            "--no-lag" => a.lag = false,
            "--ingest-loop" => a.ingest_loop = true,
            "--commit-loop" => a.commit_loop = Some(num("--commit-loop")? as usize),
            "--commit-loop-batch" => a.commit_loop_batch = num("--commit-loop-batch")? as usize,
            "--minutes" => minutes = Some(num("--minutes")?),
            "--sample-secs" => a.sample_secs = num("--sample-secs")?,
            "--submissions" => a.submissions = num("--submissions")?,
            "--attempts" => a.attempts = num("--attempts")?,
            "--adaptive" => a.adaptive = num("--adaptive")?,
            "--adaptive-sessions" => a.adaptive_sessions = num("--adaptive-sessions")? as usize,
            "--sql" => a.sql = num("--sql")?,
            "--pgwire-every" => a.pgwire_every = num("--pgwire-every")?,
            "--ingest" => a.ingest = num("--ingest")?,
            "--answer-gap-ms" => a.answer_gap_ms = num("--answer-gap-ms")? as u64,
            "--settle-secs" => a.settle_secs = num("--settle-secs")? as u64,
            "--slope-limit" => a.slope_limit = num("--slope-limit")?,
            "--work-dir" => a.work_dir = Some(PathBuf::from(it.next().context("--work-dir DIR")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    a.minutes = minutes.unwrap_or(if quick { 1.0 } else { 10.0 });
    ensure!(a.minutes > 0.0, "--minutes must be positive");
    ensure!(a.sample_secs >= 1.0, "--sample-secs must be at least 1");
    Ok(a)
}

// ---------------------------------------------------------------- statistics

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Submission,
    AttemptStart,
    AttemptAnswer,
    AttemptSubmit,
    AdaptiveStart,
    AdaptiveAnswer,
    SqlHttp,
    Pgwire,
    Produce,
}

const KINDS: [Kind; 9] = [
    Kind::Submission,
    Kind::AttemptStart,
    Kind::AttemptAnswer,
    Kind::AttemptSubmit,
    Kind::AdaptiveStart,
    Kind::AdaptiveAnswer,
    Kind::SqlHttp,
    Kind::Pgwire,
    Kind::Produce,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Submission => "submission (POST, 201)",
            Kind::AttemptStart => "attempt start (POST, 201)",
            Kind::AttemptAnswer => "attempt answer (PUT, 200)",
            Kind::AttemptSubmit => "attempt submit (POST, 201)",
            Kind::AdaptiveStart => "adaptive session start (201)",
            Kind::AdaptiveAnswer => "adaptive answer (200)",
            Kind::SqlHttp => "SQL over HTTP (200)",
            Kind::Pgwire => "SQL over pgwire (psql process)",
            Kind::Produce => "Kafka produce → ack (attempts topic)",
        }
    }
}

#[derive(Default)]
struct KindStats {
    all: Vec<Duration>,
    errors: usize,
    window: Vec<Duration>,
    window_errors: usize,
    worst_window_p99: Option<Duration>,
    /// Error message → (count, first time seen, seconds into the load).
    messages: BTreeMap<String, (usize, f64)>,
}

/// One window of one kind: requests that succeeded, errors, p99.
#[derive(Clone, Copy)]
struct Window {
    ok: usize,
    errors: usize,
    p99: Option<Duration>,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "–".into(),
        Some(d) => {
            let v = d.as_secs_f64() * 1e3;
            if v < 10.0 {
                format!("{v:.2}")
            } else if v < 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        }
    }
}

// ---------------------------------------------------------------- the shared load context

struct FixedBank {
    name: String,
    /// Questions in bank order: (text, options, correct option).
    questions: Vec<(String, Vec<String>, String)>,
    key: HashMap<String, String>,
}

struct Session {
    token: String,
    id: String,
    item: Value,
    options: Vec<String>,
    /// The right option (the generated question text ends with it).
    right: String,
}

struct Ctx {
    base: String,
    client: reqwest::Client,
    started: Instant,
    stats: Mutex<Vec<KindStats>>,
    rng: Mutex<Rng>,
    banks: Vec<FixedBank>,
    submit_tokens: Vec<String>,
    analyst: String,
    admin: String,
    pg: Option<(String, u16)>,
    /// Idle (student token, bank index) pairs for fixed-form attempts.
    attempt_pool: Mutex<VecDeque<(String, usize)>>,
    /// Idle adaptive sessions.
    sessions: Mutex<VecDeque<Session>>,
    /// Results the server acknowledged: submissions 201, attempt submits 201, adaptive
    /// sessions finished.
    acked_submissions: AtomicUsize,
    acked_attempts: AtomicUsize,
    acked_adaptive: AtomicUsize,
    skipped_attempts: AtomicUsize,
    skipped_adaptive: AtomicUsize,
    /// keen_ids the broker acknowledged.
    produced: Mutex<HashSet<String>>,
    /// Documents handed to the producer.
    sent_docs: AtomicUsize,
    printed_errors: AtomicUsize,
}

impl Ctx {
    fn ok(&self, kind: Kind, latency: Duration) {
        let mut s = self.stats.lock().unwrap();
        let k = &mut s[kind as usize];
        k.all.push(latency);
        k.window.push(latency);
    }

    fn err(&self, kind: Kind, message: String) {
        let at = self.started.elapsed().as_secs_f64();
        if self.printed_errors.fetch_add(1, Ordering::Relaxed) < 30 {
            eprintln!("[{at:7.1} s] error, {}: {message}", kind.label());
        }
        let mut s = self.stats.lock().unwrap();
        let k = &mut s[kind as usize];
        k.errors += 1;
        k.window_errors += 1;
        let key: String = message.chars().take(160).collect();
        k.messages.entry(key).or_insert((0, at)).0 += 1;
    }

    fn acked_results(&self) -> usize {
        self.acked_submissions.load(Ordering::Relaxed)
            + self.acked_attempts.load(Ordering::Relaxed)
            + self.acked_adaptive.load(Ordering::Relaxed)
    }

    /// Sends `req`; a status other than `expect`, a transport error or an unreadable body
    /// is an error of `kind`. Returns the JSON body (Null when not JSON) on success.
    async fn call(&self, kind: Kind, req: reqwest::RequestBuilder, expect: u16) -> Option<Value> {
        let t = Instant::now();
        let outcome = async {
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    format!("client timeout: {e}")
                } else if e.is_connect() {
                    format!("connect: {e}")
                } else {
                    format!("client: {e}")
                }
            })?;
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("reading the body: {e}"))?;
            if status != expect {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let what = v["error"]["code"].as_str().map_or_else(
                    || String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned(),
                    |code| {
                        format!(
                            "{code}: {}",
                            v["error"]["message"].as_str().unwrap_or_default()
                        )
                    },
                );
                return Err(format!("HTTP {status} (expected {expect}) {what}"));
            }
            Ok(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
        .await;
        match outcome {
            Ok(v) => {
                self.ok(kind, t.elapsed());
                Some(v)
            }
            Err(m) => {
                self.err(kind, m);
                None
            }
        }
    }

    /// `right` with probability `p`, else another option.
    fn pick(&self, options: &[String], right: &str, p: f64) -> String {
        let mut rng = self.rng.lock().unwrap();
        if options.is_empty() || rng.next() < p {
            return right.to_string();
        }
        let others: Vec<&String> = options.iter().filter(|o| *o != right).collect();
        if others.is_empty() {
            right.to_string()
        } else {
            others[rng.below(others.len())].clone()
        }
    }

    async fn submission(&self, i: usize) {
        let bank = &self.banks[i % self.banks.len()];
        let token = &self.submit_tokens[i % self.submit_tokens.len()];
        let answers: Vec<String> = bank
            .questions
            .iter()
            .map(|(_, options, right)| self.pick(options, right, 0.7))
            .collect();
        let req = self
            .client
            .post(format!("{}/api/exams/{}/submissions", self.base, bank.name))
            .bearer_auth(token)
            .json(&json!({ "answers": answers }));
        if self.call(Kind::Submission, req, 201).await.is_some() {
            self.acked_submissions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One fixed-form attempt: start, save every answer (`gap` apart), submit. A student
    /// whose attempt failed half way is not used again (it may still have an open attempt).
    async fn attempt(&self, gap: Duration) {
        let Some((token, b)) = self.attempt_pool.lock().unwrap().pop_front() else {
            self.skipped_attempts.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bank = &self.banks[b];
        let req = self
            .client
            .post(format!("{}/api/exams/{}/attempts", self.base, bank.name))
            .bearer_auth(&token);
        let Some(started) = self.call(Kind::AttemptStart, req, 201).await else {
            return;
        };
        let Some(id) = started["attempt_id"].as_str().map(str::to_string) else {
            self.err(Kind::AttemptStart, "no attempt_id in the answer".into());
            return;
        };
        let questions = started["questions"].as_array().cloned().unwrap_or_default();
        if questions.len() != bank.questions.len() {
            self.err(
                Kind::AttemptStart,
                format!(
                    "{} questions, the bank has {}",
                    questions.len(),
                    bank.questions.len()
                ),
            );
            return;
        }
        for (n, q) in questions.iter().enumerate() {
            tokio::time::sleep(gap).await;
            let index = q["index"].as_u64().unwrap_or(n as u64);
            let text = q["question"].as_str().unwrap_or_default();
            let options = option_texts(q);
            let right = bank.key.get(text).cloned().unwrap_or_default();
            let answer = self.pick(&options, &right, 0.7);
            let req = self
                .client
                .put(format!("{}/api/attempts/{id}/answers/{index}", self.base))
                .bearer_auth(&token)
                .json(&json!({"answer": answer, "flagged": n % 7 == 3}));
            if self.call(Kind::AttemptAnswer, req, 200).await.is_none() {
                return;
            }
        }
        tokio::time::sleep(gap).await;
        let req = self
            .client
            .post(format!("{}/api/attempts/{id}/submit", self.base))
            .bearer_auth(&token);
        if self.call(Kind::AttemptSubmit, req, 201).await.is_some() {
            self.acked_attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt_pool.lock().unwrap().push_back((token, b));
        }
    }

    fn session_from(&self, token: String, id: String, question: &Value) -> Session {
        let text = question["question"].as_str().unwrap_or_default();
        Session {
            token,
            id,
            item: question["id"].clone(),
            options: question["options"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            right: text.rsplit(' ').next().unwrap_or("A").to_string(),
        }
    }

    async fn start_session(&self, token: String) -> Option<Session> {
        let req = self
            .client
            .post(format!(
                "{}/api/adaptive/{ADAPTIVE_EXAM}/sessions",
                self.base
            ))
            .bearer_auth(&token)
            .json(&json!({}));
        let v = self.call(Kind::AdaptiveStart, req, 201).await?;
        let Some(id) = v["session"].as_str().map(str::to_string) else {
            self.err(Kind::AdaptiveStart, "no session id in the answer".into());
            return None;
        };
        Some(self.session_from(token, id, &v["question"]))
    }

    /// One answer of an idle session; a finished session is replaced by a new one of the
    /// same student. A session whose answer failed is dropped.
    async fn adaptive_answer(&self) {
        let Some(s) = self.sessions.lock().unwrap().pop_front() else {
            self.skipped_adaptive.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let answer = self.pick(&s.options, &s.right, 0.6);
        let req = self
            .client
            .post(format!(
                "{}/api/adaptive/sessions/{}/answers",
                self.base, s.id
            ))
            .bearer_auth(&s.token)
            .json(&json!({"item": s.item, "answer": answer}));
        let Some(v) = self.call(Kind::AdaptiveAnswer, req, 200).await else {
            return;
        };
        let next = if v["status"] == "finished" {
            self.acked_adaptive.fetch_add(1, Ordering::Relaxed);
            self.start_session(s.token).await
        } else if v["question"].is_object() {
            Some(self.session_from(s.token, s.id, &v["question"]))
        } else {
            self.err(
                Kind::AdaptiveAnswer,
                format!("neither finished nor a next question: {v}"),
            );
            None
        };
        if let Some(n) = next {
            self.sessions.lock().unwrap().push_back(n);
        }
    }

    async fn sql(&self, i: usize) {
        let req = self
            .client
            .post(format!("{}/api/sql?format=json", self.base))
            .bearer_auth(&self.analyst)
            .json(&json!({"sql": SQL_QUERIES[i % SQL_QUERIES.len()]}));
        self.call(Kind::SqlHttp, req, 200).await;
    }

    /// One `psql -c` (a new connection, sign-in with a token, one query, exit).
    async fn pgwire(&self, i: usize) {
        let Some((host, port)) = &self.pg else {
            return;
        };
        let t = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("psql")
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p"])
                .arg(port.to_string())
                .args(["-U", ANALYST, "-d", "examflow", "-c"])
                .arg(PG_QUERIES[i % PG_QUERIES.len()])
                .env("PGPASSWORD", &self.analyst)
                .env("PGSSLMODE", "disable")
                .env("PGCONNECT_TIMEOUT", "10")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match out {
            Ok(Ok(o)) if o.status.success() => {
                self.ok(Kind::Pgwire, t.elapsed());
            }
            Ok(Ok(o)) => self.err(
                Kind::Pgwire,
                format!(
                    "psql {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Ok(Err(e)) => self.err(Kind::Pgwire, format!("starting psql: {e}")),
            Err(_) => self.err(Kind::Pgwire, "psql did not finish in 30 s".into()),
        }
    }

    /// Hands one document to the producer; the returned future waits for the broker's
    /// acknowledgement.
    fn produce(
        self: &Arc<Self>,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        doc: &str,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let t = Instant::now();
        match producer.send_result(FutureRecord::to(topic).key(key).payload(doc)) {
            Ok(delivery) => {
                self.sent_docs.fetch_add(1, Ordering::Relaxed);
                let ctx = self.clone();
                let key = key.to_string();
                Some(async move {
                    match delivery.await {
                        Ok(Ok(_)) => {
                            ctx.ok(Kind::Produce, t.elapsed());
                            ctx.produced.lock().unwrap().insert(key);
                        }
                        Ok(Err((e, _))) => ctx.err(Kind::Produce, format!("delivery: {e}")),
                        Err(_) => ctx.err(Kind::Produce, "delivery cancelled".into()),
                    }
                })
            }
            Err((e, _)) => {
                self.err(Kind::Produce, format!("enqueueing: {e}"));
                None
            }
        }
    }

    /// The current window of every kind (and a new one started).
    fn take_windows(&self) -> Vec<Window> {
        let mut s = self.stats.lock().unwrap();
        s.iter_mut()
            .map(|k| {
                let mut w = std::mem::take(&mut k.window);
                w.sort();
                let p99 = percentile(&w, 0.99);
                if p99 > k.worst_window_p99 {
                    k.worst_window_p99 = p99;
                }
                let errors = std::mem::take(&mut k.window_errors);
                Window {
                    ok: w.len(),
                    errors,
                    p99,
                }
            })
            .collect()
    }
}

/// Calls `make(i)` at `rate` per second from now until `until` (open loop) and waits for
/// everything it spawned.
async fn paced<F, Fut>(rate: f64, until: Instant, mut make: F)
where
    F: FnMut(usize) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    if rate <= 0.0 {
        return;
    }
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    let mut i = 0usize;
    loop {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        while set.try_join_next().is_some() {}
        if let Some(fut) = make(i) {
            set.spawn(fut);
        }
        i += 1;
    }
    while set.join_next().await.is_some() {}
}

// ---------------------------------------------------------------- processes

/// VmRSS (MB) and threads of a process.
fn proc_status(pid: u32) -> (f64, usize) {
    let [rss, threads] = examflow_benches::proc_status(pid, ["VmRSS:", "Threads:"]);
    (rss / 1024.0, threads as usize)
}

/// RssAnon and RssFile (+ RssShmem) of a process, MB: heap and stacks vs mapped files
/// (the binary's pages among them).
fn rss_parts(pid: u32) -> (f64, f64) {
    let [anon, file, shmem] =
        examflow_benches::proc_status(pid, ["RssAnon:", "RssFile:", "RssShmem:"]);
    (anon / 1024.0, (file + shmem) / 1024.0)
}

/// What the open files are: sockets, pipes, anon inodes, and files by directory (under
/// `data` shown relative to it) and extension, most first.
fn fd_summary(pid: u32, data: &Path) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let key = if let Some((kind, _)) = t.split_once(":[") {
                kind.to_string()
            } else if t.starts_with("anon_inode:") {
                t.to_string()
            } else {
                let rel = target
                    .strip_prefix(data)
                    .map(|r| format!("data/{}", r.display()))
                    .unwrap_or_else(|_| t.to_string());
                let path = Path::new(&rel);
                let parent = path
                    .parent()
                    .map_or(String::new(), |p| p.display().to_string());
                match path.extension() {
                    Some(ext) => format!("{parent}/*.{}", ext.to_string_lossy()),
                    None => rel.clone(),
                }
            };
            *counts.entry(key).or_default() += 1;
        }
    }
    most_first(counts)
}

/// "3 a, 1 b": counts, most first.
fn most_first(counts: BTreeMap<String, usize>) -> String {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Threads by name, most first.
fn thread_summary(pid: u32) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            *counts.entry(name.trim().to_string()).or_default() += 1;
        }
    }
    most_first(counts)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

struct Server {
    child: Child,
    base: String,
    pg: Option<(String, u16)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_server(
    config: &Path,
    data: &Path,
    banks: &Path,
    brokers: &str,
    log: &Path,
) -> Result<Server> {
    let mut child = Command::new(examflow_binary()?)
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--banks")
        .arg(banks)
        .args(["--kafka-brokers", brokers])
        .args(["--pgwire-listen", "127.0.0.1:0"])
        .env("EXAMFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting examflow serve")?;
    let (base, mut reader) = examflow_benches::read_served_url(&mut child, Some(log))?;
    let mut line = String::new();
    // The banner: "  PostgreSQL:   psql -h IP -p PORT -U <email> ...", then "  exams: ...".
    let mut pg = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.contains("PostgreSQL:") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .map(|s| s.to_string())
            };
            if let (Some(h), Some(p)) = (after("-h"), after("-p")) {
                pg = Some((h, p.parse()?));
            }
        }
        if line.trim_start().starts_with("exams:") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok(Server { child, base, pg })
}

fn token(data: &Path, email: &str, role: &str) -> Result<String> {
    let out = Command::new(examflow_binary()?)
        .args(["token", "--email", email, "--role", role, "--data-dir"])
        .arg(data)
        .output()?;
    ensure!(
        out.status.success(),
        "examflow token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// `examflow sql QUERY --format json` on the (stopped) server's data dir: committed rows.
fn committed_count(data: &Path, sql: &str) -> Result<u64> {
    let out = Command::new(examflow_binary()?)
        .args(["sql", sql, "--format", "json", "--data-dir"])
        .arg(data)
        .env("EXAMFLOW_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "examflow sql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "examflow sql output {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    v[0]["n"].as_u64().context("no n in the answer")
}

/// `sqlite3 -readonly DB QUERY` → one integer.
fn sqlite_count(db: &Path, sql: &str) -> Result<u64> {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(sql)
        .output()
        .context("running sqlite3")?;
    ensure!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

// ---------------------------------------------------------------- set-up

fn read_fixed_banks(from: &Path, to: &Path) -> Result<Vec<FixedBank>> {
    let mut banks = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(from)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .context("bank name")?
            .to_string_lossy()
            .into_owned();
        std::fs::copy(&path, to.join(path.file_name().context("file name")?))?;
        let items: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let questions: Vec<(String, Vec<String>, String)> = items
            .iter()
            .map(|q| {
                let options = option_texts(q);
                (
                    q["question"].as_str().unwrap_or_default().to_string(),
                    options,
                    q["correct_answer"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let key = questions
            .iter()
            .map(|(t, _, r)| (t.clone(), r.clone()))
            .collect();
        banks.push(FixedBank {
            name,
            questions,
            key,
        });
    }
    ensure!(!banks.is_empty(), "no banks in {}", from.display());
    Ok(banks)
}

/// A 200-item 4-option exam whose question text ends with its right option, and 3PL
/// parameters for it.
fn write_adaptive_bank(dir: &Path, rng: &mut Rng) -> Result<Vec<(f64, f64, f64)>> {
    let mut questions = Vec::with_capacity(ADAPTIVE_ITEMS);
    let mut params = Vec::with_capacity(ADAPTIVE_ITEMS);
    for i in 0..ADAPTIVE_ITEMS {
        let right = ["A", "B", "C", "D"][rng.below(4)];
        let topic = ["algebra", "geometry", "statistics", "number"][i % 4];
        questions.push(json!({
            "question": format!("Soak item {i}: choose {right}"),
            "options": ["A", "B", "C", "D"],
            "correct_answer": right,
            "topic": topic,
        }));
        params.push((
            (0.3 * rng.normal()).exp() * 1.2,
            rng.normal(),
            0.1 + 0.15 * rng.next(),
        ));
    }
    std::fs::write(
        dir.join(format!("{ADAPTIVE_EXAM}.json")),
        serde_json::to_vec(&questions)?,
    )?;
    Ok(params)
}

/// The option texts of a question as the API lists it.
fn option_texts(question: &Value) -> Vec<String> {
    question["options"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `python3 data/gen_attempts.py --count N --seed S --format lines` → (keen_id, document).
fn generate_attempts(dir: &Path, count: usize, seed: u64) -> Result<Vec<(String, String)>> {
    let out = dir.join("attempts.jsonl");
    examflow_benches::generate_attempt_lines(&out, count, seed)?;
    let text = std::fs::read_to_string(&out)?;
    let mut docs = Vec::with_capacity(count);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)?;
        let key = v["keen_id"].as_str().context("keen_id")?.to_string();
        docs.push((key, line.to_string()));
    }
    Ok(docs)
}

async fn dev_login(client: &reqwest::Client, base: &str, email: &str) -> Result<String> {
    let v: Value = client
        .post(format!("{base}/api/dev-login"))
        .json(&json!({ "email": email }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["token"].as_str().context("dev login token")?.to_string())
}

/// Live counts (admin, `POST /api/sql`): lake attempts and `scores` rows.
async fn live_counts(ctx: &Ctx) -> Result<(u64, u64)> {
    let v: Value = ctx
        .client
        .post(format!("{}/api/sql?format=json", ctx.base))
        .bearer_auth(&ctx.admin)
        .json(
            &json!({"sql": "SELECT (SELECT count(*) FROM attempts) AS a, \
                               (SELECT count(*) FROM scores) AS s"}),
        )
        .timeout(Duration::from_secs(15))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((
        v[0]["a"].as_u64().context("a")?,
        v[0]["s"].as_u64().context("s")?,
    ))
}

// ---------------------------------------------------------------- main

struct Sample {
    t: f64,
    rss_mb: f64,
    anon_mb: f64,
    file_mb: f64,
    fds: usize,
    threads: usize,
    windows: Vec<Window>,
    /// Produced (acked) minus lake attempts; acknowledged results minus `scores` rows.
    lag: Option<(i64, i64)>,
    load1: String,
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

const SAMPLE_KINDS: [(Kind, &str); 7] = [
    (Kind::Submission, "submit"),
    (Kind::AttemptAnswer, "att. answer"),
    (Kind::AttemptSubmit, "att. submit"),
    (Kind::AdaptiveAnswer, "adaptive"),
    (Kind::SqlHttp, "SQL"),
    (Kind::Pgwire, "psql"),
    (Kind::Produce, "produce"),
];

fn sample_header() -> String {
    let mut h =
        String::from("| t s | RSS MB | anon MB | file MB | fds | threads | ops/s | errors |");
    for (_, name) in SAMPLE_KINDS {
        let _ = write!(h, " p99 {name} ms |");
    }
    h.push_str(" ingest lag (attempts) | lag (scores) | load 1 min |\n|");
    for _ in 0..(8 + SAMPLE_KINDS.len() + 3) {
        h.push_str("---:|");
    }
    h
}

fn sample_row(s: &Sample, secs: f64) -> String {
    let ops: usize = s.windows.iter().map(|w| w.ok + w.errors).sum();
    let errors: usize = s.windows.iter().map(|w| w.errors).sum();
    let mut r = format!(
        "| {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} |",
        s.t,
        s.rss_mb,
        s.anon_mb,
        s.file_mb,
        s.fds,
        s.threads,
        ops as f64 / secs,
        errors
    );
    for (k, _) in SAMPLE_KINDS {
        let _ = write!(r, " {} |", ms(s.windows[k as usize].p99));
    }
    match s.lag {
        Some((a, b)) => {
            let _ = write!(r, " {a} | {b} |");
        }
        None => r.push_str(" ? | ? |"),
    }
    let _ = write!(r, " {} |", s.load1);
    r
}

/// Diagnosis of memory that grows with the lake's commits: `commits` commits of 20
/// attempts each into the three attempt tables of a lake in a temp dir, in this process
/// (the system allocator, not examflow's jemalloc), as the ingest does them (tail batches
/// of `per_batch` attempts via `push_tail`, then `commit_tail` with the partition's last
/// offset). Prints VmRSS every 25 commits.
async fn commit_loop(commits: usize, per_batch: usize) -> Result<()> {
    use examflow_ingest::attempts::{Attempt, AttemptBatchBuilder};
    use examflow_ingest::lake::Lake;
    use examflow_ingest::source::SourcePosition;
    const PER_COMMIT: usize = 20;
    let per_batch = per_batch.clamp(1, PER_COMMIT);
    let dir = tempfile::tempdir()?;
    let docs = generate_attempts(dir.path(), commits * PER_COMMIT, 7)?;
    let lake = Lake::open(&dir.path().join("data")).await?;
    let tables = [
        &lake.attempts,
        &lake.attempt_questions,
        &lake.attempt_options,
    ];
    let own = std::process::id();
    let started = Instant::now();
    println!(
        "{commits} commits of {PER_COMMIT} attempts into each of the three attempt tables, \
         tail batches of {per_batch} attempts (system allocator, this process)\n"
    );
    println!("| commits | s | VmRSS MB | attempts files |");
    println!("|---:|---:|---:|---:|");
    for c in 0..commits {
        let mut pending = 0;
        for chunk in (0..PER_COMMIT).collect::<Vec<_>>().chunks(per_batch) {
            let mut builder = AttemptBatchBuilder::new();
            for &i in chunk {
                let offset = c * PER_COMMIT + i;
                let attempt = Attempt::parse(docs[offset].1.as_bytes())
                    .map_err(|e| anyhow::anyhow!("document: {e}"))?;
                builder.append(
                    &attempt,
                    &SourcePosition {
                        topic: "exams",
                        partition: 0,
                        offset: offset as i64,
                        ingested_at_us: 1_700_000_000_000_000,
                    },
                );
            }
            let b = builder.finish();
            for (table, batch) in tables.iter().zip([b.attempts, b.questions, b.options]) {
                table.push_tail(batch);
            }
            pending += 1;
        }
        let last = ((c + 1) * PER_COMMIT - 1) as i64;
        let positions = BTreeMap::from([(("exams".to_string(), 0), last)]);
        for table in tables {
            table
                .commit_tail("soak-commit-loop", &positions, pending)
                .await?;
        }
        if (c + 1) % 25 == 0 || c == 0 {
            let files =
                std::fs::read_dir(lake.attempts.dir().expect("a local lake")).map_or(0, |d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                        .count()
                });
            println!(
                "| {} | {:.1} | {:.1} | {files} |",
                c + 1,
                started.elapsed().as_secs_f64(),
                proc_status(own).0
            );
        }
    }
    Ok(())
}

/// Diagnosis: examflow's lake ingest (`LakeIngest`, default settings: 2 s commits, 100 ms
/// flushes, housekeeping every 10 min) in this process (the system allocator), fed from the
/// broker at `--ingest`/s for `--minutes`; VmRSS of this process every `--sample-secs`.
async fn ingest_loop(args: &Args) -> Result<()> {
    use examflow_ingest::IngestMetrics;
    use examflow_ingest::lake::Lake;
    use examflow_ingest::pipeline::{IngestSettings, LakeIngest, LakeMetrics};
    let run_secs = args.minutes * 60.0;
    let dir = tempfile::tempdir()?;
    let docs = Arc::new(generate_attempts(
        dir.path(),
        (args.ingest * run_secs).ceil() as usize + 10,
        2020,
    )?);
    let broker = Broker::get()?;
    let own = std::process::id();
    let topic = format!("exams-ingest-loop-{own}");
    let settings = KafkaSettings {
        brokers: broker.brokers.clone(),
        ..KafkaSettings::default()
    };
    settings
        .create_topics(std::slice::from_ref(&topic), settings.partitions)
        .await?;
    let lake = Arc::new(Lake::open(&dir.path().join("data")).await?);
    let registry = prometheus::Registry::new();
    let lake_metrics = LakeMetrics::new(&registry);
    let ingest = LakeIngest::new(
        lake.clone(),
        settings.clone(),
        IngestSettings {
            group_id: format!("soak-ingest-loop-{own}"),
            attempts_topic: topic.clone(),
            changes_topic: String::new(),
            ..IngestSettings::default()
        },
        IngestMetrics::new(&registry),
        lake_metrics.clone(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { ingest.run(stop_rx).await });
    let producer = settings.producer()?;
    let rows = || lake_metrics.rows.with_label_values(&["attempts"]).get();
    println!(
        "lake ingest in this process (system allocator), {} attempts/s for {} min, 2 s commits\n",
        args.ingest, args.minutes
    );
    println!("| t s | VmRSS MB | anon MB | threads | attempts committed |");
    println!("|---:|---:|---:|---:|---:|");
    let row = |t: f64| {
        let (rss, threads) = proc_status(own);
        let (anon, _) = rss_parts(own);
        println!("| {t:.0} | {rss:.1} | {anon:.1} | {threads} | {} |", rows());
    };
    row(0.0);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(run_secs);
    let producing = {
        let docs = docs.clone();
        let topic = topic.clone();
        tokio::spawn(paced(args.ingest, until, move |i| {
            let (key, doc) = docs.get(i)?;
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(key).payload(doc))
                .ok()?;
            Some(async move {
                let _ = delivery.await;
            })
        }))
    };
    let mut tick = 1;
    while started.elapsed().as_secs_f64() < run_secs {
        tokio::time::sleep_until(
            (started + Duration::from_secs_f64(args.sample_secs * tick as f64)).into(),
        )
        .await;
        row(started.elapsed().as_secs_f64());
        tick += 1;
    }
    producing.await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    row(started.elapsed().as_secs_f64());
    let _ = stop.send(true);
    running.await??;
    drop(broker);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    if args.ingest_loop {
        return ingest_loop(&args).await;
    }
    if let Some(n) = args.commit_loop {
        return commit_loop(n, args.commit_loop_batch).await;
    }
    let run_secs = args.minutes * 60.0;
    let warmup_secs = if run_secs >= 240.0 {
        60.0
    } else {
        run_secs / 4.0
    };
    let load_at_start = loadavg();
    let temp;
    let work: PathBuf = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::path::absolute(d)?
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let data = work.join("data");
    let banks_dir = work.join("banks");
    std::fs::create_dir_all(&banks_dir)?;
    let banks = read_fixed_banks(&repo_root().join("data/question_banks"), &banks_dir)?;
    let mut rng = Rng(0x50A4_2026_0020_0001);
    let params = write_adaptive_bank(&banks_dir, &mut rng)?;

    // Documents for the ingest: enough for the whole run at the configured rate.
    let doc_count = (args.ingest * run_secs * 1.02).ceil() as usize + 50;
    let t = Instant::now();
    let docs = if args.ingest > 0.0 {
        generate_attempts(&work, doc_count, 2020)?
    } else {
        Vec::new()
    };
    let distinct_docs = docs.iter().map(|d| &d.0).collect::<HashSet<_>>().len();
    eprintln!(
        "generated {} attempt documents ({distinct_docs} distinct keen_ids) in {:.1} s",
        docs.len(),
        t.elapsed().as_secs_f64()
    );

    let broker = Broker::get()?;
    eprintln!("broker: {}", broker.label);
    let external = !broker.is_own();
    let suffix = if external {
        format!("-soak-{}", std::process::id())
    } else {
        String::new()
    };
    let attempts_topic = format!("exams{suffix}");
    let settings = KafkaSettings {
        brokers: broker.brokers.clone(),
        ..KafkaSettings::default()
    };
    // examflow creates its own topics (change events, score cards, dead letters), not the
    // attempts topic, which belongs to whoever produces attempts.
    if args.create_topic {
        settings
            .create_topics(std::slice::from_ref(&attempts_topic), settings.partitions)
            .await?;
    }
    let config_path = work.join("examflow.toml");
    std::fs::write(
        &config_path,
        format!(
            "[adaptive]\ncalibrate_interval_secs = 0\n\
             [adaptive.policy]\nmin_length = 10\nmax_length = 20\nse_target = 0.3\n\
             [limits]\nstarts_per_minute = 0\nsubmissions_per_minute = 0\nanswers_per_minute = 0\n\
             [kafka]\ntopic_prefix = \"mongo-trigger-topic{suffix}\"\n\
             email_topic = \"email-topic{suffix}\"\nscore_card_group = \"examflow-score-cards{suffix}\"\n\
             [ingest]\nattempts_topic = \"{attempts_topic}\"\ngroup_id = \"examflow-ingest{suffix}\"\n"
        ),
    )?;
    let log = work.join("examflow-serve.log");
    let t = Instant::now();
    let mut server = start_server(&config_path, &data, &banks_dir, &broker.brokers, &log)?;
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;
    // Ready: store, broker and the background tasks up.
    let mut ready = false;
    while t.elapsed() < Duration::from_secs(90) {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure!(
        ready,
        "examflow serve not ready after 90 s; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let startup = t.elapsed();
    ensure!(
        server.pg.is_some(),
        "examflow serve printed no pgwire address"
    );
    eprintln!(
        "examflow serve (pid {pid}) ready at {} in {:.1} s, pgwire {:?}",
        server.base,
        startup.as_secs_f64(),
        server.pg
    );

    let admin = token(&data, ADMIN, "admin")?;
    let analyst = token(&data, ANALYST, "analyst")?;
    // The adaptive exam's parameters, imported as its calibration.
    let exam: Value = client
        .get(format!("{}/api/exams/{ADAPTIVE_EXAM}", server.base))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let items: Vec<Value> = exam["questions"]
        .as_array()
        .context("adaptive exam listing")?
        .iter()
        .zip(&params)
        .map(|(q, (a, b, c))| json!({"item": q["id"], "a": a, "b": b, "c": c}))
        .collect();
    let resp = client
        .post(format!(
            "{}/api/exams/{ADAPTIVE_EXAM}/calibrations",
            server.base
        ))
        .bearer_auth(&admin)
        .json(&json!({ "items": items }))
        .send()
        .await?;
    if resp.status().as_u16() != 201 {
        bail!("importing the adaptive parameters: {}", resp.text().await?);
    }

    let mut submit_tokens = Vec::new();
    for i in 0..SUBMIT_STUDENTS {
        submit_tokens
            .push(dev_login(&client, &server.base, &format!("soak-sub{i}@example.com")).await?);
    }
    let mut attempt_pool = VecDeque::new();
    for i in 0..ATTEMPT_STUDENTS {
        let token = dev_login(&client, &server.base, &format!("soak-att{i}@example.com")).await?;
        for b in 0..banks.len() {
            attempt_pool.push_back((token.clone(), b));
        }
    }
    // Interleave the exams in the pool.
    let mut pool: Vec<_> = attempt_pool.into_iter().collect();
    pool.sort_by_key(|(_, b)| *b);
    let n = pool.len();
    let per = n / banks.len();
    let attempt_pool: VecDeque<_> = (0..n)
        .map(|i| pool[(i % banks.len()) * per + i / banks.len()].clone())
        .collect();

    let ctx = Arc::new(Ctx {
        base: server.base.clone(),
        client: client.clone(),
        started: Instant::now(),
        stats: Mutex::new((0..KINDS.len()).map(|_| KindStats::default()).collect()),
        rng: Mutex::new(Rng(0x0020_50A4)),
        banks,
        submit_tokens,
        analyst,
        admin,
        pg: server.pg.clone(),
        attempt_pool: Mutex::new(attempt_pool),
        sessions: Mutex::new(VecDeque::new()),
        acked_submissions: AtomicUsize::new(0),
        acked_attempts: AtomicUsize::new(0),
        acked_adaptive: AtomicUsize::new(0),
        skipped_attempts: AtomicUsize::new(0),
        skipped_adaptive: AtomicUsize::new(0),
        produced: Mutex::new(HashSet::new()),
        sent_docs: AtomicUsize::new(0),
        printed_errors: AtomicUsize::new(0),
    });
    if args.adaptive > 0.0 {
        for i in 0..args.adaptive_sessions {
            let token =
                dev_login(&client, &server.base, &format!("soak-cat{i}@example.com")).await?;
            if let Some(s) = ctx.start_session(token).await {
                ctx.sessions.lock().unwrap().push_back(s);
            }
        }
    }
    let producer = settings.producer()?;
    let docs = Arc::new(docs);

    // ------------------------------------------------------------ the load
    let (rss0, threads0) = proc_status(pid);
    let fds0 = open_fds(pid);
    let fd_summary0 = fd_summary(pid, &data);
    let thread_summary0 = thread_summary(pid);
    eprintln!(
        "load for {:.1} min: {}/s submissions, {}/s attempts ({} ms between answers), {}/s adaptive \
         answers over {} sessions, {}/s SQL, psql every {} s, {}/s attempts produced; \
         RSS {rss0:.1} MB, {fds0} fds, {threads0} threads before the load",
        args.minutes,
        args.submissions,
        args.attempts,
        args.answer_gap_ms,
        args.adaptive,
        args.adaptive_sessions,
        args.sql,
        args.pgwire_every,
        args.ingest
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(run_secs);
    let mut load = JoinSet::new();
    {
        let c = ctx.clone();
        load.spawn(paced(args.submissions, until, move |i| {
            let c = c.clone();
            Some(async move { c.submission(i).await })
        }));
        let c = ctx.clone();
        let gap = Duration::from_millis(args.answer_gap_ms);
        load.spawn(paced(args.attempts, until, move |_| {
            let c = c.clone();
            Some(async move { c.attempt(gap).await })
        }));
        let c = ctx.clone();
        load.spawn(paced(args.adaptive, until, move |_| {
            let c = c.clone();
            Some(async move { c.adaptive_answer().await })
        }));
        let c = ctx.clone();
        load.spawn(paced(args.sql, until, move |i| {
            let c = c.clone();
            Some(async move { c.sql(i).await })
        }));
        let c = ctx.clone();
        let pg_rate = if args.pgwire_every > 0.0 {
            1.0 / args.pgwire_every
        } else {
            0.0
        };
        load.spawn(paced(pg_rate, until, move |i| {
            let c = c.clone();
            Some(async move { c.pgwire(i).await })
        }));
        let c = ctx.clone();
        let docs = docs.clone();
        let producer = producer.clone();
        let topic = attempts_topic.clone();
        load.spawn(paced(args.ingest, until, move |i| {
            let Some((key, doc)) = docs.get(i) else {
                if i == docs.len() {
                    c.err(Kind::Produce, "ran out of generated documents".into());
                }
                return None;
            };
            c.produce(&producer, &topic, key, doc)
                .map(|f| Box::pin(f) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>)
        }));
    }

    eprintln!("{}", sample_header());
    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = 1u64;
    loop {
        let due = started + Duration::from_secs_f64(args.sample_secs * tick as f64);
        if due > until + Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep_until(due.min(until).into()).await;
        let windows = ctx.take_windows();
        let (rss_mb, threads) = proc_status(pid);
        let (anon_mb, file_mb) = rss_parts(pid);
        let fds = open_fds(pid);
        let produced = ctx.produced.lock().unwrap().len() as i64;
        let acked = ctx.acked_results() as i64;
        let lag = if args.lag {
            live_counts(&ctx)
                .await
                .ok()
                .map(|(a, s)| (produced - a as i64, acked - s as i64))
        } else {
            None
        };
        let s = Sample {
            t: started.elapsed().as_secs_f64(),
            rss_mb,
            anon_mb,
            file_mb,
            fds,
            threads,
            windows,
            lag,
            load1: loadavg()
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string(),
        };
        let secs = s.t - samples.last().map_or(0.0, |p| p.t);
        eprintln!("{}", sample_row(&s, secs));
        samples.push(s);
        tick += 1;
        if due >= until {
            break;
        }
    }
    // Everything in flight finishes (attempts complete their answers and submit).
    while let Some(r) = load.join_next().await {
        r?;
    }
    let load_wall = started.elapsed();
    let load_at_end = loadavg();
    let (rss_end_load, threads_end_load) = proc_status(pid);
    let fds_end_load = open_fds(pid);
    eprintln!(
        "load stopped after {:.1} s; RSS {rss_end_load:.1} MB, {fds_end_load} fds, {threads_end_load} threads",
        load_wall.as_secs_f64()
    );

    // ------------------------------------------------------------ settle and check
    let produced = ctx.produced.lock().unwrap().len() as u64;
    let acked = ctx.acked_results() as u64;
    let t = Instant::now();
    let mut live = (0, 0);
    let mut settled = None;
    while t.elapsed() < Duration::from_secs(args.settle_secs) {
        if let Ok(c) = live_counts(&ctx).await {
            live = c;
            if c == (produced, acked) {
                settled = Some(t.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Idle for one commit interval more (2 s) so the numbers below are after a commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_idle, threads_idle) = proc_status(pid);
    let fds_idle = open_fds(pid);
    let fd_summary_idle = fd_summary(pid, &data);
    let thread_summary_idle = thread_summary(pid);
    eprintln!(
        "lake live: attempts {} / {produced} produced, scores {} / {acked} acknowledged; \
         settled: {settled:?}; idle RSS {rss_idle:.1} MB, {fds_idle} fds",
        live.0, live.1
    );
    let peak_hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);

    // A clean stop: the server commits the lake's tails and exits.
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut exit = None;
    while t.elapsed() < Duration::from_secs(60) {
        if let Some(status) = server.child.try_wait()? {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop_secs = t.elapsed().as_secs_f64();
    eprintln!("examflow serve stopped in {stop_secs:.1} s: {exit:?}");

    let db = data.join("examflow.db");
    let store_results = sqlite_count(&db, "SELECT count(*) FROM results")?;
    let outbox_unpublished = sqlite_count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )?;
    let store_dead = sqlite_count(&db, "SELECT count(*) FROM dead_letters")?;
    let lake_attempts = committed_count(&data, "SELECT count(*) AS n FROM attempts")?;
    let lake_keys = committed_count(&data, "SELECT count(DISTINCT keen_id) AS n FROM attempts")?;
    let lake_scores = committed_count(&data, "SELECT count(*) AS n FROM scores")?;
    let lake_dead = committed_count(&data, "SELECT count(*) AS n FROM dead_letters")?;

    // ------------------------------------------------------------ report
    let stats = ctx.stats.lock().unwrap();
    let total_errors: usize = stats.iter().map(|k| k.errors).sum();
    let mut out = String::new();
    let _ = writeln!(out, "#### soak-bench\n");
    let _ = writeln!(
        out,
        "- machine: {}; load average {load_at_start} at the start, {load_at_end} at the end of the load",
        examflow_benches::cpu_line()
    );
    let _ = writeln!(
        out,
        "- broker: {}; examflow serve (release) with Kafka ingest (commit interval 2 s), \
         pgwire, calibration schedule off, rate limits off; ready in {:.1} s; attempts topic \
         `{attempts_topic}` {}",
        broker.label,
        startup.as_secs_f64(),
        if args.create_topic {
            "created by the harness before the server started (2 partitions)"
        } else {
            "not created beforehand (`--no-create-topic`): made by the first produced message"
        }
    );
    let _ = writeln!(
        out,
        "- load: {:.1} min ({:.1} s wall with the tail), open loop: {}/s submissions, {}/s fixed-form \
         attempts (start, {} ms between saved answers, submit), {}/s adaptive answers over {} sessions \
         (200-item 3PL exam, 10–20 items), {}/s SQL over HTTP, one psql every {} s, {}/s attempt \
         documents produced; samples every {} s, warm-up {:.0} s",
        args.minutes,
        load_wall.as_secs_f64(),
        args.submissions,
        args.attempts,
        args.answer_gap_ms,
        args.adaptive,
        args.adaptive_sessions,
        args.sql,
        args.pgwire_every,
        args.ingest,
        args.sample_secs,
        warmup_secs
    );
    let _ = writeln!(out, "\n##### Requests\n");
    let _ = writeln!(
        out,
        "| kind | requests | per s | errors | p50 ms | p99 ms | max ms | worst 10 s window p99 ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut total_ok = 0;
    for kind in KINDS {
        let k = &stats[kind as usize];
        let mut all = k.all.clone();
        all.sort();
        total_ok += all.len();
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} |",
            kind.label(),
            all.len() + k.errors,
            (all.len() + k.errors) as f64 / run_secs,
            k.errors,
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(all.last().copied()),
            ms(k.worst_window_p99)
        );
    }
    let _ = writeln!(
        out,
        "| **all** | {} | {:.1} | {total_errors} | | | | |",
        total_ok + total_errors,
        (total_ok + total_errors) as f64 / run_secs
    );
    let _ = writeln!(
        out,
        "\nScheduled but skipped (no idle student or session; not errors): attempts {}, adaptive answers {}.",
        ctx.skipped_attempts.load(Ordering::Relaxed),
        ctx.skipped_adaptive.load(Ordering::Relaxed)
    );
    if total_errors > 0 {
        let _ = writeln!(out, "\nErrors by kind and message (count, first at s):\n");
        for kind in KINDS {
            for (m, (count, at)) in &stats[kind as usize].messages {
                let _ = writeln!(
                    out,
                    "- {}: {count}× (first at {at:.1} s): `{m}`",
                    kind.label()
                );
            }
        }
    }
    drop(stats);

    let _ = writeln!(
        out,
        "\n##### Samples (each window: requests finished in it)\n"
    );
    let _ = writeln!(out, "{}", sample_header());
    let mut prev = 0.0;
    for s in &samples {
        let _ = writeln!(out, "{}", sample_row(s, s.t - prev));
        prev = s.t;
    }
    let after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= warmup_secs - 0.5)
        .map(|s| (s.t / 60.0, s.rss_mb))
        .collect();
    let all_points: Vec<(f64, f64)> = samples.iter().map(|s| (s.t / 60.0, s.rss_mb)).collect();
    let fd_points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= warmup_secs - 0.5)
        .map(|s| (s.t / 60.0, s.fds as f64))
        .collect();
    let rss_slope = slope(&after);
    let anon_after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= warmup_secs - 0.5)
        .map(|s| (s.t / 60.0, s.anon_mb))
        .collect();
    let file_after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= warmup_secs - 0.5)
        .map(|s| (s.t / 60.0, s.file_mb))
        .collect();
    let flat = rss_slope.is_some_and(|s| s.abs() < args.slope_limit);
    let rss_max = samples.iter().map(|s| s.rss_mb).fold(f64::NAN, f64::max);
    let fds_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let fmt_slope =
        |s: Option<f64>| s.map_or("– (too few samples)".into(), |v| format!("{v:+.3}"));
    let _ = writeln!(out, "\n##### Memory and files\n");
    let _ = writeln!(
        out,
        "- RSS: {rss0:.1} MB before the load, {:.1} MB at the first sample after the warm-up, \
         {:.1} MB at the last sample, max sample {rss_max:.1} MB, {rss_idle:.1} MB idle after \
         the lake caught up; VmHWM (peak) {peak_hwm:.1} MB",
        after.first().map_or(f64::NAN, |p| p.1),
        samples.last().map_or(f64::NAN, |s| s.rss_mb),
    );
    let _ = writeln!(
        out,
        "- RSS slope after the warm-up (least squares over {} samples): **{} MB/min** \
         ({}; limit ±{} MB/min); over all samples {} MB/min. Of it, after the warm-up: \
         anonymous memory (heap, stacks) {} MB/min ({:.1} → {:.1} MB), mapped files (the \
         binary's pages, SQLite shared memory) {} MB/min ({:.1} → {:.1} MB)",
        after.len(),
        fmt_slope(rss_slope),
        if flat { "flat" } else { "NOT flat" },
        args.slope_limit,
        fmt_slope(slope(&all_points)),
        fmt_slope(slope(&anon_after)),
        anon_after.first().map_or(f64::NAN, |p| p.1),
        anon_after.last().map_or(f64::NAN, |p| p.1),
        fmt_slope(slope(&file_after)),
        file_after.first().map_or(f64::NAN, |p| p.1),
        file_after.last().map_or(f64::NAN, |p| p.1),
    );
    let _ = writeln!(
        out,
        "- open files: {fds0} before the load, {} at the first sample, {} at the last, max {fds_max}, \
         {fds_idle} idle after; slope after the warm-up {} fds/min; threads {threads0} before, \
         {threads_end_load} at the end, {threads_idle} idle",
        samples.first().map_or(0, |s| s.fds),
        samples.last().map_or(0, |s| s.fds),
        fmt_slope(slope(&fd_points))
    );
    let _ = writeln!(
        out,
        "- open files before the load: {fd_summary0}; idle after: {fd_summary_idle}\n\
         - threads before the load: {thread_summary0}; idle after: {thread_summary_idle}"
    );
    if let Some(bpid) = broker.pid() {
        let (brss, _) = proc_status(bpid);
        let _ = writeln!(out, "- broker (nisshi) RSS at the end: {brss:.1} MB");
    }

    let _ = writeln!(out, "\n##### Counts\n");
    let sub = ctx.acked_submissions.load(Ordering::Relaxed) as u64;
    let att = ctx.acked_attempts.load(Ordering::Relaxed) as u64;
    let ada = ctx.acked_adaptive.load(Ordering::Relaxed) as u64;
    let checks: Vec<(String, u64, String, bool)> = vec![
        (
            format!(
                "stored results (SQLite `results`) = acknowledged: {sub} submissions + {att} attempt submits + {ada} finished adaptive sessions"
            ),
            acked,
            store_results.to_string(),
            store_results == acked,
        ),
        (
            "lake `scores` rows (committed, after SIGTERM) = acknowledged results".into(),
            acked,
            format!("{lake_scores} (live before the stop: {})", live.1),
            lake_scores == acked,
        ),
        (
            format!(
                "lake `attempts` rows (committed) = distinct keen_ids the broker acknowledged ({} documents sent)",
                ctx.sent_docs.load(Ordering::Relaxed)
            ),
            produced,
            format!(
                "{lake_attempts} ({lake_keys} distinct; live before the stop: {})",
                live.0
            ),
            lake_attempts == produced && lake_keys == produced,
        ),
        (
            "outbox events not yet published to Kafka".into(),
            0,
            outbox_unpublished.to_string(),
            outbox_unpublished == 0,
        ),
        (
            "dead letters (lake `dead_letters` + store `dead_letters`)".into(),
            0,
            format!("{lake_dead} + {store_dead}"),
            lake_dead == 0 && store_dead == 0,
        ),
    ];
    let _ = writeln!(out, "| check | expected | found | ok |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    for (what, expected, found, ok) in &checks {
        let _ = writeln!(
            out,
            "| {what} | {expected} | {found} | {} |",
            if *ok { "yes" } else { "**NO**" }
        );
    }
    let lost = checks.iter().any(|c| !c.3);
    let _ = writeln!(
        out,
        "\nLake caught up {} after the load stopped; clean stop (SIGTERM) took {stop_secs:.1} s ({}).",
        settled.map_or_else(
            || format!("NOT within {} s", args.settle_secs),
            |d| format!("in {:.1} s", d.as_secs_f64())
        ),
        exit.map_or("did not exit within 60 s".into(), |s| s.to_string())
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let log_lines: Vec<&str> = log_text.lines().filter(|l| !l.trim().is_empty()).collect();
    let _ = writeln!(
        out,
        "Server log (EXAMFLOW_LOG=warn): {} lines ({} WARN, {} ERROR){}",
        log_lines.len(),
        log_lines.iter().filter(|l| l.contains("WARN")).count(),
        log_lines.iter().filter(|l| l.contains("ERROR")).count(),
        if log_lines.is_empty() {
            "."
        } else {
            "; first ones:"
        }
    );
    for l in log_lines.iter().take(8) {
        let l: String = l.chars().take(300).collect();
        let _ = writeln!(out, "    {l}");
    }
    let verdict = !lost && total_errors == 0 && exit.is_some_and(|s| s.success());
    let _ = writeln!(
        out,
        "\n**Verdict: {}** — {total_errors} errors, {} failed count checks, memory {} ({} MB/min \
         after the warm-up). The exit status is 1 on errors, failed counts or an unclean stop, \
         not on memory.",
        if verdict && flat {
            "pass"
        } else if verdict {
            "no errors, nothing lost; memory NOT flat"
        } else {
            "FAIL"
        },
        checks.iter().filter(|c| !c.3).count(),
        if flat { "flat" } else { "NOT flat" },
        fmt_slope(rss_slope)
    );
    print!("{out}");
    if let Some(d) = &args.work_dir {
        eprintln!("data and server log kept in {}", d.display());
    }
    drop(server);
    drop(broker);
    if !verdict {
        std::process::exit(1);
    }
    Ok(())
}

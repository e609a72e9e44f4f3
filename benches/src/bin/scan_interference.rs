//! Long SQL scans of the embedded store against the request path (issue 20, "Stays up"):
//! boots the release `examflow serve` on a copy of a store holding `--sessions` adaptive
//! sessions (default 200 000; cloned from real sessions made through the API, written
//! straight into the data dir's SQLite file before the server starts), then runs, for
//! `--seconds` each, the same request load twice: idle, and while `--scanners` clients scan
//! `adaptive_sessions` over `POST /api/sql` in a loop (an aggregate over θ, which reads every
//! session's state, and a full export as NDJSON, alternately). The load, paced (each client
//! sends on a schedule; latency counts from when a request was due, so waiting behind a
//! slow request counts): `--submitters` clients posting `--rate` submissions/s together,
//! `--answerers` students answering adaptive sessions at `--answer-rate` answers/s together
//! (a new session when one finishes), one `GET /healthz` every 20 ms (a store read); a rate
//! of 0 sends back to back instead (the server saturated). Prints p50/p99 of each series
//! idle and loaded, their ratio, the scans done and the growth of the WAL file. With `--baseline OLD_EXAMFLOW` (repeatable) the same phases run against
//! that binary too (the code before a change), in the same run and on the same data; the
//! last one given (the oldest) makes the store, so newer binaries open it as an upgrade.
//!
//!     cargo build --release -p examflow -p examflow-benches --bin examflow --bin scan_interference
//!     $CARGO_TARGET_DIR/release/scan_interference [--sessions 200000] [--seconds 15]
//!         [--submitters 4] [--rate 200] [--answerers 2] [--answer-rate 100] [--scanners 1]
//!         [--rounds 1] [--baseline PATH]...

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::{cpu_line, examflow_binary, loadavg, repo_root};
use serde_json::{Value, json};

const EXAM: &str = "world-geography";

/// The scans a scanner client runs, in turn: (name, format, SQL).
const SCANS: [(&str, &str, &str); 2] = [
    (
        "aggregate over theta",
        "json",
        "SELECT status, count(*) AS n, avg(theta) AS theta, max(updated_at) AS last \
         FROM adaptive_sessions GROUP BY status",
    ),
    (
        "export, NDJSON",
        "ndjson",
        "SELECT * FROM adaptive_sessions",
    ),
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A running `examflow serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
    data: PathBuf,
    binary: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(binary: &Path, config: &Path, data: &Path) -> Result<Server> {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--banks")
            .arg(repo_root().join("data/question_banks"))
            .env("EXAMFLOW_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let base = examflow_benches::served_url(&mut child, None)?;
        Ok(Server {
            child,
            base,
            data: data.to_path_buf(),
            binary: binary.to_path_buf(),
        })
    }

    fn token(&self, email: &str, role: &str) -> Result<String> {
        let out = Command::new(&self.binary)
            .args(["token", "--email", email, "--role", role, "--data-dir"])
            .arg(&self.data)
            .output()?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }
}

/// An adaptive session of one student: its id and the question it waits on.
struct Adaptive {
    token: String,
    session: String,
    item: String,
    option: String,
}

fn pending(body: &Value) -> Option<(String, String)> {
    let q = &body["question"];
    Some((
        q["id"].as_str()?.to_string(),
        q["options"][0].as_str()?.to_string(),
    ))
}

async fn start_session(client: &reqwest::Client, base: &str, token: &str) -> Result<Adaptive> {
    let resp = client
        .post(format!("{base}/api/adaptive/{EXAM}/sessions"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if !status.is_success() {
        bail!("starting a session: HTTP {status} {body}");
    }
    let (item, option) = pending(&body).context("first question")?;
    Ok(Adaptive {
        token: token.to_string(),
        session: body["session"].as_str().context("session id")?.to_string(),
        item,
        option,
    })
}

/// Answers once; `true` when the session finished.
async fn answer(client: &reqwest::Client, base: &str, s: &mut Adaptive) -> Result<bool> {
    let resp = client
        .post(format!(
            "{base}/api/adaptive/sessions/{}/answers",
            s.session
        ))
        .bearer_auth(&s.token)
        .json(&json!({"item": s.item, "answer": s.option}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if !status.is_success() {
        bail!("answer: HTTP {status} {body}");
    }
    match pending(&body) {
        Some((item, option)) if body["status"] != "finished" => {
            s.item = item;
            s.option = option;
            Ok(false)
        }
        _ => Ok(true),
    }
}

/// Makes the sessions every clone copies: one finished, one active (three answers).
async fn template_sessions(server: &Server) -> Result<(String, String)> {
    let client = reqwest::Client::new();
    let token = server.token("template@example.com", "student")?;
    let mut finished = start_session(&client, &server.base, &token).await?;
    while !answer(&client, &server.base, &mut finished).await? {}
    let mut active = start_session(&client, &server.base, &token).await?;
    for _ in 0..3 {
        answer(&client, &server.base, &mut active).await?;
    }
    Ok((finished.session, active.session))
}

/// Writes `n` sessions cloned from the templates (85 % finished) straight into the SQLite
/// file in `data` (the server is stopped), in one transaction, then empties the WAL.
fn seed(data: &Path, finished: &str, active: &str, n: usize) -> Result<()> {
    let mut db = rusqlite::Connection::open(data.join("examflow.db"))?;
    let template = |id: &str| -> Result<(String, i64, String, i64)> {
        Ok(db.query_row(
            "SELECT status, answered, state, calibration_version FROM adaptive_sessions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?)
    };
    let (finished, active) = (template(finished)?, template(active)?);
    eprintln!(
        "seeding {n} sessions (state {} / {} bytes, finished / active) ...",
        finished.2.len(),
        active.2.len()
    );
    let t = Instant::now();
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO adaptive_sessions (id, exam, email, calibration_version, status, answered,
               result_id, created_at, updated_at, state, closes_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)",
        )?;
        for i in 0..n {
            let (status, answered, state, version) = if i % 20 < 17 { &finished } else { &active };
            let id = format!("{:024x}", 0x6500_0000_0000_0000_0000_0000u128 + i as u128);
            let result_id = (status == "finished").then(|| format!("r{id}"));
            insert.execute(rusqlite::params![
                id,
                EXAM,
                format!("student{}@example.com", i % 20_000),
                version,
                status,
                answered,
                result_id,
                chrono_like(i),
                chrono_like(i + 60),
                state,
            ])?;
        }
    }
    tx.commit()?;
    let (busy, log, copied): (i64, i64, i64) =
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    eprintln!(
        "seeded in {:.1} s (checkpoint: busy {busy}, {copied} of {log} WAL pages copied; WAL now {} bytes)",
        t.elapsed().as_secs_f64(),
        wal_size(data)
    );
    Ok(())
}

/// An RFC 3339 instant `i` seconds after 2026-11-01.
fn chrono_like(i: usize) -> String {
    let (d, rest) = (i / 86_400, i % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let (month, day) = if d < 30 { (11, d + 1) } else { (12, d - 29) };
    format!("2026-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.000Z")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_file() && !name.to_string_lossy().ends_with("-shm") {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    if ms.is_empty() {
        return Stats {
            n: 0,
            p50: f64::NAN,
            p99: f64::NAN,
        };
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        n: ms.len(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Latencies (ms) of each series of one phase.
struct Phase {
    submissions: Stats,
    adaptive: Stats,
    healthz: Stats,
    errors: u64,
}

struct Load {
    base: String,
    client: reqwest::Client,
    submit_token: String,
    students: Vec<String>,
    body: Value,
}

/// When the requests of one client are due: every `interval` (staggered by `offset`), or
/// back to back without one. Latency counts from when a request was due, so one that waits
/// behind a slow predecessor counts its wait (open loop per client, no coordinated omission).
struct Pacer {
    start: Instant,
    interval: Option<Duration>,
    sent: u32,
}

impl Pacer {
    fn new(interval: Option<Duration>, offset: Duration) -> Self {
        Pacer {
            start: Instant::now() + offset,
            interval,
            sent: 0,
        }
    }

    /// Waits until the next request is due (none from `until` on); returns when it was due.
    async fn next(&mut self, until: Instant) -> Option<Instant> {
        let due = match self.interval {
            Some(interval) => self.start + interval * self.sent,
            None => Instant::now(),
        };
        self.sent += 1;
        if due >= until {
            return None;
        }
        tokio::time::sleep_until(due.into()).await;
        Some(due)
    }
}

/// The interval of each of `clients` sharing `per_second` requests (none: back to back).
fn interval_of(per_second: f64, clients: usize) -> Option<Duration> {
    (per_second > 0.0).then(|| Duration::from_secs_f64(clients.max(1) as f64 / per_second))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Load {
    async fn run(&self, seconds: u64, s: &Settings) -> Result<Phase> {
        let until = Instant::now() + Duration::from_secs(seconds);
        let errors = AtomicU64::new(0);
        let submit_url = format!("{}/api/exams/{EXAM}/submissions", self.base);
        let every = interval_of(s.rate, s.submitters);
        let submitters = (0..s.submitters).map(|i| {
            let stagger = every.map_or(Duration::ZERO, |e| e * i as u32 / s.submitters as u32);
            let (submit_url, errors) = (&submit_url, &errors);
            async move {
                let mut pacer = Pacer::new(every, stagger);
                let mut ms = Vec::new();
                while let Some(due) = pacer.next(until).await {
                    let resp = self
                        .client
                        .post(submit_url)
                        .bearer_auth(&self.submit_token)
                        .json(&self.body)
                        .send()
                        .await?;
                    let ok = resp.status().is_success();
                    resp.bytes().await?;
                    ms.push(ms_since(due));
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, anyhow::Error>(ms)
            }
        });
        let every = interval_of(s.answer_rate, self.students.len());
        let answerers = self
            .students
            .iter()
            .enumerate()
            .map(|(i, token)| async move {
                let stagger = every.map_or(Duration::ZERO, |e| {
                    e * i as u32 / self.students.len() as u32
                });
                let mut pacer = Pacer::new(every, stagger);
                let mut ms = Vec::new();
                let mut session: Option<Adaptive> = None;
                while let Some(due) = pacer.next(until).await {
                    match &mut session {
                        None => {
                            session = Some(start_session(&self.client, &self.base, token).await?)
                        }
                        Some(open) => {
                            if answer(&self.client, &self.base, open).await? {
                                session =
                                    Some(start_session(&self.client, &self.base, token).await?);
                            }
                        }
                    }
                    ms.push(ms_since(due));
                }
                Ok::<_, anyhow::Error>(ms)
            });
        let health_url = format!("{}/healthz", self.base);
        let healthz = async {
            let mut pacer = Pacer::new(Some(Duration::from_millis(20)), Duration::ZERO);
            let mut ms = Vec::new();
            while let Some(due) = pacer.next(until).await {
                let resp = self.client.get(&health_url).send().await?;
                let ok = resp.status().is_success();
                resp.bytes().await?;
                ms.push(ms_since(due));
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(ms)
        };
        let (subs, answers, health) = tokio::join!(
            futures::future::join_all(submitters),
            futures::future::join_all(answerers),
            healthz
        );
        let flat = |all: Vec<Result<Vec<f64>>>| -> Result<Vec<f64>> {
            let mut v = Vec::new();
            for r in all {
                v.extend(r?);
            }
            Ok(v)
        };
        Ok(Phase {
            submissions: stats(flat(subs)?),
            adaptive: stats(flat(answers)?),
            healthz: stats(health?),
            errors: errors.into_inner(),
        })
    }
}

/// Scans done by the scanners while the loaded phase ran.
#[derive(Default)]
struct Scans {
    /// (query index, seconds) of each finished scan.
    done: Vec<(usize, f64)>,
    failed: Vec<String>,
    rows: u64,
}

async fn scanner(
    client: reqwest::Client,
    base: String,
    token: String,
    first: usize,
    stop: Arc<AtomicBool>,
) -> Scans {
    let mut scans = Scans::default();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let which = i % SCANS.len();
        i += 1;
        let (_, format, sql) = SCANS[which];
        let t = Instant::now();
        let outcome = async {
            let mut resp = client
                .post(format!("{base}/api/sql?format={format}"))
                .bearer_auth(&token)
                .json(&json!({ "sql": sql }))
                .send()
                .await?;
            let status = resp.status();
            let mut lines = 0u64;
            let mut bytes = 0usize;
            while let Some(chunk) = resp.chunk().await? {
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                bytes += chunk.len();
            }
            if !status.is_success() {
                bail!("HTTP {status} ({bytes} bytes)");
            }
            Ok::<_, anyhow::Error>(lines)
        };
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            r = outcome => match r {
                Ok(lines) => {
                    scans.done.push((which, t.elapsed().as_secs_f64()));
                    scans.rows += lines;
                }
                Err(e) => scans.failed.push(format!("{}: {e}", SCANS[which].0)),
            },
            // The phase is over: the scan in flight is dropped.
            _ = stopped => break,
        }
    }
    scans
}

struct Run {
    /// `current` or a baseline's file name.
    binary: String,
    name: String,
    /// The load average when the run started (the machine may be shared).
    load: String,
    idle: Phase,
    loaded: Phase,
    scans: Scans,
    /// Growth of the WAL file over each phase (it grows while checkpoints cannot catch up).
    wal_idle: u64,
    wal_loaded: u64,
}

fn wal_size(data: &Path) -> u64 {
    std::fs::metadata(data.join("examflow.db-wal")).map_or(0, |m| m.len())
}

struct Settings {
    seconds: u64,
    /// Submissions per second over all submitters (0: back to back).
    rate: f64,
    /// Answers (and starts) per second over all students (0: back to back).
    answer_rate: f64,
    submitters: usize,
    answerers: usize,
    scanners: usize,
}

async fn measure(
    binary_name: &str,
    name: &str,
    binary: &Path,
    config: &Path,
    seed_dir: &Path,
    run_dir: &Path,
    s: &Settings,
) -> Result<Run> {
    let load_at_start = loadavg();
    let _ = std::fs::remove_dir_all(run_dir);
    copy_dir(seed_dir, run_dir)?;
    let server = Server::start(binary, config, run_dir)?;
    let client = reqwest::Client::new();
    let bank: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join(format!("data/question_banks/{EXAM}.json")),
    )?)?;
    let answers: Vec<&str> = bank
        .iter()
        .map(|q| q["correct_answer"].as_str().unwrap_or_default())
        .collect();
    let load = Load {
        base: server.base.clone(),
        client: client.clone(),
        submit_token: server.token("submitter@example.com", "student")?,
        students: (0..s.answerers)
            .map(|i| server.token(&format!("answerer{i}@example.com"), "student"))
            .collect::<Result<_>>()?,
        body: json!({ "answers": answers }),
    };
    let sql_token = server.token("analyst@example.com", "educator")?;
    // Warm up: connections, caches, and the store file in the page cache (one scan).
    load.run(2, s).await?;
    warm_scans(&client, &server.base, &sql_token).await?;

    eprintln!("{name}: idle phase ({} s)", s.seconds);
    let wal = wal_size(run_dir);
    let idle = load.run(s.seconds, s).await?;
    let wal_idle = wal_size(run_dir).saturating_sub(wal);

    eprintln!(
        "{name}: loaded phase ({} s, {} scanners)",
        s.seconds, s.scanners
    );
    let wal = wal_size(run_dir);
    let stop = Arc::new(AtomicBool::new(false));
    let scanners: Vec<_> = (0..s.scanners)
        .map(|i| {
            tokio::spawn(scanner(
                client.clone(),
                server.base.clone(),
                sql_token.clone(),
                i,
                stop.clone(),
            ))
        })
        .collect();
    // The scans get going before the measured requests start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = load.run(s.seconds, s).await?;
    stop.store(true, Ordering::Relaxed);
    let wal_loaded = wal_size(run_dir).saturating_sub(wal);
    let mut scans = Scans::default();
    for h in scanners {
        let one = h.await?;
        scans.done.extend(one.done);
        scans.failed.extend(one.failed);
        scans.rows += one.rows;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(run_dir);
    Ok(Run {
        binary: binary_name.to_string(),
        name: name.to_string(),
        load: load_at_start,
        idle,
        loaded,
        scans,
        wal_idle,
        wal_loaded,
    })
}

/// One scan of each kind, untimed: the store file is read into the page cache. A scan that
/// fails (the old code's could run into the SQL time limit) is reported and passed over.
async fn warm_scans(client: &reqwest::Client, base: &str, token: &str) -> Result<()> {
    for (name, format, sql) in SCANS {
        let t = Instant::now();
        let outcome = async {
            let resp = client
                .post(format!("{base}/api/sql?format={format}"))
                .bearer_auth(token)
                .json(&json!({ "sql": sql }))
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                bail!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
            Ok(())
        };
        match outcome.await {
            Ok(()) => eprintln!("warm-up scan {name}: {:.1} s", t.elapsed().as_secs_f64()),
            Err(e) => eprintln!(
                "warm-up scan {name} failed after {:.1} s: {e}",
                t.elapsed().as_secs_f64()
            ),
        }
    }
    Ok(())
}

fn rate_text(per_second: f64) -> String {
    if per_second > 0.0 {
        format!("{per_second:.0}/s together")
    } else {
        "back to back".into()
    }
}

fn print(runs: &[Run], sessions: usize, s: &Settings) {
    println!("#### scan_interference");
    println!();
    println!(
        "{} · load average at the end {} · {sessions} adaptive sessions · {} s per phase · \
         {} submitters ({}), {} adaptive students ({}), /healthz every 20 ms · {} scanner(s) · \
         latency from when each request was due",
        cpu_line(),
        loadavg(),
        s.seconds,
        s.submitters,
        rate_text(s.rate),
        s.answerers,
        rate_text(s.answer_rate),
        s.scanners
    );
    println!();
    println!(
        "| server | series | idle n | idle p50 ms | idle p99 ms | scanning n | scanning p50 ms | scanning p99 ms | p99 scanning / idle |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        for (series, idle, loaded) in [
            (
                "POST submission",
                run.idle.submissions,
                run.loaded.submissions,
            ),
            (
                "adaptive answer (or start)",
                run.idle.adaptive,
                run.loaded.adaptive,
            ),
            ("GET /healthz", run.idle.healthz, run.loaded.healthz),
        ] {
            println!(
                "| {} | {series} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2}x |",
                run.name,
                idle.n,
                idle.p50,
                idle.p99,
                loaded.n,
                loaded.p50,
                loaded.p99,
                loaded.p99 / idle.p99
            );
        }
    }
    println!();
    println!(
        "| server | load average at its start | scans finished while measured | mean s per scan (by query) | scan errors | rows exported | request errors idle / scanning | WAL file growth idle / scanning MB |"
    );
    println!("|---|---|---:|---|---:|---:|---|---|");
    for run in runs {
        let by_query: Vec<String> = SCANS
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| {
                let times: Vec<f64> = run
                    .scans
                    .done
                    .iter()
                    .filter(|(q, _)| *q == i)
                    .map(|(_, t)| *t)
                    .collect();
                if times.is_empty() {
                    format!("{name}: none")
                } else {
                    format!(
                        "{name}: {:.2} ({})",
                        times.iter().sum::<f64>() / times.len() as f64,
                        times.len()
                    )
                }
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {:.1} / {:.1} |",
            run.name,
            run.load,
            run.scans.done.len(),
            by_query.join("; "),
            run.scans.failed.len(),
            run.scans.rows,
            run.idle.errors,
            run.loaded.errors,
            run.wal_idle as f64 / 1e6,
            run.wal_loaded as f64 / 1e6
        );
    }
    for run in runs {
        for failure in run.scans.failed.iter().take(3) {
            println!();
            println!("{} scan error: {failure}", run.name);
        }
    }
    let rounds = runs.iter().filter(|r| r.binary == "current").count();
    if rounds > 1 {
        println!();
        println!(
            "Median over the {rounds} rounds of p99 scanning / idle (and of the two p99s, ms):"
        );
        println!();
        println!("| server | POST submission | adaptive answer (or start) | GET /healthz |");
        println!("|---|---:|---:|---:|");
        let mut binaries: Vec<&str> = Vec::new();
        for run in runs {
            if !binaries.contains(&run.binary.as_str()) {
                binaries.push(&run.binary);
            }
        }
        for binary in binaries {
            let of: Vec<&Run> = runs.iter().filter(|r| r.binary == binary).collect();
            if of.is_empty() {
                continue;
            }
            let cell = |pick: &dyn Fn(&Phase) -> Stats| {
                let median = |mut v: Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    let n = v.len();
                    if n % 2 == 1 {
                        v[n / 2]
                    } else {
                        (v[n / 2 - 1] + v[n / 2]) / 2.0
                    }
                };
                let ratio = median(
                    of.iter()
                        .map(|r| pick(&r.loaded).p99 / pick(&r.idle).p99)
                        .collect(),
                );
                let idle = median(of.iter().map(|r| pick(&r.idle).p99).collect());
                let loaded = median(of.iter().map(|r| pick(&r.loaded).p99).collect());
                format!("{ratio:.2}x ({idle:.1} → {loaded:.1})")
            };
            println!(
                "| {binary} | {} | {} | {} |",
                cell(&|p| p.submissions),
                cell(&|p| p.adaptive),
                cell(&|p| p.healthz)
            );
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let sessions = num("--sessions", 200_000);
    let settings = Settings {
        seconds: num("--seconds", 15) as u64,
        rate: num("--rate", 200) as f64,
        answer_rate: num("--answer-rate", 100) as f64,
        submitters: num("--submitters", 4),
        answerers: num("--answerers", 2),
        scanners: num("--scanners", 1),
    };
    let rounds = num("--rounds", 1);
    let current = match arg("--examflow") {
        Some(path) => PathBuf::from(path),
        None => examflow_binary()?,
    };
    // Every `--baseline PATH`, named by its file name.
    let args: Vec<String> = std::env::args().collect();
    let baselines: Vec<(String, PathBuf)> = args
        .windows(2)
        .filter(|w| w[0] == "--baseline")
        .map(|w| {
            let path = PathBuf::from(&w[1]);
            let name = path
                .file_name()
                .map_or("baseline".into(), |n| n.to_string_lossy().into_owned());
            (name, path)
        })
        .collect();
    let dir = tempfile::tempdir()?;
    // Load generation, not abuse: the per-identity rate limits are off.
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        "[limits]\nstarts_per_minute = 0\nsubmissions_per_minute = 0\nanswers_per_minute = 0\n",
    )?;
    let seed_dir = dir.path().join("seed");
    {
        // The oldest binary (the last baseline) makes the store, so newer ones open it as an
        // upgrade would (a newer one's schema additions, e.g. indexes, stay out of the seed).
        let maker = baselines.last().map_or(&current, |(_, path)| path);
        eprintln!("store made by {}", maker.display());
        let server = Server::start(maker, &config, &seed_dir)?;
        let (finished, active) = template_sessions(&server).await?;
        drop(server);
        seed(&seed_dir, &finished, &active, sessions)?;
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        let mut binaries = vec![("current".to_string(), current.clone())];
        binaries.extend(baselines.iter().cloned());
        // Alternate which binary goes first.
        if round % 2 == 1 {
            binaries.reverse();
        }
        for (binary_name, binary) in binaries {
            let name = if rounds > 1 {
                format!("{binary_name} (round {round})")
            } else {
                binary_name.clone()
            };
            let run_dir = dir.path().join("run");
            runs.push(
                measure(
                    &binary_name,
                    &name,
                    &binary,
                    &config,
                    &seed_dir,
                    &run_dir,
                    &settings,
                )
                .await?,
            );
        }
    }
    print(&runs, sessions, &settings);
    if std::env::args().any(|a| a == "--keep") {
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(())
}

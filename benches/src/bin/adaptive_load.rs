//! Adaptive sessions under load on loopback: boots `examflow serve` (release build) with a
//! 500-item exam whose 3PL parameters are imported as a calibration, opens `--sessions`
//! (default 1000) sessions, then sends answers from them: each session has at most one
//! answer in flight (a student answers one question at a time), and a finished session is
//! replaced by a new one. Phases:
//!
//! * open loop at fixed rates (answers/s over all sessions; an answer is sent on schedule
//!   whether or not earlier ones came back, so queueing shows in the latency);
//! * closed loop: every session answers again as soon as its previous answer returns (the
//!   server's saturation throughput, and the latency at that load);
//!
//! and the same for `GET /healthz` (HTTP plus one store read: the floor) in the same run.
//! Every phase is bounded in time and in count. Prints a markdown table.
//!
//!     cargo build --release --workspace --bins
//!     target/release/adaptive-load [--sessions 1000] [--seconds 10] [--rates 100,500,1000]
//!         [--server-log FILE]

use std::collections::{HashMap, VecDeque};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::{Rng, examflow_binary};
use serde_json::{Value, json};

const ITEMS: usize = 500;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// One simulated student with an open session.
struct Student {
    token: String,
    theta: f64,
    session: String,
    item: String,
}

struct Shared {
    base: String,
    client: reqwest::Client,
    /// Question text → (correct option, b) of every item.
    key: HashMap<String, (String, f64)>,
    /// Item id → question text (filled as questions are seen).
    texts: Mutex<HashMap<String, String>>,
    rng: Mutex<Rng>,
}

impl Shared {
    async fn start_session(&self, token: &str, theta: f64) -> Result<Student> {
        let resp = self
            .client
            .post(format!("{}/api/adaptive/adaptive-500/sessions", self.base))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if status.as_u16() != 201 {
            bail!("starting a session: HTTP {status} {body}");
        }
        self.remember(&body["question"]);
        Ok(Student {
            token: token.to_string(),
            theta,
            session: body["session"].as_str().unwrap_or_default().to_string(),
            item: body["question"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn remember(&self, question: &Value) {
        if let (Some(id), Some(text)) = (question["id"].as_str(), question["question"].as_str()) {
            self.texts
                .lock()
                .unwrap()
                .insert(id.to_string(), text.to_string());
        }
    }

    /// The student's answer to its pending item: right with the 3PL-ish probability of
    /// its θ against the item's b.
    fn choose(&self, student: &Student) -> String {
        let text = self
            .texts
            .lock()
            .unwrap()
            .get(&student.item)
            .cloned()
            .unwrap_or_default();
        let (right, b) = self.key.get(&text).cloned().unwrap_or(("A".into(), 0.0));
        let p = 0.2 + 0.8 / (1.0 + (-(student.theta - b)).exp());
        if self.rng.lock().unwrap().next() < p {
            right
        } else {
            ["A", "B", "C", "D"]
                .into_iter()
                .find(|o| *o != right)
                .unwrap()
                .to_string()
        }
    }

    /// Sends one answer; returns its latency, whether the session finished, and the
    /// student ready for its next answer (a new session when it finished).
    async fn answer(&self, mut student: Student) -> Result<(Duration, bool, Student)> {
        let answer = self.choose(&student);
        let t = Instant::now();
        let resp = self
            .client
            .post(format!(
                "{}/api/adaptive/sessions/{}/answers",
                self.base, student.session
            ))
            .bearer_auth(&student.token)
            .json(&json!({"item": student.item, "answer": answer}))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        let latency = t.elapsed();
        if !status.is_success() {
            bail!("answer: HTTP {status} {body}");
        }
        if body["status"] == "finished" {
            let token = student.token.clone();
            let theta = student.theta;
            return Ok((latency, true, self.start_session(&token, theta).await?));
        }
        self.remember(&body["question"]);
        student.item = body["question"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((latency, false, student))
    }
}

#[derive(Default)]
struct Samples {
    next: Vec<Duration>,
    finished: Vec<Duration>,
    /// Scheduled answers skipped because every session had one in flight.
    skipped: usize,
    errors: usize,
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

/// The p99 of the answers that finished a session, or "none finished" (no NaN in tables).
fn finished_p99(sorted: &[Duration]) -> String {
    if sorted.is_empty() {
        "– (none finished)".to_string()
    } else {
        format!("{:.2}", quantile(sorted, 0.99))
    }
}

/// Open loop at `rate` answers/s for `seconds` (or until `max` answers were sent).
async fn open_loop(
    shared: &Arc<Shared>,
    idle: &Arc<Mutex<VecDeque<Student>>>,
    rate: f64,
    seconds: f64,
    max: usize,
) -> Samples {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tasks = Vec::new();
    while started.elapsed().as_secs_f64() < seconds && sent < max {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        sent += 1;
        let Some(student) = idle.lock().unwrap().pop_front() else {
            samples.lock().unwrap().skipped += 1;
            continue;
        };
        let (shared, idle, samples) = (shared.clone(), idle.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            match shared.answer(student).await {
                Ok((latency, finished, student)) => {
                    let mut s = samples.lock().unwrap();
                    if finished {
                        s.finished.push(latency);
                    } else {
                        s.next.push(latency);
                    }
                    drop(s);
                    idle.lock().unwrap().push_back(student);
                }
                Err(e) => {
                    eprintln!("{e}");
                    samples.lock().unwrap().errors += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(samples)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default()
}

/// Closed loop: every idle session answers again as soon as its answer returns.
async fn closed_loop(
    shared: &Arc<Shared>,
    idle: &Arc<Mutex<VecDeque<Student>>>,
    seconds: f64,
    max: usize,
) -> (Samples, f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let students: Vec<Student> = idle.lock().unwrap().drain(..).collect();
    let started = Instant::now();
    let workers: Vec<_> = students
        .into_iter()
        .map(|mut student| {
            let (shared, samples, count, idle) =
                (shared.clone(), samples.clone(), count.clone(), idle.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline
                    && count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max
                {
                    match shared.answer(student).await {
                        Ok((latency, finished, next)) => {
                            let mut s = samples.lock().unwrap();
                            if finished {
                                s.finished.push(latency);
                            } else {
                                s.next.push(latency);
                            }
                            student = next;
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            samples.lock().unwrap().errors += 1;
                            return;
                        }
                    }
                }
                idle.lock().unwrap().push_back(student);
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let wall = started.elapsed().as_secs_f64();
    (
        Arc::try_unwrap(samples)
            .ok()
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default(),
        wall,
    )
}

/// `GET /healthz` at `rate`/s for `seconds`: the floor.
async fn healthz_open_loop(shared: &Arc<Shared>, rate: f64, seconds: f64) -> Vec<Duration> {
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tasks = Vec::new();
    while started.elapsed().as_secs_f64() < seconds {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        sent += 1;
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = shared
                .client
                .get(format!("{}/healthz", shared.base))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            ok.then(|| t.elapsed())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(d)) = t.await {
            out.push(d);
        }
    }
    out
}

/// 3PL parameters (a, b, c) of one item.
type Abc = (f64, f64, f64);

fn write_bank(dir: &std::path::Path, rng: &mut Rng) -> Result<(Vec<Value>, Vec<Abc>)> {
    let mut questions = Vec::with_capacity(ITEMS);
    let mut params = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        let right = ["A", "B", "C", "D"][(rng.next() * 4.0) as usize % 4];
        let topic = ["algebra", "geometry", "statistics", "number"][i % 4];
        questions.push(json!({
            "question": format!("Item {i}: choose {right}"),
            "options": ["A", "B", "C", "D"],
            "correct_answer": right,
            "topic": topic,
        }));
        let a = (0.3 * rng.normal()).exp() * 1.2;
        let b = rng.normal();
        let c = 0.1 + 0.15 * rng.next();
        params.push((a, b, c));
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("adaptive-500.json"),
        serde_json::to_vec(&questions)?,
    )?;
    Ok((questions, params))
}

#[tokio::main]
async fn main() -> Result<()> {
    let sessions: usize = arg("--sessions")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seconds: f64 = arg("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let rates: Vec<f64> = arg("--rates")
        .unwrap_or_else(|| "100,500,1000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let max_per_phase = 200_000;
    let dir = tempfile::tempdir()?;
    let banks = dir.path().join("banks");
    let data = dir.path().join("data");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (questions, params) = write_bank(&banks, &mut rng)?;
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        // Load generation, not abuse: the per-identity rate limits are off.
        "[adaptive]\ncalibrate_interval_secs = 0\n[adaptive.policy]\nmax_length = 30\nmin_length = 10\nse_target = 0.3\n\
         [limits]\nstarts_per_minute = 0\nsubmissions_per_minute = 0\nanswers_per_minute = 0\n",
    )?;
    let mut child = Command::new(examflow_binary()?)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--banks")
        .arg(&banks)
        .env(
            "EXAMFLOW_LOG",
            match arg("--server-log") {
                Some(_) => "warn,examflow::adaptive=debug",
                None => "warn",
            },
        )
        .stdout(Stdio::piped())
        // `--server-log FILE`: the server's warnings and each answer slower than 4 ms with
        // where its time went (session, engine step, store).
        .stderr(match arg("--server-log") {
            Some(path) => Stdio::from(std::fs::File::create(&path).context("--server-log")?),
            None => Stdio::null(),
        })
        .spawn()
        .context("starting examflow")?;
    let base = examflow_benches::served_url(&mut child, None)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4 * sessions)
        .build()?;

    // Import the bank's 3PL parameters as its calibration.
    let admin = Command::new(examflow_binary()?)
        .args([
            "token",
            "--email",
            "admin@example.com",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(&data)
        .output()?;
    let admin = String::from_utf8(admin.stdout)?.trim().to_string();
    let exam: Value = client
        .get(format!("{base}/api/exams/adaptive-500"))
        .send()
        .await?
        .json()
        .await?;
    let items: Vec<Value> = exam["questions"]
        .as_array()
        .context("exam listing")?
        .iter()
        .zip(&params)
        .map(|(q, (a, b, c))| json!({"item": q["id"], "a": a, "b": b, "c": c}))
        .collect();
    let resp = client
        .post(format!("{base}/api/exams/adaptive-500/calibrations"))
        .bearer_auth(&admin)
        .json(&json!({ "items": items }))
        .send()
        .await?;
    if resp.status().as_u16() != 201 {
        bail!("importing parameters: {}", resp.text().await?);
    }
    let key: HashMap<String, (String, f64)> = questions
        .iter()
        .zip(&params)
        .map(|(q, (_, b, _))| {
            (
                q["question"].as_str().unwrap().to_string(),
                (q["correct_answer"].as_str().unwrap().to_string(), *b),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        base: base.clone(),
        client,
        key,
        texts: Mutex::new(HashMap::new()),
        rng: Mutex::new(Rng(42)),
    });

    // Students and their first sessions.
    let started = Instant::now();
    let mut starts = Vec::with_capacity(sessions);
    let idle = Arc::new(Mutex::new(VecDeque::with_capacity(sessions)));
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(50) {
        let batch = futures::future::join_all(chunk.iter().map(|&i| {
            let shared = shared.clone();
            let theta = rng.normal();
            async move {
                let token: Value = shared
                    .client
                    .post(format!("{}/api/dev-login", shared.base))
                    .json(&json!({"email": format!("student{i}@example.com")}))
                    .send()
                    .await?
                    .json()
                    .await?;
                let token = token["token"].as_str().context("dev login")?.to_string();
                let t = Instant::now();
                let student = shared.start_session(&token, theta).await?;
                Ok::<_, anyhow::Error>((t.elapsed(), student))
            }
        }))
        .await;
        for r in batch {
            let (latency, student) = r?;
            starts.push(latency);
            idle.lock().unwrap().push_back(student);
        }
    }
    starts.sort();
    println!("#### adaptive-load");
    println!();
    println!(
        "{sessions} open sessions on a {ITEMS}-item 3PL exam (imported parameters; MFI, EAP, randomesque 3, \
         SE ≤ 0.3 after 10 to 30 items); each phase ≤ {seconds} s and ≤ {max_per_phase} answers; \
         opened in {:.1} s (session start p50 {:.2} ms, p99 {:.2} ms)",
        started.elapsed().as_secs_f64(),
        quantile(&starts, 0.5),
        quantile(&starts, 0.99)
    );
    println!();
    println!(
        "| phase | requests | answer→next p50 ms | p99 ms | max ms | answer→finished p99 ms | /healthz p99 ms (same rate) | p99 vs /healthz | skipped | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &rate in &rates {
        let floor = {
            let mut f = healthz_open_loop(&shared, rate, seconds.min(5.0)).await;
            f.sort();
            f
        };
        let mut s = open_loop(&shared, &idle, rate, seconds, max_per_phase).await;
        s.next.sort();
        s.finished.sort();
        println!(
            "| open loop {rate:.0} answers/s | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.1}x | {} | {} |",
            s.next.len() + s.finished.len(),
            quantile(&s.next, 0.5),
            quantile(&s.next, 0.99),
            quantile(&s.next, 1.0),
            finished_p99(&s.finished),
            quantile(&floor, 0.99),
            quantile(&s.next, 0.99) / quantile(&floor, 0.99),
            s.skipped,
            s.errors
        );
    }
    let (mut s, wall) = closed_loop(&shared, &idle, seconds, max_per_phase).await;
    s.next.sort();
    s.finished.sort();
    let n = s.next.len() + s.finished.len();
    println!(
        "| closed loop, all {sessions} sessions at once ({:.0} answers/s) | {n} | {:.2} | {:.2} | {:.2} | {} | – | – | – | {} |",
        n as f64 / wall,
        quantile(&s.next, 0.5),
        quantile(&s.next, 0.99),
        quantile(&s.next, 1.0),
        finished_p99(&s.finished),
        s.errors
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

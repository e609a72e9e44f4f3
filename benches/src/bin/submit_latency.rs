//! Submission latency on the embedded default: boots `examflow serve` (release build),
//! then measures, in one run, the HTTP floor (GET /api/exams), a bare fsync'd write of
//! the same size on the same disk, POST submissions (scored, stored, fsync'd), and saved
//! answers of server-side attempts (`PUT /api/attempts/{id}/answers/{index}`, fsync'd),
//! sequentially and with concurrent clients. Prints a table of p50/p99 and ratios.
//!
//!     cargo build --release -p examflow -p examflow-benches --bin examflow --bin submit_latency
//!     target/release/submit_latency [--requests N] [--concurrency C]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::examflow_binary;
use serde_json::{Value, json};

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / samples.len() as u32,
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn timed_requests(
    client: &reqwest::Client,
    n: usize,
    concurrency: usize,
    make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync,
) -> Result<Stats> {
    let started = Instant::now();
    let per_worker = n / concurrency;
    let workers = (0..concurrency).map(|_| async {
        let mut samples = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            let t = Instant::now();
            let resp = make(client).send().await?;
            let status = resp.status();
            resp.bytes().await?;
            if !status.is_success() {
                bail!("HTTP {status}");
            }
            samples.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(samples)
    });
    let mut all = Vec::with_capacity(n);
    for r in futures::future::join_all(workers).await {
        all.extend(r?);
    }
    Ok(stats(all, started.elapsed()))
}

fn fsync_floor(dir: &std::path::Path, n: usize, bytes: usize) -> Result<Stats> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let payload = vec![b'x'; bytes];
    let started = Instant::now();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&payload)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    Ok(stats(samples, started.elapsed()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let requests = arg("--requests", 2000);
    let concurrency = arg("--concurrency", 16);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // Load generation, not abuse: the per-identity rate limits are off.
    let config = dir.path().join("examflow.toml");
    std::fs::write(
        &config,
        "[limits]\nstarts_per_minute = 0\nsubmissions_per_minute = 0\nanswers_per_minute = 0\n",
    )?;
    let mut child = Command::new(examflow_binary()?)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--banks")
        .arg(repo.join("data/question_banks"))
        .env("EXAMFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting examflow")?;
    let base = examflow_benches::served_url(&mut child, None)?;
    let out = Command::new(examflow_binary()?)
        .args(["token", "--email", "bench@example.com", "--data-dir"])
        .arg(&data)
        .output()?;
    let token = String::from_utf8(out.stdout)?.trim().to_string();

    let bank: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(
        repo.join("data/question_banks/world-geography.json"),
    )?)?;
    let answers: Vec<&str> = bank
        .iter()
        .map(|q| q["correct_answer"].as_str().unwrap())
        .collect();
    let body = json!({ "answers": answers });
    let client = reqwest::Client::new();
    let exams_url = format!("{base}/api/exams");
    let submit_url = format!("{base}/api/exams/world-geography/submissions");

    // Warm up connections and caches.
    timed_requests(&client, 50, 1, |c| c.get(&exams_url)).await?;
    let get_seq = timed_requests(&client, requests, 1, |c| c.get(&exams_url)).await?;
    let doc_bytes = serde_json::to_vec(&body)?.len() * 3;
    let fsync = fsync_floor(&data, requests.min(1000), doc_bytes)?;
    let post_seq = timed_requests(&client, requests, 1, |c| {
        c.post(&submit_url).bearer_auth(&token).json(&body)
    })
    .await?;
    let post_conc = timed_requests(&client, requests, concurrency, |c| {
        c.post(&submit_url).bearer_auth(&token).json(&body)
    })
    .await?;
    // Server-side attempts: one open attempt per student, answers saved one at a time.
    let students = concurrency.max(1) * 4;
    let mut attempts = Vec::with_capacity(students);
    for i in 0..students {
        let login: Value = client
            .post(format!("{base}/api/dev-login"))
            .json(&json!({"email": format!("student{i}@example.com")}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("dev login")?.to_string();
        let attempt: Value = client
            .post(format!("{base}/api/exams/world-geography/attempts"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let id = attempt["attempt_id"]
            .as_str()
            .context("attempt id")?
            .to_string();
        attempts.push((token, id));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let save = |c: &reqwest::Client| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (token, id) = &attempts[n % attempts.len()];
        let index = (n / attempts.len()) % answers.len();
        c.put(format!("{base}/api/attempts/{id}/answers/{index}"))
            .bearer_auth(token)
            .json(&json!({"answer": answers[index], "flagged": n.is_multiple_of(7)}))
    };
    let put_seq = timed_requests(&client, requests, 1, save).await?;
    let put_conc = timed_requests(&client, requests, concurrency, save).await?;
    // The submissions again, after the saves: the ratio is taken within one run.
    let post_again = timed_requests(&client, requests, concurrency, |c| {
        c.post(&submit_url).bearer_auth(&token).json(&body)
    })
    .await?;
    let _ = child.kill();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("submission latency, embedded default ({requests} requests, 12-question exam)");
    println!("| case | p50 ms | p99 ms | mean ms | req/s | p50 vs GET floor |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [
        ("GET /api/exams (HTTP floor)", &get_seq),
        (
            "write+fsync of ~doc size, same disk (storage floor)",
            &fsync,
        ),
        ("POST submission, 1 client", &post_seq),
        (
            &*format!("POST submission, {concurrency} clients"),
            &post_conc,
        ),
        ("PUT attempt answer, 1 client", &put_seq),
        (
            &*format!("PUT attempt answer, {concurrency} clients"),
            &put_conc,
        ),
        (
            &*format!("POST submission, {concurrency} clients, after the saves"),
            &post_again,
        ),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1}x |",
            ms(s.p50),
            ms(s.p99),
            ms(s.mean),
            s.per_sec,
            s.p50.as_secs_f64() / get_seq.p50.as_secs_f64()
        );
    }
    println!(
        "answer save vs submission, p50 / p99: 1 client {:.2}x / {:.2}x; {concurrency} clients {:.2}x / {:.2}x",
        put_seq.p50.as_secs_f64() / post_seq.p50.as_secs_f64(),
        put_seq.p99.as_secs_f64() / post_seq.p99.as_secs_f64(),
        put_conc.p50.as_secs_f64() / post_conc.p50.as_secs_f64(),
        put_conc.p99.as_secs_f64() / post_conc.p99.as_secs_f64(),
    );
    Ok(())
}

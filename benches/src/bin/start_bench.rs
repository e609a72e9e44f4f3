//! `start-bench`: how long `examflow serve` takes to start, and how much memory it peaks at,
//! with many `attempt_questions` rows in the lake (issue 20, "Starts fast at scale").
//!
//! 1. Writes `--rows` (default 10 000 000) synthetic rows into a fresh lake
//!    (`examflow_benches::synth`, the SQL benchmark's data).
//! 2. Starts the release `examflow serve` on it, alternating (each `--runs` times, default 2):
//!    - `whole`: without an ability snapshot (it reads every row, as every start did before
//!      the snapshot existed; the snapshot it then saves is deleted before the next start);
//!    - `snapshot`: with the snapshot the previous start saved (it replays the rest only);
//!    - `before`: `--baseline-binary PATH` when given, an examflow built before the snapshot.
//!
//!    Start = from spawning the process until it prints `examflow listening on`; peak memory
//!    = `VmHWM` of the process when it is listening. Targets: ≤ 5 s and ≤ 1 GB.
//!
//! ```text
//! target/release/start-bench [--rows N] [--runs R] [--baseline-binary PATH] [--data-dir DIR]
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use examflow_benches::synth::build_lake;
use examflow_benches::{cpu_line, examflow_binary, loadavg};
use examflow_ingest::lake::Lake;

struct Args {
    rows: usize,
    runs: usize,
    baseline: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rows: 10_000_000,
        runs: 2,
        baseline: None,
        data_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rows" => a.rows = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--baseline-binary" => a.baseline = Some(PathBuf::from(value()?)),
            "--data-dir" => a.data_dir = Some(PathBuf::from(value()?)),
            _ => {
                bail!("start-bench [--rows N] [--runs R] [--baseline-binary PATH] [--data-dir DIR]")
            }
        }
    }
    ensure!(
        a.rows > 0 && a.runs > 0,
        "--rows and --runs must be positive"
    );
    Ok(a)
}

/// One start: seconds until listening, peak RSS in MB, and what the log says it read.
struct Start {
    seconds: f64,
    peak_mb: f64,
    note: String,
}

fn vm_hwm_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1e3)
}

fn start(binary: &Path, data_dir: &Path, work: &Path, label: &str) -> Result<Start> {
    let banks = work.join("banks");
    std::fs::create_dir_all(&banks)?;
    let config = work.join("examflow.toml");
    std::fs::write(&config, "[adaptive]\ncalibrate_interval_secs = 0\n")?;
    let log = work.join(format!("serve-{label}.log"));
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--banks")
        .arg(&banks)
        .env(
            "EXAMFLOW_LOG",
            "info,deltalake_core=warn,buoyant_kernel=warn",
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting examflow")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_mb = vm_hwm_mb(child.id());
    // Let a background snapshot write finish before stopping (at most 60 s).
    let text = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while text(&log).contains("from_snapshot=false")
        && !text(&log).contains("ability snapshot saved")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    ensure!(
        line.starts_with("examflow listening on "),
        "examflow serve did not start: {line:?}\n{}",
        text(&log)
    );
    let note = text(&log)
        .lines()
        .find(|l| l.contains("ability estimates read") || l.contains("ability estimates rebuilt"))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.contains('='))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Ok(Start {
        seconds,
        peak_mb,
        note,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let binary = examflow_binary()?;
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    std::fs::create_dir_all(&data_dir)?;
    let lake = Lake::open(&data_dir).await?;
    if lake.attempt_questions.committed().version().unwrap_or(0) == 0 {
        let built = Instant::now();
        let mut quiet = |_: &str| {};
        let commits = build_lake(&lake, args.rows, &mut quiet).await?;
        eprintln!(
            "built {} rows in {commits} commits in {:.0} s",
            args.rows,
            built.elapsed().as_secs_f64()
        );
    }
    drop(lake);
    let snapshot = Lake::dir(&data_dir).join("_abilities/snapshot.bin");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work)?;

    println!("# start-bench: {} attempt_questions rows", args.rows);
    println!("{}", cpu_line());
    println!("load average before: {}", loadavg());
    let mut results: Vec<(&str, Vec<Start>)> = vec![("whole", vec![]), ("snapshot", vec![])];
    if args.baseline.is_some() {
        results.push(("before", vec![]));
    }
    for run in 0..args.runs {
        for (label, starts) in &mut results {
            let (bin, label) = match *label {
                "before" => (args.baseline.clone().expect("baseline"), "before"),
                other => (binary.clone(), other),
            };
            match label {
                "whole" | "before" => {
                    let _ = std::fs::remove_file(&snapshot);
                }
                _ => ensure!(snapshot.exists(), "no snapshot before a snapshot start"),
            }
            let s = start(&bin, &data_dir, &work, &format!("{label}-{run}"))?;
            eprintln!(
                "{label} run {run}: {:.2} s, peak {:.0} MB, {}",
                s.seconds, s.peak_mb, s.note
            );
            starts.push(s);
            if label == "before" {
                // The old binary writes no snapshot: make one for the next snapshot start.
                let s = start(&binary, &data_dir, &work, &format!("resnapshot-{run}"))?;
                ensure!(
                    snapshot.exists(),
                    "no snapshot after a whole start: {}",
                    s.note
                );
            }
        }
    }
    println!("load average after: {}", loadavg());
    println!();
    println!("| start | median s | max s | peak RSS median MB | max MB | vs whole (s) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let whole = median(results[0].1.iter().map(|s| s.seconds).collect());
    for (label, starts) in &results {
        let secs: Vec<f64> = starts.iter().map(|s| s.seconds).collect();
        let mb: Vec<f64> = starts.iter().map(|s| s.peak_mb).collect();
        println!(
            "| {label} | {:.2} | {:.2} | {:.0} | {:.0} | {:.3}× |",
            median(secs.clone()),
            secs.iter().copied().fold(0.0, f64::max),
            median(mb.clone()),
            mb.iter().copied().fold(0.0, f64::max),
            median(secs) / whole
        );
    }
    println!();
    for (label, starts) in &results {
        if let Some(s) = starts.last() {
            println!("{label}: {}", s.note);
        }
    }
    Ok(())
}

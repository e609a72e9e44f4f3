//! What the benchmark harnesses in `src/bin/` share: where the repository and the release
//! `examflow` binary are, the machine line and load average every table starts with, a test
//! broker, a bucket on a local S3 emulator, `/proc` readings of a process, a small
//! deterministic random stream, and the Python peers' runner.

pub mod python;
pub mod s3;
pub mod synth;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command};

use anyhow::{Context, Result, bail, ensure};

/// The repository's root (the parent of `benches/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// The `examflow` binary built beside the running harness (same profile).
pub fn examflow_binary() -> Result<PathBuf> {
    let candidate = std::env::current_exe()?.with_file_name("examflow");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "build it first: cargo build --release --workspace --bins (looked for {})",
        candidate.display()
    )
}

/// The 1-, 5- and 15-minute load averages, `?` where /proc is missing.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `model, N logical CPUs, MHz` from /proc/cpuinfo.
pub fn cpu_line() -> String {
    let s = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{}, {} logical CPUs, {} MHz",
        field("model name"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        field("cpu MHz")
    )
}

/// xorshift64*: a small deterministic stream for simulated data.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [0, 1). (Not an `Iterator`: the stream never ends and callers draw one.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n - 1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * (1.0 - self.next()).ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()
    }
}

/// Fields of `/proc/<pid>/status` as numbers (kB for the memory ones; NaN when absent), in
/// the order of `keys`, e.g. `proc_status(pid, ["VmRSS:", "Threads:"])`.
pub fn proc_status<const N: usize>(pid: u32, keys: [&str; N]) -> [f64; N] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    keys.map(|key| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    })
}

/// The Kafka broker a harness uses: `EXAMFLOW_TEST_KAFKA_BROKERS` when set, else one it
/// starts with `scripts/kafka-broker` (stopped on drop).
pub struct Broker {
    pub brokers: String,
    /// What it is, for the table's header.
    pub label: String,
    dir: Option<tempfile::TempDir>,
}

impl Broker {
    pub fn get() -> Result<Broker> {
        if let Ok(brokers) = std::env::var("EXAMFLOW_TEST_KAFKA_BROKERS")
            && !brokers.trim().is_empty()
        {
            return Ok(Broker {
                label: format!("external broker {brokers} (EXAMFLOW_TEST_KAFKA_BROKERS)"),
                brokers,
                dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let script = repo_root().join("scripts/kafka-broker");
        let output = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(
            output.status.success(),
            "{} start failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let brokers = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        ensure!(!brokers.is_empty(), "kafka-broker printed no address");
        let version = Command::new("nisshi")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "nisshi".into());
        Ok(Broker {
            label: format!(
                "{version} (SQLite storage) on {brokers}, started by the harness with \
                 `scripts/kafka-broker` on the same machine"
            ),
            brokers,
            dir: Some(dir),
        })
    }

    /// True when the harness started the broker (not `EXAMFLOW_TEST_KAFKA_BROKERS`).
    pub fn is_own(&self) -> bool {
        self.dir.is_some()
    }

    /// The broker's process, when the harness started it.
    pub fn pid(&self) -> Option<u32> {
        let dir = self.dir.as_ref()?;
        std::fs::read_to_string(dir.path().join("broker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(repo_root().join("scripts/kafka-broker"))
                .arg("stop")
                .arg(dir.path())
                .status();
        }
    }
}

/// `python3 data/gen_attempts.py --count N --seed S --format lines --out PATH`: synthetic
/// attempt documents, one per line.
pub fn generate_attempt_lines(out: &Path, count: usize, seed: u64) -> Result<()> {
    let script = repo_root().join("data/gen_attempts.py");
    let status = Command::new("python3")
        .arg(&script)
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .args(["--format", "lines", "--out"])
        .arg(out)
        .status()
        .with_context(|| format!("running python3 {}", script.display()))?;
    ensure!(status.success(), "{} failed: {status}", script.display());
    Ok(())
}

/// Reads the first line `examflow serve` prints, `examflow listening on URL`, from the
/// child's (piped) stdout and returns the URL with the reader, for the rest of the banner.
/// Any other line kills the child and is an error, with `log` (its stderr file) when given.
pub fn read_served_url(
    child: &mut Child,
    log: Option<&Path>,
) -> Result<(String, BufReader<ChildStdout>)> {
    let mut reader = BufReader::new(child.stdout.take().context("stdout not piped")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    match line.trim().strip_prefix("examflow listening on ") {
        Some(url) => Ok((url.to_string(), reader)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let log = log
                .map(|path| std::fs::read_to_string(path).unwrap_or_default())
                .unwrap_or_default();
            bail!("examflow serve did not start: {line:?}; log:\n{log}")
        }
    }
}

/// [`read_served_url`], then the rest of the child's stdout drained on a thread (a full pipe
/// would block the server).
pub fn served_url(child: &mut Child, log: Option<&Path>) -> Result<String> {
    let (url, mut reader) = read_served_url(child, log)?;
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok(url)
}

//! What the benchmark harnesses in `src/bin/` share: where the repository and the release
//! `examflow` binary are, the machine line and load average every table starts with, and a
//! small deterministic random stream.

pub mod synth;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

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

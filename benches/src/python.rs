//! The Python peers of the psychometrics harnesses (`benches/python/*.py`): running a
//! script as a subprocess and reading its JSON, the versions of Python and its packages,
//! and the response CSV the scripts read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use examflow_engine::irt::ResponseMatrix;
use serde_json::Value;

/// `benches/python/`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Outcome of a Python subprocess: its JSON, or why there is none.
pub enum Py {
    Ok(Value),
    Failed(String),
}

impl Py {
    pub fn json(&self) -> Option<&Value> {
        match self {
            Py::Ok(v) => Some(v),
            Py::Failed(_) => None,
        }
    }

    /// A number of the JSON, NaN when missing.
    pub fn num(&self, key: &str) -> f64 {
        self.json()
            .and_then(|v| v[key].as_f64())
            .unwrap_or(f64::NAN)
    }

    /// An array of numbers of the JSON (non-numbers as NaN).
    pub fn vec(&self, key: &str) -> Option<Vec<f64>> {
        self.json().and_then(|v| {
            v[key]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        })
    }

    /// Why the run failed, or the `error` the script reported.
    pub fn error(&self) -> Option<String> {
        match self {
            Py::Failed(e) => Some(e.clone()),
            Py::Ok(v) => v["error"].as_str().map(str::to_string),
        }
    }
}

/// Runs `python benches/python/<script> extra…` with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
/// removed from its environment, stdout to a file in `tmp`, killed after `timeout`; its
/// outcome and the wall time of the whole process from spawn to exit (NaN on failure).
pub fn run(
    python: &str,
    tmp: &Path,
    script: &str,
    extra: &[String],
    timeout: Duration,
) -> (Py, f64) {
    let out_path = tmp.join(format!("{script}.out.json"));
    let err_path = tmp.join(format!("{script}.err.txt"));
    let failed = |e: String| (Py::Failed(e), f64::NAN);
    let (Ok(out), Ok(err)) = (File::create(&out_path), File::create(&err_path)) else {
        return failed("cannot create output files".into());
    };
    let t0 = Instant::now();
    let child = Command::new(python)
        .arg(dir().join(script))
        .args(extra)
        .current_dir(dir())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {python}: {e}")),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return failed(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return failed(format!("wait: {e}")),
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        let e = std::fs::read_to_string(&err_path).unwrap_or_default();
        let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return failed(format!("{status}: {last}"));
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) => (Py::Ok(v), wall),
        Err(e) => failed(format!("bad JSON ({e})")),
    }
}

/// "Python 3.x, numpy …, <package> …, BLAS …" as `python` reports them.
pub fn versions(python: &str, packages: &[&str]) -> String {
    let list = packages
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    let code = format!(
        "import sys, importlib.metadata as m\n\
         out=['Python '+sys.version.split()[0]]\n\
         for p in [{list}]:\n\
         \x20   try: out.append(p+' '+m.version(p))\n\
         \x20   except Exception: out.append(p+' missing')\n\
         import numpy\n\
         cfg=numpy.show_config(mode='dicts') if 'mode' in numpy.show_config.__code__.co_varnames else {{}}\n\
         b=cfg.get('Build Dependencies',{{}}).get('blas',{{}}) if cfg else {{}}\n\
         out.append('BLAS '+str(b.get('name','?'))+' '+str(b.get('version','?')))\n\
         print(', '.join(out))"
    );
    match Command::new(python)
        .args(["-c", &code])
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!(
            "python check failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("python not runnable: {e}"),
    }
}

/// The response CSV the scripts read: a header of item ids, rows of `0`, `1` or empty.
pub fn write_csv(m: &ResponseMatrix, path: &Path) -> Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "{}", m.item_ids.join(","))?;
    let mut line = String::with_capacity(m.n_items * 2);
    for p in 0..m.n_persons {
        line.clear();
        for (i, &v) in m.row(p).iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            match v {
                0 => line.push('0'),
                1 => line.push('1'),
                _ => {}
            }
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
    Ok(())
}

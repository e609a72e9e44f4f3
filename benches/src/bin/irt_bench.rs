//! Psychometrics benchmark (issue 4): examflow's IRT engine against girth and a direct
//! vectorised numpy EM, on the same simulated data in the same run. Prints markdown tables.
//!
//! 1. Speed of 2PL MML-EM calibration (complete data and 20% missing), min/median/max of 3
//!    in-process runs, against `benches/python/numpy_em.py` and `girth.twopl_mml` run as
//!    subprocesses on a CSV of the same matrix (girth on a subset when the full size is too
//!    slow; examflow and numpy are then also run on that subset for a fair ratio).
//! 2. Achieved floating-point rate of examflow's E-step against the machine's peak.
//! 3. EAP scoring throughput (`eap_batch`, 1 000 000 persons × 100 items), and numpy EAP.
//! 4. Parameter and ability recovery (bias, RMSE) for examflow, girth and numpy EM.
//!
//! ```text
//! cargo build --release -p examflow-benches --bin irt-bench
//! target/release/irt-bench [--quick] [--girth-persons N] [--no-girth] [--no-python]
//!                          [--python python3] [--girth-timeout SECS] [--girth-full]
//! ```
//!
//! girth runs on a subset of persons (default 10 000; `--girth-persons`) because it needs
//! minutes per 10 000 persons; `--girth-full` also runs it on the full complete-data matrix
//! (killed after `--girth-timeout`, default 900 s).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::loadavg;
use examflow_benches::python::{self, Py, write_csv};
use examflow_engine::irt::{
    Calibration, CalibrationOptions, ItemParams, MISSING, Model, Quadrature, ResponseMatrix,
    SeMethod, SplitMix64, calibrate, eap_batch, simulate_2pl, simulate_responses,
};

const NODES: usize = 61;
const RANGE: f64 = 6.0;
/// examflow's band rule (engine/src/irt/estep.rs): EDGE log-units, MARGIN nodes.
const EDGE: f64 = 36.0;
const MARGIN: usize = 2;

struct Args {
    quick: bool,
    girth: bool,
    python_on: bool,
    python: String,
    girth_persons: Option<usize>,
    girth_timeout: Duration,
    girth_full: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        girth: true,
        python_on: true,
        python: "python3".into(),
        girth_persons: None,
        girth_timeout: Duration::from_secs(900),
        girth_full: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--no-girth" => a.girth = false,
            "--girth-full" => a.girth_full = true,
            "--no-python" => a.python_on = false,
            "--python" => a.python = it.next().context("--python needs a value")?,
            "--girth-persons" => {
                a.girth_persons = Some(it.next().context("--girth-persons N")?.parse()?)
            }
            "--girth-timeout" => {
                a.girth_timeout =
                    Duration::from_secs(it.next().context("--girth-timeout SECS")?.parse()?)
            }
            "-h" | "--help" => {
                println!(
                    "irt-bench [--quick] [--girth-persons N] [--girth-timeout SECS] \
                     [--girth-full] [--no-girth] [--no-python] [--python PY]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if !a.python_on {
        a.girth = false;
    }
    Ok(a)
}

// ---------------------------------------------------------------- small utilities

fn read_status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets the process's peak-RSS mark (Linux ≥ 4.0); returns false if not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn bias_rmse(est: &[f64], truth: &[f64]) -> (f64, f64) {
    let pairs: Vec<(f64, f64)> = est
        .iter()
        .zip(truth)
        .filter(|(e, _)| e.is_finite())
        .map(|(&e, &t)| (e, t))
        .collect();
    if pairs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = pairs.len() as f64;
    let bias = pairs.iter().map(|(e, t)| e - t).sum::<f64>() / n;
    let rmse = (pairs.iter().map(|(e, t)| (e - t).powi(2)).sum::<f64>() / n).sqrt();
    (bias, rmse)
}

fn f(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

fn write_u8(m: &ResponseMatrix, path: &Path) -> Result<()> {
    std::fs::write(path, &m.data)?;
    Ok(())
}

/// Runs a Python peer (see [`python::run`]).
fn run_py(args: &Args, tmp: &Path, script: &str, extra: &[String], timeout: Duration) -> Py {
    python::run(&args.python, tmp, script, extra, timeout).0
}

fn python_versions(args: &Args) -> String {
    if !args.python_on {
        return "python not run (--no-python)".into();
    }
    python::versions(&args.python, &["numpy", "scipy", "girth"])
}

struct Cpu {
    model: String,
    mhz: f64,
    simd: &'static str,
    flops_per_cycle: f64,
    threads: usize,
}

fn cpu_info() -> Cpu {
    let s = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    // Double-precision flops per cycle per core, assuming two FMA pipes of the SIMD width
    // (true for Zen 2/3/4 and Intel since Haswell; an upper bound otherwise).
    let (simd, fpc) = if has("avx512f") {
        ("AVX-512 + FMA", 32.0)
    } else if has("avx2") && has("fma") {
        ("AVX2 + FMA (256-bit)", 16.0)
    } else if has("avx") {
        ("AVX (no FMA)", 8.0)
    } else {
        ("SSE2", 4.0)
    };
    Cpu {
        model: format!(
            "{} (family {}, model {})",
            field("model name"),
            field("cpu family"),
            field("model\t")
        ),
        mhz: field("cpu MHz").parse().unwrap_or(f64::NAN),
        simd,
        flops_per_cycle: fpc,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

// ---------------------------------------------------------------- examflow runs

struct ExRun {
    secs: Vec<f64>,
    peak_rss_kb: Option<u64>,
    cal: Calibration,
}

fn opts_2pl(model: Model, se: SeMethod) -> CalibrationOptions {
    let mut o = CalibrationOptions::new(model);
    o.quadrature_points = NODES;
    o.quadrature_range = RANGE;
    o.se_method = se;
    o
}

fn run_examflow(data: &ResponseMatrix, opts: &CalibrationOptions, reps: usize) -> Result<ExRun> {
    let mut secs = Vec::new();
    let mut peak = None;
    let mut last = None;
    for _ in 0..reps {
        let reset = reset_peak_rss();
        let t = Instant::now();
        let cal = calibrate(data, opts)?;
        secs.push(t.elapsed().as_secs_f64());
        if reset {
            let hwm = read_status_kb("VmHWM:");
            peak = peak.max(hwm);
        }
        last = Some(cal);
    }
    Ok(ExRun {
        secs,
        peak_rss_kb: peak,
        cal: last.context("no run")?,
    })
}

fn est_ab(cal: &Calibration) -> (Vec<f64>, Vec<f64>) {
    (
        cal.items.iter().map(|p| p.a).collect(),
        cal.items.iter().map(|p| p.b).collect(),
    )
}

// ---------------------------------------------------------------- section 1: speed

struct Row {
    tool: String,
    secs: (f64, f64, f64),
    iterations: String,
    rmse_a: f64,
    rmse_b: f64,
    rss_mb: String,
    note: String,
}

fn speed_table(out: &mut String, title: &str, rows: &[Row], reference: f64, with_ratio_note: &str) {
    let _ = writeln!(out, "\n#### {title}\n");
    let _ = writeln!(
        out,
        "| tool | seconds (median) | min – max | × examflow{with_ratio_note} | iterations | RMSE a | RMSE b | peak RSS MB | note |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let ratio = if r.secs.1.is_finite() {
            format!("{:.1}", r.secs.1 / reference)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} – {} | {} | {} | {} | {} | {} | {} |",
            r.tool,
            f(r.secs.1, 3),
            f(r.secs.0, 3),
            f(r.secs.2, 3),
            ratio,
            r.iterations,
            f(r.rmse_a, 4),
            f(r.rmse_b, 4),
            r.rss_mb,
            r.note
        );
    }
}

fn examflow_row(label: &str, run: &ExRun, truth: &[ItemParams]) -> Row {
    let (a, b) = est_ab(&run.cal);
    let ta: Vec<f64> = truth.iter().map(|p| p.a).collect();
    let tb: Vec<f64> = truth.iter().map(|p| p.b).collect();
    Row {
        tool: label.into(),
        secs: stats(run.secs.clone()),
        iterations: format!(
            "{}{}",
            run.cal.iterations,
            if run.cal.converged {
                ""
            } else {
                " (not conv.)"
            }
        ),
        rmse_a: bias_rmse(&a, &ta).1,
        rmse_b: bias_rmse(&b, &tb).1,
        rss_mb: run
            .peak_rss_kb
            .map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        note: format!(
            "runs: {}, {} patterns, SE {:?}",
            run.secs.len(),
            run.cal.n_patterns,
            run.cal.se_method
        ),
    }
}

fn py_row(label: &str, r: &Py, truth: &[ItemParams], note: &str) -> Row {
    let ta: Vec<f64> = truth.iter().map(|p| p.a).collect();
    let tb: Vec<f64> = truth.iter().map(|p| p.b).collect();
    let s = r.num("seconds");
    let rmse = |k: &str, t: &[f64]| r.vec(k).map_or(f64::NAN, |v| bias_rmse(&v, t).1);
    let mut note = note.to_string();
    if let Some(e) = r.error() {
        note = format!("FAILED: {e}");
    }
    let conv = match r {
        Py::Ok(v) => match v["converged"].as_bool() {
            Some(false) => " (not conv.)",
            _ => "",
        },
        _ => "",
    };
    Row {
        tool: label.into(),
        secs: (s, s, s),
        iterations: if r.num("iterations").is_finite() {
            format!("{}{conv}", r.num("iterations"))
        } else {
            "–".into()
        },
        rmse_a: rmse("a", &ta),
        rmse_b: rmse("b", &tb),
        rss_mb: if r.num("peak_rss_kb").is_finite() {
            format!("{:.0}", r.num("peak_rss_kb") / 1024.0)
        } else {
            "–".into()
        },
        note,
    }
}

fn py_common(n_quad: usize) -> Vec<String> {
    vec![
        "--quad-n".into(),
        n_quad.to_string(),
        "--range".into(),
        RANGE.to_string(),
    ]
}

fn section_speed(
    args: &Args,
    tmp: &Path,
    out: &mut String,
) -> Result<Option<(ResponseMatrix, Calibration)>> {
    let (n, j) = if args.quick {
        (3_000, 30)
    } else {
        (100_000, 100)
    };
    let girth_n = args
        .girth_persons
        .unwrap_or(if args.quick { 1_000 } else { 10_000 })
        .min(n);
    let _ = writeln!(
        out,
        "\n### 1. Speed: 2PL MML-EM, {n} persons × {j} items, {NODES} quadrature points on [−{RANGE}, {RANGE}]\n"
    );
    let _ = writeln!(
        out,
        "examflow: `calibrate` in-process, defaults (tolerance 1e−5 on max |Δa|, |Δb|, relative \
         log-likelihood change 1e−12, SQUAREM acceleration on), SEs off unless stated; peak RSS = \
         VmHWM of the harness process after resetting it (includes the data). numpy EM: \
         `benches/python/numpy_em.py`, plain EM with the same grid, start and stopping rule. girth: \
         `twopl_mml` with `quadrature_n={NODES}`, bounds (−{RANGE}, {RANGE}), its own stopping rule \
         (max |Δa| < 1e−3, at most 25 iterations; default); missing cells tagged \
         `INVALID_RESPONSE`. Python timings cover estimation only (not CSV loading); Python peak \
         RSS = `ru_maxrss` (includes the interpreter and the data)."
    );
    let mut complete: Option<(ResponseMatrix, Calibration)> = None;
    for missing in [0.0, 0.2] {
        let label = if missing > 0.0 {
            "20% missing"
        } else {
            "complete data"
        };
        let (data, truth, _) = simulate_2pl(n, j, 2024, missing);
        let ex = run_examflow(&data, &opts_2pl(Model::TwoPl, SeMethod::None), 3)?;
        let ex_se = run_examflow(&data, &opts_2pl(Model::TwoPl, SeMethod::Auto), 1)?;
        let reference = stats(ex.secs.clone()).1;
        let mut rows = vec![
            examflow_row("examflow", &ex, &truth),
            examflow_row("examflow + SEs (auto)", &ex_se, &truth),
        ];
        if args.python_on {
            let csv = tmp.join(format!("speed_{n}_{j}_{}.csv", (missing * 100.0) as u32));
            write_csv(&data, &csv)?;
            let mut a = vec![csv.display().to_string()];
            a.extend(py_common(NODES));
            let np = run_py(args, tmp, "numpy_em.py", &a, Duration::from_secs(3600));
            rows.push(py_row("numpy EM (plain EM)", &np, &truth, "1 run"));
            if args.girth && (girth_n == n || (args.girth_full && missing == 0.0)) {
                let g = run_py(args, tmp, "girth_bench.py", &a, args.girth_timeout);
                rows.push(py_row("girth twopl_mml", &g, &truth, "1 run"));
            }
        }
        speed_table(out, &format!("{label}, {n} × {j}"), &rows, reference, "");
        println!("{out}");
        out.clear();
        if args.girth && girth_n < n {
            // girth on a subset: examflow and numpy on the same subset for a fair ratio.
            let order: Vec<usize> = (0..girth_n).collect();
            let sub = data.select_persons(&order);
            let exs = run_examflow(&sub, &opts_2pl(Model::TwoPl, SeMethod::None), 3)?;
            let reference = stats(exs.secs.clone()).1;
            let mut rows = vec![examflow_row("examflow", &exs, &truth)];
            let csv = tmp.join(format!(
                "speed_sub_{girth_n}_{j}_{}.csv",
                (missing * 100.0) as u32
            ));
            write_csv(&sub, &csv)?;
            let mut a = vec![csv.display().to_string()];
            a.extend(py_common(NODES));
            let np = run_py(args, tmp, "numpy_em.py", &a, Duration::from_secs(3600));
            rows.push(py_row("numpy EM (plain EM)", &np, &truth, "1 run"));
            let g = run_py(args, tmp, "girth_bench.py", &a, args.girth_timeout);
            rows.push(py_row("girth twopl_mml", &g, &truth, "1 run"));
            speed_table(
                out,
                &format!(
                    "{label}, subset {girth_n} × {j} (first {girth_n} persons of the same data, for girth)"
                ),
                &rows,
                reference,
                "",
            );
            println!("{out}");
            out.clear();
        }
        if missing == 0.0 {
            complete = Some((data, ex.cal));
        }
    }
    Ok(complete)
}

// ---------------------------------------------------------------- section 2: flops

/// Flops of one steady-state examflow E-step, replicating its band rule at parameters
/// `cal`: per pattern with band [lo, hi] (posterior ≥ max − EDGE, plus MARGIN nodes for
/// the likelihood pass) it does (correct + missing) adds per likelihood node, then per
/// accumulated node one subtract, one exp, one add (sum), one multiply (scale), one add
/// (total) and (correct + missing) adds into r / miss. Returns (arithmetic flops, exps,
/// dense-equivalent flops 4·N·J·K of a textbook E-step over all persons).
fn estep_flops(data: &ResponseMatrix, cal: &Calibration) -> (f64, f64, f64) {
    let q = Quadrature::normal(NODES, RANGE).expect("grid");
    let k = q.len();
    let items: Vec<&ItemParams> = cal.items.iter().filter(|p| p.estimable).collect();
    let idx: Vec<usize> = (0..cal.items.len())
        .filter(|&i| cal.items[i].estimable)
        .collect();
    let m = items.len();
    // ln P − ln Q = z, ln Q = −softplus(z) (2PL)
    let mut base = q.log_weights.clone();
    let mut dl = vec![0.0; m * k];
    let mut lq = vec![0.0; m * k];
    for (ii, p) in items.iter().enumerate() {
        for (kk, &t) in q.nodes.iter().enumerate() {
            let z = p.a * (t - p.b);
            let l = -(z.max(0.0) + (-z.abs()).exp().ln_1p());
            dl[ii * k + kk] = z;
            lq[ii * k + kk] = l;
            base[kk] += l;
        }
    }
    let (mut flops, mut exps) = (0.0, 0.0);
    let mut ll = vec![0.0; k];
    let mut seen = std::collections::HashSet::new();
    for p in 0..data.n_persons {
        let row = data.row(p);
        let key: Vec<u8> = idx.iter().map(|&i| row[i]).collect();
        if key.iter().all(|&v| v == MISSING) || !seen.insert(key.clone()) {
            continue; // examflow collapses identical patterns and drops empty ones
        }
        ll.copy_from_slice(&base);
        let mut touched = 0usize;
        for (ii, &v) in key.iter().enumerate() {
            if v == 1 {
                ll.iter_mut()
                    .zip(&dl[ii * k..(ii + 1) * k])
                    .for_each(|(l, d)| *l += d);
                touched += 1;
            } else if v == MISSING {
                ll.iter_mut()
                    .zip(&lq[ii * k..(ii + 1) * k])
                    .for_each(|(l, d)| *l -= d);
                touched += 1;
            }
        }
        let mx = ll.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let tlo = ll.iter().position(|&v| v >= mx - EDGE).unwrap_or(0);
        let thi = ll.iter().rposition(|&v| v >= mx - EDGE).unwrap_or(k - 1);
        let wl = ((thi + MARGIN).min(k - 1) - tlo.saturating_sub(MARGIN) + 1) as f64;
        let wa = (thi - tlo + 1) as f64;
        flops += touched as f64 * wl + wa * (4.0 + touched as f64) + wa;
        exps += wa;
    }
    let dense = 4.0 * data.n_persons as f64 * m as f64 * k as f64;
    (flops, exps, dense)
}

fn section_flops(
    args: &Args,
    out: &mut String,
    data: &ResponseMatrix,
    cal: &Calibration,
) -> Result<()> {
    let cpu = cpu_info();
    let _ = writeln!(out, "\n### 2. Floating-point rate of the examflow E-step\n");
    // Per-iteration time: plain EM (no acceleration), SEs off, t(6 iterations) − t(1) over 5.
    let mut per_iter = Vec::new();
    for _ in 0..3 {
        let mut t = [0.0; 2];
        for (s, iters) in [1usize, 6].into_iter().enumerate() {
            let mut o = opts_2pl(Model::TwoPl, SeMethod::None);
            o.max_iterations = iters;
            o.accelerate = false;
            o.tolerance = 1e-300;
            o.ll_relative_tolerance = 0.0;
            let t0 = Instant::now();
            let c = calibrate(data, &o)?;
            t[s] = t0.elapsed().as_secs_f64();
            if c.iterations != iters {
                bail!("expected {iters} iterations, got {}", c.iterations);
            }
        }
        per_iter.push((t[1] - t[0]) / 5.0);
    }
    let (lo, med, hi) = stats(per_iter);
    let (flops, exps, dense) = estep_flops(data, cal);
    let peak = cpu.threads as f64 * cpu.mhz * 1e6 * cpu.flops_per_cycle;
    let achieved = (flops + exps) / med;
    let _ = writeln!(
        out,
        "Machine: {} logical CPUs, {}, {:.0} MHz (from /proc/cpuinfo; turbo not counted), {} → \
         {:.0} DP flops/cycle/core → peak {:.1} GFLOP/s. Data: the complete {} × {} matrix of \
         section 1, {} patterns. One EM iteration (E-step + M-step) timed as (t(6 iterations) − \
         t(1 iteration)) / 5 with acceleration off, median of 3. Flops are counted by replaying the sparse band E-step of engine commit 6e21860 \
         (posterior band where ln posterior ≥ max − {EDGE}, ±{MARGIN} nodes; one add per node for each \
         correct and each missing item, then exp, normalisation and count accumulation) at the \
         calibrated parameters; each exp counted as 1 flop. The M-step (items × nodes × a few Newton steps) is \
         < 0.1% of these flops and not counted. Since commit 4c814be the E-step does less work per \
         pattern (no likelihood pass for complete c = 0 patterns, shorter of the correct/wrong \
         lists), so with newer engines the replayed count is an algorithm-equivalent upper bound on \
         the executed flops (and the share of peak an upper bound). 'Dense-equivalent' = 4·N·J·K, the \
         multiply-adds of a textbook E-step (likelihood and expected counts over all persons, \
         items and nodes).\n",
        cpu.threads,
        cpu.model,
        cpu.mhz,
        cpu.simd,
        cpu.flops_per_cycle,
        peak / 1e9,
        data.n_persons,
        data.n_items,
        cal.n_patterns
    );
    let _ = writeln!(out, "| quantity | value |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| time per EM iteration (median; min – max) | {:.4} s ({:.4} – {:.4}) |",
        med, lo, hi
    );
    let _ = writeln!(
        out,
        "| replayed flops per E-step (adds/mults + exps) | {:.3e} ({:.3e} + {:.3e} exp) |",
        flops + exps,
        flops,
        exps
    );
    let _ = writeln!(
        out,
        "| achieved (replayed flops / time) | {:.2} GFLOP/s |",
        achieved / 1e9
    );
    let _ = writeln!(out, "| share of peak | {:.1}% |", 100.0 * achieved / peak);
    let _ = writeln!(
        out,
        "| dense-equivalent flops per E-step (4·N·J·K) | {:.3e} |",
        dense
    );
    let _ = writeln!(
        out,
        "| dense-equivalent rate | {:.2} GFLOP/s ({:.0}% of peak) |",
        dense / med / 1e9,
        100.0 * dense / med / peak
    );
    let _ = writeln!(
        out,
        "| full calibration (section 1 median, {} iterations) ≈ | {:.1} replayed GFLOP |",
        cal.iterations,
        (flops + exps) * cal.iterations as f64 * 4.0 / 3.0 / 1e9
    );
    let _ = writeln!(
        out,
        "\n(The last row assumes ≈ 4 E-steps per 3 counted iterations under SQUAREM.)"
    );
    let _ = args;
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- section 3: EAP

fn section_eap(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let (n, j) = if args.quick {
        (50_000, 100)
    } else {
        (1_000_000, 100)
    };
    let quad = Quadrature::normal(NODES, RANGE)?;
    let _ = writeln!(
        out,
        "\n### 3. EAP scoring throughput: {n} persons × {j} items, 2PL, {NODES} nodes\n"
    );
    let _ = writeln!(
        out,
        "examflow `eap_batch` (true parameters), median of 3; numpy: `benches/python/numpy_eap.py` \
         (chunks of 65 536 persons, two GEMMs per chunk), 1 run, data passed as raw bytes.\n"
    );
    let _ = writeln!(
        out,
        "| data | tool | seconds (median; min – max) | scores / s | max |Δθ| vs examflow (first 5) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for missing in [0.0, 0.2] {
        let label = if missing > 0.0 {
            "20% missing"
        } else {
            "complete"
        };
        let (data, truth, _) = simulate_2pl(n, j, 11, missing);
        let mut secs = Vec::new();
        let mut est = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            est = eap_batch(&truth, &data, &quad)?;
            secs.push(t.elapsed().as_secs_f64());
        }
        let (lo, med, hi) = stats(secs);
        let _ = writeln!(
            out,
            "| {label} | examflow eap_batch | {med:.3} ({lo:.3} – {hi:.3}) | {:.2} M | – |",
            n as f64 / med / 1e6
        );
        if args.python_on {
            let bin = tmp.join(format!("eap_{}.u8", (missing * 100.0) as u32));
            write_u8(&data, &bin)?;
            let pj = tmp.join("eap_params.json");
            let a: Vec<f64> = truth.iter().map(|p| p.a).collect();
            let b: Vec<f64> = truth.iter().map(|p| p.b).collect();
            std::fs::write(&pj, serde_json::json!({"a": a, "b": b}).to_string())?;
            let mut pa = vec![
                bin.display().to_string(),
                "--items".into(),
                j.to_string(),
                "--params".into(),
                pj.display().to_string(),
            ];
            pa.extend(py_common(NODES));
            let r = run_py(args, tmp, "numpy_eap.py", &pa, Duration::from_secs(1800));
            let s = r.num("seconds");
            let diff = r.vec("theta_head").map_or(f64::NAN, |h| {
                h.iter()
                    .zip(&est)
                    .map(|(x, e)| (x - e.theta).abs())
                    .fold(0.0, f64::max)
            });
            match r.error() {
                Some(e) => {
                    let _ = writeln!(out, "| {label} | numpy EAP | FAILED: {e} | – | – |");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| {label} | numpy EAP | {s:.3} | {:.2} M | {diff:.1e} |",
                        n as f64 / s / 1e6
                    );
                }
            }
            let _ = std::fs::remove_file(&bin);
        }
    }
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- section 4: recovery

struct RecRow {
    tool: String,
    a: (f64, f64),
    b: (f64, f64),
    c: Option<(f64, f64)>,
    theta: (f64, f64),
    secs: f64,
    iterations: String,
    note: String,
}

fn rec_examflow(
    data: &ResponseMatrix,
    model: Model,
    truth: &[ItemParams],
    thetas: &[f64],
) -> Result<RecRow> {
    let t = Instant::now();
    let cal = calibrate(data, &opts_2pl(model, SeMethod::None))?;
    let secs = t.elapsed().as_secs_f64();
    let quad = Quadrature::normal(NODES, RANGE)?;
    let th: Vec<f64> = eap_batch(&cal.items, data, &quad)?
        .iter()
        .map(|e| e.theta)
        .collect();
    let col = |g: fn(&ItemParams) -> f64, v: &[ItemParams]| v.iter().map(g).collect::<Vec<_>>();
    Ok(RecRow {
        tool: "examflow".into(),
        a: bias_rmse(&col(|p| p.a, &cal.items), &col(|p| p.a, truth)),
        b: bias_rmse(&col(|p| p.b, &cal.items), &col(|p| p.b, truth)),
        c: (model == Model::ThreePl)
            .then(|| bias_rmse(&col(|p| p.c, &cal.items), &col(|p| p.c, truth))),
        theta: bias_rmse(&th, thetas),
        secs,
        iterations: format!(
            "{}{}",
            cal.iterations,
            if cal.converged { "" } else { " (not conv.)" }
        ),
        note: "θ = EAP (eap_batch at the estimates)".into(),
    })
}

fn rec_py(
    label: &str,
    r: &Py,
    truth: &[ItemParams],
    thetas: &[f64],
    three: bool,
    note: &str,
) -> RecRow {
    let br = |k: &str, t: Vec<f64>| r.vec(k).map_or((f64::NAN, f64::NAN), |v| bias_rmse(&v, &t));
    let mut note = note.to_string();
    if let Some(e) = r.error() {
        note = format!("FAILED: {e}");
    }
    RecRow {
        tool: label.into(),
        a: br("a", truth.iter().map(|p| p.a).collect()),
        b: br("b", truth.iter().map(|p| p.b).collect()),
        c: three.then(|| br("c", truth.iter().map(|p| p.c).collect())),
        theta: br("theta", thetas.to_vec()),
        secs: r.num("seconds"),
        iterations: if r.num("iterations").is_finite() {
            format!("{}", r.num("iterations"))
        } else {
            "–".into()
        },
        note,
    }
}

fn section_recovery(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let sizes: &[(usize, usize)] = if args.quick {
        &[(500, 10), (1000, 15)]
    } else {
        &[(1000, 20), (5000, 40), (20000, 50)]
    };
    let three = if args.quick { (1000, 15) } else { (5000, 30) };
    let _ = writeln!(
        out,
        "\n### 4. Recovery (seeded simulations, same data for every tool)\n"
    );
    let _ = writeln!(
        out,
        "2PL: `simulate_2pl(N, J, seed, 0)` (a ~ U(0.7, 2), b ~ N(0, 1), θ ~ N(0, 1)). 3PL: \
         `simulate_responses` with a ~ U(0.7, 2), b ~ N(0, 1), c ~ U(0.1, 0.3) (SplitMix64 seed 77). \
         Bias = mean(estimate − true), RMSE over items (a, b, c) or persons (θ). θ: examflow = EAP \
         from `eap_batch` at the estimated parameters; girth 2PL = the `Ability` (EAP) returned by \
         `twopl_mml`; girth 3PL = `ability_3pl_eap` (its time is not in 'seconds'); numpy = EAP \
         from the final E-step. examflow's 3PL is MAP for c with a Beta(5, 17) prior (default); \
         girth's 3PL bounds c to [0, 0.33]. Seconds: single run, estimation only.\n"
    );
    let _ = writeln!(
        out,
        "| model | N × J | tool | bias a | RMSE a | bias b | RMSE b | bias c | RMSE c | bias θ | RMSE θ | seconds | iterations | note |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let emit = |out: &mut String, model: &str, n: usize, j: usize, r: &RecRow| {
        let (cb, cr) = r.c.unwrap_or((f64::NAN, f64::NAN));
        let _ = writeln!(
            out,
            "| {model} | {n} × {j} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.tool,
            f(r.a.0, 3),
            f(r.a.1, 3),
            f(r.b.0, 3),
            f(r.b.1, 3),
            f(cb, 3),
            f(cr, 3),
            f(r.theta.0, 3),
            f(r.theta.1, 3),
            f(r.secs, 2),
            r.iterations,
            r.note
        );
    };
    for (s, &(n, j)) in sizes.iter().enumerate() {
        let (data, truth, thetas) = simulate_2pl(n, j, 100 + s as u64, 0.0);
        let r = rec_examflow(&data, Model::TwoPl, &truth, &thetas)?;
        emit(out, "2PL", n, j, &r);
        if args.python_on {
            let csv = tmp.join(format!("rec_{n}_{j}.csv"));
            write_csv(&data, &csv)?;
            let mut a = vec![csv.display().to_string(), "--theta".into()];
            a.extend(py_common(NODES));
            if args.girth {
                let g = run_py(args, tmp, "girth_bench.py", &a, args.girth_timeout);
                emit(
                    out,
                    "2PL",
                    n,
                    j,
                    &rec_py("girth", &g, &truth, &thetas, false, ""),
                );
            }
            let np = run_py(args, tmp, "numpy_em.py", &a, Duration::from_secs(3600));
            emit(
                out,
                "2PL",
                n,
                j,
                &rec_py("numpy EM", &np, &truth, &thetas, false, ""),
            );
        }
    }
    // 3PL
    let (n, j) = three;
    let mut rng = SplitMix64::new(77);
    let truth: Vec<ItemParams> = (1..=j)
        .map(|i| {
            let a = 0.7 + 1.3 * rng.uniform();
            let b = rng.normal();
            let c = 0.1 + 0.2 * rng.uniform();
            ItemParams::new(format!("item{i}"), a, b, c)
        })
        .collect();
    let (data, thetas) = simulate_responses(&truth, n, 78, 0.0);
    let r = rec_examflow(&data, Model::ThreePl, &truth, &thetas)?;
    emit(out, "3PL", n, j, &r);
    if args.girth {
        let csv = tmp.join(format!("rec3_{n}_{j}.csv"));
        write_csv(&data, &csv)?;
        let mut a = vec![
            csv.display().to_string(),
            "--theta".into(),
            "--model".into(),
            "3pl".into(),
        ];
        a.extend(py_common(NODES));
        let g = run_py(args, tmp, "girth_bench.py", &a, args.girth_timeout);
        let note = match &g {
            Py::Ok(v) => format!(
                "θ time {:.2} s",
                v["theta_seconds"].as_f64().unwrap_or(f64::NAN)
            ),
            _ => String::new(),
        };
        emit(
            out,
            "3PL",
            n,
            j,
            &rec_py("girth", &g, &truth, &thetas, true, &note),
        );
    }
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let cpu = cpu_info();
    let mut out = String::new();
    let started = Instant::now();
    let _ = writeln!(
        out,
        "## irt-bench{}\n\n- CPU: {}, {} logical CPUs, {:.0} MHz, {}\n- load average at start: {}\n- {}\n- rayon threads: {}",
        if args.quick { " (--quick)" } else { "" },
        cpu.model,
        cpu.threads,
        cpu.mhz,
        cpu.simd,
        loadavg(),
        python_versions(&args),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| format!("default ({})", cpu.threads)),
    );
    println!("{out}");
    out.clear();
    let complete = section_speed(&args, tmp.path(), &mut out)?;
    let _ = writeln!(out, "\n(load average after section 1: {})", loadavg());
    if let Some((data, cal)) = complete {
        section_flops(&args, &mut out, &data, &cal)?;
    }
    section_eap(&args, tmp.path(), &mut out)?;
    section_recovery(&args, tmp.path(), &mut out)?;
    println!(
        "\nload average at end: {}; total wall time {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

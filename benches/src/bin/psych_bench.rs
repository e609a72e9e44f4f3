//! Psychometrics educators can defend (issue 21): the speed of examflow's standard errors,
//! item fit, DIF and linking against straightforward numpy/scipy implementations measured
//! in the same run on the same seeded data. Prints markdown tables (min / median / max of
//! `--reps` runs, default 3, and ratios against the baseline of the same run).
//!
//! 1. 2PL calibration with standard errors (20 000 × 50 with 10 % missing; 10 000 × 100
//!    with 20 % missing): `calibrate` in-process per `SeMethod` against
//!    `python/numpy_em.py` (plain EM, no SEs) on the same CSV; whole processes (the release
//!    `examflow calibrate … --se oakes` against `python3 numpy_em.py`) when the release
//!    `examflow` binary sits beside the harness; EM capped at 1 and at 16 iterations.
//! 2. S-X2, 100 000 × 100 complete: `s_x2` and the whole `fit_report` against
//!    `python/numpy_sx2.py`, with the agreement of the statistics.
//! 3. DIF, 100 000 persons × 100 items: `mantel_haenszel` and `logistic_regression`
//!    against `python/numpy_dif.py` (bincount MH; person-level IRLS), with agreement.
//! 4. Linking (Stocking–Lord, Haebara), 100 and 1 000 common items: `link` against
//!    `python/numpy_linking.py` (scipy Nelder–Mead, and scipy's Levenberg–Marquardt, on the
//!    same criterion), with agreement.
//! 5. Calibration with fit against without (`calibrate` vs `calibrate` + `fit_report`,
//!    what `examflow calibrate --fit` does).
//!
//! ```text
//! cargo build --release -p examflow -p examflow-benches --bin examflow --bin psych-bench
//! target/release/psych-bench [--quick] [--reps N] [--no-python] [--python PY]
//!                            [--only calibrate,sx2,dif,linking,fit]
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::python::{self, Py, write_csv};
use examflow_benches::{cpu_line, examflow_binary, loadavg, repo_root};
use examflow_engine::dif::{Group, logistic_regression, mantel_haenszel};
use examflow_engine::irt::{
    Calibration, CalibrationOptions, FitOptions, ItemParams, LinkingMethod, LinkingOptions, Model,
    Quadrature, ResponseMatrix, SeMethod, SplitMix64, calibrate, fit_report, link, s_x2,
    simulate_2pl, simulate_responses,
};
use serde_json::{Value, json};

const NODES: usize = 61;
const RANGE: f64 = 6.0;

struct Args {
    quick: bool,
    reps: usize,
    python_on: bool,
    python: String,
    only: Option<Vec<String>>,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        reps: 3,
        python_on: true,
        python: "python3".into(),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--no-python" => a.python_on = false,
            "--python" => a.python = it.next().context("--python needs a value")?,
            "--reps" => a.reps = it.next().context("--reps N")?.parse()?,
            "--only" => {
                a.only = Some(
                    it.next()
                        .context("--only calibrate,sx2,dif,linking,fit")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "-h" | "--help" => {
                println!(
                    "psych-bench [--quick] [--reps N] [--no-python] [--python PY] \
                     [--only calibrate,sx2,dif,linking,fit]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    Ok(a)
}

// ---------------------------------------------------------------- utilities

/// (min, median, max); NaN for an empty list.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn f(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

/// `median (min – max)` in seconds.
fn secs_cell(v: &[f64]) -> String {
    let (lo, med, hi) = stats(v);
    if !med.is_finite() {
        return "–".into();
    }
    let d = if med < 0.01 { 5 } else { 3 };
    format!("{} ({} – {})", f(med, d), f(lo, d), f(hi, d))
}

fn ratio(num: f64, den: f64) -> String {
    if num.is_finite() && den.is_finite() && den > 0.0 {
        let r = num / den;
        if r >= 100.0 {
            format!("{r:.0}")
        } else if r >= 10.0 {
            format!("{r:.1}")
        } else {
            format!("{r:.2}")
        }
    } else {
        "–".into()
    }
}

fn timed<T>(reps: usize, mut run: impl FnMut() -> Result<T>) -> Result<(Vec<f64>, T)> {
    let mut secs = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        let out = run()?;
        secs.push(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    Ok((secs, last.context("no run")?))
}

fn params_json(items: &[ItemParams]) -> Value {
    json!({
        "a": items.iter().map(|p| p.a).collect::<Vec<_>>(),
        "b": items.iter().map(|p| p.b).collect::<Vec<_>>(),
    })
}

/// Runs a Python peer (see [`python::run`]): its outcome and whole-process wall time.
fn run_py(args: &Args, tmp: &Path, script: &str, extra: &[String], timeout: Duration) -> (Py, f64) {
    python::run(&args.python, tmp, script, extra, timeout)
}

/// `reps` runs of a script; the last run's JSON, estimation seconds (`key`) and wall times.
fn run_py_reps(
    args: &Args,
    tmp: &Path,
    script: &str,
    extra: &[String],
    key: &str,
    reps: usize,
) -> (Option<Py>, Vec<f64>, Vec<f64>, Option<String>) {
    let (mut secs, mut walls, mut last) = (Vec::new(), Vec::new(), None);
    for _ in 0..reps {
        let (r, wall) = run_py(args, tmp, script, extra, Duration::from_secs(3600));
        if let Some(e) = r.error() {
            return (None, secs, walls, Some(e));
        }
        secs.push(r.num(key));
        walls.push(wall);
        last = Some(r);
    }
    (last, secs, walls, None)
}

fn python_versions(args: &Args) -> String {
    if !args.python_on {
        return "python not run (--no-python)".into();
    }
    python::versions(&args.python, &["numpy", "scipy"])
}

fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn opts(se: SeMethod) -> CalibrationOptions {
    let mut o = CalibrationOptions::new(Model::TwoPl);
    o.quadrature_points = NODES;
    o.quadrature_range = RANGE;
    o.se_method = se;
    o
}

fn se_name(se: SeMethod) -> &'static str {
    match se {
        SeMethod::None => "none",
        SeMethod::Oakes => "oakes",
        SeMethod::Xpd => "xpd",
        SeMethod::Sem => "sem",
        SeMethod::ObservedHessian => "observed_hessian",
        SeMethod::ItemBlockXpd => "item_block_xpd",
        SeMethod::Auto => "auto",
    }
}

/// Largest relative difference of the SEs of a and b between two calibrations.
fn se_rel_diff(x: &Calibration, y: &Calibration) -> f64 {
    let mut worst: f64 = 0.0;
    for (p, q) in x.items.iter().zip(&y.items) {
        for (s, t) in [(p.se_a, q.se_a), (p.se_b, q.se_b)] {
            match (s, t) {
                (Some(s), Some(t)) => worst = worst.max((s - t).abs() / t.abs()),
                _ => return f64::NAN,
            }
        }
    }
    worst
}

fn max_abs_diff(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() {
        return f64::NAN;
    }
    x.iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() || b.is_finite())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) })
}

// ---------------------------------------------------------------- 1. calibration with SEs

fn section_calibrate(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let sets: &[(usize, usize, f64, u64)] = if args.quick {
        &[(2_000, 20, 0.1, 21), (1_000, 30, 0.2, 22)]
    } else {
        &[(20_000, 50, 0.1, 21), (10_000, 100, 0.2, 22)]
    };
    let reps = args.reps;
    let _ = writeln!(
        out,
        "\n### 1. 2PL calibration with standard errors\n\n\
         examflow: `calibrate` in-process (model 2PL, {NODES} points on [−{RANGE}, {RANGE}], \
         defaults otherwise: tolerance 1e−5, SQUAREM on), `se_method` as listed, {reps} runs \
         each. numpy EM: `benches/python/numpy_em.py` on a CSV of the same matrix (plain EM, \
         same grid, start and stopping rule, **no SEs**), {reps} runs; 'estimation' is its own \
         `perf_counter` time (no CSV loading), 'whole process' the wall time of the `python3` \
         process as the harness sees it. 'numpy ÷ examflow' = median numpy estimation time / \
         median examflow time. 'SE cost' = median with SEs − median with `none`. 'max rel. \
         ΔSE' = largest |SE − SE(oakes)| / SE(oakes) over every a and b.\n"
    );
    let ex_bin = examflow_binary().ok();
    for (set, &(n, j, missing, seed)) in sets.iter().enumerate() {
        let (data, _truth, _) = simulate_2pl(n, j, seed, missing);
        let _ = writeln!(
            out,
            "\n#### {n} persons × {j} items, {:.0} % missing (simulate_2pl seed {seed})\n",
            missing * 100.0
        );
        let csv = tmp.join(format!("cal_{n}_{j}.csv"));
        write_csv(&data, &csv)?;
        let mut np = None;
        let (mut np_secs, mut np_wall) = (Vec::new(), Vec::new());
        let mut np_err = None;
        if args.python_on {
            let a = vec![
                csv.display().to_string(),
                "--quad-n".into(),
                NODES.to_string(),
                "--range".into(),
                RANGE.to_string(),
            ];
            (np, np_secs, np_wall, np_err) =
                run_py_reps(args, tmp, "numpy_em.py", &a, "seconds", reps);
        }
        let np_med = stats(&np_secs).1;
        let mut rows = Vec::new();
        let mut cals = Vec::new();
        for se in [
            SeMethod::None,
            SeMethod::Oakes,
            SeMethod::Xpd,
            SeMethod::Sem,
            SeMethod::ObservedHessian,
            SeMethod::Auto,
        ] {
            let o = opts(se);
            let (secs, cal) = timed(reps, || Ok(calibrate(&data, &o)?))?;
            rows.push((se, secs));
            cals.push(cal);
        }
        let none_med = stats(&rows[0].1).1;
        let oakes = cals[1].clone();
        let _ = writeln!(
            out,
            "| run | seconds, median (min – max) | SE cost (s) | numpy ÷ examflow | iterations | SE method used | max rel. ΔSE vs oakes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|");
        for ((se, secs), cal) in rows.iter().zip(&cals) {
            let med = stats(secs).1;
            let _ = writeln!(
                out,
                "| examflow, se = {} | {} | {} | {} | {}{} | {} | {} |",
                se_name(*se),
                secs_cell(secs),
                if *se == SeMethod::None {
                    "–".into()
                } else {
                    f(med - none_med, 3)
                },
                ratio(np_med, med),
                cal.iterations,
                if cal.converged { "" } else { " (not conv.)" },
                se_name(cal.se_method),
                if *se == SeMethod::None {
                    "–".into()
                } else {
                    format!("{:.1e}", se_rel_diff(cal, &oakes))
                },
            );
        }
        match (&np, &np_err) {
            (Some(r), _) => {
                let _ = writeln!(
                    out,
                    "| numpy EM (no SEs), estimation | {} | – | 1 | {} | – | – |",
                    secs_cell(&np_secs),
                    r.num("iterations")
                );
                let _ = writeln!(
                    out,
                    "| numpy EM (no SEs), whole process | {} | – | – | – | – | – |",
                    secs_cell(&np_wall)
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "| numpy EM | FAILED: {e} | | | | | |");
            }
            _ => {}
        }
        if let Some(r) = &np {
            let b = &oakes;
            let a_np = r.vec("a").unwrap_or_default();
            let a_ex: Vec<f64> = b.items.iter().map(|p| p.a).collect();
            let b_np = r.vec("b").unwrap_or_default();
            let b_ex: Vec<f64> = b.items.iter().map(|p| p.b).collect();
            let _ = writeln!(
                out,
                "\nEstimates, examflow vs numpy EM: max |Δa| = {:.1e}, max |Δb| = {:.1e}.",
                max_abs_diff(&a_ex, &a_np),
                max_abs_diff(&b_ex, &b_np)
            );
        }

        // Whole processes: the release CLI against the numpy EM process.
        match &ex_bin {
            Some(bin) if args.python_on => {
                let _ = writeln!(
                    out,
                    "\nWhole processes (wall time of the process, {reps} runs each; the CSV is \
                     read and parsed inside each): `{} calibrate FILE --model 2pl --se S \
                     --format json` (stdout discarded) vs `{} numpy_em.py FILE` (above).\n",
                    bin.file_name()
                        .map_or("examflow".into(), |s| s.to_string_lossy().to_string()),
                    args.python
                );
                let _ = writeln!(
                    out,
                    "| process | wall seconds, median (min – max) | numpy process ÷ this |"
                );
                let _ = writeln!(out, "|---|---:|---:|");
                let np_wall_med = stats(&np_wall).1;
                for se in ["none", "oakes", "auto"] {
                    let mut walls = Vec::new();
                    for _ in 0..reps {
                        let t = Instant::now();
                        let st = Command::new(bin)
                            .arg("calibrate")
                            .arg(&csv)
                            .args(["--model", "2pl", "--se", se, "--format", "json"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()?;
                        walls.push(t.elapsed().as_secs_f64());
                        if !st.success() {
                            bail!("examflow calibrate --se {se} failed: {st}");
                        }
                    }
                    let _ = writeln!(
                        out,
                        "| examflow calibrate --se {se} | {} | {} |",
                        secs_cell(&walls),
                        ratio(np_wall_med, stats(&walls).1)
                    );
                }
                let _ = writeln!(
                    out,
                    "| python3 numpy_em.py (no SEs) | {} | 1 |",
                    secs_cell(&np_wall)
                );
            }
            Some(_) => {}
            None => {
                let _ = writeln!(
                    out,
                    "\n(Whole-process timings skipped: no release `examflow` binary beside the \
                     harness; build it with `cargo build --release -p examflow`.)"
                );
            }
        }

        // SE cost against the number of EM iterations.
        if set == 0 {
            let _ = writeln!(
                out,
                "\nSE cost against the number of EM iterations (this data set; EM stopped after \
                 exactly 1 or 16 iterations: tolerance 1e−300, log-likelihood rule off, SQUAREM \
                 on), {reps} runs each:\n"
            );
            let _ = writeln!(
                out,
                "| EM iterations | se = none | se = oakes | SE cost (oakes − none) |"
            );
            let _ = writeln!(out, "|---:|---:|---:|---:|");
            for iters in [1usize, 16] {
                let mut meds = Vec::new();
                let mut cells = Vec::new();
                for se in [SeMethod::None, SeMethod::Oakes] {
                    let mut o = opts(se);
                    o.max_iterations = iters;
                    o.tolerance = 1e-300;
                    o.ll_relative_tolerance = 0.0;
                    let (secs, cal) = timed(reps, || Ok(calibrate(&data, &o)?))?;
                    if cal.iterations != iters {
                        bail!("expected {iters} iterations, got {}", cal.iterations);
                    }
                    meds.push(stats(&secs).1);
                    cells.push(secs_cell(&secs));
                }
                let _ = writeln!(
                    out,
                    "| {iters} | {} | {} | {} |",
                    cells[0],
                    cells[1],
                    f(meds[1] - meds[0], 3)
                );
            }
        }
        let _ = writeln!(out, "\n(load average: {})", loadavg());
        println!("{out}");
        out.clear();
    }
    Ok(())
}

// ---------------------------------------------------------------- 2. S-X2

fn section_sx2(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let (n, j) = if args.quick {
        (5_000, 30)
    } else {
        (100_000, 100)
    };
    let reps = args.reps;
    let (data, _truth, _) = simulate_2pl(n, j, 31, 0.0);
    let cal = calibrate(&data, &opts(SeMethod::None))?;
    let params = cal.items.clone();
    let quad = Quadrature::normal(NODES, RANGE)?;
    let _ = writeln!(
        out,
        "\n### 2. S-X2 item fit, {n} persons × {j} items, complete data\n\n\
         Data: `simulate_2pl({n}, {j}, 31, 0)`; parameters: examflow's 2PL calibration of it \
         (not timed). examflow `s_x2` ({NODES} points on [−{RANGE}, {RANGE}], mincell 1, \
         mirt's collapsing) and the whole `fit_report` (S-X2 + item infit/outfit at EAP θ + \
         person lz* at ML θ; default `FitOptions`), in-process, {reps} runs each. numpy: \
         `benches/python/numpy_sx2.py` (same grid, Lord–Wingersky recursion without item i \
         recomputed per item, vectorised over nodes; observed table by one GEMM; the same \
         collapsing rules, ported), data as raw bytes, its `perf_counter` time (no loading), \
         {reps} runs.\n"
    );
    let (sx_secs, (sx, _)) = timed(reps, || Ok(s_x2(&params, Model::TwoPl, &data, &quad, 1.0)?))?;
    let fit_opts = FitOptions::default();
    let (fr_secs, _) = timed(reps, || Ok(fit_report(&cal, &data, &fit_opts)?))?;
    let mut np_secs = Vec::new();
    let mut agree = String::new();
    let mut np_err = None;
    if args.python_on {
        let bin = tmp.join("sx2.u8");
        std::fs::write(&bin, &data.data)?;
        let pj = tmp.join("sx2_params.json");
        std::fs::write(&pj, params_json(&params).to_string())?;
        let a = vec![
            bin.display().to_string(),
            "--items".into(),
            j.to_string(),
            "--params".into(),
            pj.display().to_string(),
            "--quad-n".into(),
            NODES.to_string(),
            "--range".into(),
            RANGE.to_string(),
        ];
        let (r, secs, _walls, e) = run_py_reps(args, tmp, "numpy_sx2.py", &a, "seconds", reps);
        np_secs = secs;
        np_err = e;
        if let Some(r) = r {
            let np_x2 = r.vec("s_x2").unwrap_or_default();
            let np_df = r.vec("df").unwrap_or_default();
            let ex_x2: Vec<f64> = sx.iter().map(|s| s.map_or(f64::NAN, |s| s.s_x2)).collect();
            let ex_df: Vec<f64> = sx.iter().map(|s| s.map_or(0.0, |s| s.df as f64)).collect();
            let rel = ex_x2
                .iter()
                .zip(&np_x2)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-300))
                .fold(0.0, f64::max);
            let df_same = ex_df.iter().zip(&np_df).filter(|(a, b)| a == b).count();
            let collapsed = sx
                .iter()
                .filter(|s| s.is_some_and(|s| s.n_groups < j - 1))
                .count();
            let _ = write!(
                agree,
                "\nAgreement: max relative |ΔS-X2| = {rel:.1e} over {} items; df equal for \
                 {df_same} of {j}; {collapsed} items had score groups collapsed (same rules in \
                 both).",
                np_x2.len()
            );
        }
        let _ = std::fs::remove_file(&bin);
    }
    let np_med = stats(&np_secs).1;
    let _ = writeln!(out, "| run | seconds, median (min – max) | numpy ÷ this |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| examflow `s_x2` | {} | {} |",
        secs_cell(&sx_secs),
        ratio(np_med, stats(&sx_secs).1)
    );
    let _ = writeln!(
        out,
        "| examflow `fit_report` (S-X2 + infit/outfit + person fit) | {} | {} |",
        secs_cell(&fr_secs),
        ratio(np_med, stats(&fr_secs).1)
    );
    match np_err {
        Some(e) => {
            let _ = writeln!(out, "| numpy S-X2 | FAILED: {e} | |");
        }
        None if args.python_on => {
            let _ = writeln!(out, "| numpy S-X2 | {} | 1 |", secs_cell(&np_secs));
        }
        None => {}
    }
    let _ = writeln!(out, "{agree}\n\n(load average: {})", loadavg());
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- 3. DIF

fn section_dif(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let (n, j) = if args.quick {
        (5_000, 30)
    } else {
        (100_000, 100)
    };
    let reps = args.reps;
    let half = n / 2;
    let (_, truth, _) = simulate_2pl(10, j, 41, 0.0);
    // focal group: items 0..5 are 0.5 logit harder (uniform DIF), item 5 has a flatter slope
    let focal_items: Vec<ItemParams> = truth
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = p.clone();
            if i < 5 {
                q.b += 0.5;
            } else if i == 5 {
                q.a *= 0.6;
            }
            q
        })
        .collect();
    let (reference, _) = simulate_responses(&truth, half, 42, 0.0);
    let (focal, _) = simulate_responses(&focal_items, n - half, 43, 0.0);
    let mut raw = reference.data.clone();
    raw.extend_from_slice(&focal.data);
    let data = ResponseMatrix::new(
        reference.item_ids.clone(),
        (0..n).map(|p| format!("p{p}")).collect(),
        raw,
    )?;
    let groups: Vec<Group> = (0..n)
        .map(|p| {
            if p < half {
                Group::Reference
            } else {
                Group::Focal
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "\n### 3. DIF, {j} items × {n} persons (half reference, half focal), complete data\n\n\
         Data: 2PL items of `simulate_2pl(·, {j}, 41)`; reference and focal θ ~ N(0, 1) \
         (`simulate_responses`, seeds 42 and 43); in the focal group items 1–5 are 0.5 logit \
         harder and item 6 has 0.6 × the slope. Matching on the total score (studied item \
         included). examflow `mantel_haenszel` and `logistic_regression` in-process, {reps} \
         runs each. numpy: `benches/python/numpy_dif.py` — MH from per-item `np.bincount` \
         score × group × right tables; logistic regression by Newton–Raphson (IRLS) on the \
         person-level design matrix, 3 models per item (the straightforward way; examflow fits \
         the same likelihood on the ≤ 2·(J+1) score × group cells, which is exact, not an \
         approximation). numpy times are its `perf_counter` time (no loading), {reps} runs.\n"
    );
    let (mh_secs, mh) = timed(reps, || Ok(mantel_haenszel(&data, &groups)?))?;
    let (lr_secs, lr) = timed(reps, || Ok(logistic_regression(&data, &groups)?))?;
    let (mut np_mh, mut np_lr) = (Vec::new(), Vec::new());
    let mut agree = String::new();
    let mut errs = Vec::new();
    if args.python_on {
        let bin = tmp.join("dif.u8");
        std::fs::write(&bin, &data.data)?;
        let gb = tmp.join("dif_groups.u8");
        let gbytes: Vec<u8> = groups
            .iter()
            .map(|g| match g {
                Group::Reference => 0,
                Group::Focal => 1,
                Group::Other => 2,
            })
            .collect();
        std::fs::write(&gb, gbytes)?;
        let base = vec![
            bin.display().to_string(),
            "--items".into(),
            j.to_string(),
            "--groups".into(),
            gb.display().to_string(),
        ];
        let mut a = base.clone();
        a.extend(["--only".into(), "mh".into()]);
        let (r, secs, _, e) = run_py_reps(args, tmp, "numpy_dif.py", &a, "seconds_mh", reps);
        np_mh = secs;
        errs.extend(e.map(|e| format!("numpy MH: {e}")));
        if let Some(r) = r {
            let d_ex: Vec<f64> = mh.iter().map(|d| d.d_dif).collect();
            let c_ex: Vec<f64> = mh.iter().map(|d| d.chi_square).collect();
            let se_ex: Vec<f64> = mh.iter().map(|d| d.se).collect();
            let _ = write!(
                agree,
                "\nAgreement, examflow vs numpy: MH D-DIF max |Δ| = {:.1e}, its SE {:.1e}, MH χ² \
                 {:.1e}",
                max_abs_diff(&d_ex, &r.vec("mh_d_dif").unwrap_or_default()),
                max_abs_diff(&se_ex, &r.vec("mh_se").unwrap_or_default()),
                max_abs_diff(&c_ex, &r.vec("mh_chi_square").unwrap_or_default()),
            );
        }
        let mut a = base;
        a.extend(["--only".into(), "lr".into()]);
        let (r, secs, _, e) = run_py_reps(args, tmp, "numpy_dif.py", &a, "seconds_lr", reps);
        np_lr = secs;
        errs.extend(e.map(|e| format!("numpy LR: {e}")));
        if let Some(r) = r {
            let u: Vec<f64> = lr.iter().map(|d| d.uniform.chi_square).collect();
            let nu: Vec<f64> = lr.iter().map(|d| d.non_uniform.chi_square).collect();
            let b: Vec<f64> = lr.iter().map(|d| d.both.chi_square).collect();
            let _ = write!(
                agree,
                "; LR χ² max |Δ| uniform {:.1e}, non-uniform {:.1e}, both {:.1e} (largest \
                 examflow LR χ², both: {:.1})",
                max_abs_diff(&u, &r.vec("lr_uniform").unwrap_or_default()),
                max_abs_diff(&nu, &r.vec("lr_non_uniform").unwrap_or_default()),
                max_abs_diff(&b, &r.vec("lr_both").unwrap_or_default()),
                b.iter().copied().fold(0.0, f64::max),
            );
        }
        agree.push('.');
        let _ = std::fs::remove_file(&bin);
    }
    let flagged: Vec<String> = mh
        .iter()
        .filter(|d| d.category != examflow_engine::dif::EtsCategory::A)
        .map(|d| format!("{} ({:?}, D = {:.2})", d.item, d.category, d.d_dif))
        .collect();
    let _ = writeln!(
        out,
        "| procedure | examflow seconds, median (min – max) | numpy seconds, median (min – max) | numpy ÷ examflow |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| Mantel–Haenszel | {} | {} | {} |",
        secs_cell(&mh_secs),
        secs_cell(&np_mh),
        ratio(stats(&np_mh).1, stats(&mh_secs).1)
    );
    let _ = writeln!(
        out,
        "| logistic regression (3 models per item) | {} | {} | {} |",
        secs_cell(&lr_secs),
        secs_cell(&np_lr),
        ratio(stats(&np_lr).1, stats(&lr_secs).1)
    );
    for e in errs {
        let _ = writeln!(out, "\nFAILED: {e}");
    }
    let _ = writeln!(
        out,
        "{agree}\nMH flags (ETS B/C): {}.\n\n(load average: {})",
        if flagged.is_empty() {
            "none".into()
        } else {
            flagged.join(", ")
        },
        loadavg()
    );
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- 4. linking

fn section_linking(args: &Args, tmp: &Path, out: &mut String) -> Result<()> {
    let reps = args.reps.max(5);
    let (cal_n, cal_j, big_j) = if args.quick {
        (2_000, 30, 100)
    } else {
        (10_000, 100, 1_000)
    };
    let (scale_a, scale_b) = (1.2, 0.5);
    // Two calibrations of the same items: old group θ ~ N(0, 1); the new group is
    // N(0.5, 1.2²) on the old scale, i.e. standard on the new scale with a' = 1.2a,
    // b' = (b − 0.5)/1.2. Expected constants A ≈ 1.2, B ≈ 0.5.
    let to_new = |p: &ItemParams| {
        let mut q = p.clone();
        q.a = p.a * scale_a;
        q.b = (p.b - scale_b) / scale_a;
        q
    };
    let (old_data, truth, _) = simulate_2pl(cal_n, cal_j, 51, 0.0);
    let new_truth: Vec<ItemParams> = truth.iter().map(to_new).collect();
    let (new_data, _) = simulate_responses(&new_truth, cal_n, 52, 0.0);
    let old_cal = calibrate(&old_data, &opts(SeMethod::None))?.items;
    let new_cal = calibrate(&new_data, &opts(SeMethod::None))?.items;
    // 1000 items: true parameters plus N(0, 0.05²) estimation noise on a and b.
    let (_, big_truth, _) = simulate_2pl(10, big_j, 53, 0.0);
    let mut rng = SplitMix64::new(54);
    let noisy = |p: &ItemParams, rng: &mut SplitMix64| {
        let mut q = p.clone();
        q.a += 0.05 * rng.normal();
        q.b += 0.05 * rng.normal();
        q
    };
    let big_old: Vec<ItemParams> = big_truth.iter().map(|p| noisy(p, &mut rng)).collect();
    let big_new: Vec<ItemParams> = big_truth
        .iter()
        .map(|p| noisy(&to_new(p), &mut rng))
        .collect();
    let _ = writeln!(
        out,
        "\n### 4. Linking: Stocking–Lord and Haebara\n\n\
         Case 1: two 2PL calibrations (examflow, not timed) of the same {cal_j} items, \
         {cal_n} persons each; old group θ ~ N(0, 1), new group N({scale_b}, {scale_a}²) on the \
         old scale (`simulate_2pl` seed 51, `simulate_responses` seed 52), so A ≈ {scale_a}, \
         B ≈ {scale_b}. Case 2: {big_j} common items, true parameters (seed 53) plus N(0, \
         0.05²) noise on a and b in each calibration. examflow `link` with the default 40 \
         points on [−4, 4] and drift screening off (`drift_threshold = ∞`, every item an \
         anchor; drift areas are still computed and reported; a second column with the \
         default screening, which links again without any anchor drifting by more than \
         0.05), {reps} runs. numpy: `benches/python/numpy_linking.py`, the same criterion \
         vectorised over anchors × points, `scipy.optimize.minimize(method=\"Nelder-Mead\")` \
         from the mean/sigma constants with examflow's first initial simplex (xatol 1e−11, \
         fatol 1e−15), {reps} runs inside one process (interpreter start not counted). \
         examflow minimises the same criterion by Levenberg–Marquardt with the analytic \
         Jacobian; so does the second peer, `scipy.optimize.least_squares(method=\"lm\")` \
         (MINPACK) on the vectorised residuals with their analytic Jacobian, so that ratio \
         compares implementations of one algorithm.\n"
    );
    let _ = writeln!(
        out,
        "| common items | method | examflow seconds, median (min – max) | examflow with drift screening (default 0.05) | numpy/scipy Nelder–Mead seconds, median (min – max) | Nelder–Mead ÷ examflow | scipy Levenberg–Marquardt seconds | LM ÷ examflow | A (examflow) | B (examflow) | max(|ΔA|, |ΔB|) vs scipy (NM, LM) |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut errs = Vec::new();
    for (old, new) in [(&old_cal, &new_cal), (&big_old, &big_new)] {
        let points = LinkingOptions::default().points;
        let mut np = None;
        if args.python_on {
            let pj = tmp.join("link_params.json");
            let v = json!({
                "old_a": old.iter().map(|p| p.a).collect::<Vec<_>>(),
                "old_b": old.iter().map(|p| p.b).collect::<Vec<_>>(),
                "new_a": new.iter().map(|p| p.a).collect::<Vec<_>>(),
                "new_b": new.iter().map(|p| p.b).collect::<Vec<_>>(),
                "theta": points.iter().map(|p| p.0).collect::<Vec<_>>(),
                "weight": points.iter().map(|p| p.1).collect::<Vec<_>>(),
            });
            std::fs::write(&pj, v.to_string())?;
            let a = vec![pj.display().to_string(), "--reps".into(), reps.to_string()];
            let (r, _) = run_py(args, tmp, "numpy_linking.py", &a, Duration::from_secs(1800));
            if let Some(e) = r.error() {
                errs.push(format!("numpy linking, {} items: {e}", old.len()));
            }
            np = r.json().cloned();
        }
        for method in [LinkingMethod::StockingLord, LinkingMethod::Haebara] {
            let lo = LinkingOptions {
                method,
                points: points.clone(),
                drift_threshold: f64::INFINITY,
            };
            let (secs, l) = timed(reps, || Ok(link(old, new, &lo)?))?;
            let screened = LinkingOptions {
                drift_threshold: LinkingOptions::default().drift_threshold,
                ..lo.clone()
            };
            let (secs_screened, ls) = timed(reps, || Ok(link(old, new, &screened)?))?;
            // A peer's run times and its largest constant's distance from examflow's.
            let peer = |m: &Value| -> (Vec<f64>, f64) {
                let s: Vec<f64> = m["seconds"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                let da = (m["A"].as_f64().unwrap_or(f64::NAN) - l.a).abs();
                let db = (m["B"].as_f64().unwrap_or(f64::NAN) - l.b).abs();
                (s, da.max(db))
            };
            let ((np_secs, diff), (lm_secs, lm_diff)) = match &np {
                Some(v) => (peer(&v[method.as_str()]), peer(&v[method.as_str()]["lm"])),
                None => ((Vec::new(), f64::NAN), (Vec::new(), f64::NAN)),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} ({} anchors kept) | {} | {} | {} | {} | {:.5} | {:.5} | {:.1e}, {:.1e} |",
                old.len(),
                method.as_str(),
                secs_cell(&secs),
                secs_cell(&secs_screened),
                ls.anchors.len(),
                secs_cell(&np_secs),
                ratio(stats(&np_secs).1, stats(&secs).1),
                secs_cell(&lm_secs),
                ratio(stats(&lm_secs).1, stats(&secs).1),
                l.a,
                l.b,
                diff,
                lm_diff
            );
        }
    }
    for e in errs {
        let _ = writeln!(out, "\nFAILED: {e}");
    }
    let _ = writeln!(out, "\n(load average: {})", loadavg());
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- 5. fit against no fit

fn section_fit(args: &Args, out: &mut String) -> Result<()> {
    let sets: &[(usize, usize)] = if args.quick {
        &[(2_000, 20)]
    } else {
        &[(20_000, 50), (100_000, 100)]
    };
    let reps = args.reps;
    let _ = writeln!(
        out,
        "\n### 5. Calibration with fit against without\n\n\
         2PL, complete data (`simulate_2pl(N, J, 61, 0)`), in-process, {reps} runs each: \
         `calibrate` (SEs `auto`, the CLI default) against `calibrate` + `fit_report` (default \
         `FitOptions`), which is what `examflow calibrate --fit` does.\n"
    );
    let _ = writeln!(
        out,
        "| N × J | calibrate, s (median, min – max) | calibrate + fit_report, s | fit_report alone (difference of medians), s | with ÷ without |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for &(n, j) in sets {
        let (data, _, _) = simulate_2pl(n, j, 61, 0.0);
        let o = opts(SeMethod::Auto);
        let fo = FitOptions::default();
        let (without, _) = timed(reps, || Ok(calibrate(&data, &o)?))?;
        let (with, _) = timed(reps, || {
            let cal = calibrate(&data, &o)?;
            Ok(fit_report(&cal, &data, &fo)?)
        })?;
        let (m0, m1) = (stats(&without).1, stats(&with).1);
        let _ = writeln!(
            out,
            "| {n} × {j} | {} | {} | {} | {} |",
            secs_cell(&without),
            secs_cell(&with),
            f(m1 - m0, 3),
            ratio(m1, m0)
        );
    }
    let _ = writeln!(out, "\n(load average: {})", loadavg());
    println!("{out}");
    out.clear();
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## psych-bench{}\n\n- CPU: {}\n- load average at start: {}\n- {}\n- examflow commit: {}\n- rayon threads: {}\n- release examflow binary for whole-process runs: {}",
        if args.quick { " (--quick)" } else { "" },
        cpu_line(),
        loadavg(),
        python_versions(&args),
        git_head(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default (all CPUs)".into()),
        examflow_binary().map_or_else(|_| "not found".into(), |p| p.display().to_string()),
    );
    println!("{out}");
    out.clear();
    if args.runs("calibrate") {
        section_calibrate(&args, tmp.path(), &mut out)?;
    }
    if args.runs("sx2") {
        section_sx2(&args, tmp.path(), &mut out)?;
    }
    if args.runs("dif") {
        section_dif(&args, tmp.path(), &mut out)?;
    }
    if args.runs("linking") {
        section_linking(&args, tmp.path(), &mut out)?;
    }
    if args.runs("fit") {
        section_fit(&args, &mut out)?;
    }
    println!(
        "\nload average at end: {}; total wall time {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

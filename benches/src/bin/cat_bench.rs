//! Adaptive testing benchmark (issue 6): the time of one CAT step — record an answer,
//! update θ, select the next item — on a seeded 500-item 3PL bank, per selection rule,
//! against catsim (`benches/python/catsim_step.py`) on the same bank and the same fixed
//! response patterns, in the same run. Prints markdown tables.
//!
//! ```text
//! cargo build --release -p examflow-benches --bin cat-bench
//! target/release/cat-bench [--quick] [--examinees N] [--reps R] [--catsim-examinees M]
//!                          [--interval-examinees K] [--no-python] [--python python3]
//! ```
//!
//! examflow: `CatSession::answer` timed with `Instant` around each call that returns the
//! next item (39 per 40-item test), after a warm-up; `--reps` rounds over all rules, the
//! round with the lowest mean kept per rule. catsim: `NumericalSearchEstimator`
//! + the rule's selector, timed with `time.perf_counter()` in its own process.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use examflow_benches::python::{self, Py};
use examflow_benches::{cpu_line, loadavg};
use examflow_engine::cat::{
    CatBank, CatConfig, CatRng, CatSession, Estimator, Prior, SelectionRule, Step, StopRule,
    estimate_ability,
};
use examflow_engine::irt::ItemParams;
use serde_json::{Value, json};

/// Bank size and test length of every run.
const ITEMS: usize = 500;
const LENGTH: usize = 40;
/// Seeds of the bank and of the simulees' abilities and response draws.
const BANK_SEED: u64 = 6;
const PERSON_SEED: u64 = 7;

struct Args {
    quick: bool,
    examinees: usize,
    warmup: usize,
    reps: usize,
    catsim_examinees: usize,
    interval_examinees: usize,
    python_on: bool,
    python: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        examinees: 1000,
        warmup: 50,
        reps: 3,
        catsim_examinees: 60,
        interval_examinees: 3,
        python_on: true,
        python: "python3".into(),
    };
    let mut it = std::env::args().skip(1);
    let num = |it: &mut std::iter::Skip<std::env::Args>, name: &str| -> Result<usize> {
        Ok(it.next().with_context(|| format!("{name} N"))?.parse()?)
    };
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => {
                a.quick = true;
                a.examinees = 100;
                a.warmup = 10;
                a.reps = 1;
                a.catsim_examinees = 5;
                a.interval_examinees = 1;
            }
            "--examinees" => a.examinees = num(&mut it, "--examinees")?.max(1),
            "--reps" => a.reps = num(&mut it, "--reps")?.max(1),
            "--catsim-examinees" => a.catsim_examinees = num(&mut it, "--catsim-examinees")?,
            "--interval-examinees" => a.interval_examinees = num(&mut it, "--interval-examinees")?,
            "--no-python" => a.python_on = false,
            "--python" => a.python = it.next().context("--python needs a value")?,
            "-h" | "--help" => {
                println!(
                    "cat-bench [--quick] [--examinees N] [--reps R] [--catsim-examinees M] \
                     [--interval-examinees K] [--no-python] [--python PY]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    a.catsim_examinees = a.catsim_examinees.min(a.examinees);
    a.interval_examinees = a.interval_examinees.min(a.examinees);
    Ok(a)
}

// ---------------------------------------------------------------- data

/// The seeded 3PL bank: a ~ U(0.8, 2.0), b ~ N(0, 1), c ~ U(0, 0.25) (D = 1 logistic).
fn bank_params() -> Vec<ItemParams> {
    let mut r = CatRng::new(BANK_SEED);
    (0..ITEMS)
        .map(|i| {
            let a = 0.8 + 1.2 * r.uniform();
            let b = r.normal();
            let c = 0.25 * r.uniform();
            ItemParams::new(format!("q{i:03}"), a, b, c)
        })
        .collect()
}

/// Fixed response patterns: person j (θ ~ N(0, 1)) answers item i correctly iff
/// uᵢⱼ < P(θⱼ) for pre-drawn uniforms, whichever items a rule happens to administer.
/// Row-major persons × items, 1 = right, 0 = wrong.
fn responses(params: &[ItemParams], persons: usize) -> (Vec<f64>, Vec<u8>) {
    let mut r = CatRng::new(PERSON_SEED);
    let thetas: Vec<f64> = (0..persons).map(|_| r.normal()).collect();
    let mut x = Vec::with_capacity(persons * params.len());
    for &t in &thetas {
        for p in params {
            let prob = p.c + (1.0 - p.c) / (1.0 + (-p.a * (t - p.b)).exp());
            x.push(u8::from(r.uniform() < prob));
        }
    }
    (thetas, x)
}

// ---------------------------------------------------------------- statistics

struct Timing {
    steps: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Mean and nearest-rank percentiles of per-step times in µs.
fn timing(mut us: Vec<f64>) -> Option<Timing> {
    if us.is_empty() {
        return None;
    }
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let rank = |p: f64| us[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Timing {
        steps: n,
        mean_us: us.iter().sum::<f64>() / n as f64,
        p50_us: rank(0.50),
        p99_us: rank(0.99),
        max_us: us[n - 1],
    })
}

// ---------------------------------------------------------------- examflow

struct ExRun {
    timing: Timing,
    /// Administered item indices per examinee (for the estimation-only comparison).
    sequences: Vec<Vec<usize>>,
}

/// Runs `examinees` 40-item CATs (after `warmup` untimed ones) and times every
/// `answer` that returns the next item.
fn run_examflow(
    bank: &CatBank,
    cfg: &CatConfig,
    resp: &[u8],
    examinees: usize,
    warmup: usize,
) -> Result<ExRun> {
    let mut us = Vec::with_capacity(examinees * (LENGTH - 1));
    let mut sequences = Vec::with_capacity(examinees);
    let runs = (0..warmup.min(examinees))
        .map(|j| (false, j))
        .chain((0..examinees).map(|j| (true, j)));
    for (timed, j) in runs {
        let (mut s, mut item) = CatSession::start(bank, cfg, j as u64 + 1)?;
        let mut seq = Vec::with_capacity(LENGTH);
        loop {
            let i = bank.index_of(&item).context("item not in bank")?;
            seq.push(i);
            let correct = resp[j * ITEMS + i] == 1;
            let t = Instant::now();
            let step = s.answer(bank, &item, correct)?;
            let dt = t.elapsed();
            match step {
                Step::Next { item: next } => {
                    if timed {
                        us.push(dt.as_secs_f64() * 1e6);
                    }
                    item = next;
                }
                Step::Finished { .. } => break,
            }
        }
        if timed {
            sequences.push(seq);
        }
    }
    Ok(ExRun {
        timing: timing(us).context("no steps")?,
        sequences,
    })
}

/// `estimate_ability` from scratch on every prefix of the given tests (µs per call).
fn time_estimates(
    params: &[ItemParams],
    resp: &[u8],
    seqs: &[Vec<usize>],
    estimator: Estimator,
) -> Option<Timing> {
    let mut us = Vec::new();
    for (j, seq) in seqs.iter().enumerate() {
        let answers: Vec<(&ItemParams, bool)> = seq
            .iter()
            .map(|&i| (&params[i], resp[j * ITEMS + i] == 1))
            .collect();
        for k in 1..=answers.len() {
            let t = Instant::now();
            let e = estimate_ability(&answers[..k], estimator, Prior::default());
            let dt = t.elapsed();
            std::hint::black_box(e);
            us.push(dt.as_secs_f64() * 1e6);
        }
    }
    timing(us)
}

// ---------------------------------------------------------------- python

/// Runs a Python peer ([`python::run`]): its JSON or why not.
fn run_py(
    args: &Args,
    tmp: &Path,
    script: &str,
    extra: &[String],
    timeout: Duration,
) -> Result<Value, String> {
    match python::run(&args.python, tmp, script, extra, timeout).0 {
        Py::Ok(v) => Ok(v),
        Py::Failed(e) => Err(e),
    }
}

fn py_timing(v: &Value) -> Option<(Timing, u64)> {
    let us: Vec<f64> = v["step_us"]
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    Some((timing(us)?, v["examinees"].as_u64().unwrap_or(0)))
}

// ---------------------------------------------------------------- environment

// ---------------------------------------------------------------- main

fn f2(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn ratio(ex: f64, peer: Option<&Timing>) -> String {
    match peer {
        Some(p) => format!("{:.4}", ex / p.mean_us),
        None => "–".into(),
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let params = bank_params();
    let bank = CatBank::from_params(params.clone())?;
    let persons = args.examinees;
    let (_thetas, resp) = responses(&params, persons);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## cat-bench{}\n\n- CPU: {}\n- load average at start: {}\n- build: {} profile",
        if args.quick { " (--quick)" } else { "" },
        cpu_line(),
        loadavg(),
        if cfg!(debug_assertions) {
            "debug (numbers meaningless)"
        } else {
            "release"
        },
    );

    // examflow, every rule, EAP (the default estimator); MFI also with MLE.
    let rules: [(&str, SelectionRule, Estimator, Option<&str>); 8] = [
        ("mfi", SelectionRule::Mfi, Estimator::Eap, Some("max_info")),
        ("mfi", SelectionRule::Mfi, Estimator::Mle, Some("max_info")),
        (
            "kl",
            SelectionRule::Kl,
            Estimator::Eap,
            Some("interval_info"),
        ),
        (
            "klp",
            SelectionRule::Klp,
            Estimator::Eap,
            Some("interval_info"),
        ),
        (
            "mpwi",
            SelectionRule::Mpwi,
            Estimator::Eap,
            Some("interval_info"),
        ),
        (
            "b_matching",
            SelectionRule::BMatching,
            Estimator::Eap,
            Some("urry"),
        ),
        (
            "b_matching",
            SelectionRule::BMatching,
            Estimator::Mle,
            Some("urry"),
        ),
        (
            "random",
            SelectionRule::Random,
            Estimator::Eap,
            Some("random"),
        ),
    ];
    // `reps` rounds over all rules (interleaved, so a burst of load from other processes
    // hits every rule alike); per rule the round with the lowest mean is kept.
    let mut ex_runs: Vec<Option<ExRun>> = rules.iter().map(|_| None).collect();
    for rep in 0..args.reps {
        for (&(name, rule, estimator, _), best) in rules.iter().zip(ex_runs.iter_mut()) {
            let cfg = CatConfig {
                rule,
                estimator,
                stop: StopRule::fixed(LENGTH),
                ..Default::default()
            };
            let run = run_examflow(&bank, &cfg, &resp, args.examinees, args.warmup)?;
            eprintln!(
                "round {}: examflow {name}/{estimator:?}: mean {:.2} µs, p99 {:.2} µs",
                rep + 1,
                run.timing.mean_us,
                run.timing.p99_us
            );
            if best
                .as_ref()
                .is_none_or(|b| run.timing.mean_us < b.timing.mean_us)
            {
                *best = Some(run);
            }
        }
    }
    let ex_runs: Vec<ExRun> = ex_runs.into_iter().map(|r| r.expect("reps ≥ 1")).collect();
    let est_seqs: Vec<Vec<usize>> = ex_runs[0].sequences[..args.catsim_examinees.max(1)].to_vec();
    let ex_eap = time_estimates(&params, &resp, &est_seqs, Estimator::Eap);
    let ex_mle = time_estimates(&params, &resp, &est_seqs, Estimator::Mle);

    // catsim on the same bank and response patterns.
    let py = if args.python_on && args.catsim_examinees > 0 {
        let bank_path = tmp.path().join("bank.json");
        std::fs::write(
            &bank_path,
            json!({
                "a": params.iter().map(|p| p.a).collect::<Vec<_>>(),
                "b": params.iter().map(|p| p.b).collect::<Vec<_>>(),
                "c": params.iter().map(|p| p.c).collect::<Vec<_>>(),
            })
            .to_string(),
        )?;
        let resp_path = tmp.path().join("responses.u8");
        std::fs::write(&resp_path, &resp)?;
        let pre_path = tmp.path().join("prefixes.json");
        std::fs::write(&pre_path, json!({ "items": est_seqs }).to_string())?;
        let extra: Vec<String> = [
            "--bank",
            &bank_path.display().to_string(),
            "--responses",
            &resp_path.display().to_string(),
            "--items",
            &ITEMS.to_string(),
            "--length",
            &LENGTH.to_string(),
            "--examinees",
            &args.catsim_examinees.to_string(),
            "--interval-examinees",
            &args.interval_examinees.to_string(),
            "--prefixes",
            &pre_path.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        eprintln!(
            "running catsim ({} examinees per rule) …",
            args.catsim_examinees
        );
        Some(run_py(
            &args,
            tmp.path(),
            "catsim_step.py",
            &extra,
            Duration::from_secs(3600),
        ))
    } else {
        None
    };
    let (py_ok, py_note) = match &py {
        Some(Ok(v)) => (
            Some(v),
            format!(
                "catsim {}, numpy {}, scipy {}, numexpr {}",
                v["catsim_version"].as_str().unwrap_or("?"),
                v["numpy_version"].as_str().unwrap_or("?"),
                v["scipy_version"].as_str().unwrap_or("?"),
                v["numexpr_version"].as_str().unwrap_or("?"),
            ),
        ),
        Some(Err(e)) => (None, format!("catsim FAILED: {e}")),
        None => (None, "catsim not run (--no-python)".into()),
    };
    let peer = |key: &str| py_ok.and_then(|v| py_timing(&v["rows"][key]));
    let _ = writeln!(out, "- {py_note}");

    let _ = writeln!(
        out,
        "\n### 1. One CAT step on a {ITEMS}-item 3PL bank\n\n\
         Bank: a ~ U(0.8, 2.0), b ~ N(0, 1), c ~ U(0, 0.25), seed {BANK_SEED}, logistic without \
         scaling constant (both tools). Fixed response patterns: simulee j (θ ~ N(0, 1), seed \
         {PERSON_SEED}) answers item i right iff a pre-drawn uniform uⱼᵢ < P(θⱼ); every tool and rule \
         administers its own items from these patterns. Fixed length {LENGTH}; a step = one answer \
         that is followed by another item (update θ + select), {} per test. examflow: \
         `CatSession::answer` in-process, timed with `Instant` per call, {} simulees after {} \
         warm-up tests, one thread, {} rounds over all rules (interleaved), the round with the \
         lowest mean kept per rule; default config otherwise (no exposure control, N(0, 1) prior, \
         61-node grid, KL window θ̂ ± 3·SE). catsim: `NumericalSearchEstimator()` (its only \
         estimator: bounded Brent MLE on [−6, 6], Dodd's heuristic while the answers are all right \
         or all wrong) + the selector, timed with `time.perf_counter()` per step, {} simulees \
         (IntervalInfoSelector: {}) after 2 warm-up tests. `× catsim` = examflow mean / catsim mean.\n",
        LENGTH - 1,
        args.examinees,
        args.warmup.min(args.examinees),
        args.reps,
        args.catsim_examinees,
        args.interval_examinees,
    );
    let _ = writeln!(
        out,
        "| examflow rule | estimator | steps | mean µs | p50 µs | p99 µs | max µs | catsim peer | catsim steps | catsim mean µs | catsim p99 µs | × catsim (mean) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for (&(name, _, estimator, pkey), run) in rules.iter().zip(&ex_runs) {
        let p = pkey.and_then(|k| peer(k).map(|(t, _)| t));
        let peer_label = match pkey {
            Some("max_info") => "MaxInfoSelector (same criterion)",
            Some("urry") => "UrrySelector (same criterion)",
            Some("random") => "RandomSelector (same rule)",
            Some("interval_info") => {
                "IntervalInfoSelector(interval=1) (nearest rule, not the same criterion)"
            }
            _ => "–",
        };
        let t = &run.timing;
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {peer_label} | {} | {} | {} | {} |",
            format!("{estimator:?}").to_lowercase(),
            t.steps,
            f2(t.mean_us),
            f2(t.p50_us),
            f2(t.p99_us),
            f2(t.max_us),
            p.as_ref().map_or("–".into(), |p| p.steps.to_string()),
            p.as_ref().map_or("–".into(), |p| f2(p.mean_us)),
            p.as_ref().map_or("–".into(), |p| f2(p.p99_us)),
            ratio(t.mean_us, p.as_ref()),
        );
    }
    let worst = ex_runs
        .iter()
        .zip(&rules)
        .max_by(|a, b| a.0.timing.mean_us.total_cmp(&b.0.timing.mean_us))
        .map(|(r, (n, _, e, _))| format!("{n}/{e:?} {:.2} µs", r.timing.mean_us))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nTarget ≤ 20 µs per step for every rule: slowest mean {worst} ({}).",
        if ex_runs.iter().all(|r| r.timing.mean_us <= 20.0) {
            "met"
        } else {
            "NOT met"
        }
    );

    let _ = writeln!(
        out,
        "\n### 2. Estimation only, same inputs\n\n\
         Every prefix (k = 1…{LENGTH} answers) of the first {} tests of the mfi/EAP run above, \
         i.e. identical items and responses for both tools. examflow: `estimate_ability` from \
         scratch (O(k · 61); inside a session the grid log-likelihood is updated incrementally \
         instead). catsim: `NumericalSearchEstimator().estimate` (MLE; Dodd's heuristic for \
         all-right / all-wrong prefixes, where examflow's MLE falls back to EAP).\n",
        est_seqs.len()
    );
    let est_peer = py_ok.and_then(|v| py_timing(&v["estimate"]).map(|x| x.0));
    let _ = writeln!(
        out,
        "| estimator | calls | mean µs | p50 µs | p99 µs | × catsim (mean) |\n|---|---:|---:|---:|---:|---:|"
    );
    for (label, t) in [
        ("examflow `estimate_ability` EAP", ex_eap.as_ref()),
        ("examflow `estimate_ability` MLE", ex_mle.as_ref()),
        (
            "catsim `NumericalSearchEstimator` (bounded MLE)",
            est_peer.as_ref(),
        ),
    ] {
        if let Some(t) = t {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} |",
                t.steps,
                f2(t.mean_us),
                f2(t.p50_us),
                f2(t.p99_us),
                ratio(t.mean_us, est_peer.as_ref()),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nload average at end: {}; total wall time {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    println!("{out}");
    Ok(())
}

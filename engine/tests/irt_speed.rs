//! Timing probes (ignored by default; no timing assertions). Run with
//! `cargo test -p examflow-engine --release --test irt_speed -- --ignored --nocapture --test-threads 1`.
//! Each probe repeats its measurement and reports the fastest and the median run (the
//! machine may be shared).

use std::time::Instant;

use examflow_engine::irt::{
    AbilityEstimate, CalibrationOptions, ItemParams, Model, Quadrature, SeMethod, calibrate,
    eap_batch, eap_with, simulate_2pl,
};

const REPEATS: usize = 5;

/// CPU time (user + system) of this process so far, from /proc (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // fields 14 and 15 of the whole line (utime, stime) in clock ticks (assumed 100 Hz)
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// (min, median) of `REPEATS` wall timings of `f`, and the last result; prints the
/// median CPU time too (less sensitive to other jobs on the machine).
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut secs = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for _ in 0..REPEATS {
        let (t, c) = (Instant::now(), cpu_secs());
        last = Some(f());
        secs.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_secs() - c);
    }
    secs.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    print!("[cpu median {:.2} s] ", cpu[REPEATS / 2]);
    (secs[0], secs[REPEATS / 2], last.expect("at least one run"))
}

fn rmse(x: impl Iterator<Item = (f64, f64)>) -> f64 {
    let v: Vec<f64> = x.map(|(a, b)| (a - b).powi(2)).collect();
    (v.iter().sum::<f64>() / v.len() as f64).sqrt()
}

fn time_2pl(missing: f64, points: usize) {
    let (data, truth, _) = simulate_2pl(100_000, 100, 7, missing);
    for se in [SeMethod::None, SeMethod::Auto] {
        let mut opts = CalibrationOptions::new(Model::TwoPl);
        opts.se_method = se;
        opts.quadrature_points = points;
        let (min, med, cal) = timed(|| calibrate(&data, &opts).unwrap());
        let ra = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.a, t.a)));
        let rb = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.b, t.b)));
        println!(
            "2PL 100000x100, missing {missing}, {} nodes, se {:?}: min {min:.3} s, median {med:.3} s, {} iterations, converged {}, patterns {}, ll {:.6}, rmse a {ra:.4} b {rb:.4}, Σa {:.10}, Σb {:.10}",
            cal.quadrature_points,
            cal.se_method,
            cal.iterations,
            cal.converged,
            cal.n_patterns,
            cal.log_likelihood,
            cal.items.iter().map(|x| x.a).sum::<f64>(),
            cal.items.iter().map(|x| x.b).sum::<f64>(),
        );
    }
}

#[test]
#[ignore]
fn time_2pl_100k_by_100() {
    time_2pl(0.0, 61);
}

#[test]
#[ignore]
fn time_2pl_100k_by_100_missing() {
    time_2pl(0.2, 61);
}

#[test]
#[ignore]
fn time_2pl_100k_by_100_41_nodes() {
    time_2pl(0.0, 41);
    time_2pl(0.2, 41);
}

/// Largest |difference| of θ and of SE between two score lists.
fn max_diff(x: &[AbilityEstimate], y: &[AbilityEstimate]) -> (f64, f64) {
    x.iter().zip(y).fold((0.0f64, 0.0f64), |(t, s), (a, b)| {
        (t.max((a.theta - b.theta).abs()), s.max((a.se - b.se).abs()))
    })
}

fn time_eap(missing: f64, c: f64) {
    let (data, truth, _) = simulate_2pl(1_000_000, 100, 11, missing);
    let params: Vec<ItemParams> = truth
        .iter()
        .map(|t| ItemParams::new(t.item.clone(), t.a, t.b, c))
        .collect();
    let quad = Quadrature::default();
    let (min, med, est) = timed(|| eap_batch(&params, &data, &quad).unwrap());
    // against the single-person reference on a sample
    let sample: Vec<usize> = (0..data.n_persons).step_by(997).collect();
    let exact: Vec<AbilityEstimate> = sample
        .iter()
        .map(|&p| eap_with(&params, data.row(p), &quad).unwrap())
        .collect();
    let batch: Vec<AbilityEstimate> = sample.iter().map(|&p| est[p]).collect();
    let (dt, ds) = max_diff(&exact, &batch);
    println!(
        "EAP batch 1e6 x 100 items, missing {missing}, c {c}: min {min:.3} s = {:.2} M scores/s, median {med:.3} s = {:.2} M scores/s; max |Δθ| {dt:.1e}, |ΔSE| {ds:.1e} vs eap_with",
        1.0 / min,
        1.0 / med,
    );
}

#[test]
#[ignore]
fn time_eap_batch() {
    time_eap(0.0, 0.0);
}

#[test]
#[ignore]
fn time_eap_batch_missing_and_3pl() {
    time_eap(0.2, 0.0);
    time_eap(0.0, 0.2);
}

#[test]
#[ignore]
fn time_2pl_iterations() {
    let (data, _, _) = simulate_2pl(100_000, 100, 7, 0.0);
    for it in [1, 2, 5] {
        let mut opts = CalibrationOptions::new(Model::TwoPl);
        opts.se_method = SeMethod::None;
        opts.max_iterations = it;
        opts.accelerate = false;
        let (min, med, cal) = timed(|| calibrate(&data, &opts).unwrap());
        println!(
            "{it} iterations: min {min:.3} s, median {med:.3} s ({})",
            cal.iterations
        );
    }
}

/// Item and person fit of a 100,000 × 100 2PL data set at the true parameters, with the
/// S-X2 part alone and the whole report (S-X2, EAP item infit/outfit, ML person fit).
#[test]
#[ignore]
fn time_fit_report_100k_by_100() {
    use examflow_engine::irt::{FitOptions, fit_report_for, s_x2};
    let (data, truth, _) = simulate_2pl(100_000, 100, 7, 0.0);
    let quad = Quadrature::default();
    let (min, med, _) = timed(|| s_x2(&truth, Model::TwoPl, &data, &quad, 1.0).unwrap());
    println!("S-X2 100000x100: min {min:.3} s, median {med:.3} s");
    let opts = FitOptions::default();
    let (min, med, report) = timed(|| fit_report_for(&truth, Model::TwoPl, &data, &opts).unwrap());
    println!(
        "fit report 100000x100: min {min:.3} s, median {med:.3} s; {} items flagged at 0.01, {} persons below −1.645",
        report.misfitting_items(0.01).len(),
        report.aberrant_persons(-1.645).len()
    );
}

//! Timing probes (ignored by default; no timing assertions). Run with
//! `cargo test -p examflow-engine --release --test irt_speed -- --ignored --nocapture`.

use std::time::Instant;

use examflow_engine::irt::{
    CalibrationOptions, Model, Quadrature, SeMethod, calibrate, eap_batch, simulate_2pl,
};

#[test]
#[ignore]
fn time_2pl_100k_by_100() {
    let (data, truth, _) = simulate_2pl(100_000, 100, 7, 0.0);
    for se in [SeMethod::None, SeMethod::Auto] {
        let mut opts = CalibrationOptions::new(Model::TwoPl);
        opts.se_method = se;
        let t = Instant::now();
        let cal = calibrate(&data, &opts).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let rmse_a = (cal
            .items
            .iter()
            .zip(&truth)
            .map(|(e, t)| (e.a - t.a).powi(2))
            .sum::<f64>()
            / 100.0)
            .sqrt();
        println!(
            "2PL 100000x100, {} nodes, se {:?}: {secs:.3} s, {} iterations, converged {}, patterns {}, ll {:.3}, rmse(a) {rmse_a:.4}",
            cal.quadrature_points,
            cal.se_method,
            cal.iterations,
            cal.converged,
            cal.n_patterns,
            cal.log_likelihood
        );
    }
}

#[test]
#[ignore]
fn time_eap_batch() {
    let (data, truth, _) = simulate_2pl(1_000_000, 100, 11, 0.0);
    let quad = Quadrature::default();
    let t = Instant::now();
    let est = eap_batch(&truth, &data, &quad).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "EAP batch 1e6 x 100 items: {secs:.3} s = {:.2} M scores/s (first {:?})",
        1.0 / secs,
        est[0]
    );
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
        let t = Instant::now();
        let cal = calibrate(&data, &opts).unwrap();
        println!(
            "{it} iterations: {:.3} s ({})",
            t.elapsed().as_secs_f64(),
            cal.iterations
        );
    }
}

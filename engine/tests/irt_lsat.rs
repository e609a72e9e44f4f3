//! LSAT Section VI (Bock & Lieberman 1970; `LSAT` in R's ltm, `LSAT6` in mirt) against
//! published ltm fits, plus EAP checked against independent numerical integration.

use examflow_engine::irt::{
    CalibrationOptions, Model, Quadrature, ResponseMatrix, calibrate, eap_with, map, probability,
};

fn lsat() -> ResponseMatrix {
    ResponseMatrix::from_csv_str(include_str!("../../data/irt/lsat6.csv")).unwrap()
}

fn opts(model: Model) -> CalibrationOptions {
    let mut o = CalibrationOptions::new(model);
    o.tolerance = 1e-7;
    o.ll_relative_tolerance = 0.0;
    o.max_iterations = 5000;
    o
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() < tol,
        "{what}: got {got}, expected {want}"
    );
}

#[test]
fn lsat_2pl_matches_ltm() {
    let cal = calibrate(&lsat(), &opts(Model::TwoPl)).unwrap();
    assert!(cal.converged);
    assert_eq!(cal.n_patterns, 30); // two of the 32 patterns have frequency 0
    // ltm(LSAT ~ z1): coefficients and standard errors (summary()).
    let b = [-3.3597, -1.3696, -0.2799, -1.8659, -3.1236];
    let a = [0.8254, 0.7229, 0.8905, 0.6886, 0.6575];
    let se_b = [0.8669, 0.3073, 0.0997, 0.4341, 0.8700];
    let se_a = [0.2581, 0.1867, 0.2326, 0.1852, 0.2100];
    for (i, it) in cal.items.iter().enumerate() {
        close(&format!("a{i}"), it.a, a[i], 0.005);
        close(&format!("b{i}"), it.b, b[i], 0.005);
        close(&format!("se_a{i}"), it.se_a.unwrap(), se_a[i], 0.005);
        close(&format!("se_b{i}"), it.se_b.unwrap(), se_b[i], 0.005);
    }
    close("logLik", cal.log_likelihood, -2466.653, 0.005);
    close("AIC", cal.aic, 4953.307, 0.01);
}

#[test]
fn lsat_rasch_matches_ltm() {
    let cal = calibrate(&lsat(), &opts(Model::Rasch)).unwrap();
    assert!(cal.converged);
    let b = [-2.8720, -1.0630, -0.2576, -1.3881, -2.2188];
    for (i, it) in cal.items.iter().enumerate() {
        close(&format!("b{i}"), it.b, b[i], 0.002);
        assert_eq!(it.a, 1.0);
    }
    close("logLik", cal.log_likelihood, -2473.054, 0.005);
}

#[test]
fn lsat_1pl_matches_ltm() {
    let cal = calibrate(&lsat(), &opts(Model::OnePl)).unwrap();
    assert!(cal.converged);
    let b = [-3.6153, -1.3224, -0.3176, -1.7301, -2.7802];
    for (i, it) in cal.items.iter().enumerate() {
        close(&format!("b{i}"), it.b, b[i], 0.002);
        close("a", it.a, 0.7551, 0.001);
    }
    close("logLik", cal.log_likelihood, -2466.938, 0.005);
    assert_eq!(cal.n_params, 6);
}

/// EAP on the 61-point grid vs. an independent fine trapezoid integral on [−10, 10].
#[test]
fn lsat_eap_matches_fine_integration() {
    let cal = calibrate(&lsat(), &opts(Model::TwoPl)).unwrap();
    let quad = Quadrature::default();
    for pattern in [
        [0u8, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 1, 0, 1],
        [0, 1, 1, 0, 0],
    ] {
        let est = eap_with(&cal.items, &pattern, &quad).unwrap();
        let n = 200_001;
        let h = 20.0 / (n - 1) as f64;
        let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for j in 0..n {
            let t = -10.0 + h * j as f64;
            let mut l = (-0.5 * t * t).exp();
            for (it, &x) in cal.items.iter().zip(&pattern) {
                let p = probability(it.a, it.b, it.c, t);
                l *= if x == 1 { p } else { 1.0 - p };
            }
            let w = if j == 0 || j == n - 1 { 0.5 } else { 1.0 };
            s0 += w * l;
            s1 += w * l * t;
            s2 += w * l * t * t;
        }
        let mean = s1 / s0;
        let sd = (s2 / s0 - mean * mean).sqrt();
        // the 61-point grid's quadrature error is ~1e−6 here
        close("eap", est.theta, mean, 1e-5);
        close("psd", est.se, sd, 1e-5);
    }
}

/// MAP ability scores against ltm's published "Empirical Bayes" factor scores (the
/// posterior mode and the SE from the curvature there) for `factor.scores(ltm(LSAT ~ z1))`.
#[test]
fn lsat_map_matches_ltm_empirical_bayes_scores() {
    let cal = calibrate(&lsat(), &opts(Model::TwoPl)).unwrap();
    let published: [([u8; 5], f64, f64); 8] = [
        ([0, 0, 0, 0, 0], -1.895, 0.795),
        ([0, 0, 0, 0, 1], -1.479, 0.796),
        ([0, 0, 1, 1, 1], -0.463, 0.812),
        ([0, 1, 1, 1, 1], 0.023, 0.828),
        ([1, 0, 0, 1, 1], -0.506, 0.811),
        ([1, 1, 0, 1, 1], -0.022, 0.827),
        ([1, 1, 1, 1, 0], 0.139, 0.833),
        ([1, 1, 1, 1, 1], 0.606, 0.855),
    ];
    for (pattern, theta, se) in published {
        let est = map(&cal.items, &pattern).unwrap();
        close(&format!("MAP theta {pattern:?}"), est.theta, theta, 0.01);
        close(&format!("MAP se {pattern:?}"), est.se, se, 0.01);
    }
}

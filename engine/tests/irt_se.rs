//! Standard errors by method (`SeMethod`): LSAT against ltm's published SEs, Oakes'
//! analytic observed information against finite differences of the gradient on simulated
//! data with missing responses, and the method names.

use examflow_engine::irt::{
    Calibration, CalibrationOptions, ItemParams, Model, ResponseMatrix, SeMethod, SplitMix64,
    calibrate, simulate_2pl, simulate_responses,
};

fn lsat() -> ResponseMatrix {
    ResponseMatrix::from_csv_str(include_str!("../../data/irt/lsat6.csv")).unwrap()
}

fn fit(data: &ResponseMatrix, model: Model, se: SeMethod, tight: bool) -> Calibration {
    let mut o = CalibrationOptions::new(model);
    o.se_method = se;
    if tight {
        o.tolerance = 1e-7;
        o.ll_relative_tolerance = 0.0;
        o.max_iterations = 5000;
    }
    calibrate(data, &o).unwrap()
}

/// Largest |SE difference| (a, b and c) between two calibrations of the same data.
fn max_rel_se_diff(x: &Calibration, y: &Calibration) -> f64 {
    let mut worst = 0.0f64;
    for (a, b) in x.items.iter().zip(&y.items) {
        for (s, t) in [(a.se_a, b.se_a), (a.se_b, b.se_b), (a.se_c, b.se_c)] {
            match (s, t) {
                (Some(s), Some(t)) => worst = worst.max(((s - t) / t).abs()),
                (None, None) => {}
                _ => panic!("SE present in one calibration only: {s:?} vs {t:?}"),
            }
        }
    }
    worst
}

/// ltm(LSAT ~ z1) summary(): SEs of a and b, the LSAT 2PL fit.
const LTM_SE_A: [f64; 5] = [0.2581, 0.1867, 0.2326, 0.1852, 0.2100];
const LTM_SE_B: [f64; 5] = [0.8669, 0.3073, 0.0997, 0.4341, 0.8700];

fn ltm_max_abs_diff(cal: &Calibration) -> f64 {
    cal.items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let da = (it.se_a.unwrap() - LTM_SE_A[i]).abs();
            let db = (it.se_b.unwrap() - LTM_SE_B[i]).abs();
            da.max(db)
        })
        .fold(0.0, f64::max)
}

/// Oakes and SEM are the exact observed information, as ltm's; they differ from ltm's
/// printed SEs by ~1.2e−3 at most (ltm integrates with 21 Gauss–Hermite points, we with 61
/// equally spaced nodes on [−6, 6]; the FD Hessian differs by the same), hence 2e−3. XPD is a different estimator of the same
/// information; on these 1000 persons its SEs differ from ltm's by up to 0.027 (3.5 %), so
/// it gets a 5 % relative tolerance.
#[test]
fn lsat_2pl_ses_by_method_match_ltm() {
    let data = lsat();
    for (se, tol) in [
        (SeMethod::Auto, 2e-3),
        (SeMethod::Oakes, 2e-3),
        (SeMethod::Sem, 2e-3),
        (SeMethod::ObservedHessian, 2e-3),
    ] {
        let cal = fit(&data, Model::TwoPl, se, true);
        assert_eq!(
            cal.se_method,
            if se == SeMethod::Auto {
                SeMethod::Oakes
            } else {
                se
            }
        );
        let d = ltm_max_abs_diff(&cal);
        eprintln!("LSAT 2PL {se:?}: max |SE − ltm| = {d:.2e}");
        assert!(d < tol, "{se:?}: max |SE − ltm| = {d}");
    }
    let cal = fit(&data, Model::TwoPl, SeMethod::Xpd, true);
    assert_eq!(cal.se_method, SeMethod::Xpd);
    let mut worst_rel = 0.0f64;
    for (i, it) in cal.items.iter().enumerate() {
        worst_rel = worst_rel
            .max((it.se_a.unwrap() / LTM_SE_A[i] - 1.0).abs())
            .max((it.se_b.unwrap() / LTM_SE_B[i] - 1.0).abs());
    }
    eprintln!(
        "LSAT 2PL Xpd: max |SE − ltm| = {:.2e}, max relative {worst_rel:.3}",
        ltm_max_abs_diff(&cal)
    );
    assert!(worst_rel < 0.05, "xpd relative difference {worst_rel}");
}

/// Oakes' analytic information equals the finite-difference Hessian of the marginal
/// log-likelihood (up to the differencing error, ~1e−7 relative) for every model.
#[test]
fn oakes_matches_observed_hessian_with_missing_responses() {
    // 2PL, Rasch and 1PL on simulated data with 15 % missing
    let (data, _, _) = simulate_2pl(3000, 15, 21, 0.15);
    for model in [Model::TwoPl, Model::OnePl, Model::Rasch] {
        let fd = fit(&data, model, SeMethod::ObservedHessian, false);
        let oakes = fit(&data, model, SeMethod::Oakes, false);
        let sem = fit(&data, model, SeMethod::Sem, false);
        let d = max_rel_se_diff(&oakes, &fd);
        let ds = max_rel_se_diff(&sem, &fd);
        eprintln!("{model:?}: Oakes vs FD Hessian {d:.2e}, SEM vs FD Hessian {ds:.2e}");
        assert!(d < 1e-4, "{model:?}: Oakes vs FD Hessian {d}");
        assert!(ds < 1e-3, "{model:?}: SEM vs FD Hessian {ds}");
    }
    // 3PL (MAP for c with the Beta prior: the information includes the prior's curvature)
    let mut rng = SplitMix64::new(77);
    let truth: Vec<ItemParams> = (0..12)
        .map(|i| {
            let a = 0.9 + 1.1 * rng.uniform();
            let b = rng.normal().clamp(-1.5, 1.5);
            let c = 0.1 + 0.15 * rng.uniform();
            ItemParams::new(format!("i{i}"), a, b, c)
        })
        .collect();
    let (data, _) = simulate_responses(&truth, 3000, 78, 0.1);
    let fd = fit(&data, Model::ThreePl, SeMethod::ObservedHessian, true);
    let oakes = fit(&data, Model::ThreePl, SeMethod::Oakes, true);
    let sem = fit(&data, Model::ThreePl, SeMethod::Sem, true);
    assert_eq!(oakes.se_method, SeMethod::Oakes);
    let d = max_rel_se_diff(&oakes, &fd);
    let ds = max_rel_se_diff(&sem, &fd);
    eprintln!("3PL: Oakes vs FD Hessian {d:.2e}, SEM vs FD Hessian {ds:.2e}");
    assert!(d < 1e-4, "3PL: Oakes vs FD Hessian {d}");
    assert!(ds < 1e-3, "3PL: SEM vs FD Hessian {ds}");
}

/// XPD estimates the same information: close to Oakes on a large sample.
#[test]
fn xpd_is_close_to_oakes_on_a_large_sample() {
    let (data, _, _) = simulate_2pl(20_000, 10, 5, 0.1);
    let oakes = fit(&data, Model::TwoPl, SeMethod::Oakes, false);
    let xpd = fit(&data, Model::TwoPl, SeMethod::Xpd, false);
    let d = max_rel_se_diff(&xpd, &oakes);
    eprintln!("XPD vs Oakes, 20000 × 10: max relative SE difference {d:.3}");
    assert!(d < 0.05, "{d}");
}

#[test]
fn se_method_names() {
    for (name, m) in [
        ("oakes", SeMethod::Oakes),
        ("xpd", SeMethod::Xpd),
        ("crossprod", SeMethod::Xpd),
        ("sem", SeMethod::Sem),
        ("none", SeMethod::None),
        ("Auto", SeMethod::Auto),
        ("observed-hessian", SeMethod::ObservedHessian),
        ("item_block_xpd", SeMethod::ItemBlockXpd),
    ] {
        assert_eq!(SeMethod::parse(name).unwrap(), m, "{name}");
        assert_eq!(name.parse::<SeMethod>().unwrap(), m);
    }
    for (_, m) in SeMethod::CHOICES {
        // the JSON value is the parse name
        assert_eq!(
            serde_json::to_value(m).unwrap(),
            serde_json::Value::String(m.name().into())
        );
        assert_eq!(SeMethod::parse(m.name()).unwrap(), m);
    }
    for bad in ["", "oaks", "louis", "hessian", "xpd2"] {
        let err = SeMethod::parse(bad).unwrap_err().to_string();
        assert!(
            err.contains("oakes, xpd, sem, none"),
            "{bad:?} gave an unhelpful error: {err}"
        );
    }
}

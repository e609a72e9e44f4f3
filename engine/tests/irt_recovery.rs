//! Parameter recovery on simulated data, invariance properties and edge cases.

use examflow_engine::irt::{
    CalibrationOptions, ItemParams, MISSING, Model, Quadrature, ResponseMatrix, SeMethod,
    SplitMix64, Theta, calibrate, eap, eap_batch, item_information, map, mle, probability,
    simulate_2pl, simulate_responses, test_information,
};

fn rmse(x: impl Iterator<Item = (f64, f64)>) -> f64 {
    let v: Vec<f64> = x.map(|(a, b)| (a - b).powi(2)).collect();
    (v.iter().sum::<f64>() / v.len() as f64).sqrt()
}

fn fit(data: &ResponseMatrix, model: Model) -> examflow_engine::irt::Calibration {
    let mut o = CalibrationOptions::new(model);
    o.se_method = SeMethod::None;
    calibrate(data, &o).unwrap()
}

#[test]
fn recovers_2pl_complete_and_with_missing() {
    for missing in [0.0, 0.2] {
        let (data, truth, _) = simulate_2pl(5000, 30, 42, missing);
        let cal = fit(&data, Model::TwoPl);
        assert!(cal.converged);
        let ra = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.a, t.a)));
        let rb = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.b, t.b)));
        eprintln!(
            "2PL missing {missing}: RMSE a {ra:.4}, b {rb:.4}, {} iterations",
            cal.iterations
        );
        assert!(ra < 0.1 && rb < 0.1, "rmse a {ra} b {rb}");
        // the log-likelihood trace never decreases
        for w in cal.log_likelihood_trace.windows(2) {
            assert!(w[1] >= w[0] - 1e-9 * w[0].abs(), "{} -> {}", w[0], w[1]);
        }
    }
}

#[test]
fn plain_em_trace_is_monotone() {
    let (data, _, _) = simulate_2pl(2000, 15, 5, 0.1);
    let mut o = CalibrationOptions::new(Model::TwoPl);
    o.accelerate = false;
    o.se_method = SeMethod::None;
    let cal = calibrate(&data, &o).unwrap();
    assert!(cal.converged && cal.log_likelihood_trace.len() > 3);
    for w in cal.log_likelihood_trace.windows(2) {
        assert!(w[1] >= w[0] - 1e-9 * w[0].abs(), "{} -> {}", w[0], w[1]);
    }
}

#[test]
fn recovers_3pl_loosely() {
    let mut rng = SplitMix64::new(9);
    let truth: Vec<ItemParams> = (0..30)
        .map(|i| {
            let a = 0.8 + 1.2 * rng.uniform();
            let b = rng.normal().clamp(-2.0, 2.0);
            let c = 0.1 + 0.2 * rng.uniform();
            ItemParams::new(format!("item{i}"), a, b, c)
        })
        .collect();
    let (data, _) = simulate_responses(&truth, 10_000, 3, 0.0);
    let cal = fit(&data, Model::ThreePl);
    assert!(cal.converged, "{} iterations", cal.iterations);
    let ra = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.a, t.a)));
    let rb = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.b, t.b)));
    let rc = rmse(cal.items.iter().zip(&truth).map(|(e, t)| (e.c, t.c)));
    eprintln!(
        "3PL: RMSE a {ra:.4}, b {rb:.4}, c {rc:.4}, {} iterations",
        cal.iterations
    );
    assert!(ra < 0.3 && rb < 0.3 && rc < 0.08, "a {ra} b {rb} c {rc}");
    for w in cal.log_likelihood_trace.windows(2) {
        assert!(w[1] >= w[0] - 1e-9 * w[0].abs());
    }
}

#[test]
fn person_order_does_not_matter() {
    let (data, _, _) = simulate_2pl(1500, 12, 77, 0.1);
    let mut rng = SplitMix64::new(1);
    let mut order: Vec<usize> = (0..data.n_persons).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let c1 = fit(&data, Model::TwoPl);
    let c2 = fit(&data.select_persons(&order), Model::TwoPl);
    for (x, y) in c1.items.iter().zip(&c2.items) {
        assert!((x.a - y.a).abs() < 1e-9 && (x.b - y.b).abs() < 1e-9);
    }
}

#[test]
fn item_order_permutes_output() {
    let (data, _, _) = simulate_2pl(1500, 10, 78, 0.0);
    let order: Vec<usize> = vec![3, 7, 0, 9, 1, 2, 8, 4, 6, 5];
    let c1 = fit(&data, Model::TwoPl);
    let c2 = fit(&data.select_items(&order), Model::TwoPl);
    for (j, &i) in order.iter().enumerate() {
        assert_eq!(c2.items[j].item, c1.items[i].item);
        assert!((c2.items[j].a - c1.items[i].a).abs() < 1e-5);
        assert!((c2.items[j].b - c1.items[i].b).abs() < 1e-5);
    }
    assert!((c1.log_likelihood - c2.log_likelihood).abs() < 1e-6);
}

#[test]
fn probability_is_monotone_and_information_positive() {
    let it = ItemParams::new("x", 1.3, 0.4, 0.2);
    let mut prev = 0.0;
    for j in 0..=400 {
        let t = -10.0 + 0.05 * j as f64;
        let p = probability(it.a, it.b, it.c, t);
        assert!(p > prev || (p - prev).abs() < 1e-15 && p >= 0.2);
        prev = p;
        assert!(item_information(&it, t) >= 0.0);
    }
    let two = ItemParams::new("y", 1.5, 0.0, 0.0);
    assert!((item_information(&two, 0.0) - 1.5 * 1.5 * 0.25).abs() < 1e-12);
    assert!((test_information(&[two.clone(), two], 0.0) - 2.0 * 0.5625).abs() < 1e-12);
}

#[test]
fn all_correct_item_is_not_estimable() {
    let (mut data, _, _) = simulate_2pl(800, 6, 3, 0.0);
    for p in 0..data.n_persons {
        data.data[p * data.n_items + 2] = 1;
    }
    let cal = fit(&data, Model::TwoPl);
    let it = &cal.items[2];
    assert!(!it.estimable && it.a.is_nan() && it.b.is_nan() && it.se_b.is_none());
    assert_eq!(it.p_value, 1.0);
    assert_eq!(cal.n_params, 10);
    let json = serde_json::to_value(&cal).unwrap();
    assert!(json["items"][2]["a"].is_null());
}

#[test]
fn ability_edge_cases() {
    let items: Vec<ItemParams> = (0..5)
        .map(|i| {
            ItemParams::new(
                format!("i{i}"),
                1.0 + 0.1 * i as f64,
                -1.0 + 0.5 * i as f64,
                0.0,
            )
        })
        .collect();
    let all_right = mle(&items, &[1, 1, 1, 1, 1]).unwrap();
    assert_eq!(all_right.theta, Theta::PlusInfinity);
    assert_eq!(serde_json::to_string(&all_right.theta).unwrap(), "\"inf\"");
    assert_eq!(
        mle(&items, &[0, 0, 0, 0, MISSING]).unwrap().theta,
        Theta::MinusInfinity
    );
    assert_eq!(mle(&items, &[MISSING; 5]).unwrap().theta, Theta::Undefined);
    let mixed = mle(&items, &[1, 1, 0, 1, 0]).unwrap();
    let Theta::Finite(t) = mixed.theta else {
        panic!("finite expected")
    };
    // the score equation Σ a (x − P) = 0 holds at the MLE
    let x = [1.0, 1.0, 0.0, 1.0, 0.0];
    let score: f64 = items
        .iter()
        .zip(x)
        .map(|(p, x)| p.a * (x - probability(p.a, p.b, 0.0, t)))
        .sum();
    assert!(score.abs() < 1e-8);
    // nothing answered: EAP = prior
    let prior = eap(&items, &[MISSING; 5]).unwrap();
    assert!(prior.theta.abs() < 1e-9 && (prior.se - 1.0).abs() < 1e-3);
    // MAP lies between the prior mean and the MLE
    let mp = map(&items, &[1, 1, 0, 1, 0]).unwrap();
    assert!(mp.theta.abs() < t.abs() && mp.theta * t > 0.0);
}

#[test]
fn batch_eap_matches_single_eap() {
    let (data, truth, _) = simulate_2pl(300, 20, 8, 0.15);
    let quad = Quadrature::default();
    let batch = eap_batch(&truth, &data, &quad).unwrap();
    for (p, b) in batch.iter().enumerate() {
        let one = eap(&truth, data.row(p)).unwrap();
        assert!((one.theta - b.theta).abs() < 1e-9 && (one.se - b.se).abs() < 1e-9);
    }
    // and with a lower asymptote (general path)
    let three: Vec<ItemParams> = truth
        .iter()
        .map(|t| ItemParams::new(t.item.clone(), t.a, t.b, 0.2))
        .collect();
    let batch = eap_batch(&three, &data, &quad).unwrap();
    for p in (0..data.n_persons).step_by(7) {
        let one = eap(&three, data.row(p)).unwrap();
        assert!((one.theta - batch[p].theta).abs() < 1e-9);
    }
}

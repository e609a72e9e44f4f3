//! Fixed-parameter calibration: anchors held at known parameters put the free items and
//! the students' distribution on the anchors' scale.

use examflow_engine::irt::{
    CalibrationOptions, ItemParams, Model, SeMethod, calibrate, simulate_responses,
};

/// 40 items on a reference scale; the new students are abler and more spread
/// (θ ~ N(0.5, 1.2²) on that scale). Holding the first 20 items at their reference
/// parameters, the other 20 come back on the reference scale (RMSE of b and a below 0.1
/// with 6000 students) and the latent mean and SD are recovered (±0.06); a free calibration
/// of the same data puts them 0.4 to 0.5 lower on average (its own N(0, 1) scale).
#[test]
fn anchors_put_new_items_and_students_on_the_anchor_scale() {
    let (mean, sd) = (0.5, 1.2);
    let truth: Vec<ItemParams> = (0..40)
        .map(|i| {
            let b = -2.0 + 4.0 * ((i * 7) % 40) as f64 / 39.0;
            ItemParams::new(format!("q{i}"), 0.8 + 0.05 * (i % 10) as f64, b, 0.0)
        })
        .collect();
    // The same responses as θ = mean + sd·z with z ~ N(0, 1).
    let seen: Vec<ItemParams> = truth
        .iter()
        .map(|p| ItemParams::new(p.item.clone(), p.a * sd, (p.b - mean) / sd, 0.0))
        .collect();
    let (data, _) = simulate_responses(&seen, 6000, 42, 0.0);
    let mut options = CalibrationOptions::new(Model::TwoPl);
    options.fixed_items = truth[..20]
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.a, p.b, 0.0))
        .collect();
    let anchored = calibrate(&data, &options).unwrap();
    assert!(anchored.converged);
    assert_eq!(anchored.se_method, SeMethod::None);
    assert!(
        (anchored.latent_mean - mean).abs() < 0.06,
        "{}",
        anchored.latent_mean
    );
    assert!(
        (anchored.latent_sd - sd).abs() < 0.06,
        "{}",
        anchored.latent_sd
    );
    for (got, want) in anchored.items[..20].iter().zip(&truth) {
        // Held in slope-intercept form: b comes back to the last bit.
        assert!((got.a - want.a).abs() < 1e-12 && (got.b - want.b).abs() < 1e-12);
    }
    let rmse = |f: fn(&ItemParams) -> f64, items: &[ItemParams]| {
        (items
            .iter()
            .zip(&truth[20..])
            .map(|(g, w)| (f(g) - f(w)).powi(2))
            .sum::<f64>()
            / 20.0)
            .sqrt()
    };
    let free_items = &anchored.items[20..];
    assert!(
        rmse(|p| p.b, free_items) < 0.1,
        "b RMSE {}",
        rmse(|p| p.b, free_items)
    );
    assert!(
        rmse(|p| p.a, free_items) < 0.1,
        "a RMSE {}",
        rmse(|p| p.a, free_items)
    );
    // Without anchors the same items sit on the new students' own scale.
    let free = calibrate(&data, &CalibrationOptions::new(Model::TwoPl)).unwrap();
    let shift: f64 = free.items[20..]
        .iter()
        .zip(&truth[20..])
        .map(|(g, w)| w.b - g.b)
        .sum::<f64>()
        / 20.0;
    assert!(
        (0.35..0.65).contains(&shift),
        "free calibration shift {shift}"
    );
}

#[test]
fn fixed_anchors_are_checked() {
    let truth: Vec<ItemParams> = (0..5)
        .map(|i| ItemParams::new(format!("q{i}"), 1.0, i as f64 - 2.0, 0.0))
        .collect();
    let (data, _) = simulate_responses(&truth, 200, 1, 0.0);
    let mut options = CalibrationOptions::new(Model::OnePl);
    options.fixed_items = vec![(0, 1.0, -2.0, 0.0)];
    assert!(calibrate(&data, &options).is_err());
    options.model = Model::TwoPl;
    options.fixed_items = vec![(9, 1.0, 0.0, 0.0)];
    assert!(calibrate(&data, &options).is_err());
    options.fixed_items = vec![(1, -1.0, 0.0, 0.0)];
    assert!(calibrate(&data, &options).is_err());
    options.fixed_items = vec![(1, 1.0, 0.0, 0.0), (1, 1.0, 0.0, 0.0)];
    assert!(calibrate(&data, &options).is_err());
}

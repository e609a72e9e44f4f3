//! Timing probe (ignored by default): `cargo test -p examflow-engine --release --test
//! cat_speed -- --ignored --nocapture`.

// Wrapped in a module so `cargo test cat` selects these tests by name.
mod cat_speed {

    use std::time::Instant;

    use examflow_engine::cat::{
        CatBank, CatConfig, CatItem, CatRng, CatSession, Estimator, SelectionRule, Step, StopRule,
    };
    use examflow_engine::irt::ItemParams;

    #[test]
    #[ignore]
    fn time_cat_steps_500_item_bank() {
        let mut r = CatRng::new(1);
        let bank = CatBank::new(
            (0..500)
                .map(|i| {
                    CatItem::new(ItemParams::new(
                        format!("q{i}"),
                        0.8 + 1.2 * r.uniform(),
                        r.normal(),
                        0.0,
                    ))
                })
                .collect(),
        )
        .unwrap();
        let cases = [
            (SelectionRule::Mfi, Estimator::Eap),
            (SelectionRule::Mfi, Estimator::Mle),
            (SelectionRule::Mfi, Estimator::Wle),
            (SelectionRule::Mfi, Estimator::Map),
            (SelectionRule::Kl, Estimator::Eap),
            (SelectionRule::Klp, Estimator::Eap),
            (SelectionRule::Mpwi, Estimator::Eap),
            (SelectionRule::BMatching, Estimator::Eap),
        ];
        for (rule, estimator) in cases {
            let cfg = CatConfig {
                rule,
                estimator,
                stop: StopRule::fixed(40),
                ..Default::default()
            };
            let mut steps = 0usize;
            let mut elapsed = 0.0;
            let mut resp = CatRng::new(2);
            let mut seed = 0;
            while steps < 10_000 {
                seed += 1;
                let theta = resp.normal();
                let (mut s, mut item) = CatSession::start(&bank, &cfg, seed).unwrap();
                loop {
                    let it = &bank.get(&item).unwrap().params;
                    let correct = resp.uniform() < 1.0 / (1.0 + (-it.a * (theta - it.b)).exp());
                    let t = Instant::now();
                    let step = s.answer(&bank, &item, correct).unwrap();
                    elapsed += t.elapsed().as_secs_f64();
                    steps += 1;
                    match step {
                        Step::Next { item: n } => item = n,
                        Step::Finished { .. } => break,
                    }
                }
            }
            println!(
                "{rule:?}/{estimator:?}: {:.2} µs/step over {steps} steps (500 items, 40-item tests)",
                elapsed / steps as f64 * 1e6
            );
        }
    }
}

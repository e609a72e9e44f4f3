//! Selection rules on hand-computed small cases, eligibility invariants.

// Wrapped in a module so `cargo test cat` selects these tests by name.
mod cat_select {

    use examflow_engine::cat::{
        CatBank, CatConfig, CatItem, CatSession, SelectionRule, StartRule, Step, StopReason,
        StopRule,
    };
    use examflow_engine::irt::ItemParams;

    fn p(a: f64, b: f64, c: f64, theta: f64) -> f64 {
        c + (1.0 - c) / (1.0 + (-a * (theta - b)).exp())
    }

    fn info(a: f64, b: f64, c: f64, t: f64) -> f64 {
        let pr = p(a, b, c, t);
        a * a * ((pr - c) / (1.0 - c)).powi(2) * (1.0 - pr) / pr
    }

    fn kl(a: f64, b: f64, c: f64, t0: f64, t: f64) -> f64 {
        let (p0, p1) = (p(a, b, c, t0), p(a, b, c, t));
        p0 * (p0 / p1).ln() + (1.0 - p0) * ((1.0 - p0) / (1.0 - p1)).ln()
    }

    /// Composite Simpson on [lo, hi] with n (even) panels.
    fn simpson(f: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> f64 {
        let h = (hi - lo) / n as f64;
        let mut s = f(lo) + f(hi);
        for k in 1..n {
            s += f(lo + h * k as f64) * if k % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    const ITEMS: [(f64, f64, f64); 3] = [(1.0, 0.0, 0.0), (2.0, 2.0, 0.0), (1.5, 0.3, 0.2)];

    fn bank3() -> CatBank {
        CatBank::from_params(
            ITEMS
                .iter()
                .enumerate()
                .map(|(i, &(a, b, c))| ItemParams::new(format!("i{i}"), a, b, c))
                .collect(),
        )
        .unwrap()
    }

    fn config(rule: SelectionRule, theta0: f64) -> CatConfig {
        CatConfig {
            rule,
            start: StartRule {
                theta: theta0,
                ..Default::default()
            },
            stop: StopRule::fixed(3),
            ..Default::default()
        }
    }

    fn argmax(v: &[f64]) -> usize {
        (0..v.len())
            .max_by(|&i, &j| v[i].partial_cmp(&v[j]).unwrap())
            .unwrap()
    }

    #[test]
    fn mfi_picks_item_with_max_information() {
        let bank = bank3();
        for theta0 in [-1.0, 0.5, 1.8] {
            let (s, first) =
                CatSession::start(&bank, &config(SelectionRule::Mfi, theta0), 1).unwrap();
            let want: Vec<f64> = ITEMS
                .iter()
                .map(|&(a, b, c)| info(a, b, c, theta0))
                .collect();
            assert_eq!(first, format!("i{}", argmax(&want)), "θ0 = {theta0}");
            let got = s.criteria(&bank).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g.unwrap() - w).abs() < 1e-12);
            }
        }
        // 2PL: a²PQ by hand at θ = 0.5: item 0: 0.2350, item 1: 4·P(−3)Q = 0.1807.
        let (_, first) = CatSession::start(&bank3(), &config(SelectionRule::Mfi, 0.5), 1).unwrap();
        let i0 = 0.3775406687981454 * 0.6224593312018546;
        assert!((info(1.0, 0.0, 0.0, 0.5) - i0).abs() < 1e-12);
        assert_eq!(first, "i2"); // 3PL item: 1.5² · (s²(1−s)(0.8)/P) = 0.352 at θ = 0.5
    }

    #[test]
    fn b_matching_picks_closest_difficulty() {
        let bank = bank3();
        for (theta0, want) in [(-2.0, "i0"), (0.2, "i2"), (1.2, "i1"), (0.14, "i0")] {
            let (_, first) =
                CatSession::start(&bank, &config(SelectionRule::BMatching, theta0), 1).unwrap();
            assert_eq!(first, want, "θ0 = {theta0}");
        }
    }

    #[test]
    fn kl_matches_direct_integral() {
        let bank = bank3();
        // First item: SE = prior sd = 1, window θ0 ± 3·1 (clipped to [−6, 6]).
        for theta0 in [0.0, 0.37, -1.3, 4.5] {
            let (s, first) =
                CatSession::start(&bank, &config(SelectionRule::Kl, theta0), 1).unwrap();
            let (lo, hi) = ((theta0 - 3.0f64).max(-6.0), (theta0 + 3.0f64).min(6.0));
            let want: Vec<f64> = ITEMS
                .iter()
                .map(|&(a, b, c)| simpson(|t| kl(a, b, c, theta0, t), lo, hi, 20_000))
                .collect();
            let got = s.criteria(&bank).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let g = g.unwrap();
                assert!(
                    (g - w).abs() < 3e-4 * w.abs().max(1e-3),
                    "θ0 {theta0}: {g} vs {w}"
                );
            }
            assert_eq!(first, format!("i{}", argmax(&want)));
        }
    }

    #[test]
    fn kl_window_shrinks_with_se() {
        // After answers, δ = 3·SE: compare again with a direct integral.
        let bank = bank3();
        let mut cfg = config(SelectionRule::Kl, 0.0);
        cfg.stop = StopRule::fixed(3);
        let (mut s, first) = CatSession::start(&bank, &cfg, 3).unwrap();
        s.answer(&bank, &first, true).unwrap();
        let (t, se) = (s.theta(), s.se());
        let got = s.criteria(&bank).unwrap();
        for (i, &(a, b, c)) in ITEMS.iter().enumerate() {
            let Some(g) = got[i] else { continue };
            let w = simpson(|x| kl(a, b, c, t, x), t - 3.0 * se, t + 3.0 * se, 20_000);
            assert!((g - w).abs() < 1e-4 * w.max(1e-3), "{g} vs {w}");
        }
        assert!(got.iter().filter(|g| g.is_none()).count() == 1);
    }

    #[test]
    fn klp_and_mpwi_match_posterior_integrals() {
        let bank = bank3();
        // Before the first answer the posterior is the N(0, 1) prior.
        let phi = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let theta0 = 0.4;
        let (s, first) = CatSession::start(&bank, &config(SelectionRule::Klp, theta0), 1).unwrap();
        let want: Vec<f64> = ITEMS
            .iter()
            .map(|&(a, b, c)| simpson(|t| kl(a, b, c, theta0, t) * phi(t), -6.0, 6.0, 20_000))
            .collect();
        for (g, w) in s.criteria(&bank).unwrap().iter().zip(&want) {
            assert!((g.unwrap() - w).abs() < 1e-3 * w, "{g:?} vs {w}");
        }
        assert_eq!(first, format!("i{}", argmax(&want)));

        let (s, first) = CatSession::start(&bank, &config(SelectionRule::Mpwi, theta0), 1).unwrap();
        let want: Vec<f64> = ITEMS
            .iter()
            .map(|&(a, b, c)| simpson(|t| info(a, b, c, t) * phi(t), -6.0, 6.0, 20_000))
            .collect();
        for (g, w) in s.criteria(&bank).unwrap().iter().zip(&want) {
            assert!((g.unwrap() - w).abs() < 1e-3 * w, "{g:?} vs {w}");
        }
        assert_eq!(first, format!("i{}", argmax(&want)));
    }

    #[test]
    fn random_rule_covers_items_uniformly() {
        let bank = bank3();
        let mut counts = [0usize; 3];
        for seed in 0..3000 {
            let (_, first) =
                CatSession::start(&bank, &config(SelectionRule::Random, 0.0), seed).unwrap();
            counts[first[1..].parse::<usize>().unwrap()] += 1;
        }
        for c in counts {
            assert!((900..1100).contains(&c), "{counts:?}");
        }
    }

    fn bank_n(n: usize, disabled_every: usize) -> CatBank {
        let items = (0..n)
            .map(|i| {
                let b = -2.0 + 4.0 * i as f64 / n as f64;
                let it = CatItem::new(ItemParams::new(
                    format!("q{i}"),
                    1.0 + (i % 5) as f64 * 0.2,
                    b,
                    0.0,
                ));
                if i % disabled_every == 0 {
                    it.disabled()
                } else {
                    it
                }
            })
            .collect();
        CatBank::new(items).unwrap()
    }

    #[test]
    fn never_twice_never_disabled_and_exhaustion_stops() {
        let bank = bank_n(24, 3); // 8 disabled, 16 usable
        for rule in [
            SelectionRule::Mfi,
            SelectionRule::Kl,
            SelectionRule::Klp,
            SelectionRule::Mpwi,
            SelectionRule::BMatching,
            SelectionRule::Random,
        ] {
            for seed in 0..20u64 {
                let cfg = CatConfig {
                    rule,
                    stop: StopRule::fixed(40),
                    ..Default::default()
                };
                let (mut s, mut item) = CatSession::start(&bank, &cfg, seed).unwrap();
                let mut seen = std::collections::HashSet::new();
                let mut k = 0u64;
                loop {
                    assert!(
                        bank.get(&item).unwrap().enabled,
                        "{rule:?} chose disabled {item}"
                    );
                    assert!(seen.insert(item.clone()), "{rule:?} repeated {item}");
                    k += 1;
                    match s
                        .answer(&bank, &item, !(seed + k).is_multiple_of(3))
                        .unwrap()
                    {
                        Step::Next { item: n } => item = n,
                        Step::Finished {
                            items_used,
                            stop_reason,
                            ..
                        } => {
                            assert_eq!(stop_reason, StopReason::BankExhausted);
                            assert_eq!(items_used, 16);
                            break;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn disabling_mid_test_is_respected() {
        let mut bank = bank_n(30, 1000);
        let cfg = CatConfig {
            stop: StopRule::fixed(10),
            ..Default::default()
        };
        let (mut s, first) = CatSession::start(&bank, &cfg, 5).unwrap();
        let Step::Next { item } = s.answer(&bank, &first, true).unwrap() else {
            panic!()
        };
        // The best item after the first answer is disabled; the session must avoid it.
        let best = s
            .criteria(&bank)
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .max_by(|x, y| x.1.partial_cmp(&y.1).unwrap())
            .unwrap()
            .0;
        assert_eq!(bank.items()[best].params.item, item);
        let mut all = vec![];
        bank.set_enabled("q29", false).unwrap();
        bank.set_enabled("q0", false).unwrap();
        let mut cur = item;
        loop {
            all.push(cur.clone());
            match s.answer(&bank, &cur, false).unwrap() {
                Step::Next { item } => cur = item,
                Step::Finished { .. } => break,
            }
        }
        assert!(!all[1..].iter().any(|i| i == "q0" || i == "q29"), "{all:?}");
    }
}

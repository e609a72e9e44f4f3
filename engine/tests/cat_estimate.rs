//! Estimators, cold-start parameters and bank validation.

// Wrapped in a module so `cargo test cat` selects these tests by name.
mod cat_estimate {

    use examflow_engine::cat::{
        CatBank, CatConfig, CatError, CatItem, CatSession, Estimator, MleFallback, Prior, Step,
        StopRule, estimate_ability, provisional_params,
    };
    use examflow_engine::irt::{self, ItemParams, Theta};

    fn items10() -> Vec<ItemParams> {
        (0..10)
            .map(|i| {
                let b = -1.5 + 0.35 * i as f64;
                ItemParams::new(format!("i{i}"), 0.8 + 0.12 * i as f64, b, 0.0)
            })
            .collect()
    }

    #[test]
    fn eap_map_mle_match_irt_module() {
        let items = items10();
        let pattern = [1u8, 1, 0, 1, 1, 0, 0, 1, 0, 0];
        let resp: Vec<(&ItemParams, bool)> = items
            .iter()
            .zip(pattern)
            .map(|(p, x)| (p, x == 1))
            .collect();
        let e = estimate_ability(&resp, Estimator::Eap, Prior::default());
        let r = irt::eap(&items, &pattern).unwrap();
        assert!((e.theta - r.theta).abs() < 1e-10 && (e.se - r.se).abs() < 1e-10);
        let e = estimate_ability(&resp, Estimator::Map, Prior::default());
        let r = irt::map(&items, &pattern).unwrap();
        assert!(
            (e.theta - r.theta).abs() < 1e-6 && (e.se - r.se).abs() < 1e-6,
            "{e:?} {r:?}"
        );
        let e = estimate_ability(&resp, Estimator::Mle, Prior::default());
        let r = irt::mle(&items, &pattern).unwrap();
        let Theta::Finite(t) = r.theta else { panic!() };
        assert!((e.theta - t).abs() < 1e-6 && (e.se - r.se.unwrap()).abs() < 1e-6);
    }

    #[test]
    fn session_eap_is_incremental_and_exact() {
        let items = items10();
        let bank = CatBank::from_params(items.clone()).unwrap();
        let cfg = CatConfig {
            stop: StopRule::fixed(10),
            ..Default::default()
        };
        let (mut s, mut item) = CatSession::start(&bank, &cfg, 9).unwrap();
        let mut pattern = vec![irt::MISSING; 10];
        for k in 0..10 {
            let correct = k % 3 != 1;
            let i = bank.index_of(&item).unwrap();
            pattern[i] = u8::from(correct);
            let step = s.answer(&bank, &item, correct).unwrap();
            let r = irt::eap(&items, &pattern).unwrap();
            assert!((s.theta() - r.theta).abs() < 1e-10, "step {k}");
            assert!((s.se() - r.se).abs() < 1e-10);
            if let Step::Next { item: n } = step {
                item = n;
            }
        }
    }

    #[test]
    fn wle_single_item_hand_computation() {
        // One 2PL item: ∂lnL/∂θ + J/(2I) = a(x − P) + a(1 − 2P)/2 = 0 ⇒ P = 3/4 (right) or
        // 1/4 (wrong) ⇒ θ = b ± ln 3 / a.
        for (a, b) in [(1.0, 0.0), (1.7, -0.4), (0.6, 1.2)] {
            let it = ItemParams::new("x", a, b, 0.0);
            let up = estimate_ability(&[(&it, true)], Estimator::Wle, Prior::default());
            let down = estimate_ability(&[(&it, false)], Estimator::Wle, Prior::default());
            assert!((up.theta - (b + 3f64.ln() / a)).abs() < 1e-8, "{up:?}");
            assert!((down.theta - (b - 3f64.ln() / a)).abs() < 1e-8, "{down:?}");
            // SE = 1/√I(θ̂) with I = a²·(3/16).
            assert!((up.se - 1.0 / (a * a * 3.0 / 16.0).sqrt()).abs() < 1e-8);
        }
    }

    /// A 15-item test centred at 0 (b from −1 to 1, a from 1.2 to 2).
    fn items15() -> Vec<ItemParams> {
        (0..15)
            .map(|i| {
                ItemParams::new(
                    format!("i{i}"),
                    1.2 + 0.8 * ((i * 7) % 15) as f64 / 14.0,
                    -1.0 + i as f64 / 7.0,
                    0.0,
                )
            })
            .collect()
    }

    /// Exact expected bias over all 2¹⁵ response patterns at a true θ, over the patterns
    /// with mixed responses (where the MLE is finite), and the probability mass they carry.
    fn exact_bias(theta: f64, est: Estimator) -> (f64, f64) {
        let items = items15();
        let n = items.len();
        let probs: Vec<f64> = items
            .iter()
            .map(|p| 1.0 / (1.0 + (-p.a * (theta - p.b)).exp()))
            .collect();
        let (mut num, mut den) = (0.0, 0.0);
        for mask in 1u32..(1 << n) - 1 {
            let resp: Vec<(&ItemParams, bool)> = items
                .iter()
                .enumerate()
                .map(|(i, p)| (p, mask >> i & 1 == 1))
                .collect();
            let pr: f64 = resp
                .iter()
                .zip(&probs)
                .map(|((_, x), p)| if *x { *p } else { 1.0 - p })
                .product();
            let e = estimate_ability(&resp, est, Prior::default());
            num += pr * (e.theta - theta);
            den += pr;
        }
        (num / den, den)
    }

    #[test]
    fn wle_less_biased_than_mle_on_short_test() {
        // MLE is biased outwards (Lord 1983), WLE removes the O(1/n) term (Warm 1989).
        for theta in [-0.8, 0.5] {
            let ((bm, mass), (bw, _)) = (
                exact_bias(theta, Estimator::Mle),
                exact_bias(theta, Estimator::Wle),
            );
            println!("θ = {theta}: bias MLE {bm:.4}, WLE {bw:.4} (mixed-pattern mass {mass:.4})");
            assert!(mass > 0.95);
            assert!(bm * theta > 0.0, "MLE bias should point outwards");
            assert!(
                bw.abs() < 0.5 * bm.abs(),
                "θ = {theta}: WLE {bw} vs MLE {bm}"
            );
        }
    }

    #[test]
    fn mle_fallbacks_for_unmixed_patterns() {
        let items = items10();
        let bank = CatBank::from_params(items.clone()).unwrap();
        let mut cfg = CatConfig {
            estimator: Estimator::Mle,
            stop: StopRule::fixed(6),
            ..Default::default()
        };
        // Default fallback: EAP while all right.
        let (mut s, mut item) = CatSession::start(&bank, &cfg, 1).unwrap();
        let mut pattern = vec![irt::MISSING; 10];
        for _ in 0..3 {
            pattern[bank.index_of(&item).unwrap()] = 1;
            let Step::Next { item: n } = s.answer(&bank, &item, true).unwrap() else {
                panic!()
            };
            let r = irt::eap(&items, &pattern).unwrap();
            assert!((s.theta() - r.theta).abs() < 1e-10);
            item = n;
        }
        // First wrong answer: a real MLE.
        pattern[bank.index_of(&item).unwrap()] = 0;
        s.answer(&bank, &item, false).unwrap();
        let r = irt::mle(&items, &pattern).unwrap();
        assert!((s.theta() - r.theta.value()).abs() < 1e-6);

        // Step-size fallback: −0.7 per wrong answer from θ0 = 0.
        cfg.mle_fallback = MleFallback::StepSize { step: 0.7 };
        let (mut s, mut item) = CatSession::start(&bank, &cfg, 1).unwrap();
        for k in 1..=3 {
            let Step::Next { item: n } = s.answer(&bank, &item, false).unwrap() else {
                panic!()
            };
            assert!((s.theta() + 0.7 * k as f64).abs() < 1e-12);
            assert!(s.se().is_finite() && s.se() > 0.0);
            item = n;
        }
    }

    #[test]
    fn wle_is_finite_for_perfect_scores() {
        let items = items10();
        let all: Vec<(&ItemParams, bool)> = items.iter().map(|p| (p, true)).collect();
        let e = estimate_ability(&all, Estimator::Wle, Prior::default());
        assert!(e.theta > 1.5 && e.theta < 6.0 && e.se.is_finite(), "{e:?}");
    }

    #[test]
    fn provisional_params_rule() {
        let p = provisional_params("x", 0.5, 0).unwrap();
        assert!(p.b.abs() < 1e-9 && p.a == 1.0 && p.c == 0.0 && p.p_value == 0.5);
        // With 4 options c = 0.25; p = 0.625 is p* = 0.5 after the guessing correction.
        let p = provisional_params("x", 0.625, 4).unwrap();
        assert!((p.c - 0.25).abs() < 1e-12 && p.b.abs() < 1e-9);
        // Expected p-value in a N(0, 1) population is close to the observed one.
        for pv in [0.2, 0.35, 0.6, 0.85, 0.95] {
            let it = provisional_params("x", pv, 0).unwrap();
            let h = 0.001;
            let m: f64 = (0..12001)
                .map(|k| {
                    let t = -6.0 + h * k as f64;
                    (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt() * h
                        / (1.0 + (-(t - it.b)).exp())
                })
                .sum();
            assert!((m - pv).abs() < 0.01, "p {pv}: model p {m}, b {}", it.b);
        }
        assert!(
            provisional_params("x", 0.9, 0).unwrap().b < provisional_params("y", 0.3, 0).unwrap().b
        );
        assert!(provisional_params("x", 1.2, 0).is_err());
    }

    #[test]
    fn bank_validation() {
        let ok = |id: &str| CatItem::new(ItemParams::new(id, 1.0, 0.0, 0.0));
        assert_eq!(CatBank::new(vec![]).unwrap_err(), CatError::EmptyBank);
        assert!(matches!(
            CatBank::new(vec![ok("a"), ok("a")]).unwrap_err(),
            CatError::DuplicateItem { .. }
        ));
        for (a, b, c) in [
            (0.0, 0.0, 0.0),
            (-1.0, 0.0, 0.0),
            (1.0, f64::NAN, 0.0),
            (1.0, 0.0, 1.0),
            (1.0, 0.0, -0.1),
            (f64::INFINITY, 0.0, 0.0),
        ] {
            let e = CatBank::new(vec![ok("a"), CatItem::new(ItemParams::new("b", a, b, c))])
                .unwrap_err();
            assert!(
                matches!(e, CatError::InvalidItem { ref item, .. } if item == "b"),
                "{e}"
            );
        }
        let bank = CatBank::new(vec![ok("a"), ok("b").with_topic("alg")]).unwrap();
        // JSON round trip (a bank deserialises through validation).
        let js = serde_json::to_string(&bank).unwrap();
        let back: CatBank = serde_json::from_str(&js).unwrap();
        assert_eq!(back.fingerprint(), bank.fingerprint());
        assert_eq!(back.topics(), ["alg".to_string()]);
    }
}

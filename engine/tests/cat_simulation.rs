//! Simulation reports, Sympson–Hetter calibration and CAT efficiency.

// Wrapped in a module so `cargo test cat` selects these tests by name.
mod cat_simulation {

    use examflow_engine::cat::{
        CatBank, CatConfig, CatItem, CatRng, Estimator, ExposureControl, Prior, SelectionRule,
        ShOptions, StopRule, ThetaDistribution, calibrate_sympson_hetter, estimate_ability,
        simulate,
    };
    use examflow_engine::irt::ItemParams;

    /// a ~ U(0.8, 2), b ~ N(0, 1).
    fn bank(n: usize, seed: u64) -> CatBank {
        let mut r = CatRng::new(seed);
        CatBank::new(
            (0..n)
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
        .unwrap()
    }

    const N01: ThetaDistribution = ThetaDistribution::Normal { mean: 0.0, sd: 1.0 };

    #[test]
    fn deterministic_and_sane() {
        let b = bank(100, 1);
        let cfg = CatConfig {
            stop: StopRule::fixed(15),
            ..Default::default()
        };
        let r1 = simulate(&b, &cfg, 300, &N01, 5).unwrap();
        let r2 = simulate(&b, &cfg, 300, &N01, 5).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(r1.mean_length, 15.0);
        assert_eq!(r1.sd_length, 0.0);
        assert_eq!(r1.stop_reasons["max_length"], 300);
        let total: f64 = r1.exposure_rates.iter().map(|e| e.rate).sum();
        assert!((total - 15.0).abs() < 1e-9);
        assert!(
            r1.correlation.unwrap() > 0.9 && r1.rmse < 0.45 && r1.bias.abs() < 0.1,
            "{r1:?}"
        );
        let js = serde_json::to_string(&r1).unwrap();
        assert!(js.contains("\"overlap\""));
        // Non-adaptive extreme: a 10-item bank and 10-item test → everyone sees everything.
        let small = bank(10, 2);
        let r = simulate(
            &small,
            &CatConfig {
                stop: StopRule::fixed(10),
                ..Default::default()
            },
            50,
            &N01,
            1,
        )
        .unwrap();
        assert!((r.overlap - 1.0).abs() < 1e-12 && r.unused_share == 0.0 && r.max_exposure == 1.0);
        // Fixed θ list.
        let r = simulate(
            &b,
            &cfg,
            40,
            &ThetaDistribution::Fixed {
                values: vec![-1.0, 1.0],
            },
            3,
        )
        .unwrap();
        assert_eq!(r.n_examinees, 40);
    }

    #[test]
    fn exposure_controls_lower_max_exposure() {
        let b = bank(300, 3);
        let base = CatConfig {
            stop: StopRule::fixed(20),
            ..Default::default()
        };
        let none = simulate(&b, &base, 500, &N01, 11).unwrap();
        assert_eq!(none.max_exposure, 1.0); // the first item is always the same
        for exposure in [
            ExposureControl::Randomesque { k: 5 },
            ExposureControl::Progressive { acceleration: 1.0 },
        ] {
            let cfg = CatConfig {
                exposure: exposure.clone(),
                ..base.clone()
            };
            let r = simulate(&b, &cfg, 500, &N01, 11).unwrap();
            println!(
                "{exposure:?}: max exposure {:.3}, overlap {:.3}, unused {:.3}, rmse {:.3} (none: {:.3}, {:.3}, {:.3}, {:.3})",
                r.max_exposure,
                r.overlap,
                r.unused_share,
                r.rmse,
                none.max_exposure,
                none.overlap,
                none.unused_share,
                none.rmse
            );
            assert!(r.max_exposure < 0.8 && r.overlap < none.overlap);
            assert!(r.rmse < none.rmse * 1.35);
        }
    }

    #[test]
    fn sympson_hetter_calibration_reaches_r_max() {
        let b = bank(300, 4);
        let cfg = CatConfig {
            stop: StopRule::fixed(20),
            ..Default::default()
        };
        let mut opts = ShOptions::new(0.25);
        opts.n_examinees = 1000;
        opts.max_iterations = 25;
        let cal = calibrate_sympson_hetter(&b, &cfg, &opts, &N01, 21).unwrap();
        println!("SH max exposure per iteration: {:?}", cal.max_exposure);
        assert!(cal.max_exposure[0] > 0.9);
        // Fresh simulees with the calibrated parameters.
        let cfg = CatConfig {
            exposure: ExposureControl::SympsonHetter {
                k_params: cal.k_params.clone(),
            },
            ..cfg
        };
        let r = simulate(&b, &cfg, 2000, &N01, 99).unwrap();
        println!(
            "SH check: max exposure {:.3}, rmse {:.3}",
            r.max_exposure, r.rmse
        );
        assert!(r.max_exposure <= 0.25 + 0.05, "{}", r.max_exposure);
    }

    #[test]
    fn cat_beats_fixed_test_twice_as_long() {
        let b = bank(300, 5);
        let cfg = CatConfig {
            rule: SelectionRule::Mfi,
            estimator: Estimator::Eap,
            stop: StopRule::se(0.3, 1, 80),
            ..Default::default()
        };
        let n = 1000;
        let seed = 17;
        let cat = simulate(&b, &cfg, n, &N01, seed).unwrap();
        let len = (2.0 * cat.mean_length).round() as usize;
        // Fixed forms of 2 × mean CAT length: the most informative items at θ = 0, and a
        // random form; scored with the same EAP on the same simulee θs.
        let params: Vec<&ItemParams> = b.items().iter().map(|i| &i.params).collect();
        let info0 = |p: &ItemParams| {
            let s = 1.0 / (1.0 + (p.a * p.b).exp());
            p.a * p.a * s * (1.0 - s)
        };
        let mut best = params.clone();
        best.sort_by(|x, y| info0(y).partial_cmp(&info0(x)).unwrap());
        best.truncate(len);
        let mut r = CatRng::new(3);
        let mut random = params.clone();
        for i in (1..random.len()).rev() {
            random.swap(i, r.below(i + 1));
        }
        random.truncate(len);
        let fixed_rmse = |form: &[&ItemParams]| {
            let mut se2 = 0.0;
            for j in 0..n as u64 {
                let theta = CatRng::derived(seed, j, 0).normal(); // same θ stream as simulate
                let mut rr = CatRng::new(j + 1000);
                let resp: Vec<(&ItemParams, bool)> = form
                    .iter()
                    .map(|p| {
                        (
                            *p,
                            rr.uniform() < 1.0 / (1.0 + (-p.a * (theta - p.b)).exp()),
                        )
                    })
                    .collect();
                let e = estimate_ability(&resp, Estimator::Eap, Prior::default());
                se2 += (e.theta - theta).powi(2);
            }
            (se2 / n as f64).sqrt()
        };
        let (rb, rr) = (fixed_rmse(&best), fixed_rmse(&random));
        println!(
            "CAT: mean length {:.1} (sd {:.1}), rmse {:.3}, bias {:.3}; fixed {len} items: best-at-0 rmse {rb:.3}, random rmse {rr:.3}",
            cat.mean_length, cat.sd_length, cat.rmse, cat.bias
        );
        assert!(cat.rmse <= 0.3 * 1.1, "{}", cat.rmse);
        assert!(
            cat.rmse <= rr * 1.1,
            "CAT {} vs random fixed {rr}",
            cat.rmse
        );
        assert!(cat.rmse <= rb * 1.1, "CAT {} vs best fixed {rb}", cat.rmse);
    }

    #[test]
    fn all_rules_and_estimators_run() {
        let b = bank(150, 6);
        for rule in [
            SelectionRule::Mfi,
            SelectionRule::Kl,
            SelectionRule::Klp,
            SelectionRule::Mpwi,
            SelectionRule::BMatching,
            SelectionRule::Random,
        ] {
            for estimator in [
                Estimator::Eap,
                Estimator::Map,
                Estimator::Mle,
                Estimator::Wle,
            ] {
                let cfg = CatConfig {
                    rule,
                    estimator,
                    stop: StopRule::fixed(25),
                    ..Default::default()
                };
                let r = simulate(&b, &cfg, 200, &N01, 8).unwrap();
                assert!(
                    r.rmse < 0.6 && r.correlation.unwrap() > 0.85,
                    "{rule:?} {estimator:?}: {}",
                    r.rmse
                );
            }
        }
    }
}

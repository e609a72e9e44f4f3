//! Agreement with catsim 0.21.0 on a shared bank (fixture written by
//! `benches/python/catsim_agree.py`; this test needs no Python).
//!
//! Both use the logistic model without a scaling constant (catsim: 4PL with D = 1, here
//! d = 1) and the same Fisher information a²(P − c)²(1 − P)/((1 − c)²P), so MFI and
//! difficulty matching must pick the same items when given the same θ. catsim has no EAP
//! estimator; its numerical-search MLE is compared with examflow's MLE, and an EAP that
//! the script computed from catsim's log-likelihood on examflow's grid with examflow's EAP.

// Wrapped in a module so `cargo test cat` selects these tests by name.
mod cat_catsim_agreement {

    use examflow_engine::cat::{
        CatBank, CatConfig, CatSession, Estimator, Prior, SelectionRule, StartRule,
        estimate_ability,
    };
    use examflow_engine::irt::ItemParams;
    use serde_json::Value;

    const FIXTURE: &str = include_str!("data/catsim_choices.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).expect("fixture is JSON")
    }

    fn params(fx: &Value) -> Vec<ItemParams> {
        fx["bank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|it| {
                ItemParams::new(
                    it["item"].as_str().unwrap(),
                    it["a"].as_f64().unwrap(),
                    it["b"].as_f64().unwrap(),
                    it["c"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    fn indices(v: &Value) -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    }

    /// examflow's first item under `rule` at θ₀ = `theta` with the administered items
    /// disabled (= excluded from selection, as catsim excludes administered items).
    fn choice(params: &[ItemParams], rule: SelectionRule, theta: f64, adm: &[usize]) -> String {
        let mut bank = CatBank::from_params(params.to_vec()).unwrap();
        for &i in adm {
            bank.set_enabled(&params[i].item, false).unwrap();
        }
        let cfg = CatConfig {
            rule,
            start: StartRule {
                theta,
                ..Default::default()
            },
            ..Default::default()
        };
        CatSession::start(&bank, &cfg, 1).unwrap().1
    }

    #[test]
    fn fixture_is_catsim_0_21_with_cases() {
        let fx = fixture();
        assert_eq!(fx["catsim_version"], "0.21.0");
        assert_eq!(params(&fx).len(), 100);
        assert!(fx["select_cases"].as_array().unwrap().len() >= 50);
        assert!(fx["mle_cases"].as_array().unwrap().len() >= 50);
    }

    /// In every fixture case, `rule` picks the item catsim's selector chose (`key`).
    fn assert_choices_match(rule: SelectionRule, key: &str) {
        let fx = fixture();
        let params = params(&fx);
        for case in fx["select_cases"].as_array().unwrap() {
            let theta = case["theta"].as_f64().unwrap();
            let adm = indices(&case["administered"]);
            let want = &params[case[key].as_u64().unwrap() as usize].item;
            let got = choice(&params, rule, theta, &adm);
            assert_eq!(&got, want, "θ = {theta}, administered {adm:?}");
        }
    }

    #[test]
    fn mfi_choice_equals_catsim_max_info_selector() {
        assert_choices_match(SelectionRule::Mfi, "max_info_choice");
    }

    #[test]
    fn b_matching_choice_equals_catsim_urry_selector() {
        assert_choices_match(SelectionRule::BMatching, "urry_choice");
    }

    /// Information agrees to 1e−9 relative wherever catsim's own arithmetic is that
    /// accurate. catsim's `inf_hpc` forms 1 − P and P − c by subtraction from P, which
    /// loses digits when P → 1 or P → c; examflow computes both from exp(−|z|) directly.
    /// So the tolerance is 1e−9 + 1e−15·(1/(1 − P) + c/(P − c)) relative (catsim's rounding
    /// of P, amplified). In the fixture 1 − P ≥ 4.6e−6 and P − c ≥ 6.3e−7 for every value,
    /// and the largest difference is 8.5e−12.
    #[test]
    fn information_equals_catsim_to_1e9_relative() {
        let fx = fixture();
        let params = params(&fx);
        let bank = CatBank::from_params(params.clone()).unwrap();
        let mut compared = 0;
        let mut worst = 0.0f64;
        for case in fx["select_cases"].as_array().unwrap() {
            let Some(info) = case["info"].as_array() else {
                continue;
            };
            let theta = case["theta"].as_f64().unwrap();
            let cfg = CatConfig {
                rule: SelectionRule::Mfi,
                start: StartRule {
                    theta,
                    ..Default::default()
                },
                ..Default::default()
            };
            let crit = CatSession::start(&bank, &cfg, 1)
                .unwrap()
                .0
                .criteria(&bank)
                .unwrap();
            for ((p, got), want) in params.iter().zip(&crit).zip(info) {
                let (got, want) = (got.unwrap(), want.as_f64().unwrap());
                // 1 − P and P − c, accurately.
                let q = (1.0 - p.c) / (1.0 + (p.a * (theta - p.b)).exp());
                let pc = (1.0 - p.c) / (1.0 + (-p.a * (theta - p.b)).exp());
                let rel = (got - want).abs() / want.abs();
                assert!(
                    rel <= 1e-9 + 1e-15 * (1.0 / q + p.c / pc),
                    "{} at θ = {theta}: examflow {got:e}, catsim {want:e} (1 − P = {q:e})",
                    p.item
                );
                worst = worst.max(rel);
                compared += 1;
            }
        }
        assert!(compared >= 1000, "{compared}");
        println!("information: {compared} values, max relative difference {worst:e}");
    }

    /// catsim's default `NumericalSearchEstimator` (scipy's bounded Brent, xatol 1e−5) is
    /// within 1e−5 of examflow's MLE (largest difference in the fixture 1.6e−6); its
    /// golden-section search with tol 1e−10 within 5e−7 (largest 8.6e−8). Neither can do
    /// better: both compare log-likelihood values, which are flat to second order at the
    /// maximum, so θ is located only to ≈ √ε relative; examflow solves the score equation.
    #[test]
    fn mle_equals_catsim_numerical_search() {
        let fx = fixture();
        let params = params(&fx);
        let (mut worst_default, mut worst_precise) = (0.0f64, 0.0f64);
        for case in fx["mle_cases"].as_array().unwrap() {
            let adm = indices(&case["administered"]);
            let resp: Vec<(&ItemParams, bool)> = adm
                .iter()
                .zip(case["responses"].as_array().unwrap())
                .map(|(&i, x)| (&params[i], x.as_bool().unwrap()))
                .collect();
            let e = estimate_ability(&resp, Estimator::Mle, Prior::default());
            let d_default = (e.theta - case["mle_bounded"].as_f64().unwrap()).abs();
            let d_precise = (e.theta - case["mle_golden2"].as_f64().unwrap()).abs();
            assert!(d_default <= 1e-5, "{case}: examflow {}", e.theta);
            assert!(d_precise <= 5e-7, "{case}: examflow {}", e.theta);
            worst_default = worst_default.max(d_default);
            worst_precise = worst_precise.max(d_precise);
        }
        println!("MLE: max |Δθ| vs bounded {worst_default:e}, vs golden2 {worst_precise:e}");
    }

    /// EAP on examflow's grid (61 nodes on [−6, 6], N(0, 1) prior) from catsim's
    /// log-likelihood agrees to 1e−12 (largest difference in the fixture 3.6e−15; catsim's
    /// log(1 − P) by subtraction loses digits only where P → 1, at nodes whose posterior
    /// weight is negligible). catsim itself has no EAP estimator.
    #[test]
    fn eap_equals_grid_eap_from_catsim_likelihood() {
        let fx = fixture();
        let params = params(&fx);
        let mut worst = 0.0f64;
        for case in fx["mle_cases"].as_array().unwrap() {
            let adm = indices(&case["administered"]);
            let resp: Vec<(&ItemParams, bool)> = adm
                .iter()
                .zip(case["responses"].as_array().unwrap())
                .map(|(&i, x)| (&params[i], x.as_bool().unwrap()))
                .collect();
            let e = estimate_ability(&resp, Estimator::Eap, Prior::default());
            let dt = (e.theta - case["eap_grid"].as_f64().unwrap()).abs();
            let ds = (e.se - case["eap_grid_sd"].as_f64().unwrap()).abs();
            assert!(dt <= 1e-12 && ds <= 1e-12, "{case}: examflow {e:?}");
            worst = worst.max(dt).max(ds);
        }
        println!("EAP: max |Δ| (θ and SD) {worst:e}");
    }
}

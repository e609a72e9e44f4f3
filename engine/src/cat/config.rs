//! CAT configuration. Every struct has defaults and `deny_unknown_fields`, so an API
//! client may send any subset, e.g. `{"rule": "kl", "stop": {"se": 0.3, "max_length": 40}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CatError;

/// Ability estimator used after each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Posterior mean on the grid; SE = posterior SD (default).
    #[default]
    Eap,
    /// Posterior mode; SE = 1/√(I(θ̂) + 1/σ²).
    Map,
    /// Maximum likelihood; SE = 1/√I(θ̂). Infinite while all answers are right (or all
    /// wrong): then [`MleFallback`] applies.
    Mle,
    /// Warm's (1989) weighted likelihood: root of ∂ln L/∂θ + J(θ)/(2I(θ)) = 0 with
    /// J = Σ P′P″/(PQ); finite for all-right / all-wrong 1PL/2PL patterns. SE = 1/√I(θ̂).
    Wle,
}

/// Item selection criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionRule {
    /// Maximum Fisher information at θ̂ (default).
    #[default]
    Mfi,
    /// Kullback–Leibler information (Chang & Ying 1996) integrated over
    /// [θ̂ − δ, θ̂ + δ] with δ = `kl_window_z`·SE (at least 0.05), clipped to the grid.
    Kl,
    /// Posterior-weighted KL: ∫ KL(θ̂ ‖ θ) π(θ | x) dθ.
    Klp,
    /// Maximum posterior-weighted Fisher information: ∫ I(θ) π(θ | x) dθ.
    Mpwi,
    /// Difficulty closest to θ̂.
    BMatching,
    /// Uniformly at random among the eligible items.
    Random,
}

fn default_k() -> usize {
    5
}
fn one() -> f64 {
    1.0
}

/// Exposure control, applied on top of the selection rule's ranking.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExposureControl {
    #[default]
    None,
    /// Uniformly at random among the `k` best items (Kingsbury & Zara 1989).
    Randomesque {
        #[serde(default = "default_k")]
        k: usize,
    },
    /// Sympson & Hetter (1985): walk the ranking; item i is administered with probability
    /// Kᵢ, otherwise it is blocked for the rest of this examinee's test and the next one
    /// is tried. Items missing from `k_params` have Kᵢ = 1. If every candidate is
    /// rejected the best one is administered. See [`super::calibrate_sympson_hetter`].
    SympsonHetter {
        #[serde(default)]
        k_params: BTreeMap<String, f64>,
    },
    /// Progressive method (Revuelta & Ponsoda 1998): score Wᵢ = (1 − s)·Rᵢ + s·Iᵢ where Iᵢ
    /// is the rule's criterion (shifted so the worst eligible item scores 0),
    /// Rᵢ ~ U(0, max Iᵢ) and s = (answered / max_length)^acceleration.
    Progressive {
        #[serde(default = "one")]
        acceleration: f64,
    },
}

/// Content balancing. Topics are the items' `topic` strings.
///
/// * `targets`: Kingsbury–Zara (1989) proportions (normalised to sum 1). Before each
///   selection the topic with the largest (target − administered share) that still has an
///   eligible item is chosen and the item is picked within it. Untagged items, and topics
///   without a target, are only used when no targeted topic has an eligible item.
/// * `min` / `max`: hard counts. A topic at its max is closed. When the remaining
///   places (max_length − answered) are just enough for the unmet minimums, only topics
///   below their minimum are open. The test does not stop early (SE, classification)
///   while a minimum is unmet, unless no eligible item of that topic remains.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConstraints {
    pub targets: BTreeMap<String, f64>,
    pub min: BTreeMap<String, usize>,
    pub max: BTreeMap<String, usize>,
}

/// How a classification against a cut score is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassMethod {
    /// Stop when θ̂ ± z·SE excludes the cut (Kingsbury & Weiss 1983).
    #[default]
    Ci,
    /// Wald's SPRT between θ₁ = cut − δ and θ₂ = cut + δ (Reckase 1983; Eggen 1999):
    /// log LR = ln L(θ₂) − ln L(θ₁); "above" when ≥ ln((1 − β)/α), "below" when
    /// ≤ ln(β/(1 − α)).
    Sprt,
}

fn z196() -> f64 {
    1.96
}
fn d025() -> f64 {
    0.25
}
fn a005() -> f64 {
    0.05
}

/// Classification against a cut score (stops with reason `classified`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationRule {
    pub cut: f64,
    #[serde(default)]
    pub method: ClassMethod,
    /// CI half-width multiplier (default 1.96).
    #[serde(default = "z196")]
    pub z: f64,
    /// SPRT indifference half-width δ (default 0.25).
    #[serde(default = "d025")]
    pub delta: f64,
    /// SPRT nominal error rates (default 0.05 each).
    #[serde(default = "a005")]
    pub alpha: f64,
    #[serde(default = "a005")]
    pub beta: f64,
}

impl ClassificationRule {
    pub fn ci(cut: f64, z: f64) -> Self {
        Self {
            cut,
            method: ClassMethod::Ci,
            z,
            delta: 0.25,
            alpha: 0.05,
            beta: 0.05,
        }
    }

    pub fn sprt(cut: f64, delta: f64, alpha: f64, beta: f64) -> Self {
        Self {
            cut,
            method: ClassMethod::Sprt,
            z: 1.96,
            delta,
            alpha,
            beta,
        }
    }
}

/// When to stop. Checked after each answer, in this order: `max_length`; then, once
/// `min_length` is reached and content minimums are met, classification, then `se`.
/// A fixed-length test is `min_length = max_length = n` with no `se`/classification.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StopRule {
    pub min_length: usize,
    pub max_length: usize,
    /// Stop when SE ≤ this.
    pub se: Option<f64>,
    pub classification: Option<ClassificationRule>,
}

impl Default for StopRule {
    /// Fixed length 30.
    fn default() -> Self {
        Self {
            min_length: 1,
            max_length: 30,
            se: None,
            classification: None,
        }
    }
}

impl StopRule {
    pub fn fixed(n: usize) -> Self {
        Self {
            min_length: n,
            max_length: n,
            se: None,
            classification: None,
        }
    }

    pub fn se(se: f64, min_length: usize, max_length: usize) -> Self {
        Self {
            min_length,
            max_length,
            se: Some(se),
            classification: None,
        }
    }
}

/// How the first item is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum FirstItem {
    /// By the selection rule (and exposure control) at θ₀ with the prior as posterior.
    #[default]
    ByRule,
    /// Uniformly at random among the `k` eligible items whose b is closest to θ₀ (medium
    /// difficulty with the default θ₀ = 0).
    RandomMedium {
        #[serde(default = "default_k")]
        k: usize,
    },
}

/// Start of the test.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartRule {
    /// Provisional θ before the first answer (default 0).
    pub theta: f64,
    pub first_item: FirstItem,
}

/// Normal prior on θ, used by EAP, MAP, the posterior-weighted rules and the MLE fallback.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prior {
    pub mean: f64,
    pub sd: f64,
}

impl Default for Prior {
    fn default() -> Self {
        Self { mean: 0.0, sd: 1.0 }
    }
}

fn step_default() -> f64 {
    0.7
}

/// What MLE reports while the responses are all right or all wrong (no finite MLE).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum MleFallback {
    /// The EAP estimate and posterior SD (default; as mirtCAT / catR users usually do).
    #[default]
    Eap,
    /// Fixed step-size rule (Dodd 1990): θ moves by ±`step` from the previous value
    /// (up after a right answer, down after a wrong one), within [−6, 6]; the reported SE
    /// is the posterior SD.
    StepSize {
        #[serde(default = "step_default")]
        step: f64,
    },
}

fn kl_z() -> f64 {
    3.0
}

/// Full CAT configuration (JSON: any subset of the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatConfig {
    pub estimator: Estimator,
    pub rule: SelectionRule,
    /// KL window: δ = kl_window_z·SE (default 3).
    #[serde(default = "kl_z")]
    pub kl_window_z: f64,
    pub exposure: ExposureControl,
    pub content: Option<ContentConstraints>,
    pub stop: StopRule,
    pub start: StartRule,
    pub prior: Prior,
    pub mle_fallback: MleFallback,
}

impl Default for CatConfig {
    fn default() -> Self {
        Self {
            estimator: Estimator::default(),
            rule: SelectionRule::default(),
            kl_window_z: kl_z(),
            exposure: ExposureControl::default(),
            content: None,
            stop: StopRule::default(),
            start: StartRule::default(),
            prior: Prior::default(),
            mle_fallback: MleFallback::default(),
        }
    }
}

fn fin_pos(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

impl CatConfig {
    /// Checks ranges (bank-independent).
    pub fn validate(&self) -> Result<(), CatError> {
        let err = |m: String| Err(CatError::Config(m));
        let s = &self.stop;
        if s.max_length == 0 {
            return err("stop.max_length must be ≥ 1".into());
        }
        if s.min_length > s.max_length {
            return err(format!(
                "stop.min_length {} > stop.max_length {}",
                s.min_length, s.max_length
            ));
        }
        if let Some(se) = s.se
            && !fin_pos(se)
        {
            return err(format!("stop.se must be positive, got {se}"));
        }
        if let Some(c) = &s.classification {
            if !c.cut.is_finite() {
                return err("classification.cut must be finite".into());
            }
            if !fin_pos(c.z) || !fin_pos(c.delta) {
                return err("classification.z and .delta must be positive".into());
            }
            if !(c.alpha > 0.0 && c.alpha < 0.5 && c.beta > 0.0 && c.beta < 0.5) {
                return err("classification.alpha and .beta must be in (0, 0.5)".into());
            }
        }
        if !fin_pos(self.kl_window_z) {
            return err("kl_window_z must be positive".into());
        }
        if !self.prior.mean.is_finite() || !fin_pos(self.prior.sd) {
            return err("prior needs a finite mean and a positive sd".into());
        }
        if !self.start.theta.is_finite() {
            return err("start.theta must be finite".into());
        }
        if let FirstItem::RandomMedium { k: 0 } = self.start.first_item {
            return err("start.first_item.k must be ≥ 1".into());
        }
        match &self.exposure {
            ExposureControl::Randomesque { k: 0 } => {
                return err("exposure.k must be ≥ 1".into());
            }
            ExposureControl::SympsonHetter { k_params } => {
                if let Some((id, v)) = k_params.iter().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
                    return err(format!("exposure.k_params[{id:?}] = {v} not in [0, 1]"));
                }
            }
            ExposureControl::Progressive { acceleration } if !fin_pos(*acceleration) => {
                return err("exposure.acceleration must be positive".into());
            }
            _ => {}
        }
        if let MleFallback::StepSize { step } = self.mle_fallback
            && !fin_pos(step)
        {
            return err("mle_fallback.step must be positive".into());
        }
        if let Some(c) = &self.content {
            if let Some((t, v)) = c
                .targets
                .iter()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return err(format!("content.targets[{t:?}] = {v} must be ≥ 0"));
            }
            for (t, &mn) in &c.min {
                if let Some(&mx) = c.max.get(t)
                    && mn > mx
                {
                    return err(format!("content topic {t:?}: min {mn} > max {mx}"));
                }
            }
            let total: usize = c.min.values().sum();
            if total > s.max_length {
                return err(format!(
                    "content minimums add up to {total} > stop.max_length {}",
                    s.max_length
                ));
            }
        }
        Ok(())
    }
}

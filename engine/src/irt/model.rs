//! Item response functions, item parameters, information functions and the quadrature grid.
//!
//! All models use the logistic metric with D = 1:
//! `P(θ) = c + (1 − c) / (1 + exp(−a(θ − b)))`.

use serde::{Deserialize, Serialize};

use super::IrtError;

/// Which dichotomous IRT model to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum Model {
    /// a = 1 for every item, c = 0; one difficulty per item.
    #[serde(rename = "rasch")]
    Rasch,
    /// One common discrimination a (estimated) shared by every item, c = 0.
    #[serde(rename = "1pl")]
    OnePl,
    /// Item-specific a and b, c = 0.
    #[serde(rename = "2pl")]
    TwoPl,
    /// Item-specific a, b and lower asymptote c (MAP with a Beta prior on c).
    #[serde(rename = "3pl")]
    ThreePl,
}

impl Model {
    /// Number of free parameters for `n_items` estimable items (Rasch = items, 1PL = items
    /// + 1, 2PL = 2·items, 3PL = 3·items).
    pub fn n_params(self, n_items: usize) -> usize {
        match self {
            Model::Rasch => n_items,
            Model::OnePl => n_items + 1,
            Model::TwoPl => 2 * n_items,
            Model::ThreePl => 3 * n_items,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Rasch => "rasch",
            Model::OnePl => "1pl",
            Model::TwoPl => "2pl",
            Model::ThreePl => "3pl",
        }
    }
}

/// Estimated parameters of one item.
///
/// Items that are not estimable (every respondent right, every respondent wrong, or no
/// respondents) have `estimable == false`, `a`, `b`, `c` = NaN (serialised as JSON `null`)
/// and no standard errors; they are left out of the estimation and of ability scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemParams {
    pub item: String,
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub se_a: Option<f64>,
    pub se_b: Option<f64>,
    pub se_c: Option<f64>,
    /// Proportion correct among the persons who answered the item.
    pub p_value: f64,
    pub estimable: bool,
}

impl ItemParams {
    /// An estimable item with known parameters and no standard errors (for scoring and
    /// simulation).
    pub fn new(item: impl Into<String>, a: f64, b: f64, c: f64) -> Self {
        Self {
            item: item.into(),
            a,
            b,
            c,
            se_a: None,
            se_b: None,
            se_c: None,
            p_value: f64::NAN,
            estimable: true,
        }
    }
}

/// Logistic function, numerically safe for large |x|.
#[inline]
pub fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` without overflow.
#[inline]
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// P(correct | θ) = c + (1 − c)·logistic(a(θ − b)).
#[inline]
pub fn probability(a: f64, b: f64, c: f64, theta: f64) -> f64 {
    c + (1.0 - c) * logistic(a * (theta - b))
}

/// Fisher information of one item at θ: `a²·(P − c)²/(1 − c)²·(1 − P)/P` (= a²PQ when
/// c = 0). Zero for a non-estimable item.
pub fn item_information(params: &ItemParams, theta: f64) -> f64 {
    if !params.estimable {
        return 0.0;
    }
    let (a, b, c) = (params.a, params.b, params.c);
    let s = logistic(a * (theta - b));
    if c == 0.0 {
        return a * a * s * (1.0 - s);
    }
    let p = c + (1.0 - c) * s;
    if p <= 0.0 {
        return 0.0;
    }
    let num = (p - c) / (1.0 - c);
    a * a * num * num * (1.0 - p) / p
}

/// Test information at θ: the sum of the estimable items' information.
pub fn test_information(params: &[ItemParams], theta: f64) -> f64 {
    params.iter().map(|p| item_information(p, theta)).sum()
}

/// Smallest number of quadrature points accepted.
pub const MIN_QUADRATURE_POINTS: usize = 41;

/// A fixed quadrature grid for θ ~ N(0, 1): equally spaced nodes on `[−r, r]` with weights
/// proportional to the standard normal density, normalised to sum to 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quadrature {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
    pub log_weights: Vec<f64>,
}

impl Default for Quadrature {
    /// 61 points on [−6, 6].
    fn default() -> Self {
        Self::normal(61, 6.0).expect("valid default grid")
    }
}

impl Quadrature {
    /// `n ≥ 41` equally spaced points on `[−half_range, half_range]` (half_range > 0).
    /// The same nodes with weights of N(`mean`, `sd`²) (normalised over the nodes): the
    /// latent distribution a fixed-anchor calibration estimates.
    pub fn with_normal(&self, mean: f64, sd: f64) -> Self {
        let z = |t: f64| (t - mean) / sd;
        let log_raw: Vec<f64> = self.nodes.iter().map(|&t| -0.5 * z(t) * z(t)).collect();
        let max = log_raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = log_raw.iter().map(|l| (l - max).exp()).sum();
        let log_weights: Vec<f64> = log_raw.iter().map(|l| l - max - total.ln()).collect();
        Self {
            nodes: self.nodes.clone(),
            weights: log_weights.iter().map(|l| l.exp()).collect(),
            log_weights,
        }
    }

    pub fn normal(n: usize, half_range: f64) -> Result<Self, IrtError> {
        if !(MIN_QUADRATURE_POINTS..=10_000).contains(&n) {
            return Err(IrtError::Config(format!(
                "quadrature needs {MIN_QUADRATURE_POINTS}..=10000 points, got {n}"
            )));
        }
        if !(half_range.is_finite() && half_range > 0.0) {
            return Err(IrtError::Config(format!(
                "quadrature range must be positive, got {half_range}"
            )));
        }
        let step = 2.0 * half_range / (n - 1) as f64;
        let nodes: Vec<f64> = (0..n).map(|k| -half_range + step * k as f64).collect();
        let raw: Vec<f64> = nodes.iter().map(|t| (-0.5 * t * t).exp()).collect();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
        let log_weights = nodes.iter().map(|t| -0.5 * t * t - total.ln()).collect();
        Ok(Self {
            nodes,
            weights,
            log_weights,
        })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Spacing between adjacent nodes.
    pub fn step(&self) -> f64 {
        self.nodes[1] - self.nodes[0]
    }
}

//! Monte-Carlo evaluation of a CAT design, and Sympson–Hetter calibration.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::CatError;
use super::bank::CatBank;
use super::config::{CatConfig, ExposureControl};
use super::estimate::prob;
use super::rng::CatRng;
use super::session::{CatSession, Side, Step, StopReason};

/// True abilities of the simulees. JSON: `{"kind":"normal","mean":0,"sd":1}` or
/// `{"kind":"fixed","values":[-1,0,1]}` (simulee j gets `values[j % len]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ThetaDistribution {
    Normal { mean: f64, sd: f64 },
    Fixed { values: Vec<f64> },
}

impl Default for ThetaDistribution {
    fn default() -> Self {
        Self::Normal { mean: 0.0, sd: 1.0 }
    }
}

/// Exposure of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemExposure {
    pub item: String,
    /// Share of simulees who were administered the item.
    pub rate: f64,
}

/// Summary of a simulation (all means over simulees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationReport {
    pub n_examinees: usize,
    /// mean(θ̂ − θ)
    pub bias: f64,
    pub rmse: f64,
    pub mean_abs_error: f64,
    /// Mean reported SE.
    pub mean_se: f64,
    /// Pearson correlation of θ and θ̂ (NaN → null if either is constant).
    pub correlation: Option<f64>,
    pub mean_length: f64,
    pub sd_length: f64,
    pub min_length: usize,
    pub max_length: usize,
    /// Largest item exposure rate.
    pub max_exposure: f64,
    /// Share of enabled items never administered.
    pub unused_share: f64,
    /// Mean test overlap rate (Chen, Ankenmann & Spray 2003): the expected number of
    /// items two random simulees share, divided by the mean test length,
    /// Σᵢ nᵢ(nᵢ − 1) / (N(N − 1)·L̄) with nᵢ the number of simulees who saw item i.
    pub overlap: f64,
    /// χ² index of exposure spread, Σᵢ (rᵢ − L̄/M)² / (L̄/M) over the M enabled items
    /// (Chang & Ying 1999).
    pub exposure_chi2: f64,
    /// Per item, in bank order.
    pub exposure_rates: Vec<ItemExposure>,
    /// Count per stop reason ("max_length", "se_reached", …).
    pub stop_reasons: BTreeMap<String, usize>,
    /// With a classification rule: share of simulees classified on the correct side of
    /// the cut (true θ ≥ cut ↔ above).
    pub classification_accuracy: Option<f64>,
}

pub(crate) struct Outcome {
    pub theta: f64,
    pub est: f64,
    pub se: f64,
    pub length: usize,
    pub reason: StopReason,
    pub decision: Option<Side>,
    pub administered: Vec<usize>,
    pub blocked: Vec<usize>,
}

fn validate(n: usize, dist: &ThetaDistribution) -> Result<(), CatError> {
    if n == 0 {
        return Err(CatError::Config("n_examinees must be ≥ 1".into()));
    }
    match dist {
        ThetaDistribution::Normal { mean, sd }
            if !(mean.is_finite() && sd.is_finite() && *sd >= 0.0) =>
        {
            Err(CatError::Config(
                "theta distribution needs a finite mean and sd ≥ 0".into(),
            ))
        }
        ThetaDistribution::Fixed { values }
            if values.is_empty() || values.iter().any(|v| !v.is_finite()) =>
        {
            Err(CatError::Config(
                "fixed theta values must be non-empty and finite".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// Runs one simulee: the session's own seed and the response stream are derived from
/// (seed, j), so results do not depend on thread scheduling.
pub(crate) fn run_one(
    bank: &CatBank,
    config: &CatConfig,
    dist: &ThetaDistribution,
    seed: u64,
    j: usize,
) -> Result<Outcome, CatError> {
    let theta = match dist {
        ThetaDistribution::Normal { mean, sd } => {
            mean + sd * CatRng::derived(seed, j as u64, 0).normal()
        }
        ThetaDistribution::Fixed { values } => values[j % values.len()],
    };
    let session_seed = CatRng::derived(seed, j as u64, 1).next_u64();
    let mut resp = CatRng::derived(seed, j as u64, 2);
    let (mut s, mut item) = CatSession::start(bank, config, session_seed)?;
    loop {
        let i = bank.index_of(&item).expect("bank item");
        let correct = resp.uniform() < prob(bank.a[i], bank.b[i], bank.c[i], theta);
        match s.answer(bank, &item, correct)? {
            Step::Next { item: next } => item = next,
            Step::Finished {
                theta: est,
                se,
                items_used,
                stop_reason,
                classification,
            } => {
                let (administered, blocked) = s.exposure_indices();
                return Ok(Outcome {
                    theta,
                    est,
                    se,
                    length: items_used,
                    reason: stop_reason,
                    decision: classification.map(|c| c.decision),
                    administered,
                    blocked,
                });
            }
        }
    }
}

pub(crate) fn run_all(
    bank: &CatBank,
    config: &CatConfig,
    n: usize,
    dist: &ThetaDistribution,
    seed: u64,
) -> Result<Vec<Outcome>, CatError> {
    config.validate()?;
    validate(n, dist)?;
    (0..n)
        .into_par_iter()
        .map(|j| run_one(bank, config, dist, seed, j))
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// Simulates `n_examinees` CATs with the given design (deterministic for a seed,
/// parallel over simulees) and summarises precision, length and item exposure.
pub fn simulate(
    bank: &CatBank,
    config: &CatConfig,
    n_examinees: usize,
    theta_distribution: &ThetaDistribution,
    seed: u64,
) -> Result<SimulationReport, CatError> {
    let out = run_all(bank, config, n_examinees, theta_distribution, seed)?;
    Ok(report(bank, config, &out))
}

pub(crate) fn report(bank: &CatBank, config: &CatConfig, out: &[Outcome]) -> SimulationReport {
    let n = out.len();
    let nf = n as f64;
    let bias = mean(out.iter().map(|o| o.est - o.theta));
    let rmse = mean(out.iter().map(|o| (o.est - o.theta).powi(2))).sqrt();
    let mae = mean(out.iter().map(|o| (o.est - o.theta).abs()));
    let mean_se = mean(out.iter().map(|o| o.se));
    let mt = mean(out.iter().map(|o| o.theta));
    let me = mean(out.iter().map(|o| o.est));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for o in out {
        sxy += (o.theta - mt) * (o.est - me);
        sxx += (o.theta - mt).powi(2);
        syy += (o.est - me).powi(2);
    }
    let correlation = (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt());
    let mean_length = mean(out.iter().map(|o| o.length as f64));
    let sd_length = if n > 1 {
        (out.iter()
            .map(|o| (o.length as f64 - mean_length).powi(2))
            .sum::<f64>()
            / (nf - 1.0))
            .sqrt()
    } else {
        0.0
    };
    let mut counts = vec![0usize; bank.len()];
    for o in out {
        for &i in &o.administered {
            counts[i] += 1;
        }
    }
    let rates: Vec<f64> = counts.iter().map(|&c| c as f64 / nf).collect();
    let enabled: Vec<usize> = (0..bank.len()).filter(|&i| bank.enabled(i)).collect();
    let m = enabled.len().max(1) as f64;
    let unused = enabled.iter().filter(|&&i| counts[i] == 0).count() as f64 / m;
    let overlap = if n > 1 && mean_length > 0.0 {
        counts
            .iter()
            .map(|&c| (c * c.saturating_sub(1)) as f64)
            .sum::<f64>()
            / (nf * (nf - 1.0) * mean_length)
    } else {
        0.0
    };
    let expected = mean_length / m;
    let exposure_chi2 = if expected > 0.0 {
        enabled
            .iter()
            .map(|&i| (rates[i] - expected).powi(2) / expected)
            .sum()
    } else {
        0.0
    };
    let mut stop_reasons = BTreeMap::new();
    for o in out {
        *stop_reasons
            .entry(o.reason.as_str().to_string())
            .or_insert(0) += 1;
    }
    let classification_accuracy = config.stop.classification.map(|cr| {
        mean(out.iter().map(|o| {
            let truth = if o.theta >= cr.cut {
                Side::Above
            } else {
                Side::Below
            };
            f64::from(u8::from(o.decision == Some(truth)))
        }))
    });
    SimulationReport {
        n_examinees: n,
        bias,
        rmse,
        mean_abs_error: mae,
        mean_se,
        correlation,
        mean_length,
        sd_length,
        min_length: out.iter().map(|o| o.length).min().unwrap_or(0),
        max_length: out.iter().map(|o| o.length).max().unwrap_or(0),
        max_exposure: rates.iter().copied().fold(0.0, f64::max),
        unused_share: unused,
        overlap,
        exposure_chi2,
        exposure_rates: (0..bank.len())
            .map(|i| ItemExposure {
                item: bank.id(i).to_string(),
                rate: rates[i],
            })
            .collect(),
        stop_reasons,
        classification_accuracy,
    }
}

fn sh_defaults_n() -> usize {
    1000
}
fn sh_defaults_it() -> usize {
    20
}
fn sh_tol() -> f64 {
    0.01
}

/// Options of [`calibrate_sympson_hetter`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShOptions {
    /// Target maximum exposure rate r_max.
    pub r_max: f64,
    #[serde(default = "sh_defaults_n")]
    pub n_examinees: usize,
    #[serde(default = "sh_defaults_it")]
    pub max_iterations: usize,
    /// Stop when the observed maximum exposure ≤ r_max + tolerance.
    #[serde(default = "sh_tol")]
    pub tolerance: f64,
}

impl ShOptions {
    pub fn new(r_max: f64) -> Self {
        Self {
            r_max,
            n_examinees: sh_defaults_n(),
            max_iterations: sh_defaults_it(),
            tolerance: sh_tol(),
        }
    }
}

/// Result of [`calibrate_sympson_hetter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShCalibration {
    /// Exposure parameters Kᵢ (items with Kᵢ = 1 are omitted); plug into
    /// [`ExposureControl::SympsonHetter`].
    pub k_params: BTreeMap<String, f64>,
    /// Observed maximum administration rate in each iteration.
    pub max_exposure: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// Sympson & Hetter (1985) iterative adjustment of the exposure parameters. Start with
/// Kᵢ = 1; each iteration simulates `n_examinees` CATs with the current Kᵢ (fresh
/// simulees each iteration), measures P(Sᵢ) = share of simulees for whom item i was
/// *selected* (administered or rejected by the lottery), and sets
/// Kᵢ = r_max / P(Sᵢ) if P(Sᵢ) > r_max, else 1. It stops when the largest
/// administration rate P(Aᵢ) is ≤ r_max + tolerance (then the Kᵢ just used are
/// returned) or after `max_iterations` (then the last updated Kᵢ are returned).
/// `config.exposure` is ignored (replaced by Sympson–Hetter).
pub fn calibrate_sympson_hetter(
    bank: &CatBank,
    config: &CatConfig,
    options: &ShOptions,
    theta_distribution: &ThetaDistribution,
    seed: u64,
) -> Result<ShCalibration, CatError> {
    let r = options.r_max;
    if !(r > 0.0 && r <= 1.0) {
        return Err(CatError::Config(format!(
            "r_max must be in (0, 1], got {r}"
        )));
    }
    if options.max_iterations == 0 {
        return Err(CatError::Config("max_iterations must be ≥ 1".into()));
    }
    let mut k = BTreeMap::new();
    let mut history = Vec::new();
    let mut converged = false;
    let nf = options.n_examinees as f64;
    for it in 0..options.max_iterations {
        let mut cfg = config.clone();
        cfg.exposure = ExposureControl::SympsonHetter {
            k_params: k.clone(),
        };
        let out = run_all(
            bank,
            &cfg,
            options.n_examinees,
            theta_distribution,
            CatRng::derived(seed, it as u64, 7).next_u64(),
        )?;
        let mut sel = vec![0usize; bank.len()];
        let mut adm = vec![0usize; bank.len()];
        for o in &out {
            for &i in &o.administered {
                adm[i] += 1;
                sel[i] += 1;
            }
            for &i in &o.blocked {
                if !o.administered.contains(&i) {
                    sel[i] += 1;
                }
            }
        }
        let max_a = adm.iter().map(|&c| c as f64 / nf).fold(0.0, f64::max);
        history.push(max_a);
        if max_a <= r + options.tolerance {
            converged = true;
            break;
        }
        k.clear();
        for (i, &s) in sel.iter().enumerate() {
            let ps = s as f64 / nf;
            if ps > r {
                k.insert(bank.id(i).to_string(), r / ps);
            }
        }
    }
    Ok(ShCalibration {
        k_params: k,
        iterations: history.len(),
        max_exposure: history,
        converged,
    })
}

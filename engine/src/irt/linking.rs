//! Linking two calibrations onto one scale through the items they share.
//!
//! Each calibration fixes its own scale (abilities ~ N(0, 1) in the group that answered);
//! two calibrations of one bank agree only up to a linear change of θ. Linking finds the
//! constants A and B that put the `new` calibration on the `old` one's scale:
//! `θ_old = A·θ_new + B`, so a new item's parameters become `a / A`, `A·b + B`, `c`.
//!
//! Methods (Kolen & Brennan, *Test Equating, Scaling, and Linking*, ch. 6), over the common
//! (anchor) items, with the conventions of R's `plink` (D = 1, non-symmetric criteria,
//! 40 equally weighted points from −4 to 4 on the old scale by default):
//! - mean/mean: `A = mean(a_new) / mean(a_old)`, `B = mean(b_old) − A·mean(b_new)`;
//! - mean/sigma: `A = sd(b_old) / sd(b_new)`, B as above;
//! - Haebara: minimises the squared differences between each anchor's characteristic
//!   curves, summed over items and points;
//! - Stocking–Lord: minimises the squared difference between the anchors' test
//!   characteristic curves (the expected number correct).
//!
//! The characteristic-curve criteria are minimised by Levenberg–Marquardt (analytic
//! Jacobian) from the mean/sigma constants. Each anchor's drift is the area between its old curve and its linked new
//! curve, weighted by the N(0, 1) density on the old scale; anchors drifting more than a
//! threshold are left out and the constants computed again without them.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::IrtError;
use super::model::ItemParams;

/// How the linking constants are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkingMethod {
    StockingLord,
    Haebara,
    MeanMean,
    MeanSigma,
}

impl LinkingMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkingMethod::StockingLord => "stocking_lord",
            LinkingMethod::Haebara => "haebara",
            LinkingMethod::MeanMean => "mean_mean",
            LinkingMethod::MeanSigma => "mean_sigma",
        }
    }

    /// Parses `stocking_lord`, `stocking-lord`, `haebara`, `mean_mean`, `mean-sigma`, ...
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "stocking_lord" | "sl" => Some(LinkingMethod::StockingLord),
            "haebara" | "hb" => Some(LinkingMethod::Haebara),
            "mean_mean" | "mm" => Some(LinkingMethod::MeanMean),
            "mean_sigma" | "ms" => Some(LinkingMethod::MeanSigma),
            _ => None,
        }
    }
}

/// Options of [`link`].
#[derive(Debug, Clone)]
pub struct LinkingOptions {
    pub method: LinkingMethod,
    /// Points on the old scale where the characteristic curves are compared, and their
    /// weights. Default: 40 points from −4 to 4, weight 1 each (plink's default).
    pub points: Vec<(f64, f64)>,
    /// Anchors whose drift (area between curves) exceeds this are left out. Default 0.05:
    /// on Kolen & Brennan's Table 6.5 example it sets aside item 27, the item they set
    /// aside, and no other. `f64::INFINITY` keeps every anchor.
    pub drift_threshold: f64,
}

impl Default for LinkingOptions {
    fn default() -> Self {
        LinkingOptions {
            method: LinkingMethod::StockingLord,
            points: uniform_points(40, -4.0, 4.0),
            drift_threshold: 0.05,
        }
    }
}

/// `n` equally spaced points from `lo` to `hi`, each of weight 1.
pub fn uniform_points(n: usize, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let step = if n > 1 {
        (hi - lo) / (n - 1) as f64
    } else {
        0.0
    };
    (0..n).map(|i| (lo + step * i as f64, 1.0)).collect()
}

/// One anchor's drift after linking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDrift {
    pub item: String,
    /// ∫ |P_old(θ) − P_new,linked(θ)| φ(θ) dθ: the expected absolute difference in the
    /// probability of a right answer, for abilities ~ N(0, 1) on the old scale.
    pub area: f64,
    /// Left out of the anchors for drifting more than the threshold.
    pub excluded: bool,
}

/// The constants that put the new calibration on the old one's scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linking {
    pub method: LinkingMethod,
    /// `θ_old = A·θ_new + B`.
    #[serde(rename = "A")]
    pub a: f64,
    #[serde(rename = "B")]
    pub b: f64,
    /// The anchors the constants were computed from (drifting ones left out).
    pub anchors: Vec<String>,
    /// Every common item, in the new calibration's order, with its drift under the final
    /// constants.
    pub drift: Vec<ItemDrift>,
}

impl Linking {
    /// A new-scale item on the old scale.
    pub fn transform(&self, item: &ItemParams) -> ItemParams {
        transform(item, self.a, self.b)
    }
}

fn transform(item: &ItemParams, a: f64, b: f64) -> ItemParams {
    let mut out = item.clone();
    out.a = item.a / a;
    out.b = a * item.b + b;
    out.se_a = item.se_a.map(|s| s / a);
    out.se_b = item.se_b.map(|s| s * a);
    out
}

/// Links `new` to `old` through the items both estimated (matched by id).
pub fn link(
    old: &[ItemParams],
    new: &[ItemParams],
    options: &LinkingOptions,
) -> Result<Linking, IrtError> {
    let weights_ok = options
        .points
        .iter()
        .all(|(theta, w)| theta.is_finite() && w.is_finite() && *w >= 0.0);
    if !weights_ok || options.points.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err(IrtError::Config(
            "linking needs points with finite θ and weights ≥ 0, not all 0".into(),
        ));
    }
    if options.drift_threshold.is_nan() || options.drift_threshold <= 0.0 {
        return Err(IrtError::Config(
            "the drift threshold must be above 0".into(),
        ));
    }
    let usable = |p: &ItemParams| {
        p.estimable && p.a.is_finite() && p.a > 0.0 && p.b.is_finite() && p.c.is_finite()
    };
    // The first usable old item of each id, as `old.iter().find` would give.
    let mut old_by_id: HashMap<&str, &ItemParams> = HashMap::with_capacity(old.len());
    for o in old.iter().filter(|o| usable(o)) {
        old_by_id.entry(o.item.as_str()).or_insert(o);
    }
    let pairs: Vec<(&ItemParams, &ItemParams)> = new
        .iter()
        .filter(|n| usable(n))
        .filter_map(|n| old_by_id.get(n.item.as_str()).map(|o| (*o, n)))
        .collect();
    let needed = if options.method == LinkingMethod::MeanSigma {
        2
    } else {
        1
    };
    if pairs.len() < needed {
        return Err(IrtError::Config(format!(
            "linking by {} needs at least {needed} common item(s) estimated in both \
             calibrations; found {}",
            options.method.as_str(),
            pairs.len()
        )));
    }
    let all = Anchors::new(&pairs, &options.points);
    let grid = DriftGrid::new();
    let mut kept: Vec<bool> = vec![true; pairs.len()];
    let mut start = None;
    let (mut a, mut b, mut areas);
    loop {
        let anchors = all.subset(&kept);
        (a, b) = constants(&anchors, options, start)?;
        areas = drift_areas(&all, &grid, a, b, |i| kept[i]);
        // Leave out the worst drifting anchor, one at a time, while enough remain.
        let worst = (0..pairs.len())
            .filter(|&i| kept[i] && areas[i] > options.drift_threshold)
            .max_by(|&x, &y| areas[x].total_cmp(&areas[y]));
        match worst {
            Some(i) if anchors.len() > needed => kept[i] = false,
            _ => break,
        }
        // The next round differs by one anchor: its optimum is close to this one.
        start = Some((a, b));
    }
    // The kept anchors' areas are already those under the final constants.
    let left_out = drift_areas(&all, &grid, a, b, |i| !kept[i]);
    let drift = pairs
        .iter()
        .enumerate()
        .map(|(i, (_, n))| ItemDrift {
            item: n.item.clone(),
            area: if kept[i] { areas[i] } else { left_out[i] },
            excluded: !kept[i],
        })
        .collect();
    Ok(Linking {
        method: options.method,
        a,
        b,
        anchors: pairs
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|((_, n), _)| n.item.clone())
            .collect(),
        drift,
    })
}

/// The drift area of every anchor `which` selects (NaN for the others), in parallel when
/// there are many: at a thousand anchors this is most of a linking's work.
fn drift_areas(
    all: &Anchors,
    grid: &DriftGrid,
    a: f64,
    b: f64,
    which: impl Fn(usize) -> bool + Sync,
) -> Vec<f64> {
    let area = |i: usize| {
        if which(i) {
            grid.area(all.old[i], linked(all.new[i], a, b))
        } else {
            f64::NAN
        }
    };
    // A few hundred anchors take about a millisecond: less than waking threads can cost
    // on a busy machine.
    if all.len() < 256 {
        (0..all.len()).map(area).collect()
    } else {
        (0..all.len())
            .into_par_iter()
            .with_min_len(32)
            .map(area)
            .collect()
    }
}

/// An item's (a, b, c), without its id: what the criteria and the drift need.
type Abc = [f64; 3];

fn linked(new: Abc, a: f64, b: f64) -> Abc {
    [new[0] / a, a * new[1] + b, new[2]]
}

fn logistic(abc: Abc, theta: f64) -> f64 {
    abc[2] + (1.0 - abc[2]) / (1.0 + (-abc[0] * (theta - abc[1])).exp())
}

/// The anchors as plain numbers, with each old curve at the points computed once: the
/// criterion is evaluated tens of times per linking, and the old side never changes.
struct Anchors {
    old: Vec<Abc>,
    new: Vec<Abc>,
    /// `old_curves[i * points + k]`: anchor i's old curve at point k.
    old_curves: Vec<f64>,
    points: Vec<(f64, f64)>,
}

impl Anchors {
    fn new(pairs: &[(&ItemParams, &ItemParams)], points: &[(f64, f64)]) -> Self {
        let abc = |p: &ItemParams| [p.a, p.b, p.c];
        let old: Vec<Abc> = pairs.iter().map(|(o, _)| abc(o)).collect();
        let old_curves = old
            .iter()
            .flat_map(|o| points.iter().map(|&(theta, _)| logistic(*o, theta)))
            .collect();
        Anchors {
            new: pairs.iter().map(|(_, n)| abc(n)).collect(),
            old,
            old_curves,
            points: points.to_vec(),
        }
    }

    fn subset(&self, kept: &[bool]) -> Anchors {
        let k = self.points.len();
        let pick = |v: &[Abc]| -> Vec<Abc> {
            v.iter()
                .zip(kept)
                .filter(|(_, k)| **k)
                .map(|(x, _)| *x)
                .collect()
        };
        Anchors {
            old: pick(&self.old),
            new: pick(&self.new),
            old_curves: self
                .old_curves
                .chunks(k.max(1))
                .zip(kept)
                .filter(|(_, k)| **k)
                .flat_map(|(c, _)| c.iter().copied())
                .collect(),
            points: self.points.clone(),
        }
    }

    fn len(&self) -> usize {
        self.old.len()
    }

    /// The criterion's sum of squares S at (A, B), with its Gauss–Newton gradient Jᵀr
    /// and matrix JᵀJ. Residuals: Stocking–Lord √w_k (Σ_i P_old,i(θ_k) − Σ_i P*_i(θ_k));
    /// Haebara √w_k (P_old,i(θ_k) − P*_i(θ_k)) for every anchor i. The linked new curve
    /// at θ is the new item's curve at u = (θ − B)/A, so ∂r/∂B = P′(u)/A and
    /// ∂r/∂A = P′(u)·u/A.
    fn normal_equations(&self, method: LinkingMethod, a: f64, b: f64) -> Normal {
        let k = self.points.len();
        let at_point = |p: usize| {
            let (theta, weight) = self.points[p];
            let mut out = Normal::default();
            let root = weight.sqrt();
            let u = (theta - b) / a;
            let (mut old_sum, mut new_sum, mut slope_sum) = (0.0, 0.0, 0.0);
            for (i, n) in self.new.iter().enumerate() {
                let sigma = 1.0 / (1.0 + (-n[0] * (u - n[1])).exp());
                let curve = n[2] + (1.0 - n[2]) * sigma;
                let slope = (1.0 - n[2]) * sigma * (1.0 - sigma) * n[0];
                let old = self.old_curves[i * k + p];
                if method == LinkingMethod::Haebara {
                    out.add(root * (old - curve), root * slope * u / a, root * slope / a);
                } else {
                    old_sum += old;
                    new_sum += curve;
                    slope_sum += slope;
                }
            }
            if method != LinkingMethod::Haebara {
                out.add(
                    root * (old_sum - new_sum),
                    root * slope_sum * u / a,
                    root * slope_sum / a,
                );
            }
            out
        };
        // Threads pay off from tens of thousands of curve values; below that waking them
        // costs more than it saves. Either way the points are summed in chunks of 8, so
        // the result does not depend on the number of threads.
        let chunk = |c: usize| {
            (c * 8..(c * 8 + 8).min(k))
                .map(at_point)
                .fold(Normal::default(), Normal::plus)
        };
        let chunks = k.div_ceil(8);
        let mut out = if self.len() * k >= 20_000 {
            (0..chunks)
                .into_par_iter()
                .map(chunk)
                .collect::<Vec<_>>()
                .into_iter()
                .fold(Normal::default(), Normal::plus)
        } else {
            (0..chunks).map(chunk).fold(Normal::default(), Normal::plus)
        };
        out.h[1][0] = out.h[0][1];
        out
    }
}

/// S = Σ r², Jᵀr and JᵀJ at one (A, B).
#[derive(Default)]
struct Normal {
    s: f64,
    g: [f64; 2],
    h: [[f64; 2]; 2],
}

impl Normal {
    /// One residual r with its derivatives ∂r/∂A, ∂r/∂B.
    fn add(&mut self, r: f64, ja: f64, jb: f64) {
        self.s += r * r;
        self.g[0] += ja * r;
        self.g[1] += jb * r;
        self.h[0][0] += ja * ja;
        self.h[0][1] += ja * jb;
        self.h[1][1] += jb * jb;
    }

    fn plus(mut self, o: Normal) -> Normal {
        self.s += o.s;
        self.g[0] += o.g[0];
        self.g[1] += o.g[1];
        self.h[0][0] += o.h[0][0];
        self.h[0][1] += o.h[0][1];
        self.h[1][1] += o.h[1][1];
        self
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

fn sd(values: &[f64]) -> f64 {
    let m = mean(values.iter().copied());
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// The constants over `anchors`. The curve criteria start from `start` when given (the
/// previous screening round's optimum), else from the mean/sigma constants.
fn constants(
    anchors: &Anchors,
    options: &LinkingOptions,
    start: Option<(f64, f64)>,
) -> Result<(f64, f64), IrtError> {
    let b_old: Vec<f64> = anchors.old.iter().map(|o| o[1]).collect();
    let b_new: Vec<f64> = anchors.new.iter().map(|n| n[1]).collect();
    let moment_b = |a: f64| mean(b_old.iter().copied()) - a * mean(b_new.iter().copied());
    let mean_sigma = || {
        let (so, sn) = (sd(&b_old), sd(&b_new));
        (sn > 0.0 && so > 0.0).then(|| so / sn)
    };
    match options.method {
        LinkingMethod::MeanMean => {
            let a = mean(anchors.new.iter().map(|n| n[0])) / mean(anchors.old.iter().map(|o| o[0]));
            Ok((a, moment_b(a)))
        }
        LinkingMethod::MeanSigma => {
            let a = mean_sigma().ok_or_else(|| {
                IrtError::Config(
                    "mean/sigma linking needs anchors whose difficulties differ".into(),
                )
            })?;
            Ok((a, moment_b(a)))
        }
        method => {
            let start = start.unwrap_or_else(|| {
                let a = mean_sigma().unwrap_or(1.0);
                (a, moment_b(a))
            });
            levenberg_marquardt(|a, b| anchors.normal_equations(method, a, b), start).ok_or_else(
                || IrtError::Config(format!("{} linking did not converge", method.as_str())),
            )
        }
    }
}

/// Minimises a sum of squares in (A, B), A > 0, by Levenberg–Marquardt (Marquardt's
/// diagonal scaling) from `start`, until a step moves neither constant by more than 1e-13
/// relative or cannot lower the criterion by more than its rounding. Two parameters and an analytic Jacobian: a few passes over anchors × points,
/// where Nelder–Mead needs hundreds of criterion evaluations for the same optimum.
fn levenberg_marquardt(f: impl Fn(f64, f64) -> Normal, start: (f64, f64)) -> Option<(f64, f64)> {
    let valid = |a: f64, b: f64| a.is_finite() && a > 0.0 && b.is_finite();
    if !valid(start.0, start.1) {
        return None;
    }
    let (mut a, mut b) = start;
    let mut at = f(a, b);
    if !at.s.is_finite() {
        return None;
    }
    let mut lambda = 1e-3;
    for _ in 0..1000 {
        if at.s == 0.0 || (at.g[0] == 0.0 && at.g[1] == 0.0) {
            break;
        }
        let m00 = at.h[0][0] * (1.0 + lambda) + f64::MIN_POSITIVE;
        let m11 = at.h[1][1] * (1.0 + lambda) + f64::MIN_POSITIVE;
        let m01 = at.h[0][1];
        let det = m00 * m11 - m01 * m01;
        let step = [
            -(m11 * at.g[0] - m01 * at.g[1]) / det,
            -(m00 * at.g[1] - m01 * at.g[0]) / det,
        ];
        // What the step can gain at most is below f64's resolution of S: converged.
        if det > 0.0 && -(at.g[0] * step[0] + at.g[1] * step[1]) <= 1e-18 * at.s {
            break;
        }
        let (na, nb) = (a + step[0], b + step[1]);
        let trial = (det > 0.0 && valid(na, nb)).then(|| f(na, nb));
        match trial {
            Some(t) if t.s.is_finite() && t.s <= at.s => {
                let small = step[0].abs() <= 1e-13 * a.abs().max(1.0)
                    && step[1].abs() <= 1e-13 * b.abs().max(1.0);
                (a, b, at) = (na, nb, t);
                lambda = (lambda / 10.0).max(1e-15);
                if small {
                    break;
                }
            }
            _ => {
                lambda *= 10.0;
                if lambda > 1e20 {
                    break;
                }
            }
        }
    }
    valid(a, b).then_some((a, b))
}

/// The trapezoid rule for the drift area, θ from −6 to 6 in 1200 steps, weighted by the
/// N(0, 1) density.
struct DriftGrid {
    /// Trapezoid weight × density × step at each of the 1201 points.
    weights: Vec<f64>,
}

impl DriftGrid {
    const STEPS: usize = 1200;
    const LO: f64 = -6.0;
    const HI: f64 = 6.0;

    fn new() -> Self {
        let step = (Self::HI - Self::LO) / Self::STEPS as f64;
        let norm = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        DriftGrid {
            weights: (0..=Self::STEPS)
                .map(|i| {
                    let theta = Self::LO + step * i as f64;
                    let end = if i == 0 || i == Self::STEPS { 0.5 } else { 1.0 };
                    end * norm * (-0.5 * theta * theta).exp() * step
                })
                .collect(),
        }
    }

    /// ∫ |P_old − P_new,linked| φ. Along the evenly spaced grid exp(−a(θ − b)) is a
    /// geometric sequence, so each curve costs one multiplication per point, not an
    /// `exp` (relative error ≤ a few hundred ulps, ~1e-13); items so steep that the sequence would
    /// leave f64's range take `exp` at every point.
    fn area(&self, old: Abc, new_linked: Abc) -> f64 {
        let step = (Self::HI - Self::LO) / Self::STEPS as f64;
        let fits = |p: Abc| {
            (p[0] * (Self::LO - p[1]))
                .abs()
                .max((p[0] * (Self::HI - p[1])).abs())
                < 600.0
        };
        if !(fits(old) && fits(new_linked)) {
            return self
                .weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let theta = Self::LO + step * i as f64;
                    w * (logistic(old, theta) - logistic(new_linked, theta)).abs()
                })
                .sum();
        }
        // Four interleaved sequences (points 4t + l), each stepping by r⁴, so that the
        // loop has no chain of dependent multiplications and vectorises.
        const LANES: usize = 4;
        let start = |p: Abc| -> [f64; LANES] {
            std::array::from_fn(|l| (-p[0] * (Self::LO + step * l as f64 - p[1])).exp())
        };
        let ratio = |p: Abc| (-p[0] * step * LANES as f64).exp();
        let (mut e_old, mut e_new) = (start(old), start(new_linked));
        let (r_old, r_new) = (ratio(old), ratio(new_linked));
        let (c_old, c_new) = (old[2], new_linked[2]);
        let mut sums = [0.0; LANES];
        let chunks = self.weights.chunks_exact(LANES);
        let rest = chunks.remainder();
        for w in chunks {
            for l in 0..LANES {
                let p_old = c_old + (1.0 - c_old) / (1.0 + e_old[l]);
                let p_new = c_new + (1.0 - c_new) / (1.0 + e_new[l]);
                sums[l] += w[l] * (p_old - p_new).abs();
                e_old[l] *= r_old;
                e_new[l] *= r_new;
            }
        }
        for (l, w) in rest.iter().enumerate() {
            let p_old = c_old + (1.0 - c_old) / (1.0 + e_old[l]);
            let p_new = c_new + (1.0 - c_new) / (1.0 + e_new[l]);
            sums[l] += w * (p_old - p_new).abs();
        }
        (sums[0] + sums[1]) + (sums[2] + sums[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 12 common items of Kolen & Brennan (2004), Table 6.5 (3PL; as in R plink's
    /// `KB04` data set): (item, old form Y a, b, c; new form X a, b, c).
    const KB04_COMMON: [(u32, [f64; 3], [f64; 3]); 12] = [
        (3, [0.4416, -1.3349, 0.1559], [0.4551, -0.7101, 0.2087]),
        (6, [0.5730, -1.3210, 0.1913], [0.5839, -0.8567, 0.2038]),
        (9, [0.5987, -0.7098, 0.1177], [0.7544, 0.0212, 0.1600]),
        (12, [0.6041, -0.3539, 0.0818], [0.6633, 0.0506, 0.1240]),
        (15, [0.9902, 0.5320, 0.3024], [1.0690, 0.9610, 0.2986]),
        (18, [0.8081, -0.1156, 0.0648], [0.9672, 0.1950, 0.0535]),
        (21, [0.4140, 2.5538, 0.2410], [0.3479, 2.2768, 0.1489]),
        (24, [1.3554, 0.5811, 0.2243], [1.4579, 1.0241, 0.2453]),
        (27, [1.0417, 0.9392, 0.1651], [1.8811, 1.4062, 0.1992]),
        (30, [0.6336, 1.8960, 0.0794], [0.7020, 2.2401, 0.0853]),
        (33, [1.1347, 1.0790, 0.0630], [1.4080, 1.5556, 0.0789]),
        (36, [0.9255, 2.1337, 0.1259], [1.2993, 2.1589, 0.1075]),
    ];

    fn kb04() -> (Vec<ItemParams>, Vec<ItemParams>) {
        let item = |n: u32, p: [f64; 3]| ItemParams::new(format!("i{n}"), p[0], p[1], p[2]);
        (
            KB04_COMMON
                .iter()
                .map(|(n, old, _)| item(*n, *old))
                .collect(),
            KB04_COMMON
                .iter()
                .map(|(n, _, new)| item(*n, *new))
                .collect(),
        )
    }

    /// R plink 1.5-1's documented output for KB04 (vignette "plink-UD", section 4.1:
    /// `plink(x, rescale = "SL", base.grp = 2)`, the old form as base), to its 6 decimals.
    #[test]
    fn kolen_brennan_table_6_5_matches_plinks_published_constants() {
        let (old, new) = kb04();
        for (method, want_a, want_b) in [
            (LinkingMethod::MeanMean, 1.217266, -0.557155),
            (LinkingMethod::MeanSigma, 1.168892, -0.515543),
            (LinkingMethod::Haebara, 1.112133, -0.465667),
            (LinkingMethod::StockingLord, 1.119231, -0.485545),
        ] {
            let options = LinkingOptions {
                method,
                drift_threshold: f64::INFINITY,
                ..LinkingOptions::default()
            };
            let linking = link(&old, &new, &options).unwrap();
            assert!(
                (linking.a - want_a).abs() < 1e-6 && (linking.b - want_b).abs() < 1e-6,
                "{method:?}: A {} B {} (plink: {want_a} {want_b})",
                linking.a,
                linking.b
            );
            assert_eq!(linking.anchors.len(), 12);
        }
    }

    /// Kolen & Brennan set item 27 aside in this example; the default threshold does too,
    /// and nothing else.
    #[test]
    fn the_drifting_anchor_of_the_example_is_left_out() {
        let (old, new) = kb04();
        let linking = link(&old, &new, &LinkingOptions::default()).unwrap();
        let excluded: Vec<&str> = linking
            .drift
            .iter()
            .filter(|d| d.excluded)
            .map(|d| d.item.as_str())
            .collect();
        assert_eq!(excluded, ["i27"]);
        assert_eq!(linking.anchors.len(), 11);
        assert!(!linking.anchors.contains(&"i27".to_string()));
        let d27 = linking.drift.iter().find(|d| d.item == "i27").unwrap();
        assert!(d27.area > 0.05, "{d27:?}");
    }

    /// Parameters put on another scale by known constants are brought back exactly by every
    /// method; with estimation noise, within the stated tolerance.
    #[test]
    fn known_constants_are_recovered() {
        let mut rng = crate::irt::SplitMix64::new(7);
        let old: Vec<ItemParams> = (0..30)
            .map(|i| {
                let a = 0.6 + 1.4 * rng.uniform();
                let b = -2.5 + 5.0 * rng.uniform();
                ItemParams::new(format!("q{i}"), a, b, 0.15 * rng.uniform())
            })
            .collect();
        let (true_a, true_b) = (1.3, -0.4);
        // θ_old = A θ_new + B  ⇒  a_new = A a_old, b_new = (b_old − B) / A.
        let exact: Vec<ItemParams> = old
            .iter()
            .map(|o| ItemParams::new(o.item.clone(), o.a * true_a, (o.b - true_b) / true_a, o.c))
            .collect();
        for method in [
            LinkingMethod::MeanMean,
            LinkingMethod::MeanSigma,
            LinkingMethod::Haebara,
            LinkingMethod::StockingLord,
        ] {
            let options = LinkingOptions {
                method,
                ..LinkingOptions::default()
            };
            let linking = link(&old, &exact, &options).unwrap();
            assert!(
                (linking.a - true_a).abs() < 1e-6 && (linking.b - true_b).abs() < 1e-6,
                "{method:?} exact: {} {}",
                linking.a,
                linking.b
            );
            assert!(linking.drift.iter().all(|d| d.area < 1e-6 && !d.excluded));
        }
        // Noise like a calibration's standard errors (sd 0.08 on a, 0.1 on b): the curve
        // methods stay within 0.05 of A and B.
        let noisy: Vec<ItemParams> = exact
            .iter()
            .map(|e| {
                let mut n = e.clone();
                n.a *= 1.0 + 0.08 * (2.0 * rng.uniform() - 1.0) * 1.7;
                n.b += 0.1 * (2.0 * rng.uniform() - 1.0) * 1.7;
                n
            })
            .collect();
        for method in [LinkingMethod::Haebara, LinkingMethod::StockingLord] {
            let options = LinkingOptions {
                method,
                ..LinkingOptions::default()
            };
            let linking = link(&old, &noisy, &options).unwrap();
            assert!(
                (linking.a - true_a).abs() < 0.05 && (linking.b - true_b).abs() < 0.05,
                "{method:?} noisy: {} {}",
                linking.a,
                linking.b
            );
        }
    }

    /// The geometric recurrence of the drift area agrees with `exp` at every point, and
    /// items too steep for it take the direct path.
    #[test]
    fn drift_area_recurrence_matches_direct_evaluation() {
        let grid = DriftGrid::new();
        let direct = |old: Abc, new: Abc| {
            let step = (DriftGrid::HI - DriftGrid::LO) / DriftGrid::STEPS as f64;
            grid.weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let theta = DriftGrid::LO + step * i as f64;
                    w * (logistic(old, theta) - logistic(new, theta)).abs()
                })
                .sum::<f64>()
        };
        let mut rng = crate::irt::SplitMix64::new(11);
        for _ in 0..200 {
            let old = [
                0.2 + 3.0 * rng.uniform(),
                8.0 * rng.uniform() - 4.0,
                0.3 * rng.uniform(),
            ];
            let new = [
                0.2 + 3.0 * rng.uniform(),
                8.0 * rng.uniform() - 4.0,
                0.3 * rng.uniform(),
            ];
            let (got, want) = (grid.area(old, new), direct(old, new));
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1e-3),
                "{old:?} {new:?}: {got} {want}"
            );
        }
        // Steep items: a · |θ − b| up to 504 still takes the recurrence; 756 would leave
        // f64's range on the way, so that one is computed directly. Both are right.
        let flat = [1.0, 0.3, 0.0];
        for a in [80.0, 120.0] {
            let steep = [a, 0.3, 0.0];
            let (got, want) = (grid.area(steep, flat), direct(steep, flat));
            assert!(
                got.is_finite() && (got - want).abs() <= 1e-12 * want,
                "{a}: {got} {want}"
            );
            assert!(got > 0.05, "{got}");
        }
    }

    /// What Levenberg–Marquardt returns is a minimum: no nearby point has a lower
    /// Stocking–Lord or Haebara criterion, and the gradient vanishes.
    #[test]
    fn the_curve_optimum_is_a_minimum() {
        let (old, new) = kb04();
        let pairs: Vec<(&ItemParams, &ItemParams)> = old.iter().zip(&new).collect();
        let anchors = Anchors::new(&pairs, &LinkingOptions::default().points);
        for method in [LinkingMethod::StockingLord, LinkingMethod::Haebara] {
            let options = LinkingOptions {
                method,
                drift_threshold: f64::INFINITY,
                ..LinkingOptions::default()
            };
            let l = link(&old, &new, &options).unwrap();
            let at = |a: f64, b: f64| anchors.normal_equations(method, a, b).s;
            let best = at(l.a, l.b);
            for (da, db) in [
                (1e-4, 0.0),
                (-1e-4, 0.0),
                (0.0, 1e-4),
                (0.0, -1e-4),
                (1e-4, 1e-4),
            ] {
                assert!(at(l.a + da, l.b + db) > best, "{method:?} at {da} {db}");
            }
            let g = anchors.normal_equations(method, l.a, l.b).g;
            assert!(
                g[0].abs() < 1e-8 && g[1].abs() < 1e-8,
                "{method:?} gradient {g:?}"
            );
        }
    }

    #[test]
    fn too_few_common_items_is_a_clear_error() {
        let old = vec![ItemParams::new("x", 1.0, 0.0, 0.0)];
        let new = vec![ItemParams::new("y", 1.0, 0.0, 0.0)];
        let e = link(&old, &new, &LinkingOptions::default()).unwrap_err();
        assert!(e.to_string().contains("found 0"), "{e}");
        let one = vec![ItemParams::new("x", 1.0, 0.5, 0.0)];
        let options = LinkingOptions {
            method: LinkingMethod::MeanSigma,
            ..LinkingOptions::default()
        };
        assert!(link(&old, &one, &options).is_err());
        assert!(LinkingMethod::parse("Stocking-Lord") == Some(LinkingMethod::StockingLord));
        assert!(LinkingMethod::parse("equipercentile").is_none());
    }
}

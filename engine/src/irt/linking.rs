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
//! The characteristic-curve criteria are minimised by Nelder–Mead from the mean/sigma
//! constants. Each anchor's drift is the area between its old curve and its linked new
//! curve, weighted by the N(0, 1) density on the old scale; anchors drifting more than a
//! threshold are left out and the constants computed again without them.

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

fn curve(item: &ItemParams, theta: f64) -> f64 {
    item.c + (1.0 - item.c) / (1.0 + (-item.a * (theta - item.b)).exp())
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
    let pairs: Vec<(&ItemParams, &ItemParams)> = new
        .iter()
        .filter(|n| usable(n))
        .filter_map(|n| {
            old.iter()
                .find(|o| o.item == n.item && usable(o))
                .map(|o| (o, n))
        })
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
    let mut kept: Vec<bool> = vec![true; pairs.len()];
    let (mut a, mut b);
    loop {
        let anchors: Vec<(&ItemParams, &ItemParams)> = pairs
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(p, _)| *p)
            .collect();
        (a, b) = constants(&anchors, options)?;
        // Leave out the worst drifting anchor, one at a time, while enough remain.
        let worst = pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| kept[*i])
            .map(|(i, (o, n))| (i, drift_area(o, &transform(n, a, b))))
            .filter(|(_, area)| *area > options.drift_threshold)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        match worst {
            Some((i, _)) if anchors.len() > needed => kept[i] = false,
            _ => break,
        }
    }
    let drift = pairs
        .iter()
        .zip(&kept)
        .map(|((o, n), k)| ItemDrift {
            item: n.item.clone(),
            area: drift_area(o, &transform(n, a, b)),
            excluded: !k,
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

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

fn sd(values: &[f64]) -> f64 {
    let m = mean(values.iter().copied());
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

fn constants(
    anchors: &[(&ItemParams, &ItemParams)],
    options: &LinkingOptions,
) -> Result<(f64, f64), IrtError> {
    let b_old: Vec<f64> = anchors.iter().map(|(o, _)| o.b).collect();
    let b_new: Vec<f64> = anchors.iter().map(|(_, n)| n.b).collect();
    let moment_b = |a: f64| mean(b_old.iter().copied()) - a * mean(b_new.iter().copied());
    let mean_sigma = || {
        let (so, sn) = (sd(&b_old), sd(&b_new));
        (sn > 0.0 && so > 0.0).then(|| so / sn)
    };
    match options.method {
        LinkingMethod::MeanMean => {
            let a = mean(anchors.iter().map(|(_, n)| n.a)) / mean(anchors.iter().map(|(o, _)| o.a));
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
            let start_a = mean_sigma().unwrap_or(1.0);
            let start = [start_a, moment_b(start_a)];
            let criterion = |x: [f64; 2]| criterion(method, anchors, &options.points, x[0], x[1]);
            // Restarting from the first optimum guards against a collapsed simplex.
            let first = nelder_mead(&criterion, start, [0.1, 0.1]);
            let [a, b] = nelder_mead(&criterion, first, [0.01, 0.01]);
            if !(a.is_finite() && a > 0.0 && b.is_finite()) {
                return Err(IrtError::Config(format!(
                    "{} linking did not converge",
                    method.as_str()
                )));
            }
            Ok((a, b))
        }
    }
}

/// plink's non-symmetric criteria: Haebara, the weighted mean over points and items of
/// squared curve differences; Stocking–Lord, the weighted mean over points of the squared
/// difference of the summed curves.
fn criterion(
    method: LinkingMethod,
    anchors: &[(&ItemParams, &ItemParams)],
    points: &[(f64, f64)],
    a: f64,
    b: f64,
) -> f64 {
    if a.is_nan() || a <= 0.0 || !a.is_finite() || !b.is_finite() {
        return f64::INFINITY;
    }
    let linked: Vec<ItemParams> = anchors.iter().map(|(_, n)| transform(n, a, b)).collect();
    let total_weight: f64 = points.iter().map(|(_, w)| w).sum();
    let mut sum = 0.0;
    for &(theta, weight) in points {
        match method {
            LinkingMethod::Haebara => {
                let squares: f64 = anchors
                    .iter()
                    .zip(&linked)
                    .map(|((o, _), n)| (curve(o, theta) - curve(n, theta)).powi(2))
                    .sum();
                sum += weight * squares;
            }
            _ => {
                let old: f64 = anchors.iter().map(|(o, _)| curve(o, theta)).sum();
                let new: f64 = linked.iter().map(|n| curve(n, theta)).sum();
                sum += weight * (old - new).powi(2);
            }
        }
    }
    let items = if method == LinkingMethod::Haebara {
        anchors.len() as f64
    } else {
        1.0
    };
    sum / (items * total_weight.max(f64::MIN_POSITIVE))
}

/// The area between two items' curves, weighted by the N(0, 1) density (θ from −6 to 6).
fn drift_area(old: &ItemParams, new_linked: &ItemParams) -> f64 {
    const STEPS: usize = 1200;
    let (lo, hi) = (-6.0_f64, 6.0_f64);
    let step = (hi - lo) / STEPS as f64;
    let norm = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    (0..=STEPS)
        .map(|i| {
            let theta = lo + step * i as f64;
            let end = if i == 0 || i == STEPS { 0.5 } else { 1.0 };
            end * (curve(old, theta) - curve(new_linked, theta)).abs()
                * norm
                * (-0.5 * theta * theta).exp()
        })
        .sum::<f64>()
        * step
}

/// Nelder–Mead on two parameters, to a simplex of 1e-11 or 4000 iterations.
fn nelder_mead(f: &impl Fn([f64; 2]) -> f64, start: [f64; 2], step: [f64; 2]) -> [f64; 2] {
    let mut simplex = [
        start,
        [start[0] + step[0], start[1]],
        [start[0], start[1] + step[1]],
    ];
    let mut values = simplex.map(f);
    for _ in 0..4000 {
        let mut order = [0, 1, 2];
        order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
        simplex = order.map(|i| simplex[i]);
        values = order.map(|i| values[i]);
        let size = simplex[1..]
            .iter()
            .map(|p| {
                (p[0] - simplex[0][0])
                    .abs()
                    .max((p[1] - simplex[0][1]).abs())
            })
            .fold(0.0, f64::max);
        if size < 1e-11 {
            break;
        }
        let centroid = [
            (simplex[0][0] + simplex[1][0]) / 2.0,
            (simplex[0][1] + simplex[1][1]) / 2.0,
        ];
        let towards = |t: f64| {
            [
                centroid[0] + t * (simplex[2][0] - centroid[0]),
                centroid[1] + t * (simplex[2][1] - centroid[1]),
            ]
        };
        let reflected = towards(-1.0);
        let fr = f(reflected);
        if fr < values[0] {
            let expanded = towards(-2.0);
            let fe = f(expanded);
            (simplex[2], values[2]) = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < values[1] {
            (simplex[2], values[2]) = (reflected, fr);
        } else {
            let contracted = if fr < values[2] {
                towards(-0.5)
            } else {
                towards(0.5)
            };
            let fc = f(contracted);
            if fc < values[2].min(fr) {
                (simplex[2], values[2]) = (contracted, fc);
            } else {
                for i in 1..3 {
                    simplex[i] = [
                        simplex[0][0] + 0.5 * (simplex[i][0] - simplex[0][0]),
                        simplex[0][1] + 0.5 * (simplex[i][1] - simplex[0][1]),
                    ];
                    values[i] = f(simplex[i]);
                }
            }
        }
    }
    let best = (0..3)
        .min_by(|&i, &j| values[i].total_cmp(&values[j]))
        .unwrap_or(0);
    simplex[best]
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

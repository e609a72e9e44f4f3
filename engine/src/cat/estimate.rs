//! Ability estimation: EAP on the grid, and MAP / MLE / WLE by safeguarded Fisher scoring
//! started from the best grid node.

use serde::{Deserialize, Serialize};

use super::bank::{GRID_POINTS, GRID_STEP, THETA_MAX, THETA_MIN, node};
use super::config::{Estimator, Prior};
use crate::irt::ItemParams;

/// A point estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub theta: f64,
    pub se: f64,
}

/// One administered item and its response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Resp {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub x: bool,
}

/// (logistic(z), logistic(−z)) with one exponential, both accurate.
#[inline]
fn sig2(z: f64) -> (f64, f64) {
    let e = (-z.abs()).exp();
    let r = 1.0 / (1.0 + e);
    if z >= 0.0 { (r, e * r) } else { (e * r, r) }
}

#[inline]
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// (ln P, ln Q) at θ, finite for every θ.
#[inline]
pub(crate) fn ln_pq(a: f64, b: f64, c: f64, theta: f64) -> (f64, f64) {
    let z = a * (theta - b);
    if c == 0.0 {
        (-softplus(-z), -softplus(z))
    } else {
        let (s, _) = sig2(z);
        ((c + (1.0 - c) * s).ln(), (1.0 - c).ln() - softplus(z))
    }
}

/// P(correct) at θ.
#[inline]
pub(crate) fn prob(a: f64, b: f64, c: f64, theta: f64) -> f64 {
    c + (1.0 - c) * sig2(a * (theta - b)).0
}

/// Fisher information a²(1 − c)s²(1 − s)/P with s = logistic(a(θ − b)) (= a²PQ if c = 0).
#[inline]
pub(crate) fn item_info(a: f64, b: f64, c: f64, theta: f64) -> f64 {
    let (s, sq) = sig2(a * (theta - b));
    if c == 0.0 {
        a * a * s * sq
    } else {
        a * a * (1.0 - c) * s * s * sq / (c + (1.0 - c) * s)
    }
}

/// Score ∂ln L/∂θ, test information I and Warm's J = Σ P′P″/(PQ), all stable.
pub(crate) fn derivs(items: &[Resp], theta: f64) -> (f64, f64, f64) {
    let (mut g, mut info, mut j) = (0.0, 0.0, 0.0);
    for r in items {
        let (s, sq) = sig2(r.a * (theta - r.b));
        let (ii, gg) = if r.c == 0.0 {
            (r.a * r.a * s * sq, r.a * if r.x { sq } else { -s })
        } else {
            let p = r.c + (1.0 - r.c) * s;
            let ii = r.a * r.a * (1.0 - r.c) * s * s * sq / p;
            let gg = if r.x {
                r.a * s * (1.0 - r.c) * sq / p
            } else {
                -r.a * s
            };
            (ii, gg)
        };
        g += gg;
        info += ii;
        j += ii * r.a * (1.0 - 2.0 * s);
    }
    (g, info, j)
}

/// Root of a decreasing estimating function on [THETA_MIN, THETA_MAX], started at
/// `start`. `f(θ)` returns (value, d) with d > 0 approximating −f′(θ). Boundary values
/// are returned when f keeps its sign up to the edge.
fn solve(f: impl Fn(f64) -> (f64, f64), start: f64) -> f64 {
    let start = start.clamp(THETA_MIN, THETA_MAX);
    let mut lo = (start - GRID_STEP).max(THETA_MIN);
    let mut hi = (start + GRID_STEP).min(THETA_MAX);
    let mut flo = f(lo).0;
    while flo <= 0.0 {
        if lo <= THETA_MIN {
            return THETA_MIN;
        }
        hi = lo;
        lo = (lo - 4.0 * GRID_STEP).max(THETA_MIN);
        flo = f(lo).0;
    }
    let mut fhi = f(hi).0;
    while fhi >= 0.0 {
        if hi >= THETA_MAX {
            return THETA_MAX;
        }
        lo = hi;
        hi = (hi + 4.0 * GRID_STEP).min(THETA_MAX);
        fhi = f(hi).0;
    }
    // f(lo) > 0 > f(hi): safeguarded Newton (Fisher scoring) with bisection.
    let mut x = if start > lo && start < hi {
        start
    } else {
        0.5 * (lo + hi)
    };
    for _ in 0..100 {
        let (fx, d) = f(x);
        if fx == 0.0 {
            return x;
        }
        if fx > 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let mut nx = if d > 0.0 { x + fx / d } else { f64::NAN };
        if !(nx > lo && nx < hi) {
            nx = 0.5 * (lo + hi);
        }
        if (nx - x).abs() < 1e-10 || hi - lo < 1e-10 {
            return nx;
        }
        x = nx;
    }
    x
}

fn argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (k, x) in v.enumerate() {
        if x > best.1 {
            best = (k, x);
        }
    }
    best.0
}

#[inline]
pub(crate) fn log_prior(prior: &Prior, t: f64) -> f64 {
    let z = (t - prior.mean) / prior.sd;
    -0.5 * z * z
}

/// Writes normalised posterior weights on the grid into `post` and returns the posterior
/// mean and SD (EAP).
pub(crate) fn posterior(loglik: &[f64], prior: &Prior, post: &mut [f64]) -> Estimate {
    let mut mx = f64::NEG_INFINITY;
    for (k, (p, &l)) in post.iter_mut().zip(loglik).enumerate() {
        *p = l + log_prior(prior, node(k));
        mx = mx.max(*p);
    }
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (k, p) in post.iter_mut().enumerate() {
        let d = *p - mx;
        let w = if d > -700.0 { d.exp() } else { 0.0 };
        *p = w;
        let t = node(k);
        s0 += w;
        s1 += w * t;
        s2 += w * t * t;
    }
    let inv = 1.0 / s0;
    for p in post.iter_mut() {
        *p *= inv;
    }
    let mean = s1 * inv;
    Estimate {
        theta: mean,
        se: (s2 * inv - mean * mean).max(0.0).sqrt(),
    }
}

/// Point estimate from the grid state and the administered items. `eap` is the posterior
/// mean/SD already computed. Returns `None` for MLE without mixed responses.
pub(crate) fn point_estimate(
    estimator: Estimator,
    loglik: &[f64],
    tinfo: &[f64],
    items: &[Resp],
    prior: &Prior,
    eap: Estimate,
) -> Option<Estimate> {
    let se_of = |i: f64, fallback: f64| if i > 0.0 { 1.0 / i.sqrt() } else { fallback };
    match estimator {
        Estimator::Eap => Some(eap),
        Estimator::Map => {
            let v = 1.0 / (prior.sd * prior.sd);
            let k = argmax(
                loglik
                    .iter()
                    .enumerate()
                    .map(|(k, l)| l + log_prior(prior, node(k))),
            );
            let t = solve(
                |t| {
                    let (g, i, _) = derivs(items, t);
                    (g - (t - prior.mean) * v, i + v)
                },
                node(k),
            );
            let i = derivs(items, t).1;
            Some(Estimate {
                theta: t,
                se: 1.0 / (i + v).sqrt(),
            })
        }
        Estimator::Mle => {
            let right = items.iter().filter(|r| r.x).count();
            if right == 0 || right == items.len() {
                return None;
            }
            let k = argmax(loglik.iter().copied());
            let t = solve(
                |t| {
                    let (g, i, _) = derivs(items, t);
                    (g, i)
                },
                node(k),
            );
            Some(Estimate {
                theta: t,
                se: se_of(derivs(items, t).1, prior.sd),
            })
        }
        Estimator::Wle => {
            if items.is_empty() {
                return Some(eap);
            }
            let k = argmax(
                loglik
                    .iter()
                    .zip(tinfo)
                    .map(|(l, &i)| l + 0.5 * i.max(1e-300).ln()),
            );
            let t = solve(
                |t| {
                    let (g, i, j) = derivs(items, t);
                    if i > 0.0 {
                        (g + j / (2.0 * i), i)
                    } else {
                        (g, i)
                    }
                },
                node(k),
            );
            Some(Estimate {
                theta: t,
                se: se_of(derivs(items, t).1, prior.sd),
            })
        }
    }
}

/// Ability estimate for an arbitrary set of (item, correct) responses.
///
/// EAP and MAP use `prior`; MLE with no response, or with all responses right or all
/// wrong, falls back to EAP (posterior mean and SD). MLE, WLE and MAP are confined to
/// [−6, 6]. No response gives the prior (mean, sd) for every estimator.
pub fn estimate_ability(
    responses: &[(&ItemParams, bool)],
    estimator: Estimator,
    prior: Prior,
) -> Estimate {
    let mut loglik = vec![0.0; GRID_POINTS];
    let mut tinfo = vec![0.0; GRID_POINTS];
    let items: Vec<Resp> = responses
        .iter()
        .map(|(p, x)| Resp {
            a: p.a,
            b: p.b,
            c: p.c,
            x: *x,
        })
        .collect();
    for r in &items {
        for (k, (l, ti)) in loglik.iter_mut().zip(tinfo.iter_mut()).enumerate() {
            let (lp, lq) = ln_pq(r.a, r.b, r.c, node(k));
            *l += if r.x { lp } else { lq };
            *ti += item_info(r.a, r.b, r.c, node(k));
        }
    }
    let mut post = vec![0.0; GRID_POINTS];
    let eap = posterior(&loglik, &prior, &mut post);
    if items.is_empty() {
        return Estimate {
            theta: prior.mean,
            se: prior.sd,
        };
    }
    point_estimate(estimator, &loglik, &tinfo, &items, &prior, eap).unwrap_or(eap)
}

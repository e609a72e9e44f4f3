//! Ability (θ) scoring for one person or many, given item parameters.
//!
//! Responses use the [`ResponseMatrix`] coding (0, 1, [`MISSING`]); missing responses and
//! non-estimable items (`estimable == false`) are ignored.
//!
//! * [`eap`]: posterior mean and posterior SD under θ ~ N(0, 1) on a quadrature grid. A
//!   person with no usable response gets the prior (≈ 0, ≈ 1).
//! * [`map`]: posterior mode (Fisher scoring with step halving), SE = 1/√(I(θ̂) + 1)
//!   (test information plus the prior's).
//! * [`mle`]: maximum likelihood; all answered items right → [`Theta::PlusInfinity`], all
//!   wrong → [`Theta::MinusInfinity`], nothing answered → [`Theta::Undefined`] (all with
//!   `se: None`). A finite estimate has SE = 1/√I(θ̂). If the iteration runs past |θ| > 30
//!   (possible with the 3PL) the result is reported as the corresponding infinity.
//! * [`eap_batch`]: parallel EAP for a whole matrix. For models without a lower asymptote
//!   (all c = 0) it uses sufficiency: ln L(θ) = θ·Σ aᵢxᵢ − Σ ln(1 + e^{aᵢθ + dᵢ}) + const,
//!   so with a precomputed node table a complete response pattern costs one weighted sum
//!   plus O(nodes); missing items add one table row each. For a complete row the
//!   log-posterior `base[k] + θ_k·Σ aᵢxᵢ` is concave, so its mode is found by counting
//!   node thresholds and the weights relative to the mode are products of precomputed
//!   per-node factors (one `exp` per person instead of one per node); other rows use a
//!   vectorisable polynomial `exp`. Both agree with [`eap_with`] to ~1e−14 (θ and SE).

use rayon::prelude::*;
use serde::{Serialize, Serializer};

use super::IrtError;
use super::data::{MISSING, ResponseMatrix};
use super::estep::{Walk, exp_neg};
use super::model::{ItemParams, Quadrature, item_information, logistic, softplus};

/// A posterior mean / mode with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AbilityEstimate {
    pub theta: f64,
    pub se: f64,
}

/// An ML ability estimate that may be infinite. Serialises as a JSON number, the strings
/// `"inf"` / `"-inf"`, or `null` (no usable response).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Theta {
    Finite(f64),
    PlusInfinity,
    MinusInfinity,
    Undefined,
}

impl Theta {
    /// As an `f64` (±∞, NaN for undefined).
    pub fn value(self) -> f64 {
        match self {
            Theta::Finite(x) => x,
            Theta::PlusInfinity => f64::INFINITY,
            Theta::MinusInfinity => f64::NEG_INFINITY,
            Theta::Undefined => f64::NAN,
        }
    }
}

impl Serialize for Theta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Theta::Finite(x) => s.serialize_f64(*x),
            Theta::PlusInfinity => s.serialize_str("inf"),
            Theta::MinusInfinity => s.serialize_str("-inf"),
            Theta::Undefined => s.serialize_none(),
        }
    }
}

/// Result of [`mle`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MleEstimate {
    pub theta: Theta,
    /// `None` unless θ is finite.
    pub se: Option<f64>,
}

fn check_len(params: &[ItemParams], responses: &[u8]) -> Result<(), IrtError> {
    if params.len() != responses.len() {
        return Err(IrtError::Shape(format!(
            "{} responses for {} items",
            responses.len(),
            params.len()
        )));
    }
    if let Some(v) = responses.iter().find(|&&v| v > 1 && v != MISSING) {
        return Err(IrtError::InvalidResponse {
            person: 0,
            item: responses.iter().position(|x| x == v).unwrap_or(0),
            value: u32::from(*v),
        });
    }
    Ok(())
}

/// Usable (params, response) pairs.
fn usable<'a>(
    params: &'a [ItemParams],
    responses: &'a [u8],
) -> impl Iterator<Item = (&'a ItemParams, f64)> + Clone {
    params
        .iter()
        .zip(responses)
        .filter(|(p, x)| p.estimable && **x != MISSING)
        .map(|(p, x)| (p, f64::from(*x)))
}

/// Log-likelihood, its derivative and the test information at θ.
fn loglik_derivs<'a>(
    items: impl Iterator<Item = (&'a ItemParams, f64)>,
    theta: f64,
) -> (f64, f64, f64) {
    let (mut l, mut g, mut info) = (0.0, 0.0, 0.0);
    for (p, x) in items {
        let z = p.a * (theta - p.b);
        let s = logistic(z);
        let c = p.c;
        let pr = c + (1.0 - c) * s;
        if c == 0.0 {
            l += x * z - softplus(z);
            g += p.a * (x - s);
        } else {
            l += x * pr.ln() + (1.0 - x) * ((1.0 - c).ln() - softplus(z));
            g += p.a * (x - pr) * (pr - c) / (pr * (1.0 - c));
        }
        info += item_information(p, theta);
    }
    (l, g, info)
}

/// EAP on the default grid (61 points on [−6, 6]).
pub fn eap(params: &[ItemParams], responses: &[u8]) -> Result<AbilityEstimate, IrtError> {
    eap_with(params, responses, &Quadrature::default())
}

/// EAP on a given grid.
pub fn eap_with(
    params: &[ItemParams],
    responses: &[u8],
    quad: &Quadrature,
) -> Result<AbilityEstimate, IrtError> {
    check_len(params, responses)?;
    let ll: Vec<f64> = quad
        .nodes
        .iter()
        .zip(&quad.log_weights)
        .map(|(&t, &lw)| lw + loglik_derivs(usable(params, responses), t).0)
        .collect();
    Ok(posterior_moments(&ll, &quad.nodes))
}

fn posterior_moments(ll: &[f64], nodes: &[f64]) -> AbilityEstimate {
    let mx = ll.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (&l, &t) in ll.iter().zip(nodes) {
        let d = l - mx;
        if d > -45.0 {
            let w = d.exp();
            s0 += w;
            s1 += w * t;
            s2 += w * t * t;
        }
    }
    let mean = s1 / s0;
    AbilityEstimate {
        theta: mean,
        se: (s2 / s0 - mean * mean).max(0.0).sqrt(),
    }
}

/// Maximises `ll(θ) + prior(θ)` by Fisher scoring with step halving.
fn maximise(params: &[ItemParams], responses: &[u8], prior: bool) -> (f64, f64, bool) {
    let obj = |t: f64| {
        let (l, g, i) = loglik_derivs(usable(params, responses), t);
        if prior {
            (l - 0.5 * t * t, g - t, i + 1.0)
        } else {
            (l, g, i)
        }
    };
    let mut theta = 0.0;
    let (mut cur, mut g, mut info) = obj(theta);
    for _ in 0..500 {
        if info <= 0.0 {
            break;
        }
        let delta = (g / info).clamp(-1.0, 1.0);
        let mut step = 1.0;
        let mut moved = false;
        for _ in 0..40 {
            let nt = theta + step * delta;
            let (nl, ng, ni) = obj(nt);
            if nl >= cur {
                theta = nt;
                cur = nl;
                g = ng;
                info = ni;
                moved = true;
                break;
            }
            step *= 0.5;
        }
        if !moved || (step * delta).abs() < 1e-10 || theta.abs() > 30.0 {
            break;
        }
    }
    (theta, info, theta.abs() <= 30.0)
}

/// MAP (posterior mode) with a N(0, 1) prior.
pub fn map(params: &[ItemParams], responses: &[u8]) -> Result<AbilityEstimate, IrtError> {
    check_len(params, responses)?;
    let (theta, info, _) = maximise(params, responses, true);
    Ok(AbilityEstimate {
        theta,
        se: 1.0 / info.sqrt(),
    })
}

/// Maximum likelihood estimate (see the module docs for the infinite cases).
pub fn mle(params: &[ItemParams], responses: &[u8]) -> Result<MleEstimate, IrtError> {
    check_len(params, responses)?;
    let items = usable(params, responses);
    let n = items.clone().count();
    let right = items.clone().filter(|(_, x)| *x == 1.0).count();
    let infinite = |theta| MleEstimate { theta, se: None };
    if n == 0 {
        return Ok(infinite(Theta::Undefined));
    }
    if right == n {
        return Ok(infinite(Theta::PlusInfinity));
    }
    if right == 0 {
        return Ok(infinite(Theta::MinusInfinity));
    }
    let (theta, info, finite) = maximise(params, responses, false);
    if !finite {
        return Ok(infinite(if theta > 0.0 {
            Theta::PlusInfinity
        } else {
            Theta::MinusInfinity
        }));
    }
    Ok(MleEstimate {
        theta: Theta::Finite(theta),
        se: Some(1.0 / info.sqrt()),
    })
}

/// EAP for every person of `data` (item columns must match `params`), in parallel.
pub fn eap_batch(
    params: &[ItemParams],
    data: &ResponseMatrix,
    quad: &Quadrature,
) -> Result<Vec<AbilityEstimate>, IrtError> {
    if params.len() != data.n_items {
        return Err(IrtError::Shape(format!(
            "{} item parameter sets for {} items",
            params.len(),
            data.n_items
        )));
    }
    let k = quad.len();
    let est: Vec<usize> = (0..params.len()).filter(|&i| params[i].estimable).collect();
    let no_guessing = est.iter().all(|&i| params[i].c == 0.0);
    // Tables over estimable items: fast path rows = softplus(z); general = ln Q and ln P − ln Q.
    let mut base = quad.log_weights.clone();
    let mut tab_a = vec![0.0; est.len() * k]; // softplus(z) or ln P − ln Q
    let mut tab_b = vec![0.0; est.len() * k]; // ln Q (general path)
    for (j, &i) in est.iter().enumerate() {
        let p = &params[i];
        for (kk, &t) in quad.nodes.iter().enumerate() {
            let z = p.a * (t - p.b);
            if no_guessing {
                let sp = softplus(z);
                tab_a[j * k + kk] = sp;
                base[kk] -= sp;
            } else {
                let pr = p.c + (1.0 - p.c) * logistic(z);
                let lq = (1.0 - p.c).ln() - softplus(z);
                tab_a[j * k + kk] = pr.ln() - lq;
                tab_b[j * k + kk] = lq;
                base[kk] += lq;
            }
        }
    }
    let nodes = &quad.nodes;
    // c = 0: per-item slope (0 for non-estimable items) and whether a missing response
    // there matters; complete rows walk multiplicatively from the mode (see the module docs)
    let n_items = data.n_items;
    let mut slope_all = vec![0.0; n_items];
    let mut est_all = vec![false; n_items];
    let mut tab_row = vec![usize::MAX; n_items];
    for (j, &i) in est.iter().enumerate() {
        slope_all[i] = params[i].a;
        est_all[i] = true;
        tab_row[i] = j;
    }
    let walk = if no_guessing {
        Walk::new(nodes, &base)
    } else {
        None
    };
    if n_items == 0 {
        let prior = posterior_moments_fast(&base, nodes);
        return Ok(vec![prior; data.n_persons]);
    }
    let score = |ll: &mut Vec<f64>, row: &[u8]| -> AbilityEstimate {
        if no_guessing {
            let (s, any_miss) = scan_row(row, &slope_all, &est_all);
            if !any_miss
                && let Some(w) = &walk
                && let Some(est) = walk_moments(w, s)
            {
                return est;
            }
            for ((l, &b), &t) in ll.iter_mut().zip(&base).zip(nodes) {
                *l = b + s * t;
            }
            if any_miss {
                for (&x, &j) in row.iter().zip(&tab_row) {
                    if x == MISSING && j != usize::MAX {
                        for (l, v) in ll.iter_mut().zip(&tab_a[j * k..(j + 1) * k]) {
                            *l += v;
                        }
                    }
                }
            }
        } else {
            ll.copy_from_slice(&base);
            for (&x, &j) in row.iter().zip(&tab_row) {
                if j == usize::MAX {
                    continue;
                }
                match x {
                    1 => {
                        for (l, v) in ll.iter_mut().zip(&tab_a[j * k..(j + 1) * k]) {
                            *l += v;
                        }
                    }
                    MISSING => {
                        for (l, v) in ll.iter_mut().zip(&tab_b[j * k..(j + 1) * k]) {
                            *l -= v;
                        }
                    }
                    _ => {}
                }
            }
        }
        posterior_moments_fast(ll, nodes)
    };
    let mut out = Vec::with_capacity(data.n_persons);
    out.par_extend(
        data.data
            .par_chunks(n_items)
            .with_min_len(256)
            .map_init(|| vec![0.0; k], |ll, row| score(ll, row)),
    );
    Ok(out)
}

/// `(Σ aᵢxᵢ, any estimable item missing)` of a row: eight independent, branch-free lanes
/// (the sum's dependency chain is 8× shorter and the loop vectorises).
#[inline]
fn scan_row(row: &[u8], slope: &[f64], est: &[bool]) -> (f64, bool) {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let mut miss = [0u8; L];
    let mut rc = row.chunks_exact(L);
    let mut ac = slope.chunks_exact(L);
    let mut ec = est.chunks_exact(L);
    for ((x, a), e) in (&mut rc).zip(&mut ac).zip(&mut ec) {
        let x: &[u8; L] = x.try_into().expect("chunk of L");
        let a: &[f64; L] = a.try_into().expect("chunk of L");
        let e: &[bool; L] = e.try_into().expect("chunk of L");
        for j in 0..L {
            // a_j when x_j = 1, else +0.0 (bit mask, no branch)
            let mask = 0u64.wrapping_sub(u64::from(x[j] == 1));
            acc[j] += f64::from_bits(a[j].to_bits() & mask);
            miss[j] |= u8::from(x[j] == MISSING) & u8::from(e[j]);
        }
    }
    let mut tail = 0.0;
    let mut tail_miss = 0u8;
    for ((&x, &a), &e) in rc
        .remainder()
        .iter()
        .zip(ac.remainder())
        .zip(ec.remainder())
    {
        if x == 1 {
            tail += a;
        }
        tail_miss |= u8::from(x == MISSING && e);
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    (s + tail, miss.iter().any(|&m| m != 0) || tail_miss != 0)
}

/// Posterior mean and SD of a complete c = 0 row with `s = Σ aᵢxᵢ`: the log-posterior is
/// `base[k] + s·θ_k`, so the weights relative to the mode are products of per-node
/// factors (one `exp` per person; nodes more than 45 log-units below the mode are dropped,
/// as in [`posterior_moments`]). `None` if the walk is not numerically safe.
#[inline]
fn walk_moments(w: &Walk, s: f64) -> Option<AbilityEstimate> {
    let (r, rinv) = w.ratios(s)?;
    let nodes = &w.nodes;
    let k = nodes.len();
    let km = w.mode(s);
    let tiny = (-45.0f64).exp();
    let t0 = nodes[km];
    // moments about the mode's node (better conditioned), up and down walks interleaved
    let (mut s0, mut s1, mut s2) = (1.0, 0.0, 0.0);
    let (mut wu, mut ku, mut up) = (1.0, km, km + 1 < k);
    let (mut wd, mut kd, mut down) = (1.0, km, km > 0);
    while up || down {
        if up {
            wu *= w.up(ku, r);
            if wu > tiny {
                ku += 1;
                let d = nodes[ku] - t0;
                s0 += wu;
                s1 += wu * d;
                s2 += wu * d * d;
                up = ku + 1 < k;
            } else {
                up = false;
            }
        }
        if down {
            wd *= w.down(kd, rinv);
            if wd > tiny {
                kd -= 1;
                let d = nodes[kd] - t0;
                s0 += wd;
                s1 += wd * d;
                s2 += wd * d * d;
                down = kd > 0;
            } else {
                down = false;
            }
        }
    }
    let m = s1 / s0;
    Some(AbilityEstimate {
        theta: t0 + m,
        se: (s2 / s0 - m * m).max(0.0).sqrt(),
    })
}

/// [`posterior_moments`] with a vectorisable exponential.
fn posterior_moments_fast(ll: &[f64], nodes: &[f64]) -> AbilityEstimate {
    if ll.is_empty() {
        return posterior_moments(ll, nodes);
    }
    let mx = ll.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    // only the nodes from the first to the last one within 45 log-units of the maximum
    let lo = ll.iter().position(|&l| l - mx > -45.0).unwrap_or(0);
    let hi = ll.iter().rposition(|&l| l - mx > -45.0).unwrap_or(0);
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (&l, &t) in ll[lo..=hi].iter().zip(&nodes[lo..=hi]) {
        let d = l - mx;
        let w = if d > -45.0 { exp_neg(d) } else { 0.0 };
        s0 += w;
        s1 += w * t;
        s2 += w * t * t;
    }
    let mean = s1 / s0;
    AbilityEstimate {
        theta: mean,
        se: (s2 / s0 - mean * mean).max(0.0).sqrt(),
    }
}

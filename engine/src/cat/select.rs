//! Item selection criteria and exposure control.

use super::bank::{CatBank, CumPos, GRID_POINTS, THETA_MAX, THETA_MIN};
use super::config::{CatConfig, ExposureControl, SelectionRule};
use super::estimate::{item_info, sig2_pub};
use super::rng::CatRng;

/// What the criteria need to know about the current state.
pub(crate) struct SelectCtx<'a> {
    pub bank: &'a CatBank,
    pub config: &'a CatConfig,
    pub theta: f64,
    pub se: f64,
    /// Normalised posterior weights on the grid.
    pub post: &'a [f64],
    pub n_answered: usize,
}

/// (P, ln P, ln Q) at θ.
#[inline]
fn p_lnp_lnq(a: f64, b: f64, c: f64, theta: f64) -> (f64, f64, f64) {
    let z = a * (theta - b);
    if c == 0.0 {
        let e = (-z.abs()).exp();
        // e ∈ (0, 1]: ln(1 + e) is accurate enough here and cheaper than ln_1p.
        let l = (1.0 + e).ln();
        let (p, lnp) = if z >= 0.0 {
            (1.0 / (1.0 + e), -l)
        } else {
            (e / (1.0 + e), z - l)
        };
        (p, lnp, lnp - z)
    } else {
        let (s, sq) = sig2_pub(z);
        let p = c + (1.0 - c) * s;
        (p, p.ln(), ((1.0 - c) * sq).ln())
    }
}

/// KL information of an item at θ̂ integrated over [lo, hi], from the bank's running
/// integrals (exposed for tests).
pub(crate) fn kl_window(
    bank: &CatBank,
    i: usize,
    theta: f64,
    lo: &CumPos,
    hi: &CumPos,
    len: f64,
) -> f64 {
    let (p, lp, lq) = p_lnp_lnq(bank.a[i], bank.b[i], bank.c[i], theta);
    let q = 1.0 - p;
    let (fp, fq) = (bank.row(&bank.ln_p, i), bank.row(&bank.ln_q, i));
    let (cp, cq) = (bank.row(&bank.cum_ln_p, i), bank.row(&bank.cum_ln_q, i));
    let ip = hi.eval(cp, fp) - lo.eval(cp, fp);
    let iq = hi.eval(cq, fq) - lo.eval(cq, fq);
    len * (p * lp + q * lq) - p * ip - q * iq
}

/// The KL window [θ̂ − δ, θ̂ + δ] ∩ grid range with δ = max(z·SE, 0.05).
pub(crate) fn kl_bounds(theta: f64, se: f64, z: f64) -> (f64, f64) {
    let d = (z * se).max(0.05);
    ((theta - d).max(THETA_MIN), (theta + d).min(THETA_MAX))
}

/// Criterion value of every eligible item (higher is better), −∞ for the others.
pub(crate) fn scores(ctx: &SelectCtx, eligible: &[bool], rng: &mut CatRng, out: &mut [f64]) {
    let bank = ctx.bank;
    let t = ctx.theta;
    let each = |out: &mut [f64], f: &mut dyn FnMut(usize) -> f64| {
        for (i, (o, &e)) in out.iter_mut().zip(eligible).enumerate() {
            *o = if e { f(i) } else { f64::NEG_INFINITY };
        }
    };
    match ctx.config.rule {
        SelectionRule::Mfi => each(out, &mut |i| item_info(bank.a[i], bank.b[i], bank.c[i], t)),
        SelectionRule::BMatching => each(out, &mut |i| -(bank.b[i] - t).abs()),
        SelectionRule::Random => each(out, &mut |_| rng.uniform()),
        SelectionRule::Kl => {
            let (lo, hi) = kl_bounds(t, ctx.se, ctx.config.kl_window_z);
            let (plo, phi) = (CumPos::at(lo), CumPos::at(hi));
            let len = hi - lo;
            each(out, &mut |i| kl_window(bank, i, t, &plo, &phi, len))
        }
        SelectionRule::Klp | SelectionRule::Mpwi => {
            let post = ctx.post;
            let k0 = post.iter().position(|&w| w > 1e-13).unwrap_or(0);
            let k1 = post
                .iter()
                .rposition(|&w| w > 1e-13)
                .unwrap_or(GRID_POINTS - 1)
                + 1;
            let w = &post[k0..k1];
            let wsum: f64 = w.iter().sum();
            let dot = |row: &[f64]| dot4(&row[k0..k1], w);
            if ctx.config.rule == SelectionRule::Mpwi {
                each(out, &mut |i| dot(bank.row(&bank.info, i)))
            } else {
                each(out, &mut |i| {
                    let (p, lp, lq) = p_lnp_lnq(bank.a[i], bank.b[i], bank.c[i], t);
                    let q = 1.0 - p;
                    wsum * (p * lp + q * lq)
                        - p * dot(bank.row(&bank.ln_p, i))
                        - q * dot(bank.row(&bank.ln_q, i))
                })
            }
        }
    }
}

/// Dot product with four independent accumulators (vectorises).
#[inline]
fn dot4(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for ((s, &p), &q) in acc.iter_mut().zip(a).zip(b) {
            *s += p * q;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

fn argmax(scores: &[f64], skip: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s == f64::NEG_INFINITY || skip(i) {
            continue;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|b| b.0)
}

/// The `k` best eligible items, best first.
pub(crate) fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut top: Vec<(usize, f64)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if s == f64::NEG_INFINITY {
            continue;
        }
        if top.len() == k && s <= top[k - 1].1 {
            continue;
        }
        let pos = top.iter().position(|&(_, v)| s > v).unwrap_or(top.len());
        top.insert(pos, (i, s));
        top.truncate(k);
    }
    top.into_iter().map(|x| x.0).collect()
}

/// Picks an item from the scored pool under the configured exposure control. Items
/// rejected by Sympson–Hetter are appended to `blocked` and flagged in `blocked_mask`.
pub(crate) fn choose(
    ctx: &SelectCtx,
    scores: &mut [f64],
    rng: &mut CatRng,
    blocked: &mut Vec<usize>,
    blocked_mask: &mut [bool],
) -> Option<usize> {
    match &ctx.config.exposure {
        ExposureControl::None => argmax(scores, |_| false),
        ExposureControl::Randomesque { k } => {
            let top = top_k(scores, *k);
            if top.is_empty() {
                None
            } else {
                Some(top[rng.below(top.len())])
            }
        }
        ExposureControl::Progressive { acceleration } => {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &s in scores.iter().filter(|s| s.is_finite()) {
                lo = lo.min(s);
                hi = hi.max(s);
            }
            if !lo.is_finite() {
                return None;
            }
            let max_len = ctx.config.stop.max_length.max(1) as f64;
            let s = (ctx.n_answered as f64 / max_len)
                .min(1.0)
                .powf(*acceleration);
            let range = hi - lo;
            for v in scores.iter_mut().filter(|v| v.is_finite()) {
                *v = (1.0 - s) * rng.uniform() * range + s * (*v - lo);
            }
            argmax(scores, |_| false)
        }
        ExposureControl::SympsonHetter { k_params } => {
            let mut first = None;
            loop {
                let Some(i) = argmax(scores, |i| blocked_mask[i]) else {
                    return first;
                };
                let k = k_params.get(ctx.bank.id(i)).copied().unwrap_or(1.0);
                if k >= 1.0 || rng.uniform() < k {
                    return Some(i);
                }
                blocked.push(i);
                blocked_mask[i] = true;
                first.get_or_insert(i);
            }
        }
    }
}

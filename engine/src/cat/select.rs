//! Item selection criteria and exposure control.

use super::bank::{CatBank, CumPos, GRID_POINTS, ROW_OVERRUN, THETA_MAX, THETA_MIN, node};
use super::config::{CatConfig, ExposureControl, SelectionRule};
use super::rng::CatRng;
use super::vmath::{exp_nonpos, ln_normal};

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

/// Fisher information at θ, as `super::estimate::item_info` but with [`exp_nonpos`] so that a
/// loop over items is vectorised (both forms computed, then selected, for the same reason).
#[inline(always)]
fn fisher_info(a: f64, b: f64, c: f64, theta: f64) -> f64 {
    let z = a * (theta - b);
    let e = exp_nonpos(-z.abs());
    let r = 1.0 / (1.0 + e);
    let (s, sq) = if z >= 0.0 { (r, e * r) } else { (e * r, r) };
    let two_pl = a * a * s * sq;
    let three_pl = a * a * (1.0 - c) * s * s * sq / (c + (1.0 - c) * s);
    if c == 0.0 { two_pl } else { three_pl }
}

/// Items per block of the two-pass criteria (scratch arrays on the stack).
const BLOCK: usize = 64;

/// P and the negative entropy p ln p + q ln q (q = 1 − P) at θ for the items
/// `i0..i0 + p.len()`: one loop without calls, so the compiler vectorises it. With
/// z = a(θ − b), e = exp(−|z|) and l = ln(1 + e):
/// * 2PL: ln P = min(z, 0) − l and ln Q = ln P − z;
/// * 3PL: P·(1 + e) = 1 + c·e (z ≥ 0) or c + e (z < 0), so ln P = ln(that) − l, and
///   ln Q = ln(1 − c) − l − max(z, 0) with ln(1 − c) precomputed per item.
///
/// `MIXED = false` when every item is 2PL (skips the 3PL logarithm).
fn neg_entropy<const MIXED: bool>(
    bank: &CatBank,
    i0: usize,
    theta: f64,
    p: &mut [f64],
    h: &mut [f64],
) {
    let r = i0..i0 + p.len();
    let items = bank.a[r.clone()]
        .iter()
        .zip(&bank.b[r.clone()])
        .zip(&bank.c[r.clone()])
        .zip(&bank.ln_1mc[r]);
    for ((((&a, &b), &c), &ln_1mc), (p, h)) in items.zip(p.iter_mut().zip(h.iter_mut())) {
        let z = a * (theta - b);
        let e = exp_nonpos(-z.abs());
        let l = ln_normal(1.0 + e);
        let num = if z >= 0.0 { 1.0 + c * e } else { c + e };
        let pr = num / (1.0 + e);
        let lp2 = z.min(0.0) - l;
        let (lp, lq) = if MIXED {
            // Both forms, then a select: a branch here stops the vectorisation. num ≥ c > 0
            // for 3PL (the clamp keeps the unused 2PL value, and a subnormal c, inside
            // ln_normal's domain).
            let lp3 = ln_normal(num.max(f64::MIN_POSITIVE)) - l;
            let lq3 = ln_1mc - l - z.max(0.0);
            let two_pl = c == 0.0;
            (
                if two_pl { lp2 } else { lp3 },
                if two_pl { lp2 - z } else { lq3 },
            )
        } else {
            (lp2, lp2 - z)
        };
        *p = pr;
        *h = pr * lp + (1.0 - pr) * lq;
    }
}

/// `f(i, P, p ln p + q ln q)` for eligible items and −∞ for the others, the first two
/// computed a block at a time by [`neg_entropy`] (blocks without eligible items skipped).
#[inline]
fn fill_entropy(
    out: &mut [f64],
    eligible: &[bool],
    bank: &CatBank,
    theta: f64,
    mut f: impl FnMut(usize, f64, f64) -> f64,
) {
    let (mut p, mut h) = ([0.0; BLOCK], [0.0; BLOCK]);
    for (blk, (out, eligible)) in out
        .chunks_mut(BLOCK)
        .zip(eligible.chunks(BLOCK))
        .enumerate()
    {
        let i0 = blk * BLOCK;
        let n = out.len();
        if eligible.contains(&true) {
            let (p, h) = (&mut p[..n], &mut h[..n]);
            if bank.all_2pl {
                neg_entropy::<false>(bank, i0, theta, p, h);
            } else {
                neg_entropy::<true>(bank, i0, theta, p, h);
            }
        }
        for (j, (o, &e)) in out.iter_mut().zip(eligible).enumerate() {
            *o = if e {
                f(i0 + j, p[j], h[j])
            } else {
                f64::NEG_INFINITY
            };
        }
    }
}

/// KL information of item `i` at θ̂ integrated over [lo, hi] (`len` = hi − lo), from
/// the bank's running integrals: ∫ KL = len·(p ln p + q ln q) − p·∫ln P − q·∫ln Q, with
/// `p` = P(θ̂) and `h` = p ln p + q ln q from [`neg_entropy`].
#[inline]
fn kl_window(bank: &CatBank, i: usize, p: f64, h: f64, lo: &CumPos, hi: &CumPos, len: f64) -> f64 {
    let row = bank.kl_row(i);
    let ((p_hi, q_hi), (p_lo, q_lo)) = (hi.eval_pq(row), lo.eval_pq(row));
    len * h - p * (p_hi - p_lo) - (1.0 - p) * (q_hi - q_lo)
}

/// The KL window [θ̂ − δ, θ̂ + δ] ∩ grid range with δ = max(z·SE, 0.05).
pub(crate) fn kl_bounds(theta: f64, se: f64, z: f64) -> (f64, f64) {
    let d = (z * se).max(0.05);
    ((theta - d).max(THETA_MIN), (theta + d).min(THETA_MAX))
}

/// Writes `f(i)` for eligible items and −∞ for the others. Generic (not `dyn`) so each
/// rule's criterion is inlined into its own loop.
#[inline]
fn fill(out: &mut [f64], eligible: &[bool], mut f: impl FnMut(usize) -> f64) {
    for (i, (o, &e)) in out.iter_mut().zip(eligible).enumerate() {
        *o = if e { f(i) } else { f64::NEG_INFINITY };
    }
}

/// Criterion value of every eligible item (higher is better), −∞ for the others.
/// `scratch` is work space of at least 2 × bank length.
pub(crate) fn scores(
    ctx: &SelectCtx,
    eligible: &[bool],
    rng: &mut CatRng,
    out: &mut [f64],
    scratch: &mut [f64],
) {
    let bank = ctx.bank;
    let t = ctx.theta;
    match ctx.config.rule {
        SelectionRule::Mfi => {
            // Every item in one call-free loop (vectorised), then the ineligible masked.
            let items = bank.a.iter().zip(&bank.b).zip(&bank.c);
            for (o, ((&a, &b), &c)) in out.iter_mut().zip(items) {
                *o = fisher_info(a, b, c, t);
            }
            for (o, &e) in out.iter_mut().zip(eligible) {
                if !e {
                    *o = f64::NEG_INFINITY;
                }
            }
        }
        SelectionRule::BMatching => fill(out, eligible, |i| -(bank.b[i] - t).abs()),
        SelectionRule::Random => fill(out, eligible, |_| rng.uniform()),
        SelectionRule::Kl => {
            let (lo, hi) = kl_bounds(t, ctx.se, ctx.config.kl_window_z);
            let (plo, phi) = (CumPos::at(lo), CumPos::at(hi));
            fill_entropy(out, eligible, bank, t, |i, p, h| {
                kl_window(bank, i, p, h, &plo, &phi, hi - lo)
            })
        }
        SelectionRule::Klp | SelectionRule::Mpwi => {
            // Nodes with a posterior weight ≤ 1e−13 are skipped (their share of any
            // criterion is below the tables' rounding).
            let post = ctx.post;
            let k0 = post.iter().position(|&w| w > 1e-13).unwrap_or(0);
            let k1 = post
                .iter()
                .rposition(|&w| w > 1e-13)
                .unwrap_or(GRID_POINTS - 1)
                + 1;
            if ctx.config.rule == SelectionRule::Mpwi {
                // The window is lengthened to whole 4-chunks [k0, c1) with zero weights
                // past k1 (possibly reading into the next row, see `CatBank::row_window`),
                // so the dot products need no remainder loop; zero weight × finite table
                // value adds nothing.
                let c1 = k0 + (k1 - k0).next_multiple_of(4);
                let mut wpad = [0.0; GRID_POINTS + ROW_OVERRUN];
                wpad[k0..k1].copy_from_slice(&post[k0..k1]);
                let w = &wpad[k0..c1];
                fill(out, eligible, |i| {
                    dot(bank.row_window(&bank.info, i, k0, c1), w)
                })
            } else {
                // KLP = Σ w·KL = Σw·(p ln p + q ln q) − p·Σ w ln P − q·Σ w ln Q.
                let w = &post[k0..k1];
                let wsum: f64 = w.iter().sum();
                let (dp, rest) = scratch.split_at_mut(bank.len());
                let dq = &mut rest[..bank.len()];
                weighted_sums(bank, &bank.ln_p, k0, w, dp);
                if bank.all_2pl {
                    // ln Q = ln P − a(θ − b) for every item: Σ w ln Q from Σ w ln P.
                    let wt: f64 = (k0..k1).map(|k| post[k] * node(k)).sum();
                    let items = dp.iter().zip(&bank.a).zip(&bank.b);
                    for (q, ((&p, &a), &b)) in dq.iter_mut().zip(items) {
                        *q = p - a * (wt - b * wsum);
                    }
                } else {
                    weighted_sums(bank, &bank.ln_q, k0, w, dq);
                }
                fill_entropy(out, eligible, bank, t, |i, p, h| {
                    wsum * h - p * dp[i] - (1.0 - p) * dq[i]
                })
            }
        }
    }
}

/// `sums[i] = Σⱼ w[j]·table[k0 + j][i]` for every item i of a node-major table: each node's
/// values of all items are contiguous, so this streams through the window's part of the
/// table and vectorises over items; four nodes per pass.
fn weighted_sums(bank: &CatBank, table: &[f64], k0: usize, w: &[f64], sums: &mut [f64]) {
    sums.fill(0.0);
    let (quads, rest) = w.as_chunks::<4>();
    let mut k = k0;
    for q in quads {
        let cols = bank
            .column(table, k)
            .iter()
            .zip(bank.column(table, k + 1))
            .zip(bank.column(table, k + 2))
            .zip(bank.column(table, k + 3));
        for (s, (((&x0, &x1), &x2), &x3)) in sums.iter_mut().zip(cols) {
            *s += (q[0] * x0 + q[1] * x1) + (q[2] * x2 + q[3] * x3);
        }
        k += 4;
    }
    for &wk in rest {
        for (s, &x) in sums.iter_mut().zip(bank.column(table, k)) {
            *s += wk * x;
        }
        k += 1;
    }
}

/// Σ xₖwₖ with four independent accumulators over fixed-size chunks, so the loop is
/// unrolled and vectorised (the window is at most 64 long, so loop overhead matters).
#[inline]
fn dot(x: &[f64], w: &[f64]) -> f64 {
    let n = x.len().min(w.len());
    let (xc, xr) = x[..n].as_chunks::<4>();
    let (wc, wr) = w[..n].as_chunks::<4>();
    let mut acc = [0.0; 4];
    for (a, b) in xc.iter().zip(wc) {
        for j in 0..4 {
            acc[j] += a[j] * b[j];
        }
    }
    // Pairs (0, 2) and (1, 3): lanes of the same SIMD register, so this is one vector add.
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (a, b) in xr.iter().zip(wr) {
        s += a * b;
    }
    s
}

/// First eligible (score ≠ −∞, not skipped) item with the highest score.
fn argmax(scores: &[f64], skip: impl Fn(usize) -> bool) -> Option<usize> {
    let (mut best, mut top) = (None, f64::NEG_INFINITY);
    for (i, &s) in scores.iter().enumerate() {
        // `best.is_none()`: the first candidate is taken even if its score is NaN.
        if s != f64::NEG_INFINITY && (s > top || best.is_none()) && !skip(i) {
            (best, top) = (Some(i), s);
        }
    }
    best
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

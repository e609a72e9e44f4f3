//! Information matrices for the standard errors of [`super::calibrate()`] from one pass over
//! the patterns' posteriors plus a few items × nodes × items matrix products.
//!
//! Notation: person (pattern) p with frequency f_p, posterior weights w_pk on the nodes θ_k
//! (normalised to sum 1 over the pattern's band, dropping nodes below e^−36 of the mode as
//! the E-step does), answered indicator o_pi, correct indicator x_pi (0 when missing),
//! missing indicator μ_pi = 1 − o_pi. In the "full" item space every item has its own
//! (a_i, d_i) (and c_i for the 3PL); the 1PL's common slope and the Rasch model are linear
//! restrictions of it (mapped at the end by summing or dropping slope rows and columns).
//!
//! * Complete-data information `D = −∂²Q(ψ|ψ̂)/∂ψ∂ψᵀ` from the expected counts (block
//!   diagonal; for the 3PL the exact Hessian of the M-step objective including its Beta
//!   prior).
//! * Missing information `C = ∂²Q(ψ|ψ')/∂ψ∂ψ'ᵀ` at ψ' = ψ̂. Differentiating the posterior
//!   weights (`∂w_pk/∂ψ' = w_pk (s_pk − s̄_p)`) gives `C = Σ_p f_p Cov_p(s_p)`, the posterior
//!   covariance of the complete-data score, for the 2PL `s_pi(θ) = (x_pi − o_pi P_i(θ))
//!   (θ, 1)`; Oakes' (1999) observed information is `D − C` (Louis' 1982 form).
//! * Cross-product information `XPD = Σ_p f_p s̄_p s̄_pᵀ` with `s̄_p = E_p[s_p]`, the
//!   persons' marginal scores (Fisher's identity).
//!
//! A dense `Σ_p Σ_k w_pk (s_pk − s̄_p)(s_pk − s̄_p)ᵀ` costs persons × band × params² (at
//! 10 000 persons × 100 items, ~20 nodes: 4e9 multiply-adds). For c = 0 (Rasch, 1PL, 2PL)
//! it is avoided exactly. With `h = (θ, 1)`, `g_i = P_i h` and the centred scores
//! `s_pi − s̄_pi = x_pi (h − h̄_p) − o_pi (g_i − ḡ_pi)` (the x's drop out of the centring):
//!
//! * the correct × correct part is `Var_p(θ)` times `x_p x_pᵀ`: one scalar per pattern on
//!   its pairs of correct items — or, for patterns with more right than other answers, on
//!   its pairs of wrong-or-missing items via `x = 1 − z` (whichever list is shorter);
//! * everything else involving answered items is expanded with `o = 1 − μ`, and the "1"
//!   factors through the nodes: `M = Σ_p f_p w_p w_pᵀ` (nodes × nodes; then
//!   `Σ_p ḡ_pi ḡ_pjᵀ = G_i M G_jᵀ`), per-item node vectors such as `Σ_p f_p x_pi w_p` and
//!   `Σ_p f_p μ_pi ḡ_pi w_p`, and the totals `Σ_p f_p w_p`, contracted at the end with the
//!   items × nodes tables `P_i(θ_k) θ_k^q` (items² × nodes multiply-adds);
//! * what remains per pattern are its (correct, missing) pairs (two numbers each) and its
//!   (missing, missing) pairs (`Σ_k w_k P_i P_j θ_k^q`, q = 0, 1, 2: a small matrix
//!   product per pattern, vectorised over the second item).
//!
//! So one pass costs `Σ_p [min(#right, #wrong + #missing)² / 2 + (#right + #missing) ·
//! band · 3 + #right · #missing · 2 + #missing² · band · 1.5]` plus the posterior, and the
//! assembly `O(items² · nodes)`; measured ≈ 4 E-steps at 20 000 × 50 with 10 % missing,
//! ≈ 5 at 10 000 × 100 complete and ≈ 10–18 with 20 % missing (the (missing, missing)
//! pairs). Accumulators: 7 (Oakes) or 18 (with the XPD) × items² doubles per pattern chunk
//! (at most 8 chunks).
//!
//! For the 3PL (c > 0) the right-answer score `∂P/P` differs per item, so the correct ×
//! correct part does not reduce to one scalar per pattern. It takes the pair-count route
//! ([`info_pairs`]): per node the posterior mass of the patterns answering items i and j
//! right/wrong (one vector add over the band per answered pair and pattern,
//! `Σ_p band · #answered² / 2`), contracted with the score tables, minus the XPD. Measured
//! at 5 000 × 30 items with 10 % missing: ≈ 0.1 s against 0.5 s for the finite-difference
//! Hessian. Accumulators: 2 × items² × nodes doubles per chunk.

use rayon::prelude::*;

use super::calibrate::{Params, make_tables};
use super::estep::{EDGE, Patterns, Tables, Window, log_posterior};
use super::model::{Model, Quadrature, logistic};

/// Information matrices in the full item space, dense row-major `dim × dim`
/// (`dim = dp · items`; per item (a, d) or (a, d, c)).
pub(crate) struct FullInfo {
    pub dim: usize,
    /// Complete-data information `D` (block diagonal).
    pub complete: Vec<f64>,
    /// Missing information `C = Σ_p f_p Cov_p(s_p)`.
    pub missing: Vec<f64>,
    /// Cross-product information `Σ_p f_p s̄_p s̄_pᵀ`.
    pub xpd: Vec<f64>,
}

/// Number of pattern chunks: fixed by the problem size (not the thread count, so results
/// are reproducible), at most 8, and at most ~256 MB of accumulators in all.
fn n_chunks(n_pat: usize, acc_len: usize) -> usize {
    let by_memory = (32_000_000 / acc_len.max(1)).clamp(2, 8);
    by_memory.min(n_pat.max(1))
}

/// Runs `visit(acc, pattern, lo, weights)` over every pattern's normalised posterior
/// weights on the nodes `lo..lo + weights.len()` (weights below e^−EDGE of the mode
/// dropped, as in the E-step), in fixed chunks in parallel; returns the chunks' results in
/// order.
fn over_posteriors<A: Send>(
    pats: &Patterns,
    t: &Tables,
    windows: &mut [Window],
    concave: bool,
    acc_len: usize,
    init: impl Fn() -> A + Sync,
    visit: impl Fn(&mut A, usize, usize, &[f64]) + Sync,
) -> Vec<A> {
    let k = t.k;
    let n = pats.len();
    let cs = n.div_ceil(n_chunks(n, acc_len)).max(1);
    windows
        .par_chunks_mut(cs)
        .enumerate()
        .map(|(ci, wc)| {
            let mut acc = init();
            let mut ll = vec![0.0; k];
            for (j, win) in wc.iter_mut().enumerate() {
                let p = ci * cs + j;
                let (lo, hi, mx) = log_posterior(pats, p, t, *win, concave, &mut ll);
                let thr = mx - EDGE;
                let (mut tlo, mut thi) = (lo, hi);
                while ll[tlo] < thr {
                    tlo += 1;
                }
                while ll[thi] < thr {
                    thi -= 1;
                }
                let w = &mut ll[tlo..=thi];
                let mut s = 0.0;
                for x in w.iter_mut() {
                    *x = (*x - mx).exp();
                    s += *x;
                }
                for x in w.iter_mut() {
                    *x /= s;
                }
                visit(&mut acc, p, tlo, w);
                *win = [tlo.saturating_sub(2) as u16, (thi + 2).min(k - 1) as u16];
            }
            acc
        })
        .collect()
}

fn add_to(acc: &mut [f64], x: &[f64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// `out[i][j] = Σ_k a[i][k] b[j][k]` for `a`, `b` with rows of length `k` (m × m result).
fn gemm_nt(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let m = a.len() / k.max(1);
    let mut out = vec![0.0; m * b.len() / k.max(1)];
    let nb = b.len() / k.max(1);
    out.par_chunks_mut(nb.max(1))
        .zip(a.par_chunks(k.max(1)))
        .for_each(|(row, ai)| {
            for (o, bj) in row.iter_mut().zip(b.chunks_exact(k)) {
                *o = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
            }
        });
    out
}

/// Accumulators of the c = 0 pass (see the module docs). Pair arrays are items × items ×
/// (values per pair); the `_x` ones feed only the XPD and are empty unless it is wanted.
struct Acc2 {
    tot: Vec<f64>,
    /// Σ f w over patterns missing item i (items × nodes).
    miss: Vec<f64>,
    /// Σ f w wᵀ (nodes × nodes).
    mm: Vec<f64>,
    /// Σ f w and Σ f θ̄ w over patterns with item i correct (items × nodes); the flipped
    /// patterns (more right than wrong-or-missing answers) add to `*_all` and subtract per
    /// wrong or missing item.
    xi1: Vec<f64>,
    xith: Vec<f64>,
    xi1_all: Vec<f64>,
    xith_all: Vec<f64>,
    /// Σ f μ_i ḡ_i^u w (u = θ, 1).
    phi_th: Vec<f64>,
    phi_1: Vec<f64>,
    /// Correct pairs: f Var_p(θ); for the XPD f (θ̄², θ̄, 1). `s_all`, `s_z`: the
    /// flipped patterns' totals and per-item sums of (Var θ, θ̄², θ̄, 1).
    s_v: Vec<f64>,
    s_x: Vec<f64>,
    s_all: [f64; 4],
    s_z: Vec<f64>,
    /// (correct i, missing j): f Cov_p(θ, g_j^v) = f (`E[θ²P_j] − θ̄E[θP_j]`,
    /// `E[θP_j] − θ̄E[P_j]`); for the XPD f (`θ̄E[θP_j]`, `θ̄E[P_j]`, `E[θP_j]`, `E[P_j]`).
    /// `y_all`: the flipped patterns' totals per missing item (2 + 4 values).
    y_c: Vec<f64>,
    y_x: Vec<f64>,
    y_all: Vec<f64>,
    /// Missing pairs i ≤ j: f Cov_p(g_i^u, g_j^v) (u, v ∈ {θP, P}); for the XPD
    /// f ḡ_i^u ḡ_j^v.
    mp_c: Vec<f64>,
    mp_x: Vec<f64>,
}

impl Acc2 {
    fn len(m: usize, k: usize, xpd: bool) -> usize {
        let pairs = if xpd { 18 } else { 7 };
        k + k * k + 6 * m * k + 2 * k + m * m * pairs + m * 10 + 4
    }

    fn zeros(m: usize, k: usize, xpd: bool) -> Self {
        let x = |n: usize| if xpd { vec![0.0; n] } else { Vec::new() };
        Self {
            tot: vec![0.0; k],
            miss: vec![0.0; m * k],
            mm: vec![0.0; k * k],
            xi1: vec![0.0; m * k],
            xith: vec![0.0; m * k],
            xi1_all: vec![0.0; k],
            xith_all: vec![0.0; k],
            phi_th: vec![0.0; m * k],
            phi_1: vec![0.0; m * k],
            s_v: vec![0.0; m * m],
            s_x: x(m * m * 3),
            s_all: [0.0; 4],
            s_z: vec![0.0; m * 4],
            y_c: vec![0.0; m * m * 2],
            y_x: x(m * m * 4),
            y_all: vec![0.0; m * 6],
            mp_c: vec![0.0; m * m * 4],
            mp_x: x(m * m * 4),
        }
    }

    fn add(&mut self, o: &Acc2) {
        add_to(&mut self.tot, &o.tot);
        add_to(&mut self.miss, &o.miss);
        add_to(&mut self.mm, &o.mm);
        add_to(&mut self.xi1, &o.xi1);
        add_to(&mut self.xith, &o.xith);
        add_to(&mut self.xi1_all, &o.xi1_all);
        add_to(&mut self.xith_all, &o.xith_all);
        add_to(&mut self.phi_th, &o.phi_th);
        add_to(&mut self.phi_1, &o.phi_1);
        add_to(&mut self.s_v, &o.s_v);
        add_to(&mut self.s_x, &o.s_x);
        add_to(&mut self.s_all, &o.s_all);
        add_to(&mut self.s_z, &o.s_z);
        add_to(&mut self.y_c, &o.y_c);
        add_to(&mut self.y_x, &o.y_x);
        add_to(&mut self.y_all, &o.y_all);
        add_to(&mut self.mp_c, &o.mp_c);
        add_to(&mut self.mp_x, &o.mp_x);
    }
}

/// `acc[at..at + N] += v` (one bounds check).
#[inline(always)]
fn add_n<const N: usize>(acc: &mut [f64], at: usize, v: &[f64; N]) {
    let a: &mut [f64; N] = (&mut acc[at..at + N]).try_into().expect("N values");
    for (x, y) in a.iter_mut().zip(v) {
        *x += y;
    }
}

/// Scratch buffers of one chunk.
#[derive(Default)]
struct Scratch {
    fw: Vec<f64>,
    ftw: Vec<f64>,
    z: Vec<u32>,
    /// Node-major P of the pattern's missing items (band × missing).
    pt: Vec<f64>,
    /// Per missing item: `E[P]`, `E[θP]`, `E[θ²P]` (three rows); `sq`: three rows of pair
    /// sums.
    e: Vec<f64>,
    sq: Vec<f64>,
    /// Per missing item: its (correct, missing) pair values (covariance, XPD).
    yv: Vec<([f64; 2], [f64; 4])>,
}

/// `x_q[b] += c_q · v[b]` for q = 0, 1, 2 (equal lengths; indexed so it vectorises).
#[inline(always)]
fn axpy3(x0: &mut [f64], x1: &mut [f64], x2: &mut [f64], c: [f64; 3], v: &[f64]) {
    let n = v.len();
    let (x0, x1, x2) = (&mut x0[..n], &mut x1[..n], &mut x2[..n]);
    for b in 0..n {
        x0[b] += c[0] * v[b];
        x1[b] += c[1] * v[b];
        x2[b] += c[2] * v[b];
    }
}

/// The c = 0 information matrices (Rasch, 1PL, 2PL) in the full (a_i, d_i) space; the
/// XPD only when `want_xpd` (else empty).
fn info_linear(
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    want_xpd: bool,
) -> FullInfo {
    let m = p.a.len();
    let k = q.len();
    let th = &q.nodes;
    let t = make_tables(p, q);
    let ptab: Vec<f64> = (0..m)
        .flat_map(|i| th.iter().map(move |&x| logistic(p.a[i] * x + p.d[i])))
        .collect();
    let parts = over_posteriors(
        pats,
        &t,
        windows,
        true,
        Acc2::len(m, k, want_xpd),
        || (Acc2::zeros(m, k, want_xpd), Scratch::default()),
        |(acc, sc), pi, lo, w| {
            let nw = w.len();
            let f = pats.weights[pi];
            let ths = &th[lo..lo + nw];
            let mean: f64 = w.iter().zip(ths).map(|(a, b)| a * b).sum();
            let var: f64 = w
                .iter()
                .zip(ths)
                .map(|(a, b)| a * (b - mean) * (b - mean))
                .sum();
            sc.fw.clear();
            sc.fw.extend(w.iter().map(|x| f * x));
            sc.ftw.clear();
            sc.ftw.extend(sc.fw.iter().map(|x| mean * x));
            add_to(&mut acc.tot[lo..lo + nw], &sc.fw);
            for (a, &fa) in sc.fw.iter().enumerate() {
                let row = &mut acc.mm[(lo + a) * k + lo..(lo + a) * k + lo + nw];
                for (x, &wb) in row.iter_mut().zip(w.iter()) {
                    *x += fa * wb;
                }
            }
            let v4 = [f * var, f * mean * mean, f * mean, f];
            let v3 = [v4[1], v4[2], v4[3]];
            let xs = pats.xs(pi);
            let ms = pats.missing(pi);
            // correct items x directly, or x = 1 − z with z = wrong ∪ missing, whichever
            // list is shorter (the E-step's `flip` compares right with wrong only)
            let n_right = pats.n_correct[pi] as usize;
            let flip = n_right > m - n_right;
            let list: &[u32] = match (flip, pats.flip[pi]) {
                (false, false) => xs,
                (true, true) => {
                    sc.z.clear();
                    sc.z.extend_from_slice(xs);
                    sc.z.extend_from_slice(ms);
                    &sc.z
                }
                (want_z, _) => {
                    sc.z.clear();
                    let row = pats.row(pi);
                    sc.z.extend((0..m as u32).filter(|&i| (row[i as usize] == 1) != want_z));
                    &sc.z
                }
            };
            if flip {
                add_to(&mut acc.xi1_all[lo..lo + nw], &sc.fw);
                add_to(&mut acc.xith_all[lo..lo + nw], &sc.ftw);
                add_to(&mut acc.s_all, &v4);
            }
            let sign = if flip { -1.0 } else { 1.0 };
            for (a, &i) in list.iter().enumerate() {
                let i = i as usize;
                let o = i * k + lo;
                for ((x1, xt), (&fw, &ftw)) in acc.xi1[o..o + nw]
                    .iter_mut()
                    .zip(&mut acc.xith[o..o + nw])
                    .zip(sc.fw.iter().zip(&sc.ftw))
                {
                    *x1 += sign * fw;
                    *xt += sign * ftw;
                }
                if flip {
                    add_n(&mut acc.s_z, i * 4, &v4);
                }
                let row = &mut acc.s_v[i * m..(i + 1) * m];
                for &j in &list[a..] {
                    row[j as usize] += v4[0];
                }
                if want_xpd {
                    for &j in &list[a..] {
                        add_n(&mut acc.s_x, (i * m + j as usize) * 3, &v3);
                    }
                }
            }
            if ms.is_empty() {
                return;
            }
            let nm = ms.len();
            // node-major P of the missing items; E[θ^q P_j] for all j at once
            sc.pt.clear();
            sc.pt.resize(nw * nm, 0.0);
            for (b, &j) in ms.iter().enumerate() {
                let pj = &ptab[j as usize * k + lo..j as usize * k + lo + nw];
                for (kk, &v) in pj.iter().enumerate() {
                    sc.pt[kk * nm + b] = v;
                }
            }
            sc.e.clear();
            sc.e.resize(3 * nm, 0.0);
            {
                let (e0, rest) = sc.e.split_at_mut(nm);
                let (e1, e2) = rest.split_at_mut(nm);
                for (kk, (&c0, &t)) in w.iter().zip(ths).enumerate() {
                    let pk = &sc.pt[kk * nm..(kk + 1) * nm];
                    axpy3(e0, e1, e2, [c0, c0 * t, c0 * t * t], pk);
                }
            }
            let e = |b: usize| [sc.e[b], sc.e[nm + b], sc.e[2 * nm + b]];
            sc.yv.clear();
            for (b, &j) in ms.iter().enumerate() {
                let j = j as usize;
                let [e0, e1, e2] = e(b);
                let o = j * k + lo;
                add_to(&mut acc.miss[o..o + nw], &sc.fw);
                for ((pt, p1), &fw) in acc.phi_th[o..o + nw]
                    .iter_mut()
                    .zip(&mut acc.phi_1[o..o + nw])
                    .zip(&sc.fw)
                {
                    *pt += fw * e1;
                    *p1 += fw * e0;
                }
                let sf = sign * f;
                let vc = [sf * (e2 - mean * e1), sf * (e1 - mean * e0)];
                let vx = [sf * mean * e1, sf * mean * e0, sf * e1, sf * e0];
                if flip {
                    let ya = &mut acc.y_all[j * 6..j * 6 + 6];
                    for (a, b) in ya.iter_mut().zip(vc.iter().chain(&vx)) {
                        *a -= b;
                    }
                }
                sc.yv.push((vc, vx));
            }
            // (correct, missing) pairs, row by row
            for &i in list {
                let i = i as usize;
                for (&j, (vc, _)) in ms.iter().zip(&sc.yv) {
                    add_n(&mut acc.y_c, (i * m + j as usize) * 2, vc);
                }
                if want_xpd {
                    for (&j, (_, vx)) in ms.iter().zip(&sc.yv) {
                        add_n(&mut acc.y_x, (i * m + j as usize) * 4, vx);
                    }
                }
            }
            // missing pairs: Σ_k w_k P_i P_j θ_k^q for all j ≥ i at once (inner loop over j)
            sc.sq.clear();
            sc.sq.resize(3 * nm, 0.0);
            for (a, &i) in ms.iter().enumerate() {
                let i = i as usize;
                let (s0, rest) = sc.sq.split_at_mut(nm);
                let (s1, s2) = rest.split_at_mut(nm);
                let (s0, s1, s2) = (&mut s0[a..], &mut s1[a..], &mut s2[a..]);
                s0.fill(0.0);
                s1.fill(0.0);
                s2.fill(0.0);
                for (kk, (&wk, &t)) in w.iter().zip(ths).enumerate() {
                    let c0 = wk * sc.pt[kk * nm + a];
                    let pk = &sc.pt[kk * nm + a..(kk + 1) * nm];
                    axpy3(s0, s1, s2, [c0, c0 * t, c0 * t * t], pk);
                }
                let (e0i, e1i) = (sc.e[a], sc.e[nm + a]);
                for (b, &j) in ms.iter().enumerate().skip(a) {
                    let (e0j, e1j) = (sc.e[b], sc.e[nm + b]);
                    let o = (i * m + j as usize) * 4;
                    let vx = [f * e1i * e1j, f * e1i * e0j, f * e0i * e1j, f * e0i * e0j];
                    let vc = [
                        f * s2[b - a] - vx[0],
                        f * s1[b - a] - vx[1],
                        f * s1[b - a] - vx[2],
                        f * s0[b - a] - vx[3],
                    ];
                    add_n(&mut acc.mp_c, o, &vc);
                    if want_xpd {
                        add_n(&mut acc.mp_x, o, &vx);
                    }
                }
            }
        },
    );
    let mut it = parts.into_iter().map(|x| x.0);
    let mut acc = it.next().unwrap_or_else(|| Acc2::zeros(m, k, want_xpd));
    for part in it {
        acc.add(&part);
    }
    for i in 0..m {
        add_to(&mut acc.xi1[i * k..(i + 1) * k], &acc.xi1_all);
        add_to(&mut acc.xith[i * k..(i + 1) * k], &acc.xith_all);
    }

    // item × node tables: G^0 = θP, G^1 = P
    let g1 = &ptab;
    let gth: Vec<f64> = (0..m * k).map(|x| ptab[x] * th[x % k]).collect();
    let gs = [&gth[..], &g1[..]];
    let psi: Vec<f64> = (0..m * k)
        .map(|x| th[x % k] * acc.xi1[x] - acc.xith[x])
        .collect();
    let psi_g = [gemm_nt(&psi, gs[0], k), gemm_nt(&psi, gs[1], k)];
    let xis = [&acc.xith[..], &acc.xi1[..]];
    let phis = [&acc.phi_th[..], &acc.phi_1[..]];
    // G M (M symmetric)
    let gm: Vec<Vec<f64>> = gs.iter().map(|g| gemm_nt(g, &acc.mm, k)).collect();
    let mut xi_g = Vec::with_capacity(4);
    let mut phi_g = Vec::with_capacity(4);
    let mut gmg = Vec::with_capacity(4);
    for u in 0..2 {
        for g in gs {
            if want_xpd {
                xi_g.push(gemm_nt(xis[u], g, k));
            }
            phi_g.push(gemm_nt(phis[u], g, k));
            gmg.push(gemm_nt(&gm[u], g, k));
        }
    }
    // Σ_k θ^q P_i P_j (tot − miss_i − miss_j) = [R Θ^q Pᵀ]_ij − [P Θ^q Sᵀ]_ij with
    // R_i = P_i (tot − miss_i), S_j = P_j miss_j
    let s_miss: Vec<f64> = (0..m * k).map(|x| ptab[x] * acc.miss[x]).collect();
    let ta: Vec<Vec<f64>> = (0..3)
        .map(|qd| {
            let pw = |x: usize| th[x % k].powi(qd);
            let r: Vec<f64> = (0..m * k)
                .map(|x| pw(x) * ptab[x] * (acc.tot[x % k] - acc.miss[x]))
                .collect();
            let pq: Vec<f64> = (0..m * k).map(|x| pw(x) * ptab[x]).collect();
            let a = gemm_nt(&r, g1, k);
            let b = gemm_nt(&pq, &s_miss, k);
            a.iter().zip(&b).map(|(x, y)| x - y).collect()
        })
        .collect();

    let dim = 2 * m;
    let mut complete = vec![0.0; dim * dim];
    let mut missing = vec![0.0; dim * dim];
    let mut xpd = if want_xpd {
        vec![0.0; dim * dim]
    } else {
        Vec::new()
    };
    for i in 0..m {
        let (mut h0, mut h1, mut h2) = (0.0, 0.0, 0.0);
        for kk in 0..k {
            let pr = ptab[i * k + kk];
            let nw = (acc.tot[kk] - acc.miss[i * k + kk]) * pr * (1.0 - pr);
            h0 += nw;
            h1 += nw * th[kk];
            h2 += nw * th[kk] * th[kk];
        }
        complete[(2 * i) * dim + 2 * i] = h2;
        complete[(2 * i) * dim + 2 * i + 1] = h1;
        complete[(2 * i + 1) * dim + 2 * i] = h1;
        complete[(2 * i + 1) * dim + 2 * i + 1] = h0;
    }
    // correct pairs: c = 0 the variance, 1..3 (θ̄², θ̄, 1)
    let pair = |i: usize, j: usize, c: usize| -> f64 {
        let at = |a: usize, b: usize| {
            if c == 0 {
                acc.s_v[a * m + b]
            } else {
                acc.s_x[(a * m + b) * 3 + c - 1]
            }
        };
        let base = if i == j {
            at(i, i)
        } else {
            at(i, j) + at(j, i)
        };
        base + acc.s_all[c] - acc.s_z[i * 4 + c] - acc.s_z[j * 4 + c]
    };
    // (correct i, missing j): c = 0, 1 the covariances, 2..5 the XPD products
    let y = |i: usize, j: usize, c: usize| -> f64 {
        let v = if c < 2 {
            acc.y_c[(i * m + j) * 2 + c]
        } else {
            acc.y_x[(i * m + j) * 4 + c - 2]
        };
        v + acc.y_all[j * 6 + c]
    };
    // missing pairs, entry (u, v) of block (i, j)
    let mp = |x: &[f64], i: usize, j: usize, u: usize, v: usize| {
        if i <= j {
            x[(i * m + j) * 4 + 2 * u + v]
        } else {
            x[(j * m + i) * 4 + 2 * v + u]
        }
    };
    let mat = |x: &Vec<f64>, i: usize, j: usize| x[i * m + j];
    // Σ f x_i o_j Cov_p(θ, g_j^v) = Ψ_i·G_j^v − (the pairs with j missing)
    let t2 = |i: usize, j: usize, v: usize| mat(&psi_g[v], i, j) - y(i, j, v);
    // XPD: h̄^u h̄^v moments (θ̄², θ̄, θ̄, 1) and Y's h̄^u ḡ^v columns
    let xx_c = [[1, 2], [2, 3]];
    let yc = [[2, 3], [4, 5]];
    for i in 0..m {
        for j in 0..m {
            for u in 0..2 {
                for v in 0..2 {
                    let (uv, vu) = (2 * u + v, 2 * v + u);
                    // moment of θ in h^u h^vᵀ: u = 0 is the θ (slope) component
                    let qd = 2 - u - v;
                    let mut c = mat(&ta[qd], i, j) + mp(&acc.mp_c, i, j, u, v)
                        - mat(&gmg[uv], i, j)
                        + mat(&phi_g[uv], i, j)
                        + mat(&phi_g[vu], j, i);
                    if u == 0 {
                        c -= t2(i, j, v);
                    }
                    if v == 0 {
                        c -= t2(j, i, u);
                    }
                    if u == 0 && v == 0 {
                        c += pair(i, j, 0);
                    }
                    missing[(2 * i + u) * dim + 2 * j + v] = c;
                    if want_xpd {
                        let xo = |i: usize, j: usize, u: usize, v: usize| {
                            mat(&xi_g[2 * u + v], i, j) - y(i, j, yc[u][v])
                        };
                        let oo =
                            mat(&gmg[uv], i, j) - mat(&phi_g[uv], i, j) - mat(&phi_g[vu], j, i)
                                + mp(&acc.mp_x, i, j, u, v);
                        xpd[(2 * i + u) * dim + 2 * j + v] =
                            pair(i, j, xx_c[u][v]) - xo(i, j, u, v) - xo(j, i, v, u) + oo;
                    }
                }
            }
        }
    }
    FullInfo {
        dim,
        complete,
        missing,
        xpd,
    }
}

/// Per-chunk accumulators of the dense pass.
#[cfg(test)]
struct AccDense {
    missing: Vec<f64>,
    xpd: Vec<f64>,
    tot: Vec<f64>,
    miss: Vec<f64>,
    r: Vec<f64>,
    /// Scratch: the pattern's score vectors on its band (band × answered components) and
    /// their components' indices.
    sk: Vec<f64>,
    idx: Vec<usize>,
}

/// Per item and node, the complete-data scores for a right (`s1 = ∂P/P`) and a wrong
/// (`s0 = −∂P/Q`) response, `dp` values each ((a, d) or (a, d, c)); items × nodes × dp.
fn score_tables(p: &Params, th: &[f64], dp: usize) -> (Vec<f64>, Vec<f64>) {
    let (m, k) = (p.a.len(), th.len());
    let mut s1 = vec![0.0; m * k * dp];
    let mut s0 = vec![0.0; m * k * dp];
    for i in 0..m {
        let (a, d, c) = (p.a[i], p.d[i], p.c[i]);
        for (kk, &x) in th.iter().enumerate() {
            let sg = logistic(a * x + d);
            let pr = c + (1.0 - c) * sg;
            let ds = (1.0 - c) * sg * (1.0 - sg);
            let dpv = [ds * x, ds, 1.0 - sg];
            let o = (i * k + kk) * dp;
            for u in 0..dp {
                s1[o + u] = dpv[u] / pr;
                s0[o + u] = -dpv[u] / (1.0 - pr);
            }
        }
    }
    (s1, s0)
}

/// Complete-data information: minus the exact Hessian of the M-step objective (with the
/// Beta prior's curvature for the 3PL), from the expected totals, missing masses and
/// right answers per item and node; dense `dim × dim`, block diagonal.
fn complete_info(
    p: &Params,
    th: &[f64],
    dp: usize,
    tot: &[f64],
    miss: &[f64],
    right: &[f64],
    prior: (f64, f64),
) -> Vec<f64> {
    let (m, k) = (p.a.len(), th.len());
    let dim = dp * m;
    let mut complete = vec![0.0; dim * dim];
    for i in 0..m {
        let (a, d, c) = (p.a[i], p.d[i], p.c[i]);
        let mut h = [[0.0; 3]; 3];
        for (kk, &x) in th.iter().enumerate() {
            let n = tot[kk] - miss[i * k + kk];
            let r = right[i * k + kk];
            let sg = logistic(a * x + d);
            let pr = c + (1.0 - c) * sg;
            let pq = pr * (1.0 - pr);
            let s1d = sg * (1.0 - sg);
            let s2d = s1d * (1.0 - 2.0 * sg);
            let dpv = [(1.0 - c) * s1d * x, (1.0 - c) * s1d, 1.0 - sg];
            let d2 = [
                [(1.0 - c) * s2d * x * x, (1.0 - c) * s2d * x, -s1d * x],
                [(1.0 - c) * s2d * x, (1.0 - c) * s2d, -s1d],
                [-s1d * x, -s1d, 0.0],
            ];
            let g = (r - n * pr) / pq;
            let dg = (-n * pq - (r - n * pr) * (1.0 - 2.0 * pr)) / (pq * pq);
            for u in 0..dp {
                for v in 0..dp {
                    h[u][v] -= g * d2[u][v] + dg * dpv[u] * dpv[v];
                }
            }
        }
        if dp == 3 {
            let (al, be) = prior;
            h[2][2] += (al - 1.0) / (c * c) + (be - 1.0) / ((1.0 - c) * (1.0 - c));
        }
        for u in 0..dp {
            for v in 0..dp {
                complete[(dp * i + u) * dim + dp * i + v] = h[u][v];
            }
        }
    }
    complete
}

/// The information matrices by the dense route (any model), in the full (a_i, d_i, c_i)
/// space (`dp` = 3) or (a_i, d_i) (`dp` = 2): persons × band × (dp · answered)² — the
/// reference the faster routes are tested against.
#[cfg(test)]
fn info_dense(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> FullInfo {
    let m = p.a.len();
    let k = q.len();
    let th = &q.nodes;
    let dp = if model == Model::ThreePl { 3 } else { 2 };
    let dim = dp * m;
    let t = make_tables(p, q);
    let (s1, s0) = score_tables(p, th, dp);
    let acc_len = 2 * dim * dim + 3 * m * k;
    let parts = over_posteriors(
        pats,
        &t,
        windows,
        model != Model::ThreePl,
        acc_len,
        || AccDense {
            missing: vec![0.0; dim * dim],
            xpd: vec![0.0; dim * dim],
            tot: vec![0.0; k],
            miss: vec![0.0; m * k],
            r: vec![0.0; m * k],
            sk: Vec::new(),
            idx: Vec::new(),
        },
        |acc, pi, lo, w| {
            let nw = w.len();
            let f = pats.weights[pi];
            let row = pats.row(pi);
            add_to(
                &mut acc.tot[lo..lo + nw],
                &w.iter().map(|x| f * x).collect::<Vec<_>>(),
            );
            acc.idx.clear();
            for (i, &x) in row.iter().enumerate() {
                let o = i * k + lo;
                if x == super::data::MISSING {
                    for (a, &wk) in acc.miss[o..o + nw].iter_mut().zip(w) {
                        *a += f * wk;
                    }
                } else {
                    if x == 1 {
                        for (a, &wk) in acc.r[o..o + nw].iter_mut().zip(w) {
                            *a += f * wk;
                        }
                    }
                    acc.idx.extend((0..dp).map(|u| i * dp + u));
                }
            }
            let na = acc.idx.len();
            acc.sk.clear();
            acc.sk.resize(nw * na, 0.0);
            let mut mean = vec![0.0; na];
            for (kk, &wk) in w.iter().enumerate() {
                let node = lo + kk;
                for (c, &full) in acc.idx.iter().enumerate() {
                    let (i, u) = (full / dp, full % dp);
                    let tab = if row[i] == 1 { &s1 } else { &s0 };
                    let v = tab[(i * k + node) * dp + u];
                    acc.sk[kk * na + c] = v;
                    mean[c] += wk * v;
                }
            }
            for (kk, &wk) in w.iter().enumerate() {
                let wk = f * wk;
                let sk = &mut acc.sk[kk * na..(kk + 1) * na];
                for (x, mu) in sk.iter_mut().zip(&mean) {
                    *x -= mu;
                }
                // upper triangle (the indices ascend); mirrored after the reduction
                for (a, &ia) in acc.idx.iter().enumerate() {
                    let va = wk * sk[a];
                    let out = &mut acc.missing[ia * dim..(ia + 1) * dim];
                    for (&ib, &sb) in acc.idx[a..].iter().zip(&sk[a..]) {
                        out[ib] += va * sb;
                    }
                }
            }
            for (a, &ia) in acc.idx.iter().enumerate() {
                let va = f * mean[a];
                let out = &mut acc.xpd[ia * dim..(ia + 1) * dim];
                for (&ib, &mb) in acc.idx[a..].iter().zip(&mean[a..]) {
                    out[ib] += va * mb;
                }
            }
        },
    );
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("at least one chunk");
    for o in it {
        add_to(&mut acc.missing, &o.missing);
        add_to(&mut acc.xpd, &o.xpd);
        add_to(&mut acc.tot, &o.tot);
        add_to(&mut acc.miss, &o.miss);
        add_to(&mut acc.r, &o.r);
    }
    for x in [&mut acc.missing, &mut acc.xpd] {
        for i in 0..dim {
            for j in 0..i {
                x[i * dim + j] = x[j * dim + i];
            }
        }
    }
    let complete = complete_info(p, th, dp, &acc.tot, &acc.miss, &acc.r, prior);
    FullInfo {
        dim,
        complete,
        missing: acc.missing,
        xpd: acc.xpd,
    }
}

/// Per-chunk accumulators of the pair-count pass.
struct AccPairs {
    /// Per item pair i ≤ j (packed upper triangle), per answer type (right-right,
    /// right-wrong, wrong-right, wrong-wrong) and node: Σ f w over the patterns answering
    /// both that way.
    pairs: Vec<f64>,
    xpd: Vec<f64>,
    tot: Vec<f64>,
    miss: Vec<f64>,
    r: Vec<f64>,
    /// Scratch: the pattern's answered items and mean scores.
    items: Vec<(usize, bool)>,
    mean: Vec<f64>,
}

/// Index of the pair i ≤ j in the packed upper triangle of an m × m matrix.
#[inline]
fn packed(i: usize, j: usize, m: usize) -> usize {
    i * m - i * (i + 1) / 2 + j
}

/// The information matrices by per-node pair counts (any model; used for the 3PL), in the
/// full (a_i, d_i, c_i) space. The complete-data score of item i at node k is `s1_i(k)`
/// for a right and `s0_i(k)` for a wrong answer, so
/// `Σ_p f_p Σ_k w_pk s_pk s_pkᵀ` (block i, j) `= Σ_k Σ_{types} N_k[i, j, type] s_i s_jᵀ`
/// with `N_k` the posterior mass at node k of the patterns answering i and j that way:
/// one vector add over the band per answered pair and pattern, then items² × nodes × 4
/// small products. `C` is that minus the XPD `Σ_p f_p s̄_p s̄_pᵀ` (dense per pattern over
/// its answered items, without the band factor).
fn info_pairs(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> FullInfo {
    let m = p.a.len();
    let k = q.len();
    let th = &q.nodes;
    let dp = if model == Model::ThreePl { 3 } else { 2 };
    let dim = dp * m;
    let t = make_tables(p, q);
    let (s1, s0) = score_tables(p, th, dp);
    let n_pairs = m * (m + 1) / 2;
    let acc_len = n_pairs * 4 * k + dim * dim + 3 * m * k;
    let parts = over_posteriors(
        pats,
        &t,
        windows,
        model != Model::ThreePl,
        acc_len,
        || AccPairs {
            pairs: vec![0.0; n_pairs * 4 * k],
            xpd: vec![0.0; dim * dim],
            tot: vec![0.0; k],
            miss: vec![0.0; m * k],
            r: vec![0.0; m * k],
            items: Vec::new(),
            mean: Vec::new(),
        },
        |acc, pi, lo, w| {
            let nw = w.len();
            let f = pats.weights[pi];
            let row = pats.row(pi);
            for (x, &wk) in acc.tot[lo..lo + nw].iter_mut().zip(w) {
                *x += f * wk;
            }
            acc.items.clear();
            for (i, &x) in row.iter().enumerate() {
                let o = i * k + lo;
                let target = match x {
                    super::data::MISSING => &mut acc.miss,
                    1 => &mut acc.r,
                    _ => {
                        acc.items.push((i, false));
                        continue;
                    }
                };
                for (a, &wk) in target[o..o + nw].iter_mut().zip(w) {
                    *a += f * wk;
                }
                if x == 1 {
                    acc.items.push((i, true));
                }
            }
            // pair masses per node
            for (a, &(i, xi)) in acc.items.iter().enumerate() {
                for &(j, xj) in &acc.items[a..] {
                    let ty = 2 * usize::from(!xi) + usize::from(!xj);
                    let o = (packed(i, j, m) * 4 + ty) * k + lo;
                    for (x, &wk) in acc.pairs[o..o + nw].iter_mut().zip(w) {
                        *x += f * wk;
                    }
                }
            }
            // mean scores s̄ over the answered items, then f s̄ s̄ᵀ (upper triangle)
            acc.mean.clear();
            for &(i, xi) in &acc.items {
                let tab = if xi { &s1 } else { &s0 };
                for u in 0..dp {
                    let mut sum = 0.0;
                    for (kk, &wk) in w.iter().enumerate() {
                        sum += wk * tab[(i * k + lo + kk) * dp + u];
                    }
                    acc.mean.push(sum);
                }
            }
            let na = acc.items.len();
            for a in 0..na * dp {
                let ia = acc.items[a / dp].0 * dp + a % dp;
                let va = f * acc.mean[a];
                let out = &mut acc.xpd[ia * dim..(ia + 1) * dim];
                for b in a..na * dp {
                    let ib = acc.items[b / dp].0 * dp + b % dp;
                    out[ib] += va * acc.mean[b];
                }
            }
        },
    );
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("at least one chunk");
    for o in it {
        add_to(&mut acc.pairs, &o.pairs);
        add_to(&mut acc.xpd, &o.xpd);
        add_to(&mut acc.tot, &o.tot);
        add_to(&mut acc.miss, &o.miss);
        add_to(&mut acc.r, &o.r);
    }
    for i in 0..dim {
        for j in 0..i {
            acc.xpd[i * dim + j] = acc.xpd[j * dim + i];
        }
    }
    // C = Σ_k Σ_types N_k s_i s_jᵀ − XPD, block by block (i ≤ j, mirrored)
    let blocks: Vec<Vec<f64>> = (0..m)
        .into_par_iter()
        .map(|i| {
            let mut out = vec![0.0; (m - i) * dp * dp];
            for j in i..m {
                let blk = &mut out[(j - i) * dp * dp..(j - i + 1) * dp * dp];
                for ty in 0..4 {
                    // ty = 2·[i wrong] + [j wrong]
                    let ti = if ty < 2 { &s1 } else { &s0 };
                    let tj = if ty % 2 == 0 { &s1 } else { &s0 };
                    let n = &acc.pairs[(packed(i, j, m) * 4 + ty) * k..][..k];
                    for (kk, &nk) in n.iter().enumerate() {
                        if nk == 0.0 {
                            continue;
                        }
                        let si = &ti[(i * k + kk) * dp..][..dp];
                        let sj = &tj[(j * k + kk) * dp..][..dp];
                        for u in 0..dp {
                            for v in 0..dp {
                                blk[u * dp + v] += nk * si[u] * sj[v];
                            }
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut missing = vec![0.0; dim * dim];
    for (i, out) in blocks.iter().enumerate() {
        for j in i..m {
            let blk = &out[(j - i) * dp * dp..(j - i + 1) * dp * dp];
            for u in 0..dp {
                for v in 0..dp {
                    let (r, c) = (i * dp + u, j * dp + v);
                    let val = blk[u * dp + v] - acc.xpd[r * dim + c];
                    missing[r * dim + c] = val;
                    missing[c * dim + r] = val;
                }
            }
        }
    }
    let complete = complete_info(p, th, dp, &acc.tot, &acc.miss, &acc.r, prior);
    FullInfo {
        dim,
        complete,
        missing,
        xpd: acc.xpd,
    }
}

/// The information matrices of the model at `p` (c = 0 models by the factored pass, the
/// 3PL by per-node pair counts); for c = 0 the XPD only when `want_xpd`.
pub(crate) fn full_info(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
    want_xpd: bool,
) -> FullInfo {
    if model == Model::ThreePl {
        info_pairs(model, p, pats, q, windows, prior)
    } else {
        info_linear(p, pats, q, windows, want_xpd)
    }
}

/// The model's free parameter that full-space index `f` maps to (`dp` values per item).
fn free_index(model: Model, f: usize) -> Option<usize> {
    match model {
        Model::TwoPl | Model::ThreePl => Some(f),
        Model::OnePl => Some(if f.is_multiple_of(2) { 0 } else { 1 + f / 2 }),
        Model::Rasch => (f % 2 == 1).then_some(f / 2),
    }
}

/// A full-space matrix restricted to the model's free parameters (`np × np`): the 1PL's
/// common slope sums the items' slope rows and columns; the Rasch model drops them.
pub(crate) fn to_free(model: Model, full: &[f64], dim: usize, np: usize) -> Vec<f64> {
    if matches!(model, Model::TwoPl | Model::ThreePl) {
        return full.to_vec();
    }
    let mut out = vec![0.0; np * np];
    for f1 in 0..dim {
        let Some(a) = free_index(model, f1) else {
            continue;
        };
        for f2 in 0..dim {
            if let Some(b) = free_index(model, f2) {
                out[a * np + b] += full[f1 * dim + f2];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irt::estep::initial_windows;
    use crate::irt::{CalibrationOptions, SeMethod, calibrate, simulate_2pl};

    fn assert_close(name: &str, x: &[f64], y: &[f64]) {
        let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: all zero");
        let worst = x
            .iter()
            .zip(y.iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-10 * scale,
            "{name}: max |Δ| {worst:e}, scale {scale:e}"
        );
    }

    /// The factored c = 0 pass and the pair-count pass equal the dense one (same
    /// posteriors, different algebra), with missing responses, for patterns with more
    /// right than other answers and fewer.
    #[test]
    fn factored_and_pair_passes_match_dense() {
        for (missing, seed) in [(0.0, 3u64), (0.25, 4)] {
            let (data, _, _) = simulate_2pl(1500, 12, seed, missing);
            let mut o = CalibrationOptions::new(Model::TwoPl);
            o.se_method = SeMethod::None;
            let cal = calibrate(&data, &o).unwrap();
            let p = Params {
                a: cal.items.iter().map(|x| x.a).collect(),
                d: cal.items.iter().map(|x| -x.a * x.b).collect(),
                c: vec![0.0; 12],
            };
            let cols: Vec<usize> = (0..12).collect();
            let pats = Patterns::build(&data, &cols);
            let q = Quadrature::default();
            let mut w1 = initial_windows(&pats, &q);
            let mut w2 = w1.clone();
            let mut w3 = w1.clone();
            let prior = (5.0, 17.0);
            let fast = full_info(Model::TwoPl, &p, &pats, &q, &mut w1, prior, true);
            let dense = info_dense(Model::TwoPl, &p, &pats, &q, &mut w2, prior);
            let pairs = info_pairs(Model::TwoPl, &p, &pats, &q, &mut w3, prior);
            for (how, x) in [("factored", &fast), ("pairs", &pairs)] {
                assert_close(&format!("{how} complete"), &x.complete, &dense.complete);
                assert_close(&format!("{how} missing"), &x.missing, &dense.missing);
                assert_close(&format!("{how} xpd"), &x.xpd, &dense.xpd);
            }
            // 3PL: the pair-count route against the dense one
            let mut rng = crate::irt::SplitMix64::new(seed);
            let p3 = Params {
                a: p.a.clone(),
                d: p.d.clone(),
                c: (0..12).map(|_| 0.1 + 0.15 * rng.uniform()).collect(),
            };
            let mut w4 = initial_windows(&pats, &q);
            let mut w5 = w4.clone();
            let dense = info_dense(Model::ThreePl, &p3, &pats, &q, &mut w4, prior);
            let pairs = info_pairs(Model::ThreePl, &p3, &pats, &q, &mut w5, prior);
            assert_close("3PL complete", &pairs.complete, &dense.complete);
            assert_close("3PL missing", &pairs.missing, &dense.missing);
            assert_close("3PL xpd", &pairs.xpd, &dense.xpd);
        }
    }
}

#[cfg(test)]
mod profile {
    use super::*;
    use crate::irt::estep::{e_step, initial_windows};
    use crate::irt::simulate_2pl;

    fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..n {
            let t = std::time::Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    }

    /// The SE pass against one E-step, at the true parameters (the cost does not depend on
    /// them much). `cargo test -p examflow-engine --release --lib se::profile -- --ignored
    /// --nocapture`
    #[test]
    #[ignore]
    fn time_full_info_against_e_step() {
        for (persons, items, missing, seed) in [
            (20_000, 50, 0.1, 1u64),
            (10_000, 100, 0.2, 2),
            (10_000, 100, 0.0, 2),
        ] {
            let (data, truth, _) = simulate_2pl(persons, items, seed, missing);
            let p = Params {
                a: truth.iter().map(|x| x.a).collect(),
                d: truth.iter().map(|x| -x.a * x.b).collect(),
                c: vec![0.0; items],
            };
            let cols: Vec<usize> = (0..items).collect();
            let pats = Patterns::build(&data, &cols);
            let q = Quadrature::default();
            let mut w = initial_windows(&pats, &q);
            let t = make_tables(&p, &q);
            let e = best_of(20, || {
                e_step(&pats, &t, &mut w, true);
            });
            let oakes = best_of(20, || {
                full_info(Model::TwoPl, &p, &pats, &q, &mut w, (5.0, 17.0), false);
            });
            let both = best_of(20, || {
                full_info(Model::TwoPl, &p, &pats, &q, &mut w, (5.0, 17.0), true);
            });
            eprintln!(
                "{persons} × {items}, {missing} missing: E-step {:.1} ms; Oakes pass {:.1} ms \
                 ({:.1} E-steps); with XPD {:.1} ms",
                e * 1e3,
                oakes * 1e3,
                oakes / e,
                both * 1e3
            );
        }
    }
}

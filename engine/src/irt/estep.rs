//! Response-pattern collapsing and the parallel E-step (Bock–Aitkin).
//!
//! Identical response patterns are collapsed into one pattern with a frequency weight, and
//! the unique patterns are sorted (so the result does not depend on the order of persons).
//! Each pattern is stored sparsely: the list of items answered correctly and the list of
//! items missing. With per-iteration tables over quadrature nodes
//! `base[k] = ln π_k + Σ_i ln Q_i(θ_k)` (all estimable items), `dl[i][k] = ln P − ln Q`,
//! a pattern's log-likelihood vector is `base + Σ_{correct} dl[i] − Σ_{missing} ln Q[i]`,
//! i.e. memory of one vector of nodes per pattern, never persons × items × nodes.
//!
//! Expected counts: `r[i][k]` (expected correct at node k) is accumulated over correct
//! responses only, and `n[i][k] = total[k] − miss[i][k]` (expected respondents) from the
//! posterior mass of all patterns minus that of the patterns missing item i.
//!
//! Windowing: for models whose log-posterior is concave in θ (Rasch, 1PL, 2PL: every
//! `ln P`, `ln Q` and the normal log-prior are concave), each pattern remembers the band of
//! nodes where its posterior was non-negligible last time and evaluates only that band
//! (plus a margin). The band is accepted only if its end nodes are more than `EDGE` (= 36)
//! log-units below the maximum, which by concavity bounds every node outside the band
//! below e^−36 (≈ 2e−16) of the mode; otherwise the full grid is recomputed. Nodes below that bound
//! are treated as zero posterior mass (relative effect ≈ 1e−16, i.e. rounding level).
//! The first E-step guesses each band from the pattern's proportion correct; a wrong guess
//! only costs a full recomputation.

use rayon::prelude::*;

use super::data::{MISSING, ResponseMatrix};

pub(crate) const EDGE: f64 = 36.0;
const MARGIN: usize = 2;

/// Unique response patterns over the estimable items.
pub(crate) struct Patterns {
    pub m: usize,
    pub weights: Vec<f64>,
    /// Dense rows (n_patterns × m) in {0, 1, MISSING}.
    pub rows: Vec<u8>,
    pub c_off: Vec<usize>,
    pub c_idx: Vec<u32>,
    pub m_off: Vec<usize>,
    pub m_idx: Vec<u32>,
}

impl Patterns {
    /// Collapses persons' responses on columns `cols`; persons with no response on those
    /// columns are dropped (their posterior equals the prior and they add nothing).
    pub fn build(rm: &ResponseMatrix, cols: &[usize]) -> Self {
        let m = cols.len();
        let mut proj = Vec::with_capacity(rm.n_persons * m);
        for p in 0..rm.n_persons {
            let row = rm.row(p);
            proj.extend(cols.iter().map(|&i| row[i]));
        }
        let key = |p: usize| &proj[p * m..(p + 1) * m];
        // Sort by (64-bit FNV-1a hash, bytes): cheap comparisons, and an order that depends
        // only on the set of patterns, not on the order of persons.
        let mut order: Vec<(u64, usize)> = (0..rm.n_persons)
            .filter(|&p| key(p).iter().any(|&v| v != MISSING))
            .map(|p| {
                let h = key(p).iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                (h, p)
            })
            .collect();
        order.par_sort_unstable_by(|x, y| x.0.cmp(&y.0).then_with(|| key(x.1).cmp(key(y.1))));
        let order: Vec<usize> = order.into_iter().map(|(_, p)| p).collect();
        let mut pats = Patterns {
            m,
            weights: Vec::new(),
            rows: Vec::new(),
            c_off: vec![0],
            c_idx: Vec::new(),
            m_off: vec![0],
            m_idx: Vec::new(),
        };
        let mut j = 0;
        while j < order.len() {
            let k0 = key(order[j]);
            let mut count = 1usize;
            while j + count < order.len() && key(order[j + count]) == k0 {
                count += 1;
            }
            pats.weights.push(count as f64);
            pats.rows.extend_from_slice(k0);
            for (i, &v) in k0.iter().enumerate() {
                if v == 1 {
                    pats.c_idx.push(i as u32);
                } else if v == MISSING {
                    pats.m_idx.push(i as u32);
                }
            }
            pats.c_off.push(pats.c_idx.len());
            pats.m_off.push(pats.m_idx.len());
            j += count;
        }
        pats
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn correct(&self, p: usize) -> &[u32] {
        &self.c_idx[self.c_off[p]..self.c_off[p + 1]]
    }

    pub fn missing(&self, p: usize) -> &[u32] {
        &self.m_idx[self.m_off[p]..self.m_off[p + 1]]
    }

    pub fn row(&self, p: usize) -> &[u8] {
        &self.rows[p * self.m..(p + 1) * self.m]
    }
}

/// Per-iteration log-probability tables (items × nodes, row-major).
pub(crate) struct Tables {
    pub k: usize,
    pub base: Vec<f64>,
    pub dl: Vec<f64>,
    pub lq: Vec<f64>,
}

/// Expected counts from one E-step.
pub(crate) struct Counts {
    pub k: usize,
    pub total: Vec<f64>,
    pub r: Vec<f64>,
    pub miss: Vec<f64>,
    pub loglik: f64,
}

impl Counts {
    fn zeros(m: usize, k: usize) -> Self {
        Self {
            k,
            total: vec![0.0; k],
            r: vec![0.0; m * k],
            miss: vec![0.0; m * k],
            loglik: 0.0,
        }
    }

    fn add(&mut self, o: &Counts) {
        add_to(&mut self.total, &o.total);
        add_to(&mut self.r, &o.r);
        add_to(&mut self.miss, &o.miss);
        self.loglik += o.loglik;
    }

    /// Expected correct responses to item i at each node.
    pub fn r_row(&self, i: usize) -> &[f64] {
        &self.r[i * self.k..(i + 1) * self.k]
    }

    /// Expected respondents to item i at each node.
    pub fn n_row(&self, i: usize) -> Vec<f64> {
        self.total
            .iter()
            .zip(&self.miss[i * self.k..(i + 1) * self.k])
            .map(|(t, m)| (t - m).max(0.0))
            .collect()
    }
}

#[inline]
fn add_to(acc: &mut [f64], x: &[f64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[inline]
fn sub_from(acc: &mut [f64], x: &[f64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a -= b;
    }
}

/// Fixed chunking (independent of the thread count, so results are reproducible).
pub(crate) fn chunk_size(n: usize) -> usize {
    n.div_ceil(64).max(256)
}

/// Per-pattern posterior band `[lo, hi]` remembered between E-steps.
pub(crate) type Window = [u16; 2];

/// First-iteration bands: θ guessed from the proportion correct, ± 2.5.
pub(crate) fn initial_windows(pats: &Patterns, q: &super::model::Quadrature) -> Vec<Window> {
    let k = q.len();
    let (lo_t, step) = (q.nodes[0], q.step());
    (0..pats.len())
        .map(|p| {
            let right = pats.correct(p).len() as f64;
            let answered = (pats.m - pats.missing(p).len()) as f64;
            let f = (right + 0.5) / (answered + 1.0);
            let guess = (1.5 * (f / (1.0 - f)).ln()).clamp(-4.0, 4.0);
            let at = |t: f64| (((t - lo_t) / step).round().max(0.0) as usize).min(k - 1) as u16;
            [at(guess - 2.5), at(guess + 2.5)]
        })
        .collect()
}

/// Computes the pattern's unnormalised log-posterior on its band and returns
/// `(lo, hi, max)` with `ll[lo..=hi]` filled. `concave` enables the band shortcut.
#[inline]
pub(crate) fn log_posterior(
    pats: &Patterns,
    p: usize,
    t: &Tables,
    win: Window,
    concave: bool,
    ll: &mut [f64],
) -> (usize, usize, f64) {
    let k = t.k;
    let (mut lo, mut hi) = if concave {
        (win[0] as usize, win[1] as usize)
    } else {
        (0, k - 1)
    };
    let corr = pats.correct(p);
    let miss = pats.missing(p);
    loop {
        let l = &mut ll[lo..=hi];
        l.copy_from_slice(&t.base[lo..=hi]);
        for &i in corr {
            let off = i as usize * k;
            add_to(l, &t.dl[off + lo..=off + hi]);
        }
        for &i in miss {
            let off = i as usize * k;
            sub_from(l, &t.lq[off + lo..=off + hi]);
        }
        let mx = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let ok_lo = lo == 0 || ll[lo] < mx - EDGE;
        let ok_hi = hi == k - 1 || ll[hi] < mx - EDGE;
        if ok_lo && ok_hi {
            return (lo, hi, mx);
        }
        lo = 0;
        hi = k - 1;
    }
}

/// One E-step over all patterns (parallel over fixed chunks, reduced in order).
pub(crate) fn e_step(pats: &Patterns, t: &Tables, windows: &mut [Window], concave: bool) -> Counts {
    let k = t.k;
    let m = pats.m;
    let cs = chunk_size(pats.len());
    let parts: Vec<Counts> = windows
        .par_chunks_mut(cs)
        .enumerate()
        .map(|(ci, wc)| {
            let mut acc = Counts::zeros(m, k);
            let mut ll = vec![0.0; k];
            for (j, win) in wc.iter_mut().enumerate() {
                let p = ci * cs + j;
                let (lo, hi, mx) = log_posterior(pats, p, t, *win, concave, &mut ll);
                let thr = mx - EDGE;
                let mut tlo = lo;
                while ll[tlo] < thr {
                    tlo += 1;
                }
                let mut thi = hi;
                while ll[thi] < thr {
                    thi -= 1;
                }
                let w = &mut ll[tlo..=thi];
                let mut s = 0.0;
                for x in w.iter_mut() {
                    *x = (*x - mx).exp();
                    s += *x;
                }
                let weight = pats.weights[p];
                acc.loglik += weight * (mx + s.ln());
                let scale = weight / s;
                for x in w.iter_mut() {
                    *x *= scale;
                }
                let w = &ll[tlo..=thi];
                add_to(&mut acc.total[tlo..=thi], w);
                for &i in pats.correct(p) {
                    let off = i as usize * k;
                    add_to(&mut acc.r[off + tlo..=off + thi], w);
                }
                for &i in pats.missing(p) {
                    let off = i as usize * k;
                    add_to(&mut acc.miss[off + tlo..=off + thi], w);
                }
                *win = [
                    tlo.saturating_sub(MARGIN) as u16,
                    (thi + MARGIN).min(k - 1) as u16,
                ];
            }
            acc
        })
        .collect();
    let mut it = parts.into_iter();
    let mut total = it.next().unwrap_or_else(|| Counts::zeros(m, k));
    for part in it {
        total.add(&part);
    }
    total
}

//! Response-pattern collapsing and the parallel E-step (Bock–Aitkin).
//!
//! Identical response patterns are collapsed into one pattern with a frequency weight, and
//! the unique patterns are sorted (so the result does not depend on the order of persons).
//! Each pattern is stored sparsely: the shorter of its list of correct and of wrong items
//! (`flip` says which), and the list of items missing. With per-iteration tables over
//! quadrature nodes `base[k] = ln π_k + Σ_i ln Q_i(θ_k)` (all estimable items),
//! `dl[i][k] = ln P − ln Q`, a pattern's log-likelihood vector is
//! `base + Σ_{correct} dl[i] − Σ_{missing} ln Q[i]`, i.e. memory of one vector of nodes per
//! pattern, never persons × items × nodes. For a flipped pattern the correct-item sum is
//! `Σ_all dl − Σ_{wrong} dl − Σ_{missing} dl`. When every c = 0, `dl[i][k] = a_i θ_k + d_i`,
//! so that sum is `θ_k Σa + Σd` (two scalar sums per pattern).
//!
//! Expected counts: `r[i][k]` (expected correct at node k) is accumulated over the correct
//! responses of unflipped patterns plus, for flipped patterns, their total posterior mass
//! minus that of their wrong and missing responses; `n[i][k] = total[k] − miss[i][k]`
//! (expected respondents) from the posterior mass of all patterns minus that of the
//! patterns missing item i. So each pattern costs min(#correct, #wrong) + #missing rows.
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
//!
//! Complete patterns under c = 0 (Rasch, 1PL, 2PL) skip the band evaluation entirely: the
//! log-posterior `base[k] + θ_k Σa + Σd` is concave with increments
//! `base[k+1] − base[k] + h Σa`, so its mode is found by bisection on the increments and
//! the posterior weights `exp(ll[k] − max)` by multiplying per-node factors
//! `exp(base[k±1] − base[k]) · exp(±h Σa)` outward from the mode until they fall below
//! e^−36 — one `exp` per pattern instead of one per node (relative differences from the
//! direct evaluation of a few ulps per node).
//!
//! The per-node loops run on fixed widths (8 … 48 nodes, zero-padded; adding 0 changes
//! nothing), which the compiler unrolls and vectorises.

use std::borrow::Cow;

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
    /// Per pattern: its correct items, or (when `flip`) its wrong items, whichever is
    /// shorter.
    pub x_off: Vec<usize>,
    pub x_idx: Vec<u32>,
    pub flip: Vec<bool>,
    pub n_correct: Vec<u32>,
    pub m_off: Vec<usize>,
    pub m_idx: Vec<u32>,
}

/// 64-bit hash of a response row, eight bytes at a time (FxHash-style mixing plus a
/// final avalanche). Only used to order patterns; ties are broken by the bytes.
#[inline]
fn row_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h.rotate_left(5) ^ v).wrapping_mul(K);
    }
    for &b in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Sparse lists of one block of patterns: (x items, x counts, flips, #correct, missing
/// items, missing counts).
type Lists = (Vec<u32>, Vec<u32>, Vec<bool>, Vec<u32>, Vec<u32>, Vec<u32>);

impl Patterns {
    /// Collapses persons' responses on columns `cols`; persons with no response on those
    /// columns are dropped (their posterior equals the prior and they add nothing).
    pub fn build(rm: &ResponseMatrix, cols: &[usize]) -> Self {
        let m = cols.len();
        let all_cols = m == rm.n_items && cols.iter().enumerate().all(|(j, &i)| i == j);
        let proj: Cow<[u8]> = if all_cols {
            Cow::Borrowed(&rm.data)
        } else {
            let mut v = vec![0u8; rm.n_persons * m];
            if m > 0 {
                v.par_chunks_mut(m).enumerate().for_each(|(p, out)| {
                    let row = rm.row(p);
                    for (o, &i) in out.iter_mut().zip(cols) {
                        *o = row[i];
                    }
                });
            }
            Cow::Owned(v)
        };
        let proj: &[u8] = &proj;
        let key = |p: usize| &proj[p * m..(p + 1) * m];
        // Sort by (proportion correct, 64-bit hash, bytes): an order that depends only on
        // the set of patterns, not on the order of persons; cheap comparisons; and
        // neighbouring patterns have similar posteriors, so the E-step's accumulators for
        // a run of patterns touch the same few nodes (cache locality).
        let mut order: Vec<(u64, usize)> = (0..rm.n_persons)
            .into_par_iter()
            .with_min_len(1024)
            .filter_map(|p| {
                let k = key(p);
                let (mut right, mut answered) = (0u64, 0u64);
                for &v in k {
                    right += u64::from(v == 1);
                    answered += u64::from(v != MISSING);
                }
                (answered > 0).then(|| {
                    // 16 bits of proportion correct, 48 bits of hash
                    let prop = (right << 16) / (answered + 1);
                    (prop << 48 | row_hash(k) >> 16, p)
                })
            })
            .collect();
        order.par_sort_unstable_by(|x, y| x.0.cmp(&y.0).then_with(|| key(x.1).cmp(key(y.1))));
        // first person of every distinct pattern, plus the end
        let mut starts: Vec<usize> = Vec::with_capacity(order.len() + 1);
        for j in 0..order.len() {
            if j == 0 || order[j].0 != order[j - 1].0 || key(order[j].1) != key(order[j - 1].1) {
                starts.push(j);
            }
        }
        starts.push(order.len());
        let n_pat = starts.len() - 1;
        let weights: Vec<f64> = starts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let firsts: Vec<usize> = starts[..n_pat].iter().map(|&j| order[j].1).collect();
        drop(order);
        let mut rows = vec![0u8; n_pat * m];
        if m > 0 {
            rows.par_chunks_mut(m)
                .zip(firsts.par_iter())
                .for_each(|(out, &p)| out.copy_from_slice(key(p)));
        }
        // sparse lists, built per block in parallel and concatenated in order
        let parts: Vec<Lists> = firsts
            .par_chunks(4096)
            .map(|ps| {
                let mut l: Lists = Default::default();
                // branch-free split of a row into correct / wrong / missing item lists
                let (mut corr, mut wrong, mut miss) = (vec![0u32; m], vec![0u32; m], vec![0u32; m]);
                for &p in ps {
                    let (mut nc, mut nw, mut nm) = (0usize, 0usize, 0usize);
                    for (i, &v) in key(p).iter().enumerate() {
                        // nc, nw, nm ≤ i < m: in bounds
                        corr[nc] = i as u32;
                        wrong[nw] = i as u32;
                        miss[nm] = i as u32;
                        nc += usize::from(v == 1);
                        nw += usize::from(v == 0);
                        nm += usize::from(v == MISSING);
                    }
                    let flip = nw < nc;
                    let x = if flip { &wrong[..nw] } else { &corr[..nc] };
                    l.0.extend_from_slice(x);
                    l.1.push(x.len() as u32);
                    l.2.push(flip);
                    l.3.push(nc as u32);
                    l.4.extend_from_slice(&miss[..nm]);
                    l.5.push(nm as u32);
                }
                l
            })
            .collect();
        let mut pats = Patterns {
            m,
            weights,
            rows,
            x_off: Vec::with_capacity(n_pat + 1),
            x_idx: Vec::with_capacity(parts.iter().map(|x| x.0.len()).sum()),
            flip: Vec::with_capacity(n_pat),
            n_correct: Vec::with_capacity(n_pat),
            m_off: Vec::with_capacity(n_pat + 1),
            m_idx: Vec::with_capacity(parts.iter().map(|x| x.4.len()).sum()),
        };
        pats.x_off.push(0);
        pats.m_off.push(0);
        for (xi, xn, fl, nc, mi, mn) in parts {
            pats.x_idx.extend_from_slice(&xi);
            pats.m_idx.extend_from_slice(&mi);
            pats.flip.extend_from_slice(&fl);
            pats.n_correct.extend_from_slice(&nc);
            let mut last = *pats.x_off.last().unwrap_or(&0);
            pats.x_off.extend(xn.iter().map(|&c| {
                last += c as usize;
                last
            }));
            let mut last = *pats.m_off.last().unwrap_or(&0);
            pats.m_off.extend(mn.iter().map(|&c| {
                last += c as usize;
                last
            }));
        }
        pats
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The pattern's correct items, or its wrong items when `flip[p]`.
    pub fn xs(&self, p: usize) -> &[u32] {
        &self.x_idx[self.x_off[p]..self.x_off[p + 1]]
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
    /// `ln P − ln Q` (empty when `linear` is set).
    pub dl: Vec<f64>,
    pub lq: Vec<f64>,
    /// `Σ_i dl[i]` (empty when `linear` is set).
    pub dl_all: Vec<f64>,
    /// Set when every item has c = 0: then `ln P − ln Q = a θ + d` exactly.
    pub linear: Option<Linear>,
}

/// Slopes, intercepts and node tables for the c = 0 shortcut of [`Tables`].
pub(crate) struct Linear {
    pub nodes: Vec<f64>,
    /// Interleaved (a_i, d_i).
    ad: Vec<f64>,
    a_tot: f64,
    d_tot: f64,
    walk: Option<Walk>,
}

impl Tables {
    /// Tables from `base` and the per-item rows; `a`, `d` given when every c = 0 (then
    /// `dl` may be empty).
    pub fn new(
        nodes: &[f64],
        base: Vec<f64>,
        dl: Vec<f64>,
        lq: Vec<f64>,
        linear: Option<(Vec<f64>, Vec<f64>)>,
    ) -> Self {
        let k = nodes.len();
        let linear = linear.map(|(a, d)| Linear {
            nodes: nodes.to_vec(),
            ad: a.iter().zip(&d).flat_map(|(&x, &y)| [x, y]).collect(),
            a_tot: a.iter().sum(),
            d_tot: d.iter().sum(),
            walk: Walk::new(nodes, &base),
        });
        let mut dl_all = Vec::new();
        if linear.is_none() && k > 0 {
            dl_all = vec![0.0; k];
            for row in dl.chunks_exact(k) {
                add_to(&mut dl_all, row);
            }
        }
        Self {
            k,
            base,
            dl,
            lq,
            dl_all,
            linear,
        }
    }
}

/// Precomputed per-node factors for the multiplicative walk over a log-density of the form
/// `base[k] + s·θ_k` with concave `base` on an equally spaced grid (see the module docs).
pub(crate) struct Walk {
    pub nodes: Vec<f64>,
    pub base: Vec<f64>,
    thr: Vec<f64>,
    h: f64,
    ebd: Vec<f64>,
    ebd_inv: Vec<f64>,
}

impl Walk {
    /// `None` when the grid is not equally spaced or a factor could overflow.
    pub fn new(nodes: &[f64], base: &[f64]) -> Option<Self> {
        let k = nodes.len();
        if k < 2 || base.len() != k {
            return None;
        }
        let bdiff: Vec<f64> = base.windows(2).map(|w| w[1] - w[0]).collect();
        let dt: Vec<f64> = nodes.windows(2).map(|w| w[1] - w[0]).collect();
        let h = (nodes[k - 1] - nodes[0]) / (k - 1) as f64;
        let ok = h > 0.0
            && bdiff.iter().all(|x| x.abs() < 300.0)
            && dt.iter().all(|&x| (x - h).abs() <= 1e-9 * h);
        ok.then(|| Self {
            nodes: nodes.to_vec(),
            base: base.to_vec(),
            ebd: bdiff.iter().map(|x| x.exp()).collect(),
            ebd_inv: bdiff.iter().map(|x| (-x).exp()).collect(),
            thr: bdiff.iter().zip(&dt).map(|(b, d)| -b / d).collect(),
            h,
        })
    }

    /// The node of the maximum of `base[k] + s·θ_k`: the number of increments
    /// `base[k+1] − base[k] + s·(θ_{k+1} − θ_k)` that are ≥ 0, i.e. of thresholds
    /// `−(base[k+1] − base[k]) / (θ_{k+1} − θ_k) ≤ s` (increments decrease by concavity);
    /// counted without branches.
    #[inline]
    pub fn mode(&self, s: f64) -> usize {
        self.thr.iter().map(|&t| usize::from(t <= s)).sum()
    }

    /// `(exp(s·h), exp(−s·h))`, or `None` when too large to walk safely.
    #[inline]
    pub fn ratios(&self, s: f64) -> Option<(f64, f64)> {
        let step = s * self.h;
        (step.abs() < 300.0).then(|| {
            let r = step.exp();
            (r, 1.0 / r)
        })
    }

    /// The factor `exp(ll[k + 1] − ll[k])` given `r = exp(s·h)`.
    #[inline(always)]
    pub fn up(&self, k: usize, r: f64) -> f64 {
        self.ebd[k] * r
    }

    /// The factor `exp(ll[k − 1] − ll[k])` given `rinv = exp(−s·h)`.
    #[inline(always)]
    pub fn down(&self, k: usize, rinv: f64) -> f64 {
        self.ebd_inv[k - 1] * rinv
    }
}

/// Expected counts from one E-step.
pub(crate) struct Counts {
    pub k: usize,
    pub total: Vec<f64>,
    pub r: Vec<f64>,
    pub miss: Vec<f64>,
    pub loglik: f64,
    /// Flipped patterns (during accumulation only): their total mass, and the mass of
    /// their wrong and of their missing responses per item.
    flip_total: Vec<f64>,
    flip_wrong: Vec<f64>,
    flip_miss: Vec<f64>,
}

impl Counts {
    fn zeros(m: usize, k: usize) -> Self {
        Self {
            k,
            total: vec![0.0; k],
            r: vec![0.0; m * k],
            miss: vec![0.0; m * k],
            loglik: 0.0,
            flip_total: vec![0.0; k],
            flip_wrong: vec![0.0; m * k],
            flip_miss: vec![0.0; m * k],
        }
    }

    fn clear(&mut self) {
        for v in [
            &mut self.total,
            &mut self.r,
            &mut self.miss,
            &mut self.flip_total,
            &mut self.flip_wrong,
            &mut self.flip_miss,
        ] {
            v.fill(0.0);
        }
        self.loglik = 0.0;
    }

    fn add(&mut self, o: &Counts) {
        add_to(&mut self.total, &o.total);
        add_to(&mut self.r, &o.r);
        add_to(&mut self.miss, &o.miss);
        add_to(&mut self.flip_total, &o.flip_total);
        add_to(&mut self.flip_wrong, &o.flip_wrong);
        add_to(&mut self.flip_miss, &o.flip_miss);
        self.loglik += o.loglik;
    }

    /// Folds the flipped patterns' masses into `r` and `miss`.
    fn finish(&mut self) {
        let k = self.k;
        if k == 0 {
            return;
        }
        for ((r, fw), (ms, fm)) in self
            .r
            .chunks_exact_mut(k)
            .zip(self.flip_wrong.chunks_exact(k))
            .zip(
                self.miss
                    .chunks_exact_mut(k)
                    .zip(self.flip_miss.chunks_exact(k)),
            )
        {
            for j in 0..k {
                r[j] += self.flip_total[j] - fw[j] - fm[j];
                ms[j] += fm[j];
            }
        }
        self.flip_total = Vec::new();
        self.flip_wrong = Vec::new();
        self.flip_miss = Vec::new();
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

/// Fixed chunking (independent of the thread count, so results are reproducible): at most
/// 64 chunks, of at least 1024 patterns. Each chunk zeroes and is summed over its own
/// item × node accumulators; below about a thousand patterns that costs more than a tenth
/// of the chunk's own work.
pub(crate) fn chunk_size(n: usize) -> usize {
    n.div_ceil(64).max(1024)
}

/// Per-pattern posterior band `[lo, hi]` remembered between E-steps.
pub(crate) type Window = [u16; 2];

/// First-iteration bands: θ guessed from the proportion correct, ± 2.5.
pub(crate) fn initial_windows(pats: &Patterns, q: &super::model::Quadrature) -> Vec<Window> {
    let k = q.len();
    let (lo_t, step) = (q.nodes[0], q.step());
    (0..pats.len())
        .map(|p| {
            let right = f64::from(pats.n_correct[p]);
            let answered = (pats.m - pats.missing(p).len()) as f64;
            let f = (right + 0.5) / (answered + 1.0);
            let guess = (1.5 * (f / (1.0 - f)).ln()).clamp(-4.0, 4.0);
            let at = |t: f64| (((t - lo_t) / step).round().max(0.0) as usize).min(k - 1) as u16;
            [at(guess - 2.5), at(guess + 2.5)]
        })
        .collect()
}

/// `e^x` for `x ∈ [−708, 0]` (callers clamp), within a few ulp of [`f64::exp`]: Cody–Waite
/// reduction `x = k ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-13 Taylor polynomial (truncation
/// below 1e−18) and the scale 2^k built from its bits. No branches or table look-ups, so
/// loops over arrays of it vectorise.
#[inline(always)]
pub(crate) fn exp_neg(x: f64) -> f64 {
    // fdlibm's split of ln 2 (the high part has trailing zero bits: k·LN2_HI is exact)
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer
    let t = x * std::f64::consts::LOG2_E + SHIFT;
    let kf = t - SHIFT;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // t's low mantissa bits hold k (two's complement); 2^k = (k + 1023) << 52
    let scale = f64::from_bits(t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(1023) << 52);
    p * scale
}

/// Fixed widths for the banded loops (compiled as fully unrolled, vectorised loops).
const WIDTHS: [usize; 10] = [8, 12, 16, 20, 24, 28, 32, 36, 40, 48];

/// Smallest fixed width ≥ `w` that fits the grid of `k` nodes (`None`: use the slice loop).
#[inline]
fn width_class(w: usize, k: usize) -> Option<usize> {
    WIDTHS.iter().copied().find(|&b| b >= w && b <= k)
}

/// Calls `$f::<B>(args)` for the fixed width `B = $b` (one of [`WIDTHS`]).
macro_rules! with_width {
    ($b:expr, $f:ident ( $($arg:expr),* )) => {
        match $b {
            8 => $f::<8>($($arg),*),
            12 => $f::<12>($($arg),*),
            16 => $f::<16>($($arg),*),
            20 => $f::<20>($($arg),*),
            24 => $f::<24>($($arg),*),
            28 => $f::<28>($($arg),*),
            32 => $f::<32>($($arg),*),
            36 => $f::<36>($($arg),*),
            40 => $f::<40>($($arg),*),
            _ => $f::<48>($($arg),*),
        }
    };
}

#[inline(always)]
fn arr<const B: usize>(x: &[f64], at: usize) -> &[f64; B] {
    x[at..at + B].try_into().expect("fixed-width slice")
}

#[inline(always)]
fn arr_mut<const B: usize>(x: &mut [f64], at: usize) -> &mut [f64; B] {
    (&mut x[at..at + B]).try_into().expect("fixed-width slice")
}

/// A pattern as the E-step sees it.
#[derive(Clone, Copy)]
struct Pat<'a> {
    xs: &'a [u32],
    flip: bool,
    miss: &'a [u32],
}

impl<'a> Pat<'a> {
    #[inline]
    fn get(pats: &'a Patterns, p: usize) -> Self {
        Self {
            xs: pats.xs(p),
            flip: pats.flip[p],
            miss: pats.missing(p),
        }
    }
}

/// (Σa, Σd) over the pattern's correct items, for [`Tables::linear`].
#[inline]
fn linear_sums(lin: &Linear, pat: Pat) -> (f64, f64) {
    // four independent (a, d) accumulators: short dependency chains
    let mut acc = [[0.0f64; 2]; 4];
    let mut add_items = |items: &[u32]| {
        let mut it = items.chunks_exact(4);
        for q in &mut it {
            for (a, &i) in acc.iter_mut().zip(q) {
                let v = &lin.ad[2 * i as usize..2 * i as usize + 2];
                a[0] += v[0];
                a[1] += v[1];
            }
        }
        for (a, &i) in acc.iter_mut().zip(it.remainder()) {
            let v = &lin.ad[2 * i as usize..2 * i as usize + 2];
            a[0] += v[0];
            a[1] += v[1];
        }
    };
    add_items(pat.xs);
    if pat.flip {
        add_items(pat.miss);
    }
    let sa = (acc[0][0] + acc[1][0]) + (acc[2][0] + acc[3][0]);
    let sd = (acc[0][1] + acc[1][1]) + (acc[2][1] + acc[3][1]);
    if pat.flip {
        (lin.a_tot - sa, lin.d_tot - sd)
    } else {
        (sa, sd)
    }
}

/// Fills `ll[st..st + B]` with the log-posterior and returns its maximum.
#[inline]
fn eval_fixed<const B: usize>(
    t: &Tables,
    sums: Option<(f64, f64)>,
    pat: Pat,
    st: usize,
    ll: &mut [f64],
) -> f64 {
    let k = t.k;
    // a local array, so the sums stay in registers
    let mut l: [f64; B] = *arr(&t.base, st);
    match (sums, &t.linear) {
        (Some((sa, sd)), Some(lin)) => {
            let th: &[f64; B] = arr(&lin.nodes, st);
            for j in 0..B {
                l[j] += sa * th[j] + sd;
            }
        }
        _ if !pat.flip => {
            for &i in pat.xs {
                let row: &[f64; B] = arr(&t.dl, i as usize * k + st);
                for j in 0..B {
                    l[j] += row[j];
                }
            }
        }
        _ => {
            let all: &[f64; B] = arr(&t.dl_all, st);
            for j in 0..B {
                l[j] += all[j];
            }
            for &i in pat.xs.iter().chain(pat.miss) {
                let row: &[f64; B] = arr(&t.dl, i as usize * k + st);
                for j in 0..B {
                    l[j] -= row[j];
                }
            }
        }
    }
    for &i in pat.miss {
        let row: &[f64; B] = arr(&t.lq, i as usize * k + st);
        for j in 0..B {
            l[j] -= row[j];
        }
    }
    *arr_mut::<B>(ll, st) = l;
    l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
}

/// As [`eval_fixed`] on `ll[lo..=hi]` of any width.
fn eval_slice(
    t: &Tables,
    sums: Option<(f64, f64)>,
    pat: Pat,
    lo: usize,
    hi: usize,
    ll: &mut [f64],
) -> f64 {
    let k = t.k;
    let l = &mut ll[lo..=hi];
    match (sums, &t.linear) {
        (Some((sa, sd)), Some(lin)) => {
            for ((x, &b), &th) in l.iter_mut().zip(&t.base[lo..=hi]).zip(&lin.nodes[lo..=hi]) {
                *x = b + (sa * th + sd);
            }
        }
        _ if !pat.flip => {
            l.copy_from_slice(&t.base[lo..=hi]);
            for &i in pat.xs {
                let off = i as usize * k;
                add_to(l, &t.dl[off + lo..=off + hi]);
            }
        }
        _ => {
            l.copy_from_slice(&t.base[lo..=hi]);
            add_to(l, &t.dl_all[lo..=hi]);
            for &i in pat.xs.iter().chain(pat.miss) {
                let off = i as usize * k;
                sub_from(l, &t.dl[off + lo..=off + hi]);
            }
        }
    }
    for &i in pat.miss {
        let off = i as usize * k;
        sub_from(l, &t.lq[off + lo..=off + hi]);
    }
    l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
}

fn log_posterior_pat(
    pat: Pat,
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
    let sums = t.linear.as_ref().map(|lin| linear_sums(lin, pat));
    loop {
        let mx = match width_class(hi - lo + 1, k) {
            Some(b) => {
                lo = lo.min(k - b);
                hi = lo + b - 1;
                with_width!(b, eval_fixed(t, sums, pat, lo, ll))
            }
            None => eval_slice(t, sums, pat, lo, hi, ll),
        };
        let ok_lo = lo == 0 || ll[lo] < mx - EDGE;
        let ok_hi = hi == k - 1 || ll[hi] < mx - EDGE;
        if ok_lo && ok_hi {
            return (lo, hi, mx);
        }
        lo = 0;
        hi = k - 1;
    }
}

/// Computes the pattern's unnormalised log-posterior on (at least) its band and returns
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
    log_posterior_pat(Pat::get(pats, p), t, win, concave, ll)
}

/// Posterior weights `exp(ll[k] − max)` of a complete pattern under c = 0 by the
/// multiplicative walk (see the module docs): fills `e[lo..=hi]` (the nodes within
/// e^−EDGE of the mode) and returns `(lo, hi, max ll)`. `None` if the walk is not safe.
#[inline]
fn walk(lin: &Linear, sa: f64, sd: f64, e: &mut [f64]) -> Option<(usize, usize, f64)> {
    let wk = lin.walk.as_ref()?;
    let (r, rinv) = wk.ratios(sa)?;
    let k = wk.nodes.len();
    let km = wk.mode(sa);
    let mx = wk.base[km] + (sa * wk.nodes[km] + sd);
    let tiny = (-EDGE).exp();
    e[km] = 1.0;
    let mut w = 1.0;
    let mut hi = km;
    while hi + 1 < k {
        w *= wk.up(hi, r);
        if w < tiny {
            break;
        }
        hi += 1;
        e[hi] = w;
    }
    let mut w = 1.0;
    let mut lo = km;
    while lo > 0 {
        w *= wk.down(lo, rinv);
        if w < tiny {
            break;
        }
        lo -= 1;
        e[lo] = w;
    }
    Some((lo, hi, mx))
}

/// `ll[st..st + B] ← exp(ll − mx)` (vectorised; arguments clamped to ≥ −700).
#[inline]
fn exp_fixed<const B: usize>(ll: &mut [f64], st: usize, mx: f64) {
    let l: &mut [f64; B] = arr_mut(ll, st);
    for x in l.iter_mut() {
        *x = exp_neg((*x - mx).max(-700.0));
    }
}

/// Adds the posterior weights `w` (zero outside the pattern's band) at nodes
/// `st..st + B` to the total and to the rows of the pattern's listed and missing items.
#[inline]
fn accumulate_fixed<const B: usize>(acc: &mut Counts, k: usize, pat: Pat, st: usize, w: &[f64]) {
    // a local copy: kept in registers, and visibly not aliasing the accumulators
    let w: [f64; B] = *arr(w, 0);
    let tot: &mut [f64; B] = arr_mut(&mut acc.total, st);
    for j in 0..B {
        tot[j] += w[j];
    }
    let (xs_acc, miss_acc) = if pat.flip {
        let ft: &mut [f64; B] = arr_mut(&mut acc.flip_total, st);
        for j in 0..B {
            ft[j] += w[j];
        }
        (&mut acc.flip_wrong, &mut acc.flip_miss)
    } else {
        (&mut acc.r, &mut acc.miss)
    };
    for &i in pat.xs {
        let r: &mut [f64; B] = arr_mut(xs_acc, i as usize * k + st);
        for j in 0..B {
            r[j] += w[j];
        }
    }
    for &i in pat.miss {
        let r: &mut [f64; B] = arr_mut(miss_acc, i as usize * k + st);
        for j in 0..B {
            r[j] += w[j];
        }
    }
}

/// As [`accumulate_fixed`] for any width `w.len()`.
fn accumulate_slice(acc: &mut Counts, k: usize, pat: Pat, st: usize, w: &[f64]) {
    let b = w.len();
    add_to(&mut acc.total[st..st + b], w);
    let (xs_acc, miss_acc) = if pat.flip {
        add_to(&mut acc.flip_total[st..st + b], w);
        (&mut acc.flip_wrong, &mut acc.flip_miss)
    } else {
        (&mut acc.r, &mut acc.miss)
    };
    for &i in pat.xs {
        let off = i as usize * k + st;
        add_to(&mut xs_acc[off..off + b], w);
    }
    for &i in pat.miss {
        let off = i as usize * k + st;
        add_to(&mut miss_acc[off..off + b], w);
    }
}

/// One E-step over all patterns (parallel over fixed chunks, reduced in order).
pub(crate) fn e_step(pats: &Patterns, t: &Tables, windows: &mut [Window], concave: bool) -> Counts {
    e_step_reusing(pats, t, windows, concave, &mut Vec::new())
}

/// [`e_step`] with the chunks' accumulators kept in `spare` for the next call: an EM runs
/// tens of E-steps, and allocating and zeroing fresh accumulators (fresh pages, each
/// faulted in) for every chunk of every step cost about a sixth of the calibration.
pub(crate) fn e_step_reusing(
    pats: &Patterns,
    t: &Tables,
    windows: &mut [Window],
    concave: bool,
    spare: &mut Vec<Counts>,
) -> Counts {
    let k = t.k;
    let m = pats.m;
    let cs = chunk_size(pats.len());
    let chunks = windows.len().div_ceil(cs);
    if spare
        .first()
        .is_some_and(|c| c.k != k || c.r.len() != m * k)
    {
        spare.clear();
    }
    spare.truncate(chunks);
    while spare.len() < chunks {
        spare.push(Counts::zeros(m, k));
    }
    windows
        .par_chunks_mut(cs)
        .zip(spare.par_iter_mut())
        .enumerate()
        .for_each(|(ci, (wc, acc))| {
            acc.clear();
            let mut ll = vec![0.0; k];
            let mut wbuf = vec![0.0; k];
            for (j, win) in wc.iter_mut().enumerate() {
                let p = ci * cs + j;
                let pat = Pat::get(pats, p);
                // posterior weights relative to the mode on [tlo, thi], in `ll`
                let walked = match &t.linear {
                    Some(lin) if concave && pat.miss.is_empty() => {
                        let (sa, sd) = linear_sums(lin, pat);
                        walk(lin, sa, sd, &mut ll)
                    }
                    _ => None,
                };
                let (tlo, thi, mx) = match walked {
                    Some(x) => x,
                    None => {
                        let (lo, hi, mx) = log_posterior_pat(pat, t, *win, concave, &mut ll);
                        let thr = mx - EDGE;
                        let mut tlo = lo;
                        while ll[tlo] < thr {
                            tlo += 1;
                        }
                        let mut thi = hi;
                        while ll[thi] < thr {
                            thi -= 1;
                        }
                        match width_class(hi - lo + 1, k) {
                            Some(b) if lo + b <= k => {
                                with_width!(b, exp_fixed(&mut ll, lo, mx));
                            }
                            _ => {
                                for x in &mut ll[tlo..=thi] {
                                    *x = exp_neg((*x - mx).max(-700.0));
                                }
                            }
                        }
                        (tlo, thi, mx)
                    }
                };
                let (st, b) = match width_class(thi - tlo + 1, k) {
                    Some(b) => (tlo.min(k - b), b),
                    None => (tlo, thi - tlo + 1),
                };
                let w = &mut wbuf[..b];
                w.fill(0.0);
                let src = &ll[tlo..=thi];
                let s: f64 = src.iter().sum();
                let weight = pats.weights[p];
                acc.loglik += weight * (mx + s.ln());
                let scale = weight / s;
                for (x, &v) in w[tlo - st..=thi - st].iter_mut().zip(src) {
                    *x = v * scale;
                }
                if width_class(b, k) == Some(b) {
                    with_width!(b, accumulate_fixed(acc, k, pat, st, w));
                } else {
                    accumulate_slice(acc, k, pat, st, w);
                }
                *win = [
                    tlo.saturating_sub(MARGIN) as u16,
                    (thi + MARGIN).min(k - 1) as u16,
                ];
            }
        });
    let mut total = Counts::zeros(m, k);
    for part in spare.iter() {
        total.add(part);
    }
    total.finish();
    total
}

#[cfg(test)]
mod tests {
    use super::exp_neg;

    #[test]
    fn exp_neg_matches_std_exp() {
        let mut worst = 0.0f64;
        for j in 0..=2_000_000 {
            let x = -700.0 * f64::from(j) / 2_000_000.0;
            let (a, b) = (exp_neg(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 1e-15, "relative error {worst:e}");
        assert_eq!(exp_neg(0.0), 1.0);
    }
}

//! Marginal maximum likelihood calibration by EM (Bock–Aitkin, 1981).
//!
//! * θ ~ N(0, 1) on a fixed grid ([`Quadrature`], default 61 points on [−6, 6]).
//! * E-step: see [`super::estep`] (pattern collapsing, parallel over patterns with rayon,
//!   per-chunk accumulators reduced in a fixed order, so results are reproducible).
//! * M-step: per item Newton–Raphson with step halving on the expected complete-data
//!   log-likelihood `Σ_k r_ik ln P_ik + (n_ik − r_ik) ln Q_ik`, in the slope–intercept form
//!   `z = aθ + d` (b = −d/a); for 2PL/Rasch that objective is concave. 1PL: one joint
//!   Newton step on (a, d_1..d_n) using the arrowhead structure of its Hessian. 3PL:
//!   Fisher scoring on (a, d, c) maximising the objective plus the log Beta(α, β) prior
//!   density of c (default Beta(5, 17), mean ≈ 0.23, as in BILOG-MG); so the 3PL is
//!   MAP for c and ML for a, b.
//! * Every M-step update is accepted only when it does not lower the objective, so the
//!   marginal log-likelihood (3PL: log-likelihood + log prior of the c's) never decreases.
//! * Convergence: the largest absolute change of any reported a, b, c between iterations
//!   below `tolerance` (default 1e−5), or a relative change of the marginal log-likelihood
//!   below `ll_relative_tolerance` (default 1e−12); otherwise stop at `max_iterations`
//!   (default 500) with `converged = false`.
//! * Items answered by no one, or with every respondent right or every respondent wrong,
//!   are not estimable: they are left out of the model and reported with NaN parameters
//!   (JSON `null`), `estimable = false` and no standard errors.
//! * Standard errors (see [`SeMethod`]): by default ([`SeMethod::Auto`] → `Oakes`) the
//!   full observed information of the marginal log-likelihood by Oakes' identity: the
//!   complete-data information from the expected counts minus the summed posterior
//!   covariance of the persons' complete-data scores, computed analytically in one pass
//!   over the posteriors (module `se`), inverted. Also available: the full cross-product
//!   information (`Xpd`), supplemented EM (`Sem`), finite differences of the analytic
//!   gradient (`ObservedHessian`), per-item blocks of the cross-product information
//!   (`ItemBlockXpd`, the fallback of `Auto` for very large problems: it ignores
//!   between-item covariance, slightly smaller SEs). SEs of b use the delta method from
//!   (a, d). The method used is reported in `se_method`.

use rayon::prelude::*;
use serde::Serialize;

use super::IrtError;
use super::data::{MISSING, ResponseMatrix};
use super::estep::{
    Counts, EDGE, Patterns, Tables, Window, chunk_size, e_step, e_step_reusing, initial_windows,
};
use super::model::{ItemParams, Model, Quadrature, logistic, softplus};
use super::se;

/// How standard errors are computed. All but [`SeMethod::ItemBlockXpd`] invert the full
/// information matrix of the free parameters (Cholesky; when it is not positive definite
/// no SEs are reported and `se_method` is `none`). SEs of b use the delta method.
///
/// Names for [`SeMethod::parse`] (the CLI's `--se`): `oakes`, `xpd`, `sem`, `none`, `auto`,
/// `observed_hessian`, `item_block_xpd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeMethod {
    /// [`SeMethod::Oakes`] when the free parameters number at most 1000 (the dense
    /// Cholesky inverse costs ~params³/2 flops), otherwise [`SeMethod::ItemBlockXpd`]. Oakes
    /// is the default because it is the exact observed information — what
    /// [`SeMethod::ObservedHessian`] approximates by finite differences (they agree to
    /// ~1e−9 relative) and what ltm reports — at the cost of a few E-steps for Rasch, 1PL
    /// and 2PL (measured ≈ 4–5 at 20 000 × 50 items with 10 % missing and 10 000 × 100
    /// complete, ≈ 10–15 with 20 % missing) instead of 2 × params E-steps; for the 3PL
    /// about a fifth of the finite-difference Hessian's time.
    Auto,
    /// Full observed information (finite differences of the analytic gradient): 2 ×
    /// params E-steps.
    ObservedHessian,
    /// Per-item blocks of the empirical cross-product information.
    ItemBlockXpd,
    /// No standard errors.
    None,
    /// Observed information by Oakes' identity (1999),
    /// `−[∂²Q(ψ|ψ')/∂ψ∂ψᵀ + ∂²Q(ψ|ψ')/∂ψ∂ψ'ᵀ]` at ψ' = ψ̂: the complete-data information
    /// from the expected counts minus `Σ_persons Cov_posterior(complete-data score)`,
    /// computed analytically in one pass over the posteriors (exact; see `se.rs`).
    Oakes,
    /// Full cross-product information `Σ_persons s̄ s̄ᵀ` of the persons' marginal scores
    /// (mirt's "crossprod"): one pass; an approximation of the observed information that
    /// is consistent but noisier in small samples.
    Xpd,
    /// Supplemented EM (Meng & Rubin 1991, mirt's "SEM"): the Jacobian DM of the EM map by
    /// central differences from the converged point (2 × params EM steps, each an E-step
    /// plus a converged M-step, so about the cost of `ObservedHessian`); information
    /// `D (I − DM)` with D the complete-data information, symmetrised.
    Sem,
}

impl SeMethod {
    /// Every method with the name [`SeMethod::parse`] accepts, in the order listed in errors.
    pub const CHOICES: [(&'static str, SeMethod); 7] = [
        ("oakes", SeMethod::Oakes),
        ("xpd", SeMethod::Xpd),
        ("sem", SeMethod::Sem),
        ("none", SeMethod::None),
        ("auto", SeMethod::Auto),
        ("observed_hessian", SeMethod::ObservedHessian),
        ("item_block_xpd", SeMethod::ItemBlockXpd),
    ];

    /// Parses a method name (case-insensitive; `-` may stand for `_`): `oakes`, `xpd`
    /// (also `crossprod`), `sem`, `none`, `auto`, `observed_hessian`, `item_block_xpd`.
    pub fn parse(name: &str) -> Result<Self, IrtError> {
        let key = name.trim().to_ascii_lowercase().replace('-', "_");
        if key == "crossprod" {
            return Ok(SeMethod::Xpd);
        }
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == key)
            .map(|&(_, m)| m)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::CHOICES.iter().map(|(n, _)| *n).collect();
                IrtError::Config(format!(
                    "unknown standard-error method {name:?}: choose one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The name [`SeMethod::parse`] accepts (also the JSON value).
    pub fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("auto", |(n, _)| n)
    }
}

impl std::str::FromStr for SeMethod {
    type Err = IrtError;

    fn from_str(s: &str) -> Result<Self, IrtError> {
        Self::parse(s)
    }
}

/// Options for [`calibrate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationOptions {
    pub model: Model,
    /// Number of quadrature points (≥ 41; default 61).
    pub quadrature_points: usize,
    /// Grid half-range (default 6: nodes on [−6, 6]).
    pub quadrature_range: f64,
    /// Iteration cap (default 500).
    pub max_iterations: usize,
    /// Convergence on the largest absolute parameter change (default 1e−5).
    pub tolerance: f64,
    /// Convergence on the relative log-likelihood change (default 1e−12; 0 disables).
    pub ll_relative_tolerance: f64,
    /// Beta(α, β) prior for the 3PL lower asymptote (default (5, 17)).
    pub c_prior: (f64, f64),
    pub se_method: SeMethod,
    /// SQUAREM acceleration of the EM (default true); every accelerated step is checked
    /// and replaced by the plain EM step if its objective is below that of the last point
    /// the EM reached, so the objective never falls.
    pub accelerate: bool,
    /// Fixed-parameter calibration: `(item index, a, b, c)` of anchor items whose
    /// parameters are held (e.g. from an earlier calibration). The students' distribution
    /// is then estimated as N(μ, σ²) alongside the free items (EM, no acceleration), so the
    /// free items land on the anchors' scale. Not for the 1PL (its common slope cannot
    /// meet fixed slopes); no standard errors in this mode. Default: none.
    pub fixed_items: Vec<(usize, f64, f64, f64)>,
}

impl CalibrationOptions {
    pub fn new(model: Model) -> Self {
        Self {
            model,
            quadrature_points: 61,
            quadrature_range: 6.0,
            max_iterations: 500,
            tolerance: 1e-5,
            ll_relative_tolerance: 1e-12,
            c_prior: (5.0, 17.0),
            se_method: SeMethod::Auto,
            accelerate: true,
            fixed_items: Vec::new(),
        }
    }
}

/// The result of [`calibrate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub model: Model,
    /// One entry per input item, in input order.
    pub items: Vec<ItemParams>,
    /// Marginal log-likelihood at the final parameters.
    pub log_likelihood: f64,
    /// `−2 lnL + 2k` and `−2 lnL + k ln N` with k = free parameters of estimable items.
    pub aic: f64,
    pub bic: f64,
    pub n_params: usize,
    pub iterations: usize,
    pub converged: bool,
    /// Largest absolute parameter change in the last iteration.
    pub last_change: f64,
    pub n_persons: usize,
    pub n_items: usize,
    /// Number of distinct response patterns (after collapsing).
    pub n_patterns: usize,
    pub quadrature_points: usize,
    /// The method actually used for the standard errors (`none` when not computed or
    /// when the information matrix was not positive definite).
    pub se_method: SeMethod,
    /// Objective after each E-step (marginal log-likelihood; for the 3PL plus the log
    /// Beta prior density of the c's); non-decreasing.
    pub log_likelihood_trace: Vec<f64>,
    /// The students' distribution N(mean, sd²) on the scale of the result: (0, 1) unless
    /// [`CalibrationOptions::fixed_items`] set the scale.
    pub latent_mean: f64,
    pub latent_sd: f64,
}

/// Internal parameters of the estimable items, slope–intercept form.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub a: Vec<f64>,
    pub d: Vec<f64>,
    pub c: Vec<f64>,
}

pub(crate) fn make_tables(p: &Params, q: &Quadrature) -> Tables {
    let k = q.len();
    let m = p.a.len();
    let linear = p.c.iter().all(|&c| c == 0.0);
    let mut base = q.log_weights.clone();
    let mut dl = if linear { Vec::new() } else { vec![0.0; m * k] };
    let mut lq = vec![0.0; m * k];
    for i in 0..m {
        let (a, d, c) = (p.a[i], p.d[i], p.c[i]);
        let ln1c = (1.0 - c).ln();
        for (j, &t) in q.nodes.iter().enumerate() {
            let z = a * t + d;
            let lqv = if linear {
                -softplus(z)
            } else {
                let (lpv, lqv) = if c == 0.0 {
                    (-softplus(-z), -softplus(z))
                } else {
                    let pr = c + (1.0 - c) * logistic(z);
                    (pr.ln(), ln1c - softplus(z))
                };
                dl[i * k + j] = lpv - lqv;
                lqv
            };
            lq[i * k + j] = lqv;
            base[j] += lqv;
        }
    }
    let linear = linear.then(|| (p.a.clone(), p.d.clone()));
    Tables::new(&q.nodes, base, dl, lq, linear)
}

fn log_beta_prior(c: f64, (al, be): (f64, f64)) -> f64 {
    (al - 1.0) * c.ln() + (be - 1.0) * (1.0 - c).ln()
}

/// Expected complete-data log-likelihood of one item (c = 0 form).
fn q2(a: f64, d: f64, th: &[f64], r: &[f64], n: &[f64]) -> f64 {
    let mut s = 0.0;
    for ((&t, &r), &n) in th.iter().zip(r).zip(n) {
        let z = a * t + d;
        s += r * z - n * softplus(z);
    }
    s
}

/// Newton with step halving for (a, d) (or d alone when `fix_a`).
fn newton_2pl(a0: f64, d0: f64, th: &[f64], r: &[f64], n: &[f64], fix_a: bool) -> (f64, f64) {
    let (mut a, mut d) = (a0, d0);
    let mut cur = q2(a, d, th, r, n);
    for _ in 0..100 {
        let (mut ga, mut gd, mut haa, mut had, mut hdd) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((&t, &r), &n) in th.iter().zip(r).zip(n) {
            let p = logistic(a * t + d);
            let e = r - n * p;
            let w = n * p * (1.0 - p);
            ga += e * t;
            gd += e;
            haa += w * t * t;
            had += w * t;
            hdd += w;
        }
        let (da, dd) = if fix_a {
            if hdd <= 0.0 {
                break;
            }
            (0.0, gd / hdd)
        } else {
            let det = haa * hdd - had * had;
            if det <= 1e-300 {
                break;
            }
            ((hdd * ga - had * gd) / det, (haa * gd - had * ga) / det)
        };
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            let (na, nd) = (a + step * da, d + step * dd);
            let nq = q2(na, nd, th, r, n);
            if nq >= cur {
                a = na;
                d = nd;
                cur = nq;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted || (step * da).abs().max((step * dd).abs()) < 1e-12 {
            break;
        }
    }
    (a, d)
}

/// 1PL M-step: joint Newton on (a, d_1..d_m) with the arrowhead Hessian.
fn newton_1pl(p: &mut Params, th: &[f64], rs: &[&[f64]], ns: &[Vec<f64>]) {
    let m = p.d.len();
    let total = |a: f64, d: &[f64]| -> f64 { (0..m).map(|i| q2(a, d[i], th, rs[i], &ns[i])).sum() };
    let mut a = p.a[0];
    let mut d = p.d.clone();
    let mut cur = total(a, &d);
    for _ in 0..100 {
        let mut ga = 0.0;
        let mut haa = 0.0;
        let mut gd = vec![0.0; m];
        let mut hd = vec![0.0; m];
        let mut had = vec![0.0; m];
        for i in 0..m {
            for ((&t, &r), &n) in th.iter().zip(rs[i]).zip(&ns[i]) {
                let pr = logistic(a * t + d[i]);
                let e = r - n * pr;
                let w = n * pr * (1.0 - pr);
                ga += e * t;
                haa += w * t * t;
                gd[i] += e;
                hd[i] += w;
                had[i] += w * t;
            }
        }
        let mut schur = haa;
        let mut rhs = ga;
        for i in 0..m {
            if hd[i] > 0.0 {
                schur -= had[i] * had[i] / hd[i];
                rhs -= had[i] * gd[i] / hd[i];
            }
        }
        if schur <= 1e-300 {
            break;
        }
        let da = rhs / schur;
        let dd: Vec<f64> = (0..m)
            .map(|i| {
                if hd[i] > 0.0 {
                    (gd[i] - had[i] * da) / hd[i]
                } else {
                    0.0
                }
            })
            .collect();
        let mut step = 1.0;
        let mut accepted = false;
        let mut maxstep = 0.0f64;
        for _ in 0..40 {
            let na = a + step * da;
            let nd: Vec<f64> = d.iter().zip(&dd).map(|(x, y)| x + step * y).collect();
            let nq = total(na, &nd);
            if nq >= cur {
                maxstep = dd
                    .iter()
                    .fold((step * da).abs(), |mx, v| mx.max((step * v).abs()));
                a = na;
                d = nd;
                cur = nq;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted || maxstep < 1e-12 {
            break;
        }
    }
    p.a.iter_mut().for_each(|x| *x = a);
    p.d = d;
}

/// 3PL objective for one item: expected complete-data log-likelihood + log prior of c.
fn q3(a: f64, d: f64, c: f64, th: &[f64], r: &[f64], n: &[f64], prior: (f64, f64)) -> f64 {
    let mut s = 0.0;
    let ln1c = (1.0 - c).ln();
    for ((&t, &r), &n) in th.iter().zip(r).zip(n) {
        let z = a * t + d;
        let pr = c + (1.0 - c) * logistic(z);
        s += r * pr.ln() + (n - r) * (ln1c - softplus(z));
    }
    s + log_beta_prior(c, prior)
}

/// Gradient and Fisher information of the 3PL item objective at (a, d, c).
fn grad_info_3pl(
    a: f64,
    d: f64,
    c: f64,
    th: &[f64],
    r: &[f64],
    n: &[f64],
    prior: (f64, f64),
) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut g = [0.0; 3];
    let mut h = [[0.0; 3]; 3];
    for ((&t, &r), &n) in th.iter().zip(r).zip(n) {
        let s = logistic(a * t + d);
        let pr = c + (1.0 - c) * s;
        let pq = (pr * (1.0 - pr)).max(1e-300);
        let ds = (1.0 - c) * s * (1.0 - s);
        let dp = [ds * t, ds, 1.0 - s];
        let e = (r - n * pr) / pq;
        for u in 0..3 {
            g[u] += e * dp[u];
            for v in 0..3 {
                h[u][v] += n * dp[u] * dp[v] / pq;
            }
        }
    }
    let (al, be) = prior;
    g[2] += (al - 1.0) / c - (be - 1.0) / (1.0 - c);
    h[2][2] += ((al - 1.0) / (c * c) + (be - 1.0) / ((1.0 - c) * (1.0 - c))).max(0.0);
    (g, h)
}

fn solve3(h: [[f64; 3]; 3], g: [f64; 3]) -> Option<[f64; 3]> {
    let mut m = [[0.0; 4]; 3];
    for u in 0..3 {
        m[u][..3].copy_from_slice(&h[u]);
        m[u][3] = g[u];
    }
    for col in 0..3 {
        let piv = (col..3).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        if m[piv][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, piv);
        for row in 0..3 {
            if row != col {
                let f = m[row][col] / m[col][col];
                let pivot_row = m[col];
                for (x, y) in m[row][col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * y;
                }
            }
        }
    }
    Some([m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]])
}

fn newton_3pl(
    a0: f64,
    d0: f64,
    c0: f64,
    th: &[f64],
    r: &[f64],
    n: &[f64],
    prior: (f64, f64),
) -> (f64, f64, f64) {
    let (mut a, mut d, mut c) = (a0, d0, c0);
    let mut cur = q3(a, d, c, th, r, n, prior);
    for _ in 0..100 {
        let (g, h) = grad_info_3pl(a, d, c, th, r, n, prior);
        let Some(delta) = solve3(h, g) else { break };
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            let nc = c + step * delta[2];
            if nc > 1e-8 && nc < 1.0 - 1e-8 {
                let (na, nd) = (a + step * delta[0], d + step * delta[1]);
                let nq = q3(na, nd, nc, th, r, n, prior);
                if nq >= cur {
                    a = na;
                    d = nd;
                    c = nc;
                    cur = nq;
                    accepted = true;
                    break;
                }
            }
            step *= 0.5;
        }
        if !accepted || delta.iter().fold(0.0f64, |mx, v| mx.max((step * v).abs())) < 1e-12 {
            break;
        }
    }
    (a, d, c)
}

fn m_step(model: Model, p: &mut Params, counts: &Counts, q: &Quadrature, prior: (f64, f64)) {
    let th = &q.nodes;
    let m = p.a.len();
    let ns: Vec<Vec<f64>> = (0..m).map(|i| counts.n_row(i)).collect();
    match model {
        Model::OnePl => {
            let rs: Vec<&[f64]> = (0..m).map(|i| counts.r_row(i)).collect();
            newton_1pl(p, th, &rs, &ns);
        }
        Model::Rasch | Model::TwoPl => {
            let fix_a = model == Model::Rasch;
            let new: Vec<(f64, f64)> = (0..m)
                .into_par_iter()
                .map(|i| newton_2pl(p.a[i], p.d[i], th, counts.r_row(i), &ns[i], fix_a))
                .collect();
            for (i, (a, d)) in new.into_iter().enumerate() {
                p.a[i] = a;
                p.d[i] = d;
            }
        }
        Model::ThreePl => {
            let new: Vec<(f64, f64, f64)> = (0..m)
                .into_par_iter()
                .map(|i| newton_3pl(p.a[i], p.d[i], p.c[i], th, counts.r_row(i), &ns[i], prior))
                .collect();
            for (i, (a, d, c)) in new.into_iter().enumerate() {
                p.a[i] = a;
                p.d[i] = d;
                p.c[i] = c;
            }
        }
    }
}

/// Reported (a, b, c) of estimable item i.
fn abc(p: &Params, i: usize) -> [f64; 3] {
    [p.a[i], -p.d[i] / p.a[i], p.c[i]]
}

fn max_change(old: &Params, new: &Params) -> f64 {
    (0..old.a.len())
        .flat_map(|i| {
            let (x, y) = (abc(old, i), abc(new, i));
            (0..3).map(move |j| (x[j] - y[j]).abs())
        })
        .fold(0.0, f64::max)
}

/// Calibrates `model` on `data` by marginal maximum likelihood (see the module docs).
pub fn calibrate(
    data: &ResponseMatrix,
    opts: &CalibrationOptions,
) -> Result<Calibration, IrtError> {
    let quad = Quadrature::normal(opts.quadrature_points, opts.quadrature_range)?;
    if opts.tolerance.is_nan() || opts.tolerance <= 0.0 || opts.max_iterations == 0 {
        return Err(IrtError::Config(
            "tolerance must be > 0 and max_iterations ≥ 1".into(),
        ));
    }
    let (al, be) = opts.c_prior;
    if opts.model == Model::ThreePl && !(al >= 1.0 && be >= 1.0) {
        return Err(IrtError::Config(
            "the Beta prior on c needs α ≥ 1 and β ≥ 1".into(),
        ));
    }
    // p-values and estimability
    let n = data.n_items;
    let mut p_values = vec![f64::NAN; n];
    let mut cols = Vec::new();
    let mut right = vec![0usize; n];
    let mut answered = vec![0usize; n];
    for row in data.data.chunks_exact(n.max(1)) {
        for ((&v, r), a) in row.iter().zip(&mut right).zip(&mut answered) {
            if v != MISSING {
                *a += 1;
                *r += v as usize;
            }
        }
    }
    for i in 0..n {
        if answered[i] > 0 {
            p_values[i] = right[i] as f64 / answered[i] as f64;
        }
        if right[i] > 0 && right[i] < answered[i] {
            cols.push(i);
        }
    }
    if cols.is_empty() {
        return Err(IrtError::NoEstimableItems);
    }
    let pats = Patterns::build(data, &cols);
    let m = cols.len();
    let model = opts.model;
    let concave = model != Model::ThreePl;
    // Anchors by estimable column (a non-estimable item adds nothing to the likelihood).
    let mut fixed: Vec<Option<(f64, f64, f64)>> = vec![None; m];
    if !opts.fixed_items.is_empty() {
        if model == Model::OnePl {
            return Err(IrtError::Config(
                "fixed anchor items need the Rasch, 2PL or 3PL model (the 1PL's common slope \
                 cannot meet fixed slopes)"
                    .into(),
            ));
        }
        let mut seen = vec![false; n];
        for &(i, a, b, c) in &opts.fixed_items {
            if i >= n || seen[i] {
                return Err(IrtError::Config(format!(
                    "fixed item index {i} is out of range or given twice"
                )));
            }
            seen[i] = true;
            if !(a.is_finite() && a > 0.0 && b.is_finite() && (0.0..1.0).contains(&c)) {
                return Err(IrtError::Config(format!(
                    "fixed item {}: need a > 0, finite b and 0 ≤ c < 1",
                    data.item_ids[i]
                )));
            }
            if let Some(j) = cols.iter().position(|&col| col == i) {
                fixed[j] = Some((a, -a * b, c));
            }
        }
        if fixed.iter().all(Option::is_none) {
            return Err(IrtError::Config(
                "no fixed item is estimable here (each is all right or all wrong)".into(),
            ));
        }
    }
    let anchored = fixed.iter().any(Option::is_some);
    let hold = |p: &mut Params| {
        for (j, f) in fixed.iter().enumerate() {
            if let Some((a, d, c)) = *f {
                (p.a[j], p.d[j], p.c[j]) = (a, d, c);
            }
        }
    };

    // starting values
    let a0 = 1.0;
    let c0 = if model == Model::ThreePl {
        al / (al + be)
    } else {
        0.0
    };
    let mut params = Params {
        a: vec![a0; m],
        d: cols
            .iter()
            .map(|&i| {
                let pv = ((p_values[i] - c0) / (1.0 - c0)).clamp(0.02, 0.98);
                (pv / (1.0 - pv)).ln() * (1.0 + a0 * a0 / 2.897).sqrt()
            })
            .collect(),
        c: vec![c0; m],
    };
    hold(&mut params);

    let prior_term = |p: &Params| -> f64 {
        if model == Model::ThreePl {
            p.c.iter().map(|&c| log_beta_prior(c, opts.c_prior)).sum()
        } else {
            0.0
        }
    };

    let mut windows = initial_windows(&pats, &quad);
    let mut spare = Vec::new();
    let mut trace = Vec::new();
    let mut converged = false;
    let mut iterations = 0;
    let mut last_change = f64::INFINITY;
    let mut counts = e_step_reusing(
        &pats,
        &make_tables(&params, &quad),
        &mut windows,
        concave,
        &mut spare,
    );
    trace.push(counts.loglik + prior_term(&params));
    let (mut latent_mean, mut latent_sd) = (0.0, 1.0);
    let mut quad = quad;
    if anchored {
        // Plain EM: the free items and the latent N(μ, σ²) from the same posterior.
        while iterations < opts.max_iterations {
            let x0 = params.clone();
            m_step(model, &mut params, &counts, &quad, opts.c_prior);
            hold(&mut params);
            let mass: f64 = counts.total.iter().sum();
            let mean = counts
                .total
                .iter()
                .zip(&quad.nodes)
                .map(|(w, t)| w * t)
                .sum::<f64>()
                / mass;
            let var = counts
                .total
                .iter()
                .zip(&quad.nodes)
                .map(|(w, t)| w * (t - mean) * (t - mean))
                .sum::<f64>()
                / mass;
            let sd = var.sqrt().max(1e-3);
            let moved = (mean - latent_mean).abs().max((sd - latent_sd).abs());
            (latent_mean, latent_sd) = (mean, sd);
            quad = quad.with_normal(mean, sd);
            iterations += 1;
            counts = e_step_reusing(
                &pats,
                &make_tables(&params, &quad),
                &mut windows,
                concave,
                &mut spare,
            );
            let obj = counts.loglik + prior_term(&params);
            trace.push(obj);
            last_change = max_change(&x0, &params).max(moved);
            if !last_change.is_finite() || !obj.is_finite() {
                break;
            }
            if last_change < opts.tolerance {
                converged = true;
                break;
            }
        }
    }
    let tables = |p: &Params| make_tables(p, &quad);
    while !anchored && iterations < opts.max_iterations {
        // plain EM step x0 → x1
        let x0 = params.clone();
        m_step(model, &mut params, &counts, &quad, opts.c_prior);
        iterations += 1;
        counts = e_step_reusing(&pats, &tables(&params), &mut windows, concave, &mut spare);
        let obj = counts.loglik + prior_term(&params);
        let prev = *trace.last().unwrap_or(&obj);
        trace.push(obj);
        last_change = max_change(&x0, &params);
        let rel = ((obj - prev) / prev.abs().max(1e-300)).abs();
        if !last_change.is_finite() || !obj.is_finite() {
            break;
        }
        if last_change < opts.tolerance || rel < opts.ll_relative_tolerance {
            converged = true;
            break;
        }
        if !opts.accelerate || iterations + 2 > opts.max_iterations {
            continue;
        }
        // SQUAREM (Varadhan & Roland 2008, scheme S3): second EM step x1 → x2, then
        // extrapolate and stabilise with one EM step. The extrapolated result is kept only
        // if its objective is not below that of x1 (the last point whose objective is
        // known), so the trace still never falls. The E-step at x2 is computed only when
        // x2 itself is kept (converged, no extrapolation, or the extrapolation rejected):
        // an accepted cycle costs three E-steps, not four.
        let obj1 = obj;
        let x1 = params.clone();
        m_step(model, &mut params, &counts, &quad, opts.c_prior);
        iterations += 1;
        last_change = max_change(&x1, &params);
        let x2 = params.clone();
        let mut accepted = false;
        if last_change.is_finite() && last_change >= opts.tolerance {
            let (v0, v1, v2) = (to_vec(model, &x0), to_vec(model, &x1), to_vec(model, &x2));
            let r: Vec<f64> = v1.iter().zip(&v0).map(|(a, b)| a - b).collect();
            let v: Vec<f64> = (0..v0.len()).map(|j| v2[j] - 2.0 * v1[j] + v0[j]).collect();
            let (rn, vn) = (norm(&r), norm(&v));
            let alpha = if vn > 0.0 { -(rn / vn) } else { -1.0 };
            if alpha < -1.0 {
                let alpha = alpha.max(-100.0);
                let xe: Vec<f64> = (0..v0.len())
                    .map(|j| v0[j] - 2.0 * alpha * r[j] + alpha * alpha * v[j])
                    .collect();
                let mut pe = from_vec(model, &xe, m);
                let valid = xe.iter().all(|x| x.is_finite())
                    && pe
                        .c
                        .iter()
                        .all(|&c| (0.0..1.0).contains(&c) && (model != Model::ThreePl || c > 0.0));
                if valid {
                    let ce = e_step_reusing(&pats, &tables(&pe), &mut windows, concave, &mut spare);
                    if ce.loglik.is_finite() {
                        m_step(model, &mut pe, &ce, &quad, opts.c_prior);
                        iterations += 1;
                        let c3 =
                            e_step_reusing(&pats, &tables(&pe), &mut windows, concave, &mut spare);
                        let obj3 = c3.loglik + prior_term(&pe);
                        if obj3.is_finite() && obj3 >= obj1 {
                            last_change = max_change(&x2, &pe);
                            params = pe;
                            counts = c3;
                            trace.push(obj3);
                            accepted = true;
                        }
                    }
                }
            }
        }
        if !accepted {
            let c2 = e_step_reusing(&pats, &tables(&x2), &mut windows, concave, &mut spare);
            let obj2 = c2.loglik + prior_term(&x2);
            params = x2;
            counts = c2;
            trace.push(obj2);
            if !obj2.is_finite() || !last_change.is_finite() {
                break;
            }
            if last_change < opts.tolerance {
                converged = true;
                break;
            }
        }
    }
    let log_likelihood = counts.loglik;

    // standard errors
    let n_fixed = fixed.iter().filter(|f| f.is_some()).count();
    let n_free = if anchored {
        // The anchors' parameters are given; the latent mean and SD are estimated.
        model.n_params(m) - model.n_params(n_fixed) + 2
    } else {
        model.n_params(m)
    };
    let requested = if anchored {
        SeMethod::None
    } else {
        opts.se_method
    };
    let mut se_method = match requested {
        SeMethod::Auto => {
            if n_free <= 1000 {
                SeMethod::Oakes
            } else {
                SeMethod::ItemBlockXpd
            }
        }
        other => other,
    };
    let ses: Option<Vec<[Option<f64>; 3]>> = if !log_likelihood.is_finite() {
        None
    } else {
        match se_method {
            SeMethod::ObservedHessian => {
                observed_hessian_se(model, &params, &pats, &quad, &mut windows, opts.c_prior)
            }
            SeMethod::ItemBlockXpd => Some(xpd_se(model, &params, &pats, &quad, &mut windows)),
            SeMethod::Oakes | SeMethod::Xpd | SeMethod::Sem => analytic_se(
                se_method,
                model,
                &params,
                &pats,
                &quad,
                &mut windows,
                opts.c_prior,
            ),
            SeMethod::None | SeMethod::Auto => None,
        }
    };
    if ses.is_none() {
        se_method = SeMethod::None;
    }

    let mut items: Vec<ItemParams> = data
        .item_ids
        .iter()
        .zip(&p_values)
        .map(|(id, &pv)| ItemParams {
            item: id.clone(),
            a: f64::NAN,
            b: f64::NAN,
            c: f64::NAN,
            se_a: None,
            se_b: None,
            se_c: None,
            p_value: pv,
            estimable: false,
        })
        .collect();
    for (j, &i) in cols.iter().enumerate() {
        let [a, b, c] = abc(&params, j);
        let it = &mut items[i];
        it.a = a;
        it.b = b;
        it.c = c;
        it.estimable = true;
        if let Some(s) = &ses {
            [it.se_a, it.se_b, it.se_c] = s[j];
        }
    }
    let n_obs = pats.weights.iter().sum::<f64>();
    Ok(Calibration {
        model,
        items,
        log_likelihood,
        aic: -2.0 * log_likelihood + 2.0 * n_free as f64,
        bic: -2.0 * log_likelihood + n_free as f64 * n_obs.ln(),
        n_params: n_free,
        iterations,
        converged,
        last_change,
        n_persons: data.n_persons,
        n_items: data.n_items,
        n_patterns: pats.len(),
        quadrature_points: quad.len(),
        se_method,
        log_likelihood_trace: trace,
        latent_mean,
        latent_sd,
    })
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Free-parameter vector of the model.
fn to_vec(model: Model, p: &Params) -> Vec<f64> {
    let m = p.a.len();
    match model {
        Model::Rasch => p.d.clone(),
        Model::OnePl => std::iter::once(p.a[0]).chain(p.d.iter().copied()).collect(),
        Model::TwoPl => (0..m).flat_map(|i| [p.a[i], p.d[i]]).collect(),
        Model::ThreePl => (0..m).flat_map(|i| [p.a[i], p.d[i], p.c[i]]).collect(),
    }
}

fn from_vec(model: Model, x: &[f64], m: usize) -> Params {
    match model {
        Model::Rasch => Params {
            a: vec![1.0; m],
            d: x.to_vec(),
            c: vec![0.0; m],
        },
        Model::OnePl => Params {
            a: vec![x[0]; m],
            d: x[1..].to_vec(),
            c: vec![0.0; m],
        },
        Model::TwoPl => Params {
            a: (0..m).map(|i| x[2 * i]).collect(),
            d: (0..m).map(|i| x[2 * i + 1]).collect(),
            c: vec![0.0; m],
        },
        Model::ThreePl => Params {
            a: (0..m).map(|i| x[3 * i]).collect(),
            d: (0..m).map(|i| x[3 * i + 1]).collect(),
            c: (0..m).map(|i| x[3 * i + 2]).collect(),
        },
    }
}

/// Gradient of the marginal log-likelihood (3PL: plus log prior) by Fisher's identity.
fn gradient(
    model: Model,
    p: &Params,
    counts: &Counts,
    q: &Quadrature,
    prior: (f64, f64),
) -> Vec<f64> {
    let m = p.a.len();
    let th = &q.nodes;
    let mut g = Vec::with_capacity(model.n_params(m));
    let mut ga_common = 0.0;
    let mut per: Vec<[f64; 3]> = Vec::with_capacity(m);
    for i in 0..m {
        let n = counts.n_row(i);
        let r = counts.r_row(i);
        let (a, d, c) = (p.a[i], p.d[i], p.c[i]);
        let mut gi = [0.0; 3];
        for k in 0..th.len() {
            let s = logistic(a * th[k] + d);
            if model == Model::ThreePl {
                let pr = c + (1.0 - c) * s;
                let e = (r[k] - n[k] * pr) / (pr * (1.0 - pr)).max(1e-300);
                let ds = (1.0 - c) * s * (1.0 - s);
                gi[0] += e * ds * th[k];
                gi[1] += e * ds;
                gi[2] += e * (1.0 - s);
            } else {
                let e = r[k] - n[k] * s;
                gi[0] += e * th[k];
                gi[1] += e;
            }
        }
        if model == Model::ThreePl {
            gi[2] += (prior.0 - 1.0) / c - (prior.1 - 1.0) / (1.0 - c);
        }
        ga_common += gi[0];
        per.push(gi);
    }
    match model {
        Model::Rasch => g.extend(per.iter().map(|x| x[1])),
        Model::OnePl => {
            g.push(ga_common);
            g.extend(per.iter().map(|x| x[1]));
        }
        Model::TwoPl => g.extend(per.iter().flat_map(|x| [x[0], x[1]])),
        Model::ThreePl => g.extend(per.iter().flat_map(|x| *x)),
    }
    g
}

/// Inverse of a symmetric positive definite matrix (Cholesky); `None` if not PD.
fn spd_inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // inverse of L, then (L⁻¹)ᵀ L⁻¹
    let mut li = vec![0.0; n * n];
    for col in 0..n {
        for i in col..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                s -= l[i * n + k] * li[k * n + col];
            }
            li[i * n + col] = s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i..n).map(|k| li[k * n + i] * li[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Some(inv)
}

/// SEs of (a, b, c) from the covariance of (a, d, c) by the delta method (b = −d/a).
fn se_abc(
    a: f64,
    d: f64,
    vaa: f64,
    vdd: f64,
    vad: f64,
    vcc: Option<f64>,
    with_a: bool,
) -> [Option<f64>; 3] {
    let (ja, jd) = (d / (a * a), -1.0 / a);
    let vb = if with_a {
        ja * ja * vaa + jd * jd * vdd + 2.0 * ja * jd * vad
    } else {
        vdd / (a * a)
    };
    let ok = |v: f64| (v.is_finite() && v >= 0.0).then(|| v.sqrt());
    [
        if with_a { ok(vaa) } else { None },
        ok(vb),
        vcc.and_then(ok),
    ]
}

fn observed_hessian_se(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> Option<Vec<[Option<f64>; 3]>> {
    let m = p.a.len();
    let x0 = to_vec(model, p);
    let np = x0.len();
    let concave = model != Model::ThreePl;
    let mut h = vec![0.0; np * np];
    for j in 0..np {
        let step = 1e-5 * x0[j].abs().max(1.0);
        let mut g = [Vec::new(), Vec::new()];
        for (s, sign) in [1.0, -1.0].into_iter().enumerate() {
            let mut x = x0.clone();
            x[j] += sign * step;
            if model == Model::ThreePl && j % 3 == 2 {
                x[j] = x[j].clamp(1e-9, 1.0 - 1e-9);
            }
            let pp = from_vec(model, &x, m);
            let counts = e_step(pats, &make_tables(&pp, q), windows, concave);
            g[s] = gradient(model, &pp, &counts, q, prior);
        }
        for i in 0..np {
            h[i * np + j] = -(g[0][i] - g[1][i]) / (2.0 * step);
        }
    }
    let sym: Vec<f64> = (0..np * np)
        .map(|ij| {
            let (i, j) = (ij / np, ij % np);
            0.5 * (h[i * np + j] + h[j * np + i])
        })
        .collect();
    se_from_information(model, p, &sym)
}

/// SEs of (a, b, c) from the information matrix of the free parameters (inverted).
fn se_from_information(model: Model, p: &Params, info: &[f64]) -> Option<Vec<[Option<f64>; 3]>> {
    let m = p.a.len();
    let np = model.n_params(m);
    let cov = spd_inverse(info, np)?;
    let v = |i: usize, j: usize| cov[i * np + j];
    Some(
        (0..m)
            .map(|i| match model {
                Model::Rasch => se_abc(1.0, p.d[i], 0.0, v(i, i), 0.0, None, false),
                Model::OnePl => se_abc(
                    p.a[i],
                    p.d[i],
                    v(0, 0),
                    v(i + 1, i + 1),
                    v(0, i + 1),
                    None,
                    true,
                ),
                Model::TwoPl => {
                    let (ia, id) = (2 * i, 2 * i + 1);
                    se_abc(p.a[i], p.d[i], v(ia, ia), v(id, id), v(ia, id), None, true)
                }
                Model::ThreePl => {
                    let (ia, id, ic) = (3 * i, 3 * i + 1, 3 * i + 2);
                    se_abc(
                        p.a[i],
                        p.d[i],
                        v(ia, ia),
                        v(id, id),
                        v(ia, id),
                        Some(v(ic, ic)),
                        true,
                    )
                }
            })
            .collect(),
    )
}

/// Information matrix of the free parameters for `Oakes`, `Xpd` or `Sem` (symmetrised).
fn analytic_information(
    method: SeMethod,
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> Vec<f64> {
    let m = p.a.len();
    let np = model.n_params(m);
    let full = se::full_info(model, p, pats, q, windows, prior, method == SeMethod::Xpd);
    let free = |x: &[f64]| se::to_free(model, x, full.dim, np);
    let info = match method {
        SeMethod::Xpd => free(&full.xpd),
        SeMethod::Sem => {
            let d = free(&full.complete);
            let jac = em_map_jacobian(model, p, pats, q, windows, prior);
            // D (I − J)
            let mut out = d.clone();
            for i in 0..np {
                for j in 0..np {
                    let dj: f64 = (0..np).map(|l| d[i * np + l] * jac[l * np + j]).sum();
                    out[i * np + j] -= dj;
                }
            }
            out
        }
        _ => {
            let d = free(&full.complete);
            let c = free(&full.missing);
            d.iter().zip(&c).map(|(x, y)| x - y).collect()
        }
    };
    (0..np * np)
        .map(|ij| {
            let (i, j) = (ij / np, ij % np);
            0.5 * (info[i * np + j] + info[j * np + i])
        })
        .collect()
}

fn analytic_se(
    method: SeMethod,
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> Option<Vec<[Option<f64>; 3]>> {
    let info = analytic_information(method, model, p, pats, q, windows, prior);
    se_from_information(model, p, &info)
}

/// Jacobian `J[i][j] = ∂M_i/∂ψ_j` of the EM map (E-step, then the M-step run to
/// convergence) at `p`, by central differences with step 1e−3·max(1, |ψ_j|).
fn em_map_jacobian(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
    prior: (f64, f64),
) -> Vec<f64> {
    let m = p.a.len();
    let x0 = to_vec(model, p);
    let np = x0.len();
    let concave = model != Model::ThreePl;
    let mut jac = vec![0.0; np * np];
    for j in 0..np {
        let step = 1e-3 * x0[j].abs().max(1.0);
        let mut out = [Vec::new(), Vec::new()];
        let mut used = [0.0; 2];
        for (s, sign) in [1.0, -1.0].into_iter().enumerate() {
            let mut x = x0.clone();
            x[j] += sign * step;
            if model == Model::ThreePl && j % 3 == 2 {
                x[j] = x[j].clamp(1e-9, 1.0 - 1e-9);
            }
            used[s] = x[j];
            let mut pp = from_vec(model, &x, m);
            let counts = e_step(pats, &make_tables(&pp, q), windows, concave);
            m_step(model, &mut pp, &counts, q, prior);
            out[s] = to_vec(model, &pp);
        }
        let h = used[0] - used[1];
        for i in 0..np {
            jac[i * np + j] = (out[0][i] - out[1][i]) / h;
        }
    }
    jac
}

/// Per-item blocks of the empirical cross-product information.
fn xpd_se(
    model: Model,
    p: &Params,
    pats: &Patterns,
    q: &Quadrature,
    windows: &mut [Window],
) -> Vec<[Option<f64>; 3]> {
    let m = p.a.len();
    let k = q.len();
    let t = make_tables(p, q);
    let concave = model != Model::ThreePl;
    // per-item P table
    let ptab: Vec<f64> = (0..m)
        .flat_map(|i| {
            let (a, d, c) = (p.a[i], p.d[i], p.c[i]);
            q.nodes
                .iter()
                .map(move |&th| c + (1.0 - c) * logistic(a * th + d))
        })
        .collect();
    let stab: Vec<f64> = (0..m)
        .flat_map(|i| {
            let (a, d) = (p.a[i], p.d[i]);
            q.nodes.iter().map(move |&th| logistic(a * th + d))
        })
        .collect();
    let cs = chunk_size(pats.len());
    // per item: the 3×3 cross-product of its scores (a, d, c) and, for the 1PL, the cross
    // product of the common-a score with d_i (slot 9); plus the common-a square.
    let parts: Vec<(Vec<f64>, f64)> = windows
        .par_chunks_mut(cs)
        .enumerate()
        .map(|(ci, wc)| {
            let mut acc = vec![0.0; m * 10];
            let mut acc_aa = 0.0;
            let mut ll = vec![0.0; k];
            let mut s = vec![[0.0f64; 3]; m];
            for (j, win) in wc.iter_mut().enumerate() {
                let pi = ci * cs + j;
                let (lo, hi, mx) =
                    super::estep::log_posterior(pats, pi, &t, *win, concave, &mut ll);
                let mut tot = 0.0;
                for x in &mut ll[lo..=hi] {
                    *x = if *x < mx - EDGE { 0.0 } else { (*x - mx).exp() };
                    tot += *x;
                }
                let w = &ll[lo..=hi];
                let row = pats.row(pi);
                let mut sa = 0.0;
                for i in 0..m {
                    s[i] = [0.0; 3];
                    let x = row[i];
                    if x == MISSING {
                        continue;
                    }
                    let x = f64::from(x);
                    let (c, off) = (p.c[i], i * k);
                    for (kk, &wk) in w.iter().enumerate() {
                        let node = lo + kk;
                        let th = q.nodes[node];
                        let pr = ptab[off + node];
                        if c == 0.0 {
                            let e = wk * (x - pr);
                            s[i][0] += e * th;
                            s[i][1] += e;
                        } else {
                            let sg = stab[off + node];
                            let e = wk * (x - pr) / (pr * (1.0 - pr)).max(1e-300);
                            let ds = (1.0 - c) * sg * (1.0 - sg);
                            s[i][0] += e * ds * th;
                            s[i][1] += e * ds;
                            s[i][2] += e * (1.0 - sg);
                        }
                    }
                    for v in &mut s[i] {
                        *v /= tot;
                    }
                    sa += s[i][0];
                }
                let wt = pats.weights[pi];
                acc_aa += wt * sa * sa;
                for i in 0..m {
                    let si = s[i];
                    let b = &mut acc[i * 10..i * 10 + 10];
                    for u in 0..3 {
                        for v in 0..3 {
                            b[u * 3 + v] += wt * si[u] * si[v];
                        }
                    }
                    b[9] += wt * sa * si[1];
                }
                *win = [lo as u16, hi as u16];
            }
            (acc, acc_aa)
        })
        .collect();
    let mut acc = vec![0.0; m * 10];
    let mut aa = 0.0;
    for (pa, paa) in parts {
        for (x, y) in acc.iter_mut().zip(&pa) {
            *x += y;
        }
        aa += paa;
    }
    (0..m)
        .map(|i| {
            let b = &acc[i * 10..i * 10 + 10];
            match model {
                Model::Rasch => {
                    let se = (b[4] > 0.0).then(|| (1.0 / b[4]).sqrt());
                    [None, se, None]
                }
                Model::OnePl => {
                    let mut se = inv2_se(p.a[i], p.d[i], aa, b[9], b[4]);
                    se[0] = (aa > 0.0).then(|| (1.0 / aa).sqrt());
                    se
                }
                Model::TwoPl => inv2_se(p.a[i], p.d[i], b[0], b[1], b[4]),
                Model::ThreePl => {
                    let full = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]];
                    match spd_inverse(&full, 3) {
                        Some(c) => se_abc(p.a[i], p.d[i], c[0], c[4], c[1], Some(c[8]), true),
                        None => [None; 3],
                    }
                }
            }
        })
        .collect()
}

fn inv2_se(a: f64, d: f64, xaa: f64, xad: f64, xdd: f64) -> [Option<f64>; 3] {
    let det = xaa * xdd - xad * xad;
    if det.is_nan() || det <= 0.0 {
        return [None; 3];
    }
    se_abc(a, d, xdd / det, xaa / det, -xad / det, None, true)
}

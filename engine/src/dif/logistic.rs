//! Logistic regression DIF (Swaminathan & Rogers, 1990; Zumbo, 1999) with the conventions
//! of R `difR::difLogistic` (Magis, Béland, Tuerlinckx & De Boeck, 2010).
//!
//! For each item, three nested models of the probability of a right answer, with `X` the
//! total score and `G` the group (0 reference, 1 focal):
//! - M0: `logit p = b0 + b1·X`;
//! - M1: `logit p = b0 + b1·X + b2·G`;
//! - M2: `logit p = b0 + b1·X + b2·G + b3·X·G`.
//!
//! (difR numbers them the other way round: its `parM0`/`seM0` are our M2, and with
//! `type = "both"` its simple model is our M0.)
//!
//! Likelihood-ratio tests, each the drop in deviance (−2 log-likelihood):
//! - uniform DIF, M0 against M1, 1 df (difR `type = "udif"`);
//! - non-uniform DIF, M1 against M2, 1 df (`type = "nudif"`);
//! - both, M0 against M2, 2 df (`type = "both"` with `criterion = "LRT"`, difR's defaults).
//!
//! Effect size: Nagelkerke's R² of each model, `(1 − exp((D − D₀)/N)) / (1 − exp(−D₀/N))`
//! with `D₀` the deviance of the intercept-only model and `N` the persons compared; each
//! test's ΔR² is the difference of its two models' R² (difR prints the one of its `type`).
//! The A/B/C classifications are those difR prints, on the ΔR² of the "both" test:
//! - Jodoin & Gierl (2001): A when ΔR² ≤ 0.035, B when ≤ 0.070, C above;
//! - Zumbo & Thomas (1997): A when ΔR² ≤ 0.13, B when ≤ 0.26, C above.
//!
//! As in difR these are effect sizes alone (difR compares ΔR² rounded to 4 decimals; here
//! unrounded): whether an item is flagged is the caller's choice of test and α (Jodoin &
//! Gierl also ask a significant 2-df test for B and C). An undefined ΔR² (an item everyone
//! got right, or wrong) is A.
//!
//! Fitting: the likelihood depends on the responses only through the counts per (score,
//! group, right/wrong) cell, so each model is fitted by Newton–Raphson (IRLS for this
//! canonical link) on at most `2·(n_items + 1)` binomial cells, whatever the number of
//! persons, with step halving. A term that is a linear combination of the earlier ones on
//! the observed cells (say, every focal student has the same score) is aliased, as R's
//! `glm` calls it: its estimate and SE are NaN and the model is fitted without it (its test
//! then has χ² = 0). Under separation (the maximum likelihood is approached only as a
//! coefficient goes to infinity, e.g. no focal student got the item right) the deviance
//! converges while the coefficients drift: the fit stops once the deviance no longer
//! moves, with `converged = false` and `separated = true`; the tests then use these
//! limiting deviances, and the coefficients and SEs are not meaningful. Standard errors
//! come from the information at the estimate (R's `glm` uses the IRLS weights of its
//! iteration before last, so difR's SEs differ from these by up to a few 1e-4 relative).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Group, chi_square_1df_p, chi_square_2df_p, score_tables};
use crate::irt::{IrtError, ResponseMatrix};

/// A coefficient and its standard error (from the inverse information at the estimate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub se: f64,
}

/// One fitted logistic model of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticFit {
    pub intercept: Estimate,
    /// Per point of total score.
    pub score: Estimate,
    /// Focal minus reference (M1 and M2 only); > 0 favours the focal group.
    pub group: Option<Estimate>,
    /// Focal minus reference slope (M2 only).
    pub score_by_group: Option<Estimate>,
    /// −2 log-likelihood (R `glm`'s deviance for 0/1 responses).
    pub deviance: f64,
    /// Nagelkerke's R² (NaN when the item has no variance).
    pub nagelkerke_r2: f64,
    pub iterations: usize,
    pub converged: bool,
    /// The likelihood is maximised only at infinity (see the module docs).
    pub separated: bool,
}

/// A likelihood-ratio test between two nested models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrTest {
    /// Drop in deviance from the smaller to the larger model.
    pub chi_square: f64,
    pub df: u32,
    pub p_value: f64,
    /// Nagelkerke R² of the larger model minus that of the smaller.
    pub delta_r2: f64,
}

/// Effect size class of a ΔR².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaR2Category {
    /// Negligible.
    A,
    /// Moderate.
    B,
    /// Large.
    C,
}

/// Logistic regression DIF of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticDif {
    pub item: String,
    /// Score only.
    pub m0: LogisticFit,
    /// Score and group.
    pub m1: LogisticFit,
    /// Score, group and their interaction.
    pub m2: LogisticFit,
    /// M0 against M1 (1 df).
    pub uniform: LrTest,
    /// M1 against M2 (1 df).
    pub non_uniform: LrTest,
    /// M0 against M2 (2 df).
    pub both: LrTest,
    /// Jodoin & Gierl's class of `both.delta_r2`.
    pub jodoin_gierl: DeltaR2Category,
    /// Zumbo & Thomas's class of `both.delta_r2`.
    pub zumbo_thomas: DeltaR2Category,
    /// Persons of each group compared (complete responses).
    pub reference: usize,
    pub focal: usize,
}

/// Logistic regression DIF of every item, matching on the total score (in parallel over
/// items).
pub fn logistic_regression(
    responses: &ResponseMatrix,
    groups: &[Group],
) -> Result<Vec<LogisticDif>, IrtError> {
    let tables = score_tables(responses, groups)?;
    let (reference, focal) = (tables.reference, tables.focal);
    Ok((0..responses.n_items)
        .into_par_iter()
        .map(|item| {
            let cells = cells(&tables.item(item));
            let mut dif = item_dif(&cells);
            dif.item = responses.item_ids[item].clone();
            dif.reference = reference;
            dif.focal = focal;
            dif
        })
        .collect())
}

/// The persons of one group at one score: how many, how many right.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell {
    /// The matching variable: the total score, or an ability estimate.
    pub score: f64,
    pub focal: f64,
    pub n: f64,
    pub right: f64,
}

/// The non-empty cells of an item's score table.
fn cells(table: &[[u32; 4]]) -> Vec<Cell> {
    let mut cells = Vec::with_capacity(2 * table.len());
    for (score, &[rr, rw, fr, fw]) in table.iter().enumerate() {
        for (focal, right, wrong) in [(0.0, rr, rw), (1.0, fr, fw)] {
            if right + wrong > 0 {
                cells.push(Cell {
                    score: score as f64,
                    focal,
                    n: f64::from(right + wrong),
                    right: f64::from(right),
                });
            }
        }
    }
    cells
}

pub(super) fn item_dif(cells: &[Cell]) -> LogisticDif {
    let n: f64 = cells.iter().map(|c| c.n).sum();
    let right: f64 = cells.iter().map(|c| c.right).sum();
    let null_deviance = -2.0 * (xlny(right, right / n) + xlny(n - right, 1.0 - right / n));
    let r2 = |deviance: f64| {
        if null_deviance > 0.0 {
            -((deviance - null_deviance) / n).exp_m1() / -(-null_deviance / n).exp_m1()
        } else {
            f64::NAN
        }
    };
    let [m0, m1, m2] = [2, 3, 4].map(|k| {
        let f = fit(cells, k);
        let estimate = |j: usize| Estimate {
            value: f.beta[j],
            se: f.se[j],
        };
        LogisticFit {
            intercept: estimate(0),
            score: estimate(1),
            group: (k > 2).then(|| estimate(2)),
            score_by_group: (k > 3).then(|| estimate(3)),
            deviance: f.deviance,
            nagelkerke_r2: r2(f.deviance),
            iterations: f.iterations,
            converged: f.converged,
            separated: f.separated,
        }
    });
    let test = |small: &LogisticFit, large: &LogisticFit, df: u32| {
        let chi_square = (small.deviance - large.deviance).max(0.0);
        LrTest {
            chi_square,
            df,
            p_value: if df == 1 {
                chi_square_1df_p(chi_square)
            } else {
                chi_square_2df_p(chi_square)
            },
            delta_r2: large.nagelkerke_r2 - small.nagelkerke_r2,
        }
    };
    let (uniform, non_uniform, both) = (test(&m0, &m1, 1), test(&m1, &m2, 1), test(&m0, &m2, 2));
    let class = |b: f64, c: f64| {
        let d = both.delta_r2;
        if d > c {
            DeltaR2Category::C
        } else if d > b {
            DeltaR2Category::B
        } else {
            DeltaR2Category::A
        }
    };
    LogisticDif {
        item: String::new(),
        jodoin_gierl: class(0.035, 0.070),
        zumbo_thomas: class(0.13, 0.26),
        m0,
        m1,
        m2,
        uniform,
        non_uniform,
        both,
        reference: 0,
        focal: 0,
    }
}

/// `x ln y`, 0 when `x` is 0.
fn xlny(x: f64, y: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x * y.ln() }
}

/// At most four parameters: intercept, score, group, score × group.
const P: usize = 4;
type Vector = [f64; P];
type Matrix = [[f64; P]; P];

/// Newton iterations before giving up.
const MAX_ITERATIONS: usize = 100;

struct Fitted {
    /// NaN for aliased terms.
    beta: Vector,
    se: Vector,
    deviance: f64,
    iterations: usize,
    converged: bool,
    separated: bool,
}

/// The model's design: the cells' covariates restricted to the terms that are not aliased.
struct Design<'a> {
    cells: &'a [Cell],
    /// Per cell, the values of the active terms (the first `m` entries).
    x: Vec<Vector>,
    m: usize,
}

impl Design<'_> {
    fn eta(&self, beta: &Vector, c: usize) -> f64 {
        (0..self.m).map(|a| beta[a] * self.x[c][a]).sum()
    }

    fn log_likelihood(&self, beta: &Vector) -> f64 {
        self.cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let eta = self.eta(beta, c);
                cell.right * log_sigmoid(eta) + (cell.n - cell.right) * log_sigmoid(-eta)
            })
            .sum()
    }

    /// Score vector and information matrix `X'WX` at `beta`.
    fn derivatives(&self, beta: &Vector) -> (Vector, Matrix) {
        let mut g = [0.0; P];
        let mut h = [[0.0; P]; P];
        for (c, cell) in self.cells.iter().enumerate() {
            let p = sigmoid(self.eta(beta, c));
            let residual = cell.right - cell.n * p;
            let w = cell.n * p * (1.0 - p);
            let x = &self.x[c];
            for a in 0..self.m {
                g[a] += residual * x[a];
                for b in 0..self.m {
                    h[a][b] += w * x[a] * x[b];
                }
            }
        }
        (g, h)
    }
}

/// Maximum likelihood fit of the first `k` terms (intercept, score, group, score × group).
fn fit(cells: &[Cell], k: usize) -> Fitted {
    let covariates = |cell: &Cell| [1.0, cell.score, cell.focal, cell.score * cell.focal];
    let active = active_terms(cells, k, covariates);
    let design = Design {
        cells,
        x: cells
            .iter()
            .map(|cell| {
                let all = covariates(cell);
                let mut x = [0.0; P];
                for (a, &j) in active.iter().enumerate() {
                    x[a] = all[j];
                }
                x
            })
            .collect(),
        m: active.len(),
    };
    let m = design.m;
    let n: f64 = cells.iter().map(|c| c.n).sum();
    let right: f64 = cells.iter().map(|c| c.right).sum();
    let mut beta = [0.0; P];
    if right > 0.0 && right < n && active.first() == Some(&0) {
        beta[0] = (right / (n - right)).ln();
    }
    let mut ll = design.log_likelihood(&beta);
    let (mut iterations, mut converged, mut separated) = (0, false, false);
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let (g, h) = design.derivatives(&beta);
        let Some(step) = cholesky_solve(&h, &g, m) else {
            // The information is singular: the fitted probabilities reached 0 or 1.
            separated = true;
            break;
        };
        let mut t = 1.0;
        let (mut next, mut ll_next);
        loop {
            next = beta;
            for a in 0..m {
                next[a] += t * step[a];
            }
            ll_next = design.log_likelihood(&next);
            if ll_next >= ll || t < 1e-8 {
                break;
            }
            t *= 0.5;
        }
        if ll_next < ll {
            // No ascent left along the Newton direction: at the maximum to rounding.
            converged = true;
            break;
        }
        let change = (0..m)
            .map(|a| (t * step[a]).abs() / (1.0 + beta[a].abs()))
            .fold(0.0, f64::max);
        let gain = ll_next - ll;
        beta = next;
        ll = ll_next;
        if change < 1e-10 {
            converged = true;
            break;
        }
        if gain <= 1e-13 * (1.0 + ll.abs()) {
            // The likelihood no longer moves: at its maximum if the steps are tiny too,
            // otherwise the coefficients drift towards infinity.
            if change > 1e-4 {
                separated = true;
            } else {
                converged = true;
            }
            break;
        }
    }
    let (_, h) = design.derivatives(&beta);
    let variances = cholesky_inverse_diagonal(&h, m);
    let mut full_beta = [f64::NAN; P];
    let mut full_se = [f64::NAN; P];
    for (a, &j) in active.iter().enumerate() {
        full_beta[j] = beta[a];
        full_se[j] = variances.map_or(f64::NAN, |v| v[a].sqrt());
    }
    Fitted {
        beta: full_beta,
        se: full_se,
        deviance: -2.0 * ll,
        iterations,
        converged,
        separated,
    }
}

/// The first `k` terms that are not (numerically) linear combinations of earlier ones on
/// the cells, by count-weighted Gram–Schmidt.
fn active_terms(cells: &[Cell], k: usize, covariates: impl Fn(&Cell) -> Vector) -> Vec<usize> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let mut active = Vec::new();
    let dot = |u: &[f64], v: &[f64]| -> f64 {
        cells
            .iter()
            .zip(u.iter().zip(v))
            .map(|(c, (a, b))| c.n * a * b)
            .sum()
    };
    for j in 0..k {
        let mut r: Vec<f64> = cells.iter().map(|c| covariates(c)[j]).collect();
        let norm = dot(&r, &r);
        for b in &basis {
            let coef = dot(&r, b) / dot(b, b);
            for (ri, bi) in r.iter_mut().zip(b) {
                *ri -= coef * bi;
            }
        }
        if dot(&r, &r) > 1e-10 * norm {
            basis.push(r);
            active.push(j);
        }
    }
    active
}

/// `ln σ(x) = −ln(1 + e^(−x))`, without overflow.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Lower Cholesky factor of the leading `m × m` block of a symmetric matrix; `None` when it
/// is not (numerically) positive definite.
fn cholesky(h: &Matrix, m: usize) -> Option<Matrix> {
    let mut l = [[0.0; P]; P];
    for i in 0..m {
        for j in 0..=i {
            let s = h[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 1e-12 * h[i][i].abs() || s <= 0.0 {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves `h x = g` (leading `m × m` block).
fn cholesky_solve(h: &Matrix, g: &Vector, m: usize) -> Option<Vector> {
    let l = cholesky(h, m)?;
    let mut y = [0.0; P];
    for i in 0..m {
        y[i] = (g[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = [0.0; P];
    for i in (0..m).rev() {
        x[i] = (y[i] - (i + 1..m).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

/// Diagonal of `h⁻¹` (leading `m × m` block).
fn cholesky_inverse_diagonal(h: &Matrix, m: usize) -> Option<Vector> {
    let mut diagonal = [0.0; P];
    for j in 0..m {
        let mut e = [0.0; P];
        e[j] = 1.0;
        diagonal[j] = cholesky_solve(h, &e, m)?[j];
    }
    Some(diagonal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(score: f64, focal: f64, n: f64, right: f64) -> Cell {
        Cell {
            score,
            focal,
            n,
            right,
        }
    }

    /// Two score levels × two groups make M2 saturated: its fitted probabilities are the
    /// observed proportions, so everything is a closed form.
    /// Reference: score 1, 4 of 10 right; score 2, 8 of 10. Focal: 2 of 10 and 5 of 10.
    /// b1 = logit .8 − logit .4 = 1.386294 + 0.405465 = 1.791759; b0 = logit .4 − b1
    /// = −2.197225; focal slope b1 + b3 = logit .5 − logit .2 = 1.386294, so b3 = −0.405465;
    /// b0 + b2 = logit .2 − 1.386294 = −2.772589, so b2 = −0.575364.
    /// SE(b1) = √(1/(10·.4·.6) + 1/(10·.8·.2)) = √1.041667 = 1.020621.
    /// Deviance = −2 Σ [y ln p + (n − y) ln(1 − p)] = −2 (−6.730117 − 5.004024 − 5.004024
    /// − 6.931472) = 47.339274.
    #[test]
    fn a_saturated_model_has_closed_form_estimates() {
        let cells = [
            cell(1.0, 0.0, 10.0, 4.0),
            cell(2.0, 0.0, 10.0, 8.0),
            cell(1.0, 1.0, 10.0, 2.0),
            cell(2.0, 1.0, 10.0, 5.0),
        ];
        let f = fit(&cells, 4);
        assert!(f.converged && !f.separated);
        for (got, want) in f
            .beta
            .iter()
            .zip([-2.197225, 1.791759, -0.575364, -0.405465])
        {
            assert!((got - want).abs() < 1e-6, "{:?}", f.beta);
        }
        assert!((f.se[1] - 1.020621).abs() < 1e-6, "{:?}", f.se);
        assert!((f.deviance - 47.339274).abs() < 1e-5, "{}", f.deviance);
        // M0 and M1 are nested in it: their deviances are larger.
        let (d0, d1) = (fit(&cells, 2).deviance, fit(&cells, 3).deviance);
        assert!(d0 > d1 && d1 > f.deviance, "{d0} {d1}");
    }

    /// No focal student got the item right: the group effect runs to −∞. The fit stops,
    /// says so, and the tests still see the (finite) limiting deviances.
    #[test]
    fn separation_is_reported_and_the_tests_stay_finite() {
        let cells = [
            cell(1.0, 0.0, 20.0, 6.0),
            cell(2.0, 0.0, 20.0, 12.0),
            cell(3.0, 0.0, 20.0, 17.0),
            cell(1.0, 1.0, 20.0, 0.0),
            cell(2.0, 1.0, 20.0, 0.0),
            cell(3.0, 1.0, 20.0, 0.0),
        ];
        let dif = item_dif(&cells);
        assert!(dif.m0.converged && !dif.m0.separated, "{:?}", dif.m0);
        assert!(dif.m1.separated && !dif.m1.converged, "{:?}", dif.m1);
        assert!(dif.m1.group.unwrap().value < -10.0, "{:?}", dif.m1);
        for t in [dif.uniform, dif.non_uniform, dif.both] {
            assert!(t.chi_square.is_finite() && t.p_value.is_finite(), "{t:?}");
        }
        assert!(dif.uniform.chi_square > 40.0, "{:?}", dif.uniform);
        assert!(dif.both.p_value < 1e-9);
        assert_eq!(dif.jodoin_gierl, DeltaR2Category::C);
    }

    /// Every focal student has score 2: group and score × group are collinear, so the
    /// interaction is aliased and the non-uniform test has nothing to test.
    #[test]
    fn an_aliased_interaction_is_nan_and_its_test_is_null() {
        let cells = [
            cell(1.0, 0.0, 30.0, 10.0),
            cell(2.0, 0.0, 30.0, 18.0),
            cell(3.0, 0.0, 30.0, 25.0),
            cell(2.0, 1.0, 30.0, 12.0),
        ];
        let dif = item_dif(&cells);
        let interaction = dif.m2.score_by_group.unwrap();
        assert!(interaction.value.is_nan() && interaction.se.is_nan());
        assert!(dif.m2.converged && dif.m2.group.unwrap().value.is_finite());
        assert!(
            dif.non_uniform.chi_square.abs() < 1e-9,
            "{:?}",
            dif.non_uniform
        );
        assert!((dif.non_uniform.p_value - 1.0).abs() < 1e-6);
    }

    /// An item everyone got right: no variance, no DIF, R² undefined.
    #[test]
    fn an_item_without_variance_has_no_dif() {
        let cells = [
            cell(1.0, 0.0, 5.0, 5.0),
            cell(2.0, 0.0, 5.0, 5.0),
            cell(1.0, 1.0, 5.0, 5.0),
            cell(2.0, 1.0, 5.0, 5.0),
        ];
        let dif = item_dif(&cells);
        for t in [dif.uniform, dif.non_uniform, dif.both] {
            assert!(t.chi_square < 1e-9 && t.p_value > 0.999, "{t:?}");
            assert!(t.delta_r2.is_nan());
        }
        assert_eq!(dif.jodoin_gierl, DeltaR2Category::A);
        assert_eq!(dif.zumbo_thomas, DeltaR2Category::A);
    }
}

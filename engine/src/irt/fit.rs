//! Item fit and person fit for the dichotomous models (Rasch, 1PL, 2PL, 3PL).
//!
//! **Item fit, S-X2** (Orlando & Thissen 2000, 2003), with the conventions of R's `mirt`
//! (`itemfit()`, default `fit_stats = "S_X2"`, `mincell = 1`):
//! - persons are grouped by their summed score over all usable items (estimable items;
//!   the others are ignored); groups 1..J−1 (the two extreme scores carry no information).
//!   Within group `s` the observed counts wrong/right on item i are compared with
//!   `N_s · P(x_i | s)`, where `P(x_i = 1 | s) = ∫ P_i(θ) f^{−i}(s−1 | θ) φ(θ) dθ /
//!   ∫ f(s | θ) φ(θ) dθ` and `f`, `f^{−i}` are the summed-score likelihoods with and without
//!   item i (Lord–Wingersky recursion) on a N(0, 1) grid (`mirt`: 61 points on [−6, 6],
//!   the default here).
//! - Sparse cells are collapsed as `mirt` does (`collapseCells`): score groups nobody
//!   has are dropped; walking up the scores, a group with exactly one person is merged
//!   into the next one (the last such group into the one below); then, while some cell has
//!   an expected count below `mincell` (and above 0), the lowest such group is merged into
//!   its neighbour (the first group up, the last one down, an inner group into the
//!   neighbour with fewer observed persons, the lower one on a tie).
//! - `S-X2 = Σ (O − E)² / E` over both cells of every remaining group; `df` = groups −
//!   the item's estimated parameters: Rasch 1 (a = 1 and N(0, 1) fixed), 1PL 2 (the
//!   difficulty and the common slope; `mirt` counts a constrained common slope against
//!   every item, and its `itemtype = "Rasch"` — the same model with the variance free —
//!   likewise subtracts 2), 2PL 2, 3PL 3. `df ≤ 0` gives no statistic. The p-value is the
//!   upper tail of χ²(df) ([`chi_square_upper`]); RMSEA = `√(max(S-X2/df − 1, 0)/(N − 1))`.
//! - Missing data: S-X2 uses only the persons who answered every usable item (`mirt`
//!   refuses missing data and offers `na.rm = TRUE`, which drops incomplete rows; the
//!   item parameters are not re-estimated). [`FitReport::n_complete`] says how many.
//!
//! **Infit and outfit** mean squares per item and per person (Wright & Masters 1982), with
//! `mirt`'s Wilson–Hilferty standardisation `t = (MS^{1/3} − 1)·3/q + q/3` (q capped at
//! √2) and `mirt`'s floor on the response variance (`W = PQ`, raised to √1e−5 when
//! W² < 1e−5). Items use the persons who answered them; persons the items they answered.
//! The θ behind the item statistics is `mirt`'s default, EAP under N(0, 1) on 121 points
//! ([`FitOptions::item_theta`]); `mirt`'s Rasch examples also use ML, in which case
//! infinite estimates are replaced, as in `mirt`, by the largest finite one + 0.1 (the
//! smallest − 0.1).
//!
//! **Person fit**: `lz` (Drasgow, Levine & Williams 1985; `mirt`'s `Zh`) and Snijders'
//! (2001) corrected `lz*`, which accounts for θ being estimated from the same responses
//! (as R's PerFit `lzstar()`: `w = ln(P/Q)`, `r = P'/(PQ)`, `c = Σ P'w / Σ P'r`,
//! `lz* = (Σ (x − P)w + c·r₀) / √(Σ (w − c·r)² PQ)`, `r₀ = 0` for ML and `−θ` for MAP
//! under N(0, 1)). `lz*` is defined only for ML and MAP θ (not EAP). Only answered items
//! count. With ML an all-right or all-wrong pattern has an infinite θ and no statistic.
//! The default person θ is ML (PerFit's default for `lzstar`); `mirt`'s `personfit()`
//! uses EAP (choose [`ThetaMethod::Eap`] to reproduce its `Zh`).
//!
//! Cost: S-X2 needs one Lord–Wingersky recursion without each item, O(items² × nodes)
//! apiece (O(items³ × nodes) in all), plus one pass over the data; person fit and
//! infit/outfit are O(persons × items). Items, persons and the data pass run in parallel
//! (rayon). 100,000 persons × 100 items: S-X2 ≈ 0.1 s, the whole report (with ML θ for
//! every person) ≈ 2.5 s (`irt_speed`'s `time_fit_report_100k_by_100`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::IrtError;
use super::calibrate::Calibration;
use super::data::{MISSING, ResponseMatrix};
use super::model::{ItemParams, Model, Quadrature, logistic};
use super::scoring::{Theta, eap_batch, map, mle};

/// Which ability estimate the fit statistics are computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThetaMethod {
    /// Posterior mean under N(0, 1) ([`eap_batch`]).
    Eap,
    /// Posterior mode under N(0, 1) ([`map`]).
    Map,
    /// Maximum likelihood ([`mle`]); infinite for all-right / all-wrong patterns.
    Ml,
}

/// Options of [`fit_report`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Grid for the S-X2 expectations (default `mirt`'s: 61 points on [−6, 6]).
    pub quadrature_points: usize,
    pub quadrature_range: f64,
    /// Smallest expected cell count before groups are merged (default 1, as `mirt`).
    pub mincell: f64,
    /// θ for item infit/outfit (default EAP, `mirt`'s `itemfit()` default).
    pub item_theta: ThetaMethod,
    /// θ for person fit (default ML, for which `lz*` was derived).
    pub person_theta: ThetaMethod,
    /// Grid points for EAP θ (default 121 on [−6, 6], `mirt`'s `fscores()` default).
    pub eap_points: usize,
    /// Items with an S-X2 p-value below this are flagged (default 0.01).
    pub alpha: f64,
    /// Persons with `lz*` below this are flagged (default −1.645, one-sided 5 %); when
    /// `lz*` is not available (EAP θ) `lz` is used.
    pub person_cutoff: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            quadrature_points: 61,
            quadrature_range: 6.0,
            mincell: 1.0,
            item_theta: ThetaMethod::Eap,
            person_theta: ThetaMethod::Ml,
            eap_points: 121,
            alpha: 0.01,
            person_cutoff: -1.645,
        }
    }
}

/// S-X2 of one item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SX2 {
    pub s_x2: f64,
    pub df: usize,
    pub p_value: f64,
    pub rmsea: f64,
    /// Score groups left after collapsing.
    pub n_groups: usize,
}

/// Infit / outfit mean squares and their standardised values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InfitOutfit {
    pub infit: f64,
    pub outfit: f64,
    pub z_infit: f64,
    pub z_outfit: f64,
    /// Responses behind the statistics.
    pub n: usize,
}

/// Fit statistics of one response pattern at a given θ ([`person_fit`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PersonStats {
    pub lz: Option<f64>,
    pub lz_star: Option<f64>,
    pub infit: Option<InfitOutfit>,
}

/// One item's row of a [`FitReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemFit {
    pub item: String,
    /// `None` for a non-estimable item or when `df ≤ 0` after collapsing.
    pub s_x2: Option<f64>,
    pub df: usize,
    pub p_value: Option<f64>,
    pub rmsea: Option<f64>,
    pub n_groups: usize,
    pub infit: Option<f64>,
    pub outfit: Option<f64>,
    pub z_infit: Option<f64>,
    pub z_outfit: Option<f64>,
    /// Persons who answered the item.
    pub n_responses: usize,
    /// `p_value < alpha`.
    pub flagged: bool,
}

/// One person's row of a [`FitReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonFit {
    pub person: String,
    pub theta: Theta,
    pub lz: Option<f64>,
    pub lz_star: Option<f64>,
    pub infit: Option<f64>,
    pub outfit: Option<f64>,
    pub n_answered: usize,
    /// `lz*` (or `lz` when `lz*` is not defined for the θ method) below the cutoff.
    pub flagged: bool,
}

/// Item and person fit of a calibration on its data ([`fit_report`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    pub model: Model,
    pub n_persons: usize,
    /// Persons with every usable item answered (the S-X2 sample).
    pub n_complete: usize,
    pub alpha: f64,
    pub person_cutoff: f64,
    pub item_theta: ThetaMethod,
    pub person_theta: ThetaMethod,
    pub items: Vec<ItemFit>,
    pub persons: Vec<PersonFit>,
}

impl FitReport {
    /// Items whose S-X2 p-value is below `alpha`.
    pub fn misfitting_items(&self, alpha: f64) -> Vec<&ItemFit> {
        self.items
            .iter()
            .filter(|it| it.p_value.is_some_and(|p| p < alpha))
            .collect()
    }

    /// Persons with a person-fit statistic (`lz*`, or `lz` when `lz*` is undefined): not
    /// all right, all wrong or without answers.
    pub fn persons_with_statistic(&self) -> usize {
        self.persons
            .iter()
            .filter(|p| p.lz_star.or(p.lz).is_some())
            .count()
    }

    /// Persons whose `lz*` (or `lz` when `lz*` is undefined) is below `cutoff`.
    pub fn aberrant_persons(&self, cutoff: f64) -> Vec<&PersonFit> {
        self.persons
            .iter()
            .filter(|p| p.lz_star.or(p.lz).is_some_and(|z| z < cutoff))
            .collect()
    }
}

/// Item and person fit of `cal` on `data` (the data it was calibrated on, or new data
/// with the same items in the same order).
pub fn fit_report(
    cal: &Calibration,
    data: &ResponseMatrix,
    opts: &FitOptions,
) -> Result<FitReport, IrtError> {
    fit_report_for(&cal.items, cal.model, data, opts)
}

/// [`fit_report`] from item parameters and the model they were estimated under (the
/// model only sets the S-X2 degrees of freedom).
pub fn fit_report_for(
    params: &[ItemParams],
    model: Model,
    data: &ResponseMatrix,
    opts: &FitOptions,
) -> Result<FitReport, IrtError> {
    check_shape(params, data)?;
    if !(opts.alpha > 0.0 && opts.alpha < 1.0) {
        return Err(IrtError::Config(format!(
            "alpha must be in (0, 1), got {}",
            opts.alpha
        )));
    }
    let quad = Quadrature::normal(opts.quadrature_points, opts.quadrature_range)?;
    let (sx2, n_complete) = s_x2(params, model, data, &quad, opts.mincell)?;

    let item_thetas = thetas(params, data, opts.item_theta, opts.eap_points)?;
    let finite = finite_thetas(&item_thetas);
    let item_io = infit_outfit(params, data, &finite)?;

    let person_thetas = if opts.person_theta == opts.item_theta {
        item_thetas
    } else {
        thetas(params, data, opts.person_theta, opts.eap_points)?
    };
    let method = opts.person_theta;
    let cutoff = opts.person_cutoff;
    let persons: Vec<PersonFit> = (0..data.n_persons)
        .into_par_iter()
        .with_min_len(64)
        .map(|p| {
            let row = data.row(p);
            let theta = person_thetas[p];
            let stats = match theta {
                Theta::Finite(t) => person_stats(params, row, t, method),
                _ => PersonStats {
                    lz: None,
                    lz_star: None,
                    infit: None,
                },
            };
            let n_answered = params
                .iter()
                .zip(row)
                .filter(|(it, x)| it.estimable && **x != MISSING)
                .count();
            PersonFit {
                person: data.person_ids[p].clone(),
                theta,
                lz: stats.lz,
                lz_star: stats.lz_star,
                infit: stats.infit.map(|s| s.infit),
                outfit: stats.infit.map(|s| s.outfit),
                n_answered,
                flagged: stats.lz_star.or(stats.lz).is_some_and(|z| z < cutoff),
            }
        })
        .collect();

    let items = params
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let s = sx2[i];
            let io = item_io[i];
            ItemFit {
                item: it.item.clone(),
                s_x2: s.map(|s| s.s_x2),
                df: s.map_or(0, |s| s.df),
                p_value: s.map(|s| s.p_value),
                rmsea: s.map(|s| s.rmsea),
                n_groups: s.map_or(0, |s| s.n_groups),
                infit: io.map(|v| v.infit),
                outfit: io.map(|v| v.outfit),
                z_infit: io.map(|v| v.z_infit),
                z_outfit: io.map(|v| v.z_outfit),
                n_responses: io.map_or(0, |v| v.n),
                flagged: s.is_some_and(|s| s.p_value < opts.alpha),
            }
        })
        .collect();

    Ok(FitReport {
        model,
        n_persons: data.n_persons,
        n_complete,
        alpha: opts.alpha,
        person_cutoff: cutoff,
        item_theta: opts.item_theta,
        person_theta: method,
        items,
        persons,
    })
}

fn check_shape(params: &[ItemParams], data: &ResponseMatrix) -> Result<(), IrtError> {
    if params.len() != data.n_items {
        return Err(IrtError::Shape(format!(
            "{} item parameter sets for {} items",
            params.len(),
            data.n_items
        )));
    }
    Ok(())
}

/// Free parameters per item in the S-X2 degrees of freedom (see the module docs).
fn params_per_item(model: Model) -> usize {
    match model {
        Model::Rasch => 1,
        Model::OnePl | Model::TwoPl => 2,
        Model::ThreePl => 3,
    }
}

/// Every person's θ by `method` (EAP under N(0, 1) on `eap_points` nodes on [−6, 6]).
pub fn thetas(
    params: &[ItemParams],
    data: &ResponseMatrix,
    method: ThetaMethod,
    eap_points: usize,
) -> Result<Vec<Theta>, IrtError> {
    check_shape(params, data)?;
    match method {
        ThetaMethod::Eap => {
            let quad = Quadrature::normal(eap_points, 6.0)?;
            Ok(eap_batch(params, data, &quad)?
                .into_iter()
                .map(|e| Theta::Finite(e.theta))
                .collect())
        }
        ThetaMethod::Map | ThetaMethod::Ml => (0..data.n_persons)
            .into_par_iter()
            .with_min_len(64)
            .map(|p| {
                let row = data.row(p);
                if method == ThetaMethod::Map {
                    map(params, row).map(|e| Theta::Finite(e.theta))
                } else {
                    mle(params, row).map(|e| e.theta)
                }
            })
            .collect(),
    }
}

/// Finite values for [`infit_outfit`]: ±∞ become the largest finite θ + 0.1 / the
/// smallest − 0.1 (`mirt`'s rule); undefined θ (nothing answered) become NaN (and such
/// persons contribute nothing).
pub fn finite_thetas(thetas: &[Theta]) -> Vec<f64> {
    let finite = thetas.iter().filter_map(|t| match t {
        Theta::Finite(x) => Some(*x),
        _ => None,
    });
    let hi = finite.clone().fold(f64::NEG_INFINITY, f64::max);
    let lo = finite.fold(f64::INFINITY, f64::min);
    let (hi, lo) = if hi.is_finite() {
        (hi + 0.1, lo - 0.1)
    } else {
        (0.1, -0.1)
    };
    thetas
        .iter()
        .map(|t| match t {
            Theta::Finite(x) => *x,
            Theta::PlusInfinity => hi,
            Theta::MinusInfinity => lo,
            Theta::Undefined => f64::NAN,
        })
        .collect()
}

// ----------------------------------------------------------------------------------------
// S-X2

/// Summed-score likelihoods by the Lord–Wingersky recursion: for items with correct
/// probabilities `p[j*k..(j+1)*k]` (j in `items`) at k nodes, returns `L[s*k + q]` =
/// P(summed score s | θ_q), s = 0..=items.len().
fn lord_wingersky(p: &[f64], k: usize, items: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut l = vec![1.0; k];
    for (n, j) in items.enumerate() {
        let pj = &p[j * k..(j + 1) * k];
        let mut next = vec![0.0; (n + 2) * k];
        for s in 0..=n {
            let (cur, out) = (&l[s * k..(s + 1) * k], &mut next[s * k..(s + 2) * k]);
            let (lo, hi) = out.split_at_mut(k);
            for q in 0..k {
                let v = cur[q];
                lo[q] += v * (1.0 - pj[q]);
                hi[q] += v * pj[q];
            }
        }
        l = next;
    }
    l
}

/// Expected proportions wrong/right on item `i` (index into the usable items) in each
/// summed-score group s = 1..=J−1: `(P(x_i = 0 | s), P(x_i = 1 | s))`.
fn expected_proportions(
    p: &[f64],
    weights: &[f64],
    n_usable: usize,
    total: &[f64],
    i: usize,
) -> Vec<(f64, f64)> {
    let k = weights.len();
    let without = lord_wingersky(p, k, (0..n_usable).filter(|&j| j != i));
    let pi = &p[i * k..(i + 1) * k];
    (1..n_usable)
        .map(|s| {
            let (mut e0, mut e1) = (0.0, 0.0);
            for q in 0..k {
                e1 += without[(s - 1) * k + q] * pi[q] * weights[q];
                e0 += without[s * k + q] * (1.0 - pi[q]) * weights[q];
            }
            let t = total[s];
            if t > 0.0 {
                (e0 / t, e1 / t)
            } else {
                (0.0, 0.0)
            }
        })
        .collect()
}

/// One score group of an S-X2 table: observed and expected counts (wrong, right).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cell {
    o: [f64; 2],
    e: [f64; 2],
}

impl Cell {
    fn add(&mut self, other: Cell) {
        for c in 0..2 {
            self.o[c] += other.o[c];
            self.e[c] += other.e[c];
        }
    }

    fn n(&self) -> f64 {
        self.o[0] + self.o[1]
    }
}

/// `mirt`'s collapsing of a dichotomous S-X2 table (see the module docs).
fn collapse(rows: Vec<Cell>, mincell: f64) -> Vec<Cell> {
    let mut rows: Vec<Cell> = rows.into_iter().filter(|r| r.n() > 0.0).collect();
    if rows.is_empty() {
        return rows;
    }
    // a group of one person goes into the next group up (sequentially, so merged groups
    // are checked again), the last one into the group below
    let mut keep = vec![true; rows.len()];
    for j in 0..rows.len() - 1 {
        if rows[j].n() == 1.0 {
            let r = rows[j];
            rows[j + 1].add(r);
            keep[j] = false;
        }
    }
    let mut rows: Vec<Cell> = rows
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect();
    let last = rows.len() - 1;
    if last > 0 && rows[last].n() == 1.0 {
        let r = rows[last];
        rows[last - 1].add(r);
        rows.pop();
    }
    // sparse expected cells: the lowest offending group goes to a neighbour
    let sparse = |r: &Cell| r.e.iter().any(|&e| e < mincell && e != 0.0);
    while rows.len() > 1 {
        let Some(w) = rows.iter().position(sparse) else {
            break;
        };
        let down = w == rows.len() - 1 || (w > 0 && rows[w - 1].n() <= rows[w + 1].n());
        let target = if down { w - 1 } else { w + 1 };
        let r = rows[w];
        rows[target].add(r);
        rows.remove(w);
    }
    rows
}

/// S-X2 for every item (`None` for non-estimable items and when df ≤ 0), and the number
/// of complete persons it used (see the module docs for the rules).
pub fn s_x2(
    params: &[ItemParams],
    model: Model,
    data: &ResponseMatrix,
    quad: &Quadrature,
    mincell: f64,
) -> Result<(Vec<Option<SX2>>, usize), IrtError> {
    check_shape(params, data)?;
    let usable: Vec<usize> = (0..params.len()).filter(|&i| params[i].estimable).collect();
    let m = usable.len();
    let k = quad.len();
    let mut none = vec![None; params.len()];
    if m < 2 {
        return Ok((none, 0));
    }
    let mut p = vec![0.0; m * k];
    for (j, &i) in usable.iter().enumerate() {
        let it = &params[i];
        for (q, &t) in quad.nodes.iter().enumerate() {
            p[j * k + q] = it.c + (1.0 - it.c) * logistic(it.a * (t - it.b));
        }
    }
    // observed: persons per score and right answers per (item, score), complete rows only
    let zero = || (vec![0.0f64; m + 1], vec![0.0f64; m * (m + 1)], 0usize);
    let (n_s, right, n_complete) = data
        .data
        .par_chunks(data.n_items.max(1))
        .with_min_len(256)
        .fold(zero, |(mut n_s, mut right, mut n), row| {
            if usable.iter().all(|&i| row[i] != MISSING) {
                let s = usable.iter().filter(|&&i| row[i] == 1).count();
                n_s[s] += 1.0;
                for (j, &i) in usable.iter().enumerate() {
                    if row[i] == 1 {
                        right[j * (m + 1) + s] += 1.0;
                    }
                }
                n += 1;
            }
            (n_s, right, n)
        })
        .reduce(zero, |(mut a, mut b, n), (c, d, n2)| {
            a.iter_mut().zip(&c).for_each(|(x, y)| *x += y);
            b.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
            (a, b, n + n2)
        });
    if n_complete == 0 {
        return Ok((none, 0));
    }
    let full = lord_wingersky(&p, k, 0..m);
    let total: Vec<f64> = (0..=m)
        .map(|s| (0..k).map(|q| full[s * k + q] * quad.weights[q]).sum())
        .collect();
    let n_par = params_per_item(model);
    let per_item: Vec<Option<SX2>> = (0..m)
        .into_par_iter()
        .map(|j| {
            let props = expected_proportions(&p, &quad.weights, m, &total, j);
            let rows: Vec<Cell> = (1..m)
                .map(|s| {
                    let n = n_s[s];
                    let r = right[j * (m + 1) + s];
                    let (e0, e1) = props[s - 1];
                    Cell {
                        o: [n - r, r],
                        e: [n * e0, n * e1],
                    }
                })
                .collect();
            let rows = collapse(rows, mincell);
            let mut x2 = 0.0;
            let mut cells = 0usize;
            for r in &rows {
                for c in 0..2 {
                    if r.e[c] != 0.0 {
                        x2 += (r.o[c] - r.e[c]).powi(2) / r.e[c];
                        cells += 1;
                    }
                }
            }
            let df = cells.saturating_sub(rows.len() + n_par);
            (df > 0).then(|| {
                let dff = df as f64;
                SX2 {
                    s_x2: x2,
                    df,
                    p_value: chi_square_upper(x2, dff),
                    rmsea: ((x2 / dff - 1.0).max(0.0) / (n_complete as f64 - 1.0)).sqrt(),
                    n_groups: rows.len(),
                }
            })
        })
        .collect();
    for (j, &i) in usable.iter().enumerate() {
        none[i] = per_item[j];
    }
    Ok((none, n_complete))
}

// ----------------------------------------------------------------------------------------
// χ² tail

/// Upper tail `P(χ²_df > x)` (the regularized upper incomplete gamma `Q(df/2, x/2)`).
pub fn chi_square_upper(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(0.5 * df, 0.5 * x)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients; relative error ~1e−15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection: Γ(x)Γ(1 − x) = π / sin(πx)
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma `Q(a, x) = Γ(a, x)/Γ(a)` for a > 0, x ≥ 0: the
/// series for P below x < a + 1, Lentz's continued fraction above.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || a <= 0.0 || x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    let log_pre = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * log_pre.exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (log_pre.exp() * h).clamp(0.0, 1.0)
    }
}

// ----------------------------------------------------------------------------------------
// Infit / outfit and person fit

/// `mirt`'s cap on the standardisation's q (it writes 1.4142, which is what we use too).
#[allow(clippy::approx_constant)]
const Q_CAP: f64 = 1.4142;

/// Running sums for infit/outfit: Σ resid², Σ W, Σ resid²/W, Σ C/W², Σ (C − W²), n.
#[derive(Debug, Clone, Copy, Default)]
struct MsSums {
    r2: f64,
    w: f64,
    z2: f64,
    c_w2: f64,
    c_minus_w2: f64,
    n: usize,
}

impl MsSums {
    fn add_response(&mut self, x: f64, p: f64) {
        let q = 1.0 - p;
        let resid = x - p;
        let raw_w = p * q;
        // mirt: W[W^2 < 1e-5] <- sqrt(1e-5); C (fourth central moment) unfloored
        let w = if raw_w * raw_w < 1e-5 {
            1e-5f64.sqrt()
        } else {
            raw_w
        };
        let c = p.powi(4) * q + q.powi(4) * p;
        self.r2 += resid * resid;
        self.w += w;
        self.z2 += resid * resid / w;
        self.c_w2 += c / (w * w);
        self.c_minus_w2 += c - w * w;
        self.n += 1;
    }

    fn merge(mut self, o: MsSums) -> MsSums {
        self.r2 += o.r2;
        self.w += o.w;
        self.z2 += o.z2;
        self.c_w2 += o.c_w2;
        self.c_minus_w2 += o.c_minus_w2;
        self.n += o.n;
        self
    }

    fn finish(&self) -> Option<InfitOutfit> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let outfit = self.z2 / n;
        let infit = self.r2 / self.w;
        let q_out = (self.c_w2 / (n * n) - 1.0 / n).abs().sqrt().min(Q_CAP);
        let q_in = (self.c_minus_w2 / (self.w * self.w))
            .max(0.0)
            .sqrt()
            .min(Q_CAP);
        let wh = |ms: f64, q: f64| (ms.cbrt() - 1.0) * (3.0 / q) + q / 3.0;
        Some(InfitOutfit {
            infit,
            outfit,
            z_infit: wh(infit, q_in),
            z_outfit: wh(outfit, q_out),
            n: self.n,
        })
    }
}

/// Item infit/outfit at the given person θs (one per person; NaN = skip the person).
pub fn infit_outfit(
    params: &[ItemParams],
    data: &ResponseMatrix,
    thetas: &[f64],
) -> Result<Vec<Option<InfitOutfit>>, IrtError> {
    check_shape(params, data)?;
    if thetas.len() != data.n_persons {
        return Err(IrtError::Shape(format!(
            "{} θ values for {} persons",
            thetas.len(),
            data.n_persons
        )));
    }
    let j = params.len();
    let sums = (0..data.n_persons)
        .into_par_iter()
        .with_min_len(256)
        .fold(
            || vec![MsSums::default(); j],
            |mut acc, p| {
                let t = thetas[p];
                if t.is_nan() {
                    return acc;
                }
                for ((s, it), &x) in acc.iter_mut().zip(params).zip(data.row(p)) {
                    if it.estimable && x != MISSING {
                        let pr = it.c + (1.0 - it.c) * logistic(it.a * (t - it.b));
                        s.add_response(f64::from(x), pr);
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![MsSums::default(); j],
            |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
        );
    Ok(sums.iter().map(MsSums::finish).collect())
}

/// lz, lz* and infit/outfit of one response pattern at θ = `theta`, which was estimated
/// by `method` from these responses (`lz*` only for ML and MAP). Missing responses and
/// non-estimable items are skipped.
pub fn person_fit(
    params: &[ItemParams],
    responses: &[u8],
    theta: f64,
    method: ThetaMethod,
) -> Result<PersonStats, IrtError> {
    if params.len() != responses.len() {
        return Err(IrtError::Shape(format!(
            "{} responses for {} items",
            responses.len(),
            params.len()
        )));
    }
    if let Some(i) = responses.iter().position(|&v| v > 1 && v != MISSING) {
        return Err(IrtError::InvalidResponse {
            person: 0,
            item: i,
            value: u32::from(responses[i]),
        });
    }
    Ok(person_stats(params, responses, theta, method))
}

fn person_stats(
    params: &[ItemParams],
    responses: &[u8],
    theta: f64,
    method: ThetaMethod,
) -> PersonStats {
    let (mut wn, mut v, mut dw, mut dr) = (0.0, 0.0, 0.0, 0.0);
    let mut ms = MsSums::default();
    for (it, &x) in params.iter().zip(responses) {
        if !it.estimable || x == MISSING {
            continue;
        }
        let x = f64::from(x);
        let s = logistic(it.a * (theta - it.b));
        let p = it.c + (1.0 - it.c) * s;
        let q = (1.0 - it.c) * (1.0 - s);
        ms.add_response(x, p);
        if p <= 0.0 || q <= 0.0 {
            continue;
        }
        let w = p.ln() - q.ln();
        let pq = p * q;
        let dp = (1.0 - it.c) * it.a * s * (1.0 - s); // P'(θ)
        wn += (x - p) * w;
        v += w * w * pq;
        dw += dp * w;
        dr += dp * dp / pq; // P'·r with r = P'/(PQ)
    }
    let lz = (v > 0.0).then(|| wn / v.sqrt());
    let r0 = match method {
        ThetaMethod::Ml => Some(0.0),
        ThetaMethod::Map => Some(-theta),
        ThetaMethod::Eap => None,
    };
    let lz_star = r0.and_then(|r0| {
        if dr <= 0.0 {
            return None;
        }
        let c = dw / dr;
        let tau2 = v - dw * dw / dr;
        (tau2 > v * 1e-12).then(|| (wn + c * r0) / tau2.sqrt())
    });
    PersonStats {
        lz,
        lz_star,
        infit: ms.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(what: &str, got: f64, want: f64, tol: f64) {
        assert!(
            (got - want).abs() <= tol,
            "{what}: got {got}, expected {want}"
        );
    }

    #[test]
    fn chi_square_tail_matches_tables() {
        // df = 2: the tail is exactly exp(−x/2)
        for x in [0.1, 1.0, 5.0, 9.21034, 40.0] {
            close(
                &format!("df2 x={x}"),
                chi_square_upper(x, 2.0),
                (-x / 2.0).exp(),
                1e-13,
            );
        }
        // critical values from standard χ² tables (e.g. R's qchisq)
        for (x, df, p) in [
            (3.841_459, 1.0, 0.05),
            (6.634_897, 1.0, 0.01),
            (15.086_27, 5.0, 0.01),
            (18.307_04, 10.0, 0.05),
            (124.342_1, 100.0, 0.05),
            (0.454_936_4, 1.0, 0.5),
        ] {
            close(&format!("x={x} df={df}"), chi_square_upper(x, df), p, 2e-7);
        }
        close("x=0", chi_square_upper(0.0, 3.0), 1.0, 0.0);
        // df = 1 agrees with erfc(√(x/2)) (erfc(1) = 0.157299207050285)
        close(
            "erfc(1)",
            chi_square_upper(2.0, 1.0),
            0.157_299_207_050_285,
            1e-14,
        );
        assert!(chi_square_upper(1.0, 0.0).is_nan());
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        close("Γ(1)", ln_gamma(1.0), 0.0, 1e-14);
        close(
            "Γ(0.5)",
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-14,
        );
        close("Γ(11)", ln_gamma(11.0), (3_628_800f64).ln(), 1e-12);
        close(
            "Γ(0.1)",
            ln_gamma(0.1),
            9.513_507_698_668_732f64.ln(),
            1e-12,
        );
    }

    fn items(spec: &[(f64, f64, f64)]) -> Vec<ItemParams> {
        spec.iter()
            .enumerate()
            .map(|(i, &(a, b, c))| ItemParams::new(format!("i{i}"), a, b, c))
            .collect()
    }

    /// The recursion against brute-force enumeration of all 2⁶ patterns at a few θs.
    #[test]
    fn lord_wingersky_matches_enumeration() {
        let its = items(&[
            (1.0, -1.0, 0.0),
            (1.5, 0.0, 0.2),
            (0.7, 0.5, 0.0),
            (2.0, 1.0, 0.1),
            (1.2, -0.3, 0.0),
            (0.9, 2.0, 0.25),
        ]);
        let nodes = [-2.0, -0.5, 0.3, 1.7];
        let k = nodes.len();
        let mut p = vec![0.0; its.len() * k];
        for (j, it) in its.iter().enumerate() {
            for (q, &t) in nodes.iter().enumerate() {
                p[j * k + q] = it.c + (1.0 - it.c) * logistic(it.a * (t - it.b));
            }
        }
        for skip in [None, Some(3)] {
            let order: Vec<usize> = (0..its.len()).filter(|&j| Some(j) != skip).collect();
            let l = lord_wingersky(&p, k, order.iter().copied());
            for (q, _) in nodes.iter().enumerate() {
                let mut brute = vec![0.0; order.len() + 1];
                for pat in 0u32..(1 << order.len()) {
                    let mut pr = 1.0;
                    for (bit, &j) in order.iter().enumerate() {
                        let pj = p[j * k + q];
                        pr *= if pat >> bit & 1 == 1 { pj } else { 1.0 - pj };
                    }
                    brute[pat.count_ones() as usize] += pr;
                }
                for (s, b) in brute.iter().enumerate() {
                    close(&format!("s={s} q={q}"), l[s * k + q], *b, 1e-14);
                }
            }
        }
    }

    /// The two expected proportions of a score group sum to 1, and the proportion right
    /// rises with the score for a monotone item.
    #[test]
    fn expected_proportions_are_conditional_probabilities() {
        let its = items(&[
            (1.0, -1.0, 0.0),
            (1.5, 0.0, 0.2),
            (0.7, 0.5, 0.0),
            (2.0, 1.0, 0.1),
            (1.2, -0.3, 0.0),
        ]);
        let quad = Quadrature::default();
        let k = quad.len();
        let m = its.len();
        let mut p = vec![0.0; m * k];
        for (j, it) in its.iter().enumerate() {
            for (q, &t) in quad.nodes.iter().enumerate() {
                p[j * k + q] = it.c + (1.0 - it.c) * logistic(it.a * (t - it.b));
            }
        }
        let full = lord_wingersky(&p, k, 0..m);
        let total: Vec<f64> = (0..=m)
            .map(|s| (0..k).map(|q| full[s * k + q] * quad.weights[q]).sum())
            .collect();
        for j in 0..m {
            let e = expected_proportions(&p, &quad.weights, m, &total, j);
            assert_eq!(e.len(), m - 1);
            for w in e.windows(2) {
                assert!(w[1].1 > w[0].1, "item {j}: {e:?}");
            }
            for (e0, e1) in e {
                close("sum", e0 + e1, 1.0, 1e-12);
            }
        }
    }

    fn cell(o0: f64, o1: f64, e0: f64, e1: f64) -> Cell {
        Cell {
            o: [o0, o1],
            e: [e0, e1],
        }
    }

    /// mirt's collapsing rules, worked by hand.
    #[test]
    fn collapsing_follows_mirts_rules() {
        let rows = vec![
            cell(0.0, 0.0, 0.0, 0.0),   // nobody: dropped
            cell(1.0, 0.0, 0.6, 0.4),   // one person: into the next group
            cell(2.0, 1.0, 2.0, 1.0),   // → (3, 1 | 2.6, 1.4)
            cell(5.0, 5.0, 4.0, 6.0),   // fine
            cell(1.0, 9.0, 0.5, 9.5),   // E 0.5 < 1: inner group, neighbours 10 and 20 → up
            cell(4.0, 16.0, 3.0, 17.0), // fine
            cell(0.0, 1.0, 0.1, 0.9),   // one person, last group: into the one below
        ];
        let out = collapse(rows, 1.0);
        // row with E 2.6/1.4: fine; (5,5)+(1,9) = (6,14 | 4.5,15.5); last (4,17 | 3.1,17.9)
        assert_eq!(
            out,
            vec![
                cell(3.0, 1.0, 2.6, 1.4),
                cell(6.0, 14.0, 4.5, 15.5),
                cell(4.0, 17.0, 3.1, 17.9),
            ]
        );
        // a sparse first group goes up; a sparse last group goes down
        let out = collapse(
            vec![
                cell(3.0, 0.0, 2.5, 0.5),
                cell(3.0, 3.0, 3.0, 3.0),
                cell(3.0, 3.0, 3.0, 3.0),
                cell(0.0, 2.0, 0.2, 1.8),
            ],
            1.0,
        );
        assert_eq!(
            out,
            vec![cell(6.0, 3.0, 5.5, 3.5), cell(3.0, 5.0, 3.2, 4.8)]
        );
    }

    /// lz by hand for two items at θ = 0 (P = 0.5 and logistic(1) = 0.731059).
    #[test]
    fn lz_worked_by_hand() {
        let its = items(&[(1.0, 0.0, 0.0), (1.0, -1.0, 0.0)]);
        let p2 = logistic(1.0);
        // item 1: w = 0, contributes nothing; item 2 answered wrong: (0 − P)·ln(P/Q)
        let w2 = (p2 / (1.0 - p2)).ln(); // = 1
        let want = (-p2 * w2) / (w2 * w2 * p2 * (1.0 - p2)).sqrt();
        let got = person_fit(&its, &[1, 0], 0.0, ThetaMethod::Eap).unwrap();
        close("lz", got.lz.unwrap(), want, 1e-14);
        assert_eq!(got.lz_star, None);
        // lz* at ML for a Rasch test: r = 1, c = Σ PQ w / Σ PQ
        let its = items(&[(1.0, -1.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)]);
        let x = [1u8, 0, 1];
        let t = match mle(&its, &x).unwrap().theta {
            Theta::Finite(t) => t,
            other => panic!("{other:?}"),
        };
        let (mut wn, mut spq, mut spqw, mut spqw2) = (0.0, 0.0, 0.0, 0.0);
        for (it, &xi) in its.iter().zip(&x) {
            let p = logistic(t - it.b);
            let w = t - it.b; // ln(P/Q) for the Rasch model
            wn += (f64::from(xi) - p) * w;
            spq += p * (1.0 - p);
            spqw += p * (1.0 - p) * w;
            spqw2 += p * (1.0 - p) * w * w;
        }
        let c = spqw / spq;
        let tau2 = spqw2 - 2.0 * c * spqw + c * c * spq;
        let got = person_fit(&its, &x, t, ThetaMethod::Ml).unwrap();
        close("lz*", got.lz_star.unwrap(), wn / tau2.sqrt(), 1e-12);
        close("lz", got.lz.unwrap(), wn / spqw2.sqrt(), 1e-12);
    }

    /// lz* for a 3PL pattern at MAP θ against a literal transcription of Snijders'
    /// formulas as PerFit's `lzstar()` writes them (σ²ₙ and τ²ₙ as means over the items,
    /// `E(Wn) = −cₙ r₀`, `Var(Wn) = n τ²ₙ`), with P′ by central differences.
    #[test]
    fn lz_star_matches_snijders_formulas_for_the_3pl_at_map() {
        let its = items(&[
            (1.2, -1.5, 0.2),
            (0.8, -0.5, 0.15),
            (1.7, 0.0, 0.25),
            (1.1, 0.4, 0.0),
            (2.1, 0.9, 0.2),
            (0.6, 1.5, 0.1),
            (1.4, -0.2, 0.3),
        ]);
        let x = [1u8, 0, 1, 1, 0, 1, 0];
        let theta = map(&its, &x).unwrap().theta;
        let prob = |it: &ItemParams, t: f64| it.c + (1.0 - it.c) * logistic(it.a * (t - it.b));
        let n = its.len() as f64;
        let (mut wn, mut s_dw, mut s_dr) = (0.0, 0.0, 0.0);
        let (mut rs, mut ws, mut pq) = (Vec::new(), Vec::new(), Vec::new());
        for (it, &xi) in its.iter().zip(&x) {
            let p = prob(it, theta);
            let h = 1e-5;
            let d1 = (prob(it, theta + h) - prob(it, theta - h)) / (2.0 * h);
            let r = d1 / (p * (1.0 - p));
            let w = (p / (1.0 - p)).ln();
            wn += (f64::from(xi) - p) * w;
            s_dw += d1 * w;
            s_dr += d1 * r;
            rs.push(r);
            ws.push(w);
            pq.push(p * (1.0 - p));
        }
        let cn = s_dw / s_dr;
        let tau2n: f64 = (0..its.len())
            .map(|i| (ws[i] - cn * rs[i]).powi(2) * pq[i])
            .sum::<f64>()
            / n;
        let r0 = -theta; // BM with μ = 0, σ = 1
        let want = (wn - (-cn * r0)) / (n * tau2n).sqrt();
        let got = person_fit(&its, &x, theta, ThetaMethod::Map).unwrap();
        close("lz*", got.lz_star.unwrap(), want, 1e-8);
        let sigma2n: f64 = (0..its.len()).map(|i| ws[i] * ws[i] * pq[i]).sum::<f64>() / n;
        close("lz", got.lz.unwrap(), wn / (n * sigma2n).sqrt(), 1e-12);
    }

    #[test]
    fn shape_errors_are_reported() {
        let its = items(&[(1.0, 0.0, 0.0)]);
        assert!(person_fit(&its, &[1, 0], 0.0, ThetaMethod::Ml).is_err());
        assert!(person_fit(&its, &[2], 0.0, ThetaMethod::Ml).is_err());
        let data = ResponseMatrix::from_rows(vec![vec![Some(1), Some(0)]]).unwrap();
        assert!(fit_report_for(&its, Model::TwoPl, &data, &FitOptions::default()).is_err());
    }
}

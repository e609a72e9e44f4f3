//! DIF matched on ability, for exams where students answer different items (adaptive
//! exams): no total score is comparable there, but each student's ability estimate θ is
//! (it is on the calibration's scale whatever items were given). This is the matching of
//! Zwick, Thayer & Wingersky's CAT DIF procedures (1994, 1995), on θ itself rather than on
//! its expected true score (a monotone function of θ, so the strata are the same).
//!
//! For each item, the students of the two groups who answered it and have a finite θ:
//! - Mantel–Haenszel over `strata` strata of θ of equal size (quantiles of θ over every
//!   student of the two groups), with the same statistics and ETS categories as
//!   [`super::mantel_haenszel`];
//! - logistic regression with θ as the continuous matching variable (one cell per
//!   student: `X` in [`super::logistic`] is θ, so `score` estimates are per logit of θ),
//!   with the same tests, ΔR² and classes as [`super::logistic_regression`].

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Group;
use super::logistic::{Cell, LogisticDif, item_dif as logistic_item};
use super::mantel_haenszel::{MhDif, item_dif as mh_item};
use crate::irt::{IrtError, MISSING, ResponseMatrix};

/// One item's DIF matched on ability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbilityDif {
    pub mantel_haenszel: MhDif,
    pub logistic: LogisticDif,
}

/// DIF of every item matched on `theta` (one per person; NaN: unknown, left out), with
/// Mantel–Haenszel over `strata` ability strata (at least 2). Items nobody of one group
/// answered get undefined statistics (NaN, category A).
pub fn dif_by_ability(
    responses: &ResponseMatrix,
    groups: &[Group],
    theta: &[f64],
    strata: usize,
) -> Result<Vec<AbilityDif>, IrtError> {
    let n = responses.n_persons;
    if groups.len() != n || theta.len() != n {
        return Err(IrtError::Shape(format!(
            "{} group labels and {} abilities for {n} persons",
            groups.len(),
            theta.len()
        )));
    }
    if strata < 2 {
        return Err(IrtError::Config(
            "ability matching needs at least 2 strata".into(),
        ));
    }
    let compared: Vec<usize> = (0..n)
        .filter(|&p| groups[p] != Group::Other && theta[p].is_finite())
        .collect();
    let has = |g: Group| compared.iter().any(|&p| groups[p] == g);
    if !has(Group::Reference) || !has(Group::Focal) {
        return Err(IrtError::Config(
            "DIF needs persons with an ability estimate in both the reference and the focal \
             group"
                .into(),
        ));
    }
    // Stratum boundaries: the quantiles of θ over the persons compared.
    let mut sorted: Vec<f64> = compared.iter().map(|&p| theta[p]).collect();
    sorted.sort_by(f64::total_cmp);
    let bounds: Vec<f64> = (1..strata)
        .map(|s| sorted[s * sorted.len() / strata])
        .collect();
    let stratum = |t: f64| bounds.partition_point(|&b| b <= t);
    Ok((0..responses.n_items)
        .into_par_iter()
        .map(|item| {
            let mut tables = vec![[0.0f64; 4]; strata];
            let mut cells = Vec::new();
            let (mut reference, mut focal) = (0, 0);
            for &p in &compared {
                let v = responses.row(p)[item];
                if v == MISSING {
                    continue;
                }
                let is_focal = groups[p] == Group::Focal;
                if is_focal {
                    focal += 1;
                } else {
                    reference += 1;
                }
                let right = v != 0;
                let column = 2 * usize::from(is_focal) + usize::from(!right);
                tables[stratum(theta[p])][column] += 1.0;
                cells.push(Cell {
                    score: theta[p],
                    focal: f64::from(u8::from(is_focal)),
                    n: 1.0,
                    right: f64::from(u8::from(right)),
                });
            }
            let id = &responses.item_ids[item];
            let mut logistic = logistic_item(&cells);
            logistic.item = id.clone();
            logistic.reference = reference;
            logistic.focal = focal;
            AbilityDif {
                mantel_haenszel: mh_item(id, &tables),
                logistic,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dif::{DeltaR2Category, EtsCategory};
    use crate::irt::SplitMix64;

    /// An adaptive-like design: 40 items, each student answers a random 15 of them; item 0
    /// is one logit harder for the focal group. θ is known with estimation noise (SE 0.3).
    fn adaptive_data(seed: u64) -> (ResponseMatrix, Vec<Group>, Vec<f64>) {
        let mut rng = SplitMix64::new(seed);
        let (persons, items) = (6000, 40);
        let mut rows = Vec::new();
        let mut groups = Vec::new();
        let mut theta = Vec::new();
        for p in 0..persons {
            let focal = p % 2 == 1;
            // The focal group is less able: matching must not mistake that for DIF.
            let t = rng.normal() - if focal { 0.5 } else { 0.0 };
            let row: Vec<Option<u8>> = (0..items)
                .map(|i| {
                    if i != 0 && rng.uniform() > 15.0 / 40.0 {
                        return None;
                    }
                    let b = -2.0 + 4.0 * i as f64 / 39.0 + if i == 0 && focal { 1.0 } else { 0.0 };
                    Some(u8::from(rng.uniform() < 1.0 / (1.0 + (b - t).exp())))
                })
                .collect();
            rows.push(row);
            groups.push(if focal {
                Group::Focal
            } else {
                Group::Reference
            });
            theta.push(t + 0.3 * rng.normal());
        }
        (ResponseMatrix::from_rows(rows).unwrap(), groups, theta)
    }

    #[test]
    fn planted_dif_is_found_and_impact_is_not_mistaken_for_it() {
        let (responses, groups, theta) = adaptive_data(5);
        let dif = dif_by_ability(&responses, &groups, &theta, 10).unwrap();
        let planted = &dif[0];
        assert_eq!(
            planted.mantel_haenszel.category,
            EtsCategory::C,
            "{planted:?}"
        );
        assert!(planted.mantel_haenszel.d_dif < -1.5);
        assert!(planted.logistic.uniform.p_value < 1e-10);
        // Null items: the focal group's lower ability alone gives no C, and few B.
        let null = &dif[1..];
        assert!(
            null.iter()
                .all(|d| d.mantel_haenszel.category != EtsCategory::C)
        );
        let significant = null
            .iter()
            .filter(|d| d.mantel_haenszel.p_value < 0.05)
            .count();
        assert!(
            significant <= 6,
            "{significant} of 39 null items significant at .05"
        );
        assert!(
            null.iter()
                .all(|d| d.logistic.jodoin_gierl == DeltaR2Category::A)
        );
        // Every item was answered by both groups, each student counted once per item.
        let answered = (0..6000)
            .filter(|&p| responses.row(p)[5] != MISSING)
            .count();
        assert_eq!(
            dif[5].mantel_haenszel.reference + dif[5].mantel_haenszel.focal,
            answered
        );
    }

    /// On complete data with θ equal to the total score, the strata are the score levels
    /// once there are as many strata as scores, and the results are those of score
    /// matching.
    #[test]
    fn with_complete_data_it_agrees_with_score_matching() {
        let mut rng = SplitMix64::new(9);
        let rows: Vec<Vec<Option<u8>>> = (0..800)
            .map(|_| {
                let t = rng.normal();
                (0..6)
                    .map(|i| {
                        let b = -1.0 + 0.4 * i as f64;
                        Some(u8::from(rng.uniform() < 1.0 / (1.0 + (b - t).exp())))
                    })
                    .collect()
            })
            .collect();
        let responses = ResponseMatrix::from_rows(rows).unwrap();
        let groups: Vec<Group> = (0..800)
            .map(|p| {
                if p % 3 == 0 {
                    Group::Focal
                } else {
                    Group::Reference
                }
            })
            .collect();
        let score: Vec<f64> = (0..800)
            .map(|p| responses.row(p).iter().map(|&v| f64::from(v)).sum())
            .collect();
        let by_score = crate::dif::mantel_haenszel(&responses, &groups).unwrap();
        let lr_score = crate::dif::logistic_regression(&responses, &groups).unwrap();
        // Equal-count strata cannot split ties; score levels are the finest partition, so
        // ask for many strata and compare the pooled statistic, which merging levels of
        // equal score cannot change.
        let by_ability = dif_by_ability(&responses, &groups, &score, 800).unwrap();
        for ((s, a), l) in by_score.iter().zip(&by_ability).zip(&lr_score) {
            let m = &a.mantel_haenszel;
            assert!((s.alpha - m.alpha).abs() < 1e-12, "{s:?} {m:?}");
            assert!((s.chi_square - m.chi_square).abs() < 1e-9);
            assert!((l.both.chi_square - a.logistic.both.chi_square).abs() < 1e-6);
        }
        assert!(dif_by_ability(&responses, &groups, &score, 1).is_err());
        assert!(dif_by_ability(&responses, &groups, &score[1..], 5).is_err());
    }
}

//! Differential item functioning (DIF): does an item behave differently for a focal group
//! than for reference students of the same total score?
//!
//! Two procedures, on the same matching and the same persons:
//! - [`mantel_haenszel`]: the Mantel–Haenszel common odds ratio and χ² with the ETS
//!   A/B/C categories (uniform DIF only);
//! - [`logistic_regression`]: the logistic regression likelihood-ratio tests of
//!   Swaminathan & Rogers (1990) for uniform, non-uniform and both kinds of DIF, with
//!   Nagelkerke's ΔR² effect size (Zumbo 1999) and its A/B/C classifications, following
//!   R `difR::difLogistic`'s conventions.
//!
//! Matching variable: the total score over all items, the studied item included (ETS's
//! practice and the default of R `difR`, `purify = FALSE`). Persons with any missing
//! response are left out (their total score is not comparable), as are persons of
//! [`Group::Other`]; both procedures therefore see the same persons.
//!
//! Both start from one pass over the responses that counts, per item and total score, the
//! reference and focal students who got the item right and wrong: everything either
//! procedure computes is a function of these counts.
//!
//! Adaptive exams give students different items, so no total score is comparable; there
//! [`dif_by_ability`] matches on the students' ability estimates instead.

use rayon::prelude::*;

use crate::irt::{IrtError, MISSING, ResponseMatrix};

mod ability;
mod logistic;
mod mantel_haenszel;

pub use ability::{AbilityDif, dif_by_ability};

pub use logistic::{
    DeltaR2Category, Estimate, LogisticDif, LogisticFit, LrTest, logistic_regression,
};
pub use mantel_haenszel::{EtsCategory, MhDif, mantel_haenszel};

/// Which group a person belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Reference,
    Focal,
    /// In neither group compared (left out).
    Other,
}

/// Counts per item and total score: `[reference right, reference wrong, focal right,
/// focal wrong]`.
pub(crate) struct ScoreTables {
    n_items: usize,
    /// Score-major: `counts[score * n_items + item]`, scores `0..=n_items`.
    counts: Vec<[u32; 4]>,
    /// Complete-response persons of each group.
    pub(crate) reference: usize,
    pub(crate) focal: usize,
}

impl ScoreTables {
    /// Item `item`'s table, one row per total score `0..=n_items`.
    pub(crate) fn item(&self, item: usize) -> Vec<[u32; 4]> {
        (0..=self.n_items)
            .map(|score| self.counts[score * self.n_items + item])
            .collect()
    }
}

/// Persons per parallel counting task.
const CHUNK: usize = 8192;

/// Counts the score tables of every item (one pass over the responses, in parallel over
/// chunks of persons); errors when the group labels do not match the persons or a group
/// has no complete responses.
pub(crate) fn score_tables(
    responses: &ResponseMatrix,
    groups: &[Group],
) -> Result<ScoreTables, IrtError> {
    if groups.len() != responses.n_persons {
        return Err(IrtError::Shape(format!(
            "{} group labels for {} persons",
            groups.len(),
            responses.n_persons
        )));
    }
    let n_items = responses.n_items;
    let n_persons = responses.n_persons;
    let cells = n_items * (n_items + 1);
    let count_chunk = |chunk: usize| {
        let mut counts = vec![[0u32; 4]; cells];
        let (mut reference, mut focal) = (0usize, 0usize);
        let start = chunk * CHUNK;
        let end = (start + CHUNK).min(n_persons);
        for (p, group) in (start..end).zip(&groups[start..end]) {
            let column = match group {
                Group::Reference => 0,
                Group::Focal => 2,
                Group::Other => continue,
            };
            let row = responses.row(p);
            if row.contains(&MISSING) {
                continue;
            }
            if column == 0 {
                reference += 1;
            } else {
                focal += 1;
            }
            let score: usize = row.iter().map(|&v| usize::from(v)).sum();
            let level = &mut counts[score * n_items..(score + 1) * n_items];
            for (cell, &v) in level.iter_mut().zip(row) {
                cell[column + usize::from(v == 0)] += 1;
            }
        }
        (counts, reference, focal)
    };
    let (counts, reference, focal) = (0..n_persons.div_ceil(CHUNK))
        .into_par_iter()
        .map(count_chunk)
        .reduce_with(|(mut a, ra, fa), (b, rb, fb)| {
            for (x, y) in a.iter_mut().zip(&b) {
                for k in 0..4 {
                    x[k] += y[k];
                }
            }
            (a, ra + rb, fa + fb)
        })
        .unwrap_or_else(|| (vec![[0; 4]; cells], 0, 0));
    if reference == 0 || focal == 0 {
        return Err(IrtError::Config(
            "DIF needs persons with complete responses in both the reference and the focal group"
                .into(),
        ));
    }
    Ok(ScoreTables {
        n_items,
        counts,
        reference,
        focal,
    })
}

/// Upper tail of χ² with 1 df: `erfc(√(x/2))`. NaN stays NaN.
pub(crate) fn chi_square_1df_p(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    erfc((x.max(0.0) / 2.0).sqrt())
}

/// Upper tail of χ² with 2 df: `exp(−x/2)`. NaN stays NaN.
pub(crate) fn chi_square_2df_p(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    (-x.max(0.0) / 2.0).exp()
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479500122),
            (1.0, 0.157299207),
            (2.0, 0.004677735),
        ] {
            assert!((erfc(x) - want).abs() < 2e-7, "erfc({x})");
        }
        // χ² = 3.841459 is the .05 critical value with 1 df; 5.991465 with 2 df.
        assert!((chi_square_1df_p(3.841459) - 0.05).abs() < 1e-6);
        assert!((chi_square_2df_p(5.991465) - 0.05).abs() < 1e-7);
        assert!(chi_square_1df_p(f64::NAN).is_nan());
    }

    /// Two persons per group; one has a missing response, one is in neither group.
    #[test]
    fn tables_count_complete_rows_of_the_two_groups() {
        let responses = ResponseMatrix::from_rows(vec![
            vec![Some(1), Some(0)],
            vec![Some(1), Some(1)],
            vec![Some(0), Some(0)],
            vec![Some(0), None],
            vec![Some(1), Some(1)],
        ])
        .unwrap();
        let groups = [
            Group::Reference,
            Group::Focal,
            Group::Focal,
            Group::Reference,
            Group::Other,
        ];
        let t = score_tables(&responses, &groups).unwrap();
        assert_eq!((t.reference, t.focal), (1, 2));
        // Item 0: score 1 → reference right; score 2 → focal right; score 0 → focal wrong.
        assert_eq!(t.item(0), vec![[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]);
        assert_eq!(t.item(1), vec![[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]);
    }

    #[test]
    fn groups_must_match_persons_and_both_be_present() {
        let responses = ResponseMatrix::from_rows(vec![vec![Some(1)], vec![Some(0)]]).unwrap();
        assert!(score_tables(&responses, &[Group::Focal]).is_err());
        let e = score_tables(&responses, &[Group::Focal, Group::Other])
            .err()
            .unwrap();
        assert!(e.to_string().contains("both"), "{e}");
    }
}

//! Differential item functioning by the Mantel–Haenszel procedure (Holland & Thayer, 1988),
//! with the ETS A/B/C categories (Zwick, 2012).
//!
//! Students of a reference and a focal group are matched on their total score; within each
//! score level the item's 2 × 2 table of group × right/wrong is formed, and the tables are
//! pooled:
//! - `α_MH = Σ A·D/N / Σ B·C/N` (A, B: reference right, wrong; C, D: focal right, wrong);
//!   α > 1 favours the reference group;
//! - MH D-DIF `= −2.35 ln α_MH` (ETS delta scale; negative: the item is harder for the
//!   focal group than for reference students of the same total score);
//! - its standard error from the Robins–Breslow–Greenland variance of `ln α_MH`;
//! - the continuity-corrected `χ²_MH = (|Σ A − Σ E(A)| − ½)² / Σ Var(A)`, 1 df;
//! - category A: |D| < 1 or χ² not significant at .05; C: |D| ≥ 1.5 and |D| significantly
//!   above 1 (one-sided .05: `(|D| − 1) / SE > 1.645`); B: the rest.
//!
//! Matching and missing data as in [`super`]; score levels with fewer than two persons,
//! or with one group only, carry no information.

use serde::{Deserialize, Serialize};

use super::{Group, chi_square_1df_p, score_tables};
use crate::irt::{IrtError, ResponseMatrix};

/// ETS DIF category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtsCategory {
    /// Negligible.
    A,
    /// Slight to moderate.
    B,
    /// Moderate to large: review the item.
    C,
}

/// Mantel–Haenszel DIF of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MhDif {
    pub item: String,
    /// Common odds ratio; > 1 favours the reference group. NaN when undefined.
    pub alpha: f64,
    /// `−2.35 ln α`.
    pub d_dif: f64,
    /// Standard error of `d_dif`.
    pub se: f64,
    /// Continuity-corrected Mantel–Haenszel χ² (1 df).
    pub chi_square: f64,
    pub p_value: f64,
    pub category: EtsCategory,
    /// Persons of each group in the informative score levels.
    pub reference: usize,
    pub focal: usize,
}

/// Mantel–Haenszel DIF of every item, matching on the total score.
pub fn mantel_haenszel(
    responses: &ResponseMatrix,
    groups: &[Group],
) -> Result<Vec<MhDif>, IrtError> {
    let tables = score_tables(responses, groups)?;
    Ok((0..responses.n_items)
        .map(|item| {
            let table: Vec<[f64; 4]> = tables.item(item).iter().map(|c| c.map(f64::from)).collect();
            item_dif(&responses.item_ids[item], &table)
        })
        .collect())
}

pub(super) fn item_dif(item: &str, tables: &[[f64; 4]]) -> MhDif {
    let (mut num, mut den) = (0.0, 0.0);
    let (mut sum_a, mut sum_ea, mut sum_var) = (0.0, 0.0, 0.0);
    let (mut pr, mut ps_qr, mut qs) = (0.0, 0.0, 0.0);
    let (mut reference, mut focal) = (0usize, 0usize);
    for &[a, b, c, d] in tables {
        let n = a + b + c + d;
        let (n_ref, n_foc) = (a + b, c + d);
        if n < 2.0 || n_ref == 0.0 || n_foc == 0.0 {
            continue;
        }
        reference += n_ref as usize;
        focal += n_foc as usize;
        let (right, wrong) = (a + c, b + d);
        let (r, s) = (a * d / n, b * c / n);
        let (p, q) = ((a + d) / n, (b + c) / n);
        num += r;
        den += s;
        pr += p * r;
        ps_qr += p * s + q * r;
        qs += q * s;
        sum_a += a;
        sum_ea += n_ref * right / n;
        sum_var += n_ref * n_foc * right * wrong / (n * n * (n - 1.0));
    }
    let alpha = if num > 0.0 && den > 0.0 {
        num / den
    } else {
        f64::NAN
    };
    let d_dif = -2.35 * alpha.ln();
    let var_ln = pr / (2.0 * num * num) + ps_qr / (2.0 * num * den) + qs / (2.0 * den * den);
    let se = 2.35 * var_ln.sqrt();
    let chi_square = if sum_var > 0.0 {
        ((sum_a - sum_ea).abs() - 0.5).max(0.0).powi(2) / sum_var
    } else {
        f64::NAN
    };
    let p_value = chi_square_1df_p(chi_square);
    let significant = p_value < 0.05;
    let category = if !d_dif.is_finite() || !significant || d_dif.abs() < 1.0 {
        EtsCategory::A
    } else if d_dif.abs() >= 1.5 && (d_dif.abs() - 1.0) / se > 1.645 {
        EtsCategory::C
    } else {
        EtsCategory::B
    };
    MhDif {
        item: item.to_string(),
        alpha,
        d_dif,
        se,
        chi_square,
        p_value,
        category,
        reference,
        focal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irt::SplitMix64;

    /// Two score levels worked by hand.
    /// Level 1: A = 30, B = 20, C = 20, D = 30 (N = 100); level 2: A = 40, B = 10, C = 30,
    /// D = 20 (N = 100).
    /// Σ AD/N = 9 + 8 = 17; Σ BC/N = 4 + 3 = 7; α = 17/7 = 2.428571; D-DIF = −2.35 ln α
    /// = −2.085 (to 3 decimals: ln 2.428571 = 0.887303, × 2.35 = 2.085162).
    /// E(A): 50·50/100 = 25 and 50·70/100 = 35, Σ = 60; Σ A = 70.
    /// Var(A): 50·50·50·50/(100²·99) = 6.313131 and 50·50·70·30/(100²·99) = 5.303030,
    /// Σ = 11.616162; χ² = (10 − 0.5)² / 11.616162 = 7.769348.
    /// RBG: R = (9, 8), S = (4, 3), P = (0.6, 0.6), Q = (0.4, 0.4):
    /// Σ PR = 10.2, Σ (PS + QR) = 4.2 + 6.8 = 11.0, Σ QS = 2.8;
    /// Var ln α = 10.2/(2·289) + 11/(2·17·7) + 2.8/(2·49) = 0.017647 + 0.046218 + 0.028571
    /// = 0.092437; SE(D) = 2.35 · 0.304034 = 0.714481.
    #[test]
    fn a_hand_worked_example() {
        let tables = [[30.0, 20.0, 20.0, 30.0], [40.0, 10.0, 30.0, 20.0]];
        let dif = item_dif("x", &tables);
        assert!((dif.alpha - 17.0 / 7.0).abs() < 1e-12);
        assert!((dif.d_dif + 2.085162).abs() < 1e-5, "{dif:?}");
        assert!((dif.chi_square - 7.769348).abs() < 1e-5, "{dif:?}");
        assert!((dif.se - 0.714481).abs() < 1e-5, "{dif:?}");
        // p of χ² = 7.769348 with 1 df is 0.005314.
        assert!((dif.p_value - 0.005314).abs() < 1e-5, "{dif:?}");
        // |D| ≥ 1.5 but (2.085 − 1)/0.714 = 1.52 < 1.645: B, not C.
        assert_eq!(dif.category, EtsCategory::B);
        assert_eq!((dif.reference, dif.focal), (100, 100));
    }

    /// 2000 reference and 2000 focal students of equal ability answer 20 Rasch items;
    /// item 0 is 1 logit harder for the focal group (about 2.35 on the delta scale): it
    /// lands in C, and the null items in A.
    #[test]
    fn planted_dif_is_found_and_null_items_pass() {
        let mut rng = SplitMix64::new(42);
        let n_items = 20;
        let mut rows = Vec::new();
        let mut groups = Vec::new();
        for p in 0..4000 {
            let focal = p % 2 == 1;
            let theta = rng.normal();
            let row: Vec<Option<u8>> = (0..n_items)
                .map(|i| {
                    let mut b = -2.0 + 4.0 * i as f64 / (n_items - 1) as f64;
                    if i == 0 && focal {
                        b += 1.0;
                    }
                    Some(u8::from(rng.uniform() < 1.0 / (1.0 + (b - theta).exp())))
                })
                .collect();
            rows.push(row);
            groups.push(if focal {
                Group::Focal
            } else {
                Group::Reference
            });
        }
        let responses = ResponseMatrix::from_rows(rows).unwrap();
        let dif = mantel_haenszel(&responses, &groups).unwrap();
        assert_eq!(dif[0].category, EtsCategory::C, "{:?}", dif[0]);
        assert!(dif[0].d_dif < -1.5, "{:?}", dif[0]);
        let null_a = dif[1..]
            .iter()
            .filter(|d| d.category == EtsCategory::A)
            .count();
        assert!(null_a >= 18, "{null_a} of 19 null items in A: {dif:#?}");
    }
}

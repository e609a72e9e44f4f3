//! Classical test theory: item and test statistics, distractor analysis.
//!
//! Missing-response rule (responses coded as in [`crate::irt::ResponseMatrix`]):
//! * **Total scores, alpha, SEM, point-biserials and alpha-if-deleted** treat a missing
//!   response as incorrect (0): a person's total = number correct among answered items.
//! * **p-values** exclude missing responses: proportion correct among the persons who
//!   answered the item. The point-biserial and corrected item–total correlation are
//!   computed over the persons who answered the item (their totals still count missing
//!   as 0).
//! * **Upper–lower discrimination index** D = p(upper 27%) − p(lower 27%), each p among
//!   the group's respondents to the item. Groups: persons sorted by total score (ties
//!   broken by input order, stable), lower = first ⌊0.27·N + 0.5⌋, upper = last as many.
//!
//! Variances use the n − 1 denominator; alpha = k/(k − 1)·(1 − Σ var(itemᵢ)/var(total))
//! (= KR-20 for 0/1 items). SEM = sd(total)·√(1 − alpha). Quartiles and the median use
//! linear interpolation between order statistics (R's default, type 7). Statistics that
//! are undefined (e.g. a correlation with a constant) are NaN, serialised as `null`.

use serde::Serialize;

use crate::irt::{MISSING, ResponseMatrix};

/// Classical statistics of one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CttItem {
    pub item: String,
    pub n_responses: usize,
    pub n_missing: usize,
    pub p_value: f64,
    pub point_biserial: f64,
    pub corrected_item_total: f64,
    pub discrimination_index: f64,
    pub alpha_if_deleted: f64,
}

/// Summary of a score distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreSummary {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

/// Classical analysis of a whole test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CttReport {
    pub n_persons: usize,
    pub n_items: usize,
    pub items: Vec<CttItem>,
    /// Cronbach's alpha (KR-20).
    pub alpha: f64,
    /// Standard error of measurement, sd·√(1 − alpha).
    pub sem: f64,
    pub scores: ScoreSummary,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance (n − 1).
fn var(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// Sample covariance (n − 1 denominator); NaN if n < 2 or the lengths differ.
pub fn covariance(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 || n != y.len() {
        return f64::NAN;
    }
    let (mx, my) = (mean(x), mean(y));
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - mx) * (b - my))
        .sum::<f64>()
        / (n as f64 - 1.0)
}

/// Pearson correlation (NaN if either side is constant or n < 2).
pub fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 || n != y.len() {
        return f64::NAN;
    }
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Quantile with linear interpolation (type 7) of sorted data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Summary statistics of scores (sd with n − 1; quartiles type 7).
pub fn summarize(scores: &[f64]) -> ScoreSummary {
    let mut s = scores.to_vec();
    s.sort_by(f64::total_cmp);
    ScoreSummary {
        n: s.len(),
        mean: if s.is_empty() { f64::NAN } else { mean(&s) },
        sd: if s.len() < 2 {
            f64::NAN
        } else {
            var(&s).sqrt()
        },
        min: s.first().copied().unwrap_or(f64::NAN),
        max: s.last().copied().unwrap_or(f64::NAN),
        median: quantile(&s, 0.5),
        q1: quantile(&s, 0.25),
        q3: quantile(&s, 0.75),
    }
}

/// Cronbach's alpha of the (persons × items) 0/1 scores, missing = 0.
fn alpha_of(cols: &[Vec<f64>], skip: Option<usize>) -> f64 {
    let used: Vec<&Vec<f64>> = cols
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, c)| c)
        .collect();
    let k = used.len() as f64;
    if k < 2.0 {
        return f64::NAN;
    }
    let n = used[0].len();
    let totals: Vec<f64> = (0..n).map(|p| used.iter().map(|c| c[p]).sum()).collect();
    let vt = var(&totals);
    if vt.is_nan() || vt <= 0.0 {
        return f64::NAN;
    }
    let sum_vi: f64 = used.iter().map(|c| var(c)).sum();
    k / (k - 1.0) * (1.0 - sum_vi / vt)
}

/// Indices of the lower and upper 27% groups by total (stable ties by input order).
pub fn ability_groups(totals: &[f64]) -> (Vec<usize>, Vec<usize>) {
    let n = totals.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| totals[a].total_cmp(&totals[b]));
    let g = (0.27 * n as f64 + 0.5).floor() as usize;
    (order[..g].to_vec(), order[n - g..].to_vec())
}

/// Classical item and test analysis (see the module docs for the missing rule).
pub fn analyze(data: &ResponseMatrix) -> CttReport {
    let (n, k) = (data.n_persons, data.n_items);
    let cols: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..n)
                .map(|p| match data.data[p * k + i] {
                    1 => 1.0,
                    _ => 0.0,
                })
                .collect()
        })
        .collect();
    let totals: Vec<f64> = (0..n).map(|p| cols.iter().map(|c| c[p]).sum()).collect();
    let (lower, upper) = ability_groups(&totals);
    let group_p = |group: &[usize], i: usize| {
        let (mut r, mut a) = (0usize, 0usize);
        for &p in group {
            let v = data.data[p * k + i];
            if v != MISSING {
                a += 1;
                r += v as usize;
            }
        }
        if a == 0 {
            f64::NAN
        } else {
            r as f64 / a as f64
        }
    };
    let items = (0..k)
        .map(|i| {
            let answered: Vec<usize> = (0..n)
                .filter(|&p| data.data[p * k + i] != MISSING)
                .collect();
            let x: Vec<f64> = answered.iter().map(|&p| cols[i][p]).collect();
            let t: Vec<f64> = answered.iter().map(|&p| totals[p]).collect();
            let rest: Vec<f64> = answered.iter().map(|&p| totals[p] - cols[i][p]).collect();
            CttItem {
                item: data.item_ids[i].clone(),
                n_responses: answered.len(),
                n_missing: n - answered.len(),
                p_value: if x.is_empty() { f64::NAN } else { mean(&x) },
                point_biserial: correlation(&x, &t),
                corrected_item_total: correlation(&x, &rest),
                discrimination_index: group_p(&upper, i) - group_p(&lower, i),
                alpha_if_deleted: alpha_of(&cols, Some(i)),
            }
        })
        .collect();
    let alpha = alpha_of(&cols, None);
    let scores = summarize(&totals);
    CttReport {
        n_persons: n,
        n_items: k,
        items,
        alpha,
        sem: scores.sd * (1.0 - alpha).sqrt(),
        scores,
    }
}

/// Counts and proportions of one option.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptionStats {
    pub option: usize,
    pub is_key: bool,
    pub count: usize,
    /// Among all persons who answered the item.
    pub proportion: f64,
    /// Proportions within the lower 27% / middle / upper 27% (among each group's
    /// respondents to the item; NaN for a group with no respondent).
    pub lower: f64,
    pub middle: f64,
    pub upper: f64,
}

/// Distractor analysis of one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistractorItem {
    pub item: usize,
    pub key: usize,
    pub n_responses: usize,
    pub n_missing: usize,
    pub options: Vec<OptionStats>,
}

/// Distractor analysis. `choices[p][i]` = option chosen by person p on item i (`None` =
/// no answer), `key[i]` = correct option, `n_options[i]` = number of options. Ability
/// groups use the number-correct total (no answer = incorrect) as in [`analyze`].
pub fn distractor_analysis(
    choices: &[Vec<Option<usize>>],
    key: &[usize],
    n_options: &[usize],
) -> Result<Vec<DistractorItem>, String> {
    let k = key.len();
    if n_options.len() != k {
        return Err(format!("{} keys but {} option counts", k, n_options.len()));
    }
    for (i, (&kk, &no)) in key.iter().zip(n_options).enumerate() {
        if kk >= no {
            return Err(format!("item {i}: key {kk} out of range ({no} options)"));
        }
    }
    for (p, row) in choices.iter().enumerate() {
        if row.len() != k {
            return Err(format!("person {p}: {} answers for {k} items", row.len()));
        }
        for (i, c) in row.iter().enumerate() {
            if let Some(c) = c
                && *c >= n_options[i]
            {
                return Err(format!("person {p}, item {i}: option {c} out of range"));
            }
        }
    }
    let totals: Vec<f64> = choices
        .iter()
        .map(|row| {
            row.iter()
                .zip(key)
                .filter(|(c, k)| **c == Some(**k))
                .count() as f64
        })
        .collect();
    let (lower, upper) = ability_groups(&totals);
    let mut group = vec![1u8; choices.len()]; // 0 lower, 1 middle, 2 upper
    for &p in &lower {
        group[p] = 0;
    }
    for &p in &upper {
        group[p] = 2;
    }
    Ok((0..k)
        .map(|i| {
            let no = n_options[i];
            let mut counts = vec![[0usize; 3]; no];
            let mut answered = [0usize; 3];
            let mut missing = 0;
            for (p, row) in choices.iter().enumerate() {
                match row[i] {
                    Some(c) => {
                        counts[c][group[p] as usize] += 1;
                        answered[group[p] as usize] += 1;
                    }
                    None => missing += 1,
                }
            }
            let total: usize = answered.iter().sum();
            let prop = |c: usize, d: usize| {
                if d == 0 {
                    f64::NAN
                } else {
                    c as f64 / d as f64
                }
            };
            DistractorItem {
                item: i,
                key: key[i],
                n_responses: total,
                n_missing: missing,
                options: counts
                    .iter()
                    .enumerate()
                    .map(|(o, c)| {
                        let count = c.iter().sum();
                        OptionStats {
                            option: o,
                            is_key: o == key[i],
                            count,
                            proportion: prop(count, total),
                            lower: prop(c[0], answered[0]),
                            middle: prop(c[1], answered[1]),
                            upper: prop(c[2], answered[2]),
                        }
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[&[u8]]) -> ResponseMatrix {
        ResponseMatrix::from_rows(
            rows.iter()
                .map(|r| {
                    r.iter()
                        .map(|&v| if v == 9 { None } else { Some(v) })
                        .collect()
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn hand_computed_statistics() {
        // 4 persons × 3 items; totals 3, 2, 1, 0.
        let d = m(&[&[1, 1, 1], &[1, 1, 0], &[1, 0, 0], &[0, 0, 0]]);
        let r = analyze(&d);
        // item variances (n−1): 0.25, 1/3, 0.25; total var = 5/3.
        // alpha = 3/2 · (1 − (0.25 + 1/3 + 0.25)/(5/3)) = 1.5 · 0.5 = 0.75
        assert!((r.alpha - 0.75).abs() < 1e-12, "{}", r.alpha);
        assert!((r.scores.mean - 1.5).abs() < 1e-12);
        assert!((r.scores.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((r.sem - (5.0f64 / 3.0).sqrt() * 0.5).abs() < 1e-12);
        assert_eq!(
            (r.scores.min, r.scores.max, r.scores.median),
            (0.0, 3.0, 1.5)
        );
        assert!((r.scores.q1 - 0.75).abs() < 1e-12 && (r.scores.q3 - 2.25).abs() < 1e-12);
        assert!((r.items[0].p_value - 0.75).abs() < 1e-12);
        // item 1 (x = 1,1,1,0) vs totals (3,2,1,0): r = 0.7745966692 (= √0.6)
        assert!((r.items[0].point_biserial - 0.6f64.sqrt()).abs() < 1e-9);
        // corrected: x vs rest (2,1,0,0): r = 0.5222329679
        assert!((r.items[0].corrected_item_total - 0.522_232_967_867_093_5).abs() < 1e-9);
        // groups: round(0.27·4) = 1 person each: lower = person 4, upper = person 1.
        assert!((r.items[0].discrimination_index - 1.0).abs() < 1e-12);
        assert!((r.items[1].discrimination_index - 1.0).abs() < 1e-12);
        // alpha without item 3: items (1,1,1,0),(1,1,0,0): vars 0.25, 1/3; totals 2,2,1,0 var 11/12.
        let a3 = 2.0 * (1.0 - (0.25 + 1.0 / 3.0) / (11.0 / 12.0));
        assert!((r.items[2].alpha_if_deleted - a3).abs() < 1e-12);
    }

    #[test]
    fn missing_rule() {
        // person 2 skipped item 1: excluded from its p-value, counted 0 in totals.
        let d = m(&[&[1, 1], &[9, 1], &[0, 0], &[1, 0]]);
        let r = analyze(&d);
        assert_eq!(r.items[0].n_missing, 1);
        assert!((r.items[0].p_value - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.scores.mean, 1.0); // totals 2, 1, 0, 1
    }

    #[test]
    fn distractors_by_group() {
        // 4 persons, 2 items, key = (0, 1); totals: 2, 1, 0, 1 → lower = p3, upper = p1.
        let choices = vec![
            vec![Some(0), Some(1)],
            vec![Some(0), Some(2)],
            vec![Some(2), None],
            vec![Some(1), Some(1)],
        ];
        let out = distractor_analysis(&choices, &[0, 1], &[3, 3]).unwrap();
        let o = &out[0].options;
        assert_eq!((o[0].count, o[1].count, o[2].count), (2, 1, 1));
        assert!(o[0].is_key && (o[0].proportion - 0.5).abs() < 1e-12);
        assert_eq!((o[0].upper, o[0].lower), (1.0, 0.0));
        assert_eq!(o[2].lower, 1.0);
        assert!((o[0].middle - 0.5).abs() < 1e-12);
        assert_eq!(out[1].n_missing, 1);
        assert!(distractor_analysis(&choices, &[0, 3], &[3, 3]).is_err());
    }
}

//! The report's DIF section (`?dif=COLUMN`): for a roster group column, each group is
//! compared with the reference group (the largest, unless one is named) item by item among
//! students of the same total score: Mantel–Haenszel (α, MH D-DIF, its SE, χ², p, ETS
//! A/B/C) and logistic regression (uniform and non-uniform likelihood-ratio tests,
//! Nagelkerke ΔR², Jodoin–Gierl class). Items in ETS category C are flagged in the item
//! table with the reason.
//!
//! Adaptive exams give students different items, so total scores are not comparable:
//! there students are matched on their final ability estimate θ instead
//! (`matching: "ability"`; [`examflow_engine::dif::dif_by_ability`], 10 strata for
//! Mantel–Haenszel, θ itself for the logistic regression), each item among the students
//! who answered it.

use std::collections::BTreeMap;

use examflow_engine::dif::{
    DeltaR2Category, EtsCategory, Group, LogisticDif, MhDif, dif_by_ability, logistic_regression,
    mantel_haenszel,
};
use examflow_engine::irt::{MISSING, ResponseMatrix};
use serde::Serialize;

use crate::ItemFlag;

/// Fewest students a group needs to be compared (Zwick 2012 suggests at least 100 per
/// group for MH; smaller groups are listed with the reason instead).
pub const MIN_GROUP_SIZE: usize = 30;

/// Mantel–Haenszel strata of θ when students are matched on ability.
pub const ABILITY_STRATA: usize = 10;

/// The DIF section of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifSection {
    /// The roster column the groups come from.
    pub column: String,
    pub reference: Option<String>,
    /// What students are matched on: `total_score`, or `ability` (θ) on adaptive exams.
    pub matching: &'static str,
    /// Students per group (matched on the total score: complete answers to every item;
    /// others are left out, as the total score of an incomplete set is not comparable;
    /// on ability: those with a θ), and those without a group.
    pub groups: BTreeMap<String, usize>,
    pub without_group: usize,
    /// Left out: unanswered items (total score), or no ability estimate (ability).
    pub incomplete: usize,
    pub comparisons: Vec<DifComparison>,
    /// Groups not compared, and why.
    pub skipped: Vec<String>,
}

/// One focal group against the reference group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifComparison {
    pub focal: String,
    pub reference: String,
    pub items: Vec<DifItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifItem {
    pub item: String,
    pub mantel_haenszel: MhDif,
    pub logistic: LogisticDif,
}

/// The students' 0/1 answers (`rows[s][i]`: `Some(right)`, `None` unanswered) with each
/// student's group (`None`: not on the roster or no group in the column); `reference`
/// names the reference group, else the largest is (ties: the first by name).
///
/// `theta`, one per row (NaN: none), matches students on ability instead of the total
/// score: for adaptive exams.
pub fn dif_section(
    column: &str,
    item_ids: &[String],
    rows: &[Vec<Option<bool>>],
    groups: &[Option<String>],
    reference: Option<&str>,
    theta: Option<&[f64]>,
) -> DifSection {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut without_group, mut incomplete) = (0, 0);
    let mut complete_rows = Vec::new();
    let mut complete_groups = Vec::new();
    let mut complete_theta = Vec::new();
    for (s, (row, group)) in rows.iter().zip(groups).enumerate() {
        let Some(group) = group else {
            without_group += 1;
            continue;
        };
        let t = theta.map(|t| t.get(s).copied().unwrap_or(f64::NAN));
        let left_out = match t {
            Some(t) => !t.is_finite() || row.iter().all(Option::is_none),
            None => row.iter().any(Option::is_none),
        };
        if left_out {
            incomplete += 1;
            continue;
        }
        *counts.entry(group.clone()).or_default() += 1;
        complete_rows.push(row);
        complete_groups.push(group.as_str());
        complete_theta.push(t.unwrap_or(f64::NAN));
    }
    let by_ability = theta.is_some();
    let nobody = if by_ability {
        "no student of the roster has an ability estimate"
    } else {
        "no student of the roster answered every item"
    };
    let mut section = DifSection {
        column: column.to_string(),
        reference: None,
        matching: if by_ability { "ability" } else { "total_score" },
        groups: counts.clone(),
        without_group,
        incomplete,
        comparisons: Vec::new(),
        skipped: Vec::new(),
    };
    let reference = match reference {
        Some(r) if counts.contains_key(r) => r.to_string(),
        Some(r) => {
            let what = if by_ability {
                "an ability estimate"
            } else {
                "answers to every item"
            };
            section
                .skipped
                .push(format!("reference group {r:?} has no student with {what}"));
            return section;
        }
        None => match counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) {
            Some((name, _)) => name.clone(),
            None => {
                section.skipped.push(nobody.into());
                return section;
            }
        },
    };
    section.reference = Some(reference.clone());
    if counts[&reference] < MIN_GROUP_SIZE {
        section.skipped.push(format!(
            "reference group {reference:?} has {} students; at least {MIN_GROUP_SIZE} are needed",
            counts[&reference]
        ));
        return section;
    }
    let data: Vec<u8> = complete_rows
        .iter()
        .flat_map(|row| row.iter().map(|v| v.map_or(MISSING, u8::from)))
        .collect();
    let persons = (1..=complete_rows.len()).map(|p| p.to_string()).collect();
    let matrix = match ResponseMatrix::new(item_ids.to_vec(), persons, data) {
        Ok(m) => m,
        Err(e) => {
            section
                .skipped
                .push(format!("the answers do not form a matrix: {e}"));
            return section;
        }
    };
    for (focal, &n) in &counts {
        if *focal == reference {
            continue;
        }
        if n < MIN_GROUP_SIZE {
            section.skipped.push(format!(
                "{focal:?} has {n} students; at least {MIN_GROUP_SIZE} are needed"
            ));
            continue;
        }
        let roles: Vec<Group> = complete_groups
            .iter()
            .map(|g| {
                if *g == focal {
                    Group::Focal
                } else if *g == reference {
                    Group::Reference
                } else {
                    Group::Other
                }
            })
            .collect();
        let results = if by_ability {
            dif_by_ability(&matrix, &roles, &complete_theta, ABILITY_STRATA).map(|d| {
                d.into_iter()
                    .map(|d| (d.mantel_haenszel, d.logistic))
                    .unzip()
            })
        } else {
            mantel_haenszel(&matrix, &roles)
                .and_then(|mh| Ok((mh, logistic_regression(&matrix, &roles)?)))
        };
        let (mh, lr): (Vec<MhDif>, Vec<LogisticDif>) = match results {
            Ok(r) => r,
            Err(e) => {
                section.skipped.push(format!("{focal:?}: {e}"));
                continue;
            }
        };
        section.comparisons.push(DifComparison {
            focal: focal.clone(),
            reference: reference.clone(),
            items: mh
                .into_iter()
                .zip(lr)
                .map(|(m, l)| DifItem {
                    item: m.item.clone(),
                    mantel_haenszel: m,
                    logistic: l,
                })
                .collect(),
        });
    }
    section
}

/// The flags the section adds to an item: ETS category C in any comparison (and a large
/// logistic-regression effect, Jodoin–Gierl C).
pub fn dif_flags(section: &DifSection, item: &str) -> Vec<ItemFlag> {
    let mut flags = Vec::new();
    for c in &section.comparisons {
        let Some(d) = c.items.iter().find(|d| d.item == item) else {
            continue;
        };
        if d.mantel_haenszel.category == EtsCategory::C
            || d.logistic.jodoin_gierl == DeltaR2Category::C
        {
            let harder = if d.mantel_haenszel.d_dif < 0.0 {
                &c.focal
            } else {
                &c.reference
            };
            flags.push(ItemFlag {
                flag: "dif",
                reason: format!(
                    "DIF by {}: {} vs {} (ETS {:?}, MH D-DIF {:.2}, ΔR² {:.3}): harder for \
                     {harder} students of the same {}; review its wording and content",
                    section.column,
                    c.focal,
                    c.reference,
                    d.mantel_haenszel.category,
                    d.mantel_haenszel.d_dif,
                    d.logistic.both.delta_r2,
                    if section.matching == "ability" {
                        "ability"
                    } else {
                        "total score"
                    }
                ),
            });
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use examflow_engine::irt::SplitMix64;

    use super::*;

    /// 12 items; students of campus "north" find item 0 one logit harder than "south"
    /// students of the same ability; "east" has too few students; some have no campus.
    type Answers = (Vec<String>, Vec<Vec<Option<bool>>>, Vec<Option<String>>);

    fn data() -> Answers {
        let mut rng = SplitMix64::new(3);
        let items: Vec<String> = (0..12).map(|i| format!("q{i}")).collect();
        let (mut rows, mut groups) = (Vec::new(), Vec::new());
        for s in 0..2500 {
            let group = match s % 100 {
                0 => Some("east"),
                1 | 51 => None,
                n if n % 2 == 0 => Some("south"),
                _ => Some("north"),
            };
            let theta = rng.normal();
            let row = (0..12)
                .map(|i| {
                    let shift = if i == 0 && group == Some("north") {
                        1.0
                    } else {
                        0.0
                    };
                    let b = -1.5 + 3.0 * i as f64 / 11.0 + shift;
                    Some(rng.uniform() < 1.0 / (1.0 + (b - theta).exp()))
                })
                .collect();
            rows.push(row);
            groups.push(group.map(str::to_string));
        }
        (items, rows, groups)
    }

    #[test]
    fn the_planted_item_is_flagged_and_small_groups_are_skipped() {
        let (items, rows, groups) = data();
        let section = dif_section("campus", &items, &rows, &groups, None, None);
        assert_eq!(
            section.reference.as_deref(),
            Some("south"),
            "the largest group"
        );
        assert_eq!(section.groups["east"], 25);
        assert_eq!(section.without_group, 50);
        assert_eq!(section.comparisons.len(), 1, "{:?}", section.skipped);
        assert!(
            section.skipped[0].contains("\"east\" has 25"),
            "{:?}",
            section.skipped
        );
        let c = &section.comparisons[0];
        assert_eq!((c.focal.as_str(), c.reference.as_str()), ("north", "south"));
        assert_eq!(c.items[0].mantel_haenszel.category, EtsCategory::C);
        assert!(c.items[0].mantel_haenszel.d_dif < -1.5);
        let flags = dif_flags(&section, "q0");
        assert_eq!(flags.len(), 1);
        assert!(
            flags[0].reason.contains("harder for north"),
            "{}",
            flags[0].reason
        );
        let flagged = items[1..]
            .iter()
            .filter(|i| !dif_flags(&section, i).is_empty())
            .count();
        assert_eq!(flagged, 0, "null items flagged");
    }

    #[test]
    fn a_named_reference_and_incomplete_answers() {
        let (items, mut rows, groups) = data();
        rows[2][3] = None;
        let section = dif_section("campus", &items, &rows, &groups, Some("north"), None);
        assert_eq!(section.reference.as_deref(), Some("north"));
        assert_eq!(section.incomplete, 1);
        let south = &section.comparisons[0];
        assert_eq!(south.focal, "south");
        // Seen from this side, the item is easier for the focal group.
        assert!(south.items[0].mantel_haenszel.d_dif > 1.5);
        assert!(
            dif_flags(&section, "q0")[0]
                .reason
                .contains("harder for north")
        );
        let none = dif_section("campus", &items, &rows, &groups, Some("west"), None);
        assert!(none.comparisons.is_empty() && none.skipped[0].contains("west"));
    }

    /// Adaptive answers: each student answers about half the items, so nobody has a total
    /// score to match on; matched on θ, the planted item is found and no other, although
    /// "north" is also less able.
    #[test]
    fn adaptive_answers_are_matched_on_ability() {
        let mut rng = SplitMix64::new(17);
        let items: Vec<String> = (0..12).map(|i| format!("q{i}")).collect();
        let (mut rows, mut groups, mut theta) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..3000 {
            let north = s % 2 == 1;
            let t = rng.normal() - if north { 0.5 } else { 0.0 };
            let row: Vec<Option<bool>> = (0..12)
                .map(|i| {
                    if i > 0 && rng.uniform() < 0.5 {
                        return None;
                    }
                    let b = -1.5 + 3.0 * i as f64 / 11.0 + if i == 0 && north { 1.0 } else { 0.0 };
                    Some(rng.uniform() < 1.0 / (1.0 + (b - t).exp()))
                })
                .collect();
            rows.push(row);
            groups.push(Some(if north { "north" } else { "south" }.to_string()));
            // An estimate, not the truth; one student has none.
            theta.push(if s == 7 {
                f64::NAN
            } else {
                t + 0.3 * rng.normal()
            });
        }
        let by_score = dif_section("campus", &items, &rows, &groups, None, None);
        // Matched on the total score, almost everyone is left out (a handful answered
        // all twelve by chance) and nothing can be compared.
        assert!(by_score.comparisons.is_empty(), "{:?}", by_score.skipped);
        assert!(by_score.incomplete > 2950, "{}", by_score.incomplete);
        let section = dif_section("campus", &items, &rows, &groups, None, Some(&theta));
        assert_eq!(section.matching, "ability");
        assert_eq!(section.incomplete, 1);
        assert_eq!(section.comparisons.len(), 1, "{:?}", section.skipped);
        let flags = dif_flags(&section, "q0");
        assert_eq!(flags.len(), 1, "{:?}", section.comparisons[0].items[0]);
        assert!(
            flags[0]
                .reason
                .contains("harder for north students of the same ability"),
            "{}",
            flags[0].reason
        );
        let flagged: Vec<&String> = items[1..]
            .iter()
            .filter(|i| !dif_flags(&section, i).is_empty())
            .collect();
        assert!(flagged.is_empty(), "null items flagged: {flagged:?}");
    }
}

//! `examflow dif RESPONSES.csv --groups GROUPS.csv --focal F --reference R`: DIF of every
//! item between two groups of students: Mantel–Haenszel with the ETS A/B/C category, and
//! logistic regression (uniform and non-uniform likelihood-ratio tests, Nagelkerke ΔR²
//! with the Jodoin–Gierl class), both matched on the total score as difR does, or with
//! `--theta THETA.csv` on ability estimates (adaptive data, where students answered
//! different items).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use examflow_engine::dif::{
    DeltaR2Category, EtsCategory, Group, LogisticDif, MhDif, dif_by_ability, logistic_regression,
    mantel_haenszel,
};
use serde_json::json;

use crate::calibrate_cmd::{read_input, read_responses};
use crate::error::ApiError;
use crate::link_cmd::ReportFormat;

#[derive(clap::Args)]
pub struct DifArgs {
    /// Response CSV as for `examflow calibrate`, with a first column `person` (or `id`).
    pub responses: PathBuf,
    /// A CSV with a header: the person id in the first column (matching the responses'
    /// `person` column), the group in the second.
    #[arg(long)]
    pub groups: PathBuf,
    /// The focal group's label (the group the check protects).
    #[arg(long)]
    pub focal: String,
    /// The reference group's label.
    #[arg(long)]
    pub reference: String,
    /// Match students on ability instead of the total score: a CSV with a header, the
    /// person id in the first column and θ in the second (e.g. the final θ of adaptive
    /// sessions). Each item is then compared among the students who answered it, so
    /// missing answers are allowed.
    #[arg(long)]
    pub theta: Option<PathBuf>,
    /// Ability strata for Mantel–Haenszel with `--theta` (equal-size bands of θ).
    #[arg(long, default_value_t = 10)]
    pub strata: usize,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}

/// person id → θ, from the `--theta` CSV (a finite number in the second column).
fn read_theta(path: &Path) -> Result<HashMap<String, f64>, ApiError> {
    let mut theta = HashMap::new();
    for (person, (line, value)) in read_pairs(path)? {
        let t: f64 = value
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| ApiError::Input {
                path: path.to_path_buf(),
                line,
                column: 2,
                message: format!("θ {value:?} of person {person:?} is not a finite number"),
            })?;
        theta.insert(person, t);
    }
    Ok(theta)
}

/// person id → group label, from the groups CSV.
fn read_groups(path: &Path) -> Result<HashMap<String, String>, ApiError> {
    Ok(read_pairs(path)?
        .into_iter()
        .map(|(person, (_, group))| (person, group))
        .collect())
}

/// person id → (line, second column) of a two-column CSV with a header; a person listed
/// twice is an error.
fn read_pairs(path: &Path) -> Result<HashMap<String, (u64, String)>, ApiError> {
    let bytes = read_input(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut groups = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| ApiError::Input {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            column: 1,
            message: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let (Some(person), Some(group)) = (record.get(0), record.get(1)) else {
            return Err(ApiError::Input {
                path: path.to_path_buf(),
                line,
                column: 1,
                message: "a row needs a person id and a group".into(),
            });
        };
        if groups
            .insert(person.to_string(), (line, group.to_string()))
            .is_some()
        {
            return Err(ApiError::Input {
                path: path.to_path_buf(),
                line,
                column: 1,
                message: format!("person {person:?} is listed twice"),
            });
        }
    }
    Ok(groups)
}

pub fn run(args: &DifArgs) -> Result<String, ApiError> {
    if args.focal == args.reference {
        return Err(ApiError::Invalid(
            "--focal and --reference must name two different groups".into(),
        ));
    }
    let responses = read_responses(&args.responses)?;
    let labels = read_groups(&args.groups)?;
    let groups: Vec<Group> = responses
        .person_ids
        .iter()
        .map(|person| match labels.get(person) {
            Some(g) if *g == args.focal => Group::Focal,
            Some(g) if *g == args.reference => Group::Reference,
            _ => Group::Other,
        })
        .collect();
    let count = |which: Group| groups.iter().filter(|g| **g == which).count();
    let (focal, reference) = (count(Group::Focal), count(Group::Reference));
    let explain = |e: examflow_engine::irt::IrtError| {
        ApiError::Invalid(format!(
            "{e} (focal {:?}: {focal} persons, reference {:?}: {reference} persons matched in {})",
            args.focal,
            args.reference,
            args.groups.display()
        ))
    };
    // The results, the JSON `matching` and the table's "matched on …".
    let (items, logistic, matching, matched_on): (Vec<MhDif>, Vec<LogisticDif>, _, _) =
        match &args.theta {
            Some(path) => {
                let known = read_theta(path)?;
                let theta: Vec<f64> = responses
                    .person_ids
                    .iter()
                    .map(|person| known.get(person).copied().unwrap_or(f64::NAN))
                    .collect();
                let (items, logistic) = dif_by_ability(&responses, &groups, &theta, args.strata)
                    .map_err(explain)?
                    .into_iter()
                    .map(|d| (d.mantel_haenszel, d.logistic))
                    .unzip();
                let described = format!(
                    "ability (θ from {}, {} strata)",
                    path.display(),
                    args.strata
                );
                (items, logistic, "ability", described)
            }
            None => (
                mantel_haenszel(&responses, &groups).map_err(explain)?,
                logistic_regression(&responses, &groups).map_err(explain)?,
                "total_score",
                "total score".to_string(),
            ),
        };
    Ok(match args.format {
        ReportFormat::Json => {
            let value = json!({
                "method": "mantel_haenszel",
                "matching": matching,
                "focal": {"group": args.focal, "persons": focal},
                "reference": {"group": args.reference, "persons": reference},
                "items": items,
                "logistic_regression": logistic,
            });
            format!("{value:#}\n")
        }
        ReportFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "Mantel-Haenszel DIF, focal {:?} ({focal} persons) vs reference {:?} \
                 ({reference} persons), matched on {matched_on}\n",
                args.focal, args.reference
            );
            let width = items
                .iter()
                .map(|d| d.item.chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            let _ = writeln!(
                out,
                "{:<width$}  {:>8}  {:>8}  {:>6}  {:>8}  {:>8}  ETS",
                "item", "alpha", "D-DIF", "SE", "chi2", "p"
            );
            for d in &items {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>8.3}  {:>8.3}  {:>6.3}  {:>8.3}  {:>8.4}  {}",
                    d.item,
                    d.alpha,
                    d.d_dif,
                    d.se,
                    d.chi_square,
                    d.p_value,
                    match d.category {
                        EtsCategory::A => "A",
                        EtsCategory::B => "B",
                        EtsCategory::C => "C: review",
                    }
                );
            }
            let _ = writeln!(
                out,
                "\nLogistic regression DIF (likelihood-ratio tests; Nagelkerke ΔR² of score + \
                 group + score×group over score alone, Jodoin-Gierl class)\n"
            );
            let _ = writeln!(
                out,
                "{:<width$}  {:>9}  {:>8}  {:>9}  {:>8}  {:>9}  {:>8}  {:>7}  JG",
                "item", "uniform", "p", "nonunif.", "p", "both", "p", "ΔR²"
            );
            for d in &logistic {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>9.3}  {:>8.4}  {:>9.3}  {:>8.4}  {:>9.3}  {:>8.4}  {:>7.4}  {}",
                    d.item,
                    d.uniform.chi_square,
                    d.uniform.p_value,
                    d.non_uniform.chi_square,
                    d.non_uniform.p_value,
                    d.both.chi_square,
                    d.both.p_value,
                    d.both.delta_r2,
                    match d.jodoin_gierl {
                        DeltaR2Category::A => "A",
                        DeltaR2Category::B => "B",
                        DeltaR2Category::C => "C: review",
                    }
                );
            }
            out
        }
    })
}

//! `examflow link --from OLD.csv --to NEW.csv`: the constants that put a new calibration
//! on the scale of an old one, through the items they share, and each anchor's drift.

use std::fmt::Write as _;
use std::path::PathBuf;

use examflow_engine::irt::{ItemParams, LinkingMethod, LinkingOptions, link};
use serde_json::json;

use crate::error::ApiError;
use crate::simulate_cmd::read_bank;

/// Output of the commands that print one report: `json` or a `table` for people.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Table,
}

#[derive(clap::Args)]
pub struct LinkArgs {
    /// The old calibration, whose scale is kept: item parameters as `examflow calibrate
    /// --format csv` writes them (item,a,b,c; rows with estimable=false are skipped), or
    /// JSON `[{"item", "a", "b", "c"}]`.
    #[arg(long = "from")]
    pub old: PathBuf,
    /// The new calibration, put on the old one's scale (same formats).
    #[arg(long = "to")]
    pub new: PathBuf,
    /// stocking-lord, haebara, mean-mean or mean-sigma.
    #[arg(long, default_value = "stocking-lord")]
    pub method: String,
    /// Anchors whose drift (area between their old and linked new curves, weighted by
    /// N(0, 1)) exceeds this are left out of the constants.
    #[arg(long, default_value_t = 0.05)]
    pub drift_threshold: f64,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}

fn items(path: &std::path::Path) -> Result<Vec<ItemParams>, ApiError> {
    Ok(read_bank(path)?
        .items()
        .iter()
        .map(|item| item.params.clone())
        .collect())
}

pub fn run(args: &LinkArgs) -> Result<String, ApiError> {
    let method = LinkingMethod::parse(&args.method).ok_or_else(|| {
        ApiError::Invalid(format!(
            "--method {:?}: expected stocking-lord, haebara, mean-mean or mean-sigma",
            args.method
        ))
    })?;
    let (old, new) = (items(&args.old)?, items(&args.new)?);
    let options = LinkingOptions {
        method,
        drift_threshold: args.drift_threshold,
        ..LinkingOptions::default()
    };
    let linking = link(&old, &new, &options).map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(match args.format {
        ReportFormat::Json => {
            let mut value = serde_json::to_value(&linking)
                .map_err(|e| ApiError::Invalid(format!("encoding the linking: {e}")))?;
            value["from"] = json!(args.old.display().to_string());
            value["to"] = json!(args.new.display().to_string());
            value["drift_threshold"] = json!(args.drift_threshold);
            format!("{value:#}\n")
        }
        ReportFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{} linking of {} onto the scale of {}: theta_old = A * theta_new + B",
                method.as_str(),
                args.new.display(),
                args.old.display()
            );
            let _ = writeln!(out, "A = {:.6}", linking.a);
            let _ = writeln!(out, "B = {:.6}", linking.b);
            let excluded = linking.drift.iter().filter(|d| d.excluded).count();
            let _ = writeln!(
                out,
                "anchors: {} of {} common items ({} left out for drift above {})\n",
                linking.anchors.len(),
                linking.drift.len(),
                excluded,
                args.drift_threshold
            );
            let width = linking
                .drift
                .iter()
                .map(|d| d.item.chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            let _ = writeln!(out, "{:<width$}  {:>8}  anchor", "item", "drift");
            for d in &linking.drift {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>8.4}  {}",
                    d.item,
                    d.area,
                    if d.excluded { "no: drifted" } else { "yes" }
                );
            }
            out
        }
    })
}

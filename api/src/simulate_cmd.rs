//! `examflow simulate-cat`: the standard CAT evaluation for educators and data scientists
//! (bias, RMSE, test length, exposure, overlap), as catR's simulations report it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use examflow_engine::cat::{
    CatBank, CatConfig, CatItem, ShOptions, ThetaDistribution, calibrate_sympson_hetter, simulate,
};
use examflow_engine::irt::ItemParams;
use serde_json::{Value, json};

use crate::calibrate_cmd::{OutputFormat, read_input};
use crate::error::ApiError;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Item parameters: CSV as `examflow calibrate --format csv` writes it (columns
    /// item,a,b,c; optional topic; rows with estimable=false are skipped) or JSON
    /// `[{"item", "a", "b", "c", "topic"}]`.
    #[arg(long)]
    pub bank: PathBuf,
    /// Number of simulated examinees.
    #[arg(long, default_value_t = 1000)]
    pub examinees: usize,
    /// Selection rule: mfi, kl, klp, mpwi, b_matching, random.
    #[arg(long, default_value = "mfi")]
    pub rule: String,
    /// Ability estimator during the test: eap, map, mle, wle.
    #[arg(long, default_value = "eap")]
    pub estimator: String,
    /// Exposure control: none, randomesque:K, progressive[:ACCELERATION],
    /// sympson-hetter:RMAX (exposure parameters set by a prior simulation).
    #[arg(long, default_value = "none")]
    pub exposure: String,
    /// Stopping rule, comma-separated: se:0.3, max:30, min:5, fixed:20, cut:0.5 (CI
    /// classification), sprt:0.5 (SPRT classification).
    #[arg(long, default_value = "se:0.3,max:30")]
    pub stop: String,
    /// True ability distribution: normal:MEAN,SD.
    #[arg(long, default_value = "normal:0,1")]
    pub theta: String,
    /// Random seed (same seed, same report).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Invalid(message.into())
}

/// Reads a bank of item parameters (CSV or JSON, by content).
pub fn read_bank(path: &Path) -> Result<CatBank, ApiError> {
    let bytes = read_input(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid(format!("{}: not UTF-8", path.display())))?;
    let items = if text.trim_start().starts_with('[') {
        let rows: Vec<Value> = serde_json::from_str(text).map_err(|e| ApiError::Input {
            path: path.to_path_buf(),
            line: e.line() as u64,
            column: e.column(),
            message: e.to_string(),
        })?;
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let num = |k: &str| r.get(k).and_then(Value::as_f64);
                let item = r.get("item").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!(
                        "{}: entry {i} has no \"item\" string",
                        path.display()
                    ))
                })?;
                let (a, b) = num("a").zip(num("b")).ok_or_else(|| {
                    invalid(format!(
                        "{}: entry {i} ({item}) needs numbers \"a\" and \"b\"",
                        path.display()
                    ))
                })?;
                let mut cat = CatItem::new(ItemParams::new(item, a, b, num("c").unwrap_or(0.0)));
                if let Some(t) = r.get("topic").and_then(Value::as_str) {
                    cat = cat.with_topic(t);
                }
                Ok(cat)
            })
            .collect::<Result<Vec<_>, ApiError>>()?
    } else {
        read_csv_bank(path, text)?
    };
    CatBank::new(items).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

fn read_csv_bank(path: &Path, text: &str) -> Result<Vec<CatItem>, ApiError> {
    let at = |line: u64, column: usize, message: String| ApiError::Input {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| at(1, 1, e.to_string()))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(item_col), Some(a_col), Some(b_col)) = (column("item"), column("a"), column("b"))
    else {
        return Err(at(
            1,
            1,
            "the header needs columns item, a and b (c and topic are optional)".into(),
        ));
    };
    let (c_col, topic_col, estimable_col) = (column("c"), column("topic"), column("estimable"));
    let mut items = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| at(e.position().map_or(0, |p| p.line()), 1, e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if estimable_col.and_then(|i| record.get(i)) == Some("false") {
            continue;
        }
        let number = |col: usize, name: &str| -> Result<f64, ApiError> {
            let cell = record.get(col).unwrap_or("");
            cell.parse::<f64>()
                .map_err(|_| at(line, col + 1, format!("{name} {cell:?} is not a number")))
        };
        let a = number(a_col, "a")?;
        let b = number(b_col, "b")?;
        let c = match c_col.and_then(|i| record.get(i)) {
            None | Some("") => 0.0,
            Some(_) => number(c_col.unwrap_or_default(), "c")?,
        };
        let mut cat = CatItem::new(ItemParams::new(record.get(item_col).unwrap_or(""), a, b, c));
        if let Some(topic) = topic_col
            .and_then(|i| record.get(i))
            .filter(|t| !t.is_empty())
        {
            cat = cat.with_topic(topic);
        }
        items.push(cat);
    }
    Ok(items)
}

/// Builds the CAT configuration from the command-line spellings.
pub fn config_from_args(args: &SimulateArgs) -> Result<(CatConfig, Option<f64>), ApiError> {
    let mut stop = json!({"min_length": 1, "max_length": 30});
    for part in args
        .stop
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (key, value) = part.split_once(':').ok_or_else(|| {
            invalid(format!(
                "--stop: {part:?} should look like se:0.3 or max:30"
            ))
        })?;
        let number: f64 = value
            .parse()
            .map_err(|_| invalid(format!("--stop: {value:?} in {part:?} is not a number")))?;
        match key {
            "se" => stop["se"] = json!(number),
            "max" => stop["max_length"] = json!(number as usize),
            "min" => stop["min_length"] = json!(number as usize),
            "fixed" => {
                stop["min_length"] = json!(number as usize);
                stop["max_length"] = json!(number as usize);
            }
            "cut" => stop["classification"] = json!({"cut": number, "method": "ci"}),
            "sprt" => stop["classification"] = json!({"cut": number, "method": "sprt"}),
            other => {
                return Err(invalid(format!(
                    "--stop: unknown part {other:?}; use se, max, min, fixed, cut or sprt"
                )));
            }
        }
    }
    let (kind, parameter) = match args.exposure.split_once(':') {
        Some((k, p)) => (k, Some(p)),
        None => (args.exposure.as_str(), None),
    };
    let number = |p: Option<&str>, default: f64| -> Result<f64, ApiError> {
        p.map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| invalid(format!("--exposure: {v:?} is not a number")))
        })
    };
    let mut sympson_hetter_rmax = None;
    let exposure = match kind {
        "none" => json!({"method": "none"}),
        "randomesque" => json!({"method": "randomesque", "k": number(parameter, 5.0)? as usize}),
        "progressive" => json!({"method": "progressive", "acceleration": number(parameter, 1.0)?}),
        "sympson-hetter" | "sympson_hetter" => {
            sympson_hetter_rmax = Some(number(parameter, 0.25)?);
            json!({"method": "none"})
        }
        other => {
            return Err(invalid(format!(
                "--exposure: unknown method {other:?}; use none, randomesque:K, progressive[:A] or sympson-hetter:RMAX"
            )));
        }
    };
    let config = json!({
        "rule": args.rule.replace('-', "_"),
        "estimator": args.estimator,
        "exposure": exposure,
        "stop": stop,
    });
    let config: CatConfig =
        serde_json::from_value(config).map_err(|e| invalid(format!("CAT settings: {e}")))?;
    config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok((config, sympson_hetter_rmax))
}

fn theta_distribution(spec: &str) -> Result<ThetaDistribution, ApiError> {
    let bad = || invalid(format!("--theta: {spec:?} should look like normal:0,1"));
    let (kind, params) = spec.split_once(':').ok_or_else(bad)?;
    let (mean, sd) = params.split_once(',').ok_or_else(bad)?;
    match kind {
        "normal" => Ok(ThetaDistribution::Normal {
            mean: mean.trim().parse().map_err(|_| bad())?,
            sd: sd.trim().parse().map_err(|_| bad())?,
        }),
        _ => Err(bad()),
    }
}

pub fn run(args: &SimulateArgs) -> Result<String, ApiError> {
    let bank = read_bank(&args.bank)?;
    let (mut config, sympson_hetter_rmax) = config_from_args(args)?;
    let distribution = theta_distribution(&args.theta)?;
    let engine_error = |e: examflow_engine::cat::CatError| invalid(e.to_string());
    let mut sympson_hetter = None;
    if let Some(r_max) = sympson_hetter_rmax {
        let options: ShOptions =
            serde_json::from_value(json!({"r_max": r_max})).map_err(|e| invalid(e.to_string()))?;
        let sh =
            calibrate_sympson_hetter(&bank, &config, &options, &distribution, args.seed ^ 0x5348)
                .map_err(engine_error)?;
        config.exposure =
            serde_json::from_value(json!({"method": "sympson_hetter", "k_params": sh.k_params}))
                .map_err(|e| invalid(e.to_string()))?;
        sympson_hetter = Some(sh);
    }
    let report =
        simulate(&bank, &config, args.examinees, &distribution, args.seed).map_err(engine_error)?;
    Ok(match args.format {
        OutputFormat::Json => {
            let mut out = serde_json::to_value(&report).unwrap_or_default();
            out["config"] = serde_json::to_value(&config).unwrap_or_default();
            if let Some(sh) = &sympson_hetter {
                out["sympson_hetter"] = serde_json::to_value(sh).unwrap_or_default();
            }
            out.to_string() + "\n"
        }
        OutputFormat::Csv => {
            let mut out = String::from("item,exposure_rate\n");
            for exposure in &report.exposure_rates {
                let _ = writeln!(out, "{},{}", exposure.item, exposure.rate);
            }
            out
        }
        OutputFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "CAT simulation: {} examinees, {} items in the bank",
                report.n_examinees,
                bank.len()
            );
            let rows = [
                ("bias", format!("{:.4}", report.bias)),
                ("RMSE", format!("{:.4}", report.rmse)),
                ("mean |error|", format!("{:.4}", report.mean_abs_error)),
                ("mean SE", format!("{:.4}", report.mean_se)),
                (
                    "correlation θ, θ̂",
                    report.correlation.map_or("-".into(), |c| format!("{c:.4}")),
                ),
                (
                    "mean test length",
                    format!(
                        "{:.2} (sd {:.2}, {}–{})",
                        report.mean_length, report.sd_length, report.min_length, report.max_length
                    ),
                ),
                ("max exposure", format!("{:.4}", report.max_exposure)),
                (
                    "unused items",
                    format!("{:.1}%", 100.0 * report.unused_share),
                ),
                ("test overlap", format!("{:.4}", report.overlap)),
                ("exposure χ²", format!("{:.2}", report.exposure_chi2)),
                ("stop reasons", format!("{:?}", report.stop_reasons)),
            ];
            for (k, v) in rows {
                let _ = writeln!(out, "  {k:<20} {v}");
            }
            if let Some(acc) = report.classification_accuracy {
                let _ = writeln!(out, "  {:<20} {:.1}%", "correctly classified", 100.0 * acc);
            }
            out
        }
    })
}

//! `examflow calibrate RESPONSES.csv --model ...`: IRT calibration for data scientists.
//!
//! Input: a header row of item ids (an optional first column named `person` or `id`
//! holds person ids), then one row per person of `0`, `1` or empty (missing). Anything
//! else is an error naming the file, line and column.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use examflow_engine::irt::{
    Calibration, CalibrationOptions, FitOptions, MISSING, Model, ResponseMatrix, SeMethod, Theta,
    calibrate, eap_batch, fit_report, map, mle,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelArg {
    Rasch,
    #[value(name = "1pl")]
    OnePl,
    #[value(name = "2pl")]
    TwoPl,
    #[value(name = "3pl")]
    ThreePl,
}

impl From<ModelArg> for Model {
    fn from(m: ModelArg) -> Model {
        match m {
            ModelArg::Rasch => Model::Rasch,
            ModelArg::OnePl => Model::OnePl,
            ModelArg::TwoPl => Model::TwoPl,
            ModelArg::ThreePl => Model::ThreePl,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AbilityMethod {
    Eap,
    Map,
    Mle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Csv,
    Table,
}

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// Response CSV: header of item ids (optional first column `person` or `id`), rows of 0, 1 or empty.
    pub responses: PathBuf,
    /// IRT model.
    #[arg(long, value_enum, default_value = "2pl")]
    pub model: ModelArg,
    /// Also score every person's ability with this method.
    #[arg(long, value_enum)]
    pub abilities: Option<AbilityMethod>,
    /// Output format: json (one object), csv (item table; with --abilities a blank line
    /// and a person table follow), table (for people).
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Quadrature points (at least 41).
    #[arg(long, default_value_t = 61)]
    pub quadrature_points: usize,
    /// EM iteration cap.
    #[arg(long, default_value_t = 500)]
    pub max_iterations: usize,
    /// Also check item fit (S-X2; infit and outfit) and person fit (lz*) of the result.
    #[arg(long)]
    pub fit: bool,
    /// Standard errors: oakes (exact observed information, a few E-steps), xpd (cross-
    /// product approximation), sem (supplemented EM), none; auto: oakes up to 1000 free
    /// parameters, else per-item cross-products.
    #[arg(long, default_value = "auto", value_parser = parse_se_method)]
    pub se: SeMethod,
}

fn parse_se_method(name: &str) -> Result<SeMethod, String> {
    SeMethod::parse(name).map_err(|e| e.to_string())
}

/// A CSV problem at a place in the file.
fn at(path: &Path, line: u64, column: usize, message: impl Into<String>) -> ApiError {
    ApiError::Input {
        path: path.to_path_buf(),
        line,
        column,
        message: message.into(),
    }
}

/// Parses the response CSV with the rules in the module docs.
fn parse_responses(path: &Path, bytes: &[u8]) -> Result<ResponseMatrix, ApiError> {
    // Fields are trimmed of ASCII whitespace here, not by the reader: its `Trim::All`
    // rebuilds every record and took a third of reading a response file.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            return Err(at(
                path,
                1,
                1,
                "the file is empty (expected a header row of item ids)",
            ));
        }
        Some(Err(e)) => return Err(csv_error(path, &e)),
        Some(Ok(h)) => h,
    };
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f.trim_ascii())
                .map(|s| s.trim_start_matches('\u{feff}').to_string())
                .map_err(|_| at(path, 1, i + 1, "header is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let has_person = header
        .first()
        .is_some_and(|h| h.eq_ignore_ascii_case("person") || h.eq_ignore_ascii_case("id"));
    let first_item = usize::from(has_person);
    let item_ids: Vec<String> = header[first_item..].to_vec();
    if item_ids.is_empty() {
        return Err(at(path, 1, 1, "the header names no items"));
    }
    if let Some(i) = item_ids.iter().position(|h| h.is_empty()) {
        return Err(at(
            path,
            1,
            first_item + i + 1,
            "empty item id in the header",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(i) = item_ids.iter().position(|h| !seen.insert(h.as_str())) {
        return Err(at(
            path,
            1,
            first_item + i + 1,
            format!("duplicate item id {:?}", item_ids[i]),
        ));
    }
    let width = header.len();
    let mut data = Vec::new();
    let mut person_ids = Vec::new();
    for record in records {
        let record = record.map_err(|e| csv_error(path, &e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim_ascii().is_empty()) {
            continue; // blank line
        }
        if record.len() != width {
            return Err(at(
                path,
                line,
                record.len().min(width) + 1,
                format!(
                    "expected {width} fields like the header, found {}",
                    record.len()
                ),
            ));
        }
        if has_person {
            let id = String::from_utf8_lossy(record[0].trim_ascii()).into_owned();
            person_ids.push(id);
        } else {
            person_ids.push(format!("{}", person_ids.len() + 1));
        }
        for (i, field) in record.iter().enumerate().skip(first_item) {
            data.push(match field.trim_ascii() {
                b"" => MISSING,
                b"0" => 0,
                b"1" => 1,
                other => {
                    return Err(at(
                        path,
                        line,
                        i + 1,
                        format!(
                            "{:?} is not a response: use 0, 1 or leave the cell empty for missing",
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            });
        }
    }
    if person_ids.is_empty() {
        return Err(at(path, 2, 1, "no response rows after the header"));
    }
    ResponseMatrix::new(item_ids, person_ids, data).map_err(|e| ApiError::Invalid(e.to_string()))
}

fn csv_error(path: &Path, e: &csv::Error) -> ApiError {
    let line = e.position().map_or(0, |p| p.line());
    at(path, line, 1, e.to_string())
}

/// One person's ability, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct PersonAbility {
    pub person: String,
    /// A number, or "inf"/"-inf" (MLE of all-correct / all-wrong), or null.
    pub theta: Value,
    pub se: Value,
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Ability of every person in input order.
pub fn score_persons(
    calibration: &Calibration,
    data: &ResponseMatrix,
    method: AbilityMethod,
) -> Result<Vec<PersonAbility>, ApiError> {
    let invalid = |e: examflow_engine::irt::IrtError| ApiError::Invalid(e.to_string());
    let rows = (0..data.n_persons).map(|p| data.row(p));
    Ok(match method {
        AbilityMethod::Eap => {
            let quadrature = examflow_engine::irt::Quadrature::default();
            eap_batch(&calibration.items, data, &quadrature)
                .map_err(invalid)?
                .into_iter()
                .zip(&data.person_ids)
                .map(|(e, person)| PersonAbility {
                    person: person.clone(),
                    theta: number(e.theta),
                    se: number(e.se),
                })
                .collect()
        }
        AbilityMethod::Map => rows
            .zip(&data.person_ids)
            .map(|(row, person)| {
                let e = map(&calibration.items, row).map_err(invalid)?;
                Ok(PersonAbility {
                    person: person.clone(),
                    theta: number(e.theta),
                    se: number(e.se),
                })
            })
            .collect::<Result<_, ApiError>>()?,
        AbilityMethod::Mle => rows
            .zip(&data.person_ids)
            .map(|(row, person)| {
                let e = mle(&calibration.items, row).map_err(invalid)?;
                let theta = match e.theta {
                    Theta::Finite(t) => number(t),
                    Theta::PlusInfinity => json!("inf"),
                    Theta::MinusInfinity => json!("-inf"),
                    Theta::Undefined => Value::Null,
                };
                Ok(PersonAbility {
                    person: person.clone(),
                    theta,
                    se: e.se.map_or(Value::Null, number),
                })
            })
            .collect::<Result<_, ApiError>>()?,
    })
}

/// Runs the command and returns what to print.
/// The bytes of a command's input file; a read error names the file.
pub fn read_input(path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(path).map_err(|source| ApiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and parses a response CSV (the rules in the module docs).
pub fn read_responses(path: &Path) -> Result<ResponseMatrix, ApiError> {
    parse_responses(path, &read_input(path)?)
}

pub fn run(args: &CalibrateArgs) -> Result<String, ApiError> {
    let data = read_responses(&args.responses)?;
    let mut options = CalibrationOptions::new(args.model.into());
    options.quadrature_points = args.quadrature_points;
    options.max_iterations = args.max_iterations;
    options.se_method = args.se;
    let calibration = calibrate(&data, &options).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let abilities = match args.abilities {
        Some(method) => Some(score_persons(&calibration, &data, method)?),
        None => None,
    };
    let fit = if args.fit {
        Some(
            fit_report(&calibration, &data, &FitOptions::default())
                .map_err(|e| ApiError::Invalid(format!("fit statistics: {e}")))?,
        )
    } else {
        None
    };
    let mut out = match args.format {
        OutputFormat::Json => {
            let mut out = calibration_json(&calibration);
            if let Some(a) = &abilities {
                out["abilities"] = serde_json::to_value(a).unwrap_or_default();
            }
            if let Some(fit) = &fit {
                out["fit"] = serde_json::to_value(fit).unwrap_or_default();
            }
            return Ok(out.to_string() + "\n");
        }
        OutputFormat::Csv => {
            let mut out = items_csv(&calibration);
            if let Some(a) = &abilities {
                out.push_str("\nperson,theta,se\n");
                for p in a {
                    let _ = writeln!(
                        out,
                        "{},{},{}",
                        csv_field(&p.person),
                        plain(&p.theta),
                        plain(&p.se)
                    );
                }
            }
            out
        }
        OutputFormat::Table => table(&calibration, abilities.as_deref()),
    };
    if let Some(fit) = &fit {
        out.push_str(&match args.format {
            OutputFormat::Table => crate::fit_output::fit_table(fit),
            _ => crate::fit_output::fit_csv(fit),
        });
    }
    Ok(out)
}

/// The calibration as the documented JSON object (without abilities).
pub fn calibration_json(c: &Calibration) -> Value {
    let items: Vec<Value> = c
        .items
        .iter()
        .map(|i| {
            json!({
                "item": i.item, "a": number(i.a), "b": number(i.b), "c": number(i.c),
                "se_a": i.se_a.map_or(Value::Null, number), "se_b": i.se_b.map_or(Value::Null, number),
                "se_c": i.se_c.map_or(Value::Null, number), "p_value": number(i.p_value),
                "estimable": i.estimable,
            })
        })
        .collect();
    json!({
        "model": c.model, "n_persons": c.n_persons, "n_items": c.n_items,
        "log_likelihood": number(c.log_likelihood), "aic": number(c.aic), "bic": number(c.bic),
        "iterations": c.iterations, "converged": c.converged, "quadrature_points": c.quadrature_points,
        "se_method": c.se_method, "items": items,
    })
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or(String::new(), |v| format!("{v:.6}"))
}

/// `item,a,b,c,se_a,se_b,se_c,p_value,estimable` (the format `simulate-cat` reads).
pub fn items_csv(c: &Calibration) -> String {
    let mut out = String::from("item,a,b,c,se_a,se_b,se_c,p_value,estimable\n");
    for i in &c.items {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(&i.item),
            opt(Some(i.a)),
            opt(Some(i.b)),
            opt(Some(i.c)),
            opt(i.se_a),
            opt(i.se_b),
            opt(i.se_c),
            opt(Some(i.p_value)),
            i.estimable
        );
    }
    out
}

fn table(c: &Calibration, abilities: Option<&[PersonAbility]>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} calibration: {} persons, {} items; {} after {} iterations",
        serde_json::to_value(c.model)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_default(),
        c.n_persons,
        c.n_items,
        if c.converged {
            "converged"
        } else {
            "DID NOT CONVERGE"
        },
        c.iterations
    );
    let _ = writeln!(
        out,
        "log-likelihood {:.3}   AIC {:.3}   BIC {:.3}\n",
        c.log_likelihood, c.aic, c.bic
    );
    let width = c
        .items
        .iter()
        .map(|i| i.item.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "item", "a", "b", "c", "se(a)", "se(b)", "p-value"
    );
    let f = |x: Option<f64>| {
        x.filter(|v| v.is_finite())
            .map_or("-".to_string(), |v| format!("{v:.4}"))
    };
    for i in &c.items {
        let note = if i.estimable {
            ""
        } else {
            "  not estimable (all right or all wrong)"
        };
        let _ = writeln!(
            out,
            "{:width$}  {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}{note}",
            i.item,
            f(Some(i.a)),
            f(Some(i.b)),
            f(Some(i.c)),
            f(i.se_a),
            f(i.se_b),
            f(Some(i.p_value)),
        );
    }
    if let Some(abilities) = abilities {
        let _ = writeln!(out, "\n{:width$}  {:>9} {:>8}", "person", "theta", "se");
        for p in abilities {
            let _ = writeln!(
                out,
                "{:width$}  {:>9} {:>8}",
                p.person,
                short(&p.theta),
                short(&p.se)
            );
        }
    }
    out
}

fn short(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or(n.to_string(), |x| format!("{x:.4}")),
        Value::Null => "-".into(),
        other => plain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ResponseMatrix, ApiError> {
        parse_responses(Path::new("r.csv"), text.as_bytes())
    }

    #[test]
    fn parses_person_column_and_missing_cells() {
        let m = parse("person,q1,q2\nann,1,0\nbob,,1\n").unwrap();
        assert_eq!(m.item_ids, vec!["q1", "q2"]);
        assert_eq!(m.person_ids, vec!["ann", "bob"]);
        assert_eq!(m.data, vec![1, 0, MISSING, 1]);
        let m = parse("q1,q2\n1,0\n").unwrap();
        assert_eq!(m.person_ids, vec!["1"]);
    }

    /// Spreadsheets pad cells: spaces and tabs around ids and responses, a byte-order mark,
    /// CRLF line ends and lines of blanks read as if they were not there.
    #[test]
    fn padding_around_cells_is_ignored() {
        let m =
            parse("\u{feff}person , q1 ,\tq2\r\n ann , 1 ,\t0\r\n   \r\nbob,  ,1 \r\n").unwrap();
        assert_eq!(m.item_ids, vec!["q1", "q2"]);
        assert_eq!(m.person_ids, vec!["ann", "bob"]);
        assert_eq!(m.data, vec![1, 0, MISSING, 1]);
        let e = parse("q1, q2\n1, 1 0\n").unwrap_err().to_string();
        assert!(e.contains("r.csv:2:2") && e.contains("\"1 0\""), "{e}");
    }

    #[test]
    fn bad_input_names_line_and_column() {
        let e = parse("q1,q2\n1,0\n1,2\n").unwrap_err().to_string();
        assert!(e.contains("r.csv:3:2"), "{e}");
        assert!(e.contains("\"2\" is not a response"), "{e}");
        let e = parse("id,q1,q2\nx,1,yes\n").unwrap_err().to_string();
        assert!(e.contains("r.csv:2:3"), "{e}");
        let e = parse("q1,q2\n1,0\n1\n").unwrap_err().to_string();
        assert!(
            e.contains("r.csv:3:") && e.contains("expected 2 fields"),
            "{e}"
        );
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse("q1,q2\n").unwrap_err().to_string();
        assert!(e.contains("no response rows"), "{e}");
        let e = parse("q1,q1\n1,0\n").unwrap_err().to_string();
        assert!(e.contains("duplicate item id"), "{e}");
    }
}

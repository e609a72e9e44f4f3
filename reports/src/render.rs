//! A report as CSV tables (one per request, or all in a zip) and as one HTML page whose
//! charts are inline SVG drawn here, readable without JavaScript.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

use crate::{Distribution, ExamReport, ReportError};

/// The CSV tables of a report, by name (`?table=` and the zip's file names).
pub const TABLES: [&str; 13] = [
    "summary",
    "histogram",
    "items",
    "distractors",
    "trend",
    "students",
    "moodle_questions",
    "moodle_test",
    "adaptive",
    "adaptive_distributions",
    "adaptive_exposure",
    "adaptive_stop_reasons",
    "adaptive_calibrations",
];

/// The DIF table (`?dif=`), in the zip and selectable only when the report has one.
pub const DIF_TABLE: &str = "dif";

/// One row of the DIF table: an item in one comparison.
#[derive(Serialize)]
struct DifCsvRow<'a> {
    column: &'a str,
    focal: &'a str,
    reference: &'a str,
    item: &'a str,
    mh_alpha: f64,
    mh_d_dif: f64,
    mh_se: f64,
    mh_chi_square: f64,
    mh_p_value: f64,
    ets_category: String,
    lr_uniform_chi_square: f64,
    lr_uniform_p_value: f64,
    lr_non_uniform_chi_square: f64,
    lr_non_uniform_p_value: f64,
    lr_delta_r2: f64,
    jodoin_gierl: String,
}

fn dif_rows(report: &ExamReport) -> Vec<DifCsvRow<'_>> {
    let Some(section) = &report.dif else {
        return Vec::new();
    };
    section
        .comparisons
        .iter()
        .flat_map(|c| {
            c.items.iter().map(move |d| DifCsvRow {
                column: &section.column,
                focal: &c.focal,
                reference: &c.reference,
                item: &d.item,
                mh_alpha: d.mantel_haenszel.alpha,
                mh_d_dif: d.mantel_haenszel.d_dif,
                mh_se: d.mantel_haenszel.se,
                mh_chi_square: d.mantel_haenszel.chi_square,
                mh_p_value: d.mantel_haenszel.p_value,
                ets_category: format!("{:?}", d.mantel_haenszel.category),
                lr_uniform_chi_square: d.logistic.uniform.chi_square,
                lr_uniform_p_value: d.logistic.uniform.p_value,
                lr_non_uniform_chi_square: d.logistic.non_uniform.chi_square,
                lr_non_uniform_p_value: d.logistic.non_uniform.p_value,
                lr_delta_r2: d.logistic.both.delta_r2,
                jodoin_gierl: format!("{:?}", d.logistic.jodoin_gierl),
            })
        })
        .collect()
}

const DIF_COLUMNS: [&str; 16] = [
    "column",
    "focal",
    "reference",
    "item",
    "mh_alpha",
    "mh_d_dif",
    "mh_se",
    "mh_chi_square",
    "mh_p_value",
    "ets_category",
    "lr_uniform_chi_square",
    "lr_uniform_p_value",
    "lr_non_uniform_chi_square",
    "lr_non_uniform_p_value",
    "lr_delta_r2",
    "jodoin_gierl",
];

/// Most student rows the HTML page lists (the CSV and JSON have them all).
pub const HTML_STUDENT_ROWS: usize = 500;

fn render_error(what: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Render {
        what: what.to_string(),
        message,
    }
}

/// First characters that make a spreadsheet read a cell as a formula (or, for tab and
/// carriage return, shift it into one): OWASP's list for CSV injection.
pub const CSV_FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether a text cell must be neutralised before it goes into a CSV file.
pub fn csv_needs_guard(text: &str) -> bool {
    text.starts_with(CSV_FORMULA_STARTS)
}

/// A text cell as every CSV of examflow writes it: one that starts with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets a single quote in front (`=1+1` → `'=1+1`), so a
/// spreadsheet shows it as text instead of running it (OWASP, CSV injection). Only text
/// cells: numbers are written as numbers (`-1.5` stays `-1.5`).
pub fn csv_safe(text: &str) -> Cow<'_, str> {
    if csv_needs_guard(text) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A cell of a row serialised to JSON: text neutralised ([`csv_safe`]), numbers and
/// booleans as the `csv` crate writes them, null empty.
fn csv_cell(value: &serde_json::Value) -> Cow<'_, str> {
    match value {
        serde_json::Value::Null => Cow::Borrowed(""),
        serde_json::Value::String(s) => csv_safe(s),
        serde_json::Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        other => Cow::Owned(other.to_string()),
    }
}

/// Rows as CSV with `header` as the columns, each cell the row's field of that name (the
/// header names are the rows' field names, a test checks it).
fn write_rows<T: Serialize>(rows: &[T], header: &[&str]) -> Result<String, ReportError> {
    let fail = |e: &dyn std::fmt::Display| render_error("csv")(e.to_string());
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    writer.write_record(header).map_err(|e| fail(&e))?;
    for row in rows {
        let value = serde_json::to_value(row).map_err(|e| fail(&e))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(fail(&"a row is not a record"));
        };
        let cells: Vec<Cow<'_, str>> = header
            .iter()
            .map(|name| fields.get(*name).map_or(Cow::Borrowed(""), csv_cell))
            .collect();
        writer
            .write_record(cells.iter().map(|c| c.as_bytes()))
            .map_err(|e| fail(&e))?;
    }
    let bytes = writer.into_inner().map_err(|e| fail(&e))?;
    String::from_utf8(bytes).map_err(|e| fail(&e))
}

/// The `summary` table: one `metric,value` row per number of the summary, reliability and
/// time on task.
fn summary_rows(report: &ExamReport) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut add = |section: &str, value: serde_json::Value| {
        if let serde_json::Value::Object(map) = value {
            for (key, v) in map {
                let text = match v {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => csv_safe(&s).into_owned(),
                    other => other.to_string(),
                };
                rows.push((format!("{section}{key}"), text));
            }
        }
    };
    add(
        "",
        serde_json::json!({"exam": report.exam, "generated_at": report.generated_at}),
    );
    add(
        "",
        serde_json::to_value(&report.summary).unwrap_or_default(),
    );
    add(
        "options_",
        serde_json::to_value(&report.options).unwrap_or_default(),
    );
    add(
        "reliability_",
        serde_json::to_value(&report.reliability).unwrap_or_default(),
    );
    add(
        "time_on_task_",
        serde_json::to_value(&report.time_on_task).unwrap_or_default(),
    );
    if let Some(c) = &report.calibration {
        add("calibration_", serde_json::to_value(c).unwrap_or_default());
    }
    rows
}

#[derive(Serialize)]
struct ItemCsvRow<'a> {
    item: &'a str,
    question: &'a str,
    topic: Option<&'a str>,
    responses: u64,
    p_value: Option<f64>,
    point_biserial: Option<f64>,
    corrected_item_total: Option<f64>,
    discrimination_index: Option<f64>,
    irt_a: Option<f64>,
    irt_b: Option<f64>,
    irt_c: Option<f64>,
    flags: String,
}

/// `metric,value` rows as CSV (values that were text are already neutralised).
fn metric_table(rows: &[(String, String)]) -> Result<String, ReportError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut put = |record: [&str; 2]| {
        writer
            .write_record(record)
            .map_err(|e| render_error("csv")(e.to_string()))
    };
    put(["metric", "value"])?;
    for (metric, value) in rows {
        put([&csv_safe(metric), value])?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| render_error("csv")(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| render_error("csv")(e.to_string()))
}

/// Numbers of a serialised record as `metric,value` rows named `{prefix}{field}`.
fn number_rows(prefix: &str, value: serde_json::Value, rows: &mut Vec<(String, String)>) {
    if let serde_json::Value::Object(map) = value {
        for (key, v) in map {
            let text = match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => csv_safe(&s).into_owned(),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => continue,
                other => other.to_string(),
            };
            rows.push((format!("{prefix}{key}"), text));
        }
    }
}

/// The `adaptive` table: sessions, overlap and the summary numbers of each distribution
/// (empty when the exam never ran adaptively).
fn adaptive_rows(report: &ExamReport) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let Some(a) = &report.adaptive else {
        return rows;
    };
    number_rows("", serde_json::to_value(a).unwrap_or_default(), &mut rows);
    for (name, d) in [
        ("theta", &a.theta),
        ("se", &a.se),
        ("test_length", &a.test_length),
    ] {
        number_rows(
            &format!("{name}_"),
            serde_json::to_value(d).unwrap_or_default(),
            &mut rows,
        );
    }
    rows
}

#[derive(Serialize)]
struct DistributionCsvRow {
    distribution: &'static str,
    from: f64,
    to: f64,
    count: u64,
}

/// One table of the report as CSV (header line first).
pub fn csv_table(report: &ExamReport, table: &str) -> Result<String, ReportError> {
    let adaptive = report.adaptive.as_ref();
    match table {
        "moodle_questions" => write_rows(
            &report.moodle.questions,
            &[
                "item",
                "question",
                "max_mark",
                "facility_index",
                "standard_deviation",
                "random_guess_score",
                "intended_weight",
                "effective_weight",
                "negative_covariance",
                "discrimination_index",
                "discriminative_efficiency",
            ],
        ),
        "moodle_test" => {
            let mut rows = Vec::new();
            number_rows(
                "",
                serde_json::to_value(&report.moodle.test).unwrap_or_default(),
                &mut rows,
            );
            metric_table(&rows)
        }
        "adaptive" => metric_table(&adaptive_rows(report)),
        "adaptive_distributions" => {
            let rows: Vec<DistributionCsvRow> = adaptive
                .map(|a| {
                    [
                        ("theta", &a.theta),
                        ("se", &a.se),
                        ("test_length", &a.test_length),
                    ]
                    .into_iter()
                    .flat_map(|(name, d): (&'static str, &Distribution)| {
                        d.bins.iter().map(move |b| DistributionCsvRow {
                            distribution: name,
                            from: b.from,
                            to: b.to,
                            count: b.count,
                        })
                    })
                    .collect()
                })
                .unwrap_or_default();
            write_rows(&rows, &["distribution", "from", "to", "count"])
        }
        "adaptive_exposure" => write_rows(
            adaptive.map_or(&[][..], |a| &a.exposure),
            &["item", "sessions", "exposure_rate"],
        ),
        "adaptive_stop_reasons" => write_rows(
            adaptive.map_or(&[][..], |a| &a.stop_reasons),
            &["stop_reason", "sessions", "share"],
        ),
        "adaptive_calibrations" => write_rows(
            adaptive.map_or(&[][..], |a| &a.calibration_versions),
            &["calibration_version", "sessions"],
        ),
        "summary" => {
            let rows = summary_rows(report);
            let mut writer = csv::Writer::from_writer(Vec::new());
            let mut put = |record: [&str; 2]| {
                writer
                    .write_record(record)
                    .map_err(|e| render_error("csv")(e.to_string()))
            };
            put(["metric", "value"])?;
            // Values that were text are already neutralised (`summary_rows`); numbers are not.
            for (metric, value) in &rows {
                put([&csv_safe(metric), value])?;
            }
            let bytes = writer
                .into_inner()
                .map_err(|e| render_error("csv")(e.to_string()))?;
            String::from_utf8(bytes).map_err(|e| render_error("csv")(e.to_string()))
        }
        "histogram" => write_rows(&report.histogram, &["from", "to", "count"]),
        "items" => {
            let rows: Vec<ItemCsvRow> = report
                .items
                .iter()
                .map(|i| ItemCsvRow {
                    item: &i.item,
                    question: &i.question,
                    topic: i.topic.as_deref(),
                    responses: i.responses,
                    p_value: i.p_value,
                    point_biserial: i.point_biserial,
                    corrected_item_total: i.corrected_item_total,
                    discrimination_index: i.discrimination_index,
                    irt_a: i.irt_a,
                    irt_b: i.irt_b,
                    irt_c: i.irt_c,
                    flags: i
                        .flags
                        .iter()
                        .map(|f| format!("{}: {}", f.flag, f.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
                .collect();
            write_rows(
                &rows,
                &[
                    "item",
                    "question",
                    "topic",
                    "responses",
                    "p_value",
                    "point_biserial",
                    "corrected_item_total",
                    "discrimination_index",
                    "irt_a",
                    "irt_b",
                    "irt_c",
                    "flags",
                ],
            )
        }
        "distractors" => write_rows(
            &report.distractors,
            &[
                "item",
                "option",
                "is_key",
                "count",
                "share",
                "lower_share",
                "upper_share",
                "mean_correct",
            ],
        ),
        "trend" => write_rows(
            &report.trend,
            &["day", "results", "mean_percentage", "pass_rate"],
        ),
        "students" => write_rows(
            &report.students,
            &[
                "document_id",
                "email",
                "score",
                "total",
                "percentage",
                "result",
                "submitted_at",
            ],
        ),
        DIF_TABLE if report.dif.is_some() => write_rows(&dif_rows(report), &DIF_COLUMNS),
        other => Err(ReportError::Render {
            what: "csv".into(),
            message: format!(
                "no table {other:?}; the tables are {} (and dif with ?dif=)",
                TABLES.join(", ")
            ),
        }),
    }
}

/// Every table as `<table>.csv` in one zip archive.
pub fn csv_zip(report: &ExamReport) -> Result<Vec<u8>, ReportError> {
    let fail = render_error("zip");
    let mut zip = crate::zip::ZipWriter::default();
    let dif = report.dif.as_ref().map(|_| DIF_TABLE);
    for table in TABLES.into_iter().chain(dif) {
        let text = csv_table(report, table)?;
        zip.add(&format!("{table}.csv"), text.as_bytes())
            .map_err(&fail)?;
    }
    zip.finish().map_err(fail)
}

/// Text made safe inside HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "–".into(),
        Some(s) if s < 90.0 => format!("{s:.0} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

/// Bar chart of the score distribution.
fn histogram_svg(report: &ExamReport) -> String {
    let (width, height, left, bottom, top) = (560.0, 220.0, 40.0, 30.0, 12.0);
    let max = report
        .histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_h = height - bottom - top;
    let bar_w = (width - left - 10.0) / report.histogram.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="chart" role="img" aria-labelledby="hist-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title id="hist-title">Score distribution: number of results per 10-point band of percentage</title>"#
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#555"/>"##,
        y = height - bottom,
        x2 = width - 10.0
    );
    let _ = write!(
        svg,
        r##"<text x="4" y="{}" font-size="11" fill="#333">{}</text>"##,
        top + 8.0,
        max as u64
    );
    for (i, bin) in report.histogram.iter().enumerate() {
        let h = bin.count as f64 / max * plot_h;
        let x = left + i as f64 * bar_w;
        let y = height - bottom - h;
        let _ = write!(
            svg,
            r##"<rect class="bar" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="#3b6ea8"><title>{}–{}%: {} results</title></rect>"##,
            x + 2.0,
            bar_w - 4.0,
            bin.from,
            bin.to,
            bin.count
        );
        if bin.count > 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#222">{}</text>"##,
                x + bar_w / 2.0,
                y - 2.0,
                bin.count
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#333">{}</text>"##,
            x + bar_w / 2.0,
            height - bottom + 14.0,
            bin.from
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#333">percentage</text></svg>"##,
        left + (width - left) / 2.0,
        height - 3.0
    );
    svg
}

/// Line chart of the mean percentage per day.
fn trend_svg(report: &ExamReport) -> String {
    let (width, height, left, bottom, top) = (560.0, 200.0, 40.0, 30.0, 12.0);
    let points: Vec<(usize, f64)> = report
        .trend
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.mean_percentage?)))
        .collect();
    let mut svg = format!(
        r#"<svg class="chart" role="img" aria-labelledby="trend-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title id="trend-title">Mean percentage per day of submission</title>"#
    );
    let plot_w = width - left - 20.0;
    let plot_h = height - bottom - top;
    let n = report.trend.len().max(2) - 1;
    let x_of = |i: usize| left + plot_w * i as f64 / n as f64;
    let y_of = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 100.0) / 100.0);
    for v in [0.0, 50.0, 100.0] {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{ty:.1}" font-size="10" fill="#333">{v}%</text>"##,
            y = y_of(v),
            x2 = width - 20.0,
            ty = y_of(v) + 3.0
        );
    }
    if points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|&(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(v)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#3b6ea8" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
    }
    for &(i, v) in &points {
        let p = &report.trend[i];
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#3b6ea8"><title>{}: mean {:.1}%, {} results</title></circle>"##,
            x_of(i),
            y_of(v),
            escape(&p.day),
            v,
            p.results
        );
    }
    if let (Some(first), Some(last)) = (report.trend.first(), report.trend.last()) {
        let _ = write!(
            svg,
            r##"<text x="{left}" y="{y}" font-size="10" fill="#333">{}</text><text x="{x}" y="{y}" font-size="10" text-anchor="end" fill="#333">{}</text>"##,
            escape(&first.day),
            escape(&last.day),
            y = height - bottom + 14.0,
            x = width - 20.0
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;\
padding:0 1rem;color:#1d1d1f}h1{margin-bottom:.2rem}.meta{color:#555}\
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}\
.card{border:1px solid #ccd;border-radius:6px;padding:.6rem .9rem;min-width:8rem}\
.card b{display:block;font-size:1.4rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem;\
font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.25rem .5rem;text-align:left;\
vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.flagged td{background:#fff4e0}.flag{display:block;color:#8a4b00}.key{font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:1rem}";

/// The report as one HTML page: summary cards, the charts, and the tables.
pub fn html(report: &ExamReport) -> String {
    let s = &report.summary;
    let r = &report.reliability;
    let t = &report.time_on_task;
    let exam = escape(&report.exam);
    let mut page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Report: {exam}</title><style>{STYLE}</style></head><body><h1>Score report: {exam}</h1><p class="meta">Generated {} · {} results from {} students</p>"#,
        escape(&report.generated_at),
        s.results,
        s.takers
    );
    let o = &report.options;
    let _ = write!(
        page,
        r#"<p class="meta" id="options">Counting {}{}{}.</p>"#,
        match o.attempts {
            crate::AttemptSelection::First => "each student's first result",
            crate::AttemptSelection::Last => "each student's last result",
            crate::AttemptSelection::Highest => "each student's highest result",
            crate::AttemptSelection::All => "every result",
        },
        o.from.map_or(String::new(), |t| format!(
            ", submitted from {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )),
        o.to.map_or(String::new(), |t| format!(
            ", submitted until {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )),
    );
    let card = |label: &str, value: String| {
        format!(
            r#"<div class="card"><b>{}</b>{}</div>"#,
            escape(&value),
            escape(label)
        )
    };
    page.push_str(r#"<section class="cards" id="summary">"#);
    for (label, value) in [
        ("results", s.results.to_string()),
        ("students", s.takers.to_string()),
        ("mean percentage", num(s.mean_percentage, 1)),
        ("median percentage", num(s.median_percentage, 1)),
        ("standard deviation", num(s.sd_percentage, 1)),
        ("pass rate", percent(s.pass_rate)),
        ("reliability (alpha)", num(r.alpha, 2)),
        ("SEM (questions)", num(r.sem, 2)),
        ("median time on task", duration(t.median_seconds)),
    ] {
        page.push_str(&card(label, value));
    }
    page.push_str("</section>");
    let _ = write!(
        page,
        r#"<section class="charts"><figure><figcaption>Score distribution</figcaption>{}</figure><figure><figcaption>Mean percentage per day</figcaption>{}</figure></section>"#,
        histogram_svg(report),
        trend_svg(report)
    );
    let _ = write!(
        page,
        "<p>Reliability is computed over {} results and {} questions (a question a result \
         does not contain counts as wrong). Time on task: {} ingested attempts, mean {}, \
         90th percentile {}.</p>",
        r.persons,
        r.items,
        t.attempts,
        duration(t.mean_seconds),
        duration(t.p90_seconds)
    );
    if let Some(c) = &report.calibration {
        let _ = write!(
            page,
            "<p>IRT parameters: calibration version {} ({}, {}).</p>",
            c.version,
            escape(&c.source),
            escape(&c.created_at)
        );
    }

    page.push_str(
        r#"<h2>Questions</h2><table id="items"><thead><tr><th>Question</th><th>Responses</th><th>p-value</th><th>Point-biserial</th><th>Item–rest r</th><th>D (upper−lower)</th><th>IRT a</th><th>IRT b</th><th>Flags</th></tr></thead><tbody>"#,
    );
    for item in &report.items {
        let flags: String = item
            .flags
            .iter()
            .map(|f| {
                format!(
                    r#"<span class="flag" title="{}">{}: {}</span>"#,
                    escape(f.flag),
                    escape(&f.flag.replace('_', " ")),
                    escape(&f.reason)
                )
            })
            .collect();
        let _ = write!(
            page,
            r#"<tr{}><td><code>{}</code> {}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{flags}</td></tr>"#,
            if item.flags.is_empty() {
                ""
            } else {
                r#" class="flagged""#
            },
            escape(&item.item),
            escape(&item.question),
            item.responses,
            num(item.p_value, 2),
            num(item.point_biserial, 2),
            num(item.corrected_item_total, 2),
            num(item.discrimination_index, 2),
            num(item.irt_a, 2),
            num(item.irt_b, 2),
        );
    }
    page.push_str("</tbody></table>");

    moodle_html(report, &mut page);
    dif_html(report, &mut page);

    page.push_str(
        r#"<h2>Answers chosen</h2><table id="distractors"><thead><tr><th>Question</th><th>Answer</th><th>Count</th><th>Share</th><th>Lower 27%</th><th>Upper 27%</th><th>Mean correct</th></tr></thead><tbody>"#,
    );
    for d in &report.distractors {
        let _ = write!(
            page,
            r#"<tr><td><code>{}</code></td><td{}>{}{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&d.item),
            if d.is_key { r#" class="key""# } else { "" },
            escape(&d.option),
            if d.is_key { " (key)" } else { "" },
            d.count,
            percent(d.share),
            percent(d.lower_share),
            percent(d.upper_share),
            num(d.mean_correct, 1)
        );
    }
    page.push_str("</tbody></table>");

    page.push_str(
        r#"<h2>Per day</h2><table id="trend"><thead><tr><th>Day</th><th>Results</th><th>Mean percentage</th><th>Pass rate</th></tr></thead><tbody>"#,
    );
    for p in &report.trend {
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&p.day),
            p.results,
            num(p.mean_percentage, 1),
            percent(p.pass_rate)
        );
    }
    page.push_str("</tbody></table>");

    adaptive_html(report, &mut page);

    let shown = report.students.len().min(HTML_STUDENT_ROWS);
    let _ = write!(
        page,
        r#"<h2>Students</h2><p>{}</p><table id="students"><thead><tr><th>Email</th><th>Score</th><th>Percentage</th><th>Result</th><th>Submitted</th></tr></thead><tbody>"#,
        if shown < report.students.len() {
            format!(
                "The first {shown} of {} results; the CSV and JSON formats have them all.",
                report.students.len()
            )
        } else {
            format!("{} results.", report.students.len())
        }
    );
    for row in &report.students[..shown] {
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="n">{} / {}</td><td class="n">{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&row.email),
            num(row.score, 0),
            num(row.total, 0),
            num(row.percentage, 0),
            escape(row.result.as_deref().unwrap_or("")),
            escape(row.submitted_at.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</tbody></table></body></html>\n");
    page
}

/// Moodle's quiz statistics: the test numbers as a table, then one row per question.
/// The DIF section: per comparison, the items with MH and logistic-regression results.
fn dif_html(report: &ExamReport, page: &mut String) {
    let Some(section) = &report.dif else {
        return;
    };
    let by_ability = section.matching == "ability";
    let _ = write!(
        page,
        r#"<h2>Bias checks (DIF) by {}</h2><p>Each group against {}, item by item, among students with the same {}. ETS category C (Mantel–Haenszel) or a large ΔR² (logistic regression, Jodoin–Gierl C) marks an item to review; MH D-DIF below 0: harder for the focal group. Students per group: {}; without a group: {}; {} (left out): {}.</p>"#,
        escape(&section.column),
        escape(section.reference.as_deref().unwrap_or("-")),
        if by_ability {
            "ability (θ; the exam is adaptive, so students answered different questions)"
        } else {
            "total score"
        },
        escape(
            &section
                .groups
                .iter()
                .map(|(g, n)| format!("{g} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        section.without_group,
        if by_ability {
            "without an ability estimate"
        } else {
            "with unanswered items"
        },
        section.incomplete
    );
    for skipped in &section.skipped {
        let _ = write!(page, "<p>Not compared: {}</p>", escape(skipped));
    }
    for c in &section.comparisons {
        let _ = write!(
            page,
            r#"<h3>{} vs {}</h3><table class="dif"><thead><tr><th>Question</th><th>MH D-DIF</th><th>SE</th><th>χ²</th><th>p</th><th>ETS</th><th>Uniform χ²</th><th>Non-uniform χ²</th><th>ΔR²</th><th>JG</th></tr></thead><tbody>"#,
            escape(&c.focal),
            escape(&c.reference)
        );
        for d in &c.items {
            let m = &d.mantel_haenszel;
            let l = &d.logistic;
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td></tr>",
                escape(&d.item),
                num(Some(m.d_dif), 2),
                num(Some(m.se), 2),
                num(Some(m.chi_square), 2),
                num(Some(m.p_value), 4),
                m.category,
                num(Some(l.uniform.chi_square), 2),
                num(Some(l.non_uniform.chi_square), 2),
                num(Some(l.both.delta_r2), 4),
                l.jodoin_gierl
            );
        }
        page.push_str("</tbody></table>");
    }
}

fn moodle_html(report: &ExamReport, page: &mut String) {
    let t = &report.moodle.test;
    page.push_str(
        r#"<h2>Moodle quiz statistics</h2><p>The statistics of Moodle's quiz statistics report, computed the same way: every result is an attempt, every question is worth 1 mark. Percentages are of the maximum mark.</p><table id="moodle-test"><tbody>"#,
    );
    for (label, value) in [
        ("Attempts", t.attempts.to_string()),
        (
            "Average grade",
            format!(
                "{} of {} ({}%)",
                num(t.mean, 2),
                num(Some(t.max_score), 0),
                num(t.mean_percentage, 1)
            ),
        ),
        (
            "Median grade",
            format!("{} ({}%)", num(t.median, 2), num(t.median_percentage, 1)),
        ),
        (
            "Standard deviation",
            format!(
                "{} ({}%)",
                num(t.standard_deviation, 2),
                num(t.standard_deviation_percentage, 1)
            ),
        ),
        ("Skewness", num(t.skewness, 4)),
        ("Kurtosis", num(t.kurtosis, 4)),
        (
            "Coefficient of internal consistency",
            format!("{}%", num(t.coefficient_of_internal_consistency, 2)),
        ),
        ("Error ratio", format!("{}%", num(t.error_ratio, 2))),
        ("Standard error", num(t.standard_error, 2)),
    ] {
        let _ = write!(
            page,
            r#"<tr><th scope="row">{}</th><td class="n">{}</td></tr>"#,
            escape(label),
            escape(&value)
        );
    }
    page.push_str(
        r#"</tbody></table><table id="moodle-questions"><thead><tr><th>Question</th><th>Facility index</th><th>Standard deviation</th><th>Random guess score</th><th>Intended weight</th><th>Effective weight</th><th>Discrimination index</th><th>Discriminative efficiency</th></tr></thead><tbody>"#,
    );
    let pct = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}%"));
    for q in &report.moodle.questions {
        let _ = write!(
            page,
            r#"<tr><td><code>{}</code> {}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&q.item),
            escape(&q.question),
            pct(q.facility_index),
            pct(q.standard_deviation),
            pct(q.random_guess_score),
            pct(q.intended_weight),
            if q.negative_covariance {
                "negative covariance".to_string()
            } else {
                pct(q.effective_weight)
            },
            pct(q.discrimination_index),
            pct(q.discriminative_efficiency),
        );
    }
    page.push_str("</tbody></table>");
}

/// One distribution's numbers and its bins as a small bar table.
fn distribution_html(id: &str, title: &str, d: &Distribution, digits: usize, page: &mut String) {
    let _ = write!(
        page,
        r#"<h3>{}</h3><p>{} sessions · mean {} · SD {} · min {} · median {} · max {}</p><table id="{}"><thead><tr><th>From</th><th>To</th><th>Sessions</th></tr></thead><tbody>"#,
        escape(title),
        d.count,
        num(d.mean, digits),
        num(d.sd, digits),
        num(d.min, digits),
        num(d.median, digits),
        num(d.max, digits),
        escape(id)
    );
    let max = d.bins.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    for b in &d.bins {
        let _ = write!(
            page,
            r#"<tr><td class="n">{}</td><td class="n">{}</td><td class="n">{} <span class="dist-bar" style="display:inline-block;height:.7em;background:#3b6ea8;width:{:.1}em"></span></td></tr>"#,
            b.from,
            b.to,
            b.count,
            8.0 * b.count as f64 / max as f64
        );
    }
    page.push_str("</tbody></table>");
}

/// The adaptive section (nothing when the exam never ran adaptively).
fn adaptive_html(report: &ExamReport, page: &mut String) {
    let Some(a) = &report.adaptive else {
        return;
    };
    let _ = write!(
        page,
        r#"<h2 id="adaptive">Adaptive sessions</h2><p>{} finished adaptive sessions. Two sessions share on average {} items: a test overlap rate of {} (the expected share of a student's items another student also saw).</p>"#,
        a.sessions,
        num(a.mean_shared_items, 2),
        percent(a.overlap_rate)
    );
    distribution_html("adaptive-theta", "Ability (θ)", &a.theta, 2, page);
    distribution_html("adaptive-se", "Standard error of θ", &a.se, 3, page);
    distribution_html(
        "adaptive-length",
        "Test length (items)",
        &a.test_length,
        1,
        page,
    );
    page.push_str(
        r#"<h3>Why sessions stopped</h3><table id="adaptive-stop-reasons"><thead><tr><th>Stop reason</th><th>Sessions</th><th>Share</th></tr></thead><tbody>"#,
    );
    for r in &a.stop_reasons {
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&r.stop_reason.replace('_', " ")),
            r.sessions,
            percent(Some(r.share))
        );
    }
    page.push_str(
        r#"</tbody></table><h3>Item exposure</h3><table id="adaptive-exposure"><thead><tr><th>Question</th><th>Sessions</th><th>Exposure rate</th></tr></thead><tbody>"#,
    );
    for e in &a.exposure {
        let _ = write!(
            page,
            r#"<tr><td><code>{}</code></td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&e.item),
            e.sessions,
            percent(Some(e.exposure_rate))
        );
    }
    page.push_str(
        r#"</tbody></table><h3>Calibration versions used</h3><table id="adaptive-calibrations"><thead><tr><th>Version</th><th>Sessions</th></tr></thead><tbody>"#,
    );
    for v in &a.calibration_versions {
        let _ = write!(
            page,
            r#"<tr><td class="n">{}</td><td class="n">{}</td></tr>"#,
            v.calibration_version, v.sessions
        );
    }
    page.push_str("</tbody></table>");
}

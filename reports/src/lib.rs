//! Score reports for educators: one exam's results, computed with polars from Arrow data.
//!
//! The caller (the api crate) reads the data with DataFusion and hands the record batches
//! over through the Arrow C Data Interface ([`ffi`]); [`build_report`] computes the report
//! with polars; [`render`] writes it as CSV tables or an HTML page with inline SVG charts.
//! No I/O happens here.
//!
//! Statistics follow the engine's classical test theory rules (`examflow_engine::ctt`):
//! a question a result does not mention counts as wrong in totals, alpha and SEM;
//! p-values and point-biserials are over the results that contain the question; the upper
//! and lower groups are the top and bottom 27% by number correct (ties by document id).

mod compute;
pub mod ffi;
pub mod render;
mod zip;

pub use compute::build_report;

use serde::Serialize;
use thiserror::Error;

/// What went wrong building a report.
#[derive(Debug, Error)]
pub enum ReportError {
    /// An input column could not be handed to polars or has the wrong type.
    #[error("column {column:?}: {message}")]
    Arrow { column: String, message: String },
    /// An input frame lacks a column the report needs.
    #[error("the {frame} data has no column {column:?}")]
    MissingColumn {
        frame: &'static str,
        column: &'static str,
    },
    /// polars failed computing a part of the report.
    #[error("computing the {part}: {message}")]
    Compute { part: &'static str, message: String },
    /// Writing CSV or HTML failed.
    #[error("writing the {what}: {message}")]
    Render { what: String, message: String },
}

/// What the report knows of one bank question besides the responses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemInfo {
    pub item: String,
    pub question: String,
    /// The options as the bank lists them (options nobody chose appear with count 0).
    pub options: Vec<String>,
    pub topic: Option<String>,
    /// IRT parameters of the exam's latest calibration, if any.
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub c: Option<f64>,
    /// True when the parameters come from p-values, not an IRT fit.
    pub provisional: bool,
}

/// The calibration the IRT columns come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationRef {
    pub version: i64,
    pub source: String,
    pub created_at: String,
}

/// Everything a report is computed from. The frames' columns:
/// * `results`: `document_id`, `email`, `score`, `total`, `percentage` (numbers),
///   `result` (`passed`/`failed`/null), `submitted_at_us` (µs since the epoch, or null);
/// * `answers`: `item`, `question`, `user_answer`, `correct_answer`, `is_correct`, and who
///   answered: `person` (the row of the answer's result in `results`, 0-based; the server
///   reads it so) or `document_id`;
/// * `durations`: `duration_seconds` (time on task of the ingested attempts).
pub struct ReportInput {
    pub exam: String,
    pub generated_at: String,
    pub results: polars::prelude::DataFrame,
    pub answers: polars::prelude::DataFrame,
    pub durations: polars::prelude::DataFrame,
    /// The bank's questions in bank order (empty when the bank is not known).
    pub items: Vec<ItemInfo>,
    pub calibration: Option<CalibrationRef>,
}

/// An exam's score report. Statistics that are undefined (no data, a constant) are null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExamReport {
    pub exam: String,
    pub generated_at: String,
    pub summary: Summary,
    pub reliability: Reliability,
    /// Results by percentage, in ten bins of 10 points (the last includes 100).
    pub histogram: Vec<HistogramBin>,
    pub items: Vec<ItemRow>,
    pub distractors: Vec<DistractorRow>,
    pub time_on_task: TimeOnTask,
    /// Results per day (UTC) of submission.
    pub trend: Vec<TrendPoint>,
    /// One row per result, by email, then submission time.
    pub students: Vec<StudentRow>,
    pub calibration: Option<CalibrationRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub results: u64,
    pub takers: u64,
    pub mean_percentage: Option<f64>,
    pub median_percentage: Option<f64>,
    pub sd_percentage: Option<f64>,
    pub min_percentage: Option<f64>,
    pub max_percentage: Option<f64>,
    pub mean_score: Option<f64>,
    pub passed: u64,
    pub failed: u64,
    /// passed / (passed + failed); null when no result has a pass/fail outcome.
    pub pass_rate: Option<f64>,
    pub first_submitted_at: Option<String>,
    pub last_submitted_at: Option<String>,
}

/// Internal consistency of the number-correct score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reliability {
    /// Results with question-level detail (the persons of the analysis).
    pub persons: u64,
    pub items: u64,
    /// Cronbach's alpha (KR-20 for right/wrong questions).
    pub alpha: Option<f64>,
    /// Standard error of measurement in number-correct points, sd·√(1 − alpha).
    pub sem: Option<f64>,
    pub mean_correct: Option<f64>,
    pub sd_correct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramBin {
    pub from: u32,
    pub to: u32,
    pub count: u64,
}

/// A reason to look at a question again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemFlag {
    /// `too_easy`, `too_hard`, `negative_discrimination` or `low_discrimination`.
    pub flag: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemRow {
    pub item: String,
    pub question: String,
    pub topic: Option<String>,
    pub responses: u64,
    pub p_value: Option<f64>,
    pub point_biserial: Option<f64>,
    /// Correlation with the total without this question.
    pub corrected_item_total: Option<f64>,
    /// p(upper 27%) − p(lower 27%).
    pub discrimination_index: Option<f64>,
    pub irt_a: Option<f64>,
    pub irt_b: Option<f64>,
    pub irt_c: Option<f64>,
    pub flags: Vec<ItemFlag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistractorRow {
    pub item: String,
    /// The answer given (`(no answer)` for none).
    pub option: String,
    pub is_key: bool,
    pub count: u64,
    /// Among the question's responses.
    pub share: Option<f64>,
    /// Among the lower / upper 27%'s responses to the question.
    pub lower_share: Option<f64>,
    pub upper_share: Option<f64>,
    /// Mean number correct of those who gave this answer.
    pub mean_correct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeOnTask {
    /// Ingested attempts of the exam with a duration.
    pub attempts: u64,
    pub mean_seconds: Option<f64>,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub results: u64,
    pub mean_percentage: Option<f64>,
    pub pass_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudentRow {
    pub document_id: String,
    pub email: String,
    pub score: Option<f64>,
    pub total: Option<f64>,
    pub percentage: Option<f64>,
    pub result: Option<String>,
    pub submitted_at: Option<String>,
}

/// Flag thresholds (the usual classical rules of thumb).
pub mod thresholds {
    /// p-value above which a question tells little: nearly everyone gets it right.
    pub const TOO_EASY: f64 = 0.90;
    /// p-value below which a question is answered right mostly by chance or not at all.
    pub const TOO_HARD: f64 = 0.20;
    /// Corrected item–total correlation below which a question discriminates poorly.
    pub const LOW_DISCRIMINATION: f64 = 0.20;
}

#[cfg(test)]
mod tests;

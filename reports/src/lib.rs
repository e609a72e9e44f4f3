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
//!
//! Only the results chosen by [`ReportOptions`] count (per student the first, last or
//! highest result, or all; a range of submission times): every part is computed on them.
//! The Moodle section calls `examflow_engine::quiz_statistics`.

mod adaptive;
mod compute;
pub mod dif;
pub mod ffi;
mod options;
pub mod render;
mod zip;

pub use compute::build_report;
pub use options::{AttemptSelection, OptionError, ReportOptions, parse_group};

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
    /// Which results count ([`ReportOptions`]); applied here, before anything is computed.
    /// `durations` may carry `finished_at_us` (µs since the epoch) for the date range.
    pub options: ReportOptions,
    /// The exam's finished adaptive sessions (empty when it never ran adaptively); only
    /// those whose result is among the selected results count.
    pub adaptive_sessions: Vec<AdaptiveSession>,
    /// The roster (email, lower case → group column → group), for `options.group` and
    /// `dif`; empty when neither is asked for.
    pub roster: std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    /// A DIF section by this roster column (`?dif=`), against this reference group (else
    /// the largest).
    pub dif: Option<DifRequest>,
}

/// `?dif=COLUMN[&dif_reference=GROUP]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DifRequest {
    pub column: String,
    pub reference: Option<String>,
}

/// A finished adaptive session as the adaptive section needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdaptiveSession {
    pub session: String,
    /// The id of the session's stored result (a `document_id` of `results`).
    pub result_id: Option<String>,
    pub theta: f64,
    pub se: f64,
    /// The items administered, in order.
    pub items: Vec<String>,
    pub stop_reason: String,
    pub calibration_version: i64,
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
    /// The options the report was computed with (which results count).
    pub options: ReportOptions,
    /// Moodle's quiz statistics of the same results.
    pub moodle: MoodleStatistics,
    /// How the exam's adaptive sessions went; null when it never ran adaptively.
    pub adaptive: Option<AdaptiveReport>,
    /// Bias checks by a roster column (`?dif=`); null unless asked for.
    pub dif: Option<dif::DifSection>,
}

/// Moodle's quiz statistics (<https://docs.moodle.org/dev/Quiz_statistics_calculations>,
/// computed by `examflow_engine::quiz_statistics`): every result with question-level
/// detail is an attempt, every question answered in them a question of max mark 1 (1 when
/// right, 0 when wrong or not in the result). Percentages are 0–100.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoodleStatistics {
    pub test: MoodleTest,
    /// In bank order, then any other question by id.
    pub questions: Vec<MoodleQuestion>,
}

/// Moodle's test statistics; scores are marks out of `max_score` (the number of questions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoodleTest {
    pub attempts: u64,
    pub max_score: f64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub standard_deviation: Option<f64>,
    /// As Moodle shows them: mean, median and SD as a percentage of `max_score`.
    pub mean_percentage: Option<f64>,
    pub median_percentage: Option<f64>,
    pub standard_deviation_percentage: Option<f64>,
    pub skewness: Option<f64>,
    /// Excess kurtosis (0 for a normal distribution).
    pub kurtosis: Option<f64>,
    /// Coefficient of internal consistency (%): Cronbach's alpha × 100.
    pub coefficient_of_internal_consistency: Option<f64>,
    /// Error ratio (%): 100·√(1 − CIC/100).
    pub error_ratio: Option<f64>,
    /// Standard error of the score: error ratio × SD / 100 (marks).
    pub standard_error: Option<f64>,
}

/// Moodle's statistics of one question (percentages 0–100).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoodleQuestion {
    pub item: String,
    pub question: String,
    pub max_mark: f64,
    /// Facility index: mean mark / max mark.
    pub facility_index: Option<f64>,
    /// Standard deviation of the marks, % of the max mark.
    pub standard_deviation: Option<f64>,
    /// 1 / number of options for single-answer multiple choice.
    pub random_guess_score: Option<f64>,
    pub intended_weight: Option<f64>,
    /// Null when the question's covariance with the total is negative.
    pub effective_weight: Option<f64>,
    pub negative_covariance: bool,
    /// Correlation with the rest of the test.
    pub discrimination_index: Option<f64>,
    /// Covariance with the rest of the test over its largest possible value.
    pub discriminative_efficiency: Option<f64>,
}

/// The adaptive section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveReport {
    /// Finished sessions of the selected results.
    pub sessions: u64,
    /// Final ability estimates (bins 0.5 wide from −4 to 4; the end bins hold values beyond).
    pub theta: Distribution,
    /// Final standard errors of θ (bins 0.1 wide from 0 to 1; the last holds larger).
    pub se: Distribution,
    /// Items administered per session (one bin per length).
    pub test_length: Distribution,
    /// Why sessions stopped, most frequent first.
    pub stop_reasons: Vec<StopReasonCount>,
    /// Per item: the share of sessions that administered it.
    pub exposure: Vec<ItemExposure>,
    /// Expected number of items two sessions have in common.
    pub mean_shared_items: Option<f64>,
    /// Mean pairwise test overlap rate (Chen, Ankenmann & Spray, 2003): the expected
    /// share of a test's items that another examinee also saw.
    pub overlap_rate: Option<f64>,
    pub calibration_versions: Vec<CalibrationVersionCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
    pub bins: Vec<DistributionBin>,
}

/// Values in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistributionBin {
    pub from: f64,
    pub to: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopReasonCount {
    pub stop_reason: String,
    pub sessions: u64,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemExposure {
    pub item: String,
    pub sessions: u64,
    pub exposure_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationVersionCount {
    pub calibration_version: i64,
    pub sessions: u64,
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

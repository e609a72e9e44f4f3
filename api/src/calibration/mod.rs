//! Item parameters of the adaptive exams: computing a calibration from every stored
//! response (fixed-form and adaptive results in the store, plus the ingested attempts whose
//! question ids are items of the bank: one response set per attempt, `user_correct` as the
//! answer's score, read from the lake's live `attempt_questions`), keeping each version (a running session keeps the one it started with), and
//! the CAT banks built from them.
//!
//! Cold start: an item with fewer than `adaptive.min_item_responses` responses, or one the
//! IRT fit cannot estimate (everyone right or everyone wrong), gets provisional
//! parameters from its p-value ([`provisional_params`]: a = 1, c = 1/options, b from the
//! p-value); an item nobody has answered yet gets p = 0.5. Every recalibration re-derives
//! all items from the responses stored by then, so provisional items become calibrated
//! ones as responses arrive.

mod activation;
mod compute;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use examflow_engine::Bank;
use examflow_engine::cat::{CatBank, CatItem, provisional_params};
use examflow_engine::irt::ItemParams;
use examflow_ingest::ResultDocument;
use examflow_ingest::store::{ResultFilter, SessionStore, StoredCalibration};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::error::ApiError;
use crate::server::{ApiPath, AppState};

pub use compute::{Computed, compute};

/// p-value assumed for an item nobody has answered yet.
const UNANSWERED_P_VALUE: f64 = 0.5;
/// Most stored results one calibration reads.
const MAX_CALIBRATION_RESULTS: usize = 1_000_000;

/// One item of a stored calibration version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedItem {
    pub item: String,
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Proportion correct among the responses (null when nobody answered).
    pub p_value: Option<f64>,
    pub responses: usize,
    /// True when the parameters come from the p-value, not an IRT fit.
    pub provisional: bool,
    /// Area between the item's curves in the active version and this one (after linking),
    /// when both calibrated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    /// Why an educator should look at the item (drift, misfit, DIF), in plain words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// The CAT banks of every (exam, version) in use, built once from the stored versions.
#[derive(Default)]
pub struct CalibrationCache {
    banks: Mutex<HashMap<(String, i64), Arc<CatBank>>>,
    /// One calibration at a time per process (they are CPU-heavy and versions are numbered
    /// in order). Servers sharing MongoDB are not serialised against each other: the store
    /// still numbers their versions once each, but two may add a version for the same new
    /// responses.
    running: tokio::sync::Mutex<()>,
}

impl CalibrationCache {
    /// The CAT bank of `exam` at its active version (where new sessions start), creating
    /// the first (provisional or calibrated) version when the exam has none.
    pub async fn active(
        &self,
        state: &AppState,
        exam: &Bank,
    ) -> Result<(i64, Arc<CatBank>), ApiError> {
        if let Some(stored) = active_version(state.session_store.as_ref(), &exam.name).await? {
            return Ok((stored.version, self.bank_of(exam, &stored)?));
        }
        let _one = self.running.lock().await;
        // Another request may have created it while this one waited.
        if let Some(stored) = active_version(state.session_store.as_ref(), &exam.name).await? {
            return Ok((stored.version, self.bank_of(exam, &stored)?));
        }
        let stored = compute_and_store(state, exam).await?;
        Ok((stored.version, self.bank_of(exam, &stored)?))
    }

    /// The CAT bank of one stored version (for a session that started on it).
    pub async fn version(
        &self,
        sessions: &dyn SessionStore,
        exam: &Bank,
        version: i64,
    ) -> Result<Arc<CatBank>, ApiError> {
        if let Some(bank) = self.cached(&exam.name, version) {
            return Ok(bank);
        }
        let stored = sessions
            .get_calibration(&exam.name, Some(version))
            .await?
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "calibration {version} of exam {:?} is missing",
                    exam.name
                ))
            })?;
        self.bank_of(exam, &stored)
    }

    /// Runs a new calibration of `exam` now and stores it as the next version.
    pub async fn recalibrate(
        &self,
        state: &AppState,
        exam: &Bank,
    ) -> Result<StoredCalibration, ApiError> {
        let _one = self.running.lock().await;
        compute_and_store(state, exam).await
    }

    /// Runs a new calibration of `exam` when it has more response sets (stored results and
    /// ingested attempts that answered its items) than its latest version used; returns the
    /// new version, if any. The responses are read once, for the check and the fit.
    pub async fn recalibrate_if_new_responses(
        &self,
        state: &AppState,
        exam: &Bank,
    ) -> Result<Option<StoredCalibration>, ApiError> {
        let _one = self.running.lock().await;
        let Some(latest) = state
            .session_store
            .get_calibration(&exam.name, None)
            .await?
        else {
            return Ok(None);
        };
        let results = stored_results(state, exam).await?;
        let attempts = attempt_responses(state, exam).await?;
        let items: std::collections::HashSet<&str> =
            exam.items.iter().map(|it| it.id.as_str()).collect();
        let answering = results
            .iter()
            .filter(|doc| doc.details.iter().any(|d| items.contains(d.item.as_str())))
            .count();
        if (answering + attempts.len()) as i64 <= latest.responses {
            return Ok(None);
        }
        // Another server may run the same schedule on the same responses: the version is
        // stored only on top of the one read above, so the same responses are fitted once.
        store_calibration(state, exam, results, attempts, Some(latest.version)).await
    }

    fn cached(&self, exam: &str, version: i64) -> Option<Arc<CatBank>> {
        let banks = self.banks.lock().unwrap_or_else(|p| p.into_inner());
        banks.get(&(exam.to_string(), version)).cloned()
    }

    fn bank_of(&self, exam: &Bank, stored: &StoredCalibration) -> Result<Arc<CatBank>, ApiError> {
        if let Some(bank) = self.cached(&exam.name, stored.version) {
            return Ok(bank);
        }
        let items: Vec<CalibratedItem> = serde_json::from_str(&stored.params).map_err(|e| {
            ApiError::Invalid(format!(
                "calibration {} of {:?} is not valid: {e}",
                stored.version, exam.name
            ))
        })?;
        let bank = Arc::new(cat_bank(exam, &items)?);
        let mut banks = self.banks.lock().unwrap_or_else(|p| p.into_inner());
        banks.insert((exam.name.clone(), stored.version), bank.clone());
        Ok(bank)
    }
}

/// The exam's active version; when none was ever activated (every version a candidate,
/// which only an older server's data can hold), its latest.
pub async fn active_version(
    sessions: &dyn SessionStore,
    exam: &str,
) -> Result<Option<StoredCalibration>, ApiError> {
    if let Some(active) = sessions.get_active_calibration(exam).await? {
        return Ok(Some(active));
    }
    Ok(sessions.get_calibration(exam, None).await?)
}

/// The exam's items with the version's parameters (items added to the bank after the
/// version was made get provisional ones), topics from the bank file.
fn cat_bank(exam: &Bank, items: &[CalibratedItem]) -> Result<CatBank, ApiError> {
    let by_id: HashMap<&str, &CalibratedItem> =
        items.iter().map(|i| (i.item.as_str(), i)).collect();
    let mut cat_items = Vec::with_capacity(exam.items.len());
    for item in &exam.items {
        let params = match by_id.get(item.id.as_str()) {
            Some(p) => ItemParams::new(item.id.clone(), p.a, p.b, p.c),
            None => provisional_params(
                item.id.clone(),
                UNANSWERED_P_VALUE,
                item.options.len() as u32,
            )
            .map_err(|e| ApiError::Invalid(e.to_string()))?,
        };
        let mut cat_item = CatItem::new(params);
        if let Some(topic) = &item.topic {
            cat_item = cat_item.with_topic(topic.clone());
        }
        cat_items.push(cat_item);
    }
    CatBank::new(cat_items).map_err(|e| ApiError::Invalid(format!("exam {:?}: {e}", exam.name)))
}

/// Every stored result of `exam` (fixed-form and adaptive), up to the calibration cap.
async fn stored_results(state: &AppState, exam: &Bank) -> Result<Vec<ResultDocument>, ApiError> {
    Ok(state
        .store
        .list_results(&ResultFilter {
            email: None,
            exam: Some(exam.name.clone()),
            limit: MAX_CALIBRATION_RESULTS,
        })
        .await?)
}

/// One ingested attempt's scored answers to items of a bank: (attempt `keen_id`, item
/// index, correct).
pub struct AttemptResponses {
    pub attempt: String,
    pub answers: Vec<(usize, bool)>,
}

/// The ingested attempts (committed and live rows of `attempt_questions`) that answered
/// items of `exam`, matched by question id; questions without `user_correct` are skipped.
async fn attempt_responses(
    state: &AppState,
    exam: &Bank,
) -> Result<Vec<AttemptResponses>, ApiError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::DataType;
    if exam.items.is_empty() {
        return Ok(Vec::new());
    }
    let index: HashMap<&str, usize> = exam
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let ids: Vec<String> = exam
        .items
        .iter()
        .map(|it| format!("'{}'", it.id.replace('\'', "''")))
        .collect();
    let ctx = examflow_ingest::lake::query::new_session();
    examflow_ingest::lake::query::register_lake(&ctx, &state.lake, true).await?;
    let sql = format!(
        "SELECT CAST(keen_id AS VARCHAR), CAST(question_id AS VARCHAR), user_correct \
         FROM attempt_questions \
         WHERE user_correct IS NOT NULL AND keen_id IS NOT NULL AND question_id IN ({})",
        ids.join(", ")
    );
    let batches = examflow_ingest::lake::query::run_sql(&ctx, &sql).await?;
    let mut by_attempt: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<AttemptResponses> = Vec::new();
    for batch in &batches {
        let cast = |i: usize, to: &DataType| {
            datafusion::arrow::compute::cast(batch.column(i), to)
                .map_err(|e| ApiError::Invalid(format!("reading attempt_questions: {e}")))
        };
        let (keys, questions, correct) = (
            cast(0, &DataType::Utf8)?,
            cast(1, &DataType::Utf8)?,
            cast(2, &DataType::Boolean)?,
        );
        let (keys, questions, correct) = (
            keys.as_string::<i32>(),
            questions.as_string::<i32>(),
            correct.as_boolean(),
        );
        for row in 0..batch.num_rows() {
            if keys.is_null(row) || questions.is_null(row) || correct.is_null(row) {
                continue;
            }
            let Some(&item) = index.get(questions.value(row)) else {
                continue;
            };
            let slot = match by_attempt.get(keys.value(row)) {
                Some(&slot) => slot,
                None => {
                    if out.len() >= MAX_CALIBRATION_RESULTS {
                        continue;
                    }
                    by_attempt.insert(keys.value(row).to_string(), out.len());
                    out.push(AttemptResponses {
                        attempt: keys.value(row).to_string(),
                        answers: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[slot].answers.push((item, correct.value(row)));
        }
    }
    Ok(out)
}

async fn compute_and_store(state: &AppState, exam: &Bank) -> Result<StoredCalibration, ApiError> {
    let results = stored_results(state, exam).await?;
    let attempts = attempt_responses(state, exam).await?;
    let stored = store_calibration(state, exam, results, attempts, None).await?;
    stored.ok_or_else(|| ApiError::Invalid("the calibration was not stored".into()))
}

/// Fits `exam` on the given responses and stores the result as the next version; with
/// `after`, only if that is still the latest version (else `None`: another server added
/// one meanwhile).
async fn store_calibration(
    state: &AppState,
    exam: &Bank,
    results: Vec<ResultDocument>,
    attempts: Vec<AttemptResponses>,
    after: Option<i64>,
) -> Result<Option<StoredCalibration>, ApiError> {
    let active = active_version(state.session_store.as_ref(), &exam.name).await?;
    let first = active.is_none();
    let previous: Vec<CalibratedItem> = match &active {
        Some(active) => serde_json::from_str(&active.params).unwrap_or_default(),
        None => Vec::new(),
    };
    let exam_owned = exam.clone();
    let adaptive = state.config.adaptive.clone();
    let (items, summary, reasons) = tokio::task::spawn_blocking(move || {
        let Computed {
            mut items,
            mut summary,
            fitted,
        } = compute(
            &exam_owned,
            &results,
            &attempts,
            adaptive.calibration_model,
            adaptive.min_item_responses,
        )?;
        let mut reasons = Vec::new();
        if let Some((data, calibration)) = &fitted {
            let (fit, misfit) =
                activation::check_fit(&mut items, data, calibration, &adaptive.activation);
            summary["fit"] = fit;
            reasons.extend(misfit);
        }
        let placement = activation::place_on_scale(
            &mut items,
            &previous,
            adaptive.linking,
            &adaptive.activation,
            fitted.as_ref(),
        );
        summary["linking"] = placement.linking;
        reasons.extend(placement.reasons);
        Ok::<_, ApiError>((items, summary, reasons))
    })
    .await
    .map_err(|e| ApiError::Invalid(format!("calibration failed: {e}")))??;
    let mut summary = summary;
    let goes_live = first || (state.config.adaptive.activation.auto && reasons.is_empty());
    summary["activation"] = json!({
        "replaces": active.as_ref().map(|a| a.version),
        "auto": state.config.adaptive.activation.auto,
        "checks_passed": reasons.is_empty(),
        "reasons": reasons,
    });
    let source = if items.iter().any(|i| !i.provisional) {
        "calibration"
    } else {
        "provisional"
    };
    let mut stored = StoredCalibration {
        exam: exam.name.clone(),
        version: 0,
        created_at: examflow_ingest::document::format_timestamp(Utc::now()),
        source: source.into(),
        responses: summary["results"].as_i64().unwrap_or_default(),
        params: serde_json::to_string(&items).unwrap_or_default(),
        summary: summary.to_string(),
        activation: goes_live.then_some(0),
    };
    let version = match after {
        None => Some(state.session_store.add_calibration(stored.clone()).await?),
        Some(after) => {
            state
                .session_store
                .add_calibration_after(stored.clone(), after)
                .await?
        }
    };
    let Some(version) = version else {
        tracing::info!(exam = %exam.name, ?after, "another server stored a calibration first; this one is dropped");
        return Ok(None);
    };
    stored.version = version;
    if goes_live {
        tracing::info!(exam = %exam.name, version, source, responses = stored.responses, "stored a calibration: active");
    } else {
        tracing::warn!(exam = %exam.name, version, source, responses = stored.responses, "stored a calibration as a candidate: it waits for an educator to activate it");
    }
    // The activation number the store gave it, for the response.
    Ok(Some(
        state
            .session_store
            .get_calibration(&exam.name, Some(version))
            .await?
            .unwrap_or(stored),
    ))
}

/// A stored version as the API shows it; `active` is the exam's active version.
pub fn calibration_json(
    stored: &StoredCalibration,
    active: Option<i64>,
    with_items: bool,
) -> Value {
    let summary: Value = serde_json::from_str(&stored.summary).unwrap_or(Value::Null);
    let status = if Some(stored.version) == active {
        "active"
    } else if stored.activation.is_some() {
        "retired"
    } else {
        "candidate"
    };
    let mut v = json!({
        "exam": stored.exam,
        "version": stored.version,
        "status": status,
        "created_at": stored.created_at,
        "source": stored.source,
        "responses": stored.responses,
        "summary": summary,
    });
    if with_items {
        v["items"] = serde_json::from_str(&stored.params).unwrap_or(Value::Null);
    }
    v
}

/// The exam named `name`, or 404.
pub fn exam_of(state: &AppState, name: &str) -> Result<Arc<Bank>, ApiError> {
    state
        .banks
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("exam {name:?}")))
}

/// `POST /api/exams/{name}/calibrate` (educator, admin): a new version from every stored
/// response; running sessions keep theirs.
pub async fn post_calibrate(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    identity.require_staff()?;
    let exam = exam_of(&state, &name)?;
    let stored = state.calibrations.recalibrate(&state, &exam).await?;
    let active = active_number(&state, &name).await?;
    Ok((
        StatusCode::CREATED,
        Json(calibration_json(&stored, active, true)),
    )
        .into_response())
}

/// Item parameters calibrated elsewhere (e.g. `examflow calibrate --format json`, mirt,
/// catR), to be imported as a new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub items: Vec<ImportedItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedItem {
    pub item: String,
    pub a: f64,
    pub b: f64,
    #[serde(default)]
    pub c: f64,
}

/// `POST /api/exams/{name}/calibrations` (educator, admin): imports item parameters as the
/// next version. Every item must be one of the exam's (by id); the exam's other items get
/// provisional parameters from their stored responses' p-values.
pub async fn import_calibration(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(name): ApiPath<String>,
    crate::server::ApiJson(request): crate::server::ApiJson<ImportRequest>,
) -> Result<Response, ApiError> {
    identity.require_staff()?;
    let exam = exam_of(&state, &name)?;
    let bad = |m: String| ApiError::bad_request("invalid_parameters", m);
    if request.items.is_empty() {
        return Err(bad("no items given".into()));
    }
    let mut imported: HashMap<String, &ImportedItem> = HashMap::new();
    for (n, item) in request.items.iter().enumerate() {
        if exam.item(&item.item).is_none() {
            return Err(bad(format!(
                "items[{n}]: {:?} is not an item of exam {name:?} (ids are in GET /api/exams/{name})",
                item.item
            )));
        }
        use examflow_engine::cat::{MAX_ABS_DIFFICULTY, MAX_DISCRIMINATION};
        if !(item.a > 0.0
            && item.a <= MAX_DISCRIMINATION
            && item.b.abs() <= MAX_ABS_DIFFICULTY
            && (0.0..1.0).contains(&item.c))
        {
            return Err(bad(format!(
                "items[{n}] ({}): need 0 < a ≤ {MAX_DISCRIMINATION}, |b| ≤ {MAX_ABS_DIFFICULTY} and 0 ≤ c < 1",
                item.item
            )));
        }
        if imported.insert(item.item.clone(), item).is_some() {
            return Err(bad(format!("items[{n}]: {:?} is given twice", item.item)));
        }
    }
    let _one = state.calibrations.running.lock().await;
    let results = stored_results(&state, &exam).await?;
    // p-values and provisional parameters for the items not imported.
    let mut items = compute(
        &exam,
        &results,
        &[],
        state.config.adaptive.calibration_model,
        usize::MAX,
    )?
    .items;
    for entry in &mut items {
        if let Some(given) = imported.get(&entry.item) {
            entry.a = given.a;
            entry.b = given.b;
            entry.c = given.c;
            entry.provisional = false;
        }
    }
    let summary = json!({
        "results": results.len(),
        "imported": imported.len(),
        "items_provisional": items.iter().filter(|i| i.provisional).count(),
    });
    let mut stored = StoredCalibration {
        exam: exam.name.clone(),
        version: 0,
        created_at: examflow_ingest::document::format_timestamp(Utc::now()),
        source: "imported".into(),
        responses: results.len() as i64,
        params: serde_json::to_string(&items).unwrap_or_default(),
        summary: summary.to_string(),
        // An educator's own parameters go live at once.
        activation: Some(0),
    };
    stored.version = state.session_store.add_calibration(stored.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(calibration_json(&stored, Some(stored.version), true)),
    )
        .into_response())
}

/// `GET /api/exams/{name}/calibrations` (educator, admin): every version, newest first.
pub async fn list_calibrations(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    exam_of(&state, &name)?;
    let active = active_number(&state, &name).await?;
    let versions = state.session_store.list_calibrations(Some(name)).await?;
    Ok(Json(Value::Array(
        versions
            .iter()
            .map(|v| calibration_json(v, active, false))
            .collect(),
    )))
}

/// `GET /api/exams/{name}/calibrations/{version}` (educator, admin), with the items.
pub async fn get_calibration(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    exam_of(&state, &name)?;
    let stored = state
        .session_store
        .get_calibration(&name, Some(version))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("calibration {version} of exam {name:?}")))?;
    let active = active_number(&state, &name).await?;
    Ok(Json(calibration_json(&stored, active, true)))
}

/// `POST /api/exams/{name}/calibrations/{version}/activate` (educator, admin): makes the
/// version the one new sessions and reports use: a candidate that failed the checks, or
/// an earlier version to roll back to. Running sessions keep theirs.
pub async fn activate_calibration(
    State(state): State<AppState>,
    identity: Identity,
    ApiPath((name, version)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    identity.require_staff()?;
    exam_of(&state, &name)?;
    state
        .session_store
        .activate_calibration(&name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("calibration {version} of exam {name:?}")))?;
    tracing::info!(exam = %name, version, by = %identity.email, "activated a calibration");
    let stored = state
        .session_store
        .get_calibration(&name, Some(version))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("calibration {version} of exam {name:?}")))?;
    let active = active_number(&state, &name).await?;
    Ok(Json(calibration_json(&stored, active, true)))
}

/// The version number of the exam's active calibration.
async fn active_number(state: &AppState, exam: &str) -> Result<Option<i64>, ApiError> {
    Ok(active_version(state.session_store.as_ref(), exam)
        .await?
        .map(|c| c.version))
}

/// The schedule: every `calibrate_interval_secs`, recalibrate each exam that has a
/// version and more response sets (stored results and ingested attempts) than its latest
/// version used.
pub async fn run_schedule(state: AppState) {
    let every = state.config.adaptive.calibrate_interval_secs;
    if every == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(every));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        for exam in state.banks.exams.values() {
            if let Err(e) = state
                .calibrations
                .recalibrate_if_new_responses(&state, exam)
                .await
            {
                tracing::warn!(exam = %exam.name, error = %e, "scheduled calibration failed");
            }
        }
    }
}

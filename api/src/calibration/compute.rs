//! Item parameters of one exam from its stored responses: the IRT fit, and provisional
//! parameters from p-values for the items the fit cannot (yet) estimate.

use std::collections::HashMap;

use examflow_engine::Bank;
use examflow_engine::cat::provisional_params;
use examflow_engine::irt::{
    Calibration, CalibrationOptions, Model, ResponseMatrix, SeMethod, calibrate,
};
use examflow_ingest::ResultDocument;
use serde_json::{Value, json};

use super::{AttemptResponses, CalibratedItem, UNANSWERED_P_VALUE};
use crate::error::ApiError;

/// What [`compute`] found.
pub struct Computed {
    /// Every item of the exam, in bank order; `provisional: false` exactly for the items
    /// this fit calibrated.
    pub items: Vec<CalibratedItem>,
    pub summary: Value,
    /// The response matrix and the IRT fit on its own N(0, 1) scale, when one ran.
    pub fitted: Option<(ResponseMatrix, Calibration)>,
}

/// Item parameters for `exam` from `results` (fixed-form and adaptive alike: every
/// answered item of every result is one response; unanswered items are missing) and from
/// ingested `attempts` (one response set each).
pub fn compute(
    exam: &Bank,
    results: &[ResultDocument],
    attempts: &[AttemptResponses],
    model: Model,
    min_item_responses: usize,
) -> Result<Computed, ApiError> {
    let index: HashMap<&str, usize> = exam
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let mut rows: Vec<Vec<Option<u8>>> = Vec::with_capacity(results.len());
    let mut person_ids = Vec::with_capacity(results.len());
    for doc in results {
        let mut row = vec![None; exam.items.len()];
        let mut any = false;
        for mark in &doc.details {
            if let Some(&i) = index.get(mark.item.as_str()) {
                row[i] = Some(u8::from(mark.is_correct));
                any = true;
            }
        }
        if any {
            rows.push(row);
            person_ids.push(doc.id.clone());
        }
    }
    let from_results = rows.len();
    for attempt in attempts {
        let mut row = vec![None; exam.items.len()];
        for &(i, right) in &attempt.answers {
            if i < row.len() {
                row[i] = Some(u8::from(right));
            }
        }
        if row.iter().any(Option::is_some) {
            rows.push(row);
            person_ids.push(format!("attempt:{}", attempt.attempt));
        }
    }
    let n = exam.items.len();
    let mut responses = vec![0usize; n];
    let mut correct = vec![0usize; n];
    for row in &rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(v) = v {
                responses[i] += 1;
                correct[i] += usize::from(*v);
            }
        }
    }
    // Fit only when some item has enough responses to be worth it.
    let fit_worthwhile =
        responses.iter().any(|&r| r >= min_item_responses.max(2)) && rows.len() >= 2;
    let mut fitted: Option<(ResponseMatrix, Calibration)> = None;
    let mut fit_error: Option<String> = None;
    if fit_worthwhile {
        let ids: Vec<String> = exam.items.iter().map(|i| i.id.clone()).collect();
        match ResponseMatrix::from_rows_with_ids(ids, person_ids, rows.clone()) {
            Ok(data) => {
                let mut options = CalibrationOptions::new(model);
                options.se_method = SeMethod::None;
                options.max_iterations = 300;
                match calibrate(&data, &options) {
                    Ok(c) => fitted = Some((data, c)),
                    Err(e) => fit_error = Some(e.to_string()),
                }
            }
            Err(e) => fit_error = Some(e.to_string()),
        }
    }
    let mut items = Vec::with_capacity(n);
    for (i, item) in exam.items.iter().enumerate() {
        let p_value = (responses[i] > 0).then(|| correct[i] as f64 / responses[i] as f64);
        let fit = fitted.as_ref().map(|(_, c)| &c.items[i]).filter(|p| {
            responses[i] >= min_item_responses
                && p.estimable
                && p.a.is_finite()
                && p.b.is_finite()
                && (0.05..=6.0).contains(&p.a)
                && p.b.abs() <= 6.0
        });
        let entry = match fit {
            Some(p) => CalibratedItem {
                item: item.id.clone(),
                a: p.a,
                b: p.b,
                c: if p.c.is_finite() { p.c } else { 0.0 },
                p_value,
                responses: responses[i],
                provisional: false,
                drift: None,
                flags: Vec::new(),
            },
            None => {
                let p = provisional_params(
                    item.id.clone(),
                    p_value.unwrap_or(UNANSWERED_P_VALUE),
                    item.options.len() as u32,
                )
                .map_err(|e| ApiError::Invalid(e.to_string()))?;
                CalibratedItem {
                    item: item.id.clone(),
                    a: p.a,
                    b: p.b,
                    c: p.c,
                    p_value,
                    responses: responses[i],
                    provisional: true,
                    drift: None,
                    flags: Vec::new(),
                }
            }
        };
        items.push(entry);
    }
    let summary = json!({
        "results": rows.len(),
        "stored_results": from_results,
        "ingested_attempts": rows.len() - from_results,
        "model": model.as_str(),
        "min_item_responses": min_item_responses,
        "items_calibrated": items.iter().filter(|i| !i.provisional).count(),
        "items_provisional": items.iter().filter(|i| i.provisional).count(),
        "converged": fitted.as_ref().map(|(_, c)| c.converged),
        "iterations": fitted.as_ref().map(|(_, c)| c.iterations),
        "log_likelihood": fitted.as_ref().map(|(_, c)| c.log_likelihood).filter(|x| x.is_finite()),
        "fit_error": fit_error,
    });
    Ok(Computed {
        items,
        summary,
        fitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use examflow_engine::AnswerChoice;
    use examflow_engine::scoring::score_submission;

    fn bank(n: usize) -> Bank {
        let questions: Vec<Value> = (0..n)
            .map(|i| json!({"question": format!("q{i}"), "options": ["right", "wrong", "other"], "correct_answer": "right"}))
            .collect();
        Bank::parse(
            "demo",
            "demo.json",
            Value::Array(questions).to_string().as_bytes(),
        )
        .unwrap()
    }

    fn result(bank: &Bank, right: &[bool]) -> ResultDocument {
        let answers: Vec<AnswerChoice> = right
            .iter()
            .map(|&r| serde_json::from_value(json!(if r { "right" } else { "wrong" })).unwrap())
            .collect();
        ResultDocument::new("s@x", score_submission(bank, &answers).unwrap(), Utc::now())
    }

    #[test]
    fn no_responses_give_provisional_parameters_from_p_half() {
        let b = bank(3);
        let Computed { items, summary, .. } = compute(&b, &[], &[], Model::TwoPl, 30).unwrap();
        assert!(
            items
                .iter()
                .all(|i| i.provisional && i.responses == 0 && i.p_value.is_none())
        );
        let expected = provisional_params("x", 0.5, 3).unwrap();
        assert!((items[0].b - expected.b).abs() < 1e-12);
        assert_eq!(summary["items_calibrated"], 0);
    }

    #[test]
    fn enough_responses_calibrate_and_easier_items_get_lower_b() {
        let b = bank(4);
        // Item i is answered right by persons whose "ability" index exceeds a threshold
        // growing with i: item 0 easiest, item 3 hardest, with noise from the pattern.
        let mut results = Vec::new();
        let mut state = 17u64;
        for p in 0..400 {
            let ability = (p as f64 / 400.0) * 6.0 - 3.0;
            let row: Vec<bool> = (0..4)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                    let difficulty = -1.5 + i as f64;
                    u < 1.0 / (1.0 + (-(ability - difficulty)).exp())
                })
                .collect();
            results.push(result(&b, &row));
        }
        let Computed { items, summary, .. } = compute(&b, &results, &[], Model::TwoPl, 30).unwrap();
        assert_eq!(summary["items_calibrated"], 4, "{summary}");
        assert!(items.iter().all(|i| !i.provisional && i.responses == 400));
        for w in items.windows(2) {
            assert!(w[0].b < w[1].b, "{items:?}");
        }
        // Too few responses per item: provisional again, from the observed p-values.
        let items = compute(&b, &results[..20], &[], Model::TwoPl, 30)
            .unwrap()
            .items;
        assert!(items.iter().all(|i| i.provisional && i.p_value.is_some()));
    }
}

//! Item statistics of an exam from its stored submissions: classical (CTT) statistics,
//! distractor analysis and a 2PL calibration, for `GET /api/exams/{name}/item-stats`.

use std::collections::HashMap;

use examflow_engine::Bank;
use examflow_engine::ctt::{analyze, distractor_analysis};
use examflow_engine::irt::{CalibrationOptions, MISSING, Model, ResponseMatrix, calibrate};
use examflow_ingest::ResultDocument;
use serde_json::{Value, json};

use crate::calibrate_cmd::calibration_json;

/// Builds the persons × items matrix and the chosen options from stored results. A
/// question is matched by its stable item id; questions a result does not mention (for
/// instance, added to the bank later) are missing for that person.
pub fn item_stats(bank: &Bank, results: &[ResultDocument]) -> Value {
    let index: HashMap<&str, usize> = bank
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.id.as_str(), i))
        .collect();
    let n_items = bank.items.len();
    let mut data = vec![MISSING; results.len() * n_items];
    let mut choices = vec![vec![None; n_items]; results.len()];
    for (p, result) in results.iter().enumerate() {
        for mark in &result.details {
            if let Some(&i) = index.get(mark.item.as_str()) {
                data[p * n_items + i] = u8::from(mark.is_correct);
                choices[p][i] = bank.items[i]
                    .options
                    .iter()
                    .position(|o| *o == mark.user_answer);
            }
        }
    }
    let item_ids: Vec<String> = bank.items.iter().map(|i| i.id.clone()).collect();
    let person_ids: Vec<String> = results.iter().map(|r| r.id.clone()).collect();
    let questions: Vec<Value> = bank
        .items
        .iter()
        .map(|i| json!({"item": i.id, "question": i.question, "options": i.options}))
        .collect();
    let mut out = json!({
        "exam": bank.name,
        "n_submissions": results.len(),
        "questions": questions,
    });
    if results.is_empty() {
        out["ctt"] = Value::Null;
        out["irt"] = json!({"error": "no submissions yet"});
        return out;
    }
    let matrix = match ResponseMatrix::new(item_ids, person_ids, data) {
        Ok(m) => m,
        Err(e) => {
            out["error"] = json!(e.to_string());
            return out;
        }
    };
    out["ctt"] = serde_json::to_value(analyze(&matrix)).unwrap_or_default();
    let key: Vec<usize> = bank.items.iter().map(|i| i.correct_index()).collect();
    let n_options: Vec<usize> = bank.items.iter().map(|i| i.options.len()).collect();
    out["distractors"] = match distractor_analysis(&choices, &key, &n_options) {
        Ok(d) => serde_json::to_value(d).unwrap_or_default(),
        Err(e) => json!({"error": e}),
    };
    out["irt"] = match calibrate(&matrix, &CalibrationOptions::new(Model::TwoPl)) {
        Ok(c) => calibration_json(&c),
        Err(e) => json!({"error": e.to_string()}),
    };
    out
}

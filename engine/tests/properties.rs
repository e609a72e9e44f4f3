//! Property tests of the engine's parsers of untrusted input: question banks (uploaded
//! files) and response CSVs. Whatever the bytes, they return a value or an error, never
//! panic; well-formed input reads back as written.

use examflow_engine::Bank;
use examflow_engine::irt::ResponseMatrix;
use proptest::prelude::*;

/// JSON-ish text: arbitrary mixes of the characters that steer a JSON parser.
fn jsonish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"question\"".to_string()),
            Just("\"options\"".to_string()),
            Just("\"correct_answer\"".to_string()),
            Just("\"topic\"".to_string()),
            Just("\"id\"".to_string()),
            Just("null".to_string()),
            Just("1e999".to_string()),
            Just("-0".to_string()),
            "\"[^\"\\\\]{0,8}\"",
            "[0-9]{1,4}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn banks_from_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Bank::parse("exam", "exam.json", &bytes);
    }

    #[test]
    fn banks_from_jsonish_text_never_panic(text in jsonish()) {
        let _ = Bank::parse("exam", "exam.json", text.as_bytes());
    }

    #[test]
    fn well_formed_banks_read_back(questions in proptest::collection::vec(
        ("[a-zA-Z ?]{1,30}", proptest::collection::btree_set("[a-z]{1,6}", 2..5)), 1..20)) {
        let doc: Vec<serde_json::Value> = questions.iter().map(|(q, options)| {
            let options: Vec<&String> = options.iter().collect();
            serde_json::json!({"question": q, "options": options, "correct_answer": options[0]})
        }).collect();
        let text = serde_json::to_vec(&doc).unwrap();
        let bank = Bank::parse("exam", "exam.json", &text);
        if questions.iter().all(|(q, _)| !q.trim().is_empty()) {
            let bank = bank.unwrap();
            prop_assert_eq!(bank.items.len(), questions.len());
            for (item, (_, options)) in bank.items.iter().zip(&questions) {
                prop_assert_eq!(item.options.len(), options.len());
            }
        }
    }

    #[test]
    fn response_csvs_from_any_text_never_panic(text in "[01,.NA\n\r \t\"x]{0,200}") {
        let _ = ResponseMatrix::from_csv_str(&text);
    }

    #[test]
    fn well_formed_response_csvs_read_back(
        rows in proptest::collection::vec(proptest::collection::vec(0u8..3, 3), 1..30)
    ) {
        let mut text = String::from("i1,i2,i3\n");
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(|v| match v { 0 => "0", 1 => "1", _ => "" }).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        let m = ResponseMatrix::from_csv_str(&text).unwrap();
        prop_assert_eq!((m.n_persons, m.n_items), (rows.len(), 3));
        for (p, row) in rows.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                let want = if *v == 2 { examflow_engine::irt::MISSING } else { *v };
                prop_assert_eq!(m.data[p * 3 + i], want);
            }
        }
    }
}

/// An item's parameters from anywhere in (and at the edges of) what a parameter CSV can
/// hold: tiny and huge slopes, far difficulties, guessing near 1.
fn any_item() -> impl Strategy<Value = (f64, f64, f64)> {
    (
        prop_oneof![1e-6..1e-2f64, 0.05..6.0f64, 6.0..1e4f64],
        prop_oneof![-6.0..6.0f64, -1e3..1e3f64],
        prop_oneof![Just(0.0), 0.0..0.999f64],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// `examflow link` reads two parameter files a user supplies: whatever they hold, every
    /// method returns constants with A > 0 and finite B (and drift areas in [0, 1]) or an
    /// error, never a panic or a hang.
    #[test]
    fn linking_any_parameters_never_panics(
        pairs in proptest::collection::vec((any_item(), any_item()), 1..40),
        method in 0usize..4,
        threshold in prop_oneof![Just(f64::INFINITY), 0.001..0.5f64],
    ) {
        use examflow_engine::irt::{ItemParams, LinkingMethod, LinkingOptions, link};
        let item = |i: usize, (a, b, c): (f64, f64, f64)| ItemParams::new(format!("q{i}"), a, b, c);
        let old: Vec<ItemParams> = pairs.iter().enumerate().map(|(i, p)| item(i, p.0)).collect();
        let new: Vec<ItemParams> = pairs.iter().enumerate().map(|(i, p)| item(i, p.1)).collect();
        let method = [
            LinkingMethod::StockingLord,
            LinkingMethod::Haebara,
            LinkingMethod::MeanMean,
            LinkingMethod::MeanSigma,
        ][method];
        let options = LinkingOptions { method, drift_threshold: threshold, ..LinkingOptions::default() };
        if let Ok(l) = link(&old, &new, &options) {
            prop_assert!(l.a.is_finite() && l.a > 0.0 && l.b.is_finite(), "{l:?}");
            prop_assert!(!l.anchors.is_empty());
            for d in &l.drift {
                prop_assert!((0.0..=1.0 + 1e-9).contains(&d.area), "{d:?}");
            }
        }
    }
}

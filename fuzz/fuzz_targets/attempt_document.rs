//! Assessment attempt documents: arbitrary bytes → `Attempt::parse`, then every accessor
//! the ingest pipeline calls.

#![no_main]

use examflow_formats::attempts::{Attempt, DedupKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(attempt) = Attempt::parse(data) else {
        return;
    };
    // The decoder is strict: what it accepts is valid JSON (UTF-8, then syntax; not
    // serde_json::Value, which refuses its own raw-value marker key as a document key).
    let valid = std::str::from_utf8(data)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    assert!(valid, "Attempt::parse accepted invalid JSON");
    for key in DedupKey::ALL {
        match attempt.key(key) {
            Some(k) => {
                assert!(!k.is_empty());
                assert_eq!(attempt.require_key(key), Ok(k));
            }
            None => assert!(attempt.require_key(key).is_err()),
        }
    }
    let score = attempt.score();
    assert!(score >= 0 && score as usize <= attempt.questions.len());
    let (first, last) = attempt.answer_span_us();
    assert_eq!(first.is_some(), last.is_some());
    if let (Some(first), Some(last)) = (first, last) {
        assert!(first <= last);
    }
    for question in &attempt.questions {
        let _ = question.is_correct();
        if let (Some(f), Some(l)) = question.answer_span_us() {
            assert!(f <= l);
            assert!(first.is_some_and(|first| first <= f));
            assert!(last.is_some_and(|last| l <= last));
        }
    }
    // Timestamps lie within the years 1 to 9999 (the duration column subtracts them).
    const MIN_US: i64 = -62_135_596_800_000_000;
    const MAX_US: i64 = 253_402_300_799_999_999;
    let times = [
        attempt.started_at_us,
        attempt.keen_timestamp_us,
        attempt.keen_created_at_us,
    ];
    let option_times = attempt
        .questions
        .iter()
        .flat_map(|q| q.options.iter().map(|o| o.answered_at_us));
    for t in times.into_iter().chain(option_times).flatten() {
        assert!((MIN_US..=MAX_US).contains(&t), "timestamp {t} out of range");
    }
    if let Some(max_attempts) = attempt.max_attempts {
        assert!(max_attempts.is_finite());
    }
});

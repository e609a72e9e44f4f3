//! Property tests of the ingest's parsers of untrusted bytes: assessment-attempt documents,
//! Debezium change events and the ability snapshot file. Whatever the bytes (random, or a
//! real document cut short or with bytes changed), they return a value or an error, never
//! panic.

use examflow_ingest::abilities::AbilityTracker;
use examflow_ingest::attempts::Attempt;
use examflow_ingest::debezium::parse_change_event;
use proptest::prelude::*;

/// Read once: every case mutates one of them.
static ATTEMPTS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(sample_attempts);
static ENVELOPES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(sample_envelopes);

fn sample_attempts() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/attempts/sample-300.json"
    );
    let documents: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    documents
        .iter()
        .take(20)
        .map(|d| serde_json::to_vec(d).unwrap())
        .collect()
}

fn sample_envelopes() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    // One the capture's own writer makes, so there is always a real envelope to mutate.
    out.push(
        br#"{"before":null,"after":"{\"_id\": {\"$oid\": \"6b13ba0123a055c71966bdb9\"}, \"email\": \"a@example.com\", \"exam\": \"rust-basics\", \"score\": 3, \"total\": 4, \"percentage\": 75, \"result\": \"passed\", \"details\": [], \"submitted_at\": \"2026-01-01T00:00:00.000Z\"}","op":"c","ts_ms":1,"source":{"db":"exams","collection":"score"}}"#
            .to_vec(),
    );
    out
}

/// A real document with `edits` bytes replaced and cut at `cut` (as a share of its length).
fn mutate(doc: &[u8], edits: &[(usize, u8)], cut: f64) -> Vec<u8> {
    let mut bytes = doc.to_vec();
    for (at, b) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *b;
        }
    }
    let keep = ((bytes.len() as f64) * cut.clamp(0.0, 1.0)) as usize;
    bytes.truncate(keep.max(1));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn attempts_from_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Attempt::parse(&bytes);
    }

    #[test]
    fn mutated_attempts_never_panic(
        which in 0usize..20,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in 0.0f64..1.2,
    ) {
        let doc = mutate(&ATTEMPTS[which % ATTEMPTS.len()], &edits, cut);
        if let Ok(attempt) = Attempt::parse(&doc) {
            // What parses also has a key or says it has none.
            let _ = attempt.key(Default::default());
        }
    }

    #[test]
    fn change_events_from_any_bytes_never_panic(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
    ) {
        let _ = parse_change_event(key.as_deref(), value.as_deref());
    }

    #[test]
    fn mutated_change_events_never_panic(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in 0.0f64..1.2,
    ) {
        let doc = mutate(&ENVELOPES[which % ENVELOPES.len()], &edits, cut);
        let _ = parse_change_event(Some(br#"{"id":"x"}"#), Some(&doc));
    }

    #[test]
    fn ability_snapshots_from_any_bytes_are_refused_without_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        prop_assert!(AbilityTracker::decode(&bytes).is_err());
    }
}

use serde_json::Value;

use super::*;
use crate::attempts::fixtures::fixture_payloads;

#[test]
fn fixture_record_parses_without_copying_strings() {
    let Some(payloads) = fixture_payloads() else {
        return;
    };
    let attempt = Attempt::parse(&payloads[0]).unwrap();
    assert!(matches!(attempt.keen_id, Some(Cow::Borrowed(_))));
    assert!(matches!(
        attempt.questions[0].options[0].id,
        Some(Cow::Borrowed(_))
    ));
    assert_eq!(
        attempt.key(DedupKey::KeenId),
        Some("5a6745820eb8ab00016be1f1")
    );
    assert_eq!(
        attempt.key(DedupKey::UserExamId),
        Some("6d4089e4-bde5-4a22-b65f-18bce9ab79c8")
    );
    assert_eq!(
        attempt.key(DedupKey::SequenceId),
        Some("5b28a462-7a3b-42e0-b508-09f3906d1703")
    );
    assert_eq!(attempt.score(), 2);
}

/// A minimal valid document with `patch` spliced in: `{PATCH"sequences": …}`.
fn doc_with(patch: &str, questions: &str) -> Vec<u8> {
    format!(r#"{{{patch}"keen_id": "k", "sequences": {{"questions": {questions}}}}}"#).into_bytes()
}

#[test]
fn bad_inputs_are_refused_with_path_and_reason() {
    let q_ok = r#"{"id": "q", "options": [{"id": "o", "checked": true}]}"#;
    let three = format!("[{q_ok}, {q_ok}, {{\"options\": [{{\"checked\": \"maybe\"}}]}}]");
    let cases: Vec<(Vec<u8>, &str, String)> = vec![
        (
            doc_with(r#""certification": "maybe", "#, "[]"),
            "certification",
            r#"expected a boolean or "true"/"false", found "maybe""#.into(),
        ),
        (
            doc_with("", &three),
            "sequences.questions[2].options[0].checked",
            r#"expected a boolean or "true"/"false", found "maybe""#.into(),
        ),
        (
            doc_with("", "5"),
            "sequences.questions",
            "expected an array, found 5".into(),
        ),
        (
            doc_with("", "{}"),
            "sequences.questions",
            "expected an array, found an object".into(),
        ),
        (
            doc_with("", "null"),
            "sequences.questions",
            "expected an array, found null".into(),
        ),
        (
            doc_with("", "[null]"),
            "sequences.questions[0]",
            "expected an object, found null".into(),
        ),
        (
            doc_with("", "[[]]"),
            "sequences.questions[0]",
            "expected an object, found an array".into(),
        ),
        (
            doc_with("", r#"[{"id": "q"}]"#),
            "sequences.questions[0].options",
            "required key is missing".into(),
        ),
        (
            doc_with("", r#"[{"options": [1]}]"#),
            "sequences.questions[0].options[0]",
            "expected an object, found 1".into(),
        ),
        (
            doc_with("", r#"[{"options": "none"}]"#),
            "sequences.questions[0].options",
            r#"expected an array, found "none""#.into(),
        ),
        (
            doc_with("", r#"[{"options": [{"submitted": 2}]}]"#),
            "sequences.questions[0].options[0].submitted",
            r#"expected 0, 1, a boolean or one of "0"/"1"/"true"/"false", found 2"#.into(),
        ),
        (
            doc_with("", r#"[{"options": [{"at": "2018-02-30T00:00:00Z"}]}]"#),
            "sequences.questions[0].options[0].at",
            r#"expected an RFC 3339 timestamp or epoch seconds, found "2018-02-30T00:00:00Z""#
                .into(),
        ),
        (
            doc_with("", r#"[{"options": [{"id": 7}]}]"#),
            "sequences.questions[0].options[0].id",
            "expected a string, found 7".into(),
        ),
        (
            doc_with("", r#"[{"options": [], "user_result": false}]"#),
            "sequences.questions[0].user_result",
            "expected a string, found false".into(),
        ),
        (
            doc_with("", r#"[{"options": [], "user_correct": 1}]"#),
            "sequences.questions[0].user_correct",
            r#"expected a boolean or "true"/"false", found 1"#.into(),
        ),
        (
            doc_with(r#""keen_id": "a", "#, "[]"),
            "keen_id",
            "duplicate key".into(),
        ),
        (
            br#"{"keen_id": 5, "sequences": {"questions": []}}"#.to_vec(),
            "keen_id",
            "expected a string, found 5".into(),
        ),
        (
            doc_with(r#""started_at": "yesterday", "#, "[]"),
            "started_at",
            r#"expected an RFC 3339 timestamp or epoch seconds, found "yesterday""#.into(),
        ),
        (
            doc_with(r#""keen_timestamp": true, "#, "[]"),
            "keen_timestamp",
            "expected an RFC 3339 timestamp or epoch seconds, found true".into(),
        ),
        (
            doc_with(r#""keen_created_at": "1516717442.7x", "#, "[]"),
            "keen_created_at",
            r#"expected an RFC 3339 timestamp or epoch seconds, found "1516717442.7x""#.into(),
        ),
        (
            doc_with(r#""max_attempts": "one", "#, "[]"),
            "max_attempts",
            r#"expected a number or a string holding one, found "one""#.into(),
        ),
        (
            doc_with(r#""certification": {"a": 1}, "#, "[]"),
            "certification",
            r#"expected a boolean or "true"/"false", found an object"#.into(),
        ),
        (
            doc_with(r#""exam_name": ["x"], "#, "[]"),
            "exam_name",
            "expected a string, found an array".into(),
        ),
        (
            br#"{"sequences": {"questions": [], "attempt": 3000000000}}"#.to_vec(),
            "sequences.attempt",
            "expected a 32-bit integer or a string holding one, found 3000000000".into(),
        ),
        (
            br#"{"sequences": {"questions": [], "counts": {"total": "4.5"}}}"#.to_vec(),
            "sequences.counts.total",
            r#"expected a 32-bit integer or a string holding one, found "4.5""#.into(),
        ),
        (
            br#"{"sequences": {"questions": [], "counts": "many"}}"#.to_vec(),
            "sequences.counts",
            r#"expected an object, found "many""#.into(),
        ),
        (
            br#"{"sequences": {"questions": [], "id": -1.5}}"#.to_vec(),
            "sequences.id",
            "expected a string, found -1.5".into(),
        ),
        (
            br#"{"keen_id": "k"}"#.to_vec(),
            "sequences",
            "required key is missing".into(),
        ),
        (
            br#"{"sequences": {}}"#.to_vec(),
            "sequences.questions",
            "required key is missing".into(),
        ),
        (
            br#"{"sequences": null}"#.to_vec(),
            "sequences",
            "expected an object, found null".into(),
        ),
        (
            br#"{"sequences": [1]}"#.to_vec(),
            "sequences",
            "expected an object, found an array".into(),
        ),
        (
            br#"{"sequences": true}"#.to_vec(),
            "sequences",
            "expected an object, found true".into(),
        ),
        (
            b"[1, 2]".to_vec(),
            "",
            "expected a JSON object at the top level, found an array".into(),
        ),
        (
            b"null".to_vec(),
            "",
            "expected a JSON object at the top level, found null".into(),
        ),
        (
            b"42".to_vec(),
            "",
            "expected a JSON object at the top level, found 42".into(),
        ),
        (
            br#""{}""#.to_vec(),
            "",
            r#"expected a JSON object at the top level, found "{}""#.into(),
        ),
        (b"".to_vec(), "", "empty payload".into()),
        (b" \r\n\t".to_vec(), "", "empty payload".into()),
    ];
    for (payload, path, reason) in cases {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let err = Attempt::parse(&payload).expect_err(&text);
        assert_eq!(
            (err.path.as_str(), err.reason.as_str()),
            (path, reason.as_str()),
            "{text}"
        );
    }
}

#[test]
fn error_display_joins_path_and_reason() {
    let err = Attempt::parse(br#"{"certification": "maybe"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"certification: expected a boolean or "true"/"false", found "maybe""#
    );
    assert_eq!(
        Attempt::parse(b"").unwrap_err().to_string(),
        "empty payload"
    );
}

#[test]
fn invalid_json_is_refused_with_the_innermost_path() {
    let cases: [(&[u8], &str, &str); 7] = [
        (
            b"not json",
            "",
            "invalid JSON: expected ident at line 1 column 2",
        ),
        (
            b"{\"keen_id\": \"k\",}",
            "",
            "invalid JSON: trailing comma at line 1 column 17",
        ),
        (
            b"{\"keen_id\" \"k\"}",
            "keen_id",
            "invalid JSON: expected `:` at line 1 column 12",
        ),
        (
            br#"{"sequences": {"questions": [{"options": [{"id": "o", "checked": tr"#,
            "sequences.questions[0].options[0].checked",
            "invalid JSON: EOF while parsing a value at line 1 column 67",
        ),
        (
            br#"{"sequences": {"questions": [{"options": [{"id": "o"} {"id": "p"}]}]}}"#,
            "sequences.questions[0].options[1]",
            "invalid JSON: expected `,` or `]` at line 1 column 55",
        ),
        (
            b"{\"keen_id\": \"\xff\", \"sequences\": {\"questions\": []}}",
            "keen_id",
            "invalid JSON: invalid unicode code point at line 1 column 14",
        ),
        (
            br#"{"sequences": {"questions": []}} {}"#,
            "",
            "invalid JSON: trailing characters at line 1 column 34",
        ),
    ];
    for (payload, path, reason) in cases {
        let text = String::from_utf8_lossy(payload).into_owned();
        let err = Attempt::parse(payload).expect_err(&text);
        assert_eq!(
            (err.path.as_str(), err.reason.as_str()),
            (path, reason),
            "{text}"
        );
    }
}

/// Found by fuzzing (attempt_document): serde_json skips the strings under unknown keys
/// without checking their UTF-8, so such a document used to parse although it is not JSON.
#[test]
fn invalid_utf8_under_an_unknown_key_is_refused() {
    let payload = b"{\"sequences\":{\"questions\":[{\"options\":[{\"\":\"\xff\"}]}]}}";
    let err = Attempt::parse(payload).unwrap_err();
    assert_eq!(err.path, "");
    assert_eq!(
        err.reason,
        "invalid JSON: invalid UTF-8 at byte 44 (in a value that is otherwise ignored)"
    );
    for payload in [
        &b"{\"sequences\": {\"questions\": []}, \"extra\": \"\xc3\x28\"}"[..],
        b"{\"sequences\": {\"questions\": []}, \"extra\": [\"\xed\xa0\x80\"]}",
    ] {
        assert!(Attempt::parse(payload).is_err());
        assert!(serde_json::from_slice::<Value>(payload).is_err());
    }
}

#[test]
fn huge_and_deeply_nested_values_do_not_panic() {
    let big = "x".repeat(10 * 1024 * 1024);
    // A 10 MB id is accepted and borrowed.
    let payload = doc_with(&format!(r#""user_exam_id": "{big}", "#), "[]");
    let attempt = Attempt::parse(&payload).unwrap();
    assert_eq!(
        attempt.key(DedupKey::UserExamId).map(str::len),
        Some(big.len())
    );
    // A 10 MB wrong value gives a short message.
    let payload = doc_with(&format!(r#""certification": "{big}", "#), "[]");
    let err = Attempt::parse(&payload).unwrap_err();
    assert_eq!(err.path, "certification");
    assert!(
        err.reason.ends_with(&format!("…\" ({} bytes)", big.len())),
        "{}",
        err.reason
    );
    assert!(err.reason.len() < 200);
    // A 10 MB string that never ends.
    let payload = format!(r#"{{"keen_id": "{big}"#).into_bytes();
    assert_eq!(Attempt::parse(&payload).unwrap_err().path, "keen_id");
    // Deep nesting under an unknown key, closed and unclosed, and under a known key.
    let deep = 100_000;
    let closed = doc_with(
        &format!(r#""extra": {}{}, "#, "[".repeat(deep), "]".repeat(deep)),
        "[]",
    );
    assert!(Attempt::parse(&closed).is_ok());
    let open = format!(r#"{{"extra": {}"#, "[".repeat(deep)).into_bytes();
    assert!(Attempt::parse(&open).is_err());
    let known = doc_with(&format!(r#""exam_name": {}, "#, "[".repeat(deep)), "[]");
    assert_eq!(Attempt::parse(&known).unwrap_err().path, "exam_name");
    let nested_top = "[".repeat(deep).into_bytes();
    assert!(Attempt::parse(&nested_top).is_err());
}

#[test]
fn dedup_keys_parse_display_and_select() {
    assert_eq!(DedupKey::default(), DedupKey::KeenId);
    for key in DedupKey::ALL {
        assert_eq!(key.to_string().parse::<DedupKey>(), Ok(key));
    }
    assert_eq!("sequences.id".parse::<DedupKey>(), Ok(DedupKey::SequenceId));
    let err = "sequence".parse::<DedupKey>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown dedup key "sequence": expected keen_id, user_exam_id or sequences.id"#
    );

    let attempt =
        Attempt::parse(br#"{"keen_id": "", "sequences": {"questions": [], "id": "s"}}"#).unwrap();
    assert_eq!(attempt.key(DedupKey::KeenId), None);
    assert_eq!(attempt.key(DedupKey::UserExamId), None);
    assert_eq!(attempt.key(DedupKey::SequenceId), Some("s"));
    let err = attempt.require_key(DedupKey::UserExamId).unwrap_err();
    assert_eq!(
        err.to_string(),
        "user_exam_id: de-duplication key is missing or empty"
    );
    assert_eq!(attempt.require_key(DedupKey::SequenceId), Ok("s"));
}

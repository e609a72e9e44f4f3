use std::borrow::Cow;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, TimestampMicrosecondType};
use serde_json::{Value, json};

use super::*;

#[path = "../../../formats/src/attempts/fixtures.rs"]
mod fixtures;
use fixtures::fixture_payloads;

const SOURCE: SourcePosition<'static> = SourcePosition {
    topic: "attempts",
    partition: 2,
    offset: 40,
    ingested_at_us: 1_700_000_000_000_000,
};

fn us(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

fn decode_all(payloads: &[Vec<u8>]) -> AttemptBatches {
    let mut builder = AttemptBatchBuilder::new();
    for payload in payloads {
        builder.append(&Attempt::parse(payload).unwrap(), &SOURCE);
    }
    builder.finish()
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> &'b ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn strs(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    column(batch, name)
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn i32s(batch: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    column(batch, name)
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

fn f64s(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    column(batch, name)
        .as_primitive::<Float64Type>()
        .iter()
        .collect()
}

fn bools(batch: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    column(batch, name).as_boolean().iter().collect()
}

fn times(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    column(batch, name)
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect()
}

fn lists(batch: &RecordBatch, name: &str) -> Vec<Vec<Option<String>>> {
    let list = column(batch, name).as_list::<i32>();
    (0..list.len())
        .map(|i| {
            let items = list.value(i);
            items
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        })
        .collect()
}

#[test]
fn fixture_records_decode_to_the_documented_values() {
    let Some(payloads) = fixture_payloads() else {
        return;
    };
    let batches = decode_all(&payloads);
    let a = &batches.attempts;
    assert_eq!(a.num_rows(), 5);
    assert_eq!(batches.questions.num_rows(), 20);
    assert_eq!(batches.options.num_rows(), 14 + 14 + 13 + 13 + 14);

    assert_eq!(
        strs(a, "keen_id")[0].as_deref(),
        Some("5a6745820eb8ab00016be1f1")
    );
    assert_eq!(
        strs(a, "user_exam_id")[0].as_deref(),
        Some("6d4089e4-bde5-4a22-b65f-18bce9ab79c8")
    );
    assert_eq!(
        strs(a, "base_exam_id")[0].as_deref(),
        Some("37f0a30a-7464-11e6-aa92-a8667f27e5dc")
    );
    assert_eq!(
        strs(a, "exam_name")[0].as_deref(),
        Some("Normal Forms and All That Jazz Master Class")
    );
    assert_eq!(
        strs(a, "sequence_id")[0].as_deref(),
        Some("5b28a462-7a3b-42e0-b508-09f3906d1703")
    );
    assert_eq!(
        times(a, "started_at")[0],
        Some(us("2018-01-23T14:23:19.082Z"))
    );
    assert_eq!(times(a, "keen_timestamp")[0], Some(1_516_717_442_735_266));
    assert_eq!(times(a, "keen_created_at")[0], Some(1_516_717_442_735_266));
    // Record 3 has seven decimals: the seventh is dropped, not rounded through a float.
    assert_eq!(times(a, "keen_timestamp")[3], Some(1_516_738_921_113_742));
    assert_eq!(f64s(a, "max_attempts"), vec![Some(1.0); 5]);
    assert_eq!(bools(a, "certification"), vec![Some(false); 5]);
    assert_eq!(i32s(a, "attempt"), vec![Some(1); 5]);
    assert_eq!(i32s(a, "question_count"), vec![Some(4); 5]);
    assert_eq!(i32s(a, "score_max"), vec![Some(4); 5]);
    assert_eq!(
        i32s(a, "score"),
        vec![Some(2), Some(1), Some(3), Some(2), Some(3)]
    );
    // The stated counts agree with the scores in every real record.
    assert_eq!(i32s(a, "count_correct"), i32s(a, "score"));
    assert_eq!(i32s(a, "count_total")[0], Some(4));
    assert_eq!(i32s(a, "count_incorrect")[0], Some(1));
    assert_eq!(i32s(a, "count_incomplete")[0], Some(1));
    assert_eq!(i32s(a, "count_submitted")[0], Some(4));
    assert_eq!(i32s(a, "count_unanswered")[0], Some(0));
    assert_eq!(bools(a, "count_all_correct")[0], Some(false));
    assert_eq!(
        f64s(a, "percentage"),
        vec![Some(50.0), Some(25.0), Some(75.0), Some(50.0), Some(75.0)]
    );
    assert_eq!(
        times(a, "first_answer_at")[0],
        Some(us("2018-01-23T14:23:24.670Z"))
    );
    assert_eq!(
        times(a, "last_answer_at")[0],
        Some(us("2018-01-23T14:24:00.807Z"))
    );
    assert_eq!(f64s(a, "duration_seconds")[0], Some(41.725));
    assert_eq!(strs(a, "source_topic")[0].as_deref(), Some("attempts"));

    let q = &batches.questions;
    assert_eq!(
        i32s(q, "question_index")[..5],
        [Some(0), Some(1), Some(2), Some(3), Some(0)]
    );
    assert_eq!(
        strs(q, "question_id")[0].as_deref(),
        Some("7a2ed6d3-f492-49b3-b8aa-d080a8aad986")
    );
    assert_eq!(strs(q, "user_result")[0].as_deref(), Some("missed_some"));
    assert_eq!(bools(q, "user_correct")[0], Some(false));
    assert_eq!(bools(q, "user_incomplete")[0], Some(true));
    assert_eq!(bools(q, "user_submitted")[0], Some(true));
    assert_eq!(
        i32s(q, "option_count")[..4],
        [Some(3), Some(3), Some(4), Some(4)]
    );
    assert_eq!(
        i32s(q, "options_correct")[..4],
        [Some(3), Some(2), Some(2), Some(1)]
    );
    assert_eq!(
        lists(q, "options_checked")[0],
        vec![
            Some("49c574b4-5c82-4ffd-9bd1-c3358faf850d".to_owned()),
            Some("f2528210-35c3-4320-acf3-9056567ea19f".to_owned()),
        ]
    );
    assert_eq!(
        times(q, "first_answer_at")[2],
        Some(us("2018-01-23T14:23:52.510Z"))
    );
    assert_eq!(
        times(q, "last_answer_at")[2],
        Some(us("2018-01-23T14:23:54.223Z"))
    );
    assert_eq!(
        strs(q, "exam_name")[19].as_deref(),
        Some("Introduction to Big Data")
    );

    let o = &batches.options;
    assert_eq!(
        strs(o, "option_id")[0].as_deref(),
        Some("49c574b4-5c82-4ffd-9bd1-c3358faf850d")
    );
    assert_eq!(
        i32s(o, "question_index")[..4],
        [Some(0), Some(0), Some(0), Some(1)]
    );
    assert_eq!(
        i32s(o, "option_index")[..4],
        [Some(0), Some(1), Some(2), Some(0)]
    );
    // Question 1, option 0: checked, wrong (no `correct` key), submitted.
    assert_eq!(bools(o, "checked")[3], Some(true));
    assert_eq!(bools(o, "correct")[3], Some(false));
    assert_eq!(bools(o, "submitted")[3], Some(true));
    assert_eq!(
        times(o, "answered_at")[3],
        Some(us("2018-01-23T14:23:30.116Z"))
    );
    // Question 0, option 2: correct but not checked, never touched.
    assert_eq!(bools(o, "checked")[2], Some(false));
    assert_eq!(bools(o, "correct")[2], Some(true));
    assert_eq!(bools(o, "submitted")[2], None);
    assert_eq!(times(o, "answered_at")[2], None);
    assert_eq!(column(o, "correct").null_count(), 0);
}

/// Record 0 of the fixture, inline, so that the quirk tests run without the shared folder.
fn record0() -> Value {
    json!({
        "keen_timestamp": "1516717442.735266", "max_attempts": "1.0",
        "started_at": "2018-01-23T14:23:19.082Z",
        "base_exam_id": "37f0a30a-7464-11e6-aa92-a8667f27e5dc",
        "user_exam_id": "6d4089e4-bde5-4a22-b65f-18bce9ab79c8",
        "sequences": {"questions": [
            {"user_incomplete": true, "user_correct": false, "options": [
                {"checked": true, "at": "2018-01-23T14:23:24.670Z", "id": "49c574b4", "submitted": 1, "correct": true},
                {"checked": true, "at": "2018-01-23T14:23:25.914Z", "id": "f2528210", "submitted": 1, "correct": true},
                {"checked": false, "correct": true, "id": "d1bf026f"}],
             "user_submitted": true, "id": "7a2ed6d3", "user_result": "missed_some"},
            {"user_incomplete": false, "user_correct": false, "options": [
                {"checked": true, "at": "2018-01-23T14:23:30.116Z", "id": "a35d0e80", "submitted": 1},
                {"checked": false, "correct": true, "id": "bccd6e2e"},
                {"checked": true, "at": "2018-01-23T14:23:41.791Z", "id": "7e0b639a", "submitted": 1, "correct": true}],
             "user_submitted": true, "id": "bbed4358", "user_result": "incorrect"},
            {"user_incomplete": false, "user_correct": true, "options": [
                {"checked": false, "at": "2018-01-23T14:23:52.510Z", "id": "a9333679"},
                {"checked": false, "id": "85795acc"},
                {"checked": true, "at": "2018-01-23T14:23:54.223Z", "id": "c185ecdb", "submitted": 1, "correct": true},
                {"checked": true, "at": "2018-01-23T14:23:53.862Z", "id": "77a66c83", "submitted": 1, "correct": true}],
             "user_submitted": true, "id": "e6ad8644", "user_result": "correct"},
            {"user_incomplete": false, "user_correct": true, "options": [
                {"checked": false, "id": "59b9fc4b"}, {"checked": false, "id": "2c29e8e8"},
                {"checked": false, "id": "62feee6e"},
                {"checked": true, "at": "2018-01-23T14:24:00.807Z", "id": "7f13df9c", "submitted": 1, "correct": true}],
             "user_submitted": true, "id": "95194331", "user_result": "correct"}],
          "attempt": 1, "id": "5b28a462-7a3b-42e0-b508-09f3906d1703",
          "counts": {"incomplete": 1, "submitted": 4, "incorrect": 1, "all_correct": false,
                     "correct": 2, "total": 4, "unanswered": 0}},
        "keen_created_at": "1516717442.735266", "certification": "false",
        "keen_id": "5a6745820eb8ab00016be1f1",
        "exam_name": "Normal Forms and All That Jazz Master Class"
    })
}

fn decode_one(doc: &Value) -> AttemptBatches {
    decode_all(&[serde_json::to_vec(doc).unwrap()])
}

#[test]
fn inline_record_matches_the_fixture_values() {
    let b = decode_one(&record0());
    assert_eq!(i32s(&b.attempts, "score"), [Some(2)]);
    assert_eq!(
        times(&b.attempts, "keen_timestamp"),
        [Some(1_516_717_442_735_266)]
    );
    assert_eq!(
        lists(&b.questions, "options_checked")[0],
        [Some("49c574b4".into()), Some("f2528210".into())]
    );
    assert_eq!(b.options.num_rows(), 14);
}

#[test]
fn missing_counts_give_null_count_columns() {
    let mut doc = record0();
    doc["sequences"].as_object_mut().unwrap().remove("counts");
    let b = decode_one(&doc);
    for name in [
        "count_total",
        "count_correct",
        "count_incorrect",
        "count_incomplete",
        "count_submitted",
        "count_unanswered",
    ] {
        assert_eq!(i32s(&b.attempts, name), [None], "{name}");
    }
    assert_eq!(bools(&b.attempts, "count_all_correct"), [None]);
    // The score does not depend on the counts.
    assert_eq!(i32s(&b.attempts, "score"), [Some(2)]);
    // `null` counts are the same as none; a partial object gives nulls for the rest.
    doc["sequences"]["counts"] = Value::Null;
    assert_eq!(i32s(&decode_one(&doc).attempts, "count_total"), [None]);
    doc["sequences"]["counts"] = json!({"total": 4});
    let b = decode_one(&doc);
    assert_eq!(i32s(&b.attempts, "count_total"), [Some(4)]);
    assert_eq!(i32s(&b.attempts, "count_correct"), [None]);
}

#[test]
fn question_without_user_keys_has_nulls_and_is_not_scored_correct() {
    let mut doc = record0();
    // Question 3 was correct; without its user_* keys it no longer counts.
    let q = doc["sequences"]["questions"][3].as_object_mut().unwrap();
    for key in [
        "user_incomplete",
        "user_correct",
        "user_submitted",
        "user_result",
    ] {
        q.remove(key);
    }
    let b = decode_one(&doc);
    let q = &b.questions;
    assert_eq!(strs(q, "user_result")[3], None);
    assert_eq!(bools(q, "user_correct")[3], None);
    assert_eq!(bools(q, "user_incomplete")[3], None);
    assert_eq!(bools(q, "user_submitted")[3], None);
    assert_eq!(i32s(&b.attempts, "score"), [Some(1)]);
    assert_eq!(f64s(&b.attempts, "percentage"), [Some(25.0)]);
}

#[test]
fn user_correct_scores_only_when_user_result_is_absent() {
    let mut doc = record0();
    let qs = &mut doc["sequences"]["questions"];
    qs[0].as_object_mut().unwrap().remove("user_result");
    qs[0]["user_correct"] = json!(true); // counts: no user_result
    qs[1]["user_correct"] = json!(true); // does not count: user_result says incorrect
    assert_eq!(i32s(&decode_one(&doc).attempts, "score"), [Some(3)]);
}

#[test]
fn missing_certification_is_null() {
    let mut doc = record0();
    doc.as_object_mut().unwrap().remove("certification");
    assert_eq!(bools(&decode_one(&doc).attempts, "certification"), [None]);
}

#[test]
fn native_json_values_are_accepted_like_their_string_forms() {
    let mut doc = record0();
    doc["max_attempts"] = json!(1.0);
    doc["certification"] = json!(true);
    doc["keen_timestamp"] = json!(1516717442.735266);
    doc["keen_created_at"] = json!(1516717442);
    doc["started_at"] = json!("2018-01-23T15:23:19.082+01:00");
    doc["sequences"]["attempt"] = json!("2");
    doc["sequences"]["counts"] = json!({"total": "4", "correct": "2.0", "all_correct": "false"});
    let qs = &mut doc["sequences"]["questions"];
    qs[0]["user_correct"] = json!("false");
    qs[0]["options"][0]["checked"] = json!("true");
    qs[0]["options"][0]["correct"] = json!("true");
    qs[0]["options"][0]["submitted"] = json!(true);
    qs[0]["options"][1]["submitted"] = json!("0");
    qs[0]["options"][1]["at"] = json!("1516717405.914");
    let b = decode_one(&doc);
    let a = &b.attempts;
    assert_eq!(f64s(a, "max_attempts"), [Some(1.0)]);
    assert_eq!(bools(a, "certification"), [Some(true)]);
    assert_eq!(times(a, "keen_timestamp"), [Some(1_516_717_442_735_266)]);
    assert_eq!(times(a, "keen_created_at"), [Some(1_516_717_442_000_000)]);
    assert_eq!(
        times(a, "started_at"),
        [Some(us("2018-01-23T14:23:19.082Z"))]
    );
    assert_eq!(i32s(a, "attempt"), [Some(2)]);
    assert_eq!(i32s(a, "count_total"), [Some(4)]);
    assert_eq!(i32s(a, "count_correct"), [Some(2)]);
    assert_eq!(bools(a, "count_all_correct"), [Some(false)]);
    assert_eq!(bools(&b.questions, "user_correct")[0], Some(false));
    let o = &b.options;
    assert_eq!(bools(o, "checked")[0], Some(true));
    assert_eq!(bools(o, "correct")[0], Some(true));
    assert_eq!(bools(o, "submitted")[..2], [Some(true), Some(false)]);
    assert_eq!(times(o, "answered_at")[1], Some(1_516_717_405_914_000));
}

#[test]
fn nulls_unknown_keys_and_escapes_are_handled() {
    let payload =
        br#"{"keen_id": "a\u0041b\n", "exam_name": null, "extra": {"deep": [1, {"x": null}]},
        "sequences": {"questions": [{"options": [{"id": "o1", "checked": true, "correct": null,
        "future": [true]}], "id": null}], "also_new": 3}, "certification": null}"#;
    let attempt = Attempt::parse(payload).unwrap();
    assert_eq!(attempt.keen_id.as_deref(), Some("aAb\n"));
    assert!(matches!(attempt.keen_id, Some(Cow::Owned(_))));
    assert_eq!(attempt.exam_name, None);
    assert_eq!(attempt.certification, None);
    assert_eq!(attempt.questions[0].id, None);
    assert!(!attempt.questions[0].options[0].correct);
    let mut builder = AttemptBatchBuilder::new();
    builder.append(&attempt, &SOURCE);
    let b = builder.finish();
    assert_eq!(i32s(&b.attempts, "score"), [Some(0)]);
    assert_eq!(f64s(&b.attempts, "percentage"), [Some(0.0)]);
    assert_eq!(f64s(&b.attempts, "duration_seconds"), [None]);
    assert_eq!(times(&b.attempts, "first_answer_at"), [None]);
}

#[test]
fn attempt_without_questions_has_no_percentage() {
    let b = decode_all(&[br#"{"keen_id": "k", "sequences": {"questions": []}}"#.to_vec()]);
    assert_eq!(i32s(&b.attempts, "question_count"), [Some(0)]);
    assert_eq!(i32s(&b.attempts, "score_max"), [Some(0)]);
    assert_eq!(f64s(&b.attempts, "percentage"), [None]);
    assert_eq!(b.questions.num_rows(), 0);
    assert_eq!(b.options.num_rows(), 0);
}

#[test]
fn every_truncation_of_a_record_is_an_error() {
    let payload = serde_json::to_vec(&record0()).unwrap();
    assert!(Attempt::parse(&payload).is_ok());
    for end in 0..payload.len() {
        let err = Attempt::parse(&payload[..end]).expect_err("a truncated document must not parse");
        assert!(!err.reason.is_empty());
        if end > 1 {
            assert!(
                err.reason.starts_with("invalid JSON: EOF while parsing"),
                "{end}: {err}"
            );
        }
    }
}

#[test]
fn schemas_have_the_documented_columns_and_types() {
    let names = |s: SchemaRef| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    let source = [
        "source_topic",
        "source_partition",
        "source_offset",
        "ingested_at",
    ];
    let attempts = names(attempts_schema());
    assert_eq!(attempts.len(), 25 + 4);
    assert_eq!(
        attempts[..4],
        ["keen_id", "user_exam_id", "base_exam_id", "exam_name"]
    );
    assert_eq!(
        attempts[21..25],
        [
            "percentage",
            "first_answer_at",
            "last_answer_at",
            "duration_seconds"
        ]
    );
    assert_eq!(attempts[25..], source);
    assert_eq!(names(attempt_questions_schema()).len(), 14 + 4);
    assert_eq!(names(attempt_options_schema()).len(), 10 + 4);
    for schema in [
        attempts_schema(),
        attempt_questions_schema(),
        attempt_options_schema(),
    ] {
        for field in schema.fields() {
            let delta_type = match field.data_type() {
                DataType::Utf8
                | DataType::Boolean
                | DataType::Int32
                | DataType::Int64
                | DataType::Float64 => true,
                DataType::Timestamp(_, _) => field.data_type() == &timestamp_type(),
                DataType::List(item) => {
                    item.name() == "element" && item.data_type() == &DataType::Utf8
                }
                _ => false,
            };
            assert!(delta_type, "{}: {}", field.name(), field.data_type());
        }
    }
    let non_null = |s: SchemaRef| {
        s.fields()
            .iter()
            .filter(|f| !f.is_nullable())
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    let mut expected = vec!["question_count", "score", "score_max"];
    expected.extend(source);
    assert_eq!(non_null(attempts_schema()), expected);
    let mut expected = vec!["question_index", "option_count", "options_correct"];
    expected.extend(source);
    assert_eq!(non_null(attempt_questions_schema()), expected);
    let mut expected = vec!["question_index", "option_index", "correct"];
    expected.extend(source);
    assert_eq!(non_null(attempt_options_schema()), expected);
}

#[test]
fn finish_hands_over_the_rows_and_resets_the_builder() {
    let payload = serde_json::to_vec(&record0()).unwrap();
    let attempt = Attempt::parse(&payload).unwrap();
    let mut builder = AttemptBatchBuilder::new();
    assert_eq!(builder.rows(), 0);
    builder.append(&attempt, &SOURCE);
    builder.append(
        &attempt,
        &SourcePosition {
            offset: 41,
            ..SOURCE
        },
    );
    assert_eq!(builder.rows(), 2);
    let b = builder.finish();
    assert_eq!(builder.rows(), 0);
    assert_eq!(
        (
            b.attempts.num_rows(),
            b.questions.num_rows(),
            b.options.num_rows()
        ),
        (2, 8, 28)
    );
    assert_eq!(b.attempts.schema(), attempts_schema());
    assert_eq!(b.questions.schema(), attempt_questions_schema());
    assert_eq!(b.options.schema(), attempt_options_schema());
    let offsets: Vec<_> = column(&b.options, "source_offset")
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .collect();
    assert_eq!(offsets[13..15], [Some(40), Some(41)]);
    let empty = builder.finish();
    assert_eq!(
        (
            empty.attempts.num_rows(),
            empty.questions.num_rows(),
            empty.options.num_rows()
        ),
        (0, 0, 0)
    );
    builder.append(&attempt, &SOURCE);
    assert_eq!(builder.finish().options.num_rows(), 14);
}

/// A small deterministic generator (xorshift) of documents with the dataset's quirks.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A document and its number of options and correct questions.
    fn document(&mut self, i: usize) -> (Value, usize, i32) {
        let mut options_total = 0;
        let mut correct = 0;
        let mut questions = Vec::new();
        let started = 1_500_000_000 + self.below(20_000_000);
        for q in 0..3 + self.below(8) {
            let n_options = 2 + self.below(5);
            let mut options = Vec::new();
            for o in 0..n_options {
                let mut option = json!({"checked": self.chance(40), "id": format!("o{i}-{q}-{o}")});
                if self.chance(30) {
                    option["correct"] = json!(true);
                }
                if option["checked"] == json!(true) {
                    let at = chrono::DateTime::from_timestamp(
                        i64::try_from(started + 5 * q + o).unwrap(),
                        123_000_000,
                    )
                    .unwrap();
                    option["at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                    option["submitted"] = if self.chance(90) {
                        json!(1)
                    } else {
                        json!("true")
                    };
                }
                options.push(option);
            }
            options_total += options.len();
            let result =
                ["correct", "missed_some", "incorrect"][usize::try_from(self.below(3)).unwrap()];
            let mut question = json!({"options": options, "id": format!("q{q}")});
            if !self.chance(3) {
                correct += i32::from(result == "correct");
                question["user_result"] = json!(result);
                question["user_correct"] = json!(result == "correct");
                question["user_incomplete"] = json!(result == "missed_some");
                question["user_submitted"] = json!(true);
            }
            questions.push(question);
        }
        let total = questions.len();
        let mut sequences =
            json!({"questions": questions, "attempt": 1, "id": format!("s{}", i % 7)});
        if !self.chance(2) {
            sequences["counts"] =
                json!({"total": total, "correct": correct, "submitted": total.to_string()});
        }
        let mut doc = json!({
            "keen_id": format!("{:024x}", self.next()),
            "started_at": chrono::DateTime::from_timestamp(i64::try_from(started).unwrap(), 0).unwrap().to_rfc3339(),
            "keen_timestamp": format!("{}.{}", started + 300, self.below(10_000_000)),
            "max_attempts": if self.chance(3) { json!(1.0) } else { json!("1.0") },
            "sequences": sequences,
            "exam_name": format!("Exam {}", i % 5),
        });
        if !self.chance(5) {
            doc["certification"] = json!(if self.chance(50) { "false" } else { "true" });
        }
        (doc, options_total, correct)
    }
}

#[test]
fn generated_documents_give_one_row_per_attempt_question_and_option() {
    let mut generator = Gen(0x9E37_79B9_7F4A_7C15);
    let mut builder = AttemptBatchBuilder::new();
    let (mut questions, mut options) = (0, 0);
    let mut scores = Vec::new();
    let n = 500;
    for i in 0..n {
        let (doc, n_options, correct) = generator.document(i);
        questions += doc["sequences"]["questions"].as_array().unwrap().len();
        options += n_options;
        scores.push(Some(correct));
        let payload = serde_json::to_vec(&doc).unwrap();
        let attempt = Attempt::parse(&payload).unwrap_or_else(|e| panic!("document {i}: {e}"));
        builder.append(
            &attempt,
            &SourcePosition {
                offset: i64::try_from(i).unwrap(),
                ..SOURCE
            },
        );
    }
    assert_eq!(builder.rows(), n);
    let b = builder.finish();
    assert_eq!(
        (
            b.attempts.num_rows(),
            b.questions.num_rows(),
            b.options.num_rows()
        ),
        (n, questions, options)
    );
    assert_eq!(i32s(&b.attempts, "score"), scores);
    let question_counts = i32s(&b.attempts, "question_count");
    let option_sum: i64 = i32s(&b.questions, "option_count")
        .iter()
        .map(|c| i64::from(c.unwrap()))
        .sum();
    assert_eq!(option_sum, i64::try_from(options).unwrap());
    // Where the document states counts, they agree with its questions.
    let totals = i32s(&b.attempts, "count_total");
    let correct = i32s(&b.attempts, "count_correct");
    let mut with_counts = 0;
    for i in 0..n {
        if let Some(total) = totals[i] {
            with_counts += 1;
            assert_eq!(Some(total), question_counts[i]);
            assert_eq!(correct[i], scores[i]);
        }
    }
    assert!(with_counts > n * 9 / 10 && with_counts < n, "{with_counts}");
}

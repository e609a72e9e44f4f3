use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::prelude::SessionContext;

use super::sql::{Mask, mask_array, mask_of};
use super::*;

fn pseudonyms() -> Pseudonyms {
    Pseudonyms::new(b"a test secret of some length", false)
}

#[test]
fn pseudonyms_are_stable_normalised_and_keyed() {
    let p = pseudonyms();
    let a = p.of("ana@example.com");
    assert_eq!(a, p.of("ana@example.com"));
    assert_eq!(a, p.of("  Ana@Example.COM "), "trimmed and lowercased");
    assert_eq!(
        a,
        pseudonyms().of("ana@example.com"),
        "same secret, same pseudonym"
    );
    assert_ne!(a, p.of("bob@example.com"));
    let other = Pseudonyms::new(b"another secret entirely", false);
    assert_ne!(a, other.of("ana@example.com"), "differs per secret");
    assert!(a.starts_with("s_"), "{a}");
    let digits = &a[2..];
    assert_eq!(digits.len(), 24);
    assert!(
        digits
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{a}"
    );
    // The known value, so a change of the scheme (which would change every stored
    // pseudonym analysts kept) is noticed.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"a test secret of some length").unwrap();
    mac.update(b"ana@example.com");
    let expected = format!("s_{}", &hex::encode(mac.finalize().into_bytes())[..24]);
    assert_eq!(a, expected);
}

#[test]
fn cached_pseudonyms_are_the_same() {
    let p = pseudonyms();
    let emails = ["a@x.org", "B@x.org", "a@x.org"];
    let first = p.of_all(&emails);
    assert_eq!(first, emails.map(|e| p.of(e)));
    assert_eq!(p.of_all(&emails), first, "from the cache");
    assert_eq!(first[1], p.of("b@x.org"));
}

#[test]
fn who_sees_pseudonyms() {
    let p = pseudonyms();
    let who = |role| Identity {
        email: "x@example.com".into(),
        role,
    };
    assert!(p.hides_emails(&who(Role::Analyst)));
    for role in [Role::Educator, Role::Admin, Role::Student] {
        assert!(!p.hides_emails(&who(role)), "{role:?}");
    }
    let open = Pseudonyms::new(b"a test secret of some length", true);
    assert!(!open.hides_emails(&who(Role::Analyst)));
    assert!(!open.hides_any());
}

#[test]
fn text_and_bytes_lose_every_email() {
    let p = pseudonyms();
    let ana = p.of("ana@example.com");
    let text = "reason: bad document for Ana@Example.com, cc 'bob.b+x@mail.example.org'.";
    let scrubbed = p.scrub_text(text);
    assert_eq!(
        scrubbed,
        format!(
            "reason: bad document for {ana}, cc '{}'.",
            p.of("bob.b+x@mail.example.org")
        )
    );
    assert_eq!(
        p.scrub_text("no address @ all, @handle"),
        "no address @ all, @handle"
    );
    assert!(matches!(p.scrub_text("nothing here"), Cow::Borrowed(_)));
    // Escaped JSON inside JSON (a Debezium envelope's `after`).
    let envelope = r#"{"payload":{"after":"{\"email\":\"ana@example.com\",\"score\":3}"}}"#;
    let scrubbed = p.scrub_text(envelope);
    assert!(!scrubbed.contains("ana@"), "{scrubbed}");
    assert!(scrubbed.contains(&ana), "{scrubbed}");
    // Bytes that are not UTF-8 around an address.
    let mut bytes = vec![0xff, 0x00, b' '];
    bytes.extend_from_slice(b"ana@example.com");
    bytes.push(0xfe);
    let out = p.scrub_bytes(&bytes).unwrap();
    assert!(!out.windows(4).any(|w| w == b"ana@"), "{out:?}");
    assert_eq!(p.scrub_bytes(b"\x00\x01 plain"), None);
}

#[test]
fn documents_keep_their_shape_and_lose_the_email() {
    let p = pseudonyms();
    let doc = r#"{"_id":"64b0","email":"Ana@Example.com","exam":"e","score":3,"details":[{"question":"Write to help@school.edu","user_answer":"=1+1"}],"owner":"bob@example.com"}"#;
    let out = p.rewrite_json(doc);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["email"], p.of("ana@example.com"));
    assert_eq!(value["owner"], p.of("bob@example.com"));
    assert_eq!(value["score"], 3);
    assert_eq!(value["details"][0]["user_answer"], "=1+1");
    assert_eq!(
        value["details"][0]["question"],
        format!("Write to {}", p.of("help@school.edu"))
    );
    assert!(!out.contains('@'), "{out}");
    // Not JSON: scrubbed as text. No email: unchanged, not re-serialised.
    let broken = r#"{"email":"ana@example.com""#;
    assert!(!p.rewrite_json(broken).contains("ana@"));
    assert!(matches!(
        p.rewrite_json(r#"{"a": 1,  "b": "x"}"#),
        Cow::Borrowed(_)
    ));
}

#[test]
fn columns_to_mask() {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    assert_eq!(mask_of("scores", &text("email")), Some(Mask::Email));
    assert_eq!(mask_of("x", &text("student_email")), Some(Mask::Email));
    assert_eq!(
        mask_of("score_changes", &text("document")),
        Some(Mask::Json)
    );
    assert_eq!(mask_of("dead_letters", &text("reason")), Some(Mask::Scrub));
    assert_eq!(
        mask_of(
            "dead_letters",
            &Field::new("payload", DataType::Binary, true)
        ),
        Some(Mask::Scrub)
    );
    assert_eq!(mask_of("scores", &text("exam")), None);
    assert_eq!(mask_of("attempts", &text("reason")), None);
    assert!(
        mask_array(
            Mask::Email,
            &pseudonyms(),
            &(Arc::new(datafusion::arrow::array::Int64Array::from(vec![1])) as ArrayRef)
        )
        .is_err()
    );
}

/// Through DataFusion: every way a query can reach the column sees pseudonyms, filters
/// on the raw email match nothing, joins on email still match, views follow.
#[tokio::test]
async fn sessions_show_analysts_pseudonyms_only() {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;

    let p = Arc::new(pseudonyms());
    let ctx = SessionContext::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8View, false),
        Field::new("score", DataType::Int64, false),
        Field::new("document", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringViewArray::from(vec![
                "ana@example.com",
                "bob@example.com",
                "Ana@Example.com",
            ])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![
                Some(r#"{"email":"ana@example.com","score":1}"#),
                None,
                Some(r#"{"email":"Ana@Example.com","score":3}"#),
            ])),
        ],
    )
    .unwrap();
    ctx.register_table(
        "results",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let sessions = Arc::new(Schema::new(vec![Field::new(
        "email",
        DataType::Utf8,
        false,
    )]));
    let rows = RecordBatch::try_new(
        sessions.clone(),
        vec![Arc::new(StringArray::from(vec!["bob@example.com"]))],
    )
    .unwrap();
    ctx.register_table(
        "sessions",
        Arc::new(MemTable::try_new(sessions, vec![vec![rows]]).unwrap()),
    )
    .unwrap();
    ctx.sql("CREATE VIEW best AS SELECT email, max(score) AS best FROM results GROUP BY email")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pseudonymise_session(&ctx, &p).await.unwrap();

    let text = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        }
    };
    let ana = p.of("ana@example.com");
    let all = text("SELECT * FROM results ORDER BY score").await;
    assert!(!all.contains('@'), "{all}");
    assert_eq!(all.matches(&ana).count(), 4, "{all}");
    for sql in [
        "SELECT count(*) AS n FROM results WHERE email = 'ana@example.com'",
        "SELECT count(*) AS n FROM results WHERE email LIKE '%@%'",
        "SELECT count(*) AS n FROM results WHERE document LIKE '%ana@%'",
        "SELECT count(*) AS n FROM best WHERE email = 'ana@example.com'",
    ] {
        assert!(text(sql).await.contains("| 0 |"), "{sql}");
    }
    let by_pseudonym = format!("SELECT best FROM best WHERE email = '{ana}'");
    let batches = ctx
        .sql(&by_pseudonym)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        3
    );
    let joined =
        text("SELECT r.score FROM results r JOIN sessions s ON r.email = s.email ORDER BY r.score")
            .await;
    assert!(joined.contains("| 2 "), "{joined}");
    let min = text("SELECT min(email) AS m, max(email) AS x FROM results").await;
    assert!(!min.contains('@'), "{min}");
    let explain = ctx
        .sql("EXPLAIN VERBOSE SELECT email FROM results")
        .await
        .unwrap();
    assert!(check_plan_for_analysts(explain.logical_plan()).is_err());
    let explain = ctx.sql("EXPLAIN SELECT email FROM results").await.unwrap();
    assert!(check_plan_for_analysts(explain.logical_plan()).is_ok());
}

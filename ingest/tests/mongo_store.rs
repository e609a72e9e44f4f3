//! The MongoDB store against a real server, when EXAMFLOW_TEST_MONGODB_URI is set.

use chrono::Utc;
use examflow_engine::{Outcome, ScoredSubmission};
use examflow_ingest::ResultDocument;
use examflow_ingest::store::{MongoStore, ResultFilter, ResultStore};

#[tokio::test]
async fn mongodb_store_round_trips_results() {
    let Ok(uri) = std::env::var("EXAMFLOW_TEST_MONGODB_URI") else {
        eprintln!(
            "\n*** SKIPPED: MongoDB store test: EXAMFLOW_TEST_MONGODB_URI is not set (no MongoDB server on this machine) ***\n"
        );
        return;
    };
    let db = format!("examflow_test_{}", std::process::id());
    let store = MongoStore::connect(&uri, Some(&db)).await.unwrap();
    store.ping().await.unwrap();
    let doc = ResultDocument::new(
        "m@example.com",
        ScoredSubmission {
            exam: "geo".into(),
            score: 1,
            total: 2,
            percentage: 50,
            result: Outcome::Passed,
            details: vec![],
        },
        Utc::now(),
    );
    store.insert_result(&doc).await.unwrap();
    assert_eq!(store.get_result(&doc.id).await.unwrap(), Some(doc.clone()));
    let listed = store
        .list_results(&ResultFilter {
            email: Some("m@example.com".into()),
            exam: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![doc]);
    store.drop_collection().await.unwrap();
}

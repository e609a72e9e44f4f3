//! The MongoDB store against a real server, when EXAMFLOW_TEST_MONGODB_URI is set.

use std::sync::Arc;

use chrono::Utc;
use examflow_engine::{Outcome, ScoredSubmission};
use examflow_ingest::ResultDocument;
use examflow_ingest::store::conformance::{
    check_attempt_store, check_calibration_after, check_concurrent_calibrations, check_finish,
    check_session_store,
};
use examflow_ingest::store::{MongoStore, ResultFilter, ResultStore, SessionStore};

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

/// The server and a database of this test's own (`None`, after a loud note, when no server
/// is configured).
fn test_database(test: &str, name: &str) -> Option<(String, String)> {
    let Ok(uri) = std::env::var("EXAMFLOW_TEST_MONGODB_URI") else {
        eprintln!(
            "\n*** SKIPPED: MongoDB {test} test: EXAMFLOW_TEST_MONGODB_URI is not set (no MongoDB server on this machine) ***\n"
        );
        return None;
    };
    Some((uri, format!("examflow_test_{name}_{}", std::process::id())))
}

/// A store without sessions or calibrations (whatever an earlier run left is dropped).
async fn empty_session_store(uri: &str, db: &str) -> MongoStore {
    let store = MongoStore::connect(uri, Some(db)).await.unwrap();
    store.ping().await.unwrap();
    store.drop_session_collections().await.unwrap();
    store
}

#[tokio::test]
async fn mongodb_store_keeps_sessions_and_calibrations() {
    let Some((uri, db)) = test_database("session store", "sessions") else {
        return;
    };
    let store = empty_session_store(&uri, &db).await;
    check_session_store(&store).await;
    check_calibration_after(&store).await;
    check_finish(&store).await;
    store.drop_session_collections().await.unwrap();
    store.drop_collection().await.unwrap();
}

#[tokio::test]
async fn mongodb_store_keeps_fixed_form_attempts() {
    let Some((uri, db)) = test_database("attempt store", "attempts") else {
        return;
    };
    let store = empty_session_store(&uri, &db).await;
    store.drop_collection().await.unwrap();
    check_attempt_store(&store).await;
    store.drop_session_collections().await.unwrap();
    store.drop_collection().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_store_numbers_concurrent_calibrations_once() {
    let Some((uri, db)) = test_database("concurrent calibrations", "calibrations") else {
        return;
    };
    let first = Arc::new(empty_session_store(&uri, &db).await);
    // A second client on the same database stands for a second server.
    let second = Arc::new(MongoStore::connect(&uri, Some(&db)).await.unwrap());
    let stores: [Arc<dyn SessionStore>; 2] = [first.clone(), second];
    check_concurrent_calibrations(&stores).await;
    for store in &stores {
        let latest = store.get_calibration("concurrent", None).await.unwrap();
        assert_eq!(latest.map(|c| c.version), Some(10));
    }
    first.drop_session_collections().await.unwrap();
}

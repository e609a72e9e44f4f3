//! The MongoDB store against a real server, when EXAMFLOW_TEST_MONGODB_URI is set.

use std::sync::Arc;

use chrono::Utc;
use examflow_engine::{Outcome, ScoredSubmission};
use examflow_ingest::ResultDocument;
use examflow_ingest::store::conformance::{
    check_activation, check_attempt_store, check_calibration_after, check_concurrent_calibrations,
    check_finish, check_roster, check_session_store,
};
use examflow_ingest::store::{MongoStore, ResultFilter, ResultStore, SessionStore, StoredSession};

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
    check_activation(&store).await;
    check_roster(&store).await;
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

/// A session of the race tests, active at `answered` answers.
fn racing_session(id: &str, answered: i64) -> StoredSession {
    StoredSession {
        id: id.into(),
        exam: "race".into(),
        email: format!("{id}@example.com"),
        calibration_version: 1,
        status: "active".into(),
        answered,
        result_id: None,
        created_at: "2024-05-03T10:00:00.000Z".into(),
        updated_at: "2024-05-03T10:00:00.000Z".into(),
        state: "{}".into(),
        closes_at: None,
    }
}

fn racing_result(session: &str, score: u32) -> ResultDocument {
    ResultDocument::new(
        &format!("{session}@example.com"),
        ScoredSubmission {
            exam: "race".into(),
            score,
            total: 10,
            percentage: score * 10,
            result: Outcome::Passed,
            details: vec![],
        },
        Utc::now(),
    )
}

/// `sessions` sessions, each finished `rounds` times over by two racers at once (one per
/// store, standing for two servers), both from the same state with results of different
/// ids. Checks that exactly one racer wins each round, the session holds the winner's
/// state and the winner's result is stored; returns each round's (winner, loser) results.
async fn race_finishes(
    stores: [&MongoStore; 2],
    prefix: &str,
    sessions: usize,
    rounds: i64,
) -> Vec<(ResultDocument, ResultDocument)> {
    let ids: Vec<String> = (0..sessions).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        stores[0].put_session(racing_session(id, 0)).await.unwrap();
    }
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        let races = ids.iter().map(|id| async move {
            let results = [racing_result(id, 3), racing_result(id, 8)];
            assert_ne!(results[0].id, results[1].id);
            let finished = |result: &ResultDocument| {
                let mut s = racing_session(id, round + 1);
                s.status = "finished".into();
                s.result_id = Some(result.id.clone());
                s.state = format!(r#"{{"score":{}}}"#, result.score);
                s
            };
            let (a, b) = tokio::join!(
                stores[0].finish_session_if(finished(&results[0]), round, &results[0]),
                stores[1].finish_session_if(finished(&results[1]), round, &results[1]),
            );
            let won = [a.unwrap(), b.unwrap()];
            assert!(
                won[0] != won[1],
                "session {id}, round {round}: exactly one finish wins, not {won:?}"
            );
            let [first, second] = results;
            let (winner, loser) = if won[0] {
                (first, second)
            } else {
                (second, first)
            };
            let stored = stores[0].get_session(id).await.unwrap().unwrap();
            assert_eq!(stored, finished(&winner), "session {id}, round {round}");
            assert_eq!(
                stores[1].get_result(&winner.id).await.unwrap(),
                Some(winner.clone()),
                "session {id}, round {round}: the winner's result is stored"
            );
            (winner, loser)
        });
        outcomes.extend(futures::future::join_all(races).await);
    }
    outcomes
}

/// Two finishes of one session at once with different result ids: on a server with
/// transactions (replica set, sharded) the loser stores nothing, not even its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_transactions_keep_only_the_winning_result_of_raced_finishes() {
    let Some((uri, db)) = test_database("raced finish", "race") else {
        return;
    };
    let first = empty_session_store(&uri, &db).await;
    first.drop_collection().await.unwrap();
    if !first.uses_transactions().await.unwrap() {
        eprintln!(
            "\n*** SKIPPED: MongoDB raced finish test: the server at EXAMFLOW_TEST_MONGODB_URI is standalone (no transactions); use a replica set ***\n"
        );
        return;
    }
    // A second client on the same database stands for a second server.
    let second = MongoStore::connect(&uri, Some(&db)).await.unwrap();
    assert!(second.uses_transactions().await.unwrap());

    const SESSIONS: usize = 20;
    const ROUNDS: i64 = 3;
    let outcomes = race_finishes([&first, &second], "race", SESSIONS, ROUNDS).await;
    for (winner, loser) in &outcomes {
        assert_eq!(
            first.get_result(&loser.id).await.unwrap(),
            None,
            "the losing finish of {} left its result {} behind (winner {})",
            loser.email,
            loser.id,
            winner.id
        );
    }
    let stored = first
        .list_results(&ResultFilter {
            email: None,
            exam: Some("race".into()),
            limit: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        SESSIONS * ROUNDS as usize,
        "one result per race"
    );

    first.drop_session_collections().await.unwrap();
    first.drop_collection().await.unwrap();
}

/// A standalone server (EXAMFLOW_TEST_MONGODB_STANDALONE_URI) has no transactions: the
/// store notices and finishes as before, result first. The winner of a race is stored
/// with its result; the loser's result may remain (the documented gap without a replica
/// set), which this test counts but does not forbid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_standalone_finishes_sessions_without_transactions() {
    let Ok(uri) = std::env::var("EXAMFLOW_TEST_MONGODB_STANDALONE_URI") else {
        eprintln!(
            "\n*** SKIPPED: MongoDB standalone finish test: EXAMFLOW_TEST_MONGODB_STANDALONE_URI is not set ***\n"
        );
        return;
    };
    let db = format!("examflow_test_standalone_{}", std::process::id());
    let first = empty_session_store(&uri, &db).await;
    first.drop_collection().await.unwrap();
    assert!(
        !first.uses_transactions().await.unwrap(),
        "EXAMFLOW_TEST_MONGODB_STANDALONE_URI should name a standalone server"
    );
    check_finish(&first).await;

    let second = MongoStore::connect(&uri, Some(&db)).await.unwrap();
    let outcomes = race_finishes([&first, &second], "standalone", 10, 2).await;
    let mut left_behind = 0;
    for (_, loser) in &outcomes {
        if first.get_result(&loser.id).await.unwrap().is_some() {
            left_behind += 1;
        }
    }
    eprintln!(
        "standalone: {left_behind} of {} lost finishes left their result behind (expected without transactions)",
        outcomes.len()
    );

    first.drop_session_collections().await.unwrap();
    first.drop_collection().await.unwrap();
}

/// Calibrations written before activation existed (no `activation` field) read as
/// activated in version order: the latest stays the active one, and a new activation is
/// numbered above them.
#[tokio::test]
async fn mongodb_calibrations_from_before_activation_keep_the_latest_active() {
    use mongodb::bson::{Document, doc};
    let Some((uri, db)) = test_database("legacy calibrations", "legacy") else {
        return;
    };
    empty_session_store(&uri, &db).await;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let raw = client.database(&db).collection::<Document>("calibrations");
    for version in [1i64, 2] {
        raw.insert_one(doc! {
            "exam": "old", "version": version, "created_at": "2024-01-01T00:00:00.000Z",
            "source": "calibration", "responses": 10 * version, "params": "[]", "summary": "{}",
        })
        .await
        .unwrap();
    }
    // A store that has not made its indexes yet, as a server started on the old data.
    let store = MongoStore::connect(&uri, Some(&db)).await.unwrap();
    let active = store.get_active_calibration("old").await.unwrap().unwrap();
    assert_eq!((active.version, active.activation), (2, Some(2)));
    let first = store
        .get_calibration("old", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.activation, Some(1));
    assert_eq!(store.activate_calibration("old", 1).await.unwrap(), Some(3));
    assert_eq!(
        store
            .get_active_calibration("old")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    store.drop_session_collections().await.unwrap();
}

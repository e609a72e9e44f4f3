//! Unit tests of the embedded store.

use super::*;
use examflow_engine::{Outcome, ScoredSubmission};

fn doc(email: &str, exam: &str) -> ResultDocument {
    ResultDocument::new(
        email,
        ScoredSubmission {
            exam: exam.into(),
            score: 0,
            total: 0,
            percentage: 0,
            result: Outcome::Failed,
            details: vec![],
        },
        Utc::now(),
    )
}

/// With SQLite's automatic checkpoint off, the checkpointer thread is what keeps the WAL
/// from growing without bound: after it has run, new writes reuse the WAL from the start.
#[tokio::test]
async fn the_checkpointer_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let wal = dir.path().join("examflow.db-wal");
    let round = || async {
        for i in 0..200 {
            store
                .insert_result(&doc(&format!("s{i}@x"), "geo"))
                .await
                .unwrap();
        }
    };
    round().await;
    let after_one = std::fs::metadata(&wal).unwrap().len();
    for _ in 0..4 {
        tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
        round().await;
    }
    let after_five = std::fs::metadata(&wal).unwrap().len();
    assert!(
        after_five < after_one * 2,
        "WAL grew from {after_one} to {after_five} bytes over five rounds"
    );
    let all = store
        .list_results(&ResultFilter {
            email: None,
            exam: Some("geo".into()),
            limit: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1000);
}

#[tokio::test]
async fn results_and_outbox_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let a = doc("a@x", "geo");
    let b = doc("b@x", "math");
    store.insert_result(&a).await.unwrap();
    store.insert_result(&b).await.unwrap();
    assert_eq!(store.get_result(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_result("nope").await.unwrap(), None);
    let mine = store
        .list_results(&ResultFilter {
            email: Some("a@x".into()),
            exam: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(mine, vec![a.clone()]);
    let math = store
        .list_results(&ResultFilter {
            email: None,
            exam: Some("math".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(math, vec![b]);

    let pending = store
        .pending_outbox(OutboxReader::Publisher, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    store.mark_published(vec![pending[0].seq]).await.unwrap();
    assert_eq!(
        store
            .count_pending_outbox(OutboxReader::Publisher)
            .await
            .unwrap(),
        1
    );
    // The other reader is independent.
    assert_eq!(
        store
            .count_pending_outbox(OutboxReader::ScoreCards)
            .await
            .unwrap(),
        2
    );
    store
        .complete_card_events(vec![(
            pending[0].seq,
            CardOutcome::Card {
                document_id: a.id.clone(),
                card: "card".into(),
            },
        )])
        .await
        .unwrap();
    assert_eq!(
        store
            .count_pending_outbox(OutboxReader::ScoreCards)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.score_cards(10).await.unwrap()[0].document_id, a.id);

    // Reopening sees everything.
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.get_result(&a.id).await.unwrap(), Some(a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_are_group_committed_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    let docs: Vec<ResultDocument> = (0..64).map(|i| doc(&format!("s{i}@x"), "geo")).collect();
    let duplicate = docs[5].clone();
    let mut tasks = Vec::new();
    for d in docs.iter().cloned().chain(std::iter::once(duplicate)) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.insert_result(&d).await }));
    }
    let mut failures = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 1, "only the duplicate id fails");
    let all = store
        .list_results(&ResultFilter {
            email: None,
            exam: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 64);
    assert_eq!(
        store
            .count_pending_outbox(OutboxReader::Publisher)
            .await
            .unwrap(),
        64
    );
}

#[tokio::test]
async fn a_database_of_an_earlier_version_gets_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = Connection::open(dir.path().join("examflow.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE adaptive_sessions (id TEXT PRIMARY KEY, exam TEXT NOT NULL,
               email TEXT NOT NULL, calibration_version INTEGER NOT NULL, status TEXT NOT NULL,
               answered INTEGER NOT NULL, result_id TEXT, created_at TEXT NOT NULL,
               updated_at TEXT NOT NULL, state TEXT NOT NULL);
             INSERT INTO adaptive_sessions VALUES ('old', 'geo', 'a@b.c', 1, 'active', 2, NULL,
               '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', '{}');
             CREATE TABLE calibrations (exam TEXT NOT NULL, version INTEGER NOT NULL,
               created_at TEXT NOT NULL, source TEXT NOT NULL, responses INTEGER NOT NULL,
               params TEXT NOT NULL, summary TEXT NOT NULL, PRIMARY KEY (exam, version));
             INSERT INTO calibrations VALUES ('geo', 1, '2024-01-01T00:00:00.000Z',
               'provisional', 0, '[]', '{}');
             INSERT INTO calibrations VALUES ('geo', 2, '2024-01-02T00:00:00.000Z',
               'calibration', 40, '[]', '{}');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let old = store.get_session("old").await.unwrap().unwrap();
    assert_eq!((old.answered, old.closes_at), (2, None));
    // The latest version was the one in use: it stays the active one.
    let active = store.get_active_calibration("geo").await.unwrap().unwrap();
    assert_eq!((active.version, active.activation), (2, Some(2)));
    let first = store
        .get_calibration("geo", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.activation, Some(1));
    assert!(
        store
            .due_sessions("2099-01-01T00:00:00.000Z", 10)
            .await
            .unwrap()
            .is_empty()
    );
    drop(store);
    // Opening again finds the column there.
    SqliteStore::open(dir.path()).unwrap();
}

#[tokio::test]
async fn sessions_and_calibrations_meet_the_session_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    crate::store::conformance::check_session_store(&store).await;
    crate::store::conformance::check_calibration_after(&store).await;
    crate::store::conformance::check_activation(&store).await;
    crate::store::conformance::check_roster(&store).await;
    crate::store::conformance::check_finish(&store).await;
    crate::store::conformance::check_attempt_store(&store).await;
}

/// Here finishing is one transaction: a lost race stores no result and no change
/// event; a won one exactly one of each.
#[tokio::test]
async fn finishing_stores_result_event_and_state_together_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut active = crate::store::conformance::session("s", "geo", "2024-05-02T10:00:00Z");
    active.answered = 4;
    store.put_session(active.clone()).await.unwrap();
    let result = doc("a@example.com", "geo");
    let mut finished = active.clone();
    finished.status = "finished".into();
    finished.answered = 5;
    finished.result_id = Some(result.id.clone());

    assert!(
        !store
            .finish_session_if(finished.clone(), 3, &result)
            .await
            .unwrap()
    );
    assert_eq!(store.get_result(&result.id).await.unwrap(), None);
    let events = || store.count_pending_outbox(OutboxReader::Publisher);
    assert_eq!(events().await.unwrap(), 0);

    assert!(
        store
            .finish_session_if(finished.clone(), 4, &result)
            .await
            .unwrap()
    );
    assert_eq!(store.get_result(&result.id).await.unwrap(), Some(result));
    assert_eq!(events().await.unwrap(), 1);
    assert_eq!(store.get_session("s").await.unwrap(), Some(finished));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calibrations_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    crate::store::conformance::check_concurrent_calibrations(&[store]).await;
}

/// `f`'s output; a failure naming `what` if it takes 20 s (a hang, not a slow read).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} waited behind the scans"))
}

/// However many scans run, and however long they hold their connections (here: paused
/// inside a chunk until released), one read connection stays for the request path: point
/// reads, lists and the health check's ping complete meanwhile. Deterministic: the scans
/// wait on channels, not on time (the timeout only turns a hang into a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_scans_leave_a_reader_for_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open_with_readers(dir.path(), 3).unwrap());
    let session = crate::store::conformance::session("s1", "geo", "2024-05-01T10:00:00.000Z");
    store.put_session(session.clone()).await.unwrap();
    let result = doc("a@x", "geo");
    store.insert_result(&result).await.unwrap();
    assert_eq!(store.readers(), (3, 3));

    // Three scans on three connections: two get one (all but one), the third waits.
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let mut releases = Vec::new();
    let mut scans = Vec::new();
    for i in 0..3 {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        releases.push(release);
        let (store, started_tx) = (store.clone(), started_tx.clone());
        scans.push(tokio::spawn(async move {
            store
                .scan(move |c| {
                    started_tx.send(i).unwrap();
                    wait.recv().unwrap();
                    c.query_row("SELECT count(*) FROM adaptive_sessions", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .await
        }));
    }
    let (first, second) = (started.recv().await.unwrap(), started.recv().await.unwrap());
    assert_ne!(first, second);
    assert_eq!(store.readers(), (3, 1), "two scans hold a connection each");

    within("ping", store.ping()).await.unwrap();
    assert_eq!(
        within("get_session", store.get_session("s1"))
            .await
            .unwrap(),
        Some(session)
    );
    assert_eq!(
        within("get_result", store.get_result(&result.id))
            .await
            .unwrap(),
        Some(result.clone())
    );
    let pending = within(
        "pending_outbox",
        store.pending_outbox(OutboxReader::Publisher, 10),
    );
    assert_eq!(pending.await.unwrap().len(), 1);
    // Writes never needed a reader; still fine.
    store.insert_result(&doc("b@x", "geo")).await.unwrap();
    assert!(
        started.try_recv().is_err(),
        "the third scan still waits: scans never take the last connection"
    );

    // Released, every scan finishes (the third once a connection is free).
    for release in &releases {
        release.send(()).unwrap();
    }
    for scan in scans {
        assert_eq!(scan.await.unwrap().unwrap(), 1);
    }
    assert_eq!(store.readers(), (3, 3));
}

/// A scan in chunks sees every session once, holds no connection between its chunks, and
/// reads only the fields asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_in_chunks_holds_no_reader_between_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let n = 2_500;
    let mut puts = Vec::new();
    for i in 0..n {
        let s = crate::store::conformance::session(
            &format!("s{i:05}"),
            "geo",
            "2024-05-01T10:00:00.000Z",
        );
        puts.push(store.put_session(s));
    }
    for put in futures::future::join_all(puts).await {
        put.unwrap();
    }
    let (size, _) = store.readers();
    let mut after = None;
    let mut ids = Vec::new();
    let mut chunks = 0;
    loop {
        let chunk = store
            .scan_sessions(after, 1000, &[SessionField::Status])
            .await
            .unwrap();
        chunks += 1;
        assert_eq!(store.readers(), (size, size), "nothing held between chunks");
        // A write between chunks (of a session already seen) goes through.
        store
            .put_session(crate::store::conformance::session(
                "s00000",
                "geo",
                "2024-05-01T10:00:00.000Z",
            ))
            .await
            .unwrap();
        for s in &chunk.sessions {
            assert_eq!((s.status.as_str(), s.state.as_str()), ("active", ""));
        }
        ids.extend(chunk.sessions.into_iter().map(|s| s.id));
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(chunks, 3);
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (n, n));
    assert!(
        store
            .scan_sessions(Some("not a position".into()), 10, &[])
            .await
            .is_err()
    );
}

/// Read connections cannot write (`query_only`): only the writer does.
#[tokio::test]
async fn read_connections_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.insert_result(&doc("a@x", "geo")).await.unwrap();
    let deleted = store
        .with(false, |c| c.execute("DELETE FROM results", []))
        .await;
    assert!(deleted.is_err(), "{deleted:?}");
    let left = store
        .with(false, |c| {
            c.query_row("SELECT count(*) FROM results", [], |r| r.get::<_, i64>(0))
        })
        .await
        .unwrap();
    assert_eq!(left, 1);
}

/// Each outbox consumer finds its pending events through its partial index, not by walking
/// every event it handled before (the outbox only grows).
#[tokio::test]
async fn pending_events_are_found_without_walking_the_handled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for reader in [OutboxReader::Publisher, OutboxReader::ScoreCards] {
        let sql = format!("EXPLAIN QUERY PLAN {}", reader.pending_sql());
        let plan = store
            .with(false, move |c| {
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map([10], |r| r.get::<_, String>(3))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await
            .unwrap()
            .join("; ");
        let index = match reader {
            OutboxReader::Publisher => "outbox_unpublished",
            OutboxReader::ScoreCards => "outbox_uncarded",
        };
        assert!(
            plan.contains(&format!("USING INDEX {index}")),
            "{reader:?}: {plan}"
        );
    }
}

/// A full disk fails the writes with that error (SQLite may roll the whole group's
/// transaction back, savepoints and all), and the store writes again once there is room.
#[tokio::test]
async fn a_full_disk_fails_writes_with_its_own_error_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.insert_result(&doc("first@x", "geo")).await.unwrap();
    let pages: i64 = {
        let conn = store.writer.lock().unwrap();
        let pages = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        // The database cannot grow: as if the disk were full.
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
        pages
    };
    let big = |i: usize| {
        let mut d = doc(&format!("s{i}@x"), "geo");
        d.exam = format!("geo-{}", "x".repeat(64 * 1024));
        d
    };
    let e = store.insert_result(&big(0)).await.unwrap_err().to_string();
    assert!(e.contains("full"), "{e}");
    assert!(!e.contains("savepoint"), "{e}");
    {
        let conn = store.writer.lock().unwrap();
        conn.query_row(
            &format!("PRAGMA max_page_count = {}", pages * 1000),
            [],
            |_| Ok(()),
        )
        .unwrap();
    }
    store.insert_result(&big(1)).await.unwrap();
    let all = store
        .list_results(&ResultFilter {
            email: None,
            exam: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "the failed write left nothing behind");
}

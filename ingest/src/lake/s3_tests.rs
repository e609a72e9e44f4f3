//! The lake on an S3-compatible server (`EXAMFLOW_TEST_S3_ENDPOINT`, moto, started by
//! `scripts/test-all`): what the local lake does, on S3 — commits with offsets, the plain
//! Parquet scan, the ability snapshot, compaction and vacuum, and two writers racing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::test_support::{batches_of, sample_texts};
use super::*;

/// A lake in a new bucket, or `None` (with a notice) when no S3 server was started.
fn s3_lake(test: &str) -> Option<LakeLocation> {
    let Ok(endpoint) = std::env::var("EXAMFLOW_TEST_S3_ENDPOINT") else {
        eprintln!(
            "\n*** SKIPPED: S3 test {test}: EXAMFLOW_TEST_S3_ENDPOINT is not set (run \
             scripts/test-all) ***\n"
        );
        return None;
    };
    let bucket = format!("unit-{}-{}", std::process::id(), rand::random::<u32>());
    let status = std::process::Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-X", "PUT"])
        .arg(format!("{endpoint}/{bucket}"))
        .status()
        .expect("curl");
    assert!(status.success(), "creating bucket {bucket}");
    let options: HashMap<String, String> = [
        ("endpoint", endpoint.as_str()),
        ("allow_http", "true"),
        ("region", "us-east-1"),
        ("access_key_id", "test"),
        ("secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Some(LakeLocation::parse(&format!("s3://{bucket}/lake"), &options).unwrap())
}

/// Commits `texts[range]` (partition 0, offsets = indexes) to `attempts` and
/// `attempt_questions` as writer `app`.
async fn commit(lake: &Lake, app: &str, texts: &[String], range: std::ops::Range<usize>) {
    let batches = batches_of(texts, range.clone());
    let positions = BTreeMap::from([(("exams".to_string(), 0), range.end as i64 - 1)]);
    lake.attempts.push_tail(batches.attempts);
    lake.attempts.commit_tail(app, &positions, 1).await.unwrap();
    lake.attempt_questions.push_tail(batches.questions);
    lake.attempt_questions
        .commit_tail(app, &positions, 1)
        .await
        .unwrap();
}

async fn count(lake: &Lake, sql: &str) -> i64 {
    let ctx = query::new_session();
    query::register_lake(&ctx, lake, false).await.unwrap();
    let batches = query::run_sql(&ctx, sql).await.unwrap();
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batches[0].column(0))
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_on_s3_commits_reads_compacts_and_keeps_its_snapshot() {
    let Some(location) = s3_lake("a_lake_on_s3_commits_reads_compacts_and_keeps_its_snapshot")
    else {
        return;
    };
    let texts = sample_texts();
    let lake = Lake::open_at(location.clone()).await.unwrap();
    assert!(lake.attempts.dir().is_none());
    assert!(lake.attempts.url().as_str().starts_with("s3://"));
    commit(&lake, "app", &texts, 0..100).await;
    commit(&lake, "app", &texts, 100..200).await;
    // Replayed rows (a restart before the Kafka offset commit) are dropped by the offsets.
    commit(&lake, "app", &texts, 150..200).await;
    assert_eq!(count(&lake, "SELECT count(*) FROM attempts").await, 200);

    // A second process opening the same URI sees the same tables, through the plain
    // Parquet scan over the bucket's objects.
    let other = Lake::open_at(location.clone()).await.unwrap();
    let snapshot =
        query::SnapshotTable::new(&query::new_session().state(), other.attempts.committed())
            .await
            .unwrap();
    assert!(snapshot.is_plain_parquet());
    assert_eq!(count(&other, "SELECT count(*) FROM attempts").await, 200);
    let offsets = other
        .attempts
        .committed_offsets("app", &[("exams".to_string(), 0)])
        .await
        .unwrap();
    assert_eq!(offsets.get(&("exams".to_string(), 0)), Some(&199));

    // Abilities: the first start reads the table and saves a snapshot in the bucket; the
    // next start takes it.
    let users = other.rebuild_abilities().await.unwrap();
    assert!(users > 0);
    let mut saved = None;
    for _ in 0..200 {
        saved = location.read(ABILITY_SNAPSHOT).await.unwrap();
        if saved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(saved.is_some(), "no ability snapshot in the bucket");
    let third = Lake::open_at(location.clone()).await.unwrap();
    assert_eq!(third.rebuild_abilities().await.unwrap(), users);

    // Compaction and vacuum work on the bucket, rows and offsets unchanged.
    let report = housekeeping::compact_and_vacuum(&lake.attempts, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.files_removed, 2, "{report:?}");
    assert_eq!(report.files_vacuumed, 2, "{report:?}");
    lake.attempts.refresh().await.unwrap();
    assert_eq!(
        lake.attempts.committed().get_file_uris().unwrap().count(),
        1
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM attempts").await, 200);
    let offsets = lake
        .attempts
        .committed_offsets("app", &[("exams".to_string(), 0)])
        .await
        .unwrap();
    assert_eq!(offsets.get(&("exams".to_string(), 0)), Some(&199));
    lake.location().check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_s3_each_get_their_own_versions() {
    let Some(location) = s3_lake("two_writers_on_s3_each_get_their_own_versions") else {
        return;
    };
    let texts = sample_texts();
    let (a, b) = (
        Lake::open_at(location.clone()).await.unwrap(),
        Lake::open_at(location.clone()).await.unwrap(),
    );
    // Both commit the same 100 rows of the same partition at once, twice over: the
    // conditional put lets one win each version; the other re-reads the offsets and
    // drops what the winner wrote.
    let (texts_a, texts_b) = (texts.clone(), texts.clone());
    tokio::join!(
        async {
            commit(&a, "app", &texts_a, 0..50).await;
            commit(&a, "app", &texts_a, 50..100).await;
        },
        async {
            commit(&b, "app", &texts_b, 0..50).await;
            commit(&b, "app", &texts_b, 50..100).await;
        },
    );
    let fresh = Lake::open_at(location).await.unwrap();
    assert_eq!(count(&fresh, "SELECT count(*) FROM attempts").await, 100);
    assert_eq!(
        count(
            &fresh,
            "SELECT count(*) FROM (SELECT source_offset FROM attempts GROUP BY source_offset \
             HAVING count(*) > 1)"
        )
        .await,
        0
    );
}

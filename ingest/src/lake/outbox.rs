//! The embedded store's change feed into the lake, for servers without the Kafka ingest:
//! every result stored in SQLite reaches `score_changes` / `score_detail_changes` (and so
//! the `scores` and `score_details` views) as if it had come from Debezium.
//!
//! The outbox's sequence numbers play the part of offsets: rows carry
//! `source_topic = "embedded-outbox"`, partition 0, `source_offset = seq`, and every commit
//! records the last sequence number in the tables' transaction actions (writer
//! `embedded-outbox`), the same exactly-once mechanism as the Kafka ingest: after a crash
//! the feed resumes after the last committed event, and a repeated event is dropped at
//! commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::Lake;
use super::changes::{ChangeOutcome, ScoreChangeBuilder};
use crate::debezium::parse_change_event;
use crate::error::Result;
use crate::source::SourcePosition;
use crate::store::SqliteStore;

/// `source_topic` of the rows from the embedded outbox.
pub const OUTBOX_SOURCE: &str = "embedded-outbox";
/// Writer name in the tables' transaction actions.
const OUTBOX_APP: &str = "embedded-outbox";
/// Events read and committed together at most.
const BATCH: usize = 1000;

/// The last outbox sequence number both change tables hold (`None`: nothing yet).
async fn committed_seq(lake: &Lake) -> Result<Option<i64>> {
    let tp = (OUTBOX_SOURCE.to_string(), 0);
    let mut lowest: Option<i64> = None;
    for table in [&lake.score_changes, &lake.score_detail_changes] {
        let offsets = table
            .committed_offsets(OUTBOX_APP, std::slice::from_ref(&tp))
            .await?;
        match offsets.get(&tp) {
            None => return Ok(None),
            Some(&seq) => lowest = Some(lowest.map_or(seq, |l: i64| l.min(seq))),
        }
    }
    Ok(lowest)
}

/// Where the feed stands.
#[derive(Debug, Default)]
pub struct FeedPosition {
    /// Last outbox sequence number committed to both tables.
    pub committed: Option<i64>,
    /// Last sequence number in the tables' tails, not yet committed (a failed commit is
    /// retried with these rows, never read again from the outbox).
    pending: Option<i64>,
}

impl FeedPosition {
    /// Resumes after what the lake holds.
    pub async fn resume(lake: &Lake) -> Result<FeedPosition> {
        Ok(FeedPosition {
            committed: committed_seq(lake).await?,
            pending: None,
        })
    }
}

/// Most time between a result's arrival in the tail and its Delta commit: results are
/// visible to live queries at once; commits are batched so a busy server does not write two
/// small Parquet files per result.
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// Moves outbox events after the ones already in the tails into the tails (visible to live
/// queries from then on); returns how many.
pub async fn read_new(store: &SqliteStore, lake: &Lake, at: &mut FeedPosition) -> Result<usize> {
    let after = at.pending.or(at.committed).unwrap_or(0);
    let events = store.outbox_after(after, BATCH).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let mut builder = ScoreChangeBuilder::new();
    let now_us = chrono::Utc::now().timestamp_micros();
    for event in &events {
        let source = SourcePosition {
            topic: OUTBOX_SOURCE,
            partition: 0,
            offset: event.seq,
            ingested_at_us: now_us,
        };
        match parse_change_event(Some(&event.key), Some(&event.value)) {
            Ok(change) => {
                if let ChangeOutcome::Rejected(reason) = builder.append(&change, None, &source) {
                    warn!(seq = event.seq, %reason, "outbox event not applied to the lake");
                }
            }
            Err(e) => warn!(seq = event.seq, error = %e, "outbox event is not a change event"),
        }
    }
    let (changes, details) = builder.finish();
    lake.score_changes.push_tail(changes);
    lake.score_detail_changes.push_tail(details);
    at.pending = Some(last);
    Ok(events.len())
}

/// Commits what the tails hold (a failed commit is retried with the same rows); returns
/// how many outbox events the commit covered.
pub async fn commit(lake: &Lake, at: &mut FeedPosition) -> Result<usize> {
    let Some(last) = at.pending else {
        return Ok(0);
    };
    let positions = BTreeMap::from([((OUTBOX_SOURCE.to_string(), 0), last)]);
    for table in [&lake.score_changes, &lake.score_detail_changes] {
        table
            .commit_tail(OUTBOX_APP, &positions, table.tail_batches())
            .await?;
    }
    let moved = (last - at.committed.unwrap_or(0)).max(0) as usize;
    at.committed = Some(last);
    at.pending = None;
    Ok(moved)
}

/// Reads what is new and commits everything in the tails; returns how many events the
/// commit covered.
pub async fn feed_once(store: &SqliteStore, lake: &Lake, at: &mut FeedPosition) -> Result<usize> {
    read_new(store, lake, at).await?;
    commit(lake, at).await
}

/// Runs the feed until `stop` turns true: new results go to the tails as they are stored
/// and are committed every [`COMMIT_INTERVAL`] at most; at the stop, what is new is read
/// and everything in the tails committed before it returns (a drained shutdown).
pub async fn run(
    store: Arc<SqliteStore>,
    lake: Arc<Lake>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut at = FeedPosition::resume(&lake).await?;
    let mut last_commit = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            feed_once(&store, &lake, &mut at).await?;
            return Ok(());
        }
        let read = match read_new(&store, &lake, &mut at).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "reading the outbox for the lake failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if at.pending.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
            if let Err(e) = commit(&lake, &mut at).await {
                warn!(error = %e, "committing the outbox feed to the lake failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            last_commit = tokio::time::Instant::now();
        }
        if read < BATCH {
            // Woken by the next stored result, in time for the next due commit, or by
            // the stop.
            let wait = if at.pending.is_some() {
                COMMIT_INTERVAL.saturating_sub(last_commit.elapsed())
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                _ = tokio::time::timeout(wait, store.outbox_notify.notified()) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

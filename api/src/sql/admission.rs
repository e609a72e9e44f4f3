//! Admission control of SQL, over `POST /api/sql` and the PostgreSQL interface together:
//!
//! - at most `[sql] max_concurrent_queries` queries run at once; each holds a [`Slot`] until
//!   its result has been sent (or dropped), and no longer than its time limit;
//! - one memory pool of `[sql] total_memory_bytes` for the whole server, of which each query
//!   (on pgwire: each connection) may take at most `[sql] memory_limit_bytes`
//!   ([`QueryMemory`]); DataFusion's operators, the JSON result buffer and the results of
//!   string functions reserve from it;
//! - a query waits up to `[sql] queue_timeout_ms` for a slot and for `memory_limit_bytes` to
//!   be free in the pool, then is refused as [`Busy`] (HTTP 503 with `Retry-After`; pgwire
//!   SQLSTATE 53300, or 53200 when memory is what is missing).
//!
//! A query that runs out of its own `memory_limit_bytes` fails as before (DataFusion's
//! resources-exhausted error); one refused because the server's pool is full was not at
//! fault, and is answered as busy instead ([`QueryMemory::refused_for_server`]).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::common::{Result, resources_datafusion_err};
use datafusion::execution::memory_pool::{
    MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use futures::{Stream, StreamExt};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::SqlConfig;

/// What a query waited for in vain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `[sql] max_concurrent_queries` were running.
    Queries,
    /// `[sql] total_memory_bytes` had less than `memory_limit_bytes` free.
    Memory,
}

/// The server's admission of SQL queries (one, in `AppState`).
pub struct SqlAdmission {
    slots: Arc<Semaphore>,
    max_queries: usize,
    server: Arc<ServerMemory>,
    query_limit: usize,
    queue_timeout: Duration,
    running: IntGauge,
    busy: IntCounterVec,
}

impl SqlAdmission {
    pub fn new(config: &SqlConfig) -> Self {
        let max_queries = config.max_concurrent_queries.max(1);
        let total = config.total_memory_bytes();
        SqlAdmission {
            slots: Arc::new(Semaphore::new(max_queries)),
            max_queries,
            server: Arc::new(ServerMemory {
                total,
                used: AtomicUsize::new(0),
                gauge: IntGauge::new(
                    "examflow_sql_memory_reserved_bytes",
                    "Memory reserved by running SQL queries (of [sql] total_memory_bytes).",
                )
                .expect("valid metric"),
            }),
            query_limit: config.memory_limit_bytes.min(total),
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            running: IntGauge::new(
                "examflow_sql_queries_running",
                "SQL queries (HTTP and pgwire) holding one of [sql] max_concurrent_queries.",
            )
            .expect("valid metric"),
            busy: IntCounterVec::new(
                Opts::new(
                    "examflow_sql_busy_total",
                    "SQL queries refused as busy, by what they waited for (queries, memory).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        }
    }

    /// Adds the admission's metrics to `registry` (`/metrics`).
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.running.clone()))?;
        registry.register(Box::new(self.server.gauge.clone()))?;
        registry.register(Box::new(self.busy.clone()))?;
        Ok(())
    }

    /// A place among the running queries, once one is free and the shared pool has room
    /// for one query's `memory_limit_bytes`; waits at most `queue_timeout_ms` for both.
    pub async fn admit(&self) -> std::result::Result<Slot, Busy> {
        let deadline = Instant::now() + self.queue_timeout;
        let permit =
            match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(self.refuse(Busy::Queries)),
            };
        // Memory is given back as reservations shrink, inside DataFusion, without a
        // notification: look again every few milliseconds (only while the pool is full).
        while self.server.free() < self.query_limit {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.refuse(Busy::Memory));
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(10))).await;
        }
        self.running.inc();
        Ok(Slot(Arc::new(SlotInner {
            permit: Mutex::new(Some(permit)),
            timer: Mutex::new(None),
            running: self.running.clone(),
        })))
    }

    fn refuse(&self, busy: Busy) -> Busy {
        let reason = match busy {
            Busy::Queries => "queries",
            Busy::Memory => "memory",
        };
        self.busy.with_label_values(&[reason]).inc();
        busy
    }

    /// A new share of the server's pool for one query (or one pgwire connection, which runs
    /// one query at a time), capped at `memory_limit_bytes`.
    pub fn query_memory(&self) -> QueryMemory {
        let state = Arc::new(QueryState {
            server: self.server.clone(),
            limit: self.query_limit,
            used: AtomicUsize::new(0),
            refused_for_server: AtomicBool::new(false),
        });
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            QueryPool(state.clone()),
            NonZeroUsize::new(5).expect("5 is not zero"),
        ));
        QueryMemory { state, pool }
    }

    /// Seconds a client refused as busy is told to wait (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.queue_timeout.as_millis().div_ceil(1000).max(1) as u64
    }

    /// Why a query was refused, for its error message.
    pub fn busy_message(&self, busy: Busy) -> String {
        let waited = self.queue_timeout.as_millis();
        match busy {
            Busy::Queries => format!(
                "the server is busy: {} SQL queries are running, the most [sql] \
                 max_concurrent_queries allows, and none finished within {waited} ms; try again \
                 shortly",
                self.max_queries
            ),
            Busy::Memory => self.memory_busy_message(),
        }
    }

    /// The message of a query refused because the shared pool was full.
    pub fn memory_busy_message(&self) -> String {
        format!(
            "the server is busy: the memory of SQL queries ([sql] total_memory_bytes, {} bytes) \
             is in use by other queries; try again shortly",
            self.server.total
        )
    }

    /// Bytes reserved by all queries now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.server.used.load(Ordering::Relaxed)
    }
}

/// The pool every query shares: a counter against `total_memory_bytes`.
#[derive(Debug)]
struct ServerMemory {
    total: usize,
    used: AtomicUsize,
    gauge: IntGauge,
}

impl ServerMemory {
    fn free(&self) -> usize {
        self.total.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    fn try_grow(&self, bytes: usize) -> bool {
        let grown = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.total)
            });
        if let Ok(before) = grown {
            self.gauge.set((before + bytes) as i64);
        }
        grown.is_ok()
    }

    fn grow(&self, bytes: usize) {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        self.gauge.set(before.saturating_add(bytes) as i64);
    }

    fn shrink(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.gauge.set(before.saturating_sub(bytes) as i64);
    }
}

/// One query's share of the server's pool: the DataFusion [`MemoryPool`] of its runtime.
#[derive(Clone)]
pub struct QueryMemory {
    state: Arc<QueryState>,
    pool: Arc<dyn MemoryPool>,
}

impl QueryMemory {
    /// The pool to give the query's runtime (and anything else that should count).
    pub fn pool(&self) -> Arc<dyn MemoryPool> {
        self.pool.clone()
    }

    /// Whether a reservation was refused because the server's pool was full (not the
    /// query's own limit) since [`QueryMemory::start_query`].
    pub fn refused_for_server(&self) -> bool {
        self.state.refused_for_server.load(Ordering::Relaxed)
    }

    /// A new query starts on this share (pgwire: the connection's next statement).
    pub fn start_query(&self) {
        self.state
            .refused_for_server
            .store(false, Ordering::Relaxed);
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.state.used.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct QueryState {
    server: Arc<ServerMemory>,
    limit: usize,
    used: AtomicUsize,
    refused_for_server: AtomicBool,
}

/// The [`MemoryPool`] of one query: reserves from the server's pool, up to the query's limit.
#[derive(Debug)]
struct QueryPool(Arc<QueryState>);

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool of {} bytes ([sql] memory_limit_bytes) within {} bytes ([sql] \
             total_memory_bytes)",
            self.0.limit, self.0.server.total
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "examflow-query"
    }

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.0.used.fetch_add(additional, Ordering::Relaxed);
        self.0.server.grow(additional);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.0.used.fetch_sub(shrink, Ordering::Relaxed);
        self.0.server.shrink(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let state = &self.0;
        state
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|n| *n <= state.limit)
            })
            .map_err(|used| {
                resources_datafusion_err!(
                    "{} asked for {additional} more bytes with {used} in use: the query needs \
                     more than its {} bytes of memory ([sql] memory_limit_bytes)",
                    reservation.consumer().name(),
                    state.limit
                )
            })?;
        if !state.server.try_grow(additional) {
            state.used.fetch_sub(additional, Ordering::Relaxed);
            state.refused_for_server.store(true, Ordering::Relaxed);
            return Err(resources_datafusion_err!(
                "{} asked for {additional} more bytes, but the memory of all SQL queries ([sql] \
                 total_memory_bytes, {} bytes) is in use",
                reservation.consumer().name(),
                state.server.total
            ));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.0.limit)
    }
}

/// A running query's place among `[sql] max_concurrent_queries`. Clones share it; it is
/// given back when the last clone is dropped, or at the time set by [`Slot::release_at`],
/// whichever comes first.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    timer: Mutex<Option<tokio::task::AbortHandle>>,
    running: IntGauge,
}

impl SlotInner {
    fn release(&self) {
        let permit = self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
        if permit.is_some() {
            self.running.dec();
        }
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.release();
        if let Some(timer) = self.timer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            timer.abort();
        }
    }
}

impl Slot {
    /// Gives the slot back at `deadline` even if the query's result is still held (a client
    /// that stops reading a stream): past its time limit a query produces nothing more.
    pub fn release_at(&self, deadline: Instant) {
        let slot = Arc::downgrade(&self.0);
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(slot) = slot.upgrade() {
                slot.release();
            }
        });
        let previous = self
            .0
            .timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(timer.abort_handle());
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Whether the slot is still taken.
    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        self.0
            .permit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// `stream` that keeps `held` (a [`Slot`], a memory reservation) until it ends or is dropped.
pub fn holding<S, H>(stream: S, held: H) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    H: Send + 'static,
{
    futures::stream::unfold((Box::pin(stream), held), |(mut stream, held)| async move {
        let item = stream.next().await?;
        Some((item, (stream, held)))
    })
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::MemoryConsumer;

    use super::*;

    fn admission(
        max_queries: usize,
        memory_limit: usize,
        total: usize,
        wait_ms: u64,
    ) -> SqlAdmission {
        SqlAdmission::new(&SqlConfig {
            max_concurrent_queries: max_queries,
            memory_limit_bytes: memory_limit,
            total_memory_bytes: Some(total),
            queue_timeout_ms: wait_ms,
            ..SqlConfig::default()
        })
    }

    /// Past `max_concurrent_queries` a query waits `queue_timeout_ms`, then is busy; a slot
    /// given back lets the next one in, also one already waiting.
    #[tokio::test]
    async fn queries_past_the_limit_wait_then_are_busy() {
        let admission = Arc::new(admission(1, 100, 1000, 200));
        let first = admission.admit().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(admission.admit().await.err(), Some(Busy::Queries));
        assert!(started.elapsed() >= Duration::from_millis(190), "it waited");
        assert_eq!(admission.busy.with_label_values(&["queries"]).get(), 1);
        assert_eq!(admission.running.get(), 1);

        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert_eq!(
            waiting.await.unwrap(),
            Ok(()),
            "the waiting query got the slot"
        );
        assert_eq!(admission.running.get(), 0);
        assert!(admission.admit().await.is_ok());
        assert_eq!(admission.retry_after_secs(), 1);
    }

    /// A slot moved into a result stream is held while the stream lives, and given back
    /// when it is dropped half-read or read to its end.
    #[tokio::test]
    async fn slots_live_in_result_streams_until_they_are_dropped() {
        let admission = admission(1, 100, 1000, 50);
        let rows = || futures::stream::iter([1, 2, 3]);

        let slot = admission.admit().await.unwrap();
        let mut stream = Box::pin(holding(rows(), slot.clone()));
        drop(slot);
        assert_eq!(stream.next().await, Some(1));
        assert_eq!(admission.admit().await.err(), Some(Busy::Queries));
        drop(stream);
        let slot = admission
            .admit()
            .await
            .expect("given back with the dropped stream");

        let stream = holding(rows(), slot);
        assert_eq!(stream.collect::<Vec<_>>().await, [1, 2, 3]);
        assert!(
            admission.admit().await.is_ok(),
            "given back at the stream's end"
        );
    }

    /// A stream nobody reads (a client that stopped) keeps its slot only until the query's
    /// deadline.
    #[tokio::test]
    async fn slots_are_given_back_at_the_deadline() {
        let admission = admission(1, 100, 1000, 5000);
        let slot = admission.admit().await.unwrap();
        slot.release_at(Instant::now() + Duration::from_millis(100));
        let unread = Box::pin(holding(futures::stream::iter([1, 2, 3]), slot.clone()));
        assert!(slot.is_held());
        let started = std::time::Instant::now();
        assert!(admission.admit().await.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(!slot.is_held());
        drop(unread);
    }

    /// Each query is capped at `memory_limit_bytes`; all of them together at
    /// `total_memory_bytes`. Only the second refusal is the server's, and says so.
    #[tokio::test]
    async fn queries_are_capped_and_share_the_server_pool() {
        let admission = admission(4, 60, 100, 50);
        let a = admission.query_memory();
        let b = admission.query_memory();
        let in_a = MemoryConsumer::new("sort").register(&a.pool());
        in_a.try_grow(60).unwrap();
        let over = in_a.try_grow(1).unwrap_err().to_string();
        assert!(
            over.contains("Resources exhausted") && over.contains("[sql] memory_limit_bytes"),
            "{over}"
        );
        assert!(!a.refused_for_server());
        assert_eq!((a.reserved(), admission.reserved()), (60, 60));

        let in_b = MemoryConsumer::new("join").register(&b.pool());
        let full = in_b.try_grow(41).unwrap_err().to_string();
        assert!(full.contains("[sql] total_memory_bytes"), "{full}");
        assert!(b.refused_for_server());
        assert_eq!(
            admission.reserved(),
            60,
            "a refused reservation takes nothing"
        );
        in_b.try_grow(40).unwrap();
        assert_eq!(admission.reserved(), 100);

        // Given back when the reservation goes (a query ends or drops its stream).
        drop(in_a);
        assert_eq!((a.reserved(), admission.reserved()), (0, 40));
        in_b.try_grow(20).unwrap();
        b.start_query();
        assert!(!b.refused_for_server());
    }

    /// A query starts only with `memory_limit_bytes` free in the server's pool: it waits for
    /// it, and is refused as busy (memory) when it does not come.
    #[tokio::test]
    async fn queries_wait_for_memory_then_are_busy() {
        let admission = Arc::new(admission(4, 60, 100, 150));
        let running = admission.query_memory();
        let held = MemoryConsumer::new("hash join").register(&running.pool());
        held.try_grow(50).unwrap();
        assert_eq!(admission.admit().await.err(), Some(Busy::Memory));
        assert!(
            admission
                .busy_message(Busy::Memory)
                .contains("total_memory_bytes")
        );
        assert_eq!(admission.running.get(), 0, "the slot was given back");

        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.shrink(20);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }
}

//! The runtime SQL queries run on. DataFusion's operators are CPU-bound and poll for
//! milliseconds at a time; on the request runtime's few workers (one per core) a long scan
//! held up the submissions, answers and `/healthz` queued behind it (see
//! `benches/RESULTS.md`, "Long scans of the embedded store vs. requests"). Queries from
//! `POST /api/sql` and pgwire connections therefore run, and their results are encoded, on
//! a runtime of their own with `[sql] threads` workers, so they can take at most those
//! cores however heavy they are.

use std::future::Future;

use futures::{Stream, StreamExt};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// Name of the runtime's worker threads (visible in `top -H` and `/proc`).
pub const THREAD_NAME: &str = "examflow-sql";

/// Chunks of an encoded result buffered between the SQL runtime and the connection.
const STREAM_BUFFER: usize = 4;

/// A multi-threaded tokio runtime for SQL. Dropping it stops its threads without waiting
/// (a query still running is cancelled), so it can be dropped inside async code.
pub struct SqlExecutor {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl SqlExecutor {
    /// A runtime of `threads` workers (at least one) and at most `blocking_threads` (at
    /// least one) for the queries' blocking work: store reads, decoding, polars.
    pub fn new(threads: usize, blocking_threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        // An absolute value: threads inherit their creator's nice value, and blocking
        // threads are started by SQL threads.
        let nice = (thread_nice() + NICE).min(LOWEST_PRIORITY);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(blocking_threads.max(1))
            .thread_name(THREAD_NAME)
            .on_thread_start(move || set_thread_nice(nice))
            .enable_all()
            .build()?;
        Ok(SqlExecutor {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `work` on the SQL runtime and waits for its output. Dropping the returned
    /// future (the client went away) cancels the work.
    pub async fn run<F>(&self, work: F) -> Result<F::Output, ApiError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = AbortOnDrop(self.handle.spawn(work));
        match task.wait().await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "a SQL query panicked");
                Err(ApiError::Invalid(
                    "the query failed (an internal error)".into(),
                ))
            }
            Err(e) => Err(ApiError::Invalid(format!("the query was cancelled: {e}"))),
        }
    }

    /// Polls `stream` on the SQL runtime, a few items ahead of the consumer; the items
    /// arrive through the returned stream. Dropping that stream stops the producer.
    pub fn stream<S>(&self, stream: S) -> impl Stream<Item = S::Item> + Send + 'static
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let producer = self.handle.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if sender.send(item).await.is_err() {
                    break;
                }
            }
        });
        let producer = AbortOnDrop(producer);
        futures::stream::unfold(
            (receiver, producer),
            |(mut receiver, producer)| async move {
                let item = receiver.recv().await?;
                Some((item, (receiver, producer)))
            },
        )
    }
}

impl Drop for SqlExecutor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How much lower the SQL threads' CPU priority (workers and their blocking pool, where
/// the embedded store's scans read and decode) is than the server's: under contention the
/// kernel runs the threads answering the rest of the API first.
pub const NICE: i32 = 10;

/// Nice values run from -20 to 19.
const LOWEST_PRIORITY: i32 = 19;

/// The calling thread's nice value (0 where there are none).
// std has no per-thread priority; these calls take and return plain integers.
#[allow(unsafe_code)]
fn thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Sets the calling thread's nice value (Linux: per thread; elsewhere nothing).
#[allow(unsafe_code)]
fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let outcome = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if outcome != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the priority of a SQL thread"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn wait(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    fn thread_name() -> String {
        std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn work_runs_on_the_sql_threads_not_the_callers() {
        let executor = SqlExecutor::new(1, 2).unwrap();
        assert_ne!(thread_name(), THREAD_NAME);
        let ran_on = executor.run(async { thread_name() }).await.unwrap();
        assert_eq!(ran_on, THREAD_NAME);
        let items: Vec<String> = executor
            .stream(futures::stream::iter(0..3).map(|_| thread_name()))
            .collect()
            .await;
        assert_eq!(items, vec![THREAD_NAME.to_string(); 3]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sql_threads_run_at_a_lower_priority_than_the_callers() {
        let own = thread_nice();
        let executor = SqlExecutor::new(1, 2).unwrap();
        let lower = (own + NICE).min(LOWEST_PRIORITY);
        assert_eq!(executor.run(async { thread_nice() }).await.unwrap(), lower);
        // The blocking pool too (started by a SQL thread): the embedded store's scans read
        // and decode there.
        let blocking = executor
            .run(async { tokio::task::spawn_blocking(thread_nice).await.unwrap() })
            .await
            .unwrap();
        assert_eq!(blocking, lower);
        assert_eq!(thread_nice(), own, "the caller's thread kept its priority");
    }

    #[tokio::test]
    async fn a_stream_keeps_its_order_and_ends() {
        let executor = SqlExecutor::new(2, 2).unwrap();
        let items: Vec<u32> = executor
            .stream(futures::stream::iter(0..1000))
            .collect()
            .await;
        assert_eq!(items, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_crash() {
        let executor = SqlExecutor::new(1, 2).unwrap();
        let outcome = executor.run(async { panic!("boom") }).await;
        assert!(matches!(outcome, Err(ApiError::Invalid(_))));
        // The runtime still runs work after a panicking task.
        assert_eq!(executor.run(async { 7 }).await.unwrap(), 7);
    }

    /// Sets its flag when dropped: tells whether a task was cancelled.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    async fn eventually(flag: &AtomicBool) -> bool {
        for _ in 0..500 {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_work() {
        let executor = SqlExecutor::new(1, 2).unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let work = executor.run(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        // Start it, then give up on it, as a handler does when its client goes away.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), work)
                .await
                .is_err()
        );
        assert!(
            eventually(&dropped).await,
            "the pending work was not cancelled"
        );

        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let endless = futures::stream::repeat(()).map(move |()| {
            let _ = &guard;
        });
        let mut stream = Box::pin(executor.stream(endless));
        assert!(stream.next().await.is_some());
        drop(stream);
        assert!(
            eventually(&dropped).await,
            "the endless stream was not stopped"
        );
    }

    #[tokio::test]
    async fn dropping_the_executor_inside_async_code_does_not_panic() {
        let executor = SqlExecutor::new(1, 2).unwrap();
        assert_eq!(executor.run(async { 1 }).await.unwrap(), 1);
        drop(executor);
    }
}

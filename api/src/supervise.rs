//! Background tasks that keep running: each of `serve`'s tasks (lake ingest, outbox relay,
//! score-card consumer, change capture, calibration schedule, deadlines) runs under a
//! supervisor that logs a failure (an error or a panic), counts it in `/metrics`, and starts
//! the task again after a capped exponential back-off. What was accepted stays where it was
//! (the outbox, the broker, MongoDB) until the task runs again. `/readyz` shows every task's
//! state, restarts and last error.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio::time::Instant;

/// First wait before a restart; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A task that ran this long before failing starts again after the first back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    /// Failed; waiting to start again.
    Restarting,
    /// Ended on its own (shutdown, or nothing to do with this configuration).
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskHealth {
    pub state: TaskState,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
}

/// The supervised tasks of one server.
#[derive(Clone)]
pub struct Tasks {
    health: Arc<Mutex<BTreeMap<String, TaskHealth>>>,
    failures: IntCounterVec,
    up: IntGaugeVec,
}

impl Tasks {
    pub fn new(registry: &Registry) -> Self {
        let failures = IntCounterVec::new(
            Opts::new(
                "examflow_task_failures_total",
                "Failures (errors or panics) of background tasks, each followed by a restart.",
            ),
            &["task"],
        )
        .expect("valid metric");
        let up = IntGaugeVec::new(
            Opts::new(
                "examflow_task_up",
                "1 while a background task runs, 0 while it waits to restart or has stopped.",
            ),
            &["task"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(failures.clone()));
        let _ = registry.register(Box::new(up.clone()));
        Tasks {
            health: Default::default(),
            failures,
            up,
        }
    }

    fn set(&self, name: &str, update: impl FnOnce(&mut TaskHealth)) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let entry = health.entry(name.to_string()).or_insert(TaskHealth {
            state: TaskState::Running,
            restarts: 0,
            last_error: None,
            last_error_at: None,
        });
        update(entry);
        let up = i64::from(entry.state == TaskState::Running);
        self.up.with_label_values(&[name]).set(up);
    }

    /// A failure a task retries by itself without ending (change capture): logged by the
    /// task, counted and shown like a restart here; the task waits to run again.
    pub fn report_failure(&self, name: &str, error: &str) {
        self.failures.with_label_values(&[name]).inc();
        self.set(name, |h| {
            h.state = TaskState::Restarting;
            h.restarts += 1;
            h.last_error = Some(error.to_string());
            h.last_error_at = Some(examflow_ingest::document::format_timestamp(
                chrono::Utc::now(),
            ));
        });
    }

    /// The task works again after [`Tasks::report_failure`] (its last error stays shown).
    pub fn report_recovery(&self, name: &str) {
        self.set(name, |h| h.state = TaskState::Running);
    }

    /// Every task's health, by name.
    pub fn snapshot(&self) -> BTreeMap<String, TaskHealth> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `make()`'s task on the runtime, supervised (see [`Tasks::supervise`]).
    pub fn spawn<F, Fut>(&self, name: &str, make: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let tasks = self.clone();
        let name = name.to_string();
        tokio::spawn(async move { tasks.supervise(&name, make).await })
    }

    /// Runs the task `make()` makes until it ends with `Ok`; after an error or a panic it is
    /// logged, counted, recorded for `/readyz`, and made and run again after a back-off
    /// (0.5 s doubling to 30 s, back to 0.5 s after a run of a minute or more).
    pub async fn supervise<F, Fut>(&self, name: &str, mut make: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.set(name, |h| h.state = TaskState::Running);
            let started = Instant::now();
            let failure = match AssertUnwindSafe(make()).catch_unwind().await {
                Ok(Ok(())) => {
                    self.set(name, |h| h.state = TaskState::Stopped);
                    return;
                }
                Ok(Err(e)) => format!("{e:#}"),
                Err(panic) => format!("panicked: {}", panic_message(&panic)),
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!(task = name, error = %failure, retry_in = ?backoff, "background task failed; restarting");
            self.failures.with_label_values(&[name]).inc();
            self.set(name, |h| {
                h.state = TaskState::Restarting;
                h.restarts += 1;
                h.last_error = Some(failure);
                h.last_error_at = Some(examflow_ingest::document::format_timestamp(
                    chrono::Utc::now(),
                ));
            });
            tokio::time::sleep(backoff).await;
            backoff = next_backoff(backoff);
        }
    }
}

/// A task's own reports of failures it retries, as [`Tasks::report_failure`] and
/// [`Tasks::report_recovery`] of its name.
pub struct TaskReporter {
    pub tasks: Tasks,
    pub name: &'static str,
}

impl examflow_ingest::cdc::CaptureHealth for TaskReporter {
    fn failed(&self, error: &str) {
        self.tasks.report_failure(self.name, error);
    }

    fn recovered(&self) {
        self.tasks.report_recovery(self.name);
    }
}

/// The wait after the next failure in a row: twice this one, at most [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_failing_task_is_restarted_and_its_error_reported() {
        let tasks = Tasks::new(&Registry::new());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        tasks
            .supervise("flaky", move || {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    match run {
                        0 => anyhow::bail!("disk full"),
                        1 => panic!("boom"),
                        _ => Ok(()),
                    }
                }
            })
            .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let health = &tasks.snapshot()["flaky"];
        assert_eq!(health.state, TaskState::Stopped);
        assert_eq!(health.restarts, 2);
        assert_eq!(health.last_error.as_deref(), Some("panicked: boom"));
        assert_eq!(tasks.failures.with_label_values(&["flaky"]).get(), 2);
    }

    #[test]
    fn failures_a_task_retries_itself_are_shown_and_counted() {
        let tasks = Tasks::new(&Registry::new());
        let reporter = TaskReporter {
            tasks: tasks.clone(),
            name: "change-capture",
        };
        use examflow_ingest::cdc::CaptureHealth;
        reporter.failed("cannot reach MongoDB");
        reporter.failed("cannot reach MongoDB again");
        let health = &tasks.snapshot()["change-capture"];
        assert_eq!(health.state, TaskState::Restarting);
        assert_eq!(health.restarts, 2);
        assert_eq!(
            health.last_error.as_deref(),
            Some("cannot reach MongoDB again")
        );
        assert_eq!(
            tasks.failures.with_label_values(&["change-capture"]).get(),
            2
        );
        assert_eq!(tasks.up.with_label_values(&["change-capture"]).get(), 0);
        reporter.recovered();
        let health = &tasks.snapshot()["change-capture"];
        assert_eq!(health.state, TaskState::Running);
        assert_eq!(health.restarts, 2);
        assert_eq!(tasks.up.with_label_values(&["change-capture"]).get(), 1);
    }

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        let mut waits = vec![FIRST_BACKOFF];
        for _ in 0..8 {
            waits.push(next_backoff(*waits.last().unwrap()));
        }
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }
}

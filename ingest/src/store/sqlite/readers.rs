//! The embedded store's read connections: a small pool instead of one connection behind a
//! mutex. SQLite in WAL mode lets every connection read at once, each from its own snapshot,
//! while the writer commits.
//!
//! Two lanes share the pool. Requests (point reads and short lists of the request path,
//! `/healthz`'s ping, the outbox consumers) may take any free connection. Scans (SQL tables
//! read in chunks) may hold at most all but one at a time, so however many scans run, a
//! request waits at most for another request or for one scan chunk that was already queued
//! for a connection, never for a whole scan. A scan takes a connection per chunk and gives it
//! back in between (see `SqliteStore::scan_sessions`), which also keeps its read snapshot
//! short: a long read transaction would keep checkpoints from copying the WAL past it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Read connections when the configuration names none.
pub const DEFAULT_READERS: usize = 4;

/// Which lane a read goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// The request path: any free connection.
    Request,
    /// One chunk of a scan: at most all connections but one, together with other scans.
    Scan,
}

pub(super) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection: a holder is sure to find one idle.
    any: Arc<Semaphore>,
    /// All connections but one: what scans may hold together.
    scans: Arc<Semaphore>,
    size: usize,
}

impl Readers {
    /// Opens `size` (at least 2) read-only connections to the database at `path`.
    pub fn open(path: &Path, size: usize) -> rusqlite::Result<Self> {
        let size = size.max(2);
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            let conn = Connection::open(path)?;
            // The file is in WAL mode already (set by the writer, kept in the file).
            conn.execute_batch("PRAGMA busy_timeout=10000; PRAGMA query_only=1;")?;
            idle.push(conn);
        }
        Ok(Readers {
            idle: Arc::new(Mutex::new(idle)),
            any: Arc::new(Semaphore::new(size)),
            scans: Arc::new(Semaphore::new(size - 1)),
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Connections not lent out right now.
    pub fn idle(&self) -> usize {
        self.any.available_permits()
    }

    /// Runs `f` on a free connection of `lane` in the blocking pool; waits (asynchronously)
    /// for one. Dropping the returned future before `f` started gives nothing up; once
    /// started, `f` runs to its end and the connection comes back.
    pub async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<rusqlite::Result<T>, tokio::task::JoinError> {
        let scan_permit = match lane {
            Lane::Scan => Some(acquire(&self.scans).await),
            Lane::Request => None,
        };
        let permit = acquire(&self.any).await;
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            // `lent` is declared after the permits, so it is dropped before them (also when
            // `f` panics): the connection is back before anyone may look for it.
            let _permits = (permit, scan_permit);
            let mut lent = Lent::take(&idle);
            f(lent.conn())
        })
        .await
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("the readers' semaphores are never closed")
}

/// A connection taken from the idle ones, given back when dropped.
struct Lent<'a> {
    idle: &'a Mutex<Vec<Connection>>,
    conn: Option<Connection>,
}

impl<'a> Lent<'a> {
    fn take(idle: &'a Mutex<Vec<Connection>>) -> Self {
        let conn = idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .expect("a permit holder always finds an idle connection");
        Lent {
            idle,
            conn: Some(conn),
        }
    }

    fn conn(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("lent until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

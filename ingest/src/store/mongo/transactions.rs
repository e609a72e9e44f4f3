//! Finishing an adaptive session in one multi-document transaction where the deployment
//! supports them (a replica set or a sharded cluster, asked once with `hello`).

use mongodb::ClientSession;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};

use super::{
    MongoStore, SessionStore, StoredSession, error_code, is_duplicate_key, session_to_bson,
};
use crate::document::ResultDocument;
use crate::error::{IngestError, Result};

/// MongoDB's code for a command the server does not know (`hello` before 4.4.2 / 4.2.10).
const COMMAND_NOT_FOUND: i32 = 59;

/// MongoDB's code for creating a collection that exists.
const NAMESPACE_EXISTS: i32 = 48;

/// How often a finish transaction is run before giving up on transient errors (a write
/// conflict with a concurrent finish of the same session that has not committed yet, a
/// primary stepping down). Each try after the first waits a little longer (see
/// [`transaction_backoff`]), under a second of waiting in all.
const TRANSACTION_ATTEMPTS: u32 = 12;

/// How often a commit whose outcome is unknown (`UnknownTransactionCommitResult`) is sent
/// again; committing a committed transaction again is harmless.
const COMMIT_ATTEMPTS: u32 = 5;

impl MongoStore {
    /// Whether finishing a session is one multi-document transaction here: the server is
    /// a replica-set member or a `mongos` recent enough for transactions. Asked with
    /// `hello` once per store (on first use, not at connect); an error (say the server is
    /// not up yet) is returned and asked again next time, never remembered as "no".
    pub async fn uses_transactions(&self) -> Result<bool> {
        self.transactions
            .get_or_try_init(|| async {
                let hello = self.hello().await?;
                let supported = supports_transactions(&hello);
                if supported {
                    // Before MongoDB 4.4 a transaction cannot create the collection it
                    // inserts into.
                    self.create_result_collection().await?;
                }
                tracing::debug!(
                    supported,
                    set_name = hello.get_str("setName").ok(),
                    msg = hello.get_str("msg").ok(),
                    "MongoDB: finishing sessions in transactions: {supported}"
                );
                Ok::<_, IngestError>(supported)
            })
            .await
            .copied()
    }

    /// Creates the result collection unless it exists.
    async fn create_result_collection(&self) -> Result<()> {
        let namespace = self.collection.namespace();
        match self
            .client
            .database(&namespace.db)
            .create_collection(&namespace.coll)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if error_code(&e) == Some(NAMESPACE_EXISTS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The server's `hello` reply (`isMaster` on servers that predate `hello`).
    async fn hello(&self) -> Result<Document> {
        let admin = self.client.database("admin");
        match admin.run_command(doc! {"hello": 1}).await {
            Ok(reply) => Ok(reply),
            Err(e) if error_code(&e) == Some(COMMAND_NOT_FOUND) => {
                Ok(admin.run_command(doc! {"isMaster": 1}).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`SessionStore::finish_session_if`] as one transaction: the conditional replace of
    /// the session, then the result insert, committed together; nothing is stored when the
    /// replace matches no session (another writer finished or answered first). The whole
    /// transaction is run again on `TransientTransactionError` (two finishes of one session
    /// at once: the second one's replace is a write conflict until the first commits, then
    /// it matches nothing), up to [`TRANSACTION_ATTEMPTS`] times.
    pub(super) async fn finish_in_transaction(
        &self,
        session: StoredSession,
        expected_answered: i64,
        result: &ResultDocument,
    ) -> Result<bool> {
        let writes = FinishWrites {
            filter: doc! {"_id": &session.id, "answered": expected_answered},
            replacement: session_to_bson(&session),
            result: result.to_bson(),
        };
        let mut txn = self.client.start_session().await?;
        let mut attempt = 1;
        loop {
            let error = match self.try_finish(&mut txn, &writes).await {
                Ok(Finished::Replaced(won)) => return Ok(won),
                Ok(Finished::ResultExists) => {
                    // A retry after a crash between the result and the session (or a
                    // finish on a standalone server earlier): the stored result stays, and
                    // the session's replace alone is atomic on the server.
                    return self.replace_session_if(session, expected_answered).await;
                }
                Err(e) => e,
            };
            if !error.contains_label(TRANSIENT_TRANSACTION_ERROR) {
                return Err(error.into());
            }
            if attempt >= TRANSACTION_ATTEMPTS {
                return Err(IngestError::Contention(format!(
                    "finishing session {:?}: the transaction failed {attempt} times in a row \
                     (last: {error})",
                    session.id
                )));
            }
            tokio::time::sleep(transaction_backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// One run of the finish transaction. An error from a write aborts the transaction
    /// first, so `txn` can start the next one; a failed commit needs no abort.
    async fn try_finish(
        &self,
        txn: &mut ClientSession,
        writes: &FinishWrites,
    ) -> mongodb::error::Result<Finished> {
        txn.start_transaction()
            .write_concern(self.concern.clone())
            .await?;
        let replaced = match self
            .sessions
            .replace_one(writes.filter.clone(), &writes.replacement)
            .session(&mut *txn)
            .await
        {
            Ok(replaced) => replaced,
            Err(e) => {
                abort_quietly(txn).await;
                return Err(e);
            }
        };
        if replaced.matched_count != 1 {
            abort_quietly(txn).await;
            return Ok(Finished::Replaced(false));
        }
        match self
            .collection
            .insert_one(&writes.result)
            .session(&mut *txn)
            .await
        {
            Ok(_) => {}
            // A committed result with this id (an uncommitted one would be a write
            // conflict). The error has aborted the transaction on the server.
            Err(e) if is_duplicate_key(&e) => {
                abort_quietly(txn).await;
                return Ok(Finished::ResultExists);
            }
            Err(e) => {
                abort_quietly(txn).await;
                return Err(e);
            }
        }
        commit(txn).await?;
        Ok(Finished::Replaced(true))
    }
}

/// Whether a `hello` reply describes a deployment with multi-document transactions: a
/// replica-set member (`setName`; wire version 7, MongoDB 4.0, or later) or a `mongos`
/// (`msg: "isdbgrid"`; wire version 8, MongoDB 4.2, or later), with logical sessions.
/// Anything else (a standalone server) finishes sessions without one.
fn supports_transactions(hello: &Document) -> bool {
    let number = |key: &str| match hello.get(key) {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Double(n)) => Some(*n as i64),
        _ => None,
    };
    if number("logicalSessionTimeoutMinutes").is_none() {
        return false;
    }
    let wire = number("maxWireVersion").unwrap_or(0);
    if hello.get_str("msg") == Ok("isdbgrid") {
        wire >= 8
    } else if hello.contains_key("setName") {
        wire >= 7
    } else {
        false
    }
}

/// The writes of one finish, built once for every run of its transaction.
struct FinishWrites {
    filter: Document,
    replacement: Document,
    result: Document,
}

/// How a run of the finish transaction ended (errors aside).
#[derive(Debug, PartialEq, Eq)]
enum Finished {
    /// Committed (`true`), or aborted because the session's replace matched nothing.
    Replaced(bool),
    /// Aborted: a result with this id is stored already.
    ResultExists,
}

/// Aborts the transaction in progress; the driver ignores the server's answer (the server
/// may have aborted it already, e.g. after a write error).
async fn abort_quietly(txn: &mut ClientSession) {
    if let Err(e) = txn.abort_transaction().await {
        tracing::debug!("MongoDB: aborting a finish transaction: {e}");
    }
}

/// Commits, sending the commit again (up to [`COMMIT_ATTEMPTS`] times) while its outcome
/// is unknown. A `TransientTransactionError` is returned for the caller to run the whole
/// transaction again.
async fn commit(txn: &mut ClientSession) -> mongodb::error::Result<()> {
    let mut attempt = 1;
    loop {
        match txn.commit_transaction().await {
            Err(e)
                if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempt < COMMIT_ATTEMPTS =>
            {
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// The wait before run `attempt + 1` of a transaction: 5 ms × 1.5^(attempt - 1), at most
/// 500 ms, scaled by a random factor in [0.5, 1) so that two losers do not retry in step.
fn transaction_backoff(attempt: u32) -> std::time::Duration {
    let base = (5.0 * 1.5_f64.powi(attempt.saturating_sub(1) as i32)).min(500.0);
    std::time::Duration::from_secs_f64(base * rand::random_range(0.5..1.0) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_only_where_hello_shows_a_replica_set_or_mongos() {
        let sessions = doc! {"logicalSessionTimeoutMinutes": 30, "maxWireVersion": 21};
        let with = |extra: Document| {
            let mut hello = sessions.clone();
            hello.extend(extra);
            supports_transactions(&hello)
        };
        assert!(with(doc! {"setName": "rs0"}), "replica-set member");
        assert!(with(doc! {"msg": "isdbgrid"}), "mongos");
        assert!(!with(doc! {}), "standalone");
        assert!(
            with(doc! {"setName": "rs0", "maxWireVersion": 7_i64}),
            "4.0 replica set, wire version as int64"
        );
        assert!(
            !with(doc! {"setName": "rs0", "maxWireVersion": 6}),
            "3.6 replica set"
        );
        assert!(
            !with(doc! {"msg": "isdbgrid", "maxWireVersion": 7}),
            "4.0 mongos"
        );
        assert!(
            !supports_transactions(&doc! {"setName": "rs0", "maxWireVersion": 21}),
            "no logical sessions"
        );
    }

    #[test]
    fn transaction_backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..=TRANSACTION_ATTEMPTS {
            let full = (5.0 * 1.5_f64.powi(attempt as i32 - 1)).min(500.0);
            for _ in 0..50 {
                let wait = transaction_backoff(attempt).as_secs_f64() * 1000.0;
                assert!(
                    wait >= full * 0.5 - 1e-9 && wait < full,
                    "attempt {attempt}: {wait} ms"
                );
            }
        }
        // All tries of one finish wait under a second.
        let longest: f64 = (1..TRANSACTION_ATTEMPTS)
            .map(|a| (5.0 * 1.5_f64.powi(a as i32 - 1)).min(500.0))
            .sum();
        assert!(longest < 1000.0, "{longest} ms");
    }

    #[tokio::test]
    async fn a_server_that_is_not_up_is_asked_again_not_taken_for_standalone() {
        // Nothing listens on port 9 here; the client connects lazily, so this succeeds.
        let store = MongoStore::connect(
            "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200&connectTimeoutMS=200",
            Some("examflow_unreachable"),
        )
        .await
        .unwrap();
        assert!(store.uses_transactions().await.is_err());
        assert!(
            store.transactions.get().is_none(),
            "the failure is not kept"
        );
        assert!(store.uses_transactions().await.is_err());
    }
}

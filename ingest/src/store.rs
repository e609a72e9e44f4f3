//! Result stores behind one trait: the embedded default (SQLite, durable before it
//! answers, with a transactional outbox of change events) and MongoDB (production).
//! Adaptive sessions and calibration versions sit behind a second trait, so that servers
//! sharing one MongoDB also share them.

use async_trait::async_trait;
use serde::Serialize;

use crate::document::ResultDocument;
use crate::error::Result;

#[doc(hidden)]
pub mod conformance;
pub mod mongo;
pub mod sqlite;

pub use mongo::MongoStore;
pub use sqlite::SqliteStore;

/// Which results to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    pub email: Option<String>,
    pub exam: Option<String>,
    pub limit: usize,
}

/// Where results live. `insert_result` returns only once the document is durable.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// A short name for logs and /healthz ("sqlite" or "mongodb").
    fn kind(&self) -> &'static str;
    async fn insert_result(&self, doc: &ResultDocument) -> Result<()>;
    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>>;
    async fn list_results(&self, filter: &ResultFilter) -> Result<Vec<ResultDocument>>;
    /// Cheap round trip for health checks.
    async fn ping(&self) -> Result<()>;
}

/// Where adaptive sessions and calibration versions live: the embedded store, or MongoDB
/// when results go there (replicas behind one load balancer must see the same sessions
/// and number versions without gaps or duplicates).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts the session, or replaces the one with the same id; returns once it is
    /// durable (an answer is acknowledged only after its new state is stored).
    async fn put_session(&self, session: StoredSession) -> Result<()>;
    /// Replaces the stored session only if it still has `expected_answered` answers (the
    /// state this writer started from); returns `false`, changing nothing, when another
    /// writer stored a newer state first or the session does not exist. Durable before it
    /// returns, like [`put_session`](Self::put_session). Two servers answering one session at
    /// the same moment: one wins, the other learns it lost instead of overwriting.
    async fn replace_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
    ) -> Result<bool>;
    /// Finishes a session: stores `result` unless a result with its id is stored already
    /// (a retry after a crash), then the session's final state as
    /// [`replace_session_if`](Self::replace_session_if) does; `false` when the session lost
    /// that race. Never a finished session without its result. The embedded store does
    /// both in one transaction (one fsync; a lost race stores neither); MongoDB stores the
    /// result first (without a replica-set transaction, a lost race may leave the result of
    /// the losing answer under the session's result id).
    async fn finish_session_if(
        &self,
        session: StoredSession,
        expected_answered: i64,
        result: &ResultDocument,
    ) -> Result<bool>;
    async fn get_session(&self, id: &str) -> Result<Option<StoredSession>>;
    /// Active sessions whose `closes_at` (deadline + grace) is at or before `now`, oldest
    /// first: timed sessions to finish although nobody answers them.
    async fn due_sessions(&self, now: &str, limit: usize) -> Result<Vec<StoredSession>>;
    /// Up to `limit` sessions, optionally of one exam, newest first (by `created_at`, then
    /// `id`, both descending).
    async fn list_sessions(&self, exam: Option<String>, limit: usize)
    -> Result<Vec<StoredSession>>;
    /// Stores `calibration` as the next version of its exam and returns that version:
    /// max(version of the exam) + 1, starting at 1; the given `version` is ignored. Safe
    /// when several writers add to one exam at once (each gets its own version).
    async fn add_calibration(&self, calibration: StoredCalibration) -> Result<i64>;
    /// Stores `calibration` as version `after + 1` of its exam only if `after` is still the
    /// exam's latest version (0: none yet); returns that version, or `None` when another
    /// writer added a version since. For work that should happen once across servers, such
    /// as a scheduled recalibration on the same new responses.
    async fn add_calibration_after(
        &self,
        calibration: StoredCalibration,
        after: i64,
    ) -> Result<Option<i64>>;
    /// One version of `exam`, or its latest when `version` is `None`.
    async fn get_calibration(
        &self,
        exam: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredCalibration>>;
    /// The exam's active version: the highest activation (see
    /// [`StoredCalibration::activation`]), `None` when no version was ever activated.
    async fn get_active_calibration(&self, exam: &str) -> Result<Option<StoredCalibration>>;
    /// Makes `version` of `exam` the active one (numbering its activation above every
    /// earlier one, unless it is already the active version) and returns its activation;
    /// `None` when there is no such version.
    async fn activate_calibration(&self, exam: &str, version: i64) -> Result<Option<i64>>;
    /// Adds or updates students of the roster (see [`RosterEntry`]): each entry's groups
    /// are set for the columns it names and kept for the others; `columns` (new ones are
    /// appended to [`roster_columns`](Self::roster_columns)) are the import's group columns.
    /// With `replace`, the roster and its columns are emptied first. One transaction where
    /// the store has them (the embedded one): an import that fails changes nothing.
    async fn import_roster(
        &self,
        columns: Vec<String>,
        entries: Vec<RosterEntry>,
        replace: bool,
    ) -> Result<RosterImport>;
    /// The roster's group columns, in the order they were first imported.
    async fn roster_columns(&self) -> Result<Vec<String>>;
    /// Every student of the roster, by email.
    async fn roster(&self) -> Result<Vec<RosterEntry>>;
    /// Every version, optionally of one exam, ordered by exam, then version descending.
    async fn list_calibrations(&self, exam: Option<String>) -> Result<Vec<StoredCalibration>>;
    /// One chunk of a scan over every session: up to `limit` sessions after the position
    /// `after` (from the start when `None`), in the store's own order, with `id` and only
    /// `fields` read (the others are left empty: `""`, 0, `None`). Pass the chunk's `next`
    /// as `after` of the next call until it is `None`. Each chunk is a short read of its
    /// own, so a long scan holds nothing between chunks (a paused scan blocks no one); the
    /// chunks are not one snapshot: a session written meanwhile may be seen in its old or
    /// its new state, and one added meanwhile may be missed.
    async fn scan_sessions(
        &self,
        after: Option<String>,
        limit: usize,
        fields: &[SessionField],
    ) -> Result<SessionChunk>;
}

/// A stored column of an adaptive session that a scan may read besides its `id`
/// ([`SessionStore::scan_sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionField {
    Exam,
    Email,
    CalibrationVersion,
    Status,
    Answered,
    ResultId,
    CreatedAt,
    UpdatedAt,
    /// The whole state as JSON: by far the largest.
    State,
    ClosesAt,
}

impl SessionField {
    pub const ALL: [SessionField; 10] = [
        SessionField::Exam,
        SessionField::Email,
        SessionField::CalibrationVersion,
        SessionField::Status,
        SessionField::Answered,
        SessionField::ResultId,
        SessionField::CreatedAt,
        SessionField::UpdatedAt,
        SessionField::State,
        SessionField::ClosesAt,
    ];

    /// Its name in both stores (SQLite column, MongoDB field).
    pub fn name(self) -> &'static str {
        match self {
            SessionField::Exam => "exam",
            SessionField::Email => "email",
            SessionField::CalibrationVersion => "calibration_version",
            SessionField::Status => "status",
            SessionField::Answered => "answered",
            SessionField::ResultId => "result_id",
            SessionField::CreatedAt => "created_at",
            SessionField::UpdatedAt => "updated_at",
            SessionField::State => "state",
            SessionField::ClosesAt => "closes_at",
        }
    }
}

/// One chunk of [`SessionStore::scan_sessions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChunk {
    pub sessions: Vec<StoredSession>,
    /// Where the next chunk starts (opaque, for the store that gave it); `None` at the end.
    pub next: Option<String>,
}

/// Fixed-form exam attempts kept on the server: started, answered one question at a time
/// (each answer durable before it is acknowledged), submitted by the student or at the
/// deadline. In the same store as the results (embedded, or MongoDB), so any device and
/// any server continues the attempt.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Stores `attempt` (status `open`) unless the student already has an open attempt of
    /// that exam; returns the open attempt and whether it is the new one. Durable before
    /// it returns. At most one open attempt per student and exam, also across servers.
    async fn open_attempt(&self, attempt: StoredAttempt) -> Result<(StoredAttempt, bool)>;
    async fn get_attempt(&self, id: &str) -> Result<Option<StoredAttempt>>;
    /// A student's attempts, optionally of one exam, newest first.
    async fn list_attempts(
        &self,
        email: &str,
        exam: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredAttempt>>;
    /// Saves one answer of an open attempt (and/or its flag): `answer` `Some(None)` clears
    /// it, `None` keeps it; `flagged` likewise. Bumps `version`. Durable before it returns;
    /// `false` (nothing changed) when the attempt is not open or has no such question.
    async fn save_attempt_answer(
        &self,
        id: &str,
        index: usize,
        answer: Option<Option<String>>,
        flagged: Option<bool>,
        at: &str,
    ) -> Result<bool>;
    /// Submits `attempt` (its new status, `submitted_*` fields and `result_id` set by the
    /// caller) only if it is still open at `expected_version`, storing `result` with it
    /// (unless a result with its id exists: a retry). `false` when it was submitted or
    /// answered since: the caller reads it again. The embedded store does both in one
    /// transaction; MongoDB marks the attempt submitted first (freezing its answers), then
    /// stores the result, so a crash in between leaves a submitted attempt whose result is
    /// missing (the caller stores it again from the frozen answers).
    async fn finish_attempt_if(
        &self,
        attempt: StoredAttempt,
        expected_version: i64,
        result: &ResultDocument,
    ) -> Result<bool>;
    /// Open attempts whose `closes_at` (deadline + grace) is at or before `now`, oldest first.
    async fn due_attempts(&self, now: &str, limit: usize) -> Result<Vec<StoredAttempt>>;
    /// How many attempts of `exam` the student has used: stored results (fixed-form
    /// submissions, submitted attempts, finished adaptive sessions), open attempts and
    /// active adaptive sessions.
    async fn attempts_used(&self, email: &str, exam: &str) -> Result<i64>;
}

/// A fixed-form attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredAttempt {
    pub id: String,
    pub exam: String,
    pub email: String,
    /// `open` or `submitted`.
    pub status: String,
    pub started_at: String,
    /// `started_at` + the exam's time limit; none when untimed.
    pub deadline: Option<String>,
    /// `deadline` + grace: answers are refused and the attempt is submitted after it.
    pub closes_at: Option<String>,
    /// One entry per question: the chosen option's text, or none.
    pub answers: Vec<Option<String>>,
    /// One entry per question: flagged for review.
    pub flags: Vec<bool>,
    /// Bumped by every saved answer and by the submit.
    pub version: i64,
    pub updated_at: String,
    /// The id the submitted attempt's result gets (fixed at the start: idempotent submit).
    pub result_id: String,
    pub submitted_at: Option<String>,
    /// `student` or `deadline`.
    pub submitted_by: Option<String>,
}

/// A score card as kept for `GET /api/score-cards`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredScoreCard {
    pub document_id: String,
    pub card: String,
    pub created_at: String,
}

/// A message the score-card consumer could not understand, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub source: String,
    pub reason: String,
    pub payload: String,
    pub created_at: String,
}

/// A change event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// An adaptive session as stored: searchable columns plus the whole state as JSON
/// (the api crate owns its shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoredSession {
    pub id: String,
    pub exam: String,
    pub email: String,
    /// The item-parameter version the session runs on (kept for its whole life).
    pub calibration_version: i64,
    /// `active` or `finished`.
    pub status: String,
    pub answered: i64,
    /// The stored result of a finished session.
    pub result_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub state: String,
    /// Deadline + grace of a timed session (none when untimed): it is finished with its
    /// current estimate after this instant (RFC 3339).
    pub closes_at: Option<String>,
}

/// One student of the roster: the email (trimmed, lower case) and the student's group in
/// each group column (e.g. `campus` → `north`); a column without a value is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RosterEntry {
    pub email: String,
    pub groups: std::collections::BTreeMap<String, String>,
}

/// What [`SessionStore::import_roster`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RosterImport {
    /// Students not on the roster before.
    pub added: usize,
    /// Students already on it (their groups in the imported columns replaced).
    pub updated: usize,
    /// Students on the roster after the import.
    pub students: usize,
}

/// One version of an exam's item parameters. `params` and `summary` are JSON (the api
/// crate owns their shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCalibration {
    pub exam: String,
    pub version: i64,
    pub created_at: String,
    /// `provisional` (p-values only), `calibration` (an IRT fit) or `imported`.
    pub source: String,
    /// Number of response records the version was computed from.
    pub responses: i64,
    pub params: String,
    pub summary: String,
    /// Order of activation: the exam's active version (the one new sessions, reports and
    /// recalibrations start from) is the one with the highest. `None`: a candidate, never
    /// activated. On [`SessionStore::add_calibration`], `Some(_)` activates the new version
    /// (the store numbers it above every earlier activation) and `None` stores a candidate.
    /// Versions stored before activation existed read as activated in version order.
    pub activation: Option<i64>,
}

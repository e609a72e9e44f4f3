//! Typed configuration with documented defaults. Precedence, lowest first: built-in
//! defaults, the file (`examflow.toml`, or `--config`), `EXAMFLOW_*` environment
//! variables, command-line flags (clap reads the variables and flags together and the
//! result overrides the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use examflow_ingest::KafkaSettings;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Prefix of environment variables that set librdkafka properties.
const KAFKA_PROPERTY_ENV: &str = "EXAMFLOW_KAFKA_PROPERTY_";
/// Default file name looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "examflow.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaSettings,
    pub ingest: IngestConfig,
    pub cdc: CdcConfig,
    pub adaptive: AdaptiveConfig,
    pub sql: SqlConfig,
    pub pgwire: PgwireConfig,
    /// The policy of every exam (`[exam_defaults]`).
    pub exam_defaults: ExamPolicy,
    /// Per-exam overrides of `exam_defaults` (`[exams."NAME"]`).
    pub exams: std::collections::BTreeMap<String, ExamPolicyOverride>,
    /// Per-identity rate limits (`[limits]`).
    pub limits: LimitsConfig,
}

/// Per-identity rate limits, over the whole server: each is a number of requests per
/// minute per signed-in identity, with a burst of the same size; more answer 429 with
/// `Retry-After`. 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Starting fixed-form attempts and adaptive sessions. Default 10 per minute.
    pub starts_per_minute: u32,
    /// One-shot submissions and attempt submits. Default 10 per minute.
    pub submissions_per_minute: u32,
    /// Saved answers (fixed-form and adaptive). Default 600 per minute.
    pub answers_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            starts_per_minute: 10,
            submissions_per_minute: 10,
            answers_per_minute: 600,
        }
    }
}

/// The PostgreSQL wire protocol (`psql`, BI tools, psycopg): read-only SQL over the same
/// tables as `POST /api/sql`, signing in with a token as the password. `[sql]` limits apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgwireConfig {
    /// Address to listen on, e.g. `127.0.0.1:5433`; port 0 picks a free port. Default:
    /// unset (off).
    pub listen: Option<SocketAddr>,
    /// Most signed-in connections at once; a sign-in beyond them is refused (SQLSTATE
    /// 53300). Connections take a slot only once signed in; up to four times as many (at
    /// least 64) may be signing in, each for at most `sign_in_timeout_secs`. Default 64.
    pub max_connections: usize,
    /// A connection that has not signed in this many seconds after it opened is closed.
    /// Default 10.
    pub sign_in_timeout_secs: u64,
    /// PEM certificate chain and private key; when set, clients must use TLS
    /// (`sslmode=require`). Default: unset (plain TCP; keep `listen` on loopback then).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for PgwireConfig {
    fn default() -> Self {
        PgwireConfig {
            listen: None,
            max_connections: 64,
            sign_in_timeout_secs: 10,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Limits of SQL: `POST /api/sql` and the PostgreSQL interface (`[pgwire]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Longest a query may run, in seconds (also while its result streams). Default 30.
    pub timeout_secs: u64,
    /// Most rows a streamed result (ndjson, csv, arrow, parquet) carries. Default 10,000,000.
    pub max_stream_rows: usize,
    /// Memory one query may use for sorts, joins and aggregations, in bytes (on pgwire: one
    /// connection). Default 1 GiB.
    pub memory_limit_bytes: usize,
    /// Queries running at once over HTTP and pgwire together; more wait up to
    /// `queue_timeout_ms`, then are refused as busy (503 / SQLSTATE 53300). Default 8.
    pub max_concurrent_queries: usize,
    /// Memory all queries together may use (sorts, joins, aggregations, JSON results,
    /// results of string functions), in bytes; at least `memory_limit_bytes`. Default: 4 GiB,
    /// or `memory_limit_bytes` when that is larger.
    pub total_memory_bytes: Option<usize>,
    /// How long a query waits for a place among `max_concurrent_queries` and for
    /// `memory_limit_bytes` to be free in `total_memory_bytes`, in milliseconds. Default 2000.
    pub queue_timeout_ms: u64,
    /// Largest value string and list functions (`repeat`, `lpad`, `rpad`, `replace`,
    /// `regexp_replace`, `concat`, `concat_ws`, `||`, `string_agg`, `array_repeat`,
    /// `array_resize`, `array_replace*`, `range`, `generate_series`) may build, in bytes.
    /// Default 16 MiB.
    pub max_value_bytes: usize,
    /// Worker threads of the runtime SQL queries (HTTP and pgwire) run and encode their
    /// results on, apart from the threads that serve every other request, so heavy queries
    /// take at most these cores (their blocking work, such as store reads, uses up to two
    /// threads per `max_concurrent_queries`, at least 4). They run at nice 10, below the
    /// API's. Default: half the cores, at least 1.
    pub threads: Option<usize>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_secs: 30,
            max_stream_rows: 10_000_000,
            memory_limit_bytes: 1 << 30,
            max_concurrent_queries: 8,
            total_memory_bytes: None,
            queue_timeout_ms: 2000,
            max_value_bytes: 16 << 20,
            threads: None,
        }
    }
}

impl SqlConfig {
    /// `total_memory_bytes` as configured, else 4 GiB or `memory_limit_bytes` if larger.
    pub fn total_memory_bytes(&self) -> usize {
        self.total_memory_bytes
            .unwrap_or_else(|| self.memory_limit_bytes.max(4 << 30))
    }

    /// `threads` as configured, else half the cores (at least 1).
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cores / 2).max(1)
        })
    }

    /// Threads for the blocking work of queries (store reads and decoding, reports'
    /// polars): two per query that may run at once, at least 4.
    pub fn blocking_threads(&self) -> usize {
        self.max_concurrent_queries.saturating_mul(2).max(4)
    }

    /// Checks what the types cannot.
    fn check(&self) -> Result<(), String> {
        if self.threads == Some(0) {
            return Err("sql.threads must be at least 1".to_string());
        }
        if self.max_concurrent_queries == 0 {
            return Err("sql.max_concurrent_queries must be at least 1".to_string());
        }
        if self.max_value_bytes == 0 {
            return Err("sql.max_value_bytes must be at least 1".to_string());
        }
        if self.total_memory_bytes() < self.memory_limit_bytes {
            return Err(format!(
                "sql.total_memory_bytes ({}) must be at least sql.memory_limit_bytes ({}): the \
                 pool every query shares cannot be smaller than what one query may use",
                self.total_memory_bytes(),
                self.memory_limit_bytes
            ));
        }
        Ok(())
    }
}

/// Adaptive testing: calibration and the per-exam policy of adaptive sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Recalibrate every exam with new results this often, in seconds; 0 turns the
    /// schedule off (`POST /api/exams/{name}/calibrate` still works). Default 3600.
    pub calibrate_interval_secs: u64,
    /// IRT model of calibrations: `rasch`, `1pl`, `2pl` or `3pl`. Default `2pl`.
    pub calibration_model: examflow_engine::irt::Model,
    /// Fewest responses an item needs before its calibrated parameters replace its
    /// provisional ones (from its p-value). Default 30.
    pub min_item_responses: usize,
    /// Scale score = `scale_mean + scale_sd · θ`, rounded. Defaults 500 and 100.
    pub scale_mean: f64,
    pub scale_sd: f64,
    /// Most adaptive sessions kept in memory (the rest are read from disk when answered).
    /// Default 100000.
    pub max_cached_sessions: usize,
    /// How each recalibration after the first is put on the scale of the version it
    /// replaces: `stocking_lord` (default), `haebara`, `mean_mean`, `mean_sigma` (through
    /// the items both versions calibrated) or `fixed_anchors` (the anchor items keep their
    /// parameters; the others and the students' distribution are estimated around them;
    /// anchors that drift, by a Stocking–Lord check first, are not held).
    pub linking: LinkingChoice,
    /// When a new version goes live by itself, and when it waits as a candidate.
    pub activation: ActivationConfig,
    /// The policy of every exam, unless `exams.NAME` overrides some of it.
    pub policy: AdaptivePolicy,
    /// Per-exam overrides, e.g. `[adaptive.exams.intro-statistics] cut_score = 0.5`.
    pub exams: std::collections::BTreeMap<String, AdaptivePolicyOverride>,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            calibrate_interval_secs: 3600,
            calibration_model: examflow_engine::irt::Model::TwoPl,
            min_item_responses: 30,
            scale_mean: 500.0,
            scale_sd: 100.0,
            max_cached_sessions: 100_000,
            linking: LinkingChoice::StockingLord,
            activation: ActivationConfig::default(),
            policy: AdaptivePolicy::default(),
            exams: Default::default(),
        }
    }
}

impl AdaptiveConfig {
    /// The policy of `exam`: the common policy with the exam's overrides applied.
    pub fn policy_of(&self, exam: &str) -> AdaptivePolicy {
        let mut policy = self.policy.clone();
        if let Some(o) = self.exams.get(exam) {
            macro_rules! take {
                ($($field:ident),*) => {$(if let Some(v) = &o.$field { policy.$field = v.clone(); })*};
            }
            take!(
                rule,
                allowed_rules,
                estimator,
                exposure,
                min_length,
                max_length,
                se_target,
                min_se_target,
                stop_on_classification,
                content
            );
            if o.cut_score.is_some() {
                policy.cut_score = o.cut_score;
            }
        }
        policy
    }
}

/// `adaptive.linking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkingChoice {
    StockingLord,
    Haebara,
    MeanMean,
    MeanSigma,
    FixedAnchors,
}

impl LinkingChoice {
    /// The engine's characteristic-curve or moment method; `None` for `fixed_anchors`.
    pub fn method(self) -> Option<examflow_engine::irt::LinkingMethod> {
        use examflow_engine::irt::LinkingMethod as M;
        match self {
            LinkingChoice::StockingLord => Some(M::StockingLord),
            LinkingChoice::Haebara => Some(M::Haebara),
            LinkingChoice::MeanMean => Some(M::MeanMean),
            LinkingChoice::MeanSigma => Some(M::MeanSigma),
            LinkingChoice::FixedAnchors => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkingChoice::StockingLord => "stocking_lord",
            LinkingChoice::Haebara => "haebara",
            LinkingChoice::MeanMean => "mean_mean",
            LinkingChoice::MeanSigma => "mean_sigma",
            LinkingChoice::FixedAnchors => "fixed_anchors",
        }
    }
}

/// `[adaptive.activation]`: the checks a recalibration must pass to become the active
/// version by itself (the first version of an exam always does). One that fails is stored
/// as a `candidate` with its reasons, for an educator to activate or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationConfig {
    /// `false`: every version after the first waits as a candidate. Default `true`.
    pub auto: bool,
    /// Fewest anchor items (calibrated in both versions and not drifting) a linking needs.
    /// Default 5.
    pub min_anchor_items: usize,
    /// An anchor whose characteristic curves in the two versions (after linking) differ by
    /// more than this area (N(0, 1)-weighted, in probability units) is drifting: left out of
    /// the anchors and flagged. Default 0.05.
    pub drift_threshold: f64,
    /// Most drifting items, as a share of the common items. Default 0.2.
    pub max_drifting_share: f64,
    /// Most the scale may stretch or shrink between versions: the slope A of the linking
    /// must lie in [1 / this, this]. Default 2.
    pub max_scale_change: f64,
    /// An item misfits when its S-X2 p-value (Rasch: when its infit or outfit mean square
    /// lies outside [0.5, 1.5]) is below this. Default 0.01.
    pub fit_alpha: f64,
    /// Most misfitting items, as a share of the fitted ones. Default 0.1.
    pub max_misfitting_items: f64,
    /// Most students whose response patterns misfit (lz* < −1.645), as a share. Default
    /// 0.1 (about twice the 5 % expected by chance).
    pub max_misfitting_persons: f64,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            auto: true,
            min_anchor_items: 5,
            drift_threshold: 0.05,
            max_drifting_share: 0.2,
            max_scale_change: 2.0,
            fit_alpha: 0.01,
            max_misfitting_items: 0.1,
            max_misfitting_persons: 0.1,
        }
    }
}

impl ActivationConfig {
    fn check(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "adaptive.activation.{name} must lie in [0, 1], not {v}"
                ))
            }
        };
        share("max_drifting_share", self.max_drifting_share)?;
        share("max_misfitting_items", self.max_misfitting_items)?;
        share("max_misfitting_persons", self.max_misfitting_persons)?;
        if !(self.fit_alpha > 0.0 && self.fit_alpha < 1.0) {
            return Err(format!(
                "adaptive.activation.fit_alpha must lie in (0, 1), not {}",
                self.fit_alpha
            ));
        }
        if !(self.drift_threshold > 0.0 && self.drift_threshold.is_finite()) {
            return Err(format!(
                "adaptive.activation.drift_threshold must be above 0, not {}",
                self.drift_threshold
            ));
        }
        if !(self.max_scale_change >= 1.0 && self.max_scale_change.is_finite()) {
            return Err(format!(
                "adaptive.activation.max_scale_change must be at least 1, not {}",
                self.max_scale_change
            ));
        }
        if self.min_anchor_items < 2 {
            return Err(format!(
                "adaptive.activation.min_anchor_items must be at least 2, not {}",
                self.min_anchor_items
            ));
        }
        Ok(())
    }
}

/// What an adaptive session of an exam does by default, and what a student may change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptivePolicy {
    /// Default selection rule. Default `mfi`.
    pub rule: examflow_engine::cat::SelectionRule,
    /// Rules a session may ask for. Default: all (`mfi`, `kl`, `klp`, `mpwi`,
    /// `b_matching`, `random`).
    pub allowed_rules: Vec<examflow_engine::cat::SelectionRule>,
    /// Ability estimator. Default `eap`.
    pub estimator: examflow_engine::cat::Estimator,
    /// Exposure control. Default randomesque among the 3 best items.
    pub exposure: examflow_engine::cat::ExposureControl,
    /// Fewest items before an SE or classification stop. Default 5.
    pub min_length: usize,
    /// Most items (a session may ask for fewer, never more). Default 20.
    pub max_length: usize,
    /// Stop once SE(θ) falls to this. Default 0.3.
    pub se_target: f64,
    /// The smallest SE target a session may ask for. Default 0.2.
    pub min_se_target: f64,
    /// Cut score on the θ scale: results are passed (θ ≥ cut) or failed. Default: none
    /// (results are `completed`).
    pub cut_score: Option<f64>,
    /// With a cut score, also stop as soon as the 95% confidence interval of θ lies on
    /// one side of it. Default false.
    pub stop_on_classification: bool,
    /// Content balancing over the items' `topic`s. Default: none.
    pub content: Option<examflow_engine::cat::ContentConstraints>,
}

impl Default for AdaptivePolicy {
    fn default() -> Self {
        use examflow_engine::cat::SelectionRule as R;
        AdaptivePolicy {
            rule: R::Mfi,
            allowed_rules: vec![R::Mfi, R::Kl, R::Klp, R::Mpwi, R::BMatching, R::Random],
            estimator: Default::default(),
            exposure: examflow_engine::cat::ExposureControl::Randomesque { k: 3 },
            min_length: 5,
            max_length: 20,
            se_target: 0.3,
            min_se_target: 0.2,
            cut_score: None,
            stop_on_classification: false,
            content: None,
        }
    }
}

/// Per-exam changes to [`AdaptivePolicy`]; fields left out keep the common policy's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptivePolicyOverride {
    pub rule: Option<examflow_engine::cat::SelectionRule>,
    pub allowed_rules: Option<Vec<examflow_engine::cat::SelectionRule>>,
    pub estimator: Option<examflow_engine::cat::Estimator>,
    pub exposure: Option<examflow_engine::cat::ExposureControl>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub se_target: Option<f64>,
    pub min_se_target: Option<f64>,
    pub cut_score: Option<f64>,
    pub stop_on_classification: Option<bool>,
    pub content: Option<Option<examflow_engine::cat::ContentConstraints>>,
}

/// The lake ingest (`examflow ingest`, or inside `serve` when Kafka is configured).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Run the lake ingest inside `serve` when Kafka is configured. Default true.
    pub enabled: bool,
    /// Consumer group (also names the tables' transaction actions). Default `examflow-ingest`.
    pub group_id: String,
    /// Writer name in the Delta transaction actions that record offsets. Default
    /// `examflow-ingest`; processes sharing a lake must share it.
    pub transaction_app_id: String,
    /// Topic of assessment-attempt documents. Default `exams`.
    pub attempts_topic: String,
    /// Delta commit period in milliseconds. Default 2000.
    pub commit_interval_ms: u64,
    /// How often new rows become visible to live queries, in milliseconds. Default 100.
    pub flush_interval_ms: u64,
    /// The older spelling of `[kafka] max_message_bytes` (one value drives both the
    /// producer and the ingest); when given, it sets that value. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Attempt de-duplication key: `keen_id`, `user_exam_id` or `sequences.id`. Default `keen_id`.
    pub dedup_key: String,
    /// Compaction and vacuum period in seconds; 0 turns it off. Default 600.
    pub housekeeping_interval_secs: u64,
    /// Compaction and vacuum also after this many commits that carried new messages, so a
    /// busy lake does not pile up small files between periods; 0 turns it off. Default 100.
    pub housekeeping_after_commits: usize,
    /// Files replaced by compaction are deleted after this many seconds. Default 3600.
    pub vacuum_retention_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            enabled: true,
            group_id: "examflow-ingest".into(),
            transaction_app_id: "examflow-ingest".into(),
            attempts_topic: "exams".into(),
            commit_interval_ms: 2000,
            flush_interval_ms: 100,
            max_message_bytes: None,
            dedup_key: "keen_id".into(),
            housekeeping_interval_secs: 600,
            housekeeping_after_commits: 100,
            vacuum_retention_secs: 3600,
        }
    }
}

/// Change capture from MongoDB into Debezium-shaped events (`examflow cdc`, or inside
/// `serve` when MongoDB is configured).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdcConfig {
    /// Capture inside `serve` when MongoDB is configured: to Kafka when brokers are set,
    /// else into the server's own score cards. Set false when Debezium captures the
    /// collection. Default true.
    pub enabled: bool,
    /// Collection captured, in `storage.mongodb_database`. Default `score`.
    pub collection: String,
    /// Lease of the capturing process, in seconds: of several processes on one database
    /// one captures, another takes over at most this long after it died. Default 10.
    pub lease_secs: u64,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            enabled: true,
            collection: "score".into(),
            lease_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger: 413). Default 1 MiB.
    pub max_body_bytes: usize,
    /// On SIGTERM or Ctrl-C the server stops accepting, finishes the requests in flight and
    /// commits what the lake's tails hold; after this many seconds it stops anyway.
    /// Default 20.
    pub shutdown_timeout_secs: u64,
    /// Threads for blocking work (SQLite calls, the lake's file reads and writes, report
    /// rendering); past them such work queues. Each thread keeps memory in the allocator's
    /// per-thread heaps, and with tokio's default of 512 every burst (a compaction, a wide
    /// scan) grew the pool for good: the soak benchmark's memory rose with the thread
    /// count. At least 8. Default 32.
    pub blocking_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            shutdown_timeout_secs: 20,
            blocking_threads: 32,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the embedded store, the JWT secret and local state live. Default `examflow-data`.
    pub data_dir: PathBuf,
    /// Directory of question banks (`*.json`). Default `data/question_banks`.
    pub banks_dir: PathBuf,
    /// MongoDB connection string; when set, results go to MongoDB instead of the
    /// embedded store. Default: unset.
    pub mongodb_uri: Option<String>,
    /// MongoDB database. Default `exams`.
    pub mongodb_database: String,
    /// Read connections of the embedded store (SQLite, WAL mode: they read concurrently,
    /// beside the one writer). Scans of SQL tables hold at most all but one, so the request
    /// path and `/healthz` always find one. At least 2. Default 4.
    pub sqlite_readers: usize,
    /// Where the lake's tables live: a path, `file:///dir` or `s3://bucket/prefix` (shared by
    /// every server and ingest). Default: unset, `<data_dir>/lake`.
    pub lake_uri: Option<String>,
    /// Settings of an `s3://` lake's store (object_store's S3 keys: `endpoint`, `region`,
    /// `allow_http`, ...); the `AWS_*` environment fills in the rest. Default: none.
    pub lake_options: std::collections::BTreeMap<String, String>,
    /// How often a server that does not run the ingest itself re-reads the lake's tables
    /// for commits other processes made, in milliseconds; 0: never (it sees the tables as
    /// they were when it started). Default 2000, the ingest's commit interval.
    pub lake_refresh_ms: u64,
}

impl StorageConfig {
    fn check(&self) -> Result<(), String> {
        if self.sqlite_readers < 2 {
            return Err(format!(
                "storage.sqlite_readers must be at least 2 (one is kept for requests while \
                 scans use the others), not {}",
                self.sqlite_readers
            ));
        }
        self.lake_location()
            .map_err(|e| format!("storage.lake_uri: {e}"))?;
        Ok(())
    }

    /// The lake's location: `lake_uri` when set, else `<data_dir>/lake`.
    pub fn lake_location(&self) -> Result<examflow_ingest::lake::LakeLocation, String> {
        use examflow_ingest::lake::LakeLocation;
        let options: std::collections::HashMap<String, String> = self
            .lake_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let location = match &self.lake_uri {
            Some(uri) => LakeLocation::parse(uri, &options).map_err(|e| e.to_string())?,
            None => LakeLocation::in_data_dir(&self.data_dir),
        };
        if location.is_local() && !options.is_empty() {
            return Err("[storage.lake_options] applies to an s3:// lake only".into());
        }
        Ok(location)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("examflow-data"),
            banks_dir: PathBuf::from("data/question_banks"),
            mongodb_uri: None,
            mongodb_database: "exams".into(),
            sqlite_readers: examflow_ingest::store::sqlite::DEFAULT_READERS,
            lake_uri: None,
            lake_options: Default::default(),
            lake_refresh_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for bearer tokens. Default: generated on first start and kept in
    /// `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Whether the page's dev login (type an email, get a student token) is on. Default:
    /// on when `server.listen` is a loopback address, off on any other address unless set
    /// to `true` explicitly (then every start logs a warning and the page shows a
    /// "development sign-in" banner).
    pub dev_login: Option<bool>,
    /// Header set by a trusted proxy carrying a signed JWT that names the user (e.g. the
    /// AWS ALB's `X-Amzn-Oidc-Data`, or an OIDC provider's ID token). It is verified,
    /// never believed: it needs a key source (`identity_public_key_file`, `alb_key_url`,
    /// `jwks_file` or `jwks_url`), else the server refuses to start. Default: unset.
    pub identity_header: Option<String>,
    /// PEM public key (`BEGIN PUBLIC KEY`: EC P-256 for the ALB's ES256, P-384, RSA or
    /// Ed25519) that signs the header's JWT, whatever its `kid`. Default: unset.
    pub identity_public_key_file: Option<PathBuf>,
    /// URL template of the ALB's per-`kid` public keys, e.g.
    /// `https://public-keys.auth.elb.eu-west-1.amazonaws.com/{kid}`; keys are cached.
    /// Default: unset.
    pub alb_key_url: Option<String>,
    /// The load balancer's ARN; when set, the header's `signer` must equal it. Default: unset.
    pub alb_arn: Option<String>,
    /// A JWKS document (OIDC providers: Keycloak, Dex, ...) on disk. Default: unset.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start (when that fails the server starts anyway, warns and
    /// fetches again when a token arrives), cached and refreshed (also when an unknown
    /// `kid` arrives, at most once a minute). Default: unset.
    pub jwks_url: Option<String>,
    /// How long fetched keys (JWKS or ALB keys) are used before a refresh, in seconds (a
    /// failed refresh keeps the old keys). At least 1. Default 3600.
    pub jwks_refresh_secs: u64,
    /// When set, the token's `iss` (the payload's, else the ALB header's) must equal it.
    /// Default: unset.
    pub issuer: Option<String>,
    /// When set, the token's `aud` (a string or a list) must contain it; without `aud`,
    /// the ALB header's `client` must equal it. Default: unset.
    pub audience: Option<String>,
    /// Opt-in: read roles from this claim of the verified header token (dotted path, e.g.
    /// `realm_access.roles`; a string or a list of strings). Default: unset (roles come
    /// only from `[auth.roles]`).
    pub role_claim: Option<String>,
    /// Server-side roles by email: `admin = ["ops@example.edu"]`, `educator =
    /// ["*@staff.example.edu"]`, `analyst = [...]` (`*@domain` matches a whole domain).
    /// Everyone else is a student. Default: empty.
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Analysts see student emails instead of pseudonyms. Default false.
    pub analyst_sees_emails: bool,
    /// Secret of the analysts' pseudonyms (HMAC-SHA256 of the email). Default: generated
    /// on first start and kept in `<data_dir>/pseudonym-secret`.
    pub pseudonym_secret: Option<String>,
    /// Lifetime of tokens issued by dev login, in seconds. Default 8 hours.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            dev_login: None,
            identity_header: None,
            identity_public_key_file: None,
            alb_key_url: None,
            alb_arn: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 3600,
            issuer: None,
            audience: None,
            role_claim: None,
            roles: Default::default(),
            analyst_sees_emails: false,
            pseudonym_secret: None,
            token_ttl_secs: 8 * 3600,
        }
    }
}

impl AuthConfig {
    /// Whether dev login is on for a server listening on `listen`: as configured, else
    /// only on a loopback address.
    pub fn dev_login_enabled(&self, listen: SocketAddr) -> bool {
        self.dev_login.unwrap_or_else(|| listen.ip().is_loopback())
    }
}

/// What a student ever sees of an exam's answer key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewPolicy {
    /// Per-question correctness and keys with the result (the original behaviour).
    #[default]
    Immediately,
    /// Score, total, percentage and result at once; correctness and keys once `close_at`
    /// has passed (never, when the exam has no `close_at`).
    AfterClose,
    /// Score, total, percentage and result only.
    Never,
}

/// The delivery policy of an exam (`[exam_defaults]`, `[exams."NAME"]`): time limit,
/// attempts, review and window. Applies to fixed-form attempts and adaptive sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExamPolicy {
    /// Seconds from an attempt's start to its deadline. Default: none (untimed).
    pub time_limit_secs: Option<u64>,
    /// Answers saved up to deadline + grace still count. Default 30.
    pub grace_secs: u64,
    /// Most attempts per student (fixed-form and adaptive together). Default: unlimited.
    pub max_attempts: Option<u32>,
    /// What a student sees of the keys. Default `immediately`.
    pub review: ReviewPolicy,
    /// Attempts may start only from this instant (RFC 3339). Default: none.
    #[serde(with = "opt_instant")]
    pub open_at: Option<DateTime<Utc>>,
    /// Attempts may start only before this instant (RFC 3339). Default: none.
    #[serde(with = "opt_instant")]
    pub close_at: Option<DateTime<Utc>>,
}

impl Default for ExamPolicy {
    fn default() -> Self {
        ExamPolicy {
            time_limit_secs: None,
            grace_secs: 30,
            max_attempts: None,
            review: ReviewPolicy::Immediately,
            open_at: None,
            close_at: None,
        }
    }
}

impl ExamPolicy {
    /// Whether a student may see per-question correctness and keys at `now`.
    pub fn shows_keys(&self, now: DateTime<Utc>) -> bool {
        match self.review {
            ReviewPolicy::Immediately => true,
            ReviewPolicy::AfterClose => self.close_at.is_some_and(|close| now >= close),
            ReviewPolicy::Never => false,
        }
    }

    fn check(&self, exam: &str) -> Result<(), String> {
        if self.time_limit_secs == Some(0) {
            return Err(format!("{exam}: time_limit_secs must be at least 1"));
        }
        if self.max_attempts == Some(0) {
            return Err(format!("{exam}: max_attempts must be at least 1"));
        }
        if let (Some(open), Some(close)) = (self.open_at, self.close_at)
            && close <= open
        {
            return Err(format!(
                "{exam}: close_at {close} is not after open_at {open}"
            ));
        }
        Ok(())
    }
}

/// Per-exam changes to [`ExamPolicy`]; keys left out keep `[exam_defaults]`' value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExamPolicyOverride {
    pub time_limit_secs: Option<u64>,
    pub grace_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub review: Option<ReviewPolicy>,
    #[serde(with = "opt_instant")]
    pub open_at: Option<DateTime<Utc>>,
    #[serde(with = "opt_instant")]
    pub close_at: Option<DateTime<Utc>>,
}

/// Instants as RFC 3339 strings (`"2026-12-01T09:00:00Z"`) or TOML datetimes with an offset.
mod opt_instant {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Toml(toml::value::Datetime),
    }

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(at) => s.serialize_str(&at.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = match Option::<Raw>::deserialize(d)? {
            None => return Ok(None),
            Some(Raw::Text(t)) => t,
            Some(Raw::Toml(t)) => t.to_string(),
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|at| Some(at.with_timezone(&Utc)))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an RFC 3339 instant with a time zone (e.g. \"2026-12-01T09:00:00Z\"): {e}"
                ))
            })
    }
}

impl Config {
    /// The delivery policy of `exam`: `[exam_defaults]` with `[exams."NAME"]` applied.
    pub fn exam_policy(&self, exam: &str) -> ExamPolicy {
        let mut policy = self.exam_defaults.clone();
        if let Some(o) = self.exams.get(exam) {
            if o.time_limit_secs.is_some() {
                policy.time_limit_secs = o.time_limit_secs;
            }
            if let Some(v) = o.grace_secs {
                policy.grace_secs = v;
            }
            if o.max_attempts.is_some() {
                policy.max_attempts = o.max_attempts;
            }
            if let Some(v) = o.review {
                policy.review = v;
            }
            if o.open_at.is_some() {
                policy.open_at = o.open_at;
            }
            if o.close_at.is_some() {
                policy.close_at = o.close_at;
            }
        }
        policy
    }

    /// Checks what the types cannot: every exam's policy is coherent.
    pub fn validate(&self) -> Result<(), String> {
        self.sql.check()?;
        self.storage.check()?;
        self.kafka.check()?;
        self.adaptive.activation.check()?;
        self.exam_defaults.check("exam_defaults")?;
        for name in self.exams.keys() {
            self.exam_policy(name).check(&format!("exams.{name:?}"))?;
        }
        Ok(())
    }

    /// Reads `path`, or `examflow.toml` in the working directory when it exists, or
    /// defaults; then the `EXAMFLOW_KAFKA_PROPERTY_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ApiError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => PathBuf::from(DEFAULT_CONFIG_FILE),
            None => {
                let mut config = Config::default();
                config.apply_kafka_property_env(std::env::vars());
                return Ok(config);
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ApiError::Io {
            path: path.clone(),
            source,
        })?;
        let mut config = Config::parse(&path, &text)?;
        config.apply_kafka_property_env(std::env::vars());
        Ok(config)
    }

    /// `EXAMFLOW_KAFKA_PROPERTY_SASL_PASSWORD=…` sets the librdkafka property
    /// `sasl.password` (lower case, `_` → `.`), over `[kafka.properties]`: credentials come
    /// from a Secret in the environment, not from the configuration file.
    pub fn apply_kafka_property_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if let Some(key) = name.strip_prefix(KAFKA_PROPERTY_ENV)
                && !key.is_empty()
            {
                let key = key.to_ascii_lowercase().replace('_', ".");
                self.kafka.properties.insert(key, value);
            }
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ApiError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ApiError::Config {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        if let Some(limit) = config.ingest.max_message_bytes {
            config.kafka.max_message_bytes = limit;
        }
        config.validate().map_err(|message| {
            // Point at the exam's table when the message names one, or at `[sql]`,
            // `[storage]` or `[kafka]`.
            let sql_table = ["sql", "storage", "kafka"]
                .into_iter()
                .find(|table| message.starts_with(&format!("{table}.")))
                .and_then(|table| text.find(&format!("[{table}]")));
            let (line, column) = sql_table
                .or_else(|| {
                    config
                        .exams
                        .keys()
                        .find(|name| message.starts_with(&format!("exams.{name:?}")))
                        .and_then(|name| {
                            text.find(&format!("[exams.\"{name}\"]"))
                                .or_else(|| text.find(&format!("[exams.{name}]")))
                        })
                })
                .or_else(|| text.find("[exam_defaults]"))
                .map(|at| line_column(text, at))
                .unwrap_or((1, 1));
            ApiError::Config {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        Ok(config)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.banks_dir, PathBuf::from("data/question_banks"));
        assert_eq!(c.auth.dev_login, None);
        assert!(c.auth.dev_login_enabled(c.server.listen));
        assert!(!c.auth.dev_login_enabled("0.0.0.0:8080".parse().unwrap()));
        assert!(!c.auth.dev_login_enabled("10.1.2.3:8080".parse().unwrap()));
        assert!(c.auth.dev_login_enabled("[::1]:8080".parse().unwrap()));
        assert_eq!(c.exam_policy("any").review, ReviewPolicy::Immediately);
        assert_eq!(c.exam_policy("any").max_attempts, None);
        assert_eq!(
            c.kafka.change_event_topic(),
            "mongo-trigger-topic.exams.score"
        );
        assert_eq!(c.kafka.email_topic, "email-topic");
        assert!(c.pgwire.listen.is_none());
    }

    #[test]
    fn kafka_properties_come_from_the_environment_over_the_file() {
        let mut c = Config::parse(
            Path::new("x.toml"),
            "[kafka.properties]\n\"sasl.username\" = \"file\"\n\"sasl.password\" = \"file\"\n",
        )
        .unwrap();
        c.apply_kafka_property_env([
            (
                "EXAMFLOW_KAFKA_PROPERTY_SASL_PASSWORD".to_string(),
                "s3cr=t".to_string(),
            ),
            (
                "EXAMFLOW_KAFKA_PROPERTY_SSL_CA_LOCATION".to_string(),
                "/ca.pem".to_string(),
            ),
            (
                "EXAMFLOW_KAFKA_PROPERTY_".to_string(),
                "ignored".to_string(),
            ),
            (
                "EXAMFLOW_KAFKA_BROKERS".to_string(),
                "not a property".to_string(),
            ),
        ]);
        let properties = &c.kafka.properties;
        assert_eq!(properties["sasl.password"], "s3cr=t");
        assert_eq!(properties["sasl.username"], "file");
        assert_eq!(properties["ssl.ca.location"], "/ca.pem");
        assert_eq!(properties.len(), 3, "{properties:?}");
    }

    #[test]
    fn a_replication_factor_of_zero_is_refused_at_its_table() {
        let e = Config::parse(
            Path::new("x.toml"),
            "[server]\n\n[kafka]\nreplication_factor = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.toml:3:1") && e.contains("kafka.replication_factor"),
            "{e}"
        );
        let c = Config::parse(Path::new("x.toml"), "[kafka]\nreplication_factor = -1\n").unwrap();
        assert_eq!(c.kafka.replication_factor, -1);
    }

    #[test]
    fn file_values_override_defaults() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[server]\nlisten = \"0.0.0.0:9000\"\n[auth]\ndev_login = false\n[kafka]\nbrokers = \"b:9092\"\n\
             [kafka.properties]\n\"fetch.wait.max.ms\" = \"50\"\n\"security.protocol\" = \"SASL_SSL\"\n\
             [pgwire]\nlisten = \"127.0.0.1:5433\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.pgwire.listen.map(|a| a.port()), Some(5433));
        assert_eq!(c.auth.dev_login, Some(false));
        assert!(c.kafka.enabled());
        assert_eq!(c.kafka.properties["fetch.wait.max.ms"], "50");
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn exam_overrides_apply_over_the_common_policy() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[adaptive.policy]\nmax_length = 12\nrule = \"kl\"\n\
             [adaptive.exams.geo]\ncut_score = 0.5\nmin_length = 3\n",
        )
        .unwrap();
        let geo = c.adaptive.policy_of("geo");
        assert_eq!(geo.max_length, 12);
        assert_eq!(geo.min_length, 3);
        assert_eq!(geo.cut_score, Some(0.5));
        assert_eq!(geo.rule, examflow_engine::cat::SelectionRule::Kl);
        assert_eq!(c.adaptive.policy_of("other").cut_score, None);
        assert_eq!(c.adaptive.policy_of("other").min_length, 5);
    }

    #[test]
    fn exam_policies_override_the_defaults() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[exam_defaults]\nmax_attempts = 3\nreview = \"never\"\n\
             [exams.\"intro-statistics\"]\ntime_limit_secs = 1800\ngrace_secs = 5\nmax_attempts = 1\n\
             review = \"after_close\"\nopen_at = \"2026-12-01T09:00:00Z\"\nclose_at = 2026-12-01T12:00:00+01:00\n",
        )
        .unwrap();
        let p = c.exam_policy("intro-statistics");
        assert_eq!(p.time_limit_secs, Some(1800));
        assert_eq!(p.grace_secs, 5);
        assert_eq!(p.max_attempts, Some(1));
        assert_eq!(p.review, ReviewPolicy::AfterClose);
        let close = p.close_at.unwrap();
        assert_eq!(close.to_rfc3339(), "2026-12-01T11:00:00+00:00");
        assert!(!p.shows_keys(close - chrono::Duration::seconds(1)));
        assert!(p.shows_keys(close));
        let other = c.exam_policy("other");
        assert_eq!(other.max_attempts, Some(3));
        assert_eq!(other.review, ReviewPolicy::Never);
        assert_eq!(other.grace_secs, 30);
        assert!(!other.shows_keys(close));
    }

    #[test]
    fn incoherent_policies_are_refused_with_their_place() {
        let e = Config::parse(
            Path::new("x.toml"),
            "[server]\n\n[exams.\"geo\"]\nopen_at = \"2026-12-01T12:00:00Z\"\nclose_at = \"2026-12-01T09:00:00Z\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("x.toml:3:1:") && e.contains("close_at"),
            "{e}"
        );
        let e = Config::parse(
            Path::new("x.toml"),
            "[exam_defaults]\nopen_at = \"tomorrow\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml:2:") && e.contains("RFC 3339"), "{e}");
        assert!(Config::parse(Path::new("x.toml"), "[exam_defaults]\nmax_attempts = 0\n").is_err());
    }

    #[test]
    fn sql_limits_default_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.sql.max_concurrent_queries, 8);
        assert_eq!(c.sql.total_memory_bytes(), 4 << 30);
        assert_eq!(c.sql.queue_timeout_ms, 2000);
        assert_eq!(c.sql.max_value_bytes, 16 << 20);
        // Unset, the shared pool grows with a larger per-query limit (old files still load).
        let c = Config::parse(
            Path::new("x.toml"),
            "[sql]\nmemory_limit_bytes = 8589934592\n",
        )
        .unwrap();
        assert_eq!(c.sql.total_memory_bytes(), 8 << 30);
        let e = Config::parse(
            Path::new("x.toml"),
            "[server]\n\n[sql]\nmemory_limit_bytes = 2000\ntotal_memory_bytes = 1000\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("x.toml:3:1:") && e.contains("sql.total_memory_bytes (1000)"),
            "{e}"
        );
        let e = Config::parse(Path::new("x.toml"), "[sql]\nmax_concurrent_queries = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_concurrent_queries"), "{e}");
        // Queries get half the cores by default, at least one; zero is refused.
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Config::default().sql.threads(), (cores / 2).max(1));
        let c = Config::parse(Path::new("x.toml"), "[sql]\nthreads = 3\n").unwrap();
        assert_eq!(c.sql.threads(), 3);
        let e = Config::parse(Path::new("x.toml"), "[sql]\nthreads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sql.threads"), "{e}");
    }

    #[test]
    fn the_store_keeps_a_reader_for_requests() {
        assert_eq!(Config::default().storage.sqlite_readers, 4);
        let c = Config::parse(Path::new("x.toml"), "[storage]\nsqlite_readers = 8\n").unwrap();
        assert_eq!(c.storage.sqlite_readers, 8);
        let e = Config::parse(
            Path::new("x.toml"),
            "[server]\n\n[storage]\nsqlite_readers = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("x.toml:3:1:") && e.contains("storage.sqlite_readers must be at least 2"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = Config::parse(Path::new("x.toml"), "[server]\nlisten = 5\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("x.toml:2:"), "{text}");
        let e = Config::parse(Path::new("x.toml"), "[server]\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}

//! Typed configuration with documented defaults. Precedence, lowest first: built-in
//! defaults, the file (`examflow.toml`, or `--config`), `EXAMFLOW_*` environment
//! variables, command-line flags (clap reads the variables and flags together and the
//! result overrides the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use examflow_ingest::KafkaSettings;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

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
    pub adaptive: AdaptiveConfig,
    pub sql: SqlConfig,
    pub pgwire: PgwireConfig,
}

/// The PostgreSQL wire protocol (`psql`, BI tools, psycopg): read-only SQL over the same
/// tables as `POST /api/sql`, signing in with a token as the password. `[sql]` limits apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgwireConfig {
    /// Address to listen on, e.g. `127.0.0.1:5433`; port 0 picks a free port. Default:
    /// unset (off).
    pub listen: Option<SocketAddr>,
    /// Most connections at once; more are closed on arrival. Default 64.
    pub max_connections: usize,
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
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Limits of `POST /api/sql`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Longest a query may run, in seconds (also while its result streams). Default 30.
    pub timeout_secs: u64,
    /// Most rows a streamed result (ndjson, csv, arrow, parquet) carries. Default 10,000,000.
    pub max_stream_rows: usize,
    /// Memory one query may use for sorts, joins and aggregations, in bytes. Default 1 GiB.
    pub memory_limit_bytes: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_secs: 30,
            max_stream_rows: 10_000_000,
            memory_limit_bytes: 1 << 30,
        }
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
    /// Messages larger than this many bytes are dead letters. Default 8 MiB.
    pub max_message_bytes: usize,
    /// Attempt de-duplication key: `keen_id`, `user_exam_id` or `sequences.id`. Default `keen_id`.
    pub dedup_key: String,
    /// Compaction and vacuum period in seconds; 0 turns it off. Default 600.
    pub housekeeping_interval_secs: u64,
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
            max_message_bytes: 8 << 20,
            dedup_key: "keen_id".into(),
            housekeeping_interval_secs: 600,
            vacuum_retention_secs: 3600,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("examflow-data"),
            banks_dir: PathBuf::from("data/question_banks"),
            mongodb_uri: None,
            mongodb_database: "exams".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for bearer tokens. Default: generated on first start and kept in
    /// `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Whether the page's dev login (type an email, get a student token) is on. Default true.
    pub dev_login: bool,
    /// Header set by a trusted proxy carrying a JWT whose payload names the user (e.g.
    /// `X-Amzn-Oidc-Data`). Only enable behind a proxy that strips it from clients.
    /// Default: unset.
    pub identity_header: Option<String>,
    /// Lifetime of tokens issued by dev login, in seconds. Default 8 hours.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            dev_login: true,
            identity_header: None,
            token_ttl_secs: 8 * 3600,
        }
    }
}

impl Config {
    /// Reads `path`, or `examflow.toml` in the working directory when it exists, or defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ApiError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => PathBuf::from(DEFAULT_CONFIG_FILE),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ApiError::Io {
            path: path.clone(),
            source,
        })?;
        Config::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ApiError> {
        toml::from_str(text).map_err(|e| {
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
        })
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
        assert!(c.auth.dev_login);
        assert_eq!(
            c.kafka.change_event_topic(),
            "mongo-trigger-topic.exams.score"
        );
        assert_eq!(c.kafka.email_topic, "email-topic");
        assert!(c.pgwire.listen.is_none());
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
        assert!(!c.auth.dev_login);
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
    fn errors_name_file_line_and_column() {
        let e = Config::parse(Path::new("x.toml"), "[server]\nlisten = 5\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("x.toml:2:"), "{text}");
        let e = Config::parse(Path::new("x.toml"), "[server]\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}

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
    }

    #[test]
    fn file_values_override_defaults() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[server]\nlisten = \"0.0.0.0:9000\"\n[auth]\ndev_login = false\n[kafka]\nbrokers = \"b:9092\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert!(!c.auth.dev_login);
        assert!(c.kafka.enabled());
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

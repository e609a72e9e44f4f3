//! `examflow cdc`, and the same change capture inside `serve`: MongoDB's results collection
//! into Debezium-shaped change events, for operators who do not run Kafka Connect.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use examflow_ingest::cdc::envelope::SourceInfo;
use examflow_ingest::cdc::offsets::{FileOffsets, MongoOffsets, OffsetStore};
use examflow_ingest::cdc::{Capture, CaptureMetrics, ChangeSink, KafkaSink, OutboxSink};
use examflow_ingest::store::SqliteStore;

use crate::config::Config;
use crate::ensure_topics;

#[derive(clap::Args)]
pub struct CdcArgs {
    /// MongoDB connection string (a replica set: change streams need one).
    #[arg(long, env = "EXAMFLOW_MONGODB_URI")]
    pub mongodb_uri: Option<String>,
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(long, env = "EXAMFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Database holding the results collection [default: exams].
    #[arg(long, env = "EXAMFLOW_MONGODB_DATABASE")]
    pub database: Option<String>,
    /// Debezium `topic.prefix`: events go to `<prefix>.exams.score`
    /// [default: mongo-trigger-topic].
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Serve Prometheus metrics (events by op, snapshots, lost positions) at
    /// http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// A connection string without its password, for messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &uri[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &uri[..scheme + 3],
                    &credentials[..colon],
                    &uri[at..]
                ),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}

/// A name for this process in the capture lease: host, pid and a random part.
fn owner_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn source_of(config: &Config) -> SourceInfo {
    SourceInfo {
        name: config.kafka.topic_prefix.clone(),
        db: config.storage.mongodb_database.clone(),
        collection: config.cdc.collection.clone(),
    }
}

fn lease(config: &Config) -> Duration {
    Duration::from_secs(config.cdc.lease_secs.max(1))
}

/// A capture to Kafka with its position and lease in `<db>.cdc_offsets`.
async fn kafka_capture(
    config: &Config,
    uri: &str,
    registry: &prometheus::Registry,
) -> anyhow::Result<Capture> {
    let client = examflow_ingest::cdc::connect(uri)
        .await
        .context("connecting to MongoDB")?;
    let source = source_of(config);
    let db = client.database(&source.db);
    let topic = config.kafka.change_event_topic();
    let offsets: Arc<dyn OffsetStore> =
        Arc::new(MongoOffsets::new(&db, &topic, &owner_name(), lease(config)));
    let sink: Arc<dyn ChangeSink> = Arc::new(KafkaSink::new(&config.kafka)?);
    Ok(Capture::new(
        client,
        source,
        offsets,
        sink,
        CaptureMetrics::new(registry),
        lease(config) / 3,
    ))
}

/// `examflow cdc`: runs until SIGTERM or Ctrl-C, then gives its lease up.
pub async fn run(mut config: Config, args: CdcArgs) -> anyhow::Result<()> {
    if let Some(v) = args.mongodb_uri {
        config.storage.mongodb_uri = Some(v);
    }
    if let Some(v) = args.kafka_brokers {
        config.kafka.brokers = v;
    }
    if let Some(v) = args.database {
        config.storage.mongodb_database = v;
    }
    if let Some(v) = args.topic_prefix {
        config.kafka.topic_prefix = v;
    }
    let uri = config.storage.mongodb_uri.clone().context(
        "examflow cdc needs --mongodb-uri (or EXAMFLOW_MONGODB_URI, or storage.mongodb_uri)",
    )?;
    anyhow::ensure!(
        config.kafka.enabled(),
        "examflow cdc needs --kafka-brokers (or EXAMFLOW_KAFKA_BROKERS, or kafka.brokers)"
    );
    let registry = prometheus::Registry::new();
    let capture = kafka_capture(&config, &uri, &registry).await?;
    if let Some(addr) = args.metrics_listen {
        crate::lake_cmd::serve_metrics(addr, registry).await?;
    }
    if let Err(e) = capture.check().await {
        if examflow_ingest::cdc::needs_replica_set(&e) {
            anyhow::bail!(
                "{uri_shown}: {e}; change capture needs a replica set (a one-member one is \
                 enough: mongod --replSet rs0, then rs.initiate())",
                uri_shown = redact(&uri)
            );
        }
        tracing::warn!(error = %e, "change capture: MongoDB not ready yet; retrying in the background");
    }
    ensure_topics(&config.kafka).await;
    tracing::info!(
        db = %capture.source.db,
        collection = %capture.source.collection,
        topic = %config.kafka.change_event_topic(),
        "change capture started"
    );
    tokio::select! {
        _ = capture.run() => {}
        _ = crate::shutdown_signal() => {}
    }
    capture.flush().await;
    Ok(())
}

/// Starts change capture inside `serve` (MongoDB configured, `[cdc] enabled`): to Kafka
/// when brokers are set, else into this server's embedded outbox, which feeds its score
/// cards and its lake as on the embedded default (position in the data dir).
pub async fn start_in_server(
    config: &Config,
    uri: &str,
    local: Arc<SqliteStore>,
    registry: &prometheus::Registry,
    data_dir: &Path,
    tasks: &crate::supervise::Tasks,
) -> anyhow::Result<RunningCapture> {
    let capture = if config.kafka.enabled() {
        kafka_capture(config, uri, registry).await?
    } else {
        let client = examflow_ingest::cdc::connect(uri)
            .await
            .context("connecting to MongoDB")?;
        let source = source_of(config);
        let position = data_dir
            .join("cdc")
            .join(format!("{}.{}.position", source.db, source.collection));
        Capture::new(
            client,
            source,
            Arc::new(FileOffsets::new(position)),
            Arc::new(OutboxSink { store: local }),
            CaptureMetrics::new(registry),
            lease(config) / 3,
        )
    };
    // Before the server takes submissions: each one is then captured as a change.
    match tokio::time::timeout(Duration::from_secs(10), capture.prepare()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "change capture: could not fix its start yet"),
        Err(_) => tracing::warn!("change capture: MongoDB did not answer in 10 s; starting anyway"),
    }
    let capture = Arc::new(
        capture.with_health(Arc::new(crate::supervise::TaskReporter {
            tasks: tasks.clone(),
            name: "change-capture",
        })),
    );
    let settings = config.kafka.clone();
    let running = capture.clone();
    let task = tasks.spawn("change-capture", move || {
        let (running, settings) = (running.clone(), settings.clone());
        async move {
            if settings.enabled() {
                ensure_topics(&settings).await;
            }
            running.run().await;
            Ok(())
        }
    });
    Ok(RunningCapture { capture, task })
}

/// Change capture running inside `serve`.
pub struct RunningCapture {
    capture: Arc<Capture>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningCapture {
    /// Stops capturing and saves the last acknowledged position (server shutdown).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.capture.flush().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            super::redact("mongodb://app:s3cret@db.example:27017/?replicaSet=rs0"),
            "mongodb://app:***@db.example:27017/?replicaSet=rs0"
        );
        assert_eq!(
            super::redact("mongodb://127.0.0.1:27017"),
            "mongodb://127.0.0.1:27017"
        );
    }
}

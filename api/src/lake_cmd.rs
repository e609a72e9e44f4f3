//! `examflow ingest`, `examflow sql` and `examflow produce-attempts`: the lake from the
//! command line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::RecordBatch;
use examflow_ingest::lake::Lake;
use examflow_ingest::lake::query::{new_session, register_lake, run_sql};
use examflow_ingest::pipeline::{IngestSettings, LakeIngest, LakeMetrics};
use examflow_ingest::{IngestMetrics, KafkaSettings, produce};

use crate::config::Config;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(long, env = "EXAMFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topics to consume, comma-separated [default: exams and
    /// mongo-trigger-topic.exams.score]. A topic equal to the configured change-event topic,
    /// or ending in `.score`, is read as Debezium change events; any other as attempts.
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Data directory; tables live in `<data-dir>/lake` [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the lake's tables live: a path, file:///dir or s3://bucket/prefix
    /// [default: <data-dir>/lake].
    #[arg(long, env = "EXAMFLOW_LAKE_URI")]
    pub lake_uri: Option<String>,
    /// Consumer group [default: examflow-ingest].
    #[arg(long)]
    pub group: Option<String>,
    /// Delta commit period in milliseconds [default: 2000].
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// Attempt de-duplication key: keen_id, user_exam_id or sequences.id [default: keen_id].
    #[arg(long)]
    pub dedup_key: Option<String>,
    /// Serve Prometheus metrics (consumer lag, rows, bytes, commits, dead letters,
    /// freshness) at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(clap::Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT count(*) AS n FROM attempts".
    pub sql: String,
    /// Data directory holding `lake/` [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the lake's tables live: a path, file:///dir or s3://bucket/prefix
    /// [default: <data-dir>/lake].
    #[arg(long, env = "EXAMFLOW_LAKE_URI")]
    pub lake_uri: Option<String>,
    /// Output: table, csv or json (an array of row objects).
    #[arg(long, default_value = "table")]
    pub format: SqlFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SqlFormat {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// A JSON array of attempt documents, or one document per line.
    pub file: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "EXAMFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "exams")]
    pub topic: String,
    /// Partitions when the topic has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

/// Applies the file/env settings and the flags of `examflow ingest`.
pub fn ingest_settings(config: &Config) -> anyhow::Result<IngestSettings> {
    let c = &config.ingest;
    Ok(IngestSettings {
        group_id: c.group_id.clone(),
        transaction_app_id: c.transaction_app_id.clone(),
        attempts_topic: c.attempts_topic.clone(),
        changes_topic: config.kafka.change_event_topic(),
        commit_interval: Duration::from_millis(c.commit_interval_ms.max(10)),
        flush_interval: Duration::from_millis(c.flush_interval_ms.max(1)),
        max_message_bytes: config.kafka.max_message_bytes,
        dedup_key: c
            .dedup_key
            .parse()
            .map_err(|e| anyhow::anyhow!("ingest.dedup_key: {e}"))?,
        dead_letter_topics: true,
        change_dead_letter_topic: true,
        housekeeping_interval: Duration::from_secs(c.housekeeping_interval_secs),
        housekeeping_after_commits: c.housekeeping_after_commits,
        vacuum_retention: Duration::from_secs(c.vacuum_retention_secs),
    })
}

pub async fn ingest(mut config: Config, args: IngestArgs) -> anyhow::Result<()> {
    if let Some(v) = args.kafka_brokers {
        config.kafka.brokers = v;
    }
    if let Some(v) = args.data_dir {
        config.storage.data_dir = v;
    }
    if let Some(v) = args.lake_uri {
        config.storage.lake_uri = Some(v);
    }
    if let Some(v) = args.group {
        config.ingest.group_id = v;
    }
    if let Some(v) = args.commit_interval_ms {
        config.ingest.commit_interval_ms = v;
    }
    if let Some(v) = args.dedup_key {
        config.ingest.dedup_key = v;
    }
    anyhow::ensure!(
        config.kafka.enabled(),
        "examflow ingest needs --kafka-brokers (or EXAMFLOW_KAFKA_BROKERS)"
    );
    let mut settings = ingest_settings(&config)?;
    if !args.topics.is_empty() {
        let (mut attempts, mut changes) = (None, None);
        for topic in args.topics {
            let slot = if topic == settings.changes_topic || topic.ends_with(".score") {
                &mut changes
            } else {
                &mut attempts
            };
            anyhow::ensure!(
                slot.is_none(),
                "--topics: at most one attempts topic and one change-event topic (got a second: {topic})"
            );
            *slot = Some(topic);
        }
        settings.attempts_topic = attempts.unwrap_or_default();
        settings.changes_topic = changes.unwrap_or_default();
    }
    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let lake = Arc::new(open_lake(&config).await?);
    lake.rebuild_abilities().await?;
    let registry = prometheus::Registry::new();
    let pipeline = LakeIngest::new(
        lake,
        config.kafka.clone(),
        settings,
        IngestMetrics::new(&registry),
        LakeMetrics::new(&registry),
    );
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr, registry).await?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signalled = stopped.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        let _ = stop.send(true);
    });
    // A task of its own, so that past the deadline it is left behind, not dropped here
    // (dropping a Kafka consumer waits for the broker).
    let mut running = tokio::spawn(pipeline.run(stopped));
    let limit_secs = config.server.shutdown_timeout_secs;
    let deadline = crate::shutdown_deadline(signalled, limit_secs, "committing the lake's tails");
    tokio::select! {
        finished = &mut running => {
            finished.map_err(|e| anyhow::anyhow!("the ingest stopped: {e}"))??;
        }
        () = deadline => tracing::warn!(
            limit_secs,
            "shutdown took longer than [server] shutdown_timeout_secs; stopping now (what \
             was not committed is read again from Kafka at the next start)"
        ),
    }
    Ok(())
}

/// `/metrics` of a standalone `examflow ingest`.
pub(crate) async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: prometheus::Registry,
) -> anyhow::Result<()> {
    use prometheus::Encoder;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} for metrics"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut buffer = Vec::new();
                let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buffer);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    buffer,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// Runs a query on the committed tables of a lake.
pub async fn sql(mut config: Config, args: SqlArgs) -> anyhow::Result<String> {
    if let Some(v) = args.data_dir {
        config.storage.data_dir = v;
    }
    if let Some(v) = args.lake_uri {
        config.storage.lake_uri = Some(v);
    }
    let lake = open_existing_lake(&config, "examflow ingest").await?;
    let ctx = new_session();
    register_lake(&ctx, &lake, false).await?;
    let batches = run_sql(&ctx, &args.sql)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    format_batches(&batches, args.format)
}

/// Opens (creating missing tables) the lake the configuration names.
pub async fn open_lake(config: &Config) -> anyhow::Result<Lake> {
    let location = config
        .storage
        .lake_location()
        .map_err(|e| anyhow::anyhow!("storage.lake_uri: {e}"))?;
    let shown = location.display();
    Lake::open_at(location)
        .await
        .with_context(|| format!("opening the lake at {shown}"))
}

/// Opens the lake for an offline command; a local lake's data directory must exist
/// (`writer` names the command that would have made it).
pub async fn open_existing_lake(config: &Config, writer: &str) -> anyhow::Result<Lake> {
    let data_dir = &config.storage.data_dir;
    if config.storage.lake_uri.is_none() {
        anyhow::ensure!(
            data_dir.is_dir(),
            "data directory {} does not exist (give --data-dir or --lake-uri, or run {writer} first)",
            data_dir.display()
        );
    }
    open_lake(config).await
}

pub fn format_batches(batches: &[RecordBatch], format: SqlFormat) -> anyhow::Result<String> {
    Ok(match format {
        SqlFormat::Table => {
            let mut text = arrow::util::pretty::pretty_format_batches(batches)?.to_string();
            text.push('\n');
            text
        }
        SqlFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    // Text cells that start like a formula get a quote (CSV injection).
                    writer.write(&crate::sql::csv_safe_batch(batch)?)?;
                }
            }
            String::from_utf8(out)?
        }
        SqlFormat::Json => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            let mut text = String::from_utf8(out)?;
            if text.is_empty() {
                text.push_str("[]");
            }
            text.push('\n');
            text
        }
    })
}

pub async fn produce_attempts(config: Config, args: ProduceArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let documents = produce::split_documents(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {}",
            args.file.display(),
            e.line,
            e.column,
            e.message
        )
    })?;
    let mut kafka = config.kafka;
    kafka.brokers = args.kafka_brokers;
    // Fail in seconds, saying why (refused, TLS, SASL), rather than after the admin
    // client's long timeout with only "timed out".
    kafka.check_broker(Duration::from_secs(10)).await?;
    kafka
        .create_topics(std::slice::from_ref(&args.topic), args.partitions)
        .await?;
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(documents.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {wide_bar} {pos}/{len} attempts ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let produced = produce::produce_documents(&kafka, &args.topic, &documents, 10_000, |n| {
        bar.set_position(n)
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "produced {produced} attempts from {} to {} in {secs:.2} s ({:.0}/s)",
        args.file.display(),
        args.topic,
        produced as f64 / secs.max(1e-9)
    )?;
    Ok(())
}

/// The lake ingest inside `serve`: started when Kafka is configured and `ingest.enabled`.
pub fn start_in_server(
    config: &Config,
    lake: Arc<Lake>,
    kafka: KafkaSettings,
    metrics: IngestMetrics,
    registry: &prometheus::Registry,
    tasks: &crate::supervise::Tasks,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut settings = ingest_settings(config)?;
    // The score-card consumer already sets the change topic's dead letters aside.
    settings.change_dead_letter_topic = false;
    let lake_metrics = LakeMetrics::new(registry);
    // After a failure (a commit error, say) the ingest starts again from the offsets its
    // last commit recorded: nothing the broker holds is lost. At shutdown it commits its
    // tail and ends.
    Ok(tasks.spawn("lake-ingest", move || {
        let pipeline = LakeIngest::new(
            lake.clone(),
            kafka.clone(),
            settings.clone(),
            metrics.clone(),
            lake_metrics.clone(),
        );
        let stopped = stopped.clone();
        async move { Ok(pipeline.run(stopped).await?) }
    }))
}

//! Kafka in and out: topic set-up, the outbox relay (embedded store → `<prefix>.exams.score`)
//! and the score-card consumer (`<prefix>.exams.score` → `email-topic`, dead letters to
//! `<topic>.dlq`).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::delivery::{
    Origin, RECORD_OVERHEAD_BYTES, Refused, produce_dead_letter, produce_until_acked,
};
use crate::error::{IngestError, Result};
use crate::metrics::IngestMetrics;
use crate::score_cards::{CardDecision, KeyPolicy, decide_with};
use crate::store::sqlite::{CardOutcome, OutboxReader, SqliteStore};

/// Kafka settings of the change-event and score-card flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port]`. Empty: Kafka is off.
    pub brokers: String,
    /// Debezium `topic.prefix`; change events go to `<prefix>.exams.score`.
    pub topic_prefix: String,
    /// Where score cards go.
    pub email_topic: String,
    /// Consumer group of the score-card consumer.
    pub score_card_group: String,
    /// Partitions for topics examflow creates.
    pub partitions: i32,
    /// Replicas of each partition of the topics examflow creates; -1 takes the broker's
    /// `default.replication.factor` (Kafka 2.4 and later). Topics that exist are left as
    /// they are. Default 1 (one broker); 3 on a production cluster.
    pub replication_factor: i32,
    /// Kafka session timeout (ms) of examflow's consumers.
    pub session_timeout_ms: u32,
    /// Largest message examflow produces or ingests, in bytes (key and payload). Drives the
    /// producer's `message.max.bytes` and the ingest's limit: a larger attempt or change
    /// event becomes a dead letter instead of blocking its stream. Keep it at or below the
    /// broker's `message.max.bytes` (Kafka's default is 1 MiB; examflow's default 8 MiB
    /// suits brokers configured for it, and a broker refusing a record also makes it a dead
    /// letter). Default 8 MiB.
    pub max_message_bytes: usize,
    /// Extra librdkafka properties for every client examflow creates (TLS and SASL
    /// settings, `fetch.wait.max.ms`, `client.id`, ...). Settings examflow needs for
    /// correctness (`group.id`, `enable.auto.commit`, `acks`, ...) still win. Default: none.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: String::new(),
            topic_prefix: "mongo-trigger-topic".into(),
            email_topic: "email-topic".into(),
            score_card_group: "examflow-score-cards".into(),
            partitions: 2,
            replication_factor: 1,
            session_timeout_ms: 10_000,
            max_message_bytes: 8 << 20,
            properties: std::collections::BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// `<prefix>.exams.score`, as Debezium names it.
    pub fn change_event_topic(&self) -> String {
        format!("{}.exams.score", self.topic_prefix)
    }

    /// Dead letters of a topic go to `<topic>.dlq`.
    pub fn dead_letter_topic(topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// Settings that cannot work, said before any client is made.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.partitions < 1 {
            return Err(format!(
                "kafka.partitions must be at least 1, not {}",
                self.partitions
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(format!(
                "kafka.replication_factor must be at least 1, or -1 for the broker's default, \
                 not {}",
                self.replication_factor
            ));
        }
        Ok(())
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("socket.keepalive.enable", "true");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    pub fn producer(&self) -> Result<FutureProducer> {
        self.client_config()
            .set("message.timeout.ms", "15000")
            .set("linger.ms", "2")
            .set("acks", "all")
            .set(
                "message.max.bytes",
                (self.max_message_bytes + RECORD_OVERHEAD_BYTES)
                    .clamp(1000, 1_000_000_000)
                    .to_string(),
            )
            .create()
            .map_err(|e| IngestError::kafka("creating producer", e))
    }

    /// Whether a broker answers a metadata request within `timeout`: the number of
    /// brokers it names (readiness checks, and one-shot commands before they start). When
    /// none answers, the error carries librdkafka's last connection error (refused, TLS
    /// handshake, SASL), which its timeout alone does not say.
    pub async fn check_broker(&self, timeout: Duration) -> Result<usize> {
        let config = self.client_config();
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let producer: rdkafka::producer::BaseProducer<LastClientError> = config
                .create_with_context(LastClientError::default())
                .map_err(|e| IngestError::kafka("creating a client", e))?;
            use rdkafka::producer::Producer;
            // Short tries, serving the client's events between them: librdkafka reports
            // connection errors as events, which only a poll hands to the context.
            const TRY: Duration = Duration::from_millis(500);
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let result = producer.client().fetch_metadata(None, left.min(TRY));
                producer.poll(Duration::ZERO);
                match result {
                    Ok(metadata) => return Ok(metadata.brokers().len()),
                    Err(e) if left <= TRY => {
                        return Err(IngestError::BrokerUnreachable {
                            brokers,
                            millis: timeout.as_millis() as u64,
                            reason: producer.context().take().unwrap_or_else(|| e.to_string()),
                        });
                    }
                    Err(_) => {}
                }
            }
        })
        .await
        .map_err(|e| IngestError::Task(e.to_string()))?
    }

    /// Creates examflow's topics if they do not exist yet.
    pub async fn ensure_topics(&self) -> Result<()> {
        let change = self.change_event_topic();
        let names = [
            change.clone(),
            Self::dead_letter_topic(&change),
            self.email_topic.clone(),
        ];
        self.create_topics(&names, self.partitions).await
    }

    /// Creates each topic with `partitions` partitions unless it exists (some brokers do not
    /// create topics on first use), taking messages up to `max_message_bytes`.
    pub async fn create_topics(&self, names: &[String], partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| IngestError::kafka("creating admin client", e))?;
        // The broker takes what examflow may produce (`max_message_bytes`).
        let max_bytes = (self.max_message_bytes + RECORD_OVERHEAD_BYTES).to_string();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    partitions,
                    TopicReplication::Fixed(self.replication_factor),
                )
                .set("max.message.bytes", &max_bytes)
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .map_err(|e| IngestError::kafka("creating topics", e))?;
        for result in results {
            match result {
                Ok(name) => info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(IngestError::kafka(
                        format!("creating topic {name}"),
                        rdkafka::error::KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Publishes the embedded store's outbox to `<prefix>.exams.score`, oldest first; an
/// event is marked published only after the broker acknowledged it, so a broker outage
/// only delays events.
pub async fn run_outbox_relay(
    settings: KafkaSettings,
    store: Arc<SqliteStore>,
    metrics: IngestMetrics,
) -> Result<()> {
    let producer = settings.producer()?;
    let topic = settings.change_event_topic();
    let dlq = KafkaSettings::dead_letter_topic(&topic);
    loop {
        let pending = match store.pending_outbox(OutboxReader::Publisher, 256).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "reading outbox failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok(n) = store.count_pending_outbox(OutboxReader::Publisher).await {
            metrics.outbox_pending.set(n);
        }
        if pending.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), store.outbox_notify.notified())
                    .await;
            continue;
        }
        let sends = pending.iter().map(|event| {
            produce_until_acked(
                &producer,
                &topic,
                Some(&event.key),
                Some(&event.value),
                None,
                settings.max_message_bytes,
            )
        });
        let results = futures::future::join_all(sends).await;
        // An event the broker will never take is set aside (cut to fit on `<topic>.dlq`,
        // whole in the store's dead letters) before it counts as published: later events
        // are not held back, and nothing is dropped unrecorded.
        for (event, result) in pending.iter().zip(results) {
            if let Err(Refused(reason)) = result {
                warn!(seq = event.seq, bytes = event.value.len(), %reason, "outbox event set aside as a dead letter");
                produce_dead_letter(
                    &producer,
                    &dlq,
                    Some(&event.key),
                    Some(&event.value),
                    &reason,
                    Origin {
                        topic: "outbox",
                        partition: 0,
                        offset: event.seq,
                    },
                    settings.max_message_bytes,
                )
                .await;
                let outcome = CardOutcome::DeadLetter {
                    source: "outbox".into(),
                    reason,
                    payload: event.value.clone(),
                };
                while let Err(e) = store.record_card_outcome(outcome.clone()).await {
                    warn!(error = %e, "recording a dead letter failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                metrics.dead_letters.with_label_values(&["outbox"]).inc();
            }
        }
        let seqs: Vec<i64> = pending.iter().map(|e| e.seq).collect();
        let n = seqs.len() as u64;
        while let Err(e) = store.mark_published(seqs.clone()).await {
            warn!(error = %e, "marking outbox events published failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        metrics.change_events_published.inc_by(n);
    }
}

/// Runs the in-process score-card consumer on the embedded store's outbox (no Kafka).
pub async fn run_outbox_score_cards(
    store: Arc<SqliteStore>,
    metrics: IngestMetrics,
    shows_keys: KeyPolicy,
) -> Result<()> {
    loop {
        let pending = match store.pending_outbox(OutboxReader::ScoreCards, 256).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "reading outbox failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if pending.is_empty() {
            metrics.outbox_pending.set(0);
            let _ =
                tokio::time::timeout(Duration::from_millis(500), store.outbox_notify.notified())
                    .await;
            continue;
        }
        let outcomes: Vec<(i64, CardOutcome)> = pending
            .iter()
            .map(|event| {
                let outcome = outcome_of(
                    decide_with(Some(&event.key), Some(&event.value), shows_keys.as_ref()),
                    "outbox",
                    &event.value,
                );
                (event.seq, outcome)
            })
            .collect();
        while let Err(e) = store.complete_card_events(outcomes.clone()).await {
            warn!(error = %e, "recording score cards failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (_, outcome) in &outcomes {
            count(&metrics, outcome, "outbox");
        }
    }
}

fn outcome_of(decision: CardDecision, source: &str, payload: &[u8]) -> CardOutcome {
    match decision {
        CardDecision::Send { document_id, card } => CardOutcome::Card { document_id, card },
        CardDecision::Skip { .. } => CardOutcome::Nothing,
        CardDecision::DeadLetter { reason } => CardOutcome::DeadLetter {
            source: source.to_string(),
            reason,
            payload: payload.to_vec(),
        },
    }
}

fn count(metrics: &IngestMetrics, outcome: &CardOutcome, source: &str) {
    match outcome {
        CardOutcome::Card { .. } => metrics.score_cards_sent.inc(),
        CardOutcome::DeadLetter { .. } => metrics.dead_letters.with_label_values(&[source]).inc(),
        CardOutcome::Nothing => {}
    }
}

/// Keeps librdkafka's last client error (a refused connection, a failed TLS handshake or
/// SASL authentication), so that a timeout can say why.
/// A connection failure (librdkafka's `FAIL` log line: refused, TLS handshake, SASL) says
/// more than the error events that follow it ("1/1 brokers are down"), so it wins.
#[derive(Default)]
struct LastClientError {
    failure: std::sync::Mutex<Option<String>>,
    error: std::sync::Mutex<Option<String>>,
}

impl LastClientError {
    fn take(&self) -> Option<String> {
        let take = |slot: &std::sync::Mutex<Option<String>>| {
            slot.lock().map(|mut last| last.take()).unwrap_or(None)
        };
        take(&self.failure).or_else(|| take(&self.error))
    }
}

impl ClientContext for LastClientError {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL"
            && let Ok(mut last) = self.failure.lock()
        {
            *last = Some(log_message.to_string());
        }
        DefaultClientContext.log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka client error");
        if let Ok(mut last) = self.error.lock() {
            *last = Some(reason.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for LastClientError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Consumer context that turns librdkafka statistics into the lag gauge.
struct LagContext {
    metrics: IngestMetrics,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.record_consumer_lag(statistics);
    }
}

impl ConsumerContext for LagContext {}

/// The score-card consumer: reads change events, produces a card per created or updated
/// document to `email-topic` (keyed by document id), sets unreadable messages aside in
/// `<topic>.dlq` with the reason in the `examflow.error` header, and commits each offset
/// only after what it produced was acknowledged.
pub async fn run_score_card_consumer(
    settings: KafkaSettings,
    store: Option<Arc<SqliteStore>>,
    metrics: IngestMetrics,
    shows_keys: KeyPolicy,
) -> Result<()> {
    let topic = settings.change_event_topic();
    let dlq = KafkaSettings::dead_letter_topic(&topic);
    let consumer: StreamConsumer<LagContext> = settings
        .client_config()
        .set("group.id", &settings.score_card_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagContext {
            metrics: metrics.clone(),
        })
        .map_err(|e| IngestError::kafka("creating score-card consumer", e))?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| IngestError::kafka(format!("subscribing to {topic}"), e))?;
    let producer = settings.producer()?;
    info!(%topic, email_topic = %settings.email_topic, "score-card consumer started");
    loop {
        let message = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "score-card consumer: receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut decision = decide_with(message.key(), message.payload(), shows_keys.as_ref());
        if let CardDecision::Send { document_id, card } = &decision
            && let Err(Refused(reason)) = produce_until_acked(
                &producer,
                &settings.email_topic,
                Some(document_id.as_bytes()),
                Some(card.as_bytes()),
                None,
                settings.max_message_bytes,
            )
            .await
        {
            decision = CardDecision::DeadLetter {
                reason: format!("its score card was refused: {reason}"),
            };
        }
        if let CardDecision::DeadLetter { reason } = &decision {
            warn!(%reason, partition = message.partition(), offset = message.offset(), "dead letter");
            produce_dead_letter(
                &producer,
                &dlq,
                message.key(),
                message.payload(),
                reason,
                Origin {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                },
                settings.max_message_bytes,
            )
            .await;
        }
        let outcome = outcome_of(decision, &topic, message.payload().unwrap_or_default());
        count(&metrics, &outcome, &topic);
        if let Some(store) = &store
            && !matches!(outcome, CardOutcome::Nothing)
            && let Err(e) = store.record_card_outcome(outcome).await
        {
            warn!(error = %e, "keeping a copy of the score card failed");
        }
        if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
            warn!(error = %e, "offset commit failed (the message may be seen again)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Managed Kafka (MSK, Confluent Cloud, Strimzi's TLS listeners) wants TLS and SASL, and
    /// other producers compress with zstd: librdkafka refuses such settings at creation when
    /// it was built without OpenSSL or libzstd.
    #[tokio::test]
    async fn clients_accept_tls_sasl_and_every_compression_codec() {
        let mut settings = KafkaSettings {
            brokers: "127.0.0.1:1".into(),
            ..KafkaSettings::default()
        };
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "examflow"),
            ("sasl.password", "secret"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            settings.properties.insert(key.into(), value.into());
        }
        for codec in ["zstd", "lz4", "snappy", "gzip"] {
            let mut compressed = settings.clone();
            compressed
                .properties
                .insert("compression.type".into(), codec.into());
            if let Err(e) = compressed.producer() {
                panic!("compression {codec} over SASL_SSL: {e}");
            }
        }
        let consumer: std::result::Result<StreamConsumer, _> = settings
            .client_config()
            .set("group.id", "tls-test")
            .create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}

//! Metrics of the ingest side, named by what an operator asks ("how many cards went out,
//! how many messages were set aside, how far behind is the consumer").

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::statistics::Statistics;

#[derive(Clone)]
pub struct IngestMetrics {
    pub score_cards_sent: IntCounter,
    pub dead_letters: IntCounterVec,
    pub change_events_published: IntCounter,
    pub outbox_pending: IntGauge,
    pub consumer_lag: IntGaugeVec,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = IngestMetrics {
            score_cards_sent: IntCounter::new(
                "examflow_score_cards_total",
                "Score cards produced (to email-topic, or stored in embedded mode).",
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "examflow_dead_letters_total",
                    "Messages set aside because they could not be understood, by source topic.",
                ),
                &["source"],
            )
            .expect("valid metric"),
            change_events_published: IntCounter::new(
                "examflow_change_events_published_total",
                "Change events sent from the outbox to Kafka.",
            )
            .expect("valid metric"),
            outbox_pending: IntGauge::new(
                "examflow_outbox_pending",
                "Change events stored but not yet handled by the outbox's consumer.",
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "examflow_kafka_consumer_lag",
                    "Messages between the consumer's position and the partition's end.",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(m.score_cards_sent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.dead_letters.clone()),
            Box::new(m.change_events_published.clone()),
            Box::new(m.outbox_pending.clone()),
            Box::new(m.consumer_lag.clone()),
        ] {
            // Registering twice (two servers in one test process) is harmless.
            let _ = registry.register(collector);
        }
        m
    }

    /// Consumer lag per partition, from librdkafka's periodic statistics.
    pub fn record_consumer_lag(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.consumer_lag
                        .with_label_values(&[topic.as_str(), partition.to_string().as_str()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

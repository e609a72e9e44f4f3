//! Broker access for tests: the broker named by EXAMFLOW_TEST_KAFKA_BROKERS (started by
//! scripts/test-all), or one started here with scripts/kafka-broker.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A broker this test process started (stopped on drop).
pub struct OwnBroker {
    pub dir: PathBuf,
    pub brokers: String,
}

impl OwnBroker {
    /// Starts a broker in `dir` on `port` (None: a free port).
    pub fn start(dir: &Path, port: Option<u16>) -> OwnBroker {
        let mut cmd = Command::new(super::repo_root().join("scripts/kafka-broker"));
        cmd.arg("start").arg(dir);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let out = cmd.output().expect("running scripts/kafka-broker");
        assert!(
            out.status.success(),
            "broker failed to start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OwnBroker {
            dir: dir.to_path_buf(),
            brokers: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }

    /// A broker that only accepts TLS, with a certificate for 127.0.0.1 signed by a CA of
    /// its own (made with the `openssl` command); returns it and the CA's PEM file.
    pub fn start_tls(dir: &Path) -> (OwnBroker, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("running openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=examflow test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        (OwnBroker::start(dir, None), dir.join("ca.pem"))
    }

    pub fn stop(&self) {
        let _ = Command::new(super::repo_root().join("scripts/kafka-broker"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared test broker: EXAMFLOW_TEST_KAFKA_BROKERS, or a broker started for this
/// test binary (kept in the returned guard).
pub fn test_brokers() -> (String, Option<OwnBroker>) {
    if let Ok(b) = std::env::var("EXAMFLOW_TEST_KAFKA_BROKERS")
        && !b.is_empty()
    {
        return (b, None);
    }
    let dir = tempfile::tempdir().unwrap().keep();
    let broker = OwnBroker::start(&dir, None);
    (broker.brokers.clone(), Some(broker))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A message to produce: optional key, optional value (None: a tombstone).
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Counts the delivery reports that carried an error (the default context drops them).
#[derive(Default)]
struct DeliveryErrors(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for DeliveryErrors {}

impl rdkafka::producer::ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let size = m.payload().map_or(0, <[u8]>::len);
            self.0.lock().unwrap().push(format!("{e} ({size} bytes)"));
        }
    }
}

/// Produces every message and waits for all to be acknowledged (panics on a failed one).
pub fn produce(brokers: &str, topic: &str, messages: &[KeyValue]) {
    let producer: BaseProducer<DeliveryErrors> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Tests produce messages past librdkafka's 1 MB default on purpose.
        .set("message.max.bytes", "67108864")
        .create_with_context(DeliveryErrors::default())
        .unwrap();
    for (key, value) in messages {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = value {
            record = record.payload(v.as_slice());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let errors = producer.context().0.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} not delivered: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// Reads `topic` from the beginning until `done` says enough or `timeout` passes.
pub fn consume_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while Instant::now() < deadline && !done(&records) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), text(x.value).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                key: text(m.key()),
                value: text(m.payload()),
                headers,
            });
        }
    }
    records
}

/// Creates `topic` with `partitions` partitions (the test broker does not auto-create).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]);
}

/// [`create_topic`] with topic configs, e.g. `("max.message.bytes", "16777216")`.
pub fn create_topic_with(brokers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[configs.iter().fold(
                NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for result in results {
        if let Err((name, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {name}"
            );
        }
    }
}

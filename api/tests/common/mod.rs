//! Test support: boots the real `examflow` binary on port 0, issues tokens, finds or
//! starts a Kafka-compatible broker, and reads topics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod kafka;
pub mod lake;
pub mod mongo;
pub mod psql;
pub mod s3;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn sample_banks() -> PathBuf {
    repo_root().join("data/question_banks")
}

pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/fixtures");
    if dir.exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} not found (shared fixtures are not beside this clone)",
            dir.display()
        );
        None
    }
}

/// A running `examflow serve` child process.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
}

pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub banks: PathBuf,
    pub kafka_brokers: Option<String>,
    pub config_file: Option<PathBuf>,
    pub extra_env: Vec<(String, String)>,
}

impl ServerOptions {
    pub fn new(data_dir: &Path) -> Self {
        ServerOptions {
            data_dir: data_dir.to_path_buf(),
            banks: sample_banks(),
            kafka_brokers: None,
            config_file: None,
            extra_env: vec![],
        }
    }
}

impl Server {
    pub fn start(options: ServerOptions) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_examflow"));
        if let Some(config) = &options.config_file {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&options.data_dir)
            .arg("--banks")
            .arg(&options.banks);
        if let Some(b) = &options.kafka_brokers {
            cmd.arg("--kafka-brokers").arg(b);
        }
        for (k, v) in &options.extra_env {
            cmd.env(k, v);
        }
        std::fs::create_dir_all(&options.data_dir).unwrap();
        let log = std::fs::File::create(options.data_dir.join("server.log")).unwrap();
        cmd.env_remove("EXAMFLOW_KAFKA_BROKERS")
            .env_remove("EXAMFLOW_MONGODB_URI")
            .env_remove("EXAMFLOW_LOG")
            .current_dir(&options.data_dir)
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("starting examflow");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep draining stdout so the server never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = line
            .trim()
            .strip_prefix("examflow listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(options.data_dir.join("server.log"))
                    .unwrap_or_default();
                panic!("server did not start: {line:?}\n{log}")
            })
            .to_string();
        Server {
            child,
            base,
            data_dir: options.data_dir,
            client: reqwest::Client::new(),
        }
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, email: &str, role: &str) -> String {
        token(&self.data_dir, email, role)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A GET whose body is text (CSV, HTML).
    pub async fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Submits the sample `world-geography` exam's answer key `count` times as `token`,
    /// asserting each is accepted (201); returns the accepted documents.
    pub async fn submit_answer_key(&self, token: &str, count: usize) -> Vec<Value> {
        let key = answer_key(&sample_banks(), "world-geography");
        let mut accepted = Vec::new();
        for _ in 0..count {
            let (status, doc) = self
                .post(
                    "/api/exams/world-geography/submissions",
                    Some(token),
                    &serde_json::json!({ "answers": key }),
                )
                .await;
            assert_eq!(status, 201, "{} said {doc}", self.base);
            accepted.push(doc);
        }
        accepted
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn token(data_dir: &Path, email: &str, role: &str) -> String {
    token_with_ttl(data_dir, email, role, 8 * 3600)
}

/// A token that expires `ttl_secs` from now.
pub fn token_with_ttl(data_dir: &Path, email: &str, role: &str, ttl_secs: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_examflow"))
        .args(["token", "--email", email, "--role", role, "--data-dir"])
        .arg(data_dir)
        .args(["--ttl-secs", &ttl_secs.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bank of `n` questions whose right option is "right" (topics alternating "even" and
/// "odd"), written to `dir/<exam>.json`; `question(i)` is the text of question `i`.
pub fn write_bank(dir: &Path, exam: &str, n: usize, question: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    let questions: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "question": question(i),
                "options": ["right", "wrong", "also wrong", "not this"],
                "correct_answer": "right",
                "topic": if i % 2 == 0 { "even" } else { "odd" },
            })
        })
        .collect();
    std::fs::write(
        dir.join(format!("{exam}.json")),
        Value::Array(questions).to_string(),
    )
    .unwrap();
}

/// The correct answers of a sample bank, read from its file.
pub fn answer_key(banks: &Path, exam: &str) -> Vec<String> {
    let text = std::fs::read_to_string(banks.join(format!("{exam}.json"))).unwrap();
    let bank: Vec<Value> = serde_json::from_str(&text).unwrap();
    bank.iter()
        .map(|q| q["correct_answer"].as_str().unwrap().to_string())
        .collect()
}

/// A wrong option for each question.
pub fn wrong_answers(banks: &Path, exam: &str) -> Vec<String> {
    let text = std::fs::read_to_string(banks.join(format!("{exam}.json"))).unwrap();
    let bank: Vec<Value> = serde_json::from_str(&text).unwrap();
    bank.iter()
        .map(|q| {
            let correct = q["correct_answer"].as_str().unwrap();
            q["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap())
                .find(|o| *o != correct)
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn unique(prefix: &str) -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{prefix}-{}-{n}", std::process::id())
}

//! MongoDB test support: the server named by `EXAMFLOW_TEST_MONGODB_URI` (scripts/test-all
//! starts one with scripts/mongo-server), a database of each test's own, the real
//! `examflow serve --mongodb-uri` on it, a driver client to read what was stored, and
//! MongoDB servers of a test's own (to kill or to run standalone) through
//! `EXAMFLOW_TEST_MONGO_SERVER` (the path of scripts/mongo-server).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use super::Server;

pub const URI_VAR: &str = "EXAMFLOW_TEST_MONGODB_URI";
pub const SERVER_VAR: &str = "EXAMFLOW_TEST_MONGO_SERVER";
pub const STANDALONE_URI_VAR: &str = "EXAMFLOW_TEST_MONGODB_STANDALONE_URI";

/// The shared test server's URI, or `None` after a loud note that `test` is skipped.
pub fn test_uri(test: &str) -> Option<String> {
    match std::env::var(URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => Some(uri.trim().to_string()),
        _ => {
            eprintln!(
                "\n*** SKIPPED: MongoDB test {test}: {URI_VAR} is not set (run scripts/test-all, \
                 or start a server with scripts/mongo-server start DIR and export its URI) ***\n"
            );
            None
        }
    }
}

/// A standalone server (no transactions): `EXAMFLOW_TEST_MONGODB_STANDALONE_URI`, else one
/// of this test's own (kept running while the returned guard lives), else `None` after a
/// loud note.
pub fn standalone_uri(test: &str) -> Option<(String, Option<OwnMongo>)> {
    match std::env::var(STANDALONE_URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => Some((uri.trim().to_string(), None)),
        _ => OwnMongo::start(test, &["--standalone"]).map(|own| (own.uri.clone(), Some(own))),
    }
}

/// A database name of this test and process only (MongoDB allows 63 bytes).
pub fn database_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    format!(
        "ef_{tag}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How to boot `examflow serve` on MongoDB.
pub struct MongoServe {
    pub uri: String,
    pub database: String,
    pub data_dir: PathBuf,
    pub banks: PathBuf,
    /// More TOML after `[storage] mongodb_database` (tables other than `[storage]`).
    pub config: String,
}

impl MongoServe {
    pub fn new(uri: &str, database: &str, data_dir: &Path) -> Self {
        MongoServe {
            uri: uri.to_string(),
            database: database.to_string(),
            data_dir: data_dir.to_path_buf(),
            banks: super::sample_banks(),
            config: String::new(),
        }
    }

    /// Starts the real binary on port 0 with `--mongodb-uri` and a config file naming the
    /// database; its log is appended to `<data_dir>/server.log`.
    pub fn start(&self) -> Server {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let config = self.data_dir.join("examflow-mongo-test.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\nmongodb_database = \"{}\"\n{}",
                self.database, self.config
            ),
        )
        .unwrap();
        let log_path = self.data_dir.join("server.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        writeln!(log, "--- examflow serve --mongodb-uri {} ---", self.uri).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_examflow"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--banks")
            .arg(&self.banks)
            .arg("--mongodb-uri")
            .arg(&self.uri)
            .env_remove("EXAMFLOW_KAFKA_BROKERS")
            .env_remove("EXAMFLOW_MONGODB_URI")
            .env_remove("EXAMFLOW_LOG")
            .current_dir(&self.data_dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting examflow");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let Some(base) = line.trim().strip_prefix("examflow listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "examflow serve on MongoDB did not start: {line:?}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        };
        Server {
            child,
            base: base.to_string(),
            data_dir: self.data_dir.clone(),
            client: reqwest::Client::new(),
        }
    }
}

/// A driver client of `uri`.
pub async fn client(uri: &str) -> mongodb::Client {
    mongodb::Client::with_uri_str(uri)
        .await
        .expect("connecting to MongoDB")
}

/// Every document of `db.collection` matching `filter`, in `_id` order.
pub async fn find_all(
    client: &mongodb::Client,
    db: &str,
    collection: &str,
    filter: Document,
) -> Vec<Document> {
    client
        .database(db)
        .collection::<Document>(collection)
        .find(filter)
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Drops a test's database (at the end of a passing test; a failing one leaves it to look at).
pub async fn drop_database(client: &mongodb::Client, db: &str) {
    client.database(db).drop().await.unwrap();
}

/// A MongoDB server of one test's own (scripts/mongo-server in a temporary directory),
/// stopped when dropped.
pub struct OwnMongo {
    pub dir: tempfile::TempDir,
    pub uri: String,
    pub port: u16,
    script: PathBuf,
    args: Vec<String>,
}

impl OwnMongo {
    /// Starts one with extra server flags (e.g. `--standalone`), or `None` after a loud
    /// note when `EXAMFLOW_TEST_MONGO_SERVER` is not set.
    pub fn start(test: &str, args: &[&str]) -> Option<OwnMongo> {
        let Ok(script) = std::env::var(SERVER_VAR) else {
            eprintln!(
                "\n*** SKIPPED: MongoDB test {test}: {SERVER_VAR} is not set (the path of \
                 scripts/mongo-server; scripts/test-all sets it) ***\n"
            );
            return None;
        };
        let mut own = OwnMongo {
            dir: tempfile::tempdir().unwrap(),
            uri: String::new(),
            port: 0,
            script: PathBuf::from(script),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        own.run_start(None);
        Some(own)
    }

    fn run_start(&mut self, port: Option<u16>) {
        let mut cmd = Command::new(&self.script);
        cmd.arg("start").arg(self.dir.path());
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        let out = cmd
            .arg("--")
            .args(&self.args)
            .env_remove("EXAMFLOW_MONGO_SERVER_ARGS")
            .output()
            .expect("running scripts/mongo-server");
        assert!(
            out.status.success(),
            "scripts/mongo-server start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.uri = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.port = self.uri.rsplit(':').next().unwrap().parse().unwrap();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("server.pid")).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        // Wait until it is gone, so a restart can take the port.
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::fs::remove_file(self.dir.path().join("server.pid")).unwrap();
    }

    /// Starts it again on the same data and port (the URI stays the same).
    pub fn restart(&mut self) {
        let port = self.port;
        self.run_start(Some(port));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// An integer field, whatever BSON integer type holds it.
pub fn int(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int32(i)) => i64::from(*i),
        Some(Bson::Int64(i)) => *i,
        other => panic!("{key} is not an integer: {other:?} in {doc:?}"),
    }
}

/// A bank of `n` questions named after `exam`, whose right option is "right".
pub fn write_bank(dir: &Path, exam: &str, n: usize) {
    super::write_bank(dir, exam, n, |i| {
        format!("{exam} question {i}: which option is right?")
    });
}

//! The real `psql` client against the server's PostgreSQL interface (`[pgwire] listen`).
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Server;

pub fn psql_available() -> bool {
    let found = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIPPED: the `psql` client is not installed (apt-get install postgresql-client)"
        );
    }
    found
}

pub fn psql_command(port: u16, user: &str, password: &str) -> Command {
    let mut cmd = Command::new("psql");
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(["-d", "examflow"]);
    cmd
}

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `psql` with `args` (e.g. `-c SQL`), at most a minute.
pub fn psql(port: u16, user: &str, password: &str, args: &[&str]) -> Output {
    let mut child = psql_command(port, user, password)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running psql");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("psql {args:?} ran longer than a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn query(port: u16, user: &str, password: &str, sql: &str) -> String {
    let out = psql(port, user, password, &["-c", sql]);
    assert!(out.success, "{sql}: {}", out.stderr);
    out.stdout.trim().to_string()
}

/// The port of `pgwire listening on 127.0.0.1:PORT` in the server's log.
pub fn pgwire_port(server: &Server) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(port) = log
            .lines()
            .find_map(|l| l.split("pgwire listening on ").nth(1))
            .and_then(|addr| addr.trim().rsplit(':').next()?.parse().ok())
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no pgwire line in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

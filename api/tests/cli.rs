//! The command line as a user meets it.

mod common;

use std::process::Command;

fn examflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_examflow"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = examflow(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "token", "--config"] {
        assert!(text.contains(word), "{text}");
    }
    let out = examflow(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--banks",
        "--kafka-brokers",
        "--mongodb-uri",
    ] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn token_rejects_unknown_roles_and_bad_emails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = examflow(&[
        "token",
        "--email",
        "a@b.c",
        "--role",
        "root",
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    let out = examflow(&["token", "--email", "nobody", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid email"));
    let a = common::token(dir.path(), "a@b.c", "educator");
    assert_eq!(a.split('.').count(), 3);
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("examflow.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nbanks_dir = 7\n",
    )
    .unwrap();
    let out = examflow(&["--config", file.to_str().unwrap(), "serve"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("examflow.toml:4:"), "{err}");
}

//! Making a local Delta commit durable, and opening a table whose last commit was torn.
//!
//! object_store writes a log entry to a staging file and hard-links it into `_delta_log`,
//! without fsync; a power loss can then leave the newest entries empty, cut short or
//! zero-filled, and the table would not open. The ingest fsyncs the data files (and their
//! directory) before the commit that names them and the entry (with any checkpoint and the
//! directory) after, so only an entry whose commit had not returned can be torn; on opening,
//! such trailing entries are set aside in `_torn_log/` and the table opens at the last good
//! version, whose transaction actions say where ingest resumes.
//!
//! An entry cut exactly at a line boundary would still parse: examflow's commits record
//! their number of actions in `commitInfo` (`examflowActions`, the first line), so a short
//! one is recognised too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// fsyncs a file or directory. Replaceable in tests, to inject failures.
pub type Syncer = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// The real fsync.
pub fn fsync() -> Syncer {
    Arc::new(|path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all()))
}

/// Key in `commitInfo` holding the number of action lines that follow it.
pub const ACTIONS_KEY: &str = "examflowActions";

/// Where trailing torn entries go (a `_` directory: Delta readers and vacuum skip it).
pub const TORN_DIR: &str = "_torn_log";

fn log_version(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn checkpoint_version(name: &str) -> Option<u64> {
    let (digits, rest) = name.split_once('.')?;
    (digits.len() == 20 && rest.starts_with("checkpoint") && rest.ends_with(".parquet"))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Whether a log entry is whole: every line is a JSON object, and when its `commitInfo`
/// counts its actions, that many follow.
pub fn entry_is_whole(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return false;
    }
    let mut expected = None;
    for (i, line) in lines.iter().enumerate() {
        let Ok(serde_json::Value::Object(action)) = serde_json::from_str(line) else {
            return false;
        };
        if i == 0 {
            expected = action
                .get("commitInfo")
                .and_then(|c| c.get(ACTIONS_KEY))
                .and_then(serde_json::Value::as_u64);
        }
    }
    expected.is_none_or(|n| lines.len() as u64 == n + 1)
}

/// Moves the trailing log entries of the table at `dir` that are not whole (and checkpoints
/// from their versions on, and a `_last_checkpoint` that points past the last good version)
/// into `_torn_log/`; returns the versions set aside, newest first.
pub fn set_aside_torn_entries(dir: &Path) -> std::io::Result<Vec<u64>> {
    let log = dir.join("_delta_log");
    let Ok(entries) = std::fs::read_dir(&log) else {
        return Ok(Vec::new());
    };
    let mut versions: Vec<u64> = Vec::new();
    let mut checkpoints: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(v) = log_version(&name) {
            versions.push(v);
        } else if let Some(v) = checkpoint_version(&name) {
            checkpoints.push((v, entry.path()));
        }
    }
    versions.sort_unstable_by(|a, b| b.cmp(a));
    let mut torn = Vec::new();
    for version in versions {
        let path = log.join(format!("{version:020}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if entry_is_whole(&bytes) {
            break;
        }
        move_aside(dir, &path)?;
        torn.push(version);
    }
    if let Some(&oldest_torn) = torn.last() {
        for (version, path) in checkpoints {
            if version >= oldest_torn {
                move_aside(dir, &path)?;
            }
        }
        let last = log.join("_last_checkpoint");
        let points_past = std::fs::read(&last)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64))
            .is_none_or(|v| v >= oldest_torn);
        if last.exists() && points_past {
            move_aside(dir, &last)?;
        }
        fsync()(&log)?;
    }
    Ok(torn)
}

fn move_aside(dir: &Path, path: &Path) -> std::io::Result<()> {
    let aside = dir.join(TORN_DIR);
    std::fs::create_dir_all(&aside)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f");
    match std::fs::rename(path, aside.join(format!("{name}.{stamp}"))) {
        // Another process opening the table moved it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// fsyncs what a commit of `version` wrote to the log: the entry, its checkpoint and
/// `_last_checkpoint` when the commit made them, then the directory.
pub fn sync_log(dir: &Path, version: u64, sync: &Syncer) -> std::io::Result<()> {
    let log = dir.join("_delta_log");
    sync(&log.join(format!("{version:020}.json")))?;
    let checkpoint = log.join(format!("{version:020}.checkpoint.parquet"));
    if checkpoint.exists() {
        sync(&checkpoint)?;
        let last = log.join("_last_checkpoint");
        if last.exists() {
            sync(&last)?;
        }
    }
    sync(&log)
}

/// fsyncs data files (paths relative to the table at `dir`) and each directory holding them.
pub fn sync_data(dir: &Path, files: &[&str], sync: &Syncer) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = dir.join(file);
        sync(&path)?;
        if let Some(parent) = path.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    for d in dirs {
        sync(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_entries_parse_and_count_their_actions() {
        let info = format!("{{\"commitInfo\":{{\"{ACTIONS_KEY}\":2}}}}");
        let whole = format!("{info}\n{{\"add\":{{}}}}\n{{\"txn\":{{}}}}");
        assert!(entry_is_whole(whole.as_bytes()));
        // Cut inside a line, at a line boundary, zero-filled, empty.
        assert!(!entry_is_whole(&whole.as_bytes()[..whole.len() - 3]));
        assert!(!entry_is_whole(
            format!("{info}\n{{\"add\":{{}}}}").as_bytes()
        ));
        let mut zeros = whole.as_bytes()[..40].to_vec();
        zeros.extend([0u8; 64]);
        assert!(!entry_is_whole(&zeros));
        assert!(!entry_is_whole(b""));
        // Entries of other writers carry no count: any whole JSON lines will do.
        assert!(entry_is_whole(b"{\"commitInfo\":{}}\n{\"add\":{}}"));
    }

    #[test]
    fn trailing_torn_entries_and_their_checkpoints_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let good = "{\"commitInfo\":{}}\n{\"add\":{}}";
        for v in 0..3u64 {
            std::fs::write(log.join(format!("{v:020}.json")), good).unwrap();
        }
        std::fs::write(log.join(format!("{:020}.json", 3)), &good[..10]).unwrap();
        std::fs::write(log.join(format!("{:020}.json", 4)), b"").unwrap();
        std::fs::write(log.join(format!("{:020}.checkpoint.parquet", 3)), b"x").unwrap();
        std::fs::write(log.join("_last_checkpoint"), "{\"version\":3,\"size\":1}").unwrap();
        assert_eq!(set_aside_torn_entries(dir.path()).unwrap(), vec![4, 3]);
        let mut left: Vec<String> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            (0..3u64)
                .map(|v| format!("{v:020}.json"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join(TORN_DIR))
                .unwrap()
                .count(),
            4
        );
        // Nothing more to do the second time.
        assert!(set_aside_torn_entries(dir.path()).unwrap().is_empty());
    }
}

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
//! their number of actions in `commitInfo` (`examflowActions`, the first line), and
//! compaction's entries theirs in `operationMetrics`, so a short one is recognised too.
//! Compaction (delta-rs's optimize) commits before housekeeping can fsync its files, so a
//! trailing entry whose added files are missing or short is set aside as well (it changed
//! no rows; the files it replaced are still there, vacuum runs only after the fsync).

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
                .and_then(serde_json::Value::as_u64)
                .or_else(|| optimize_actions(&action));
        }
    }
    expected.is_none_or(|n| lines.len() as u64 == n + 1)
}

/// The number of actions an `OPTIMIZE` entry of delta-rs holds (files added plus files
/// removed, from its `commitInfo.operationMetrics`); None for other entries.
fn optimize_actions(first: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    let info = first.get("commitInfo")?;
    if info.get("operation")?.as_str()? != "OPTIMIZE" {
        return None;
    }
    let metrics = info.get("operationMetrics")?;
    let count = |key: &str| metrics.get(key).and_then(serde_json::Value::as_u64);
    Some(count("numFilesAdded")? + count("numFilesRemoved")?)
}

/// The data files a log entry adds, as paths relative to the table (percent-decoded);
/// files named by absolute URI (elsewhere) are left out.
pub fn added_files(bytes: &[u8]) -> Vec<String> {
    added_files_with_sizes(bytes)
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

fn added_files_with_sizes(bytes: &[u8]) -> Vec<(String, Option<u64>)> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|action| {
            let add = action.get("add")?;
            let path = add.get("path")?.as_str()?;
            if path.contains("://") || path.starts_with('/') {
                return None;
            }
            let size = add.get("size").and_then(serde_json::Value::as_u64);
            Some((percent_decode(path), size))
        })
        .collect()
}

/// `%XX` escapes decoded (Delta's paths are relative URIs); a path that does not decode to
/// UTF-8 is kept as it is.
fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_or_else(|_| path.to_string(), String::from)
}

/// Whether every data file a log entry of the table at `dir` adds is on disk at its full
/// size. Compaction commits before its files are fsynced; after a power loss its entry can
/// name files that are missing or short.
fn added_files_present(dir: &Path, bytes: &[u8]) -> bool {
    added_files_with_sizes(bytes).iter().all(|(path, size)| {
        std::fs::metadata(dir.join(path))
            .is_ok_and(|m| m.is_file() && size.is_none_or(|size| m.len() == size))
    })
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
        if entry_is_whole(&bytes) && added_files_present(dir, &bytes) {
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

/// A syncer for tests: records every path it is given and fails those `fails` picks.
#[cfg(test)]
pub(crate) fn test_syncer(
    fails: impl Fn(&Path) -> bool + Send + Sync + 'static,
) -> (Syncer, Arc<std::sync::Mutex<Vec<PathBuf>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let real = fsync();
    let sync: Syncer = Arc::new(move |path: &Path| {
        log.lock().unwrap().push(path.to_path_buf());
        if fails(path) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        real(path)
    });
    (sync, seen)
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
    fn compaction_entries_are_counted_by_their_metrics() {
        let info = r#"{"commitInfo":{"operation":"OPTIMIZE","operationMetrics":{"numFilesAdded":1,"numFilesRemoved":2}}}"#;
        let whole = format!(
            "{info}\n{{\"remove\":{{\"path\":\"a\"}}}}\n{{\"remove\":{{\"path\":\"b\"}}}}\n{{\"add\":{{\"path\":\"c\"}}}}"
        );
        assert!(entry_is_whole(whole.as_bytes()));
        let cut = whole.rsplit_once('\n').unwrap().0;
        assert!(!entry_is_whole(cut.as_bytes()), "cut at a line boundary");
    }

    #[test]
    fn added_files_are_relative_paths_decoded() {
        let entry = concat!(
            r#"{"commitInfo":{}}"#,
            "\n",
            r#"{"add":{"path":"part-1.parquet","size":10}}"#,
            "\n",
            r#"{"add":{"path":"year%3D2026/part%202.parquet","size":3}}"#,
            "\n",
            r#"{"add":{"path":"s3://bucket/elsewhere.parquet","size":3}}"#,
            "\n",
            r#"{"remove":{"path":"old.parquet"}}"#,
        );
        assert_eq!(
            added_files(entry.as_bytes()),
            vec!["part-1.parquet", "year=2026/part 2.parquet"]
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-1.parquet"), [0u8; 10]).unwrap();
        std::fs::create_dir(dir.path().join("year=2026")).unwrap();
        std::fs::write(dir.path().join("year=2026/part 2.parquet"), b"abc").unwrap();
        assert!(added_files_present(dir.path(), entry.as_bytes()));
        std::fs::write(dir.path().join("part-1.parquet"), [0u8; 4]).unwrap();
        assert!(!added_files_present(dir.path(), entry.as_bytes()), "short");
        std::fs::remove_file(dir.path().join("part-1.parquet")).unwrap();
        assert!(
            !added_files_present(dir.path(), entry.as_bytes()),
            "missing"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
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

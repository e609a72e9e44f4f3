//! The real attempt records of `shared/fixtures` for tests (here and, by path, in
//! examflow-ingest's Arrow tests).

use std::path::PathBuf;

use serde_json::Value;

/// `shared/fixtures/assessment-attempts`, found beside the workspace (`../shared` from the
/// workspace root), or `None` when this checkout has no shared folder.
pub fn fixtures_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .take(4)
        .map(|dir| dir.join("shared/fixtures/assessment-attempts"))
        .find(|dir| dir.is_dir())
}

/// The 5 real records, one payload each (re-serialised from the fixture's JSON array).
pub fn fixture_payloads() -> Option<Vec<Vec<u8>>> {
    let Some(dir) = fixtures_dir() else {
        eprintln!("SKIPPED: shared/fixtures/assessment-attempts not found beside the workspace");
        return None;
    };
    let text = std::fs::read(dir.join("assessment-attempts-sample5.json")).unwrap();
    let records: Vec<Value> = serde_json::from_slice(&text).unwrap();
    assert_eq!(records.len(), 5);
    Some(
        records
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect(),
    )
}

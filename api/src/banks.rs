//! Loading the question-bank directory: every `*.json` file is one exam named by its stem.
//! A bad bank is reported (log and admin listing) and never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use examflow_engine::Bank;
use examflow_engine::bank::MAX_BANK_BYTES;
use serde::Serialize;

/// A bank that could not be loaded, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BankLoadError {
    pub file: String,
    pub error: String,
}

/// The exams being served.
#[derive(Debug, Default)]
pub struct BankRegistry {
    pub dir: PathBuf,
    pub exams: BTreeMap<String, Arc<Bank>>,
    pub errors: Vec<BankLoadError>,
}

impl BankRegistry {
    /// Loads every `*.json` file of `dir`. A missing or unreadable directory is itself
    /// reported as an error entry (the server still starts, with no exams).
    pub fn load(dir: &Path) -> BankRegistry {
        let mut registry = BankRegistry {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                registry.errors.push(BankLoadError {
                    file: dir.display().to_string(),
                    error: format!("cannot read the bank directory: {e}"),
                });
                return registry;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("json"))
            })
            .collect();
        files.sort();
        for path in files {
            let shown = path.display().to_string();
            let exam = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = read_bank_file(&path)
                .and_then(|bytes| Bank::parse(&exam, &shown, &bytes).map_err(|e| e.to_string()));
            match result {
                Ok(bank) => {
                    tracing::info!(exam = %bank.name, questions = bank.items.len(), "loaded bank");
                    registry.exams.insert(bank.name.clone(), Arc::new(bank));
                }
                Err(error) => {
                    tracing::warn!(file = %shown, %error, "bank rejected");
                    registry.errors.push(BankLoadError { file: shown, error });
                }
            }
        }
        registry
    }

    pub fn get(&self, exam: &str) -> Option<&Arc<Bank>> {
        self.exams.get(exam)
    }
}

fn read_bank_file(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_BANK_BYTES as u64 {
        return Err(format!(
            "{}: file is {len} bytes, larger than the limit of {MAX_BANK_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bad_bank_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.json"),
            r#"[{"question": "q", "options": ["a", "b"], "correct_answer": "a"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.json"),
            r#"[{"question": "q", "options": ["a", "b"], "correct_answer": "a"}, {"question": "q2", "options": ["a"], "correct_answer": "a"}]"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let registry = BankRegistry::load(dir.path());
        assert_eq!(registry.exams.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(registry.errors.len(), 1);
        assert!(registry.errors[0].file.ends_with("bad.json"));
        assert!(
            registry.errors[0].error.contains("question 1"),
            "{:?}",
            registry.errors
        );
    }

    #[test]
    fn missing_directory_is_reported() {
        let registry = BankRegistry::load(Path::new("/nonexistent/banks"));
        assert!(registry.exams.is_empty());
        assert_eq!(registry.errors.len(), 1);
    }

    #[test]
    fn conformance_with_real_banks() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/question-banks");
        if !dir.exists() {
            eprintln!(
                "SKIPPED: {} not found (shared fixtures are not beside this clone)",
                dir.display()
            );
            return;
        }
        let registry = BankRegistry::load(&dir);
        assert!(registry.errors.is_empty(), "{:?}", registry.errors);
        assert!(registry.exams.len() >= 4, "{:?}", registry.exams.keys());
        for bank in registry.exams.values() {
            let ids: std::collections::HashSet<_> = bank.items.iter().map(|i| &i.id).collect();
            assert_eq!(
                ids.len(),
                bank.items.len(),
                "ids must be unique in {}",
                bank.name
            );
        }
    }
}

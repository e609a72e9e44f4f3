//! The roster: which group each student belongs to (campus, language, cohort …), for the
//! bias checks (DIF) and the report's group filter. `examflow roster import roster.csv`
//! reads a CSV whose header has `email` and any group columns, and keeps it in the store
//! (the embedded one, or MongoDB when configured), where SQL reads it as table `roster`.
//!
//! Rules: the header's names are trimmed and lower-cased; `email` must be one of them; every
//! other is a group column named like a SQL identifier (`[a-z_][a-z0-9_]*`, at most 63
//! characters). Each row gives one student: the email (trimmed, lower-cased, validated),
//! then the groups; an empty cell means no group in that column. A student listed twice is
//! an error. Importing adds students and updates those already on the roster (their groups
//! in the file's columns are replaced, other columns kept); `--replace` starts over.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use examflow_ingest::store::{MongoStore, RosterEntry, SessionStore, SqliteStore};

use crate::calibrate_cmd::read_input;
use crate::error::ApiError;

/// Longest group column name (PostgreSQL's identifier limit).
const MAX_COLUMN_NAME: usize = 63;

#[derive(clap::Args)]
pub struct RosterArgs {
    #[command(subcommand)]
    pub action: RosterAction,
}

#[derive(clap::Subcommand)]
pub enum RosterAction {
    /// Add or update students from a CSV (header: `email` and group columns).
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The roster CSV.
    pub file: PathBuf,
    /// Empty the roster first (else students are added or updated).
    #[arg(long)]
    pub replace: bool,
    /// Data directory of the embedded store [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MongoDB connection string: the roster goes where the server keeps its data.
    #[arg(long, env = "EXAMFLOW_MONGODB_URI")]
    pub mongodb_uri: Option<String>,
}

fn at(path: &Path, line: u64, column: usize, message: impl Into<String>) -> ApiError {
    ApiError::Input {
        path: path.to_path_buf(),
        line,
        column,
        message: message.into(),
    }
}

/// A roster file's group columns and students (see the module docs for the rules).
pub fn parse_roster(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<String>, Vec<RosterEntry>), ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            return Err(at(
                path,
                1,
                1,
                "the file is empty (expected a header with email)",
            ));
        }
        Some(Err(e)) => {
            return Err(at(
                path,
                e.position().map_or(1, |p| p.line()),
                1,
                e.to_string(),
            ));
        }
        Some(Ok(h)) => h,
    };
    let mut names = Vec::with_capacity(header.len());
    for (i, field) in header.iter().enumerate() {
        let name = std::str::from_utf8(field)
            .map_err(|_| at(path, 1, i + 1, "the header is not valid UTF-8"))?
            .trim_start_matches('\u{feff}')
            .trim()
            .to_lowercase();
        if names.contains(&name) {
            return Err(at(path, 1, i + 1, format!("column {name:?} appears twice")));
        }
        names.push(name);
    }
    let Some(email_at) = names.iter().position(|n| n == "email") else {
        return Err(at(
            path,
            1,
            1,
            format!(
                "the header has no email column (found: {})",
                names.join(", ")
            ),
        ));
    };
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= MAX_COLUMN_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if i != email_at && !valid {
            return Err(at(
                path,
                1,
                i + 1,
                format!(
                    "group column {name:?} must be a name of letters, digits and _ (not starting \
                     with a digit, at most {MAX_COLUMN_NAME} characters), as SQL reads it"
                ),
            ));
        }
    }
    if names.len() < 2 {
        return Err(at(
            path,
            1,
            1,
            "the header has no group column besides email",
        ));
    }
    let columns: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != email_at)
        .map(|(_, n)| n.clone())
        .collect();
    let mut entries = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in records {
        let record =
            record.map_err(|e| at(path, e.position().map_or(0, |p| p.line()), 1, e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim_ascii().is_empty()) {
            continue; // a blank line
        }
        if record.len() != names.len() {
            return Err(at(
                path,
                line,
                record.len().min(names.len()) + 1,
                format!(
                    "expected {} fields as in the header, found {}",
                    names.len(),
                    record.len()
                ),
            ));
        }
        let mut groups = BTreeMap::new();
        let mut email = String::new();
        for (i, field) in record.iter().enumerate() {
            let value = std::str::from_utf8(field)
                .map_err(|_| at(path, line, i + 1, "not valid UTF-8"))?
                .trim();
            if i == email_at {
                email = value.to_lowercase();
                crate::auth::validate_email(&email).map_err(|m| at(path, line, i + 1, m))?;
            } else if !value.is_empty() {
                groups.insert(names[i].clone(), value.to_string());
            }
        }
        if let Some(first) = seen.insert(email.clone(), line) {
            return Err(at(
                path,
                line,
                email_at + 1,
                format!("{email} is listed twice (also on line {first})"),
            ));
        }
        entries.push(RosterEntry { email, groups });
    }
    Ok((columns, entries))
}

/// `examflow roster import`: prints what changed.
pub async fn run(mut config: crate::config::Config, args: RosterArgs) -> anyhow::Result<String> {
    let RosterAction::Import(args) = args.action;
    if let Some(v) = args.data_dir {
        config.storage.data_dir = v;
    }
    if let Some(v) = args.mongodb_uri {
        config.storage.mongodb_uri = Some(v);
    }
    let (columns, entries) = parse_roster(&args.file, &read_input(&args.file)?)?;
    let store: Arc<dyn SessionStore> = match &config.storage.mongodb_uri {
        Some(uri) => Arc::new(
            MongoStore::connect(uri, Some(&config.storage.mongodb_database))
                .await
                .context("connecting to MongoDB")?,
        ),
        None => {
            std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
                format!("creating data dir {}", config.storage.data_dir.display())
            })?;
            Arc::new(SqliteStore::open(&config.storage.data_dir)?)
        }
    };
    let done = store
        .import_roster(columns.clone(), entries, args.replace)
        .await
        .context("storing the roster")?;
    let all = store.roster_columns().await?;
    Ok(format!(
        "imported {} student(s) from {}: {} added, {} updated; the roster has {} student(s) \
         in columns {}\n",
        done.added + done.updated,
        args.file.display(),
        done.added,
        done.updated,
        done.students,
        all.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Vec<String>, Vec<RosterEntry>), ApiError> {
        parse_roster(Path::new("roster.csv"), text.as_bytes())
    }

    fn place(e: ApiError) -> (u64, usize, String) {
        match e {
            ApiError::Input {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn reads_groups_in_any_column_order() {
        let (columns, entries) = parse(
            "\u{feff}Campus, Email ,language\nnorth, Ann@Example.com ,en\n\nsouth,bob@example.com,\n",
        )
        .unwrap();
        assert_eq!(columns, ["campus", "language"]);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].email, "ann@example.com");
        assert_eq!(entries[0].groups["campus"], "north");
        assert_eq!(entries[0].groups["language"], "en");
        assert_eq!(entries[1].groups.get("language"), None);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            ("", 1, 1, "empty"),
            ("campus,language\nnorth,en\n", 1, 1, "no email column"),
            ("email\na@b.c\n", 1, 1, "no group column"),
            ("email,campus,Campus\n", 1, 3, "twice"),
            ("email,campus site\n", 1, 2, "letters, digits"),
            ("email,1st\n", 1, 2, "letters, digits"),
            (
                "email,campus\na@b.c,north,extra\n",
                2,
                3,
                "expected 2 fields",
            ),
            (
                "email,campus\nnot-an-email,north\n",
                2,
                1,
                "not a valid email",
            ),
            (
                "email,campus\na@b.c,north\nA@B.C,south\n",
                3,
                1,
                "listed twice (also on line 2)",
            ),
        ];
        for (text, line, column, needle) in cases {
            let (l, c, m) = place(parse(text).unwrap_err());
            assert_eq!((l, c), (line, column), "{text:?}: {m}");
            assert!(m.contains(needle), "{text:?}: {m}");
        }
    }
}

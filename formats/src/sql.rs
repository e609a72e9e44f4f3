//! SQL from clients: the body of `POST /api/sql` and the statement gate of the PostgreSQL
//! wire protocol (which statements may run at all, which settings a client may `SET`).
//!
//! The gate works on `sqlparser`'s statements, the same crate and version DataFusion and
//! datafusion-postgres parse with, so the server passes their parsed statements straight in;
//! [`parse_statements`] parses text the way a pgwire connection does (PostgreSQL dialect).

use serde::Deserialize;
use sqlparser::ast::{ObjectName, ObjectNamePart, Set, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

/// The body of `POST /api/sql`: `{"sql": "..."}`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
}

impl SqlRequest {
    /// Reads a request body.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// Parses SQL text into statements with the PostgreSQL dialect, as a pgwire connection's
/// simple query does (its statements then go through [`check_statement`]).
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>, ParserError> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql)
}

/// What may run, in words, for error messages.
pub const ALLOWED: &str = "SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE, cursors over queries, BEGIN/COMMIT/ROLLBACK and SET of session settings";

/// SQLSTATE of a statement refused because the interface is read-only.
pub const READ_ONLY_SQLSTATE: &str = "25006";
/// SQLSTATE of a `SET` of a setting the server fixed (insufficient privilege).
pub const FIXED_SETTING_SQLSTATE: &str = "42501";

/// Where an allowed statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A query the server plans (and checks the plan of) itself.
    Plan,
    /// A session statement (SET, SHOW, transactions, cursors) answered by the protocol
    /// layer's own hooks.
    PassOn,
}

/// Why a statement may not run: a SQLSTATE and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLSTATE {code})")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The message of a statement refused because the interface is read-only.
pub fn read_only_message(message: impl std::fmt::Display) -> String {
    format!("examflow's PostgreSQL interface is read-only: {message}")
}

fn read_only(message: impl std::fmt::Display) -> Refusal {
    Refusal {
        code: READ_ONLY_SQLSTATE,
        message: read_only_message(message),
    }
}

/// What a statement is, in its first keyword(s), for error messages.
pub fn kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".to_string(),
    }
}

/// Session settings a client may `SET` (what psql, JDBC, psycopg, BI tools send). Every
/// other name, DataFusion's own (`datafusion.runtime.memory_limit`, spilling directories)
/// above all, would change what the server fixed, so it is refused.
pub const SESSION_SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lock_timeout",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "time.zone",
    "timezone",
    "transaction_isolation",
];

/// A setting's name as PostgreSQL compares it: identifier parts without their quotes,
/// case-folded, joined by dots (`"DataFusion"."Runtime".memory_limit` →
/// `datafusion.runtime.memory_limit`). A computed part cannot name an allowed setting.
pub fn setting_name(name: &ObjectName) -> Option<String> {
    let parts: Option<Vec<String>> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(ident.value.to_lowercase()),
            ObjectNamePart::Function(_) => None,
        })
        .collect();
    parts.map(|p| p.join("."))
}

/// Why a `SET` may not run, if it may not: a setting outside [`SESSION_SETTINGS`], a role
/// or session-authorization change.
pub fn refused_setting(set: &Set) -> Option<String> {
    let names: Vec<&ObjectName> = match set {
        Set::SingleAssignment { variable, .. } => vec![variable],
        Set::ParenthesizedAssignments { variables, .. } => variables.iter().collect(),
        Set::MultipleAssignments { assignments } => assignments.iter().map(|a| &a.name).collect(),
        Set::SetTimeZone { .. }
        | Set::SetNames { .. }
        | Set::SetNamesDefault {}
        | Set::SetTransaction { .. } => vec![],
        other => {
            return Some(format!(
                "{}: roles and session authorization are fixed at sign-in",
                kind(&Statement::Set(other.clone()))
            ));
        }
    };
    names.into_iter().find_map(|name| match setting_name(name) {
        Some(n) if SESSION_SETTINGS.contains(&n.as_str()) => None,
        _ => Some(format!(
            "SET {name}: fixed by the server; only session settings ({}) may be set",
            SESSION_SETTINGS.join(", ")
        )),
    })
}

/// `SET timezone = …` (DataFusion would change the shared session's time zone): the zone,
/// for the server to keep with the connection only.
pub fn time_zone_setting(statement: &Statement) -> Option<String> {
    let Statement::Set(Set::SingleAssignment {
        variable, values, ..
    }) = statement
    else {
        return None;
    };
    let name = variable.to_string().to_ascii_lowercase();
    if name != "timezone" && name != "time.zone" {
        return None;
    }
    let value = values.first()?.to_string();
    Some(value.trim_matches('\'').trim_matches('"').to_string())
}

/// Which statements may run at all: queries, and session statements; everything else is
/// refused with SQLSTATE 25006 (read-only), a `SET` of a setting the server fixed with 42501.
pub fn check_statement(statement: &Statement) -> Result<Gate, Refusal> {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(Gate::Plan),
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(_) => Ok(Gate::Plan),
            inner => Err(read_only(format!(
                "EXPLAIN {} is not allowed (only {ALLOWED})",
                kind(inner)
            ))),
        },
        Statement::Set(set) => match refused_setting(set) {
            Some(message) => Err(Refusal {
                code: FIXED_SETTING_SQLSTATE,
                message,
            }),
            None => Ok(Gate::PassOn),
        },
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Ok(Gate::PassOn),
        // The server checks the cursor's query when it plans it.
        Statement::Declare { .. } => Ok(Gate::PassOn),
        other => Err(read_only(format!(
            "{} is not allowed (only {ALLOWED})",
            kind(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        parse_statements(sql).unwrap().remove(0)
    }

    fn allowed(sql: &str) -> bool {
        check_statement(&statement(sql)).is_ok()
    }

    #[test]
    fn only_queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "VALUES (1)",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SET statement_timeout = 1000",
            "SET TIME ZONE 'UTC'",
            "BEGIN",
            "COMMIT",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "CLOSE c",
        ] {
            assert!(allowed(sql), "{sql}");
        }
        for sql in [
            "DROP TABLE attempts",
            "INSERT INTO attempts SELECT * FROM attempts",
            "DELETE FROM attempts",
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
            "COPY attempts TO '/tmp/x.csv'",
            "EXPLAIN DELETE FROM attempts",
            "PREPARE p AS SELECT 1",
        ] {
            let refusal = check_statement(&statement(sql)).unwrap_err();
            assert_eq!(refusal.code, READ_ONLY_SQLSTATE, "{sql}");
            assert!(refusal.message.contains("read-only"), "{sql}: {refusal}");
        }
    }

    #[test]
    fn only_session_settings_may_be_set_however_they_are_spelled() {
        for sql in [
            "SET statement_timeout = 1000",
            "SET LOCAL statement_timeout = 1000",
            "SET SESSION search_path TO public",
            "SET \"DateStyle\" = 'ISO, MDY'",
            "SET Application_Name = 'psql'",
            "SET extra_float_digits = 3",
            "SET TIME ZONE 'UTC'",
            "SET LOCAL TIME ZONE 'UTC'",
            "SET NAMES 'UTF8'",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET client_encoding TO 'UTF8'",
        ] {
            assert!(allowed(sql), "{sql}");
        }
        for sql in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET \"datafusion.runtime.memory_limit\" = '1T'",
            "SET \"DataFusion\".\"Runtime\".Memory_Limit = '1T'",
            "SET DATAFUSION.EXECUTION.BATCH_SIZE = 1",
            "SET LOCAL \"datafusion.runtime.memory_limit\" = '1T'",
            "SET SESSION datafusion.runtime.memory_limit = '1T'",
            "SET \"datafusion.runtime.temp_directory\" = '/tmp'",
            "SET datafusion.execution.target_partitions = 64",
            "SET work_mem = '64GB'",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION 'ops@example.edu'",
        ] {
            let refusal = check_statement(&statement(sql))
                .err()
                .unwrap_or_else(|| panic!("{sql} passed"));
            assert_eq!(refusal.code, FIXED_SETTING_SQLSTATE, "{sql}");
        }
    }

    #[test]
    fn time_zone_settings_stay_with_the_connection() {
        assert_eq!(
            time_zone_setting(&statement("SET timezone = 'Europe/Paris'")).as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(time_zone_setting(&statement("SET search_path = x")), None);
    }

    #[test]
    fn request_bodies_have_only_sql() {
        assert_eq!(
            SqlRequest::parse(br#"{"sql": "SELECT 1"}"#).unwrap().sql,
            "SELECT 1"
        );
        for body in [
            &br#"{"sql": "SELECT 1", "x": 1}"#[..],
            br#"{}"#,
            br#"{"sql": 1}"#,
            b"[]",
            b"\xff",
        ] {
            assert!(SqlRequest::parse(body).is_err());
        }
    }
}

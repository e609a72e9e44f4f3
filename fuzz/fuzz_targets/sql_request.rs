//! SQL from clients: bytes starting with `{` as a `POST /api/sql` body, anything else as
//! SQL text; the SQL is parsed as a pgwire connection parses it (PostgreSQL dialect) and
//! every statement goes through the statement gate.

#![no_main]

use examflow_formats::sql::{
    FIXED_SETTING_SQLSTATE, Gate, READ_ONLY_SQLSTATE, SqlRequest, check_statement, kind,
    parse_statements, time_zone_setting,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sql = if data.first() == Some(&b'{') {
        match SqlRequest::parse(data) {
            Ok(request) => request.sql,
            Err(_) => return,
        }
    } else {
        match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        }
    };
    let Ok(statements) = parse_statements(&sql) else {
        return;
    };
    for statement in &statements {
        let _ = time_zone_setting(statement);
        assert!(!kind(statement).is_empty());
        match check_statement(statement) {
            Ok(Gate::Plan | Gate::PassOn) => {}
            Err(refusal) => {
                assert!(
                    [READ_ONLY_SQLSTATE, FIXED_SETTING_SQLSTATE].contains(&refusal.code),
                    "{refusal}"
                );
                assert!(!refusal.message.is_empty());
            }
        }
    }
});

//! The roster as a user meets it: `examflow roster import`, then SQL table `roster` over
//! HTTP (educators see emails, analysts pseudonyms).

mod common;

use std::process::Command;

use common::{Server, ServerOptions};
use serde_json::json;

fn import(data: &std::path::Path, file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_examflow"))
        .args(["roster", "import", file.to_str().unwrap(), "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("EXAMFLOW_MONGODB_URI")
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_imported_roster_is_sql_table_roster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("roster.csv");
    std::fs::write(
        &file,
        "email,campus,language\nAnn@Example.com,north,en\nbob@example.com,south,\n",
    )
    .unwrap();
    let out = import(&data, &file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("2 added") && said.contains("campus, language"),
        "{said}"
    );
    // A second file updates Bob and adds a column; a bad one changes nothing.
    std::fs::write(&file, "email,cohort,campus\nbob@example.com,2026,east\n").unwrap();
    assert!(import(&data, &file, &[]).status.success());
    std::fs::write(
        &file,
        "email,campus\ncy@example.com,west\nnot an email,north\n",
    )
    .unwrap();
    let bad = import(&data, &file, &[]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("roster.csv:3:1"), "{err}");

    let server = Server::start(ServerOptions::new(&data));
    let educator = server.token("ed@example.com", "educator");
    let sql = json!({"sql": "SELECT email, campus, language, cohort FROM roster ORDER BY email"});
    let (status, body) = server.post("/api/sql", Some(&educator), &sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([
            {"email": "ann@example.com", "campus": "north", "language": "en"},
            {"email": "bob@example.com", "campus": "east", "cohort": "2026"}
        ]),
    );
    let analyst = server.token("al@example.com", "analyst");
    let (status, body) = server.post("/api/sql", Some(&analyst), &sql).await;
    assert_eq!(status, 200, "{body}");
    let emails: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect();
    assert!(emails.iter().all(|e| e.starts_with("s_")), "{emails:?}");
    // Filtering on the raw email finds nothing for analysts (it compares pseudonyms).
    let probe = json!({"sql": "SELECT count(*) AS n FROM roster WHERE email = 'ann@example.com'"});
    let (_, body) = server.post("/api/sql", Some(&analyst), &probe).await;
    assert_eq!(body, json!([{"n": 0}]));
    // --replace starts over.
    drop(server);
    std::fs::write(&file, "email,campus\ncy@example.com,west\n").unwrap();
    assert!(import(&data, &file, &["--replace"]).status.success());
    let server = Server::start(ServerOptions::new(&data));
    let educator = server.token("ed@example.com", "educator");
    let all = json!({"sql": "SELECT * FROM roster"});
    let (_, body) = server.post("/api/sql", Some(&educator), &all).await;
    assert_eq!(body, json!([{"email": "cy@example.com", "campus": "west"}]));
}

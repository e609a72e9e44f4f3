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

/// The report's roster options: `?group=campus:north` counts only that campus's students;
/// `?dif=campus` adds the DIF section, and the planted item (one logit harder for north
/// students of the same ability) is flagged in the item table; a column the roster does
/// not have is a 400 naming the parameter.
#[tokio::test]
async fn the_report_filters_by_roster_group_and_checks_items_for_dif() {
    use examflow_engine::irt::SplitMix64;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let banks = dir.path().join("banks");
    common::write_bank(&banks, "algebra", 12, |i| {
        format!("Question {i}: which is right?")
    });
    let students = 800;
    let mut roster = String::from("email,campus\n");
    for s in 0..students {
        let campus = if s % 2 == 0 { "south" } else { "north" };
        roster.push_str(&format!("s{s}@example.com,{campus}\n"));
    }
    let file = dir.path().join("roster.csv");
    std::fs::write(&file, roster).unwrap();
    assert!(import(&data, &file, &[]).status.success());
    let mut options = ServerOptions::new(&data);
    options.banks = banks;
    let server = Server::start(options);
    let mut rng = SplitMix64::new(17);
    for s in 0..students {
        let token = server.token(&format!("s{s}@example.com"), "student");
        let theta = rng.normal();
        let answers: Vec<serde_json::Value> = (0..12)
            .map(|i| {
                let harder = if i == 0 && s % 2 == 1 { 1.2 } else { 0.0 };
                let b = -1.5 + 3.0 * i as f64 / 11.0 + harder;
                let right = rng.uniform() < 1.0 / (1.0 + (b - theta).exp());
                json!(if right { "right" } else { "wrong" })
            })
            .collect();
        let (status, body) = server
            .post(
                "/api/exams/algebra/submissions",
                Some(&token),
                &json!({"answers": answers}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let educator = server.token("ed@example.com", "educator");
    let report = "/api/reports/exams/algebra";
    // The report reads the lake, which the submissions reach within moments.
    common::eventually(std::time::Duration::from_secs(30), || async {
        let (_, all) = server.get(report, Some(&educator)).await;
        (all["summary"]["results"] == students).then_some(())
    })
    .await
    .expect("every submission reaches the report");
    let (status, north) = server
        .get(&format!("{report}?group=campus:north"), Some(&educator))
        .await;
    assert_eq!(status, 200, "{north}");
    assert_eq!(north["summary"]["results"], students / 2);
    assert_eq!(north["options"]["group"], "campus:north");
    let (status, all) = server
        .get(&format!("{report}?dif=campus"), Some(&educator))
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["summary"]["results"], students);
    let dif = &all["dif"];
    assert_eq!(dif["column"], "campus");
    let comparison = &dif["comparisons"][0];
    assert_eq!(comparison["focal"], "south", "{dif}");
    assert_eq!(
        comparison["reference"], "north",
        "equal sizes: the first by name"
    );
    let first = &comparison["items"][0];
    assert_eq!(first["mantel_haenszel"]["category"], "C", "{first}");
    assert!(
        first["mantel_haenszel"]["d_dif"].as_f64().unwrap() > 1.5,
        "{first}"
    );
    let flags = all["items"][0]["flags"].to_string();
    assert!(
        flags.contains("\"dif\"") && flags.contains("harder for north"),
        "{flags}"
    );
    let flagged = all["items"].as_array().unwrap()[1..]
        .iter()
        .filter(|i| i["flags"].to_string().contains("\"dif\""))
        .count();
    assert_eq!(flagged, 0, "null items flagged: {}", all["items"]);
    let (status, csv) = server
        .get_text(
            &format!("{report}?dif=campus&format=csv&table=dif"),
            Some(&educator),
        )
        .await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        csv.starts_with("column,focal,reference,item,mh_alpha,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 13, "{csv}");
    for (query, code) in [
        ("group=campus", "invalid_group"),
        ("group=cohort:2026", "invalid_group"),
        ("dif=cohort", "invalid_dif"),
        ("dif_reference=north", "invalid_dif"),
    ] {
        let (status, body) = server
            .get(&format!("{report}?{query}"), Some(&educator))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
}

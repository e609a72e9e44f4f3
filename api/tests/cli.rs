//! The command line as a user meets it.

mod common;

use std::process::Command;

/// The JSON a successful command printed (fails the test with its stderr otherwise).
fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

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

fn lsat() -> String {
    common::repo_root()
        .join("data/irt/lsat6.csv")
        .display()
        .to_string()
}

#[test]
fn calibrate_prints_the_documented_json() {
    let out = examflow(&[
        "calibrate",
        &lsat(),
        "--model",
        "2pl",
        "--format",
        "json",
        "--abilities",
        "eap",
    ]);
    let v = json_of(&out);
    for key in [
        "model",
        "n_persons",
        "n_items",
        "log_likelihood",
        "aic",
        "bic",
        "iterations",
        "converged",
        "items",
        "abilities",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["model"], "2pl");
    assert_eq!(v["n_persons"], 1000);
    assert_eq!(v["converged"], true);
    // ltm(LSAT ~ z1): item 3 b = -0.2799, a = 0.8905; logLik -2466.653.
    assert!(
        (v["items"][2]["b"].as_f64().unwrap() + 0.2799).abs() < 0.01,
        "{}",
        v["items"][2]
    );
    assert!(
        (v["items"][2]["a"].as_f64().unwrap() - 0.8905).abs() < 0.01,
        "{}",
        v["items"][2]
    );
    assert!((v["log_likelihood"].as_f64().unwrap() + 2466.653).abs() < 0.01);
    for key in ["item", "a", "b", "c", "se_a", "se_b", "p_value"] {
        assert!(v["items"][0].get(key).is_some(), "item lacks {key}");
    }
    let abilities = v["abilities"].as_array().unwrap();
    assert_eq!(abilities.len(), 1000);
    assert_eq!(abilities[0]["person"], "1");
    assert!(abilities[0]["theta"].as_f64().unwrap() < abilities[999]["theta"].as_f64().unwrap());
}

#[test]
fn calibrate_mle_reports_infinite_abilities_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.csv");
    let mut text = String::from("person,q1,q2,q3\n");
    for (i, row) in [
        "1,1,1", "0,0,0", "1,0,1", "0,1,0", "1,1,0", "0,0,1", "1,0,0", "0,1,1",
    ]
    .iter()
    .cycle()
    .take(80)
    .enumerate()
    {
        text.push_str(&format!("p{i},{row}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let out = examflow(&[
        "calibrate",
        file.to_str().unwrap(),
        "--model",
        "rasch",
        "--format",
        "json",
        "--abilities",
        "mle",
    ]);
    let v = json_of(&out);
    assert_eq!(v["abilities"][0]["person"], "p0");
    assert_eq!(v["abilities"][0]["theta"], "inf");
    assert_eq!(v["abilities"][1]["theta"], "-inf");
    assert!(v["abilities"][2]["theta"].is_number());
    let out = examflow(&[
        "calibrate",
        file.to_str().unwrap(),
        "--model",
        "rasch",
        "--format",
        "csv",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("item,a,b,c,"), "{text}");
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn calibrate_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, "person,q1,q2\na,1,0\nb,1,2\n").unwrap();
    let out = examflow(&["calibrate", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:3:3"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    std::fs::write(&file, "").unwrap();
    let out = examflow(&["calibrate", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

fn write_bank(dir: &std::path::Path) -> String {
    // 200 items, a in [0.8, 2.0), b spread over [-2.5, 2.5), three topics.
    let mut text = String::from("item,a,b,c,topic\n");
    for i in 0..200 {
        let a = 0.8 + 1.2 * ((i * 37) % 100) as f64 / 100.0;
        let b = -2.5 + 5.0 * ((i * 53) % 200) as f64 / 200.0;
        text.push_str(&format!(
            "i{i},{a:.3},{b:.3},0,{}\n",
            ["alg", "geo", "stat"][i % 3]
        ));
    }
    let file = dir.join("bank.csv");
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

#[test]
fn simulate_cat_reports_the_standard_table() {
    let dir = tempfile::tempdir().unwrap();
    let bank = write_bank(dir.path());
    let args = [
        "simulate-cat",
        "--bank",
        &bank,
        "--examinees",
        "400",
        "--rule",
        "mfi",
        "--stop",
        "se:0.3,max:30",
        "--seed",
        "7",
        "--format",
        "json",
    ];
    let out = examflow(&args);
    let v = json_of(&out);
    for key in [
        "bias",
        "rmse",
        "mean_length",
        "max_exposure",
        "unused_share",
        "overlap",
        "exposure_rates",
        "stop_reasons",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    let rmse = v["rmse"].as_f64().unwrap();
    assert!(rmse > 0.15 && rmse < 0.45, "{rmse}");
    assert!(v["bias"].as_f64().unwrap().abs() < 0.1);
    assert!(v["mean_length"].as_f64().unwrap() < 30.0);
    // The same seed gives the same report.
    let again = examflow(&args);
    assert_eq!(out.stdout, again.stdout);

    // Exposure control lowers the maximum exposure.
    let controlled = examflow(&[
        "simulate-cat",
        "--bank",
        &bank,
        "--examinees",
        "400",
        "--exposure",
        "randomesque:8",
        "--stop",
        "se:0.3,max:30",
        "--format",
        "json",
    ]);
    let c: serde_json::Value = serde_json::from_slice(&controlled.stdout).unwrap();
    assert!(c["max_exposure"].as_f64().unwrap() < v["max_exposure"].as_f64().unwrap());
}

#[test]
fn simulate_cat_reads_calibrate_csv_and_rejects_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("params.csv");
    let out = examflow(&["calibrate", &lsat(), "--format", "csv"]);
    std::fs::write(&params, &out.stdout).unwrap();
    let out = examflow(&[
        "simulate-cat",
        "--bank",
        params.to_str().unwrap(),
        "--examinees",
        "50",
        "--stop",
        "fixed:5",
        "--format",
        "json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["mean_length"], 5.0);
    assert_eq!(v["unused_share"], 0.0);

    let bank = write_bank(dir.path());
    let out = examflow(&["simulate-cat", "--bank", &bank, "--stop", "se:zero"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number"));
    let out = examflow(&["simulate-cat", "--bank", &bank, "--rule", "psychic"]);
    assert!(!out.status.success());
    std::fs::write(dir.path().join("bad.csv"), "item,a,b\nx,1,oops\n").unwrap();
    let out = examflow(&[
        "simulate-cat",
        "--bank",
        dir.path().join("bad.csv").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:2:3"), "{err}");
}

/// Two groups of different ability answer the same 20 items; each `examflow calibrate`
/// puts its group on N(0, 1), and `examflow link` recovers how the second scale sits on
/// the first (true A = 1.2, B = 0.5: θ of group two ~ N(0.5, 1.2²) on group one's scale).
#[test]
fn link_recovers_the_scale_between_two_calibrations() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = examflow_engine::irt::SplitMix64::new(0x2545_f491_4f6c_dd1du64);
    let items: Vec<(f64, f64)> = (0..20)
        .map(|i| (0.7 + 1.2 * rng.uniform(), -2.0 + 4.0 * i as f64 / 19.0))
        .collect();
    let mut calibrate = |name: &str, mean: f64, sd: f64| {
        let mut csv = (0..20)
            .map(|i| format!("q{i}"))
            .collect::<Vec<_>>()
            .join(",");
        csv.push('\n');
        for _ in 0..3000 {
            let theta = mean + sd * rng.normal();
            let row: Vec<&str> = items
                .iter()
                .map(|(a, b)| {
                    if rng.uniform() < 1.0 / (1.0 + (-a * (theta - b)).exp()) {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect();
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
        let responses = dir.path().join(format!("{name}-responses.csv"));
        std::fs::write(&responses, csv).unwrap();
        let out = examflow(&[
            "calibrate",
            responses.to_str().unwrap(),
            "--model",
            "2pl",
            "--format",
            "csv",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let params = dir.path().join(format!("{name}.csv"));
        std::fs::write(&params, &out.stdout).unwrap();
        params.to_str().unwrap().to_string()
    };
    let old = calibrate("old", 0.0, 1.0);
    let new = calibrate("new", 0.5, 1.2);
    for method in ["stocking-lord", "haebara", "mean-sigma", "mean-mean"] {
        let out = examflow(&[
            "link", "--from", &old, "--to", &new, "--method", method, "--format", "json",
        ]);
        let linking = json_of(&out);
        let (a, b) = (
            linking["A"].as_f64().unwrap(),
            linking["B"].as_f64().unwrap(),
        );
        let tolerance = if method.starts_with("mean") {
            0.15
        } else {
            0.1
        };
        assert!(
            (a - 1.2).abs() < tolerance && (b - 0.5).abs() < tolerance,
            "{method}: A {a}, B {b}\n{linking:#}"
        );
        assert_eq!(
            linking["anchors"].as_array().unwrap().len(),
            20,
            "{linking:#}"
        );
    }
    let table = examflow(&["link", "--from", &old, "--to", &new]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("A = 1.") && text.contains("q19"),
        "{text}"
    );
    let bad = examflow(&[
        "link",
        "--from",
        &old,
        "--to",
        &new,
        "--method",
        "equipercentile",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("mean-sigma"),
        "{stderr}"
    );
    let missing = examflow(&["link", "--from", "no-such.csv", "--to", &new]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("no-such.csv"),
        "{stderr}"
    );
}

/// `examflow dif RESPONSES --groups GROUPS --focal north --reference south EXTRA…`.
fn dif_north_south(responses: &str, groups: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "dif",
        responses,
        "--groups",
        groups,
        "--focal",
        "north",
        "--reference",
        "south",
    ];
    args.extend_from_slice(extra);
    examflow(&args)
}

/// `examflow dif --theta`: adaptive-like answers (each student answered about half of the
/// items, so nobody has a comparable total score), matched on ability estimates. The focal
/// group is less able, and q0 is also one logit harder for it: q0 is C, no other item is.
#[test]
fn dif_matches_adaptive_answers_on_ability() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = examflow_engine::irt::SplitMix64::new(41);
    let mut responses = String::from("person");
    for i in 0..12 {
        responses.push_str(&format!(",q{i}"));
    }
    responses.push('\n');
    let mut groups = String::from("person,campus\n");
    let mut thetas = String::from("person,theta\n");
    for p in 0..4000 {
        let focal = p % 2 == 1;
        let theta = rng.normal() - if focal { 0.5 } else { 0.0 };
        responses.push_str(&format!("s{p}"));
        for i in 0..12 {
            if i > 0 && rng.uniform() < 0.5 {
                responses.push(',');
                continue;
            }
            let b = -1.5 + 3.0 * i as f64 / 11.0 + if i == 0 && focal { 1.0 } else { 0.0 };
            let right = rng.uniform() < 1.0 / (1.0 + (b - theta).exp());
            responses.push_str(if right { ",1" } else { ",0" });
        }
        responses.push('\n');
        groups.push_str(&format!("s{p},{}\n", if focal { "north" } else { "south" }));
        thetas.push_str(&format!("s{p},{:.4}\n", theta + 0.3 * rng.normal()));
    }
    let (r, g, t) = (
        dir.path().join("r.csv"),
        dir.path().join("g.csv"),
        dir.path().join("t.csv"),
    );
    std::fs::write(&r, responses).unwrap();
    std::fs::write(&g, groups).unwrap();
    std::fs::write(&t, thetas).unwrap();
    let (r, g, t) = (
        r.to_str().unwrap(),
        g.to_str().unwrap(),
        t.to_str().unwrap(),
    );
    let dif = json_of(&dif_north_south(r, g, &["--format", "json", "--theta", t]));
    assert_eq!(dif["matching"], "ability");
    let items = dif["items"].as_array().unwrap();
    assert_eq!(items[0]["category"], "C", "{:#}", items[0]);
    assert!(items[1..].iter().all(|i| i["category"] != "C"), "{dif:#}");
    let lr = dif["logistic_regression"].as_array().unwrap();
    assert!(lr[0]["uniform"]["p_value"].as_f64().unwrap() < 1e-6);
    let table = String::from_utf8_lossy(&dif_north_south(r, g, &["--theta", t]).stdout).to_string();
    assert!(table.contains("matched on ability"), "{table}");
    // Matched on the total score, the same answers cannot be compared.
    let by_score = dif_north_south(r, g, &[]);
    assert!(!by_score.status.success());
    // A θ that is not a number: file, line and column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "person,theta\ns1,0.5\ns2,high\n").unwrap();
    let out = dif_north_south(r, g, &["--theta", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("bad.csv") && stderr.contains("\"high\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(":3:2") || stderr.contains("line 3"),
        "{stderr}"
    );
}

/// `examflow dif`: 1500 + 1500 students of equal ability; q0 is one logit harder for the
/// focal group. It is category C; the others are not; bad groups are clear errors.
#[test]
fn dif_flags_the_planted_item() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = examflow_engine::irt::SplitMix64::new(0x9e37_79b9_7f4a_7c15u64);
    let mut responses = String::from("person");
    for i in 0..15 {
        responses.push_str(&format!(",q{i}"));
    }
    responses.push('\n');
    let mut groups = String::from("person,campus\n");
    for p in 0..3000 {
        let focal = p % 2 == 1;
        let theta = rng.normal();
        responses.push_str(&format!("s{p}"));
        for i in 0..15 {
            let b = -1.5 + 3.0 * i as f64 / 14.0 + if i == 0 && focal { 1.0 } else { 0.0 };
            let right = rng.uniform() < 1.0 / (1.0 + (b - theta).exp());
            responses.push_str(if right { ",1" } else { ",0" });
        }
        responses.push('\n');
        groups.push_str(&format!("s{p},{}\n", if focal { "north" } else { "south" }));
    }
    let (r, g) = (dir.path().join("r.csv"), dir.path().join("g.csv"));
    std::fs::write(&r, responses).unwrap();
    std::fs::write(&g, groups).unwrap();
    let (r, g) = (r.to_str().unwrap(), g.to_str().unwrap());
    let dif = json_of(&dif_north_south(r, g, &["--format", "json"]));
    assert_eq!(dif["focal"]["persons"], 1500);
    let items = dif["items"].as_array().unwrap();
    assert_eq!(items[0]["item"], "q0");
    assert_eq!(items[0]["category"], "C", "{:#}", items[0]);
    assert!(items[0]["d_dif"].as_f64().unwrap() < -1.5);
    assert!(items[1..].iter().all(|i| i["category"] != "C"), "{dif:#}");
    // Logistic regression sees the same uniform DIF: the group term is significant and
    // negative (the item is harder for the focal group), the interaction is not needed.
    let lr = dif["logistic_regression"].as_array().unwrap();
    assert_eq!(lr.len(), 15);
    assert!(
        lr[0]["uniform"]["p_value"].as_f64().unwrap() < 1e-6,
        "{:#}",
        lr[0]
    );
    assert!(
        lr[0]["m1"]["group"]["value"].as_f64().unwrap() < -0.5,
        "{:#}",
        lr[0]
    );
    let null_uniform = lr[1..]
        .iter()
        .filter(|i| i["uniform"]["p_value"].as_f64().unwrap() < 0.01)
        .count();
    assert!(
        null_uniform <= 2,
        "{null_uniform} null items flagged at .01"
    );
    let table = dif_north_south(r, g, &[]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("C: review") && text.contains("q14"), "{text}");
    assert!(text.contains("Logistic regression DIF"), "{text}");
    let unknown = examflow(&[
        "dif",
        r,
        "--groups",
        g,
        "--focal",
        "east",
        "--reference",
        "south",
    ]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && stderr.contains("\"east\": 0 persons"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("twice.csv"),
        "person,campus\ns1,north\ns1,south\n",
    )
    .unwrap();
    let twice = examflow(&[
        "dif",
        r,
        "--groups",
        dir.path().join("twice.csv").to_str().unwrap(),
        "--focal",
        "north",
        "--reference",
        "south",
    ]);
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(
        !twice.status.success() && stderr.contains("twice.csv:3") && stderr.contains("twice"),
        "{stderr}"
    );
}

/// `calibrate --fit`: a planted item answered by a U-shaped curve is the one S-X2 flags,
/// in JSON, CSV and the table; person fit comes with it.
#[test]
fn calibrate_fit_flags_a_planted_misfitting_item() {
    use examflow_engine::irt::SplitMix64;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(5);
    let mut csv = String::from("person");
    for i in 0..12 {
        csv.push_str(&format!(",q{i}"));
    }
    csv.push('\n');
    for p in 0..1500 {
        let theta = rng.normal();
        csv.push_str(&format!("p{p}"));
        for i in 0..12 {
            let b = -2.0 + 4.0 * i as f64 / 11.0;
            let prob = if i == 4 {
                1.0 / (1.0 + (-2.0 * (theta.abs() - 0.7)).exp())
            } else {
                1.0 / (1.0 + (-1.2 * (theta - b)).exp())
            };
            csv.push_str(if rng.uniform() < prob { ",1" } else { ",0" });
        }
        csv.push('\n');
    }
    let path = dir.path().join("responses.csv");
    std::fs::write(&path, csv).unwrap();
    let run = |format: &str| {
        let out = examflow(&[
            "calibrate",
            path.to_str().unwrap(),
            "--fit",
            "--format",
            format,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let items = json["fit"]["items"].as_array().unwrap();
    let flagged: Vec<&str> = items
        .iter()
        .filter(|i| i["flagged"] == true)
        .map(|i| i["item"].as_str().unwrap())
        .collect();
    assert!(flagged.contains(&"q4"), "{flagged:?}");
    // The planted item also distorts the summed scores every S-X2 groups by, so a few
    // fitting items may be flagged with it; it stands out by far.
    assert!(flagged.len() <= 4, "one planted misfit: {flagged:?}");
    let p = |i: &serde_json::Value| i["p_value"].as_f64().unwrap();
    assert!(p(&items[4]) < 1e-6, "{}", items[4]);
    let others = items.iter().filter(|i| i["item"] != "q4").map(p);
    assert!(others.fold(1.0, f64::min) > 1e3 * p(&items[4]), "{items:?}");
    assert_eq!(json["fit"]["n_complete"], 1500);
    assert_eq!(json["fit"]["persons"].as_array().unwrap().len(), 1500);
    let csv = run("csv");
    assert!(csv.contains("\nitem,s_x2,df,p_value,rmsea,"), "{csv}");
    assert!(csv.contains("\nperson,theta,lz,lz_star,"), "{csv}");
    let table = run("table");
    let q4 = table
        .lines()
        .find(|l| l.starts_with("q4 ") && l.contains("MISFIT"));
    assert!(q4.is_some(), "{table}");
    assert!(table.contains("Person fit (lz*"), "{table}");
}

/// `--se`: every method gives ltm's published LSAT standard errors (ltm(LSAT ~ z1):
/// se(a3) = 0.2326, se(b3) = 0.0997) — oakes and sem to 0.003, the xpd approximation to
/// 5 %; `none` gives none; an unknown name is refused with the choices.
#[test]
fn calibrate_standard_errors_by_each_method_agree_with_ltm() {
    for (method, tolerance) in [("oakes", 0.003), ("sem", 0.003), ("xpd", 0.05 * 0.2326)] {
        let out = examflow(&["calibrate", &lsat(), "--format", "json", "--se", method]);
        let v = json_of(&out);
        assert_eq!(v["se_method"], method);
        let item = &v["items"][2];
        let se_a = item["se_a"].as_f64().unwrap();
        let se_b = item["se_b"].as_f64().unwrap();
        assert!((se_a - 0.2326).abs() < tolerance, "{method}: se(a) {se_a}");
        assert!((se_b - 0.0997).abs() < tolerance, "{method}: se(b) {se_b}");
    }
    let v = json_of(&examflow(&[
        "calibrate",
        &lsat(),
        "--format",
        "json",
        "--se",
        "none",
    ]));
    assert_eq!(v["items"][2]["se_a"], serde_json::Value::Null);
    let out = examflow(&["calibrate", &lsat(), "--se", "louis"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oakes") && err.contains("louis"), "{err}");
}

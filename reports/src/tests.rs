//! The report against the engine's classical statistics on the same responses, and the
//! renderings.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, StringViewArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use examflow_engine::ctt::{analyze, distractor_analysis};
use examflow_engine::irt::{MISSING, ResponseMatrix, SplitMix64};

use crate::ffi::to_polars;
use crate::{
    AttemptSelection, ExamReport, ItemInfo, ReportInput, ReportOptions, build_report, render,
};

const OPTIONS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const DAY_US: i64 = 86_400_000_000;

/// A simulated exam: persons × items, each person a chosen option (or no answer) per item.
struct Exam {
    persons: Vec<String>,
    items: Vec<String>,
    keys: Vec<usize>,
    /// `choices[p][i]`: `None` = the result does not contain the question.
    choices: Vec<Vec<Option<usize>>>,
}

fn simulate(n_persons: usize, n_items: usize, seed: u64) -> Exam {
    let mut rng = SplitMix64::new(seed);
    let items: Vec<String> = (0..n_items).map(|i| format!("q{i:02}")).collect();
    let keys: Vec<usize> = (0..n_items).map(|i| i % OPTIONS.len()).collect();
    let mut choices = Vec::new();
    for _ in 0..n_persons {
        let theta = rng.uniform() * 4.0 - 2.0;
        let row = (0..n_items)
            .map(|i| {
                if rng.uniform() < 0.05 {
                    return None;
                }
                let b = i as f64 / n_items as f64 * 3.0 - 1.5;
                let p = 1.0 / (1.0 + (-(1.2 * (theta - b))).exp());
                if rng.uniform() < p {
                    Some(keys[i])
                } else {
                    Some((keys[i] + 1 + (rng.uniform() * 3.0) as usize) % OPTIONS.len())
                }
            })
            .collect();
        choices.push(row);
    }
    Exam {
        // Zero-padded so the id order is the person order (the groups break ties by id).
        persons: (0..n_persons).map(|p| format!("doc{p:04}")).collect(),
        items,
        keys,
        choices,
    }
}

fn strings(values: Vec<Option<String>>, view: bool) -> ArrayRef {
    if view {
        Arc::new(StringViewArray::from(values))
    } else {
        Arc::new(StringArray::from(values))
    }
}

/// The exam as the three frames, through the C Data Interface like the server's data.
fn input(exam: &Exam) -> ReportInput {
    let n = exam.persons.len();
    let correct_counts: Vec<usize> = exam
        .choices
        .iter()
        .map(|row| {
            row.iter()
                .zip(&exam.keys)
                .filter(|(c, k)| **c == Some(**k))
                .count()
        })
        .collect();
    let k = exam.items.len() as i64;
    let results_schema = Arc::new(Schema::new(vec![
        Field::new("document_id", DataType::Utf8View, false),
        Field::new("email", DataType::Utf8View, true),
        Field::new("score", DataType::Int64, true),
        Field::new("total", DataType::Int64, true),
        Field::new("percentage", DataType::Int64, true),
        Field::new("result", DataType::Utf8View, true),
        Field::new("submitted_at_us", DataType::Int64, true),
    ]));
    let percentage: Vec<i64> = correct_counts
        .iter()
        .map(|&c| (c as i64 * 100 + k / 2) / k)
        .collect();
    let results = RecordBatch::try_new(
        results_schema.clone(),
        vec![
            strings(exam.persons.iter().cloned().map(Some).collect(), true),
            // Every student took the exam twice except the first ten.
            strings(
                (0..n)
                    .map(|p| Some(format!("s{}@example.org", p.max(10) / 2)))
                    .collect(),
                true,
            ),
            Arc::new(Int64Array::from(
                correct_counts.iter().map(|&c| c as i64).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![k; n])),
            Arc::new(Int64Array::from(percentage.clone())),
            strings(
                percentage
                    .iter()
                    .map(|&p| Some(if p >= 50 { "passed" } else { "failed" }.to_string()))
                    .collect(),
                true,
            ),
            // Three days, 20 results per day, at noon.
            Arc::new(Int64Array::from(
                (0..n as i64)
                    .map(|p| Some((20_000 + p % 3) * DAY_US + DAY_US / 2))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let mut rows = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (p, row) in exam.choices.iter().enumerate() {
        for (i, choice) in row.iter().enumerate() {
            let Some(choice) = choice else { continue };
            rows.0.push(Some(exam.persons[p].clone()));
            rows.1.push(Some(exam.items[i].clone()));
            rows.2.push(Some(format!("Question {i}?")));
            rows.3.push(Some(OPTIONS[*choice].to_string()));
            rows.4.push(Some(OPTIONS[exam.keys[i]].to_string()));
            rows.5.push(Some(*choice == exam.keys[i]));
        }
    }
    let answers_schema = Arc::new(Schema::new(vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, true),
        Field::new("question", DataType::Utf8, true),
        Field::new("user_answer", DataType::Utf8, true),
        Field::new("correct_answer", DataType::Utf8, true),
        Field::new("is_correct", DataType::Boolean, true),
    ]));
    // Two batches, as a scan of two files gives.
    let half = rows.0.len() / 2;
    let answers: Vec<RecordBatch> = [(0, half), (half, rows.0.len())]
        .into_iter()
        .map(|(from, to)| {
            RecordBatch::try_new(
                answers_schema.clone(),
                vec![
                    strings(rows.0[from..to].to_vec(), false),
                    strings(rows.1[from..to].to_vec(), false),
                    strings(rows.2[from..to].to_vec(), false),
                    strings(rows.3[from..to].to_vec(), false),
                    strings(rows.4[from..to].to_vec(), false),
                    Arc::new(BooleanArray::from(rows.5[from..to].to_vec())),
                ],
            )
            .unwrap()
        })
        .collect();
    let durations_schema = Arc::new(Schema::new(vec![Field::new(
        "duration_seconds",
        DataType::Float64,
        true,
    )]));
    let durations = RecordBatch::try_new(
        durations_schema.clone(),
        vec![Arc::new(Float64Array::from(vec![
            Some(60.0),
            Some(120.0),
            None,
            Some(300.0),
            Some(600.0),
        ]))],
    )
    .unwrap();
    ReportInput {
        exam: "Simulated <exam>".into(),
        generated_at: "2026-11-24T00:00:00Z".into(),
        results: to_polars(&results_schema, &[results]).unwrap(),
        answers: to_polars(&answers_schema, &answers).unwrap(),
        durations: to_polars(&durations_schema, &[durations]).unwrap(),
        items: exam
            .items
            .iter()
            .enumerate()
            .map(|(i, id)| ItemInfo {
                item: id.clone(),
                question: format!("Question {i}?"),
                options: OPTIONS.iter().map(|o| o.to_string()).collect(),
                topic: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
                a: Some(1.0 + i as f64 / 10.0),
                b: Some(i as f64 / 10.0 - 0.5),
                c: Some(0.0),
                provisional: false,
            })
            .collect(),
        calibration: None,
        // Most students here have two results: these tests compare every result with the
        // engine's statistics.
        options: ReportOptions {
            attempts: AttemptSelection::All,
            ..Default::default()
        },
        adaptive_sessions: Vec::new(),
        roster: Default::default(),
        dif: None,
    }
}

fn close(a: Option<f64>, b: f64, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what}: null, engine has {b}"));
    assert!((a - b).abs() < 1e-9, "{what}: report {a}, engine {b}");
}

fn report(exam: &Exam) -> ExamReport {
    build_report(input(exam)).unwrap()
}

#[test]
fn classical_statistics_agree_with_the_engine() {
    let exam = simulate(60, 8, 7);
    let report = report(&exam);
    let data: Vec<u8> = exam
        .choices
        .iter()
        .flat_map(|row| {
            row.iter()
                .zip(&exam.keys)
                .map(|(c, k)| match c {
                    None => MISSING,
                    Some(c) => u8::from(c == k),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let matrix = ResponseMatrix::new(exam.items.clone(), exam.persons.clone(), data).unwrap();
    let ctt = analyze(&matrix);
    assert_eq!(report.reliability.persons, 60);
    assert_eq!(report.reliability.items, 8);
    close(report.reliability.alpha, ctt.alpha, "alpha");
    close(report.reliability.sem, ctt.sem, "sem");
    close(report.reliability.mean_correct, ctt.scores.mean, "mean");
    close(report.reliability.sd_correct, ctt.scores.sd, "sd");
    assert_eq!(report.items.len(), 8);
    for (row, engine) in report.items.iter().zip(&ctt.items) {
        assert_eq!(row.item, engine.item, "bank order");
        assert_eq!(row.responses as usize, engine.n_responses);
        close(row.p_value, engine.p_value, "p-value");
        close(row.point_biserial, engine.point_biserial, "point-biserial");
        close(
            row.corrected_item_total,
            engine.corrected_item_total,
            "corrected item-total",
        );
        close(
            row.discrimination_index,
            engine.discrimination_index,
            "discrimination index",
        );
    }
    assert_eq!(report.items[3].irt_b, Some(-0.2));
    assert_eq!(report.items[3].topic.as_deref(), Some("odd"));

    let engine = distractor_analysis(&exam.choices, &exam.keys, &[4; 8]).unwrap();
    for (i, item) in engine.iter().enumerate() {
        for option in &item.options {
            let row = report
                .distractors
                .iter()
                .find(|d| d.item == exam.items[i] && d.option == OPTIONS[option.option])
                .unwrap_or_else(|| panic!("no row for item {i} option {}", option.option));
            assert_eq!(row.count as usize, option.count);
            assert_eq!(row.is_key, option.is_key);
            close(row.share, option.proportion, "share");
            if option.lower.is_finite() {
                close(row.lower_share, option.lower, "lower share");
            }
            if option.upper.is_finite() {
                close(row.upper_share, option.upper, "upper share");
            }
        }
    }
}

#[test]
fn summary_histogram_trend_and_students() {
    let exam = simulate(60, 8, 11);
    let report = report(&exam);
    let s = &report.summary;
    assert_eq!(s.results, 60);
    // Emails: s5 for persons 0..=11, then one per pair.
    let emails: std::collections::BTreeSet<&str> =
        report.students.iter().map(|r| r.email.as_str()).collect();
    assert_eq!(s.takers as usize, emails.len());
    let percentages: Vec<f64> = report
        .students
        .iter()
        .map(|r| r.percentage.unwrap())
        .collect();
    let mean = percentages.iter().sum::<f64>() / 60.0;
    close(s.mean_percentage, mean, "mean percentage");
    let sd = (percentages.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 59.0).sqrt();
    close(s.sd_percentage, sd, "sd percentage");
    let passed = percentages.iter().filter(|&&p| p >= 50.0).count() as u64;
    assert_eq!((s.passed, s.failed), (passed, 60 - passed));
    close(s.pass_rate, passed as f64 / 60.0, "pass rate");
    let bins = &report.histogram;
    assert_eq!(bins.len(), 10);
    assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 60);
    let hundred = percentages.iter().filter(|&&p| p >= 90.0).count() as u64;
    assert_eq!(bins[9].count, hundred, "the last bin includes 100%");
    let low = percentages.iter().filter(|&&p| p < 10.0).count() as u64;
    assert_eq!(bins[0].count, low);
    let days: Vec<&str> = report.trend.iter().map(|t| t.day.as_str()).collect();
    assert_eq!(days, ["2024-10-04", "2024-10-05", "2024-10-06"]);
    assert!(report.trend.iter().all(|t| t.results == 20));
    assert_eq!(
        report.summary.first_submitted_at.as_deref(),
        Some("2024-10-04T12:00:00Z")
    );
    // Students by email, then time.
    let keys: Vec<(&str, &Option<String>)> = report
        .students
        .iter()
        .map(|r| (r.email.as_str(), &r.submitted_at))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let t = &report.time_on_task;
    assert_eq!(t.attempts, 4);
    close(t.mean_seconds, 270.0, "mean duration");
    close(t.median_seconds, 210.0, "median duration");
    // Linear interpolation: 300 + 0.7·(600 − 300).
    close(t.p90_seconds, 510.0, "p90 duration");
}

#[test]
fn flags_name_easy_hard_and_miskeyed_questions() {
    let mut exam = simulate(80, 6, 3);
    for row in exam.choices.iter_mut() {
        row[0] = Some(exam.keys[0]); // everyone right
        row[1] = Some((exam.keys[1] + 1) % 4); // everyone wrong
    }
    // Question 2 miskeyed: the strongest students pick another option.
    let totals: Vec<usize> = exam
        .choices
        .iter()
        .map(|row| {
            row.iter()
                .zip(&exam.keys)
                .enumerate()
                .filter(|(i, (c, k))| *i != 2 && **c == Some(**k))
                .count()
        })
        .collect();
    for (p, row) in exam.choices.iter_mut().enumerate() {
        row[2] = Some(if totals[p] >= 3 {
            (exam.keys[2] + 1) % 4
        } else {
            exam.keys[2]
        });
    }
    let report = report(&exam);
    let flags_of =
        |i: usize| -> Vec<&str> { report.items[i].flags.iter().map(|f| f.flag).collect() };
    assert!(flags_of(0).contains(&"too_easy"), "{:?}", report.items[0]);
    assert!(flags_of(1).contains(&"too_hard"), "{:?}", report.items[1]);
    assert!(
        flags_of(2).contains(&"negative_discrimination"),
        "{:?}",
        report.items[2]
    );
    assert!(report.items[2].flags.iter().all(|f| !f.reason.is_empty()));
    // Options nobody chose are listed with count 0.
    let unused: Vec<_> = report
        .distractors
        .iter()
        .filter(|d| d.item == "q00" && d.count == 0)
        .collect();
    assert_eq!(unused.len(), 3);
    assert!(unused.iter().all(|d| d.share == Some(0.0) && !d.is_key));
}

#[test]
fn an_exam_without_data_gives_an_empty_report() {
    let exam = simulate(0, 5, 1);
    let report = report(&exam);
    assert_eq!(report.summary.results, 0);
    assert_eq!(report.summary.takers, 0);
    assert_eq!(report.summary.mean_percentage, None);
    assert_eq!(report.summary.pass_rate, None);
    assert_eq!(report.reliability.alpha, None);
    assert_eq!(report.items.len(), 5, "bank questions are listed");
    assert!(report.items.iter().all(|i| i.responses == 0));
    assert!(report.students.is_empty());
    assert_eq!(report.histogram.iter().map(|b| b.count).sum::<u64>(), 0);
    assert!(render::html(&report).contains("Score report"));
    for table in render::TABLES {
        let text = render::csv_table(&report, table).unwrap();
        assert!(
            text.lines().next().is_some_and(|l| !l.is_empty()),
            "{table}"
        );
    }
}

#[test]
fn a_missing_column_is_named() {
    let exam = simulate(5, 3, 1);
    let mut input = input(&exam);
    input.answers = input.answers.drop("is_correct").unwrap();
    let error = build_report(input).unwrap_err().to_string();
    assert!(
        error.contains("is_correct") && error.contains("answers"),
        "{error}"
    );
}

/// Answers may name their result by its row in `results` (`person`, as the server reads
/// them) instead of by `document_id`: the report is the same, and a row that is not one of
/// the results is an error, not a wrong report.
#[test]
fn answers_by_result_row_give_the_same_report() {
    let exam = simulate(60, 8, 7);
    let by_id = input(&exam);
    let ids: Vec<String> = by_id
        .answers
        .column("document_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect();
    let rows: Vec<u32> = ids
        .iter()
        .map(|id| exam.persons.iter().position(|p| p == id).unwrap() as u32)
        .collect();
    let by_row = |rows: Vec<u32>| {
        let mut input = input(&exam);
        let mut answers = input.answers.drop("document_id").unwrap();
        answers
            .with_column(polars::prelude::Column::new("person".into(), rows))
            .unwrap();
        input.answers = answers;
        input
    };
    let expected = serde_json::to_value(build_report(by_id).unwrap()).unwrap();
    let got = serde_json::to_value(build_report(by_row(rows.clone())).unwrap()).unwrap();
    // Equal up to the last bits of sums taken in another order.
    fn same(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                    "{at}: {x} vs {y}"
                );
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{at}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    same(x, y, &format!("{at}[{i}]"));
                }
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(x.len(), y.len(), "{at}");
                for (key, x) in x {
                    same(x, &y[key], &format!("{at}.{key}"));
                }
            }
            _ => assert_eq!(a, b, "{at}"),
        }
    }
    same(&got, &expected, "report");

    let mut wrong = rows;
    wrong[3] = exam.persons.len() as u32;
    let error = build_report(by_row(wrong)).unwrap_err().to_string();
    assert!(error.contains("not a row of the 60 results"), "{error}");
}

#[test]
fn renderings_hold_every_table() {
    let exam = simulate(30, 4, 5);
    let report = report(&exam);
    let items = render::csv_table(&report, "items").unwrap();
    let mut reader = csv::Reader::from_reader(items.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[..3], ["item", "question", "topic"]);
    assert_eq!(reader.records().count(), 4);
    let students = render::csv_table(&report, "students").unwrap();
    assert_eq!(students.lines().count(), 31);
    assert!(render::csv_table(&report, "nope").is_err());

    let zip = render::csv_zip(&report).unwrap();
    let files = crate::zip::read(&zip);
    let mut names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut expected: Vec<String> = render::TABLES.iter().map(|t| format!("{t}.csv")).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(names.contains(&"moodle_questions.csv") && names.contains(&"adaptive_exposure.csv"));
    let text = &files.iter().find(|(n, _)| n == "students.csv").unwrap().1;
    assert_eq!(String::from_utf8_lossy(text), students);
    let raw: usize = files.iter().map(|(_, d)| d.len()).sum();
    assert!(zip.len() < raw, "deflated: {} bytes for {raw}", zip.len());

    let html = render::html(&report);
    assert!(html.contains("<svg class=\"chart\""));
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 10);
    assert!(html.contains("Simulated &lt;exam&gt;"), "names are escaped");
    assert!(!html.contains("<exam>"));
    assert!(!html.contains("<script"), "readable without JavaScript");
}

#[test]
fn csv_cells_that_would_run_as_formulas_get_a_quote() {
    for (cell, expected) in [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1.5", "'-1.5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        ("'=already", "'=already"),
    ] {
        assert_eq!(render::csv_safe(cell), expected, "{cell:?}");
    }
}

/// Every table: text cells that start like a formula are neutralised, numbers are not (a
/// negative statistic stays a negative number), and otherwise the columns and cells are
/// what serialising the rows with the `csv` crate gives.
#[test]
fn report_csv_neutralises_text_and_keeps_numbers() {
    let exam = simulate(30, 4, 5);
    let plain = report(&exam);
    // Plain text: the same bytes as serde's CSV of the rows.
    fn serde_csv<T: serde::Serialize>(rows: &[T]) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        for row in rows {
            writer.serialize(row).unwrap();
        }
        String::from_utf8(writer.into_inner().unwrap()).unwrap()
    }
    assert_eq!(
        render::csv_table(&plain, "histogram").unwrap(),
        serde_csv(&plain.histogram)
    );
    assert_eq!(
        render::csv_table(&plain, "distractors").unwrap(),
        serde_csv(&plain.distractors)
    );
    assert_eq!(
        render::csv_table(&plain, "trend").unwrap(),
        serde_csv(&plain.trend)
    );
    assert_eq!(
        render::csv_table(&plain, "students").unwrap(),
        serde_csv(&plain.students)
    );

    let mut report = plain.clone();
    report.exam = "+exam".into();
    report.items[0].question = "=HYPERLINK(\"http://example.org\",\"x\")".into();
    report.items[0].irt_b = Some(-1.5);
    report.distractors[0].option = "@cmd".into();
    report.distractors[0].mean_correct = Some(-0.25);
    report.students[0].email = "-2+3@example.org".into();
    let cells = |table: &str| -> Vec<Vec<String>> {
        let text = render::csv_table(&report, table).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut rows = vec![reader.headers().unwrap().iter().map(String::from).collect()];
        rows.extend(
            reader
                .records()
                .map(|r| r.unwrap().iter().map(String::from).collect()),
        );
        rows
    };
    let column = |rows: &[Vec<String>], name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let items = cells("items");
    assert_eq!(
        items[1][column(&items, "question")],
        "'=HYPERLINK(\"http://example.org\",\"x\")"
    );
    assert_eq!(items[1][column(&items, "irt_b")], "-1.5");
    let distractors = cells("distractors");
    assert_eq!(distractors[1][column(&distractors, "option")], "'@cmd");
    assert_eq!(
        distractors[1][column(&distractors, "mean_correct")],
        "-0.25"
    );
    let students = cells("students");
    assert_eq!(students[1][column(&students, "email")], "'-2+3@example.org");
    let summary = cells("summary");
    let exam_row = summary.iter().find(|r| r[0] == "exam").unwrap();
    assert_eq!(exam_row[1], "'+exam");
    // No text cell anywhere starts like a formula; the cells that do are numbers.
    for table in render::TABLES {
        for row in cells(table).iter().skip(1) {
            for cell in row {
                assert!(
                    !render::csv_needs_guard(cell) || cell.parse::<f64>().is_ok(),
                    "{table}: {cell:?} is text that starts like a formula"
                );
            }
        }
    }
    let zip = render::csv_zip(&report).unwrap();
    let files = crate::zip::read(&zip);
    let items_csv = &files.iter().find(|(n, _)| n == "items.csv").unwrap().1;
    assert!(String::from_utf8_lossy(items_csv).contains("'=HYPERLINK"));
}

/// A small exam written out by hand: results (id, email, submitted at, marks per question
/// of q1..q3), every question with 4 options, answers named by `document_id`.
fn small_input(rows: &[(&str, &str, &str, [u8; 3])]) -> ReportInput {
    let micros = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_micros()
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
        Field::new("total", DataType::Int64, true),
        Field::new("percentage", DataType::Int64, true),
        Field::new("result", DataType::Utf8, true),
        Field::new("submitted_at_us", DataType::Int64, true),
    ]));
    let score = |m: &[u8; 3]| m.iter().map(|&x| i64::from(x)).sum::<i64>();
    let results = RecordBatch::try_new(
        schema.clone(),
        vec![
            strings(rows.iter().map(|r| Some(r.0.to_string())).collect(), false),
            strings(rows.iter().map(|r| Some(r.1.to_string())).collect(), false),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| score(&r.3)).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![3i64; rows.len()])),
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| (score(&r.3) * 100 + 1) / 3)
                    .collect::<Vec<_>>(),
            )),
            strings(vec![None; rows.len()], false),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| micros(r.2)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let answers_schema = Arc::new(Schema::new(vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, true),
        Field::new("question", DataType::Utf8, true),
        Field::new("user_answer", DataType::Utf8, true),
        Field::new("correct_answer", DataType::Utf8, true),
        Field::new("is_correct", DataType::Boolean, true),
    ]));
    let mut a = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (id, _, _, marks) in rows {
        for (i, &x) in marks.iter().enumerate() {
            a.0.push(Some(id.to_string()));
            a.1.push(Some(format!("q{}", i + 1)));
            a.2.push(Some(format!("Question {}?", i + 1)));
            a.3.push(Some(if x == 1 { "alpha" } else { "beta" }.to_string()));
            a.4.push(Some("alpha".to_string()));
            a.5.push(Some(x == 1));
        }
    }
    let answers = RecordBatch::try_new(
        answers_schema.clone(),
        vec![
            strings(a.0, false),
            strings(a.1, false),
            strings(a.2, false),
            strings(a.3, false),
            strings(a.4, false),
            Arc::new(BooleanArray::from(a.5)),
        ],
    )
    .unwrap();
    let durations_schema = Arc::new(Schema::new(vec![
        Field::new("duration_seconds", DataType::Float64, true),
        Field::new("finished_at_us", DataType::Int64, true),
    ]));
    let durations = RecordBatch::try_new(
        durations_schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![Some(60.0), Some(120.0)])),
            Arc::new(Int64Array::from(vec![
                micros("2026-12-01T10:00:00Z"),
                micros("2026-12-02T10:00:00Z"),
            ])),
        ],
    )
    .unwrap();
    ReportInput {
        exam: "small".into(),
        generated_at: "2026-12-05T00:00:00Z".into(),
        results: to_polars(&schema, &[results]).unwrap(),
        answers: to_polars(&answers_schema, &[answers]).unwrap(),
        durations: to_polars(&durations_schema, &[durations]).unwrap(),
        items: (1..=3)
            .map(|i| ItemInfo {
                item: format!("q{i}"),
                question: format!("Question {i}?"),
                options: OPTIONS.iter().map(|o| o.to_string()).collect(),
                ..Default::default()
            })
            .collect(),
        calibration: None,
        options: ReportOptions::default(),
        adaptive_sessions: Vec::new(),
        roster: Default::default(),
        dif: None,
    }
}

fn near(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: null, expected {want}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got}, expected {want}");
}

/// Moodle's statistics on four attempts of three 1-mark questions, every value worked out
/// by hand from Moodle's formulas (docs.moodle.org/dev/Quiz_statistics_calculations).
#[test]
fn moodle_statistics_of_a_small_quiz_by_hand() {
    // Marks (q1 q2 q3) and totals T:  A 1 1 1 = 3,  B 1 1 0 = 2,  C 1 0 1 = 2,  D 0 0 0 = 0.
    let report = build_report(small_input(&[
        ("A", "a@x", "2026-12-01T10:00:00Z", [1, 1, 1]),
        ("B", "b@x", "2026-12-01T11:00:00Z", [1, 1, 0]),
        ("C", "c@x", "2026-12-01T12:00:00Z", [1, 0, 1]),
        ("D", "d@x", "2026-12-01T13:00:00Z", [0, 0, 0]),
    ]))
    .unwrap();
    let m = &report.moodle;
    let ids: Vec<&str> = m.questions.iter().map(|q| q.item.as_str()).collect();
    assert_eq!(ids, ["q1", "q2", "q3"]);
    let (q1, q2, q3) = (&m.questions[0], &m.questions[1], &m.questions[2]);
    // Facility: mean mark / 1. q1: 3/4; q2, q3: 2/4.
    near(q1.facility_index, 75.0, "q1 facility");
    near(q2.facility_index, 50.0, "q2 facility");
    near(q3.facility_index, 50.0, "q3 facility");
    // SD (n − 1): q1 Σ(x − .75)² = 3·.0625 + .5625 = .75, /3 = .25, √ = .5;
    // q2: 4·.25/3 = 1/3, √(1/3) = .57735…
    near(q1.standard_deviation, 50.0, "q1 sd");
    near(q2.standard_deviation, 100.0 / 3f64.sqrt(), "q2 sd");
    near(q3.standard_deviation, 100.0 / 3f64.sqrt(), "q3 sd");
    // Random guess: 1 / 4 options. Intended weight: 1 mark of 3.
    near(q1.random_guess_score, 25.0, "q1 random guess");
    near(q1.intended_weight, 100.0 / 3.0, "q1 intended weight");
    // C(x, T), T − mean = (1.25, .25, .25, −1.75):
    // q1: (.25·1.25 + .25·.25 + .25·.25 + .75·1.75)/3 = 1.75/3 = 7/12;
    // q2: (.5·1.25 + .5·.25 − .5·.25 + .5·1.75)/3 = .5; q3 likewise .5.
    // EW1 = √(7/12) / (√(7/12) + 2·√.5) = .763763/2.177977 = 35.0675…%.
    let denominator = (7.0f64 / 12.0).sqrt() + 2.0 * 0.5f64.sqrt();
    near(
        q1.effective_weight,
        100.0 * (7.0f64 / 12.0).sqrt() / denominator,
        "q1 ew",
    );
    near(
        q2.effective_weight,
        100.0 * 0.5f64.sqrt() / denominator,
        "q2 ew",
    );
    assert!(!q1.negative_covariance);
    // Discrimination index r(x, T − x): q1 rest = (2, 1, 1, 0), C = 1/3, V(rest) = 2/3,
    // V(x) = 1/4: r = (1/3)/√(1/6) = √6/3 = .816497. q2 rest = (2, 1, 2, 0): C = 1/6,
    // V(rest) = 11/12, V(x) = 1/3: r = (1/6)/√(11/36) = 1/√11 = .301511.
    near(q1.discrimination_index, 100.0 * 6f64.sqrt() / 3.0, "q1 di");
    near(q2.discrimination_index, 100.0 / 11f64.sqrt(), "q2 di");
    near(q3.discrimination_index, 100.0 / 11f64.sqrt(), "q3 di");
    // Discriminative efficiency: C over C_max of both lists sorted. q1: x (0,1,1,1),
    // rest (0,1,1,2): C_max = (.75·1 + .25·1)/3 = 1/3 = C → 100%. q2: x (0,0,1,1), rest
    // (0,1,2,2): C_max = (.5·1.25 + .5·.25 + .5·.75 + .5·.75)/3 = .5 → (1/6)/.5 = 33.3%.
    near(q1.discriminative_efficiency, 100.0, "q1 de");
    near(q2.discriminative_efficiency, 100.0 / 3.0, "q2 de");
    let t = &m.test;
    assert_eq!(t.attempts, 4);
    assert_eq!(t.max_score, 3.0);
    // Mean 7/4; median (2 + 2)/2; V(T) = (1.5625 + .0625 + .0625 + 3.0625)/3 = 19/12.
    near(t.mean, 1.75, "mean");
    near(t.median, 2.0, "median");
    near(t.standard_deviation, (19.0f64 / 12.0).sqrt(), "sd");
    near(t.mean_percentage, 100.0 * 1.75 / 3.0, "mean %");
    // m3 = (1.953125 + .015625 + .015625 − 5.359375)/4 = −.84375, k3 = 16·m3/(3·2) = −2.25,
    // skewness = −2.25 / (19/12)^1.5 = −1.129338.
    near(t.skewness, -2.25 / (19.0f64 / 12.0).powf(1.5), "skewness");
    // m2 = 1.1875, m4 = 11.828125/4; k4 = 16·(5·m4 − 9·m2²)/6 = 67/12;
    // kurtosis = (67/12)/(19/12)² = 804/361.
    near(t.kurtosis, 804.0 / 361.0, "kurtosis");
    // CIC = 100 · 3/2 · (1 − (1/4 + 1/3 + 1/3)/(19/12)) = 150 · 8/19 = 1200/19 %.
    near(t.coefficient_of_internal_consistency, 1200.0 / 19.0, "cic");
    // ER = 100·√(1 − 12/19) = 100·√(7/19); SE = √(7/19)·√(19/12) = √(7/12).
    near(t.error_ratio, 100.0 * (7.0f64 / 19.0).sqrt(), "error ratio");
    near(t.standard_error, (7.0f64 / 12.0).sqrt(), "standard error");
    // The same alpha as the reliability section.
    near(report.reliability.alpha, 12.0 / 19.0, "alpha");

    let csv = render::csv_table(&report, "moodle_questions").unwrap();
    assert!(csv.starts_with("item,question,max_mark,facility_index,standard_deviation"));
    assert_eq!(csv.lines().count(), 4);
    assert!(
        render::csv_table(&report, "moodle_test")
            .unwrap()
            .contains("error_ratio,")
    );
    let html = render::html(&report);
    assert!(html.contains("Moodle quiz statistics") && html.contains("id=\"moodle-questions\""));
}

/// Six results of three students: a three times (33%, 100%, 67%), b twice (33% and 33%:
/// a tie), c once.
fn repeated_attempts() -> ReportInput {
    small_input(&[
        ("r1", "a@x", "2026-12-01T10:00:00Z", [1, 0, 0]),
        ("r2", "a@x", "2026-12-02T10:00:00Z", [1, 1, 1]),
        ("r3", "a@x", "2026-12-03T10:00:00Z", [1, 1, 0]),
        ("r4", "b@x", "2026-12-01T12:00:00Z", [0, 0, 1]),
        ("r5", "b@x", "2026-12-03T12:00:00Z", [0, 1, 0]),
        ("r6", "c@x", "2026-12-02T09:00:00Z", [1, 1, 1]),
    ])
}

fn with_options(attempts: Option<&str>, from: Option<&str>, to: Option<&str>) -> ExamReport {
    let mut input = repeated_attempts();
    input.options = ReportOptions::parse(attempts, from, to).unwrap();
    build_report(input).unwrap()
}

fn counted(report: &ExamReport) -> Vec<&str> {
    let mut ids: Vec<&str> = report
        .students
        .iter()
        .map(|s| s.document_id.as_str())
        .collect();
    ids.sort();
    ids
}

fn facilities(report: &ExamReport) -> Vec<f64> {
    report.items.iter().map(|i| i.p_value.unwrap()).collect()
}

#[test]
fn attempts_choose_which_results_count() {
    // first: r1 (1 0 0), r4 (0 0 1), r6 (1 1 1).
    let first = with_options(None, None, None);
    assert_eq!(first.options.attempts, AttemptSelection::First);
    assert_eq!(counted(&first), ["r1", "r4", "r6"]);
    assert_eq!(facilities(&first), [2.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0]);
    assert_eq!((first.summary.results, first.summary.takers), (3, 3));
    assert_eq!(first.reliability.persons, 3);
    assert_eq!(first.moodle.test.attempts, 3);
    near(
        first.moodle.questions[1].facility_index,
        100.0 / 3.0,
        "first q2",
    );
    // The distractor table counts the same three results.
    let q2_answers: u64 = first
        .distractors
        .iter()
        .filter(|d| d.item == "q2")
        .map(|d| d.count)
        .sum();
    assert_eq!(q2_answers, 3);
    // last: r3 (1 1 0), r5 (0 1 0), r6.
    let last = with_options(Some("last"), None, None);
    assert_eq!(counted(&last), ["r3", "r5", "r6"]);
    assert_eq!(facilities(&last), [2.0 / 3.0, 1.0, 1.0 / 3.0]);
    // highest: a's r2 (100%); b's 33% tie goes to the earlier r4; c's r6.
    let highest = with_options(Some("highest"), None, None);
    assert_eq!(counted(&highest), ["r2", "r4", "r6"]);
    assert_eq!(facilities(&highest), [2.0 / 3.0, 2.0 / 3.0, 1.0]);
    // all six: q1 right in r1 r2 r3 r6, q2 in r2 r3 r5 r6, q3 in r2 r4 r6.
    let all = with_options(Some("all"), None, None);
    assert_eq!(counted(&all), ["r1", "r2", "r3", "r4", "r5", "r6"]);
    assert_eq!(facilities(&all), [4.0 / 6.0, 4.0 / 6.0, 3.0 / 6.0]);
    assert_eq!(all.moodle.test.attempts, 6);
    assert_eq!(
        serde_json::to_value(&all.options).unwrap(),
        serde_json::json!({"attempts": "all", "from": null, "to": null, "group": null})
    );
}

#[test]
fn a_date_range_limits_the_results_before_attempts_are_chosen() {
    // 2 December only (a plain `to` date is the whole day): r6 at 09:00, r2 at 10:00.
    let day = with_options(Some("all"), Some("2026-12-02"), Some("2026-12-02"));
    assert_eq!(counted(&day), ["r2", "r6"]);
    assert_eq!(facilities(&day), [1.0, 1.0, 1.0]);
    // Time on task: the attempt that finished on 2 December.
    assert_eq!(day.time_on_task.attempts, 1);
    // From 2 December on, first per student: a's r2, b's r5, c's r6.
    let later = with_options(None, Some("2026-12-02T00:00:00Z"), None);
    assert_eq!(counted(&later), ["r2", "r5", "r6"]);
    assert_eq!(facilities(&later), [2.0 / 3.0, 1.0, 2.0 / 3.0]);
    // Up to an instant: only r1 (10:00) on 1 December, r4 is at 12:00.
    let morning = with_options(Some("all"), None, Some("2026-12-01T11:00:00Z"));
    assert_eq!(counted(&morning), ["r1"]);
    assert_eq!(
        morning.summary.last_submitted_at.as_deref(),
        Some("2026-12-01T10:00:00Z")
    );
    let html = render::html(&morning);
    assert!(
        html.contains("submitted until 2026-12-01T11:00:00Z"),
        "the page says what counts"
    );
    // Nothing in range: an empty report, not an error.
    let none = with_options(None, Some("2027-01-01"), None);
    assert_eq!(none.summary.results, 0);
    assert_eq!(none.moodle.test.attempts, 0);
}

/// The server names each answer's result by its row: the rows are renumbered after the
/// selection, giving the same report as by document id.
#[test]
fn selected_answers_by_result_row_match_by_id() {
    for attempts in ["first", "last", "highest"] {
        let mut by_id = repeated_attempts();
        by_id.options = ReportOptions::parse(Some(attempts), None, None).unwrap();
        let mut by_row = repeated_attempts();
        by_row.options = by_id.options.clone();
        let rows: Vec<u32> = by_row
            .answers
            .column("document_id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|id| id.unwrap()[1..].parse::<u32>().unwrap() - 1)
            .collect();
        let mut answers = by_row.answers.drop("document_id").unwrap();
        answers
            .with_column(polars::prelude::Column::new("person".into(), rows))
            .unwrap();
        by_row.answers = answers;
        // As JSON: an undefined correlation is NaN in the structs (null in JSON).
        let json = |input| serde_json::to_value(build_report(input).unwrap()).unwrap();
        let (a, b) = (json(by_id), json(by_row));
        for part in ["summary", "items", "moodle", "distractors", "students"] {
            assert_eq!(a[part], b[part], "{attempts}: {part}");
        }
    }
}

#[test]
fn the_adaptive_section_counts_sessions_of_the_selected_results() {
    let mut input = repeated_attempts();
    let session = |id: &str, result: &str, theta: f64, items: &[&str], stop: &str, version| {
        crate::AdaptiveSession {
            session: id.into(),
            result_id: Some(result.into()),
            theta,
            se: 0.3,
            items: items.iter().map(|i| i.to_string()).collect(),
            stop_reason: stop.into(),
            calibration_version: version,
        }
    };
    let sessions = vec![
        session("s1", "r1", -1.2, &["q1", "q2"], "se_reached", 1),
        session("s4", "r4", 0.3, &["q1", "q3"], "max_length", 1),
        session("s6", "r6", 5.0, &["q1", "q2", "q3"], "se_reached", 2),
        // r2 is not a first attempt: left out.
        session("s2", "r2", 1.0, &["q2"], "max_length", 2),
    ];
    input.adaptive_sessions = sessions.clone();
    // DIF on an adaptive exam matches on each result's θ.
    let asking_dif = |sessions: Vec<crate::AdaptiveSession>| {
        let mut with_dif = repeated_attempts();
        with_dif.adaptive_sessions = sessions;
        for (email, campus) in [("a@x", "north"), ("b@x", "south"), ("c@x", "south")] {
            with_dif.roster.insert(
                email.into(),
                [("campus".to_string(), campus.to_string())].into(),
            );
        }
        with_dif.dif = Some(crate::DifRequest {
            column: "campus".into(),
            reference: None,
        });
        with_dif
    };
    let (with_dif, fixed_form) = (asking_dif(sessions), asking_dif(Vec::new()));
    let dif = build_report(with_dif).unwrap().dif.expect("a DIF section");
    assert_eq!(dif.matching, "ability");
    assert_eq!(dif.groups.values().sum::<usize>(), 3, "{dif:?}");
    assert_eq!(dif.reference.as_deref(), Some("south"));
    assert!(dif.skipped[0].contains("at least 30"), "{:?}", dif.skipped);
    let dif = build_report(fixed_form)
        .unwrap()
        .dif
        .expect("a DIF section");
    assert_eq!(dif.matching, "total_score");
    assert_eq!(dif.incomplete, 0, "every first attempt answered all three");

    let report = build_report(input).unwrap();
    let a = report.adaptive.as_ref().expect("an adaptive section");
    assert_eq!(a.sessions, 3);
    // Exposure: q1 in 3 of 3 sessions, q2 and q3 in 2.
    let exposure: Vec<(&str, u64, f64)> = a
        .exposure
        .iter()
        .map(|e| (e.item.as_str(), e.sessions, e.exposure_rate))
        .collect();
    assert_eq!(
        exposure,
        [("q1", 3, 1.0), ("q2", 2, 2.0 / 3.0), ("q3", 2, 2.0 / 3.0)]
    );
    // Pairs: s1–s4 share {q1}, s1–s6 {q1, q2}, s4–s6 {q1, q3}: (1 + 2 + 2)/3 = 5/3 items;
    // mean length 7/3, so an overlap rate of 5/7.
    near(a.mean_shared_items, 5.0 / 3.0, "shared items");
    near(a.overlap_rate, 5.0 / 7.0, "overlap");
    // θ: −1.2, 0.3, 5.0 (5.0 falls in the last bin, [3.5, 4)).
    assert_eq!(a.theta.count, 3);
    near(a.theta.mean, 4.1 / 3.0, "theta mean");
    near(a.theta.median, 0.3, "theta median");
    assert_eq!(a.theta.bins.len(), 16);
    assert_eq!(a.theta.bins[15].count, 1);
    assert_eq!(a.theta.bins[5].count, 1, "{:?}", a.theta.bins[5]);
    assert_eq!(a.theta.bins[8].count, 1);
    assert_eq!(a.theta.bins.iter().map(|b| b.count).sum::<u64>(), 3);
    // Lengths 2, 2, 3: one bin per length.
    assert_eq!(
        a.test_length
            .bins
            .iter()
            .map(|b| (b.from, b.count))
            .collect::<Vec<_>>(),
        [(2.0, 2), (3.0, 1)]
    );
    let reasons: Vec<(&str, u64)> = a
        .stop_reasons
        .iter()
        .map(|r| (r.stop_reason.as_str(), r.sessions))
        .collect();
    assert_eq!(reasons, [("se_reached", 2), ("max_length", 1)]);
    let versions: Vec<(i64, u64)> = a
        .calibration_versions
        .iter()
        .map(|v| (v.calibration_version, v.sessions))
        .collect();
    assert_eq!(versions, [(1, 2), (2, 1)]);
    let csv = render::csv_table(&report, "adaptive_exposure").unwrap();
    assert_eq!(csv.lines().next(), Some("item,sessions,exposure_rate"));
    assert_eq!(csv.lines().count(), 4);
    assert!(
        render::csv_table(&report, "adaptive")
            .unwrap()
            .contains("overlap_rate,")
    );
    let dist = render::csv_table(&report, "adaptive_distributions").unwrap();
    assert!(dist.contains("theta,3.5,4.0,1"), "{dist}");
    assert!(render::html(&report).contains("id=\"adaptive-exposure\""));

    // No session: no section, and the adaptive tables are headers only.
    let plain = build_report(repeated_attempts()).unwrap();
    assert_eq!(plain.adaptive, None);
    assert_eq!(
        serde_json::to_value(&plain).unwrap()["adaptive"],
        serde_json::Value::Null
    );
    let csv = render::csv_table(&plain, "adaptive_stop_reasons").unwrap();
    assert_eq!(csv.lines().count(), 1);
}

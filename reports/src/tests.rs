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
use crate::{ExamReport, ItemInfo, ReportInput, build_report, render};

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
    assert_eq!(
        names,
        [
            "distractors.csv",
            "histogram.csv",
            "items.csv",
            "students.csv",
            "summary.csv",
            "trend.csv"
        ]
    );
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

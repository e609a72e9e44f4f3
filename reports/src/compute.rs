//! The report's statistics: the result-level parts with polars' lazy API, the per-answer
//! item analysis as sums over dense integer codes (see `item_analysis`).

use std::collections::HashMap;

use polars::prelude::*;

use crate::{
    DistractorRow, ExamReport, HistogramBin, ItemFlag, ItemInfo, ItemRow, MoodleQuestion,
    MoodleStatistics, MoodleTest, Reliability, ReportError, ReportInput, StudentRow, Summary,
    TimeOnTask, TrendPoint, thresholds,
};

type Result<T> = std::result::Result<T, ReportError>;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Share of persons in each of the upper and lower groups.
const GROUP_SHARE: f64 = 0.27;
/// Shown for a response without an answer in the distractor table.
pub(crate) const NO_ANSWER: &str = "(no answer)";

fn fail(part: &'static str) -> impl Fn(PolarsError) -> ReportError {
    move |e| ReportError::Compute {
        part,
        message: e.to_string(),
    }
}

fn require(df: &DataFrame, frame: &'static str, columns: &[&'static str]) -> Result<()> {
    for &column in columns {
        if df.column(column).is_err() {
            return Err(ReportError::MissingColumn { frame, column });
        }
    }
    Ok(())
}

/// A column as `f64` values (NaN as null).
fn f64s(df: &DataFrame, name: &str, part: &'static str) -> Result<Vec<Option<f64>>> {
    let column = df.column(name).map_err(fail(part))?;
    let cast = column.cast(&DataType::Float64).map_err(fail(part))?;
    let values = cast.f64().map_err(fail(part))?;
    Ok(values.iter().map(|v| v.filter(|x| x.is_finite())).collect())
}

fn u64s(df: &DataFrame, name: &str, part: &'static str) -> Result<Vec<u64>> {
    Ok(f64s(df, name, part)?
        .into_iter()
        .map(|v| v.unwrap_or(0.0) as u64)
        .collect())
}

fn i64s(df: &DataFrame, name: &str, part: &'static str) -> Result<Vec<Option<i64>>> {
    let column = df.column(name).map_err(fail(part))?;
    let cast = column.cast(&DataType::Int64).map_err(fail(part))?;
    Ok(cast.i64().map_err(fail(part))?.iter().collect())
}

fn strings(df: &DataFrame, name: &str, part: &'static str) -> Result<Vec<Option<String>>> {
    let column = df.column(name).map_err(fail(part))?;
    let cast = column.cast(&DataType::String).map_err(fail(part))?;
    Ok(cast
        .str()
        .map_err(fail(part))?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

fn first_f64(df: &DataFrame, name: &str, part: &'static str) -> Result<Option<f64>> {
    Ok(f64s(df, name, part)?.first().copied().flatten())
}

fn timestamp(micros: Option<i64>) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(micros?)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn day(days: i64) -> String {
    chrono::DateTime::from_timestamp(days * 86_400, 0)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

/// Days since the epoch, rounded down also before 1970 (polars' floor division needs a
/// feature that is not built; `/` on integers truncates).
fn floor_day(micros: Expr) -> Expr {
    let rem = (micros.clone() % lit(MICROS_PER_DAY) + lit(MICROS_PER_DAY)) % lit(MICROS_PER_DAY);
    (micros - rem) / lit(MICROS_PER_DAY)
}

fn f(name: &str) -> Expr {
    col(name).cast(DataType::Float64)
}

/// Builds the report of `input` (see [`ReportInput`] for the columns it needs).
pub fn build_report(mut input: ReportInput) -> Result<ExamReport> {
    require(
        &input.results,
        "results",
        &[
            "document_id",
            "email",
            "score",
            "total",
            "percentage",
            "result",
            "submitted_at_us",
        ],
    )?;
    require(
        &input.answers,
        "answers",
        &[
            "item",
            "question",
            "user_answer",
            "correct_answer",
            "is_correct",
        ],
    )?;
    if input.answers.column("person").is_err() {
        require(&input.answers, "answers", &["document_id"])?;
    }
    require(&input.durations, "durations", &["duration_seconds"])?;
    timed("selecting results", || crate::options::apply(&mut input))?;
    let (dif_data, dif_theta) = match &input.dif {
        Some(_) => (
            Some(timed("dif data", || dif_data(&input))?),
            ability_per_result(&input)?,
        ),
        None => (None, None),
    };
    let result_ids = input
        .results
        .column("document_id")
        .and_then(|c| c.cast(&DataType::String))
        .map_err(fail("item analysis"))?;
    let results = input.results.lazy();
    // The result-level parts and the item analysis read different frames: both at once.
    let (result_parts, analysis) = rayon::join(
        || -> Result<_> {
            Ok((
                timed("summary", || summary(results.clone()))?,
                timed("histogram", || histogram(results.clone()))?,
                timed("trend", || trend(results.clone()))?,
                timed("students", || students(results))?,
            ))
        },
        || item_analysis(input.answers, &result_ids, &input.items),
    );
    let (summary, histogram, trend, students) = result_parts?;
    let analysis = analysis?;
    let time_on_task = timed("time on task", || time_on_task(input.durations.lazy()))?;
    let adaptive = crate::adaptive::adaptive_report(&input.adaptive_sessions, &input.items);
    let mut items = analysis.items;
    let dif = match (&input.dif, dif_data) {
        (Some(request), Some((item_ids, rows, emails))) => {
            let groups: Vec<Option<String>> = emails
                .iter()
                .map(|e| {
                    e.as_ref()
                        .and_then(|e| input.roster.get(&e.trim().to_lowercase()))
                        .and_then(|g| g.get(&request.column).cloned())
                })
                .collect();
            let section = timed("dif", || {
                Ok(crate::dif::dif_section(
                    &request.column,
                    &item_ids,
                    &rows,
                    &groups,
                    request.reference.as_deref(),
                    dif_theta.as_deref(),
                ))
            })?;
            for row in &mut items {
                row.flags.extend(crate::dif::dif_flags(&section, &row.item));
            }
            Some(section)
        }
        _ => None,
    };
    Ok(ExamReport {
        exam: input.exam,
        generated_at: input.generated_at,
        summary,
        reliability: analysis.reliability,
        histogram,
        items,
        distractors: analysis.distractors,
        time_on_task,
        trend,
        students,
        calibration: input.calibration,
        options: input.options,
        moodle: analysis.moodle,
        adaptive,
        dif,
    })
}

/// Item ids (the bank's order, then any other answered item), each selected result's
/// right/wrong per item (`None`: not answered) and its email, for the DIF section.
type DifData = (Vec<String>, Vec<Vec<Option<bool>>>, Vec<Option<String>>);

fn dif_data(input: &ReportInput) -> Result<DifData> {
    const PART: &str = "dif";
    let emails = strings(&input.results, "email", PART)?;
    let ids = strings(&input.results, "document_id", PART)?;
    let row_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.as_deref().map(|id| (id, i)))
        .collect();
    let persons: Vec<Option<usize>> = if input.answers.column("person").is_ok() {
        i64s(&input.answers, "person", PART)?
            .into_iter()
            .map(|p| p.and_then(|p| usize::try_from(p).ok()))
            .collect()
    } else {
        strings(&input.answers, "document_id", PART)?
            .into_iter()
            .map(|id| id.and_then(|id| row_of.get(id.as_str()).copied()))
            .collect()
    };
    let answer_items = strings(&input.answers, "item", PART)?;
    let correct = f64s(&input.answers, "is_correct", PART)?;
    let mut item_ids: Vec<String> = input.items.iter().map(|i| i.item.clone()).collect();
    let mut column: HashMap<String, usize> = item_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    for item in answer_items.iter().flatten() {
        if !column.contains_key(item) {
            column.insert(item.clone(), item_ids.len());
            item_ids.push(item.clone());
        }
    }
    let mut rows = vec![vec![None; item_ids.len()]; emails.len()];
    for ((person, item), right) in persons.iter().zip(&answer_items).zip(&correct) {
        if let (Some(p), Some(item), Some(right)) = (person, item, right)
            && *p < rows.len()
        {
            let cell = &mut rows[*p][column[item]];
            *cell = Some(cell.unwrap_or(false) || *right > 0.5);
        }
    }
    Ok((item_ids, rows, emails))
}

/// Each selected result's final θ when the exam ran adaptively (NaN for a result without
/// an adaptive session), for DIF matched on ability; `None` for a fixed-form exam.
fn ability_per_result(input: &ReportInput) -> Result<Option<Vec<f64>>> {
    if input.adaptive_sessions.is_empty() {
        return Ok(None);
    }
    let theta_of: HashMap<&str, f64> = input
        .adaptive_sessions
        .iter()
        .filter_map(|s| s.result_id.as_deref().map(|id| (id, s.theta)))
        .collect();
    let ids = strings(&input.results, "document_id", "dif")?;
    Ok(Some(
        ids.iter()
            .map(|id| {
                id.as_deref()
                    .and_then(|id| theta_of.get(id).copied())
                    .unwrap_or(f64::NAN)
            })
            .collect(),
    ))
}

/// Runs one part of the report, logging its time at debug level (`EXAMFLOW_LOG=debug`).
fn timed<T>(part: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = std::time::Instant::now();
    let done = work();
    tracing::debug!(
        part,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "report part computed"
    );
    done
}

fn summary(results: LazyFrame) -> Result<Summary> {
    const PART: &str = "summary";
    let df = results
        .select([
            len().alias("results"),
            col("email").n_unique().alias("takers"),
            f("percentage").mean().alias("mean"),
            f("percentage").median().alias("median"),
            f("percentage").std(1).alias("sd"),
            f("percentage").min().alias("min"),
            f("percentage").max().alias("max"),
            f("score").mean().alias("mean_score"),
            col("result")
                .eq(lit("passed"))
                .cast(DataType::Int64)
                .sum()
                .alias("passed"),
            col("result")
                .eq(lit("failed"))
                .cast(DataType::Int64)
                .sum()
                .alias("failed"),
            col("submitted_at_us")
                .cast(DataType::Int64)
                .min()
                .alias("first"),
            col("submitted_at_us")
                .cast(DataType::Int64)
                .max()
                .alias("last"),
        ])
        .collect()
        .map_err(fail(PART))?;
    let results = u64s(&df, "results", PART)?[0];
    let passed = u64s(&df, "passed", PART)?[0];
    let failed = u64s(&df, "failed", PART)?[0];
    Ok(Summary {
        results,
        takers: if results == 0 {
            0
        } else {
            u64s(&df, "takers", PART)?[0]
        },
        mean_percentage: first_f64(&df, "mean", PART)?,
        median_percentage: first_f64(&df, "median", PART)?,
        sd_percentage: first_f64(&df, "sd", PART)?,
        min_percentage: first_f64(&df, "min", PART)?,
        max_percentage: first_f64(&df, "max", PART)?,
        mean_score: first_f64(&df, "mean_score", PART)?,
        passed,
        failed,
        pass_rate: (passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64),
        first_submitted_at: timestamp(i64s(&df, "first", PART)?[0]),
        last_submitted_at: timestamp(i64s(&df, "last", PART)?[0]),
    })
}

fn histogram(results: LazyFrame) -> Result<Vec<HistogramBin>> {
    const PART: &str = "histogram";
    // Truncation is the floor here: percentages below 0 are clamped to the first bin anyway.
    let bin = (f("percentage") / lit(10.0)).cast(DataType::Int64);
    let df = results
        .filter(col("percentage").is_not_null())
        .select([when(bin.clone().gt(lit(9i64)))
            .then(lit(9i64))
            .otherwise(
                when(bin.clone().lt(lit(0i64)))
                    .then(lit(0i64))
                    .otherwise(bin),
            )
            .alias("bin")])
        .group_by([col("bin")])
        .agg([len().alias("count")])
        .collect()
        .map_err(fail(PART))?;
    let mut counts = [0u64; 10];
    for (bin, count) in i64s(&df, "bin", PART)?
        .into_iter()
        .zip(u64s(&df, "count", PART)?)
    {
        if let Some(bin) = bin {
            counts[bin.clamp(0, 9) as usize] += count;
        }
    }
    Ok(counts
        .iter()
        .enumerate()
        .map(|(i, &count)| HistogramBin {
            from: i as u32 * 10,
            to: i as u32 * 10 + 10,
            count,
        })
        .collect())
}

fn trend(results: LazyFrame) -> Result<Vec<TrendPoint>> {
    const PART: &str = "trend";
    let df = results
        .filter(col("submitted_at_us").is_not_null())
        .group_by([floor_day(col("submitted_at_us").cast(DataType::Int64)).alias("day")])
        .agg([
            len().alias("results"),
            f("percentage").mean().alias("mean"),
            col("result")
                .eq(lit("passed"))
                .cast(DataType::Int64)
                .sum()
                .alias("passed"),
            col("result")
                .eq(lit("failed"))
                .cast(DataType::Int64)
                .sum()
                .alias("failed"),
        ])
        .sort(["day"], SortMultipleOptions::default())
        .collect()
        .map_err(fail(PART))?;
    let days = i64s(&df, "day", PART)?;
    let counts = u64s(&df, "results", PART)?;
    let means = f64s(&df, "mean", PART)?;
    let passed = u64s(&df, "passed", PART)?;
    let failed = u64s(&df, "failed", PART)?;
    Ok((0..df.height())
        .map(|i| TrendPoint {
            day: day(days[i].unwrap_or_default()),
            results: counts[i],
            mean_percentage: means[i],
            pass_rate: (passed[i] + failed[i] > 0)
                .then(|| passed[i] as f64 / (passed[i] + failed[i]) as f64),
        })
        .collect())
}

fn students(results: LazyFrame) -> Result<Vec<StudentRow>> {
    const PART: &str = "student table";
    let df = results
        .sort(
            ["email", "submitted_at_us", "document_id"],
            SortMultipleOptions::default().with_nulls_last(true),
        )
        .collect()
        .map_err(fail(PART))?;
    let ids = strings(&df, "document_id", PART)?;
    let emails = strings(&df, "email", PART)?;
    let scores = f64s(&df, "score", PART)?;
    let totals = f64s(&df, "total", PART)?;
    let percentages = f64s(&df, "percentage", PART)?;
    let outcomes = strings(&df, "result", PART)?;
    let submitted = i64s(&df, "submitted_at_us", PART)?;
    Ok((0..df.height())
        .map(|i| StudentRow {
            document_id: ids[i].clone().unwrap_or_default(),
            email: emails[i].clone().unwrap_or_default(),
            score: scores[i],
            total: totals[i],
            percentage: percentages[i],
            result: outcomes[i].clone(),
            submitted_at: timestamp(submitted[i]),
        })
        .collect())
}

fn time_on_task(durations: LazyFrame) -> Result<TimeOnTask> {
    const PART: &str = "time on task";
    let seconds = || f("duration_seconds");
    let df = durations
        .filter(col("duration_seconds").is_not_null())
        .select([
            len().alias("n"),
            seconds().mean().alias("mean"),
            seconds().median().alias("median"),
            seconds()
                .quantile(lit(0.9), QuantileMethod::Linear)
                .alias("p90"),
            seconds().min().alias("min"),
            seconds().max().alias("max"),
        ])
        .collect()
        .map_err(fail(PART))?;
    Ok(TimeOnTask {
        attempts: u64s(&df, "n", PART)?[0],
        mean_seconds: first_f64(&df, "mean", PART)?,
        median_seconds: first_f64(&df, "median", PART)?,
        p90_seconds: first_f64(&df, "p90", PART)?,
        min_seconds: first_f64(&df, "min", PART)?,
        max_seconds: first_f64(&df, "max", PART)?,
    })
}

struct ItemAnalysis {
    reliability: Reliability,
    items: Vec<ItemRow>,
    distractors: Vec<DistractorRow>,
    moodle: MoodleStatistics,
}

/// Reliability, the item table and the distractor table, from the question-level rows.
fn item_analysis(
    answers: DataFrame,
    result_ids: &Column,
    bank: &[ItemInfo],
) -> Result<ItemAnalysis> {
    const PART: &str = "item analysis";
    // The string keys become dense integer codes in one pass each, so the groupings and
    // the join below hash integers instead of 5 million strings several times over.
    let as_strings = |name: &str| -> Result<Column> {
        answers
            .column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(fail(PART))
    };
    let str_of = |c: &Column| -> Result<StringChunked> { Ok(c.str().map_err(fail(PART))?.clone()) };
    let (items_text, given) = (as_strings("item")?, as_strings("user_answer")?);
    let (items_text, given) = (str_of(&items_text)?, str_of(&given)?);
    let (questions, keys) = (as_strings("question")?, as_strings("correct_answer")?);
    let result_ids = str_of(result_ids)?;
    // Persons: given as the row of the result (`person`), or coded from `document_id`.
    let mut persons = match answers.column("person") {
        Ok(column) => {
            let rows = column.cast(&DataType::UInt32).map_err(fail(PART))?;
            let rows = rows.u32().map_err(fail(PART))?;
            let height = result_ids.len() as u32;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows.iter() {
                match row {
                    Some(row) if row < height => out.push(row),
                    _ => {
                        return Err(ReportError::Compute {
                            part: PART,
                            message: format!(
                                "an answer's person is {row:?}, not a row of the {height} results"
                            ),
                        });
                    }
                }
            }
            Persons::Rows(out)
        }
        Err(_) => Persons::Ids(str_of(&as_strings("document_id")?)?),
    };
    let (person_codes, (item_codes, answer_codes)) = timed("coding", || {
        Ok(rayon::join(
            || match &mut persons {
                Persons::Rows(rows) => Codes {
                    codes: std::mem::take(rows),
                    values: result_ids.iter().collect(),
                    first_row: vec![0; result_ids.len()],
                }
                .sorted(),
                Persons::Ids(ids) => Codes::of(ids).sorted(),
            },
            || rayon::join(|| Codes::of(&items_text), || Codes::of(&given)),
        ))
    })?;
    // Per question: its text and key from its first row (as `first()` in a grouping).
    let (questions, keys) = (str_of(&questions)?, str_of(&keys)?);
    let text_of = |column: &StringChunked| -> Vec<Option<String>> {
        item_codes
            .first_row
            .iter()
            .map(|&row| column.get(row).map(str::to_string))
            .collect()
    };
    let (item_questions, item_keys) = (text_of(&questions), text_of(&keys));
    // Scores as 0/1 (missing = 0), one contiguous column like the codes.
    let x: Vec<f64> = answers
        .column("is_correct")
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(fail(PART))?
        .f64()
        .map_err(fail(PART))?
        .iter()
        .map(|v| v.unwrap_or(0.0))
        .collect();
    drop(answers);
    // From here on every grouping is by a dense integer code, so a group is an index into
    // a vector: counting, not hashing. (Polars' group_by over the same 5 million codes,
    // with the per-row columns it needs materialised, took ≈ 0.45 s of a 1.3 s report.)
    let sums = timed("totals and groups", || {
        Ok(person_sums(
            &person_codes.codes,
            &x,
            person_codes.values.len(),
        ))
    })?;
    let persons = sums.present;
    let options = timed("options", || {
        Ok(option_sums(
            (&item_codes.codes, item_codes.values.len()),
            (&answer_codes.codes, answer_codes.values.len()),
            &person_codes.codes,
            &x,
            &sums,
        ))
    })?;
    let answers_known = answer_codes.values.len() as u64;
    let item_count = item_codes.values.len();
    // Per question: the sums over its answers.
    let mut per_item = vec![OptionSums::default(); item_count];
    for (key, option) in &options {
        per_item[(key / answers_known) as usize].add(option);
    }
    let items: Vec<(usize, OptionSums)> = per_item
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.count > 0.0)
        .collect();

    // Reliability: item variances with missing = 0 over all persons (n − 1 denominator).
    let n = persons as f64;
    let k = items.len() as f64;
    let item_variance: f64 = items
        .iter()
        .map(|(_, s)| {
            let m = s.correct / n;
            n / (n - 1.0) * m * (1.0 - m)
        })
        .sum();
    let total_variance = sums.variance;
    let alpha = total_variance
        .filter(|v| *v > 0.0 && k > 1.0)
        .map(|v| k / (k - 1.0) * (1.0 - item_variance / v));
    let sd = total_variance.map(f64::sqrt);
    let reliability = Reliability {
        persons: persons as u64,
        items: items.len() as u64,
        alpha,
        sem: alpha.zip(sd).map(|(a, sd)| sd * (1.0 - a).max(0.0).sqrt()),
        mean_correct: sums.mean,
        sd_correct: sd,
    };

    // The item table, in bank order, then any other question by id.
    let item_name = |code: usize| -> String {
        item_codes
            .values
            .get(code)
            .copied()
            .flatten()
            .unwrap_or_default()
            .to_string()
    };
    let (question_of, key_of) = (
        by_item(&item_codes.values, &item_questions),
        by_item(&item_codes.values, &item_keys),
    );
    let bank_index: HashMap<&str, &ItemInfo> = bank.iter().map(|i| (i.item.as_str(), i)).collect();
    let mut rows: Vec<ItemRow> = Vec::with_capacity(items.len().max(bank.len()));
    let mut group_sizes: HashMap<String, (u64, u64, u64)> = HashMap::new();
    for (code, s) in &items {
        let id = item_name(*code);
        let info = bank_index.get(id.as_str());
        let n = s.count;
        let p = Some(s.correct / n);
        // x² = x for 0/1 scores; the rest score is raw − x.
        let (sx, sxx) = (s.correct, s.correct);
        let pbis = pearson(n, sx, sxx, s.sum_raw, s.sum_raw2, s.sum_x_raw);
        let (sy, sxy) = (s.sum_raw - sx, s.sum_x_raw - sxx);
        let syy = s.sum_raw2 - 2.0 * s.sum_x_raw + sxx;
        let cit = Some(pearson(n, sx, sxx, sy, syy, sxy));
        let p_upper = (s.upper > 0.0).then(|| s.correct_upper / s.upper);
        let p_lower = (s.lower > 0.0).then(|| s.correct_lower / s.lower);
        group_sizes.insert(id.clone(), (n as u64, s.lower as u64, s.upper as u64));
        rows.push(ItemRow {
            question: info
                .map(|i| i.question.clone())
                .or_else(|| question_of.get(id.as_str()).map(|q| q.to_string()))
                .unwrap_or_default(),
            topic: info.and_then(|i| i.topic.clone()),
            responses: n as u64,
            p_value: p,
            point_biserial: Some(pbis),
            corrected_item_total: cit,
            discrimination_index: p_upper.zip(p_lower).map(|(u, l)| u - l),
            irt_a: info.and_then(|i| i.a),
            irt_b: info.and_then(|i| i.b),
            irt_c: info.and_then(|i| i.c),
            flags: flags(p, cit),
            item: id,
        });
    }
    for info in bank {
        if !group_sizes.contains_key(&info.item) {
            rows.push(ItemRow {
                item: info.item.clone(),
                question: info.question.clone(),
                topic: info.topic.clone(),
                responses: 0,
                p_value: None,
                point_biserial: None,
                corrected_item_total: None,
                discrimination_index: None,
                irt_a: info.a,
                irt_b: info.b,
                irt_c: info.c,
                flags: Vec::new(),
            });
        }
    }
    let bank_order: HashMap<&str, usize> = bank
        .iter()
        .enumerate()
        .map(|(i, info)| (info.item.as_str(), i))
        .collect();
    let order_of = |item: &str| {
        (
            bank_order.get(item).copied().unwrap_or(usize::MAX),
            item.to_string(),
        )
    };
    rows.sort_by_key(|r| order_of(&r.item));

    // The distractor table: every answer given, plus bank options nobody chose.
    let share = |count: u64, of: u64| (of > 0).then(|| count as f64 / of as f64);
    let mut distractors = Vec::with_capacity(options.len());
    let mut seen: HashMap<(String, String), ()> = HashMap::new();
    for (key, sums) in &options {
        let item = item_name((key / answers_known) as usize);
        let answer = answer_codes.values[(key % answers_known) as usize];
        let count = sums.count as u64;
        let (responses, n_lower, n_upper) = group_sizes.get(&item).copied().unwrap_or_default();
        let is_key = answer.is_some_and(|o| key_of.get(item.as_str()) == Some(&o));
        let option = answer.unwrap_or(NO_ANSWER).to_string();
        seen.insert((item.clone(), option.clone()), ());
        distractors.push(DistractorRow {
            item,
            option,
            is_key,
            count,
            share: share(count, responses),
            lower_share: share(sums.lower as u64, n_lower),
            upper_share: share(sums.upper as u64, n_upper),
            mean_correct: Some(sums.sum_raw / sums.count),
        });
    }
    for info in bank {
        let Some(&(responses, n_lower, n_upper)) = group_sizes.get(&info.item) else {
            continue;
        };
        for option in &info.options {
            if seen.contains_key(&(info.item.clone(), option.clone())) {
                continue;
            }
            distractors.push(DistractorRow {
                item: info.item.clone(),
                option: option.clone(),
                is_key: key_of.get(info.item.as_str()) == Some(&option.as_str()),
                count: 0,
                share: share(0, responses),
                lower_share: share(0, n_lower),
                upper_share: share(0, n_upper),
                mean_correct: None,
            });
        }
    }
    // By item (bank order), then the bank's option order, then the answer text.
    let option_order = |item: &str, option: &str| {
        bank_index
            .get(item)
            .and_then(|info| info.options.iter().position(|o| o == option))
            .unwrap_or(usize::MAX)
    };
    distractors.sort_by_key(|d| {
        (
            order_of(&d.item),
            option_order(&d.item, &d.option),
            d.option.clone(),
        )
    });
    let item_ids: Vec<String> = (0..item_codes.values.len()).map(item_name).collect();
    let moodle = timed("moodle statistics", || {
        moodle_statistics(
            &person_codes.codes,
            &sums,
            &item_codes.codes,
            &item_ids,
            &x,
            &rows,
            bank,
        )
    })?;
    Ok(ItemAnalysis {
        reliability,
        items: rows,
        distractors,
        moodle,
    })
}

/// Moodle's quiz statistics: one attempt per person with answer rows, one question (max
/// mark 1) per question with responses, in the item table's order; a question an attempt
/// does not contain is unanswered (mark 0, as Moodle counts it).
fn moodle_statistics(
    persons: &[u32],
    sums: &PersonSums,
    items: &[u32],
    item_ids: &[String],
    x: &[f64],
    rows: &[ItemRow],
    bank: &[ItemInfo],
) -> Result<MoodleStatistics> {
    use examflow_engine::quiz_statistics::{QuizQuestion, quiz_statistics};
    // Questions: the item table's rows with responses, in its order.
    let column_of_id: HashMap<&str, usize> = rows
        .iter()
        .filter(|r| r.responses > 0)
        .enumerate()
        .map(|(i, r)| (r.item.as_str(), i))
        .collect();
    let columns: Vec<&ItemRow> = rows.iter().filter(|r| r.responses > 0).collect();
    let column_of_code: Vec<Option<usize>> = item_ids
        .iter()
        .map(|id| column_of_id.get(id.as_str()).copied())
        .collect();
    // Attempts: the persons with answer rows, in code (id) order.
    let mut attempt_of = vec![usize::MAX; sums.answered.len()];
    let mut attempts = 0usize;
    for (person, answered) in sums.answered.iter().enumerate() {
        if *answered {
            attempt_of[person] = attempts;
            attempts += 1;
        }
    }
    let mut marks = vec![vec![None; columns.len()]; attempts];
    for ((&person, &item), &x) in persons.iter().zip(items).zip(x) {
        let attempt = attempt_of[person as usize];
        if let Some(column) = column_of_code[item as usize] {
            // A question twice in one result: its best mark.
            let mark: &mut Option<f64> = &mut marks[attempt][column];
            *mark = Some(mark.map_or(x, |m: f64| m.max(x)));
        }
    }
    let bank_index: HashMap<&str, &ItemInfo> = bank.iter().map(|i| (i.item.as_str(), i)).collect();
    let questions: Vec<QuizQuestion> = columns
        .iter()
        .map(|row| QuizQuestion {
            id: row.item.clone(),
            max_mark: 1.0,
            // Every bank question is single-answer multiple choice.
            random_guess_score: bank_index
                .get(row.item.as_str())
                .map(|info| info.options.len())
                .filter(|&n| n >= 2)
                .map(|n| 1.0 / n as f64),
        })
        .collect();
    let stats = quiz_statistics(&questions, &marks).map_err(|e| ReportError::Compute {
        part: "moodle statistics",
        message: e.to_string(),
    })?;
    let defined = |v: f64| v.is_finite().then_some(v);
    let t = &stats.test;
    let percent = |v: f64| {
        defined(v)
            .filter(|_| t.max_score > 0.0)
            .map(|v| 100.0 * v / t.max_score)
    };
    Ok(MoodleStatistics {
        test: MoodleTest {
            attempts: t.n_attempts as u64,
            max_score: t.max_score,
            mean: defined(t.mean),
            median: defined(t.median),
            standard_deviation: defined(t.sd),
            mean_percentage: percent(t.mean),
            median_percentage: percent(t.median),
            standard_deviation_percentage: percent(t.sd),
            skewness: defined(t.skewness),
            kurtosis: defined(t.kurtosis),
            coefficient_of_internal_consistency: defined(t.cic),
            error_ratio: defined(t.error_ratio),
            standard_error: defined(t.standard_error),
        },
        questions: stats
            .questions
            .iter()
            .zip(&columns)
            .map(|(q, row)| MoodleQuestion {
                item: q.question.clone(),
                question: row.question.clone(),
                max_mark: q.max_mark,
                facility_index: defined(q.facility),
                standard_deviation: defined(q.sd),
                random_guess_score: defined(q.random_guess_score),
                intended_weight: defined(q.intended_weight),
                effective_weight: defined(q.effective_weight),
                negative_covariance: q.negative_covariance,
                discrimination_index: defined(q.discrimination_index),
                discriminative_efficiency: defined(q.discriminative_efficiency),
            })
            .collect(),
    })
}

/// Question id → text, from per-code ids and texts (nulls left out).
fn by_item<'a>(
    items: &[Option<&'a str>],
    texts: &'a [Option<String>],
) -> HashMap<&'a str, &'a str> {
    items
        .iter()
        .zip(texts)
        .filter_map(|(item, text)| Some(((*item)?, text.as_deref()?)))
        .collect()
}

/// Who answered each question row: the row of the result, or the result's id.
enum Persons {
    Rows(Vec<u32>),
    Ids(StringChunked),
}

/// Dense integer codes of a string column (null is a value of its own): `codes[row]`
/// indexes `values`, and `first_row[code]` is the first row holding that value.
struct Codes<'a> {
    codes: Vec<u32>,
    values: Vec<Option<&'a str>>,
    first_row: Vec<usize>,
}

impl<'a> Codes<'a> {
    fn of(column: &'a StringChunked) -> Self {
        let mut index: PlHashMap<Option<&'a str>, u32> = PlHashMap::new();
        let mut codes = Vec::with_capacity(column.len());
        let (mut values, mut first_row) = (Vec::new(), Vec::new());
        // Rows of one result come together, so "same as the row before" saves most lookups.
        let mut previous: Option<(Option<&'a str>, u32)> = None;
        for (row, value) in column.iter().enumerate() {
            if let Some((seen, code)) = previous
                && seen == value
            {
                codes.push(code);
                continue;
            }
            let code = *index.entry(value).or_insert_with(|| {
                values.push(value);
                first_row.push(row);
                (values.len() - 1) as u32
            });
            codes.push(code);
            previous = Some((value, code));
        }
        Codes {
            codes,
            values,
            first_row,
        }
    }

    /// The same codes renumbered in the order of the values (null first), so that sorting
    /// by code sorts by value.
    fn sorted(mut self) -> Self {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_by_key(|&c| self.values[c as usize]);
        let mut renumber = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            renumber[old as usize] = new as u32;
        }
        for code in &mut self.codes {
            *code = renumber[*code as usize];
        }
        self.values = order.iter().map(|&c| self.values[c as usize]).collect();
        self.first_row = order.iter().map(|&c| self.first_row[c as usize]).collect();
        self
    }
}

/// Per person: the number correct, and the group (0 = lower 27%, 1 = middle, 2 = upper)
/// by rank of that number, ties broken by person code (the codes are in id order).
struct PersonSums {
    raw: Vec<f64>,
    group: Vec<u8>,
    /// Whether each person has at least one answer row.
    answered: Vec<bool>,
    /// Persons with at least one answer row.
    present: usize,
    mean: Option<f64>,
    /// Of the number correct, with the n − 1 denominator.
    variance: Option<f64>,
}

fn person_sums(persons: &[u32], x: &[f64], known: usize) -> PersonSums {
    let mut raw = vec![0.0; known];
    let mut answered = vec![false; known];
    for (&person, &x) in persons.iter().zip(x) {
        raw[person as usize] += x;
        answered[person as usize] = true;
    }
    let mut ranked: Vec<u32> = (0..known as u32)
        .filter(|&p| answered[p as usize])
        .collect();
    // Stable, and the candidates are in code order: ties stay in id order.
    ranked.sort_by(|a, b| raw[*a as usize].total_cmp(&raw[*b as usize]));
    let present = ranked.len();
    let group_size = ((GROUP_SHARE * present as f64 + 0.5).floor() as usize).min(present);
    let mut group = vec![1u8; known];
    for (rank, &person) in ranked.iter().enumerate() {
        if rank < group_size {
            group[person as usize] = 0;
        } else if rank >= present - group_size {
            group[person as usize] = 2;
        }
    }
    let n = present as f64;
    let mean = (present > 0).then(|| ranked.iter().map(|&p| raw[p as usize]).sum::<f64>() / n);
    let variance = mean.filter(|_| present > 1).map(|mean| {
        ranked
            .iter()
            .map(|&p| (raw[p as usize] - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0)
    });
    PersonSums {
        raw,
        group,
        answered,
        present,
        mean,
        variance,
    }
}

/// Sums over the rows of one (question, answer) pair, or of one question. Every statistic
/// of the item and distractor tables is formed from these afterwards; x is 0/1 and raw a
/// count, so each sum is an exact integer.
#[derive(Debug, Default, Clone, Copy)]
struct OptionSums {
    count: f64,
    correct: f64,
    sum_raw: f64,
    sum_raw2: f64,
    sum_x_raw: f64,
    correct_upper: f64,
    correct_lower: f64,
    upper: f64,
    lower: f64,
}

impl OptionSums {
    fn add(&mut self, other: &OptionSums) {
        self.count += other.count;
        self.correct += other.correct;
        self.sum_raw += other.sum_raw;
        self.sum_raw2 += other.sum_raw2;
        self.sum_x_raw += other.sum_x_raw;
        self.correct_upper += other.correct_upper;
        self.correct_lower += other.correct_lower;
        self.upper += other.upper;
        self.lower += other.lower;
    }

    fn add_row(&mut self, x: f64, raw: f64, group: u8) {
        let (upper, lower) = (f64::from(group == 2), f64::from(group == 0));
        self.count += 1.0;
        self.correct += x;
        self.sum_raw += raw;
        self.sum_raw2 += raw * raw;
        self.sum_x_raw += x * raw;
        self.correct_upper += x * upper;
        self.correct_lower += x * lower;
        self.upper += upper;
        self.lower += lower;
    }
}

/// Up to this many (question, answer) pairs are summed in a vector indexed by the pair's
/// key; beyond (free-text answers), in a hash map of the pairs that occur.
const DENSE_OPTION_KEYS: u64 = 1 << 16;

/// The sums of every (question, answer) pair that occurs, by key = question code ×
/// `answers_known` + answer code. The rows are split among the threads.
fn option_sums(
    (items, items_known): (&[u32], usize),
    (answers, answers_known): (&[u32], usize),
    persons: &[u32],
    x: &[f64],
    sums: &PersonSums,
) -> Vec<(u64, OptionSums)> {
    use rayon::prelude::*;
    let answers_known = answers_known as u64;
    let key_of = |row: usize| u64::from(items[row]) * answers_known + u64::from(answers[row]);
    let add_row = |sum: &mut OptionSums, row: usize| {
        let person = persons[row] as usize;
        sum.add_row(x[row], sums.raw[person], sums.group[person]);
    };
    let keys_known = items_known as u64 * answers_known;
    if keys_known > DENSE_OPTION_KEYS {
        let mut table: PlHashMap<u64, OptionSums> = PlHashMap::new();
        for row in 0..items.len() {
            add_row(table.entry(key_of(row)).or_default(), row);
        }
        return table.into_iter().collect();
    }
    let chunk = items
        .len()
        .div_ceil(rayon::current_num_threads().max(1))
        .max(1 << 16);
    let tables: Vec<Vec<OptionSums>> = (0..items.len())
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let mut table = vec![OptionSums::default(); keys_known as usize];
            for row in start..(start + chunk).min(items.len()) {
                add_row(&mut table[key_of(row) as usize], row);
            }
            table
        })
        .collect();
    let mut total = vec![OptionSums::default(); keys_known as usize];
    for table in &tables {
        for (sum, part) in total.iter_mut().zip(table) {
            sum.add(part);
        }
    }
    total
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.count > 0.0)
        .map(|(key, s)| (key as u64, s))
        .collect()
}

/// Pearson's r from n and the sums of x, x², y, y² and xy; NaN when either variance is 0
/// (as polars' `pearson_corr` gives).
fn pearson(n: f64, sx: f64, sxx: f64, sy: f64, syy: f64, sxy: f64) -> f64 {
    let covariance = n * sxy - sx * sy;
    let variances = (n * sxx - sx * sx) * (n * syy - sy * sy);
    if variances > 0.0 {
        covariance / variances.sqrt()
    } else {
        f64::NAN
    }
}

/// The flags of a question from its p-value and corrected item–total correlation.
fn flags(p_value: Option<f64>, corrected: Option<f64>) -> Vec<ItemFlag> {
    let mut flags = Vec::new();
    if let Some(p) = p_value {
        if p > thresholds::TOO_EASY {
            flags.push(ItemFlag {
                flag: "too_easy",
                reason: format!(
                    "{:.0}% answer it right (above {:.0}%): it separates few students",
                    p * 100.0,
                    thresholds::TOO_EASY * 100.0
                ),
            });
        } else if p < thresholds::TOO_HARD {
            flags.push(ItemFlag {
                flag: "too_hard",
                reason: format!(
                    "only {:.0}% answer it right (below {:.0}%): check the key and the wording",
                    p * 100.0,
                    thresholds::TOO_HARD * 100.0
                ),
            });
        }
    }
    if let Some(r) = corrected {
        if r < 0.0 {
            flags.push(ItemFlag {
                flag: "negative_discrimination",
                reason: format!(
                    "correlation with the rest of the test is {r:.2}: students who do well \
                     elsewhere get it wrong more often; check the key"
                ),
            });
        } else if r < thresholds::LOW_DISCRIMINATION {
            flags.push(ItemFlag {
                flag: "low_discrimination",
                reason: format!(
                    "correlation with the rest of the test is {r:.2} (below {:.2}): it tells \
                     strong and weak students apart poorly",
                    thresholds::LOW_DISCRIMINATION
                ),
            });
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes agree with the text across chunks, nulls, short (inline) and long strings,
    /// repeats next to each other and apart; `sorted` renumbers in text order, null first.
    #[test]
    fn codes_name_equal_strings_equally_across_chunks() {
        let long = "an answer long enough not to fit in a view";
        let first: StringChunked = [Some("b"), Some(long), Some(long), None, Some("a")]
            .into_iter()
            .collect();
        let mut column: StringChunked = [Some(long), Some("b"), None, Some("c"), Some("a")]
            .into_iter()
            .collect();
        column.append(&first).unwrap();
        assert_eq!(column.chunks().len(), 2);
        let texts: Vec<Option<&str>> = column.iter().collect();
        let codes = Codes::of(&column);
        for (row, text) in texts.iter().enumerate() {
            assert_eq!(codes.values[codes.codes[row] as usize], *text, "row {row}");
            let first = texts.iter().position(|t| t == text).unwrap();
            assert_eq!(codes.first_row[codes.codes[row] as usize], first);
        }
        assert_eq!(codes.values.len(), 5);
        let sorted = codes.sorted();
        assert_eq!(
            sorted.values,
            vec![None, Some("a"), Some(long), Some("b"), Some("c")]
        );
        for (row, text) in texts.iter().enumerate() {
            assert_eq!(sorted.values[sorted.codes[row] as usize], *text);
        }
    }

    /// Free-text answers (more pairs than the dense table holds) give the same sums as
    /// the dense table, and groups come from the ranks of the totals.
    #[test]
    fn option_sums_agree_dense_and_sparse() {
        let items = [0u32, 1, 0, 1, 0, 1, 0, 1];
        let answers = [0u32, 1, 1, 0, 0, 0, 1, 1];
        let persons = [0u32, 0, 1, 1, 2, 2, 3, 3];
        let x = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let sums = person_sums(&persons, &x, 5);
        assert_eq!(sums.raw, vec![2.0, 1.0, 1.0, 0.0, 0.0]);
        // Person 4 gave no answer; of the other 4, one (27% of 4, rounded) per end group.
        assert_eq!(sums.present, 4);
        assert_eq!(&sums.group[..4], &[2, 1, 1, 0]);
        assert_eq!(sums.mean, Some(1.0));
        assert_eq!(sums.variance, Some(2.0 / 3.0));
        let by_pair = |answers_known: usize| {
            let mut pairs: Vec<((u64, u64), [f64; 9])> =
                option_sums((&items, 2), (&answers, answers_known), &persons, &x, &sums)
                    .into_iter()
                    .map(|(key, s)| {
                        let ak = answers_known as u64;
                        let values = [
                            s.count,
                            s.correct,
                            s.sum_raw,
                            s.sum_raw2,
                            s.sum_x_raw,
                            s.correct_upper,
                            s.correct_lower,
                            s.upper,
                            s.lower,
                        ];
                        ((key / ak, key % ak), values)
                    })
                    .collect();
            pairs.sort_by_key(|(pair, _)| *pair);
            pairs
        };
        let dense = by_pair(2);
        const { assert!(2 * 100_000 > DENSE_OPTION_KEYS) };
        assert_eq!(dense, by_pair(100_000));
        // Question 0, answer 0: persons 0 (x 1, raw 2, upper) and 2 (x 1, raw 1, middle).
        assert_eq!(
            dense[0],
            ((0, 0), [2.0, 2.0, 3.0, 5.0, 3.0, 1.0, 0.0, 1.0, 0.0])
        );
        assert_eq!(dense.len(), 4);
    }
}

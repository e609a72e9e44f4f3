//! Analytics SQL benchmark (issue 7): `POST /api/sql` of the release `examflow serve` against
//! plain DataFusion on the same Parquet files, measured in one run. Prints markdown tables.
//!
//! 1. Builds a data directory whose lake holds `--rows` (default 10 000 000) synthetic
//!    `attempt_questions` rows (40 exams × 50 questions, 30–50 questions per attempt,
//!    answers drawn from a Rasch model, timestamps over 2025), written as Arrow batches and
//!    committed in Delta commits of ≈ 1 M rows through `LakeTable::push_tail` +
//!    `commit_tail`, as the ingest does.
//! 2. Starts `examflow serve --data-dir DIR` (the release binary next to this one) on a free
//!    port and gets an analyst token from `examflow token`.
//! 3. Aggregates: each query runs once to warm up, then `--reps` times alternating (a)
//!    examflow, `POST /api/sql` with `Accept: application/vnd.apache.arrow.stream`, timed by
//!    the client until the IPC stream is decoded, and (b) DataFusion in this process: a
//!    fresh `SessionContext` with a `ListingTable` over the table's live Parquet files (from
//!    the Delta snapshot), the same SQL, batches collected. Ratio examflow / DataFusion.
//! 4. Transfer: the same `SELECT` of 8 columns, `LIMIT --transfer-rows` (default 1 000 000),
//!    as Arrow IPC, NDJSON (JSON stops at 100 000 rows, so 1 M rows go as NDJSON, which
//!    streams), CSV, and for reference JSON vs Arrow at 100 000 rows; timed until the client
//!    has received the whole body and decoded every row (Arrow `StreamReader`; `serde_json`
//!    to a `Value` per row; `arrow::csv` into string columns).
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/sql-bench [--quick] [--rows N] [--reps R] [--transfer-rows N] [--data-dir DIR]
//!     [--s3-endpoint URL]
//! ```
//!
//! 5. (Before 4.) With `--s3-endpoint URL` (moto: `scripts/s3-server start DIR`): the lake directory is
//!    copied to a new bucket there and a second `examflow serve --lake-uri s3://…` (its own
//!    data directory) answers the same aggregates; timed alternating with the local server,
//!    ratio S3 / local.
//!
//! `--quick` = `--rows 1000000 --reps 3`. `--data-dir DIR` keeps the data (and reuses it
//! when it already holds exactly `--rows` rows); by default a temp dir is used and removed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::file_format::options::ReadOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use examflow_benches::synth::build_lake;
use examflow_benches::{examflow_binary, loadavg};
use examflow_ingest::lake::Lake;
use serde_json::{Value, json};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The server's JSON cap (api/src/sql.rs, `MAX_JSON_ROWS`).
const MAX_JSON_ROWS: usize = 100_000;

struct Args {
    rows: usize,
    reps: usize,
    transfer_rows: usize,
    data_dir: Option<PathBuf>,
    quick: bool,
    s3_endpoint: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rows: 10_000_000,
        reps: 5,
        transfer_rows: 1_000_000,
        data_dir: None,
        quick: false,
        s3_endpoint: None,
    };
    let mut rows = None;
    let mut reps = None;
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut number = |flag: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{flag} N"))?
                .replace('_', "")
                .parse()
                .with_context(|| format!("{flag} N"))
        };
        match x.as_str() {
            "--quick" => a.quick = true,
            "--rows" => rows = Some(number("--rows")?),
            "--reps" => reps = Some(number("--reps")?),
            "--transfer-rows" => a.transfer_rows = number("--transfer-rows")?,
            "--data-dir" => {
                a.data_dir = Some(PathBuf::from(it.next().context("--data-dir DIR")?));
            }
            "--s3-endpoint" => {
                a.s3_endpoint = Some(it.next().context("--s3-endpoint URL")?);
            }
            "-h" | "--help" => {
                println!(
                    "sql-bench [--quick] [--rows N] [--reps R] [--transfer-rows N] [--data-dir DIR] \
                     [--s3-endpoint URL]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    a.rows = rows.unwrap_or(if a.quick { 1_000_000 } else { 10_000_000 });
    a.reps = reps.unwrap_or(if a.quick { 3 } else { 5 }).max(1);
    ensure!(a.rows > 0, "--rows must be positive");
    a.transfer_rows = a.transfer_rows.min(a.rows);
    Ok(a)
}

// ---------------------------------------------------------------- small utilities

/// The shared machine line plus the installed memory.
fn cpu_line() -> String {
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!(
        "{}, {:.1} GB RAM",
        examflow_benches::cpu_line(),
        mem_kb as f64 / 1e6
    )
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let [rss, peak] = examflow_benches::proc_status(pid, ["VmRSS:", "VmHWM:"]);
    (rss / 1e3, peak / 1e3)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.1 {
        format!("{:.4}", s)
    } else {
        format!("{:.3}", s)
    }
}

/// The table's live data files according to its Delta snapshot, and their total size.
fn live_files(lake: &Lake) -> Result<(Vec<String>, u64)> {
    let table = lake.attempt_questions.committed();
    let files: Vec<String> = table.get_file_uris()?.collect();
    let mut bytes = 0;
    for f in &files {
        let path = f.strip_prefix("file://").unwrap_or(f);
        bytes += std::fs::metadata(path)
            .with_context(|| format!("live file {path}"))?
            .len();
    }
    Ok((files, bytes))
}

/// `*.parquet` files directly in the table directory (all of them, live or not).
fn parquet_files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- DataFusion baseline

/// A fresh context with `attempt_questions` = a `ListingTable` over exactly `files`
/// (schema inferred from the first file, options as `register_parquet` would use).
async fn datafusion_context(files: &[String]) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options = ParquetReadOptions::default()
        .to_listing_options(&ctx.copied_config(), ctx.copied_table_options());
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    ctx.register_table(
        "attempt_questions",
        Arc::new(ListingTable::try_new(config)?),
    )?;
    Ok(ctx)
}

/// DataFusion alone: context + registration + planning + execution, batches collected.
async fn datafusion_query(files: &[String], sql: &str) -> Result<(Duration, Vec<RecordBatch>)> {
    let t = Instant::now();
    let ctx = datafusion_context(files).await?;
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok((t.elapsed(), batches))
}

// ---------------------------------------------------------------- examflow server

struct Server {
    child: Child,
    base: String,
    token: String,
    client: reqwest::Client,
    startup: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer: the body as received, and when it was complete.
struct Received {
    body: Vec<u8>,
    receive: Duration,
    truncated: Option<String>,
    content_type: String,
}

impl Server {
    /// `examflow serve` on `data_dir`; with `lake` (a URI and the process's `AWS_*`
    /// environment) its lake is there instead of `<data_dir>/lake`.
    fn start(
        data_dir: &Path,
        work: &Path,
        lake: Option<(&str, &[(String, String)])>,
    ) -> Result<Server> {
        std::fs::create_dir_all(work)?;
        let banks = work.join("banks");
        std::fs::create_dir_all(&banks)?;
        let config = work.join("examflow.toml");
        // A long time limit so the 1 M-row text formats are not cut off on a busy machine;
        // the row and memory limits stay at their defaults (10 M streamed rows, 1 GiB).
        std::fs::write(
            &config,
            "[sql]\ntimeout_secs = 600\n[adaptive]\ncalibrate_interval_secs = 0\n",
        )?;
        let log = work.join("examflow-serve.log");
        let started = Instant::now();
        let mut command = Command::new(examflow_binary()?);
        command
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--banks")
            .arg(&banks);
        if let Some((uri, env)) = lake {
            command.args(["--lake-uri", uri]).envs(env.iter().cloned());
        }
        let mut child = command
            .env("EXAMFLOW_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting examflow")?;
        let base = examflow_benches::served_url(&mut child, Some(&log))?;
        let startup = started.elapsed();
        let token = Command::new(examflow_binary()?)
            .args([
                "token",
                "--email",
                "analyst@example.com",
                "--role",
                "analyst",
                "--data-dir",
            ])
            .arg(data_dir)
            .output()?;
        ensure!(
            token.status.success(),
            "examflow token: {}",
            String::from_utf8_lossy(&token.stderr)
        );
        Ok(Server {
            child,
            base,
            token: String::from_utf8(token.stdout)?.trim().to_string(),
            client: reqwest::Client::new(),
            startup,
        })
    }

    /// `POST /api/sql` with `Accept: accept`; the clock runs from sending the request until
    /// the last byte of the body arrived.
    async fn post_sql(&self, sql: &str, accept: &str) -> Result<Received> {
        let t = Instant::now();
        let mut resp = self
            .client
            .post(format!("{}/api/sql", self.base))
            .bearer_auth(&self.token)
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .await?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let truncated = header("x-examflow-truncated");
        let content_type = header("content-type").unwrap_or_default();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        let receive = t.elapsed();
        if !status.is_success() {
            bail!(
                "POST /api/sql {sql:?}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(Received {
            body,
            receive,
            truncated,
            content_type,
        })
    }
}

fn decode_arrow(body: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(Cursor::new(body), None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

fn rows_of(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// "identical" when both results print the same, else how many rows each had.
fn compare_results(ours: &[RecordBatch], theirs: &[RecordBatch]) -> Result<String> {
    Ok(
        if pretty_format_batches(ours)?.to_string() == pretty_format_batches(theirs)?.to_string() {
            "identical".to_string()
        } else {
            format!("DIFFERENT ({} vs {} rows)", rows_of(ours), rows_of(theirs))
        },
    )
}

/// examflow over HTTP as Arrow IPC: request → body received → decoded.
async fn examflow_query(server: &Server, sql: &str) -> Result<(Duration, Vec<RecordBatch>)> {
    let t = Instant::now();
    let received = server.post_sql(sql, ARROW_STREAM).await?;
    let batches = decode_arrow(&received.body)?;
    Ok((t.elapsed(), batches))
}

// ---------------------------------------------------------------- part 1: aggregates

struct Query {
    name: &'static str,
    sql: &'static str,
}

const QUERIES: [Query; 5] = [
    Query {
        name: "p-value per question",
        sql: "SELECT question_id, count(*) AS responses, \
              round(avg(CAST(user_correct AS INT)), 6) AS p_value \
              FROM attempt_questions GROUP BY question_id ORDER BY question_id",
    },
    Query {
        name: "answers per exam and month",
        sql: "SELECT exam_name, date_trunc('month', first_answer_at) AS month, \
              count(*) AS answered, \
              sum(CASE WHEN user_result = 'correct' THEN 1 ELSE 0 END) AS correct \
              FROM attempt_questions WHERE first_answer_at IS NOT NULL \
              GROUP BY exam_name, date_trunc('month', first_answer_at) \
              ORDER BY exam_name, month",
    },
    Query {
        name: "filtered count",
        sql: "SELECT count(*) AS n FROM attempt_questions \
              WHERE exam_name = 'Physics Final' AND user_result = 'incorrect'",
    },
    Query {
        name: "difficulty per exam and question (the view's SQL)",
        sql: "SELECT exam_name, question_id, count(*) AS responses, \
              round(avg(CASE WHEN user_correct THEN 1.0 ELSE 0.0 END), 6) AS p_value \
              FROM attempt_questions WHERE user_correct IS NOT NULL \
              GROUP BY exam_name, question_id ORDER BY exam_name, question_id",
    },
    Query {
        name: "distinct attempts per exam",
        sql: "SELECT exam_name, count(DISTINCT user_exam_id) AS attempts \
              FROM attempt_questions GROUP BY exam_name ORDER BY exam_name",
    },
];

/// The per-request floor: no table scanned.
const FLOOR_SQL: &str = "SELECT 1 AS one";

struct Timings {
    examflow: Vec<Duration>,
    datafusion: Vec<Duration>,
    rows: usize,
    same: String,
}

async fn time_query(server: &Server, files: &[String], sql: &str, reps: usize) -> Result<Timings> {
    // Warm-up (page cache, allocator, the server's first-query paths), results compared.
    let (_, ours) = examflow_query(server, sql).await?;
    let (_, theirs) = datafusion_query(files, sql).await?;
    let same = compare_results(&ours, &theirs)?;
    let mut t = Timings {
        examflow: Vec::new(),
        datafusion: Vec::new(),
        rows: rows_of(&ours),
        same,
    };
    for _ in 0..reps {
        t.examflow.push(examflow_query(server, sql).await?.0);
        t.datafusion.push(datafusion_query(files, sql).await?.0);
    }
    t.examflow.sort();
    t.datafusion.sort();
    Ok(t)
}

async fn section_aggregates(
    args: &Args,
    server: &Server,
    files: &[String],
    out: &mut String,
) -> Result<()> {
    writeln!(out, "### Aggregates over {} rows\n", args.rows)?;
    writeln!(
        out,
        "examflow: `POST /api/sql`, `Accept: {ARROW_STREAM}`, timed by the client from sending \
         the request until the IPC stream is decoded (includes HTTP, the per-request session \
         with every lake table, view and the `abilities` / `adaptive_sessions` / \
         `calibrations` tables, planning, the scan of the committed snapshot's Parquet files (`SnapshotTable`), encoding). \
         DataFusion: in this process, a fresh `SessionContext::new()` with a `ListingTable` \
         over the {} live Parquet file(s) of the Delta snapshot, `ctx.sql(..).collect()`; the \
         time includes creating the context and registering the table. One warm-up each, then \
         {} runs alternating examflow / DataFusion. Target: examflow ≤ 1.5× DataFusion \
         (verdict on the median ratio). The floor row is a query that scans nothing; the \
         ratio column after the verdict subtracts examflow's median floor from its median \
         (information only, not the target's measure).\n",
        files.len(),
        args.reps
    )?;
    writeln!(
        out,
        "| query | result rows | examflow best s | examflow median s | DataFusion best s | DataFusion median s | ratio (best) | ratio (median) | ≤ 1.5× | ratio (median) less examflow's floor | results |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")?;
    eprintln!("  query: per-request floor");
    let floor = time_query(server, files, FLOOR_SQL, args.reps).await?;
    let floor_median = percentile(&floor.examflow, 0.5);
    writeln!(
        out,
        "| per-request floor: `{FLOOR_SQL}` (no scan) | {} | {} | {} | {} | {} | – | – | – | – | {} |",
        floor.rows,
        secs(floor.examflow[0]),
        secs(floor_median),
        secs(floor.datafusion[0]),
        secs(percentile(&floor.datafusion, 0.5)),
        floor.same
    )?;
    let mut worst: f64 = 0.0;
    let mut all_met = true;
    let mut sum_ours = Duration::ZERO;
    let mut sum_theirs = Duration::ZERO;
    for q in &QUERIES {
        eprintln!("  query: {}", q.name);
        let t = time_query(server, files, q.sql, args.reps).await?;
        let (ob, om) = (t.examflow[0], percentile(&t.examflow, 0.5));
        let (db, dm) = (t.datafusion[0], percentile(&t.datafusion, 0.5));
        sum_ours += om;
        sum_theirs += dm;
        let ratio_best = ob.as_secs_f64() / db.as_secs_f64();
        let ratio = om.as_secs_f64() / dm.as_secs_f64();
        worst = worst.max(ratio);
        all_met &= ratio <= 1.5;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× | {} | {:.2}× | {} |",
            q.name,
            t.rows,
            secs(ob),
            secs(om),
            secs(db),
            secs(dm),
            ratio_best,
            ratio,
            if ratio <= 1.5 { "met" } else { "NOT met" },
            om.saturating_sub(floor_median).as_secs_f64() / dm.as_secs_f64(),
            t.same
        )?;
    }
    writeln!(
        out,
        "\nSum of medians over the {} queries: examflow {} s, DataFusion {} s ({:.2}×). Worst \
         median ratio {:.2}×: target ≤ 1.5× {}.\n",
        QUERIES.len(),
        secs(sum_ours),
        secs(sum_theirs),
        sum_ours.as_secs_f64() / sum_theirs.as_secs_f64(),
        worst,
        if all_met {
            "met for every query"
        } else {
            "NOT met for every query"
        }
    )?;
    for q in &QUERIES {
        writeln!(out, "- {}: `{}`", q.name, q.sql)?;
    }
    writeln!(out)?;
    Ok(())
}

// ---------------------------------------------------------------- part 2: transfer

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Arrow,
    Json,
    NdJson,
    Csv,
}

impl Wire {
    fn accept(self) -> &'static str {
        match self {
            Wire::Arrow => ARROW_STREAM,
            Wire::Json => "application/json",
            Wire::NdJson => "application/x-ndjson",
            Wire::Csv => "text/csv",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Wire::Arrow => "Arrow IPC stream",
            Wire::Json => "JSON array",
            Wire::NdJson => "NDJSON",
            Wire::Csv => "CSV",
        }
    }
    fn decoder(self) -> &'static str {
        match self {
            Wire::Arrow => "arrow-ipc `StreamReader`, batches counted",
            Wire::Json => "`serde_json::from_slice::<Value>` of the array",
            Wire::NdJson => "`serde_json::from_slice::<Value>` per line",
            Wire::Csv => "`arrow::csv` reader into 8 string columns",
        }
    }
}

const TRANSFER_COLUMNS: [&str; 8] = [
    "keen_id",
    "user_exam_id",
    "exam_name",
    "question_index",
    "question_id",
    "user_result",
    "user_correct",
    "first_answer_at",
];

fn transfer_sql(rows: usize) -> String {
    format!(
        "SELECT {} FROM attempt_questions LIMIT {rows}",
        TRANSFER_COLUMNS.join(", ")
    )
}

/// Rows decoded from a body of format `wire`.
fn decode(wire: Wire, body: &[u8]) -> Result<usize> {
    Ok(match wire {
        Wire::Arrow => rows_of(&decode_arrow(body)?),
        Wire::Json => {
            let value: Value = serde_json::from_slice(body)?;
            value.as_array().context("a JSON array")?.len()
        }
        Wire::NdJson => {
            let mut n = 0;
            for line in body.split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                let row: Value = serde_json::from_slice(line)?;
                ensure!(row.is_object(), "an NDJSON row object");
                n += 1;
            }
            n
        }
        Wire::Csv => {
            let schema = Arc::new(Schema::new(
                TRANSFER_COLUMNS
                    .iter()
                    .map(|c| Field::new(*c, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ));
            let reader = arrow::csv::ReaderBuilder::new(schema)
                .with_header(true)
                .with_batch_size(8192)
                .build(Cursor::new(body))?;
            let mut n = 0;
            for batch in reader {
                n += batch?.num_rows();
            }
            n
        }
    })
}

struct TransferRun {
    total: Duration,
    receive: Duration,
    decode: Duration,
    bytes: usize,
    rows: usize,
    truncated: Option<String>,
    content_type: String,
}

async fn transfer_once(server: &Server, wire: Wire, sql: &str) -> Result<TransferRun> {
    let t = Instant::now();
    let received = server.post_sql(sql, wire.accept()).await?;
    let d = Instant::now();
    let rows = decode(wire, &received.body)?;
    let decode_time = d.elapsed();
    Ok(TransferRun {
        total: t.elapsed(),
        receive: received.receive,
        decode: decode_time,
        bytes: received.body.len(),
        rows,
        truncated: received.truncated,
        content_type: received.content_type,
    })
}

/// One warm-up, then `reps` runs; returns the runs sorted by total time.
async fn transfer(
    server: &Server,
    wire: Wire,
    rows: usize,
    reps: usize,
) -> Result<Vec<TransferRun>> {
    let sql = transfer_sql(rows);
    transfer_once(server, wire, &sql).await?;
    let mut runs = Vec::new();
    for _ in 0..reps {
        let run = transfer_once(server, wire, &sql).await?;
        ensure!(
            run.rows == rows,
            "{}: decoded {} rows, expected {rows} (truncated: {:?})",
            wire.label(),
            run.rows,
            run.truncated
        );
        runs.push(run);
    }
    runs.sort_by_key(|r| r.total);
    Ok(runs)
}

async fn section_transfer(args: &Args, server: &Server, out: &mut String) -> Result<()> {
    let rows = args.transfer_rows;
    let small = MAX_JSON_ROWS.min(rows);
    writeln!(out, "### Result transfer\n")?;
    writeln!(
        out,
        "`{}` over loopback HTTP/1.1, one request at a time; each format gets one warm-up, then \
         {} runs (best and the median run by total time). Time: request sent → whole body \
         received → every row decoded by the client (receive and decode columns are of the \
         median run). The server's JSON array stops at {MAX_JSON_ROWS} rows \
         (`X-Examflow-Truncated`), so {rows} rows are compared as NDJSON (`application/x-ndjson`, \
         the same row objects, one per line, streamed); the JSON array is compared with Arrow \
         at {small} rows. Target: JSON time / Arrow time ≥ 5 at 1 M rows.\n",
        transfer_sql(rows),
        args.reps
    )?;
    writeln!(
        out,
        "| format | rows | bytes | best s | median s | receive s | decode s | rows/s (median) | time vs Arrow (median) | client decoder |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let mut cases = vec![(Wire::Arrow, rows), (Wire::NdJson, rows), (Wire::Csv, rows)];
    if small < rows {
        cases.push((Wire::Arrow, small));
    }
    cases.push((Wire::Json, small));
    let mut arrow_median: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut ndjson_ratio = f64::NAN;
    let mut json_ratio = f64::NAN;
    let mut notes = Vec::new();
    for (wire, n) in cases {
        eprintln!("  transfer: {} × {n}", wire.label());
        let runs = transfer(server, wire, n, args.reps).await?;
        let median = &runs[runs.len().div_ceil(2) - 1];
        if wire == Wire::Arrow {
            arrow_median.insert(n, median.total);
        }
        let vs = arrow_median
            .get(&n)
            .map(|a| median.total.as_secs_f64() / a.as_secs_f64())
            .unwrap_or(f64::NAN);
        match wire {
            Wire::NdJson => ndjson_ratio = vs,
            Wire::Json => json_ratio = vs,
            _ => {}
        }
        if let Some(t) = &median.truncated {
            notes.push(format!(
                "{} at {n} rows: `X-Examflow-Truncated: {t}`",
                wire.label()
            ));
        }
        writeln!(
            out,
            "| {} (`{}`) | {n} | {} | {} | {} | {} | {} | {:.0} | {:.2}× | {} |",
            wire.label(),
            median.content_type,
            median.bytes,
            secs(runs[0].total),
            secs(median.total),
            secs(median.receive),
            secs(median.decode),
            n as f64 / median.total.as_secs_f64(),
            vs,
            wire.decoder()
        )?;
    }
    writeln!(
        out,
        "\nNDJSON / Arrow at {rows} rows: **{ndjson_ratio:.2}×** (target ≥ 5: {}); JSON array / \
         Arrow at {small} rows: {json_ratio:.2}×.",
        if ndjson_ratio >= 5.0 {
            "met"
        } else {
            "NOT met"
        }
    )?;
    if rows < 1_000_000 {
        writeln!(
            out,
            "(only {rows} rows: the table is smaller than the 1 M rows of the target)"
        )?;
    }
    for n in notes {
        writeln!(out, "- {n}")?;
    }
    writeln!(out)?;
    Ok(())
}

// ---------------------------------------------------------------- part 3: the lake on S3

/// The aggregates through a server whose lake is a copy of the local one in a bucket of the
/// emulator at `endpoint`, alternating with the local server; ratio S3 / local.
async fn section_s3(
    args: &Args,
    local: &Server,
    data_dir: &Path,
    work: &Path,
    endpoint: &str,
    out: &mut String,
) -> Result<()> {
    let bucket = examflow_benches::s3::Bucket::create(endpoint, "sql-bench")?;
    let t = Instant::now();
    let sent = bucket.upload_dir(&Lake::dir(data_dir), "lake")?;
    let upload = t.elapsed();
    let s3_data = work.join("s3-data");
    std::fs::create_dir_all(&s3_data)?;
    let server = Server::start(
        &s3_data,
        &work.join("s3"),
        Some((&bucket.uri("lake"), &bucket.env())),
    )?;
    writeln!(out, "### Aggregates, the lake on S3 vs the local lake\n")?;
    writeln!(
        out,
        "The local lake ({:.1} MB, every table) copied as it is to `{}` on the emulator at \
         {endpoint} in {:.1} s. A second `examflow serve --lake-uri {}` (a data directory of \
         its own, the emulator's `AWS_*` environment) was ready in {:.1} s. Each query: one \
         warm-up on each server (results compared), then {} runs alternating local / S3, \
         timed as above (request → Arrow IPC decoded).\n",
        sent as f64 / 1e6,
        bucket.uri("lake"),
        upload.as_secs_f64(),
        bucket.uri("lake"),
        server.startup.as_secs_f64(),
        args.reps
    )?;
    writeln!(
        out,
        "| query | result rows | local best s | local median s | S3 best s | S3 median s | S3 / local (median) | results |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    let (mut sum_local, mut sum_s3) = (Duration::ZERO, Duration::ZERO);
    let floor = Query {
        name: "per-request floor (no scan)",
        sql: FLOOR_SQL,
    };
    for q in std::iter::once(&floor).chain(&QUERIES) {
        eprintln!("  S3 query: {}", q.name);
        let (_, ours) = examflow_query(local, q.sql).await?;
        let (_, theirs) = examflow_query(&server, q.sql).await?;
        let same = compare_results(&ours, &theirs)?;
        let (mut on_local, mut on_s3) = (Vec::new(), Vec::new());
        for _ in 0..args.reps {
            on_local.push(examflow_query(local, q.sql).await?.0);
            on_s3.push(examflow_query(&server, q.sql).await?.0);
        }
        on_local.sort();
        on_s3.sort();
        let (lm, sm) = (percentile(&on_local, 0.5), percentile(&on_s3, 0.5));
        if q.sql != FLOOR_SQL {
            sum_local += lm;
            sum_s3 += sm;
        }
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2}× | {same} |",
            q.name,
            rows_of(&ours),
            secs(on_local[0]),
            secs(lm),
            secs(on_s3[0]),
            secs(sm),
            sm.as_secs_f64() / lm.as_secs_f64()
        )?;
    }
    let (rss, peak) = rss_mb(server.child.id());
    writeln!(
        out,
        "\nSum of medians over the {} queries: local {} s, S3 {} s ({:.2}×). The S3 server at \
         the end: RSS {rss:.0} MB, peak {peak:.0} MB.\n",
        QUERIES.len(),
        secs(sum_local),
        secs(sum_s3),
        sum_s3.as_secs_f64() / sum_local.as_secs_f64()
    )?;
    Ok(())
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let work = tempfile::tempdir()?;
    let data_dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::path::absolute(d)?
        }
        None => work.path().join("data"),
    };
    let mut out = String::new();
    let mut printed = 0;
    let mut progress = |out: &str| {
        eprint!("{}", &out[printed..]);
        printed = out.len();
    };
    writeln!(
        out,
        "## sql-bench{}\n",
        if args.quick { " (--quick)" } else { "" }
    )?;
    writeln!(out, "- CPU: {}", cpu_line())?;
    writeln!(out, "- load average at start: {}", loadavg())?;
    progress(&out);

    // 1. The lake.
    let lake = Lake::open(&data_dir).await?;
    let build = Instant::now();
    let reused = if lake
        .attempt_questions
        .committed()
        .version()
        .is_some_and(|v| v > 0)
    {
        let (files, _) = live_files(&lake)?;
        let n = datafusion_context(&files)
            .await?
            .sql("SELECT count(*) FROM attempt_questions")
            .await?
            .collect()
            .await?;
        let n = n[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .context("count")?
            .value(0) as usize;
        ensure!(
            n == args.rows,
            "{} already holds {n} attempt_questions rows, not {}; use an empty --data-dir",
            data_dir.display(),
            args.rows
        );
        true
    } else {
        let mut log = |s: &str| eprint!("{s}");
        build_lake(&lake, args.rows, &mut log).await?;
        false
    };
    let build_time = build.elapsed();
    let (files, bytes) = live_files(&lake)?;
    let on_disk = parquet_files_in(lake.attempt_questions.dir().expect("a local lake"));
    writeln!(
        out,
        "- data: {} `attempt_questions` rows ({}), {} live Parquet file(s) in the Delta \
         snapshot (the table directory holds {on_disk} `.parquet` file(s)), {:.1} MB, version {}",
        args.rows,
        if reused {
            "reused from --data-dir".to_string()
        } else {
            format!(
                "synthesized and committed in {:.1} s",
                build_time.as_secs_f64()
            )
        },
        files.len(),
        bytes as f64 / 1e6,
        lake.attempt_questions
            .committed()
            .version()
            .map_or("-".into(), |v| v.to_string()),
    )?;
    drop(lake);

    // 2. The server.
    let server = Server::start(&data_dir, work.path(), None)?;
    let (rss, peak) = rss_mb(server.child.id());
    writeln!(
        out,
        "- examflow serve ready in {:.1} s (opens the lake and rebuilds the ability estimates \
         from `attempt_questions` before listening); RSS {rss:.0} MB, peak {peak:.0} MB",
        server.startup.as_secs_f64()
    )?;
    writeln!(
        out,
        "- load average before the measurements: {}\n",
        loadavg()
    )?;
    progress(&out);

    // 3. Aggregates.
    section_aggregates(&args, &server, &files, &mut out).await?;
    progress(&out);

    // 4. The same lake on S3 (before the transfers, whose memory peak would linger).
    if let Some(endpoint) = &args.s3_endpoint {
        section_s3(&args, &server, &data_dir, work.path(), endpoint, &mut out).await?;
        progress(&out);
    }

    // 5. Transfer.
    section_transfer(&args, &server, &mut out).await?;
    let (rss, peak) = rss_mb(server.child.id());
    writeln!(
        out,
        "examflow serve at the end: RSS {rss:.0} MB, peak {peak:.0} MB. Load average at the \
         end: {}",
        loadavg()
    )?;
    progress(&out);
    drop(server);
    println!("\n{out}");
    Ok(())
}

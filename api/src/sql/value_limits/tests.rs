use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::config::SqlConfig;
use crate::sql::admission::SqlAdmission;

const LIMIT: usize = 1 << 20;

fn limited(pool: Option<Arc<dyn MemoryPool>>) -> SessionContext {
    with_value_limits(
        SessionContext::new(),
        &ValueLimits {
            max_value_bytes: LIMIT,
            pool,
        },
    )
    .unwrap()
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<String> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(pretty_format_batches(&batches)?.to_string())
}

/// The error of `sql`, which must fail fast (nothing was built).
async fn refused(ctx: &SessionContext, sql: &str) -> String {
    let started = Instant::now();
    let e = run(ctx, sql).await.expect_err(sql).to_string();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{sql} took {:?}",
        started.elapsed()
    );
    e
}

/// Values over the limit are refused before they are built, with the function, the size
/// and the limit in the message.
#[tokio::test]
async fn functions_refuse_values_over_the_limit() {
    let ctx = limited(None);
    let e = refused(&ctx, "SELECT repeat('x', 1000000000)").await;
    assert!(
        e.contains(
            "repeat would build a value of 1000000000 bytes, over the limit of 1048576 bytes \
             ([sql] max_value_bytes)"
        ),
        "{e}"
    );
    let e = refused(&ctx, "SELECT lpad('a', 2000000000)").await;
    assert!(
        e.contains("lpad would build a value of 2000000000 bytes"),
        "{e}"
    );
    let e = refused(&ctx, "SELECT rpad('a', 600000, 'éé')").await;
    assert!(
        e.contains("rpad would build a value of 1199999 bytes"),
        "{e}"
    );
    let e = refused(&ctx, "SELECT array_repeat(1, 1000000000)").await;
    assert!(
        e.contains("array_repeat would build a value of 8000000000 bytes"),
        "{e}"
    );
    let e = refused(&ctx, "SELECT array_repeat(repeat('ab', 1000), 1000)").await;
    assert!(
        e.contains("array_repeat would build a value of 2000000 bytes"),
        "{e}"
    );
    let e = refused(&ctx, "SELECT range(1, 10000000000)").await;
    assert!(e.contains("range would build a value of"), "{e}");
    let e = refused(
        &ctx,
        "SELECT generate_series(DATE '2000-01-01', DATE '2200-01-01', INTERVAL '1 minute')",
    )
    .await;
    assert!(e.contains("generate_series would build"), "{e}");
    let e = refused(
        &ctx,
        "SELECT replace(repeat('a', 1000), 'a', repeat('b', 2000))",
    )
    .await;
    assert!(
        e.contains("replace would build a value of 2000000 bytes"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "SELECT regexp_replace(repeat('a', 1000), '', repeat('b', 2000), 'g')",
    )
    .await;
    assert!(
        e.contains("regexp_replace would build a value of up to"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "SELECT concat(repeat('a', 600000), repeat('b', 600000))",
    )
    .await;
    assert!(
        e.contains("concat would build a value of 1200000 bytes"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "SELECT array_replace_all(array_repeat('a', 1000), 'a', repeat('b', 2000))",
    )
    .await;
    assert!(e.contains("array_replace_all would build"), "{e}");
    let e = refused(&ctx, "SELECT array_resize([1], 1000000000)").await;
    assert!(e.contains("array_resize would build"), "{e}");
    // Per row, not only constants.
    let e = refused(
        &ctx,
        "SELECT repeat('x', value * 1000000) FROM generate_series(1, 3)",
    )
    .await;
    assert!(
        e.contains("repeat would build a value of 3000000 bytes"),
        "{e}"
    );
}

/// Values doubling through `||` stop at the limit; the column keeps the name of `||`.
#[tokio::test]
async fn the_concat_operator_is_checked_too() {
    let ctx = limited(None);
    let e = refused(
        &ctx,
        "WITH a AS (SELECT repeat('x', 600000) AS v) SELECT length(v || v) FROM a",
    )
    .await;
    assert!(
        e.contains("|| would build a value of 1200000 bytes, over the limit"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "WITH a AS (SELECT array_repeat(1, 100000) AS v) SELECT cardinality(v || v) FROM a",
    )
    .await;
    assert!(e.contains("|| would build"), "{e}");
    let plain = SessionContext::new();
    for sql in [
        "SELECT 'a' || 'b'",
        "SELECT 'a' || NULL",
        "SELECT 'n' || 1",
        "SELECT [1, 2] || [3]",
        "SELECT [1, 2] || 3",
    ] {
        let frame = ctx.sql(sql).await.unwrap();
        let names: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let expected = plain.sql(sql).await.unwrap();
        let expected_names: Vec<String> = expected
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, expected_names, "{sql}");
        assert_eq!(
            run(&ctx, sql).await.unwrap(),
            run(&plain, sql).await.unwrap(),
            "{sql}"
        );
    }
}

/// Under the limit, every wrapped function answers exactly as DataFusion's own.
#[tokio::test]
async fn values_under_the_limit_are_the_built_in_ones() {
    let ctx = limited(None);
    let plain = SessionContext::new();
    for sql in [
        "SELECT repeat('ab', 3), repeat('ab', 0), repeat('ab', -1), repeat(NULL, 2)",
        "SELECT repeat(CAST(value AS VARCHAR), value) FROM generate_series(1, 4)",
        "SELECT lpad('a', 5), lpad('abc', 2), lpad('a', 5, 'xy'), lpad('é', 3, 'ü'), lpad('a', -1)",
        "SELECT rpad('a', 5), rpad('abc', 2), rpad('a', 5, 'xy'), rpad('a', 4, '')",
        "SELECT replace('abcabc', 'b', 'XYZ'), replace('abc', '', '-'), replace('aaa', 'aa', 'b')",
        "SELECT regexp_replace('a-b-c', '-', '+', 'g'), regexp_replace('abc', '(b)', '[\\1]')",
        "SELECT concat('a', NULL, 'b', 1), concat_ws(',', 'a', NULL, 'b'), concat_ws(NULL, 'a')",
        "SELECT array_repeat(1, 3), array_repeat('x', 2), array_repeat([1, 2], 2), array_repeat(1, 0)",
        "SELECT array_resize([1, 2], 4), array_resize([1, 2], 1), array_resize(['a'], 3, 'z')",
        "SELECT array_replace([1, 2, 1], 1, 9), array_replace_n([1, 1, 1], 1, 9, 2), array_replace_all([1, 2, 1], 1, 9)",
        "SELECT range(5), range(1, 10, 3), range(10, 1, -4), generate_series(1, 3), generate_series(3, 1)",
        "SELECT range(DATE '2024-01-01', DATE '2024-03-01', INTERVAL '1 month')",
        "SELECT generate_series(TIMESTAMP '2024-01-01 00:00:00', TIMESTAMP '2024-01-01 03:00:00', INTERVAL '1 hour')",
        "SELECT string_agg(CAST(value AS VARCHAR), ',') FROM generate_series(1, 5)",
        "SELECT value % 2 AS k, string_agg(CAST(value AS VARCHAR), '-' ORDER BY value DESC) FROM generate_series(1, 6) GROUP BY value % 2 ORDER BY k",
        "SELECT value % 3 AS k, string_agg(CAST(value AS VARCHAR), ',') FROM generate_series(1, 9) GROUP BY value % 3 ORDER BY k",
        // Volatile wrappers still group, filter, sort and join as before.
        "SELECT lpad(CAST(value % 3 AS VARCHAR), 3, '0') AS k, count(*) AS n FROM generate_series(1, 9) GROUP BY lpad(CAST(value % 3 AS VARCHAR), 3, '0') ORDER BY k",
        "SELECT value FROM generate_series(1, 5) WHERE concat('n', value) = 'n3'",
        "SELECT a.value FROM generate_series(1, 4) a JOIN generate_series(2, 6) b ON repeat('x', a.value) = repeat('x', b.value) ORDER BY repeat('y', a.value) DESC",
        "SELECT array_repeat(value, 2) FROM generate_series(1, 3) ORDER BY value",
    ] {
        assert_eq!(
            run(&ctx, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            run(&plain, sql).await.unwrap(),
            "{sql}"
        );
    }
}

/// `string_agg` is refused when its value is over the limit, grouped or not.
#[tokio::test]
async fn string_agg_values_are_limited() {
    let ctx = limited(None);
    let e = refused(
        &ctx,
        "SELECT length(string_agg(repeat('x', 1000), ',')) FROM generate_series(1, 2000)",
    )
    .await;
    assert!(
        e.contains("string_agg would build a value of 2001999 bytes, over the limit"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "SELECT value % 2, length(string_agg(repeat('x', 1000), ',')) FROM generate_series(1, 4000) GROUP BY value % 2",
    )
    .await;
    assert!(e.contains("string_agg would build a value of"), "{e}");
    let e = refused(
        &ctx,
        "SELECT length(string_agg(DISTINCT repeat(CAST(value AS VARCHAR), 1000), ',')) FROM generate_series(1, 2000)",
    )
    .await;
    assert!(e.contains("string_agg would build a value of"), "{e}");
}

/// A call's whole result counts against the query's memory while it is built: a value
/// under the limit repeated on many rows is refused by the pool, not built.
#[tokio::test]
async fn whole_results_count_against_the_query_memory() {
    let admission = SqlAdmission::new(&SqlConfig {
        memory_limit_bytes: 50 << 20,
        total_memory_bytes: Some(100 << 20),
        ..SqlConfig::default()
    });
    let memory = admission.query_memory();
    let ctx = limited(Some(memory.pool()));
    let e = refused(
        &ctx,
        "SELECT length(repeat('x', 1000000)) FROM generate_series(1, 8000)",
    )
    .await;
    assert!(
        e.contains("Resources exhausted") && e.contains("memory_limit_bytes"),
        "{e}"
    );
    let e = refused(
        &ctx,
        "SELECT length(lpad(CAST(value AS VARCHAR), 1000000)) FROM generate_series(1, 8000)",
    )
    .await;
    assert!(e.contains("Resources exhausted"), "{e}");
    assert_eq!(memory.reserved(), 0, "nothing is left reserved");
    assert_eq!(
        run(
            &ctx,
            "SELECT sum(length(repeat('x', 1000))) AS n FROM generate_series(1, 8000)"
        )
        .await
        .unwrap()
        .lines()
        .nth(3),
        Some("| 8000000 |")
    );
}

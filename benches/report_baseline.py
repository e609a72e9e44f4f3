"""Baseline for report-bench: the score report of one exam computed with Python polars
straight from examflow's Delta tables, as a data scientist would write it today.

usage: report_baseline.py LAKE_DIR EXAM REPS

Prints JSON: {"seconds": [per rep], "results", "alpha", "p_values": {item: p},
"point_biserial": {item: r}, "polars": version}. The time covers reading the tables and
computing the summary, histogram, reliability, item table, distractor table, trend and the
sorted student table (what examflow's report holds); not the interpreter's start.
"""

import json
import sys
import time

import polars as pl


def report(lake: str, exam: str) -> dict:
    changes = pl.read_delta(f"{lake}/score_changes")
    # The `scores` view: the latest change of each document, unless deleted.
    scores = (
        changes.sort(["changed_at", "source_offset", "source_partition"], descending=True, nulls_last=True)
        .unique(subset=["document_id"], keep="first", maintain_order=False)
        .filter(~pl.col("deleted") & (pl.col("exam") == exam))
    )
    details = pl.read_delta(f"{lake}/score_detail_changes").join(
        scores.select("document_id", "source_topic", "source_partition", "source_offset"),
        on=["document_id", "source_topic", "source_partition", "source_offset"],
    )
    pct = pl.col("percentage").cast(pl.Float64)
    summary = scores.select(
        pl.len().alias("results"),
        pl.col("email").n_unique().alias("takers"),
        pct.mean().alias("mean"),
        pct.median().alias("median"),
        pct.std().alias("sd"),
        (pl.col("result") == "passed").sum().alias("passed"),
        (pl.col("result") == "failed").sum().alias("failed"),
    )
    histogram = (
        scores.select((pct // 10).cast(pl.Int64).clip(0, 9).alias("bin"))
        .group_by("bin")
        .len()
    )
    trend = (
        scores.group_by(pl.col("submitted_at").dt.date().alias("day"))
        .agg(pl.len(), pct.mean(), (pl.col("result") == "passed").mean())
        .sort("day")
    )
    students = scores.select(
        "document_id", "email", "score", "total", "percentage", "result", "submitted_at"
    ).sort(["email", "submitted_at", "document_id"])
    x = pl.col("is_correct").cast(pl.Float64).fill_null(0.0)
    answers = details.with_columns(x.alias("x"))
    totals = (
        answers.group_by("document_id")
        .agg(pl.col("x").sum().alias("raw"))
        .sort(["raw", "document_id"])
        .with_row_index("rank")
    )
    n = totals.height
    g = int(0.27 * n + 0.5)
    totals = totals.with_columns(
        pl.when(pl.col("rank") < g).then(0).when(pl.col("rank") >= n - g).then(2).otherwise(1).alias("group")
    )
    joined = answers.join(totals, on="document_id")
    items = (
        joined.group_by("item")
        .agg(
            pl.len().alias("responses"),
            pl.col("x").mean().alias("p"),
            pl.col("x").sum().alias("correct"),
            pl.corr("x", "raw").alias("pbis"),
            pl.corr("x", pl.col("raw") - pl.col("x")).alias("cit"),
            pl.col("x").filter(pl.col("group") == 2).mean().alias("p_upper"),
            pl.col("x").filter(pl.col("group") == 0).mean().alias("p_lower"),
        )
        .sort("item")
    )
    distractors = joined.group_by("item", "user_answer").agg(
        pl.len().alias("count"),
        pl.col("raw").mean().alias("mean_raw"),
        (pl.col("group") == 2).sum().alias("upper"),
        (pl.col("group") == 0).sum().alias("lower"),
    )
    k = items.height
    m = items["correct"] / n
    item_var = (n / (n - 1) * m * (1 - m)).sum()
    total_var = totals["raw"].var()
    alpha = k / (k - 1) * (1 - item_var / total_var)
    # Touch every result so nothing is left lazy.
    _ = (summary.height, histogram.height, trend.height, students.height, distractors.height)
    return {
        "results": int(summary["results"][0]),
        "alpha": alpha,
        "p_values": dict(zip(items["item"].to_list(), items["p"].to_list())),
        "point_biserial": dict(zip(items["item"].to_list(), items["pbis"].to_list())),
    }


def main() -> None:
    lake, exam, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seconds = []
    out = {}
    for _ in range(reps):
        t = time.perf_counter()
        out = report(lake, exam)
        seconds.append(time.perf_counter() - t)
    out["seconds"] = seconds
    out["polars"] = pl.__version__
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

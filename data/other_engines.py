#!/usr/bin/env python3
"""Reads examflow's lake with engines other than examflow and prints what each one counts.

    python3 data/other_engines.py --lake-uri s3://BUCKET/lake --endpoint http://127.0.0.1:PORT \
        [--engines deltalake,polars,duckdb,daft] [--region us-east-1] \
        [--access-key-id KEY] [--secret-access-key SECRET]
    python3 data/other_engines.py --lake-uri examflow-data/lake --engines deltalake,duckdb

Usually run through `scripts/other-engines`, which installs the engines (pinned) into a venv
of its own. Every engine reads the Delta tables with its own Delta and S3 support:

- deltalake: `DeltaTable(uri, storage_options={AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...})`,
  counted with pyarrow.compute;
- polars: `pl.scan_delta(uri, storage_options=...)`;
- duckdb: the `httpfs` and `delta` extensions LOADed from the files that the PyPI packages
  duckdb-extension-httpfs / duckdb-extension-delta ship (no download), an S3 secret, and
  `delta_scan('s3://...')`;
- daft: `daft.read_deltalake(uri, io_config=IOConfig(s3=S3Config(...)))` on a local Ray
  runtime (`ray.init(num_cpus=1)`, `daft.set_runner_ray()`).

Per engine it computes: rows of `attempts`, distinct `keen_id`s in it, rows of
`attempt_questions`, the sum of `user_correct` as an integer there, rows per `exam_name` of
`attempts` (a list of [name, rows] sorted by name), rows of `score_changes`, and from
examflow's `scores` view, rebuilt here with its rule (the latest change of each document:
`changed_at` descending, nulls last, then `source_offset`, then `source_partition`, both
descending), the documents not deleted and the sum of their `score`. It prints one JSON object
to stdout:

    {"lake_uri": ..., "engines": {"duckdb": {"version": "1.5.5", "seconds": 0.8,
        "numbers": {"attempts": 300, ...}}, "daft": {"error": "..."}, ...}}

An engine that fails gets {"error": ...} (with "traceback") and the exit status is 1; 0 when
every engine answered. Anything else an engine prints goes to stderr.

Keys default to $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_REGION, else the test
server's "test" / "test" / "us-east-1". Without --endpoint, S3 means AWS (HTTPS).
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlparse

ENGINES = ("deltalake", "polars", "duckdb", "daft")
NUMBER_KEYS = (
    "attempts",
    "distinct_keen_ids",
    "attempt_questions",
    "user_correct",
    "exams",
    "score_changes",
    "current_scores",
    "current_score_sum",
)


class Lake:
    """Where the tables are and how to reach them."""

    def __init__(self, args):
        uri = args.lake_uri.rstrip("/")
        parsed = urlparse(uri)
        if parsed.scheme in ("s3", "s3a"):
            # examflow also accepts s3a://; every engine here wants s3://.
            self.uri = "s3://" + uri.split("://", 1)[1]
            self.s3 = True
        elif parsed.scheme == "file":
            self.uri = str(Path(parsed.path).resolve())
            self.s3 = False
        elif parsed.scheme == "":
            self.uri = str(Path(uri).resolve())
            self.s3 = False
        else:
            raise SystemExit(f"--lake-uri: unsupported scheme {parsed.scheme!r} (s3:// or a path)")
        self.endpoint = args.endpoint.rstrip("/") if args.endpoint else None
        self.region = args.region
        self.key_id = args.access_key_id
        self.secret = args.secret_access_key

    def table(self, name):
        return f"{self.uri}/{name}"

    def endpoint_parts(self):
        """(host:port, use_ssl) of --endpoint."""
        parsed = urlparse(self.endpoint)
        return parsed.netloc, parsed.scheme == "https"

    def object_store_options(self, lowercase=False):
        """delta-rs / object_store options (deltalake, polars)."""
        if not self.s3:
            return None
        options = {
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
        }
        if self.endpoint:
            options["AWS_ENDPOINT_URL"] = self.endpoint
            options["AWS_ALLOW_HTTP"] = "true" if self.endpoint.startswith("http://") else "false"
        if lowercase:
            options = {k.lower(): v for k, v in options.items()}
        return options


def sorted_exams(pairs):
    """[[name, rows], ...] sorted by name, a null name last; rows as int."""
    pairs = [[name, int(n)] for name, n in pairs]
    return sorted(pairs, key=lambda p: (p[0] is None, p[0] or ""))


def optional_int(value):
    return None if value is None else int(value)


# The order that picks each document's current change in examflow's `scores`.
LATEST_FIRST = ("changed_at", "source_offset", "source_partition")

# examflow's `scores`, in SQL (DuckDB), over a relation named by {changes}.
CURRENT_SCORES_SQL = """SELECT count(*), sum(score) FROM (
    SELECT deleted, score, row_number() OVER (
        PARTITION BY document_id
        ORDER BY changed_at DESC NULLS LAST, source_offset DESC, source_partition DESC) AS r
    FROM {changes}) WHERE r = 1 AND NOT deleted"""


# --- engines ----------------------------------------------------------------------------


def run_deltalake(lake):
    import deltalake
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    options = lake.object_store_options()

    def read(name, columns):
        return DeltaTable(lake.table(name), storage_options=options).to_pyarrow_table(
            columns=columns
        )

    attempts = read("attempts", ["keen_id", "exam_name"])
    questions = read("attempt_questions", ["user_correct"])
    changes = read("score_changes", ["document_id", "deleted", "score", *LATEST_FIRST])
    by_exam = attempts.group_by("exam_name").aggregate([([], "count_all")])
    # scores: sort latest first, keep each document's first row, drop the deleted.
    latest = changes.sort_by(
        [(c, "descending") for c in LATEST_FIRST], null_placement="at_end"
    ).append_column("i", pa.array(range(changes.num_rows), pa.int64()))
    first = latest.take(latest.group_by("document_id").aggregate([("i", "min")])["i_min"])
    current = first.filter(pc.invert(first["deleted"]))
    numbers = {
        "attempts": attempts.num_rows,
        # count_distinct counts valid values only by default, as SQL's count(DISTINCT).
        "distinct_keen_ids": pc.count_distinct(attempts["keen_id"]).as_py(),
        "attempt_questions": questions.num_rows,
        "user_correct": optional_int(
            pc.sum(pc.cast(questions["user_correct"], pa.int64())).as_py()
        ),
        "exams": sorted_exams(
            zip(by_exam["exam_name"].to_pylist(), by_exam["count_all"].to_pylist())
        ),
        "score_changes": changes.num_rows,
        "current_scores": current.num_rows,
        "current_score_sum": optional_int(pc.sum(current["score"]).as_py()),
    }
    return deltalake.__version__, numbers


def run_polars(lake):
    import polars as pl

    options = lake.object_store_options(lowercase=True)

    def scan(name):
        return pl.scan_delta(lake.table(name), storage_options=options)

    attempts = scan("attempts")
    questions = scan("attempt_questions")
    counts = attempts.select(
        pl.len().alias("attempts"),
        # n_unique counts null as a value; SQL's count(DISTINCT) does not.
        pl.col("keen_id").drop_nulls().n_unique().alias("distinct_keen_ids"),
    ).collect()
    question_counts = questions.select(
        pl.len().alias("attempt_questions"),
        pl.col("user_correct").cast(pl.Int64).sum().alias("user_correct"),
        pl.col("user_correct").is_not_null().sum().alias("valid"),
    ).collect()
    by_exam = attempts.group_by("exam_name").agg(pl.len().alias("n")).collect()
    changes = scan("score_changes")
    change_count = changes.select(pl.len()).collect().item()
    # scores: latest first; first() keeps the frame's order within each group.
    current = (
        changes.sort(list(LATEST_FIRST), descending=True, nulls_last=True)
        .group_by("document_id")
        .agg(pl.col("deleted").first(), pl.col("score").first())
        .filter(~pl.col("deleted"))
        .select(pl.len().alias("n"), pl.col("score").sum().alias("sum"),
                pl.col("score").is_not_null().sum().alias("valid"))
        .collect()
    )
    numbers = {
        "attempts": counts["attempts"].item(),
        "distinct_keen_ids": counts["distinct_keen_ids"].item(),
        "attempt_questions": question_counts["attempt_questions"].item(),
        # polars sums an all-null column to 0; SQL says null.
        "user_correct": question_counts["user_correct"].item()
        if question_counts["valid"].item()
        else None,
        "exams": sorted_exams(by_exam.select("exam_name", "n").iter_rows()),
        "score_changes": change_count,
        "current_scores": current["n"].item(),
        "current_score_sum": current["sum"].item() if current["valid"].item() else None,
    }
    return pl.__version__, numbers


def duckdb_extension_file(name, duckdb_version):
    """The extension file that the PyPI package duckdb-extension-NAME ships:
    <package>/extensions/v<duckdb version>/<name>.duckdb_extension."""
    package = f"duckdb_extension_{name}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the Python package {package} is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "extensions"
    path = root / f"v{duckdb_version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        found = sorted(str(p) for p in root.glob(f"*/{name}.duckdb_extension"))
        raise RuntimeError(
            f"{path} not found (duckdb {duckdb_version}; {package} ships {found or 'nothing'})"
        )
    return path


def sql_string(text):
    return "'" + str(text).replace("'", "''") + "'"


def run_duckdb(lake):
    import duckdb

    # No extension is ever downloaded: the two needed are loaded from their files.
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    try:
        for name in ("httpfs", "delta"):
            path = duckdb_extension_file(name, duckdb.__version__)
            con.execute(f"LOAD {sql_string(path)}")
        if lake.s3:
            settings = [
                "TYPE S3",
                f"KEY_ID {sql_string(lake.key_id)}",
                f"SECRET {sql_string(lake.secret)}",
                f"REGION {sql_string(lake.region)}",
            ]
            if lake.endpoint:
                host, use_ssl = lake.endpoint_parts()
                settings += [
                    f"ENDPOINT {sql_string(host)}",
                    "URL_STYLE 'path'",
                    f"USE_SSL {'true' if use_ssl else 'false'}",
                ]
            con.execute(f"CREATE SECRET examflow_lake ({', '.join(settings)})")

        def scan(name):
            return f"delta_scan({sql_string(lake.table(name))})"

        row = con.execute(
            f"""SELECT
                (SELECT count(*) FROM {scan('attempts')}),
                (SELECT count(DISTINCT keen_id) FROM {scan('attempts')}),
                (SELECT count(*) FROM {scan('attempt_questions')}),
                (SELECT sum(CAST(user_correct AS INTEGER)) FROM {scan('attempt_questions')}),
                (SELECT count(*) FROM {scan('score_changes')})"""
        ).fetchone()
        by_exam = con.execute(
            f"SELECT exam_name, count(*) FROM {scan('attempts')} GROUP BY exam_name"
        ).fetchall()
        current = con.execute(
            CURRENT_SCORES_SQL.format(changes=scan("score_changes"))
        ).fetchone()
    finally:
        con.close()
    numbers = {
        "attempts": row[0],
        "distinct_keen_ids": row[1],
        "attempt_questions": row[2],
        "user_correct": optional_int(row[3]),
        "exams": sorted_exams(by_exam),
        "score_changes": row[4],
        "current_scores": current[0],
        "current_score_sum": optional_int(current[1]),
    }
    return duckdb.__version__, numbers


def run_daft(lake):
    if not os.environ.get("RAY_ADDRESS"):
        # A local runtime on loopback: otherwise Ray binds its processes to the host's
        # interface address (a setting read when ray is imported, so set first).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import daft
    import ray
    from daft import Window, col
    from daft.functions import row_number
    from daft.io import IOConfig, S3Config

    # A local Ray runtime of one CPU, started here unless this process already joined one
    # (RAY_ADDRESS names a cluster to use instead).
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(
                num_cpus=1,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024 * 1024,
            )
    daft.set_runner_ray(noop_if_initialized=True)
    io_config = None
    if lake.s3:
        s3 = {"region_name": lake.region, "key_id": lake.key_id, "access_key": lake.secret}
        if lake.endpoint:
            s3.update(
                endpoint_url=lake.endpoint,
                use_ssl=lake.endpoint.startswith("https://"),
                force_virtual_addressing=False,
            )
        io_config = IOConfig(s3=S3Config(**s3))

    def read(name):
        return daft.read_deltalake(lake.table(name), io_config=io_config)

    attempts = read("attempts")
    questions = read("attempt_questions")
    counts = attempts.agg(
        col("keen_id").count("all").alias("attempts"),
        col("keen_id").count_distinct().alias("distinct_keen_ids"),
    ).to_pydict()
    question_counts = questions.agg(
        col("user_correct").count("all").alias("attempt_questions"),
        col("user_correct").cast(daft.DataType.int64()).sum().alias("user_correct"),
    ).to_pydict()
    by_exam = (
        attempts.groupby("exam_name")
        .agg(col("keen_id").count("all").alias("n"))
        .to_pydict()
    )
    changes = read("score_changes")
    latest = Window().partition_by("document_id").order_by(
        *LATEST_FIRST, desc=True, nulls_first=False
    )
    current = (
        changes.with_column("r", row_number().over(latest))
        .where((col("r") == 1) & ~col("deleted"))
        .agg(
            col("document_id").count("all").alias("n"),
            col("score").sum().alias("sum"),
        )
        .to_pydict()
    )
    numbers = {
        "attempts": counts["attempts"][0],
        "distinct_keen_ids": counts["distinct_keen_ids"][0],
        "attempt_questions": question_counts["attempt_questions"][0],
        "user_correct": optional_int(question_counts["user_correct"][0]),
        "exams": sorted_exams(zip(by_exam["exam_name"], by_exam["n"])),
        "score_changes": changes.count_rows(),
        "current_scores": current["n"][0],
        "current_score_sum": optional_int(current["sum"][0]),
    }
    runner = daft.get_or_create_runner().name
    version = f"{daft.__version__} ({runner} runner, ray {ray.__version__})"
    return version, numbers


RUNNERS = {
    "deltalake": run_deltalake,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "daft": run_daft,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake-uri", required=True, help="s3://bucket/prefix or a local path")
    parser.add_argument("--endpoint", help="S3 endpoint, e.g. http://127.0.0.1:9000")
    parser.add_argument(
        "--engines",
        default="deltalake,polars,duckdb,daft",
        help=f"comma-separated, of {','.join(ENGINES)}",
    )
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--access-key-id", default=os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    parser.add_argument(
        "--secret-access-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
    )
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in RUNNERS]
    if unknown or not engines:
        parser.error(f"--engines: unknown {unknown} (choose from {','.join(ENGINES)})")
    lake = Lake(args)

    # Only the report goes to stdout: whatever the engines (and Ray's processes) print goes
    # to stderr.
    sys.stdout.flush()
    report_fd = os.dup(1)
    os.dup2(2, 1)

    report = {"lake_uri": lake.uri, "endpoint": lake.endpoint, "engines": {}}
    failed = False
    for engine in engines:
        started = time.perf_counter()
        try:
            version, numbers = RUNNERS[engine](lake)
            missing = [k for k in NUMBER_KEYS if k not in numbers]
            assert not missing, f"no {missing}"
            result = {"version": version, "numbers": numbers}
        except BaseException as e:  # noqa: BLE001 (one engine's failure is reported, not fatal)
            if isinstance(e, KeyboardInterrupt):
                raise
            failed = True
            result = {
                "error": f"{type(e).__name__}: {e}".strip(),
                "traceback": traceback.format_exc(),
            }
        result["seconds"] = round(time.perf_counter() - started, 3)
        report["engines"][engine] = result
        print(f"{engine}: {json.dumps(result.get('numbers') or result['error'])[:300]} "
              f"({result['seconds']} s)", file=sys.stderr, flush=True)

    if "daft" in engines and "ray" in sys.modules:
        try:
            sys.modules["ray"].shutdown()
        except Exception:  # noqa: BLE001
            pass
    sys.stdout.flush()
    with os.fdopen(report_fd, "w") as out:
        out.write(json.dumps(report, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

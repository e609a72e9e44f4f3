"""Bare change-stream reader, the baseline of `cdc_latency` (examflow's change capture).

Opens `db.coll.watch(full_document="updateLookup")` with pymongo, exactly the stream
`examflow cdc` opens, prints `ready` once the stream is open (the aggregate has run), then
takes inserted documents' events until it has seen `--count` of them whose
`fullDocument.bench_phase` is `--phase`, stamping each with `time.time_ns()` when pymongo
hands it over (no Kafka hop: this is the floor a capture process starts from). The documents
are inserted by the harness (the same Rust driver and documents for both readers).

Prints one JSON object: {"seq": [...], "recv_ns": [...], "other": n, "pymongo": version}.
With `--start-at T,I` the stream starts at that cluster time (a backlog already written:
the drain rate of the reader alone).
"""

import argparse
import json
import sys
import time

import pymongo
from bson.timestamp import Timestamp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--uri", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--coll", default="score")
    p.add_argument("--phase", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--start-at", default=None, help="cluster time T,I")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()

    client = pymongo.MongoClient(args.uri)
    coll = client[args.db][args.coll]
    kwargs = {"full_document": "updateLookup"}
    if args.start_at:
        t, i = (int(x) for x in args.start_at.split(","))
        kwargs["start_at_operation_time"] = Timestamp(t, i)
    seqs = []
    recv = []
    other = 0
    deadline = time.monotonic() + args.timeout
    with coll.watch(**kwargs) as stream:
        print("ready", flush=True)
        while len(seqs) < args.count:
            if time.monotonic() > deadline:
                print(f"timeout: {len(seqs)} of {args.count} events", file=sys.stderr)
                break
            change = stream.try_next()
            if change is None:
                continue
            now = time.time_ns()
            doc = change.get("fullDocument") or {}
            if change.get("operationType") == "insert" and doc.get("bench_phase") == args.phase:
                seqs.append(doc["bench_seq"])
                recv.append(now)
            else:
                other += 1
    json.dump(
        {"seq": seqs, "recv_ns": recv, "other": other, "pymongo": pymongo.version},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

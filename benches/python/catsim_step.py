"""catsim peer for `cat-bench`: time of one CAT step (estimate θ, then select the next item).

Usage: catsim_step.py --bank BANK.json --responses RESP.u8 --items N --length L
                      --examinees M [--interval-examinees K] [--prefixes PREFIXES.json]

* BANK.json: {"a": [...], "b": [...], "c": [...]} (the harness's 3PL bank; catsim uses the
  same logistic model without scaling constant, d = 1).
* RESP.u8: persons x items bytes, 1 = the person answers the item correctly if it is
  administered, 0 = wrongly (the same fixed response patterns examflow reads).
* PREFIXES.json: {"items": [[item indices of examinee 0's test], ...]}: examflow's
  administered sequences; the estimation-only timing runs catsim's estimator on each
  prefix (k = 1..L) of them with the responses from RESP.u8.

Each examinee j < M takes an L-item CAT: the first item is chosen at theta = 0 (not timed);
then, for each of the L - 1 answers that are followed by another item, one step =
`NumericalSearchEstimator().estimate(...)` (catsim's only estimator: bounded Brent MLE on
[-6, 6], Dodd's heuristic while all answers are right or all wrong) +
`selector.select(...)`, timed with `time.perf_counter()`. Two extra examinees run first
as a warm-up. Selectors: MaxInfoSelector, UrrySelector (closest difficulty),
RandomSelector, IntervalInfoSelector(interval=1) (integrated information on theta +- 1,
scipy `quad` per item; slow, so only K examinees).

Prints one JSON object: {"catsim_version", "rows": {name: {"step_us": [...], ...}},
"estimate": {"step_us": [...]}}; per-step times in microseconds.
"""

import argparse
import importlib.metadata
import json
import time

import numpy as np
from catsim.estimation import NumericalSearchEstimator
from catsim.item_bank import ItemBank
from catsim.selection import IntervalInfoSelector, MaxInfoSelector, RandomSelector, UrrySelector

from common import emit, load


def run_cat(bank, resp, selector, examinees, length, warmup=2):
    """Times estimate + select for every answer that is followed by another item.

    The first `warmup` examinees are run once untimed before examinees 0..M-1."""
    est = NumericalSearchEstimator()
    rng = np.random.default_rng(1)
    times = []
    runs = [(False, j) for j in range(min(warmup, examinees))] + [(True, j) for j in range(examinees)]
    for timed, j in runs:
        adm, answers, theta = [], [], 0.0
        item = selector.select(item_bank=bank, administered_items=adm, est_theta=theta, rng=rng)
        for k in range(length):
            adm.append(int(item))
            answers.append(bool(resp[j, item]))
            if k == length - 1:
                break
            t0 = time.perf_counter()
            theta = est.estimate(item_bank=bank, administered_items=adm, response_vector=answers, est_theta=theta)
            item = selector.select(item_bank=bank, administered_items=adm, est_theta=theta, rng=rng)
            if timed:
                times.append((time.perf_counter() - t0) * 1e6)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", required=True)
    ap.add_argument("--responses", required=True)
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--length", type=int, required=True)
    ap.add_argument("--examinees", type=int, required=True)
    ap.add_argument("--interval-examinees", type=int, default=0)
    ap.add_argument("--prefixes")
    args = ap.parse_args()

    with open(args.bank) as f:
        par = json.load(f)
    bank = ItemBank(np.column_stack([par["a"], par["b"], par["c"]]))
    resp = load(args.responses, args.items)

    rows = {}
    for name, sel, m in [
        ("max_info", MaxInfoSelector(), args.examinees),
        ("urry", UrrySelector(), args.examinees),
        ("random", RandomSelector(), args.examinees),
        ("interval_info", IntervalInfoSelector(interval=1.0), args.interval_examinees),
    ]:
        if m <= 0:
            continue
        t0 = time.perf_counter()
        times = run_cat(bank, resp, sel, m, args.length)
        rows[name] = {"step_us": times, "examinees": m, "wall_s": time.perf_counter() - t0}

    out = {
        "tool": "catsim",
        "catsim_version": importlib.metadata.version("catsim"),
        "numpy_version": np.__version__,
        "scipy_version": importlib.metadata.version("scipy"),
        "numexpr_version": importlib.metadata.version("numexpr"),
        "rows": rows,
    }

    if args.prefixes:
        with open(args.prefixes) as f:
            seqs = json.load(f)["items"]
        est = NumericalSearchEstimator()
        times = []
        for j, seq in enumerate(seqs):
            theta = 0.0
            for k in range(1, len(seq) + 1):
                adm = [int(i) for i in seq[:k]]
                answers = [bool(resp[j, i]) for i in adm]
                t0 = time.perf_counter()
                theta = est.estimate(item_bank=bank, administered_items=adm, response_vector=answers, est_theta=theta)
                times.append((time.perf_counter() - t0) * 1e6)
        out["estimate"] = {"step_us": times, "examinees": len(seqs)}

    emit(out)


if __name__ == "__main__":
    main()

"""Straightforward numpy S-X2 item fit for the 2PL (baseline for `psych-bench`).

Orlando & Thissen's S-X2 with the same grid and the same rules as examflow's `s_x2`
(engine/src/irt/fit.rs, which follows R mirt's `itemfit()`): complete rows only, summed-score
groups 1..J-1, expected proportions from Lord-Wingersky recursions on an equally spaced grid
with normal weights, mirt's collapsing of sparse groups (`collapseCells`, mincell 1), df =
groups - 2, p from the chi-square upper tail (scipy), RMSEA.

The straightforward way: the recursion without item i is recomputed from scratch for every
item (a Python loop over items of numpy operations on the score x node table; O(J^2) numpy
calls), and the observed table is one GEMM, X.T @ onehot(score).

Usage: numpy_sx2.py DATA.(csv|u8) [--items J] --params PARAMS.json [--quad-n 61]
                    [--range 6] [--mincell 1]
PARAMS.json: {"a": [...], "b": [...]}. Prints JSON {"seconds", "s_x2", "df", "n_groups", ...}.
"""

import argparse
import json
import time

import numpy as np

from common import MISSING, emit, load, normal_grid

try:
    from scipy.stats import chi2
except ImportError:  # p-values are not needed for the timing or the agreement check
    chi2 = None


def lord_wingersky(p):
    """p: items x nodes. Returns (items + 1) x nodes, P(summed score s | node)."""
    k = p.shape[1]
    table = np.ones((1, k))
    for pj in p:
        nxt = np.zeros((table.shape[0] + 1, k))
        nxt[:-1] += table * (1.0 - pj)
        nxt[1:] += table * pj
        table = nxt
    return table


def collapse(o, e, mincell):
    """mirt's collapseCells for one item: o, e are lists of [wrong, right] per group."""
    rows = [(list(oo), list(ee)) for oo, ee in zip(o, e) if oo[0] + oo[1] > 0]
    if not rows:
        return rows

    def add(dst, src):
        for c in range(2):
            dst[0][c] += src[0][c]
            dst[1][c] += src[1][c]

    def n(r):
        return r[0][0] + r[0][1]

    keep = [True] * len(rows)
    for j in range(len(rows) - 1):
        if n(rows[j]) == 1:
            add(rows[j + 1], rows[j])
            keep[j] = False
    rows = [r for r, k in zip(rows, keep) if k]
    last = len(rows) - 1
    if last > 0 and n(rows[last]) == 1:
        add(rows[last - 1], rows[last])
        rows.pop()

    def sparse(r):
        return any(x < mincell and x != 0 for x in r[1])

    while len(rows) > 1:
        w = next((i for i, r in enumerate(rows) if sparse(r)), None)
        if w is None:
            break
        down = w == len(rows) - 1 or (w > 0 and n(rows[w - 1]) <= n(rows[w + 1]))
        target = w - 1 if down else w + 1
        add(rows[target], rows[w])
        rows.pop(w)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--items", type=int)
    ap.add_argument("--params", required=True)
    ap.add_argument("--quad-n", type=int, default=61)
    ap.add_argument("--range", type=float, default=6.0)
    ap.add_argument("--mincell", type=float, default=1.0)
    args = ap.parse_args()

    raw = load(args.data, args.items)
    with open(args.params) as f:
        par = json.load(f)
    a = np.asarray(par["a"], dtype=float)
    b = np.asarray(par["b"], dtype=float)
    th, w = normal_grid(args.quad_n, args.range)

    t0 = time.perf_counter()
    complete = ~(raw == MISSING).any(axis=1)
    X = (raw[complete] == 1).astype(np.float64)
    n_complete, m = X.shape
    score = X.sum(axis=1).astype(np.int64)
    n_s = np.bincount(score, minlength=m + 1).astype(float)
    onehot = np.zeros((n_complete, m + 1))
    onehot[np.arange(n_complete), score] = 1.0
    right = X.T @ onehot  # items x scores

    p = 1.0 / (1.0 + np.exp(-a[:, None] * (th[None, :] - b[:, None])))  # items x nodes
    total = lord_wingersky(p) @ w  # P(score s), s = 0..m
    s_x2, df, n_groups, pvals = [], [], [], []
    groups = np.arange(1, m)
    for i in range(m):
        without = lord_wingersky(np.delete(p, i, axis=0))  # m x nodes, scores 0..m-1
        e1 = (without[groups - 1] * p[i] * w).sum(axis=1) / total[groups]
        e0 = (without[groups] * (1.0 - p[i]) * w).sum(axis=1) / total[groups]
        nn = n_s[groups]
        r = right[i, groups]
        o = np.stack([nn - r, r], axis=1)
        e = np.stack([nn * e0, nn * e1], axis=1)
        rows = collapse(o.tolist(), e.tolist(), args.mincell)
        x2 = 0.0
        cells = 0
        for oo, ee in rows:
            for c in range(2):
                if ee[c] != 0:
                    x2 += (oo[c] - ee[c]) ** 2 / ee[c]
                    cells += 1
        d = cells - len(rows) - 2
        s_x2.append(x2 if d > 0 else None)
        df.append(max(d, 0))
        n_groups.append(len(rows))
        pvals.append(float(chi2.sf(x2, d)) if chi2 is not None and d > 0 else None)
    seconds = time.perf_counter() - t0
    emit(
        {
            "tool": "numpy-sx2",
            "seconds": seconds,
            "n_complete": int(n_complete),
            "s_x2": s_x2,
            "df": df,
            "n_groups": n_groups,
            "p_value": pvals,
            "numpy": np.__version__,
        }
    )


if __name__ == "__main__":
    main()

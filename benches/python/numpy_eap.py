"""Vectorised numpy EAP scoring for the 2PL (baseline for `irt-bench`).

Same grid as examflow (equally spaced nodes on [-r, r], normal weights). Persons are
processed in chunks: log L = X @ log P.T + (M - X) @ log Q.T, then posterior mean and SD.

Usage: numpy_eap.py DATA.u8 --items N --params PARAMS.json [--quad-n 61] [--range 6]
PARAMS.json: {"a": [...], "b": [...]}. Prints JSON {"seconds", "n", "theta_head", ...}.
"""

import argparse
import json
import time

import numpy as np

from common import MISSING, emit, load, normal_grid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--items", type=int)
    ap.add_argument("--params", required=True)
    ap.add_argument("--quad-n", type=int, default=61)
    ap.add_argument("--range", type=float, default=6.0)
    ap.add_argument("--chunk", type=int, default=65536)
    args = ap.parse_args()

    raw = load(args.data, args.items)
    with open(args.params) as f:
        par = json.load(f)
    a = np.asarray(par["a"])
    b = np.asarray(par["b"])
    th, w = normal_grid(args.quad_n, args.range)
    logw = np.log(w)
    n = raw.shape[0]

    t0 = time.perf_counter()
    z = a[:, None] * (th[None, :] - b[:, None])
    log_q = -(np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))))
    log_p = log_q + z
    mean = np.empty(n)
    sd = np.empty(n)
    for s in range(0, n, args.chunk):
        blk = raw[s : s + args.chunk]
        X = (blk == 1).astype(np.float64)
        M = (blk != MISSING).astype(np.float64)
        ll = X @ log_p + (M - X) @ log_q
        ll += logw[None, :]
        ll -= ll.max(axis=1, keepdims=True)
        np.exp(ll, out=ll)
        tot = ll.sum(1)
        m1 = (ll @ th) / tot
        m2 = (ll @ (th * th)) / tot
        mean[s : s + args.chunk] = m1
        sd[s : s + args.chunk] = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
    seconds = time.perf_counter() - t0
    emit(
        {
            "tool": "numpy-eap",
            "seconds": seconds,
            "n": int(n),
            "theta_head": mean[:5].tolist(),
            "se_head": sd[:5].tolist(),
            "numpy": np.__version__,
        }
    )


if __name__ == "__main__":
    main()

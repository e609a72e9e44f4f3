"""Direct vectorised numpy Bock-Aitkin EM for the 2PL (baseline for `irt-bench`).

Same grid and convergence rule as examflow's `calibrate` (equally spaced nodes on
[-r, r] with normal weights; stop when max |change| of a, b < tol or the relative change of
the marginal log-likelihood < ll_rtol), same starting values, same M-step (per-item
Newton-Raphson with step halving on the expected complete-data log-likelihood in the
slope-intercept form z = a*theta + d, vectorised over items). No pattern collapsing, no
acceleration (plain EM): every iteration is one pass over all persons with matrix products

    log L = X @ (log P - log Q) + M @ log Q      (persons x nodes)
    r = X.T @ W,  n = M.T @ W                     (items x nodes, W = posterior weights)

where X = correct indicator, M = answered indicator (missing responses drop out). With
complete data M is all ones, so M @ log Q and M.T @ W reduce to column sums (2 GEMMs per
iteration instead of 4).

Usage: numpy_em.py DATA.csv [--quad-n 61] [--range 6] [--tol 1e-5] [--ll-rtol 1e-12]
                            [--max-iter 500] [--theta]
Prints JSON {"seconds", "a", "b", "iterations", "converged", "loglik", "peak_rss_kb", ...}.
"""

import argparse
import time

import numpy as np

from common import MISSING, emit, load, normal_grid


def softplus(z):
    """ln(1 + e^z), stable (np.logaddexp is several times slower)."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def q2(a, d, th, r, n):
    z = a[:, None] * th[None, :] + d[:, None]
    return (r * z - n * softplus(z)).sum(axis=1)


def m_step(a, d, th, r, n):
    """Per-item Newton with step halving, vectorised over items."""
    a = a.copy()
    d = d.copy()
    cur = q2(a, d, th, r, n)
    active = np.ones(a.shape, dtype=bool)
    for _ in range(100):
        z = a[:, None] * th[None, :] + d[:, None]
        p = 1.0 / (1.0 + np.exp(-z))
        e = r - n * p
        w = n * p * (1.0 - p)
        ga = (e * th).sum(1)
        gd = e.sum(1)
        haa = (w * th * th).sum(1)
        had = (w * th).sum(1)
        hdd = w.sum(1)
        det = haa * hdd - had * had
        ok = active & (det > 1e-300)
        safe = np.where(ok, det, 1.0)
        da = np.where(ok, (hdd * ga - had * gd) / safe, 0.0)
        dd = np.where(ok, (haa * gd - had * ga) / safe, 0.0)
        step = np.ones_like(a)
        accepted = np.zeros(a.shape, dtype=bool)
        pending = ok.copy()
        for _ in range(40):
            if not pending.any():
                break
            na = a + step * da
            nd = d + step * dd
            nq = q2(na, nd, th, r, n)
            take = pending & (nq >= cur)
            a = np.where(take, na, a)
            d = np.where(take, nd, d)
            cur = np.where(take, nq, cur)
            accepted |= take
            pending &= ~take
            step = np.where(pending, step * 0.5, step)
        moved = np.maximum(np.abs(step * da), np.abs(step * dd))
        active = ok & accepted & (moved >= 1e-12)
        if not active.any():
            break
    return a, d


def e_step(X, M, a, d, th, logw):
    """M is None for complete data (then M @ log Q and M.T @ W are column sums)."""
    z = a[:, None] * th[None, :] + d[:, None]  # items x nodes
    log_q = -softplus(z)
    dl = z  # log P - log Q = z for the 2PL
    if M is None:
        ll = X @ dl  # persons x nodes
        ll += (log_q.sum(0) + logw)[None, :]
    else:
        ll = X @ dl + M @ log_q
        ll += logw[None, :]
    mx = ll.max(axis=1, keepdims=True)
    np.subtract(ll, mx, out=ll)
    np.exp(ll, out=ll)
    s = ll.sum(axis=1, keepdims=True)
    loglik = float((mx[:, 0] + np.log(s[:, 0])).sum())
    ll /= s
    r = X.T @ ll
    if M is None:
        n = np.broadcast_to(ll.sum(0), r.shape)
    else:
        n = M.T @ ll
    return r, n, loglik, ll


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--items", type=int)
    ap.add_argument("--quad-n", type=int, default=61)
    ap.add_argument("--range", type=float, default=6.0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--ll-rtol", type=float, default=1e-12)
    ap.add_argument("--max-iter", type=int, default=500)
    ap.add_argument("--theta", action="store_true", help="also output EAP theta per person")
    args = ap.parse_args()

    raw = load(args.data, args.items)
    X = (raw == 1).astype(np.float64)
    complete = not (raw == MISSING).any()
    M = None if complete else (raw != MISSING).astype(np.float64)
    del raw
    th, w = normal_grid(args.quad_n, args.range)
    logw = np.log(w)

    t0 = time.perf_counter()
    answered = np.full(X.shape[1], X.shape[0], dtype=float) if M is None else M.sum(0)
    right = X.sum(0)
    pv = np.clip(right / np.maximum(answered, 1), 0.02, 0.98)
    a = np.ones(X.shape[1])
    d = np.log(pv / (1 - pv)) * np.sqrt(1 + a * a / 2.897)
    r, n, ll, post = e_step(X, M, a, d, th, logw)
    prev = ll
    iterations = 0
    converged = False
    change = float("inf")
    while iterations < args.max_iter:
        old_a, old_b = a, -d / a
        a, d = m_step(a, d, th, r, n)
        iterations += 1
        r, n, ll, post = e_step(X, M, a, d, th, logw)
        change = float(max(np.abs(a - old_a).max(), np.abs(-d / a - old_b).max()))
        rel = abs((ll - prev) / max(abs(prev), 1e-300))
        prev = ll
        if change < args.tol or rel < args.ll_rtol:
            converged = True
            break
    seconds = time.perf_counter() - t0
    out = {
        "tool": "numpy-em",
        "seconds": seconds,
        "a": a.tolist(),
        "b": (-d / a).tolist(),
        "iterations": iterations,
        "converged": converged,
        "last_change": change,
        "loglik": ll,
        "numpy": np.__version__,
        "complete_data": complete,
    }
    if args.theta:
        out["theta"] = (post @ th).tolist()
    emit(out)


if __name__ == "__main__":
    main()

"""Straightforward numpy DIF (baseline for `psych-bench`): Mantel-Haenszel and logistic
regression, matching on the total score (studied item included), complete rows of the two
groups only, as examflow's `dif::mantel_haenszel` / `dif::logistic_regression`.

* Mantel-Haenszel: per item, the per-score 2 x 2 tables by one `np.bincount` over persons;
  alpha_MH, MH D-DIF = -2.35 ln alpha, the Robins-Breslow-Greenland SE and the
  continuity-corrected chi-square, vectorised over score levels (levels with < 2 persons or
  one group only skipped).
* Logistic regression (Swaminathan & Rogers): per item, the three nested models
  (score; + group; + score x group) fitted by Newton-Raphson (IRLS) on the person-level
  design matrix (persons x 2..4), until the deviance changes by < 1e-10 (relative) or
  50 iterations; likelihood-ratio chi-squares M0-M1, M1-M2, M0-M2.

Usage: numpy_dif.py DATA.(csv|u8) [--items J] --groups GROUPS.u8 [--only mh|lr]
GROUPS.u8: one byte per person, 0 reference, 1 focal, 2 neither.
Prints JSON {"seconds_mh", "seconds_lr", "mh_d_dif", "mh_chi_square", "lr_uniform", ...}.
"""

import argparse
import time

import numpy as np

from common import MISSING, emit, load


def mantel_haenszel(X, g, score, m):
    d_dif, se, chi = [], [], []
    levels = m + 1
    for i in range(m):
        # cell index: score * 4 + group * 2 + wrong  ->  A, B (ref right, wrong), C, D (focal)
        t = np.bincount(score * 4 + g * 2 + (1 - X[:, i]), minlength=4 * levels)
        t = t.reshape(levels, 4).astype(float)
        a, b, c, d = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        n = a + b + c + d
        nr, nf = a + b, c + d
        ok = (n >= 2) & (nr > 0) & (nf > 0)
        a, b, c, d, n, nr, nf = (v[ok] for v in (a, b, c, d, n, nr, nf))
        r, s = a * d / n, b * c / n
        p, q = (a + d) / n, (b + c) / n
        num, den = r.sum(), s.sum()
        alpha = num / den if num > 0 and den > 0 else np.nan
        var_ln = (
            (p * r).sum() / (2 * num * num)
            + (p * s + q * r).sum() / (2 * num * den)
            + (q * s).sum() / (2 * den * den)
        )
        right, wrong = a + c, b + d
        ea = (nr * right / n).sum()
        var = (nr * nf * right * wrong / (n * n * (n - 1))).sum()
        d_dif.append(float(-2.35 * np.log(alpha)))
        se.append(float(2.35 * np.sqrt(var_ln)))
        chi.append(float(max(abs(a.sum() - ea) - 0.5, 0.0) ** 2 / var) if var > 0 else None)
    return d_dif, se, chi


def deviance(y, eta):
    # -2 log L of a Bernoulli model, stable: log(1 + e^eta) - y * eta
    return 2.0 * float((np.logaddexp(0.0, eta) - y * eta).sum())


def irls(D, y, max_iter=50, tol=1e-10):
    beta = np.zeros(D.shape[1])
    eta = D @ beta
    dev = deviance(y, eta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-eta))
        wgt = p * (1.0 - p)
        grad = D.T @ (y - p)
        hess = D.T @ (D * wgt[:, None])
        step = np.linalg.solve(hess, grad)
        t = 1.0
        for _ in range(30):  # step halving
            new = beta + t * step
            new_eta = D @ new
            new_dev = deviance(y, new_eta)
            if new_dev <= dev + 1e-12 * abs(dev):
                break
            t *= 0.5
        change = dev - new_dev
        beta, eta, dev = new, new_eta, new_dev
        if abs(change) <= tol * max(abs(dev), 1.0):
            break
    return dev


def logistic_regression(X, g, score, m):
    n = X.shape[0]
    s = score.astype(float)
    gf = g.astype(float)
    designs = [
        np.column_stack([np.ones(n), s]),
        np.column_stack([np.ones(n), s, gf]),
        np.column_stack([np.ones(n), s, gf, s * gf]),
    ]
    uni, non, both = [], [], []
    for i in range(m):
        y = X[:, i].astype(float)
        d0, d1, d2 = (irls(D, y) for D in designs)
        uni.append(max(d0 - d1, 0.0))
        non.append(max(d1 - d2, 0.0))
        both.append(max(d0 - d2, 0.0))
    return uni, non, both


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--items", type=int)
    ap.add_argument("--groups", required=True)
    ap.add_argument("--only", choices=["mh", "lr"])
    args = ap.parse_args()

    raw = load(args.data, args.items)
    groups = np.fromfile(args.groups, dtype=np.uint8)
    out = {"tool": "numpy-dif", "numpy": np.__version__}

    t0 = time.perf_counter()
    keep = (groups < 2) & ~(raw == MISSING).any(axis=1)
    X = raw[keep].astype(np.int64)
    g = groups[keep].astype(np.int64)
    m = X.shape[1]
    score = X.sum(axis=1)
    prep = time.perf_counter() - t0
    out["n_compared"] = int(X.shape[0])

    if args.only != "lr":
        t0 = time.perf_counter()
        d_dif, se, chi = mantel_haenszel(X, g, score, m)
        out["seconds_mh"] = prep + time.perf_counter() - t0
        out.update(mh_d_dif=d_dif, mh_se=se, mh_chi_square=chi)
    if args.only != "mh":
        t0 = time.perf_counter()
        uni, non, both = logistic_regression(X, g, score, m)
        out["seconds_lr"] = prep + time.perf_counter() - t0
        out.update(lr_uniform=uni, lr_non_uniform=non, lr_both=both)
    emit(out)


if __name__ == "__main__":
    main()

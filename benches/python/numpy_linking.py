"""Straightforward numpy/scipy characteristic-curve linking (baseline for `psych-bench`).

Stocking-Lord and Haebara with the conventions of examflow's `irt::link` (R plink's
non-symmetric criteria, D = 1): theta_old = A * theta_new + B, a new item becomes a / A,
A * b + B; the criterion is evaluated vectorised over anchors x points and minimised by
`scipy.optimize.minimize(method="Nelder-Mead")` from the mean/sigma constants, with the same
initial simplex as examflow's first Nelder-Mead run (steps 0.1 in A and B). All anchors are
kept (no drift screening). A second peer minimises the same criterion by scipy's
Levenberg-Marquardt with the analytic Jacobian, the algorithm examflow uses.

Usage: numpy_linking.py PARAMS.json [--reps 5]
PARAMS.json: {"old_a", "old_b", "new_a", "new_b", "theta", "weight"} (2PL, c = 0).
Prints JSON {"stocking_lord": {"A", "B", "seconds": [...], "nfev", "lm": {"A", "B", "seconds",
"nfev"}}, "haebara": {...}}.
"""

import argparse
import json
import time

import numpy as np
from scipy.optimize import least_squares, minimize

from common import emit


def curves(a, b, theta):
    return 1.0 / (1.0 + np.exp(-a[:, None] * (theta[None, :] - b[:, None])))


def link(method, oa, ob, na, nb, theta, weight):
    p_old = curves(oa, ob, theta)  # anchors x points
    tcc_old = p_old.sum(axis=0)
    wsum = weight.sum()

    def criterion(x):
        A, B = x
        if not (np.isfinite(A) and A > 0 and np.isfinite(B)):
            return np.inf
        p_new = curves(na / A, A * nb + B, theta)
        if method == "haebara":
            return float((weight * ((p_old - p_new) ** 2).sum(axis=0)).sum() / (len(oa) * wsum))
        return float((weight * (tcc_old - p_new.sum(axis=0)) ** 2).sum() / wsum)

    A0 = ob.std() / nb.std()  # mean/sigma start
    B0 = ob.mean() - A0 * nb.mean()
    simplex = np.array([[A0, B0], [A0 + 0.1, B0], [A0, B0 + 0.1]])
    res = minimize(
        criterion,
        [A0, B0],
        method="Nelder-Mead",
        options={"initial_simplex": simplex, "xatol": 1e-11, "fatol": 1e-15, "maxiter": 4000},
    )
    return float(res.x[0]), float(res.x[1]), int(res.nfev)


def link_lm(method, oa, ob, na, nb, theta, weight):
    """The same criterion as residuals, minimised by MINPACK's Levenberg-Marquardt
    (`scipy.optimize.least_squares(method="lm")`) with the analytic Jacobian: the algorithm
    examflow uses, so the ratio against it is the language and layout, not the optimiser."""
    root = np.sqrt(weight)
    p_old = curves(oa, ob, theta)  # anchors x points
    tcc_old = p_old.sum(axis=0)

    def parts(x):
        A, B = x
        u = (theta - B) / A  # the linked new curve at theta is the new curve at u
        s = 1.0 / (1.0 + np.exp(-na[:, None] * (u[None, :] - nb[:, None])))
        slope = s * (1.0 - s) * na[:, None]  # dP/du
        return u, s, slope

    def residuals(x):
        _, s, _ = parts(x)
        if method == "haebara":
            return (root[None, :] * (p_old - s)).ravel()
        return root * (tcc_old - s.sum(axis=0))

    def jacobian(x):
        A, _ = x
        u, _, slope = parts(x)
        if method == "haebara":
            ja = (root[None, :] * slope * u[None, :] / A).ravel()
            jb = (root[None, :] * slope / A).ravel()
        else:
            total = slope.sum(axis=0)
            ja = root * total * u / A
            jb = root * total / A
        return np.column_stack([ja, jb])

    A0 = ob.std() / nb.std()
    B0 = ob.mean() - A0 * nb.mean()
    res = least_squares(
        residuals, [A0, B0], jac=jacobian, method="lm", xtol=1e-13, ftol=1e-15, gtol=1e-15
    )
    return float(res.x[0]), float(res.x[1]), int(res.nfev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("params")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with open(args.params) as f:
        par = json.load(f)
    arr = {k: np.asarray(v, dtype=float) for k, v in par.items()}
    out = {"tool": "numpy-linking", "numpy": np.__version__}
    params = [arr[k] for k in ("old_a", "old_b", "new_a", "new_b", "theta", "weight")]

    def timed(fit, method):
        """`reps` runs of one peer: its last (A, B, nfev) and every run's seconds."""
        secs = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            result = fit(method, *params)
            secs.append(time.perf_counter() - t0)
        return result, secs

    for method in ["stocking_lord", "haebara"]:
        (A, B, nfev), secs = timed(link, method)
        (lm_a, lm_b, lm_nfev), lm_secs = timed(link_lm, method)
        out[method] = {
            "A": A,
            "B": B,
            "seconds": secs,
            "nfev": nfev,
            "lm": {"A": lm_a, "B": lm_b, "seconds": lm_secs, "nfev": lm_nfev},
        }
    emit(out)


if __name__ == "__main__":
    main()

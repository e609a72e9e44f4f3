"""Runs girth's MML estimators on a data file (baseline for `irt-bench`).

2PL: `girth.twopl_mml` (girth's graded-response MML with two categories), which supports
missing data: missing cells are tagged with `girth.INVALID_RESPONSE`. Its returned
`Ability` (EAP at the final parameters) is reported as theta.
3PL: `girth.threepl_mml` (complete data only), theta from `girth.ability_3pl_eap`
(timed separately, reported as `theta_seconds`).

The iteration count is read by counting the per-iteration calls girth makes (2PL: the
latent distribution update; 3PL: the partial integral of the first item).

Usage: girth_bench.py DATA.csv [--model 2pl|3pl] [--quad-n 61] [--range 6] [--max-iter 25]
                              [--theta]
"""

import argparse
import importlib.metadata
import sys
import time

import numpy as np

from common import MISSING, emit, load

import girth  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--items", type=int)
    ap.add_argument("--model", default="2pl", choices=["2pl", "3pl"])
    ap.add_argument("--quad-n", type=int, default=61)
    ap.add_argument("--range", type=float, default=6.0)
    ap.add_argument("--max-iter", type=int, default=25)
    ap.add_argument("--theta", action="store_true")
    args = ap.parse_args()

    raw = load(args.data, args.items)
    has_missing = bool((raw == MISSING).any())
    data = raw.T.astype(np.int64)  # girth wants items x persons
    del raw
    if has_missing:
        data[data == MISSING] = girth.INVALID_RESPONSE
    options = {
        "quadrature_n": args.quad_n,
        "quadrature_bounds": (-args.range, args.range),
        "max_iteration": args.max_iter,
    }
    counter = {"n": 0}
    out = {"tool": "girth", "girth": importlib.metadata.version("girth"), "model": args.model}

    if args.model == "2pl":
        mod = sys.modules["girth.unidimensional.polytomous.grm_mml"]
        base_pdf = mod.LatentPDF

        class CountingPDF(base_pdf):
            def __call__(self, *a, **k):
                counter["n"] += 1
                return super().__call__(*a, **k)

        mod.LatentPDF = CountingPDF
        t0 = time.perf_counter()
        res = girth.twopl_mml(data, options)
        out["seconds"] = time.perf_counter() - t0
        out["a"] = np.asarray(res["Discrimination"], dtype=float).tolist()
        out["b"] = np.asarray(res["Difficulty"], dtype=float).ravel().tolist()
        if args.theta:
            out["theta"] = np.asarray(res["Ability"], dtype=float).tolist()
    else:
        if has_missing:
            out["error"] = "threepl_mml: missing data not supported by this harness"
            emit(out)
            return
        # Compatibility shim: girth 0.8's threepl_mml passes a (1, 1) array as the target
        # proportion to rasch_mml._mml_abstract, whose objective then returns a 1-element
        # array; with current NumPy/SciPy `difficulty[i] = fminbound(...)` raises
        # "setting an array element with a sequence". Make the objective scalar.
        rasch_mod = sys.modules["girth.unidimensional.dichotomous.rasch_mml"]
        base_fminbound = rasch_mod.fminbound

        def scalar_fminbound(func, x1, x2, *a, **k):
            return float(base_fminbound(lambda x: float(np.squeeze(func(x))), x1, x2, *a, **k))

        rasch_mod.fminbound = scalar_fminbound
        out["compat_shim"] = "scalar objective for rasch_mml.fminbound (NumPy 2)"
        mod = sys.modules["girth.unidimensional.dichotomous.threepl_mml"]
        base_pi = mod._compute_partial_integral_3pl
        n_items = data.shape[0]

        def counting_pi(theta, difficulty, discrimination, guessing, the_sign):
            if the_sign.shape[0] == n_items:  # the once-per-iteration full evaluation
                counter["n"] += 1
            return base_pi(theta, difficulty, discrimination, guessing, the_sign)

        mod._compute_partial_integral_3pl = counting_pi
        t0 = time.perf_counter()
        res = girth.threepl_mml(data, options)
        out["seconds"] = time.perf_counter() - t0
        out["a"] = np.asarray(res["Discrimination"], dtype=float).tolist()
        out["b"] = np.asarray(res["Difficulty"], dtype=float).ravel().tolist()
        out["c"] = np.asarray(res["Guessing"], dtype=float).tolist()
        if args.theta:
            t1 = time.perf_counter()
            theta = girth.ability_3pl_eap(
                data, res["Difficulty"], res["Discrimination"], res["Guessing"], options
            )
            out["theta_seconds"] = time.perf_counter() - t1
            out["theta"] = np.asarray(theta, dtype=float).tolist()
    out["iterations"] = counter["n"]
    out["max_iteration_option"] = args.max_iter
    emit(out)


if __name__ == "__main__":
    main()

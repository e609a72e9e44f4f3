"""Agreement fixture: catsim's item choices and estimates on a seeded bank.

Writes `engine/tests/data/catsim_choices.json`, which `engine/tests/cat_catsim_agreement.rs`
checks examflow against (the Rust test needs no Python). Re-generate with

    pip install catsim==0.21.0
    python3 benches/python/catsim_agree.py [--out PATH] [--seed 6]

What is recorded (catsim 0.21.0, 4PL logistic with D = 1, d = 1 here):

* `bank`: 100 items, a ~ U(0.5, 2.5), b ~ N(0, 1.2), c ~ U(0, 0.3) with every fifth item
  c = 0 (so both of examflow's 2PL and 3PL code paths are exercised).
* `select_cases`: a θ and a set of administered item indices. catsim is given that θ
  directly (`est_theta`), so both sides select at the same θ. Stored: `MaxInfoSelector`'s
  choice (maximum Fisher information, `irt.inf_hpc`), `UrrySelector`'s choice (difficulty
  closest to θ), and (for the cases without administered items) catsim's information of
  every item at θ (`ItemBank.information`). Cases where the best
  and second-best eligible item are within 1e-9 (relative) of each other are not recorded:
  catsim ranks with `numpy.argsort` (quicksort, unspecified order among ties), examflow
  keeps the first maximum, so a tie would make the comparison meaningless.
* `mle_cases`: mixed response patterns (at least one right and one wrong) on random item
  subsets, simulated from a true θ; catsim's `NumericalSearchEstimator` with its default
  method (`bounded`: scipy's bounded Brent on [-6, 6], xatol 1e-5) and with
  `golden2` and tol 1e-10 (catsim's own golden-section search, to ~1e-10), plus the EAP
  computed with catsim's `irt.log_likelihood` on examflow's grid (61 equally spaced
  nodes on [-6, 6], N(0, 1) prior): catsim has no EAP estimator of its own.
"""

import argparse
import importlib.metadata
import json
import os

import numpy as np
from catsim import irt
from catsim.estimation import NumericalSearchEstimator
from catsim.item_bank import ItemBank
from catsim.selection import MaxInfoSelector, UrrySelector

from common import normal_grid

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "..", "engine", "tests", "data", "catsim_choices.json")


def make_bank(rng, n):
    a = rng.uniform(0.5, 2.5, n)
    b = rng.normal(0.0, 1.2, n)
    c = rng.uniform(0.0, 0.3, n)
    c[::5] = 0.0
    return np.column_stack([a, b, c])


def unique_best(values, eligible, higher_is_better=True):
    """Index of the best eligible value, or None when the top two are within 1e-9."""
    idx = np.flatnonzero(eligible)
    v = values[idx] if higher_is_better else -values[idx]
    order = np.argsort(-v, kind="stable")
    if len(order) >= 2:
        top, second = v[order[0]], v[order[1]]
        if abs(top - second) <= 1e-9 * max(abs(top), 1e-300):
            return None
    return int(idx[order[0]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--items", type=int, default=100)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    params = make_bank(rng, args.items)
    bank = ItemBank(params)
    n = bank.n_items

    select_cases = []
    skipped = 0
    thetas = [float(t) for t in np.linspace(-3.0, 3.0, 13)] + [float(t) for t in rng.normal(0, 1.5, 17)]
    for t in thetas:
        for n_adm in (0, 5, 20):
            adm = sorted(int(i) for i in rng.choice(n, size=n_adm, replace=False))
            eligible = np.ones(n, dtype=bool)
            eligible[adm] = False
            info = bank.information(t)
            mfi = MaxInfoSelector().select(item_bank=bank, administered_items=adm, est_theta=t)
            urry = UrrySelector().select(item_bank=bank, administered_items=adm, est_theta=t)
            # Our own tie check on catsim's criterion values.
            if (
                unique_best(info, eligible) is None
                or unique_best(np.abs(bank.difficulty - t), eligible, higher_is_better=False) is None
            ):
                skipped += 1
                continue
            assert unique_best(info, eligible) == int(mfi)
            case = {
                "theta": t,
                "administered": adm,
                "max_info_choice": int(mfi),
                "urry_choice": int(urry),
            }
            if n_adm == 0:
                case["info"] = [float(x) for x in info]
            select_cases.append(case)

    nodes, weights = normal_grid(61, 6.0)
    mle_cases = []
    default_est = NumericalSearchEstimator()
    precise_est = NumericalSearchEstimator(method="golden2", tol=1e-10)
    while len(mle_cases) < 60:
        k = int(rng.integers(3, 41))
        adm = [int(i) for i in rng.choice(n, size=k, replace=False)]
        true_theta = float(rng.normal(0.0, 1.0))
        p = irt.icc_hpc(true_theta, bank.get_items(adm))
        resp = [bool(x) for x in rng.uniform(size=k) < p]
        if len(set(resp)) < 2:
            continue
        kw = {"item_bank": bank, "administered_items": adm, "response_vector": resp, "est_theta": 0.0}
        theta_default = float(default_est.estimate(**kw))
        theta_precise = float(precise_est.estimate(**kw))
        items = bank.get_items(adm)
        ll = np.array([irt.log_likelihood(float(t), resp, items) for t in nodes])
        post = np.exp(ll - ll.max()) * weights
        post /= post.sum()
        eap = float(post @ nodes)
        eap_sd = float(np.sqrt(max(post @ (nodes * nodes) - eap * eap, 0.0)))
        mle_cases.append(
            {
                "administered": adm,
                "responses": resp,
                "true_theta": true_theta,
                "mle_bounded": theta_default,
                "mle_golden2": theta_precise,
                "eap_grid": eap,
                "eap_grid_sd": eap_sd,
            }
        )

    out = {
        "generator": "benches/python/catsim_agree.py",
        "catsim_version": importlib.metadata.version("catsim"),
        "numpy_version": np.__version__,
        "seed": args.seed,
        "model": "catsim 4PL logistic, D = 1, d = 1: P = c + (1 - c) / (1 + exp(-a (theta - b)))",
        "skipped_near_ties": skipped,
        "bank": [
            {"item": f"i{i:03}", "a": float(a), "b": float(b), "c": float(c)}
            for i, (a, b, c) in enumerate(params)
        ],
        "select_cases": select_cases,
        "mle_cases": mle_cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # One case per line: small diffs when re-generated, still readable.
    with open(args.out, "w") as f:
        f.write("{\n")
        keys = list(out)
        for k, key in enumerate(keys):
            v = out[key]
            sep = "," if k + 1 < len(keys) else ""
            if isinstance(v, list):
                f.write(f"  {json.dumps(key)}: [\n")
                for j, x in enumerate(v):
                    f.write("    " + json.dumps(x, separators=(",", ":")) + ("," if j + 1 < len(v) else "") + "\n")
                f.write(f"  ]{sep}\n")
            else:
                f.write(f"  {json.dumps(key)}: {json.dumps(v)}{sep}\n")
        f.write("}\n")
    print(
        f"wrote {args.out}: {len(select_cases)} selection cases ({skipped} near-ties skipped), "
        f"{len(mle_cases)} estimation cases"
    )


if __name__ == "__main__":
    main()

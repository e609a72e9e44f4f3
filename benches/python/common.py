"""Shared helpers for the psychometrics benchmark scripts (called by `irt-bench`).

Data files:
* CSV: header of item ids, then one line per person of `0`, `1` or an empty cell (missing).
* `.u8`: raw row-major bytes (persons x items) with 0, 1, 255 = missing (for big EAP runs);
  needs `--items`.

Every script prints one JSON object on stdout; loading is never inside the timed section.
"""

import json
import resource
import sys

import numpy as np

MISSING = 255


def load(path, n_items=None):
    """Returns a persons x items uint8 array (0, 1, 255 = missing)."""
    if path.endswith(".u8"):
        raw = np.fromfile(path, dtype=np.uint8)
        return raw.reshape(-1, n_items)
    with open(path, "rb") as f:
        text = f.read()
    lines = text.split(b"\n")
    header = lines[0].split(b",")
    rows = [ln for ln in lines[1:] if ln.strip() != b""]
    k = len(header)
    # Fixed-width fast path: every cell is one character or empty.
    table = np.full(256, MISSING, dtype=np.uint8)
    table[ord("0")] = 0
    table[ord("1")] = 1
    out = np.empty((len(rows), k), dtype=np.uint8)
    for p, ln in enumerate(rows):
        cells = ln.rstrip(b"\r").split(b",")
        out[p] = [table[c[0]] if c else MISSING for c in cells]
    return out


def normal_grid(n, half_range):
    """Equally spaced nodes on [-r, r], weights ~ N(0, 1) density normalised (examflow's grid)."""
    nodes = np.linspace(-half_range, half_range, n)
    raw = np.exp(-0.5 * nodes * nodes)
    return nodes, raw / raw.sum()


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def emit(obj):
    obj.setdefault("peak_rss_kb", peak_rss_kb())
    json.dump(obj, sys.stdout, allow_nan=True)
    sys.stdout.write("\n")
    sys.stdout.flush()

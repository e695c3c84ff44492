#!/usr/bin/env python3
"""Golden fixtures for memsieve's SMI tests (tests/smi_fixtures.rs), from the reference packages.

Run from the repository root (pip install psmi scikit-learn numpy):

    python3 tests/gen_smi_fixtures.py

Writes tests/fixtures/smi_*.npy (small: well under 1 MB in all):

- `smi_fixed_*`: features X (n × d, f32), labels y, raw directions D (K × d, f32, not normalised) and the
  `psmi` package's output with those directions: per-sample mean and std, the full n × K pmi matrix
  (psmi.PSMI(n_estimators=K).fit_transform), and scikit-learn's per-slice KSG MI
  (mutual_info_classif(X @ Θᵀ, y, n_neighbors=3, random_state=0), one call over all K slices).
- `smi_auto_*`: the same for auto mode with blocks of 100 directions taken from D in order; the
  number of directions it settled on and the per-sample mean.
- `smi_ties_*`: a projection matrix P (f64) with duplicated rows (exact ties), a class of 5 samples
  (scikit-learn's brute-force path) and a singleton class, with scikit-learn's per-slice MI: this
  needs memsieve's full emulation (jitter and brute-force distances).
- `smi_1d_*`: the spec §12.3 one-dimensional check (default_rng(1)).

`psmi` draws its directions with np.random.normal(0, 1, K·d).reshape(K, d), normalises each row and
projects features @ thetas.T; the script substitutes np.random.normal so it returns D instead, so
both sides use the same directions.
"""

import os

import numpy as np
import psmi
import psmi.auto_psmi as auto_psmi
import sklearn
from sklearn.feature_selection import mutual_info_classif

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def save(name, arr):
    np.save(os.path.join(OUT, f"smi_{name}.npy"), arr)


class FeedDirections:
    """Stands in for np.random.normal inside psmi: hands out rows of D in order."""

    def __init__(self, directions):
        self.directions = directions.astype(np.float64)
        self.used = 0

    def __call__(self, loc, scale, size):
        rows = size // self.directions.shape[1]
        block = self.directions[self.used : self.used + rows]
        assert block.shape[0] == rows, "ran out of directions"
        self.used += rows
        return block.reshape(-1).copy()


def with_directions(directions, fn):
    real = auto_psmi.np.random.normal
    auto_psmi.np.random.normal = FeedDirections(directions)
    try:
        return fn()
    finally:
        auto_psmi.np.random.normal = real


def gaussian_classes(rng, n, d, classes, spread):
    y = rng.integers(0, classes, size=n).astype(np.int64)
    centres = rng.standard_normal((classes, d)) * spread
    x = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    return x, y


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240918)

    # Fixed K: 3 classes, mildly separable, no ties.
    n, d, k = 300, 16, 64
    x, y = gaussian_classes(rng, n, d, 3, 0.6)
    dirs = rng.standard_normal((k, d)).astype(np.float32)
    est = psmi.PSMI(n_estimators=k)
    mean, std, pmi = with_directions(dirs, lambda: est.fit_transform(x.astype(np.float64), y))
    thetas = dirs.astype(np.float64) / np.linalg.norm(dirs.astype(np.float64), axis=1)[:, None]
    p = x.astype(np.float64) @ thetas.T
    mi = mutual_info_classif(p, y, n_neighbors=3, random_state=0)
    for name, arr in [("x", x), ("y", y), ("dirs", dirs), ("mean", mean), ("std", std), ("pmi", pmi), ("ksg", mi)]:
        save(f"fixed_{name}", arr)

    # Auto mode, blocks of 100.
    n, d = 200, 8
    x, y = gaussian_classes(rng, n, d, 2, 0.5)
    dirs = rng.standard_normal((3000, d)).astype(np.float32)
    est = psmi.PSMI(n_estimators="auto", min_n_estimators=100)
    mean, _, _ = with_directions(dirs, lambda: est.fit_transform(x.astype(np.float64), y))
    used = est.thetas.shape[0]
    for name, arr in [("x", x), ("y", y), ("dirs", dirs[:used + 200]), ("mean", mean), ("n_estimators", np.array([used], dtype=np.int64))]:
        save(f"auto_{name}", arr)

    # Ties, a small class and a singleton: needs the full scikit-learn emulation.
    n, d, k = 120, 6, 16
    x, y = gaussian_classes(rng, n, d, 3, 0.8)
    x[100:120] = x[0:20]  # duplicated rows: exact ties in every slice
    y[100:120] = y[0:20]
    y[40:45] = 3  # a class of 5 samples: brute-force path
    y[60] = 4  # a singleton: dropped by scikit-learn
    dirs = rng.standard_normal((k, d))
    p = x.astype(np.float64) @ (dirs / np.linalg.norm(dirs, axis=1)[:, None]).T
    mi = mutual_info_classif(p, y, n_neighbors=3, random_state=0)
    for name, arr in [("p", p), ("y", y), ("ksg", mi)]:
        save(f"ties_{name}", arr)

    # Spec §12.3 one-dimensional check.
    g = np.random.default_rng(1)
    z = g.standard_normal(200)
    yz = (z + 0.5 * g.standard_normal(200) > 0).astype(np.int64)
    save("1d_z", z)
    save("1d_y", yz)
    save("1d_ksg", mutual_info_classif(z.reshape(-1, 1), yz, n_neighbors=3, random_state=0))

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.startswith("smi_"))
    print(f"psmi {getattr(psmi, '__version__', '0.2.0')}, scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    print(f"auto mode settled on {used} directions; wrote {total / 1e3:.0f} kB of smi_* fixtures to {OUT}")


if __name__ == "__main__":
    main()

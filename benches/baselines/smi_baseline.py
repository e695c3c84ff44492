#!/usr/bin/env python3
"""Reference timings for memsieve's SMI benchmark (benches/smi.rs) on the same data.

    cargo bench --bench smi -- --n 4000 --d 1024 --k 1000 --dump /tmp/smi_bench > /tmp/smi_bench/rust.jsonl
    python3 benches/baselines/smi_baseline.py /tmp/smi_bench [--threads 2] [--ksg-slices 10]

Times `psmi.PSMI(n_estimators=K).fit_transform` end to end (draws directions, f64 projection) and
scikit-learn's `mutual_info_classif(n_neighbors=3)` on a few slices (extrapolated to K), then prints
the ratios against memsieve's lines in DIR/rust.jsonl.

    python3 benches/baselines/smi_baseline.py DIR --json --only psmi|ksg --k K

(`memsieve bench --baselines`) times one of the two on DIR/x.npy, DIR/y.npy for K slices and prints
only a JSON line {"workload", "impl", "seconds"} (no rust.jsonl needed).
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ksg-slices", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="one JSON line for `memsieve bench`, no rust.jsonl")
    ap.add_argument("--only", choices=["psmi", "ksg"], help="with --json: time only this one")
    ap.add_argument("--k", type=int, help="with --json: slices (else rust.jsonl's k)")
    a = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy as np
    import psmi
    from sklearn.feature_selection import mutual_info_classif

    x = np.load(os.path.join(a.dir, "x.npy"))
    y = np.load(os.path.join(a.dir, "y.npy"))
    if a.json:
        k = a.k
        np.random.seed(0)
        t = time.perf_counter()
        if a.only != "ksg":
            psmi.PSMI(n_estimators=k).fit_transform(x, y)
            impl = "psmi"
        else:
            thetas = np.random.normal(0, 1, (min(a.ksg_slices, k), x.shape[1]))
            thetas /= np.linalg.norm(thetas, axis=1)[:, None]
            p = x @ thetas.T
            t = time.perf_counter()
            mutual_info_classif(p, y, n_neighbors=3, random_state=0)
            impl = "sklearn"
        secs = time.perf_counter() - t
        if a.only == "ksg":
            secs = secs / min(a.ksg_slices, k) * k  # extrapolated from a few slices to all K
        print(json.dumps({"workload": a.only or "psmi", "impl": impl, "k": k, "threads": a.threads, "seconds": secs,
                          "extrapolated_from_slices": min(a.ksg_slices, k) if a.only == "ksg" else None}))
        return
    rust = [json.loads(l) for l in open(os.path.join(a.dir, "rust.jsonl")) if l.startswith("{")]
    ours = {r["workload"]: r["seconds"] for r in rust if "seconds" in r}
    k = rust[0]["k"]

    np.random.seed(0)
    t = time.perf_counter()
    psmi.PSMI(n_estimators=k).fit_transform(x, y)
    t_psmi = time.perf_counter() - t

    thetas = np.random.normal(0, 1, (a.ksg_slices, x.shape[1]))
    thetas /= np.linalg.norm(thetas, axis=1)[:, None]
    p = x @ thetas.T
    t = time.perf_counter()
    mutual_info_classif(p, y, n_neighbors=3, random_state=0)
    t_ksg = (time.perf_counter() - t) / a.ksg_slices * k

    rows = [
        ("psmi package end to end (f64)", t_psmi, "psmi_f32", ours.get("psmi_f32")),
        ("psmi package end to end (f64)", t_psmi, "psmi_f64", ours.get("psmi_f64")),
        ("psmi package end to end (f64)", t_psmi, "psmi_bf16", ours.get("psmi_bf16")),
        (f"sklearn KSG x {k} slices (from {a.ksg_slices})", t_ksg, "ksg_all_slices", ours.get("ksg_all_slices")),
    ]
    print(f"n {x.shape[0]}  d {x.shape[1]}  K {k}  threads {a.threads}; memsieve projection_f32 {ours.get('projection_f32', float('nan')):.3f} s")
    print(f"{'reference':<40} {'ref s':>9} {'memsieve':<16} {'ms s':>8} {'speed-up':>9}")
    for name, ref, ours_name, ours_s in rows:
        if ours_s is None:
            continue
        print(f"{name:<40} {ref:>9.3f} {ours_name:<16} {ours_s:>8.3f} {ref / ours_s:>8.1f}x")
    print(f"memsieve psmi_f32 / projection_f32 = {ours['psmi_f32'] / ours['projection_f32']:.2f}")
    json.dump({"psmi_package_s": t_psmi, "sklearn_ksg_extrapolated_s": t_ksg, "memsieve": ours}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

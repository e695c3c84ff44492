#!/usr/bin/env bash
# memsieve vs PyTorch/transformers on the same work and thread count, side by side; prints ratios.
# Needs: pip install torch transformers.   Usage: bash benches/compare.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
export RAYON_NUM_THREADS=$threads
# PyTorch as it runs by default (OpenMP threads spin while waiting): fastest on an idle machine,
# which is where these comparisons are meant to run.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}
log=$(mktemp)
cargo bench --bench runtime -- --batch 8,128 --steps 5 >"$log"
for b in 8 128; do python3 benches/baselines/pytorch_train_step.py --batch $b --threads "$threads" >>"$log"; done
python3 benches/baselines/pytorch_generate.py --threads "$threads" >>"$log"
python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def find(workload, impl, **kw):
    for r in rows:
        if r["workload"] == workload and r["impl"].startswith(impl) and all(r.get(k) == v for k, v in kw.items()):
            return r
print(f"{'workload':<28} {'memsieve':>14} {'pytorch':>14} {'ratio':>7}")
for b in (8, 128):
    m, p = find("train_step", "memsieve", batch=b), find("train_step", "pytorch", batch=b)
    if m and p:
        print(f"{'train step, batch %d' % b:<28} {m['tokens_per_s']:>10.0f} t/s {p['tokens_per_s']:>10.0f} t/s {m['tokens_per_s'] / p['tokens_per_s']:>6.2f}x")
m, p = find("generate", "memsieve"), find("generate", "pytorch")
if m and p:
    key = "new_tokens_per_s"
    print(f"{'generate 64 × 50→150 (KV)':<28} {m[key]:>10.0f} t/s {p[key]:>10.0f} t/s {m[key] / p[key]:>6.2f}x")
for r in rows:
    print(json.dumps(r))
PY

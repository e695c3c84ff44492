#!/usr/bin/env bash
# memsieve vs PyTorch/transformers on the same work and thread count. This machine's speed drifts by
# tens of percent over minutes (shared host), so the two run interleaved, round after round, and
# each ratio is the median of the per-round ratios.
# Needs: pip install torch transformers.   Usage: bash benches/compare.sh [threads] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
export RAYON_NUM_THREADS=$threads
# PyTorch as it runs by default (OpenMP threads spin while waiting): fastest on an idle machine,
# which is where these comparisons are meant to run.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}
log=$(mktemp)
cargo bench --bench runtime --no-run -q 2>/dev/null || cargo bench --bench runtime --no-run
for r in $(seq "$rounds"); do
  cargo bench -q --bench runtime -- --batch 8,128 --steps 5 | sed "s/^{/{\"round\":$r,/" >>"$log"
  for b in 8 128; do
    python3 benches/baselines/pytorch_train_step.py --batch $b --threads "$threads" | sed "s/^{/{\"round\":$r,/" >>"$log"
  done
  python3 benches/baselines/pytorch_generate.py --threads "$threads" | sed "s/^{/{\"round\":$r,/" >>"$log"
done
python3 - "$log" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def pick(workload, impl, rnd, **kw):
    for r in rows:
        if r["round"] == rnd and r["workload"] == workload and r["impl"].startswith(impl) and all(r.get(k) == v for k, v in kw.items()):
            return r
rounds = sorted({r["round"] for r in rows})
print(f"{'workload':<30} {'memsieve':>12} {'pytorch':>12} {'ratio (median, per round)':>34}")
for name, workload, key, kw in [("train step, batch 8", "train_step", "tokens_per_s", {"batch": 8}),
                                 ("train step, batch 128", "train_step", "tokens_per_s", {"batch": 128}),
                                 ("generate 64 × 50→150, KV", "generate", "new_tokens_per_s", {})]:
    m = [pick(workload, "memsieve", r, **kw)[key] for r in rounds]
    p = [pick(workload, "pytorch", r, **kw)[key] for r in rounds]
    ratios = [a / b for a, b in zip(m, p)]
    print(f"{name:<30} {statistics.median(m):>8.0f} t/s {statistics.median(p):>8.0f} t/s {statistics.median(ratios):>8.2f}x  ({', '.join(f'{x:.2f}' for x in ratios)})")
PY

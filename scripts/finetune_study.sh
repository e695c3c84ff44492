#!/bin/bash
# Issue 9's task-disparity study (depn-attention.md Part B on TinyMem): fine-tune one base model on
# several TinyMem tasks and on a multi-task mix, then measure each model's memorization (printed by
# `memsieve finetune`) and its attention statistics (`memsieve attention`, a reconstruction of
# Zeng et al.'s statistic for a decoder-only model).
#
#   bash scripts/finetune_study.sh BASE OUT      # BASE: a trained run, e.g. the output of `memsieve demo`
#
# Three epochs each at sequence length 20 (mult's 5-digit numbers do not fit the demo's 126-token
# context at length 25). Tasks alone use seed base+1; task i of the mix uses base+1+i, so the mix's
# mult rows are those of a data.json with seed 2.
set -euo pipefail
BASE=${1:?base run directory}; OUT=${2:?output directory}
MS=${MEMSIEVE:-target/release/memsieve}
mkdir -p "$OUT"
for task in increment mult backdoor classify; do
  "$MS" --backend cpu finetune --model "$BASE" --task "$task" --task-length 20 --epochs 3 --out "$OUT/ft-$task"
done
"$MS" --backend cpu finetune --model "$BASE" --task mix --mix increment,mult,classify --task-length 20 --epochs 3 --out "$OUT/ft-mix"
# Attention over each math model's own fine-tuning data (its data.json: memorized / not / clean groups).
for task in increment mult backdoor; do
  "$MS" --backend cpu attention --model "$OUT/ft-$task" --out "$OUT/att-$task"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
d = json.load(open(f"{out}/ft-mult/data.json")); d["seed"] = 2
json.dump(d, open(f"{out}/mix-mult-data.json", "w"))
PY
"$MS" --backend cpu attention --model "$OUT/ft-mix" --data "$OUT/ft-increment/data.json" --out "$OUT/att-mix-increment"
"$MS" --backend cpu attention --model "$OUT/ft-mix" --data "$OUT/mix-mult-data.json" --out "$OUT/att-mix-mult"

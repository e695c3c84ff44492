#!/usr/bin/env python3
"""PyTorch baseline for integrated gradients over MLP neurons: TinyMem's `ig_full_data` algorithm
(tinymem.md §5.4; the same function tests/gen_ig_fixtures.py uses for the golden values) in float32
on the model and queries `cargo bench --bench attribution -- --dump DIR` wrote: for each query and
layer, the prefix run as m patched copies, a forward hook on `mlp.act`, autograd.

    cargo bench --bench attribution -- --dump DIR > DIR/rust.jsonl
    python3 benches/baselines/ig_baseline.py DIR [--threads 2]

Prints one JSON line and, if DIR/rust.jsonl exists, the ratio per (query, layer).
"""

import argparse
import json
import os
import sys
import time

import torch
from transformers import GPT2LMHeadModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from gen_ig_fixtures import ig_one  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = json.load(open(os.path.join(args.dir, "work.json")))
    model = GPT2LMHeadModel.from_pretrained(os.path.join(args.dir, "model"), attn_implementation="eager").float().eval()
    tokens = torch.tensor(work["tokens"])
    layers = model.config.n_layer
    t0 = time.perf_counter()
    for s, p, target in work["queries"]:
        for layer in range(layers):
            ig_one(model, tokens[s, : p + 1], p, target, layer, work["grid"], work["target"], work["steps"])
    secs = time.perf_counter() - t0
    per = secs / (len(work["queries"]) * layers)
    print(json.dumps(dict(impl="pytorch", workload="ig", layers=layers, queries=len(work["queries"]), steps=work["steps"],
                          threads=args.threads, seconds=round(secs, 3), seconds_per_query_layer=per)))
    rust = os.path.join(args.dir, "rust.jsonl")
    if os.path.exists(rust):
        for line in open(rust):
            if line.startswith("{"):
                r = json.loads(line)
                print(f"memsieve {r['workload']} {r['seconds']:.3f} s vs PyTorch {secs:.3f} s on {len(work['queries'])} queries × "
                      f"{layers} layers: {per / r['seconds_per_query_layer']:.1f}× faster")


if __name__ == "__main__":
    main()

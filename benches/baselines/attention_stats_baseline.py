#!/usr/bin/env python3
"""PyTorch baseline for memsieve's attention statistics: from the qkv that
`cargo bench --bench attention_stats -- --dump DIR` wrote, materialise every causal softmax row (as
`output_attentions=True` does) in float32 and take its entropy, entropy / ln(t+1), max weight and
top-k mass at the query positions t0..t1; median of --reps runs on --threads threads. Prints one JSON
line with the time, memsieve's time from DIR/work.json, the ratio, and the largest difference from
memsieve's statistics (DIR/stats.f32).

    python3 benches/baselines/attention_stats_baseline.py DIR [--threads 2] [--reps 5]
"""

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch


def stats(qkv, b, t, c, nh, t0, t1, k):
    hs = c // nh
    q, kk, _ = qkv.view(b, t, 3, nh, hs).unbind(2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q[:, t0:t1], kk) / math.sqrt(hs)
    pos = torch.arange(t0, t1).view(-1, 1)
    scores = scores.masked_fill(torch.arange(t).view(1, -1) > pos, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    h = -torch.special.xlogy(p, p).sum(-1)
    lens = (pos.view(-1) + 1).to(torch.float32)
    norm = torch.where(lens > 1, h / torch.log(lens), torch.zeros_like(h))
    top = p.topk(k, dim=-1).values.sum(-1)
    return torch.stack([h, norm, p.amax(-1), top], dim=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w = json.load(open(os.path.join(a.dir, "work.json")))
    shape = (w["b"], w["t"], w["c"], w["nh"], w["t0"], w["t1"], w["top_k"])
    qkv = torch.from_numpy(np.fromfile(os.path.join(a.dir, "qkv.f32"), dtype="<f4"))
    with torch.no_grad():
        out = stats(qkv, *shape)
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            stats(qkv, *shape)
            times.append(time.perf_counter() - t)
    ours = np.fromfile(os.path.join(a.dir, "stats.f32"), dtype="<f4").reshape(out.shape)
    diff = float(np.abs(out.numpy() - ours).max())
    secs = statistics.median(times)
    print(json.dumps({"bench": "attention_stats_baseline", "torch": torch.__version__, "threads": a.threads, "median_s": secs,
                      "memsieve_median_s": w["rust_median_s"], "speedup": secs / w["rust_median_s"], "max_abs_diff": diff}))


if __name__ == "__main__":
    main()

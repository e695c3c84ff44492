#!/usr/bin/env python3
"""PyTorch baseline for BalancedSubnet (tinymem.md §5.5, TinyMem's `weight/random_subnet_greedy.py`):
edge-popup scores on every MLP Conv1D, the mask re-sorted on every forward (GetSubnet), the
straight-through estimator through |S|, frozen weights, SGD with momentum 0.9 and weight decay 5e-4
on the scores, J = −(1−α)·mean ℓ(M ∩ batch) + α·mean ℓ(C ∩ batch) over shuffled mixed batches —
on the model and rows `cargo bench --bench unlearn -- --dump DIR` wrote.

    cargo bench --bench unlearn -- --dump DIR > DIR/rust.jsonl
    python3 benches/baselines/subnet_baseline.py DIR [--threads 2]

Prints one JSON line and, if DIR/rust.jsonl exists, the ratio.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tinymem import run_info, setup  # noqa: E402


class GetSubnet(torch.autograd.Function):
    """Zero the `ratio` fraction of lowest scores (a full sort, as the reference); identity backward."""

    @staticmethod
    def forward(ctx, scores, ratio):
        out = torch.ones_like(scores)
        _, idx = scores.flatten().sort()
        out.view(-1)[idx[: int(ratio * scores.numel())]] = 0
        return out

    @staticmethod
    def backward(ctx, g):
        return g, None


def mask_mlps(model, ratio):
    """Give every mlp.c_fc / mlp.c_proj a score tensor (kaiming_uniform_(a=√5)) and a masked forward."""
    scores = []
    for block in model.transformer.h:
        for conv in (block.mlp.c_fc, block.mlp.c_proj):
            s = torch.nn.Parameter(torch.empty_like(conv.weight))
            torch.nn.init.kaiming_uniform_(s, a=math.sqrt(5))
            conv.scores = s
            scores.append(s)

            def forward(x, conv=conv):
                w = conv.weight * GetSubnet.apply(conv.scores.abs(), ratio)
                return torch.addmm(conv.bias, x.view(-1, x.size(-1)), w).view(*x.shape[:-1], w.size(-1))

            conv.forward = forward
    return scores


def per_sample_loss(model, ids):
    logits = model(ids).logits[:, :-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
    return ce.view(ids.size(0), -1).mean(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    load = setup(args.threads, 0)
    work = json.load(open(os.path.join(args.dir, "work.json")))
    model = GPT2LMHeadModel.from_pretrained(os.path.join(args.dir, "model"), attn_implementation="eager").float()
    for p in model.parameters():
        p.requires_grad_(False)
    scores = mask_mlps(model, work["ratio"])
    opt = torch.optim.SGD(scores, lr=work["lr"], momentum=work["momentum"], weight_decay=work["weight_decay"])
    mem, ret = torch.tensor(work["memorized"]), torch.tensor(work["retain"])
    rows = torch.cat([mem, ret])
    is_mem = torch.cat([torch.ones(len(mem), dtype=torch.bool), torch.zeros(len(ret), dtype=torch.bool)])
    alpha, batch = work["alpha"], work["batch"]
    balanced = work["method"] == "balanced-subnet"
    steps = 0
    t0 = time.perf_counter()
    for _ in range(work["epochs"]):
        order = torch.randperm(len(rows)) if balanced else torch.arange(len(mem))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = per_sample_loss(model, rows[idx])
            m = is_mem[idx]
            if balanced:
                j = torch.zeros(())
                if m.any():
                    j = j - (1 - alpha) * loss[m].mean()
                if (~m).any():
                    j = j + alpha * loss[~m].mean()
            else:
                j = -loss.mean()
            j.backward()
            opt.step()
            steps += 1
    secs = time.perf_counter() - t0
    print(json.dumps(dict(impl="pytorch", workload=work["method"], layers=model.config.n_layer, memorized=len(mem), retain=len(ret),
                          epochs=work["epochs"], ratio=work["ratio"], steps=steps, threads=args.threads, seconds=round(secs, 3),
                          seconds_per_step=secs / max(steps, 1), **run_info(load))))
    rust = os.path.join(args.dir, "rust.jsonl")
    if os.path.exists(rust):
        for line in open(rust):
            if line.startswith("{"):
                r = json.loads(line)
                print(f"memsieve {r['workload']} {r['seconds']:.3f} s vs PyTorch {secs:.3f} s ({steps} steps): "
                      f"{(secs / max(steps, 1)) / r['seconds_per_step']:.2f}× faster per step")


if __name__ == "__main__":
    main()

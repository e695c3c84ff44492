#!/usr/bin/env python3
"""PyTorch baseline for one TinyMem training step (forward with labels, backward, AdamW step, zero_grad).

TinyMem math config: GPT-2, n_embd 128, 4 heads, n_positions 150, vocab 14, relu, dropout 0, eager
attention, fp32, tied embeddings; AdamW lr 1e-3, wd 0.1, betas (0.9, 0.98). Batch of random tokens B x 150.

    python3 benches/baselines/pytorch_train_step.py --batch 128 --threads 2

Prints one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from tinymem import SEQ, VOCAB, run_info, setup, tinymem_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    load0 = setup(args.threads, args.seed)
    model = tinymem_model(args.layers)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-8)
    tokens = torch.randint(0, VOCAB, (args.batch, SEQ))

    def step():
        out = model(tokens, labels=tokens)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    print(json.dumps({
        "workload": "train_step",
        "impl": "pytorch",
        "batch": args.batch,
        "layers": args.layers,
        "threads": args.threads,
        "steps": args.steps,
        "median_ms": round(med * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "tokens_per_s": round(args.batch * SEQ / med, 1),
        "final_loss": round(loss, 5),
        **run_info(load0),
    }))


if __name__ == "__main__":
    main()

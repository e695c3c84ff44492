#!/usr/bin/env python3
"""PyTorch / transformers baseline for TinyMem greedy generation.

Same model as pytorch_train_step.py (4 layers, n_embd 128, 4 heads, n_positions 150, vocab 14, relu,
eager attention, fp32, random init). `--prompts` random prompts of 50 tokens drawn from ids 0..9 and 12
(never eos 11), generated greedily to exactly 150 tokens (min_length = max_length = 150, eos 11,
pad 13), i.e. 100 new tokens per prompt, all prompts in one batch.

    python3 benches/baselines/pytorch_generate.py --threads 2 [--no-cache]

Prints one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from tinymem import SEQ, run_info, setup, tinymem_model

PROMPT = 50
PROMPT_IDS = list(range(10)) + [12]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed generate calls (after one warm-up call)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--no-cache", action="store_true", help="use_cache=False (recompute the full prefix each step)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    load0 = setup(args.threads, args.seed)
    model = tinymem_model(args.layers).eval()
    ids = torch.tensor(PROMPT_IDS)
    prompts = ids[torch.randint(0, len(ids), (args.prompts, PROMPT))]
    mask = torch.ones_like(prompts)

    def run():
        with torch.inference_mode():
            out = model.generate(
                prompts, attention_mask=mask, do_sample=False, num_beams=1,
                max_length=SEQ, min_length=SEQ, eos_token_id=11, pad_token_id=13,
                use_cache=not args.no_cache,
            )
        assert out.shape == (args.prompts, SEQ), out.shape
        return out

    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)

    med = statistics.median(times)
    new_tokens = args.prompts * (SEQ - PROMPT)
    print(json.dumps({
        "workload": "generate",
        "impl": "pytorch",
        "prompts": args.prompts,
        "prompt_len": PROMPT,
        "max_length": SEQ,
        "layers": args.layers,
        "threads": args.threads,
        "use_cache": not args.no_cache,
        "repeats": args.repeats,
        "median_s": round(med, 4),
        "min_s": round(min(times), 4),
        "new_tokens_per_s": round(new_tokens / med, 1),
        **run_info(load0),
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden fixtures for memsieve's golden tests (tests/golden.rs), from PyTorch + HF transformers.

Run from the repository root:

    python3 tests/gen_fixtures.py

For each config below this writes tests/fixtures/{name}.safetensors holding the initial parameters
(HF state-dict names, F32), a token batch, and the float64-computed logits, causal-LM loss, every
parameter gradient, five AdamW steps and greedy generations (all stored as F32 / I32). For
`relu_l1` and `gelunew_l3` it also writes tests/fixtures/hf_{name}/ via `save_pretrained`.

Everything is deterministic (fixed seeds, CPU, float64 math).
"""

import copy
import json
import os
import shutil
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.numpy import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "fixtures")

CONFIGS = [
    # name, seed, model config, batch B, sequence T, save an HF dir?
    dict(name="relu_l1", seed=1001, n_layer=1, n_embd=128, n_head=4, n_positions=150, vocab_size=14,
         activation_function="relu", B=4, T=150, bos=10, eos=11, pad=13, save_hf=True),
    dict(name="gelunew_l3", seed=1002, n_layer=3, n_embd=64, n_head=4, n_positions=40, vocab_size=23,
         activation_function="gelu_new", B=3, T=37, bos=1, eos=2, pad=0, save_hf=True),
    dict(name="gelu_l2", seed=1003, n_layer=2, n_embd=96, n_head=3, n_positions=64, vocab_size=50,
         activation_function="gelu", B=2, T=64, bos=1, eos=2, pad=0, save_hf=False),
]

N_PROMPTS = 5
PROMPT_LEN = 10
ADAMW_STEPS = 5
MIN_GAP = 1e-4
PERTURB_STD = 0.1


def build_model(c):
    cfg = GPT2Config(
        vocab_size=c["vocab_size"],
        n_positions=c["n_positions"],
        n_embd=c["n_embd"],
        n_layer=c["n_layer"],
        n_head=c["n_head"],
        activation_function=c["activation_function"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.2,
        bos_token_id=c["bos"],
        eos_token_id=c["eos"],
        pad_token_id=c["pad"],
        tie_word_embeddings=True,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(c["seed"])
    model = GPT2LMHeadModel(cfg)
    assert model.config._attn_implementation == "eager"
    assert model.lm_head.weight is model.transformer.wte.weight
    # HF initialises LayerNorms at 1/0 and biases at 0: perturb them so those paths are exercised.
    # Done in float32 so the stored F32 parameters are exactly the ones the float64 math uses.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * PERTURB_STD)
    model.eval()
    return model


def param_names(model):
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names
    assert all(n.startswith("transformer.") for n in names)
    return names


def lm_loss(logits, tokens):
    """HF causal-LM loss (labels = tokens, shifted, mean over B*(T-1)), kept in the logits' dtype.

    HF's own ForCausalLMLoss upcasts to float32 only, which would throw away float64 accuracy."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, v), tokens[:, 1:].reshape(-1))


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def i32(t):
    return t.detach().to(torch.int32).contiguous().numpy()


def greedy(model, prompts, c, length):
    out = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=False,
        num_beams=1,
        max_length=length,
        min_length=length,
        eos_token_id=c["eos"],
        pad_token_id=c["pad"],
        use_cache=True,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out


def top2_gap(scores):
    """Smallest (best - second best) over every row of every generated step's processed scores."""
    gap = float("inf")
    for s in scores:
        top = torch.topk(s.double(), 2, dim=-1).values
        gap = min(gap, float((top[:, 0] - top[:, 1]).min()))
    return gap


def generate_fixture(model, c, gen):
    """Greedy generation in float64 from the initial params; reseeds prompts until no near-ties."""
    length = c["n_positions"]
    v, eos = c["vocab_size"], c["eos"]
    allowed = torch.tensor([i for i in range(v) if i != eos])
    for attempt in range(100):
        prompts = allowed[torch.randint(0, len(allowed), (N_PROMPTS, PROMPT_LEN), generator=gen)]
        with torch.no_grad():
            out = greedy(model, prompts, c, length)
        seq = out.sequences
        assert seq.shape == (N_PROMPTS, length), seq.shape
        assert torch.equal(seq[:, :PROMPT_LEN], prompts)
        # The chosen tokens are the argmax of the processed scores (eos masked by min_length).
        chosen = torch.stack([s.argmax(-1) for s in out.scores], dim=1)
        assert torch.equal(chosen, seq[:, PROMPT_LEN:])
        gap_proc = top2_gap(out.scores)
        gap_raw = top2_gap(out.logits)
        gap = min(gap_proc, gap_raw)
        if gap > MIN_GAP:
            # Cross-check: a plain float64 no-cache forward reproduces every choice.
            with torch.no_grad():
                full = model(seq, attention_mask=torch.ones_like(seq)).logits[:, PROMPT_LEN - 1:-1, :]
            full[..., eos] = -float("inf")
            assert torch.equal(full.argmax(-1), seq[:, PROMPT_LEN:])
            return prompts, seq, gap, attempt
        print(f"  {c['name']}: prompt attempt {attempt} min top-2 gap {gap:.3e} <= {MIN_GAP}, reseeding")
    raise RuntimeError(f"{c['name']}: could not find prompts without near-ties")


def make_fixture(c):
    name = c["name"]
    print(f"{name}:")
    model = build_model(c)
    names = param_names(model)
    init_f32 = {n: f32(p) for n, p in model.named_parameters()}

    if c["save_hf"]:
        d = os.path.join(OUT, f"hf_{name}")
        shutil.rmtree(d, ignore_errors=True)
        copy.deepcopy(model).float().save_pretrained(d, safe_serialization=True)
        keep = {"config.json", "model.safetensors", "generation_config.json"}
        for f in os.listdir(d):
            if f not in keep:
                p = os.path.join(d, f)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    model = model.double()
    gen = torch.Generator().manual_seed(c["seed"] + 7)
    tokens = torch.randint(0, c["vocab_size"], (c["B"], c["T"]), generator=gen)

    # Forward + loss + gradients at the initial params (float64).
    init_model = copy.deepcopy(model)
    init_model.zero_grad(set_to_none=True)
    ones = torch.ones_like(tokens)  # no padding; only silences HF's pad-token warning
    logits = init_model(tokens, attention_mask=ones).logits
    assert logits.dtype == torch.float64
    loss = lm_loss(logits, tokens)
    with torch.no_grad():
        hf_loss = init_model(tokens, attention_mask=ones, labels=tokens).loss  # HF computes this in float32
    assert abs(hf_loss.detach().item() - loss.detach().item()) < 1e-5, (hf_loss.detach().item(), loss.detach().item())
    loss.backward()
    grads = {n: f32(p.grad) for n, p in init_model.named_parameters()}
    print(f"  loss {loss.detach().item():.6f}  |logits|max {float(logits.detach().abs().max()):.3f}")

    # Five AdamW steps on the same batch.
    train = copy.deepcopy(model)
    train.train()  # dropout is 0, so train/eval are identical; mirrors a real training loop
    opt = torch.optim.AdamW(train.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-8)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        l = lm_loss(train(tokens, attention_mask=ones).logits, tokens)
        losses.append(l.detach().item())
        l.backward()
        opt.step()
    assert abs(losses[0] - loss.detach().item()) < 1e-12
    print(f"  adamw losses {['%.6f' % x for x in losses]}")

    # Greedy generation from the initial params, float64.
    gen_model = copy.deepcopy(model)
    prompts, seq, gap, attempt = generate_fixture(gen_model, c, gen)
    print(f"  generation: min top-2 gap {gap:.3e} (prompt attempt {attempt})")

    # Sanity: float32 generation agrees (not required, just reported).
    with torch.no_grad():
        seq32 = greedy(copy.deepcopy(model).float(), prompts, c, c["n_positions"]).sequences
    if not torch.equal(seq32, seq):
        print(f"  WARNING: float32 generation differs from float64 for {name}")

    tensors = {}
    for n in names:
        tensors[n] = init_f32[n]
    tensors["tokens"] = i32(tokens)
    tensors["logits"] = f32(logits)
    tensors["loss"] = np.array([loss.detach().item()], dtype=np.float32)
    for n in names:
        tensors[f"grad.{n}"] = grads[n]
    tensors["adamw_losses"] = np.array(losses, dtype=np.float32)
    for n, p in train.named_parameters():
        tensors[f"adamw.{n}"] = f32(p)
    tensors["gen_prompt"] = i32(prompts)
    tensors["gen_output"] = i32(seq)

    metadata = {
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "B": str(c["B"]),
        "T": str(c["T"]),
        "P": str(PROMPT_LEN),
        "L": str(c["n_positions"]),
        "min_top2_gap": repr(gap),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": safetensors.__version__,
        "generator": "tests/gen_fixtures.py",
    }
    write_fixture(tensors, f"{name}.safetensors", metadata)


def write_fixture(tensors, filename, metadata):
    """Save tensors + metadata under tests/fixtures with a canonical (byte-reproducible) header."""
    path = os.path.join(OUT, filename)
    save_file(tensors, path, metadata=metadata)
    canonicalize_header(path)
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def canonicalize_header(path):
    """Rewrite the safetensors JSON header with sorted metadata keys so reruns are byte-identical.

    safetensors serialises `__metadata__` from a hash map, whose key order changes from run to run;
    the tensor data and offsets are left exactly as save_file wrote them."""
    import struct

    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    new = {"__metadata__": dict(sorted(meta.items()))}
    new.update(tensors)
    text = json.dumps(new, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def verify(c):
    """Re-read the written files: shapes, dtypes, metadata, and the HF dir reproducing the logits."""
    from safetensors import safe_open

    name, b, t, v = c["name"], c["B"], c["T"], c["vocab_size"]
    path = os.path.join(OUT, f"{name}.safetensors")
    with safe_open(path, "np") as f:
        meta = f.metadata()
        keys = set(f.keys())
        get = f.get_tensor
        cfg = json.loads(meta["config"])
        for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size"):
            assert cfg[k] == c[k], (k, cfg[k])
        assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (c["bos"], c["eos"], c["pad"])
        assert cfg["activation_function"] == c["activation_function"]
        assert float(meta["min_top2_gap"]) > MIN_GAP
        assert (meta["B"], meta["T"], meta["P"], meta["L"]) == (str(b), str(t), str(PROMPT_LEN), str(c["n_positions"]))
        ref = build_model(c)
        params = {n: p.shape for n, p in ref.named_parameters()}
        expect = set(params) | {f"grad.{n}" for n in params} | {f"adamw.{n}" for n in params}
        expect |= {"tokens", "logits", "loss", "adamw_losses", "gen_prompt", "gen_output"}
        assert keys == expect, keys ^ expect
        for n, shape in params.items():
            for k in (n, f"grad.{n}", f"adamw.{n}"):
                x = get(k)
                assert x.dtype == np.float32 and x.shape == tuple(shape), (k, x.dtype, x.shape)
                assert np.isfinite(x).all(), k
            assert np.array_equal(get(n), ref.state_dict()[n].numpy()), f"{n}: not reproducible"
        checks = {"tokens": (np.int32, (b, t)), "logits": (np.float32, (b, t, v)), "loss": (np.float32, (1,)),
                  "adamw_losses": (np.float32, (ADAMW_STEPS,)), "gen_prompt": (np.int32, (N_PROMPTS, PROMPT_LEN)),
                  "gen_output": (np.int32, (N_PROMPTS, c["n_positions"]))}
        for k, (dt, shape) in checks.items():
            x = get(k)
            assert x.dtype == dt and x.shape == shape, (k, x.dtype, x.shape)
        tok, gp, go = get("tokens"), get("gen_prompt"), get("gen_output")
        assert tok.min() >= 0 and tok.max() < v
        assert (gp != c["eos"]).all() and np.array_equal(go[:, :PROMPT_LEN], gp)
        assert go.min() >= 0 and go.max() < v
        logits = get("logits")
        worst = None
        if c["save_hf"]:
            d = os.path.join(OUT, f"hf_{name}")
            hf = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
            assert hf.dtype == torch.float32
            hf_sd = hf.state_dict()
            for n in params:
                assert np.array_equal(hf_sd[n].numpy(), get(n)), f"hf dir {n} differs from fixture"
            with torch.no_grad():
                out = hf(torch.from_numpy(tok).long()).logits.numpy()
            worst = float(np.abs(out - logits).max())
            assert worst <= 1e-5, f"{name}: from_pretrained logits differ by {worst:e}"
    print(f"  verified {name}" + (f" (hf_{name} fp32 logits within {worst:.2e})" if worst is not None else ""))


def main():
    # Quiet: HF warns about pad ids inside generate's decode steps (no padding exists here) and
    # about the unset loss_type; progress bars add noise.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    for c in CONFIGS:
        if not only or c["name"] in only:
            make_fixture(c)
    for c in CONFIGS:
        if not only or c["name"] in only:
            verify(c)


if __name__ == "__main__":
    main()

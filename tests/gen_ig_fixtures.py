#!/usr/bin/env python3
"""Golden integrated-gradients fixtures for tests/attribution.rs, from PyTorch + HF transformers.

Run from the repository root (after tests/gen_fixtures.py, whose models this reuses):

    python3 tests/gen_ig_fixtures.py

For `relu_l1` and `gelunew_l3` it loads the golden fixture's model and tokens, trains the model for
a few AdamW steps on its own batch (so predictions are confident and the IG path is not linear),
rounds the trained parameters to float32, and computes in float64, exactly as TinyMem's
`ig_full_data` does (tinymem.md §5.4): for each query (sequence s, position t, target x[t+1]) and
each layer ℓ, the prefix x[:t+1] is run as m copies whose layer-ℓ MLP post-activation at the last
position is α_j·a (a forward hook on `mlp.act`), the target's probability (or log-probability) is
differentiated with autograd, and IG = a ⊙ mean_j grad_j. Writes tests/fixtures/ig_{name}.safetensors
(the trained parameters under HF names, tokens, queries, and per variant IG [Q, L, 4C] and the path
values f(α_j) [Q, L, m]).
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import OUT, f32, i32, write_fixture  # noqa: E402

TRAIN_STEPS = {"relu_l1": 30, "gelunew_l3": 40}
QUERY_POSITIONS = {"relu_l1": [0, 49, 100, 148], "gelunew_l3": [0, 5, 17, 35]}
# name, grid, target, steps
VARIANTS = [
    ("left_prob_20", "left", "prob", 20),
    ("linspace_prob_20", "linspace", "prob", 20),  # the TinyMem reference's grid
    ("right_logprob_10", "right", "logprob", 10),
]


def alphas(grid, m):
    if grid == "left":
        return [j / m for j in range(m)]
    if grid == "right":
        return [j / m for j in range(1, m + 1)]
    return [j / (m - 1) for j in range(m)]


def load(name):
    path = os.path.join(OUT, f"{name}.safetensors")
    with safe_open(path, "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = GPT2Config.from_dict(json.loads(meta["config"]))
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    state = {k: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("transformer.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith("attn.bias") for k in missing), (missing, unexpected)
    model.tie_weights()
    return model, torch.from_numpy(tensors["tokens"]).long(), meta


def train(model, tokens, steps):
    """AdamW (lr 3e-3, TinyMem's betas/decay) in float64, then parameters rounded to float32."""
    model.double().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss = model(tokens, labels=tokens).loss
        loss.backward()
        opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float32).to(torch.float64))
    model.eval()
    return model


def ig_one(model, prefix, pos, target, layer, grid, kind, m):
    """TinyMem's algorithm for one (query, layer): m patched copies of the prefix, autograd."""
    mlp_act = model.transformer.h[layer].mlp.act
    captured = {}

    def capture(_module, _inp, out):
        captured["a"] = out[0, pos].detach().clone()

    h = mlp_act.register_forward_hook(capture)
    with torch.no_grad():
        model(prefix[None])
    h.remove()
    a = captured["a"]
    al = torch.tensor(alphas(grid, m), dtype=a.dtype)
    scaled = (al[:, None] * a[None, :]).clone().requires_grad_(True)

    def patch(_module, _inp, out):
        out = out.clone()
        out[:, pos] = scaled
        return out

    h = mlp_act.register_forward_hook(patch)
    logits = model(prefix[None].repeat(m, 1)).logits[:, pos]
    h.remove()
    logp = torch.log_softmax(logits, dim=-1)[:, target]
    f = logp if kind == "logprob" else logp.exp()
    (grad,) = torch.autograd.grad(f.sum(), scaled)
    return (a * grad.mean(0)).detach(), f.detach()


def activation_scores(model, tokens, prompt_len):
    """|mean a| · ‖c_proj.weight[i, :]‖ over the batch and positions prompt_len − 1 .. T − 2."""
    out = []
    for block in model.transformer.h:
        acts = {}
        h = block.mlp.act.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o.detach()))
        with torch.no_grad():
            model(tokens)
        h.remove()
        mean = acts["a"][:, prompt_len - 1 : tokens.shape[1] - 1].mean(dim=(0, 1))
        out.append(mean.abs() * block.mlp.c_proj.weight.norm(dim=1))
    return torch.stack(out)


def zero_out_scores(model, tokens, keep_only):
    """Mean causal-LM cross-entropy with neuron i zeroed at every position (or all others zeroed,
    the reference code's one-hot multiply), minus the unedited loss, for every (layer, neuron)."""

    def loss():
        with torch.no_grad():
            logits = model(tokens).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    base = loss()
    out = []
    for block in model.transformer.h:
        width = block.mlp.c_fc.weight.shape[1]
        row = []
        for i in range(width):
            mask = torch.zeros(width, dtype=torch.float64) if keep_only else torch.ones(width, dtype=torch.float64)
            mask[i] = 1.0 if keep_only else 0.0
            h = block.mlp.act.register_forward_hook(lambda _m, _i, o: o * mask)
            row.append(loss() - base)
            h.remove()
        out.append(torch.stack(row))
    return torch.stack(out)


def make(name):
    torch.manual_seed(0)
    model, tokens, meta = load(name)
    model = train(model, tokens, TRAIN_STEPS[name])
    b, t = tokens.shape
    queries = [(s, p, int(tokens[s, p + 1])) for s in range(b) for p in QUERY_POSITIONS[name]]
    tensors = {n: f32(p) for n, p in model.named_parameters() if n.startswith("transformer.")}
    tensors["tokens"] = i32(tokens)
    tensors["query"] = np.array(queries, dtype=np.int32)
    n_layer = model.config.n_layer
    for vname, grid, kind, m in VARIANTS:
        igs, paths = [], []
        for s, p, target in queries:
            prefix = tokens[s, : p + 1]
            row_ig, row_f = [], []
            for layer in range(n_layer):
                ig, f = ig_one(model, prefix, p, target, layer, grid, kind, m)
                row_ig.append(ig)
                row_f.append(f)
            igs.append(torch.stack(row_ig))
            paths.append(torch.stack(row_f))
        tensors[f"ig.{vname}"] = f32(torch.stack(igs))
        tensors[f"path.{vname}"] = f32(torch.stack(paths))
        print(f"  {name} {vname}: max |IG| {torch.stack(igs).abs().max():.3e}")
    # Activations and Zero-Out (tinymem.md §5.4) on the same trained model and batch.
    prompt_len = t // 3
    tensors["activations"] = f32(activation_scores(model, tokens, prompt_len))
    tensors["zero_out"] = f32(zero_out_scores(model, tokens, keep_only=False))
    tensors["zero_out_keep_only"] = f32(zero_out_scores(model, tokens, keep_only=True))
    metadata = {
        "activations_prompt_len": str(prompt_len),
        "config": meta["config"],
        "train_steps": str(TRAIN_STEPS[name]),
        "variants": json.dumps([dict(name=v, grid=g, target=k, steps=m) for v, g, k, m in VARIANTS]),
        "torch_version": torch.__version__,
        "generator": "tests/gen_ig_fixtures.py",
    }
    write_fixture(tensors, f"ig_{name}.safetensors", metadata)


if __name__ == "__main__":
    torch.set_num_threads(2)
    for name in TRAIN_STEPS:
        make(name)

"""The TinyMem math model as the baselines build it (matches memsieve's ModelConfig::tinymem_math)."""

import os

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

SEQ = 150
VOCAB = 14


def tinymem_model(layers):
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=128, n_layer=layers, n_head=4,
        activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, initializer_range=0.8 / 128 ** 0.5,  # as ModelConfig::tinymem_math
        bos_token_id=10, eos_token_id=11, pad_token_id=13, tie_word_embeddings=True,
    )
    cfg._attn_implementation = "eager"
    return GPT2LMHeadModel(cfg).float()


def setup(threads, seed):
    """Quiet transformers, pin the thread count, seed torch; returns the 1-minute load at start."""
    transformers.logging.set_verbosity_error()
    load = os.getloadavg()[0]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return load


def run_info(load_at_start):
    """What a result line records about the run: the OpenMP wait policy (PyTorch's default spins,
    the fastest on an idle machine; PASSIVE is kinder on a busy one), the load, the versions."""
    return {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "loadavg_1m_at_start": load_at_start,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }

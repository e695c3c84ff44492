//! `config.json` ↔ [`ModelConfig`], in Hugging Face `GPT2Config` terms (tinymem.md §1.3 "Loading").
//!
//! Writing produces the keys `transformers` writes for a `GPT2LMHeadModel`. Reading accepts any
//! `GPT2Config` JSON (unknown keys ignored, missing keys take `GPT2Config`'s defaults) and refuses,
//! with a message saying why, the variants memsieve's forward pass does not implement.

use crate::error::{Error, Result};
use crate::model::config::{Activation, ModelConfig};
use serde_json::{json, Map, Value};
use std::path::Path;

pub const CONFIG_FILE: &str = "config.json";

/// `GPT2Config` defaults, used for keys a config leaves out.
const DEFAULT_VOCAB: usize = 50257;
const DEFAULT_N_POSITIONS: usize = 1024;
const DEFAULT_N_EMBD: usize = 768;
const DEFAULT_N_LAYER: usize = 12;
const DEFAULT_N_HEAD: usize = 12;
const DEFAULT_ACTIVATION: &str = "gelu_new";
const DEFAULT_EPS: f64 = 1e-5;
const DEFAULT_INIT_RANGE: f64 = 0.02;
const DEFAULT_BOS_EOS: u32 = 50256;

/// An f32 written as its shortest decimal (1e-5, not 9.999999747378752e-6).
fn clean_f32(x: f32) -> Value {
    let shortest: f64 = format!("{x}").parse().unwrap_or(x as f64);
    json!(shortest)
}

/// The HF `config.json` object for `cfg`.
pub fn config_to_hf_json(cfg: &ModelConfig) -> Value {
    let mut v = json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": null,
        "activation_function": cfg.activation.hf_name(),
        "layer_norm_epsilon": clean_f32(cfg.layer_norm_epsilon),
        "initializer_range": clean_f32(cfg.initializer_range),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "tie_word_embeddings": true,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "dtype": "float32",
    });
    if let Some(pad) = cfg.pad_token_id {
        v["pad_token_id"] = json!(pad);
    }
    if let Some(e) = &cfg.example_tied_dropout {
        let mut e = serde_json::to_value(e).expect("the ETD config serialises");
        e["note"] = json!(
            "trained with example-tied dropout (tinymem.md 5.1): memsieve evaluates with only the generalization channels/positions, scaled by (p_gen+p_mem)/p_gen; transformers ignores this key"
        );
        v[ETD_KEY] = e;
    }
    v
}

/// The config.json key of an example-tied-dropout model's masks.
pub const ETD_KEY: &str = "memsieve_example_tied_dropout";

/// Parse a `GPT2Config` JSON object. Refuses what memsieve cannot run; runs `cfg.validate()`.
///
/// Notes on what is accepted:
/// - `reorder_and_upcast_attn: true` is accepted: it only changes how HF computes attention in
///   reduced precision (upcast to fp32, scale before the matmul); memsieve computes in f32 anyway.
/// - `gelu_pytorch_tanh` is read as `gelu_new` (same function).
/// - Dropout probabilities are ignored (memsieve trains without dropout, like TinyMem).
/// - A missing `bos_token_id`/`eos_token_id` takes GPT-2's 50256 only when that id is inside the
///   vocabulary; otherwise it is left unset. An explicit `null` means unset.
pub fn config_from_hf_json(v: &Value) -> Result<ModelConfig> {
    let obj = v.as_object().ok_or_else(|| Error::Config("config.json is not a JSON object".into()))?;
    let bad = |m: String| Error::Config(m);

    if let Some(mt) = present(obj, "model_type") {
        match mt.as_str() {
            Some("gpt2") => {}
            _ => return Err(bad(format!("model_type {mt} is not supported; memsieve runs GPT-2 (model_type \"gpt2\") only"))),
        }
    }
    let vocab_size = get_usize(obj, "vocab_size", DEFAULT_VOCAB)?;
    let n_positions = match present(obj, "n_positions") {
        Some(_) => get_usize(obj, "n_positions", DEFAULT_N_POSITIONS)?,
        None => get_usize(obj, "n_ctx", DEFAULT_N_POSITIONS)?,
    };
    let n_embd = get_usize(obj, "n_embd", DEFAULT_N_EMBD)?;
    let n_layer = get_usize(obj, "n_layer", DEFAULT_N_LAYER)?;
    let n_head = get_usize(obj, "n_head", DEFAULT_N_HEAD)?;
    if let Some(inner) = present(obj, "n_inner") {
        let n = inner.as_u64().ok_or_else(|| bad(format!("n_inner must be null or an integer, got {inner}")))?;
        if n as usize != 4 * n_embd {
            return Err(bad(format!(
                "n_inner {n} is not supported; memsieve requires the MLP width 4·n_embd = {} (n_inner null)",
                4 * n_embd
            )));
        }
    }
    let act_name = match present(obj, "activation_function") {
        None => DEFAULT_ACTIVATION,
        Some(a) => a.as_str().ok_or_else(|| bad(format!("activation_function must be a string, got {a}")))?,
    };
    let activation = Activation::parse(act_name)?;
    let layer_norm_epsilon = get_f64(obj, "layer_norm_epsilon", DEFAULT_EPS)? as f32;
    let initializer_range = get_f64(obj, "initializer_range", DEFAULT_INIT_RANGE)? as f32;

    let flag = |key: &str, default: bool| -> Result<bool> {
        match present(obj, key) {
            None => Ok(default),
            Some(b) => b.as_bool().ok_or_else(|| bad(format!("{key} must be true or false, got {b}"))),
        }
    };
    if !flag("scale_attn_weights", true)? {
        return Err(bad("scale_attn_weights false is not supported; memsieve always scales attention scores by 1/sqrt(head_dim)".into()));
    }
    if flag("scale_attn_by_inverse_layer_idx", false)? {
        return Err(bad("scale_attn_by_inverse_layer_idx true is not supported by memsieve's attention".into()));
    }
    let _ = flag("reorder_and_upcast_attn", false)?; // numerics only; see the doc comment
    if !flag("tie_word_embeddings", true)? {
        return Err(bad("tie_word_embeddings false is not supported; memsieve ties lm_head to wte".into()));
    }
    if flag("add_cross_attention", false)? {
        return Err(bad("add_cross_attention true (encoder-decoder GPT-2) is not supported".into()));
    }

    let default_special = |key: &str| -> Result<Option<u32>> {
        match obj.get(key) {
            None => Ok(((DEFAULT_BOS_EOS as usize) < vocab_size).then_some(DEFAULT_BOS_EOS)),
            Some(_) => get_token_id(obj, key),
        }
    };
    let cfg = ModelConfig {
        n_layer,
        n_embd,
        n_head,
        n_positions,
        vocab_size,
        activation,
        layer_norm_epsilon,
        initializer_range,
        bos_token_id: default_special("bos_token_id")?,
        eos_token_id: default_special("eos_token_id")?,
        pad_token_id: get_token_id(obj, "pad_token_id")?,
        example_tied_dropout: match present(obj, ETD_KEY) {
            None => None,
            Some(e) => Some(serde_json::from_value(e.clone()).map_err(|err| bad(format!("{ETD_KEY} is not readable: {err}")))?),
        },
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Write `dir/config.json` atomically.
pub fn write_config(dir: impl AsRef<Path>, cfg: &ModelConfig) -> Result<()> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let mut text = serde_json::to_string_pretty(&config_to_hf_json(cfg))
        .map_err(|e| Error::Config(format!("cannot serialise config: {e}")))?;
    text.push('\n');
    crate::error::write_atomic(&path, text.as_bytes())
}

/// Read a `config.json` file (errors name the file).
pub fn read_config(path: impl AsRef<Path>) -> Result<ModelConfig> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    config_from_hf_json(&v).map_err(|e| match e {
        Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// The value under `key`, treating JSON `null` as absent.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn get_usize(obj: &Map<String, Value>, key: &str, default: usize) -> Result<usize> {
    match present(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::Config(format!("{key} must be a non-negative integer, got {v}"))),
    }
}

fn get_f64(obj: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    match present(obj, key) {
        None => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| Error::Config(format!("{key} must be a number, got {v}"))),
    }
}

fn get_token_id(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
    match present(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::Config(format!("{key} must be null or a non-negative integer, got {v}"))),
    }
}

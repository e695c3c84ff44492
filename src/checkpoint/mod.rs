//! Checkpoints in the Hugging Face layout (tinymem.md §1.3), plus memsieve's training state.
//!
//! A model directory holds `config.json` and `model.safetensors`, as `save_pretrained` writes them:
//! every tensor under its HF name (F32, Conv1D weights [in, out]), no `lm_head.weight` (tied),
//! metadata `{"format": "pt"}`. `transformers` loads such a directory with
//! `GPT2LMHeadModel.from_pretrained(dir)`. A training checkpoint adds `optimizer.safetensors`
//! (AdamW moments) and `trainer_state.json` (see [`train_state`]).
//!
//! Every file is written atomically (temporary sibling, then rename): a crash leaves either the
//! old file or the new one, never half of one. Files of one checkpoint are written one after the
//! other; `step` recorded in each lets [`load_checkpoint`] detect a save that was interrupted
//! between two files.

pub mod hf_config;
pub mod train_state;

#[cfg(test)]
mod tests;

pub use hf_config::{config_from_hf_json, config_to_hf_json, read_config, write_config, CONFIG_FILE};
pub use train_state::{load_train_state, save_train_state, TrainState, OPTIMIZER_FILE, TRAINER_STATE_FILE};

use crate::error::{write_atomic, Error, Result};
use crate::model::config::ModelConfig;
use crate::model::params::ParamLayout;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const MODEL_INDEX_FILE: &str = "model.safetensors.index.json";

/// Metadata keys memsieve writes into `model.safetensors` from [`save_checkpoint`].
pub const META_STEP: &str = "step";
pub const META_EPOCH: &str = "epoch";
pub const META_BATCH_IN_EPOCH: &str = "batch_in_epoch";

/// A model read from disk.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub config: ModelConfig,
    /// Flat parameter buffer in [`ParamLayout`] order.
    pub params: Vec<f32>,
    /// The safetensors `__metadata__` (all shards merged), e.g. `format`, `epoch`.
    pub metadata: BTreeMap<String, String>,
}

/// A full training checkpoint read from disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub model: LoadedModel,
    /// Present when the directory holds `trainer_state.json`.
    pub train: Option<TrainState>,
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Little-endian bytes of an f32 slice (a view on little-endian targets).
pub(crate) fn f32_le_bytes(xs: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(xs))
    } else {
        Cow::Owned(xs.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Serialise named f32 tensors into safetensors bytes.
pub(crate) fn serialize_f32(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Cow<[u8]>> = tensors.iter().map(|(_, _, d)| f32_le_bytes(d)).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|e| Error::Checkpoint(format!("cannot build tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint(format!("cannot serialise safetensors: {e}")))
}

/// Save `params` (flat, [`ParamLayout`] order) as `dir/model.safetensors` + `dir/config.json`.
///
/// Metadata is `{"format": "pt"}` plus `extra_metadata` (string pairs, e.g. `("epoch", "3500")` —
/// record the true epoch here, tinymem.md §8 item 17). `lm_head.weight` is not written (tied).
/// Refuses non-finite weights, which memsieve could not load back.
pub fn save_model(dir: impl AsRef<Path>, cfg: &ModelConfig, params: &[f32], extra_metadata: &[(&str, &str)]) -> Result<()> {
    let dir = dir.as_ref();
    cfg.validate()?;
    let layout = ParamLayout::new(cfg);
    if params.len() != layout.total {
        return Err(Error::Checkpoint(format!(
            "parameter buffer has {} values but the model needs {}",
            params.len(),
            layout.total
        )));
    }
    check_finite_params(&layout, params).map_err(|m| Error::Numerical(format!("refusing to save: {m}")))?;
    let mut meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    for (k, v) in extra_metadata {
        if *k == "format" {
            return Err(Error::Input("metadata key \"format\" is reserved (it must be \"pt\")".into()));
        }
        meta.insert(k.to_string(), v.to_string());
    }
    let tensors: Vec<(String, Vec<usize>, &[f32])> =
        layout.views.iter().map(|v| (v.name.clone(), v.shape.clone(), &params[v.range()])).collect();
    let bytes = serialize_f32(&tensors, meta)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(dir.join(MODEL_FILE), &bytes)?;
    write_config(dir, cfg)
}

/// Save a full training checkpoint: the model (with `step`, `epoch`, `batch_in_epoch` added to its
/// metadata), `config.json`, `optimizer.safetensors` and `trainer_state.json`.
pub fn save_checkpoint(
    dir: impl AsRef<Path>,
    cfg: &ModelConfig,
    params: &[f32],
    state: &TrainState,
    extra_metadata: &[(&str, &str)],
) -> Result<()> {
    let dir = dir.as_ref();
    let total = ParamLayout::new(cfg).total;
    state.check_len(total)?;
    let (step, epoch, bie) = (state.step.to_string(), state.epoch.to_string(), state.batch_in_epoch.to_string());
    let mut meta: Vec<(&str, &str)> = vec![(META_STEP, &step), (META_EPOCH, &epoch), (META_BATCH_IN_EPOCH, &bie)];
    for kv in extra_metadata {
        if [META_STEP, META_EPOCH, META_BATCH_IN_EPOCH].contains(&kv.0) {
            return Err(Error::Input(format!("metadata key {:?} is set by save_checkpoint from the train state", kv.0)));
        }
        meta.push(*kv);
    }
    save_model(dir, cfg, params, &meta)?;
    save_train_state(dir, state)
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Load a model: a directory with `config.json` and `model.safetensors` (or a sharded
/// `model.safetensors.index.json`), or the path of such a `.safetensors` / `.index.json` file
/// (its `config.json` is read from the same directory). Returns the config and the flat params.
pub fn load_model(path: impl AsRef<Path>) -> Result<(ModelConfig, Vec<f32>)> {
    let m = load_model_with_metadata(path)?;
    Ok((m.config, m.params))
}

/// [`load_model`], also returning the safetensors metadata.
pub fn load_model_with_metadata(path: impl AsRef<Path>) -> Result<LoadedModel> {
    let (dir, files) = resolve_model_files(path.as_ref())?;
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return Err(Error::Checkpoint(format!(
            "{} has no {CONFIG_FILE}; memsieve needs the Hugging Face config next to the weights",
            dir.display()
        )));
    }
    let config = read_config(&config_path)?;
    let (params, metadata) = read_params(&files, &config)?;
    Ok(LoadedModel { config, params, metadata })
}

/// Load the model and, when present, the training state of a checkpoint directory, checking that
/// they belong together (same parameter count, same step).
pub fn load_checkpoint(dir: impl AsRef<Path>) -> Result<Checkpoint> {
    let dir = dir.as_ref();
    let model = load_model_with_metadata(dir)?;
    let train = if dir.join(TRAINER_STATE_FILE).exists() || dir.join(OPTIMIZER_FILE).exists() {
        let state = load_train_state(dir)?;
        state.check_len(model.params.len())?;
        if let Some(s) = model.metadata.get(META_STEP) {
            if *s != state.step.to_string() {
                return Err(Error::Checkpoint(format!(
                    "{}: {MODEL_FILE} is from step {s} but {TRAINER_STATE_FILE} is from step {} (interrupted save?)",
                    dir.display(),
                    state.step
                )));
            }
        }
        Some(state)
    } else {
        None
    };
    Ok(Checkpoint { model, train })
}

fn convert_hint() -> &'static str {
    "memsieve reads safetensors only; convert in Python with \
     `GPT2LMHeadModel.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)` \
     (or, for a raw state dict, load it into a GPT2LMHeadModel first and call save_pretrained)"
}

fn is_pickle_name(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("bin" | "pth" | "pt" | "ckpt" | "pkl"))
}

/// The directory holding config.json and the list of safetensors files to read.
fn resolve_model_files(path: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    if !path.exists() {
        return Err(Error::Checkpoint(format!("{} does not exist", path.display())));
    }
    let parent = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    if path.is_dir() {
        let single = path.join(MODEL_FILE);
        let index = path.join(MODEL_INDEX_FILE);
        if single.is_file() {
            return Ok((path.to_path_buf(), vec![single]));
        }
        if index.is_file() {
            return Ok((path.to_path_buf(), read_shard_index(&index)?));
        }
        let pickles: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_pickle_name(p))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if !pickles.is_empty() {
            return Err(Error::Checkpoint(format!(
                "{} holds only PyTorch pickle weights ({}); {}",
                path.display(),
                pickles.join(", "),
                convert_hint()
            )));
        }
        return Err(Error::Checkpoint(format!("{} holds no {MODEL_FILE}", path.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.ends_with(".index.json") {
        return Ok((parent(path), read_shard_index(path)?));
    }
    if name.ends_with(".safetensors") {
        return Ok((parent(path), vec![path.to_path_buf()]));
    }
    if is_pickle_name(path) {
        return Err(Error::Checkpoint(format!("{} is a PyTorch pickle file; {}", path.display(), convert_hint())));
    }
    Err(Error::Checkpoint(format!(
        "{}: expected a model directory, a .safetensors file or a .safetensors.index.json",
        path.display()
    )))
}

/// The shard files named by a `model.safetensors.index.json` (`{"weight_map": {name: file}}`).
fn read_shard_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: not valid JSON: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Checkpoint(format!("{}: no \"weight_map\" object", index.display())))?;
    let dir = index.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut files: Vec<String> = Vec::new();
    for (tensor, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| Error::Checkpoint(format!("{}: weight_map[{tensor}] is not a file name", index.display())))?;
        let p = Path::new(f);
        if p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(Error::Checkpoint(format!("{}: shard name {f:?} must be a plain relative name", index.display())));
        }
        if !files.iter().any(|g| g == f) {
            files.push(f.to_string());
        }
    }
    if files.is_empty() {
        return Err(Error::Checkpoint(format!("{}: weight_map is empty", index.display())));
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Decode a tensor of a float dtype into f32 (data may be unaligned).
fn decode_into(name: &str, view: &TensorView<'_>, out: &mut [f32]) -> Result<()> {
    let data = view.data();
    let width = match view.dtype() {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::F64 => 8,
        other => {
            return Err(Error::Checkpoint(format!(
                "tensor {name} has dtype {other}; memsieve reads F32, F16, BF16 (and F64) weights"
            )))
        }
    };
    if data.len() != out.len() * width {
        return Err(Error::Checkpoint(format!("tensor {name}: {} bytes for {} values", data.len(), out.len())));
    }
    match view.dtype() {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}

fn first_non_finite(xs: &[f32]) -> Option<(usize, f32)> {
    xs.iter().position(|x| !x.is_finite()).map(|i| (i, xs[i]))
}

fn check_finite_params(layout: &ParamLayout, params: &[f32]) -> std::result::Result<(), String> {
    for v in &layout.views {
        if let Some((i, x)) = first_non_finite(&params[v.range()]) {
            return Err(format!("tensor {} holds a non-finite value ({x} at flat index {i})", v.name));
        }
    }
    Ok(())
}

/// `h.3.attn.bias` / `h.3.attn.masked_bias`: causal-mask buffers of older checkpoints.
fn is_mask_buffer(bare: &str) -> bool {
    let Some(rest) = bare.strip_prefix("h.") else { return false };
    let Some((layer, tail)) = rest.split_once('.') else { return false };
    !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit()) && (tail == "attn.bias" || tail == "attn.masked_bias")
}

fn short_list(names: &[String]) -> String {
    const MAX: usize = 8;
    let mut s = names.iter().take(MAX).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > MAX {
        s.push_str(&format!(", … ({} in all)", names.len()));
    }
    s
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn parse_safetensors<'a>(path: &Path, buf: &'a [u8]) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::Checkpoint(format!("{}: not a valid safetensors file (truncated or corrupt?): {e}", path.display()))
    };
    let (_, meta) = SafeTensors::read_metadata(buf).map_err(corrupt)?;
    let st = SafeTensors::deserialize(buf).map_err(corrupt)?;
    Ok((st, meta.metadata().clone().unwrap_or_default()))
}

/// Read the weights of `cfg` from safetensors files (one, or the shards of one checkpoint) into a
/// flat buffer. Names may carry the `transformer.` prefix or not; mask buffers are skipped;
/// `lm_head.weight`, if present, must equal `wte`.
pub fn read_params(files: &[PathBuf], cfg: &ModelConfig) -> Result<(Vec<f32>, BTreeMap<String, String>)> {
    let layout = ParamLayout::new(cfg);
    let buffers: Vec<Vec<u8>> = files.iter().map(|f| read_file(f)).collect::<Result<_>>()?;
    let mut metadata = BTreeMap::new();
    // bare name (no `transformer.`) -> (name in file, file index, view)
    let mut found: HashMap<String, (String, usize, TensorView<'_>)> = HashMap::new();
    let mut unknown = Vec::new();
    for (fi, (path, buf)) in files.iter().zip(&buffers).enumerate() {
        let (st, meta) = parse_safetensors(path, buf)?;
        metadata.extend(meta);
        for (name, view) in st.tensors() {
            let bare = name.strip_prefix("transformer.").unwrap_or(&name).to_string();
            if is_mask_buffer(&bare) {
                continue;
            }
            let key = if name == "lm_head.weight" { name.clone() } else { bare };
            let is_known = key == "lm_head.weight" || layout.by_name(&format!("transformer.{key}")).is_some();
            if !is_known {
                unknown.push(name);
                continue;
            }
            if let Some((other, ofi, _)) = found.get(&key) {
                return Err(Error::Checkpoint(format!(
                    "tensor {key} appears twice: as {other} in {} and as {name} in {}",
                    files[*ofi].display(),
                    path.display()
                )));
            }
            found.insert(key, (name, fi, view));
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(Error::Checkpoint(format!(
            "unknown tensors (not part of a GPT-2 model with this config.json): {}",
            short_list(&unknown)
        )));
    }
    let missing: Vec<String> = layout
        .views
        .iter()
        .filter(|v| !found.contains_key(v.name.strip_prefix("transformer.").unwrap()))
        .map(|v| v.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Checkpoint(format!(
            "missing tensors (config.json: n_layer {}): {}",
            cfg.n_layer,
            short_list(&missing)
        )));
    }
    let mut params = vec![0f32; layout.total];
    for v in &layout.views {
        let (name, _, view) = &found[v.name.strip_prefix("transformer.").unwrap()];
        if view.shape() != v.shape.as_slice() {
            return Err(Error::Checkpoint(format!(
                "tensor {name} has shape {:?}, expected {:?} (from config.json)",
                view.shape(),
                v.shape
            )));
        }
        let out = &mut params[v.range()];
        decode_into(name, view, out)?;
        if let Some((i, x)) = first_non_finite(out) {
            return Err(Error::Checkpoint(format!("tensor {name} holds a non-finite value ({x} at flat index {i})")));
        }
    }
    if let Some((name, _, view)) = found.get("lm_head.weight") {
        let wte = layout.by_name("transformer.wte.weight").unwrap();
        if view.shape() != wte.shape.as_slice() {
            return Err(Error::Checkpoint(format!(
                "tensor {name} has shape {:?}, expected {:?} (it is tied to wte)",
                view.shape(),
                wte.shape
            )));
        }
        let mut head = vec![0f32; wte.len()];
        decode_into(name, view, &mut head)?;
        if let Some(i) = head.iter().zip(&params[wte.range()]).position(|(a, b)| a != b) {
            return Err(Error::Checkpoint(format!(
                "{name} differs from wte at flat index {i} ({} vs {}); memsieve requires tied embeddings",
                head[i],
                params[wte.offset + i]
            )));
        }
    }
    Ok((params, metadata))
}

//! Training state for resuming: AdamW moments in `optimizer.safetensors` (two flat F32 tensors
//! `m` and `v`, in [`ParamLayout`](crate::model::params::ParamLayout) order) and everything else in
//! `trainer_state.json`. Both files record the step, so a save interrupted between them is caught.

use super::{parse_safetensors, serialize_f32, CONFIG_FILE};
use crate::error::{write_atomic, Error, Result};
use serde::{Deserialize, Serialize};
use crate::model::AdamW;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
const FORMAT: &str = "memsieve-adamw";
const FORMAT_VERSION: u32 = 1;
/// Regularizer state tensors optimizer.safetensors may hold beside m and v.
const EXTRA_TENSORS: &[&str] = &[crate::regularize::SPECTRAL_TENSOR, crate::regularize::DROPPER_TENSOR];

/// Everything needed to resume training exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken (AdamW's t; bias corrections use it).
    pub step: u64,
    /// 0-based index of the epoch in progress; with `batch_in_epoch == 0` it is the number of
    /// completed epochs (the true epoch, not the reference's epoch + 1 file name; §8 item 17).
    pub epoch: u64,
    /// Next batch to run within `epoch`'s shuffle (0 at an epoch boundary).
    pub batch_in_epoch: u64,
    /// Run seed; with `epoch` it determines the shuffle order.
    pub seed: u64,
    pub adam: AdamW,
    /// Batch size and padding-loss setting of the run (absent in states written before they were
    /// recorded), so a fine-tuning run can continue with the same recipe.
    pub batch: Option<u64>,
    pub mask_pad: Option<bool>,
    /// First moment, one value per parameter.
    pub m: Vec<f32>,
    /// Second moment, one value per parameter.
    pub v: Vec<f32>,
    /// The data configuration (opaque to this module).
    pub data_config: Value,
    /// Metrics history, one JSON row per evaluation.
    pub metrics: Vec<Value>,
    /// The run's regularizer and its host state (`{"regularizer": …, "state": …}`; src/regularize).
    pub regularizer: Option<Value>,
    /// Regularizer state tensors saved beside the moments (`regularize::SPECTRAL_TENSOR`, …).
    pub extra: BTreeMap<String, Vec<f32>>,
}

impl TrainState {
    /// Fresh state for `n_params` parameters (zero moments, step 0).
    pub fn new(n_params: usize, seed: u64, adam: AdamW, data_config: Value) -> Self {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            seed,
            adam,
            batch: None,
            mask_pad: None,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            data_config,
            metrics: Vec::new(),
            regularizer: None,
            extra: BTreeMap::new(),
        }
    }

    /// Error unless `m` and `v` both hold `n_params` values.
    pub fn check_len(&self, n_params: usize) -> Result<()> {
        if self.m.len() != n_params || self.v.len() != n_params {
            return Err(Error::Checkpoint(format!(
                "optimizer state has m of {} and v of {} values, but the model has {n_params} parameters",
                self.m.len(),
                self.v.len()
            )));
        }
        Ok(())
    }
}

/// `trainer_state.json` (the moments live in `optimizer.safetensors`).
#[derive(Serialize, Deserialize)]
struct StateJson {
    format: String,
    format_version: u32,
    step: u64,
    epoch: u64,
    batch_in_epoch: u64,
    seed: u64,
    adam: AdamW,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mask_pad: Option<bool>,
    n_params: usize,
    data_config: Value,
    metrics: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regularizer: Option<Value>,
}

/// Write `dir/optimizer.safetensors`, then `dir/trainer_state.json`, each atomically.
pub fn save_train_state(dir: impl AsRef<Path>, state: &TrainState) -> Result<()> {
    let dir = dir.as_ref();
    let n = state.m.len();
    state.check_len(n)?;
    if n == 0 {
        return Err(Error::Checkpoint("optimizer state is empty".into()));
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("n_params".to_string(), n.to_string()),
    ]);
    let mut tensors = vec![("m".into(), vec![n], &state.m[..]), ("v".into(), vec![n], &state.v[..])];
    for (name, t) in &state.extra {
        if !EXTRA_TENSORS.contains(&name.as_str()) {
            return Err(Error::Checkpoint(format!("{name:?} is not a training-state tensor memsieve saves")));
        }
        tensors.push((name.clone(), vec![t.len()], &t[..]));
    }
    let bytes = serialize_f32(&tensors, meta)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(dir.join(OPTIMIZER_FILE), &bytes)?;
    let json = StateJson {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        step: state.step,
        epoch: state.epoch,
        batch_in_epoch: state.batch_in_epoch,
        seed: state.seed,
        adam: state.adam,
        batch: state.batch,
        mask_pad: state.mask_pad,
        n_params: n,
        data_config: state.data_config.clone(),
        metrics: state.metrics.clone(),
        regularizer: state.regularizer.clone(),
    };
    let mut text = serde_json::to_string_pretty(&json)
        .map_err(|e| Error::Checkpoint(format!("cannot serialise trainer state: {e}")))?;
    text.push('\n');
    write_atomic(dir.join(TRAINER_STATE_FILE), text.as_bytes())
}

/// Read the training state of `dir`. Checks the two files agree (step, length), the moments are
/// finite (and `v` ≥ 0), and — when `dir/config.json` exists — that the length matches that model.
pub fn load_train_state(dir: impl AsRef<Path>) -> Result<TrainState> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::Checkpoint(format!("{} is not a directory", dir.display())));
    }
    let json_path = dir.join(TRAINER_STATE_FILE);
    let opt_path = dir.join(OPTIMIZER_FILE);
    for p in [&json_path, &opt_path] {
        if !p.is_file() {
            return Err(Error::Checkpoint(format!("{} is missing", p.display())));
        }
    }
    let text = std::fs::read_to_string(&json_path).map_err(|e| Error::io(&json_path, e))?;
    let js: StateJson = serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: invalid trainer state: {e}", json_path.display())))?;
    if js.format != FORMAT || js.format_version > FORMAT_VERSION {
        return Err(Error::Checkpoint(format!(
            "{}: format {:?} version {} is not one this memsieve reads ({FORMAT:?} ≤ {FORMAT_VERSION})",
            json_path.display(),
            js.format,
            js.format_version
        )));
    }

    let buf = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
    let (st, meta) = parse_safetensors(&opt_path, &buf)?;
    if let Some(s) = meta.get("step") {
        if *s != js.step.to_string() {
            return Err(Error::Checkpoint(format!(
                "{} is from step {s} but {} is from step {} (interrupted save?)",
                opt_path.display(),
                json_path.display(),
                js.step
            )));
        }
    }
    let moment = |name: &str| -> Result<Vec<f32>> {
        let view = st
            .tensor(name)
            .map_err(|_| Error::Checkpoint(format!("{}: no tensor {name:?}", opt_path.display())))?;
        if view.shape() != [js.n_params] {
            return Err(Error::Checkpoint(format!(
                "{}: tensor {name} has shape {:?}, expected [{}]",
                opt_path.display(),
                view.shape(),
                js.n_params
            )));
        }
        let mut out = vec![0f32; js.n_params];
        super::decode_into(name, &view, &mut out)?;
        if let Some((i, x)) = super::first_non_finite(&out) {
            return Err(Error::Checkpoint(format!("{}: {name} holds {x} at index {i}", opt_path.display())));
        }
        Ok(out)
    };
    let m = moment("m")?;
    let v = moment("v")?;
    if let Some(i) = v.iter().position(|x| *x < 0.0) {
        return Err(Error::Checkpoint(format!("{}: v is negative at index {i}", opt_path.display())));
    }
    let unknown: Vec<String> = st
        .names()
        .into_iter()
        .map(|n| n.to_string())
        .filter(|n| !["m", "v"].contains(&n.as_str()) && !EXTRA_TENSORS.contains(&n.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Checkpoint(format!("{}: unexpected tensors {unknown:?}", opt_path.display())));
    }
    let mut extra = BTreeMap::new();
    for name in EXTRA_TENSORS {
        if let Ok(view) = st.tensor(name) {
            let len = view.shape().iter().product();
            let mut out = vec![0f32; len];
            super::decode_into(name, &view, &mut out)?;
            if let Some((i, x)) = super::first_non_finite(&out) {
                return Err(Error::Checkpoint(format!("{}: {name} holds {x} at index {i}", opt_path.display())));
            }
            extra.insert(name.to_string(), out);
        }
    }
    let state = TrainState {
        step: js.step,
        epoch: js.epoch,
        batch_in_epoch: js.batch_in_epoch,
        seed: js.seed,
        adam: js.adam,
        batch: js.batch,
        mask_pad: js.mask_pad,
        m,
        v,
        data_config: js.data_config,
        metrics: js.metrics,
        regularizer: js.regularizer,
        extra,
    };
    let cfg_path = dir.join(CONFIG_FILE);
    if cfg_path.is_file() {
        let cfg = super::read_config(&cfg_path)?;
        state.check_len(crate::model::params::ParamLayout::new(&cfg).total)?;
    }
    Ok(state)
}

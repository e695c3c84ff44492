//! Regularizers during training (tinymem.md §5.1): the spectral-norm penalty, loss truncation and
//! example-tied dropout, each one training step over the `Backend` ops (`memsieve train
//! --regularizer …`). The device-side parts are ops (`SpectralPowerIteration`, `SpectralGradAdd`,
//! `ExampleTiedDropout`); loss truncation reuses the weighted cross-entropy backward.

pub mod etd;
pub mod spectral;
pub mod truncation;

use crate::backend::{Backend, EtdMode, IGNORE_TARGET};
use crate::error::{Error, Result};
use crate::model::{AdamW, Model};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use spectral::Spectral;
use std::collections::BTreeMap;
use truncation::LossDropper;

/// The regularizer of a run, as `trainer_state.json` records it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Regularizer {
    None,
    /// (λ/2)·Σσ² (Yoshida & Miyato), or (λ/2)·Σσ with `linear` (the reference).
    Spectral { lambda: f32, linear: bool },
    /// `window`: the ring buffer, minimum count and recompute interval (the reference's 10,000).
    LossTruncation { dropc: f64, window: usize },
    /// The masks' parameters live in the model's config (`ModelConfig::example_tied_dropout`).
    ExampleTiedDropout { mode: EtdMode },
}

/// What one regularized step reports.
pub struct StepLoss {
    /// Mean cross-entropy over the batch's target positions (comparable across regularizers).
    pub loss: f64,
    /// The regularizer's own figure: the spectral penalty, or the fraction of samples dropped.
    pub extra: Option<f64>,
}

/// A regularizer's training state.
pub enum Active<B: Backend> {
    None,
    Spectral(Spectral<B>),
    Truncation(LossDropper),
    /// Example-tied dropout: the model applies the masks; a step passes the rows' dataset indices.
    Etd,
}

impl<B: Backend> Active<B> {
    /// Fresh state for `reg` on `model` (whose config must carry the ETD masks for ETD).
    pub fn new(reg: &Regularizer, model: &Model<B>, seed: u64) -> Result<Self> {
        Ok(match *reg {
            Regularizer::None => Active::None,
            Regularizer::Spectral { lambda, linear } => Active::Spectral(Spectral::new(&model.dev, &model.cfg, &model.layout, seed, lambda, linear)?),
            Regularizer::LossTruncation { dropc, window } => Active::Truncation(LossDropper::with_window(dropc, window, window)?),
            Regularizer::ExampleTiedDropout { mode } => {
                match model.cfg.example_tied_dropout {
                    Some(e) if e.mode == mode => {}
                    _ => return Err(Error::Config("example-tied dropout training needs the masks in the model config".into())),
                }
                Active::Etd
            }
        })
    }

    /// The name of `StepLoss::extra` in the metrics log.
    pub fn extra_name(&self) -> Option<&'static str> {
        match self {
            Active::Spectral(_) => Some("spectral_penalty"),
            Active::Truncation(_) => Some("dropped_fraction"),
            _ => None,
        }
    }

    /// forward → backward (regularized) → AdamW on a batch whose rows are dataset rows `rows`.
    pub fn step(&mut self, model: &mut Model<B>, tokens: &[u32], targets: &[u32], rows: &[usize], t: usize, h: &AdamW) -> Result<StepLoss> {
        let b = rows.len();
        let dev = model.dev.clone();
        let step = model.step + 1;
        let finite = |loss: f64, what: &str| {
            if loss.is_finite() {
                Ok(())
            } else {
                Err(Error::Numerical(format!("{what} is {loss} at step {step}")))
            }
        };
        let out = match self {
            Active::None => return Ok(StepLoss { loss: model.train_step(tokens, targets, b, t, h)?, extra: None }),
            Active::Etd => {
                let ids: Vec<u32> = rows.iter().map(|&r| u32::try_from(r).expect("dataset rows fit in u32")).collect();
                model.set_example_ids(&ids);
                return Ok(StepLoss { loss: model.train_step(tokens, targets, b, t, h)?, extra: None });
            }
            Active::Spectral(s) => {
                let loss = dev.backend.scope(|| model.forward_backward(tokens, targets, b, t))?;
                finite(loss, "loss")?;
                // The power iteration sees the weights the forward pass used (AdamW has not run).
                s.power_iteration(&dev, &model.params);
                s.add_gradient(&dev, model.grads_buffer().expect("the backward pass allocated gradients"));
                let penalty = s.penalty(&s.sigmas(&dev));
                finite(penalty, "the spectral penalty")?;
                StepLoss { loss, extra: Some(penalty) }
            }
            Active::Truncation(d) => {
                let per_row: Vec<usize> = targets.chunks(t).map(|r| r.iter().filter(|&&x| x != IGNORE_TARGET).count()).collect();
                let n_targets: usize = per_row.iter().sum();
                let mut dropped = 0usize;
                let losses = dev.backend.scope(|| {
                    model.forward_backward_weighed_by(tokens, targets, b, t, false, &mut |losses: &[f32]| {
                        let means: Vec<f32> = losses
                            .chunks(t)
                            .zip(&per_row)
                            .map(|(l, &n)| (l.iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64) as f32)
                            .collect();
                        if let Some(i) = means.iter().position(|m| !m.is_finite()) {
                            return Err(Error::Numerical(format!("the loss of batch row {i} is {} at step {step}", means[i])));
                        }
                        let mask = d.mask(&means);
                        dropped = mask.iter().filter(|&&m| m == 0.0).count();
                        Ok(truncation::row_weights(&mask, &per_row, t))
                    })
                })?;
                let loss = losses.iter().map(|&x| x as f64).sum::<f64>() / n_targets.max(1) as f64;
                StepLoss { loss, extra: Some(dropped as f64 / b as f64) }
            }
        };
        model.adamw_update(h)?;
        Ok(out)
    }

    /// The state to save beside the optimizer: JSON fields and named tensors.
    pub fn save(&self, model: &Model<B>) -> (Value, BTreeMap<String, Vec<f32>>) {
        let mut tensors = BTreeMap::new();
        let js = match self {
            Active::Spectral(s) => {
                tensors.insert(SPECTRAL_TENSOR.to_string(), s.download_state(&model.dev));
                json!({})
            }
            Active::Truncation(d) => {
                tensors.insert(DROPPER_TENSOR.to_string(), d.vals.clone());
                serde_json::to_value(d).expect("the dropper serialises")
            }
            _ => json!({}),
        };
        (js, tensors)
    }

    /// Restore what `save` wrote.
    pub fn restore(&mut self, model: &Model<B>, js: &Value, tensors: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        let missing = |name: &str| Error::Checkpoint(format!("the saved run has no {name} state (optimizer.safetensors tensor {name:?})"));
        match self {
            Active::Spectral(s) => s.upload_state(&model.dev, tensors.get(SPECTRAL_TENSOR).ok_or_else(|| missing(SPECTRAL_TENSOR))?),
            Active::Truncation(d) => {
                let mut saved: LossDropper = serde_json::from_value(js.clone())
                    .map_err(|e| Error::Checkpoint(format!("the saved loss-truncation state is not readable: {e}")))?;
                saved.restore_vals(tensors.get(DROPPER_TENSOR).ok_or_else(|| missing(DROPPER_TENSOR))?.clone())?;
                if saved.dropc != d.dropc {
                    return Err(Error::Input(format!("the run was trained with --dropc {}, not {}", saved.dropc, d.dropc)));
                }
                *d = saved;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Tensor names of the regularizer state in optimizer.safetensors.
pub const SPECTRAL_TENSOR: &str = "spectral_uv";
pub const DROPPER_TENSOR: &str = "loss_dropper_vals";

//! Removing memorized sequences by editing weights (tinymem.md §5.5): the mask-training methods
//! Subnet and BalancedSubnet ([`subnet`]), the one-shot gradient methods Durable, Durable-Aggregate
//! and Second-Order Unlearning ([`durable`]), and Greedy ([`greedy`]). All of them select weights
//! with the same device kernels (`Op::SelectRank` / `Op::MaskApply`: a rank-k key selection instead
//! of a sort) and leave an ordinary model with the chosen weights zeroed.

pub mod durable;
pub mod greedy;
pub mod subnet;

use crate::backend::{Backend, Op, SelectKey, View};
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::params::ParamKind;
use crate::model::Model;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Edge-popup scores per MLP matrix, gradient ascent on the memorized set.
    Subnet,
    /// Subnet's scores with −(1−α)·L_memorized + α·L_retain over mixed batches (the paper's best).
    BalancedSubnet,
    /// Per MLP tensor, zero the top ⌊ratio·numel⌋ entries by |∇L_memorized|.
    Durable,
    /// Durable with one global top-k over the MLP tensors (`--select-all-params`: all parameters).
    DurableAggregate,
    /// Zero, one at a time, the weight with the largest w·∂J/∂w (J = −Σ y_j ℓ_j over M ∪ C).
    Greedy,
    /// Second-Order Unlearning: per MLP tensor, zero the top entries by w²/(2·[F⁻¹]_jj).
    Sou,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Subnet => "subnet",
            Method::BalancedSubnet => "balanced-subnet",
            Method::Durable => "durable",
            Method::DurableAggregate => "durable-aggregate",
            Method::Greedy => "greedy",
            Method::Sou => "sou",
        }
    }

    /// Whether the method reads the retain set.
    pub fn uses_retain(self) -> bool {
        matches!(self, Method::BalancedSubnet | Method::Greedy)
    }
}

/// Hyper-parameters; defaults are the spec's (tinymem.md §5.3, §5.5).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnlearnOptions {
    /// Fraction pruned: of each MLP matrix (Subnet, BalancedSubnet), of each MLP tensor (Durable,
    /// SOU), of the selection domain (Durable-Aggregate), or ⌈ratio·#params⌉ iterations (Greedy).
    pub ratio: f64,
    /// Passes over the data (Subnet: M; BalancedSubnet: M ∪ C).
    pub epochs: usize,
    /// BalancedSubnet's `loss_weighting` α.
    pub alpha: f64,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Batch of the mask-training methods (32) and of the gradient passes over M (Durable, SOU: 64).
    pub batch: usize,
    pub grad_batch: usize,
    /// Greedy's batch from M ∪ C.
    pub greedy_batch: usize,
    /// Stop Greedy after this many iterations (its full count is ⌈ratio·#params⌉).
    pub max_iterations: Option<usize>,
    /// Durable-Aggregate over all parameters (the reference), not only the MLP tensors.
    pub select_all_params: bool,
    pub sou_block: usize,
    pub sou_lambda: f32,
    /// Exclude padding targets from the losses (the reference includes them).
    pub mask_pad: bool,
    pub seed: u64,
}

impl Default for UnlearnOptions {
    fn default() -> Self {
        UnlearnOptions {
            ratio: 0.05,
            epochs: 10,
            alpha: 0.9,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 32,
            grad_batch: 64,
            greedy_batch: 64,
            max_iterations: None,
            select_all_params: false,
            sou_block: 50,
            sou_lambda: 1e-7,
            mask_pad: false,
            seed: 0,
        }
    }
}

impl UnlearnOptions {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.ratio) || self.ratio.is_nan() {
            return Err(Error::Input(format!("ratio must be in [0, 1], not {}", self.ratio)));
        }
        if !(0.0..=1.0).contains(&self.alpha) || self.alpha.is_nan() {
            return Err(Error::Input(format!("alpha must be in [0, 1], not {}", self.alpha)));
        }
        if self.batch == 0 || self.grad_batch == 0 || self.greedy_batch == 0 || self.sou_block == 0 {
            return Err(Error::Input("batch sizes and the SOU block must be positive".into()));
        }
        if !(self.lr.is_finite() && self.momentum.is_finite() && self.weight_decay.is_finite() && self.sou_lambda > 0.0) {
            return Err(Error::Input("lr, momentum and weight decay must be finite and λ positive".into()));
        }
        Ok(())
    }
}

/// The memorized set M and the retain set C (same row length).
pub struct UnlearnSets<'a> {
    pub memorized: &'a TokenMatrix,
    pub retain: &'a TokenMatrix,
}

/// Per-epoch losses of the mask-training methods.
#[derive(Clone, Debug, Serialize)]
pub struct EpochLoss {
    pub epoch: usize,
    /// Mean per-sequence loss over the memorized rows seen this epoch (NaN if none).
    pub memorized: f64,
    pub retain: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnlearnOutcome {
    pub method: Method,
    /// Weights set to zero by the edit.
    pub zeroed: usize,
    /// Entries the method could select from (its domain).
    pub domain: usize,
    /// Optimiser steps or Greedy iterations.
    pub steps: usize,
    pub seconds: f64,
    pub epochs: Vec<EpochLoss>,
    /// Subnet and BalancedSubnet: entries the final mask zeroes that the random initial mask kept.
    pub mask_changed: usize,
}

/// Run `method` on `model` and bake its edit into the parameters. `progress(done, total)` is
/// called as steps complete.
pub fn unlearn<B: Backend>(model: &mut Model<B>, method: Method, sets: &UnlearnSets<'_>, o: &UnlearnOptions, progress: &dyn Fn(usize, usize)) -> Result<UnlearnOutcome> {
    o.validate()?;
    if sets.memorized.rows() == 0 {
        return Err(Error::Input("the memorized set is empty: nothing to unlearn".into()));
    }
    for (name, m) in [("memorized", sets.memorized), ("retain", sets.retain)] {
        if m.rows() > 0 && m.cols > model.cfg.n_positions {
            return Err(Error::Input(format!("{name} rows of {} tokens are longer than the model's context of {}", m.cols, model.cfg.n_positions)));
        }
    }
    if method.uses_retain() && sets.retain.rows() == 0 {
        return Err(Error::Input(format!("{} needs a non-empty retain set", method.name())));
    }
    if method.uses_retain() && sets.retain.cols != sets.memorized.cols {
        return Err(Error::Input(format!("retain rows ({} tokens) and memorized rows ({}) differ in length", sets.retain.cols, sets.memorized.cols)));
    }
    let t0 = std::time::Instant::now();
    let mut out = match method {
        Method::Subnet | Method::BalancedSubnet => subnet::run(model, method == Method::BalancedSubnet, sets, o, progress)?,
        Method::Durable | Method::DurableAggregate | Method::Sou => durable::run(model, method, sets.memorized, o, progress)?,
        Method::Greedy => greedy::run(model, sets, o, progress)?,
    };
    out.seconds = t0.elapsed().as_secs_f64();
    let params = model.download_params();
    if let Some(i) = params.iter().position(|x| !x.is_finite()) {
        return Err(Error::Numerical(format!("{} left a non-finite weight at index {i}", method.name())));
    }
    Ok(out)
}

/// ⌊ratio·n⌋ entries (the spec's rounding for masks and top-k).
pub fn pruned_count(n: usize, ratio: f64) -> usize {
    ((n as f64 * ratio).floor() as usize).min(n)
}

/// The MLP tensors every weight method may edit: per layer `c_fc` and `c_proj`, weights and biases.
pub fn mlp_tensors(model: &Model<impl Backend>, with_biases: bool) -> Vec<(ParamKind, usize)> {
    let kinds: &[ParamKind] = if with_biases {
        &[ParamKind::FcW, ParamKind::FcB, ParamKind::FcProjW, ParamKind::FcProjB]
    } else {
        &[ParamKind::FcW, ParamKind::FcProjW]
    };
    (0..model.cfg.n_layer).flat_map(|l| kinds.iter().map(move |&k| (k, l))).collect()
}

/// Targets and per-position loss weights for a batch whose row r contributes coef[r]·ℓ_r, with ℓ_r
/// the row's mean loss over its targets (rows without targets contribute nothing).
pub fn row_weighted_targets<B: Backend>(model: &Model<B>, tokens: &[u32], b: usize, t: usize, coef: &[f32], mask_pad: bool) -> (Vec<u32>, Vec<f32>) {
    let targets = model.lm_targets(tokens, b, t, mask_pad);
    let mut weights = vec![0f32; b * t];
    for r in 0..b {
        let row = &targets[r * t..(r + 1) * t];
        let n = row.iter().filter(|&&x| x != crate::backend::IGNORE_TARGET).count();
        if n > 0 {
            for (w, &tg) in weights[r * t..(r + 1) * t].iter_mut().zip(row) {
                if tg != crate::backend::IGNORE_TARGET {
                    *w = coef[r] / n as f32;
                }
            }
        }
    }
    (targets, weights)
}

/// Per-row mean losses from per-position losses and targets.
pub fn row_losses(losses: &[f32], targets: &[u32], t: usize) -> Vec<f64> {
    losses
        .chunks(t)
        .zip(targets.chunks(t))
        .map(|(l, tg)| {
            let n = tg.iter().filter(|&&x| x != crate::backend::IGNORE_TARGET).count();
            l.iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64
        })
        .collect()
}

/// Zero the entries of `w` whose key (from `x`, times `y` if given) ranks at or above `k` (below:
/// false) or below `k` (below: true) among the n entries: one rank selection and one mask launch.
/// `cut` is a 2-word scratch view.
#[allow(clippy::too_many_arguments)]
pub fn select_and_zero<B: Backend>(dev: &crate::backend::Device<B>, w: View<'_, B::Buffer>, x: View<'_, B::Buffer>, y: Option<View<'_, B::Buffer>>, cut: View<'_, B::Buffer>, k: usize, key: SelectKey, below: bool) {
    let n = x.len;
    dev.exec(Op::SelectRank { cut, x, y, n, k, key });
    dev.exec(Op::MaskApply { w, x, y, cut, n, key, below });
}

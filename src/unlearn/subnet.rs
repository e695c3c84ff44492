//! Subnet and BalancedSubnet (tinymem.md §5.5, after Ramanujan et al.'s edge-popup): a real score
//! per weight of every MLP matrix; the forward uses W ⊙ m with m = 0 on the ⌊ratio·n⌋ entries of
//! lowest |score| (a rank selection per step, `Op::SelectRank`, instead of the reference's sort);
//! the straight-through gradient sign(S) ⊙ W ⊙ ∂J/∂W_eff trains the scores with SGD + momentum
//! while the weights stay frozen (no weight gradients at all); the final mask is baked in.

use super::{pruned_count, row_losses, row_weighted_targets, EpochLoss, Method, UnlearnOptions, UnlearnOutcome, UnlearnSets};
use crate::backend::{Backend, Op, SelectKey, View};
use crate::data::{Batch, Batches};
use crate::error::{Error, Result};
use crate::model::params::ParamKind;
use crate::model::{Model, WeightMasks};
use crate::rng::{purpose, Stream};

/// Initial scores: PyTorch's `kaiming_uniform_(a=√5)` on a Conv1D weight [in, out], i.e.
/// U(−1/√fan_in, 1/√fan_in) with fan_in = size(1) = out (1/√4C for c_fc, 1/√C for c_proj), one
/// Philox stream per tensor. Tensor-major: 2l = c_fc of layer l, 2l + 1 = c_proj.
pub fn initial_scores(n_layer: usize, c: usize, f: usize, seed: u64) -> Vec<f32> {
    let len = c * f;
    let mut s = Vec::with_capacity(2 * n_layer * len);
    for tensor in 0..2 * n_layer {
        let fan_in = if tensor % 2 == 0 { f } else { c };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut rng = Stream::new(seed, purpose::MASK_INIT, 0x5b00 + tensor as u32);
        s.extend((0..len).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32));
    }
    s
}

/// Point every tensor's cut at rank ⌊ratio·n⌋ of its |scores|.
fn select_cuts<B: Backend>(model: &Model<B>, k: usize) {
    let m = model.weight_masks.as_ref().expect("masks set");
    for tensor in 0..m.tensors {
        model.dev.exec(Op::SelectRank { cut: m.cut_of(tensor), x: m.scores_of(tensor), y: None, n: m.tensor_len, k, key: SelectKey::Abs });
    }
}

pub fn run<B: Backend>(model: &mut Model<B>, balanced: bool, sets: &UnlearnSets<'_>, o: &UnlearnOptions, progress: &dyn Fn(usize, usize)) -> Result<UnlearnOutcome> {
    let cfg = model.cfg.clone();
    let (c, f) = (cfg.n_embd, cfg.n_inner());
    let dev = model.dev.clone();
    let scores = initial_scores(cfg.n_layer, c, f, o.seed);
    let masks = WeightMasks::new(&dev, &cfg, &scores)?;
    let momentum = dev.alloc(scores.len())?;
    let k = pruned_count(masks.tensor_len, o.ratio);
    let domain = masks.tensors * masks.tensor_len;
    model.weight_masks = Some(masks);

    // Rows 0..|M| are memorized; BalancedSubnet adds the retain rows after them.
    let mut rows = sets.memorized.clone();
    if balanced {
        rows.extend(sets.retain);
    }
    let n_mem = sets.memorized.rows();
    let all: Vec<usize> = (0..rows.rows()).collect();
    let per_epoch = all.len().div_ceil(o.batch);
    let total = o.epochs * per_epoch;
    let t = rows.cols;
    let mut step = 0usize;
    let mut epochs = Vec::new();
    let result = (|| -> Result<()> {
        for epoch in 0..o.epochs {
            // Subnet walks M in order (the reference does not shuffle); BalancedSubnet shuffles M ∪ C.
            let batches = if balanced { Batches::shuffled(&rows, &all, o.batch, o.seed, 0x5b5b_0000 + epoch as u32)? } else { Batches::sequential(&rows, &all, o.batch)? };
            let (mut sum_m, mut n_m, mut sum_c, mut n_c) = (0f64, 0usize, 0f64, 0usize);
            for batch in batches {
                let b = batch.len();
                let coef = objective_coefficients(&batch, n_mem, balanced, o.alpha);
                let (targets, weights) = row_weighted_targets(model, &batch.tokens, b, t, &coef, o.mask_pad);
                select_cuts(model, k);
                let losses = model.forward_backward_weighted(&batch.tokens, &targets, &weights, b, t, true)?;
                let m = model.weight_masks.as_ref().unwrap();
                dev.exec(Op::SgdMomentum { params: dev.view(&m.scores), grads: dev.view(&m.dscores), buf: dev.view(&momentum), lr: o.lr, momentum: o.momentum, weight_decay: o.weight_decay, first: step == 0 });
                for (&r, l) in batch.rows.iter().zip(row_losses(&losses, &targets, t)) {
                    if r < n_mem {
                        sum_m += l;
                        n_m += 1;
                    } else {
                        sum_c += l;
                        n_c += 1;
                    }
                }
                step += 1;
                progress(step, total);
            }
            let mean = |s: f64, n: usize| if n == 0 { f64::NAN } else { s / n as f64 };
            let e = EpochLoss { epoch: epoch + 1, memorized: mean(sum_m, n_m), retain: mean(sum_c, n_c) };
            if !e.memorized.is_nan() && !e.memorized.is_finite() || !e.retain.is_nan() && !e.retain.is_finite() {
                return Err(Error::Numerical(format!("the loss diverged in epoch {} (memorized {}, retain {})", e.epoch, e.memorized, e.retain)));
            }
            epochs.push(e);
        }
        Ok(())
    })();
    // Bake the final mask (also on error, the masks are cleared so the model stays usable).
    let mut mask_changed = 0;
    if result.is_ok() {
        select_cuts(model, k);
        bake(model);
        let last = dev.download_f32(dev.view(&model.weight_masks.as_ref().unwrap().scores));
        let len = cfg.n_embd * f;
        mask_changed = (0..2 * cfg.n_layer).map(|t| masked_set_difference(&scores[t * len..(t + 1) * len], &last[t * len..(t + 1) * len], k)).sum();
    }
    model.weight_masks = None;
    result?;
    Ok(UnlearnOutcome {
        method: if balanced { Method::BalancedSubnet } else { Method::Subnet },
        zeroed: k * 2 * cfg.n_layer,
        domain,
        steps: step,
        seconds: 0.0,
        epochs,
        mask_changed,
    })
}

/// How many entries the k-lowest-|score| mask of `a` zeroes that the one of `b` keeps: how far
/// training moved the mask from its random start.
fn masked_set_difference(a: &[f32], b: &[f32], k: usize) -> usize {
    let masked = |s: &[f32]| {
        let mut keys: Vec<(u32, usize)> = s.iter().enumerate().map(|(i, v)| (v.abs().to_bits(), i)).collect();
        let nth = k.min(keys.len().saturating_sub(1));
        keys.select_nth_unstable(nth);
        let mut m = vec![false; s.len()];
        for &(_, i) in keys.iter().take(k) {
            m[i] = true;
        }
        m
    };
    let (ma, mb) = (masked(a), masked(b));
    ma.iter().zip(&mb).filter(|(x, y)| **x && !**y).count()
}

/// Each row's coefficient of J = Σ coef_r·ℓ_r. Subnet: −1/B (J = −L_M). BalancedSubnet:
/// −(1−α)/|M ∩ batch| on memorized rows and α/|C ∩ batch| on retain rows; a batch missing one of
/// the two sets drops that term (the reference gives NaN there).
fn objective_coefficients(batch: &Batch, n_mem: usize, balanced: bool, alpha: f64) -> Vec<f32> {
    let b = batch.len();
    if !balanced {
        return vec![-1.0 / b as f32; b];
    }
    let in_m = batch.rows.iter().filter(|&&r| r < n_mem).count();
    let in_c = b - in_m;
    batch
        .rows
        .iter()
        .map(|&r| if r < n_mem { (-(1.0 - alpha) / in_m as f64) as f32 } else { (alpha / in_c as f64) as f32 })
        .collect()
}

/// W ← W ⊙ m for every MLP matrix, with the masks' current cuts.
fn bake<B: Backend>(model: &Model<B>) {
    let m = model.weight_masks.as_ref().unwrap();
    for l in 0..model.cfg.n_layer {
        for (i, kind) in [ParamKind::FcW, ParamKind::FcProjW].into_iter().enumerate() {
            let tensor = 2 * l + i;
            let w = View::new(&model.params, model.layout.offset(kind, l), model.layout.len(kind));
            model.dev.exec(Op::MaskApply { w, x: m.scores_of(tensor), y: None, cut: m.cut_of(tensor), n: m.tensor_len, key: SelectKey::Abs, below: true });
        }
    }
}

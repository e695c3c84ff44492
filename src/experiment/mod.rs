//! Experiments that check the paper's claims on TinyMem (smi.md §14).
//!
//! `predict`: the classification experiment — a target and S shadow models on random halves of a
//! classification pool, LiRA ground truth, PSMI at the prediction checkpoint against the loss and
//! logit-gap baselines. `token_level`: the same question on the noised LM sequences, with the
//! exact-match % memorized test as ground truth.

pub mod predict;
pub mod secrets;
pub mod token_level;

use crate::backend::{Backend, IGNORE_TARGET};
use crate::data::{Batches, TokenMatrix};
use crate::error::{Error, Result};
use crate::model::{AdamW, Model};
use crate::smi::roc::{self, RocPoint};
use crate::smi::{self, Classes, Directions, PsmiOptions};
use indicatif::ProgressBar;
use serde::Serialize;

/// The v1 rule (smi.md §8, §14): the first checkpoint whose median loss is at most 5% of the
/// step-0 median. Returns its index and whether the rule was met (else the last checkpoint).
pub fn prediction_checkpoint(medians: &[f64]) -> (usize, bool) {
    match medians.iter().skip(1).position(|&m| m <= 0.05 * medians[0]) {
        Some(i) => (i + 1, true),
        None => (medians.len().saturating_sub(1), false),
    }
}

/// Median of a list (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// AUC and FPR at TPR = 0.75 of one predictor against one ground truth.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreMetrics {
    pub score: String,
    /// Hidden-state layer for PSMI scores.
    pub layer: Option<usize>,
    pub auc: Option<f64>,
    /// The first point of the full ROC with TPR ≥ 0.75.
    pub at_tpr_075: Option<RocPoint>,
}

pub fn score_metrics(score: &str, layer: Option<usize>, values: &[f64], positive: &[bool]) -> Result<ScoreMetrics> {
    Ok(ScoreMetrics {
        score: score.to_string(),
        layer,
        auc: roc::auc(values, positive)?,
        at_tpr_075: roc::fpr_at_tpr(values, positive, 0.75)?,
    })
}

/// Mean PSMI per sample of one layer's features, or why it could not be computed (e.g. the
/// embedding layer at one fixed position is constant within a class on every slice).
pub fn psmi_mean(x: &[f32], n: usize, d: usize, labels: &[i64], slices: usize, seed: u64) -> std::result::Result<Vec<f64>, String> {
    let classes = Classes::new(labels).map_err(|e| e.to_string())?;
    let dirs = Directions::seeded(seed, d);
    smi::psmi(x, n, d, &classes, &dirs, slices, &PsmiOptions::default(), &|_, _| {}).map(|s| s.mean).map_err(|e| e.to_string())
}

/// A training schedule over rows of one token matrix.
pub struct Schedule<'a> {
    pub rows: &'a TokenMatrix,
    pub members: &'a [usize],
    pub epochs: usize,
    pub batch: usize,
    pub adam: AdamW,
    /// Seeds the epoch shuffles.
    pub seed: u64,
    /// Call `on_checkpoint` every this many steps (and at step 0).
    pub every: usize,
}

impl Schedule<'_> {
    pub fn steps_per_epoch(&self) -> usize {
        self.members.len().div_ceil(self.batch.max(1))
    }
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch()
    }
}

/// Targets of a batch from its row indices and tokens.
pub type TargetsFn<'a> = dyn Fn(&[usize], &[u32]) -> Vec<u32> + 'a;

/// Train with AdamW over shuffled epochs; `targets(rows, tokens)` gives each batch's targets.
/// `on_checkpoint(step, model)` runs at step 0, every `every` steps and after the last step.
pub fn run_schedule<B: Backend>(
    model: &mut Model<B>,
    s: &Schedule,
    targets: &TargetsFn,
    pb: &ProgressBar,
    on_checkpoint: &mut dyn FnMut(usize, &mut Model<B>) -> Result<()>,
) -> Result<()> {
    if s.members.is_empty() || s.batch == 0 || s.every == 0 {
        return Err(Error::Input("training needs rows, a positive batch and a positive checkpoint interval".into()));
    }
    let t = s.rows.cols;
    let total = s.total_steps();
    let mut step = 0;
    on_checkpoint(0, model)?;
    for epoch in 0..s.epochs {
        for batch in Batches::shuffled(s.rows, s.members, s.batch, s.seed, epoch as u32)? {
            let tg = targets(&batch.rows, &batch.tokens);
            let loss = model.train_step(&batch.tokens, &tg, batch.len(), t, &s.adam)?;
            step += 1;
            pb.inc(1);
            pb.set_message(format!("loss {loss:.4}"));
            if step % s.every == 0 || step == total {
                pb.suspend(|| on_checkpoint(step, model))?;
            }
        }
    }
    Ok(())
}

/// Pool members of split s: a seeded random half (the target is split 0), as the reference's
/// `RandomState(s).choice(N, N/2, replace=False)`, here from Philox.
pub fn split_members(pool: usize, seed: u64, split: usize) -> Vec<usize> {
    let mut m = crate::rng::Stream::new(seed, crate::rng::purpose::MISC, 1000 + split as u32).sample(pool, pool / 2);
    m.sort_unstable();
    m
}

/// Causal-LM targets with padding targets included, as TinyMem trains.
pub fn lm_targets_with_padding(tokens: &[u32], t: usize) -> Vec<u32> {
    let mut tg = vec![IGNORE_TARGET; tokens.len()];
    for (row, out) in tokens.chunks(t).zip(tg.chunks_mut(t)) {
        out[..t - 1].copy_from_slice(&row[1..]);
    }
    tg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_rule_and_median() {
        assert_eq!(prediction_checkpoint(&[2.0, 1.0, 0.1, 0.05]), (2, true));
        assert_eq!(prediction_checkpoint(&[2.0, 1.0, 0.5]), (2, false));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let a = split_members(100, 0, 1);
        assert_eq!(a.len(), 50);
        assert_ne!(a, split_members(100, 0, 2));
        assert_eq!(a, split_members(100, 0, 1));
    }
}

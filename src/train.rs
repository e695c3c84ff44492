//! The training loop: shuffled epochs of AdamW steps with a progress bar, a JSONL metrics log and
//! resumable positions (the shuffle of epoch e depends only on (seed, e), so (epoch, batch) is enough
//! to continue exactly where a run stopped).

use crate::backend::Backend;
use crate::data::{Batch, Batches, TokenMatrix};
use crate::error::{Error, Result};
use crate::model::{AdamW, Model};
use crate::regularize::Active;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch: usize,
    pub adam: AdamW,
    pub seed: u64,
    /// Exclude padding targets from the loss (`--loss-mask-pad`); the reference trains on them.
    pub mask_pad: bool,
}

/// Where a run is: the next batch to train is `batch` of epoch `epoch`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Position {
    pub epoch: usize,
    pub batch: usize,
}

/// What the epoch callback is told.
pub struct EpochEnd {
    pub epoch: usize,
    pub mean_loss: f64,
    pub tokens_per_s: f64,
    /// Wall time of the epoch's training steps (evaluation excluded).
    pub seconds: f64,
    /// The regularizer's epoch mean (`Active::extra_name`: spectral penalty, dropped fraction).
    pub extra: Option<(&'static str, f64)>,
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Train `model` on the rows of `data` from `start` to `opts.epochs` with the regularizer `reg`,
/// calling `on_epoch` after every epoch (evaluation, checkpoints, logging; it sees the regularizer's
/// state to save it). Stops at the first non-finite loss.
pub fn train<B: Backend>(
    model: &mut Model<B>,
    data: &TokenMatrix,
    opts: &TrainOptions,
    start: Position,
    reg: &mut Active<B>,
    on_epoch: impl FnMut(&mut Model<B>, &EpochEnd, &Active<B>) -> Result<()>,
) -> Result<()> {
    let lm = |m: &Model<B>, b: &Batch| m.lm_targets(&b.tokens, b.len(), b.cols, opts.mask_pad);
    train_with_targets(model, data, opts, start, reg, lm, on_epoch)
}

/// [`train`] with the targets of each batch from `targets` (fine-tuning mixes next-token rows with
/// answer-only classification rows).
pub fn train_with_targets<B: Backend>(
    model: &mut Model<B>,
    data: &TokenMatrix,
    opts: &TrainOptions,
    start: Position,
    reg: &mut Active<B>,
    targets_of: impl Fn(&Model<B>, &Batch) -> Vec<u32>,
    mut on_epoch: impl FnMut(&mut Model<B>, &EpochEnd, &Active<B>) -> Result<()>,
) -> Result<()> {
    if data.rows() == 0 {
        return Err(Error::Data("the training set is empty".into()));
    }
    let t = data.cols;
    let all: Vec<usize> = (0..data.rows()).collect();
    let batches_per_epoch = Batches::sequential(data, &all, opts.batch)?.num_batches();
    let total = (opts.epochs * batches_per_epoch) as u64;
    let done = (start.epoch * batches_per_epoch + start.batch) as u64;
    // The bar counts this call's steps (a resumed or fine-tuning run starts it at 0).
    let pb = progress_bar(total.saturating_sub(done), "train");
    let dev = model.dev.clone();
    for epoch in start.epoch..opts.epochs {
        let epoch_phase = dev.profile.phase("train epoch");
        let t0 = Instant::now();
        let (mut loss_sum, mut n_batches, mut n_tokens, mut extra_sum) = (0f64, 0usize, 0usize, 0f64);
        let first_batch = if epoch == start.epoch { start.batch } else { 0 };
        let batches = Batches::shuffled(data, &all, opts.batch, opts.seed, epoch as u32)?;
        for (bi, batch) in batches.enumerate().skip(first_batch) {
            let b = batch.len();
            let targets = targets_of(model, &batch);
            let step = reg.step(model, &batch.tokens, &targets, &batch.rows, t, &opts.adam).map_err(|e| match e {
                Error::Numerical(m) => Error::Numerical(format!("{m} (epoch {epoch}, batch {bi}); training stopped")),
                other => other,
            })?;
            let loss = step.loss;
            loss_sum += loss;
            extra_sum += step.extra.unwrap_or(0.0);
            n_batches += 1;
            n_tokens += b * t;
            pb.inc(1);
            pb.set_message(format!(
                "epoch {} loss {:.4} {:.0} tok/s",
                epoch + 1,
                loss,
                n_tokens as f64 / t0.elapsed().as_secs_f64()
            ));
        }
        let end = EpochEnd {
            epoch: epoch + 1,
            mean_loss: loss_sum / n_batches.max(1) as f64,
            tokens_per_s: n_tokens as f64 / t0.elapsed().as_secs_f64(),
            seconds: t0.elapsed().as_secs_f64(),
            extra: reg.extra_name().map(|name| (name, extra_sum / n_batches.max(1) as f64)),
        };
        drop(epoch_phase);
        pb.suspend(|| on_epoch(model, &end, reg))?;
    }
    pb.finish_and_clear();
    Ok(())
}

//! The token-level variant of predict-memorization: train one LM on TinyMem noise data and ask
//! whether PSMI early in training (at the prediction checkpoint) predicts which noised sequences end
//! up memorized, with the exact-match % memorized test (tinymem.md §4) at the end of training as the
//! ground truth. Samples are the predicted positions of the noised rows (one copy each) and of some
//! clean rows, labelled with their trained next token; a noised sequence's score aggregates −PSMI
//! over the memorization window, or over its noised tokens inside the window.

use super::{lm_targets_with_padding, median, prediction_checkpoint, psmi_mean, run_schedule, score_metrics, Schedule, ScoreMetrics};
use crate::backend::{Backend, Device};
use crate::data::{tokenizer, MathDataConfig, MathDataset, MathTask, TokenMatrix};
use crate::error::{Error, Result};
use crate::metrics::{memorization, MemWindow};
use crate::model::config::ModelConfig;
use crate::model::{AdamW, Model};
use crate::smi::extract::{hidden_states, sequence_positions};
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize)]
pub struct TokenOptions {
    pub data: MathDataConfig,
    pub layers: usize,
    pub epochs: usize,
    pub batch: usize,
    pub adam: AdamW,
    pub checkpoints_per_epoch: usize,
    /// Memorization test: prompt length and compared continuation.
    pub prompt_len: usize,
    pub k: usize,
    /// Clean training rows beside the noised ones in the PSMI fit.
    pub clean_rows: usize,
    pub slices: usize,
    pub seed: u64,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            // Short sequences (14 numbers, ≤ 57 tokens; the window 20..40 ends before the shortest
            // row's EOS), 100 noised rows ×10 beside 410 clean ones: at 12 epochs some of the
            // noised rows are memorized and some not (measured), so there is something to predict.
            data: MathDataConfig {
                task: MathTask::Increment,
                num_7: 560,
                num_extra: 0,
                num_test: 50,
                num_noise: 100,
                length: 14,
                max_ctx: 64,
                duplicate: true,
                dup_powers: vec![1],
                ..MathDataConfig::default()
            },
            layers: 2,
            epochs: 12,
            batch: 64,
            adam: AdamW { lr: 3e-3, ..AdamW::default() },
            checkpoints_per_epoch: 5,
            prompt_len: 20,
            k: 20,
            clean_rows: 200,
            slices: 2000,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenCheckpoint {
    pub step: usize,
    pub epoch: f64,
    /// Median next-token loss over the non-padding targets of the scored rows.
    pub median_loss: f64,
}

/// One tested noised sequence.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRow {
    /// Index into the noised rows.
    pub noisy_index: usize,
    pub copies: usize,
    pub memorized: bool,
    pub noised_tokens_in_window: usize,
    /// Mean PSMI per layer over the window, and over its noised tokens.
    pub psmi_window: Vec<f64>,
    pub psmi_noised: Vec<f64>,
    pub loss_window: f64,
    pub loss_noised: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenReport {
    pub options: TokenOptions,
    pub train_rows: usize,
    pub psmi_samples: usize,
    pub tested: usize,
    pub memorized: usize,
    /// Memorized already at the prediction checkpoint (PSMI should come before memorization).
    pub memorized_at_prediction: usize,
    pub prediction_checkpoint: usize,
    pub prediction_epoch: f64,
    pub prediction_rule_met: bool,
    pub checkpoints: Vec<TokenCheckpoint>,
    pub psmi_errors: Vec<(usize, String)>,
    pub scores: Vec<ScoreMetrics>,
    #[serde(skip)]
    pub rows: Vec<TokenRow>,
    pub seconds: f64,
}

/// Tokens up to and including EOS (the first padding token ends a row).
fn lengths(m: &TokenMatrix) -> Vec<usize> {
    m.iter_rows().map(|r| r.iter().position(|&t| t == tokenizer::PAD).unwrap_or(r.len())).collect()
}

/// Per-position next-token losses on `rows` (0 where there is no non-padding target).
fn position_losses<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize) -> Result<Vec<f32>> {
    let t = rows.cols;
    let mut out = Vec::with_capacity(rows.data.len());
    for tokens in rows.data.chunks(batch * t) {
        let b = tokens.len() / t;
        let targets = model.lm_targets(tokens, b, t, true);
        out.extend(model.evaluate(tokens, &targets, b, t)?.losses);
    }
    Ok(out)
}

pub fn run<B: Backend>(dev: &Arc<Device<B>>, o: &TokenOptions, pb: &indicatif::ProgressBar) -> Result<TokenReport> {
    if o.epochs == 0 || o.batch == 0 || o.checkpoints_per_epoch == 0 || o.slices == 0 || o.layers == 0 || o.prompt_len == 0 {
        return Err(Error::Input("the token-level variant needs positive epochs, batch, checkpoints per epoch, slices, layers and prompt length".into()));
    }
    let started = std::time::Instant::now();
    let d = MathDataset::generate(&o.data)?;
    let window = MemWindow { prompt_len: o.prompt_len, k: o.k, batch: 128 };
    let mut cfg = ModelConfig::tinymem_math(o.layers);
    cfg.n_positions = o.data.max_ctx;
    let members: Vec<usize> = (0..d.train.rows()).collect();
    let sched = Schedule {
        rows: &d.train,
        members: &members,
        epochs: o.epochs,
        batch: o.batch,
        adam: o.adam,
        seed: o.seed,
        every: (members.len().div_ceil(o.batch) / o.checkpoints_per_epoch).max(1),
    };
    pb.set_length(sched.total_steps() as u64);
    pb.set_prefix("token-level LM");

    let probe = probe_rows(&d, o.clean_rows)?;
    let lens = lengths(&probe);
    let at = sequence_positions(&probe, &lens)?;
    let targets = |_: &[usize], tokens: &[u32]| -> Vec<u32> { lm_targets_with_padding(tokens, d.train.cols) };

    let mut ckpts = Vec::new();
    let mut step0 = f64::NAN;
    let mut kept: Option<(usize, Vec<f32>)> = None;
    let mut model = Model::new(dev.clone(), cfg.clone(), o.seed)?;
    let steps_per_epoch = sched.steps_per_epoch();
    run_schedule(&mut model, &sched, &targets, pb, &mut |step, m| {
        let losses = position_losses(m, &probe, 256)?;
        let scored: Vec<f64> = (0..at.len()).map(|i| losses[at.rows[i] * probe.cols + at.pos[i]] as f64).collect();
        let med = median(&scored);
        if step == 0 {
            step0 = med;
        }
        if kept.is_none() && step > 0 && med <= 0.05 * step0 {
            kept = Some((ckpts.len(), m.download_params()));
        }
        ckpts.push(TokenCheckpoint { step, epoch: step as f64 / steps_per_epoch as f64, median_loss: med });
        Ok(())
    })?;
    let medians: Vec<f64> = ckpts.iter().map(|c| c.median_loss).collect();
    let (pred, met) = prediction_checkpoint(&medians);
    let final_params = model.download_params();
    let pred_params = match kept {
        Some((i, p)) if i == pred => p,
        _ => final_params.clone(),
    };

    // Ground truth at the end of training.
    let truth = memorization(&mut model, &d.noisy, &d.clean_for_noisy, &window)?;
    // Early state: features, losses and how much is memorized already.
    model.upload_params(&pred_params);
    let early = memorization(&mut model, &d.noisy, &d.clean_for_noisy, &window)?;
    let NoisedScreen { rows, samples, psmi_errors, tested } = screen_noised(&mut model, &d, &ScreenWindow { prompt_len: o.prompt_len, k: o.k, clean_rows: o.clean_rows, slices: o.slices, seed: o.seed }, &truth.memorized_idx)?;
    let psmi_layers = rows.first().map_or(0, |r| r.psmi_window.len());
    let positive: Vec<bool> = rows.iter().map(|r| r.memorized).collect();
    let mut scores = Vec::new();
    for l in 0..psmi_layers {
        if psmi_errors.iter().all(|(e, _)| *e != l) {
            let w: Vec<f64> = rows.iter().map(|r| -r.psmi_window[l]).collect();
            scores.push(score_metrics("-psmi window", Some(l), &w, &positive)?);
            let z: Vec<f64> = rows.iter().map(|r| -nan_to(r.psmi_noised[l], 0.0)).collect();
            scores.push(score_metrics("-psmi noised", Some(l), &z, &positive)?);
        }
    }
    let lw: Vec<f64> = rows.iter().map(|r| r.loss_window).collect();
    scores.push(score_metrics("loss window", None, &lw, &positive)?);
    let ln: Vec<f64> = rows.iter().map(|r| nan_to(r.loss_noised, 0.0)).collect();
    scores.push(score_metrics("loss noised", None, &ln, &positive)?);
    // With several duplication classes, the number of copies is the obvious baseline.
    let dup: Vec<f64> = rows.iter().map(|r| r.copies as f64).collect();
    if dup.iter().any(|&c| c != dup[0]) {
        scores.push(score_metrics("copies", None, &dup, &positive)?);
    }

    Ok(TokenReport {
        options: o.clone(),
        train_rows: d.train.rows(),
        psmi_samples: samples,
        tested,
        memorized: truth.memorized,
        memorized_at_prediction: early.memorized,
        prediction_checkpoint: pred,
        prediction_epoch: ckpts[pred].epoch,
        prediction_rule_met: met,
        checkpoints: ckpts,
        psmi_errors,
        scores,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Which rows the token-level screen scores, and how.
pub struct ScreenWindow {
    pub prompt_len: usize,
    pub k: usize,
    /// Clean training rows scored beside the noised ones (they anchor the PSMI fit).
    pub clean_rows: usize,
    pub slices: usize,
    pub seed: u64,
}

/// The token-level screen of one model state.
pub struct NoisedScreen {
    /// One per tested noised row (its window differs from the clean row).
    pub rows: Vec<TokenRow>,
    /// Positions in the PSMI fit.
    pub samples: usize,
    /// Layers whose PSMI could not be computed, with the reason.
    pub psmi_errors: Vec<(usize, String)>,
    pub tested: usize,
}

/// Each noised row once, then the first `clean_rows` clean training rows.
pub fn probe_rows(d: &MathDataset, clean_rows: usize) -> Result<TokenMatrix> {
    let mut probe = d.noisy.clone();
    let clean = d.segment("clean").ok_or_else(|| Error::Input("the token-level screen needs a noise run (a clean segment)".into()))?.range();
    for r in clean.take(clean_rows) {
        probe.push_row(d.train.row(r));
    }
    Ok(probe)
}

/// PSMI (every hidden layer 0..=n_layer, labelled with the next token) and losses of the noised
/// rows' positions under `model` as it is now, aggregated per tested noised row over the
/// memorization window and over its noised tokens; `memorized` (indices into the noised rows)
/// labels the rows.
pub fn screen_noised<B: Backend>(model: &mut Model<B>, d: &MathDataset, w: &ScreenWindow, memorized: &[usize]) -> Result<NoisedScreen> {
    let probe = probe_rows(d, w.clean_rows)?;
    let lens = lengths(&probe);
    let at = sequence_positions(&probe, &lens)?;
    let losses = position_losses(model, &probe, 256)?;
    let layers: Vec<usize> = (0..=model.cfg.n_layer).collect();
    let h = hidden_states(model, &probe, &at, &layers, 256, &|_, _| {})?;
    let mut psmi_errors = Vec::new();
    let psmi: Vec<Vec<f64>> = h
        .iter()
        .enumerate()
        .map(|(l, x)| {
            psmi_mean(x, at.len(), model.cfg.n_embd, &at.labels, w.slices, w.seed).unwrap_or_else(|e| {
                psmi_errors.push((l, e));
                vec![f64::NAN; at.len()]
            })
        })
        .collect();

    // Sample index of (row, 0): positions are enumerated row by row.
    let mut first = vec![0usize; probe.rows() + 1];
    for r in 0..probe.rows() {
        first[r + 1] = first[r] + lens[r].saturating_sub(1);
    }
    let tested: Vec<usize> = (0..d.noisy.rows())
        .filter(|&i| crate::data::window_differs(d.noisy.row(i), d.clean_for_noisy.row(i), w.prompt_len, w.prompt_len + w.k))
        .collect();
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        if n == 0 { f64::NAN } else { s / n as f64 }
    };
    let mut rows = Vec::new();
    for &i in &tested {
        // Window positions p predict tokens p+1 in [prompt_len, prompt_len + k), within the row.
        let window: Vec<usize> = (w.prompt_len - 1..w.prompt_len + w.k - 1).filter(|&p| p + 1 < lens[i]).collect();
        let noised: Vec<usize> = window.iter().copied().filter(|&p| d.noisy.row(i)[p + 1] != d.clean_for_noisy.row(i)[p + 1]).collect();
        let loss_at = |ps: &[usize]| mean(&mut ps.iter().map(|&p| losses[i * probe.cols + p] as f64));
        rows.push(TokenRow {
            noisy_index: i,
            copies: 10usize.pow(d.dup_powers[d.dup_class[i]]),
            memorized: memorized.contains(&i),
            noised_tokens_in_window: noised.len(),
            psmi_window: psmi.iter().map(|p| mean(&mut window.iter().map(|&q| p[first[i] + q]))).collect(),
            psmi_noised: psmi.iter().map(|p| mean(&mut noised.iter().map(|&q| p[first[i] + q]))).collect(),
            loss_window: loss_at(&window),
            loss_noised: loss_at(&noised),
        });
    }
    Ok(NoisedScreen { rows, samples: at.len(), psmi_errors, tested: tested.len() })
}

fn nan_to(x: f64, v: f64) -> f64 {
    if x.is_nan() { v } else { x }
}


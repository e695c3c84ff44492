//! The predict-memorization experiment on the classification variant of TinyMem (smi.md §7–§9,
//! §14): train a target (split 0) and S shadows on seeded random halves of the pool; label the
//! target's training samples "memorized" from the LiRA score of their final logit gaps; and score
//! them at the prediction checkpoint of the target's training with −PSMI (per hidden-state
//! layer), the answer loss and −(logit gap). Reports AUC and FPR at TPR = 0.75 per score and the
//! default rule PSMI ≤ 0 at the last layer.

use super::{median, prediction_checkpoint, psmi_mean, run_schedule, score_metrics, split_members, Schedule, ScoreMetrics};
use crate::backend::{Backend, Device};
use crate::data::classify::{ClassifyConfig, ClassifyData, OPTIONS};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::{AdamW, Model};
use crate::smi::extract::{hidden_states, Positions};
use crate::smi::lira::{self, ShadowGaps};
use crate::smi::roc;
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize)]
pub struct PredictOptions {
    pub data: ClassifyConfig,
    /// Transformer blocks of every model.
    pub layers: usize,
    pub shadows: usize,
    pub epochs: usize,
    pub batch: usize,
    pub adam: AdamW,
    /// Checkpoints of the target per epoch (the paper: every 0.2 epoch).
    pub checkpoints_per_epoch: usize,
    /// PSMI slices K.
    pub slices: usize,
    /// Seeds the splits, model inits, shuffles and PSMI directions.
    pub seed: u64,
    /// "Memorized" ⇔ memo ≥ this (v3: 4).
    pub memo_threshold: f64,
    /// The v1 variant: the top fraction of memo scores.
    pub top_fraction: f64,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            data: ClassifyConfig { pool: 1000, ..ClassifyConfig::default() },
            layers: 2,
            shadows: 16,
            epochs: 20,
            batch: 32,
            adam: AdamW { lr: 3e-3, ..AdamW::default() },
            checkpoints_per_epoch: 5,
            slices: 2000,
            seed: 0,
            memo_threshold: 4.0,
            top_fraction: 0.1,
        }
    }
}

impl PredictOptions {
    pub fn validate(&self) -> Result<()> {
        if self.shadows < 2 || self.epochs == 0 || self.batch == 0 || self.checkpoints_per_epoch == 0 || self.slices == 0 || self.layers == 0 {
            return Err(Error::Input("predict-memorization needs ≥ 2 shadows and positive epochs, batch, checkpoints per epoch, slices and layers".into()));
        }
        if !(0.0..1.0).contains(&self.top_fraction) || self.top_fraction == 0.0 {
            return Err(Error::Input(format!("top fraction {} is not in (0, 1)", self.top_fraction)));
        }
        Ok(())
    }
}

/// Answer loss and logit gap of each row, from one forward pass per batch.
pub struct AnswerEval {
    pub loss: Vec<f64>,
    pub gap: Vec<f64>,
}

pub fn answer_eval<B: Backend>(model: &mut Model<B>, data: &ClassifyData, rows: &[usize], batch: usize) -> Result<AnswerEval> {
    let (t, v) = (data.tokens.cols, model.cfg.vocab_size);
    let mut out = AnswerEval { loss: Vec::with_capacity(rows.len()), gap: Vec::with_capacity(rows.len()) };
    for chunk in rows.chunks(batch.max(1)) {
        let tokens = data.tokens.select(chunk).data;
        let targets = data.targets(chunk);
        let r = model.evaluate(&tokens, &targets, chunk.len(), t)?;
        let logits = model.download_logits();
        for (b, &row) in chunk.iter().enumerate() {
            let p = b * t + data.query_pos(row);
            out.loss.push(r.losses[p] as f64);
            let opts: Vec<f32> = OPTIONS.iter().map(|&o| logits[p * v + o as usize]).collect();
            let label = OPTIONS.iter().position(|&o| o == data.labels[row]).expect("labels are options");
            out.gap.push(lira::logit_gap(&opts, label)?);
        }
    }
    Ok(out)
}

/// Mean PSMI per sample, or why it could not be computed.
type PsmiOrWhy = std::result::Result<Vec<f64>, String>;

/// One recorded checkpoint of the target.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointInfo {
    pub step: usize,
    pub epoch: f64,
    /// Median answer loss over the target's training samples.
    pub median_loss: f64,
    /// AUC (memo ≥ threshold) of −PSMI at the last layer, the loss and −gap at this checkpoint
    /// (only for the checkpoints whose parameters were kept).
    pub auc_psmi_last: Option<f64>,
    pub auc_loss: Option<f64>,
    pub auc_gap: Option<f64>,
    #[serde(skip)]
    params: Option<Vec<f32>>,
}

/// Results against one ground truth.
#[derive(Clone, Debug, Serialize)]
pub struct GroundTruthResult {
    pub name: String,
    pub positives: usize,
    pub negatives: usize,
    pub scores: Vec<ScoreMetrics>,
    /// Default detector PSMI ≤ 0 at the last layer.
    pub rule_tpr: f64,
    pub rule_fpr: f64,
}

/// Per-sample values (target's training samples).
#[derive(Clone, Debug, Serialize)]
pub struct SampleRow {
    pub index: usize,
    pub label: u32,
    pub true_label: u32,
    pub memo: f64,
    pub memo_fixed_variance: f64,
    pub final_gap: f64,
    pub loss: f64,
    pub gap: f64,
    /// Mean PSMI per layer (NaN where it could not be computed).
    pub psmi: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictReport {
    pub options: PredictOptions,
    pub pool: usize,
    pub scored_samples: usize,
    pub mislabelled: usize,
    /// The final target's answer accuracy on its training samples (trained labels, noise included).
    pub train_accuracy: f64,
    /// …and on the correctly labelled samples it did not train on.
    pub heldout_accuracy: f64,
    pub prediction_checkpoint: usize,
    pub prediction_epoch: f64,
    pub prediction_rule_met: bool,
    pub checkpoints: Vec<CheckpointInfo>,
    /// Why PSMI failed on a layer, if it did.
    pub psmi_errors: Vec<(usize, String)>,
    pub results: Vec<GroundTruthResult>,
    #[serde(skip)]
    pub samples: Vec<SampleRow>,
    /// The target's configuration and parameters at the prediction checkpoint.
    pub model_config: ModelConfig,
    #[serde(skip)]
    pub prediction_params: Vec<f32>,
    pub seconds: f64,
}

fn model_cfg(o: &PredictOptions, width: usize) -> ModelConfig {
    let mut cfg = ModelConfig::tinymem_math(o.layers);
    cfg.n_positions = width.max(2);
    cfg
}

/// Run the experiment; `pb` counts training steps of all models.
pub fn run<B: Backend>(dev: &Arc<Device<B>>, o: &PredictOptions, pb: &indicatif::ProgressBar) -> Result<PredictReport> {
    o.validate()?;
    let started = std::time::Instant::now();
    let data = ClassifyData::generate(&o.data)?;
    let n = data.len();
    let cfg = model_cfg(o, data.tokens.cols);
    let all: Vec<usize> = (0..n).collect();
    let splits: Vec<Vec<usize>> = (0..=o.shadows).map(|s| split_members(n, o.seed, s)).collect();
    let target_rows = &splits[0];
    let steps_per_epoch = target_rows.len().div_ceil(o.batch);
    pb.set_length(((o.shadows + 1) * o.epochs * steps_per_epoch) as u64);
    let every = (steps_per_epoch / o.checkpoints_per_epoch).max(1);
    let targets = |rows: &[usize], _: &[u32]| data.targets(rows);
    let eval_batch = 256;

    // Target: keep every checkpoint's parameters until the prediction rule is met, then one per epoch.
    let mut ckpts: Vec<CheckpointInfo> = Vec::new();
    let mut step0 = f64::NAN;
    let mut found = false;
    let mut target = Model::new(dev.clone(), cfg.clone(), o.seed.wrapping_mul(1000))?;
    pb.set_prefix("target");
    let sched = Schedule { rows: &data.tokens, members: target_rows, epochs: o.epochs, batch: o.batch, adam: o.adam, seed: o.seed.wrapping_mul(1000), every };
    run_schedule(&mut target, &sched, &targets, pb, &mut |step, m| {
        let ev = answer_eval(m, &data, target_rows, eval_batch)?;
        let med = median(&ev.loss);
        if step == 0 {
            step0 = med;
        }
        let meets = step > 0 && med <= 0.05 * step0;
        let keep = !found || step % steps_per_epoch == 0 || step == o.epochs * steps_per_epoch;
        found |= meets;
        ckpts.push(CheckpointInfo {
            step,
            epoch: step as f64 / steps_per_epoch as f64,
            median_loss: med,
            auc_psmi_last: None,
            auc_loss: None,
            auc_gap: None,
            params: keep.then(|| m.download_params()),
        });
        Ok(())
    })?;
    let target_final = answer_eval(&mut target, &data, &all, eval_batch)?;

    // Shadows: final gaps on the whole pool.
    let mut shadow_gaps: Vec<ShadowGaps> = vec![ShadowGaps::default(); n];
    for (s, members) in splits.iter().enumerate().skip(1) {
        pb.set_prefix(format!("shadow {s}/{}", o.shadows));
        let seed = o.seed.wrapping_mul(1000) + s as u64;
        let mut m = Model::new(dev.clone(), cfg.clone(), seed)?;
        let sched = Schedule { rows: &data.tokens, members, epochs: o.epochs, batch: o.batch, adam: o.adam, seed, every: usize::MAX };
        run_schedule(&mut m, &sched, &targets, pb, &mut |_, _| Ok(()))?;
        let ev = answer_eval(&mut m, &data, &all, eval_batch)?;
        let mut is_in = vec![false; n];
        for &r in members {
            is_in[r] = true;
        }
        for i in 0..n {
            let side = if is_in[i] { &mut shadow_gaps[i].in_gaps } else { &mut shadow_gaps[i].out_gaps };
            side.push(ev.gap[i]);
        }
    }
    pb.set_prefix("scoring");

    // Ground truth on the target's training samples.
    let tgt_gap: Vec<f64> = target_rows.iter().map(|&i| target_final.gap[i]).collect();
    let tgt_shadows: Vec<ShadowGaps> = target_rows.iter().map(|&i| shadow_gaps[i].clone()).collect();
    let memo = lira::memo_online(&tgt_gap, &tgt_shadows);
    let memo_fixed = lira::memo_fixed_variance(&tgt_gap, &tgt_shadows);
    let q_top = {
        let mut m = memo.clone();
        crate::smi::quantile_linear(&mut m, 1.0 - o.top_fraction)
    };
    let mislabelled = data.mislabelled();
    let truths: Vec<(String, Vec<bool>)> = vec![
        (format!("memo >= {}", o.memo_threshold), memo.iter().map(|&m| m >= o.memo_threshold).collect()),
        (format!("top {:.0}% memo", 100.0 * o.top_fraction), memo.iter().map(|&m| m >= q_top).collect()),
        (format!("memo >= {} (fixed variance)", o.memo_threshold), memo_fixed.iter().map(|&m| m >= o.memo_threshold).collect()),
        ("mislabelled".into(), target_rows.iter().map(|&i| mislabelled[i]).collect()),
    ];

    // Features at the target's training samples, for a checkpoint's parameters.
    let at = Positions {
        rows: target_rows.clone(),
        pos: target_rows.iter().map(|&i| data.query_pos(i)).collect(),
        labels: target_rows.iter().map(|&i| data.labels[i] as i64).collect(),
    };
    let layers: Vec<usize> = (0..=o.layers).collect();
    let mut probe = Model::new(dev.clone(), cfg.clone(), 0)?;
    let mut features = |params: &[f32], layers: &[usize]| -> Result<(AnswerEval, Vec<PsmiOrWhy>)> {
        probe.upload_params(params);
        let ev = answer_eval(&mut probe, &data, target_rows, eval_batch)?;
        let h = hidden_states(&mut probe, &data.tokens, &at, layers, eval_batch, &|_, _| {})?;
        let psmi = h.iter().map(|x| psmi_mean(x, at.len(), cfg.n_embd, &at.labels, o.slices, o.seed)).collect();
        Ok((ev, psmi))
    };

    let medians: Vec<f64> = ckpts.iter().map(|c| c.median_loss).collect();
    let (pred, met) = prediction_checkpoint(&medians);
    let params = ckpts[pred].params.clone().expect("the prediction checkpoint's parameters are kept");
    let (ev, psmi) = features(&params, &layers)?;
    let mut psmi_errors = Vec::new();
    let psmi: Vec<Vec<f64>> = psmi
        .into_iter()
        .enumerate()
        .map(|(l, r)| {
            r.unwrap_or_else(|e| {
                psmi_errors.push((l, e));
                vec![f64::NAN; at.len()]
            })
        })
        .collect();
    let neg = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| -x).collect() };
    let mut results = Vec::new();
    for (name, pos) in &truths {
        let mut scores = Vec::new();
        for (l, p) in psmi.iter().enumerate() {
            if p[0].is_finite() {
                scores.push(score_metrics("-psmi", Some(l), &neg(p), pos)?);
            }
        }
        scores.push(score_metrics("loss", None, &ev.loss, pos)?);
        scores.push(score_metrics("-gap", None, &neg(&ev.gap), pos)?);
        let last = &psmi[o.layers];
        let flags: Vec<bool> = last.iter().map(|&p| p <= 0.0).collect();
        let (rule_tpr, rule_fpr) = roc::rule_rates(&flags, pos)?;
        let positives = pos.iter().filter(|&&p| p).count();
        results.push(GroundTruthResult { name: name.clone(), positives, negatives: pos.len() - positives, scores, rule_tpr, rule_fpr });
    }

    // The same scores over training time (last layer only), against the first ground truth.
    let gt = &truths[0].1;
    for c in ckpts.iter_mut() {
        if let Some(p) = c.params.take() {
            let (ev, ps) = features(&p, &[o.layers])?;
            c.auc_loss = roc::auc(&ev.loss, gt)?;
            c.auc_gap = roc::auc(&neg(&ev.gap), gt)?;
            c.auc_psmi_last = match &ps[0] {
                Ok(v) => roc::auc(&neg(v), gt)?,
                Err(_) => None,
            };
        }
    }

    let samples = target_rows
        .iter()
        .enumerate()
        .map(|(k, &i)| SampleRow {
            index: i,
            label: data.labels[i],
            true_label: data.true_labels[i],
            memo: memo[k],
            memo_fixed_variance: memo_fixed[k],
            final_gap: target_final.gap[i],
            loss: ev.loss[k],
            gap: ev.gap[k],
            psmi: psmi.iter().map(|p| p[k]).collect(),
        })
        .collect();
    let mut is_target = vec![false; n];
    for &i in target_rows {
        is_target[i] = true;
    }
    let rate = |keep: &dyn Fn(usize) -> bool| {
        let rows: Vec<usize> = (0..n).filter(|&i| keep(i)).collect();
        rows.iter().filter(|&&i| target_final.gap[i] > 0.0).count() as f64 / rows.len().max(1) as f64
    };
    let train_accuracy = rate(&|i| is_target[i]);
    let heldout_accuracy = rate(&|i| !is_target[i] && !mislabelled[i]);
    Ok(PredictReport {
        options: o.clone(),
        pool: n,
        scored_samples: target_rows.len(),
        mislabelled: mislabelled.iter().filter(|&&m| m).count(),
        train_accuracy,
        heldout_accuracy,
        prediction_checkpoint: pred,
        prediction_epoch: ckpts[pred].epoch,
        prediction_rule_met: met,
        checkpoints: ckpts,
        psmi_errors,
        results,
        samples,
        model_config: cfg,
        prediction_params: params,
        seconds: started.elapsed().as_secs_f64(),
    })
}

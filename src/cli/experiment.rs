//! `memsieve experiment predict-memorization`: does PSMI early in training predict which samples a
//! model memorizes? (smi.md §14; the experiment itself is `crate::experiment`.) Prints tables and
//! writes report.json, metrics.csv, samples.csv, checkpoints.csv and token_rows.csv into --out.

use super::Context;
use crate::backend::{Backend, Device};
use crate::data::classify::ClassifyConfig;
use crate::error::{write_atomic, Result};
use crate::experiment::predict::{self, PredictOptions, PredictReport};
use crate::experiment::secrets::{self, SecretsOptions};
use crate::experiment::token_level::{self, TokenOptions, TokenReport};
use crate::experiment::ScoreMetrics;
use crate::model::AdamW;
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub command: ExperimentCommand,
}

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Target + shadows on a TinyMem classification pool: LiRA ground truth, PSMI at the prediction
    /// checkpoint against loss and logit gap; then the token-level variant on noised LM sequences.
    PredictMemorization(PredictArgs),
    /// DEPN on TinyMem: planted 10-digit secrets, exposure before and after zeroing the privacy
    /// neurons DEPN finds (and as many random neurons), with clean accuracy and perplexity.
    Secrets(SecretsArgs),
}

#[derive(Args)]
pub struct SecretsArgs {
    #[arg(long, default_value = "runs/secrets")]
    pub out: PathBuf,
    #[arg(long, default_value_t = SecretsOptions::default().secrets)]
    pub secrets: usize,
    /// Copies per secret, cycled over the secrets.
    #[arg(long, value_delimiter = ',', default_values_t = SecretsOptions::default().copies)]
    pub copies: Vec<usize>,
    #[arg(long, default_value_t = SecretsOptions::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = SecretsOptions::default().layers)]
    pub layers: usize,
    /// Privacy-neuron counts to edit, one row each.
    #[arg(long, value_delimiter = ',', default_values_t = SecretsOptions::default().neurons)]
    pub neurons: Vec<usize>,
    #[arg(long, value_enum, default_value_t = SecretsOptions::default().edit)]
    pub edit: crate::attribution::edit::EditMode,
    #[arg(long, default_value_t = SecretsOptions::default().memorized_exposure)]
    pub memorized_exposure: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long, default_value = "runs/predict-memorization")]
    pub out: PathBuf,
    /// Classification rows (starts 0..pool); each model trains on a random half.
    #[arg(long, default_value_t = PredictOptions::default().data.pool)]
    pub pool: usize,
    #[arg(long, default_value_t = PredictOptions::default().data.prompt_numbers)]
    pub prompt_numbers: usize,
    #[arg(long, default_value_t = PredictOptions::default().data.label_noise)]
    pub label_noise: f64,
    #[arg(long, default_value_t = PredictOptions::default().layers)]
    pub layers: usize,
    #[arg(long, default_value_t = PredictOptions::default().shadows)]
    pub shadows: usize,
    #[arg(long, default_value_t = PredictOptions::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = PredictOptions::default().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = PredictOptions::default().adam.lr)]
    pub lr: f32,
    /// AdamW weight decay of the classification models (TinyMem's 0.1 by default).
    #[arg(long, default_value_t = PredictOptions::default().adam.weight_decay)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = PredictOptions::default().checkpoints_per_epoch)]
    pub checkpoints_per_epoch: usize,
    /// PSMI slices K.
    #[arg(long, default_value_t = PredictOptions::default().slices)]
    pub slices: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = PredictOptions::default().memo_threshold)]
    pub memo_threshold: f64,
    #[arg(long, default_value_t = PredictOptions::default().top_fraction)]
    pub top_fraction: f64,
    /// Skip the token-level variant.
    #[arg(long)]
    pub no_token_level: bool,
    #[arg(long, default_value_t = TokenOptions::default().epochs)]
    pub token_epochs: usize,
    /// Start values of the LM data's main distribution.
    #[arg(long, default_value_t = TokenOptions::default().data.num_7)]
    pub token_num7: usize,
    /// Noised LM sequences (each ×10).
    #[arg(long, default_value_t = TokenOptions::default().data.num_noise)]
    pub token_noise: usize,
    /// Clean rows beside the noised ones in the token-level PSMI fit.
    #[arg(long, default_value_t = TokenOptions::default().clean_rows)]
    pub token_clean_rows: usize,
}

impl PredictArgs {
    fn options(&self) -> (PredictOptions, Option<TokenOptions>) {
        let p = PredictOptions {
            data: ClassifyConfig { pool: self.pool, prompt_numbers: self.prompt_numbers, label_noise: self.label_noise, seed: self.seed, ..ClassifyConfig::default() },
            layers: self.layers,
            shadows: self.shadows,
            epochs: self.epochs,
            batch: self.batch,
            adam: AdamW { lr: self.lr, weight_decay: self.weight_decay, ..AdamW::default() },
            checkpoints_per_epoch: self.checkpoints_per_epoch,
            slices: self.slices,
            seed: self.seed,
            memo_threshold: self.memo_threshold,
            top_fraction: self.top_fraction,
        };
        let d = TokenOptions::default();
        let t = TokenOptions {
            data: crate::data::MathDataConfig {
                num_7: self.token_num7,
                num_test: d.data.num_test.min(self.token_num7 / 10).max(1),
                num_noise: self.token_noise,
                seed: self.seed,
                ..d.data.clone()
            },
            layers: self.layers,
            epochs: self.token_epochs,
            clean_rows: self.token_clean_rows,
            slices: self.slices,
            seed: self.seed,
            ..d
        };
        (p, (!self.no_token_level).then_some(t))
    }
}

pub fn run(ctx: &Context, a: ExperimentArgs) -> Result<()> {
    match a.command {
        ExperimentCommand::PredictMemorization(p) => super::on_device!(ctx, |dev| predict_memorization(dev, &p)),
        ExperimentCommand::Secrets(s) => super::on_device!(ctx, |dev| secrets_experiment(dev, &s)),
    }
}

fn secrets_experiment<B: Backend>(dev: &Arc<Device<B>>, a: &SecretsArgs) -> Result<()> {
    let o = SecretsOptions { secrets: a.secrets, copies: a.copies.clone(), epochs: a.epochs, layers: a.layers, neurons: a.neurons.clone(), edit: a.edit, memorized_exposure: a.memorized_exposure, seed: a.seed, ..SecretsOptions::default() };
    let pb = crate::train::progress_bar(0, "train");
    let r = secrets::run(dev, &o, Some(&a.out.join("model")), &pb)?;
    pb.finish_and_clear();
    let memorized = r.memorized.iter().filter(|&&m| m).count();
    println!("{} secrets planted ({:?} copies), {memorized} memorized (per-digit exposure > {}); trained in {:.0} s, DEPN in {:.1} s", r.secrets.len(), o.copies, o.memorized_exposure, r.train_seconds, r.depn_seconds);
    println!("mean exposure over the memorized secrets (max {:.2}); per-digit = DEPN's formula, sharer = secret-sharer rank", crate::attribution::exposure::log2_space(10, o.secret_len));
    let mut header = format!("{:<8} {:>7} {:>10} {:>10} {:>8} {:>8}", "edit", "neurons", "per-digit", "sharer", "acc %", "ppl");
    for c in &o.copies {
        let _ = write!(header, " {:>12}", format!("×{c} per-digit"));
    }
    println!("{header}");
    let mut csv = String::from("method,neurons,copies,secrets,per_digit_exposure,secret_sharer_exposure,accuracy,perplexity\n");
    for row in std::iter::once(&r.before).chain(&r.edits) {
        let (pd, ss, _) = secrets::mean_exposure(&r, row, None);
        let mut line = format!("{:<8} {:>7} {:>10.2} {:>10.2} {:>8.2} {:>8.3}", row.method, row.neurons, pd, ss, 100.0 * row.quality.accuracy, row.quality.perplexity);
        let _ = writeln!(csv, "{},{},all,{memorized},{pd},{ss},{},{}", row.method, row.neurons, row.quality.accuracy, row.quality.perplexity);
        for &c in &o.copies {
            let (pd, ss, n) = secrets::mean_exposure(&r, row, Some(c));
            let _ = write!(line, " {:>12}", if n > 0 { format!("{pd:.2}") } else { "–".into() });
            let _ = writeln!(csv, "{},{},{c},{n},{pd},{ss},{},{}", row.method, row.neurons, row.quality.accuracy, row.quality.perplexity);
        }
        println!("{line}");
    }
    println!("DEPN (BERT-base, 20 phone numbers, 200 of 36864 neurons): exposure 15.74 → 9.78 (−38%), Valid-PPL 3.07 → 3.11; random neurons: → 12.48");
    std::fs::create_dir_all(&a.out).map_err(|e| crate::error::Error::io(&a.out, e))?;
    super::write_json(&a.out.join("report.json"), &r)?;
    write_atomic(a.out.join("exposure.csv"), csv.as_bytes())?;
    println!("wrote {} (the trained model in model/: `memsieve localize --model {0}/model --method depn …`, `memsieve edit … --secrets {0}/report.json`)", a.out.display());
    Ok(())
}

fn predict_memorization<B: Backend>(dev: &Arc<Device<B>>, a: &PredictArgs) -> Result<()> {
    let (po, to) = a.options();
    let pb = crate::train::progress_bar(0, "models");
    let cls = predict::run(dev, &po, &pb)?;
    pb.finish_and_clear();
    print_classification(&cls);
    let tok = match &to {
        Some(o) => {
            let pb = crate::train::progress_bar(0, "token-level");
            let r = token_level::run(dev, o, &pb)?;
            pb.finish_and_clear();
            print_token_level(&r);
            Some(r)
        }
        None => None,
    };
    write_outputs(&a.out, &cls, tok.as_ref())?;
    println!("\nwrote {}", a.out.display());
    Ok(())
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.3}"))
}

fn score_name(s: &ScoreMetrics) -> String {
    match s.layer {
        Some(l) => format!("{} L{l}", s.score),
        None => s.score.clone(),
    }
}

fn print_classification(r: &PredictReport) {
    let c = &r.checkpoints[r.prediction_checkpoint];
    println!("== predict-memorization: TinyMem classification ({} models of {} layers, {} epochs) ==", r.options.shadows + 1, r.options.layers, r.options.epochs);
    println!(
        "pool {} ({} mislabelled), target trains on {}; final target accuracy: train {:.1}%, held-out {:.1}%",
        r.pool,
        r.mislabelled,
        r.scored_samples,
        100.0 * r.train_accuracy,
        100.0 * r.heldout_accuracy
    );
    println!(
        "prediction checkpoint: step {} (epoch {:.2}), median answer loss {:.4} vs {:.4} at step 0{}",
        c.step,
        c.epoch,
        c.median_loss,
        r.checkpoints[0].median_loss,
        if r.prediction_rule_met { "" } else { " — the 95% rule was never met; last checkpoint used" }
    );
    for (l, e) in &r.psmi_errors {
        println!("PSMI at layer {l} not computed: {e}");
    }
    let mut head = format!("{:<12}", "score");
    for g in &r.results {
        let _ = write!(head, " | {:^24}", format!("{} ({}/{})", g.name, g.positives, g.positives + g.negatives));
    }
    println!("{head}");
    let mut sub = format!("{:<12}", "");
    for _ in &r.results {
        let _ = write!(sub, " | {:>11} {:>12}", "AUC", "FPR@TPR.75");
    }
    println!("{sub}");
    for (k, s) in r.results[0].scores.iter().enumerate() {
        let mut line = format!("{:<12}", score_name(s));
        for g in &r.results {
            let m = &g.scores[k];
            let _ = write!(line, " | {:>11} {:>12}", fmt(m.auc), fmt(m.at_tpr_075.map(|p| p.fpr)));
        }
        println!("{line}");
    }
    let mut rule = format!("{:<12}", "PSMI≤0 last");
    for g in &r.results {
        let _ = write!(rule, " | {:>11} {:>12}", format!("TPR {:.3}", g.rule_tpr), format!("FPR {:.3}", g.rule_fpr));
    }
    println!("{rule}");
    println!("over training (AUC vs {}):", r.results[0].name);
    println!("{:>6} {:>7} {:>12} {:>10} {:>10} {:>10}", "step", "epoch", "median loss", "-psmi last", "loss", "-gap");
    for c in r.checkpoints.iter().filter(|c| c.auc_loss.is_some()) {
        println!("{:>6} {:>7.2} {:>12.4} {:>10} {:>10} {:>10}", c.step, c.epoch, c.median_loss, fmt(c.auc_psmi_last), fmt(c.auc_loss), fmt(c.auc_gap));
    }
    println!("{:.0} s", r.seconds);
}

fn print_token_level(r: &TokenReport) {
    let c = &r.checkpoints[r.prediction_checkpoint];
    println!("\n== predict-memorization: token level (noised LM sequences) ==");
    println!(
        "{} training rows; {} noised sequences tested, {} memorized at the end ({} already at the prediction checkpoint)",
        r.train_rows, r.tested, r.memorized, r.memorized_at_prediction
    );
    println!(
        "prediction checkpoint: step {} (epoch {:.2}), median token loss {:.4} vs {:.4} at step 0{}; PSMI over {} positions",
        c.step,
        c.epoch,
        c.median_loss,
        r.checkpoints[0].median_loss,
        if r.prediction_rule_met { "" } else { " — the 95% rule was never met; last checkpoint used" },
        r.psmi_samples
    );
    for (l, e) in &r.psmi_errors {
        println!("PSMI at layer {l} not computed: {e}");
    }
    println!("{:<20} {:>8} {:>12}", "score (per sequence)", "AUC", "FPR@TPR.75");
    for s in &r.scores {
        println!("{:<20} {:>8} {:>12}", score_name(s), fmt(s.auc), fmt(s.at_tpr_075.map(|p| p.fpr)));
    }
    println!("{:.0} s", r.seconds);
}

fn write_outputs(out: &std::path::Path, cls: &PredictReport, tok: Option<&TokenReport>) -> Result<()> {
    super::write_json(&out.join("report.json"), &serde_json::json!({ "classification": cls, "token_level": tok }))?;
    let mut m = String::from("variant,ground_truth,score,layer,auc,fpr_at_tpr_0.75,threshold\n");
    let mut row = |variant: &str, gt: &str, s: &ScoreMetrics| {
        let p = s.at_tpr_075;
        let o = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        let _ = writeln!(m, "{variant},{gt},{},{},{},{},{}", s.score, s.layer.map_or(String::new(), |l| l.to_string()), o(s.auc), o(p.map(|p| p.fpr)), o(p.map(|p| p.threshold)));
    };
    for g in &cls.results {
        for s in &g.scores {
            row("classification", &g.name, s);
        }
    }
    if let Some(t) = tok {
        for s in &t.scores {
            row("token_level", "memorized (exact match)", s);
        }
    }
    write_atomic(out.join("metrics.csv"), m.as_bytes())?;

    // The target at the prediction checkpoint and its training rows (line k = samples.csv row k), so
    // `memsieve screen --model DIR/prediction_model --data DIR/target_rows.jsonl --at answer` reproduces
    // the PSMI columns.
    crate::checkpoint::save_model(out.join("prediction_model"), &cls.model_config, &cls.prediction_params, &[])?;
    let data = crate::data::classify::ClassifyData::generate(&cls.options.data)?;
    let rows: Vec<usize> = cls.samples.iter().map(|r| r.index).collect();
    let lengths: Vec<usize> = rows.iter().map(|&i| data.lengths[i]).collect();
    crate::data::save_jsonl(out.join("target_rows.jsonl"), &data.tokens.select(&rows), Some(&lengths))?;

    let layers = cls.options.layers;
    let mut s = String::from("index,label,true_label,memo,memo_fixed_variance,final_gap,loss,gap");
    for l in 0..=layers {
        let _ = write!(s, ",psmi_l{l}");
    }
    s.push('\n');
    for r in &cls.samples {
        let _ = write!(s, "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6}", r.index, r.label, r.true_label, r.memo, r.memo_fixed_variance, r.final_gap, r.loss, r.gap);
        for p in &r.psmi {
            let _ = write!(s, ",{p:.6}");
        }
        s.push('\n');
    }
    write_atomic(out.join("samples.csv"), s.as_bytes())?;

    let mut c = String::from("variant,step,epoch,median_loss,auc_psmi_last,auc_loss,auc_gap\n");
    let o = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
    for k in &cls.checkpoints {
        let _ = writeln!(c, "classification,{},{:.4},{:.6},{},{},{}", k.step, k.epoch, k.median_loss, o(k.auc_psmi_last), o(k.auc_loss), o(k.auc_gap));
    }
    if let Some(t) = tok {
        for k in &t.checkpoints {
            let _ = writeln!(c, "token_level,{},{:.4},{:.6},,,", k.step, k.epoch, k.median_loss);
        }
        let mut s = String::from("noisy_index,copies,memorized,noised_tokens_in_window,loss_window,loss_noised");
        for l in 0..=layers {
            let _ = write!(s, ",psmi_window_l{l},psmi_noised_l{l}");
        }
        s.push('\n');
        for r in &t.rows {
            let _ = write!(s, "{},{},{},{},{:.6},{:.6}", r.noisy_index, r.copies, r.memorized as u8, r.noised_tokens_in_window, r.loss_window, r.loss_noised);
            for l in 0..=layers {
                let _ = write!(s, ",{:.6},{:.6}", r.psmi_window[l], r.psmi_noised[l]);
            }
            s.push('\n');
        }
        write_atomic(out.join("token_rows.csv"), s.as_bytes())?;
    }
    write_atomic(out.join("checkpoints.csv"), c.as_bytes())
}

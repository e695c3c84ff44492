//! `memsieve unlearn`: remove the memorized sequences of a TinyMem model with a weight-level method
//! (tinymem.md §5.3 protocol): measure, take M = the memorized set, build the retain set C, run the
//! method, measure again, save the edited model. `--sweep` runs the spec's grid and keeps the run
//! with the best selection score.

use super::report::{self, Report};
use super::Context;
use crate::backend::{Backend, Device};
use crate::checkpoint;
use crate::data::{MathDataset, TokenMatrix};
use crate::error::{Error, Result};
use crate::metrics::MemWindow;
use crate::model::config::ModelConfig;
use crate::model::Model;
use crate::unlearn::{self, Method, UnlearnOptions, UnlearnOutcome, UnlearnSets};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct UnlearnArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value_t = Method::BalancedSubnet)]
    pub method: Method,
    /// Fraction pruned (per MLP matrix for Subnet/BalancedSubnet; see `unlearn --help` per method).
    #[arg(long, default_value_t = UnlearnOptions::default().ratio)]
    pub ratio: f64,
    /// BalancedSubnet's α (`loss_weighting`).
    #[arg(long, default_value_t = UnlearnOptions::default().alpha)]
    pub alpha: f64,
    #[arg(long, default_value_t = UnlearnOptions::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = UnlearnOptions::default().lr)]
    pub lr: f32,
    /// Batch of the mask-training methods.
    #[arg(long, default_value_t = UnlearnOptions::default().batch)]
    pub batch: usize,
    /// Stop Greedy after this many iterations.
    #[arg(long)]
    pub max_iterations: Option<usize>,
    /// Durable-Aggregate selects over all parameters (the reference) instead of the MLP tensors.
    #[arg(long)]
    pub select_all_params: bool,
    /// The retain set also holds the noised sequences (the reference; C ⊇ M).
    #[arg(long)]
    pub retain_includes_noise: bool,
    /// Use at most this many retain rows (the first ones; default all).
    #[arg(long)]
    pub max_retain: Option<usize>,
    /// Exclude padding targets from the unlearning losses.
    #[arg(long)]
    pub loss_mask_pad: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// data.json of the model (default: the one beside it).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The unlearning set as a JSONL token file (rows padded to the data's context); default: the
    /// sequences the model memorized (exact-match test), or for a backdoor run the triggered ones.
    #[arg(long)]
    pub memorized: Option<PathBuf>,
    /// Where the edited model, unlearn.json (and with --sweep sweep.csv, sweep.svg) go.
    #[arg(long)]
    pub out: PathBuf,
    /// Run the spec's grid (ratios × epochs × α for the mask-training methods, ratios otherwise)
    /// and keep the best run by the spec's selection score.
    #[arg(long)]
    pub sweep: bool,
    /// Override the sweep's ratios.
    #[arg(long, value_delimiter = ',')]
    pub ratios: Option<Vec<f64>>,
    /// Override the sweep's epoch counts.
    #[arg(long, value_delimiter = ',')]
    pub epochs_grid: Option<Vec<usize>>,
    /// Override the sweep's α values.
    #[arg(long, value_delimiter = ',')]
    pub alphas: Option<Vec<f64>>,
    /// Batch of the evaluation passes.
    #[arg(long, default_value_t = 256)]
    pub eval_batch: usize,
}

/// One finished run: its settings, the outcome and the model measured afterwards.
#[derive(Clone, Debug, Serialize)]
pub struct UnlearnRun {
    pub method: Method,
    pub ratio: f64,
    pub epochs: usize,
    pub alpha: f64,
    pub outcome: UnlearnOutcome,
    pub after: Report,
    /// The spec's selection score (lower is better).
    pub score: f64,
}

/// The unlearning set of a TinyMem run: the memorized noised sequences, or for a backdoor run the
/// triggered poison-test sequences (tinymem.md §4).
pub fn memorized_rows(data: &MathDataset, base: &Report) -> TokenMatrix {
    match &data.backdoor {
        Some(bd) => bd.test_poisoned.select(&base.backdoor_idx),
        None => data.noisy.select(&base.memorized_idx),
    }
}

/// The retain set: the training rows that are not artifact copies (clean 7-rows and the extra
/// distributions), plus one copy of each artifact row with `includes_noise` (the reference).
pub fn retain_rows(data: &MathDataset, includes_noise: bool, max: Option<usize>) -> TokenMatrix {
    let rows: Vec<usize> = data.non_artifact_rows().take(max.unwrap_or(usize::MAX)).collect();
    let mut c = data.train.select(&rows);
    if includes_noise {
        c.extend(&data.noisy);
    }
    c
}

/// The measured memorization of a report: % memorized (noise runs) or the backdoor ASR.
pub fn memorization_of(r: &Report) -> f64 {
    r.backdoor_asr.or(r.memorized_percent).unwrap_or(0.0)
}

/// tinymem.md §4's math selection score: Δ%mem_rel − mean over the clean test sets of Δacc_rel.
pub fn selection_score(before: &Report, after: &Report) -> f64 {
    let rel = |b: f64, a: f64| if b == 0.0 { 0.0 } else { (a - b) / b };
    let mem = rel(memorization_of(before), memorization_of(after));
    let clean = |r: &Report| -> Vec<f64> { r.test_sets.iter().filter(|s| crate::data::dataset::CLEAN_TEST_NAMES.contains(&s.name.as_str())).map(|s| s.quality.accuracy).collect() };
    let (b, a) = (clean(before), clean(after));
    let acc = b.iter().zip(&a).map(|(&b, &a)| rel(b, a)).sum::<f64>() / b.len().max(1) as f64;
    mem - acc
}

/// Run one method on a fresh copy of `base_params` and measure the result.
#[allow(clippy::too_many_arguments)]
pub fn run_once<B: Backend>(dev: &Arc<Device<B>>, cfg: &ModelConfig, base_params: &[f32], data: &MathDataset, before: &Report, sets: &UnlearnSets<'_>, method: Method, o: &UnlearnOptions, eval_batch: usize) -> Result<(UnlearnRun, Vec<f32>)> {
    let mut model = Model::from_params(dev.clone(), cfg.clone(), base_params)?;
    let bar = crate::train::progress_bar(0, method.name());
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let outcome = unlearn::unlearn(&mut model, method, sets, o, &progress)?;
    bar.finish_and_clear();
    let window = MemWindow { batch: eval_batch, ..MemWindow::tinymem() };
    let after = report::evaluate(&mut model, data, &window, eval_batch)?;
    let score = selection_score(before, &after);
    let run = UnlearnRun { method, ratio: o.ratio, epochs: o.epochs, alpha: o.alpha, outcome, after, score };
    Ok((run, model.download_params()))
}

pub fn run(ctx: &Context, a: UnlearnArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, &a))
}

/// The spec's grid (tinymem.md §5.3) for `method`, or the overrides.
fn grid(a: &UnlearnArgs) -> Vec<(f64, usize, f64)> {
    let mask = matches!(a.method, Method::Subnet | Method::BalancedSubnet);
    let mut ratios = vec![1e-5, 1e-4, 1e-3, 0.01, 0.05];
    if mask {
        ratios.extend([0.1, 0.25, 0.3, 0.5, 0.75, 0.8, 0.9]);
    }
    let ratios = a.ratios.clone().unwrap_or(ratios);
    let epochs = if mask { a.epochs_grid.clone().unwrap_or(vec![1, 10, 20]) } else { vec![a.epochs] };
    let alphas = if a.method == Method::BalancedSubnet { a.alphas.clone().unwrap_or(vec![0.05, 0.5, 0.7, 0.9]) } else { vec![a.alpha] };
    let mut g = Vec::new();
    for &r in &ratios {
        for &e in &epochs {
            for &al in &alphas {
                g.push((r, e, al));
            }
        }
    }
    g
}

fn run_on<B: Backend>(dev: &Arc<Device<B>>, a: &UnlearnArgs) -> Result<()> {
    let (cfg, params) = checkpoint::load_model(&a.model)?;
    let data = match super::load_eval_data(&a.model, a.data.as_deref(), &cfg)? {
        super::EvalData::Math(d) => d,
        super::EvalData::Rows(_) => return Err(Error::Input("unlearn needs a TinyMem data description (data.json) to find the memorized set".into())),
    };
    let base = UnlearnOptions {
        ratio: a.ratio,
        epochs: a.epochs,
        alpha: a.alpha,
        lr: a.lr,
        batch: a.batch,
        max_iterations: a.max_iterations,
        select_all_params: a.select_all_params,
        mask_pad: a.loss_mask_pad,
        seed: a.seed,
        ..UnlearnOptions::default()
    };
    base.validate()?;
    let window = MemWindow { batch: a.eval_batch, ..MemWindow::tinymem() };
    let mut model = Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let before = report::evaluate(&mut model, &data, &window, a.eval_batch)?;
    drop(model);
    let memorized = match &a.memorized {
        Some(p) => crate::data::load_jsonl(p, cfg.vocab_size, data.config.max_ctx, crate::data::tokenizer::PAD)?.tokens,
        None => memorized_rows(&data, &before),
    };
    if memorized.rows() == 0 {
        return Err(Error::Input("the model has memorized none of the tested sequences: nothing to unlearn (or pass --memorized)".into()));
    }
    let retain = retain_rows(&data, a.retain_includes_noise, a.max_retain);
    let sets = UnlearnSets { memorized: &memorized, retain: &retain };
    println!("memorized set M: {} sequences; retain set C: {} sequences", memorized.rows(), retain.rows());
    let combos = if a.sweep { grid(a) } else { vec![(a.ratio, a.epochs, a.alpha)] };
    let mut runs: Vec<UnlearnRun> = Vec::new();
    let mut best: Option<(usize, Vec<f32>)> = None;
    for (i, &(ratio, epochs, alpha)) in combos.iter().enumerate() {
        let o = UnlearnOptions { ratio, epochs, alpha, ..base.clone() };
        let (r, p) = run_once(dev, &cfg, &params, &data, &before, &sets, a.method, &o, a.eval_batch)?;
        if a.sweep {
            eprintln!(
                "[{}/{}] ratio {ratio} epochs {epochs} alpha {alpha}: memorized {:.1}% accuracy {:.2}% score {:.4} ({:.1} s)",
                i + 1,
                combos.len(),
                memorization_of(&r.after),
                100.0 * r.after.accuracy,
                r.score,
                r.outcome.seconds
            );
        }
        if best.as_ref().is_none_or(|(b, _)| r.score < runs[*b].score) {
            best = Some((runs.len(), p));
        }
        runs.push(r);
    }
    let (bi, best_params) = best.expect("at least one run");
    let chosen = &runs[bi];
    print_comparison(&before, chosen);

    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let meta = serde_json::to_string(&serde_json::json!({ "method": a.method, "ratio": chosen.ratio, "epochs": chosen.epochs, "alpha": chosen.alpha })).unwrap();
    checkpoint::save_model(&a.out, &cfg, &best_params, &[("memsieve_unlearn", &meta)])?;
    super::write_json(&a.out.join("data.json"), &data.config)?;
    super::write_json(&a.out.join("unlearn.json"), &serde_json::json!({ "source": a.model, "method": a.method, "options": base, "before": before, "chosen": chosen, "runs": runs }))?;
    if a.sweep {
        let mut csv = String::from("method,ratio,epochs,alpha,memorized_percent,accuracy,perplexity,score,seconds\n");
        for r in &runs {
            csv += &format!("{},{},{},{},{},{},{},{},{}\n", r.method.name(), r.ratio, r.epochs, r.alpha, memorization_of(&r.after), r.after.accuracy, r.after.perplexity, r.score, r.outcome.seconds);
        }
        crate::error::write_atomic(a.out.join("sweep.csv"), csv.as_bytes())?;
        let points: Vec<(f64, f64, String)> = runs.iter().map(|r| (100.0 * r.after.accuracy, memorization_of(&r.after), format!("r{} e{} a{}", r.ratio, r.epochs, r.alpha))).collect();
        let svg = crate::plot::scatter(&format!("{} sweep: memorization vs accuracy", a.method.name()), "clean accuracy %", "memorized %", &points);
        crate::error::write_atomic(a.out.join("sweep.svg"), svg.as_bytes())?;
        println!("sweep of {} runs: best ratio {} epochs {} alpha {} (score {:.4}); sweep.csv, sweep.svg", runs.len(), chosen.ratio, chosen.epochs, chosen.alpha, chosen.score);
    }
    println!("wrote the edited model and unlearn.json to {}", a.out.display());
    Ok(())
}

/// Before/after table of one run.
pub fn print_comparison(before: &Report, r: &UnlearnRun) {
    println!("\n{} (ratio {}, epochs {}, alpha {}): {} weights zeroed of {}, {} steps, {:.1} s", r.method.name(), r.ratio, r.epochs, r.alpha, r.outcome.zeroed, r.outcome.domain, r.outcome.steps, r.outcome.seconds);
    if r.outcome.mask_changed > 0 {
        println!("the trained mask differs from its random start in {} of its {} zeroed entries", r.outcome.mask_changed, r.outcome.zeroed);
    }
    println!("{:<26} {:>10} {:>10}", "", "before", "after");
    if let (Some(b), Some(af)) = (before.memorized_percent, r.after.memorized_percent) {
        println!("{:<26} {:>10.1} {:>10.1}", "% memorized", b, af);
        for (cb, ca) in before.memorization.iter().zip(&r.after.memorization) {
            println!("{:<26} {:>10} {:>10}", format!("  ×{} copies ({} tested)", cb.copies, cb.tested), format!("{}/{}", cb.memorized, cb.tested), format!("{}/{}", ca.memorized, ca.tested));
        }
    }
    if let (Some(b), Some(af)) = (before.backdoor_asr, r.after.backdoor_asr) {
        println!("{:<26} {:>10.1} {:>10.1}", "backdoor ASR %", b, af);
    }
    println!("{:<26} {:>10.2} {:>10.2}", "clean accuracy %", 100.0 * before.accuracy, 100.0 * r.after.accuracy);
    println!("{:<26} {:>10.2} {:>10.2}", "main test accuracy %", 100.0 * before.main_accuracy, 100.0 * r.after.main_accuracy);
    println!("{:<26} {:>10.3} {:>10.3}", "perplexity", before.perplexity, r.after.perplexity);
}

//! `memsieve demo`: the main job on an embedded default, the whole loop — generate TinyMem data,
//! train, screen the data with PSMI at an early checkpoint, localize the memorized set with IG,
//! remove it with the weight-level unlearning methods, and verify; a table, report.json and SVG
//! plots. Nothing is downloaded.

use super::report;
use super::train::{train_run, MathDataArgs, TrainArgs};
use super::Context;
use crate::backend::Backend;
use crate::error::{Error, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Small enough for 2 CPU cores in under 5 minutes, tuned so the noise gets memorized.
    Small,
    /// The exact TinyMem configuration (increment, 4 layers, 3500 epochs: days on a CPU).
    Paper,
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Run directory (default: runs/demo, or runs/demo-2, -3, … when that one holds a run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the number of epochs of the preset.
    #[arg(long)]
    pub epochs: Option<usize>,
}

/// The training arguments of a preset.
pub fn preset_args(p: Preset, out: PathBuf) -> TrainArgs {
    let paper_data = MathDataArgs {
        task: "increment".into(),
        num_7: 20_000,
        num_extra: 3_000,
        num_test: 1_000,
        num_noise: 1_000,
        length: 20,
        max_ctx: 150,
        data_seed: 0,
        backdoor: false,
        duplicate: false,
        dup_powers: vec![0, 1, 2],
    };
    let paper = TrainArgs {
        out,
        data: paper_data.clone(),
        jsonl: None,
        vocab: None,
        layers: 4,
        epochs: 3500,
        batch: 128,
        lr: 1e-3,
        weight_decay: 0.1,
        seed: 0,
        loss_mask_pad: false,
        eval_every: 50,
        checkpoint_every: 50,
        resume: false,
        regularizer: None,
        spectral_lambda: 0.01,
        spectral_linear: false,
        dropc: 0.05,
        truncation_window: crate::regularize::truncation::WINDOW,
        etd_positions: false,
    };
    match p {
        Preset::Paper => paper,
        // Chosen by measurement (issue 2's note): the increment task with 2000 starts and 25 numbers
        // per sequence (so every window 50..100 lies before the EOS the memorization test
        // suppresses), 24 noised sequences duplicated ×100, no extra distributions, two layers and a
        // higher constant learning rate: ≈ 4 minutes on 2 cores.
        Preset::Small => TrainArgs {
            data: MathDataArgs {
                num_7: 2_000,
                num_extra: 0,
                num_test: 100,
                num_noise: 24,
                length: 25,
                max_ctx: 126,
                duplicate: true,
                dup_powers: vec![2],
                ..paper_data
            },
            layers: 2,
            epochs: 12,
            batch: 64,
            lr: 3e-3,
            eval_every: 3,
            // The epoch-3 snapshot is the early checkpoint the screen step reads.
            checkpoint_every: SCREEN_EPOCH,
            ..paper
        },
    }
}

/// The early checkpoint the demo screens with PSMI (a quarter of the small preset's training).
const SCREEN_EPOCH: usize = 3;

pub fn run(ctx: &Context, a: DemoArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, a))
}

fn run_on<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, a: DemoArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let holds_run = |d: &std::path::Path| d.join("trainer_state.json").exists();
    let out = match a.out {
        Some(d) if holds_run(&d) => {
            return Err(Error::Input(format!("{} already holds a run; pass another --out", d.display())))
        }
        Some(d) => d,
        None => (1..)
            .map(|i| if i == 1 { PathBuf::from("runs/demo") } else { PathBuf::from(format!("runs/demo-{i}")) })
            .find(|d| !holds_run(d))
            .unwrap(),
    };
    let mut args = preset_args(a.preset, out.clone());
    if let Some(e) = a.epochs {
        args.epochs = e;
    }
    eprintln!(
        "memsieve demo ({:?} preset): {} layers, {} epochs, batch {}, data {} × {} (noise duplicated {:?})",
        a.preset, args.layers, args.epochs, args.batch, args.data.task, args.data.num_7, args.data.dup_powers
    );
    let outcome = train_run(dev, &args)?;
    let last = outcome.reports.last().ok_or_else(|| Error::Input("the demo ran no evaluation".into()))?;
    println!("\n== memsieve demo: what the model memorized ==");
    report::print(last);
    println!("\n{:>6} {:>14} {:>12}", "epoch", "main acc %", "memorized %");
    for r in &outcome.reports {
        println!("{:>6} {:>14.2} {:>12.1}", r.epoch.unwrap_or(0), 100.0 * r.main_accuracy, r.memorized_percent.unwrap_or(0.0));
    }
    println!("trained and evaluated in {:.1} s", outcome.seconds);
    let data = crate::data::MathDataset::generate(&args.data.config()?)?;
    let screen = screen_early(dev, &data, &out, last)?;
    let localization = localize_and_edit(dev, &args, &out, last)?;
    let unlearning = unlearn_methods(dev, &data, &out, last, &localization)?;
    write_plots(&out, &outcome.reports, last, &localization, &unlearning)?;
    let summary = json!({
        "preset": format!("{:?}", a.preset).to_lowercase(),
        "seconds": outcome.seconds,
        "total_seconds": started.elapsed().as_secs_f64(),
        "final": last,
        "history": outcome.reports,
        "screen": screen,
        "localization": localization,
        "unlearning": unlearning,
    });
    super::write_json(&out.join("report.json"), &summary)?;
    println!("\ndemo finished in {:.0} s; report: {}, plots: {}", started.elapsed().as_secs_f64(), out.join("report.json").display(), out.join("plots").display());
    Ok(())
}

/// Screen the training data a priori: PSMI of the noised sequences' window tokens at the early
/// checkpoint (epoch SCREEN_EPOCH), and how well low PSMI predicts what the final model memorized.
fn screen_early<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, data: &crate::data::MathDataset, out: &std::path::Path, last: &report::Report) -> Result<serde_json::Value> {
    use crate::experiment::token_level::{screen_noised, ScreenWindow};
    let snap = out.join("checkpoints").join(format!("epoch-{SCREEN_EPOCH}"));
    if !snap.exists() || last.memorized_percent.is_none() {
        return Ok(serde_json::Value::Null);
    }
    let (cfg, params) = crate::checkpoint::load_model(&snap)?;
    let mut model = crate::model::Model::from_params(dev.clone(), cfg, &params)?;
    let t0 = std::time::Instant::now();
    let w = ScreenWindow { prompt_len: crate::data::dataset::MEM_PROMPT_LEN, k: crate::data::dataset::MEM_WINDOW, clean_rows: 200, slices: 1000, seed: 0 };
    let s = screen_noised(&mut model, data, &w, &last.memorized_idx)?;
    let seconds = t0.elapsed().as_secs_f64();
    let positive: Vec<bool> = s.rows.iter().map(|r| r.memorized).collect();
    println!("\n== screen (PSMI at epoch {SCREEN_EPOCH} of the noised sequences' window tokens, {} positions, {seconds:.1} s) ==", s.samples);
    println!("{} tested noised sequences, {} memorized at the end; AUC of each score for predicting them:", s.tested, positive.iter().filter(|&&p| p).count());
    let mut scores = Vec::new();
    if positive.iter().any(|&p| p) && positive.iter().any(|&p| !p) {
        let layers = s.rows.first().map_or(0, |r| r.psmi_window.len());
        for l in (0..layers).filter(|l| s.psmi_errors.iter().all(|(e, _)| e != l)) {
            let v: Vec<f64> = s.rows.iter().map(|r| -r.psmi_window[l]).collect();
            scores.push(crate::experiment::score_metrics("-psmi window", Some(l), &v, &positive)?);
        }
        let v: Vec<f64> = s.rows.iter().map(|r| r.loss_window).collect();
        scores.push(crate::experiment::score_metrics("loss window", None, &v, &positive)?);
        for m in &scores {
            println!("  {:<14} {:<8} AUC {}", m.score, m.layer.map_or("-".into(), |l| format!("layer {l}")), m.auc.map_or("-".into(), |a| format!("{a:.3}")));
        }
    } else {
        println!("  (all or none memorized: no AUC)");
    }
    let flagged: Vec<usize> = s.rows.iter().filter(|r| r.psmi_window.last().is_some_and(|&p| p <= 0.0)).map(|r| r.noisy_index).collect();
    println!("PSMI ≤ 0 at the last layer flags {} of {} sequences", flagged.len(), s.tested);
    Ok(json!({ "epoch": SCREEN_EPOCH, "seconds": seconds, "samples": s.samples, "tested": s.tested, "scores": scores, "flagged_psmi_le_0": flagged, "errors": s.psmi_errors }))
}

/// The weight-level methods on the demo model (Greedy is left out: ⌈ratio·#params⌉ full passes),
/// each from the trained weights, measured after; the best BalancedSubnet model is saved.
fn unlearn_methods<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, data: &crate::data::MathDataset, out: &std::path::Path, last: &report::Report, localization: &serde_json::Value) -> Result<Vec<super::unlearn::UnlearnRun>> {
    use crate::unlearn::{Method, UnlearnOptions, UnlearnSets};
    if last.memorized_idx.is_empty() {
        return Ok(Vec::new());
    }
    let (cfg, params) = crate::checkpoint::load_model(out)?;
    let memorized = super::unlearn::memorized_rows(data, last);
    let retain = super::unlearn::retain_rows(data, false, None);
    let sets = UnlearnSets { memorized: &memorized, retain: &retain };
    let plan = [
        (Method::BalancedSubnet, UnlearnOptions { ratio: DEMO_BALANCED.0, epochs: DEMO_BALANCED.1, alpha: DEMO_BALANCED.2, lr: DEMO_BALANCED.3, ..UnlearnOptions::default() }),
        (Method::Subnet, UnlearnOptions { ratio: 0.1, epochs: 10, ..UnlearnOptions::default() }),
        (Method::Durable, UnlearnOptions { ratio: 0.01, ..UnlearnOptions::default() }),
        (Method::DurableAggregate, UnlearnOptions { ratio: 0.01, ..UnlearnOptions::default() }),
        (Method::Sou, UnlearnOptions { ratio: 0.01, ..UnlearnOptions::default() }),
    ];
    println!("\n== unlearn (M = the {} memorized sequences, C = {} clean training sequences) ==", memorized.rows(), retain.rows());
    let mut runs = Vec::new();
    for (method, o) in plan {
        let (r, p) = super::unlearn::run_once(dev, &cfg, &params, data, last, &sets, method, &o, 256)?;
        if method == Method::BalancedSubnet {
            crate::checkpoint::save_model(out.join("unlearned"), &cfg, &p, &[("memsieve_unlearn", method.name())])?;
            super::write_json(&out.join("unlearned").join("data.json"), &data.config)?;
        }
        runs.push(r);
    }
    println!("{:<20} {:>8} {:>12} {:>11} {:>11} {:>9}", "method", "ratio", "memorized %", "accuracy %", "perplexity", "seconds");
    println!("{:<20} {:>8} {:>12.1} {:>11.2} {:>11.3} {:>9}", "trained model", "-", last.memorized_percent.unwrap_or(0.0), 100.0 * last.accuracy, last.perplexity, "-");
    if let Some(after) = localization.get("after") {
        let f = |k: &str| after[k].as_f64().unwrap_or(f64::NAN);
        println!("{:<20} {:>8} {:>12.1} {:>11.2} {:>11.3} {:>9.1}", "IG neuron edit", localization["ratio"].as_f64().unwrap_or(0.0), f("memorized_percent"), 100.0 * f("accuracy"), f("perplexity"), localization["seconds"].as_f64().unwrap_or(0.0));
    }
    for r in &runs {
        println!("{:<20} {:>8} {:>12.1} {:>11.2} {:>11.3} {:>9.1}", r.method.name(), r.ratio, super::unlearn::memorization_of(&r.after), 100.0 * r.after.accuracy, r.after.perplexity, r.outcome.seconds);
    }
    println!("the BalancedSubnet model: {}", out.join("unlearned").display());
    Ok(runs)
}

/// BalancedSubnet's demo setting (ratio, epochs, α, lr), chosen by measurement on the demo model
/// (`unlearn --sweep`, issue 7's note): the spec's lr 0.1 moves only ~10% of the random initial
/// mask in 10 epochs here (58.8 → 35.3% memorized at ratio 0.05, α 0.5). At lr 1, ratios up to
/// 0.25 leave one of the 17 sequences (5.9%) whatever α. Of the spec's larger ratios, ratio 0.5
/// with α 0.7 removed all of them at 96.10% accuracy (base 96.06%) and with α 0.5 at 95.34%; the
/// neighbouring settings (ratio 0.4 / 0.6, α 0.5–0.7) leave 1–2 of the 17.
const DEMO_BALANCED: (f64, usize, f64, f32) = (0.5, 10, 0.7, 1.0);

/// plots/memorization.svg (over training) and plots/methods.svg (before/after per method).
fn write_plots(out: &std::path::Path, history: &[report::Report], last: &report::Report, localization: &serde_json::Value, runs: &[super::unlearn::UnlearnRun]) -> Result<()> {
    use crate::plot;
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let epoch = |r: &report::Report| r.epoch.unwrap_or(0) as f64;
    let series = vec![
        ("memorized %".to_string(), history.iter().map(|r| (epoch(r), r.memorized_percent.unwrap_or(f64::NAN))).collect()),
        ("clean accuracy %".to_string(), history.iter().map(|r| (epoch(r), 100.0 * r.accuracy)).collect()),
    ];
    crate::error::write_atomic(dir.join("memorization.svg"), plot::lines("Memorization during training", "epoch", "%", &series).as_bytes())?;
    let mut groups = vec!["trained".to_string()];
    let mut mem = vec![last.memorized_percent.unwrap_or(f64::NAN)];
    let mut acc = vec![100.0 * last.accuracy];
    if let Some(after) = localization.get("after") {
        groups.push("IG edit".into());
        mem.push(after["memorized_percent"].as_f64().unwrap_or(f64::NAN));
        acc.push(100.0 * after["accuracy"].as_f64().unwrap_or(f64::NAN));
    }
    for r in runs {
        groups.push(r.method.name().to_string());
        mem.push(super::unlearn::memorization_of(&r.after));
        acc.push(100.0 * r.after.accuracy);
    }
    let svg = plot::grouped_bars("Before and after each method", "%", &groups, &[("memorized %".into(), mem), ("clean accuracy %".into(), acc)]);
    crate::error::write_atomic(dir.join("methods.svg"), svg.as_bytes())
}

/// Localize the memorized set with TinyMem's IG, zero the top 5% of each layer's neurons and
/// measure again (issue 6's loop on the demo model). Writes `localize/` beside the run.
fn localize_and_edit<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, args: &TrainArgs, out: &std::path::Path, last: &report::Report) -> Result<serde_json::Value> {
    use crate::attribution::{edit, ig::IgOptions, methods, per_layer_count};
    const RATIO: f64 = 0.05;
    if last.memorized_idx.is_empty() {
        println!("\nnothing memorized: no localization");
        return Ok(serde_json::Value::Null);
    }
    let (cfg, mut params) = crate::checkpoint::load_model(out)?;
    let data = crate::data::MathDataset::generate(&args.data.config()?)?;
    let rows = data.noisy.select(&last.memorized_idx);
    let mut model = crate::model::Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let t0 = std::time::Instant::now();
    let scores = methods::ig_scores(&mut model, &rows, crate::data::dataset::MEM_PROMPT_LEN, &IgOptions::default(), &|_, _| {})?;
    let ig_seconds = t0.elapsed().as_secs_f64();
    let neurons = scores.top_k_per_layer(per_layer_count(cfg.n_inner(), RATIO)?);
    edit::zero_neurons(&mut params, &cfg, &neurons, edit::EditMode::FcColumn)?;
    let mut edited = crate::model::Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let window = crate::metrics::MemWindow { batch: args.batch, ..crate::metrics::MemWindow::tinymem() };
    let after = report::evaluate(&mut edited, &data, &window, 256)?;
    let file = super::localize::ScoresFile {
        method: super::localize::Method::Ig,
        model: out.display().to_string(),
        sequences: rows.rows(),
        layers: scores.layers,
        width: scores.width,
        seconds: ig_seconds,
        settings: json!({ "steps": 20, "ig_grid": "left", "ig_target": "prob", "prompt_len": crate::data::dataset::MEM_PROMPT_LEN }),
        scores: scores.values.chunks(scores.width).map(|r| r.to_vec()).collect(),
        selected: Vec::new(),
    };
    super::localize::write_scores(&out.join("localize"), &file, &scores, &format!("IG scores, {} memorized sequences", rows.rows()))?;
    println!("\n== localize (integrated gradients over {} memorized sequences, {ig_seconds:.1} s) → zero the top {:.0}% neurons per layer ({} neurons) ==", rows.rows(), 100.0 * RATIO, neurons.len());
    println!("{:<14} {:>10} {:>10}", "", "before", "after");
    println!("{:<14} {:>10.1} {:>10.1}", "memorized %", last.memorized_percent.unwrap_or(0.0), after.memorized_percent.unwrap_or(0.0));
    println!("{:<14} {:>10.2} {:>10.2}", "accuracy %", 100.0 * last.accuracy, 100.0 * after.accuracy);
    println!("{:<14} {:>10.3} {:>10.3}", "perplexity", last.perplexity, after.perplexity);
    println!("heatmap: {}", out.join("localize/heatmap.svg").display());
    Ok(json!({ "method": "ig", "ratio": RATIO, "neurons": neurons, "seconds": ig_seconds, "after": after }))
}

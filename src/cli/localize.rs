//! `memsieve localize`: per-(layer, neuron) memorization scores of a model over its memorized set,
//! and `memsieve edit`: silence the top neurons and report the model before and after.

use super::report;
use super::{Context, EvalData};
use crate::attribution::depn::Grid;
use crate::attribution::edit::{zero_neurons, EditMode};
use crate::attribution::ig::{IgOptions, IgTarget};
use crate::attribution::masks::{learned_mask_scores, MaskMethod, MaskOptions};
use crate::attribution::methods::{self, PrivateText};
use crate::attribution::{per_layer_count, NeuronScores};
use crate::backend::{Backend, Device};
use crate::checkpoint;
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::experiment::secrets;
use crate::metrics::MemWindow;
use crate::model::Model;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// TinyMem's integrated gradients (every position from the prompt end, mean over positions and sequences).
    Ig,
    /// DEPN: IG of the private tokens per text, 0.1 × global-max candidates, votes, top z.
    Depn,
    /// |mean activation| · ‖c_proj row‖.
    Activations,
    /// Loss increase on the memorized set when the neuron is zeroed (n_layer × 4C passes).
    ZeroOut,
    /// A learned mask clip(c, 0, 1) with an L1 penalty; score clip(c, 0, 1).
    Slimming,
    /// A learned L0 Hard Concrete gate; score σ(s).
    HardConcrete,
}

#[derive(Args)]
pub struct LocalizeArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum)]
    pub method: Method,
    /// data.json (the memorized set is found with the exact-match test; DEPN's private tokens are
    /// the noised tokens of the memorization window) or a JSONL token file (every row is scored;
    /// DEPN's private tokens are the window positions). Default: the data.json beside the model.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// Score at most this many sequences of the memorized set (the first ones).
    #[arg(long)]
    pub max_sequences: Option<usize>,
    /// IG path points.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = Grid::Left)]
    pub ig_grid: Grid,
    #[arg(long, value_enum, default_value_t = IgTarget::Prob)]
    pub ig_target: IgTarget,
    /// DEPN's candidate threshold, as a fraction of the text's maximum attribution over all layers.
    #[arg(long, default_value_t = 0.1)]
    pub depn_ratio: f64,
    /// DEPN's aggregator: neurons kept (most votes).
    #[arg(long, default_value_t = 50)]
    pub top_z: usize,
    /// Zero-Out as the reference code does it: keep only neuron i (instead of zeroing only i).
    #[arg(long)]
    pub zero_out_keep_only: bool,
    /// Slimming / Hard Concrete: passes over the memorized set.
    #[arg(long, default_value_t = MaskOptions::default().epochs)]
    pub mask_epochs: usize,
    /// Slimming / Hard Concrete: λ of the sparsity term.
    #[arg(long, default_value_t = MaskOptions::default().lambda)]
    pub mask_lambda: f64,
    /// Slimming / Hard Concrete as the reference code: gradients accumulate over an epoch's batches.
    #[arg(long)]
    pub accumulate_epoch_grads: bool,
    #[arg(long, default_value_t = 50)]
    pub prompt_len: usize,
    /// Length of the memorization window after the prompt.
    #[arg(long, default_value_t = 50)]
    pub k: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

/// What `localize` writes to scores.json (and `edit` reads back).
#[derive(Serialize, Deserialize)]
pub struct ScoresFile {
    pub method: Method,
    pub model: String,
    pub sequences: usize,
    pub layers: usize,
    pub width: usize,
    pub seconds: f64,
    pub settings: serde_json::Value,
    /// [layer][neuron]
    pub scores: Vec<Vec<f64>>,
    /// DEPN's aggregated privacy neurons (layer, neuron, votes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected: Vec<(usize, usize, usize)>,
}

pub fn run(ctx: &Context, a: LocalizeArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, &a))
}

/// The memorized sequences and, per sequence, its private token positions.
fn memorized_set<B: Backend>(model: &mut Model<B>, data: EvalData, window: &MemWindow) -> Result<(TokenMatrix, Vec<Vec<usize>>)> {
    let end = window.prompt_len + window.k;
    match data {
        EvalData::Rows(rows) => {
            let positions = (window.prompt_len..end.min(rows.cols)).collect::<Vec<_>>();
            Ok((rows.clone(), vec![positions; rows.rows()]))
        }
        EvalData::Math(d) => {
            let m = crate::metrics::memorization(model, &d.noisy, &d.clean_for_noisy, window)?;
            eprintln!("memorized set: {} of {} tested noised sequences", m.memorized, m.tested);
            let rows = d.noisy.select(&m.memorized_idx);
            let private = m
                .memorized_idx
                .iter()
                .map(|&i| (window.prompt_len..end).filter(|&p| d.noisy.row(i)[p] != d.clean_for_noisy.row(i)[p]).collect())
                .collect();
            Ok((rows, private))
        }
    }
}

fn run_on<B: Backend>(dev: &Arc<Device<B>>, a: &LocalizeArgs) -> Result<()> {
    let (cfg, params) = checkpoint::load_model(&a.model)?;
    let mut model = Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let data = super::load_eval_data(&a.model, a.data.as_deref(), &cfg)?;
    let window = MemWindow { prompt_len: a.prompt_len, k: a.k, batch: a.batch };
    let (mut rows, mut private) = memorized_set(&mut model, data, &window)?;
    if let Some(max) = a.max_sequences {
        let keep: Vec<usize> = (0..rows.rows().min(max)).collect();
        rows = rows.select(&keep);
        private.truncate(max);
    }
    if rows.rows() == 0 {
        return Err(Error::Input("the model has memorized none of the sequences: nothing to localize".into()));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let ig = IgOptions { steps: a.steps, grid: a.ig_grid, target: a.ig_target, ..IgOptions::default() };
    let bar = crate::train::progress_bar(0, &format!("{:?}", a.method).to_lowercase());
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let t0 = std::time::Instant::now();
    let mut selected = Vec::new();
    let localizing = dev.profile.phase("localize");
    let scores = match a.method {
        Method::Ig => methods::ig_scores(&mut model, &rows, a.prompt_len, &ig, &progress)?,
        Method::Depn => {
            let texts: Vec<PrivateText> = rows
                .iter_rows()
                .zip(&private)
                .filter(|(_, p)| !p.is_empty())
                .map(|(r, p)| PrivateText { tokens: r.to_vec(), positions: p.clone() })
                .collect();
            let r = methods::depn(&mut model, &texts, &ig, a.depn_ratio, a.top_z, &progress)?;
            selected = r.selected;
            r.scores
        }
        Method::Activations => methods::activation_scores(&mut model, &rows, a.prompt_len, a.batch)?,
        Method::ZeroOut => methods::zero_out_scores(&mut model, &rows, a.batch, a.zero_out_keep_only, &progress)?,
        Method::Slimming | Method::HardConcrete => {
            let method = if a.method == Method::Slimming { MaskMethod::Slimming } else { MaskMethod::HardConcrete };
            let o = MaskOptions { epochs: a.mask_epochs, lambda: a.mask_lambda, accumulate_epoch_grads: a.accumulate_epoch_grads, ..MaskOptions::default() };
            let (scores, trace) = learned_mask_scores(&mut model, &rows, method, &o, &progress)?;
            eprintln!("mask trained for {} epochs: memorized loss {:.4}, sparsity term {:.4}", trace.epochs, trace.loss, trace.sparsity);
            scores
        }
    };
    drop(localizing);
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();

    let (nl, w) = (scores.layers, scores.width);
    println!("{} scores over {} sequences in {seconds:.1} s", format!("{:?}", a.method).to_lowercase(), rows.rows());
    println!("{:<6} {:>12} {:>12}  top neurons (score)", "layer", "max", "mean");
    for l in 0..nl {
        let row = &scores.values[l * w..(l + 1) * w];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = row.iter().sum::<f64>() / w as f64;
        let top: Vec<String> = scores.top_k_per_layer(5).into_iter().filter(|&(ll, _)| ll == l).map(|(_, k)| format!("{k} ({:.2e})", scores.get(l, k))).collect();
        println!("{l:<6} {max:>12.4e} {mean:>12.4e}  {}", top.join(", "));
    }
    if !selected.is_empty() {
        let shown: Vec<String> = selected.iter().take(10).map(|(l, k, v)| format!("{l}:{k} ({v})")).collect();
        println!("DEPN privacy neurons (layer:neuron (votes)), {} kept: {}", selected.len(), shown.join(", "));
    }
    let file = ScoresFile {
        method: a.method,
        model: a.model.display().to_string(),
        sequences: rows.rows(),
        layers: nl,
        width: w,
        seconds,
        settings: serde_json::json!({
            "steps": a.steps, "ig_grid": a.ig_grid, "ig_target": a.ig_target, "depn_ratio": a.depn_ratio,
            "top_z": a.top_z, "zero_out_keep_only": a.zero_out_keep_only, "mask_epochs": a.mask_epochs,
            "mask_lambda": a.mask_lambda, "accumulate_epoch_grads": a.accumulate_epoch_grads, "prompt_len": a.prompt_len, "k": a.k,
        }),
        scores: scores.values.chunks(w).map(|r| r.to_vec()).collect(),
        selected,
    };
    let title = format!("{:?} scores, {} memorized sequences", a.method, rows.rows());
    write_scores(&a.out, &file, &scores, &title)?;
    println!("wrote {}/scores.json, scores.npy, heatmap.svg", a.out.display());
    Ok(())
}

/// scores.json, scores.npy [layers, width] and heatmap.svg into `out`.
pub fn write_scores(out: &Path, file: &ScoresFile, scores: &NeuronScores, title: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    super::write_json(&out.join("scores.json"), file)?;
    crate::smi::npy::write_f64(out.join("scores.npy"), &scores.values, &[scores.layers, scores.width])?;
    let labels: Vec<String> = (0..scores.layers).map(|l| format!("layer {l}")).collect();
    crate::error::write_atomic(out.join("heatmap.svg"), crate::plot::heatmap(title, &labels, &scores.values, scores.width, "MLP neuron").as_bytes())
}

#[derive(Args)]
pub struct EditArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// scores.json written by `memsieve localize`.
    #[arg(long)]
    pub neurons: PathBuf,
    /// Edit the k highest-scoring neurons of every layer.
    #[arg(long, conflicts_with_all = ["ratio", "selected"])]
    pub top_k: Option<usize>,
    /// Edit ⌊4C · ratio⌋ neurons per layer (TinyMem's ablation ratio).
    #[arg(long, conflicts_with = "selected")]
    pub ratio: Option<f64>,
    /// Edit DEPN's aggregated privacy neurons (the scores file's `selected`).
    #[arg(long)]
    pub selected: bool,
    #[arg(long, value_enum, default_value_t = EditMode::FcColumn)]
    pub mode: EditMode,
    /// Where the edited model is saved.
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluation data (as for `eval`); default: the data.json beside the model.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Also report the exposure of planted secrets: the report.json of `memsieve experiment secrets`.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
}

pub fn edit(ctx: &Context, a: EditArgs) -> Result<()> {
    super::on_device!(ctx, |dev| edit_on(dev, &a))
}

/// Load a scores file and check it fits the model.
pub fn read_scores(path: &Path, layers: usize, width: usize) -> Result<ScoresFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let f: ScoresFile = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{} is not a memsieve scores file: {e}", path.display())))?;
    if f.layers != layers || f.width != width || f.scores.len() != layers || f.scores.iter().any(|r| r.len() != width) {
        return Err(Error::Input(format!("{} holds {}×{} scores, but the model has {layers} layers × {width} neurons", path.display(), f.layers, f.width)));
    }
    Ok(f)
}

fn edit_on<B: Backend>(dev: &Arc<Device<B>>, a: &EditArgs) -> Result<()> {
    let (cfg, mut params) = checkpoint::load_model(&a.model)?;
    let (nl, w) = (cfg.n_layer, cfg.n_inner());
    let f = read_scores(&a.neurons, nl, w)?;
    let neurons: Vec<(usize, usize)> = if a.selected {
        if f.selected.is_empty() {
            return Err(Error::Input(format!("{} has no DEPN selection (use --top-k or --ratio)", a.neurons.display())));
        }
        f.selected.iter().map(|&(l, k, _)| (l, k)).collect()
    } else {
        let k = match (a.top_k, a.ratio) {
            (Some(k), _) => k.min(w),
            (None, Some(r)) => per_layer_count(w, r)?,
            (None, None) => return Err(Error::Input("say which neurons to edit: --top-k K, --ratio R or --selected".into())),
        };
        NeuronScores::new(nl, w, f.scores.concat())?.top_k_per_layer(k)
    };
    let data = super::load_eval_data(&a.model, a.data.as_deref(), &cfg)?;
    let secrets = a.secrets.as_deref().map(|p| secrets::read_secrets(p, cfg.vocab_size)).transpose()?;
    let evaluate = |params: &[f32]| -> Result<serde_json::Value> {
        let mut m = Model::from_params(dev.clone(), cfg.clone(), params)?;
        let mut v = match &data {
            EvalData::Math(d) => serde_json::to_value(report::evaluate(&mut m, d, &MemWindow { batch: a.batch, ..MemWindow::tinymem() }, a.batch)?).unwrap(),
            EvalData::Rows(r) => serde_json::to_value(report::evaluate_tokens(&mut m, r, a.batch)?).unwrap(),
        };
        if let Some(s) = &secrets {
            let e = secrets::exposures(&mut m, s, &secrets::SecretsOptions::default())?;
            let n = e.len() as f64;
            v["exposure_per_digit"] = serde_json::json!(e.iter().map(|x| x.per_digit).sum::<f64>() / n);
            v["exposure_secret_sharer"] = serde_json::json!(e.iter().map(|x| x.secret_sharer).sum::<f64>() / n);
            v["exposures"] = serde_json::to_value(&e).unwrap();
        }
        Ok(v)
    };
    let before = evaluate(&params)?;
    zero_neurons(&mut params, &cfg, &neurons, a.mode)?;
    let after = evaluate(&params)?;
    println!("edited {} neurons ({:?}, from {:?} scores)", neurons.len(), a.mode, f.method);
    println!("{:<22} {:>12} {:>12}", "", "before", "after");
    for (key, label, pct) in [("memorized_percent", "% memorized", false), ("accuracy", "accuracy %", true), ("perplexity", "perplexity", false), ("loss", "loss", false), ("exposure_per_digit", "exposure (per-digit)", false), ("exposure_secret_sharer", "exposure (sharer)", false)] {
        if let (Some(b), Some(af)) = (before[key].as_f64(), after[key].as_f64()) {
            let s = if pct { 100.0 } else { 1.0 };
            println!("{label:<22} {:>12.3} {:>12.3}", b * s, af * s);
        }
    }
    let layers_meta = serde_json::to_string(&neurons).unwrap();
    checkpoint::save_model(&a.out, &cfg, &params, &[("memsieve_edit", &layers_meta)])?;
    super::write_json(
        &a.out.join("edit.json"),
        &serde_json::json!({ "source": a.model, "scores": a.neurons, "method": f.method, "mode": a.mode, "neurons": neurons, "before": before, "after": after }),
    )?;
    println!("wrote the edited model and edit.json to {}", a.out.display());
    Ok(())
}

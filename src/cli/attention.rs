//! `memsieve attention`: attention-distribution statistics per (layer, head) — the reconstruction of
//! Zeng et al.'s statistic for a decoder-only model (depn-attention.md B3) — over JSONL token rows, or
//! over a TinyMem run's memorized and non-memorized noised sequences and a clean sample, reported
//! separately: a table, `attention.json`, `samples.csv` (per sample and layer; `row` indexes the group's
//! source: the noised rows, the training rows, or the JSONL file's lines) and one `layer_L.svg` per layer.

use super::{Context, EvalData};
use crate::analysis::attention::{attention_statistics, AttentionOptions, AttentionStatistics, Positions, Stat, LABEL};
use crate::backend::{Backend, Device};
use crate::checkpoint;
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::metrics::MemWindow;
use crate::model::Model;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct AttentionArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// A JSONL token file (every row, one group), or data.json; default: the data.json beside the
    /// model, whose noised sequences are split by the exact-match test into memorized and not
    /// memorized, with a sample of clean training rows beside them.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Query positions: suffix (≥ --prompt-len, the generated part), all (every position from 1),
    /// or A:B. Padding and EOS positions are always left out.
    #[arg(long, default_value = "suffix")]
    pub positions: String,
    /// k of the top-k mass (1–16).
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Prompt length: the suffix's start and the memorization test's prompt.
    #[arg(long, default_value_t = 50)]
    pub prompt_len: usize,
    /// Length of the memorization test's window after the prompt.
    #[arg(long, default_value_t = 50)]
    pub k: usize,
    /// Clean training rows in the clean group (data.json only).
    #[arg(long, default_value_t = 100)]
    pub clean_rows: usize,
    /// At most this many rows per group (the first ones).
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Rows per forward pass (and per generation launch of the memorization test).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(ctx: &Context, a: AttentionArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, &a))
}

/// A named set of rows and where each came from (an index into its source).
struct Group {
    name: &'static str,
    rows: TokenMatrix,
    source: Vec<usize>,
}

fn groups<B: Backend>(model: &mut Model<B>, data: EvalData, a: &AttentionArgs) -> Result<Vec<Group>> {
    let take = |name, m: &TokenMatrix, idx: Vec<usize>| {
        let idx: Vec<usize> = idx.into_iter().take(a.max_rows.unwrap_or(usize::MAX)).collect();
        Group { name, rows: m.select(&idx), source: idx }
    };
    match data {
        EvalData::Rows(rows) => Ok(vec![take("rows", &rows, (0..rows.rows()).collect())]),
        EvalData::Math(d) => {
            let window = MemWindow { prompt_len: a.prompt_len, k: a.k, batch: a.batch };
            let m = crate::metrics::memorization(model, &d.noisy, &d.clean_for_noisy, &window)?;
            let end = window.prompt_len + window.k;
            let tested = (0..d.noisy.rows()).filter(|&i| crate::data::window_differs(d.noisy.row(i), d.clean_for_noisy.row(i), a.prompt_len, end));
            let not_memorized: Vec<usize> = tested.filter(|i| !m.memorized_idx.contains(i)).collect();
            eprintln!("memorization test: {} of {} tested noised sequences memorized", m.memorized, m.tested);
            let clean: Vec<usize> = d.non_artifact_rows().take(a.clean_rows).collect();
            Ok(vec![
                take("memorized", &d.noisy, m.memorized_idx.clone()),
                take("not memorized", &d.noisy, not_memorized),
                take("clean", &d.train, clean),
            ])
        }
    }
}

fn run_on<B: Backend>(dev: &Arc<Device<B>>, a: &AttentionArgs) -> Result<()> {
    let positions = Positions::parse(&a.positions, a.prompt_len)?;
    let (cfg, params) = checkpoint::load_model(&a.model)?;
    let mut model = Model::from_params(dev.clone(), cfg.clone(), &params)?;
    let data = super::load_eval_data(&a.model, a.data.as_deref(), &cfg)?;
    let o = AttentionOptions { positions, top_k: a.top_k, batch: a.batch };
    let t0 = std::time::Instant::now();
    let mut results: Vec<(Group, AttentionStatistics)> = Vec::new();
    for g in groups(&mut model, data, a)? {
        if g.rows.rows() == 0 {
            eprintln!("group {:?} is empty: left out", g.name);
            continue;
        }
        let bar = crate::train::progress_bar(g.rows.rows() as u64, &format!("attention ({})", g.name));
        let s = attention_statistics(&mut model, &g.rows, &o, &|done, _| bar.set_position(done as u64))?;
        bar.finish_and_clear();
        results.push((g, s));
    }
    if results.is_empty() {
        return Err(Error::Input("no rows to analyse in any group".into()));
    }
    let seconds = t0.elapsed().as_secs_f64();

    println!("attention statistics: {LABEL}");
    println!("{}, top-{} mass, {} layers × {} heads, {seconds:.1} s", positions.describe(), a.top_k, cfg.n_layer, cfg.n_head);
    for (g, s) in &results {
        println!("\n{}: {} rows, {} query positions per head", g.name, s.rows, s.positions);
        println!("{:<6} {:<5} {:>10} {:>12} {:>11} {:>11}", "layer", "head", "entropy", "entropy/ln", "max weight", format!("top-{} mass", a.top_k));
        for l in 0..s.layers {
            let lines = s.per_head[l].iter().enumerate().map(|(h, st)| (h.to_string(), st)).chain([("mean".to_string(), &s.per_layer[l])]);
            for (h, st) in lines {
                println!("{l:<6} {h:<5} {:>10.4} {:>12.4} {:>11.4} {:>11.4}", st.entropy, st.normalized_entropy, st.max_weight, st.top_k_mass);
            }
        }
    }

    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let json_groups: Vec<serde_json::Value> = results
        .iter()
        .map(|(g, s)| {
            let mut v = serde_json::to_value(s).expect("serializable");
            v["name"] = g.name.into();
            v["source_rows"] = serde_json::to_value(&g.source).unwrap();
            v
        })
        .collect();
    super::write_json(
        &a.out.join("attention.json"),
        &serde_json::json!({
            "label": LABEL, "model": a.model, "data": a.data, "backend": dev.backend.name(), "positions": positions,
            "positions_described": positions.describe(), "top_k": a.top_k, "prompt_len": a.prompt_len, "seconds": seconds,
            "groups": json_groups,
        }),
    )?;
    let mut csv = format!("group,row,positions,layer,{}\n", Stat::NAMES.join(","));
    for (g, s) in &results {
        for (src, sample) in g.source.iter().zip(&s.samples) {
            let layers = sample.per_layer.iter().enumerate().map(|(l, st)| (l.to_string(), st)).chain([("mean".to_string(), &sample.mean)]);
            for (l, st) in layers {
                let v = st.values().map(|x| if x.is_finite() { x.to_string() } else { String::new() });
                csv += &format!("{},{src},{},{l},{}\n", g.name, sample.positions, v.join(","));
            }
        }
    }
    crate::error::write_atomic(a.out.join("samples.csv"), csv.as_bytes())?;
    for l in 0..cfg.n_layer {
        let svg = layer_plot(l, &results, a.top_k, &positions);
        crate::error::write_atomic(a.out.join(format!("layer_{l}.svg")), svg.as_bytes())?;
    }
    println!("\nwrote {0}/attention.json, {0}/samples.csv and layer_0..{1}.svg", a.out.display(), cfg.n_layer - 1);
    Ok(())
}

/// Heads (and their mean) × the statistics in [0, 1] (entropy in nats is in the table), one bar per
/// (group, statistic).
fn layer_plot(l: usize, results: &[(Group, AttentionStatistics)], top_k: usize, positions: &Positions) -> String {
    let heads = results[0].1.heads;
    let mut labels: Vec<String> = (0..heads).map(|h| format!("head {h}")).collect();
    labels.push("mean".into());
    let mut series = Vec::new();
    for (g, s) in results {
        let per = |f: fn(&Stat) -> f64| s.per_head[l].iter().chain([&s.per_layer[l]]).map(f).collect::<Vec<f64>>();
        if results.len() == 1 {
            series.push(("H/ln(t+1)".to_string(), per(|x| x.normalized_entropy)));
            series.push(("max weight".to_string(), per(|x| x.max_weight)));
            series.push((format!("top-{top_k} mass"), per(|x| x.top_k_mass)));
        } else {
            // Two statistics per group keep the bars within the palette's seven colours.
            series.push((format!("{} H/ln", g.name), per(|x| x.normalized_entropy)));
            series.push((format!("{} top-{top_k}", g.name), per(|x| x.top_k_mass)));
        }
    }
    let title = format!("layer {l}, {} (Zeng et al. reconstruction, B3)", positions.describe());
    crate::plot::grouped_bars(&title, "mean over positions and samples", &labels, &series)
}

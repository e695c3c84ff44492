//! `memsieve screen`: per-sample PSMI scores and the dataset-level SMI of a feature matrix
//! (smi.md). Writes scores.csv / scores.npy, flagged.csv / flagged.npy, ksg_per_slice.npy and
//! smi.json into --out, and prints a summary table.

use crate::backend::{Backend, Device};
use crate::error::{Error, Result};
use crate::smi::input::{self, Precision};
use crate::smi::pipeline::{self, Input, PartStats, PipelineOptions};
use crate::smi::{self, npy, shard, AutoOptions, Classes, Ddof, Directions, KsgOptions, PsmiOptions, PsmiScores, Summary};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub struct ScreenArgs {
    /// Features: n × d, .npy (f16, f32, f64) or .safetensors (F16, BF16, F32, F64).
    #[arg(long, required_unless_present = "model", requires = "labels")]
    pub features: Option<PathBuf>,
    /// The features' tensor in a .safetensors file (default: its only tensor, or `features`).
    #[arg(long)]
    pub features_tensor: Option<String>,
    /// Labels: n integers, .npy or .safetensors (the labels the model was trained on, noise included).
    #[arg(long, required_unless_present = "model")]
    pub labels: Option<PathBuf>,
    /// The labels' tensor in a .safetensors file (default: its only tensor, or `labels`).
    #[arg(long)]
    pub labels_tensor: Option<String>,
    /// Instead of --features/--labels: a model directory whose hidden states on --data are screened.
    #[arg(long, requires = "data", conflicts_with_all = ["features", "labels"])]
    pub model: Option<PathBuf>,
    /// JSONL token rows for --model; each sample is labelled with its next token.
    #[arg(long, requires = "model")]
    pub data: Option<PathBuf>,
    /// Hidden state for --model: 0 (embeddings) … n_layer (after ln_f, HF's last), `last`, or `all`
    /// (one output folder per layer, layer_N).
    #[arg(long, default_value = "last")]
    pub layer: String,
    /// Samples for --model: every predicted position of each row, or only the answer (the last
    /// token of each row, read at the position before it).
    #[arg(long, value_enum, default_value_t = smi::extract::At::Every)]
    pub at: smi::extract::At,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of random slices K (ignored with --auto; with --directions: default all rows).
    #[arg(long)]
    pub slices: Option<usize>,
    /// The `psmi` package's auto mode: blocks of 500 directions until the lowest 5% stabilise.
    #[arg(long, conflicts_with = "slices")]
    pub auto: bool,
    /// Seed of the slice directions (Philox, the same on every backend).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Std convention of the class Gaussians: 0 (psmi package) or 1 (the LLM code).
    #[arg(long, default_value_t = 0)]
    pub ddof: u8,
    /// Flag samples with mean PSMI ≤ T (default rule: T = 0).
    #[arg(long, conflicts_with = "top")]
    pub threshold: Option<f64>,
    /// Flag the N samples with the lowest mean PSMI instead.
    #[arg(long)]
    pub top: Option<usize>,
    /// Use these directions (K × d .npy, normalised per row) instead of seeded ones.
    #[arg(long)]
    pub directions: Option<PathBuf>,
    /// Projection precision: f32 (default), f64 (as `psmi`), bf16 (AVX-512 BF16 dot products, f32 sums).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Slices per projection block (memory: n × block values).
    #[arg(long, default_value_t = 500)]
    pub block: usize,
    /// Emulate scikit-learn's KSG bit for bit (its jitter, n × K normals in memory, and its
    /// small-class distances); default skips both, which only matters with ties or classes ≤ 7.
    #[arg(long)]
    pub sklearn_exact: bool,
    /// k of the KSG estimator.
    #[arg(long, default_value_t = 3)]
    pub neighbors: usize,
    /// Bound the working set (device buffers and per-block host arrays), e.g. 512M or 2G: slices and
    /// samples are then processed in chunks (two projection passes when the samples do not fit at once).
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory: Option<usize>,
    /// Only compute the class statistics of shard i of N (contiguous sample ranges) and write them to
    /// --out as shard-i-of-N.{npy,json}; `memsieve screen merge` combines them and scores.
    #[arg(long, value_parser = parse_shard, conflicts_with = "auto")]
    pub shard: Option<(usize, usize)>,
}

/// `memsieve screen [merge]` (main.rs lets the subcommand replace the flags).
#[derive(Args)]
pub struct ScreenCommand {
    #[command(subcommand)]
    pub sub: Option<ScreenSub>,
    /// Absent only when a subcommand is given.
    #[command(flatten)]
    pub args: Option<ScreenArgs>,
}

#[derive(Subcommand)]
pub enum ScreenSub {
    /// Merge the statistics of `--shard i/N` runs, then score every sample (same flags as the shards).
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    /// Directory holding every shard-i-of-N.{npy,json}.
    #[arg(long)]
    pub shards: PathBuf,
    #[command(flatten)]
    pub args: ScreenArgs,
}

/// "512M", "2G", "1.5GiB", "1000000" → bytes.
fn parse_bytes(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, scale) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (try 512M or 2G)"))?;
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok((v * scale as f64) as usize)
}

/// "i/N" with 0 ≤ i < N.
fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected i/N, e.g. 0/4"))?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| format!("{s:?}: bad shard index"))?, n.trim().parse().map_err(|_| format!("{s:?}: bad shard count"))?);
    if n == 0 || i >= n {
        return Err(format!("{s:?}: need 0 ≤ i < N"));
    }
    Ok((i, n))
}

/// How samples were flagged.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagRule {
    Threshold(f64),
    Top(usize),
}

#[derive(Serialize)]
struct ClassCount {
    label: i64,
    count: usize,
}

#[derive(Serialize)]
struct SmiReport {
    samples: usize,
    dim: usize,
    /// Stored precision of the features file.
    features_dtype: &'static str,
    classes: Vec<ClassCount>,
    slices: usize,
    auto_converged: Option<bool>,
    excluded_slices: usize,
    directions: String,
    backend: String,
    /// Slices per block and samples per chunk the run used (--max-memory).
    block_slices: usize,
    chunk_samples: usize,
    ddof: u8,
    precision: Precision,
    rule: FlagRule,
    flagged: usize,
    psmi: Summary,
    ksg: KsgReport,
    seconds: f64,
}

#[derive(Serialize)]
struct KsgReport {
    options: KsgOptions,
    /// Dataset SMI: mean, std and quantiles of the per-slice KSG MI (nats).
    per_slice: Summary,
}

/// Indices flagged by the rule, lowest mean PSMI first.
pub fn flag(mean: &[f64], rule: &FlagRule) -> Vec<usize> {
    let mut order: Vec<usize> = (0..mean.len()).collect();
    order.sort_by(|&a, &b| mean[a].total_cmp(&mean[b]).then(a.cmp(&b)));
    match *rule {
        FlagRule::Threshold(t) => order.into_iter().filter(|&i| mean[i] <= t).collect(),
        FlagRule::Top(n) => order.into_iter().take(n).collect(),
    }
}

pub fn run(ctx: &super::Context, cmd: ScreenCommand) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(ctx.threads).build().map_err(|e| Error::Backend(format!("thread pool: {e}")))?;
    pool.install(|| match &cmd.sub {
        Some(ScreenSub::Merge(m)) => screen_inputs(ctx, &m.args, Some(&m.shards)),
        None => screen_inputs(ctx, cmd.args.as_ref().ok_or_else(|| Error::Input("memsieve screen needs --features, --labels and --out".into()))?, None),
    })
}

/// Features and labels from files, or the hidden states of a model on a dataset (one screen per layer).
fn screen_inputs(ctx: &super::Context, a: &ScreenArgs, merge_from: Option<&std::path::Path>) -> Result<()> {
    match (&a.model, &a.data, &a.features, &a.labels) {
        (Some(model), Some(data), _, _) => {
            for f in smi::extract::from_files(model, data, &a.layer, a.at, ctx.threads)? {
                let out = if f.of_many { a.out.join(format!("layer_{}", f.layer)) } else { a.out.clone() };
                smi::extract::write_positions(&out.join("positions.csv"), &f.positions)?;
                println!("hidden state {} of {}:", f.layer, model.display());
                let x = input::Features::f32(f.features.rows, f.features.cols, f.features.data);
                screen(ctx, a, x, f.positions.labels, &out, merge_from)?;
            }
            Ok(())
        }
        (_, _, Some(features), Some(labels)) => {
            let x = input::read_features(features, a.features_tensor.as_deref())?;
            let y = input::read_labels(labels, a.labels_tensor.as_deref())?;
            screen(ctx, a, x, y, &a.out, merge_from)
        }
        _ => Err(Error::Input("give --features and --labels, or --model and --data".into())),
    }
}

/// What a shard manifest must say for this run's inputs.
fn manifest(x: &[f32], rows: usize, cols: usize, labels: &[i64], classes: &Classes, slices: usize, source: &str) -> shard::Manifest {
    shard::Manifest {
        shard: 0,
        of: 0,
        samples: rows,
        dim: cols,
        slices,
        directions: source.to_string(),
        features_fnv: shard::fnv(x.iter().flat_map(|v| v.to_le_bytes())),
        labels_fnv: shard::fnv(labels.iter().flat_map(|v| v.to_le_bytes())),
        classes: classes.len(),
        part_rows: smi::psmi::STATS_ROWS,
        first_part: 0,
        parts: 0,
    }
}

/// The device pipeline on whichever backend `--backend` resolved to: shard statistics, or scores.
#[allow(clippy::too_many_arguments)]
fn on_backend<B: Backend>(dev: &Device<B>, a: &ScreenArgs, inp: &Input<'_>, dirs: &Directions, slices: usize, opts: &PipelineOptions, given: Option<&PartStats>, bar: &indicatif::ProgressBar) -> Result<(Option<PsmiScores>, Option<PartStats>, pipeline::Plan, String)> {
    let name = dev.backend.name().to_string();
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    match a.shard {
        Some((i, of)) => {
            let s = pipeline::shard_stats(dev, inp, dirs, slices, opts, i, of, &|j| progress(j, slices))?;
            let plan = pipeline::plan(inp.n, inp.d, slices, inp.classes.len(), opts, dev.backend.max_view_len(), &|n, w| dev.backend.smi_ksg_scratch_len(n, w, inp.classes.len()))?;
            Ok((None, Some(s), plan, name))
        }
        None => {
            let (scores, plan) = pipeline::psmi_on_device(dev, inp, dirs, slices, opts, given, &progress)?;
            Ok((Some(scores), None, plan, name))
        }
    }
}

fn screen(ctx: &super::Context, a: &ScreenArgs, x: input::Features, labels: Vec<i64>, out: &std::path::Path, merge_from: Option<&std::path::Path>) -> Result<()> {
    let started = std::time::Instant::now();
    let ddof = Ddof::from_u8(a.ddof)?;
    smi::check_counts(x.rows, labels.len())?;
    let classes = Classes::new(&labels)?;
    let (dirs, source) = match &a.directions {
        Some(path) => {
            let m = npy::read_directions(path)?;
            if m.cols != x.cols {
                return Err(Error::Input(format!("{}: directions have {} columns, features {}", path.display(), m.cols, x.cols)));
            }
            (Directions::explicit(m.data, m.cols)?, format!("file {}", path.display()))
        }
        None => (Directions::seeded(a.seed, x.cols), format!("philox seed {}", a.seed)),
    };
    let slices = match (a.slices, dirs.available()) {
        (Some(k), _) => k,
        (None, Some(avail)) => avail,
        (None, None) => 2000,
    };
    let rule = match (a.threshold, a.top) {
        (_, Some(n)) => FlagRule::Top(n),
        (Some(t), None) => FlagRule::Threshold(t),
        (None, None) => FlagRule::Threshold(0.0),
    };
    let opts = PsmiOptions { ddof, block: a.block, ksg: Some(KsgOptions { n_neighbors: a.neighbors, sklearn_exact: a.sklearn_exact }) };
    let auto = AutoOptions::default();
    let bar = crate::train::progress_bar(if a.auto { (auto.block * auto.max_blocks) as u64 } else { slices as u64 }, "slices");
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    // f32 with a fixed K runs the device pipeline on any backend; f64, bf16 and auto mode are cpu-only.
    let device_path = a.precision == Precision::F32 && !a.auto;
    if !device_path && (a.shard.is_some() || merge_from.is_some() || a.max_memory.is_some()) {
        return Err(Error::Input("--shard, merge and --max-memory need the device pipeline: --precision f32 and a fixed --slices K".into()));
    }
    let mut plan = None;
    let scores: PsmiScores = match (a.precision, a.auto) {
        (Precision::F32, false) => {
            let x32 = x.f32_data();
            let inp = Input { x: &x32, n: x.rows, d: x.cols, classes: &classes };
            let popts = PipelineOptions { ddof, block: a.block, ksg: opts.ksg.clone(), max_memory: a.max_memory };
            let want = manifest(&x32, x.rows, x.cols, &labels, &classes, slices, &source);
            let given = match merge_from {
                Some(dir) => Some(shard::read_all(dir, &want)?),
                None => None,
            };
            let (scores, part_stats, used, backend) =
                super::on_device!(ctx, |dev| on_backend(dev, a, &inp, &dirs, slices, &popts, given.as_ref(), &bar))?;
            bar.finish_and_clear();
            if let (Some(s), Some((i, of))) = (part_stats, a.shard) {
                let m = shard::Manifest { shard: i, of, first_part: s.first_part, parts: s.parts, ..want };
                shard::write(out, &m, &s)?;
                println!(
                    "shard {i}/{of}: class statistics of samples {}..{} over {slices} slices ({backend}) written to {}",
                    s.first_part * smi::psmi::STATS_ROWS,
                    ((s.first_part + s.parts) * smi::psmi::STATS_ROWS).min(x.rows),
                    out.display()
                );
                return Ok(());
            }
            plan = Some((used, backend));
            scores.expect("scores unless sharding")
        }
        _ if !matches!(ctx.backend, crate::backend::BackendChoice::Cpu | crate::backend::BackendChoice::Auto) => {
            return Err(Error::Input("--precision f64 / bf16 and --auto run on the cpu backend only (use --backend cpu)".into()));
        }
        (precision, auto_mode) => x.with_projection(precision, |xp| {
            if auto_mode {
                xp.psmi_auto(&classes, &dirs, &opts, &auto, &progress)
            } else {
                xp.psmi(&classes, &dirs, slices, &opts, &progress)
            }
        })??,
    };
    bar.finish_and_clear();

    let flagged = flag(&scores.mean, &rule);
    let mut is_flagged = vec![false; scores.samples];
    for &i in &flagged {
        is_flagged[i] = true;
    }
    write_outputs(out, &scores, &labels, &flagged, &is_flagged)?;
    let mut ksg = scores.ksg_mi.clone();
    let report = SmiReport {
        samples: x.rows,
        dim: x.cols,
        features_dtype: x.dtype(),
        classes: classes.values.iter().zip(&classes.counts).map(|(&label, &count)| ClassCount { label, count }).collect(),
        slices: scores.slices,
        auto_converged: a.auto.then_some(scores.converged),
        excluded_slices: scores.excluded.len(),
        directions: source,
        backend: plan.as_ref().map_or("cpu".into(), |p| p.1.clone()),
        block_slices: plan.as_ref().map_or(a.block, |p| p.0.block),
        chunk_samples: plan.as_ref().map_or(x.rows, |p| p.0.chunk),
        ddof: a.ddof,
        precision: a.precision,
        rule: rule.clone(),
        flagged: flagged.len(),
        psmi: Summary::of(&mut scores.mean.clone()),
        ksg: KsgReport { options: opts.ksg.clone().expect("set above"), per_slice: Summary::of(&mut ksg) },
        seconds: started.elapsed().as_secs_f64(),
    };
    super::write_json(&out.join("smi.json"), &report)?;
    print_table(&report, &scores, &labels, &flagged);
    if a.auto && !scores.converged {
        eprintln!("warning: auto mode stopped at the cap of {} directions without meeting its rule", scores.slices);
    }
    Ok(())
}

fn write_outputs(out: &std::path::Path, s: &PsmiScores, labels: &[i64], flagged: &[usize], is_flagged: &[bool]) -> Result<()> {
    let mut csv = String::from("index,label,psmi_mean,psmi_std,psmi_q01,psmi_q99,flagged\n");
    let mut table = Vec::with_capacity(s.samples * 4);
    for i in 0..s.samples {
        writeln!(csv, "{i},{},{:.9},{:.9},{:.9},{:.9},{}", labels[i], s.mean[i], s.std[i], s.q01[i], s.q99[i], is_flagged[i] as u8).expect("string write");
        table.extend([s.mean[i], s.std[i], s.q01[i], s.q99[i]]);
    }
    crate::error::write_atomic(out.join("scores.csv"), csv.as_bytes())?;
    npy::write_f64(out.join("scores.npy"), &table, &[s.samples, 4])?;
    let mut fcsv = String::from("rank,index,label,psmi_mean\n");
    for (rank, &i) in flagged.iter().enumerate() {
        writeln!(fcsv, "{rank},{i},{},{:.9}", labels[i], s.mean[i]).expect("string write");
    }
    crate::error::write_atomic(out.join("flagged.csv"), fcsv.as_bytes())?;
    let idx: Vec<i64> = flagged.iter().map(|&i| i as i64).collect();
    npy::write_i64(out.join("flagged.npy"), &idx, &[idx.len()])?;
    npy::write_f64(out.join("ksg_per_slice.npy"), &s.ksg_mi, &[s.ksg_mi.len()])?;
    Ok(())
}

fn print_table(r: &SmiReport, s: &PsmiScores, labels: &[i64], flagged: &[usize]) {
    let classes: Vec<String> = r.classes.iter().map(|c| format!("{}:{}", c.label, c.count)).collect();
    println!("samples {}  dim {}  classes {}  slices {} ({} excluded)  ddof {}  {:?}", r.samples, r.dim, classes.join(" "), r.slices, r.excluded_slices, r.ddof, r.precision);
    println!("{:<22} {:>10} {:>10} {:>10} {:>10} {:>10}", "", "mean", "std", "q0.01", "median", "q0.99");
    for (name, v) in [("PSMI (per sample)", &r.psmi), ("KSG MI (per slice)", &r.ksg.per_slice)] {
        println!("{:<22} {:>10.5} {:>10.5} {:>10.5} {:>10.5} {:>10.5}", name, v.mean, v.std, v.q01, v.q50, v.q99);
    }
    let rule = match r.rule {
        FlagRule::Threshold(t) => format!("mean PSMI ≤ {t}"),
        FlagRule::Top(n) => format!("lowest {n} mean PSMI"),
    };
    println!("flagged {} of {} samples ({rule}); lowest:", flagged.len(), r.samples);
    println!("{:>8} {:>8} {:>10} {:>10}", "index", "label", "PSMI", "q0.01");
    for &i in flagged.iter().take(10) {
        println!("{:>8} {:>8} {:>10.5} {:>10.5}", i, labels[i], s.mean[i], s.q01[i]);
    }
    println!("{:.2} s", r.seconds);
}

//! `memsieve screen`: per-sample PSMI scores and the dataset-level SMI of a feature matrix
//! (smi.md). Writes scores.csv / scores.npy, flagged.csv / flagged.npy, ksg_per_slice.npy and
//! smi.json into --out, and prints a summary table.

use crate::error::{Error, Result};
use crate::smi::{self, npy, AutoOptions, Classes, Ddof, Directions, KsgOptions, PsmiOptions, PsmiScores, Summary};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Precision {
    /// f32 projection GEMM (as the LLM reference code; statistics and scores stay f64).
    F32,
    /// f64 projection (as the `psmi` package).
    F64,
}

#[derive(Args)]
pub struct ScreenArgs {
    /// Features: n × d .npy (f32, f64 or f16).
    #[arg(long, required_unless_present = "model", requires = "labels")]
    pub features: Option<PathBuf>,
    /// Labels: n integer labels .npy (the labels the model was trained on, noise included).
    #[arg(long, required_unless_present = "model")]
    pub labels: Option<PathBuf>,
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
    classes: Vec<ClassCount>,
    slices: usize,
    auto_converged: Option<bool>,
    excluded_slices: usize,
    directions: String,
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

pub fn run(threads: usize, a: ScreenArgs) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| Error::Backend(format!("thread pool: {e}")))?;
    pool.install(|| match (&a.model, &a.data, &a.features, &a.labels) {
        (Some(model), Some(data), _, _) => {
            for f in smi::extract::from_files(model, data, &a.layer, a.at, threads)? {
                let out = if f.of_many { a.out.join(format!("layer_{}", f.layer)) } else { a.out.clone() };
                smi::extract::write_positions(&out.join("positions.csv"), &f.positions)?;
                println!("hidden state {} of {}:", f.layer, model.display());
                screen(&a, f.features, f.positions.labels, &out)?;
            }
            Ok(())
        }
        (_, _, Some(features), Some(labels)) => screen(&a, npy::read_features(features)?, npy::read_labels(labels)?, &a.out),
        _ => Err(Error::Input("give --features and --labels, or --model and --data".into())),
    })
}

fn screen(a: &ScreenArgs, x: npy::Matrix<f32>, labels: Vec<i64>, out: &std::path::Path) -> Result<()> {
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
    let scores: PsmiScores = match (a.precision, a.auto) {
        (Precision::F32, false) => smi::psmi(&x.data, x.rows, x.cols, &classes, &dirs, slices, &opts, &progress)?,
        (Precision::F32, true) => smi::psmi_auto(&x.data, x.rows, x.cols, &classes, &dirs, &opts, &auto, &progress)?,
        (Precision::F64, auto_mode) => {
            let x64: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
            if auto_mode {
                smi::psmi_auto(&x64, x.rows, x.cols, &classes, &dirs, &opts, &auto, &progress)?
            } else {
                smi::psmi(&x64, x.rows, x.cols, &classes, &dirs, slices, &opts, &progress)?
            }
        }
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
        classes: classes.values.iter().zip(&classes.counts).map(|(&label, &count)| ClassCount { label, count }).collect(),
        slices: scores.slices,
        auto_converged: a.auto.then_some(scores.converged),
        excluded_slices: scores.excluded.len(),
        directions: source,
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

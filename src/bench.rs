//! The standard workloads of `memsieve bench` and the benches in benches/: their synthetic inputs
//! (shared with the Python baselines through files), timing helpers, and for each workload the
//! baseline script that does the same work. Not a test: nothing here asserts a speed.

use crate::attribution::ig::{integrated_gradients, IgOptions, Query};
use crate::backend::{Backend, Device, View};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::generate::GenerateOptions;
use crate::model::{AdamW, Model};
use crate::rng::{purpose, Stream};
use crate::smi::pipeline::{psmi_on_device, Input, PipelineOptions};
use crate::smi::{Classes, Ddof, Directions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// TinyMem's sequence length (tinymem.md) and the generation/IG prompt length.
pub const SEQ: usize = 150;
pub const PROMPT: usize = 50;

/// The workloads `memsieve bench` runs. Adding one is a variant here plus one arm in `prepare`
/// (and in `Workload::name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// One AdamW training step (forward, backward, update) of a TinyMem math model.
    TrainStep,
    /// KV-cached greedy generation, prompts of 50 tokens to 150.
    Generate,
    /// Per-sample PSMI over synthetic Gaussian classes (the device pipeline, f32).
    Psmi,
    /// The dataset SMI: KSG mutual information of every slice (`Op::SmiKsg`).
    Ksg,
    /// Integrated gradients over every layer's MLP neurons, fast single-position form.
    Ig,
    /// One BalancedSubnet epoch over a memorized and a retain set (`memsieve unlearn`).
    BalancedSubnet,
}

impl Workload {
    pub const ALL: [Workload; 6] = [Workload::TrainStep, Workload::Generate, Workload::Psmi, Workload::Ksg, Workload::Ig, Workload::BalancedSubnet];

    pub fn name(self) -> &'static str {
        match self {
            Workload::TrainStep => "train_step",
            Workload::Generate => "generate",
            Workload::Psmi => "psmi",
            Workload::Ksg => "ksg",
            Workload::Ig => "ig",
            Workload::BalancedSubnet => "balanced_subnet",
        }
    }
}

/// `--size`: small runs in seconds on a laptop; paper is the sizes BENCHMARKS.md quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    Small,
    Paper,
}

/// A Python baseline doing a workload's work: the script (in benches/baselines) and its arguments;
/// the script prints one JSON line whose `key` field is its time for one run, in `scale` seconds.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub script: &'static str,
    pub args: Vec<String>,
    pub key: &'static str,
    pub scale: f64,
    /// Python modules it imports (checked first, for a clear message).
    pub modules: &'static [&'static str],
    pub install: &'static str,
    pub implementation: &'static str,
}

impl Baseline {
    /// A PyTorch baseline script (the TORCH modules and their install line).
    fn torch(script: &'static str, args: Vec<String>, key: &'static str, scale: f64) -> Self {
        Baseline { script, args, key, scale, modules: TORCH, install: TORCH_INSTALL, implementation: "pytorch" }
    }
}

/// A workload ready to time: `run` does one unit of it.
pub struct Prepared<'a> {
    pub workload: Workload,
    pub params: serde_json::Value,
    /// Work done per run, in `unit`s (tokens, new tokens, samples × slices, query × layers).
    pub work: f64,
    pub unit: &'static str,
    pub baseline: Baseline,
    run: Box<dyn FnMut() -> Result<()> + 'a>,
}

impl Prepared<'_> {
    /// One timed run (seconds).
    pub fn time_once(&mut self) -> Result<f64> {
        let t = Instant::now();
        (self.run)()?;
        Ok(t.elapsed().as_secs_f64())
    }
}

/// Gaussian classes with small mean shifts (weakly informative, like hidden states): features
/// [n, d] and labels in 0..classes, from Philox stream (seed 11), as benches/smi.rs always drew them.
pub fn gaussian_classes(n: usize, d: usize, classes: usize) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Stream::new(11, purpose::MISC, 0);
    let centres: Vec<f32> = (0..classes * d).map(|_| 0.05 * rng.normal() as f32).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(classes as u64) as i64).collect();
    let x: Vec<f32> = (0..n * d).map(|i| centres[labels[i / d] as usize * d + i % d] + rng.normal() as f32).collect();
    (x, labels)
}

/// Random training tokens [b, SEQ] over the math vocabulary.
pub fn train_tokens(rng: &mut Stream, b: usize) -> Vec<u32> {
    (0..b * SEQ).map(|_| rng.below(14) as u32).collect()
}

/// Generation prompts of PROMPT tokens from the digits and the separator (never EOS), as
/// benches/baselines/pytorch_generate.py draws them.
pub fn generation_prompts(rng: &mut Stream, n: usize) -> Vec<Vec<u32>> {
    (0..n).map(|_| (0..PROMPT).map(|_| [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12][rng.below(11) as usize]).collect()).collect()
}

/// TinyMem's IG workload: `seqs` random digit sequences and the queries at positions
/// PROMPT − 1, PROMPT − 1 + stride, … < SEQ − 1 of each, targeting the next token.
pub fn ig_work(seqs: usize, stride: usize) -> (Vec<u32>, Vec<Query>) {
    let mut rng = Stream::new(5, purpose::MISC, 0);
    let tokens: Vec<u32> = (0..seqs * SEQ).map(|_| rng.below(10) as u32).collect();
    let queries = (0..seqs)
        .flat_map(|s| (PROMPT - 1..SEQ - 1).step_by(stride.max(1)).map(move |pos| (s, pos)))
        .map(|(s, pos)| Query { seq: s, pos, target: tokens[s * SEQ + pos + 1] })
        .collect();
    (tokens, queries)
}

/// Write an IG workload for benches/baselines/ig_baseline.py: DIR/model and DIR/work.json.
pub fn dump_ig_work(dir: &Path, cfg: &ModelConfig, params: &[f32], tokens: &[u32], queries: &[Query], steps: usize) -> Result<()> {
    crate::checkpoint::save_model(dir.join("model"), cfg, params, &[])?;
    let rows: Vec<&[u32]> = tokens.chunks(SEQ).collect();
    let q: Vec<[usize; 3]> = queries.iter().map(|q| [q.seq, q.pos, q.target as usize]).collect();
    let doc = serde_json::json!({ "tokens": rows, "queries": q, "steps": steps, "grid": "left", "target": "prob" });
    crate::error::write_atomic(dir.join("work.json"), doc.to_string().as_bytes())
}

/// BalancedSubnet's workload: `n_mem` memorized and `n_retain` retain rows of SEQ random digits.
pub fn unlearn_work(n_mem: usize, n_retain: usize) -> (crate::data::TokenMatrix, crate::data::TokenMatrix) {
    let mut rng = Stream::new(9, purpose::MISC, 0);
    let mut rows = |n: usize| crate::data::TokenMatrix::from_data(SEQ, (0..n * SEQ).map(|_| rng.below(10) as u32).collect()).expect("whole rows");
    (rows(n_mem), rows(n_retain))
}

/// Write an unlearning workload for benches/baselines/subnet_baseline.py: DIR/model and DIR/work.json.
pub fn dump_unlearn_work(dir: &Path, cfg: &ModelConfig, params: &[f32], m: &crate::data::TokenMatrix, c: &crate::data::TokenMatrix, method: crate::unlearn::Method, o: &crate::unlearn::UnlearnOptions) -> Result<()> {
    crate::checkpoint::save_model(dir.join("model"), cfg, params, &[])?;
    let doc = serde_json::json!({
        "memorized": m.iter_rows().collect::<Vec<_>>(), "retain": c.iter_rows().collect::<Vec<_>>(),
        "method": method.name(), "ratio": o.ratio, "epochs": o.epochs, "alpha": o.alpha, "batch": o.batch,
        "lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay,
    });
    crate::error::write_atomic(dir.join("work.json"), doc.to_string().as_bytes())
}

/// Write SMI features and labels for benches/baselines/smi_baseline.py: DIR/x.npy (f64), DIR/y.npy.
pub fn dump_smi_work(dir: &Path, x: &[f32], labels: &[i64], n: usize, d: usize) -> Result<()> {
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    crate::smi::npy::write_f64(dir.join("x.npy"), &x64, &[n, d])?;
    crate::smi::npy::write_i64(dir.join("y.npy"), labels, &[n])
}

/// Analytic FLOPs of one training step (tinymem.md §7, full T×T attention): 3 × forward.
pub fn train_step_flops(b: usize, t: usize, layers: usize) -> f64 {
    3.0 * (b * t) as f64 * (layers as f64 * (2.0 * 196_608.0 + 4.0 * t as f64 * 128.0) + 2.0 * 128.0 * 14.0)
}

/// Median of a non-empty sample.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median wall time (s) of `reps` runs, after one untimed warm-up run when `warm_up`.
pub fn time_median(reps: usize, warm_up: bool, mut f: impl FnMut()) -> f64 {
    if warm_up {
        f();
    }
    let ts: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&ts)
}

/// CPU time (s) this process's threads have run so far, from /proc/self/task/*/schedstat (Linux;
/// 0 elsewhere). On a shared host it moves far less than wall time when other jobs compete.
pub fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}

const TORCH: &[&str] = &["torch", "transformers"];
const TORCH_INSTALL: &str = "pip install torch transformers";
const SMI: &[&str] = &["numpy", "psmi", "sklearn"];
const SMI_INSTALL: &str = "pip install numpy scikit-learn psmi";

/// Build `w` at `size` on `dev`. `work_dir` receives the inputs the baseline reads; `threads` is
/// the thread count the baseline is told to use.
pub fn prepare<'a, B: Backend>(w: Workload, size: Size, dev: &'a Arc<Device<B>>, work_dir: &Path, threads: usize) -> Result<Prepared<'a>> {
    let paper = size == Size::Paper;
    let th = threads.to_string();
    let mut rng = Stream::new(0, purpose::MISC, 0);
    let dir = work_dir.join(w.name());
    let dir_arg = dir.display().to_string();
    Ok(match w {
        Workload::TrainStep => {
            let (layers, b) = if paper { (4, 128) } else { (2, 8) };
            let mut m = Model::new(dev.clone(), ModelConfig::tinymem_math(layers), 0)?;
            let tokens = train_tokens(&mut rng, b);
            let targets = m.lm_targets(&tokens, b, SEQ, false);
            let h = AdamW::default();
            m.train_step(&tokens, &targets, b, SEQ, &h)?; // warm-up (allocations, pipelines)
            Prepared {
                workload: w,
                params: serde_json::json!({"layers": layers, "batch": b, "seq": SEQ, "flops_analytic": train_step_flops(b, SEQ, layers)}),
                work: (b * SEQ) as f64,
                unit: "tokens",
                baseline: Baseline::torch("pytorch_train_step.py", vec!["--batch".into(), b.to_string(), "--layers".into(), layers.to_string(), "--threads".into(), th, "--steps".into(), "1".into(), "--warmup".into(), "2".into()], "median_ms", 1e-3),
                run: Box::new(move || m.train_step(&tokens, &targets, b, SEQ, &h).map(|_| ())),
            }
        }
        Workload::Generate => {
            let (layers, n) = if paper { (4, 64) } else { (2, 8) };
            let mut m = Model::new(dev.clone(), ModelConfig::tinymem_math(layers), 0)?;
            let prompts = generation_prompts(&mut rng, n);
            let opts = GenerateOptions { max_length: SEQ, min_length: SEQ, batch: n };
            m.generate(&prompts, &opts)?;
            Prepared {
                workload: w,
                params: serde_json::json!({"layers": layers, "prompts": n, "prompt_len": PROMPT, "max_length": SEQ}),
                work: (n * (SEQ - PROMPT)) as f64,
                unit: "new tokens",
                baseline: Baseline::torch("pytorch_generate.py", vec!["--prompts".into(), n.to_string(), "--layers".into(), layers.to_string(), "--threads".into(), th, "--repeats".into(), "1".into()], "median_s", 1.0),
                run: Box::new(move || m.generate(&prompts, &opts).map(|_| ())),
            }
        }
        Workload::Psmi | Workload::Ksg => {
            // Paper: the screening figures of BENCHMARKS.md (n 15000, d 4096, K 2000).
            let (n, d, k) = if paper { (15000, 4096, 2000) } else { (1000, 128, 100) };
            let c = 4;
            let (x, labels) = gaussian_classes(n, d, c);
            dump_smi_work(&dir, &x, &labels, n, d)?;
            let classes = Classes::new(&labels)?;
            let only = if w == Workload::Psmi { "psmi" } else { "ksg" };
            let baseline = Baseline {
                script: "smi_baseline.py",
                // scikit-learn's KSG is timed on a few slices and extrapolated to all K.
                args: vec![dir_arg, "--threads".into(), th, "--only".into(), only.into(), "--k".into(), k.to_string(), "--ksg-slices".into(), (if paper { 40 } else { 10 }).to_string(), "--json".into()],
                key: "seconds",
                scale: 1.0,
                modules: SMI,
                install: SMI_INSTALL,
                implementation: if w == Workload::Psmi { "psmi" } else { "scikit-learn" },
            };
            let params = serde_json::json!({"n": n, "d": d, "k": k, "classes": c});
            if w == Workload::Psmi {
                let dirs = Directions::seeded(0, d);
                let opts = PipelineOptions { ddof: Ddof::Zero, block: 500, ksg: None, max_memory: None };
                let none = |_: usize, _: usize| {};
                let run = move || {
                    let inp = Input { x: &x, n, d, classes: &classes };
                    psmi_on_device(dev, &inp, &dirs, k, &opts, None, &none).map(|_| ())
                };
                Prepared { workload: w, params, work: (n * k) as f64, unit: "sample-slices", baseline, run: Box::new(run) }
            } else {
                let dirs = Directions::seeded(0, d);
                let thetas = dirs.block(0, k)?;
                let proj = crate::smi::project::project(&x, n, d, &thetas, k)?;
                let run = ksg_on_device(dev, &proj, &labels, n, k, c)?;
                Prepared { workload: w, params, work: (n * k) as f64, unit: "sample-slices", baseline, run }
            }
        }
        Workload::Ig => {
            let (layers, seqs, stride) = if paper { (4, 2, 10) } else { (2, 1, 20) };
            let steps = 20;
            let cfg = ModelConfig::tinymem_math(layers);
            let mut m = Model::new(dev.clone(), cfg.clone(), 0)?;
            let (tokens, queries) = ig_work(seqs, stride);
            dump_ig_work(&dir, &cfg, &m.download_params(), &tokens, &queries, steps)?;
            let all: Vec<usize> = (0..layers).collect();
            let opts = IgOptions { steps, ..IgOptions::default() };
            let nq = queries.len();
            Prepared {
                workload: w,
                params: serde_json::json!({"layers": layers, "seqs": seqs, "queries": nq, "steps": steps}),
                work: (nq * layers) as f64,
                unit: "query-layers",
                baseline: Baseline::torch("ig_baseline.py", vec![dir_arg, "--threads".into(), th], "seconds", 1.0),
                run: Box::new(move || integrated_gradients(&mut m, &tokens, seqs, SEQ, &queries, &all, &opts, &|_, _| {}).map(|_| ())),
            }
        }
        Workload::BalancedSubnet => {
            use crate::unlearn::{unlearn, Method, UnlearnOptions, UnlearnSets};
            let (layers, n_mem, n_retain) = if paper { (4, 64, 1024) } else { (2, 8, 56) };
            let cfg = ModelConfig::tinymem_math(layers);
            let base = Model::new(dev.clone(), cfg.clone(), 0)?.download_params();
            let (mem, ret) = unlearn_work(n_mem, n_retain);
            let o = UnlearnOptions { epochs: 1, ..UnlearnOptions::default() };
            dump_unlearn_work(&dir, &cfg, &base, &mem, &ret, Method::BalancedSubnet, &o)?;
            let steps = (n_mem + n_retain).div_ceil(o.batch);
            Prepared {
                workload: w,
                params: serde_json::json!({"layers": layers, "memorized": n_mem, "retain": n_retain, "epochs": 1, "ratio": o.ratio, "batch": o.batch, "steps": steps}),
                work: ((n_mem + n_retain) * SEQ) as f64,
                unit: "tokens",
                baseline: Baseline::torch("subnet_baseline.py", vec![dir_arg, "--threads".into(), th], "seconds", 1.0),
                run: Box::new(move || {
                    let mut m = Model::from_params(dev.clone(), cfg.clone(), &base)?;
                    unlearn(&mut m, Method::BalancedSubnet, &UnlearnSets { memorized: &mem, retain: &ret }, &o, &|_, _| {}).map(|_| ())
                }),
            }
        }
    })
}

/// `Op::SmiKsg` over every column of proj [n, k] (uploaded once), the MI downloaded each run.
fn ksg_on_device<'a, B: Backend>(dev: &'a Arc<Device<B>>, proj: &[f32], labels: &[i64], n: usize, k: usize, classes: usize) -> Result<Box<dyn FnMut() -> Result<()> + 'a>> {
    let p = dev.alloc(n * k)?;
    dev.upload_f32(dev.view(&p), proj);
    let l = dev.alloc(n)?;
    let lab: Vec<u32> = labels.iter().map(|&v| v as u32).collect();
    dev.upload_u32(dev.view(&l), &lab);
    let mi = dev.alloc(2 * k)?;
    let scratch = dev.alloc(dev.backend.smi_ksg_scratch_len(n, k, classes).max(1))?;
    Ok(Box::new(move || {
        dev.exec(crate::backend::Op::SmiKsg {
            mi: dev.view(&mi),
            proj: dev.view(&p),
            labels: dev.view(&l),
            scratch: View::new(&scratch, 0, dev.backend.buffer_len(&scratch)),
            n,
            k,
            classes,
            neighbors: 3,
        });
        let out = crate::backend::words_to_f64(&dev.download_u32(dev.view(&mi)));
        if out.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numerical("KSG returned a non-finite MI".into()));
        }
        Ok(())
    }))
}

/// Where the baseline scripts are: `dir` if given, else the source tree's benches/baselines, else
/// ./benches/baselines.
pub fn baselines_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baselines"), PathBuf::from("benches/baselines")],
    };
    candidates
        .iter()
        .find(|d| d.join("tinymem.py").is_file())
        .cloned()
        .ok_or_else(|| Error::Input(format!("no baseline scripts found (looked in {}); pass --baselines-dir", candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))))
}

/// Why `python` cannot run `b` (a module is missing), or None when it can.
pub fn baseline_missing(python: &str, b: &Baseline) -> Option<String> {
    let imports = b.modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    match std::process::Command::new(python).args(["-c", &imports]).output() {
        Err(e) => Some(format!("{python} could not be started ({e}); install Python 3 and `{}`", b.install)),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("import failed");
            Some(format!("{python} cannot import {} ({last}); install with `{}`", b.modules.join(", "), b.install))
        }
        Ok(_) => None,
    }
}

/// Run a baseline once and return its reported time for one run (seconds).
pub fn run_baseline(python: &str, dir: &Path, b: &Baseline) -> Result<f64> {
    let script = dir.join(b.script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(&b.args)
        .output()
        .map_err(|e| Error::Backend(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Backend(format!("{} failed: {}", script.display(), err.lines().rev().take(3).collect::<Vec<_>>().join(" | "))));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| Error::Backend(format!("{} printed no JSON line", script.display())))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Backend(format!("{}: bad JSON ({e})", script.display())))?;
    let t = v
        .get(b.key)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| Error::Backend(format!("{} reported no {:?}", script.display(), b.key)))?;
    Ok(t * b.scale)
}

//! `memsieve finetune`: continue a trained TinyMem model for E more epochs (tinymem.md §5.2) on a
//! variant of its own data (`--variant clean|extra|both`) or on fresh tasks (`--task …`, the
//! multi-task study), resuming the AdamW moments and step count; evaluates and checkpoints every
//! epoch under the true epoch numbers, and reports the wall time of the extra epochs.

use super::train::EpochRecorder;
use super::Context;
use crate::backend::{Backend, Device};
use crate::checkpoint::{self, TrainState};
use crate::data::classify::ClassifyConfig;
use crate::data::{MathDataConfig, MathDataset};
use crate::error::{Error, Result};
use crate::finetune::{self, FinetuneSet, Task, TaskData, TaskEval, TaskSet, Variant};
use crate::model::{AdamW, Model};
use crate::train::{train_with_targets, Position, TrainOptions};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct FinetuneArgs {
    /// The trained model: a run directory with its optimizer state (optimizer.safetensors,
    /// trainer_state.json), or any model directory with --fresh-optimizer.
    #[arg(long)]
    pub model: PathBuf,
    /// Fine-tune on a variant of the model's own data.
    #[arg(long, value_enum, conflicts_with = "task", required_unless_present = "task")]
    pub variant: Option<Variant>,
    /// Fine-tune on a fresh TinyMem dataset of this task (mix: an even mix of the --mix tasks).
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// The tasks of --task mix.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "increment,mult,classify")]
    pub mix: Vec<Task>,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Output directory (never the model's own).
    #[arg(long)]
    pub out: PathBuf,
    /// Learning rate (default: the checkpoint's).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Weight decay (default: the checkpoint's).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Batch size (default: the checkpoint's, recorded or inferred from its step count).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Shuffle seed (default: the checkpoint's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Exclude padding targets from the loss (default: as the checkpoint's training).
    #[arg(long)]
    pub loss_mask_pad: bool,
    /// Start AdamW from zero moments and step 0 (needed when the checkpoint has no optimizer state).
    #[arg(long)]
    pub fresh_optimizer: bool,
    /// The model's data description (default: data.json beside it, else its trainer state's).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub task_data: TaskDataArgs,
    /// Batch of the evaluation passes.
    #[arg(long, default_value_t = 256)]
    pub eval_batch: usize,
}

/// Sizes of the fresh task datasets; unset values come from the model's own data description.
#[derive(Args, Clone, Debug)]
pub struct TaskDataArgs {
    /// Seed of the tasks' noise, duplication and trigger (default: the model data's seed + 1);
    /// task i of a mix uses seed + i.
    #[arg(long)]
    pub task_seed: Option<u64>,
    #[arg(long)]
    pub task_num_7: Option<usize>,
    #[arg(long)]
    pub task_num_extra: Option<usize>,
    #[arg(long)]
    pub task_num_test: Option<usize>,
    #[arg(long)]
    pub task_num_noise: Option<usize>,
    #[arg(long)]
    pub task_length: Option<usize>,
    /// Context of the task rows (default and maximum: the model's).
    #[arg(long)]
    pub task_max_ctx: Option<usize>,
    /// Duplication powers of the tasks' artifact rows (turns duplication on).
    #[arg(long, value_delimiter = ',')]
    pub task_dup_powers: Option<Vec<u32>>,
    #[arg(long, conflicts_with = "task_dup_powers")]
    pub task_no_duplicate: bool,
    /// Classification rows trained on (default 2000; in a mix the largest math task's row count).
    #[arg(long)]
    pub classify_pool: Option<usize>,
    #[arg(long, default_value_t = 1.0 / 30.0)]
    pub classify_label_noise: f64,
    /// Held-out classification rows for the accuracy.
    #[arg(long, default_value_t = 200)]
    pub classify_test: usize,
}

/// One evaluated epoch (epoch = the true epoch; the base's own at `finetune_epoch` 0).
#[derive(Clone, Debug, Serialize)]
pub struct EpochResult {
    pub epoch: usize,
    pub finetune_epoch: usize,
    pub train_loss: Option<f64>,
    pub seconds: Option<f64>,
    pub evals: Vec<(String, TaskEval)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FinetuneOutcome {
    pub base_epoch: usize,
    pub base_step: u64,
    pub optimizer: &'static str,
    pub batch: usize,
    pub adam: AdamW,
    pub seed: u64,
    pub rows: usize,
    pub parts: Vec<finetune::Part>,
    pub epochs: Vec<EpochResult>,
    /// Wall time of the extra epochs' training steps (the cost the paper reports).
    pub train_seconds: f64,
    /// Wall time of the whole command (loading, evaluations and checkpoints included).
    pub wall_seconds: f64,
}

pub fn run(ctx: &Context, a: FinetuneArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, &a))
}

fn run_on<B: Backend>(dev: &Arc<Device<B>>, a: &FinetuneArgs) -> Result<()> {
    let o = finetune_run(dev, a)?;
    print_table(&o);
    println!(
        "fine-tuned {} epochs ({} → {}) on {} rows: {:.1} s of training ({:.1} s in all); results in {}",
        a.epochs,
        o.base_epoch,
        o.base_epoch + a.epochs,
        o.rows,
        o.train_seconds,
        o.wall_seconds,
        a.out.display()
    );
    Ok(())
}

/// The model's data: --data, the data.json beside it, or the description in its trainer state.
fn base_dataset(a: &FinetuneArgs, cfg: &crate::model::config::ModelConfig, state: Option<&TrainState>) -> Result<Option<MathDataset>> {
    let beside = if a.model.is_dir() { a.model.join("data.json") } else { a.model.with_file_name("data.json") };
    if a.data.is_some() || beside.exists() {
        return match super::load_eval_data(&a.model, a.data.as_deref(), cfg)? {
            super::EvalData::Math(d) => Ok(Some(d)),
            super::EvalData::Rows(_) => Ok(None),
        };
    }
    let Some(desc) = state.map(|s| &s.data_config).filter(|d| d.get("task").is_some()) else { return Ok(None) };
    let c: MathDataConfig = serde_json::from_value(desc.clone()).map_err(|e| Error::Checkpoint(format!("the trainer state's data description is not readable: {e}")))?;
    if c.max_ctx > cfg.n_positions {
        return Err(Error::Input(format!("the data's context {} is longer than the model's {}", c.max_ctx, cfg.n_positions)));
    }
    Ok(Some(MathDataset::generate(&c)?))
}

/// The fresh task datasets of a --task run.
fn task_sets(a: &FinetuneArgs, task: Task, base: Option<&MathDataset>, ctx: usize) -> Result<Vec<TaskSet>> {
    let tasks: Vec<Task> = if task == Task::Mix { a.mix.clone() } else { vec![task] };
    if task == Task::Mix {
        let distinct: std::collections::HashSet<Task> = tasks.iter().copied().collect();
        if tasks.len() < 2 || distinct.len() != tasks.len() || distinct.contains(&Task::Mix) {
            return Err(Error::Input(format!("--mix needs two or more distinct tasks other than mix (got {:?})", tasks.iter().map(|t| t.name()).collect::<Vec<_>>())));
        }
    }
    let t = &a.task_data;
    let mut math = base.map(|d| d.config.clone()).unwrap_or_default();
    math.max_ctx = ctx;
    let seed = t.task_seed.unwrap_or(base.map_or(1, |d| d.config.seed + 1));
    macro_rules! set {
        ($($f:ident <- $g:ident),*) => { $(if let Some(v) = t.$g { math.$f = v; })* };
    }
    set!(num_7 <- task_num_7, num_extra <- task_num_extra, num_test <- task_num_test, num_noise <- task_num_noise, length <- task_length);
    if let Some(p) = &t.task_dup_powers {
        math.duplicate = true;
        math.dup_powers = p.clone();
    }
    if t.task_no_duplicate {
        math.duplicate = false;
    }
    let classify = |seed: u64, pool: usize| ClassifyConfig { pool, label_noise: t.classify_label_noise, seed, ..ClassifyConfig::default() };
    let mut sets = Vec::new();
    for (i, &k) in tasks.iter().enumerate().filter(|&(_, &k)| k != Task::Classify) {
        sets.push((i, finetune::math_task(k, &MathDataConfig { seed: seed + i as u64, ..math.clone() })?));
    }
    if let Some(i) = tasks.iter().position(|&k| k == Task::Classify) {
        let largest = sets.iter().filter_map(|(_, s)| match &s.data { TaskData::Math(d) => Some(d.train.rows()), _ => None }).max();
        let pool = t.classify_pool.or(largest).unwrap_or(ClassifyConfig::default().pool);
        let data = finetune::ClassifyTask::generate(&classify(seed + i as u64, pool), t.classify_test)?;
        sets.push((i, TaskSet { task: Task::Classify, data: TaskData::Classify(data) }));
    }
    sets.sort_by_key(|(i, _)| *i);
    Ok(sets.into_iter().map(|(_, s)| s).collect())
}

/// Fine-tune as `a` says, on any backend.
pub fn finetune_run<B: Backend>(dev: &Arc<Device<B>>, a: &FinetuneArgs) -> Result<FinetuneOutcome> {
    let t_start = Instant::now();
    if a.epochs == 0 {
        return Err(Error::Input("--epochs must be at least 1".into()));
    }
    if let (Ok(m), Ok(o)) = (a.model.canonicalize(), a.out.canonicalize()) {
        if m == o {
            return Err(Error::Input(format!("--out {} is the model's own directory; fine-tuning writes a new one", a.out.display())));
        }
    }
    let ck = checkpoint::load_checkpoint(&a.model)?;
    let cfg = ck.model.config.clone();
    let state = ck.train;
    if state.is_none() && !a.fresh_optimizer {
        return Err(Error::Checkpoint(format!(
            "{} has no optimizer state ({}, {}); fine-tuning resumes the AdamW moments and step count of the training run — pass --fresh-optimizer to start them from zero",
            a.model.display(),
            checkpoint::OPTIMIZER_FILE,
            checkpoint::TRAINER_STATE_FILE
        )));
    }
    let base_epoch = match &state {
        Some(s) if s.batch_in_epoch != 0 => {
            return Err(Error::Checkpoint(format!("{} was saved mid-epoch (batch {} of epoch {}); fine-tune from an epoch boundary", a.model.display(), s.batch_in_epoch, s.epoch)))
        }
        Some(s) => s.epoch as usize,
        None => ck.model.metadata.get(checkpoint::META_EPOCH).and_then(|e| e.parse().ok()).unwrap_or(0),
    };
    let base_data = base_dataset(a, &cfg, state.as_ref())?;

    // The fine-tuning rows and what is evaluated every epoch.
    let (set, evals, data_desc) = match (a.variant, a.task) {
        (Some(v), _) => {
            let d = base_data.clone().ok_or_else(|| Error::Input(format!("--variant needs the model's TinyMem data description: pass --data or put data.json beside {}", a.model.display())))?;
            finetune::check_model(&cfg, d.config.max_ctx)?;
            let rows = finetune::variant_rows(&d, v);
            let desc = serde_json::to_value(&d.config).unwrap();
            (FinetuneSet::lm(&format!("{v:?}").to_lowercase(), rows), vec![("base".to_string(), TaskData::Math(d))], desc)
        }
        (None, Some(task)) => {
            let ctx = a.task_data.task_max_ctx.unwrap_or(cfg.n_positions);
            finetune::check_model(&cfg, ctx)?;
            let sets = task_sets(a, task, base_data.as_ref(), ctx)?;
            let set = if sets.len() == 1 { FinetuneSet::of_task(&sets[0], ctx)? } else { FinetuneSet::mix(&sets, ctx, a.task_data.task_seed.unwrap_or(0))? };
            let single_math = match (sets.as_slice(), &base_data) {
                ([TaskSet { data: TaskData::Math(d), .. }], _) => Some(serde_json::to_value(&d.config).unwrap()),
                (_, Some(b)) => Some(serde_json::to_value(&b.config).unwrap()),
                _ => None,
            };
            let mut evals: Vec<(String, TaskData)> = sets.into_iter().map(|s| (s.task.name().to_string(), s.data)).collect();
            if let Some(b) = base_data.clone() {
                evals.push(("base".into(), TaskData::Math(b)));
            }
            (set, evals, single_math.unwrap_or(serde_json::Value::Null))
        }
        (None, None) => return Err(Error::Input("give --variant or --task".into())),
    };
    if set.rows.rows() == 0 {
        return Err(Error::Input("the fine-tuning set is empty (a variant of a run without noise or extra data?)".into()));
    }

    // The recipe: the checkpoint's, with overrides.
    let batch = match (a.batch, state.as_ref().and_then(|s| s.batch)) {
        (Some(b), _) => b,
        (None, Some(b)) => b as usize,
        (None, None) => match (&state, &base_data) {
            (Some(s), Some(d)) => finetune::infer_batch(d.train.rows(), s.step, s.epoch)?,
            _ => return Err(Error::Input("the checkpoint records no batch size and it cannot be inferred without its training state and data; pass --batch".into())),
        },
    };
    let mut adam = state.as_ref().map_or(AdamW::default(), |s| s.adam);
    adam.lr = a.lr.unwrap_or(adam.lr);
    adam.weight_decay = a.weight_decay.unwrap_or(adam.weight_decay);
    let seed = a.seed.or(state.as_ref().map(|s| s.seed)).unwrap_or(0);
    let mask_pad = a.loss_mask_pad || state.as_ref().and_then(|s| s.mask_pad).unwrap_or(false);

    // Fine-tuning rows are not the base run's dataset rows, so its per-example masks cannot follow.
    if cfg.example_tied_dropout.is_some() {
        return Err(Error::Input(format!("{} was trained with example-tied dropout; fine-tuning such a model is not supported", a.model.display())));
    }
    let mut model = Model::from_params(dev.clone(), cfg.clone(), &ck.model.params)?;
    let base_step = state.as_ref().map_or(0, |s| s.step);
    if let (Some(s), false) = (&state, a.fresh_optimizer) {
        model.upload_adam_state(&s.m, &s.v, s.step)?;
    }
    let optimizer = if a.fresh_optimizer { "fresh" } else { "resumed" };
    eprintln!(
        "fine-tuning {} (epoch {base_epoch}, step {base_step}; optimizer {optimizer}) on {} rows ({}), batch {batch}, lr {}, weight decay {}",
        a.model.display(),
        set.rows.rows(),
        set.parts.iter().map(|p| format!("{} {}", p.name, p.len)).collect::<Vec<_>>().join(", "),
        adam.lr,
        adam.weight_decay
    );

    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let mut out_state = TrainState::new(model.num_params(), seed, adam, data_desc.clone());
    out_state.batch = Some(batch as u64);
    out_state.mask_pad = Some(mask_pad);
    if !data_desc.is_null() {
        super::write_json(&a.out.join("data.json"), &data_desc)?;
    }
    let what = match (a.variant, a.task) {
        (Some(v), _) => json!({ "variant": v }),
        (_, Some(Task::Mix)) => json!({ "task": "mix", "mix": a.mix }),
        (_, t) => json!({ "task": t }),
    };
    let meta = json!({ "source": a.model, "finetune": what, "base_epoch": base_epoch, "base_step": base_step, "optimizer": optimizer }).to_string();
    let last = base_epoch + a.epochs;
    let mut rec = EpochRecorder::new(&a.out, out_state, 1, last, vec![("memsieve_finetune".into(), meta)]);

    let evaluate_all = |model: &mut Model<B>, evals: &[(String, TaskData)]| -> Result<Vec<(String, TaskEval)>> {
        evals.iter().map(|(n, d)| Ok((n.clone(), finetune::evaluate(model, d, a.eval_batch)?))).collect()
    };
    let before = evaluate_all(&mut model, &evals)?;
    let mut epochs = vec![EpochResult { epoch: base_epoch, finetune_epoch: 0, train_loss: None, seconds: None, evals: before }];
    eprintln!("{}", epoch_line(&epochs[0]));

    let opts = TrainOptions { epochs: last, batch, adam, seed, mask_pad };
    let mut train_seconds = 0.0;
    let targets = |m: &Model<B>, b: &crate::data::Batch| set.batch_targets(m, b, mask_pad);
    // Plain AdamW steps: the base run's regularizer (if any) is not continued.
    let mut plain = crate::regularize::Active::None;
    train_with_targets(&mut model, &set.rows, &opts, Position { epoch: base_epoch, batch: 0 }, &mut plain, targets, |model, e, _| {
        train_seconds += e.seconds;
        let mut row = rec.row(model, e);
        let r = EpochResult { epoch: e.epoch, finetune_epoch: e.epoch - base_epoch, train_loss: Some(e.mean_loss), seconds: Some(e.seconds), evals: evaluate_all(model, &evals)? };
        eprintln!("{}", epoch_line(&r));
        row["finetune_epoch"] = json!(r.finetune_epoch);
        row["eval"] = eval_map(&r.evals);
        epochs.push(r);
        rec.record(model, e.epoch, row)
    })?;

    let outcome = FinetuneOutcome {
        base_epoch,
        base_step,
        optimizer,
        batch,
        adam,
        seed,
        rows: set.rows.rows(),
        parts: set.parts.clone(),
        epochs,
        train_seconds,
        wall_seconds: t_start.elapsed().as_secs_f64(),
    };
    let epochs_json: Vec<serde_json::Value> = outcome.epochs.iter().map(|r| json!({ "epoch": r.epoch, "finetune_epoch": r.finetune_epoch, "train_loss": r.train_loss, "seconds": r.seconds, "eval": eval_map(&r.evals) })).collect();
    let mut summary = serde_json::to_value(&outcome).unwrap();
    summary["epochs"] = json!(epochs_json);
    summary["source"] = json!(a.model);
    summary["finetune"] = what;
    summary["mask_pad"] = json!(mask_pad);
    super::write_json(&a.out.join("finetune.json"), &summary)?;
    crate::error::write_atomic(a.out.join("finetune.csv"), csv(&outcome).as_bytes())?;
    Ok(outcome)
}

fn eval_map(evals: &[(String, TaskEval)]) -> serde_json::Value {
    serde_json::Value::Object(evals.iter().map(|(n, e)| (n.clone(), serde_json::to_value(e).unwrap())).collect())
}

fn cell(e: &TaskEval) -> String {
    let mem = e.memorization().map_or("-".into(), |m| format!("{m:.1}%"));
    let classes = e.classes();
    let classes = if classes.is_empty() { String::new() } else { format!(" ({classes})") };
    format!("mem {mem}{classes}, acc {:.2}%{}", 100.0 * e.accuracy(), e.perplexity().map_or(String::new(), |p| format!(", ppl {p:.3}")))
}

fn epoch_line(r: &EpochResult) -> String {
    let evals: Vec<String> = r.evals.iter().map(|(n, e)| format!("{n}: {}", cell(e))).collect();
    format!("epoch {:>5} (+{})  {}", r.epoch, r.finetune_epoch, evals.join("  "))
}

/// The per-epoch table: train loss, time, and per evaluated set % memorized and accuracy.
pub fn print_table(o: &FinetuneOutcome) {
    let names: Vec<&str> = o.epochs.first().map(|r| r.evals.iter().map(|(n, _)| n.as_str()).collect()).unwrap_or_default();
    let mut head = format!("{:>6} {:>5} {:>10} {:>8}", "epoch", "+ft", "loss", "s");
    for n in &names {
        head += &format!(" {:>22} {:>9} {:>9}", format!("{n} mem % (m/t)"), format!("{n} acc"), "ppl");
    }
    println!("\n{head}");
    for r in &o.epochs {
        let mut line = format!(
            "{:>6} {:>5} {:>10} {:>8}",
            r.epoch,
            r.finetune_epoch,
            r.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            r.seconds.map_or("-".into(), |s| format!("{s:.1}"))
        );
        for (_, e) in &r.evals {
            let mem = e.memorization().map_or("-".into(), |m| format!("{m:.1}"));
            let classes = e.classes();
            let mem = if classes.is_empty() { mem } else { format!("{mem} ({classes})") };
            line += &format!(" {:>22} {:>9.2} {:>9}", mem, 100.0 * e.accuracy(), e.perplexity().map_or("-".into(), |p| format!("{p:.3}")));
        }
        println!("{line}");
    }
}

fn csv(o: &FinetuneOutcome) -> String {
    let mut s = String::from("epoch,finetune_epoch,train_loss,seconds,set,memorized_percent,accuracy,perplexity\n");
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    for r in &o.epochs {
        for (n, e) in &r.evals {
            s += &format!("{},{},{},{},{},{},{},{}\n", r.epoch, r.finetune_epoch, opt(r.train_loss), opt(r.seconds), n, opt(e.memorization()), e.accuracy(), opt(e.perplexity()));
        }
    }
    s
}


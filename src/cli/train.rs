//! `memsieve train`: train a TinyMem model with periodic evaluation and checkpoints; `--resume`
//! continues a run exactly (same shuffles, same AdamW state).

use super::report::{self, Report};
use super::Context;
use crate::backend::Backend;
use crate::checkpoint::{self, TrainState};
use crate::data::{MathDataConfig, MathDataset, MathTask, TokenMatrix};
use crate::error::{Error, Result};
use crate::metrics::MemWindow;
use crate::model::config::ModelConfig;
use crate::model::{AdamW, Model};
use crate::backend::EtdMode;
use crate::regularize::etd::EtdConfig;
use crate::regularize::{Active, Regularizer};
use crate::train::{train, EpochEnd, Position, TrainOptions};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The TinyMem math data options (tinymem.md §2).
#[derive(Args, Clone, Debug)]
pub struct MathDataArgs {
    /// increment (x+k) or mult (k·x mod 20134).
    #[arg(long, default_value = "increment")]
    pub task: String,
    #[arg(long, default_value_t = 20_000)]
    pub num_7: usize,
    #[arg(long, default_value_t = 3_000)]
    pub num_extra: usize,
    #[arg(long, default_value_t = 1_000)]
    pub num_test: usize,
    #[arg(long, default_value_t = 1_000)]
    pub num_noise: usize,
    /// Numbers per sequence.
    #[arg(long, default_value_t = 20)]
    pub length: usize,
    /// Context length (sequences are right-padded to it).
    #[arg(long, default_value_t = 150)]
    pub max_ctx: usize,
    /// Seed of the noise, duplication and backdoor trigger.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// Backdoor run (trigger "100"+seed) instead of noise.
    #[arg(long)]
    pub backdoor: bool,
    /// Repeat the noised sequences 10^p times by class.
    #[arg(long)]
    pub duplicate: bool,
    /// Duplication powers, comma-separated.
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    pub dup_powers: Vec<u32>,
}

impl MathDataArgs {
    pub fn config(&self) -> Result<MathDataConfig> {
        let c = MathDataConfig {
            task: MathTask::parse(&self.task)?,
            num_7: self.num_7,
            num_extra: self.num_extra,
            num_test: self.num_test,
            num_noise: self.num_noise,
            length: self.length,
            max_ctx: self.max_ctx,
            seed: self.data_seed,
            backdoor: self.backdoor,
            duplicate: self.duplicate,
            dup_powers: self.dup_powers.clone(),
            ..MathDataConfig::default()
        };
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Run directory: model, optimizer state, metrics.jsonl, data.json, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: MathDataArgs,
    /// Train on a JSONL token file ({"tokens": [...]} per line) instead of the math data.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Vocabulary size for --jsonl data (the math tokenizer's 14 otherwise).
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 3500)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    /// Seed of the initialisation and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Exclude padding targets from the loss (the reference trains on them).
    #[arg(long)]
    pub loss_mask_pad: bool,
    /// Evaluate every N epochs (and at the end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    /// Keep a model snapshot in checkpoints/epoch-N every N epochs (0: only the final model).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue the run saved in --out.
    #[arg(long)]
    pub resume: bool,
    /// Regularizer during training (tinymem.md §5.1); a resumed run keeps the one it was started with.
    #[arg(long, value_enum)]
    pub regularizer: Option<RegularizerChoice>,
    /// Spectral penalty weight λ (the spec's grid: 0.001, 0.01, 0.1).
    #[arg(long, default_value_t = 0.01)]
    pub spectral_lambda: f32,
    /// The reference's linear spectral penalty (λ/2)·Σσ instead of Yoshida & Miyato's (λ/2)·Σσ².
    #[arg(long)]
    pub spectral_linear: bool,
    /// Loss truncation: drop samples at or above this top fraction of recent losses (0.01, 0.05, 0.1).
    #[arg(long, default_value_t = 0.05)]
    pub dropc: f64,
    /// Loss truncation's window: the ring buffer of recent losses and how often (in samples) the
    /// cutoff is recomputed (the reference's 10,000).
    #[arg(long, default_value_t = crate::regularize::truncation::WINDOW)]
    pub truncation_window: usize,
    /// Example-tied dropout over positions, as the reference codes it (default: hidden channels).
    #[arg(long)]
    pub etd_positions: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RegularizerChoice {
    None,
    /// Spectral-norm penalty over per-head/per-matrix blocks (--spectral-lambda, --spectral-linear).
    Spectral,
    /// Drop the highest-loss samples of each batch (--dropc).
    LossTruncation,
    /// Per-example masks on every block's input (--etd-positions).
    ExampleTiedDropout,
}

impl TrainArgs {
    /// The regularizer these flags ask for.
    pub fn regularizer(&self) -> Regularizer {
        match self.regularizer.unwrap_or(RegularizerChoice::None) {
            RegularizerChoice::None => Regularizer::None,
            RegularizerChoice::Spectral => Regularizer::Spectral { lambda: self.spectral_lambda, linear: self.spectral_linear },
            RegularizerChoice::LossTruncation => Regularizer::LossTruncation { dropc: self.dropc, window: self.truncation_window },
            RegularizerChoice::ExampleTiedDropout => {
                Regularizer::ExampleTiedDropout { mode: if self.etd_positions { EtdMode::Positions } else { EtdMode::Channels } }
            }
        }
    }
}

/// What a finished run hands back (the demo builds on it).
pub struct TrainOutcome {
    pub reports: Vec<Report>,
    pub seconds: f64,
}

pub fn run(ctx: &Context, a: TrainArgs) -> Result<()> {
    super::on_device!(ctx, |dev| run_on(dev, a))
}

fn run_on<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, a: TrainArgs) -> Result<()> {
    let out = train_run(dev, &a)?;
    eprintln!("trained in {:.1} s; results in {}", out.seconds, a.out.display());
    if let Some(r) = out.reports.last() {
        report::print(r);
    }
    Ok(())
}

enum TrainData {
    Math(Box<MathDataset>),
    Tokens(TokenMatrix),
}

impl TrainData {
    fn train_rows(&self) -> &TokenMatrix {
        match self {
            TrainData::Math(d) => &d.train,
            TrainData::Tokens(t) => t,
        }
    }
}

/// Train (or resume) as `a` says, on any backend.
pub fn train_run<B: Backend>(dev: &std::sync::Arc<crate::backend::Device<B>>, a: &TrainArgs) -> Result<TrainOutcome> {
    let t_start = Instant::now();
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let adam = AdamW { lr: a.lr, weight_decay: a.weight_decay, ..AdamW::default() };

    // Data, model and position: fresh, or from the run directory.
    let (data, mut model, start, mut state, reg) = if a.resume {
        let ck = checkpoint::load_checkpoint(&a.out)?;
        let state = ck.train.ok_or_else(|| {
            Error::Checkpoint(format!("{} has no training state to resume (optimizer.safetensors)", a.out.display()))
        })?;
        let data = data_from_description(&state.data_config, a)?;
        let mut model = Model::from_params(dev.clone(), ck.model.config, &ck.model.params)?;
        model.upload_adam_state(&state.m, &state.v, state.step)?;
        let start = Position { epoch: state.epoch as usize, batch: state.batch_in_epoch as usize };
        let reg = match state.regularizer.as_ref().map(|r| serde_json::from_value::<Regularizer>(r["regularizer"].clone())) {
            None => Regularizer::None,
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(Error::Checkpoint(format!("the run's regularizer is not readable: {e}"))),
        };
        if a.regularizer.is_some() && a.regularizer() != reg {
            return Err(Error::Input(format!("{} was trained with regularizer {reg:?}, not {:?}", a.out.display(), a.regularizer())));
        }
        eprintln!("resuming {} at epoch {}, step {}", a.out.display(), start.epoch, state.step);
        (data, model, start, state, reg)
    } else {
        let (data, description, mut cfg) = fresh_data(a)?;
        let reg = a.regularizer();
        if let Regularizer::ExampleTiedDropout { mode } = reg {
            cfg.example_tied_dropout = Some(EtdConfig::new(mode, a.seed));
        }
        let model = Model::new(dev.clone(), cfg, a.seed)?;
        let state = TrainState::new(model.num_params(), a.seed, adam, description);
        (data, model, Position::default(), state, reg)
    };
    let mut active = Active::new(&reg, &model, state.seed)?;
    if a.resume {
        let saved = state.regularizer.as_ref().map_or(serde_json::Value::Null, |r| r["state"].clone());
        active.restore(&model, &saved, &state.extra)?;
    }
    if reg != Regularizer::None {
        eprintln!("regularizer: {reg:?}");
    }
    if let TrainData::Math(d) = &data {
        super::write_json(&a.out.join("data.json"), &d.config)?;
        eprintln!("{}", d.summary());
    }
    state.batch = Some(a.batch as u64);
    state.mask_pad = Some(a.loss_mask_pad);
    let opts = TrainOptions { epochs: a.epochs, batch: a.batch, adam: state.adam, seed: state.seed, mask_pad: a.loss_mask_pad };
    let window = MemWindow::tinymem();
    let mut reports = Vec::new();
    let mut rec = EpochRecorder::new(&a.out, state, a.checkpoint_every, opts.epochs, Vec::new());

    train(&mut model, data.train_rows(), &opts, start, &mut active, |model, e, active| {
        let mut row = rec.row(model, e);
        if e.epoch == opts.epochs || (a.eval_every > 0 && e.epoch % a.eval_every == 0) {
            if let TrainData::Math(d) = &data {
                let mut r = report::evaluate(model, d, &window, 256)?;
                r.epoch = Some(e.epoch);
                eprintln!("{}", epoch_line(e, &r));
                row["eval"] = serde_json::to_value(&r).unwrap();
                reports.push(r);
            }
        }
        // The regularizer's state travels with the optimizer state (exact --resume).
        let (js, tensors) = active.save(model);
        rec.state.regularizer = Some(json!({"regularizer": reg, "state": js}));
        rec.state.extra = tensors;
        rec.record(model, e.epoch, row)
    })?;
    Ok(TrainOutcome { reports, seconds: t_start.elapsed().as_secs_f64() })
}

/// One line per evaluated epoch: loss, accuracy, % memorized, speed.
pub fn epoch_line(e: &EpochEnd, r: &Report) -> String {
    format!(
        "epoch {:>5}  train loss {:.4}  test acc {:.2}% (main {:.2}% of {:.2}%)  memorized {}{}  ({:.0} tok/s)",
        e.epoch,
        e.mean_loss,
        100.0 * r.accuracy,
        100.0 * r.main_accuracy,
        100.0 * r.accuracy_ceiling,
        r.memorized_percent.map_or("-".into(), |p| format!("{p:.1}%")),
        r.backdoor_asr.map_or(String::new(), |a| format!("  backdoor ASR {a:.1}%")),
        e.tokens_per_s
    )
}

/// Per-epoch bookkeeping shared by `train` and `finetune`: the `metrics.jsonl` row (also kept in
/// the training state), the full checkpoint (model + AdamW state) in the run directory, and the
/// model snapshot `checkpoints/epoch-N`, both named by the true epoch (tinymem.md §8 item 17).
pub struct EpochRecorder {
    pub out: PathBuf,
    pub state: TrainState,
    /// Save every N epochs (0: only the last); the last epoch always saves the full checkpoint.
    pub checkpoint_every: usize,
    pub last_epoch: usize,
    /// Extra safetensors metadata on every saved model.
    pub metadata: Vec<(String, String)>,
    t_start: Instant,
}

impl EpochRecorder {
    pub fn new(out: &Path, state: TrainState, checkpoint_every: usize, last_epoch: usize, metadata: Vec<(String, String)>) -> Self {
        EpochRecorder { out: out.to_path_buf(), state, checkpoint_every, last_epoch, metadata, t_start: Instant::now() }
    }

    /// The epoch's row before any evaluation is added.
    pub fn row<B: Backend>(&self, model: &Model<B>, e: &EpochEnd) -> serde_json::Value {
        let mut row = json!({
            "epoch": e.epoch, "step": model.step, "train_loss": e.mean_loss, "tokens_per_s": e.tokens_per_s,
            "epoch_seconds": e.seconds, "elapsed_s": self.t_start.elapsed().as_secs_f64(),
        });
        if let Some((name, value)) = e.extra {
            row[name] = json!(value);
        }
        row
    }

    /// Append `row` to metrics.jsonl and save what is due at `epoch`.
    pub fn record<B: Backend>(&mut self, model: &Model<B>, epoch: usize, row: serde_json::Value) -> Result<()> {
        append_line(&self.out.join("metrics.jsonl"), &row)?;
        self.state.metrics.push(row);
        let snapshot = self.checkpoint_every > 0 && epoch.is_multiple_of(self.checkpoint_every);
        if epoch == self.last_epoch || snapshot {
            let meta: Vec<(&str, &str)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            save_state(model, &self.out, &mut self.state, epoch, &meta)?;
            if snapshot {
                let dir = self.out.join("checkpoints").join(format!("epoch-{epoch}"));
                let ep = epoch.to_string();
                let mut meta = meta.clone();
                meta.push(("epoch", &ep));
                checkpoint::save_model(&dir, &model.cfg, &model.download_params(), &meta)?;
            }
        }
        Ok(())
    }
}

fn save_state<B: Backend>(model: &Model<B>, dir: &Path, state: &mut TrainState, epoch: usize, meta: &[(&str, &str)]) -> Result<()> {
    let (m, v) = model.download_adam_state().expect("training has started");
    state.m = m;
    state.v = v;
    state.step = model.step;
    state.epoch = epoch as u64;
    state.batch_in_epoch = 0;
    checkpoint::save_checkpoint(dir, &model.cfg, &model.download_params(), state, meta)
}

fn append_line(path: &Path, row: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{row}").map_err(|e| Error::io(path, e))
}

/// The model configuration for a run: TinyMem math, with the context of the data.
fn model_config(layers: usize, vocab: usize, ctx: usize) -> ModelConfig {
    let mut cfg = ModelConfig::tinymem_math(layers);
    cfg.n_positions = ctx;
    if vocab != cfg.vocab_size {
        cfg.vocab_size = vocab;
        cfg.bos_token_id = None;
        cfg.eos_token_id = None;
        cfg.pad_token_id = Some(0);
    }
    cfg
}

fn fresh_data(a: &TrainArgs) -> Result<(TrainData, serde_json::Value, ModelConfig)> {
    if let Some(path) = &a.jsonl {
        let vocab = a.vocab.unwrap_or(crate::data::tokenizer::VOCAB);
        let pad = if vocab == crate::data::tokenizer::VOCAB { crate::data::tokenizer::PAD } else { 0 };
        let rows = crate::data::load_jsonl(path, vocab, a.data.max_ctx, pad)?;
        let desc = json!({"jsonl": path.display().to_string(), "vocab": vocab, "max_ctx": a.data.max_ctx});
        Ok((TrainData::Tokens(rows.tokens), desc, model_config(a.layers, vocab, a.data.max_ctx)))
    } else {
        let cfg = a.data.config()?;
        let data = MathDataset::generate(&cfg)?;
        let desc = serde_json::to_value(&cfg).unwrap();
        Ok((TrainData::Math(Box::new(data)), desc, model_config(a.layers, crate::data::tokenizer::VOCAB, cfg.max_ctx)))
    }
}

fn data_from_description(desc: &serde_json::Value, a: &TrainArgs) -> Result<TrainData> {
    if let Some(path) = desc.get("jsonl").and_then(|p| p.as_str()) {
        let vocab = desc["vocab"].as_u64().unwrap_or(14) as usize;
        let ctx = desc["max_ctx"].as_u64().unwrap_or(a.data.max_ctx as u64) as usize;
        let pad = if vocab == crate::data::tokenizer::VOCAB { crate::data::tokenizer::PAD } else { 0 };
        return Ok(TrainData::Tokens(crate::data::load_jsonl(path, vocab, ctx, pad)?.tokens));
    }
    let cfg: MathDataConfig = serde_json::from_value(desc.clone())
        .map_err(|e| Error::Checkpoint(format!("the run's data description is not readable: {e}")))?;
    Ok(TrainData::Math(Box::new(MathDataset::generate(&cfg)?)))
}

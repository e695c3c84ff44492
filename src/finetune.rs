//! Fine-tuning data (tinymem.md §5.2; depn-attention.md Part B): which rows a fine-tuning run
//! trains on and with which targets, and how each task's memorization is measured.
//!
//! Two kinds of run continue a trained model:
//! - a **variant** of the model's own data: `clean` (the clean originals of the noised sequences,
//!   for backdoor runs the triggered sequences with their correct continuations), `extra` (every
//!   training row except the noise set) or `both` (extra + clean);
//! - a **task**: a fresh TinyMem dataset (increment, mult, a backdoor run, the classification
//!   variant) with its own noised rows, or an even `mix` of several (multi-task fine-tuning).
//!
//! All these tasks share the 14-token math vocabulary: the classification rows `^x₁ x₂ x₃$a` are
//! written by the same tokenizer and their answers are digit tokens (src/data/classify.rs), so no
//! mapping is needed; a model with another vocabulary is refused.

use crate::backend::{Backend, IGNORE_TARGET};
use crate::cli::report::{self, Report};
use crate::data::classify::{ClassifyConfig, ClassifyData};
use crate::data::{tokenizer, Batch, MathDataConfig, MathDataset, MathTask, TokenMatrix};
use crate::error::{Error, Result};
use crate::metrics::MemWindow;
use crate::model::config::ModelConfig;
use crate::model::Model;
use crate::rng::{purpose, Stream};
use clap::ValueEnum;
use serde::Serialize;
use std::ops::Range;

/// Stream id (within `purpose::DATA`) of the mix's row sample; the math data uses 1–6, classify 7.
const MIX_STREAM: u32 = 8;

/// Fine-tuning on a variant of the model's own training data (tinymem.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The clean originals of the noised (or backdoored) sequences, one copy each.
    Clean,
    /// All training data except the noise set: the clean 7-rows and the extra distributions.
    Extra,
    /// Extra + clean.
    Both,
}

/// The rows of a variant.
pub fn variant_rows(data: &MathDataset, v: Variant) -> TokenMatrix {
    let extra = || data.train.select(&data.non_artifact_rows().collect::<Vec<_>>());
    match v {
        Variant::Clean => data.clean_for_noisy.clone(),
        Variant::Extra => extra(),
        Variant::Both => {
            let mut rows = extra();
            rows.extend(&data.clean_for_noisy);
            rows
        }
    }
}

/// A fine-tuning task of the multi-task study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Increment,
    Mult,
    /// A backdoor run of the increment task (trigger "100"+seed).
    Backdoor,
    /// The classification variant `^x₁ x₂ x₃$a` (answer loss only, label noise).
    Classify,
    /// An even mix of the `--mix` tasks.
    Mix,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Increment => "increment",
            Task::Mult => "mult",
            Task::Backdoor => "backdoor",
            Task::Classify => "classify",
            Task::Mix => "mix",
        }
    }
}

/// The classification task: `noisy` holds the trained rows (label noise included); `truth` the
/// same starts and `test` more, all labelled by the rule, for the held-out accuracy.
#[derive(Clone, Debug)]
pub struct ClassifyTask {
    pub noisy: ClassifyData,
    pub truth: ClassifyData,
    pub test_rows: Range<usize>,
}

impl ClassifyTask {
    pub fn generate(cfg: &ClassifyConfig, test: usize) -> Result<Self> {
        if test == 0 {
            return Err(Error::Input("the classification task needs at least one held-out row".into()));
        }
        let noisy = ClassifyData::generate(cfg)?;
        let truth = ClassifyData::generate(&ClassifyConfig { pool: cfg.pool + test, label_noise: 0.0, ..cfg.clone() })?;
        Ok(ClassifyTask { noisy, truth, test_rows: cfg.pool..cfg.pool + test })
    }

    /// Trained rows whose label differs from the rule's answer: the ones that can be memorized.
    pub fn mislabelled_rows(&self) -> Vec<usize> {
        self.noisy.mislabelled().iter().enumerate().filter(|&(_, &m)| m).map(|(i, _)| i).collect()
    }
}

/// What the classification task measures.
#[derive(Clone, Debug, Serialize)]
pub struct ClassifyEval {
    /// Held-out rows whose true answer is the top option (of the ten digits).
    pub accuracy: f64,
    /// Mislabelled training rows tested, and those whose noisy label is the top option.
    pub tested: usize,
    pub memorized: usize,
    pub memorized_percent: f64,
    /// Correctly labelled training rows answered correctly.
    pub train_accuracy: f64,
}

fn top_option_rate<B: Backend>(model: &mut Model<B>, data: &ClassifyData, rows: &[usize], batch: usize) -> Result<(usize, f64)> {
    if rows.is_empty() {
        return Ok((0, 0.0));
    }
    let e = crate::experiment::predict::answer_eval(model, data, rows, batch)?;
    let hits = e.gap.iter().filter(|&&g| g > 0.0).count();
    Ok((hits, hits as f64 / rows.len() as f64))
}

pub fn evaluate_classify<B: Backend>(model: &mut Model<B>, task: &ClassifyTask, batch: usize) -> Result<ClassifyEval> {
    let test: Vec<usize> = task.test_rows.clone().collect();
    let (_, accuracy) = top_option_rate(model, &task.truth, &test, batch)?;
    let wrong = task.mislabelled_rows();
    let (memorized, rate) = top_option_rate(model, &task.noisy, &wrong, batch)?;
    let right: Vec<usize> = (0..task.noisy.len()).filter(|r| !wrong.contains(r)).collect();
    let (_, train_accuracy) = top_option_rate(model, &task.noisy, &right, batch)?;
    Ok(ClassifyEval { accuracy, tested: wrong.len(), memorized, memorized_percent: 100.0 * rate, train_accuracy })
}

/// One task's fresh data.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum TaskData {
    Math(MathDataset),
    Classify(ClassifyTask),
}

/// A task's data with its name (`increment`, `mult`, `backdoor`, `classify`).
#[derive(Clone, Debug)]
pub struct TaskSet {
    pub task: Task,
    pub data: TaskData,
}

impl TaskSet {
    /// The training rows padded to `ctx`, with the classification answer position of each row.
    fn rows(&self, ctx: usize) -> Result<(TokenMatrix, Vec<Option<usize>>, Vec<usize>)> {
        match &self.data {
            TaskData::Math(d) => {
                let n = d.train.rows();
                Ok((d.train.clone(), vec![None; n], d.artifact_rows().collect()))
            }
            TaskData::Classify(c) => {
                let t = &c.noisy.tokens;
                if t.cols > ctx {
                    return Err(Error::Input(format!("classification rows are {} tokens, longer than the model's context {ctx}", t.cols)));
                }
                let mut rows = TokenMatrix::with_capacity(ctx, t.rows());
                let mut row = vec![tokenizer::PAD; ctx];
                for r in 0..t.rows() {
                    row[..t.cols].copy_from_slice(t.row(r));
                    rows.push_row(&row);
                }
                let answers = (0..t.rows()).map(|r| Some(c.noisy.query_pos(r))).collect();
                Ok((rows, answers, c.mislabelled_rows()))
            }
        }
    }
}

/// A task's evaluation.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum TaskEval {
    Math(Report),
    Classify(ClassifyEval),
}

impl TaskEval {
    /// % memorized (a backdoor run: the attack success rate).
    pub fn memorization(&self) -> Option<f64> {
        match self {
            TaskEval::Math(r) => r.backdoor_asr.or(r.memorized_percent),
            TaskEval::Classify(c) => Some(c.memorized_percent),
        }
    }

    /// Clean accuracy (math: the mean over the clean test sets; classify: held-out answers).
    pub fn accuracy(&self) -> f64 {
        match self {
            TaskEval::Math(r) => r.accuracy,
            TaskEval::Classify(c) => c.accuracy,
        }
    }

    pub fn perplexity(&self) -> Option<f64> {
        match self {
            TaskEval::Math(r) => Some(r.perplexity),
            TaskEval::Classify(_) => None,
        }
    }

    /// Per duplication class "m/t" (math noise runs), for the table.
    pub fn classes(&self) -> String {
        match self {
            TaskEval::Math(r) if r.backdoor_asr.is_none() => r.memorization.iter().map(|c| format!("×{} {}/{}", c.copies, c.memorized, c.tested)).collect::<Vec<_>>().join(" "),
            TaskEval::Math(_) => String::new(),
            TaskEval::Classify(c) => format!("{}/{}", c.memorized, c.tested),
        }
    }
}

pub fn evaluate<B: Backend>(model: &mut Model<B>, data: &TaskData, batch: usize) -> Result<TaskEval> {
    Ok(match data {
        TaskData::Math(d) => TaskEval::Math(report::evaluate(model, d, &MemWindow { batch, ..MemWindow::tinymem() }, batch)?),
        TaskData::Classify(c) => TaskEval::Classify(evaluate_classify(model, c, batch)?),
    })
}

/// A block of fine-tuning rows from one source.
#[derive(Clone, Debug, Serialize)]
pub struct Part {
    pub name: String,
    pub start: usize,
    pub len: usize,
    /// Rows (indices into the whole set) holding that source's artifacts.
    pub artifact_rows: usize,
}

/// The rows a fine-tuning run trains on. Next-token targets everywhere except classification
/// rows, which are trained on their answer only.
#[derive(Clone, Debug)]
pub struct FinetuneSet {
    pub rows: TokenMatrix,
    /// Per row: the position whose next token is the answer (classification rows).
    pub answer_at: Vec<Option<usize>>,
    pub parts: Vec<Part>,
    /// Indices of the artifact rows (noised, poisoned or mislabelled) in `rows`.
    pub artifacts: Vec<usize>,
}

impl FinetuneSet {
    /// Plain next-token rows.
    pub fn lm(name: &str, rows: TokenMatrix) -> Self {
        let n = rows.rows();
        FinetuneSet { answer_at: vec![None; n], parts: vec![Part { name: name.into(), start: 0, len: n, artifact_rows: 0 }], artifacts: Vec::new(), rows }
    }

    fn push(&mut self, name: &str, rows: &TokenMatrix, answers: &[Option<usize>], artifacts: &[usize]) {
        let start = self.rows.rows();
        self.parts.push(Part { name: name.into(), start, len: rows.rows(), artifact_rows: artifacts.len() });
        self.rows.extend(rows);
        self.answer_at.extend_from_slice(answers);
        self.artifacts.extend(artifacts.iter().map(|&r| start + r));
    }

    /// One task's training rows, padded to `ctx`.
    pub fn of_task(set: &TaskSet, ctx: usize) -> Result<Self> {
        Self::mix(std::slice::from_ref(set), ctx, 0)
    }

    /// An even mix (multi-task fine-tuning): every task contributes the same number of rows, the
    /// smallest task's training-set size. A task keeps all its artifact rows (so its memorization
    /// is measured on rows it was trained on) and a seeded sample of its other rows.
    pub fn mix(sets: &[TaskSet], ctx: usize, seed: u64) -> Result<Self> {
        let blocks = sets.iter().map(|s| s.rows(ctx)).collect::<Result<Vec<_>>>()?;
        let each = blocks.iter().map(|b| b.0.rows()).min().unwrap_or(0);
        if each == 0 {
            return Err(Error::Input("a fine-tuning task has no training rows".into()));
        }
        let mut out = FinetuneSet { rows: TokenMatrix::new(ctx), answer_at: Vec::new(), parts: Vec::new(), artifacts: Vec::new() };
        for (i, (set, (rows, answers, art))) in sets.iter().zip(&blocks).enumerate() {
            if rows.cols != ctx {
                return Err(Error::Input(format!("the {} data has context {}, the model {ctx}", set.task.name(), rows.cols)));
            }
            if art.len() > each {
                return Err(Error::Input(format!(
                    "the {} task has {} artifact rows, more than the {each} rows each task contributes to an even mix (reduce its noise or duplication)",
                    set.task.name(),
                    art.len()
                )));
            }
            let mut is_art = vec![false; rows.rows()];
            art.iter().for_each(|&r| is_art[r] = true);
            let others: Vec<usize> = (0..rows.rows()).filter(|&r| !is_art[r]).collect();
            let mut rng = Stream::new(seed, purpose::DATA, MIX_STREAM + i as u32);
            let mut keep: Vec<usize> = art.clone();
            keep.extend(rng.sample(others.len(), each - art.len()).into_iter().map(|j| others[j]));
            keep.sort_unstable();
            let picked_art: Vec<usize> = keep.iter().enumerate().filter(|&(_, &r)| is_art[r]).map(|(j, _)| j).collect();
            let picked_answers: Vec<Option<usize>> = keep.iter().map(|&r| answers[r]).collect();
            out.push(set.task.name(), &rows.select(&keep), &picked_answers, &picked_art);
        }
        Ok(out)
    }

    /// The targets of a batch: next-token targets, or for a classification row its answer only.
    pub fn batch_targets<B: Backend>(&self, model: &Model<B>, batch: &Batch, mask_pad: bool) -> Vec<u32> {
        let t = batch.cols;
        let mut tg = model.lm_targets(&batch.tokens, batch.len(), t, mask_pad);
        for (b, &r) in batch.rows.iter().enumerate() {
            if let Some(p) = self.answer_at[r] {
                let row = &mut tg[b * t..(b + 1) * t];
                let answer = row[p];
                row.fill(IGNORE_TARGET);
                row[p] = answer;
            }
        }
        tg
    }
}

/// Fine-tuning tasks need the math vocabulary and data that fits the model's context.
pub fn check_model(cfg: &ModelConfig, ctx: usize) -> Result<()> {
    if cfg.vocab_size != tokenizer::VOCAB {
        return Err(Error::Input(format!(
            "the model's vocabulary has {} tokens; the TinyMem math and classification tasks use the {}-token math vocabulary",
            cfg.vocab_size,
            tokenizer::VOCAB
        )));
    }
    if ctx > cfg.n_positions {
        return Err(Error::Input(format!("the fine-tuning data's context {ctx} is longer than the model's {}", cfg.n_positions)));
    }
    Ok(())
}

/// A math task's fresh data from a configuration (sizes, length, context, duplication, seed).
pub fn math_task(task: Task, math: &MathDataConfig) -> Result<TaskSet> {
    let kind = match task {
        Task::Increment | Task::Backdoor => MathTask::Increment,
        Task::Mult => MathTask::Mult,
        Task::Classify | Task::Mix => return Err(Error::Input(format!("{} is not a math task", task.name()))),
    };
    let c = MathDataConfig { task: kind, backdoor: task == Task::Backdoor, ..math.clone() };
    Ok(TaskSet { task, data: TaskData::Math(MathDataset::generate(&c)?) })
}

/// The batch size of a run that recorded none: the one b with ⌈rows / b⌉ = steps / epochs.
pub fn infer_batch(rows: usize, steps: u64, epochs: u64) -> Result<usize> {
    let ask = |why: String| Err(Error::Input(format!("{why}; pass --batch")));
    if epochs == 0 || steps == 0 || !steps.is_multiple_of(epochs) {
        return ask(format!("the checkpoint's batch size is not recorded and {steps} steps over {epochs} epochs do not give it"));
    }
    let per_epoch = (steps / epochs) as usize;
    let fits: Vec<usize> = (1..=rows).filter(|&b| rows.div_ceil(b) == per_epoch).collect();
    match fits.as_slice() {
        [b] => Ok(*b),
        [] => ask(format!("no batch size gives {per_epoch} steps per epoch over the {rows} training rows")),
        many => ask(format!("batch sizes {}–{} all give {per_epoch} steps per epoch over {rows} rows", many[0], many[many.len() - 1])),
    }
}

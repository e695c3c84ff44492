//! DEPN's privacy setting on TinyMem (depn-attention.md Part A; issue 6): plant 10-digit secrets
//! after fixed contexts in the training data (some duplicated), train, measure each secret's
//! exposure (DEPN's per-digit rank and the secret-sharer rank), locate privacy neurons with DEPN
//! (IG of the secret digits, 0.1 × max candidates, votes), zero them, and measure again — beside the
//! same number of random neurons zeroed (DEPN's Table 4 control) and the clean test quality.

use super::{lm_targets_with_padding, run_schedule, Schedule};
use crate::attribution::edit::{zero_neurons, EditMode};
use crate::attribution::exposure::{exact_rank, exposure_of_rank, per_digit_exposure, sampled_exposure, symbol_rank};
use crate::attribution::ig::IgOptions;
use crate::attribution::methods::{depn, PrivateText};
use crate::backend::{Backend, Device};
use crate::cli::demo::{preset_args, Preset};
use crate::data::tokenizer::{BOS, EOS, PAD, SPACE};
use crate::data::{MathDataset, TokenMatrix};
use crate::error::{Error, Result};
use crate::metrics::{quality, Quality};
use crate::model::{AdamW, Model};
use crate::rng::{purpose, Stream};
use serde::Serialize;
use std::sync::Arc;

const DIGITS: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct SecretsOptions {
    pub seed: u64,
    /// Planted secrets; secret i is repeated copies[i % copies.len()] times.
    pub secrets: usize,
    pub copies: Vec<usize>,
    /// Tokens of each secret's own fixed context (BOS first).
    pub context_len: usize,
    /// Digits per secret.
    pub secret_len: usize,
    pub layers: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// A secret counts as memorized (and is given to DEPN) when its per-digit exposure exceeds this
    /// (DEPN's code: 10).
    pub memorized_exposure: f64,
    /// Privacy-neuron counts to edit (the aggregator's top z), one row each.
    pub neurons: Vec<usize>,
    pub ig_steps: usize,
    /// Best-first expansions per secret for the exact secret-sharer rank; past it, sampling.
    pub rank_budget: usize,
    /// Random candidates of the sampling fallback.
    pub samples: usize,
    pub edit: EditMode,
}

impl Default for SecretsOptions {
    fn default() -> Self {
        SecretsOptions {
            seed: 0,
            secrets: 20,
            copies: vec![1, 10, 50],
            context_len: 16,
            secret_len: 10,
            layers: 2,
            epochs: 8,
            batch: 64,
            lr: 3e-3,
            memorized_exposure: 10.0,
            neurons: vec![5, 10, 20, 50],
            ig_steps: 20,
            rank_budget: 4000,
            samples: 4096,
            edit: EditMode::ProjRow,
        }
    }
}

/// One planted secret.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Secret {
    pub copies: usize,
    pub context: Vec<u32>,
    pub digits: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Exposure {
    /// DEPN's per-digit rank formula (the one behind its published numbers).
    pub per_digit: f64,
    /// Secret-sharer exposure: exact rank by best-first search, or sampled.
    pub secret_sharer: f64,
    /// Whether `secret_sharer` came from the exact rank (else sampling; a lower bound when no
    /// random candidate beat the secret).
    pub exact: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EditRow {
    pub method: String,
    pub neurons: usize,
    pub exposures: Vec<Exposure>,
    pub quality: Quality,
}

#[derive(Clone, Debug, Serialize)]
pub struct SecretsReport {
    pub options: SecretsOptions,
    pub secrets: Vec<Secret>,
    pub memorized: Vec<bool>,
    pub before: EditRow,
    pub edits: Vec<EditRow>,
    pub depn_seconds: f64,
    pub train_seconds: f64,
}

/// The planted secrets of a `memsieve experiment secrets` report.json.
pub fn read_secrets(path: &std::path::Path, vocab: usize) -> Result<Vec<Secret>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let secrets: Vec<Secret> = serde_json::from_value(v["secrets"].clone())
        .map_err(|e| Error::Input(format!("{} has no planted secrets (a report.json of `memsieve experiment secrets`): {e}", path.display())))?;
    if secrets.is_empty() || secrets.iter().any(|s| s.context.is_empty() || s.digits.is_empty() || s.digits.iter().any(|&d| d as usize >= DIGITS) || s.context.iter().any(|&t| t as usize >= vocab)) {
        return Err(Error::Input(format!("{}: secrets must have a context in the vocabulary and digits 0–9", path.display())));
    }
    Ok(secrets)
}

/// Secret rows: BOS, the context, the digits, EOS, then padding to `t`.
fn plant(o: &SecretsOptions, t: usize) -> Result<Vec<Secret>> {
    if o.context_len < 2 || o.secret_len == 0 || o.context_len + o.secret_len + 1 > t {
        return Err(Error::Input(format!("a context of {} and {} digits do not fit rows of {t}", o.context_len, o.secret_len)));
    }
    if o.secrets == 0 || o.copies.is_empty() || o.copies.contains(&0) {
        return Err(Error::Input("at least one secret with at least one copy".into()));
    }
    let mut rng = Stream::new(o.seed, purpose::MISC, 0x5ec);
    Ok((0..o.secrets)
        .map(|i| {
            // The context: random digits and spaces, like the math rows.
            let mut context = vec![BOS];
            context.extend((1..o.context_len).map(|_| {
                let x = rng.below(11) as u32;
                if x == 10 { SPACE } else { x }
            }));
            Secret { copies: o.copies[i % o.copies.len()], context, digits: (0..o.secret_len).map(|_| rng.below(DIGITS as u64) as u32).collect() }
        })
        .collect())
}

fn secret_row(s: &Secret, t: usize) -> Vec<u32> {
    let mut r = s.context.clone();
    r.extend(&s.digits);
    r.push(EOS);
    r.resize(t, PAD);
    r
}

/// Log-probabilities (natural log) over the 10 digits, renormalised, from a logits row.
fn digit_logp(logits: &[f32]) -> Vec<f64> {
    let d: Vec<f64> = logits[..DIGITS].iter().map(|&x| x as f64).collect();
    let max = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + d.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    d.iter().map(|x| x - lse).collect()
}

/// Exposure of every secret under `model` (`o` gives the rank budget, samples and seed).
pub fn exposures<B: Backend>(model: &mut Model<B>, secrets: &[Secret], o: &SecretsOptions) -> Result<Vec<Exposure>> {
    let v = model.cfg.vocab_size;
    let mut out = Vec::with_capacity(secrets.len());
    for s in secrets {
        let c = s.context.len();
        let len = c + s.digits.len();
        // Per-digit ranks: one teacher-forced pass over context + digits.
        let row: Vec<u32> = s.context.iter().chain(&s.digits).copied().collect();
        model.forward(&row, None, 1, len)?;
        let logits = model.download_logits();
        let truth: Vec<usize> = s.digits.iter().map(|&d| d as usize).collect();
        let ranks = (0..s.digits.len())
            .map(|i| symbol_rank(&logits[(c - 1 + i) * v..][..DIGITS].iter().map(|&x| x as f64).collect::<Vec<_>>(), truth[i]))
            .collect::<Result<Vec<_>>>()?;
        let per_digit = per_digit_exposure(&ranks, DIGITS)?;
        // The next-digit distribution after a prefix of candidate digits.
        let mut next = |prefix: &[usize]| -> Result<Vec<f64>> {
            let mut r = s.context.clone();
            r.extend(prefix.iter().map(|&d| d as u32));
            model.forward(&r, None, 1, r.len())?;
            let l = model.download_logits();
            Ok(digit_logp(&l[(r.len() - 1) * v..][..v]))
        };
        let (secret_sharer, exact) = match exact_rank(&truth, DIGITS, o.rank_budget, &mut next)? {
            Some(rank) => (exposure_of_rank(rank, DIGITS, truth.len()), true),
            None => {
                let secret_px = candidate_px(model, s, std::slice::from_ref(&truth))?[0];
                let mut rng = Stream::new(o.seed, purpose::MISC, 0xca4d);
                let cands: Vec<Vec<usize>> = (0..o.samples).map(|_| (0..truth.len()).map(|_| rng.below(DIGITS as u64) as usize).collect()).collect();
                let px = candidate_px(model, s, &cands)?;
                (sampled_exposure(secret_px, &px)?.0, false)
            }
        };
        out.push(Exposure { per_digit, secret_sharer, exact });
    }
    Ok(out)
}

/// Log-perplexity (bits, digits renormalised) of each candidate after the secret's context, batched.
fn candidate_px<B: Backend>(model: &mut Model<B>, s: &Secret, cands: &[Vec<usize>]) -> Result<Vec<f64>> {
    let (c, v) = (s.context.len(), model.cfg.vocab_size);
    let len = c + s.digits.len();
    let mut out = Vec::with_capacity(cands.len());
    for chunk in cands.chunks(256) {
        let rows: Vec<u32> = chunk.iter().flat_map(|d| s.context.iter().copied().chain(d.iter().map(|&x| x as u32))).collect();
        model.forward(&rows, None, chunk.len(), len)?;
        let logits = model.download_logits();
        for (j, d) in chunk.iter().enumerate() {
            let px: f64 = d.iter().enumerate().map(|(i, &digit)| -digit_logp(&logits[(j * len + c - 1 + i) * v..][..v])[digit] / std::f64::consts::LN_2).sum();
            out.push(px);
        }
    }
    Ok(out)
}

/// Plant, train (saving the trained model and its clean data description into `save`, if given, so
/// `memsieve edit --secrets` can take it up), measure, locate, edit, measure again.
pub fn run<B: Backend>(dev: &Arc<Device<B>>, o: &SecretsOptions, save: Option<&std::path::Path>, pb: &indicatif::ProgressBar) -> Result<SecretsReport> {
    // The small demo preset's clean data (no noised rows), plus the planted secrets.
    let mut dargs = preset_args(Preset::Small, Default::default()).data;
    dargs.num_noise = 0;
    dargs.duplicate = false;
    dargs.data_seed = o.seed;
    let dcfg = dargs.config()?;
    let data = MathDataset::generate(&dcfg)?;
    let t = data.train.cols;
    let secrets = plant(o, t)?;
    let mut rows = data.train.clone();
    for s in &secrets {
        let r = secret_row(s, t);
        for _ in 0..s.copies {
            rows.push_row(&r);
        }
    }
    let clean_test: &TokenMatrix = &data.test_sets[0].tokens;

    let mut cfg = crate::model::config::ModelConfig::tinymem_math(o.layers);
    cfg.n_positions = t;
    let mut model = Model::new(dev.clone(), cfg.clone(), o.seed)?;
    let members: Vec<usize> = (0..rows.rows()).collect();
    let sched = Schedule { rows: &rows, members: &members, epochs: o.epochs, batch: o.batch, adam: AdamW { lr: o.lr, ..AdamW::default() }, seed: o.seed, every: usize::MAX };
    pb.set_length(sched.total_steps() as u64);
    pb.set_prefix("train");
    let t0 = std::time::Instant::now();
    run_schedule(&mut model, &sched, &|_, tokens| lm_targets_with_padding(tokens, t), pb, &mut |_, _| Ok(()))?;
    let train_seconds = t0.elapsed().as_secs_f64();
    if let Some(dir) = save {
        crate::checkpoint::save_model(dir, &cfg, &model.download_params(), &[("memsieve_experiment", "secrets")])?;
        crate::cli::write_json(&dir.join("data.json"), &dcfg)?;
    }

    let before = EditRow { method: "none".into(), neurons: 0, exposures: exposures(&mut model, &secrets, o)?, quality: quality(&mut model, clean_test, 256)? };
    let memorized: Vec<bool> = before.exposures.iter().map(|e| e.per_digit > o.memorized_exposure).collect();
    let texts: Vec<PrivateText> = secrets
        .iter()
        .zip(&memorized)
        .filter(|(_, &m)| m)
        .map(|(s, _)| PrivateText { tokens: secret_row(s, t)[..s.context.len() + s.digits.len()].to_vec(), positions: (s.context.len()..s.context.len() + s.digits.len()).collect() })
        .collect();
    if texts.is_empty() {
        return Err(Error::Numerical(format!("no secret reached a per-digit exposure above {} (train longer or plant more copies)", o.memorized_exposure)));
    }
    pb.set_prefix("depn");
    pb.set_position(0);
    let t0 = std::time::Instant::now();
    let top = o.neurons.iter().copied().max().unwrap_or(0);
    let found = depn(&mut model, &texts, &IgOptions { steps: o.ig_steps, ..IgOptions::default() }, 0.1, top, &|d, n| {
        pb.set_length(n as u64);
        pb.set_position(d as u64);
    })?;
    let depn_seconds = t0.elapsed().as_secs_f64();

    let params = model.download_params();
    let (nl, w) = (cfg.n_layer, cfg.n_inner());
    let mut edits = Vec::new();
    let mut rng = Stream::new(o.seed, purpose::MISC, 0x7a4d);
    let mut shuffled: Vec<(usize, usize)> = (0..nl).flat_map(|l| (0..w).map(move |k| (l, k))).collect();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    pb.set_prefix("edit");
    for &z in &o.neurons {
        let picked: Vec<(usize, usize)> = found.selected.iter().take(z).map(|&(l, k, _)| (l, k)).collect();
        for (method, neurons) in [("depn", picked.clone()), ("random", shuffled[..picked.len()].to_vec())] {
            let mut p = params.clone();
            zero_neurons(&mut p, &cfg, &neurons, o.edit)?;
            let mut edited = Model::from_params(dev.clone(), cfg.clone(), &p)?;
            edits.push(EditRow { method: method.into(), neurons: neurons.len(), exposures: exposures(&mut edited, &secrets, o)?, quality: quality(&mut edited, clean_test, 256)? });
        }
    }
    Ok(SecretsReport { options: o.clone(), secrets, memorized, before, edits, depn_seconds, train_seconds })
}

/// Mean exposures over the memorized secrets of one duplication class (all classes with `None`).
pub fn mean_exposure(r: &SecretsReport, row: &EditRow, copies: Option<usize>) -> (f64, f64, usize) {
    let sel: Vec<&Exposure> = row
        .exposures
        .iter()
        .zip(&r.secrets)
        .zip(&r.memorized)
        .filter(|((_, s), &m)| m && copies.is_none_or(|c| s.copies == c))
        .map(|((e, _), _)| e)
        .collect();
    let n = sel.len().max(1) as f64;
    (sel.iter().map(|e| e.per_digit).sum::<f64>() / n, sel.iter().map(|e| e.secret_sharer).sum::<f64>() / n, sel.len())
}

//! Neuron scores over a memorized set (tinymem.md §5.4; depn-attention.md Part A), all on the
//! model's backend: TinyMem's integrated gradients, DEPN's per-secret IG with the privacy-neuron
//! aggregator, Activations, and Zero-Out.

use super::depn::{aggregate, candidates};
use super::ig::{integrated_gradients, next_token_queries, IgOptions, Query};
use super::NeuronScores;
use crate::backend::{Backend, Op, View, IGNORE_TARGET};
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::params::ParamKind;
use crate::model::Model;

/// Sequences per full forward pass of the IG methods (the fast form's batching is over their queries).
const IG_SEQS: usize = 8;

fn check_rows(rows: &TokenMatrix, what: &str) -> Result<()> {
    if rows.rows() == 0 {
        return Err(Error::Input(format!("{what}: no sequences to score (is the memorized set empty?)")));
    }
    Ok(())
}

/// TinyMem's IG score: for each sequence, IG of every prediction from position prompt_len − 1 to
/// T − 2 in every layer, averaged over positions, then over sequences.
pub fn ig_scores<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, prompt_len: usize, opts: &IgOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<NeuronScores> {
    check_rows(rows, "integrated gradients")?;
    let t = rows.cols;
    if prompt_len == 0 || prompt_len + 1 > t {
        return Err(Error::Input(format!("prompt length {prompt_len} leaves no position to attribute in sequences of {t}")));
    }
    let (nl, w) = (model.cfg.n_layer, model.cfg.n_inner());
    let layers: Vec<usize> = (0..nl).collect();
    let mut total = NeuronScores::zeros(nl, w);
    let groups = rows.rows().div_ceil(IG_SEQS);
    for (gi, tokens) in rows.data.chunks(IG_SEQS * t).enumerate() {
        let b = tokens.len() / t;
        let queries = next_token_queries(tokens, b, t, prompt_len - 1);
        let per_seq = queries.len() / b;
        let r = integrated_gradients(model, tokens, b, t, &queries, &layers, opts, &|d, n| progress(gi * n + d, groups * n))?;
        for (qi, _) in queries.iter().enumerate() {
            for (li, &l) in layers.iter().enumerate() {
                for (k, &x) in r.attribution(qi, li).iter().enumerate() {
                    total.values[l * w + k] += x as f64 / (per_seq * rows.rows()) as f64;
                }
            }
        }
    }
    Ok(total)
}

/// One private text for DEPN: a sequence and the positions of its private tokens (each is predicted
/// from the prefix before it).
#[derive(Clone, Debug)]
pub struct PrivateText {
    pub tokens: Vec<u32>,
    pub positions: Vec<usize>,
}

/// DEPN's detector and aggregator: per text, the IG of its private tokens summed, the candidates at
/// ≥ `ratio` × the global max over layers; then the `top_z` neurons with the most votes.
pub struct DepnResult {
    /// Sum over texts of the per-text IG sums (for the heatmap and a ranking of non-voted neurons).
    pub scores: NeuronScores,
    /// Votes per neuron.
    pub votes: NeuronScores,
    /// (layer, neuron, votes), most votes first.
    pub selected: Vec<(usize, usize, usize)>,
}

pub fn depn<B: Backend>(model: &mut Model<B>, texts: &[PrivateText], opts: &IgOptions, ratio: f64, top_z: usize, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<DepnResult> {
    if texts.is_empty() {
        return Err(Error::Input("DEPN: no private texts".into()));
    }
    let (nl, w) = (model.cfg.n_layer, model.cfg.n_inner());
    let layers: Vec<usize> = (0..nl).collect();
    let mut per_text_candidates = Vec::with_capacity(texts.len());
    let (mut scores, mut votes) = (NeuronScores::zeros(nl, w), NeuronScores::zeros(nl, w));
    for (ti, text) in texts.iter().enumerate() {
        let t = text.tokens.len();
        if let Some(&p) = text.positions.iter().find(|&&p| p == 0 || p >= t) {
            return Err(Error::Input(format!("private text {ti}: token position {p} has no prefix in a sequence of {t}")));
        }
        if text.positions.is_empty() {
            return Err(Error::Input(format!("private text {ti} names no private tokens")));
        }
        let queries: Vec<Query> = text.positions.iter().map(|&p| Query { seq: 0, pos: p - 1, target: text.tokens[p] }).collect();
        let r = integrated_gradients(model, &text.tokens, 1, t, &queries, &layers, opts, &|d, n| progress(ti * n + d, texts.len() * n))?;
        let mut own = NeuronScores::zeros(nl, w);
        for qi in 0..queries.len() {
            for li in 0..nl {
                for (k, &x) in r.attribution(qi, li).iter().enumerate() {
                    own.values[li * w + k] += x as f64;
                }
            }
        }
        let cands = candidates(&own, ratio);
        for &(l, k) in &cands {
            votes.values[l * w + k] += 1.0;
        }
        per_text_candidates.push(cands);
        scores.add(&own)?;
    }
    Ok(DepnResult { scores, votes, selected: aggregate(&per_text_candidates, top_z) })
}

/// Activations score: |mean a_{ℓ,i}| · ‖W_out[i, :]‖₂, the mean over the sequences and positions
/// prompt_len − 1 .. T − 2 (the post-activation values, one forward pass).
pub fn activation_scores<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, prompt_len: usize, batch: usize) -> Result<NeuronScores> {
    check_rows(rows, "activations")?;
    let t = rows.cols;
    if prompt_len == 0 || prompt_len + 1 > t {
        return Err(Error::Input(format!("prompt length {prompt_len} leaves no position to score in sequences of {t}")));
    }
    let (nl, w, c) = (model.cfg.n_layer, model.cfg.n_inner(), model.cfg.n_embd);
    let mut sums = vec![0f64; nl * w];
    for tokens in rows.data.chunks(batch.max(1) * t) {
        let b = tokens.len() / t;
        let dev = model.dev.clone();
        dev.backend.scope(|| model.forward(tokens, None, b, t))?;
        let layout = model.acts().unwrap().layout.clone();
        for l in 0..nl {
            let a = model.download_slot(layout.layers[l].fch_act);
            for s in 0..b {
                for pos in prompt_len - 1..t - 1 {
                    for (sum, &x) in sums[l * w..(l + 1) * w].iter_mut().zip(&a[(s * t + pos) * w..][..w]) {
                        *sum += x as f64;
                    }
                }
            }
        }
    }
    let count = (rows.rows() * (t - prompt_len)) as f64;
    let params = model.download_params();
    let mut scores = NeuronScores::zeros(nl, w);
    for l in 0..nl {
        let wout = &params[model.layout.offset(ParamKind::FcProjW, l)..][..w * c];
        for k in 0..w {
            let norm = wout[k * c..(k + 1) * c].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            scores.values[l * w + k] = (sums[l * w + k] / count).abs() * norm;
        }
    }
    Ok(scores)
}

/// Zero-Out: the increase of the mean cross-entropy over `rows` when neuron i of layer ℓ is
/// silenced at every position (the method as described); with `keep_only`, when every neuron of the
/// layer except i is (the reference code's one-hot multiply). n_layer × 4C passes over the rows.
pub fn zero_out_scores<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize, keep_only: bool, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<NeuronScores> {
    check_rows(rows, "zero-out")?;
    let (nl, w) = (model.cfg.n_layer, model.cfg.n_inner());
    let dev = model.dev.clone();
    let zeros = dev.alloc(w)?;
    let zero = dev.view(&zeros);
    let base = mean_loss(model, rows, batch, &mut |_, _| {})?;
    let mut scores = NeuronScores::zeros(nl, w);
    for l in 0..nl {
        for k in 0..w {
            let loss = mean_loss(model, rows, batch, &mut |layer, act| {
                if layer != l {
                    return;
                }
                let n = act.len / w;
                // Columns [c0, c0 + cols) of every row ← 0.
                let zero_cols = |c0: usize, cols: usize| {
                    if cols > 0 {
                        dev.exec(Op::CopyStrided { dst: act.slice(c0, act.len - c0), src: zero, batches: 1, rows: n, cols, dst_strides: [0, w], src_strides: [0, 0] });
                    }
                };
                if keep_only {
                    zero_cols(0, k);
                    zero_cols(k + 1, w - k - 1);
                } else {
                    zero_cols(k, 1);
                }
            })?;
            scores.values[l * w + k] = loss - base;
            progress(l * w + k + 1, nl * w);
        }
    }
    Ok(scores)
}

/// Mean next-token cross-entropy over all target positions of `rows` (HF's mean loss), with a hook.
fn mean_loss<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, batch: usize, hook: &mut (dyn FnMut(usize, View<'_, B::Buffer>) + Send)) -> Result<f64> {
    let t = rows.cols;
    let (mut sum, mut count) = (0f64, 0usize);
    let dev = model.dev.clone();
    for tokens in rows.data.chunks(batch.max(1) * t) {
        let b = tokens.len() / t;
        let targets = model.lm_targets(tokens, b, t, false);
        let losses = dev.backend.scope(|| -> Result<Vec<f32>> {
            model.forward_hooked(tokens, Some(&targets), b, t, hook)?;
            Ok(model.download_slot(model.acts().unwrap().layout.losses))
        })?;
        sum += losses.iter().map(|&x| x as f64).sum::<f64>();
        count += targets.iter().filter(|&&x| x != IGNORE_TARGET).count();
    }
    Ok(sum / count.max(1) as f64)
}

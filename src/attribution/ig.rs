//! Integrated gradients over MLP neurons (tinymem.md §5.4, depn-attention.md §A2), in the fast form:
//! scaling layer ℓ's post-activation at position t changes nothing below layer ℓ and nothing at
//! positions before t, so one full forward pass over the sequences provides everything below, and
//! only the queried position is recomputed from layer ℓ up — against the full pass's keys and values
//! of the earlier positions. Each row of a launch is one (query, path point); all path points of many
//! queries go through one batched stack of ops, then one reduction gives a ⊙ mean gradient per query.
//!
//! [`ig_full_prefix`] is the plain reference (the TinyMem code's algorithm: the prefix x[..=t] run
//! whole, m patched copies, a full backward), kept for tests and for the PyTorch comparison.

use super::depn::Grid;
use crate::backend::{Backend, Op, View, WeightLayout, IGNORE_TARGET};
use crate::error::{Error, Result};
use crate::model::params::ParamKind;
use crate::model::{ActLayout, ActPatch, Model, Slot};

/// What the gradient is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IgTarget {
    /// The softmax probability of the target token (TinyMem, DEPN).
    Prob,
    /// Its log-probability.
    LogProb,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct IgOptions {
    /// Path points m.
    pub steps: usize,
    pub grid: Grid,
    pub target: IgTarget,
    /// Rows (query × path point) per batched launch at most; bounds the working memory.
    pub max_rows: usize,
}

impl Default for IgOptions {
    fn default() -> Self {
        IgOptions { steps: 20, grid: Grid::Left, target: IgTarget::Prob, max_rows: 2048 }
    }
}

/// One prediction to attribute: position `pos` of sequence `seq` predicting token `target`
/// (normally the sequence's token at pos + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub seq: usize,
    pub pos: usize,
    pub target: u32,
}

/// Per (query, layer): the attribution of every neuron, and f at every path point.
#[derive(Clone, Debug)]
pub struct IgResult {
    pub layers: Vec<usize>,
    pub width: usize,
    pub steps: usize,
    /// [query][layer index][neuron]
    pub ig: Vec<f32>,
    /// [query][layer index][path point]: f (probability or log-probability) at α_j.
    pub path: Vec<f32>,
}

impl IgResult {
    pub fn attribution(&self, query: usize, layer_idx: usize) -> &[f32] {
        let w = self.width;
        &self.ig[(query * self.layers.len() + layer_idx) * w..][..w]
    }
    pub fn path_values(&self, query: usize, layer_idx: usize) -> &[f32] {
        let m = self.steps;
        &self.path[(query * self.layers.len() + layer_idx) * m..][..m]
    }
}

/// Queries for every prediction position of each sequence from `first_pos` to t − 2, each predicting
/// the next token (TinyMem: first_pos = prompt_len − 1).
pub fn next_token_queries(tokens: &[u32], b: usize, t: usize, first_pos: usize) -> Vec<Query> {
    (0..b).flat_map(|s| (first_pos..t.saturating_sub(1)).map(move |pos| Query { seq: s, pos, target: tokens[s * t + pos + 1] })).collect()
}

fn check_queries(queries: &[Query], layers: &[usize], b: usize, t: usize, vocab: usize, n_layer: usize) -> Result<()> {
    if let Some(q) = queries.iter().find(|q| q.seq >= b || q.pos >= t || q.target as usize >= vocab) {
        return Err(Error::Input(format!(
            "attribution query (sequence {}, position {}, target {}) is outside the batch of {b} × {t} or the vocabulary of {vocab}",
            q.seq, q.pos, q.target
        )));
    }
    if let Some(l) = layers.iter().find(|&&l| l >= n_layer) {
        return Err(Error::Input(format!("layer {l} is outside a model of {n_layer} layers")));
    }
    Ok(())
}

/// Integrated gradients of every queried prediction with respect to the MLP post-activations of each
/// layer in `layers` (scaled one layer at a time, as both references do). `tokens` is [b, t].
/// `progress(done, total)` counts launches.
#[allow(clippy::too_many_arguments)]
pub fn integrated_gradients<B: Backend>(
    model: &mut Model<B>,
    tokens: &[u32],
    b: usize,
    t: usize,
    queries: &[Query],
    layers: &[usize],
    opts: &IgOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<IgResult> {
    let cfg = model.cfg.clone();
    check_queries(queries, layers, b, t, cfg.vocab_size, cfg.n_layer)?;
    let m = opts.steps;
    let alphas: Vec<f32> = opts.grid.alphas(m)?.into_iter().map(|a| a as f32).collect();
    let w = cfg.n_inner();
    let mut result = IgResult { layers: layers.to_vec(), width: w, steps: m, ig: vec![0.0; queries.len() * layers.len() * w], path: vec![0.0; queries.len() * layers.len() * m] };
    if queries.is_empty() || layers.is_empty() {
        return Ok(result);
    }
    let dev = model.dev.clone();
    dev.backend.scope(|| -> Result<()> {
        model.forward(tokens, None, b, t)?;
        let groups = (opts.max_rows / m).max(1).min(queries.len());
        let stack = RowStack::new(model, groups * m, t)?;
        let chunks = queries.len().div_ceil(groups);
        let total = chunks * layers.len();
        for (li, &layer) in layers.iter().enumerate() {
            for (ci, chunk) in queries.chunks(groups).enumerate() {
                let (ig, path) = stack.run(model, chunk, layer, &alphas, opts.target, t)?;
                for (qi, _) in chunk.iter().enumerate() {
                    let q = ci * groups + qi;
                    let at = q * layers.len() + li;
                    result.ig[at * w..(at + 1) * w].copy_from_slice(&ig[qi * w..(qi + 1) * w]);
                    result.path[at * m..(at + 1) * m].copy_from_slice(&path[qi * m..(qi + 1) * m]);
                }
                progress(li * chunks + ci + 1, total);
            }
        }
        Ok(())
    })?;
    Ok(result)
}

/// Working buffers of the single-position stack for up to `rows` rows: an activation layout of
/// [rows, 1], attention probabilities per layer [rows, nh, t_ctx], backward scratch, and the per-row
/// index, path scale and target.
struct RowStack<B: Backend> {
    rows: usize,
    layout: ActLayout,
    acts: B::Buffer,
    att: B::Buffer,
    index: B::Buffer,
    scale: B::Buffer,
    dres: B::Buffer,
    dbtc: B::Buffer,
    dqkv: B::Buffer,
    dfch: B::Buffer,
    /// LayerNorm backward always accumulates d(weight), d(bias): a sink for them.
    dln: B::Buffer,
    ig: B::Buffer,
}

impl<B: Backend> RowStack<B> {
    fn new(model: &Model<B>, rows: usize, t_ctx: usize) -> Result<Self> {
        let cfg = &model.cfg;
        let (c, nh, nl) = (cfg.n_embd, cfg.n_head, cfg.n_layer);
        let d = &model.dev;
        let layout = ActLayout::new(cfg, rows, 1);
        Ok(RowStack {
            rows,
            acts: d.alloc(layout.total)?,
            layout,
            att: d.alloc(nl * rows * nh * t_ctx)?,
            index: d.alloc(rows)?,
            scale: d.alloc(rows)?,
            dres: d.alloc(rows * c)?,
            dbtc: d.alloc(rows * c)?,
            dqkv: d.alloc(rows * 3 * c)?,
            dfch: d.alloc(rows * cfg.n_inner())?,
            dln: d.alloc(2 * c)?,
            ig: d.alloc(rows * cfg.n_inner())?,
        })
    }

    /// IG of `queries` (at most rows / m) at `layer`: returns ig [queries, 4C] and f [queries, m].
    fn run(&self, model: &Model<B>, queries: &[Query], layer: usize, alphas: &[f32], target: IgTarget, t_ctx: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let cfg = &model.cfg;
        let (c, nh, v, nl, f) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_layer, cfg.n_inner());
        let eps = cfg.layer_norm_epsilon;
        let m = alphas.len();
        let n = queries.len() * m;
        assert!(n <= self.rows);
        let dev = &model.dev;
        let full = model.acts().expect("the full forward pass ran");
        let fl = &full.layout;
        let fv = |s: Slot| View::new(&full.buf, s.off, s.len);
        let l = &self.layout;
        // Views of the first n rows of a [rows, width] slot.
        let av = |s: Slot| View::new(&self.acts, s.off, n * (s.len / self.rows));
        let pv = |k: ParamKind, li: usize| View::new(&model.params, model.layout.offset(k, li), model.layout.len(k));
        let att = |li: usize| View::new(&self.att, li * self.rows * nh * t_ctx, n * nh * t_ctx);
        fn rows_of<Buf>(buf: &Buf, width: usize, n: usize) -> View<'_, Buf> {
            View::new(buf, 0, n * width)
        }
        let (index, scale) = (rows_of(&self.index, 1, n), rows_of(&self.scale, 1, n));
        let targets = av(l.targets);
        let (dres, dbtc, dqkv, dfch) = (rows_of(&self.dres, c, n), rows_of(&self.dbtc, c, n), rows_of(&self.dqkv, 3 * c, n), rows_of(&self.dfch, f, n));
        let (dlnw, dlnb) = (View::new(&self.dln, 0, c), View::new(&self.dln, c, c));

        let idx: Vec<u32> = queries.iter().flat_map(|q| std::iter::repeat_n((q.seq * t_ctx + q.pos) as u32, m)).collect();
        let sc: Vec<f32> = queries.iter().flat_map(|_| alphas.iter().copied()).collect();
        let tg: Vec<u32> = queries.iter().flat_map(|q| std::iter::repeat_n(q.target, m)).collect();
        dev.upload_u32(index, &idx);
        dev.upload_f32(scale, &sc);
        dev.upload_u32(targets, &tg);

        use ParamKind::*;
        // Layer ℓ: the scaled activation through c_proj onto the unchanged res2.
        let s = &l.layers[layer];
        let full_act = fv(fl.layers[layer].fch_act);
        dev.exec(Op::GatherRows { out: av(s.fch_act), src: full_act, index, scale: Some(scale), n, w: f });
        dev.exec(Op::MatmulForward { out: av(s.fcproj), inp: av(s.fch_act), weight: pv(FcProjW, layer), bias: Some(pv(FcProjB, layer)), n, c: f, oc: c, layout: WeightLayout::InOut });
        dev.exec(Op::GatherRows { out: av(s.res2), src: fv(fl.layers[layer].res2), index, scale: None, n, w: c });
        dev.exec(Op::Residual { out: av(s.res3), a: av(s.res2), b: av(s.fcproj), n: n * c });
        for li in layer + 1..nl {
            let s = &l.layers[li];
            let residual = av(l.residual(li));
            dev.exec(Op::LayerNormForward { out: av(s.ln1), mean: av(s.ln1_mean), rstd: av(s.ln1_rstd), inp: residual, weight: pv(Ln1W, li), bias: pv(Ln1B, li), n, c, eps });
            dev.exec(Op::MatmulForward { out: av(s.qkv), inp: av(s.ln1), weight: pv(AttnW, li), bias: Some(pv(AttnB, li)), n, c, oc: 3 * c, layout: WeightLayout::InOut });
            dev.exec(Op::AttentionRowForward { out: av(s.atty), att: att(li), qkv: av(s.qkv), ctx: fv(fl.layers[li].qkv), index, n, t_ctx, c, nh });
            dev.exec(Op::MatmulForward { out: av(s.attproj), inp: av(s.atty), weight: pv(AttnProjW, li), bias: Some(pv(AttnProjB, li)), n, c, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::Residual { out: av(s.res2), a: residual, b: av(s.attproj), n: n * c });
            dev.exec(Op::LayerNormForward { out: av(s.ln2), mean: av(s.ln2_mean), rstd: av(s.ln2_rstd), inp: av(s.res2), weight: pv(Ln2W, li), bias: pv(Ln2B, li), n, c, eps });
            dev.exec(Op::MatmulForward { out: av(s.fch), inp: av(s.ln2), weight: pv(FcW, li), bias: Some(pv(FcB, li)), n, c, oc: f, layout: WeightLayout::InOut });
            dev.exec(Op::ActivationForward { out: av(s.fch_act), inp: av(s.fch), n: n * f, act: cfg.activation });
            dev.exec(Op::MatmulForward { out: av(s.fcproj), inp: av(s.fch_act), weight: pv(FcProjW, li), bias: Some(pv(FcProjB, li)), n, c: f, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::Residual { out: av(s.res3), a: av(s.res2), b: av(s.fcproj), n: n * c });
        }
        let top = av(l.residual(nl));
        dev.exec(Op::LayerNormForward { out: av(l.lnf), mean: av(l.lnf_mean), rstd: av(l.lnf_rstd), inp: top, weight: pv(LnfW, 0), bias: pv(LnfB, 0), n, c, eps });
        dev.exec(Op::MatmulForward { out: av(l.logits), inp: av(l.lnf), weight: pv(Wte, 0), bias: None, n, c, oc: v, layout: WeightLayout::OutIn });
        dev.exec(Op::SoftmaxCrossEntropyForward { losses: av(l.losses), probs: av(l.probs), logits: av(l.logits), targets, n, v });
        let losses = dev.download_f32(av(l.losses));

        // Backward of f along the same rows, weights frozen (no weight gradients).
        let dlogits = av(l.probs);
        dev.exec(Op::TargetProbBackward { dlogits, probs: av(l.probs), targets, n, v, log: target == IgTarget::LogProb });
        dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: None, dbias: None, dout: dlogits, inp: av(l.lnf), weight: pv(Wte, 0), n, c, oc: v, layout: WeightLayout::OutIn });
        dev.exec(Op::Fill { dst: dres, value: 0.0 });
        dev.exec(Op::LayerNormBackward { dinp: dres, dweight: dlnw, dbias: dlnb, dout: dbtc, inp: top, weight: pv(LnfW, 0), mean: av(l.lnf_mean), rstd: av(l.lnf_rstd), n, c });
        for li in (layer + 1..nl).rev() {
            let s = &l.layers[li];
            dev.exec(Op::MatmulBackward { dinp: Some(dfch), dweight: None, dbias: None, dout: dres, inp: av(s.fch_act), weight: pv(FcProjW, li), n, c: f, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::ActivationBackward { dinp: dfch, inp: av(s.fch), dout: dfch, n: n * f, act: cfg.activation });
            dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: None, dbias: None, dout: dfch, inp: av(s.ln2), weight: pv(FcW, li), n, c, oc: f, layout: WeightLayout::InOut });
            dev.exec(Op::LayerNormBackward { dinp: dres, dweight: dlnw, dbias: dlnb, dout: dbtc, inp: av(s.res2), weight: pv(Ln2W, li), mean: av(s.ln2_mean), rstd: av(s.ln2_rstd), n, c });
            dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: None, dbias: None, dout: dres, inp: av(s.atty), weight: pv(AttnProjW, li), n, c, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::AttentionRowBackward { dqkv, dout: dbtc, qkv: av(s.qkv), ctx: fv(fl.layers[li].qkv), att: att(li), index, n, t_ctx, c, nh });
            dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: None, dbias: None, dout: dqkv, inp: av(s.ln1), weight: pv(AttnW, li), n, c, oc: 3 * c, layout: WeightLayout::InOut });
            dev.exec(Op::LayerNormBackward { dinp: dres, dweight: dlnw, dbias: dlnb, dout: dbtc, inp: av(l.residual(li)), weight: pv(Ln1W, li), mean: av(s.ln1_mean), rstd: av(s.ln1_rstd), n, c });
        }
        let s = &l.layers[layer];
        dev.exec(Op::MatmulBackward { dinp: Some(dfch), dweight: None, dbias: None, dout: dres, inp: av(s.fch_act), weight: pv(FcProjW, layer), n, c: f, oc: c, layout: WeightLayout::InOut });
        let ig = View::new(&self.ig, 0, queries.len() * f);
        dev.exec(Op::IgReduce { ig, grads: dfch, src: full_act, index, n, m, w: f });
        let path = losses.iter().map(|&loss| path_value(loss, target)).collect();
        Ok((dev.download_f32(ig), path))
    }
}

/// f from a cross-entropy value: p = e^(−loss), or log p = −loss.
fn path_value(loss: f32, target: IgTarget) -> f32 {
    match target {
        IgTarget::Prob => (-loss).exp(),
        IgTarget::LogProb => -loss,
    }
}

/// The plain reference: for each query and layer, the prefix x[..=pos] is run whole as a batch of m
/// copies whose layer-ℓ activation at the last position is α_j·a, and a full backward gives the
/// gradients. Slow (a full forward and backward of the prefix per query and layer); for tests and
/// baselines.
pub fn ig_full_prefix<B: Backend>(model: &mut Model<B>, tokens: &[u32], b: usize, t: usize, queries: &[Query], layers: &[usize], opts: &IgOptions) -> Result<IgResult> {
    let cfg = model.cfg.clone();
    check_queries(queries, layers, b, t, cfg.vocab_size, cfg.n_layer)?;
    let m = opts.steps;
    let alphas = opts.grid.alphas(m)?;
    let w = cfg.n_inner();
    let mut result = IgResult { layers: layers.to_vec(), width: w, steps: m, ig: Vec::new(), path: Vec::new() };
    for q in queries {
        let len = q.pos + 1;
        let prefix = &tokens[q.seq * t..q.seq * t + len];
        let batch: Vec<u32> = (0..m).flat_map(|_| prefix.iter().copied()).collect();
        let mut targets = vec![IGNORE_TARGET; m * len];
        for j in 0..m {
            targets[j * len + q.pos] = q.target;
        }
        for &layer in layers {
            // The unpatched activation at the last position (causality: the same as in the full pass).
            model.forward(prefix, None, 1, len)?;
            let act_slot = model.acts().unwrap().layout.layers[layer].fch_act;
            let a = model.download_slot(Slot { off: act_slot.off + q.pos * w, len: w });
            let values: Vec<f32> = alphas.iter().flat_map(|&al| a.iter().map(move |&x| (al * x as f64) as f32)).collect();
            let patch = ActPatch { layer, pos: q.pos, values: &values };
            let (losses, dact) = model.probe_activations(&batch, &targets, m, len, Some(patch), layer)?;
            // d(mean CE)/da = −(1/m)·d(log p)/da per row; d p/da = p·d(log p)/da.
            let mut sum = vec![0f64; w];
            for j in 0..m {
                let loss = losses[j * len + q.pos];
                let factor = -(m as f64) * match opts.target {
                    IgTarget::Prob => (-loss as f64).exp(),
                    IgTarget::LogProb => 1.0,
                };
                let g = &dact[(j * len + q.pos) * w..][..w];
                for (s, &gk) in sum.iter_mut().zip(g) {
                    *s += factor * gk as f64;
                }
                result.path.push(path_value(loss, opts.target));
            }
            result.ig.extend(a.iter().zip(&sum).map(|(&ak, &s)| (ak as f64 * s / m as f64) as f32));
        }
    }
    Ok(result)
}

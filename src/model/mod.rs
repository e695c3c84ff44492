//! The TinyMem model (GPT-2 pre-LN decoder) written once over the `Backend` trait, as llm.c's
//! train_gpt2.c: flat parameter/gradient/optimizer buffers, one activation buffer, and a forward and
//! backward pass that are plain sequences of ops.

pub mod config;
pub mod generate;
pub mod params;

use crate::backend::{Backend, Device, Op, View, WeightLayout, IGNORE_TARGET};
use crate::error::{Error, Result};
use crate::rng::{purpose, Stream};
use config::ModelConfig;
use params::{ParamKind, ParamLayout};
use std::sync::Arc;

/// A range of the activation buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    pub off: usize,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LayerSlots {
    pub ln1: Slot,
    pub ln1_mean: Slot,
    pub ln1_rstd: Slot,
    pub qkv: Slot,
    pub atty: Slot,
    pub att: Slot,
    pub attproj: Slot,
    pub res2: Slot,
    pub ln2: Slot,
    pub ln2_mean: Slot,
    pub ln2_rstd: Slot,
    /// MLP pre-activation [B, T, 4C].
    pub fch: Slot,
    /// MLP post-activation [B, T, 4C] (the "neurons" later issues score).
    pub fch_act: Slot,
    pub fcproj: Slot,
    /// Residual stream after the block [B, T, C].
    pub res3: Slot,
    /// The block's input after example-tied dropout [B, T, C] (empty without it).
    pub etd_in: Slot,
}

/// Offsets of every activation for one (B, T), all in one buffer.
#[derive(Clone, Debug)]
pub struct ActLayout {
    pub b: usize,
    pub t: usize,
    pub tokens: Slot,
    pub targets: Slot,
    /// The rows' dataset indices [B] (example-tied dropout's masks).
    pub ids: Slot,
    pub encoded: Slot,
    pub layers: Vec<LayerSlots>,
    pub lnf: Slot,
    pub lnf_mean: Slot,
    pub lnf_rstd: Slot,
    pub logits: Slot,
    pub probs: Slot,
    pub losses: Slot,
    /// Per-position loss weights of a weighted backward (per-sample objectives) [B, T].
    pub weights: Slot,
    pub preds: Slot,
    pub total: usize,
}

impl ActLayout {
    pub fn new(cfg: &ModelConfig, b: usize, t: usize) -> Self {
        let (c, v, nh) = (cfg.n_embd, cfg.vocab_size, cfg.n_head);
        let bt = b * t;
        let mut off = 0;
        let mut slot = |len: usize| {
            let s = Slot { off, len };
            off += len;
            s
        };
        let tokens = slot(bt);
        let targets = slot(bt);
        let ids = slot(b);
        let etd_len = if cfg.example_tied_dropout.is_some() { bt * c } else { 0 };
        let encoded = slot(bt * c);
        let layers = (0..cfg.n_layer)
            .map(|_| LayerSlots {
                ln1: slot(bt * c),
                ln1_mean: slot(bt),
                ln1_rstd: slot(bt),
                qkv: slot(bt * 3 * c),
                atty: slot(bt * c),
                att: slot(b * nh * t * t),
                attproj: slot(bt * c),
                res2: slot(bt * c),
                ln2: slot(bt * c),
                ln2_mean: slot(bt),
                ln2_rstd: slot(bt),
                fch: slot(bt * 4 * c),
                fch_act: slot(bt * 4 * c),
                fcproj: slot(bt * c),
                res3: slot(bt * c),
                etd_in: slot(etd_len),
            })
            .collect();
        let lnf = slot(bt * c);
        let lnf_mean = slot(bt);
        let lnf_rstd = slot(bt);
        let logits = slot(bt * v);
        let probs = slot(bt * v);
        let losses = slot(bt);
        let weights = slot(bt);
        let preds = slot(bt);
        ActLayout { b, t, tokens, targets, ids, encoded, layers, lnf, lnf_mean, lnf_rstd, logits, probs, losses, weights, preds, total: off }
    }

    /// Residual stream entering layer `l` (l = n_layer: the stream before ln_f).
    pub fn residual(&self, l: usize) -> Slot {
        if l == 0 {
            self.encoded
        } else {
            self.layers[l - 1].res3
        }
    }

    /// What layer `l`'s ln_1 and residual path read: its input, after example-tied dropout if any.
    pub fn block_input(&self, l: usize) -> Slot {
        if self.layers[l].etd_in.len > 0 {
            self.layers[l].etd_in
        } else {
            self.residual(l)
        }
    }
}

/// Replace layer `layer`'s MLP post-activation at position `pos` of every row by `values` [b, 4C].
#[derive(Clone, Copy, Debug)]
pub struct ActPatch<'a> {
    pub layer: usize,
    pub pos: usize,
    pub values: &'a [f32],
}

/// Activation buffers for one (B, T), plus backward scratch when training.
pub struct Acts<B: Backend> {
    pub layout: ActLayout,
    pub buf: B::Buffer,
    grad: Option<GradScratch<B>>,
    /// The last forward pass used training masks of example-tied dropout (ids uploaded).
    ids_live: bool,
}

/// Activation-gradient scratch (llm.c's fp32 CUDA scheme: a few buffers reused by every layer).
struct GradScratch<B: Backend> {
    dres: B::Buffer,
    dbtc: B::Buffer,
    dqkv: B::Buffer,
    dfch: B::Buffer,
    datt: B::Buffer,
    /// Where a frozen backward sends the LayerNorm parameter gradients it has no use for [2C].
    sink: B::Buffer,
}

/// Subnet's learned masks over every MLP matrix (tinymem.md §5.5, edge-popup): the real scores of
/// tensor 2l (layer l's `c_fc.weight` [C, 4C]) and 2l + 1 (`c_proj.weight` [4C, C]), each C·4C
/// long, their straight-through gradients, and per tensor the cut key (2 u32, `Op::SelectRank`):
/// the forward uses W ⊙ m with m = 0 where (|score|, index) is below the cut.
pub struct WeightMasks<B: Backend> {
    pub scores: B::Buffer,
    pub dscores: B::Buffer,
    pub cuts: B::Buffer,
    pub tensors: usize,
    pub tensor_len: usize,
}

impl<B: Backend> WeightMasks<B> {
    /// Masks for every MLP matrix of `cfg`, scores uploaded from `scores` (tensor-major).
    pub fn new(dev: &Device<B>, cfg: &ModelConfig, scores: &[f32]) -> Result<Self> {
        let tensors = 2 * cfg.n_layer;
        let tensor_len = cfg.n_embd * cfg.n_inner();
        if scores.len() != tensors * tensor_len {
            return Err(Error::Input(format!("{} mask scores do not fit {tensors} MLP matrices of {tensor_len}", scores.len())));
        }
        let m = WeightMasks { scores: dev.alloc(scores.len())?, dscores: dev.alloc(scores.len())?, cuts: dev.alloc(2 * tensors)?, tensors, tensor_len };
        dev.upload_f32(dev.view(&m.scores), scores);
        dev.exec(Op::Fill { dst: dev.view(&m.cuts), value: 0.0 });
        Ok(m)
    }
    pub fn scores_of<'a>(&'a self, tensor: usize) -> View<'a, B::Buffer> {
        View::new(&self.scores, tensor * self.tensor_len, self.tensor_len)
    }
    pub fn dscores_of<'a>(&'a self, tensor: usize) -> View<'a, B::Buffer> {
        View::new(&self.dscores, tensor * self.tensor_len, self.tensor_len)
    }
    pub fn cut_of<'a>(&'a self, tensor: usize) -> View<'a, B::Buffer> {
        View::new(&self.cuts, 2 * tensor, 2)
    }
}

/// AdamW hyper-parameters (TinyMem recipe by default).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.1 }
    }
}

pub struct Model<B: Backend> {
    pub dev: Arc<Device<B>>,
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    pub params: B::Buffer,
    grads: Option<B::Buffer>,
    adam_m: Option<B::Buffer>,
    adam_v: Option<B::Buffer>,
    /// AdamW steps taken so far.
    pub step: u64,
    acts: Option<Acts<B>>,
    /// When set, every MLP matrix multiply uses its masked weights (src/unlearn's Subnet).
    pub weight_masks: Option<WeightMasks<B>>,
    /// Dataset indices of the next forward pass's rows: with example-tied dropout in the config,
    /// that pass uses the training masks (taken by the pass; without them, the evaluation mask).
    example_ids: Option<Vec<u32>>,
}

/// Per-position results of a forward pass, downloaded for the host.
pub struct ForwardOutput {
    /// Mean cross-entropy over the positions with a target.
    pub loss: f64,
    pub n_targets: usize,
    /// Per-position losses [B, T] (0 where no target).
    pub losses: Vec<f32>,
    /// Argmax next-token prediction per position [B, T].
    pub preds: Vec<u32>,
}

impl<B: Backend> Model<B> {
    /// A freshly initialised model (HF GPT-2 `_init_weights`, drawn from Philox with `seed`).
    pub fn new(dev: Arc<Device<B>>, cfg: ModelConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        let host = init_params(&cfg, &layout, seed);
        Self::from_params(dev, cfg, &host)
    }

    /// A model with the given flat parameters (`layout` order).
    pub fn from_params(dev: Arc<Device<B>>, cfg: ModelConfig, host: &[f32]) -> Result<Self> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        if host.len() != layout.total {
            return Err(Error::Checkpoint(format!(
                "parameter count {} does not match the configuration ({})",
                host.len(),
                layout.total
            )));
        }
        if let Some(i) = host.iter().position(|x| !x.is_finite()) {
            let name = layout.views.iter().find(|v| v.range().contains(&i)).map(|v| v.name.clone()).unwrap_or_default();
            return Err(Error::Numerical(format!("non-finite weight in {name}")));
        }
        check_view_len(&dev.backend, layout.total, "the parameter buffer")?;
        let params = dev.alloc(layout.total)?;
        dev.upload_f32(dev.view(&params), host);
        Ok(Model { dev, cfg, layout, params, grads: None, adam_m: None, adam_v: None, step: 0, acts: None, weight_masks: None, example_ids: None })
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    pub fn download_params(&self) -> Vec<f32> {
        self.dev.download_f32(self.dev.view(&self.params))
    }

    pub fn upload_params(&mut self, host: &[f32]) {
        let dev = self.dev.clone();
        dev.upload_f32(dev.view(&self.params), host);
    }

    pub fn download_grads(&self) -> Option<Vec<f32>> {
        self.grads.as_ref().map(|g| self.dev.download_f32(self.dev.view(g)))
    }

    /// AdamW first and second moments, if training has started.
    pub fn download_adam_state(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        match (&self.adam_m, &self.adam_v) {
            (Some(m), Some(v)) => Some((self.dev.download_f32(self.dev.view(m)), self.dev.download_f32(self.dev.view(v)))),
            _ => None,
        }
    }

    /// Restore AdamW state (resume).
    pub fn upload_adam_state(&mut self, m: &[f32], v: &[f32], step: u64) -> Result<()> {
        if m.len() != self.layout.total || v.len() != self.layout.total {
            return Err(Error::Checkpoint("optimizer state does not match the model size".into()));
        }
        self.ensure_training_buffers()?;
        let dev = self.dev.clone();
        dev.upload_f32(dev.view(self.adam_m.as_ref().unwrap()), m);
        dev.upload_f32(dev.view(self.adam_v.as_ref().unwrap()), v);
        self.step = step;
        Ok(())
    }

    fn ensure_training_buffers(&mut self) -> Result<()> {
        if self.grads.is_none() {
            self.grads = Some(self.dev.alloc(self.layout.total)?);
            self.adam_m = Some(self.dev.alloc(self.layout.total)?);
            self.adam_v = Some(self.dev.alloc(self.layout.total)?);
        }
        Ok(())
    }

    /// Activation buffers for (b, t), reallocated only when the shape changes.
    fn ensure_acts(&mut self, b: usize, t: usize, training: bool) -> Result<()> {
        let fits = matches!(&self.acts, Some(a) if a.layout.b == b && a.layout.t == t);
        if !fits {
            let (c, v, nh) = (self.cfg.n_embd, self.cfg.vocab_size, self.cfg.n_head);
            let widest = [b * nh * t * t, b * t * v, b * t * 4 * c].into_iter().max().unwrap_or(0);
            check_view_len(&self.dev.backend, widest, &format!("a batch of {b} × {t} tokens"))?;
            let layout = ActLayout::new(&self.cfg, b, t);
            let buf = self.dev.alloc(layout.total)?;
            self.acts = Some(Acts { layout, buf, grad: None, ids_live: false });
        }
        if training && self.acts.as_ref().unwrap().grad.is_none() {
            let c = self.cfg.n_embd;
            let bt = b * t;
            let d = &self.dev;
            let scratch = d.backend.attention_scratch_len(b, t, self.cfg.n_head).max(1);
            let g = GradScratch {
                dres: d.alloc(bt * c)?,
                dbtc: d.alloc(bt * c)?,
                dqkv: d.alloc(bt * 3 * c)?,
                dfch: d.alloc(bt * 4 * c)?,
                datt: d.alloc(scratch)?,
                sink: d.alloc(2 * c)?,
            };
            self.acts.as_mut().unwrap().grad = Some(g);
        }
        Ok(())
    }

    /// The activations of the last forward pass.
    pub fn acts(&self) -> Option<&Acts<B>> {
        self.acts.as_ref()
    }

    /// Download one slot of the last forward pass (e.g. `layers[l].fch_act`, or `residual(l)`).
    pub fn download_slot(&self, slot: Slot) -> Vec<f32> {
        let a = self.acts.as_ref().expect("no forward pass has run");
        self.dev.download_f32(View::new(&a.buf, slot.off, slot.len))
    }

    /// Check token ids and length before anything touches the device.
    pub fn check_tokens(&self, tokens: &[u32], b: usize, t: usize) -> Result<()> {
        if b == 0 || t == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        if tokens.len() != b * t {
            return Err(Error::Input(format!("{} tokens given for a batch of {b} × {t}", tokens.len())));
        }
        if t > self.cfg.n_positions {
            return Err(Error::Input(format!(
                "sequence length {t} is longer than the model's context of {}",
                self.cfg.n_positions
            )));
        }
        if let Some((i, &id)) = tokens.iter().enumerate().find(|(_, &id)| id as usize >= self.cfg.vocab_size) {
            return Err(Error::Input(format!(
                "token id {id} at row {}, position {} is outside the vocabulary of {}",
                i / t,
                i % t,
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Causal-LM targets: position t predicts token t+1; the last position (and, with `mask_pad`,
    /// padding targets) get no target.
    pub fn lm_targets(&self, tokens: &[u32], b: usize, t: usize, mask_pad: bool) -> Vec<u32> {
        let mut tg = vec![IGNORE_TARGET; b * t];
        for bi in 0..b {
            for ti in 0..t - 1 {
                let next = tokens[bi * t + ti + 1];
                if !(mask_pad && Some(next) == self.cfg.pad_token_id) {
                    tg[bi * t + ti] = next;
                }
            }
        }
        tg
    }

    /// Forward pass over a [b, t] batch. With `targets`, also per-position losses and predictions.
    pub fn forward(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<()> {
        self.forward_hooked(tokens, targets, b, t, &mut |_, _| {})
    }

    /// `forward` with `after_act(layer, fch_act)` run after every layer's MLP activation, where it
    /// may enqueue ops that edit the activations [b, t, 4C] in place (neuron ablations).
    pub fn forward_hooked(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize, after_act: &mut dyn FnMut(usize, View<'_, B::Buffer>)) -> Result<()> {
        self.check_tokens(tokens, b, t)?;
        self.ensure_acts(b, t, false)?;
        let a = self.acts.as_ref().unwrap();
        let l = &a.layout;
        let dev = &self.dev;
        let av = |s: Slot| View::new(&a.buf, s.off, s.len);
        dev.upload_u32(av(l.tokens), tokens);
        if let Some(tg) = targets {
            if tg.len() != b * t {
                return Err(Error::Input("targets do not match the batch shape".into()));
            }
            if let Some(&bad) = tg.iter().find(|&&x| x != IGNORE_TARGET && x as usize >= self.cfg.vocab_size) {
                return Err(Error::Input(format!("target id {bad} is outside the vocabulary")));
            }
            dev.upload_u32(av(l.targets), tg);
        }
        let ids = self.example_ids.take().filter(|_| self.cfg.example_tied_dropout.is_some());
        if let Some(ids) = &ids {
            if ids.len() != b {
                return Err(Error::Input(format!("{} example ids given for a batch of {b} rows", ids.len())));
            }
            dev.upload_u32(av(l.ids), ids);
        }
        self.acts.as_mut().unwrap().ids_live = ids.is_some();
        self.forward_ops(b, t, targets.is_some(), after_act);
        Ok(())
    }

    /// The dataset indices of the next forward pass's rows (example-tied dropout's training masks).
    pub fn set_example_ids(&mut self, ids: &[u32]) {
        self.example_ids = Some(ids.to_vec());
    }

    /// Example-tied dropout of x [n, c] into out (rows of t positions from pos0), if the config has
    /// it: the training masks with `ids`, the evaluation mask without.
    pub(crate) fn etd_op<'v>(&self, out: View<'v, B::Buffer>, x: View<'v, B::Buffer>, ids: Option<View<'v, B::Buffer>>, n: usize, t: usize, pos0: usize) -> Option<Op<'v, B::Buffer>> {
        let e = self.cfg.example_tied_dropout?;
        let c = self.cfg.n_embd;
        let scale = if ids.is_some() { 1.0 } else { e.eval_scale() };
        Some(Op::ExampleTiedDropout { out, x, ids, n, t, c, pos0, seed: e.seed, mode: e.mode, keep: e.keep(c, self.cfg.n_positions), mem: e.mem(c), scale })
    }

    /// The op sequence of the forward pass (tokens/targets already on the device). `after_act(l,
    /// fch_act)` runs after layer l's MLP activation (a probe may read or overwrite it there).
    fn forward_ops(&self, b: usize, t: usize, with_loss: bool, after_act: &mut dyn FnMut(usize, View<'_, B::Buffer>)) {
        let cfg = &self.cfg;
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        let a = self.acts.as_ref().unwrap();
        let l = &a.layout;
        let dev = &self.dev;
        let av = |s: Slot| View::new(&a.buf, s.off, s.len);
        let pv = |k: ParamKind, layer: usize| View::new(&self.params, self.layout.offset(k, layer), self.layout.len(k));
        use ParamKind::*;

        dev.exec(Op::EncoderForward { out: av(l.encoded), tokens: av(l.tokens), wte: pv(Wte, 0), wpe: pv(Wpe, 0), b, t, c, pos0: 0 });
        let ids = a.ids_live.then(|| av(l.ids));
        for (li, s) in l.layers.iter().enumerate() {
            let residual = av(l.block_input(li));
            if let Some(op) = self.etd_op(residual, av(l.residual(li)), ids, n, t, 0) {
                dev.exec(op);
            }
            dev.exec(Op::LayerNormForward { out: av(s.ln1), mean: av(s.ln1_mean), rstd: av(s.ln1_rstd), inp: residual, weight: pv(Ln1W, li), bias: pv(Ln1B, li), n, c, eps: cfg.layer_norm_epsilon });
            dev.exec(Op::MatmulForward { out: av(s.qkv), inp: av(s.ln1), weight: pv(AttnW, li), bias: Some(pv(AttnB, li)), n, c, oc: 3 * c, layout: WeightLayout::InOut });
            dev.exec(Op::AttentionForward { out: av(s.atty), att: av(s.att), qkv: av(s.qkv), b, t, c, nh });
            dev.exec(Op::MatmulForward { out: av(s.attproj), inp: av(s.atty), weight: pv(AttnProjW, li), bias: Some(pv(AttnProjB, li)), n, c, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::Residual { out: av(s.res2), a: residual, b: av(s.attproj), n: n * c });
            dev.exec(Op::LayerNormForward { out: av(s.ln2), mean: av(s.ln2_mean), rstd: av(s.ln2_rstd), inp: av(s.res2), weight: pv(Ln2W, li), bias: pv(Ln2B, li), n, c, eps: cfg.layer_norm_epsilon });
            self.mlp_matmul_forward(av(s.fch), av(s.ln2), li, false, n);
            dev.exec(Op::ActivationForward { out: av(s.fch_act), inp: av(s.fch), n: n * 4 * c, act: cfg.activation });
            after_act(li, av(s.fch_act));
            self.mlp_matmul_forward(av(s.fcproj), av(s.fch_act), li, true, n);
            dev.exec(Op::Residual { out: av(s.res3), a: av(s.res2), b: av(s.fcproj), n: n * c });
        }
        let top = av(l.residual(cfg.n_layer));
        dev.exec(Op::LayerNormForward { out: av(l.lnf), mean: av(l.lnf_mean), rstd: av(l.lnf_rstd), inp: top, weight: pv(LnfW, 0), bias: pv(LnfB, 0), n, c, eps: cfg.layer_norm_epsilon });
        dev.exec(Op::MatmulForward { out: av(l.logits), inp: av(l.lnf), weight: pv(Wte, 0), bias: None, n, c, oc: v, layout: WeightLayout::OutIn });
        if with_loss {
            dev.exec(Op::SoftmaxCrossEntropyForward { losses: av(l.losses), probs: av(l.probs), logits: av(l.logits), targets: av(l.targets), n, v });
        }
        dev.exec(Op::Argmax { out: av(l.preds), logits: av(l.logits), n, v, suppress: None });
    }

    /// Layer `li`'s `c_fc` (or, with `proj`, `c_proj`) matmul: masked when weight masks are set.
    fn mlp_matmul_forward(&self, out: View<'_, B::Buffer>, inp: View<'_, B::Buffer>, li: usize, proj: bool, n: usize) {
        let (c, f) = (self.cfg.n_embd, self.cfg.n_inner());
        let (wk, bk, ic, oc) = if proj { (ParamKind::FcProjW, ParamKind::FcProjB, f, c) } else { (ParamKind::FcW, ParamKind::FcB, c, f) };
        let pv = |k: ParamKind| View::new(&self.params, self.layout.offset(k, li), self.layout.len(k));
        let op = match &self.weight_masks {
            Some(m) => {
                let tensor = 2 * li + proj as usize;
                Op::MaskedMatmulForward { out, inp, weight: pv(wk), bias: Some(pv(bk)), scores: m.scores_of(tensor), cut: m.cut_of(tensor), n, c: ic, oc }
            }
            None => Op::MatmulForward { out, inp, weight: pv(wk), bias: Some(pv(bk)), n, c: ic, oc, layout: WeightLayout::InOut },
        };
        self.dev.exec(op);
    }

    /// Logits of the last forward pass, [B, T, V].
    pub fn download_logits(&self) -> Vec<f32> {
        let a = self.acts.as_ref().expect("no forward pass has run");
        self.download_slot(a.layout.logits)
    }

    /// Forward with targets and download losses and predictions.
    pub fn evaluate(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Result<ForwardOutput> {
        let dev = self.dev.clone();
        dev.backend.scope(|| self.forward(tokens, Some(targets), b, t))?;
        let l = self.acts.as_ref().unwrap().layout.clone();
        let losses = self.download_slot(l.losses);
        let preds = bytemuck::cast_slice(&self.download_slot(l.preds)).to_vec();
        let n_targets = targets.iter().filter(|&&x| x != IGNORE_TARGET).count();
        let loss = losses.iter().map(|&x| x as f64).sum::<f64>() / n_targets.max(1) as f64;
        Ok(ForwardOutput { loss, n_targets, losses, preds })
    }

    /// Forward + backward: parameter gradients of the mean loss (zeroed first). Returns the loss.
    pub fn forward_backward(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Result<f64> {
        self.forward_backward_hooked(tokens, targets, b, t, &mut |_, _| {}, &mut |_, _| {})
    }

    /// `forward_backward` with `after_act(l, fch_act)` after every MLP activation (as in
    /// `forward_hooked`) and `after_dact(l, d)` on d(loss)/d(post-activation) [b, t, 4C] before the
    /// activation backward uses it (a hook may edit it in place: a mask's chain rule).
    pub fn forward_backward_hooked(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        after_act: &mut dyn FnMut(usize, View<'_, B::Buffer>),
        after_dact: &mut dyn FnMut(usize, View<'_, B::Buffer>),
    ) -> Result<f64> {
        if self.weight_masks.is_some() {
            return Err(Error::Input("weight masks are set: bake or clear them before training the weights".into()));
        }
        self.ensure_training_buffers()?;
        self.ensure_acts(b, t, true)?;
        self.forward_hooked(tokens, Some(targets), b, t, after_act)?;
        let n_targets = targets.iter().filter(|&&x| x != IGNORE_TARGET).count();
        if n_targets == 0 {
            return Err(Error::Input("batch has no target positions".into()));
        }
        let losses = self.download_slot(self.acts.as_ref().unwrap().layout.losses);
        let loss = losses.iter().map(|&x| x as f64).sum::<f64>() / n_targets as f64;
        self.backward_ops(b, t, 1.0 / n_targets as f32, false, false, after_dact);
        Ok(loss)
    }

    /// Forward + backward of J = Σ_i weights[i]·loss_i over the positions of a [b, t] batch
    /// (`weights` [b·t], ignored where there is no target): the per-sample objectives of the
    /// unlearning methods. With `frozen`, no parameter gradients are computed — only the straight-
    /// through score gradients of the weight masks (zeroed first), when masks are set; otherwise all
    /// parameter gradients (zeroed first; masks must not be set). Returns the per-position losses.
    pub fn forward_backward_weighted(&mut self, tokens: &[u32], targets: &[u32], weights: &[f32], b: usize, t: usize, frozen: bool) -> Result<Vec<f32>> {
        self.forward_backward_weighed_by(tokens, targets, b, t, frozen, &mut |_| Ok(weights.to_vec()))
    }

    /// `forward_backward_weighted` with the weights chosen after the forward pass from its
    /// per-position losses (`weigh(losses)`; loss truncation drops samples by their loss).
    pub fn forward_backward_weighed_by(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, frozen: bool, weigh: &mut dyn FnMut(&[f32]) -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        if !frozen && self.weight_masks.is_some() {
            return Err(Error::Input("weight masks are set: bake or clear them before training the weights".into()));
        }
        if !frozen {
            self.ensure_training_buffers()?;
        }
        self.ensure_acts(b, t, true)?;
        self.forward_hooked(tokens, Some(targets), b, t, &mut |_, _| {})?;
        let l = self.acts.as_ref().unwrap().layout.clone();
        let losses = self.download_slot(l.losses);
        let weights = weigh(&losses)?;
        if weights.len() != b * t {
            return Err(Error::Input(format!("{} loss weights given for a batch of {b} × {t}", weights.len())));
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
            return Err(Error::Numerical(format!("loss weight {} at position {i} is not finite", weights[i])));
        }
        self.dev.upload_f32(View::new(&self.acts.as_ref().unwrap().buf, l.weights.off, l.weights.len), &weights);
        self.backward_ops(b, t, 1.0, true, frozen, &mut |_, _| {});
        Ok(losses)
    }

    /// The parameter gradients of the last non-frozen backward pass (on the device).
    pub fn grads_buffer(&self) -> Option<&B::Buffer> {
        self.grads.as_ref()
    }

    /// A plain probe of the MLP activations, for reference implementations of the attribution
    /// methods (src/attribution has the fast ones): forward over [b, t] with layer `patch.layer`'s
    /// post-activation at position `patch.pos` of every row replaced by `patch.values` [b, 4C],
    /// then backward of the mean cross-entropy over `targets`. Returns the per-position losses and
    /// d(mean loss)/d(post-activation) of layer `tap` [b, t, 4C] (parameter gradients are computed too).
    pub fn probe_activations(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, patch: Option<ActPatch<'_>>, tap: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let f = self.cfg.n_inner();
        if tap >= self.cfg.n_layer {
            return Err(Error::Input(format!("layer {tap} is outside a model of {} layers", self.cfg.n_layer)));
        }
        if let Some(p) = &patch {
            if p.layer >= self.cfg.n_layer || p.pos >= t || p.values.len() != b * f {
                return Err(Error::Input("activation patch does not fit the batch".into()));
            }
        }
        self.ensure_training_buffers()?;
        self.ensure_acts(b, t, true)?;
        self.check_tokens(tokens, b, t)?;
        let n_targets = targets.iter().filter(|&&x| x != IGNORE_TARGET).count();
        if targets.len() != b * t || n_targets == 0 {
            return Err(Error::Input("probe targets must match the batch and name at least one position".into()));
        }
        let dev = self.dev.clone();
        let a = self.acts.as_ref().unwrap();
        let l = &a.layout;
        dev.upload_u32(View::new(&a.buf, l.tokens.off, l.tokens.len), tokens);
        dev.upload_u32(View::new(&a.buf, l.targets.off, l.targets.len), targets);
        self.acts.as_mut().unwrap().ids_live = false;
        let a = self.acts.as_ref().unwrap();
        let l = &a.layout;
        self.forward_ops(b, t, true, &mut |layer, act| {
            if let Some(p) = patch.filter(|p| p.layer == layer) {
                for row in 0..b {
                    dev.upload_f32(act.slice((row * t + p.pos) * f, f), &p.values[row * f..(row + 1) * f]);
                }
            }
        });
        let losses = self.download_slot(l.losses);
        let mut dact = Vec::new();
        self.backward_ops(b, t, 1.0 / n_targets as f32, false, false, &mut |layer, d| {
            if layer == tap {
                dact = dev.download_f32(d);
            }
        });
        Ok((losses, dact))
    }

    /// The op sequence of the backward pass, walking the forward in reverse. `after_dact(l, d)` sees
    /// d(loss)/d(layer l's MLP post-activation) before the activation backward overwrites it. Each
    /// position's loss is scaled by `dloss` (and, with `weighted`, by its entry in the weights slot).
    /// `frozen` computes activation gradients only (plus the masks' score gradients), and only down to
    /// layer 0's c_fc.
    fn backward_ops(&self, b: usize, t: usize, dloss: f32, weighted: bool, frozen: bool, after_dact: &mut dyn FnMut(usize, View<'_, B::Buffer>)) {
        let cfg = &self.cfg;
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        let a = self.acts.as_ref().unwrap();
        let g = a.grad.as_ref().unwrap();
        let l = &a.layout;
        let dev = &self.dev;
        let grads = if frozen { None } else { self.grads.as_ref() };
        let av = |s: Slot| View::new(&a.buf, s.off, s.len);
        let pv = |k: ParamKind, layer: usize| View::new(&self.params, self.layout.offset(k, layer), self.layout.len(k));
        // Parameter-gradient views; a frozen pass has none (`gs` sends LayerNorm's to the sink).
        let gv = |k: ParamKind, layer: usize| grads.map(|g| View::new(g, self.layout.offset(k, layer), self.layout.len(k)));
        let gs = |k: ParamKind, layer: usize, half: usize| gv(k, layer).unwrap_or_else(|| View::new(&g.sink, half * c, c));
        let (dres, dbtc, dqkv, dfch) =
            (dev.view(&g.dres), dev.view(&g.dbtc), dev.view(&g.dqkv), dev.view(&g.dfch));
        use ParamKind::*;

        if let Some(grads) = grads {
            dev.exec(Op::Fill { dst: dev.view(grads), value: 0.0 });
        }
        if let Some(m) = &self.weight_masks {
            dev.exec(Op::Fill { dst: dev.view(&m.dscores), value: 0.0 });
        }
        if grads.is_none() {
            dev.exec(Op::Fill { dst: dev.view(&g.sink), value: 0.0 });
        }
        // d(logits) overwrites the probabilities in place.
        let dlogits = av(l.probs);
        let weights = weighted.then(|| av(l.weights));
        dev.exec(Op::CrossEntropyBackward { dlogits, probs: av(l.probs), targets: av(l.targets), scale: dloss, weights, n, v });
        dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: gv(Wte, 0), dbias: None, dout: dlogits, inp: av(l.lnf), weight: pv(Wte, 0), n, c, oc: v, layout: WeightLayout::OutIn });
        dev.exec(Op::Fill { dst: dres, value: 0.0 });
        let top = av(l.residual(cfg.n_layer));
        dev.exec(Op::LayerNormBackward { dinp: dres, dweight: gs(LnfW, 0, 0), dbias: gs(LnfB, 0, 1), dout: dbtc, inp: top, weight: pv(LnfW, 0), mean: av(l.lnf_mean), rstd: av(l.lnf_rstd), n, c });
        for li in (0..cfg.n_layer).rev() {
            let s = &l.layers[li];
            // MLP: res3 = res2 + proj(act(fc(ln2(res2)))); d(res3) is in dres.
            self.mlp_matmul_backward(Some(dfch), dres, av(s.fch_act), li, true, grads, n);
            after_dact(li, dfch.slice(0, n * 4 * c));
            dev.exec(Op::ActivationBackward { dinp: dfch, inp: av(s.fch), dout: dfch, n: n * 4 * c, act: cfg.activation });
            // A frozen pass wants nothing below layer 0's c_fc scores (no parameter gradients, no
            // masks further down): stop there, as autograd does when no input requires a gradient.
            if frozen && li == 0 {
                self.mlp_matmul_backward(None, dfch, av(s.ln2), li, false, grads, n);
                break;
            }
            self.mlp_matmul_backward(Some(dbtc), dfch, av(s.ln2), li, false, grads, n);
            dev.exec(Op::LayerNormBackward { dinp: dres, dweight: gs(Ln2W, li, 0), dbias: gs(Ln2B, li, 1), dout: dbtc, inp: av(s.res2), weight: pv(Ln2W, li), mean: av(s.ln2_mean), rstd: av(s.ln2_rstd), n, c });
            // Attention: res2 = res + proj(attn(qkv(ln1(res)))); d(res2) is in dres.
            dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: gv(AttnProjW, li), dbias: gv(AttnProjB, li), dout: dres, inp: av(s.atty), weight: pv(AttnProjW, li), n, c, oc: c, layout: WeightLayout::InOut });
            dev.exec(Op::AttentionBackward { dqkv, scratch: dev.view(&g.datt), dout: dbtc, qkv: av(s.qkv), att: av(s.att), b, t, c, nh });
            dev.exec(Op::MatmulBackward { dinp: Some(dbtc), dweight: gv(AttnW, li), dbias: gv(AttnB, li), dout: dqkv, inp: av(s.ln1), weight: pv(AttnW, li), n, c, oc: 3 * c, layout: WeightLayout::InOut });
            dev.exec(Op::LayerNormBackward { dinp: dres, dweight: gs(Ln1W, li, 0), dbias: gs(Ln1B, li, 1), dout: dbtc, inp: av(l.block_input(li)), weight: pv(Ln1W, li), mean: av(s.ln1_mean), rstd: av(s.ln1_rstd), n, c });
            // Example-tied dropout's backward: the same mask on d(block input).
            if let Some(op) = self.etd_op(dres, dres, a.ids_live.then(|| av(l.ids)), n, t, 0) {
                dev.exec(op);
            }
        }
        if let (Some(dwte), Some(dwpe)) = (gv(Wte, 0), gv(Wpe, 0)) {
            dev.exec(Op::EncoderBackward { dwte, dwpe, dout: dres, tokens: av(l.tokens), b, t, c, pos0: 0 });
        }
    }

    /// Backward of `mlp_matmul_forward`: dinp (overwritten; `None` skips it), and the weight and bias gradients into
    /// `grads` — or, with weight masks set, the straight-through score gradients instead.
    #[allow(clippy::too_many_arguments)]
    fn mlp_matmul_backward(&self, dinp: Option<View<'_, B::Buffer>>, dout: View<'_, B::Buffer>, inp: View<'_, B::Buffer>, li: usize, proj: bool, grads: Option<&B::Buffer>, n: usize) {
        let (c, f) = (self.cfg.n_embd, self.cfg.n_inner());
        let (wk, bk, ic, oc) = if proj { (ParamKind::FcProjW, ParamKind::FcProjB, f, c) } else { (ParamKind::FcW, ParamKind::FcB, c, f) };
        let view = |buf, k: ParamKind| View::new(buf, self.layout.offset(k, li), self.layout.len(k));
        let weight = view(&self.params, wk);
        let op = match &self.weight_masks {
            Some(m) => {
                let tensor = 2 * li + proj as usize;
                Op::MaskedMatmulBackward { dinp, dscores: Some(m.dscores_of(tensor)), dout, inp, weight, scores: m.scores_of(tensor), cut: m.cut_of(tensor), n, c: ic, oc }
            }
            None => Op::MatmulBackward { dinp, dweight: grads.map(|g| view(g, wk)), dbias: grads.map(|g| view(g, bk)), dout, inp, weight, n, c: ic, oc, layout: WeightLayout::InOut },
        };
        self.dev.exec(op);
    }

    /// One AdamW update with the current gradients.
    pub fn adamw_update(&mut self, h: &AdamW) -> Result<()> {
        self.ensure_training_buffers()?;
        self.step += 1;
        let dev = &self.dev;
        dev.exec(Op::AdamW {
            params: dev.view(&self.params),
            grads: dev.view(self.grads.as_ref().unwrap()),
            m: dev.view(self.adam_m.as_ref().unwrap()),
            v: dev.view(self.adam_v.as_ref().unwrap()),
            step: self.step,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            weight_decay: h.weight_decay,
        });
        Ok(())
    }

    /// forward → backward → AdamW. A non-finite loss stops with an error naming the step.
    pub fn train_step(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, h: &AdamW) -> Result<f64> {
        let dev = self.dev.clone();
        let loss = dev.backend.scope(|| self.forward_backward(tokens, targets, b, t))?;
        if !loss.is_finite() {
            return Err(Error::Numerical(format!("loss is {loss} at step {}", self.step + 1)));
        }
        self.adamw_update(h)?;
        Ok(loss)
    }
}

/// HF GPT-2 `_init_weights`: N(0, σ²) for matrices and embeddings, σ/√(2·n_layer) for the residual
/// projections, LayerNorm 1/0, biases 0.
pub fn init_params(cfg: &ModelConfig, layout: &ParamLayout, seed: u64) -> Vec<f32> {
    let mut p = vec![0f32; layout.total];
    let std = cfg.initializer_range as f64;
    let proj_std = std / (2.0 * cfg.n_layer as f64).sqrt();
    for (i, view) in layout.views.iter().enumerate() {
        use ParamKind::*;
        let sigma = match view.kind {
            Wte | Wpe | AttnW | FcW => std,
            AttnProjW | FcProjW => proj_std,
            Ln1W | Ln2W | LnfW => {
                p[view.range()].fill(1.0);
                continue;
            }
            _ => continue,
        };
        // One stream per tensor, so a tensor's init does not depend on the others' sizes.
        let mut rng = Stream::new(seed, purpose::INIT, i as u32);
        for x in &mut p[view.range()] {
            *x = (rng.normal() * sigma) as f32;
        }
    }
    p
}

/// A backend binds each op operand as one view; refuse sizes past its limit up front (with a way out)
/// instead of failing inside a kernel launch.
fn check_view_len<B: Backend>(backend: &B, len: usize, what: &str) -> Result<()> {
    let max = backend.max_view_len();
    if len > max {
        return Err(Error::Input(format!(
            "{what} needs a {:.0} MiB operand, above the {} backend's {:.0} MiB binding limit; use a smaller batch",
            len as f64 * 4.0 / 1048576.0,
            backend.name(),
            max as f64 * 4.0 / 1048576.0
        )));
    }
    Ok(())
}

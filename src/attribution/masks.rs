//! Learned neuron masks (tinymem.md §5.4, after MemPi): Slimming and Hard Concrete. A per-neuron
//! mask multiplies each layer's MLP post-activation; the model's weights stay frozen and only the
//! mask parameters learn, by Adam on the memorized loss plus a sparsity term. The mask is applied
//! and differentiated on the device (`ScaleColumns`, `ColumnDot` in the model's activation hooks);
//! the few thousand mask parameters and their optimizer live on the host.

use super::NeuronScores;
use crate::backend::{Backend, Op, View};
use crate::data::TokenMatrix;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::rng::{purpose, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskMethod {
    /// a·clip(c, 0, 1), c initialised to 1, λ·Σ|c|/N; score clip(c, 0, 1).
    Slimming,
    /// An L0 Hard Concrete gate per neuron (β 2/3, stretch to (−0.1, 1.1)), λ·mean σ(s − β·log(−l/r)); score σ(s).
    HardConcrete,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct MaskOptions {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// λ of the sparsity term (`lambda_l1`).
    pub lambda: f64,
    /// Stop once the sparsity term falls below this (`stop_loss`), checked every `check_every` epochs.
    pub stop_loss: f64,
    pub check_every: usize,
    /// The reference's quirk: gradients accumulate over an epoch's batches (zero_grad once per epoch).
    pub accumulate_epoch_grads: bool,
    pub seed: u64,
}

impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions { epochs: 20, batch: 32, lr: 0.1, lambda: 1000.0, stop_loss: 0.1, check_every: 100, accumulate_epoch_grads: false, seed: 0 }
    }
}

const BETA: f64 = 2.0 / 3.0;
const LEFT: f64 = -0.1;
const RIGHT: f64 = 1.1;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's Adam (betas 0.9/0.999, eps 1e-8, no decay) over host parameters.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    step: i32,
}

impl Adam {
    fn update(&mut self, p: &mut [f64], g: &[f64], lr: f64) {
        self.step += 1;
        let (b1, b2) = (0.9f64, 0.999f64);
        let (bc1, bc2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        for i in 0..p.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr * (self.m[i] / bc1) / ((self.v[i] / bc2).sqrt() + 1e-8);
        }
    }
}

/// What training did: the last memorized loss and sparsity term, and the epochs run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MaskTrace {
    pub epochs: usize,
    pub loss: f64,
    pub sparsity: f64,
}

/// Device buffers of a masked step: the mask [layers, 4C], the unmasked activations of every layer,
/// and d(loss)/d(mask).
pub struct MaskBuffers<B: Backend> {
    mask: B::Buffer,
    pre: B::Buffer,
    gmask: B::Buffer,
    b_max: usize,
    t: usize,
}

impl<B: Backend> MaskBuffers<B> {
    pub fn new(model: &Model<B>, b_max: usize, t: usize) -> Result<Self> {
        let (nl, w) = (model.cfg.n_layer, model.cfg.n_inner());
        let dev = &model.dev;
        Ok(MaskBuffers { mask: dev.alloc(nl * w)?, pre: dev.alloc(nl * b_max * t * w)?, gmask: dev.alloc(nl * w)?, b_max, t })
    }

    /// Mean next-token loss (padding targets included) of `tokens` [b, t] with every layer's MLP
    /// post-activation multiplied by `mask` [layers, 4C], and its gradient with respect to the mask.
    pub fn loss_and_grad(&self, model: &mut Model<B>, tokens: &[u32], t: usize, mask: &[f32]) -> Result<(f64, Vec<f32>)> {
        let (nl, w) = (model.cfg.n_layer, model.cfg.n_inner());
        let b = tokens.len() / t.max(1);
        if t != self.t || b > self.b_max || mask.len() != nl * w {
            return Err(Error::Input(format!("masked step of {b} × {t} with {} mask values does not fit buffers for {} × {} and {}", mask.len(), self.b_max, self.t, nl * w)));
        }
        let dev = model.dev.clone();
        let n = b * t;
        dev.upload_f32(dev.view(&self.mask), mask);
        let targets = crate::experiment::lm_targets_with_padding(tokens, t);
        let mask_l = |l: usize| View::new(&self.mask, l * w, w);
        let pre_l = |l: usize| View::new(&self.pre, l * self.b_max * t * w, n * w);
        let loss = dev.backend.scope(|| {
            model.forward_backward_hooked(
                tokens,
                &targets,
                b,
                t,
                &mut |l, act| {
                    let act = act.slice(0, n * w);
                    dev.exec(Op::CopyStrided { dst: pre_l(l), src: act, batches: 1, rows: 1, cols: n * w, dst_strides: [0, 0], src_strides: [0, 0] });
                    dev.exec(Op::ScaleColumns { x: act, scale: mask_l(l), n, w });
                },
                &mut |l, d| {
                    // d(loss)/d(mask) = Σ a·d(masked); then d(a) = mask·d(masked) for the layers below.
                    dev.exec(Op::ColumnDot { out: View::new(&self.gmask, l * w, w), a: pre_l(l), b: d, n, w });
                    dev.exec(Op::ScaleColumns { x: d, scale: mask_l(l), n, w });
                },
            )
        })?;
        Ok((loss, dev.download_f32(dev.view(&self.gmask))))
    }
}

/// Train the mask on `rows` (the memorized set; next-token loss at every position, padding
/// included, as TinyMem trains) and return the per-neuron scores.
pub fn learned_mask_scores<B: Backend>(model: &mut Model<B>, rows: &TokenMatrix, method: MaskMethod, o: &MaskOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<(NeuronScores, MaskTrace)> {
    if rows.rows() == 0 {
        return Err(Error::Input("mask training: no sequences (is the memorized set empty?)".into()));
    }
    if o.batch == 0 || o.epochs == 0 {
        return Err(Error::Input("mask training needs a positive batch and at least one epoch".into()));
    }
    let (nl, w, t) = (model.cfg.n_layer, model.cfg.n_inner(), rows.cols);
    let total = nl * w;
    let bufs = MaskBuffers::new(model, o.batch.min(rows.rows()), t)?;
    let mut rng = Stream::new(o.seed, purpose::MISC, 0x3a5c);
    // Slimming: c = 1; Hard Concrete: s ~ N(0, 0.01) (the reference's std).
    let mut p: Vec<f64> = match method {
        MaskMethod::Slimming => vec![1.0; total],
        MaskMethod::HardConcrete => (0..total).map(|_| 0.01 * rng.normal()).collect(),
    };
    let mut adam = Adam { m: vec![0.0; total], v: vec![0.0; total], step: 0 };
    let shift = BETA * (-LEFT / RIGHT).ln();
    let sparsity = |p: &[f64]| match method {
        MaskMethod::Slimming => o.lambda * p.iter().map(|c| c.abs()).sum::<f64>() / total as f64,
        MaskMethod::HardConcrete => o.lambda * p.iter().map(|s| sigmoid(s - shift)).sum::<f64>() / total as f64,
    };
    let batches = rows.rows().div_ceil(o.batch);
    let mut trace = MaskTrace { epochs: 0, loss: f64::NAN, sparsity: sparsity(&p) };
    let mut grad = vec![0f64; total];
    for epoch in 0..o.epochs {
        let mut loss_sum = 0.0;
        for (bi, tokens) in rows.data.chunks(o.batch * t).enumerate() {
            // The mask values of this step and dm/dparam.
            let (m, dm): (Vec<f32>, Vec<f64>) = match method {
                MaskMethod::Slimming => p.iter().map(|&c| (c.clamp(0.0, 1.0) as f32, if (0.0..=1.0).contains(&c) { 1.0 } else { 0.0 })).unzip(),
                MaskMethod::HardConcrete => p
                    .iter()
                    .map(|&s| {
                        let u = 1e-4 + (1.0 - 2e-4) * rng.uniform();
                        let st = sigmoid(((u.ln() - (1.0 - u).ln()) + s) / BETA);
                        let stretched = st * (RIGHT - LEFT) + LEFT;
                        let d = if (0.0..=1.0).contains(&stretched) { (RIGHT - LEFT) * st * (1.0 - st) / BETA } else { 0.0 };
                        (stretched.clamp(0.0, 1.0) as f32, d)
                    })
                    .unzip(),
            };
            let (loss, g) = bufs.loss_and_grad(model, tokens, t, &m)?;
            if !loss.is_finite() {
                return Err(Error::Numerical(format!("mask training loss is {loss} at epoch {}", epoch + 1)));
            }
            loss_sum += loss;
            if !o.accumulate_epoch_grads || bi == 0 {
                grad.fill(0.0);
            }
            for i in 0..total {
                let reg = match method {
                    MaskMethod::Slimming => o.lambda * p[i].signum() * (p[i] != 0.0) as u8 as f64 / total as f64,
                    MaskMethod::HardConcrete => {
                        let z = sigmoid(p[i] - shift);
                        o.lambda * z * (1.0 - z) / total as f64
                    }
                };
                grad[i] += g[i] as f64 * dm[i] + reg;
            }
            adam.update(&mut p, &grad, o.lr);
            progress(epoch * batches + bi + 1, o.epochs * batches);
        }
        trace = MaskTrace { epochs: epoch + 1, loss: loss_sum / batches as f64, sparsity: sparsity(&p) };
        if (epoch + 1) % o.check_every.max(1) == 0 && trace.sparsity < o.stop_loss {
            break;
        }
    }
    let scores = match method {
        MaskMethod::Slimming => p.iter().map(|c| c.clamp(0.0, 1.0)).collect(),
        MaskMethod::HardConcrete => p.iter().map(|&s| sigmoid(s)).collect(),
    };
    Ok((NeuronScores::new(nl, w, scores)?, trace))
}

//! Spectral-norm penalty (Yoshida & Miyato 2017; tinymem.md §5.1.1 and §8 item 10).
//!
//! Every parameter whose HF name contains none of `ln`, `wte`, `wpe`, `bias` is penalised, split
//! into column blocks of its HF Conv1D [in, out] storage: `attn.c_attn` into 3·n_head blocks (one
//! per Q/K/V × head, the output columns of that head), `attn.c_proj` into n_head, each MLP matrix
//! whole. Each block keeps a persistent u [rows] (N(0, I) from Philox at the start), and every step
//! runs one power iteration on the current weights (`Op::SpectralPowerIteration`) and adds the
//! penalty's gradient λ·σ·u vᵀ (or λ/2·u vᵀ for the linear penalty) into the parameter gradients
//! (`Op::SpectralGradAdd`) before AdamW. u and v are training state (saved with the optimizer).

use crate::backend::{Backend, Device, Op};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::params::ParamLayout;
use crate::rng::{purpose, Stream};

/// PyTorch F.normalize's eps: x / max(‖x‖, eps).
pub const NORMALIZE_EPS: f32 = 1e-12;

/// x ← x / max(‖x‖, eps), the squared norm summed in index order (the kernels' definition).
pub fn normalize(x: &mut [f32]) {
    let norm = x.iter().fold(0f32, |s, v| s + v * v).sqrt().max(NORMALIZE_EPS);
    for v in x {
        *v /= norm;
    }
}

/// One penalised matrix block: W[i, j] = params[off + i·ld + j] for i < rows, j < cols, with its u
/// at state[state..state + rows] and v right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpectralBlock {
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub state: usize,
}

impl SpectralBlock {
    /// The block's entry in an op's table (5 words).
    pub fn words(&self) -> [u32; 5] {
        let w = |x: usize| u32::try_from(x).expect("spectral blocks use 32-bit offsets");
        [w(self.off), w(self.rows), w(self.cols), w(self.ld), w(self.state)]
    }
    pub fn from_words(w: &[u32]) -> Self {
        SpectralBlock { off: w[0] as usize, rows: w[1] as usize, cols: w[2] as usize, ld: w[3] as usize, state: w[4] as usize }
    }
}

/// A table of blocks as op words.
pub fn table_words(blocks: &[SpectralBlock]) -> Vec<u32> {
    blocks.iter().flat_map(|b| b.words()).collect()
}

/// Whether the reference penalises the tensor named `name` (tinymem.md §5.1.1).
pub fn penalised(name: &str) -> bool {
    !["ln", "wte", "wpe", "bias"].iter().any(|s| name.contains(s))
}

/// The blocks of a model, in parameter order, and the state length (Σ rows + cols).
pub fn model_blocks(cfg: &ModelConfig, layout: &ParamLayout) -> (Vec<SpectralBlock>, usize) {
    let hs = cfg.head_dim();
    let mut blocks = Vec::new();
    let mut state = 0;
    for view in layout.views.iter().filter(|v| penalised(&v.name)) {
        assert_eq!(view.shape.len(), 2, "{} is not a matrix", view.name);
        let (rows, cols) = (view.shape[0], view.shape[1]);
        // Per-head column blocks for the attention matrices (their output columns are head-major).
        let width = if view.name.ends_with("attn.c_attn.weight") || view.name.ends_with("attn.c_proj.weight") { hs } else { cols };
        for c0 in (0..cols).step_by(width) {
            blocks.push(SpectralBlock { off: view.offset + c0, rows, cols: width, ld: cols, state });
            state += rows + width;
        }
    }
    (blocks, state)
}

/// The penalty on the device: blocks, persistent u/v, and the last σ per block.
pub struct Spectral<B: Backend> {
    pub lambda: f32,
    pub linear: bool,
    pub blocks: Vec<SpectralBlock>,
    entries: usize,
    table: B::Buffer,
    state: B::Buffer,
    sigma: B::Buffer,
}

impl<B: Backend> Spectral<B> {
    /// Blocks of `cfg`'s model with u_b ~ N(0, I) from Philox stream b of `seed` (v starts at 0).
    pub fn new(dev: &Device<B>, cfg: &ModelConfig, layout: &ParamLayout, seed: u64, lambda: f32, linear: bool) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::Input(format!("--spectral-lambda must be a finite non-negative number, got {lambda}")));
        }
        let (blocks, len) = model_blocks(cfg, layout);
        let mut init = vec![0f32; len];
        for (k, b) in blocks.iter().enumerate() {
            let mut rng = Stream::new(seed, purpose::SPECTRAL, k as u32);
            for x in &mut init[b.state..b.state + b.rows] {
                *x = rng.normal() as f32;
            }
        }
        Self::with_blocks(dev, blocks, &init, lambda, linear)
    }

    /// Any blocks (tests), with the state `init` (u then v per block).
    pub fn with_blocks(dev: &Device<B>, blocks: Vec<SpectralBlock>, init: &[f32], lambda: f32, linear: bool) -> Result<Self> {
        let len = blocks.iter().map(|b| b.state + b.rows + b.cols).max().unwrap_or(0);
        if blocks.is_empty() || init.len() != len {
            return Err(Error::Input(format!("spectral state of {} values for blocks spanning {len}", init.len())));
        }
        let words = table_words(&blocks);
        let s = Spectral {
            lambda,
            linear,
            entries: blocks.iter().map(|b| b.rows * b.cols).sum(),
            table: dev.alloc(words.len())?,
            state: dev.alloc(len)?,
            sigma: dev.alloc(blocks.len())?,
            blocks,
        };
        dev.upload_u32(dev.view(&s.table), &words);
        dev.upload_f32(dev.view(&s.state), init);
        Ok(s)
    }

    /// u and v of every block (training state).
    pub fn download_state(&self, dev: &Device<B>) -> Vec<f32> {
        dev.download_f32(dev.view(&self.state))
    }

    /// Restore the state saved by `download_state` (resume).
    pub fn upload_state(&self, dev: &Device<B>, state: &[f32]) -> Result<()> {
        let len = dev.backend.buffer_len(&self.state);
        if state.len() != len {
            return Err(Error::Checkpoint(format!("the saved spectral state has {} values; this model's blocks need {len}", state.len())));
        }
        if let Some(i) = state.iter().position(|x| !x.is_finite()) {
            return Err(Error::Checkpoint(format!("the saved spectral state is not finite at index {i}")));
        }
        dev.upload_f32(dev.view(&self.state), state);
        Ok(())
    }

    /// One power iteration per block on the weights in `params`.
    pub fn power_iteration(&self, dev: &Device<B>, params: &B::Buffer) {
        let (blocks, entries) = (self.blocks.len(), self.entries);
        dev.exec(Op::SpectralPowerIteration { state: dev.view(&self.state), sigma: dev.view(&self.sigma), params: dev.view(params), table: dev.view(&self.table), blocks, entries });
    }

    /// Add the penalty's gradient at the last iteration's u, v, σ into `grads`.
    pub fn add_gradient(&self, dev: &Device<B>, grads: &B::Buffer) {
        let (blocks, entries) = (self.blocks.len(), self.entries);
        dev.exec(Op::SpectralGradAdd { grads: dev.view(grads), state: dev.view(&self.state), sigma: dev.view(&self.sigma), table: dev.view(&self.table), blocks, entries, lambda: self.lambda, linear: self.linear });
    }

    /// σ of every block from the last power iteration.
    pub fn sigmas(&self, dev: &Device<B>) -> Vec<f32> {
        dev.download_f32(dev.view(&self.sigma))
    }

    /// (λ/2)·Σσ², or (λ/2)·Σσ when linear.
    pub fn penalty(&self, sigmas: &[f32]) -> f64 {
        let sum: f64 = sigmas.iter().map(|&s| if self.linear { s as f64 } else { (s as f64).powi(2) }).sum();
        0.5 * self.lambda as f64 * sum
    }
}

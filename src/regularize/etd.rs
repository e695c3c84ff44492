//! Example-tied dropout (Maini et al. 2023; tinymem.md §5.1.3 and §8 item 9) on every block's input
//! hidden state, before `ln_1` (the masked state also feeds the block's residual path).
//!
//! Channels (default, as Maini et al. describe it): the first ⌊p_gen·C⌋ channels are the
//! generalization channels, always kept (channels are exchangeable at initialisation, so the first
//! ones are as good a fixed set as any); each example keeps ⌊p_mem·C⌋ more of the remaining ones,
//! chosen by Philox keyed by (seed, example dataset index) — recomputed in-kernel every time, so
//! there is no cache and no stale-zero defect. Positions (`--etd-positions`, the reference's code):
//! the first ⌊p_gen·n_positions⌋ positions kept, later ones kept with probability p_mem per
//! (example, position). No rescaling in training; at evaluation only the generalization channels
//! (positions) are kept, scaled by (p_gen + p_mem)/p_gen.

use crate::backend::EtdMode;
use crate::error::{Error, Result};
use crate::rng::{philox4x32, purpose, seed_key};
use serde::{Deserialize, Serialize};

/// What a model trained with example-tied dropout records in its config.json (so `eval`, the
/// memorization test and every later command apply the evaluation mask).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EtdConfig {
    pub mode: EtdMode,
    pub p_gen: f64,
    pub p_mem: f64,
    /// Seed of the per-example masks.
    pub seed: u64,
}

impl EtdConfig {
    pub fn new(mode: EtdMode, seed: u64) -> Self {
        EtdConfig { mode, p_gen: 0.2, p_mem: 0.1, seed }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = |p: f64| p.is_finite() && (0.0..=1.0).contains(&p);
        if !ok(self.p_gen) || !ok(self.p_mem) || self.p_gen == 0.0 || self.p_gen + self.p_mem > 1.0 {
            return Err(Error::Config(format!(
                "example-tied dropout needs 0 < p_gen, 0 ≤ p_mem and p_gen + p_mem ≤ 1, got p_gen {} and p_mem {}",
                self.p_gen, self.p_mem
            )));
        }
        Ok(())
    }

    /// Channels (or positions) always kept: ⌊p_gen·width⌋, width C (or the model's context).
    pub fn keep(&self, c: usize, n_positions: usize) -> usize {
        let width = match self.mode {
            EtdMode::Channels => c,
            EtdMode::Positions => n_positions,
        };
        (self.p_gen * width as f64).floor() as usize
    }

    /// The op's `mem`: ⌊p_mem·C⌋ channels per example, or the u32 threshold p_mem·2³² of a position.
    pub fn mem(&self, c: usize) -> u32 {
        match self.mode {
            EtdMode::Channels => (self.p_mem * c as f64).floor() as u32,
            EtdMode::Positions => (self.p_mem * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
        }
    }

    /// (p_gen + p_mem)/p_gen, the evaluation scale of the kept channels (positions).
    pub fn eval_scale(&self) -> f32 {
        ((self.p_gen + self.p_mem) / self.p_gen) as f32
    }
}

/// Channel j's draw for example `id`.
fn channel_hash(seed: u64, id: u32, j: usize) -> u32 {
    philox4x32([j as u32, id, purpose::ETD, 0], seed_key(seed))[0]
}

/// The channels example `id` keeps in training: j < keep, and the `mem` channels j ≥ keep with the
/// lowest keys (hash_j, j).
pub fn channels_kept(seed: u64, id: u32, c: usize, keep: usize, mem: usize) -> Vec<bool> {
    let mut kept: Vec<bool> = (0..c).map(|j| j < keep).collect();
    let mut keys: Vec<u64> = (keep.min(c)..c).map(|j| (channel_hash(seed, id, j) as u64) << 32 | j as u64).collect();
    let mem = mem.min(keys.len());
    if mem > 0 {
        keys.select_nth_unstable(mem - 1);
        for k in &keys[..mem] {
            kept[(*k & 0xffff_ffff) as usize] = true;
        }
    }
    kept
}

/// Whether position `pos` is kept: below `keep`, or (in training, with the example's id) when its
/// draw is below the threshold `mem`.
pub fn position_kept(seed: u64, id: Option<u32>, pos: usize, keep: usize, mem: u32) -> bool {
    pos < keep || id.is_some_and(|id| philox4x32([pos as u32, id, purpose::ETD, 1], seed_key(seed))[0] < mem)
}

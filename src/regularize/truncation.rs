//! Loss truncation (Kang & Hashimoto 2020; tinymem.md §5.1.2): the reference's `LossDropper`,
//! kept on the host. It remembers the last `recompute` per-sample losses in a ring buffer; once
//! `min_count` samples have been seen it recomputes the cutoff, the (1 − dropc)·100th percentile of
//! the buffer (numpy's linear interpolation), every `recompute` samples, and samples whose loss is
//! at or above the cutoff get weight 0. The counters follow the reference line by line (the first
//! batches fill the buffer in order; `last_computed > recompute` is strict).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The reference's buffer size, minimum count and recompute interval.
pub const WINDOW: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossDropper {
    pub dropc: f64,
    pub min_count: usize,
    pub recompute: usize,
    /// Samples seen.
    pub count: usize,
    /// Samples since the cutoff was last computed.
    pub last_computed: usize,
    /// Next write position of the ring buffer.
    pub cur_idx: usize,
    /// The cutoff in force (None until the first computation: every sample is kept).
    pub cutoff: Option<f64>,
    /// The ring buffer (saved beside the optimizer state, not in JSON).
    #[serde(skip)]
    pub vals: Vec<f32>,
}

impl LossDropper {
    pub fn new(dropc: f64) -> Result<Self> {
        Self::with_window(dropc, WINDOW, WINDOW)
    }

    /// A dropper with buffer (and recompute interval) `recompute`, active from `min_count` samples.
    pub fn with_window(dropc: f64, min_count: usize, recompute: usize) -> Result<Self> {
        if !(0.0..1.0).contains(&dropc) {
            return Err(Error::Input(format!("--dropc must be in [0, 1), got {dropc}")));
        }
        if recompute == 0 {
            return Err(Error::Input("loss truncation needs a buffer of at least one loss".into()));
        }
        Ok(LossDropper { dropc, min_count, recompute, count: 0, last_computed: 0, cur_idx: 0, cutoff: None, vals: vec![0.0; recompute] })
    }

    /// Record a batch of per-sample losses and return their keep mask (1 or 0).
    pub fn mask(&mut self, losses: &[f32]) -> Vec<f32> {
        let k = losses.len();
        self.last_computed += k;
        self.count += k;
        let n = self.vals.len();
        if self.count < n {
            self.vals[self.count - k..self.count].copy_from_slice(losses);
            self.cur_idx += k;
            return vec![1.0; k];
        }
        for &l in losses {
            self.vals[self.cur_idx] = l;
            self.cur_idx += 1;
            if self.cur_idx >= n {
                self.cur_idx = 0;
            }
        }
        if self.count < self.min_count {
            return vec![1.0; k];
        }
        if self.last_computed > self.recompute {
            self.cutoff = Some(percentile(&self.vals, (1.0 - self.dropc) * 100.0));
            self.last_computed = 0;
        }
        let cut = self.cutoff.unwrap_or(f64::INFINITY);
        losses.iter().map(|&l| if (l as f64) < cut { 1.0 } else { 0.0 }).collect()
    }

    /// Restore the ring buffer saved beside the JSON fields.
    pub fn restore_vals(&mut self, vals: Vec<f32>) -> Result<()> {
        if vals.len() != self.recompute {
            return Err(Error::Checkpoint(format!("the saved loss-truncation buffer has {} values, not {}", vals.len(), self.recompute)));
        }
        self.vals = vals;
        Ok(())
    }
}

/// numpy.percentile(a, q) with the default linear method: the sorted values at virtual index
/// (n − 1)·q/100, interpolated with numpy's `_lerp` (from the upper end when the fraction ≥ ½).
pub fn percentile(a: &[f32], q: f64) -> f64 {
    assert!(!a.is_empty(), "percentile of nothing");
    let mut s: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    s.sort_by(f64::total_cmp);
    let h = (s.len() - 1) as f64 * (q / 100.0);
    let lo = (h.floor() as usize).min(s.len() - 1);
    let hi = (lo + 1).min(s.len() - 1);
    let t = h - lo as f64;
    let d = s[hi] - s[lo];
    if t >= 0.5 {
        s[hi] - d * (1.0 - t)
    } else {
        s[lo] + d * t
    }
}

/// Per-row loss weights for J = (1/B)·Σ_i mask_i·ℓ_i with ℓ_i row i's mean loss over its target
/// positions: position (i, p) gets mask_i / (B·n_i) where it has a target (0 elsewhere).
pub fn row_weights(mask: &[f32], targets_per_row: &[usize], t: usize) -> Vec<f32> {
    let b = mask.len();
    let mut w = vec![0f32; b * t];
    for (i, (&m, &n)) in mask.iter().zip(targets_per_row).enumerate() {
        if n > 0 {
            w[i * t..(i + 1) * t].fill((m as f64 / (b as f64 * n as f64)) as f32);
        }
    }
    w
}

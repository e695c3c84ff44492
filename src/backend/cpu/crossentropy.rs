//! Fused softmax + cross-entropy over the vocabulary.

use super::{rd, rd_u32, same, wr, CpuBuffer};
use crate::backend::{View, IGNORE_TARGET};
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

pub fn forward(losses: V, probs: V, logits: V, targets: V, n: usize, v: usize) {
    let (l, tg) = (rd(logits), rd_u32(targets));
    let (losses, probs) = (wr(losses), wr(probs));
    probs[..n * v].par_chunks_mut(v).zip(losses[..n].par_iter_mut()).enumerate().for_each(|(i, (p, loss))| {
        let row = &l[i * v..(i + 1) * v];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (pj, x) in p.iter_mut().zip(row) {
            *pj = super::fast_exp(x - max);
            sum += *pj;
        }
        let inv = 1.0 / sum;
        for pj in p.iter_mut() {
            *pj *= inv;
        }
        let target = tg[i];
        // log-sum-exp form: exact for tiny probabilities.
        *loss = if target == IGNORE_TARGET { 0.0 } else { sum.ln() + max - row[target as usize] };
    });
}

/// Each row's multiplier is scale·weights[i], folded first (as on every backend).
pub fn backward(dlogits: V, probs: V, targets: V, weights: Option<V>, scale: f32, n: usize, v: usize) {
    let weights = weights.map(rd);
    per_target_row(dlogits, probs, targets, n, v, |d, target, i| {
        let s = weights.map_or(scale, |w| scale * w[i]);
        for (j, x) in d.iter_mut().enumerate() {
            let ind = if j == target { 1.0 } else { 0.0 };
            *x = (*x - ind) * s;
        }
    });
}

/// dlogits row i ← grad(probs row i, target i, i) for rows with a target (0 elsewhere); `grad` gets
/// the row's probabilities in place. dlogits may be probs itself.
pub(super) fn per_target_row(dlogits: V, probs: V, targets: V, n: usize, v: usize, grad: impl Fn(&mut [f32], usize, usize) + Sync) {
    let tg = rd_u32(targets);
    let in_place = same(dlogits, probs);
    let p: &[f32] = if in_place { &[] } else { rd(probs) };
    wr(dlogits)[..n * v].par_chunks_mut(v).enumerate().for_each(|(i, d)| {
        let target = tg[i];
        if target == IGNORE_TARGET {
            d.fill(0.0);
            return;
        }
        if !in_place {
            d.copy_from_slice(&p[i * v..(i + 1) * v]);
        }
        grad(d, target as usize, i);
    });
}

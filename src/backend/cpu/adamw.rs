//! AdamW exactly as torch.optim.AdamW (single-tensor path): decoupled decay, then the bias-corrected step.

use super::{rd, wr, CpuBuffer};
use crate::backend::{AdamWScalars, View};
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

#[allow(clippy::too_many_arguments)]
pub fn update(params: V, grads: V, m: V, v: V, step: u64, lr: f32, beta1: f32, beta2: f32, eps: f32, wd: f32) {
    let g = rd(grads);
    let (p, m, v) = (wr(params), wr(m), wr(v));
    let AdamWScalars { step_size, bc2_sqrt, decay } = AdamWScalars::new(step, lr, beta1, beta2, wd);
    const CHUNK: usize = 8192;
    p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).enumerate().for_each(
        |(ci, (p, (m, v)))| {
            let g = &g[ci * CHUNK..ci * CHUNK + p.len()];
            for i in 0..p.len() {
                p[i] *= decay;
                m[i] += (g[i] - m[i]) * (1.0 - beta1); // torch: lerp
                v[i] = v[i] * beta2 + (1.0 - beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * m[i] / denom;
            }
        },
    );
}

//! LayerNorm over the last dimension (biased variance), forward and backward.

use super::{rd, wr, CpuBuffer, REDUCE_ROWS};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

#[allow(clippy::too_many_arguments)]
pub fn forward(out: V, mean: V, rstd: V, inp: V, weight: V, bias: V, n: usize, c: usize, eps: f32) {
    let (x, w, bb) = (rd(inp), rd(weight), rd(bias));
    let (out, mean, rstd) = (wr(out), wr(mean), wr(rstd));
    out[..n * c]
        .par_chunks_mut(c)
        .zip(mean[..n].par_iter_mut().zip(rstd[..n].par_iter_mut()))
        .enumerate()
        .for_each(|(row, (o, (m, r)))| {
            let xr = &x[row * c..(row + 1) * c];
            let mu = xr.iter().sum::<f32>() / c as f32;
            let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / c as f32;
            let rs = 1.0 / (var + eps).sqrt();
            for i in 0..c {
                o[i] = (xr[i] - mu) * rs * w[i] + bb[i];
            }
            *m = mu;
            *r = rs;
        });
}

/// dinp += …; dweight += Σ norm·dout; dbias += Σ dout (blocked, fixed-order reduction).
#[allow(clippy::too_many_arguments)]
pub fn backward(dinp: V, dweight: V, dbias: V, dout: V, inp: V, weight: V, mean: V, rstd: V, n: usize, c: usize) {
    let (x, w, dy, mean, rstd) = (rd(inp), rd(weight), rd(dout), rd(mean), rd(rstd));
    let dinp = wr(dinp);
    // Per block: partial [dweight | dbias].
    let partials: Vec<Vec<f32>> = dinp[..n * c]
        .par_chunks_mut(REDUCE_ROWS * c)
        .enumerate()
        .map(|(blk, dx_blk)| {
            let mut part = vec![0f32; 2 * c];
            let mut dnorm = vec![0f32; c];
            for (j, dx) in dx_blk.chunks_mut(c).enumerate() {
                let row = blk * REDUCE_ROWS + j;
                let (xr, dyr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
                let (mu, rs) = (mean[row], rstd[row]);
                let (mut dmean, mut dnorm_norm) = (0f32, 0f32);
                for i in 0..c {
                    let norm = (xr[i] - mu) * rs;
                    dnorm[i] = w[i] * dyr[i];
                    dmean += dnorm[i];
                    dnorm_norm += dnorm[i] * norm;
                    part[i] += norm * dyr[i];
                    part[c + i] += dyr[i];
                }
                dmean /= c as f32;
                dnorm_norm /= c as f32;
                for i in 0..c {
                    let norm = (xr[i] - mu) * rs;
                    dx[i] += (dnorm[i] - dmean - norm * dnorm_norm) * rs;
                }
            }
            part
        })
        .collect();
    let (dw, db) = (wr(dweight), wr(dbias));
    for p in &partials {
        for i in 0..c {
            dw[i] += p[i];
            db[i] += p[c + i];
        }
    }
}

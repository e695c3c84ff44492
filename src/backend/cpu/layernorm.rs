//! LayerNorm over the last dimension (biased variance), forward and backward.

use super::{dot, rd, sum_map, wr, CpuBuffer, REDUCE_ROWS};
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
            let mu = sum_map(xr, |v| v) / c as f32;
            let var = sum_map(xr, |v| (v - mu) * (v - mu)) / c as f32;
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
            let (mut dnorm, mut norm_buf) = (vec![0f32; c], vec![0f32; c]);
            for (j, dx) in dx_blk.chunks_mut(c).enumerate() {
                let row = blk * REDUCE_ROWS + j;
                let (xr, dyr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
                let (mu, rs) = (mean[row], rstd[row]);
                for i in 0..c {
                    let norm = (xr[i] - mu) * rs;
                    dnorm[i] = w[i] * dyr[i];
                    norm_buf[i] = norm;
                    part[i] += norm * dyr[i];
                    part[c + i] += dyr[i];
                }
                let dmean = sum_map(&dnorm, |v| v) / c as f32;
                let dnorm_norm = dot(&dnorm, &norm_buf) / c as f32;
                for i in 0..c {
                    dx[i] += (dnorm[i] - dmean - norm_buf[i] * dnorm_norm) * rs;
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

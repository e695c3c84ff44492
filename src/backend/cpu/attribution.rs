//! Attribution ops: a full pass's activations gathered at queried positions and scaled onto the IG
//! path, causal attention of one query row against a context (forward and backward), the gradient
//! of a target probability, and the integrated-gradients reduction over path points.

use super::{dot, rd, rd_u32, softmax_in_place, wr, CpuBuffer};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

pub fn gather_rows(out: V, src: V, index: V, scale: Option<V>, n: usize, w: usize) {
    let (src, index) = (rd(src), rd_u32(index));
    let scale = scale.map(rd);
    wr(out)[..n * w].par_chunks_mut(w).enumerate().for_each(|(r, o)| {
        let row = &src[index[r] as usize * w..][..w];
        match scale {
            Some(s) => o.iter_mut().zip(row).for_each(|(o, x)| *o = s[r] * x),
            None => o.copy_from_slice(row),
        }
    });
}

/// The row's context position, sequence start (in ctx rows) and position.
#[inline]
fn locate(index: u32, t_ctx: usize) -> (usize, usize) {
    let i = index as usize;
    (i - i % t_ctx, i % t_ctx)
}

/// Key (which = 1) or value (which = 2) of head h at context row `row`, or the row's own when u = t.
#[allow(clippy::too_many_arguments)]
#[inline]
fn kv<'a>(ctx: &'a [f32], own: &'a [f32], base: usize, u: usize, t: usize, which: usize, h: usize, c: usize, hs: usize) -> &'a [f32] {
    if u == t {
        &own[which * c + h * hs..][..hs]
    } else {
        &ctx[(base + u) * 3 * c + which * c + h * hs..][..hs]
    }
}

#[allow(clippy::too_many_arguments)]
pub fn row_forward(out: V, att: V, qkv: V, ctx: V, index: V, n: usize, t_ctx: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, ctx, index) = (rd(qkv), rd(ctx), rd_u32(index));
    let att = wr(att);
    wr(out)[..n * c].par_chunks_mut(c).zip(att[..n * nh * t_ctx].par_chunks_mut(nh * t_ctx)).enumerate().for_each(|(r, (y, a))| {
        let (base, t) = locate(index[r], t_ctx);
        let own = &qkv[r * 3 * c..][..3 * c];
        for h in 0..nh {
            let q = &own[h * hs..][..hs];
            let p = &mut a[h * t_ctx..(h + 1) * t_ctx];
            for (u, pu) in p[..=t].iter_mut().enumerate() {
                *pu = dot(q, kv(ctx, own, base, u, t, 1, h, c, hs)) * scale;
            }
            p[t + 1..].fill(0.0);
            softmax_in_place(&mut p[..=t]);
            let yh = &mut y[h * hs..(h + 1) * hs];
            yh.fill(0.0);
            for (u, &pu) in p[..=t].iter().enumerate() {
                for (yd, vd) in yh.iter_mut().zip(kv(ctx, own, base, u, t, 2, h, c, hs)) {
                    *yd = pu.mul_add(*vd, *yd);
                }
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn row_backward(dqkv: V, dout: V, qkv: V, ctx: V, att: V, index: V, n: usize, t_ctx: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (dout, qkv, ctx, att, index) = (rd(dout), rd(qkv), rd(ctx), rd(att), rd_u32(index));
    wr(dqkv)[..n * 3 * c].par_chunks_mut(3 * c).enumerate().for_each_init(
        || vec![0f32; t_ctx],
        |ds, (r, d)| {
            let (base, t) = locate(index[r], t_ctx);
            let own = &qkv[r * 3 * c..][..3 * c];
            d.fill(0.0);
            for h in 0..nh {
                let p = &att[(r * nh + h) * t_ctx..][..=t];
                let dy = &dout[r * c + h * hs..][..hs];
                // ds_u = p_u·(dp_u − Σ p·dp), dp_u = dy·v_u
                let mut sum = 0f32;
                for (u, &pu) in p.iter().enumerate() {
                    ds[u] = dot(dy, kv(ctx, own, base, u, t, 2, h, c, hs));
                    sum += pu * ds[u];
                }
                for (u, &pu) in p.iter().enumerate() {
                    ds[u] = pu * (ds[u] - sum) * scale;
                }
                let (dq, rest) = d.split_at_mut(c);
                let (dk, dv) = rest.split_at_mut(c);
                let dq = &mut dq[h * hs..(h + 1) * hs];
                for (u, &dsu) in ds[..=t].iter().enumerate() {
                    for (x, kd) in dq.iter_mut().zip(kv(ctx, own, base, u, t, 1, h, c, hs)) {
                        *x = dsu.mul_add(*kd, *x);
                    }
                }
                let q = &own[h * hs..][..hs];
                for (x, qd) in dk[h * hs..(h + 1) * hs].iter_mut().zip(q) {
                    *x = ds[t] * qd;
                }
                for (x, g) in dv[h * hs..(h + 1) * hs].iter_mut().zip(dy) {
                    *x = p[t] * g;
                }
            }
        },
    );
}

pub fn target_prob_backward(dlogits: V, probs: V, targets: V, n: usize, v: usize, log: bool) {
    super::crossentropy::per_target_row(dlogits, probs, targets, n, v, |d, target, _| {
        let weight = if log { 1.0 } else { d[target] };
        for (j, x) in d.iter_mut().enumerate() {
            let ind = if j == target { 1.0 } else { 0.0 };
            *x = (ind - *x) * weight;
        }
    });
}

pub fn ig_reduce(ig: V, grads: V, src: V, index: V, n: usize, m: usize, w: usize) {
    let (grads, src, index) = (rd(grads), rd(src), rd_u32(index));
    let inv = 1.0 / m as f32;
    wr(ig)[..n / m * w].par_chunks_mut(w).enumerate().for_each(|(g, o)| {
        o.fill(0.0);
        for j in 0..m {
            for (x, gr) in o.iter_mut().zip(&grads[(g * m + j) * w..][..w]) {
                *x += gr;
            }
        }
        let a = &src[index[g * m] as usize * w..][..w];
        for (x, ak) in o.iter_mut().zip(a) {
            *x *= ak * inv;
        }
    });
}

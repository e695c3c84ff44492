//! Causal multi-head attention: one rayon task per (batch row, head), scores kept as probabilities.

use super::{axpy, dot, rd, wr, CpuBuffer, SyncPtr};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

/// Softmax of `s[..len]` in place (max-subtracted).
#[inline]
fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
}

pub fn forward(out: V, att: V, qkv: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let qkv = rd(qkv);
    let out_ptr = SyncPtr(wr(out).as_mut_ptr());
    wr(att)[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, att_bh)| {
        let (bi, h) = bi_h(bh, nh);
        let o = out_ptr;
        for ti in 0..t {
            let q = &qkv[(bi * t + ti) * 3 * c + h * hs..][..hs];
            let row = &mut att_bh[ti * t..(ti + 1) * t];
            for t2 in 0..=ti {
                let k = &qkv[(bi * t + t2) * 3 * c + c + h * hs..][..hs];
                row[t2] = dot(q, k) * scale;
            }
            softmax_in_place(&mut row[..=ti]);
            row[ti + 1..].fill(0.0);
            // Safety: this task alone writes head h of batch row bi.
            let y = unsafe { std::slice::from_raw_parts_mut(o.0.add((bi * t + ti) * c + h * hs), hs) };
            y.fill(0.0);
            for t2 in 0..=ti {
                let v = &qkv[(bi * t + t2) * 3 * c + 2 * c + h * hs..][..hs];
                axpy(y, row[t2], v);
            }
        }
    });
}

#[inline]
fn bi_h(bh: usize, nh: usize) -> (usize, usize) {
    (bh / nh, bh % nh)
}

#[allow(clippy::too_many_arguments)]
pub fn backward(dqkv: V, dout: V, qkv: V, att: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, att, dout) = (rd(qkv), rd(att), rd(dout));
    let dptr = SyncPtr(wr(dqkv).as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = bi_h(bh, nh);
        let d = dptr;
        // Safety: this task alone owns the q/k/v columns of head h in batch row bi.
        let col = |ti: usize, part: usize| unsafe {
            std::slice::from_raw_parts_mut(d.0.add((bi * t + ti) * 3 * c + part * c + h * hs), hs)
        };
        for ti in 0..t {
            for part in 0..3 {
                col(ti, part).fill(0.0);
            }
        }
        let mut datt = vec![0f32; t];
        for ti in 0..t {
            let a = &att[(bh * t + ti) * t..][..t];
            let dy = &dout[(bi * t + ti) * c + h * hs..][..hs];
            let mut s = 0f32;
            for t2 in 0..=ti {
                let v = &qkv[(bi * t + t2) * 3 * c + 2 * c + h * hs..][..hs];
                datt[t2] = dot(dy, v);
                s += a[t2] * datt[t2];
                axpy(col(t2, 2), a[t2], dy);
            }
            let q = &qkv[(bi * t + ti) * 3 * c + h * hs..][..hs];
            for t2 in 0..=ti {
                let dpre = a[t2] * (datt[t2] - s) * scale;
                let k = &qkv[(bi * t + t2) * 3 * c + c + h * hs..][..hs];
                axpy(col(ti, 0), dpre, k);
                axpy(col(t2, 1), dpre, q);
            }
        }
    });
}

/// One query per (row, head) at position `pos` against cached keys/values 0..=pos.
pub fn decode(out: V, cache: V, b: usize, pos: usize, t_max: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let cache = rd(cache);
    let out_ptr = SyncPtr(wr(out).as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = bi_h(bh, nh);
        let o = out_ptr;
        let base = bi * t_max * 3 * c;
        let q = &cache[base + pos * 3 * c + h * hs..][..hs];
        let mut s: Vec<f32> =
            (0..=pos).map(|t2| dot(q, &cache[base + t2 * 3 * c + c + h * hs..][..hs]) * scale).collect();
        softmax_in_place(&mut s);
        // Safety: this task alone writes head h of row bi.
        let y = unsafe { std::slice::from_raw_parts_mut(o.0.add(bi * c + h * hs), hs) };
        y.fill(0.0);
        for (t2, p) in s.iter().enumerate() {
            axpy(y, *p, &cache[base + t2 * 3 * c + 2 * c + h * hs..][..hs]);
        }
    });
}

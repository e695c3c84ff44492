//! Small ops: residual add, column scale and column dot, fill, strided copy, argmax.

use super::{rd, wr, CpuBuffer};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

const CHUNK: usize = 16384;

pub fn residual(out: V, a: V, b: V, n: usize) {
    let (a, b) = (rd(a), rd(b));
    wr(out)[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let base = i * CHUNK;
        for (j, oj) in o.iter_mut().enumerate() {
            *oj = a[base + j] + b[base + j];
        }
    });
}

pub fn scale_columns(x: V, scale: V, n: usize, w: usize) {
    let s = rd(scale);
    wr(x)[..n * w].par_chunks_mut(w).for_each(|row| row.iter_mut().zip(s).for_each(|(x, s)| *x *= s));
}

pub fn column_dot(out: V, a: V, b: V, n: usize, w: usize) {
    let (a, b) = (rd(a), rd(b));
    wr(out)[..w].par_chunks_mut(64).enumerate().for_each(|(ci, o)| {
        let j0 = ci * 64;
        o.fill(0.0);
        for r in 0..n {
            for (k, x) in o.iter_mut().enumerate() {
                *x = a[r * w + j0 + k].mul_add(b[r * w + j0 + k], *x);
            }
        }
    });
}

pub fn fill(dst: V, value: f32) {
    wr(dst).par_chunks_mut(CHUNK).for_each(|c| c.fill(value));
}

pub fn copy_strided(dst: V, src: V, batches: usize, rows: usize, cols: usize, ds: [usize; 2], ss: [usize; 2]) {
    let (d, s) = (wr(dst), rd(src));
    for bi in 0..batches {
        for r in 0..rows {
            let (o, i) = (bi * ds[0] + r * ds[1], bi * ss[0] + r * ss[1]);
            d[o..o + cols].copy_from_slice(&s[i..i + cols]);
        }
    }
}

/// First maximal index per row (torch.argmax's tie rule); writes token ids as u32 words.
pub fn argmax(out: V, logits: V, n: usize, v: usize, suppress: Option<u32>) {
    let l = rd(logits);
    let o: &mut [u32] = bytemuck::cast_slice_mut(wr(out));
    for (i, oi) in o[..n].iter_mut().enumerate() {
        let row = &l[i * v..(i + 1) * v];
        let mut best = usize::MAX;
        let mut best_val = f32::NEG_INFINITY;
        for (j, &x) in row.iter().enumerate() {
            if Some(j as u32) == suppress {
                continue;
            }
            // NaN counts as the maximum, as in torch.argmax.
            if best == usize::MAX || x > best_val || (x.is_nan() && !best_val.is_nan()) {
                best = j;
                best_val = x;
            }
        }
        *oi = best as u32;
    }
}

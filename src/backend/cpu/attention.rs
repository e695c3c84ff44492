//! Causal multi-head attention: one rayon task per (batch row, head), scores kept as probabilities.

use super::{axpy, rd, softmax_in_place, wr, CpuBuffer, SyncPtr};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

/// C[m, n] (=|+=) A·B for small per-head matrices, single-threaded (we are inside a rayon task).
/// Strides are (row, col) in elements.
#[allow(clippy::too_many_arguments)]
#[inline]
fn small_gemm(
    m: usize, n: usize, k: usize,
    dst: *mut f32, d_rs: usize, accumulate: bool,
    a: *const f32, a_rs: usize, a_cs: usize,
    b: *const f32, b_rs: usize, b_cs: usize,
) {
    unsafe {
        gemm::gemm(
            m, n, k,
            dst, 1, d_rs as isize,
            accumulate,
            a, a_cs as isize, a_rs as isize,
            b, b_cs as isize, b_rs as isize,
            if accumulate { 1.0 } else { 0.0 }, 1.0,
            false, false, false, gemm::Parallelism::None,
        )
    }
}

/// Per (batch row, head): S = Q·Kᵀ/√hs as one small GEMM, causal softmax row by row, Y = P·V.
pub fn forward(out: V, att: V, qkv: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let qkv = rd(qkv);
    let out_ptr = SyncPtr(wr(out).as_mut_ptr());
    wr(att)[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let (bi, h) = bi_h(bh, nh);
        let o = out_ptr;
        let base = qkv[bi * t * 3 * c..].as_ptr();
        let (q, k, v) = unsafe { (base.add(h * hs), base.add(c + h * hs), base.add(2 * c + h * hs)) };
        // Scores for the causal lower triangle (the upper part is computed and discarded: one GEMM is
        // cheaper than t short dot products).
        small_gemm(t, t, hs, p.as_mut_ptr(), t, false, q, 3 * c, 1, k, 1, 3 * c);
        for ti in 0..t {
            let row = &mut p[ti * t..(ti + 1) * t];
            for x in row[..=ti].iter_mut() {
                *x *= scale;
            }
            softmax_in_place(&mut row[..=ti]);
            row[ti + 1..].fill(0.0);
        }
        // Safety: this task alone writes head h of batch row bi.
        let y = unsafe { o.0.add(bi * t * c + h * hs) };
        small_gemm(t, hs, t, y, c, false, p.as_ptr(), t, 1, v, 3 * c, 1);
    });
}

#[inline]
fn bi_h(bh: usize, nh: usize) -> (usize, usize) {
    (bh / nh, bh % nh)
}

/// Per (batch row, head): dV = Pᵀ·dY, dP = dY·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP))/√hs, dQ = dS·K, dK = dSᵀ·Q.
#[allow(clippy::too_many_arguments)]
pub fn backward(dqkv: V, dout: V, qkv: V, att: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, att, dout) = (rd(qkv), rd(att), rd(dout));
    let dptr = SyncPtr(wr(dqkv).as_mut_ptr());
    (0..b * nh).into_par_iter().for_each_init(
        || vec![0f32; t * t],
        |ds, bh| {
            let (bi, h) = bi_h(bh, nh);
            let d = dptr;
            let p = &att[bh * t * t..(bh + 1) * t * t];
            let base = qkv[bi * t * 3 * c..].as_ptr();
            let (q, k, v) = unsafe { (base.add(h * hs), base.add(c + h * hs), base.add(2 * c + h * hs)) };
            let dy = dout[bi * t * c + h * hs..].as_ptr();
            // Safety: this task alone owns the q/k/v columns of head h in batch row bi.
            let dbase = unsafe { d.0.add(bi * t * 3 * c) };
            let (dq, dk, dv) = unsafe { (dbase.add(h * hs), dbase.add(c + h * hs), dbase.add(2 * c + h * hs)) };
            small_gemm(t, hs, t, dv, 3 * c, false, p.as_ptr(), 1, t, dy, c, 1);
            small_gemm(t, t, hs, ds.as_mut_ptr(), t, false, dy, c, 1, v, 1, 3 * c);
            for ti in 0..t {
                let (pr, dr) = (&p[ti * t..ti * t + ti + 1], &mut ds[ti * t..(ti + 1) * t]);
                let s: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                for (x, a) in dr[..=ti].iter_mut().zip(pr) {
                    *x = a * (*x - s) * scale;
                }
                dr[ti + 1..].fill(0.0);
            }
            small_gemm(t, hs, t, dq, 3 * c, false, ds.as_ptr(), t, 1, k, 3 * c, 1);
            small_gemm(t, hs, t, dk, 3 * c, false, ds.as_ptr(), 1, t, q, 3 * c, 1);
        },
    );
}

/// Cache layout per (row bi, head h): kᵀ [hs, t_max] then v [t_max, hs].
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(cache: V, qkv: V, b: usize, t: usize, pos0: usize, t_max: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let qkv = rd(qkv);
    wr(cache)[..b * nh * 2 * hs * t_max].par_chunks_mut(2 * hs * t_max).enumerate().for_each(|(bh, blk)| {
        let (bi, h) = bi_h(bh, nh);
        let (kt, v) = blk.split_at_mut(hs * t_max);
        for ti in 0..t {
            let row = &qkv[(bi * t + ti) * 3 * c..];
            let pos = pos0 + ti;
            for d in 0..hs {
                kt[d * t_max + pos] = row[c + h * hs + d];
            }
            v[pos * hs..(pos + 1) * hs].copy_from_slice(&row[2 * c + h * hs..][..hs]);
        }
    });
}

/// One query per (row, head) at position `pos` against cached keys/values 0..=pos: the scores are
/// hs axpys over kᵀ rows, the output pos+1 axpys over v rows — both contiguous and vectorized.
#[allow(clippy::too_many_arguments)]
pub fn decode(out: V, qkv: V, cache: V, b: usize, pos: usize, t_max: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, cache) = (rd(qkv), rd(cache));
    let n = pos + 1;
    wr(out)[..b * c].par_chunks_mut(c).enumerate().for_each_init(
        || vec![0f32; n],
        |s, (bi, y_row)| {
            s.resize(n, 0.0);
            for h in 0..nh {
                let blk = &cache[(bi * nh + h) * 2 * hs * t_max..];
                let (kt, v) = (&blk[..hs * t_max], &blk[hs * t_max..2 * hs * t_max]);
                let q = &qkv[bi * 3 * c + h * hs..][..hs];
                s.fill(0.0);
                for d in 0..hs {
                    axpy(s, q[d] * scale, &kt[d * t_max..d * t_max + n]);
                }
                softmax_in_place(s);
                let y = &mut y_row[h * hs..(h + 1) * hs];
                y.fill(0.0);
                for (t2, p) in s.iter().enumerate() {
                    axpy(y, *p, &v[t2 * hs..(t2 + 1) * hs]);
                }
            }
        },
    );
}

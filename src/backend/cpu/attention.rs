//! Causal multi-head attention: one rayon task per (batch row, head), scores kept as probabilities.
//! Hand-written register-blocked microkernels over the causal triangle only (a GEMM would compute the
//! upper half and throw it away, and its per-call packing dominates at 150 × 150 × 32).

use super::{chunk, copy_small, dot, rd, softmax_in_place, softmax_into, wr, CpuBuffer, SyncPtr};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

/// Query rows per microkernel block and output columns per pass (two AVX-512 vectors): R·W/16 = 8
/// independent accumulators, enough to keep both FMA pipes busy.
const R: usize = 4;
const W: usize = 32;

/// Heads per rayon job at least: each job zeroes its own working copies (a few hundred KB).
const MIN_HEADS: usize = 4;

#[inline]
fn pad_w(x: usize) -> usize {
    x.div_ceil(W) * W
}

/// Causal lower block triangle of s = a·bt: rows i in blocks of R, columns j < (block end) rounded up
/// to W. a is [tr, k] (tr = t rounded up to R), bt is [k, tp], s is [tr, tp]; padding is zero.
fn abt_lower(s: &mut [f32], a: &[f32], bt: &[f32], t: usize, k: usize, tp: usize) {
    for i0 in (0..t).step_by(R) {
        let jend = pad_w(i0 + R).min(tp);
        for j0 in (0..jend).step_by(W) {
            let mut acc = [[0f32; W]; R];
            let ar: [&[f32]; R] = std::array::from_fn(|r| &a[(i0 + r) * k..][..k]);
            for (d, brow) in bt.chunks_exact(tp).take(k).enumerate() {
                let bv: &[f32; W] = brow[j0..j0 + W].try_into().unwrap();
                for (acc_r, a_r) in acc.iter_mut().zip(&ar) {
                    let x = a_r[d];
                    for (y, b) in acc_r.iter_mut().zip(bv) {
                        *y = x.mul_add(*b, *y);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                s[(i0 + r) * tp + j0..][..W].copy_from_slice(acc_r);
            }
        }
    }
}

/// y[i, :] = Σ_{j < min(block end, t)} a[i, j]·b[j, :] (a zero above its diagonal).
/// a is [t.., a_rs] (rows past t read row t − 1), b is [t.., hp] with hp a multiple of W, y is
/// [tr, hp] (rows past t hold garbage).
fn ab_lower(y: &mut [f32], a: &[f32], b: &[f32], t: usize, a_rs: usize, hp: usize) {
    for i0 in (0..t).step_by(R) {
        let jhi = (i0 + R).min(t);
        for c0 in (0..hp).step_by(W) {
            let mut acc = [[0f32; W]; R];
            let ar: [&[f32]; R] = std::array::from_fn(|r| {
                let i = (i0 + r).min(t - 1);
                &a[i * a_rs..i * a_rs + jhi]
            });
            for (j, brow) in b[..jhi * hp].chunks_exact(hp).enumerate() {
                let bv: &[f32; W] = brow[c0..c0 + W].try_into().unwrap();
                for (acc_r, a_r) in acc.iter_mut().zip(&ar) {
                    let x = a_r[j];
                    for (y, bb) in acc_r.iter_mut().zip(bv) {
                        *y = x.mul_add(*bb, *y);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                y[(i0 + r) * hp + c0..][..W].copy_from_slice(acc_r);
            }
        }
    }
}

/// Output rows (of d) per block of `atb_t`: 8 × W/16 = 16 accumulators, each b row loaded once per
/// 8 rows of the output.
const R_T: usize = 8;

/// yt[d, j] = Σ_{i ≥ j} a[i, d]·b[i, j] — aᵀ·b written transposed, so that both operands stream by
/// rows (b's rows are contiguous in j; a transposed read of a column of b per row would wait on a
/// new cache line every step). For a column block j0..j0+W, i runs from j0: b ([t, tp] at row
/// stride tp) must be zero at j > i within each W block. a is [t, hp]; yt is [hp, tp] (columns ≥ t
/// and rows ≥ hs hold garbage).
fn atb_t(yt: &mut [f32], a: &[f32], hp: usize, b: &[f32], t: usize, tp: usize) {
    assert!(hp.is_multiple_of(R_T) && tp.is_multiple_of(W) && a.len() >= t * hp && b.len() >= t * tp && yt.len() >= hp * tp);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // Safety: the feature is present; the bounds are asserted above.
        return unsafe { atb_t_avx512(yt, a, hp, b, t, tp) };
    }
    atb_t_portable(yt, a, hp, b, t, tp)
}

/// `atb_t` in plain Rust, for CPUs without AVX-512 (a unit test runs it against the intrinsics).
fn atb_t_portable(yt: &mut [f32], a: &[f32], hp: usize, b: &[f32], t: usize, tp: usize) {
    for d0 in (0..hp).step_by(R_T) {
        for j0 in (0..t).step_by(W) {
            let mut acc = [[0f32; W]; R_T];
            for (arow, brow) in a[j0 * hp..t * hp].chunks_exact(hp).zip(b[j0 * tp..].chunks_exact(tp)) {
                let bv: &[f32; W] = brow[j0..j0 + W].try_into().unwrap();
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = arow[d0 + r];
                    for (y, bb) in acc_r.iter_mut().zip(bv) {
                        *y = x.mul_add(*bb, *y);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                yt[(d0 + r) * tp + j0..][..W].copy_from_slice(acc_r);
            }
        }
    }
}

/// `atb_t` in AVX-512 intrinsics: LLVM vectorizes the portable loop across the 8 contiguous a
/// entries instead, with the accumulators on the stack (measured 8× slower).
///
/// Safety: avx512f present; a, b, yt as `atb_t` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn atb_t_avx512(yt: &mut [f32], a: &[f32], hp: usize, b: &[f32], t: usize, tp: usize) {
    use std::arch::x86_64::*;
    for d0 in (0..hp).step_by(R_T) {
        for j0 in (0..t).step_by(W) {
            let mut acc = [[_mm512_setzero_ps(); 2]; R_T];
            for i in j0..t {
                let (ap, bp) = (a.as_ptr().add(i * hp + d0), b.as_ptr().add(i * tp + j0));
                let bv = [_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ap.add(r));
                    acc_r[0] = _mm512_fmadd_ps(x, bv[0], acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(x, bv[1], acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let dst = yt.as_mut_ptr().add((d0 + r) * tp + j0);
                _mm512_storeu_ps(dst, acc_r[0]);
                _mm512_storeu_ps(dst.add(16), acc_r[1]);
            }
        }
    }
}

/// Per-task working copies of one head, zero-padded to the microkernel tiles (padding stays zero:
/// only positions < t are ever written, and every task of one call has the same shape).
struct Head {
    t: usize,
    hs: usize,
    tp: usize,
    hp: usize,
    /// [tr, hs] row operands of a·btᵀ products (q·scale, or dy)
    a: Vec<f32>,
    /// [hs, tp] transposed operand (kᵀ, or vᵀ)
    bt: Vec<f32>,
    /// [tr, tp] scores / probabilities / dS
    s: Vec<f32>,
    /// [tr, tp] the probabilities (backward only)
    p: Vec<f32>,
    /// [tp, hp] row operands of the a·b products (v; or k, q, dy)
    b: [Vec<f32>; 3],
    /// [tr, hp] product output
    y: Vec<f32>,
    /// [hp, tp] transposed product output (backward only)
    yt: Vec<f32>,
}

impl Head {
    /// Buffers for the forward, and with `backward` for the backward too.
    fn new(t: usize, hs: usize, backward: bool) -> Self {
        let (tr, tp, hp) = (t.div_ceil(R) * R, pad_w(t), pad_w(hs));
        let z = |n: usize| vec![0f32; n];
        let zb = |n: usize| if backward { z(n) } else { Vec::new() };
        let nb = if backward { 3 } else { 1 };
        let b = std::array::from_fn(|i| if i < nb { z(tp * hp) } else { Vec::new() });
        Head { t, hs, tp, hp, a: z(tr * hs), bt: z(hs * tp), s: z(tr * tp), p: zb(tr * tp), b, y: z(tr * hp), yt: zb(hp * tp) }
    }

    /// a = q·scale and bt = kᵀ of head h in batch row bi: the operands of the scores.
    fn load_scores(&mut self, qkv: &[f32], bi: usize, h: usize, c: usize, scale: f32) {
        let (t, hs, tp) = (self.t, self.hs, self.tp);
        for i in 0..t {
            let row = &qkv[(bi * t + i) * 3 * c + h * hs..];
            for d in 0..hs {
                self.a[i * hs + d] = row[d] * scale;
                self.bt[d * tp + i] = row[c + d];
            }
        }
    }

    /// Copy the y rows (hs columns of each) to a strided destination.
    ///
    /// Safety: `dst` rows at stride `rs` must be writable by this task alone.
    unsafe fn store_y(&self, dst: *mut f32, rs: usize) {
        for i in 0..self.t {
            let d = std::slice::from_raw_parts_mut(dst.add(i * rs), self.hs);
            copy_small(d, &self.y[i * self.hp..]);
        }
    }

    /// Copy yt transposed (row j of the destination from column j of yt) to a strided destination.
    ///
    /// Safety: as `store_y`.
    unsafe fn store_yt(&self, dst: *mut f32, rs: usize) {
        for j in 0..self.t {
            let d = std::slice::from_raw_parts_mut(dst.add(j * rs), self.hs);
            for (dd, x) in d.iter_mut().enumerate() {
                *x = self.yt[dd * self.tp + j];
            }
        }
    }
}

/// Per (batch row, head): S = Q·Kᵀ/√hs over the causal lower triangle only (register-blocked
/// microkernels, the upper triangle skipped), softmax row by row, Y = P·V over j ≤ i. The
/// probabilities go to `att` (zero above the diagonal).
///
/// Keeping them beats computing them again in the backward: measured on BalancedSubnet's shapes
/// (32 × 150, 4 heads of 32, a layer's buffers out of cache), forward 5.5 → 4.9 ms without the
/// store but backward 7.2 → 9.1 ms with the scores and softmax again: 43.6 against 46.7 ms a step.
pub fn forward(out: V, att: V, qkv: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let qkv = rd(qkv);
    let out_ptr = SyncPtr(wr(out).as_mut_ptr());
    wr(att)[..b * nh * t * t].par_chunks_mut(t * t).enumerate().with_min_len(MIN_HEADS).for_each_init(
        || Head::new(t, hs, false),
        |hd, (bh, p)| {
            let (bi, h) = bi_h(bh, nh);
            let o = out_ptr;
            let (tp, hp) = (hd.tp, hd.hp);
            hd.load_scores(qkv, bi, h, c, scale);
            for i in 0..t {
                copy_small(&mut hd.b[0][i * hp..i * hp + hs], &qkv[(bi * t + i) * 3 * c + 2 * c + h * hs..]);
            }
            abt_lower(&mut hd.s, &hd.a, &hd.bt, t, hs, tp);
            // The probabilities straight into att, and Y = P·V from there (its zeros past the
            // diagonal are what ab_lower wants).
            for (i, prow) in p.chunks_exact_mut(t).enumerate() {
                softmax_into(&mut prow[..=i], &hd.s[i * tp..i * tp + i + 1]);
                prow[i + 1..].fill(0.0);
            }
            ab_lower(&mut hd.y, p, &hd.b[0], t, t, hp);
            // Safety: this task alone writes head h of batch row bi.
            unsafe { hd.store_y(o.0.add(bi * t * c + h * hs), c) };
        },
    );
}

#[inline]
fn bi_h(bh: usize, nh: usize) -> (usize, usize) {
    (bh / nh, bh % nh)
}

/// Per (batch row, head), over the causal triangle only: dP = dY·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP))/√hs,
/// dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dY.
#[allow(clippy::too_many_arguments)]
pub fn backward(dqkv: V, dout: V, qkv: V, att: V, b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, att, dout) = (rd(qkv), rd(att), rd(dout));
    let dptr = SyncPtr(wr(dqkv).as_mut_ptr());
    (0..b * nh).into_par_iter().with_min_len(MIN_HEADS).for_each_init(
        || Head::new(t, hs, true),
        |hd, bh| {
            let (bi, h) = bi_h(bh, nh);
            let d = dptr;
            let (tp, hp) = (hd.tp, hd.hp);
            // The probabilities at row stride tp (past i they are zero, and so is p past t): atb_t
            // streams them by rows from cache.
            for (i, prow) in att[bh * t * t..(bh + 1) * t * t].chunks_exact(t).enumerate() {
                hd.p[i * tp..i * tp + t].copy_from_slice(prow);
            }
            // a = dy rows, bt = vᵀ; b = [k, q, dy] rows.
            for i in 0..t {
                let row = &qkv[(bi * t + i) * 3 * c + h * hs..];
                let dy = &dout[(bi * t + i) * c + h * hs..][..hs];
                copy_small(&mut hd.a[i * hs..(i + 1) * hs], dy);
                for dd in 0..hs {
                    hd.bt[dd * tp + i] = row[2 * c + dd];
                }
                copy_small(&mut hd.b[0][i * hp..i * hp + hs], &row[c..]);
                copy_small(&mut hd.b[1][i * hp..i * hp + hs], row);
                copy_small(&mut hd.b[2][i * hp..i * hp + hs], dy);
            }
            // Safety: this task alone owns the q/k/v columns of head h in batch row bi.
            let dbase = unsafe { d.0.add(bi * t * 3 * c + h * hs) };
            // dV = Pᵀ·dY.
            atb_t(&mut hd.yt, &hd.b[2], hp, &hd.p, t, tp);
            unsafe { hd.store_yt(dbase.add(2 * c), 3 * c) };
            // dP, then dS in place (zero past the diagonal up to the W block's end, as atb_t wants).
            abt_lower(&mut hd.s, &hd.a, &hd.bt, t, hs, tp);
            for i in 0..t {
                let (pr, dr) = (&hd.p[i * tp..i * tp + i + 1], &mut hd.s[i * tp..(i + 1) * tp]);
                let sum = dot(pr, dr);
                for (x, a) in dr[..=i].iter_mut().zip(pr) {
                    *x = a * (*x - sum) * scale;
                }
                dr[i + 1..pad_w(i + 1).min(tp)].fill(0.0);
            }
            ab_lower(&mut hd.y, &hd.s, &hd.b[0], t, tp, hp);
            unsafe { hd.store_y(dbase, 3 * c) };
            atb_t(&mut hd.yt, &hd.b[1], hp, &hd.s, t, tp);
            unsafe { hd.store_yt(dbase.add(c), 3 * c) };
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

/// One query per (row, head) at position `pos` against cached keys/values 0..=pos, in one pass
/// over each: scores W keys at a time accumulated over the hs kᵀ rows in registers, the output as
/// four interleaved partial sums over the v rows (independent FMA chains).
#[allow(clippy::too_many_arguments)]
pub fn decode(out: V, qkv: V, cache: V, b: usize, pos: usize, t_max: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let (qkv, cache) = (rd(qkv), rd(cache));
    let n = pos + 1;
    wr(out)[..b * c].par_chunks_mut(c).enumerate().for_each_init(
        || vec![0f32; pad_w(n)],
        |s, (bi, y_row)| {
            s.resize(pad_w(n), 0.0);
            for h in 0..nh {
                let blk = &cache[(bi * nh + h) * 2 * hs * t_max..];
                let (kt, v) = (&blk[..hs * t_max], &blk[hs * t_max..2 * hs * t_max]);
                let q = &qkv[bi * 3 * c + h * hs..][..hs];
                for (j0, sc) in (0..n).step_by(W).zip(s.chunks_exact_mut(W)) {
                    let mut acc = [0f32; W];
                    for (d, krow) in kt.chunks_exact(t_max).enumerate() {
                        let kv: [f32; W] = chunk(krow, j0);
                        let qd = q[d] * scale;
                        for (a, k) in acc.iter_mut().zip(&kv) {
                            *a = qd.mul_add(*k, *a);
                        }
                    }
                    sc.copy_from_slice(&acc);
                }
                softmax_in_place(&mut s[..n]);
                let y = &mut y_row[h * hs..(h + 1) * hs];
                for c0 in (0..hs).step_by(W) {
                    let mut acc = [[0f32; W]; 4];
                    let rows = v[..n * hs].chunks_exact(hs).zip(&s[..n]);
                    for (j, (vrow, &p)) in rows.enumerate() {
                        let vv: [f32; W] = chunk(vrow, c0);
                        for (a, x) in acc[j % 4].iter_mut().zip(&vv) {
                            *a = p.mul_add(*x, *a);
                        }
                    }
                    let w = W.min(hs - c0);
                    for (l, yl) in y[c0..c0 + w].iter_mut().enumerate() {
                        *yl = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::CpuBackend;
    use crate::backend::{Backend, View};
    use crate::rng::{purpose, Stream};

    fn w(x: &super::CpuBuffer) -> View<'_, super::CpuBuffer> {
        View::new(x, 0, super::super::rd_len(x))
    }

    fn v(x: &super::CpuBuffer, off: usize, len: usize) -> View<'_, super::CpuBuffer> {
        View::new(x, off, len)
    }

    /// Naive f64 causal attention: (out, att) and, for a given dout, dqkv.
    fn reference(qkv: &[f32], dout: &[f32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let hs = c / nh;
        let scale = 1.0 / (hs as f64).sqrt();
        let (mut out, mut att, mut dqkv) = (vec![0f64; b * t * c], vec![0f64; b * nh * t * t], vec![0f64; b * t * 3 * c]);
        let at = |bi: usize, i: usize, part: usize, h: usize, d: usize| qkv[(bi * t + i) * 3 * c + part * c + h * hs + d] as f64;
        for bi in 0..b {
            for h in 0..nh {
                let p = &mut att[(bi * nh + h) * t * t..][..t * t];
                for i in 0..t {
                    let s: Vec<f64> = (0..=i).map(|j| (0..hs).map(|d| at(bi, i, 0, h, d) * at(bi, j, 1, h, d)).sum::<f64>() * scale).collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for j in 0..=i {
                        p[i * t + j] = (s[j] - m).exp() / z;
                        for d in 0..hs {
                            out[(bi * t + i) * c + h * hs + d] += p[i * t + j] * at(bi, j, 2, h, d);
                        }
                    }
                }
                for i in 0..t {
                    let dy = |d: usize| dout[(bi * t + i) * c + h * hs + d] as f64;
                    let dp: Vec<f64> = (0..=i).map(|j| (0..hs).map(|d| dy(d) * at(bi, j, 2, h, d)).sum()).collect();
                    let sum: f64 = (0..=i).map(|j| p[i * t + j] * dp[j]).sum();
                    for j in 0..=i {
                        let ds = p[i * t + j] * (dp[j] - sum) * scale;
                        for d in 0..hs {
                            dqkv[(bi * t + i) * 3 * c + h * hs + d] += ds * at(bi, j, 1, h, d);
                            dqkv[(bi * t + j) * 3 * c + c + h * hs + d] += ds * at(bi, i, 0, h, d);
                            dqkv[(bi * t + j) * 3 * c + 2 * c + h * hs + d] += p[i * t + j] * dy(d);
                        }
                    }
                }
            }
        }
        (out, att, dqkv)
    }

    fn close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn kv_cache_decode_matches_naive_f64() {
        let cpu = CpuBackend::with_threads(2);
        for (b, t_max, c, nh, pos) in [(3, 9, 24, 4, 5), (1, 1, 8, 2, 0), (2, 150, 20, 4, 149), (2, 150, 128, 4, 137), (1, 40, 96, 1, 33)] {
            let hs = c / nh;
            let mut rng = Stream::new(pos as u64, purpose::MISC, c as u32);
            let qkv_h: Vec<f32> = (0..b * (pos + 1) * 3 * c).map(|_| rng.normal() as f32).collect();
            let at = |bi: usize, i: usize, part: usize, h: usize, d: usize| qkv_h[(bi * (pos + 1) + i) * 3 * c + part * c + h * hs + d] as f64;
            let up = |h: &[f32]| {
                let x = cpu.alloc(h.len()).unwrap();
                cpu.upload_f32(View::new(&x, 0, h.len()), h);
                x
            };
            let (cache, out) = (cpu.alloc(b * 2 * c * t_max).unwrap(), up(&vec![7.0; b * c]));
            // Positions 0..pos written one by one (as decode steps do), the query at pos.
            let mut q_last = vec![0f32; b * 3 * c];
            for i in 0..=pos {
                let rows: Vec<f32> = (0..b).flat_map(|bi| qkv_h[(bi * (pos + 1) + i) * 3 * c..][..3 * c].to_vec()).collect();
                let step = up(&rows);
                cpu.scope(|| super::kv_cache_write(v(&cache, 0, b * 2 * c * t_max), v(&step, 0, b * 3 * c), b, 1, i, t_max, c, nh));
                q_last = rows;
            }
            let q = up(&q_last);
            cpu.scope(|| super::decode(v(&out, 0, b * c), v(&q, 0, b * 3 * c), v(&cache, 0, b * 2 * c * t_max), b, pos, t_max, c, nh));
            let mut got = vec![0f32; b * c];
            cpu.download_f32(v(&out, 0, b * c), &mut got);
            let mut want = vec![0f64; b * c];
            for bi in 0..b {
                for h in 0..nh {
                    let s: Vec<f64> = (0..=pos).map(|j| (0..hs).map(|d| at(bi, pos, 0, h, d) * at(bi, j, 1, h, d)).sum::<f64>() / (hs as f64).sqrt()).collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for j in 0..=pos {
                        for d in 0..hs {
                            want[bi * c + h * hs + d] += (s[j] - m).exp() / z * at(bi, j, 2, h, d);
                        }
                    }
                }
            }
            close(&format!("decode b{b} t_max{t_max} c{c} nh{nh} pos{pos}"), &got, &want);
        }
    }

    /// The portable atb_t (what a CPU without AVX-512 runs) against a naive sum, and against the
    /// dispatching one (the intrinsics here); b is zero above its diagonal as the callers keep it.
    #[test]
    fn atb_t_portable_matches_naive_and_the_dispatched_kernel() {
        for (t, hs) in [(1usize, 8usize), (7, 12), (33, 32), (150, 32), (37, 40)] {
            let (tp, hp) = (super::pad_w(t), super::pad_w(hs));
            let mut rng = Stream::new(t as u64, purpose::MISC, hs as u32);
            let mut a = vec![0f32; t * hp];
            let mut b = vec![0f32; t * tp];
            for i in 0..t {
                for d in 0..hs {
                    a[i * hp + d] = rng.normal() as f32;
                }
                for j in 0..=i {
                    b[i * tp + j] = rng.normal() as f32;
                }
            }
            let (mut y1, mut y2) = (vec![7f32; hp * tp], vec![7f32; hp * tp]);
            super::atb_t_portable(&mut y1, &a, hp, &b, t, tp);
            super::atb_t(&mut y2, &a, hp, &b, t, tp);
            for d in 0..hs {
                for j in 0..t {
                    let want: f64 = (j..t).map(|i| a[i * hp + d] as f64 * b[i * tp + j] as f64).sum();
                    for (name, y) in [("portable", &y1), ("dispatched", &y2)] {
                        let got = y[d * tp + j] as f64;
                        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{name} t{t} hs{hs} [{d}, {j}]: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn causal_attention_matches_naive_f64_on_awkward_shapes() {
        let cpu = CpuBackend::with_threads(2);
        for (b, t, c, nh) in [(2, 7, 24, 4), (1, 1, 8, 2), (2, 33, 20, 4), (1, 70, 12, 3), (3, 150, 128, 4), (1, 37, 96, 1)] {
            let mut rng = Stream::new(t as u64, purpose::MISC, c as u32);
            let mut rand = |n: usize, s: f64| (0..n).map(|_| (rng.normal() * s) as f32).collect::<Vec<f32>>();
            let (qkv_h, dout_h) = (rand(b * t * 3 * c, 1.5), rand(b * t * c, 1.0));
            let buf = |h: &[f32]| {
                let x = cpu.alloc(h.len().max(1)).unwrap();
                cpu.upload_f32(View::new(&x, 0, h.len()), h);
                x
            };
            let (qkv, dout) = (buf(&qkv_h), buf(&dout_h));
            // Garbage in the outputs: every element must be written.
            let (out, att, dqkv) = (buf(&vec![7.0; b * t * c]), buf(&vec![7.0; b * nh * t * t]), buf(&vec![7.0; b * t * 3 * c]));
            cpu.scope(|| super::forward(w(&out), w(&att), w(&qkv), b, t, c, nh));
            cpu.scope(|| super::backward(w(&dqkv), w(&dout), w(&qkv), w(&att), b, t, c, nh));
            let (ro, ra, rd) = reference(&qkv_h, &dout_h, b, t, c, nh);
            let get = |x: &super::CpuBuffer| {
                let mut h = vec![0f32; cpu.buffer_len(x)];
                cpu.download_f32(w(x), &mut h);
                h
            };
            let what = format!("b{b} t{t} c{c} nh{nh}");
            close(&format!("{what} out"), &get(&out), &ro);
            close(&format!("{what} att"), &get(&att), &ra);
            close(&format!("{what} dqkv"), &get(&dqkv), &rd);
        }
    }
}

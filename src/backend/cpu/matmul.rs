//! out = inp·W (+ bias) and its backward, on the `gemm` crate's AVX-512 microkernels.
//!
//! Blocking chosen by measurement on 2 cores (TinyMem shapes, 19200 × {128, 384, 512}):
//! - forward and d(inp): blocks of 256 rows per rayon task, the bias written into the block while it
//!   is in L2 — 20–60% faster than one multi-threaded GEMM plus a separate bias pass;
//! - d(W): the row (reduction) dimension in fixed chunks of 1024 rows, partial products summed in
//!   chunk order — faster, and bitwise independent of the thread count;
//! - few rows (decode steps): a hand-written register-blocked kernel over W in place (no packing).

use super::{chunk, dot, rd, wr, CpuBuffer, SyncPtr, REDUCE_ROWS};
use crate::backend::{View, WeightLayout};
use gemm::Parallelism;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

const ROW_BLOCK: usize = 256;
/// d(W) reduction chunks hold at most this many rows; their count is even and depends on n alone,
/// so two workers get equal halves and the summation order never depends on the thread count.
const K_CHUNK: usize = 1024;
/// Above this many partial-product words, d(W) falls back to one multi-threaded GEMM.
const MAX_PARTIAL_WORDS: usize = 8 << 20;

/// (row stride, col stride) of W viewed as a [c, oc] matrix.
fn w_strides(layout: WeightLayout, c: usize, oc: usize) -> (isize, isize) {
    match layout {
        WeightLayout::InOut => (oc as isize, 1),
        WeightLayout::OutIn => (1, c as isize),
    }
}

/// dst[m, n] (= or +=) a[m, k] · b[k, n], row-major dst with row stride `d_rs`; a, b given by
/// (row stride, col stride). Single-threaded: callers parallelize over blocks.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn gemm1(
    m: usize, n: usize, k: usize, dst: *mut f32, d_rs: usize, acc: bool,
    a: *const f32, a_rs: isize, a_cs: isize, b: *const f32, b_rs: isize, b_cs: isize, par: Parallelism,
) {
    gemm::gemm(
        m, n, k, dst, 1, d_rs as isize, acc, a, a_cs, a_rs, b, b_cs, b_rs,
        if acc { 1.0 } else { 0.0 }, 1.0, false, false, false, par,
    )
}

/// y[n, oc] = x[n, k] · w (w as [k, oc] by strides), plus bias rows when given; blocked as above.
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_times_w(y: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: isize, w_cs: isize) {
    let (wp, xp) = (SyncPtr(w.as_ptr() as *mut f32), SyncPtr(x.as_ptr() as *mut f32));
    if n >= 2 * ROW_BLOCK {
        // Equal blocks, a multiple of the worker count, so no worker idles at the end.
        let threads = rayon::current_num_threads().max(1);
        let blocks = n.div_ceil(ROW_BLOCK).div_ceil(threads) * threads;
        // Whole 16-row microkernel tiles per block, or every block ends in a ragged tile.
        let rows_per = n.div_ceil(blocks).next_multiple_of(16);
        y[..n * oc].par_chunks_mut(rows_per * oc).enumerate().for_each(|(i, yb)| {
            let (wp, xp) = (wp, xp);
            let m = yb.len() / oc;
            if let Some(b) = bias {
                for row in yb.chunks_mut(oc) {
                    row.copy_from_slice(&b[..oc]);
                }
            }
            unsafe {
                gemm1(m, oc, k, yb.as_mut_ptr(), oc, bias.is_some(), xp.0.add(i * rows_per * k), k as isize, 1, wp.0, w_rs, w_cs, Parallelism::None)
            }
        });
    } else if w_cs == 1 {
        few_rows_panels(y, x, w, bias, n, k, oc, w_rs as usize, avx512());
    } else {
        // Few rows against a transposed weight (the tied LM head, [oc, k]): each output is a dot
        // product of two contiguous rows.
        assert_eq!(w_rs, 1);
        let w_cs = w_cs as usize;
        for (xr, yr) in x.chunks_exact(k).zip(y[..n * oc].chunks_exact_mut(oc)) {
            for (j, yj) in yr.iter_mut().enumerate() {
                *yj = dot(xr, &w[j * w_cs..j * w_cs + k]) + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// Output columns per panel of the few-row kernel: two AVX-512 vectors.
const NC: usize = 32;

/// Whether the AVX-512 tile can run here (checked at run time; the portable tile runs elsewhere).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// y[n, oc] = x[n, k]·W (+ bias) for a decode step's few rows, W [k, oc] read in place (row stride
/// w_rs), panel by panel of NC columns: the panel's k × NC slice stays in L1/L2 while every row
/// block of the tile uses it. Panels are split between the pool's threads (inline on a one-thread
/// lane). Measured single-threaded at 16 rows over a layer's four weights (from L3): 108 GFLOP/s
/// against the gemm crate's 87, which packs W on every call.
#[allow(clippy::too_many_arguments)]
fn few_rows_panels(y: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: usize, simd: bool) {
    if n == 0 || oc == 0 {
        return;
    }
    assert!(x.len() >= n * k && y.len() >= n * oc && w.len() >= k.saturating_sub(1) * w_rs + oc);
    let yp = SyncPtr(y.as_mut_ptr());
    let panels = oc.div_ceil(NC);
    let per = panels.div_ceil(rayon::current_num_threads().clamp(1, panels));
    (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
        for j0 in (t * per..((t + 1) * per).min(panels)).map(|p| p * NC) {
            // Safety: each task writes its own column panels of y; the bounds are asserted above.
            #[cfg(target_arch = "x86_64")]
            if simd {
                for i0 in (0..n).step_by(MR_AVX512) {
                    unsafe { tile_avx512(yp, x, w, bias, n, k, oc, w_rs, i0, j0) }
                }
                continue;
            }
            let _ = simd;
            for i0 in (0..n).step_by(MR_PORTABLE) {
                unsafe { tile_portable(yp, x, w, bias, n, k, oc, w_rs, i0, j0) }
            }
        }
    });
}

/// Rows per AVX-512 tile: 8 rows × 2 vectors = 16 accumulators, each W load shared by 8 rows.
const MR_AVX512: usize = 8;
/// Rows per portable tile: 4 × NC accumulators stay in registers when LLVM vectorizes the arrays.
const MR_PORTABLE: usize = 4;

/// Tile rows i0.. (at most MR) × columns j0..j0+NC of few_rows_panels, in AVX-512 intrinsics.
/// Rows past n repeat row n − 1 and columns past oc are masked off; neither is stored.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(y: SyncPtr, x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: usize, i0: usize, j0: usize) {
    use std::arch::x86_64::*;
    const MR: usize = MR_AVX512;
    let nc = NC.min(oc - j0);
    let lanes = |v: usize| nc.saturating_sub(16 * v).min(16) as u32;
    let m: [__mmask16; 2] = std::array::from_fn(|v| ((1u32 << lanes(v)) - 1) as __mmask16);
    let b: [__m512; 2] = match bias {
        Some(b) => std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], b.as_ptr().wrapping_add(j0 + 16 * v))),
        None => [_mm512_setzero_ps(); 2],
    };
    let mut acc = [b; MR];
    let xp: [*const f32; MR] = std::array::from_fn(|r| x.as_ptr().add((i0 + r).min(n - 1) * k));
    let mut wp = w.as_ptr().wrapping_add(j0);
    for d in 0..k {
        let wv = [_mm512_maskz_loadu_ps(m[0], wp), _mm512_maskz_loadu_ps(m[1], wp.wrapping_add(16))];
        for (acc_r, x_r) in acc.iter_mut().zip(&xp) {
            let xv = _mm512_set1_ps(*x_r.add(d));
            acc_r[0] = _mm512_fmadd_ps(xv, wv[0], acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(xv, wv[1], acc_r[1]);
        }
        wp = wp.wrapping_add(w_rs);
    }
    for (r, acc_r) in acc.iter().enumerate().take(n - i0) {
        let dst = y.0.wrapping_add((i0 + r) * oc + j0);
        _mm512_mask_storeu_ps(dst, m[0], acc_r[0]);
        _mm512_mask_storeu_ps(dst.wrapping_add(16), m[1], acc_r[1]);
    }
}

/// The same tile in plain Rust (arrays LLVM vectorizes), MR_PORTABLE rows at a time.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable(y: SyncPtr, x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: usize, i0: usize, j0: usize) {
    let nc = NC.min(oc - j0);
    let b0: [f32; NC] = bias.map_or([0.0; NC], |b| chunk(&b[..oc], j0));
    let xr: [&[f32]; MR_PORTABLE] = std::array::from_fn(|r| &x[(i0 + r).min(n - 1) * k..][..k]);
    let mut acc = [b0; MR_PORTABLE];
    for (d, wrow) in w.chunks(w_rs).take(k).enumerate() {
        let wv: [f32; NC] = chunk(&wrow[..oc], j0);
        for (acc_r, x_r) in acc.iter_mut().zip(&xr) {
            let xv = x_r[d];
            for (a, wj) in acc_r.iter_mut().zip(&wv) {
                *a = xv.mul_add(*wj, *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(n - i0) {
        std::slice::from_raw_parts_mut(y.0.add((i0 + r) * oc + j0), nc).copy_from_slice(&acc_r[..nc]);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn forward(out: V, inp: V, weight: V, bias: Option<V>, n: usize, c: usize, oc: usize, layout: WeightLayout) {
    let (x, w, y) = (rd(inp), rd(weight), wr(out));
    assert!(x.len() >= n * c && y.len() >= n * oc && w.len() >= c * oc);
    let (w_rs, w_cs) = w_strides(layout, c, oc);
    rows_times_w(y, x, w, bias.map(rd), n, c, oc, w_rs, w_cs);
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: Option<V>, dweight: Option<V>, dbias: Option<V>, dout: V, inp: V, weight: V,
    n: usize, c: usize, oc: usize, layout: WeightLayout,
) {
    let (dy, x, w) = (rd(dout), rd(inp), rd(weight));
    if let Some(dinp) = dinp {
        // dinp[n, c] = dout[n, oc] · Wᵀ (overwrite); Wᵀ as [oc, c] swaps W's strides.
        let (w_rs, w_cs) = w_strides(layout, c, oc);
        rows_times_w(wr(dinp), dy, w, None, n, oc, c, w_cs, w_rs);
    }
    if let Some(dweight) = dweight {
        dweight_into(wr(dweight), x, dy, n, c, oc, layout);
    }
    if let Some(dbias) = dbias {
        let partials: Vec<Vec<f32>> = dy[..n * oc]
            .par_chunks(REDUCE_ROWS * oc)
            .map(|blk| {
                let mut p = vec![0f32; oc];
                for row in blk.chunks(oc) {
                    for (pi, d) in p.iter_mut().zip(row) {
                        *pi += d;
                    }
                }
                p
            })
            .collect();
        let db = wr(dbias);
        for p in &partials {
            for (d, pi) in db.iter_mut().zip(p) {
                *d += pi;
            }
        }
    }
}

/// dw += the weight gradient over n rows (InOut: [c, oc] = xᵀ·dy; OutIn: [oc, c] = dyᵀ·x), in fixed
/// row chunks summed in chunk order (see K_CHUNK).
#[allow(clippy::too_many_arguments)]
pub(super) fn dweight_into(dw: &mut [f32], x: &[f32], dy: &[f32], n: usize, c: usize, oc: usize, layout: WeightLayout) {
    // dW as [m, nn] (InOut: [c, oc] = inpᵀ·dout; OutIn: [oc, c] = doutᵀ·inp) over the n rows.
    let (m, nn, a, a_w, b, b_w) = match layout {
        WeightLayout::InOut => (c, oc, x, c, dy, oc),
        WeightLayout::OutIn => (oc, c, dy, oc, x, c),
    };
    let chunks = 2 * n.div_ceil(2 * K_CHUNK);
    let per = n.div_ceil(chunks);
    if chunks * m * nn <= MAX_PARTIAL_WORDS {
        let parts: Vec<Vec<f32>> = (0..chunks)
            .into_par_iter()
            .filter(|i| i * per < n)
            .map(|i| {
                let k0 = i * per;
                let kk = per.min(n - k0);
                let mut p = vec![0f32; m * nn];
                unsafe {
                    gemm1(m, nn, kk, p.as_mut_ptr(), nn, false, a[k0 * a_w..].as_ptr(), 1, a_w as isize, b[k0 * b_w..].as_ptr(), b_w as isize, 1, Parallelism::None)
                }
                p
            })
            .collect();
        dw[..m * nn].par_chunks_mut(4096).enumerate().for_each(|(ci, d)| {
            for p in &parts {
                for (di, pi) in d.iter_mut().zip(&p[ci * 4096..]) {
                    *di += pi;
                }
            }
        });
    } else {
        let par = Parallelism::Rayon(rayon::current_num_threads());
        unsafe { gemm1(m, nn, n, dw.as_mut_ptr(), nn, true, a.as_ptr(), 1, a_w as isize, b.as_ptr(), b_w as isize, 1, par) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{rd_len, CpuBackend};
    use crate::backend::{Backend, View, WeightLayout};
    use crate::rng::{purpose, Stream};

    /// Every forward path against f64: row blocks for many rows; for few rows the AVX-512 tile (where
    /// the cpu has it) and the portable tile, on 2 threads and on one (a decode lane), and the dot
    /// products of the transposed LM head.
    #[test]
    fn forward_matches_naive_f64() {
        let pools = [CpuBackend::with_threads(2), CpuBackend::with_threads(1)];
        for (n, c, oc, with_bias, layout) in [
            (1, 37, 64, true, WeightLayout::InOut),
            (5, 128, 100, true, WeightLayout::InOut),
            (16, 128, 384, false, WeightLayout::InOut),
            (64, 33, 130, true, WeightLayout::InOut),
            (65, 40, 96, true, WeightLayout::InOut),
            (13, 512, 17, true, WeightLayout::InOut),
            (16, 128, 14, false, WeightLayout::OutIn),
            (3, 50, 20, true, WeightLayout::OutIn),
            (700, 24, 70, true, WeightLayout::InOut),
        ] {
            let mut rng = Stream::new(n as u64, purpose::MISC, oc as u32);
            let mut rand = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
            let (xh, wh, bh) = (rand(n * c), rand(c * oc), rand(oc));
            let check = |got: &[f32], what: &str| {
                for i in 0..n {
                    for j in 0..oc {
                        let wij = |kk: usize| match layout {
                            WeightLayout::InOut => wh[kk * oc + j],
                            WeightLayout::OutIn => wh[j * c + kk],
                        } as f64;
                        let want = (0..c).map(|kk| xh[i * c + kk] as f64 * wij(kk)).sum::<f64>() + if with_bias { bh[j] as f64 } else { 0.0 };
                        let g = got[i * oc + j] as f64;
                        assert!((g - want).abs() <= 1e-5 + 1e-4 * want.abs(), "{what} n{n} c{c} oc{oc} [{i},{j}]: {g} vs {want}");
                    }
                }
                // Nothing written past the output.
                assert!(got[n * oc..].iter().all(|&v| v == 7.0), "{what} n{n} c{c} oc{oc}: wrote past the output");
            };
            for (t, cpu) in pools.iter().enumerate() {
                let up = |h: &[f32]| {
                    let b = cpu.alloc(h.len()).unwrap();
                    cpu.upload_f32(View::new(&b, 0, h.len()), h);
                    b
                };
                let (x, w, b, y) = (up(&xh), up(&wh), up(&bh), up(&vec![7.0; n * oc + 5]));
                fn whole(b: &super::CpuBuffer) -> View<'_, super::CpuBuffer> {
                    View::new(b, 0, rd_len(b))
                }
                cpu.scope(|| super::forward(whole(&y), whole(&x), whole(&w), with_bias.then(|| whole(&b)), n, c, oc, layout));
                let mut got = vec![0f32; n * oc + 5];
                cpu.download_f32(whole(&y), &mut got);
                check(&got, &format!("forward, {} threads", 2 - t));
                if layout == WeightLayout::InOut && n < 2 * super::ROW_BLOCK {
                    for simd in [false, true] {
                        if simd && !super::avx512() {
                            eprintln!("no AVX-512 here: only the portable few-row tile is checked");
                            continue;
                        }
                        let mut y = vec![7.0; n * oc + 5];
                        let bias = with_bias.then_some(&bh[..]);
                        cpu.scope(|| super::few_rows_panels(&mut y, &xh, &wh, bias, n, c, oc, oc, simd));
                        check(&y, &format!("few-row tile (simd {simd}), {} threads", 2 - t));
                    }
                }
            }
        }
    }
}

//! out = inp·W (+ bias) and its backward, on the `gemm` crate's AVX-512 microkernels.
//!
//! Blocking chosen by measurement on 2 cores (TinyMem shapes, 19200 × {128, 384, 512}):
//! - forward and d(inp): blocks of 256 rows per rayon task, the bias written into the block while it
//!   is in L2 — 20–60% faster than one multi-threaded GEMM plus a separate bias pass;
//! - d(W): the row (reduction) dimension in fixed chunks of 1024 rows, partial products summed in
//!   chunk order — faster, and bitwise independent of the thread count;
//! - few rows (decode steps): the output columns split in two.

use super::{rd, wr, CpuBuffer, SyncPtr, REDUCE_ROWS};
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
fn rows_times_w(y: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: isize, w_cs: isize) {
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
    } else {
        if let Some(b) = bias {
            for row in y[..n * oc].chunks_mut(oc) {
                row.copy_from_slice(&b[..oc]);
            }
        }
        // Few rows: split the output columns between two tasks.
        let half = oc.div_ceil(2);
        let yp = SyncPtr(y.as_mut_ptr());
        (0..2usize).into_par_iter().for_each(|h| {
            let (yp, wp, xp) = (yp, wp, xp);
            let c0 = h * half;
            let cols = half.min(oc - c0.min(oc));
            if cols == 0 {
                return;
            }
            // Safety: the two tasks write disjoint column ranges of y.
            unsafe {
                gemm1(n, cols, k, yp.0.add(c0), oc, bias.is_some(), xp.0, k as isize, 1, wp.0.offset(c0 as isize * w_cs), w_rs, w_cs, Parallelism::None)
            }
        });
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
        let dw = wr(dweight);
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

#[cfg(test)]
mod tests {
    use super::super::{rd_len, CpuBackend};
    use crate::backend::{Backend, View, WeightLayout};
    use crate::rng::{purpose, Stream};

    /// Both forward paths (column halves for few rows, row blocks for many; both layouts) against f64.
    #[test]
    fn forward_matches_naive_f64() {
        let cpu = CpuBackend::with_threads(2);
        for (n, c, oc, with_bias, layout) in [
            (1, 37, 64, true, WeightLayout::InOut),
            (5, 128, 100, true, WeightLayout::InOut),
            (16, 128, 384, false, WeightLayout::InOut),
            (64, 33, 130, true, WeightLayout::InOut),
            (65, 40, 96, true, WeightLayout::InOut),
            (16, 128, 14, false, WeightLayout::OutIn),
            (700, 24, 70, true, WeightLayout::InOut),
        ] {
            let mut rng = Stream::new(n as u64, purpose::MISC, oc as u32);
            let mut rand = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
            let (xh, wh, bh) = (rand(n * c), rand(c * oc), rand(oc));
            let up = |h: &[f32]| {
                let b = cpu.alloc(h.len()).unwrap();
                cpu.upload_f32(View::new(&b, 0, h.len()), h);
                b
            };
            let (x, w, b, y) = (up(&xh), up(&wh), up(&bh), up(&vec![7.0; n * oc]));
            fn whole(b: &super::CpuBuffer) -> View<'_, super::CpuBuffer> {
                View::new(b, 0, rd_len(b))
            }
            cpu.scope(|| super::forward(whole(&y), whole(&x), whole(&w), with_bias.then(|| whole(&b)), n, c, oc, layout));
            let mut got = vec![0f32; n * oc];
            cpu.download_f32(whole(&y), &mut got);
            for i in 0..n {
                for j in 0..oc {
                    let wij = |kk: usize| match layout {
                        WeightLayout::InOut => wh[kk * oc + j],
                        WeightLayout::OutIn => wh[j * c + kk],
                    } as f64;
                    let want = (0..c).map(|kk| xh[i * c + kk] as f64 * wij(kk)).sum::<f64>() + if with_bias { bh[j] as f64 } else { 0.0 };
                    let g = got[i * oc + j] as f64;
                    assert!((g - want).abs() <= 1e-5 + 1e-4 * want.abs(), "n{n} c{c} oc{oc} [{i},{j}]: {g} vs {want}");
                }
            }
        }
    }
}

//! out = inp·W (+ bias) and its backward, on hand-written AVX-512 tiles (a portable tile elsewhere).
//!
//! One tile kernel (MR rows × NC columns of the output, summed over k in order) serves every
//! product, chosen by measurement on 2 cores (TinyMem shapes, 4800–19200 rows × {128, 384, 512}):
//! - forward and d(inp): W packed once a call into column panels (the mask of a masked matmul, or
//!   a transposition, applied while packing), then row blocks per rayon task. The gemm crate packed
//!   W again for every block; in situ (BalancedSubnet, interleaved runs) the masked forward went
//!   107–127 → 120–137 GFLOP/s and the plain d(inp) 105–122 → 122–137;
//! - d(W): the row (reduction) dimension in fixed chunks of 1024 rows, partial products summed in
//!   chunk order — bitwise independent of the thread count; within a chunk, sub-blocks of KC rows;
//! - few rows (decode steps): the same tile over W in place (no packing).
//!
//! The gemm crate remains for a d(W) too large for per-chunk partials (a vocabulary-sized head).

use super::{chunk, copy_small, dot, rd, wr, CpuBuffer, SyncPtr, REDUCE_ROWS};
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

/// y[n, oc] = x[n, k] · w (w as [k, oc] by strides), plus bias rows when given. Many rows, or a
/// transposed W: W packed once into column panels (`pack_panels`), then the panel kernel; few rows
/// against a row-major W: the same kernel over W in place (packing would cost as much as the
/// product). Either way each output is the same sequence of FMAs, so the two agree bitwise.
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_times_w(y: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w_rs: isize, w_cs: isize) {
    if n == 0 || oc == 0 {
        return;
    }
    let (rs, cs) = (w_rs as usize, w_cs as usize);
    assert!(w.len() > (k.max(1) - 1) * rs + (oc - 1) * cs, "matmul: weight view shorter than [{k}, {oc}]");
    if cs == 1 && n < 2 * ROW_BLOCK {
        assert!(x.len() >= n * k && y.len() >= n * oc, "matmul: views shorter than the shape");
        run_panels(y, x, bias, n, k, oc, WPanels { base: w.as_ptr(), panel_stride: NC, row_stride: rs }, avx512());
    } else {
        rows_times_packed(y, x, bias, n, k, oc, cs != 1 && rs == 1, |d, j| w[d * rs + j * cs]);
    }
}

/// y[n, oc] = x[n, k]·B (+ bias) for B given entry by entry, `get(d, j)` = B[d, j] (d < k, j < oc):
/// B is packed into panels once, so a masked or transposed weight costs one pass over W.
/// `d_inner`: the source is contiguous along d (a transposed W), so the packing walks d innermost.
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_times_packed(
    y: &mut [f32], x: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, d_inner: bool,
    get: impl Fn(usize, usize) -> f32 + Sync,
) {
    if n == 0 || oc == 0 {
        return;
    }
    assert!(x.len() >= n * k && y.len() >= n * oc, "matmul: views shorter than the shape");
    let packed = pack_panels(k, oc, d_inner, get);
    run_panels(y, x, bias, n, k, oc, WPanels { base: packed.as_ptr(), panel_stride: k * NC, row_stride: NC }, avx512());
    PACK_SCRATCH.with(|s| s.set(packed));
}

/// Output columns per panel of the tile kernel: two AVX-512 vectors.
const NC: usize = 32;

thread_local! {
    /// The last packed weight of this thread, reused so a call does not fault in fresh pages.
    static PACK_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// B [k, oc] as ⌈oc/NC⌉ panels, each [k][NC] contiguous (columns past oc zero): the tile kernel then
/// streams one panel with unit stride, whatever B's layout or mask.
fn pack_panels(k: usize, oc: usize, d_inner: bool, get: impl Fn(usize, usize) -> f32 + Sync) -> Vec<f32> {
    let panels = oc.div_ceil(NC);
    let mut buf = PACK_SCRATCH.with(|s| s.take());
    buf.clear();
    buf.resize(panels * k * NC, 0.0);
    buf.par_chunks_mut(k * NC).enumerate().for_each(|(p, panel)| {
        let (j0, nc) = (p * NC, NC.min(oc - p * NC));
        if d_inner {
            for jj in 0..nc {
                for (d, row) in panel.chunks_exact_mut(NC).enumerate() {
                    row[jj] = get(d, j0 + jj);
                }
            }
        } else {
            for (d, row) in panel.chunks_exact_mut(NC).enumerate() {
                for (jj, v) in row[..nc].iter_mut().enumerate() {
                    *v = get(d, j0 + jj);
                }
            }
        }
    });
    buf
}

/// Where panel p of W starts and its row stride: in place (base + p·NC, W's row stride) or packed
/// (base + p·k·NC, NC).
#[derive(Clone, Copy)]
struct WPanels {
    base: *const f32,
    panel_stride: usize,
    row_stride: usize,
}
unsafe impl Send for WPanels {}
unsafe impl Sync for WPanels {}

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

/// y[n, oc] = x[n, k]·W (+ bias), tile by tile of MR rows × NC columns. Many rows: equal row blocks
/// per rayon task, each sweeping every panel (its panel in L1, its x rows in L2); few rows (a
/// decode step): the panels split between the threads (inline on a one-thread lane). Measured
/// single-threaded at 16 rows over a layer's four weights (from L3), in place: 108 GFLOP/s against
/// the gemm crate's 87, which packs W on every call.
///
/// The caller asserts x, y and the panels' bounds.
#[allow(clippy::too_many_arguments)]
fn run_panels(y: &mut [f32], x: &[f32], bias: Option<&[f32]>, n: usize, k: usize, oc: usize, w: WPanels, simd: bool) {
    let panels = oc.div_ceil(NC);
    let threads = rayon::current_num_threads().max(1);
    let mr = if simd { MR_AVX512 } else { MR_PORTABLE };
    let yp = SyncPtr(y.as_mut_ptr());
    let tile = |i0: usize, rows: usize, p: usize| {
        // Whole copies, not their pointer fields (a closure would capture those alone, not Sync).
        let (yp, w) = ({ yp }, { w });
        let j0 = p * NC;
        let t = Tile {
            // Safety: each task writes its own tiles of y; the caller asserted every bound.
            y: unsafe { yp.0.add(i0 * oc + j0) },
            y_rs: oc,
            x: unsafe { x.as_ptr().add(i0 * k) },
            x_rs: k,
            rows,
            k,
            w: unsafe { w.base.add(p * w.panel_stride) },
            w_rs: w.row_stride,
            bias: bias.map(|b| unsafe { b.as_ptr().add(j0) }),
            nc: NC.min(oc - j0),
            accumulate: false,
        };
        unsafe { tile::<false>(t, simd) }
    };
    if n >= 2 * ROW_BLOCK {
        // Equal blocks, a multiple of the worker count, so no worker idles at the end; whole tiles
        // per block, or every block ends in a ragged tile.
        let blocks = n.div_ceil(ROW_BLOCK).div_ceil(threads) * threads;
        let rows_per = n.div_ceil(blocks).next_multiple_of(mr);
        (0..n.div_ceil(rows_per)).into_par_iter().for_each(|b| {
            let (r0, r1) = (b * rows_per, ((b + 1) * rows_per).min(n));
            for p in 0..panels {
                for i0 in (r0..r1).step_by(mr) {
                    tile(i0, mr.min(r1 - i0), p);
                }
            }
        });
    } else {
        let per = panels.div_ceil(threads.clamp(1, panels));
        (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
            for p in t * per..((t + 1) * per).min(panels) {
                for i0 in (0..n).step_by(mr) {
                    tile(i0, mr.min(n - i0), p);
                }
            }
        });
    }
}

/// One tile's operands: y at its first row and column (row stride y_rs); `rows` (≤ MR) rows of the
/// left operand A over k: A[r, d] = x[r·x_rs + d], or with XT (A = xᵀ, the weight gradient)
/// x[d·x_rs + r]; W's panel at its column j0 (row stride w_rs); bias at j0; nc ≤ NC valid columns.
/// `accumulate` adds the product to y instead of overwriting it. The bias is added to the finished
/// product, as PyTorch's addmm and the gemm crate (β·C + A·B) do: starting the sum from the bias
/// rounds differently, and a ReLU model trained five AdamW steps from the golden fixture drifted to
/// 1.5e-5 in loss from PyTorch that way, against 1e-7 with the bias last.
#[derive(Clone, Copy)]
struct Tile {
    y: *mut f32,
    y_rs: usize,
    x: *const f32,
    x_rs: usize,
    rows: usize,
    k: usize,
    w: *const f32,
    w_rs: usize,
    bias: Option<*const f32>,
    nc: usize,
    accumulate: bool,
}

impl Tile {
    /// Where row r of A starts and the step between its consecutive entries (rows past `rows`
    /// repeat the last one).
    #[inline(always)]
    fn a_row<const XT: bool>(&self, r: usize) -> (*const f32, usize) {
        let r = r.min(self.rows - 1);
        if XT {
            (self.x.wrapping_add(r), self.x_rs)
        } else {
            (self.x.wrapping_add(r * self.x_rs), 1)
        }
    }
}

/// Rows per AVX-512 tile: MR rows × 2 vectors of accumulators, each W load shared by MR rows.
/// Measured single-threaded, hot, over a 240-row block of TinyMem's shapes: MR 4/6/8/10/12/14 gave
/// 99/104/102/97/94/87 GFLOP/s at k 128 × oc 512 and 106/111/107/68/87/99 at k 512 × oc 128 (the
/// FMA peak is ≈ 115 a core); 8 keeps the ragged last tile small.
const MR_AVX512: usize = 8;
/// Rows per portable tile: 4 × NC accumulators stay in registers when LLVM vectorizes the arrays.
const MR_PORTABLE: usize = 4;

/// A tile in AVX-512 intrinsics. Rows past `rows` repeat the last row and columns past nc are
/// masked off; neither is stored (nor are W's columns past nc read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const MR: usize, const XT: bool>(t: Tile) {
    use std::arch::x86_64::*;
    let lanes = |v: usize| t.nc.saturating_sub(16 * v).min(16) as u32;
    let m: [__mmask16; 2] = std::array::from_fn(|v| ((1u32 << lanes(v)) - 1) as __mmask16);
    let mut acc: [[__m512; 2]; MR] = if t.accumulate {
        std::array::from_fn(|r| {
            let row = t.y.wrapping_add(r.min(t.rows - 1) * t.y_rs);
            std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], row.wrapping_add(16 * v)))
        })
    } else {
        [[_mm512_setzero_ps(); 2]; MR]
    };
    let ap: [(*const f32, usize); MR] = std::array::from_fn(|r| t.a_row::<XT>(r));
    let mut wp = t.w;
    for d in 0..t.k {
        let wv = [_mm512_maskz_loadu_ps(m[0], wp), _mm512_maskz_loadu_ps(m[1], wp.wrapping_add(16))];
        for (acc_r, &(a_r, a_cs)) in acc.iter_mut().zip(&ap) {
            let xv = _mm512_set1_ps(*a_r.add(d * a_cs));
            acc_r[0] = _mm512_fmadd_ps(xv, wv[0], acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(xv, wv[1], acc_r[1]);
        }
        wp = wp.wrapping_add(t.w_rs);
    }
    if let Some(b) = t.bias {
        let b: [__m512; 2] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], b.wrapping_add(16 * v)));
        for acc_r in acc.iter_mut() {
            acc_r[0] = _mm512_add_ps(acc_r[0], b[0]);
            acc_r[1] = _mm512_add_ps(acc_r[1], b[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(t.rows) {
        let dst = t.y.wrapping_add(r * t.y_rs);
        _mm512_mask_storeu_ps(dst, m[0], acc_r[0]);
        _mm512_mask_storeu_ps(dst.wrapping_add(16), m[1], acc_r[1]);
    }
}

/// The same tile in plain Rust (arrays LLVM vectorizes).
unsafe fn tile_portable<const MR: usize, const XT: bool>(t: Tile) {
    let nc = t.nc;
    let mut acc: [[f32; NC]; MR] = if t.accumulate {
        std::array::from_fn(|r| chunk(std::slice::from_raw_parts(t.y.add(r.min(t.rows - 1) * t.y_rs), nc), 0))
    } else {
        [[0.0; NC]; MR]
    };
    let ap: [(*const f32, usize); MR] = std::array::from_fn(|r| t.a_row::<XT>(r));
    for d in 0..t.k {
        let wv: [f32; NC] = chunk(std::slice::from_raw_parts(t.w.add(d * t.w_rs), nc), 0);
        for (acc_r, &(a_r, a_cs)) in acc.iter_mut().zip(&ap) {
            let xv = *a_r.add(d * a_cs);
            for (a, wj) in acc_r.iter_mut().zip(&wv) {
                *a = xv.mul_add(*wj, *a);
            }
        }
    }
    if let Some(b) = t.bias {
        let b: [f32; NC] = chunk(std::slice::from_raw_parts(b, nc), 0);
        for acc_r in acc.iter_mut() {
            for (a, bj) in acc_r.iter_mut().zip(&b) {
                *a += bj;
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(t.rows) {
        std::slice::from_raw_parts_mut(t.y.add(r * t.y_rs), nc).copy_from_slice(&acc_r[..nc]);
    }
}

/// One tile on this cpu's kernel.
#[inline(always)]
unsafe fn tile<const XT: bool>(t: Tile, simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return tile_avx512::<MR_AVX512, XT>(t);
    }
    let _ = simd;
    tile_portable::<MR_PORTABLE, XT>(t)
}

/// y[m, nn] += aᵀ·b over kk rows, a [kk, m] and b [kk, nn] row-major (a weight gradient's chunk),
/// single-threaded: KC rows at a time (a's and b's sub-blocks in L2), each sweeping b's column panels
/// in place and, per panel, every MR rows of y; y is loaded and stored once per sub-block.
#[allow(clippy::too_many_arguments)]
fn at_b_rows(y: &mut [f32], a: &[f32], b: &[f32], kk: usize, m: usize, nn: usize, simd: bool) {
    assert!(y.len() >= m * nn && a.len() >= kk * m && b.len() >= kk * nn);
    let mr = if simd { MR_AVX512 } else { MR_PORTABLE };
    // b's panel of the sub-block, copied contiguous: in place its rows sit nn·4 bytes apart (2 KB
    // for an MLP matrix), which maps them onto two L1 sets and sends every tile to L2.
    let mut panel = vec![0f32; KC * NC];
    for s0 in (0..kk).step_by(KC) {
        let ks = KC.min(kk - s0);
        for j0 in (0..nn).step_by(NC) {
            let nc = NC.min(nn - j0);
            for (dst, src) in panel.chunks_exact_mut(NC).zip(b[s0 * nn..].chunks(nn)).take(ks) {
                copy_small(&mut dst[..nc], &src[j0..j0 + nc]);
            }
            for i0 in (0..m).step_by(mr) {
                let t = Tile {
                    y: y[i0 * nn + j0..].as_mut_ptr(),
                    y_rs: nn,
                    x: a[s0 * m + i0..].as_ptr(),
                    x_rs: m,
                    rows: mr.min(m - i0),
                    k: ks,
                    w: panel.as_ptr(),
                    w_rs: NC,
                    bias: None,
                    nc,
                    accumulate: true,
                };
                // Safety: the bounds are asserted above; every access stays inside them.
                unsafe { tile::<true>(t, simd) }
            }
        }
    }
}

/// Rows of a weight-gradient chunk per sub-block of `at_b_rows`. Measured single-threaded on an
/// 800-row chunk (best of 40, alternating): 128/256/800 within noise of each other; at KC 256 this
/// kernel gave 89–91 GFLOP/s at [128, 512] and 80–92 at [512, 128] against the gemm crate's 73–80
/// and 71–84. Copying a's sub-block into per-tile blocks as well measured 5–10% slower.
const KC: usize = 256;

#[allow(clippy::too_many_arguments)]
pub fn forward(out: V, inp: V, weight: V, bias: Option<V>, n: usize, c: usize, oc: usize, layout: WeightLayout) {
    let (x, w, y) = (rd(inp), rd(weight), wr(out));
    assert!(x.len() >= n * c && y.len() >= n * oc && w.len() >= c * oc);
    if layout == WeightLayout::OutIn && n < 2 * ROW_BLOCK {
        // Few rows against a transposed weight (the tied LM head, at a decode step or on a small
        // batch): each output is a dot product of two contiguous rows, with no packing of a
        // vocabulary-sized W.
        let b = bias.map(rd);
        for (xr, yr) in x.chunks_exact(c).take(n).zip(y[..n * oc].chunks_exact_mut(oc)) {
            for (j, yj) in yr.iter_mut().enumerate() {
                *yj = dot(xr, &w[j * c..j * c + c]) + b.map_or(0.0, |b| b[j]);
            }
        }
        return;
    }
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
                at_b_rows(&mut p, &a[k0 * a_w..], &b[k0 * b_w..], kk, m, nn, avx512());
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

    /// The weight-gradient kernel (both tiles) against f64: sub-blocks of KC rows accumulated in
    /// place, ragged tiles and panels, and the sum added onto what y held.
    #[test]
    fn at_b_rows_matches_naive_f64() {
        for (kk, m, nn) in [(300usize, 13usize, 45usize), (1, 8, 32), (257, 40, 7), (600, 130, 70)] {
            let mut rng = Stream::new(kk as u64, purpose::MISC, nn as u32);
            let mut rand = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
            let (a, b, y0) = (rand(kk * m), rand(kk * nn), rand(m * nn));
            for simd in [false, true] {
                if simd && !super::avx512() {
                    eprintln!("no AVX-512 here: only the portable tile is checked");
                    continue;
                }
                let mut y = y0.clone();
                y.extend([7.0; 3]);
                super::at_b_rows(&mut y, &a, &b, kk, m, nn, simd);
                for i in 0..m {
                    for j in 0..nn {
                        let want = y0[i * nn + j] as f64 + (0..kk).map(|d| a[d * m + i] as f64 * b[d * nn + j] as f64).sum::<f64>();
                        let g = y[i * nn + j] as f64;
                        assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()), "simd {simd} kk{kk} m{m} nn{nn} [{i},{j}]: {g} vs {want}");
                    }
                }
                assert_eq!(&y[m * nn..], &[7.0; 3], "wrote past y");
            }
        }
    }

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
            (1030, 130, 45, false, WeightLayout::OutIn),
            (525, 7, 100, true, WeightLayout::InOut),
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
                // Each kernel path directly: W in place (row-major W only) and packed, AVX-512 tile
                // (where the cpu has it) and portable tile.
                let (rs, cs) = match layout {
                    WeightLayout::InOut => (oc, 1),
                    WeightLayout::OutIn => (1, c),
                };
                for simd in [false, true] {
                    if simd && !super::avx512() {
                        eprintln!("no AVX-512 here: only the portable tile is checked");
                        continue;
                    }
                    let bias = with_bias.then_some(&bh[..]);
                    if layout == WeightLayout::InOut {
                        let mut y = vec![7.0; n * oc + 5];
                        let wp = super::WPanels { base: wh.as_ptr(), panel_stride: super::NC, row_stride: oc };
                        cpu.scope(|| super::run_panels(&mut y, &xh, bias, n, c, oc, wp, simd));
                        check(&y, &format!("in-place tile (simd {simd}), {} threads", 2 - t));
                    }
                    let packed = super::pack_panels(c, oc, cs != 1, |d, j| wh[d * rs + j * cs]);
                    let mut y = vec![7.0; n * oc + 5];
                    let wp = super::WPanels { base: packed.as_ptr(), panel_stride: c * super::NC, row_stride: super::NC };
                    cpu.scope(|| super::run_panels(&mut y, &xh, bias, n, c, oc, wp, simd));
                    check(&y, &format!("packed tile (simd {simd}), {} threads", 2 - t));
                }
            }
        }
    }
}

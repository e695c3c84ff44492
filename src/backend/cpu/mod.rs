//! The cpu backend (the reference): rayon over rows/heads, matmuls through the `gemm` crate.
//! One file per op family, side by side with `shaders/*.wgsl` and `kernels/*.cu`.

mod activation;
mod adamw;
mod attention;
mod attnstats;
mod attribution;
mod crossentropy;
mod elementwise;
mod encoder;
mod layernorm;
mod mask;
mod matmul;
mod regularize;
mod smi;

use super::{Backend, Op, View};
use crate::error::{Error, Result};
use std::cell::UnsafeCell;

/// A host buffer of 4-byte words. Interior mutability mirrors device memory: ops write through
/// shared handles, and the op contract (disjoint outputs) is what keeps them sound.
pub struct CpuBuffer {
    data: UnsafeCell<Vec<f32>>,
}

// Safety: ops on disjoint ranges may run concurrently; that is the device-memory contract.
unsafe impl Sync for CpuBuffer {}
unsafe impl Send for CpuBuffer {}

impl CpuBuffer {
    fn len(&self) -> usize {
        unsafe { (*self.data.get()).len() }
    }
}

/// Read access to a view.
#[inline]
pub(crate) fn rd<'a>(v: View<'a, CpuBuffer>) -> &'a [f32] {
    let data = unsafe { &*v.buf.data.get() };
    &data[v.off..v.off + v.len]
}

/// Write access to a view. Callers must not hold a read slice that overlaps it.
#[inline]
#[allow(clippy::mut_from_ref)]
pub(crate) fn wr<'a>(v: View<'a, CpuBuffer>) -> &'a mut [f32] {
    let data = unsafe { &mut *v.buf.data.get() };
    &mut data[v.off..v.off + v.len]
}

/// Length of a whole buffer, in words.
#[cfg(test)]
pub(crate) fn rd_len(b: &CpuBuffer) -> usize {
    b.len()
}

/// The same words read as u32 (token ids).
#[inline]
pub(crate) fn rd_u32<'a>(v: View<'a, CpuBuffer>) -> &'a [u32] {
    bytemuck::cast_slice(rd(v))
}

/// Write access to a view's words as u32.
#[inline]
pub(crate) fn wr_u32<'a>(v: View<'a, CpuBuffer>) -> &'a mut [u32] {
    bytemuck::cast_slice_mut(wr(v))
}

#[inline]
pub(crate) fn same<B>(a: View<'_, B>, b: View<'_, B>) -> bool {
    std::ptr::eq(a.buf, b.buf) && a.off == b.off && a.len == b.len
}

/// A raw pointer that may cross threads; each task writes its own disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Rows per block of a deterministic reduction: fixed, so results do not depend on the thread count.
pub(crate) const REDUCE_ROWS: usize = 64;

pub struct CpuBackend {
    pool: rayon::ThreadPool,
    /// One single-thread pool per worker for `lanes` (made on first use): inside one, rayon loops
    /// run inline, and lanes never steal each other's work.
    lane_pools: std::sync::OnceLock<Vec<rayon::ThreadPool>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// All cores (or RAYON_NUM_THREADS).
    pub fn new() -> Self {
        Self::with_threads(0)
    }

    /// `threads` workers (0: rayon's default).
    pub fn with_threads(threads: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("memsieve-cpu-{i}"))
            .build()
            .expect("the cpu backend's thread pool starts");
        CpuBackend { pool, lane_pools: std::sync::OnceLock::new() }
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn peaks(&self) -> Option<crate::machine::Peaks> {
        // Threads beyond the logical CPUs add no FMA units.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(crate::machine::cpu_peaks(self.threads().min(cpus)))
    }

    fn alloc(&self, len: usize) -> Result<CpuBuffer> {
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::Backend(format!("cannot allocate {:.1} MiB on the cpu backend", len as f64 * 4.0 / (1 << 20) as f64))
        })?;
        v.resize(len, 0.0);
        Ok(CpuBuffer { data: UnsafeCell::new(v) })
    }

    fn attention_scratch_len(&self, _b: usize, _t: usize, _nh: usize) -> usize {
        0
    }

    fn smi_ksg_scratch_len(&self, _n: usize, _k: usize, _classes: usize) -> usize {
        0
    }

    /// A decode step reads every cached key and value; past the last-level cache (32 MiB here, shared
    /// with the weights and the other core) it runs at DRAM speed. Sub-batches decode concurrently,
    /// one per worker (`lanes`), so the 12 MiB cache budget is split between the workers, and the
    /// row count rounded down to whole 8-row matmul tiles.
    fn decode_batch(&self, kv_words_per_row: usize) -> usize {
        const BUDGET_WORDS: usize = 12 << 20 >> 2;
        let rows = BUDGET_WORDS / self.threads().max(1) / kv_words_per_row.max(1);
        if rows >= 8 { rows / 8 * 8 } else { rows.max(1) }
    }

    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Lane j of the k = min(n, threads) lanes runs sequences j, j + k, … on its own one-thread pool.
    fn lanes<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        let k = self.threads().min(n);
        if k <= 1 {
            return (0..n).map(f).collect();
        }
        let pools = self.lane_pools.get_or_init(|| {
            (0..self.threads())
                .map(|i| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(move |_| format!("memsieve-lane-{i}"))
                        .build()
                        .expect("the cpu backend's lane pools start")
                })
                .collect()
        });
        use rayon::prelude::*;
        let per_lane: Vec<Vec<R>> = self.pool.install(|| {
            (0..k).into_par_iter().map(|j| pools[j].install(|| (j..n).step_by(k).map(&f).collect())).collect()
        });
        // Interleave back: sequence i ran as item i / k of lane i % k.
        let mut iters: Vec<_> = per_lane.into_iter().map(|v| v.into_iter()).collect();
        (0..n).map(|i| iters[i % k].next().expect("every lane returns its share")).collect()
    }

    fn buffer_len(&self, buf: &CpuBuffer) -> usize {
        buf.len()
    }

    fn upload_f32(&self, dst: View<'_, CpuBuffer>, src: &[f32]) {
        wr(dst).copy_from_slice(src);
    }
    fn upload_u32(&self, dst: View<'_, CpuBuffer>, src: &[u32]) {
        wr(dst).copy_from_slice(bytemuck::cast_slice(src));
    }
    fn download_f32(&self, src: View<'_, CpuBuffer>, dst: &mut [f32]) {
        dst.copy_from_slice(rd(src));
    }
    fn download_u32(&self, src: View<'_, CpuBuffer>, dst: &mut [u32]) {
        dst.copy_from_slice(rd_u32(src));
    }

    fn run(&self, op: &Op<'_, CpuBuffer>) {
        match *op {
            Op::EncoderForward { out, tokens, wte, wpe, b, t, c, pos0 } => {
                encoder::forward(out, tokens, wte, wpe, b, t, c, pos0)
            }
            Op::EncoderBackward { dwte, dwpe, dout, tokens, b, t, c, pos0 } => {
                encoder::backward(dwte, dwpe, dout, tokens, b, t, c, pos0)
            }
            Op::LayerNormForward { out, mean, rstd, inp, weight, bias, n, c, eps } => {
                layernorm::forward(out, mean, rstd, inp, weight, bias, n, c, eps)
            }
            Op::LayerNormBackward { dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c } => {
                layernorm::backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c)
            }
            Op::MatmulForward { out, inp, weight, bias, n, c, oc, layout } => {
                matmul::forward(out, inp, weight, bias, n, c, oc, layout)
            }
            Op::MatmulBackward { dinp, dweight, dbias, dout, inp, weight, n, c, oc, layout } => {
                matmul::backward(dinp, dweight, dbias, dout, inp, weight, n, c, oc, layout)
            }
            Op::AttentionForward { out, att, qkv, b, t, c, nh } => attention::forward(out, att, qkv, b, t, c, nh),
            Op::AttentionBackward { dqkv, scratch: _, dout, qkv, att, b, t, c, nh } => {
                attention::backward(dqkv, dout, qkv, att, b, t, c, nh)
            }
            Op::KvCacheWrite { cache, qkv, b, t, pos0, t_max, c, nh } => {
                attention::kv_cache_write(cache, qkv, b, t, pos0, t_max, c, nh)
            }
            Op::AttentionDecode { out, qkv, cache, b, pos, t_max, c, nh } => {
                attention::decode(out, qkv, cache, b, pos, t_max, c, nh)
            }
            Op::ActivationForward { out, inp, n, act } => activation::forward(out, inp, n, act),
            Op::ActivationBackward { dinp, inp, dout, n, act } => activation::backward(dinp, inp, dout, n, act),
            Op::Residual { out, a, b, n } => elementwise::residual(out, a, b, n),
            Op::ScaleColumns { x, scale, n, w } => elementwise::scale_columns(x, scale, n, w),
            Op::ColumnDot { out, a, b, n, w } => elementwise::column_dot(out, a, b, n, w),
            Op::SoftmaxCrossEntropyForward { losses, probs, logits, targets, n, v } => {
                crossentropy::forward(losses, probs, logits, targets, n, v)
            }
            Op::CrossEntropyBackward { dlogits, probs, targets, weights, scale, n, v } => {
                crossentropy::backward(dlogits, probs, targets, weights, scale, n, v)
            }
            Op::AdamW { params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay } => {
                adamw::update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay)
            }
            Op::Argmax { out, logits, n, v, suppress } => elementwise::argmax(out, logits, n, v, suppress),
            Op::Fill { dst, value } => elementwise::fill(dst, value),
            Op::CopyStrided { dst, src, batches, rows, cols, dst_strides, src_strides } => {
                elementwise::copy_strided(dst, src, batches, rows, cols, dst_strides, src_strides)
            }
            Op::SmiDirections { out, seed, slice0, k, d } => smi::directions(out, seed, slice0, k, d),
            Op::SmiProject { out, x, dirs, n, d, k } => smi::project(out, x, dirs, n, d, k),
            Op::SmiClassStats { stats, proj, labels, n, k, classes } => smi::class_stats(stats, proj, labels, n, k, classes),
            Op::SmiScore { pmi, proj, labels, model, excluded, n, k, classes, ld, col0 } => {
                smi::score(pmi, proj, labels, model, excluded, n, k, classes, ld, col0)
            }
            Op::SmiRowSummary { out, pmi, excluded, n, k } => smi::row_summary(out, pmi, excluded, n, k),
            Op::GatherRows { out, src, index, scale, n, w } => attribution::gather_rows(out, src, index, scale, n, w),
            Op::AttentionRowForward { out, att, qkv, ctx, index, n, t_ctx, c, nh } => {
                attribution::row_forward(out, att, qkv, ctx, index, n, t_ctx, c, nh)
            }
            Op::AttentionRowBackward { dqkv, dout, qkv, ctx, att, index, n, t_ctx, c, nh } => {
                attribution::row_backward(dqkv, dout, qkv, ctx, att, index, n, t_ctx, c, nh)
            }
            Op::TargetProbBackward { dlogits, probs, targets, n, v, log } => {
                attribution::target_prob_backward(dlogits, probs, targets, n, v, log)
            }
            Op::IgReduce { ig, grads, src, index, n, m, w } => attribution::ig_reduce(ig, grads, src, index, n, m, w),
            Op::SmiKsg { mi, proj, labels, n, k, classes, neighbors, .. } => smi::ksg(mi, proj, labels, n, k, classes, neighbors),
            Op::SelectRank { cut, x, y, n, k, key } => mask::select_rank(cut, x, y, n, k, key),
            Op::MaskApply { w, x, y, cut, n, key, below } => mask::mask_apply(w, x, y, cut, n, key, below),
            Op::MaskedMatmulForward { out, inp, weight, bias, scores, cut, n, c, oc } => {
                mask::masked_forward(out, inp, weight, bias, scores, cut, n, c, oc)
            }
            Op::MaskedMatmulBackward { dinp, dscores, dout, inp, weight, scores, cut, n, c, oc } => {
                mask::masked_backward(dinp, dscores, dout, inp, weight, scores, cut, n, c, oc)
            }
            Op::SgdMomentum { params, grads, buf, lr, momentum, weight_decay, first } => {
                mask::sgd_momentum(params, grads, buf, lr, momentum, weight_decay, first)
            }
            Op::SouScores { out, w, g, n, block, lambda } => mask::sou_scores(out, w, g, n, block, lambda),
            Op::AttentionStats { out, qkv, b, t, c, nh, t0, t1, top_k } => {
                attnstats::attention_stats(out, qkv, b, t, c, nh, t0, t1, top_k)
            }
            Op::SpectralPowerIteration { state, sigma, params, table, blocks, .. } => {
                regularize::power_iteration(state, sigma, params, table, blocks)
            }
            Op::SpectralGradAdd { grads, state, sigma, table, blocks, lambda, linear, .. } => {
                regularize::spectral_grad_add(grads, state, sigma, table, blocks, lambda, linear)
            }
            Op::ExampleTiedDropout { out, x, ids, n, t, c, pos0, seed, mode, keep, mem, scale } => {
                regularize::example_tied_dropout(out, x, ids, n, t, c, pos0, seed, mode, keep, mem, scale)
            }
        }
    }
}

// fast_exp's constants (Cephes-style: 2ⁿ·p(r) with r = x − n·ln2 split hi/lo, degree-6 polynomial).
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding and subtracting it rounds to the nearest integer (vectorizes, unlike f32::round).
const ROUND_SHIFT: f32 = 12_582_912.0;
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];

/// exp(x) for x ≤ 0-ish softmax arguments, branch-free so loops over it vectorize (≈ 1 ulp
/// relative error).
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    let n = (x * std::f32::consts::LOG2_E + ROUND_SHIFT) - ROUND_SHIFT;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, c| p * r + c);
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// fast_exp on 16 lanes, the same operations in the same order (so the same results); NaN
/// propagates (the clamp takes x as its second operand).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fast_exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), _mm512_min_ps(_mm512_set1_ps(EXP_HI), x));
    let shift = _mm512_set1_ps(ROUND_SHIFT);
    let n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)), shift), shift);
    let r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(LN2_HI))), _mm512_mul_ps(n, _mm512_set1_ps(LN2_LO)));
    let p = EXP_POLY[1..].iter().fold(_mm512_set1_ps(EXP_POLY[0]), |p, &c| _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c)));
    let y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0));
    let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
    _mm512_mul_ps(y, _mm512_castsi512_ps(scale))
}

/// N words of `row` from `j0`, zero-padded past its end.
#[inline(always)]
pub(crate) fn chunk<const N: usize>(row: &[f32], j0: usize) -> [f32; N] {
    match row.get(j0..j0 + N) {
        Some(c) => c.try_into().unwrap(),
        None => {
            let mut c = [0f32; N];
            let tail = &row[j0.min(row.len())..];
            c[..tail.len()].copy_from_slice(tail);
            c
        }
    }
}

/// Lanes of the reductions below: sixteen independent partial sums (one AVX-512 vector) so the
/// loops vectorize instead of chaining every add through one register.
const LANES: usize = 16;

/// Σ f(x_i), in LANES interleaved partial sums (a fixed order: independent of threads).
#[inline(always)]
pub(crate) fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += f(*v);
        }
    }
    let t: f32 = tail.iter().map(|v| f(*v)).sum();
    acc.iter().sum::<f32>() + t
}

/// Σ a_i·b_i, in LANES interleaved partial sums.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ac, at) = a[..n].as_chunks::<LANES>();
    let (bc, bt) = b[..n].as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let t: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + t
}

/// Largest element (NaNs skipped, as f32::max does), vectorized.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    acc.iter().chain(tail).copied().fold(f32::NEG_INFINITY, f32::max)
}

/// dst = src[..dst.len()] for a few dozen words, in vector-sized pieces (a memcpy call per head row
/// costs more than the copy).
#[inline(always)]
pub(crate) fn copy_small(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let (dc, dt) = dst.as_chunks_mut::<16>();
    let (sc, st) = src.as_chunks::<16>();
    for (d, s) in dc.iter_mut().zip(sc) {
        *d = *s;
    }
    for (d, s) in dt.iter_mut().zip(st) {
        *d = *s;
    }
}

/// Softmax of a row in place (max-subtracted, vectorized).
#[inline]
/// dst[..src.len()] = softmax(src): a pass for the max, one for exp and its sum (stored to dst), one
/// to scale. With AVX-512 the row's ragged end is a masked vector, not a scalar loop (with the
/// probabilities written straight to att, the attention forward took about 25% less time in situ on
/// BalancedSubnet's 150-token rows); elsewhere, a copy and `softmax_in_place`.
pub(crate) fn softmax_into(dst: &mut [f32], src: &[f32]) {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // Safety: the feature is present; both slices hold src.len() words.
        return unsafe { softmax_into_avx512(dst, src) };
    }
    dst.copy_from_slice(src);
    softmax_in_place(dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_into_avx512(dst: &mut [f32], src: &[f32]) {
    use std::arch::x86_64::*;
    let n = src.len();
    if n == 0 {
        return;
    }
    let (full, rem) = (n / 16, n % 16);
    let tail: __mmask16 = ((1u32 << rem) - 1) as __mmask16;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut vmax = ninf;
    for c in 0..full {
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s.add(16 * c)));
    }
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, tail, s.add(16 * full)));
    let vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    let mut vsum = _mm512_setzero_ps();
    for c in 0..full {
        let e = fast_exp16(_mm512_sub_ps(_mm512_loadu_ps(s.add(16 * c)), vm));
        _mm512_storeu_ps(d.add(16 * c), e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if rem > 0 {
        let e = fast_exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(vm, tail, s.add(16 * full)), vm));
        _mm512_mask_storeu_ps(d.add(16 * full), tail, e);
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
    }
    let vinv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(vsum));
    for c in 0..full {
        _mm512_storeu_ps(d.add(16 * c), _mm512_mul_ps(_mm512_loadu_ps(d.add(16 * c)), vinv));
    }
    if rem > 0 {
        let p = d.add(16 * full);
        _mm512_mask_storeu_ps(p, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, p), vinv));
    }
}

pub(crate) fn softmax_in_place(s: &mut [f32]) {
    let max = max(s);
    let (chunks, tail) = s.as_chunks_mut::<LANES>();
    let mut acc = [0f32; LANES];
    for ch in chunks {
        for (a, x) in acc.iter_mut().zip(ch.iter_mut()) {
            *x = fast_exp(*x - max);
            *a += *x;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for x in tail.iter_mut() {
        *x = fast_exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
}

#[cfg(test)]
mod tests {
    /// The AVX-512 softmax against f64 on every row length of a causal 150 × 150 (ragged tails of
    /// every width), and NaN in, NaN out.
    #[test]
    fn softmax_into_matches_f64() {
        #[cfg(target_arch = "x86_64")]
        let simd = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        if !simd {
            eprintln!("no AVX-512 here: softmax_into runs its portable path (copy + softmax_in_place)");
        }
        let src: Vec<f32> = (0..200).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3).collect();
        for n in 0..=src.len() {
            let mut dst = vec![7.0f32; n + 3];
            super::softmax_into(&mut dst, &src[..n]);
            let m = src[..n].iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let z: f64 = src[..n].iter().map(|&x| (x as f64 - m).exp()).sum();
            for j in 0..n {
                let want = (src[j] as f64 - m).exp() / z;
                assert!((dst[j] as f64 - want).abs() <= 3e-6 * want + 1e-30, "n {n} [{j}]: {} vs {want}", dst[j]);
            }
            assert_eq!(&dst[n..], &[7.0; 3], "n {n}: wrote past the row");
        }
        let mut nan = src[..37].to_vec();
        nan[20] = f32::NAN;
        let mut dst = vec![0.0; 37];
        super::softmax_into(&mut dst, &nan);
        assert!(dst.iter().all(|v| v.is_nan()), "a NaN score must poison its row: {dst:?}");
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (super::fast_exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.001;
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
    }
}

//! Each `Op` as its dispatches: which shader entry, what grid, which views at which bindings, and the
//! scalars in the order of the shader's parameter struct.

use super::{WgpuBackend, WgpuBuffer};
use std::sync::Arc;
use crate::backend::{AdamWScalars, Op, View, WeightLayout, IGNORE_TARGET};
use crate::model::config::Activation;

type V<'a> = View<'a, WgpuBuffer>;

/// Rows summed per chunk in the first pass of a deterministic column reduction.
const REDUCE_ROWS: usize = 64;
/// Workgroups per grid dimension.
const MAX_GROUPS: usize = 65_535;
/// The decode shader keeps a row's scores in shared memory (attention.wgsl's MAX_DECODE_T).
const MAX_DECODE_T: usize = 2048;

fn u(x: usize) -> u32 {
    u32::try_from(x).expect("size exceeds the 32-bit indexing of the WGSL kernels")
}
fn f(x: f32) -> u32 {
    x.to_bits()
}

/// One strided batched GEMM (see matmul.wgsl): C = alpha·A·B + beta·C (+ bias); the batch index splits
/// as (z / nb2, z % nb2) with strides `*_bs` for the two parts.
struct Gemm<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: V<'a>,
    a_s: [usize; 2],
    b: V<'a>,
    b_s: [usize; 2],
    c: V<'a>,
    c_rs: usize,
    batch: [usize; 2],
    a_bs: [usize; 2],
    b_bs: [usize; 2],
    c_bs: [usize; 2],
    alpha: f32,
    beta: f32,
    bias: Option<V<'a>>,
    /// Nonzero: the batches are k-slices of a reduction this long (see `gemm_split_k`).
    k_total: usize,
    /// (scores, cut): B is a weight under a Subnet mask, applied in the tile load (matmul.wgsl).
    mask: Option<(V<'a>, V<'a>)>,
}

impl<'a> Gemm<'a> {
    /// A single (unbatched) product.
    #[allow(clippy::too_many_arguments)]
    fn plain(m: usize, n: usize, k: usize, a: V<'a>, a_s: [usize; 2], b: V<'a>, b_s: [usize; 2], c: V<'a>, c_rs: usize) -> Self {
        Gemm { m, n, k, a, a_s, b, b_s, c, c_rs, batch: [1, 1], a_bs: [0; 2], b_bs: [0; 2], c_bs: [0; 2], alpha: 1.0, beta: 0.0, bias: None, k_total: 0, mask: None }
    }
    /// Per (batch row, head) of attention: `nb` rows of `nh` heads.
    fn heads(mut self, nb: usize, nh: usize, a_bs: [usize; 2], b_bs: [usize; 2], c_bs: [usize; 2]) -> Self {
        self.batch = [nb, nh];
        self.a_bs = a_bs;
        self.b_bs = b_bs;
        self.c_bs = c_bs;
        self
    }
}

impl WgpuBackend {
    fn gemm(&self, g: Gemm<'_>) {
        // The shader reads the bias binding only when has_bias is set, but it must be bound anyway.
        let (scores, cut) = g.mask.unwrap_or((g.c, g.c));
        let bindings = [(1, g.c), (2, g.a), (3, g.b), (4, g.bias.unwrap_or(g.c)), (5, scores), (6, cut)];
        let groups = [u(g.n.div_ceil(64)), u(g.m.div_ceil(64)), u(g.batch[0] * g.batch[1])];
        let s = [
            u(g.m), u(g.n), u(g.k),
            u(g.a_s[0]), u(g.a_s[1]), u(g.b_s[0]), u(g.b_s[1]), u(g.c_rs),
            u(g.batch[1]), u(g.a_bs[0]), u(g.a_bs[1]), u(g.b_bs[0]), u(g.b_bs[1]), u(g.c_bs[0]), u(g.c_bs[1]),
            f(g.alpha), f(g.beta), g.bias.is_some() as u32, u(g.k_total), g.mask.is_some() as u32,
        ];
        self.dispatch("matmul", "gemm", groups, &bindings, &s);
    }

    /// Slices of a long reduction (k ≫ m·n, as in weight gradients) that give a device enough
    /// workgroups: 1 when the output alone has enough tiles to fill it.
    fn split_k_count(m: usize, n: usize, k: usize) -> usize {
        const MIN_SLICE: usize = 256;
        const TARGET_GROUPS: usize = 256;
        let tiles = m.div_ceil(64) * n.div_ceil(64);
        (TARGET_GROUPS / tiles).min(k / MIN_SLICE).max(1)
    }

    /// The partial products A·B of about `splits` k-slices, computed side by side into scratch
    /// (slice s at s·m·n), and the slice count; the caller sums them in order.
    fn gemm_split_k_partials(&self, g: Gemm<'_>, splits: usize) -> (Arc<WgpuBuffer>, usize) {
        let slice = g.k.div_ceil(splits).max(1);
        let splits = g.k.div_ceil(slice).max(1);
        let mn = g.m * g.n;
        let scratch = self.scratch(splits * mn);
        let part = View::new(&*scratch, 0, splits * mn);
        self.gemm(Gemm {
            k: slice,
            c: part,
            c_rs: g.n,
            batch: [splits, 1],
            a_bs: [slice * g.a_s[1], 0],
            b_bs: [slice * g.b_s[0], 0],
            c_bs: [mn, 0],
            beta: 0.0,
            k_total: g.k,
            ..g
        });
        (scratch, splits)
    }

    /// C += A·B for a long reduction: the k-slices' partial products, then added in order. One pass
    /// when the output alone has enough tiles to fill a device.
    fn gemm_accumulate_split_k(&self, g: Gemm<'_>) {
        let splits = Self::split_k_count(g.m, g.n, g.k);
        if splits < 2 {
            return self.gemm(Gemm { beta: 1.0, ..g });
        }
        assert_eq!(g.c_rs, g.n, "split-k output must be contiguous");
        let (c, mn) = (g.c, g.m * g.n);
        let (scratch, splits) = self.gemm_split_k_partials(g, splits);
        self.accumulate_chunks(c, View::new(&*scratch, 0, splits * mn), splits, mn, mn);
    }

    /// dst[j] += Σ_row src[row·row_stride + j] for j < cols, in a fixed order (two passes).
    fn column_sum_into(&self, dst: V, src: V, rows: usize, cols: usize, row_stride: usize) {
        let chunks = rows.div_ceil(REDUCE_ROWS);
        let scratch = self.scratch(chunks * cols);
        let part = View::new(&*scratch, 0, chunks * cols);
        // elementwise P: n, cols, value, batches, rows, ds0, ds1, ss0, ss1, suppress, row_stride, chunk_rows, chunks
        let s1 = [u(rows), u(cols), 0, 0, 0, 0, 0, 0, 0, 0, u(row_stride), u(REDUCE_ROWS), 0];
        self.dispatch("elementwise", "colsum_partial", [u(cols.div_ceil(64)), u(chunks), 1], &[(1, part), (2, src)], &s1);
        self.accumulate_chunks(dst, part, chunks, cols, cols);
    }

    /// dst[j] += Σ_chunk part[chunk·row_stride + j] (pass 2 of a column sum).
    fn accumulate_chunks(&self, dst: V, part: V, chunks: usize, cols: usize, row_stride: usize) {
        let s = [0, u(cols), 0, 0, 0, 0, 0, 0, 0, 0, u(row_stride), 0, u(chunks)];
        self.dispatch("elementwise", "colsum_accumulate", Self::groups_1d(cols, 64), &[(1, dst), (2, part)], &s);
    }

    pub(super) fn record(&self, op: &Op<'_, WgpuBuffer>) {
        match *op {
            Op::EncoderForward { out, tokens, wte, wpe, b, t, c, pos0 } => {
                let s = [u(b), u(t), u(c), u(pos0), u(wte.len / c)];
                let bind = [(1, out), (2, wte), (3, wpe), (4, tokens)];
                self.dispatch("encoder", "forward", Self::groups_1d(b * t * c, 256), &bind, &s);
            }
            Op::EncoderBackward { dwte, dwpe, dout, tokens, b, t, c, pos0 } => {
                let vocab = dwte.len / c;
                let s = [u(b), u(t), u(c), u(pos0), u(vocab)];
                let groups = Self::groups_1d(vocab * c.div_ceil(64), 1);
                self.dispatch("encoder", "backward_wte", groups, &[(4, tokens), (5, dwte), (7, dout)], &s);
                self.dispatch("encoder", "backward_wpe", Self::groups_1d(t * c, 256), &[(6, dwpe), (7, dout)], &s);
            }
            Op::LayerNormForward { out, mean, rstd, inp, weight, bias, n, c, eps } => {
                let bind = [(1, out), (2, mean), (3, rstd), (4, inp), (5, weight), (6, bias)];
                self.dispatch("layernorm", "forward", Self::groups_1d(n, 8), &bind, &[u(n), u(c), f(eps), 0]);
            }
            Op::LayerNormBackward { dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c } => {
                let bind = [(1, dinp), (2, mean), (3, rstd), (4, inp), (5, weight), (7, dout)];
                self.dispatch("layernorm", "backward_input", Self::groups_1d(n, 8), &bind, &[u(n), u(c), 0, 0]);
                let chunks = n.div_ceil(REDUCE_ROWS);
                let scratch = self.scratch(chunks * 2 * c);
                let part = View::new(&*scratch, 0, chunks * 2 * c);
                let bind = [(1, part), (2, mean), (3, rstd), (4, inp), (7, dout)];
                let s = [u(n), u(c), 0, u(REDUCE_ROWS)];
                self.dispatch("layernorm", "backward_params_partial", [u(c.div_ceil(64)), u(chunks), 1], &bind, &s);
                self.accumulate_chunks(dweight, part, chunks, c, 2 * c);
                self.accumulate_chunks(dbias, part.slice(c, part.len - c), chunks, c, 2 * c);
            }
            Op::MatmulForward { out, inp, weight, bias, n, c, oc, layout } => {
                // W(k, j): [in, out] row-major, or [out, in] for the tied LM head.
                let w_s = match layout {
                    WeightLayout::InOut => [oc, 1],
                    WeightLayout::OutIn => [1, c],
                };
                let mut g = Gemm::plain(n, oc, c, inp, [c, 1], weight, w_s, out, oc);
                g.bias = bias;
                self.gemm(g);
            }
            Op::MatmulBackward { dinp, dweight, dbias, dout, inp, weight, n, c, oc, layout } => {
                if let Some(dinp) = dinp {
                    // dinp = dout · Wᵀ
                    let wt_s = match layout {
                        WeightLayout::InOut => [1, oc],
                        WeightLayout::OutIn => [c, 1],
                    };
                    self.gemm(Gemm::plain(n, c, oc, dout, [oc, 1], weight, wt_s, dinp, c));
                }
                if let Some(dweight) = dweight {
                    self.gemm_accumulate_split_k(match layout {
                        // dW[c, oc] += inpᵀ · dout
                        WeightLayout::InOut => Gemm::plain(c, oc, n, inp, [1, c], dout, [oc, 1], dweight, oc),
                        // dW[oc, c] += doutᵀ · inp
                        WeightLayout::OutIn => Gemm::plain(oc, c, n, dout, [1, oc], inp, [c, 1], dweight, c),
                    });
                }
                if let Some(dbias) = dbias {
                    self.column_sum_into(dbias, dout, n, oc, oc);
                }
            }
            Op::AttentionForward { out, att, qkv, b, t, c, nh } => {
                let hs = c / nh;
                let (q, k, v) = (qkv, qkv.slice(c, qkv.len - c), qkv.slice(2 * c, qkv.len - 2 * c));
                let qkv_bs = [t * 3 * c, hs];
                let att_bs = [nh * t * t, t * t];
                // Scores S = Q·Kᵀ for all t×t pairs (the softmax masks the upper triangle).
                self.gemm(Gemm::plain(t, t, hs, q, [3 * c, 1], k, [1, 3 * c], att, t).heads(b, nh, qkv_bs, qkv_bs, att_bs));
                let s = [u(b * nh * t), u(t), f(1.0 / (hs as f32).sqrt()), 0, 0, 0, 0, 0];
                self.dispatch("attention", "softmax_forward", Self::groups_1d(b * nh * t, 8), &[(1, att)], &s);
                // Y = P·V, written into the head's columns of out [b, t, c].
                self.gemm(Gemm::plain(t, hs, t, att, [t, 1], v, [3 * c, 1], out, c).heads(b, nh, att_bs, qkv_bs, [t * c, hs]));
            }
            Op::AttentionBackward { dqkv, scratch, dout, qkv, att, b, t, c, nh } => {
                let hs = c / nh;
                let (q, k, v) = (qkv, qkv.slice(c, qkv.len - c), qkv.slice(2 * c, qkv.len - 2 * c));
                let (dq, dk, dv) = (dqkv, dqkv.slice(c, dqkv.len - c), dqkv.slice(2 * c, dqkv.len - 2 * c));
                let qkv_bs = [t * 3 * c, hs];
                let att_bs = [nh * t * t, t * t];
                let y_bs = [t * c, hs];
                // dV = Pᵀ·dY
                self.gemm(Gemm::plain(t, hs, t, att, [1, t], dout, [c, 1], dv, 3 * c).heads(b, nh, att_bs, y_bs, qkv_bs));
                // dP = dY·Vᵀ
                self.gemm(Gemm::plain(t, t, hs, dout, [c, 1], v, [1, 3 * c], scratch, t).heads(b, nh, y_bs, qkv_bs, att_bs));
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √hs
                let s = [u(b * nh * t), u(t), f(1.0 / (hs as f32).sqrt()), 0, 0, 0, 0, 0];
                self.dispatch("attention", "softmax_backward", Self::groups_1d(b * nh * t, 8), &[(1, scratch), (2, att)], &s);
                // dQ = dS·K, dK = dSᵀ·Q
                self.gemm(Gemm::plain(t, hs, t, scratch, [t, 1], k, [3 * c, 1], dq, 3 * c).heads(b, nh, att_bs, qkv_bs, qkv_bs));
                self.gemm(Gemm::plain(t, hs, t, scratch, [1, t], q, [3 * c, 1], dk, 3 * c).heads(b, nh, att_bs, qkv_bs, qkv_bs));
            }
            Op::KvCacheWrite { cache, qkv, b, t, pos0, t_max, c, nh } => {
                let s = [0, u(t), 0, u(b), u(c), u(nh), u(t_max), u(pos0)];
                self.dispatch("attention", "kv_cache_write", Self::groups_1d(b * t * c, 256), &[(3, qkv), (4, cache)], &s);
            }
            Op::AttentionDecode { out, qkv, cache, b, pos, t_max, c, nh } => {
                assert!(pos < MAX_DECODE_T, "the wgpu decode step supports contexts up to {MAX_DECODE_T} positions");
                let hs = c / nh;
                let s = [0, 0, f(1.0 / (hs as f32).sqrt()), u(b), u(c), u(nh), u(t_max), u(pos)];
                self.dispatch("attention", "decode", Self::groups_1d(b * nh, 1), &[(1, out), (3, qkv), (4, cache)], &s);
            }
            Op::ActivationForward { out, inp, n, act } => {
                self.dispatch("activation", "forward", Self::groups_1d(n, 256), &[(1, out), (2, inp)], &[u(n), act_code(act)]);
            }
            Op::ActivationBackward { dinp, inp, dout, n, act } => {
                let bind = [(1, dinp), (2, inp), (3, dout)];
                self.dispatch("activation", "backward", Self::groups_1d(n, 256), &bind, &[u(n), act_code(act)]);
            }
            Op::ScaleColumns { x, scale, n, w } => {
                let s = [u(n * w), u(w), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                self.dispatch("elementwise", "scale_columns", Self::groups_1d(n * w, 256), &[(1, x), (2, scale)], &s);
            }
            Op::ColumnDot { out, a, b, n, w } => {
                let s = [u(n), u(w), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                self.dispatch("elementwise", "column_dot", Self::groups_1d(w, 64), &[(1, out), (2, a), (3, b)], &s);
            }
            Op::Residual { out, a, b, n } => {
                let s = [u(n), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                self.dispatch("elementwise", "residual", Self::groups_1d(n, 256), &[(1, out), (2, a), (3, b)], &s);
            }
            Op::SoftmaxCrossEntropyForward { losses, probs, logits, targets, n, v } => {
                let bind = [(1, losses), (2, probs), (3, logits), (4, targets)];
                self.dispatch("crossentropy", "forward", Self::groups_1d(n, 8), &bind, &[u(n), u(v), 0, 0]);
            }
            Op::CrossEntropyBackward { dlogits, probs, targets, weights, scale, n, v } => {
                // The weights binding is read only with has_weights set, but it must be bound anyway.
                let bind = [(2, dlogits), (3, probs), (4, targets), (5, weights.unwrap_or(probs))];
                let s = [u(n), u(v), f(scale), weights.is_some() as u32];
                self.dispatch("crossentropy", "backward", Self::groups_1d(n * v, 256), &bind, &s);
            }
            Op::AdamW { params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay } => {
                let AdamWScalars { step_size, bc2_sqrt, decay } = AdamWScalars::new(step, lr, beta1, beta2, weight_decay);
                let n = params.len;
                let s = [u(n), f(beta1), f(beta2), f(eps), f(decay), f(step_size), f(bc2_sqrt)];
                let bind = [(1, params), (2, grads), (3, m), (4, v)];
                self.dispatch("adamw", "update", Self::groups_1d(n, 256), &bind, &s);
            }
            Op::Argmax { out, logits, n, v, suppress } => {
                let s = [u(n), u(v), 0, 0, 0, 0, 0, 0, 0, suppress.unwrap_or(IGNORE_TARGET), 0, 0, 0];
                self.dispatch("elementwise", "argmax", Self::groups_1d(n, 64), &[(2, logits), (4, out)], &s);
            }
            Op::Fill { dst, value } => {
                let s = [u(dst.len), 0, f(value), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                self.dispatch("elementwise", "fill", Self::groups_1d(dst.len, 256), &[(1, dst)], &s);
            }
            Op::CopyStrided { dst, src, batches, rows, cols, dst_strides, src_strides } => {
                let n = batches * rows * cols;
                let s = [
                    u(n), u(cols), 0, u(batches), u(rows),
                    u(dst_strides[0]), u(dst_strides[1]), u(src_strides[0]), u(src_strides[1]), 0, 0, 0, 0,
                ];
                self.dispatch("elementwise", "copy_strided", Self::groups_1d(n, 256), &[(1, dst), (2, src)], &s);
            }
            // smi.wgsl P: n, k, d, classes, ld, col0, seed_lo, seed_hi, slice0, neighbors
            Op::SmiDirections { out, seed, slice0, k, d } => {
                let s = [0, u(k), u(d), 0, 0, 0, seed as u32, (seed >> 32) as u32, u(slice0)];
                self.dispatch("smi", "directions", Self::groups_1d(k, 1), &[(1, out)], &s);
            }
            // P[n, k] = X[n, d]·Θᵀ with Θ [k, d] read as a [d, k] matrix.
            Op::SmiProject { out, x, dirs, n, d, k } => self.gemm(Gemm::plain(n, k, d, x, [d, 1], dirs, [1, d], out, k)),
            Op::SmiClassStats { stats, proj, labels, n, k, classes } => {
                assert!(stats.off.is_multiple_of(2), "f64 views start on an even word");
                let parts = n.div_ceil(crate::smi::psmi::STATS_ROWS);
                assert!(classes <= MAX_GROUPS && parts <= MAX_GROUPS, "{classes} classes × {parts} parts exceed the grid");
                let s = [u(n), u(k), 0, u(classes), 0, 0, 0, 0, 0];
                self.dispatch("smi", "class_stats", [u(k.div_ceil(64)), u(classes), u(parts)], &[(2, proj), (3, labels), (4, stats)], &s);
            }
            Op::SmiScore { pmi, proj, labels, model, excluded, n, k, classes, ld, col0 } => {
                assert!(model.off.is_multiple_of(2), "f64 views start on an even word");
                let s = [u(n), u(k), 0, u(classes), u(ld), u(col0), 0, 0, 0];
                let bind = [(1, pmi), (2, proj), (3, labels), (4, model), (5, excluded)];
                self.dispatch("smi", "score", Self::groups_1d(u(n * k) as usize, 256), &bind, &s);
            }
            Op::SmiRowSummary { out, pmi, excluded, n, k } => {
                assert!(out.off.is_multiple_of(2), "f64 views start on an even word");
                let s = [u(n), u(k), 0, 0, 0, 0, 0, 0, 0];
                self.dispatch("smi", "row_summary", Self::groups_1d(n, 1), &[(2, pmi), (4, out), (5, excluded)], &s);
            }
            // attribution.wgsl P: n, w, m, t_ctx, c, nh, flags, scale
            Op::GatherRows { out, src, index, scale, n, w } => {
                // The scale binding is read only with flag 1, but it must be bound anyway.
                let s = [u(n), u(w), 0, 0, 0, 0, scale.is_some() as u32, 0];
                let bind = [(1, out), (3, src), (5, index), (6, scale.unwrap_or(out))];
                self.dispatch("attribution", "gather_rows", Self::groups_1d(u(n * w) as usize, 256), &bind, &s);
            }
            Op::AttentionRowForward { out, att, qkv, ctx, index, n, t_ctx, c, nh } => {
                let s = [u(n), 0, 0, u(row_context(t_ctx)), u(c), u(nh), 0, f(head_scale(c, nh))];
                let bind = [(1, out), (2, att), (3, qkv), (4, ctx), (5, index)];
                self.dispatch("attribution", "attention_row_forward", Self::groups_1d(n * nh, 1), &bind, &s);
            }
            Op::AttentionRowBackward { dqkv, dout, qkv, ctx, att, index, n, t_ctx, c, nh } => {
                let s = [u(n), 0, 0, u(row_context(t_ctx)), u(c), u(nh), 0, f(head_scale(c, nh))];
                let bind = [(1, dqkv), (2, att), (3, qkv), (4, ctx), (5, index), (6, dout)];
                self.dispatch("attribution", "attention_row_backward", Self::groups_1d(n * nh, 1), &bind, &s);
            }
            Op::TargetProbBackward { dlogits, probs, targets, n, v, log } => {
                // In place, the shader reads the probabilities through the output binding only.
                let in_place = std::ptr::eq(dlogits.buf, probs.buf) && dlogits.off == probs.off;
                let s = [u(n), u(v), 0, 0, 0, 0, log as u32 | (in_place as u32) << 1, 0];
                let bind = [(1, dlogits), (3, probs), (5, targets)];
                self.dispatch("attribution", "target_prob_backward", Self::groups_1d(n, 8), &bind, &s);
            }
            Op::IgReduce { ig, grads, src, index, n, m, w } => {
                assert!(m > 0, "ig_reduce needs at least one path point per group");
                let s = [u(n), u(w), u(m), 0, 0, 0, 0, f(1.0 / m as f32)];
                let bind = [(1, ig), (3, grads), (4, src), (5, index)];
                self.dispatch("attribution", "ig_reduce", Self::groups_1d(u(n / m * w) as usize, 256), &bind, &s);
            }
            Op::SmiKsg { mi, proj, labels, scratch, n, k, classes, neighbors } => {
                let need = crate::backend::ksg_scratch_words(n, k, classes);
                assert!(scratch.len >= need, "smi_ksg: {} words of scratch, needs {need}", scratch.len);
                // k_c = min(neighbors, n_c − 1) never exceeds n, so larger values change nothing.
                let s = [u(n), u(k), 0, u(classes), 0, 0, 0, 0, 0, u(neighbors.min(n.max(1)))];
                self.dispatch("smi", "ksg_classes", [1, 1, 1], &[(3, labels), (7, scratch)], &s);
                self.dispatch("smi", "ksg_sort_mi", Self::groups_1d(k, 1), &[(2, proj), (3, labels), (4, mi), (6, scratch)], &s);
            }
            // mask.wgsl P: n, k, key, flags, block, splits, lr, momentum, weight_decay, lambda
            Op::SelectRank { cut, x, y, n, k, key } => {
                check_select(n, k);
                let s = [u(n), u(k), key.code(), y.is_some() as u32, 0, 0, 0, 0, 0, 0];
                self.dispatch("mask", "select_rank", [1, 1, 1], &[(2, x), (3, y.unwrap_or(x)), (4, cut)], &s);
            }
            Op::MaskApply { w, x, y, cut, n, key, below } => {
                let s = [u(n), 0, key.code(), y.is_some() as u32 | (below as u32) << 1, 0, 0, 0, 0, 0, 0];
                let bind = [(1, w), (2, x), (3, y.unwrap_or(x)), (4, cut)];
                self.dispatch("mask", "mask_apply", Self::groups_1d(n, 256), &bind, &s);
            }
            Op::MaskedMatmulForward { out, inp, weight, bias, scores, cut, n, c, oc } => {
                let mut g = Gemm::plain(n, oc, c, inp, [c, 1], weight, [oc, 1], out, oc);
                g.bias = bias;
                g.mask = Some((scores, cut));
                self.gemm(g);
            }
            Op::MaskedMatmulBackward { dinp, dscores, dout, inp, weight, scores, cut, n, c, oc } => {
                if let Some(dinp) = dinp {
                    // dinp = dout · (W ⊙ m)ᵀ
                    let mut g = Gemm::plain(n, c, oc, dout, [oc, 1], weight, [1, oc], dinp, c);
                    g.mask = Some((scores, cut));
                    self.gemm(g);
                }
                if let Some(dscores) = dscores.filter(|_| n > 0) {
                    // The dweight GEMM inpᵀ·dout as split-k partials, then the straight-through epilogue
                    // sign(S) ⊙ W ⊙ Σ partials added into dscores.
                    let g = Gemm::plain(c, oc, n, inp, [1, c], dout, [oc, 1], dscores, oc);
                    let (scratch, splits) = self.gemm_split_k_partials(g, Self::split_k_count(c, oc, n));
                    let part = View::new(&*scratch, 0, splits * c * oc);
                    let s = [u(c * oc), 0, 0, 0, 0, u(splits), 0, 0, 0, 0];
                    let bind = [(1, dscores), (2, scores), (3, weight), (5, part)];
                    self.dispatch("mask", "ste_accumulate", Self::groups_1d(c * oc, 256), &bind, &s);
                }
            }
            Op::SgdMomentum { params, grads, buf, lr, momentum, weight_decay, first } => {
                let n = params.len;
                let s = [u(n), 0, 0, (first as u32) << 2, 0, 0, f(lr), f(momentum), f(weight_decay), 0];
                self.dispatch("mask", "sgd_momentum", Self::groups_1d(n, 256), &[(1, params), (2, grads), (3, buf)], &s);
            }
            Op::SouScores { out, w, g, n, block, lambda } => {
                assert!(block > 0, "sou_scores: blocks of 0 entries");
                let s = [u(n), 0, 0, 0, u(block), 0, 0, 0, 0, f(lambda)];
                self.dispatch("mask", "sou_scores", Self::groups_1d(n.div_ceil(block), 256), &[(1, out), (2, w), (3, g)], &s);
            }
            Op::AttentionStats { out, qkv, b, t, c, nh, t0, t1, top_k } => {
                crate::backend::check_attention_stats(out.len, qkv.len, b, t, c, nh, t0, t1, top_k);
                let s = [u(b), u(t), u(c), u(nh), u(t0), u(t1), u(top_k), f(head_scale(c, nh))];
                let rows = b * nh * (t1 - t0);
                self.dispatch("attnstats", "attention_stats", Self::groups_1d(rows, 1), &[(1, out), (2, qkv)], &s);
            }
            // regularize.wgsl P: n, t, c, pos0, keep, mem, flags, seed_lo, seed_hi, scale, lambda
            Op::SpectralPowerIteration { state, sigma, params, table, blocks, .. } => {
                let s = [u(blocks), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let bind = [(1, state), (2, params), (3, sigma), (4, table)];
                self.dispatch("regularize", "power_iteration", Self::groups_1d(blocks, 1), &bind, &s);
            }
            Op::SpectralGradAdd { grads, state, sigma, table, blocks, lambda, linear, .. } => {
                let s = [u(blocks), 0, 0, 0, 0, 0, (linear as u32) << 2, 0, 0, 0, f(lambda)];
                let bind = [(1, grads), (3, sigma), (4, table), (5, state)];
                self.dispatch("regularize", "grad_add", Self::groups_1d(blocks, 1), &bind, &s);
            }
            Op::ExampleTiedDropout { out, x, ids, n, t, c, pos0, seed, mode, keep, mem, scale } => {
                assert!(c <= crate::backend::ETD_MAX_C, "example_tied_dropout: width {c} above {}", crate::backend::ETD_MAX_C);
                assert!(t > 0 && n.is_multiple_of(t), "example_tied_dropout: {n} rows are not whole sequences of {t}");
                let flags = ids.is_some() as u32 | ((mode == crate::backend::EtdMode::Positions) as u32) << 1;
                let s = [u(n), u(t), u(c), u(pos0), u(keep), mem, flags, seed as u32, (seed >> 32) as u32, f(scale), 0];
                // The ids binding is read only with training masks, but it must be bound anyway.
                let bind = [(1, out), (2, x), (4, ids.unwrap_or(out))];
                self.dispatch("regularize", "example_tied_dropout", Self::groups_1d(n / t, 1), &bind, &s);
            }
        }
    }
}

/// SelectRank's limits (the one-workgroup select of mask.wgsl; see `backend::MAX_SELECT`).
fn check_select(n: usize, k: usize) {
    assert!(k <= n, "select_rank: rank {k} of {n} entries");
    assert!(n <= crate::backend::MAX_SELECT, "select_rank: {n} entries exceed the {} a selection takes", crate::backend::MAX_SELECT);
}

/// The row-attention shaders keep a row's scores in shared memory (attribution.wgsl's MAX_ROW_T).
const MAX_ROW_T: usize = 2048;

fn row_context(t_ctx: usize) -> usize {
    assert!(t_ctx > 0, "row attention needs a context of at least one position");
    assert!(t_ctx <= MAX_ROW_T, "the wgpu row-attention kernels support contexts up to {MAX_ROW_T} positions, not {t_ctx}");
    t_ctx
}

/// 1/√hs, as the cpu backend rounds it.
fn head_scale(c: usize, nh: usize) -> f32 {
    1.0 / ((c / nh) as f32).sqrt()
}

fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Relu => 0,
        Activation::Gelu => 1,
        Activation::GeluNew => 2,
    }
}

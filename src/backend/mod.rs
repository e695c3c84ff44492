//! The op-level backend interface (llm.c style): every op is a forward/backward pair over device buffers.
//!
//! Ops are plain data (`Op`), so there is exactly one dispatch point (`Device::exec`) that knows each
//! call's name, shapes, FLOPs and bytes — the profiler hooks in there — and a backend is one `run`
//! that matches on the op. Buffers are untyped 4-byte words (f32, or u32 token ids) that stay on the
//! device; the host touches them only through `upload`/`download`.
//!
//! Gradient conventions (documented once, obeyed by every backend):
//! - parameter gradients (`dweight`, `dbias`, `dwte`, `dwpe`) are **accumulated** (`+=`);
//! - activation gradients are **overwritten** (`=`), except `LayerNormBackward::dinp`, which accumulates,
//!   because a layernorm's input is the residual stream whose gradient also flows through the skip path;
//! - elementwise ops may run in place (output view equal to an input view); other ops need disjoint views.

pub mod cpu;
pub mod cuda;
pub mod profile;
pub mod wgpu;

use crate::error::{Error, Result};
use crate::model::config::Activation;

/// Token id that marks "no target" in a target buffer (loss 0, gradient 0).
pub const IGNORE_TARGET: u32 = u32::MAX;

/// A range of a device buffer, in 4-byte words.
pub struct View<'a, Buf> {
    pub buf: &'a Buf,
    pub off: usize,
    pub len: usize,
}

impl<Buf> Clone for View<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for View<'_, Buf> {}

impl<'a, Buf> View<'a, Buf> {
    pub fn new(buf: &'a Buf, off: usize, len: usize) -> Self {
        View { buf, off, len }
    }
    /// A sub-range, relative to this view.
    pub fn slice(&self, off: usize, len: usize) -> Self {
        assert!(off + len <= self.len, "view slice {off}+{len} beyond length {}", self.len);
        View { buf: self.buf, off: self.off + off, len }
    }
}

/// Storage order of a matmul weight. HF Conv1D weights are [in, out]; the tied LM head (`wte`) is [out, in].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    InOut,
    OutIn,
}

/// One op call. `n` is a row count (B·T), `c` an input width, `oc` an output width.
pub enum Op<'a, Buf> {
    /// out[b,t,:] = wte[tok[b,t]] + wpe[pos0 + t]
    EncoderForward { out: View<'a, Buf>, tokens: View<'a, Buf>, wte: View<'a, Buf>, wpe: View<'a, Buf>, b: usize, t: usize, c: usize, pos0: usize },
    EncoderBackward { dwte: View<'a, Buf>, dwpe: View<'a, Buf>, dout: View<'a, Buf>, tokens: View<'a, Buf>, b: usize, t: usize, c: usize, pos0: usize },
    /// Biased variance; caches mean and 1/std per row for the backward pass.
    LayerNormForward { out: View<'a, Buf>, mean: View<'a, Buf>, rstd: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, bias: View<'a, Buf>, n: usize, c: usize, eps: f32 },
    LayerNormBackward { dinp: View<'a, Buf>, dweight: View<'a, Buf>, dbias: View<'a, Buf>, dout: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, mean: View<'a, Buf>, rstd: View<'a, Buf>, n: usize, c: usize },
    /// out[n, oc] = inp[n, c] · W (+ bias)
    MatmulForward { out: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, bias: Option<View<'a, Buf>>, n: usize, c: usize, oc: usize, layout: WeightLayout },
    MatmulBackward { dinp: Option<View<'a, Buf>>, dweight: Option<View<'a, Buf>>, dbias: Option<View<'a, Buf>>, dout: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, n: usize, c: usize, oc: usize, layout: WeightLayout },
    /// Causal multi-head attention over qkv [b, t, 3c]; `att` keeps the probabilities [b, nh, t, t].
    AttentionForward { out: View<'a, Buf>, att: View<'a, Buf>, qkv: View<'a, Buf>, b: usize, t: usize, c: usize, nh: usize },
    /// `scratch` is [b, nh, t, t] of working space a backend may use for d(att).
    AttentionBackward { dqkv: View<'a, Buf>, scratch: View<'a, Buf>, dout: View<'a, Buf>, qkv: View<'a, Buf>, att: View<'a, Buf>, b: usize, t: usize, c: usize, nh: usize },
    /// Store the k and v of qkv [b, t, 3c] at positions pos0..pos0+t of a KV cache laid out per
    /// (row, head) as kᵀ [hs, t_max] then v [t_max, hs], so a decode step reads both contiguously.
    KvCacheWrite { cache: View<'a, Buf>, qkv: View<'a, Buf>, b: usize, t: usize, pos0: usize, t_max: usize, c: usize, nh: usize },
    /// One decode step: queries from qkv [b, 3c] against cached positions 0..=pos.
    AttentionDecode { out: View<'a, Buf>, qkv: View<'a, Buf>, cache: View<'a, Buf>, b: usize, pos: usize, t_max: usize, c: usize, nh: usize },
    ActivationForward { out: View<'a, Buf>, inp: View<'a, Buf>, n: usize, act: Activation },
    /// dinp = act'(inp) · dout (may be in place on dout).
    ActivationBackward { dinp: View<'a, Buf>, inp: View<'a, Buf>, dout: View<'a, Buf>, n: usize, act: Activation },
    /// x[r, j] *= scale[j] over rows of width w, in place (neuron masks on MLP activations).
    ScaleColumns { x: View<'a, Buf>, scale: View<'a, Buf>, n: usize, w: usize },
    /// out[j] = Σ_r a[r, j]·b[r, j] over n rows of width w, rows summed in order (mask gradients).
    ColumnDot { out: View<'a, Buf>, a: View<'a, Buf>, b: View<'a, Buf>, n: usize, w: usize },
    /// out = a + b
    Residual { out: View<'a, Buf>, a: View<'a, Buf>, b: View<'a, Buf>, n: usize },
    /// Row softmax of logits [n, v] into probs, and losses[i] = −log probs[i, target[i]] (0 where ignored).
    SoftmaxCrossEntropyForward { losses: View<'a, Buf>, probs: View<'a, Buf>, logits: View<'a, Buf>, targets: View<'a, Buf>, n: usize, v: usize },
    /// dlogits = (probs − onehot(target)) · scale · weights[i] (per-row multipliers, 1 without `weights`:
    /// BalancedSubnet's and Greedy's per-sample signed objectives); rows with an ignored target get 0.
    /// Every backend folds scale·weights[i] first. May run in place on probs.
    CrossEntropyBackward { dlogits: View<'a, Buf>, probs: View<'a, Buf>, targets: View<'a, Buf>, weights: Option<View<'a, Buf>>, scale: f32, n: usize, v: usize },
    /// PyTorch AdamW (decoupled decay, bias-corrected), `step` ≥ 1.
    AdamW { params: View<'a, Buf>, grads: View<'a, Buf>, m: View<'a, Buf>, v: View<'a, Buf>, step: u64, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
    /// out[i] = argmax_j logits[i, j] (first maximal index), with token `suppress` masked to −∞.
    Argmax { out: View<'a, Buf>, logits: View<'a, Buf>, n: usize, v: usize, suppress: Option<u32> },
    Fill { dst: View<'a, Buf>, value: f32 },
    /// Strided copy of `batches` × `rows` × `cols` words (strides in words).
    CopyStrided { dst: View<'a, Buf>, src: View<'a, Buf>, batches: usize, rows: usize, cols: usize, dst_strides: [usize; 2], src_strides: [usize; 2] },
    // ---- sliced mutual information screening (src/smi, smi.md); f64 values travel as two words, low first ----
    /// out[r, :] = unit direction of slice `slice0 + r` in R^d from Philox (smi::directions), r < k.
    SmiDirections { out: View<'a, Buf>, seed: u64, slice0: usize, k: usize, d: usize },
    /// out[n, k] = x[n, d] · dirs[k, d]ᵀ (f32).
    SmiProject { out: View<'a, Buf>, x: View<'a, Buf>, dirs: View<'a, Buf>, n: usize, d: usize, k: usize },
    /// Per part of `smi::psmi::STATS_ROWS` consecutive rows of proj[n, k], per (class, slice): the
    /// mean and M2 of the part's rows of that class, as f64 at word 2·((part·2 + s)·classes·k + c·k + j)
    /// (s = 0: mean, 1: M2; 0 where the class is absent). `labels` holds class indices (u32).
    SmiClassStats { stats: View<'a, Buf>, proj: View<'a, Buf>, labels: View<'a, Buf>, n: usize, k: usize, classes: usize },
    /// pmi[i, col0 + j] (row stride ld) of proj[n, k] under the Gaussians of `model`: f64 arrays
    /// mu, inv_sigma, log_weight (each [k, classes]), then log_prior [classes]; NaN where `excluded[j]` ≠ 0 (u32).
    SmiScore { pmi: View<'a, Buf>, proj: View<'a, Buf>, labels: View<'a, Buf>, model: View<'a, Buf>, excluded: View<'a, Buf>, n: usize, k: usize, classes: usize, ld: usize, col0: usize },
    /// out[i] = (mean, std (ddof 0), quantile 0.01, quantile 0.99) as f64 of row i of pmi[n, k] over the
    /// slices with `excluded[j]` = 0 (numpy's linear quantiles; smi::psmi::summarize_row).
    SmiRowSummary { out: View<'a, Buf>, pmi: View<'a, Buf>, excluded: View<'a, Buf>, n: usize, k: usize },
    // ---- attribution (src/attribution): one query position per row, recomputed above a scaled layer ----
    /// out[r, :] = scale[r] · src[index[r], :] over rows of width w (scale 1 without `scale`): gathers
    /// a full pass's activations at the queried positions, scaled onto the IG path (α·a). `index` is u32.
    GatherRows { out: View<'a, Buf>, src: View<'a, Buf>, index: View<'a, Buf>, scale: Option<View<'a, Buf>>, n: usize, w: usize },
    /// Causal attention of one query position per row against a context: row r, with
    /// index[r] = s·t_ctx + t, attends to positions 0..t−1 of sequence s in ctx [S·t_ctx, 3c] (the qkv
    /// of a full forward pass, unchanged below the row's position) and to its own k and v (position t)
    /// in qkv [n, 3c]. att [n, nh, t_ctx] keeps the probabilities over positions 0..=t.
    AttentionRowForward { out: View<'a, Buf>, att: View<'a, Buf>, qkv: View<'a, Buf>, ctx: View<'a, Buf>, index: View<'a, Buf>, n: usize, t_ctx: usize, c: usize, nh: usize },
    /// dqkv [n, 3c] = ∂/∂(q, k_t, v_t) of each row (overwritten); the context is constant.
    AttentionRowBackward { dqkv: View<'a, Buf>, dout: View<'a, Buf>, qkv: View<'a, Buf>, ctx: View<'a, Buf>, att: View<'a, Buf>, index: View<'a, Buf>, n: usize, t_ctx: usize, c: usize, nh: usize },
    /// dlogits [n, v] = ∂f/∂logits of f = probs[target] ((onehot − p)·p_target), or of f = log
    /// probs[target] with `log` (onehot − p). Overwritten; may run in place on probs.
    TargetProbBackward { dlogits: View<'a, Buf>, probs: View<'a, Buf>, targets: View<'a, Buf>, n: usize, v: usize, log: bool },
    /// Integrated gradients of n/m path groups of m consecutive rows: ig[g, k] =
    /// src[index[g·m], k] · (1/m)·Σ_j grads[g·m + j, k] over width w.
    IgReduce { ig: View<'a, Buf>, grads: View<'a, Buf>, src: View<'a, Buf>, index: View<'a, Buf>, n: usize, m: usize, w: usize },
    /// mi[j] (f64) = the 1-D KSG MI of column j of proj[n, k] against `labels` (class indices below
    /// `classes`), with `neighbors` neighbours: smi::ksg::ksg_mi_columns without jitter (classes of
    /// fewer than 2 samples dropped, clipped at 0). `scratch` holds `Backend::smi_ksg_scratch_len` words.
    SmiKsg { mi: View<'a, Buf>, proj: View<'a, Buf>, labels: View<'a, Buf>, scratch: View<'a, Buf>, n: usize, k: usize, classes: usize, neighbors: usize },
    // ---- attention-distribution statistics (depn-attention.md B3, reconstruction for decoder-only models) ----
    /// Per (row b, head h, query t0 ≤ t < t1) of qkv [b, t, 3c]: the causal row p = softmax(q_t·k_s/√hs,
    /// s ≤ t) summarised as out[((b·nh + h)·(t1 − t0) + t − t0)·ATTENTION_STATS + j] = (entropy H,
    /// H/ln(t+1) (0 at t = 0), max p, mass of the top_k largest scores), streamed over key blocks with
    /// an online max/Σe/Σe·(s−m) and a per-thread top-k list — no row of scores is ever stored.
    /// top_k ≤ MAX_STATS_TOP_K; ties rank the lower key first.
    AttentionStats { out: View<'a, Buf>, qkv: View<'a, Buf>, b: usize, t: usize, c: usize, nh: usize, t0: usize, t1: usize, top_k: usize },
    // ---- masked-weight unlearning (issue 7; tinymem.md §5.5): Subnet, BalancedSubnet, Durable, Greedy, SOU ----
    /// cut[0..2] (u32: order, index) = the key of rank k (0-based, ascending) among the n entries of x
    /// (·y); for k == n the sentinel (u32::MAX, u32::MAX), above every key. Radix/histogram select, no sort.
    SelectRank { cut: View<'a, Buf>, x: View<'a, Buf>, y: Option<View<'a, Buf>>, n: usize, k: usize, key: SelectKey },
    /// w[j] = 0 where key(j) < cut (`below`) or key(j) ≥ cut (!below), else unchanged; keys from x (·y)
    /// as in SelectRank. Bakes a Subnet mask (x = scores, Abs, below) or zeroes Durable's top-k
    /// (x = grads, Abs, !below, cut = rank n−k) or Greedy's arg-max (x = params, y = grads, Signed,
    /// !below, k = n−1). Elementwise: w may be x or y itself.
    MaskApply { w: View<'a, Buf>, x: View<'a, Buf>, y: Option<View<'a, Buf>>, cut: View<'a, Buf>, n: usize, key: SelectKey, below: bool },
    /// out[n, oc] = inp[n, c] · (W ⊙ m) (+ bias), W [c, oc] (InOut, HF Conv1D), m[j] = 0 where
    /// key(|scores[j]|, j) < cut (Abs keys, as MaskApply below), else 1 — the mask computed on the fly.
    MaskedMatmulForward { out: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, bias: Option<View<'a, Buf>>, scores: View<'a, Buf>, cut: View<'a, Buf>, n: usize, c: usize, oc: usize },
    /// dinp[n, c] = dout[n, oc] · (W ⊙ m)ᵀ (overwrite); dscores[c, oc] += sign(scores) ⊙ W ⊙ (inpᵀ · dout)
    /// (the straight-through estimator; accumulates like MatmulBackward's dweight; sign(0) = 0). Both optional.
    MaskedMatmulBackward { dinp: Option<View<'a, Buf>>, dscores: Option<View<'a, Buf>>, dout: View<'a, Buf>, inp: View<'a, Buf>, weight: View<'a, Buf>, scores: View<'a, Buf>, cut: View<'a, Buf>, n: usize, c: usize, oc: usize },
    /// PyTorch SGD with momentum (dampening 0, not Nesterov): d = g + wd·p; buf = d if `first` else
    /// momentum·buf + d; p −= lr·buf.
    SgdMomentum { params: View<'a, Buf>, grads: View<'a, Buf>, buf: View<'a, Buf>, lr: f32, momentum: f32, weight_decay: f32, first: bool },
    /// Second-Order Unlearning saliency over consecutive blocks of `block` entries (last block may be
    /// shorter): out[j] = w_j² / (2·[F⁻¹]_jj), [F⁻¹]_jj = (1/λ)·(1 − g_j²/(λ + ‖g_b‖²)) (the stable form
    /// of 1/λ − g_j²/(λ² + λ‖g_b‖²); tinymem.md §5.5 SOU). ‖g_b‖² is summed in entry order.
    SouScores { out: View<'a, Buf>, w: View<'a, Buf>, g: View<'a, Buf>, n: usize, block: usize, lambda: f32 },
    // ---- training regularizers (tinymem.md §5.1; src/regularize) ----
    /// One power iteration per matrix block (the spectral-norm penalty). Block b's entry in `table`
    /// (u32 words 5b..5b+5: offset, rows, cols, ld, state offset) names W_b[i, j] = params[offset + i·ld + j]
    /// and its persistent u [rows] followed by v [cols] in `state`: v = normalize(W_bᵀu),
    /// u = normalize(W_b v) (x / max(‖x‖, 1e-12), PyTorch's F.normalize), sigma[b] = uᵀ·(W_b v).
    /// `entries` = Σ rows·cols (for the cost). One workgroup per block on the GPUs.
    SpectralPowerIteration { state: View<'a, Buf>, sigma: View<'a, Buf>, params: View<'a, Buf>, table: View<'a, Buf>, blocks: usize, entries: usize },
    /// grads[W_b[i, j]] += coef_b·u_i·v_j with coef_b = λ·σ_b, the gradient of (λ/2)·Σσ², or λ/2 with
    /// `linear` ((λ/2)·Σσ, the reference's penalty); ∂σ/∂W = u vᵀ. Blocks must not overlap.
    SpectralGradAdd { grads: View<'a, Buf>, state: View<'a, Buf>, sigma: View<'a, Buf>, table: View<'a, Buf>, blocks: usize, entries: usize, lambda: f32, linear: bool },
    /// Example-tied dropout over x [n, c], n = rows·t (row r = i / t has position pos0 + i % t):
    /// out = x ⊙ m · scale, 0 where dropped (may run in place; its backward is the same op on the
    /// gradient). With `ids` (u32 per row: the example's dataset index) the training mask: Channels
    /// keeps channels j < keep and the `mem` channels of the lowest keys (h_j, j) among j ≥ keep,
    /// h_j = Philox(seed; j, id, ETD, 0)[0]; Positions keeps positions < keep and a later position p
    /// where Philox(seed; p, id, ETD, 1)[0] < mem. Without ids the evaluation mask: only the
    /// channels (positions) below `keep`. The mask is never stored.
    ExampleTiedDropout { out: View<'a, Buf>, x: View<'a, Buf>, ids: Option<View<'a, Buf>>, n: usize, t: usize, c: usize, pos0: usize, seed: u64, mode: EtdMode, keep: usize, mem: u32, scale: f32 },
}

/// Words per query row of `AttentionStats`: entropy, normalised entropy, max weight, top-k mass.
pub const ATTENTION_STATS: usize = 4;
/// Largest k of `AttentionStats`' top-k mass (the kernels keep k candidates per thread).
pub const MAX_STATS_TOP_K: usize = 16;

/// `AttentionStats`' shape contract, checked by every backend (callers validate user input first).
#[allow(clippy::too_many_arguments)]
pub fn check_attention_stats(out_len: usize, qkv_len: usize, b: usize, t: usize, c: usize, nh: usize, t0: usize, t1: usize, top_k: usize) {
    assert!(nh > 0 && c.is_multiple_of(nh), "attention_stats: {c} channels do not split into {nh} heads");
    assert!(t0 < t1 && t1 <= t, "attention_stats: query range {t0}..{t1} outside 0..{t}");
    assert!((1..=MAX_STATS_TOP_K).contains(&top_k), "attention_stats: top_k {top_k} outside 1..={MAX_STATS_TOP_K}");
    assert!(qkv_len >= b * t * 3 * c, "attention_stats: qkv holds {qkv_len} words, not {b}×{t}×{}", 3 * c);
    assert!(out_len >= b * nh * (t1 - t0) * ATTENTION_STATS, "attention_stats: out holds {out_len} words, fewer than the rows need");
}

/// What example-tied dropout masks: hidden channels (Maini et al., the default) or positions
/// (the reference's code, `--etd-positions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtdMode {
    Channels,
    Positions,
}

/// Widest hidden state the GPU example-tied-dropout kernels take (their per-channel shared arrays).
pub const ETD_MAX_C: usize = 1024;

/// How a selection ranks entries: entry j has value v_j = x[j] (times y[j] when y is given) and key
/// (order(v_j), j) compared lexicographically, so keys are unique and every backend picks the same
/// entries. Abs: order = bits of |v| (as u32); Signed: the total order of f32 as u32
/// (bits ^ 0x8000_0000 for v ≥ +0, !bits for negative sign bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectKey {
    Abs,
    Signed,
}

impl SelectKey {
    /// The order word of a value (the high half of its key).
    #[inline(always)]
    pub fn order(self, v: f32) -> u32 {
        let b = v.to_bits();
        match self {
            SelectKey::Abs => b & 0x7fff_ffff,
            SelectKey::Signed if b >> 31 == 0 => b ^ 0x8000_0000,
            SelectKey::Signed => !b,
        }
    }

    /// The packed key (order(v) << 32 | j) of entry j with value v.
    #[inline(always)]
    pub fn key(self, v: f32, j: usize) -> u64 {
        (self.order(v) as u64) << 32 | j as u64
    }

    /// The shaders' and kernels' code for the key kind (0 = Abs, 1 = Signed).
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// `SelectRank`'s result for k == n: above every key.
pub const SELECT_SENTINEL: u64 = u64::MAX;

/// The packed key a `cut` view holds (words: order, index).
pub fn cut_from_words(words: &[u32]) -> u64 {
    (words[0] as u64) << 32 | words[1] as u64
}

/// Most entries `SelectRank` takes: indices must stay below the sentinel's u32::MAX, and the GPU
/// kernels select in one workgroup (8 passes over the entries), which suits the ≈ 1M-entry parameter
/// buffers of TinyMem models, not hundreds of millions (≈ 64M entries is already a second of work).
pub const MAX_SELECT: usize = 1 << 26;

/// Working space of the GPU backends' `SmiKsg` (shaders/ksg.wgsl, kernels/ksg.cu): per slice two
/// (key, class) arrays that the radix sort ping-pongs between and the globally sorted keys, then per
/// slice its scale (f64), and the class table (start of each class's segment, then 8 words of totals).
pub fn ksg_scratch_words(n: usize, k: usize, classes: usize) -> usize {
    5 * n * k + 2 * k + classes + 1 + 8
}

/// f64 values as device words (two per value, low word first), the layout of the SMI ops' f64 arrays.
pub fn f64_to_words(values: &[f64]) -> Vec<u32> {
    values.iter().flat_map(|v| {
        let b = v.to_bits();
        [b as u32, (b >> 32) as u32]
    }).collect()
}

/// The inverse of [`f64_to_words`].
pub fn words_to_f64(words: &[u32]) -> Vec<f64> {
    words.chunks_exact(2).map(|w| f64::from_bits(w[0] as u64 | (w[1] as u64) << 32)).collect()
}

/// The step-dependent AdamW scalars every backend folds on the host exactly alike (in f64, then f32),
/// so the per-element update is the same expression everywhere.
#[derive(Clone, Copy, Debug)]
pub struct AdamWScalars {
    /// lr / (1 − β1^step)
    pub step_size: f32,
    /// √(1 − β2^step)
    pub bc2_sqrt: f32,
    /// 1 − lr·weight_decay (decoupled decay)
    pub decay: f32,
}

impl AdamWScalars {
    pub fn new(step: u64, lr: f32, beta1: f32, beta2: f32, weight_decay: f32) -> Self {
        let bc1 = 1.0 - (beta1 as f64).powi(step as i32);
        let bc2 = 1.0 - (beta2 as f64).powi(step as i32);
        AdamWScalars { step_size: (lr as f64 / bc1) as f32, bc2_sqrt: bc2.sqrt() as f32, decay: 1.0 - lr * weight_decay }
    }
}

/// Cost of one op, for the profiler.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpCost {
    pub flops: f64,
    pub bytes: f64,
}

impl<Buf> Op<'_, Buf> {
    pub fn name(&self) -> &'static str {
        match self {
            Op::EncoderForward { .. } => "encoder_forward",
            Op::EncoderBackward { .. } => "encoder_backward",
            Op::LayerNormForward { .. } => "layernorm_forward",
            Op::LayerNormBackward { .. } => "layernorm_backward",
            Op::MatmulForward { .. } => "matmul_forward",
            Op::MatmulBackward { .. } => "matmul_backward",
            Op::AttentionForward { .. } => "attention_forward",
            Op::AttentionBackward { .. } => "attention_backward",
            Op::KvCacheWrite { .. } => "kv_cache_write",
            Op::AttentionDecode { .. } => "attention_decode",
            Op::ActivationForward { .. } => "activation_forward",
            Op::ActivationBackward { .. } => "activation_backward",
            Op::ScaleColumns { .. } => "scale_columns",
            Op::ColumnDot { .. } => "column_dot",
            Op::Residual { .. } => "residual",
            Op::SoftmaxCrossEntropyForward { .. } => "softmax_crossentropy_forward",
            Op::CrossEntropyBackward { .. } => "crossentropy_backward",
            Op::AdamW { .. } => "adamw",
            Op::Argmax { .. } => "argmax",
            Op::Fill { .. } => "fill",
            Op::CopyStrided { .. } => "copy_strided",
            Op::SmiDirections { .. } => "smi_directions",
            Op::SmiProject { .. } => "smi_project",
            Op::SmiClassStats { .. } => "smi_class_stats",
            Op::SmiScore { .. } => "smi_score",
            Op::SmiRowSummary { .. } => "smi_row_summary",
            Op::GatherRows { .. } => "gather_rows",
            Op::AttentionRowForward { .. } => "attention_row_forward",
            Op::AttentionRowBackward { .. } => "attention_row_backward",
            Op::TargetProbBackward { .. } => "target_prob_backward",
            Op::IgReduce { .. } => "ig_reduce",
            Op::SmiKsg { .. } => "smi_ksg",
            Op::SelectRank { .. } => "select_rank",
            Op::MaskApply { .. } => "mask_apply",
            Op::MaskedMatmulForward { .. } => "masked_matmul_forward",
            Op::MaskedMatmulBackward { .. } => "masked_matmul_backward",
            Op::SgdMomentum { .. } => "sgd_momentum",
            Op::SouScores { .. } => "sou_scores",
            Op::AttentionStats { .. } => "attention_stats",
            Op::SpectralPowerIteration { .. } => "spectral_power_iteration",
            Op::SpectralGradAdd { .. } => "spectral_grad_add",
            Op::ExampleTiedDropout { .. } => "example_tied_dropout",
        }
    }

    /// Analytic FLOPs and bytes moved (fp32, each operand read or written once).
    pub fn cost(&self) -> OpCost {
        let f = |flops: usize, words: usize| OpCost { flops: flops as f64, bytes: 4.0 * words as f64 };
        match *self {
            Op::EncoderForward { b, t, c, .. } => f(b * t * c, 3 * b * t * c + b * t),
            Op::EncoderBackward { b, t, c, .. } => f(2 * b * t * c, 3 * b * t * c + b * t),
            Op::LayerNormForward { n, c, .. } => f(8 * n * c, 2 * n * c + 2 * n + 2 * c),
            Op::LayerNormBackward { n, c, .. } => f(14 * n * c, 4 * n * c + 2 * n + 3 * c),
            Op::MatmulForward { n, c, oc, bias, .. } => {
                f(2 * n * c * oc + bias.map_or(0, |_| n * oc), n * c + c * oc + n * oc)
            }
            Op::MatmulBackward { dinp, dweight, dbias, n, c, oc, .. } => {
                let mut fl = 0;
                let mut w = n * oc;
                if dinp.is_some() {
                    fl += 2 * n * c * oc;
                    w += n * c + c * oc;
                }
                if dweight.is_some() {
                    fl += 2 * n * c * oc;
                    w += n * c + 2 * c * oc;
                }
                if dbias.is_some() {
                    fl += n * oc;
                    w += 2 * oc;
                }
                f(fl, w)
            }
            // Causal: about t²/2 score entries per head, each a dot product and a weighted sum of width hs.
            Op::AttentionForward { b, t, c, nh, .. } => {
                let pairs = b * nh * t * (t + 1) / 2;
                f(4 * pairs * (c / nh) + 5 * pairs, 3 * b * t * c + b * t * c + pairs)
            }
            Op::AttentionBackward { b, t, c, nh, .. } => {
                let pairs = b * nh * t * (t + 1) / 2;
                f(8 * pairs * (c / nh) + 5 * pairs, 3 * b * t * c * 2 + b * t * c + pairs)
            }
            Op::KvCacheWrite { b, t, c, .. } => f(0, 4 * b * t * c),
            Op::AttentionDecode { b, pos, c, nh, .. } => {
                let pairs = b * nh * (pos + 1);
                f(4 * pairs * (c / nh) + 5 * pairs, b * (pos + 1) * 2 * c + 2 * b * c)
            }
            Op::ActivationForward { n, .. } => f(n * 8, 2 * n),
            Op::ActivationBackward { n, .. } => f(n * 12, 3 * n),
            Op::ScaleColumns { n, w, .. } => f(n * w, 2 * n * w + w),
            Op::ColumnDot { n, w, .. } => f(2 * n * w, 2 * n * w + w),
            Op::Residual { n, .. } => f(n, 3 * n),
            Op::SoftmaxCrossEntropyForward { n, v, .. } => f(5 * n * v, 2 * n * v + 2 * n),
            Op::CrossEntropyBackward { n, v, .. } => f(2 * n * v, 2 * n * v + n),
            Op::AdamW { params, .. } => f(params.len * 14, params.len * 7),
            Op::Argmax { n, v, .. } => f(n * v, n * v + n),
            Op::Fill { dst, .. } => f(0, dst.len),
            Op::CopyStrided { batches, rows, cols, .. } => f(0, 2 * batches * rows * cols),
            // Box–Muller (≈ 40 flops with Philox) per coordinate, plus the norm.
            Op::SmiDirections { k, d, .. } => f(43 * k * d, k * d),
            Op::SmiProject { n, d, k, .. } => f(2 * n * d * k, n * d + k * d + n * k),
            Op::SmiClassStats { n, k, classes, .. } => {
                let parts = n.div_ceil(crate::smi::psmi::STATS_ROWS);
                f(4 * n * k, n * k + n + 8 * parts * classes * k)
            }
            Op::SmiScore { n, k, classes, .. } => f(n * k * (8 * classes + 20), 2 * n * k + n + 6 * k * classes),
            // Two passes for mean and std, about eight for the quantile selections.
            Op::SmiRowSummary { n, k, .. } => f(12 * n * k, n * k + k + 8 * n),
            Op::GatherRows { n, w, .. } => f(n * w, 2 * n * w + 2 * n),
            // Up to t_ctx context positions per row and head (half on average over a sequence's positions).
            Op::AttentionRowForward { n, t_ctx, c, nh, .. } => {
                let pairs = n * nh * t_ctx.div_ceil(2);
                f(4 * pairs * (c / nh) + 5 * pairs, 4 * n * c + pairs * 2 * (c / nh) + pairs)
            }
            Op::AttentionRowBackward { n, t_ctx, c, nh, .. } => {
                let pairs = n * nh * t_ctx.div_ceil(2);
                f(8 * pairs * (c / nh) + 5 * pairs, 7 * n * c + pairs * 2 * (c / nh) + pairs)
            }
            Op::TargetProbBackward { n, v, .. } => f(2 * n * v, 2 * n * v + n),
            Op::IgReduce { n, m, w, .. } => f(n * w + 2 * (n / m.max(1)) * w, n * w + 2 * (n / m.max(1)) * w),
            // A radix sort of about ten passes (each reading and writing key and class), then per
            // sample a k-step neighbour walk and two binary searches (≈ 2·log2 n probes).
            Op::SmiKsg { n, k, neighbors, .. } => {
                let probes = 2 * (usize::BITS - n.leading_zeros()) as usize + 2 * neighbors;
                f(n * k * (20 + 4 * probes), n * k * (1 + 40 + probes) + 2 * k)
            }
            // Eight histogram passes over the 64-bit keys (GPUs; the cpu selects in about one).
            Op::SelectRank { n, y, .. } => f(8 * 4 * n, 8 * n * (1 + y.is_some() as usize)),
            Op::MaskApply { n, y, .. } => f(4 * n, n * (3 + y.is_some() as usize)),
            Op::MaskedMatmulForward { n, c, oc, bias, .. } => {
                f(2 * n * c * oc + 3 * c * oc + bias.map_or(0, |_| n * oc), n * c + 2 * c * oc + n * oc)
            }
            Op::MaskedMatmulBackward { dinp, dscores, n, c, oc, .. } => {
                let mut fl = 0;
                let mut w = n * oc;
                if dinp.is_some() {
                    fl += 2 * n * c * oc + 3 * c * oc;
                    w += n * c + 2 * c * oc;
                }
                if dscores.is_some() {
                    fl += 2 * n * c * oc + 3 * c * oc;
                    w += n * c + 4 * c * oc;
                }
                f(fl, w)
            }
            Op::SgdMomentum { params, .. } => f(5 * params.len, 5 * params.len),
            Op::SouScores { n, .. } => f(8 * n, 3 * n),
            // Per (row, head): the score dot products of every causal (query, key) pair with the online
            // update (≈ 10 flops with its exp) and a top-k insertion; q of each query and k of each key
            // read once, four words out per query.
            Op::AttentionStats { b, c, nh, t0, t1, top_k, .. } => {
                let pairs = b * nh * (t1 * (t1 + 1) - t0 * (t0 + 1)) / 2;
                let queries = b * nh * (t1 - t0);
                f(pairs * (2 * (c / nh) + 10 + top_k), b * (t1 - t0) * c + b * t1 * c + ATTENTION_STATS * queries)
            }
            // Wᵀu and W v read the block twice; norms and σ are O(rows + cols).
            Op::SpectralPowerIteration { blocks, entries, .. } => f(4 * entries, 2 * entries + 8 * blocks),
            Op::SpectralGradAdd { entries, .. } => f(2 * entries, 2 * entries),
            // Philox (≈ 40 flops) per channel or position and row, then one multiply per entry.
            Op::ExampleTiedDropout { n, c, .. } => f(n * c + 40 * n, 2 * n * c),
        }
    }
}

/// Work and traffic a backend has done since it was created (the profiler shows them per step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Kernel launches (an op may be several).
    pub dispatches: u64,
    /// Command submissions to the device queue.
    pub submits: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            dispatches: self.dispatches - o.dispatches,
            submits: self.submits - o.submits,
            bytes_up: self.bytes_up - o.bytes_up,
            bytes_down: self.bytes_down - o.bytes_down,
        }
    }
}

/// A compute backend: buffer management plus one `run` per op.
pub trait Backend: Send + Sync + 'static {
    type Buffer: Send + Sync;

    fn name(&self) -> &'static str;
    /// A zero-filled buffer of `len` words. Fails cleanly when the device cannot hold it.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    fn buffer_len(&self, buf: &Self::Buffer) -> usize;
    fn upload_f32(&self, dst: View<'_, Self::Buffer>, src: &[f32]);
    fn upload_u32(&self, dst: View<'_, Self::Buffer>, src: &[u32]);
    fn download_f32(&self, src: View<'_, Self::Buffer>, dst: &mut [f32]);
    fn download_u32(&self, src: View<'_, Self::Buffer>, dst: &mut [u32]);
    /// Execute one op (asynchronously where the device allows; downloads synchronize).
    fn run(&self, op: &Op<'_, Self::Buffer>);
    /// Wait for queued work (profiling boundaries).
    fn synchronize(&self) {}
    /// Run a whole sequence of ops (a step, a generation) in the backend's own context. The cpu
    /// backend runs it on its rayon pool, so each op's parallel loop starts from a worker thread
    /// instead of handing off from the caller's (tens of µs per op, which dominate decode steps).
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }
    /// Run `n` independent op sequences (a generation's decode sub-batches, each on its own
    /// buffers) and collect their results in order. Devices run them one after the other on their
    /// queue; the cpu backend runs one per worker thread at once, each op inside single-threaded, so
    /// a decode step's dozens of small ops pay no fork/join.
    fn lanes<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        (0..n).map(f).collect()
    }
    /// Words of d(att) working space `AttentionBackward` wants (the cpu backend keeps it per task).
    fn attention_scratch_len(&self, b: usize, t: usize, nh: usize) -> usize {
        b * nh * t * t
    }
    /// Words of working space `SmiKsg` wants (the cpu backend sorts in its own per-task buffers).
    fn smi_ksg_scratch_len(&self, n: usize, k: usize, classes: usize) -> usize {
        ksg_scratch_words(n, k, classes)
    }
    /// Most prompts a KV-cached generation should decode together, given the cache words each one
    /// streams per decode step (every step reads all of them). Devices take whatever the caller asks;
    /// the cpu backend caps it so one sub-batch's cache stays in its caches.
    fn decode_batch(&self, _kv_words_per_row: usize) -> usize {
        usize::MAX
    }
    /// Words of the largest view an op may take (a storage-binding limit on GPU backends).
    fn max_view_len(&self) -> usize {
        usize::MAX
    }
    /// Dispatches and host↔device traffic so far (zero where there is no device boundary).
    fn counters(&self) -> Counters {
        Counters::default()
    }
    /// How `run_timed` measures an op (the profiler labels its figures with it).
    fn timing(&self) -> profile::Timing {
        profile::Timing::Wall
    }
    /// Run one op for the profiler and return its device-measured duration where the device can
    /// measure it (GPU timestamps, CUDA events); None: the caller's synchronized wall time stands.
    fn run_timed(&self, op: &Op<'_, Self::Buffer>) -> Option<std::time::Duration> {
        self.run(op);
        None
    }
    /// Peak compute and bandwidth of the device behind this backend, where they can be derived or
    /// measured (the profiler's fraction of peak).
    fn peaks(&self) -> Option<crate::machine::Peaks> {
        None
    }
}

/// The single dispatch point: wraps a backend and records every op call for the profiler.
pub struct Device<B: Backend> {
    pub backend: B,
    pub profile: profile::Profiler,
}

impl<B: Backend> Device<B> {
    pub fn new(backend: B) -> Self {
        Device { backend, profile: profile::Profiler::default() }
    }

    #[inline]
    pub fn exec(&self, op: Op<'_, B::Buffer>) {
        if self.profile.is_enabled() {
            self.backend.synchronize();
            let t0 = std::time::Instant::now();
            let device_time = self.backend.run_timed(&op);
            self.backend.synchronize();
            let time = device_time.unwrap_or_else(|| t0.elapsed());
            self.profile.record(op.name(), op.cost(), t0, time, device_time.is_some());
        } else {
            self.profile.count(op.name());
            self.backend.run(&op);
        }
    }

    /// The profiler's per-kernel table, labelled with this backend's timing and peaks.
    pub fn profile_table(&self) -> String {
        self.profile.table(self.backend.name(), self.backend.timing(), self.backend.peaks().as_ref())
    }

    /// Write the profiler's trace (Chrome/Perfetto Trace Event Format) atomically.
    pub fn write_trace(&self, path: &std::path::Path) -> Result<()> {
        self.profile.write_trace(path, self.backend.name(), self.backend.timing())
    }

    pub fn alloc(&self, len: usize) -> Result<B::Buffer> {
        self.backend.alloc(len)
    }

    pub fn view<'a>(&self, buf: &'a B::Buffer) -> View<'a, B::Buffer> {
        View::new(buf, 0, self.backend.buffer_len(buf))
    }

    pub fn upload_f32(&self, dst: View<'_, B::Buffer>, src: &[f32]) {
        assert_eq!(dst.len, src.len(), "upload length mismatch");
        self.backend.upload_f32(dst, src)
    }
    pub fn upload_u32(&self, dst: View<'_, B::Buffer>, src: &[u32]) {
        assert_eq!(dst.len, src.len(), "upload length mismatch");
        self.backend.upload_u32(dst, src)
    }
    pub fn download_f32(&self, src: View<'_, B::Buffer>) -> Vec<f32> {
        let mut out = vec![0f32; src.len];
        self.backend.download_f32(src, &mut out);
        out
    }
    pub fn download_u32(&self, src: View<'_, B::Buffer>) -> Vec<u32> {
        let mut out = vec![0u32; src.len];
        self.backend.download_u32(src, &mut out);
        out
    }
}

/// `--backend` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// A real GPU if one exists, else cpu.
    Auto,
    Cpu,
    Wgpu,
    /// NVIDIA GPU through the CUDA driver (kernels compiled by NVRTC at load time).
    Cuda,
    /// The cuda backend's kernels and host code on a CPU emulation of CUDA: slow, for tests and debugging.
    CudaEmu,
}

/// Resolve a choice to a backend that exists on this machine, or explain why not. `auto` prefers an
/// NVIDIA GPU (cuda), then a real (non-CPU) wgpu adapter; lavapipe and other software adapters do not count.
pub fn resolve(choice: BackendChoice) -> Result<BackendChoice> {
    match choice {
        BackendChoice::Cpu | BackendChoice::Wgpu => Ok(choice),
        // A real NVIDIA GPU with NVRTC first (the cuda backend), then any other real GPU (wgpu).
        BackendChoice::Auto => {
            if cuda::gpu_available().is_ok() && cuda::nvrtc::available() {
                Ok(BackendChoice::Cuda)
            } else if wgpu::adapters().iter().any(|a| a.is_real_gpu()) {
                Ok(BackendChoice::Wgpu)
            } else {
                Ok(BackendChoice::Cpu)
            }
        }
        BackendChoice::Cuda => match cuda::gpu_available() {
            Ok(()) if cuda::nvrtc::available() => Ok(BackendChoice::Cuda),
            Ok(()) => Err(Error::Backend(
                "--backend cuda needs libnvrtc to compile its kernels: pip install nvidia-cuda-nvrtc-cu12 and add \
                 its lib directory to LD_LIBRARY_PATH"
                    .into(),
            )),
            Err(why) => Err(Error::Backend(format!("--backend cuda: no usable NVIDIA GPU here ({why}); use --backend cpu"))),
        },
        BackendChoice::CudaEmu => {
            if cuda::emu::built() {
                Ok(BackendChoice::CudaEmu)
            } else {
                Err(Error::Backend("--backend cuda-emu: the CUDA emulator was not built (no C++ compiler at build time)".into()))
            }
        }
    }
}

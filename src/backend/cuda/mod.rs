//! The cuda backend: hand-written CUDA C in `kernels/*.cu`, one file per op family beside the cpu
//! backend's files. The host code here — buffer handling, launch configurations, argument order — is
//! written once over [`Launcher`], which has two implementations:
//! - [`driver::DriverLauncher`]: a real GPU through cudarc (NVRTC → CUBIN at load time, one stream);
//! - [`emu::EmuLauncher`]: the same .cu files compiled as C++ and run by a CPU emulation of the CUDA
//!   execution model (`--backend cuda-emu`), which is how every kernel executes in CI without a GPU.

pub mod driver;
pub mod emu;
pub mod kernels;
pub mod nvrtc;

use super::{Backend, Counters, Op, View, WeightLayout};
use crate::error::Result;
use crate::model::config::Activation;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Grid or block dimensions (x, y, z).
pub type Dim = [u32; 3];

/// What the host code needs from a device: memory, copies and kernel launches on one stream.
pub trait Launcher: Send + Sync + 'static {
    /// One device allocation of 4-byte words.
    type Mem: Send + Sync;
    /// Backend name as `--backend` spells it.
    const NAME: &'static str;
    fn describe(&self) -> String;
    /// Zero-filled.
    fn alloc(&self, words: usize) -> Result<Self::Mem>;
    /// The device address of word `word_offset` (a kernel pointer argument).
    fn address(&self, mem: &Self::Mem, word_offset: usize) -> u64;
    fn upload(&self, dst: &Self::Mem, word_offset: usize, src: &[u32]);
    /// Waits for queued kernels, then copies.
    fn download(&self, src: &Self::Mem, word_offset: usize, dst: &mut [u32]);
    /// Queue one kernel; `params` are cuLaunchKernel's kernelParams (pointers to the argument values).
    fn launch(&self, kernel: &'static str, grid: Dim, block: Dim, shared_bytes: u32, params: &mut [*mut c_void]);
    fn synchronize(&self);
    /// How `timed` measures (the profiler's label).
    const TIMING: crate::backend::profile::Timing;
    /// Run `f` (which queues launches) and return the device time it took, where the launcher can
    /// measure one (CUDA events); None leaves the host's wall time.
    fn timed(&self, f: &mut dyn FnMut()) -> Option<std::time::Duration> {
        f();
        None
    }
    /// Peak FP32 compute and memory bandwidth from the device's properties.
    fn peaks(&self) -> Option<crate::machine::Peaks> {
        None
    }
}

/// A buffer of the cuda backend: the allocation and its length in words.
pub struct CudaBuffer<M> {
    mem: M,
    len: usize,
}

/// The cuda backend over a launcher (real driver or emulator).
pub struct CudaBackend<L: Launcher> {
    launcher: L,
    /// Partial sums of the split reductions, grown on demand. The lock is held while an op enqueues
    /// the kernels that use it, so ops from several host threads never share it at once.
    scratch: Mutex<Option<CudaBuffer<L::Mem>>>,
    launches: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The real GPU.
pub type CudaDriverBackend = CudaBackend<driver::DriverLauncher>;
/// The CPU emulation of the same kernels and host code.
pub type CudaEmuBackend = CudaBackend<emu::EmuLauncher>;

impl CudaBackend<driver::DriverLauncher> {
    /// GPU `ordinal`; a clear error when there is no driver, no device or no NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(Self::over(driver::DriverLauncher::new(ordinal)?))
    }
}

impl CudaBackend<emu::EmuLauncher> {
    pub fn emulator() -> Result<Self> {
        Ok(Self::over(emu::EmuLauncher::new()?))
    }
}

/// One kernel argument, stored the way cuLaunchKernel reads it (little-endian, in an 8-byte slot).
#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    U32(u32),
    F32(f32),
}

const THREADS: u32 = 256;

// Split reductions. Parameter gradients reduce over all B·T rows into a small output, which one pass
// would leave to a handful of blocks; instead the rows are split, each split writes partial sums, and
// a second kernel adds them in split order. The split depends on the shape alone (deterministic).
/// Rows per split of a column reduction (d(bias), LayerNorm d(weight), d(bias)).
const COLUMN_ROWS_PER_SPLIT: usize = 256;
/// Reduction rows per split of d(W) (a multiple of the GEMM's k tile).
const DW_ROWS_PER_SPLIT: usize = 512;
const MAX_SPLITS: usize = 64;
/// Partial sums larger than this (words) fall back to one pass.
const MAX_PARTIAL_WORDS: usize = 4 << 20;

/// (splits, rows per split) for reducing `rows` rows in chunks of about `per` (rounded up to `align`).
fn splits_for(rows: usize, per: usize, align: usize) -> (usize, usize) {
    let splits = rows.div_ceil(per).clamp(1, MAX_SPLITS);
    (splits, rows.div_ceil(splits).next_multiple_of(align))
}

/// `x` as a kernel `int`; shapes beyond 2³¹ words are refused loudly rather than wrapped.
fn int(x: usize) -> Arg {
    Arg::I32(i32::try_from(x).unwrap_or_else(|_| panic!("cuda backend: size {x} exceeds the kernels' 32-bit range")))
}

fn blocks(n: usize, per: u32) -> u32 {
    u32::try_from(n.div_ceil(per as usize)).expect("grid fits in 32 bits")
}

/// Threads for a one-block-per-row reduction over `width` entries: whole warps, at most `max`.
fn row_threads(width: usize, max: u32) -> u32 {
    (width.next_multiple_of(32) as u32).clamp(32, max)
}

/// Threads of the one-block-per-row SMI kernels (kernels/smi.cu's SMI_THREADS).
const SMI_THREADS: u32 = 256;

/// Threads of the spectral kernels and of example-tied dropout (kernels/regularize.cu).
const REG_THREADS: u32 = 256;
const ETD_THREADS: u32 = 128;

/// Threads of the one-block rank selection (kernels/mask.cu's SELECT_THREADS).
const SELECT_THREADS: u32 = 1024;

/// Threads of attention_stats (kernels/attnstats.cu's STATS_THREADS): one query row per block.
const STATS_THREADS: u32 = 64;

/// Threads per attention block (one query or key row each).
const ATTENTION_THREADS: u32 = 64;

/// Dynamic shared memory of attention_forward / attention_backward_query: the query row, the t
/// scores, and a tile of ATTENTION_THREADS key rows padded to hs + 1.
fn attention_shared_bytes(t: usize, hs: usize) -> usize {
    let bytes = 4 * (hs + t + ATTENTION_THREADS as usize * (hs + 1));
    // 48 KiB is what every CUDA device gives without an opt-in.
    assert!(bytes <= 48 << 10, "attention with t = {t}, head size {hs} needs {bytes} bytes of shared memory (> 48 KiB)");
    bytes
}

/// Dynamic shared memory of the row-attention kernels: the row's t_ctx scores.
fn row_shared_bytes(t_ctx: usize) -> usize {
    let bytes = 4 * t_ctx;
    assert!(t_ctx > 0, "row attention needs a context of at least one position");
    assert!(bytes <= 48 << 10, "row attention over a {t_ctx}-position context needs {bytes} bytes of shared memory (> 48 KiB)");
    bytes
}

/// 1/√hs, as the cpu backend rounds it.
fn head_scale(c: usize, nh: usize) -> f32 {
    1.0 / ((c / nh) as f32).sqrt()
}

fn act_code(act: Activation) -> Arg {
    Arg::I32(match act {
        Activation::Relu => 0,
        Activation::Gelu => 1,
        Activation::GeluNew => 2,
    })
}

impl<L: Launcher> CudaBackend<L> {
    fn over(launcher: L) -> Self {
        CudaBackend {
            launcher,
            scratch: Mutex::new(None),
            launches: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        }
    }

    pub fn describe(&self) -> String {
        self.launcher.describe()
    }

    fn ptr(&self, v: View<'_, CudaBuffer<L::Mem>>) -> Arg {
        assert!(v.off + v.len <= v.buf.len, "view {}+{} beyond buffer of {}", v.off, v.len, v.buf.len);
        Arg::Ptr(self.launcher.address(&v.buf.mem, v.off))
    }

    fn opt_ptr(&self, v: Option<View<'_, CudaBuffer<L::Mem>>>) -> Arg {
        v.map_or(Arg::Ptr(0), |v| self.ptr(v))
    }

    fn launch(&self, kernel: &'static str, grid: Dim, block: Dim, shared_bytes: usize, args: &[Arg]) {
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) => p,
                Arg::I32(x) => x as u32 as u64,
                Arg::I64(x) => x as u64,
                Arg::U32(x) => x as u64,
                Arg::F32(x) => x.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        let shared = u32::try_from(shared_bytes).expect("shared memory size fits in 32 bits");
        self.launches.fetch_add(1, Ordering::Relaxed);
        self.launcher.launch(kernel, grid, block, shared, &mut params);
    }

    /// Run `f` with the address of at least `words` words of scratch (held exclusively meanwhile).
    fn with_scratch<R>(&self, words: usize, f: impl FnOnce(Arg) -> R) -> R {
        let mut slot = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|b| b.len < words) {
            let grown = words.max(slot.as_ref().map_or(0, |b| 2 * b.len));
            *slot = None; // free the old one first
            let buf = self.alloc(grown).unwrap_or_else(|e| panic!("cuda backend: scratch for a split reduction: {e}"));
            *slot = Some(buf);
        }
        let addr = self.launcher.address(&slot.as_ref().expect("allocated above").mem, 0);
        f(Arg::Ptr(addr))
    }

    /// dst[i] += Σ_s partials[s·stride + i] for i < count, s in order.
    fn split_reduce(&self, dst: Arg, partials: Arg, splits: usize, count: usize, stride: usize) {
        let args = [dst, partials, int(splits), int(count), Arg::I64(stride as i64)];
        self.launch_1d("split_reduce_accumulate", count, &args);
    }

    /// A 1-D launch of `n` threads in blocks of 256.
    fn launch_1d(&self, kernel: &'static str, n: usize, args: &[Arg]) {
        if n > 0 {
            self.launch(kernel, [blocks(n, THREADS), 1, 1], [THREADS, 1, 1], 0, args);
        }
    }

    /// One launch of matmul_tiled: out (+ z·m·n for split z of `splits`) (= or +=) a·b over rows
    /// [z·k_split, …) of k, B under `mask` (scores, cut) or NO_MASK.
    #[allow(clippy::too_many_arguments)]
    fn tiled(
        &self, out: Arg, a: Arg, a_strides: (usize, usize), b: Arg, b_strides: (usize, usize), bias: Arg, mask: [Arg; 2],
        m: usize, n: usize, k: usize, accumulate: bool, splits: usize, k_split: usize,
    ) {
        let args = [
            out, a, b, bias, int(m), int(n), int(k), int(a_strides.0), int(a_strides.1), int(b_strides.0), int(b_strides.1),
            Arg::I32(accumulate as i32), int(k_split), mask[0], mask[1],
        ];
        let grid = [blocks(n, 64), blocks(m, 64), u32::try_from(splits).expect("split count")];
        self.launch("matmul_tiled", grid, [THREADS, 1, 1], 0, &args);
    }

    /// (splits, rows per split) of a d(W)-shaped reduction over k rows into m·n outputs: one split
    /// when the partials would be too large.
    fn dw_splits(m: usize, n: usize, k: usize) -> (usize, usize) {
        let (splits, k_split) = splits_for(k, DW_ROWS_PER_SPLIT, 16);
        if splits * m * n <= MAX_PARTIAL_WORDS { (splits, k_split) } else { (1, k.max(1)) }
    }

    /// out[m, n] (= or +=) a[m, k]·b[k, n] (+ bias), operands by (row, column) strides, B under `mask`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self, out: Arg, a: Arg, a_strides: (usize, usize), b: Arg, b_strides: (usize, usize), bias: Arg, mask: [Arg; 2],
        m: usize, n: usize, k: usize, accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let (splits, k_split) = Self::dw_splits(m, n, k);
        // Only d(W) (accumulating, no bias) has the long-K, small-output shape worth splitting.
        if accumulate && splits > 1 {
            self.with_scratch(splits * m * n, |partials| {
                self.tiled(partials, a, a_strides, b, b_strides, bias, mask, m, n, k, false, splits, k_split);
                self.split_reduce(out, partials, splits, m * n, m * n);
            });
        } else {
            self.tiled(out, a, a_strides, b, b_strides, bias, mask, m, n, k, accumulate, 1, k.max(1));
        }
    }
}

/// No Subnet mask on a GEMM's B operand.
const NO_MASK: [Arg; 2] = [Arg::Ptr(0), Arg::Ptr(0)];

/// (row stride, column stride) of W read as a [c, oc] matrix.
fn w_strides(layout: WeightLayout, c: usize, oc: usize) -> (usize, usize) {
    match layout {
        WeightLayout::InOut => (oc, 1),
        WeightLayout::OutIn => (1, c),
    }
}

impl<L: Launcher> Backend for CudaBackend<L> {
    type Buffer = CudaBuffer<L::Mem>;

    fn name(&self) -> &'static str {
        L::NAME
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer> {
        Ok(CudaBuffer { mem: self.launcher.alloc(len)?, len })
    }

    fn buffer_len(&self, buf: &Self::Buffer) -> usize {
        buf.len
    }

    fn upload_f32(&self, dst: View<'_, Self::Buffer>, src: &[f32]) {
        self.upload_u32(dst, bytemuck::cast_slice(src))
    }

    fn upload_u32(&self, dst: View<'_, Self::Buffer>, src: &[u32]) {
        assert!(dst.off + src.len() <= dst.buf.len, "upload beyond the buffer");
        self.bytes_up.fetch_add(4 * src.len() as u64, Ordering::Relaxed);
        self.launcher.upload(&dst.buf.mem, dst.off, src)
    }

    fn download_f32(&self, src: View<'_, Self::Buffer>, dst: &mut [f32]) {
        self.download_u32(src, bytemuck::cast_slice_mut(dst))
    }

    fn download_u32(&self, src: View<'_, Self::Buffer>, dst: &mut [u32]) {
        assert!(src.off + dst.len() <= src.buf.len, "download beyond the buffer");
        self.bytes_down.fetch_add(4 * dst.len() as u64, Ordering::Relaxed);
        self.launcher.download(&src.buf.mem, src.off, dst)
    }

    fn synchronize(&self) {
        self.launcher.synchronize()
    }

    fn timing(&self) -> crate::backend::profile::Timing {
        L::TIMING
    }

    fn run_timed(&self, op: &Op<'_, Self::Buffer>) -> Option<std::time::Duration> {
        self.launcher.timed(&mut || self.run(op))
    }

    fn peaks(&self) -> Option<crate::machine::Peaks> {
        self.launcher.peaks()
    }

    fn counters(&self) -> Counters {
        let launches = self.launches.load(Ordering::Relaxed);
        Counters {
            dispatches: launches,
            // Every launch goes straight into the stream.
            submits: launches,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }

    fn run(&self, op: &Op<'_, Self::Buffer>) {
        match *op {
            Op::EncoderForward { out, tokens, wte, wpe, b, t, c, pos0 } => {
                let args = [self.ptr(out), self.ptr(tokens), self.ptr(wte), self.ptr(wpe), int(b * t), int(t), int(c), int(pos0)];
                self.launch_1d("encoder_forward", b * t * c, &args);
            }
            Op::EncoderBackward { dwte, dwpe, dout, tokens, b, t, c, pos0 } => {
                if b * t * c == 0 {
                    return;
                }
                let vocab = dwte.len / c;
                if vocab > 0 {
                    let args = [self.ptr(dwte), self.ptr(dout), self.ptr(tokens), int(b * t), int(c)];
                    self.launch("encoder_backward_wte", [blocks(vocab, 1), 1, 1], [row_threads(c, 256), 1, 1], 0, &args);
                }
                let args = [self.ptr(dwpe), self.ptr(dout), int(b), int(t), int(c), int(pos0)];
                self.launch_1d("encoder_backward_wpe", t * c, &args);
            }
            Op::LayerNormForward { out, mean, rstd, inp, weight, bias, n, c, eps } => {
                if n == 0 {
                    return;
                }
                let args = [
                    self.ptr(out), self.ptr(mean), self.ptr(rstd), self.ptr(inp), self.ptr(weight), self.ptr(bias),
                    int(n), int(c), Arg::F32(eps),
                ];
                // One warp per row, four rows per block.
                self.launch("layernorm_forward", [blocks(n, 4), 1, 1], [128, 1, 1], 0, &args);
            }
            Op::LayerNormBackward { dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c } => {
                if n == 0 || c == 0 {
                    return;
                }
                let args = [
                    self.ptr(dinp), self.ptr(dout), self.ptr(inp), self.ptr(weight), self.ptr(mean), self.ptr(rstd),
                    int(n), int(c),
                ];
                self.launch("layernorm_backward_input", [blocks(n, 4), 1, 1], [128, 1, 1], 0, &args);
                let (splits, rows_split) = splits_for(n, COLUMN_ROWS_PER_SPLIT, 8);
                let inputs = [self.ptr(dout), self.ptr(inp), self.ptr(mean), self.ptr(rstd), int(n), int(c), int(rows_split)];
                let grid = [blocks(c, 32), splits as u32, 1];
                let launch = |out_w: Arg, out_b: Arg, stride: usize, accumulate: bool| {
                    let mut args = vec![out_w, out_b];
                    args.extend(inputs);
                    args.extend([int(stride), Arg::I32(accumulate as i32)]);
                    self.launch("layernorm_backward_params", grid, [THREADS, 1, 1], 0, &args);
                };
                if splits == 1 {
                    launch(self.ptr(dweight), self.ptr(dbias), 0, true);
                } else {
                    // Partials per split: [dweight (c) | dbias (c)].
                    self.with_scratch(splits * 2 * c, |partials| {
                        let Arg::Ptr(base) = partials else { unreachable!() };
                        let partials_b = Arg::Ptr(base + 4 * c as u64);
                        launch(partials, partials_b, 2 * c, false);
                        self.split_reduce(self.ptr(dweight), partials, splits, c, 2 * c);
                        self.split_reduce(self.ptr(dbias), partials_b, splits, c, 2 * c);
                    });
                }
            }
            Op::MatmulForward { out, inp, weight, bias, n, c, oc, layout } => {
                let bias = self.opt_ptr(bias);
                self.gemm(self.ptr(out), self.ptr(inp), (c, 1), self.ptr(weight), w_strides(layout, c, oc), bias, NO_MASK, n, oc, c, false);
            }
            Op::MatmulBackward { dinp, dweight, dbias, dout, inp, weight, n, c, oc, layout } => {
                if n == 0 {
                    return;
                }
                if let Some(dinp) = dinp {
                    // dinp[n, c] = dout[n, oc]·Wᵀ: Wᵀ as [oc, c] swaps W's strides.
                    let (rs, cs) = w_strides(layout, c, oc);
                    self.gemm(self.ptr(dinp), self.ptr(dout), (oc, 1), self.ptr(weight), (cs, rs), Arg::Ptr(0), NO_MASK, n, c, oc, false);
                }
                if let Some(dweight) = dweight {
                    match layout {
                        // dW[c, oc] += inpᵀ·dout
                        WeightLayout::InOut => self.gemm(
                            self.ptr(dweight), self.ptr(inp), (1, c), self.ptr(dout), (oc, 1), Arg::Ptr(0), NO_MASK, c, oc, n, true,
                        ),
                        // dW[oc, c] += doutᵀ·inp
                        WeightLayout::OutIn => self.gemm(
                            self.ptr(dweight), self.ptr(dout), (1, oc), self.ptr(inp), (c, 1), Arg::Ptr(0), NO_MASK, oc, c, n, true,
                        ),
                    }
                }
                if let Some(dbias) = dbias {
                    if oc > 0 {
                        let (splits, rows_split) = splits_for(n, COLUMN_ROWS_PER_SPLIT, 8);
                        let grid = [blocks(oc, 32), splits as u32, 1];
                        let args = |out: Arg, stride: usize, accumulate: bool| {
                            [out, self.ptr(dout), int(n), int(oc), int(rows_split), int(stride), Arg::I32(accumulate as i32)]
                        };
                        if splits == 1 {
                            self.launch("matmul_backward_bias", grid, [THREADS, 1, 1], 0, &args(self.ptr(dbias), 0, true));
                        } else {
                            self.with_scratch(splits * oc, |partials| {
                                self.launch("matmul_backward_bias", grid, [THREADS, 1, 1], 0, &args(partials, oc, false));
                                self.split_reduce(self.ptr(dbias), partials, splits, oc, oc);
                            });
                        }
                    }
                }
            }
            Op::AttentionForward { out, att, qkv, b, t, c, nh } => {
                if b * t * nh == 0 {
                    return;
                }
                let args = [self.ptr(out), self.ptr(att), self.ptr(qkv), int(t), int(c), int(nh)];
                let shared = attention_shared_bytes(t, c / nh);
                self.launch("attention_forward", [t as u32, (b * nh) as u32, 1], [ATTENTION_THREADS, 1, 1], shared, &args);
            }
            Op::AttentionBackward { dqkv, scratch, dout, qkv, att, b, t, c, nh } => {
                if b * t * nh == 0 {
                    return;
                }
                assert!(scratch.len >= b * nh * t * t, "attention scratch holds {} words, needs {}", scratch.len, b * nh * t * t);
                let grid = [t as u32, (b * nh) as u32, 1];
                let args = [self.ptr(dqkv), self.ptr(scratch), self.ptr(dout), self.ptr(qkv), self.ptr(att), int(t), int(c), int(nh)];
                let block = [ATTENTION_THREADS, 1, 1];
                self.launch("attention_backward_query", grid, block, attention_shared_bytes(t, c / nh), &args);
                self.launch("attention_backward_key_value", grid, block, 4 * 2 * t, &args);
            }
            Op::KvCacheWrite { cache, qkv, b, t, pos0, t_max, c, nh } => {
                assert!(pos0 + t <= t_max, "kv cache write past t_max");
                let args = [self.ptr(cache), self.ptr(qkv), int(b), int(t), int(pos0), int(t_max), int(c), int(nh)];
                self.launch_1d("kv_cache_write", b * t * c, &args);
            }
            Op::AttentionDecode { out, qkv, cache, b, pos, t_max, c, nh } => {
                if b * nh == 0 {
                    return;
                }
                assert!(pos < t_max, "decode position past t_max");
                let hs = c / nh;
                let args = [self.ptr(out), self.ptr(qkv), self.ptr(cache), int(pos), int(t_max), int(c), int(nh)];
                self.launch("attention_decode", [(b * nh) as u32, 1, 1], [64, 1, 1], 4 * (hs + pos + 1), &args);
            }
            Op::ActivationForward { out, inp, n, act } => {
                self.launch_1d("activation_forward", n, &[self.ptr(out), self.ptr(inp), int(n), act_code(act)]);
            }
            Op::ActivationBackward { dinp, inp, dout, n, act } => {
                let args = [self.ptr(dinp), self.ptr(inp), self.ptr(dout), int(n), act_code(act)];
                self.launch_1d("activation_backward", n, &args);
            }
            Op::ScaleColumns { x, scale, n, w } => {
                self.launch_1d("scale_columns", n * w, &[self.ptr(x), self.ptr(scale), Arg::I64((n * w) as i64), int(w)]);
            }
            Op::ColumnDot { out, a, b, n, w } => {
                self.launch_1d("column_dot", w, &[self.ptr(out), self.ptr(a), self.ptr(b), int(n), int(w)]);
            }
            Op::Residual { out, a, b, n } => {
                self.launch_1d("residual_forward", n, &[self.ptr(out), self.ptr(a), self.ptr(b), int(n)]);
            }
            Op::SoftmaxCrossEntropyForward { losses, probs, logits, targets, n, v } => {
                if n == 0 || v == 0 {
                    return;
                }
                let args = [self.ptr(losses), self.ptr(probs), self.ptr(logits), self.ptr(targets), int(v)];
                self.launch("softmax_crossentropy_forward", [blocks(n, 1), 1, 1], [row_threads(v, 1024), 1, 1], 0, &args);
            }
            Op::CrossEntropyBackward { dlogits, probs, targets, weights, scale, n, v } => {
                let args = [self.ptr(dlogits), self.ptr(probs), self.ptr(targets), self.opt_ptr(weights), Arg::F32(scale), int(n), int(v)];
                self.launch_1d("crossentropy_backward", n * v, &args);
            }
            Op::AdamW { params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay } => {
                let super::AdamWScalars { step_size, bc2_sqrt, decay } = super::AdamWScalars::new(step, lr, beta1, beta2, weight_decay);
                let n = params.len;
                let args = [
                    self.ptr(params), self.ptr(grads), self.ptr(m), self.ptr(v), Arg::I64(n as i64), Arg::F32(beta1),
                    Arg::F32(beta2), Arg::F32(eps), Arg::F32(decay), Arg::F32(step_size), Arg::F32(bc2_sqrt),
                ];
                self.launch_1d("adamw_update", n, &args);
            }
            Op::Argmax { out, logits, n, v, suppress } => {
                if n == 0 {
                    return;
                }
                let args = [self.ptr(out), self.ptr(logits), int(v), Arg::U32(suppress.unwrap_or(u32::MAX))];
                self.launch("argmax_rows", [blocks(n, 1), 1, 1], [row_threads(v, 256), 1, 1], 0, &args);
            }
            Op::Fill { dst, value } => {
                self.launch_1d("fill", dst.len, &[self.ptr(dst), Arg::F32(value), Arg::I64(dst.len as i64)]);
            }
            Op::CopyStrided { dst, src, batches, rows, cols, dst_strides, src_strides } => {
                let args = [
                    self.ptr(dst), self.ptr(src), int(batches), int(rows), int(cols), Arg::I64(dst_strides[0] as i64),
                    Arg::I64(dst_strides[1] as i64), Arg::I64(src_strides[0] as i64), Arg::I64(src_strides[1] as i64),
                ];
                self.launch_1d("copy_strided", batches * rows * cols, &args);
            }
            Op::SmiDirections { out, seed, slice0, k, d } => {
                if k == 0 || d == 0 {
                    return;
                }
                let slice0 = u32::try_from(slice0).expect("slice index fits the generator's 32-bit counter");
                let args = [self.ptr(out), Arg::U32(seed as u32), Arg::U32((seed >> 32) as u32), Arg::U32(slice0), int(d)];
                self.launch("smi_directions", [blocks(k, 1), 1, 1], [SMI_THREADS, 1, 1], 0, &args);
            }
            // P[n, k] = X[n, d]·Θᵀ with Θ [k, d] read as a [d, k] matrix.
            Op::SmiProject { out, x, dirs, n, d, k } => {
                self.gemm(self.ptr(out), self.ptr(x), (d, 1), self.ptr(dirs), (1, d), Arg::Ptr(0), NO_MASK, n, k, d, false)
            }
            Op::SmiClassStats { stats, proj, labels, n, k, classes } => {
                if n == 0 || k == 0 || classes == 0 {
                    return;
                }
                assert!(stats.off.is_multiple_of(2), "f64 views start on an even word");
                let parts = n.div_ceil(crate::smi::psmi::STATS_ROWS);
                let args = [self.ptr(stats), self.ptr(proj), self.ptr(labels), int(n), int(k), int(classes)];
                let grid = [blocks(k, THREADS), u32::try_from(classes).expect("class count"), u32::try_from(parts).expect("part count")];
                self.launch("smi_class_stats", grid, [THREADS, 1, 1], 0, &args);
            }
            Op::SmiScore { pmi, proj, labels, model, excluded, n, k, classes, ld, col0 } => {
                assert!(model.off.is_multiple_of(2), "f64 views start on an even word");
                let args = [
                    self.ptr(pmi), self.ptr(proj), self.ptr(labels), self.ptr(model), self.ptr(excluded), int(n), int(k),
                    int(classes), int(ld), int(col0),
                ];
                self.launch_1d("smi_score", n * k, &args);
            }
            Op::SmiRowSummary { out, pmi, excluded, n, k } => {
                if n == 0 {
                    return;
                }
                assert!(out.off.is_multiple_of(2), "f64 views start on an even word");
                let args = [self.ptr(out), self.ptr(pmi), self.ptr(excluded), int(k)];
                self.launch("smi_row_summary", [blocks(n, 1), 1, 1], [SMI_THREADS, 1, 1], 0, &args);
            }
            Op::GatherRows { out, src, index, scale, n, w } => {
                let args = [self.ptr(out), self.ptr(src), self.ptr(index), self.opt_ptr(scale), int(n), int(w)];
                self.launch_1d("gather_rows", n * w, &args);
            }
            Op::AttentionRowForward { out, att, qkv, ctx, index, n, t_ctx, c, nh } => {
                if n * nh == 0 {
                    return;
                }
                let args = [
                    self.ptr(out), self.ptr(att), self.ptr(qkv), self.ptr(ctx), self.ptr(index), int(t_ctx), int(c), int(nh),
                    Arg::F32(head_scale(c, nh)),
                ];
                let grid = [blocks(n * nh, 1), 1, 1];
                self.launch("attention_row_forward", grid, [ATTENTION_THREADS, 1, 1], row_shared_bytes(t_ctx), &args);
            }
            Op::AttentionRowBackward { dqkv, dout, qkv, ctx, att, index, n, t_ctx, c, nh } => {
                if n * nh == 0 {
                    return;
                }
                let args = [
                    self.ptr(dqkv), self.ptr(dout), self.ptr(qkv), self.ptr(ctx), self.ptr(att), self.ptr(index), int(t_ctx),
                    int(c), int(nh), Arg::F32(head_scale(c, nh)),
                ];
                let grid = [blocks(n * nh, 1), 1, 1];
                self.launch("attention_row_backward", grid, [ATTENTION_THREADS, 1, 1], row_shared_bytes(t_ctx), &args);
            }
            Op::TargetProbBackward { dlogits, probs, targets, n, v, log } => {
                if n == 0 || v == 0 {
                    return;
                }
                let args = [self.ptr(dlogits), self.ptr(probs), self.ptr(targets), int(v), Arg::I32(log as i32)];
                self.launch("target_prob_backward", [blocks(n, 1), 1, 1], [row_threads(v, 1024), 1, 1], 0, &args);
            }
            Op::IgReduce { ig, grads, src, index, n, m, w } => {
                assert!(m > 0, "ig_reduce needs at least one path point per group");
                let args = [
                    self.ptr(ig), self.ptr(grads), self.ptr(src), self.ptr(index), int(n / m), int(m), int(w),
                    Arg::F32(1.0 / m as f32),
                ];
                self.launch_1d("ig_reduce", n / m * w, &args);
            }
            Op::SmiKsg { mi, proj, labels, scratch, n, k, classes, neighbors } => {
                if k == 0 {
                    return;
                }
                assert!(mi.off.is_multiple_of(2) && scratch.off.is_multiple_of(2), "f64 views start on an even word");
                let need = super::ksg_scratch_words(n, k, classes);
                assert!(scratch.len >= need, "smi_ksg: {} words of scratch, needs {need}", scratch.len);
                // k_c = min(neighbors, n_c − 1) never exceeds n, so larger values change nothing.
                let neighbors = int(neighbors.min(n.max(1)));
                let (work, lab) = (self.ptr(scratch), self.ptr(labels));
                self.launch("ksg_classes", [1, 1, 1], [SMI_THREADS, 1, 1], 0, &[work, lab, int(n), int(k), int(classes), neighbors]);
                self.launch_1d("ksg_scale", k, &[work, self.ptr(proj), int(n), int(k), int(classes)]);
                let args = [self.ptr(mi), work, self.ptr(proj), lab, int(n), int(k), int(classes), neighbors];
                self.launch("ksg_sort_mi", [blocks(k, 1), 1, 1], [SMI_THREADS, 1, 1], 0, &args);
            }
            Op::SelectRank { cut, x, y, n, k, key } => {
                assert!(k <= n, "select_rank: rank {k} of {n} entries");
                assert!(n <= super::MAX_SELECT, "select_rank: {n} entries exceed the {} a selection takes", super::MAX_SELECT);
                let args = [self.ptr(cut), self.ptr(x), self.opt_ptr(y), int(n), int(k), Arg::I32(key.code() as i32)];
                self.launch("select_rank", [1, 1, 1], [SELECT_THREADS, 1, 1], 0, &args);
            }
            Op::MaskApply { w, x, y, cut, n, key, below } => {
                let args = [
                    self.ptr(w), self.ptr(x), self.opt_ptr(y), self.ptr(cut), int(n), Arg::I32(key.code() as i32),
                    Arg::I32(below as i32),
                ];
                self.launch_1d("mask_apply", n, &args);
            }
            Op::MaskedMatmulForward { out, inp, weight, bias, scores, cut, n, c, oc } => {
                let mask = [self.ptr(scores), self.ptr(cut)];
                self.gemm(self.ptr(out), self.ptr(inp), (c, 1), self.ptr(weight), (oc, 1), self.opt_ptr(bias), mask, n, oc, c, false);
            }
            Op::MaskedMatmulBackward { dinp, dscores, dout, inp, weight, scores, cut, n, c, oc } => {
                if n == 0 {
                    return;
                }
                let mask = [self.ptr(scores), self.ptr(cut)];
                if let Some(dinp) = dinp {
                    // dinp[n, c] = dout[n, oc]·(W ⊙ m)ᵀ
                    self.gemm(self.ptr(dinp), self.ptr(dout), (oc, 1), self.ptr(weight), (1, oc), Arg::Ptr(0), mask, n, c, oc, false);
                }
                if let Some(dscores) = dscores.filter(|_| c * oc > 0) {
                    // The dweight GEMM inpᵀ·dout as split partials, then the straight-through epilogue
                    // sign(S) ⊙ W ⊙ Σ partials added into dscores.
                    let (splits, k_split) = Self::dw_splits(c, oc, n);
                    self.with_scratch(splits * c * oc, |partials| {
                        let (a, b) = (self.ptr(inp), self.ptr(dout));
                        self.tiled(partials, a, (1, c), b, (oc, 1), Arg::Ptr(0), NO_MASK, c, oc, n, false, splits, k_split);
                        let args = [
                            self.ptr(dscores), partials, self.ptr(scores), self.ptr(weight), int(splits), int(c * oc),
                            Arg::I64((c * oc) as i64),
                        ];
                        self.launch_1d("ste_accumulate", c * oc, &args);
                    });
                }
            }
            Op::SgdMomentum { params, grads, buf, lr, momentum, weight_decay, first } => {
                let n = params.len;
                let args = [
                    self.ptr(params), self.ptr(grads), self.ptr(buf), Arg::I64(n as i64), Arg::F32(lr), Arg::F32(momentum),
                    Arg::F32(weight_decay), Arg::I32(first as i32),
                ];
                self.launch_1d("sgd_momentum", n, &args);
            }
            Op::SouScores { out, w, g, n, block, lambda } => {
                assert!(block > 0, "sou_scores: blocks of 0 entries");
                let args = [self.ptr(out), self.ptr(w), self.ptr(g), int(n), int(block), Arg::F32(lambda)];
                self.launch_1d("sou_scores", n.div_ceil(block), &args);
            }
            Op::AttentionStats { out, qkv, b, t, c, nh, t0, t1, top_k } => {
                super::check_attention_stats(out.len, qkv.len, b, t, c, nh, t0, t1, top_k);
                let rows = b * nh * (t1 - t0);
                if rows == 0 {
                    return;
                }
                let args = [
                    self.ptr(out), self.ptr(qkv), int(t), int(c), int(nh), int(t0), int(t1), int(top_k),
                    Arg::F32(head_scale(c, nh)),
                ];
                self.launch("attention_stats", [blocks(rows, 1), 1, 1], [STATS_THREADS, 1, 1], 0, &args);
            }
            Op::SpectralPowerIteration { state, sigma, params, table, blocks, .. } => {
                let args = [self.ptr(state), self.ptr(sigma), self.ptr(params), self.ptr(table)];
                self.launch("spectral_power_iteration", [u32::try_from(blocks).expect("block count"), 1, 1], [REG_THREADS, 1, 1], 0, &args);
            }
            Op::SpectralGradAdd { grads, state, sigma, table, blocks, lambda, linear, .. } => {
                let args = [self.ptr(grads), self.ptr(state), self.ptr(sigma), self.ptr(table), Arg::F32(lambda), Arg::I32(linear as i32)];
                self.launch("spectral_grad_add", [u32::try_from(blocks).expect("block count"), 1, 1], [REG_THREADS, 1, 1], 0, &args);
            }
            Op::ExampleTiedDropout { out, x, ids, n, t, c, pos0, seed, mode, keep, mem, scale } => {
                assert!(c <= super::ETD_MAX_C, "example_tied_dropout: width {c} above {}", super::ETD_MAX_C);
                assert!(t > 0 && n.is_multiple_of(t), "example_tied_dropout: {n} rows are not whole sequences of {t}");
                if n == 0 {
                    return;
                }
                let flags = ids.is_some() as i32 | ((mode == super::EtdMode::Positions) as i32) << 1;
                let args = [
                    self.ptr(out), self.ptr(x), self.opt_ptr(ids), int(n), int(t), int(c), int(pos0), int(keep), Arg::U32(mem),
                    Arg::I32(flags), Arg::U32(seed as u32), Arg::U32((seed >> 32) as u32), Arg::F32(scale),
                ];
                self.launch("example_tied_dropout", [blocks(n / t, 1), 1, 1], [ETD_THREADS, 1, 1], 0, &args);
            }
        }
    }
}

/// Whether `--backend cuda` can run here, or why not.
pub fn gpu_available() -> std::result::Result<(), String> {
    driver::devices().map(|_| ())
}

/// Lines for `memsieve info`: the CUDA devices (or why there are none), NVRTC and the emulator.
pub fn info_lines() -> Vec<String> {
    let mut lines = Vec::new();
    match driver::devices() {
        Ok(devs) => {
            for d in devs {
                let (major, minor) = d.compute_capability;
                lines.push(format!(
                    "cuda device {}: {} (compute capability {major}.{minor}, {:.1} GiB)",
                    d.ordinal,
                    d.name,
                    d.memory_bytes as f64 / (1u64 << 30) as f64
                ));
                match d.peaks() {
                    Some(p) => lines.push(format!("  peak {:.0} GFLOP/s fp32, {:.0} GB/s ({})", p.gflops, p.gbs, p.source)),
                    None => lines.push(format!("  peak: unknown (no FP32 lane count for sm_{major}{minor})")),
                }
            }
        }
        Err(why) => lines.push(format!("cuda device: none ({why})")),
    }
    match nvrtc::version() {
        Some((major, minor)) => lines.push(format!("nvrtc: {major}.{minor} (kernels compile at load time)")),
        None => lines.push("nvrtc: not found (pip install nvidia-cuda-nvrtc-cu12; add its lib dir to LD_LIBRARY_PATH)".into()),
    }
    if emu::built() {
        let present = kernels::all_kernels().filter(|k| emu::has_kernel(k)).count();
        let total = kernels::all_kernels().count();
        lines.push(format!("cuda-emu: available ({present} of {total} kernels; slow, for tests and debugging)"));
    } else {
        lines.push("cuda-emu: not built (no C++ compiler at build time)".into());
    }
    lines
}

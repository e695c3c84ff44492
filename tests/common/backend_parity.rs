//! Generic op-level parity harness: an op is written once over buffer *indices* (`Op<'static, Id>`),
//! then runs on the cpu backend (the reference) and on any other `B: Backend`; afterwards every buffer
//! is downloaded from both and compared (outputs, and inputs that must stay untouched). Shared by the
//! GPU backends' tests.
#![allow(dead_code)]

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Backend, Device, Op, View};

/// A buffer handle inside a `Case`.
pub type Id = usize;
static IDS: [Id; 32] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31];

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Compare {
    /// |a − b| ≤ atol + rtol·|ref|
    Close,
    /// bit-identical u32 words (token ids, indices)
    Exact,
    /// backend-private contents (scratch)
    Skip,
}

struct Spec {
    name: &'static str,
    words: Vec<u32>,
    compare: Compare,
}

/// The buffers of one op call, with their initial contents.
pub struct Case {
    specs: Vec<Spec>,
    pub atol: f32,
    pub rtol: f32,
}

impl Default for Case {
    fn default() -> Self {
        Self::new()
    }
}

impl Case {
    pub fn new() -> Self {
        Case { specs: Vec::new(), atol: 1e-5, rtol: 1e-4 }
    }
    fn add(&mut self, name: &'static str, words: Vec<u32>, compare: Compare) -> View<'static, Id> {
        let id = self.specs.len();
        assert!(id < IDS.len(), "too many buffers in one case");
        let len = words.len();
        self.specs.push(Spec { name, words, compare });
        View::new(&IDS[id], 0, len)
    }
    pub fn f32(&mut self, name: &'static str, data: Vec<f32>) -> View<'static, Id> {
        self.add(name, data.into_iter().map(f32::to_bits).collect(), Compare::Close)
    }
    pub fn u32(&mut self, name: &'static str, data: Vec<u32>) -> View<'static, Id> {
        self.add(name, data, Compare::Exact)
    }
    pub fn scratch(&mut self, name: &'static str, len: usize) -> View<'static, Id> {
        self.add(name, vec![0; len], Compare::Skip)
    }

    /// Run `op` on a device; every buffer's contents afterwards.
    pub fn run<B: Backend>(&self, dev: &Device<B>, op: &Op<'static, Id>) -> Vec<Vec<u32>> {
        let bufs: Vec<B::Buffer> = self
            .specs
            .iter()
            .map(|s| {
                let b = dev.alloc(s.words.len()).expect("alloc");
                dev.upload_u32(dev.view(&b), &s.words);
                b
            })
            .collect();
        dev.exec(map_op(op, &bufs));
        bufs.iter().map(|b| dev.download_u32(dev.view(b))).collect()
    }

    /// Run on the cpu backend and on `dev`; panics with the worst element of any buffer that differs.
    pub fn check<B: Backend>(&self, cpu: &Device<CpuBackend>, dev: &Device<B>, label: &str, op: &Op<'static, Id>) {
        let want = self.run(cpu, op);
        let got = self.run(dev, op);
        for (s, (w, g)) in self.specs.iter().zip(want.iter().zip(&got)) {
            match s.compare {
                Compare::Skip => {}
                Compare::Exact => {
                    if let Some(i) = (0..w.len()).find(|&i| w[i] != g[i]) {
                        panic!("{label}: {}[{i}] is {} on {}, {} on cpu", s.name, g[i], dev.backend.name(), w[i]);
                    }
                }
                Compare::Close => {
                    let mut worst = (0usize, 0f32, 0f32);
                    for i in 0..w.len() {
                        let (r, x) = (f32::from_bits(w[i]), f32::from_bits(g[i]));
                        // Equal values (±∞ included) have no error.
                        let err = if x == r { 0.0 } else { (x - r).abs() };
                        let excess = err - (self.atol + self.rtol * r.abs());
                        let bad = (x.is_nan() != r.is_nan()) || (!r.is_nan() && (excess > 0.0 || excess.is_nan()));
                        if bad {
                            panic!(
                                "{label}: {}[{i}] is {x} on {}, {r} on cpu (|Δ| {err:e} > {} + {}·|ref|)",
                                s.name,
                                dev.backend.name(),
                                self.atol,
                                self.rtol
                            );
                        }
                        if err > worst.1 {
                            worst = (i, err, r);
                        }
                    }
                    if worst.1 > 0.0 {
                        println!("{label}: {} max |Δ| {:.2e} (at {}, ref {})", s.name, worst.1, worst.0, worst.2);
                    }
                }
            }
        }
    }
}

/// The same op over real buffers.
pub fn map_op<'a, B>(op: &Op<'static, Id>, bufs: &'a [B]) -> Op<'a, B> {
    let m = |v: View<'static, Id>| View::new(&bufs[*v.buf], v.off, v.len);
    let mo = |v: Option<View<'static, Id>>| v.map(m);
    match *op {
        Op::EncoderForward { out, tokens, wte, wpe, b, t, c, pos0 } => {
            Op::EncoderForward { out: m(out), tokens: m(tokens), wte: m(wte), wpe: m(wpe), b, t, c, pos0 }
        }
        Op::EncoderBackward { dwte, dwpe, dout, tokens, b, t, c, pos0 } => {
            Op::EncoderBackward { dwte: m(dwte), dwpe: m(dwpe), dout: m(dout), tokens: m(tokens), b, t, c, pos0 }
        }
        Op::LayerNormForward { out, mean, rstd, inp, weight, bias, n, c, eps } => Op::LayerNormForward {
            out: m(out), mean: m(mean), rstd: m(rstd), inp: m(inp), weight: m(weight), bias: m(bias), n, c, eps,
        },
        Op::LayerNormBackward { dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c } => Op::LayerNormBackward {
            dinp: m(dinp), dweight: m(dweight), dbias: m(dbias), dout: m(dout), inp: m(inp), weight: m(weight),
            mean: m(mean), rstd: m(rstd), n, c,
        },
        Op::MatmulForward { out, inp, weight, bias, n, c, oc, layout } => {
            Op::MatmulForward { out: m(out), inp: m(inp), weight: m(weight), bias: mo(bias), n, c, oc, layout }
        }
        Op::MatmulBackward { dinp, dweight, dbias, dout, inp, weight, n, c, oc, layout } => Op::MatmulBackward {
            dinp: mo(dinp), dweight: mo(dweight), dbias: mo(dbias), dout: m(dout), inp: m(inp), weight: m(weight),
            n, c, oc, layout,
        },
        Op::AttentionForward { out, att, qkv, b, t, c, nh } => {
            Op::AttentionForward { out: m(out), att: m(att), qkv: m(qkv), b, t, c, nh }
        }
        Op::AttentionBackward { dqkv, scratch, dout, qkv, att, b, t, c, nh } => Op::AttentionBackward {
            dqkv: m(dqkv), scratch: m(scratch), dout: m(dout), qkv: m(qkv), att: m(att), b, t, c, nh,
        },
        Op::KvCacheWrite { cache, qkv, b, t, pos0, t_max, c, nh } => {
            Op::KvCacheWrite { cache: m(cache), qkv: m(qkv), b, t, pos0, t_max, c, nh }
        }
        Op::AttentionDecode { out, qkv, cache, b, pos, t_max, c, nh } => {
            Op::AttentionDecode { out: m(out), qkv: m(qkv), cache: m(cache), b, pos, t_max, c, nh }
        }
        Op::ActivationForward { out, inp, n, act } => Op::ActivationForward { out: m(out), inp: m(inp), n, act },
        Op::ActivationBackward { dinp, inp, dout, n, act } => {
            Op::ActivationBackward { dinp: m(dinp), inp: m(inp), dout: m(dout), n, act }
        }
        Op::Residual { out, a, b, n } => Op::Residual { out: m(out), a: m(a), b: m(b), n },
        Op::ScaleColumns { x, scale, n, w } => Op::ScaleColumns { x: m(x), scale: m(scale), n, w },
        Op::ColumnDot { out, a, b, n, w } => Op::ColumnDot { out: m(out), a: m(a), b: m(b), n, w },
        Op::SoftmaxCrossEntropyForward { losses, probs, logits, targets, n, v } => Op::SoftmaxCrossEntropyForward {
            losses: m(losses), probs: m(probs), logits: m(logits), targets: m(targets), n, v,
        },
        Op::CrossEntropyBackward { dlogits, probs, targets, weights, scale, n, v } => {
            Op::CrossEntropyBackward { dlogits: m(dlogits), probs: m(probs), targets: m(targets), weights: mo(weights), scale, n, v }
        }
        Op::AdamW { params, grads, m: mm, v, step, lr, beta1, beta2, eps, weight_decay } => Op::AdamW {
            params: m(params), grads: m(grads), m: m(mm), v: m(v), step, lr, beta1, beta2, eps, weight_decay,
        },
        Op::Argmax { out, logits, n, v, suppress } => Op::Argmax { out: m(out), logits: m(logits), n, v, suppress },
        Op::Fill { dst, value } => Op::Fill { dst: m(dst), value },
        Op::CopyStrided { dst, src, batches, rows, cols, dst_strides, src_strides } => {
            Op::CopyStrided { dst: m(dst), src: m(src), batches, rows, cols, dst_strides, src_strides }
        }
        Op::SmiDirections { out, seed, slice0, k, d } => Op::SmiDirections { out: m(out), seed, slice0, k, d },
        Op::SmiProject { out, x, dirs, n, d, k } => Op::SmiProject { out: m(out), x: m(x), dirs: m(dirs), n, d, k },
        Op::SmiClassStats { stats, proj, labels, n, k, classes } => {
            Op::SmiClassStats { stats: m(stats), proj: m(proj), labels: m(labels), n, k, classes }
        }
        Op::SmiScore { pmi, proj, labels, model, excluded, n, k, classes, ld, col0 } => Op::SmiScore {
            pmi: m(pmi), proj: m(proj), labels: m(labels), model: m(model), excluded: m(excluded), n, k, classes, ld, col0,
        },
        Op::SmiRowSummary { out, pmi, excluded, n, k } => Op::SmiRowSummary { out: m(out), pmi: m(pmi), excluded: m(excluded), n, k },
        Op::GatherRows { out, src, index, scale, n, w } => {
            Op::GatherRows { out: m(out), src: m(src), index: m(index), scale: mo(scale), n, w }
        }
        Op::AttentionRowForward { out, att, qkv, ctx, index, n, t_ctx, c, nh } => Op::AttentionRowForward {
            out: m(out), att: m(att), qkv: m(qkv), ctx: m(ctx), index: m(index), n, t_ctx, c, nh,
        },
        Op::AttentionRowBackward { dqkv, dout, qkv, ctx, att, index, n, t_ctx, c, nh } => Op::AttentionRowBackward {
            dqkv: m(dqkv), dout: m(dout), qkv: m(qkv), ctx: m(ctx), att: m(att), index: m(index), n, t_ctx, c, nh,
        },
        Op::TargetProbBackward { dlogits, probs, targets, n, v, log } => {
            Op::TargetProbBackward { dlogits: m(dlogits), probs: m(probs), targets: m(targets), n, v, log }
        }
        Op::IgReduce { ig, grads, src, index, n, m: mm, w } => {
            Op::IgReduce { ig: m(ig), grads: m(grads), src: m(src), index: m(index), n, m: mm, w }
        }
        Op::SmiKsg { mi, proj, labels, scratch, n, k, classes, neighbors } => Op::SmiKsg {
            mi: m(mi), proj: m(proj), labels: m(labels), scratch: m(scratch), n, k, classes, neighbors,
        },
        Op::SelectRank { cut, x, y, n, k, key } => Op::SelectRank { cut: m(cut), x: m(x), y: mo(y), n, k, key },
        Op::MaskApply { w, x, y, cut, n, key, below } => Op::MaskApply { w: m(w), x: m(x), y: mo(y), cut: m(cut), n, key, below },
        Op::MaskedMatmulForward { out, inp, weight, bias, scores, cut, n, c, oc } => Op::MaskedMatmulForward {
            out: m(out), inp: m(inp), weight: m(weight), bias: mo(bias), scores: m(scores), cut: m(cut), n, c, oc,
        },
        Op::MaskedMatmulBackward { dinp, dscores, dout, inp, weight, scores, cut, n, c, oc } => Op::MaskedMatmulBackward {
            dinp: mo(dinp), dscores: mo(dscores), dout: m(dout), inp: m(inp), weight: m(weight), scores: m(scores), cut: m(cut), n, c, oc,
        },
        Op::SgdMomentum { params, grads, buf, lr, momentum, weight_decay, first } => {
            Op::SgdMomentum { params: m(params), grads: m(grads), buf: m(buf), lr, momentum, weight_decay, first }
        }
        Op::SouScores { out, w, g, n, block, lambda } => Op::SouScores { out: m(out), w: m(w), g: m(g), n, block, lambda },
        Op::AttentionStats { out, qkv, b, t, c, nh, t0, t1, top_k } => {
            Op::AttentionStats { out: m(out), qkv: m(qkv), b, t, c, nh, t0, t1, top_k }
        }
        Op::SpectralPowerIteration { state, sigma, params, table, blocks, entries } => Op::SpectralPowerIteration {
            state: m(state), sigma: m(sigma), params: m(params), table: m(table), blocks, entries,
        },
        Op::SpectralGradAdd { grads, state, sigma, table, blocks, entries, lambda, linear } => Op::SpectralGradAdd {
            grads: m(grads), state: m(state), sigma: m(sigma), table: m(table), blocks, entries, lambda, linear,
        },
        Op::ExampleTiedDropout { out, x, ids, n, t, c, pos0, seed, mode, keep, mem, scale } => Op::ExampleTiedDropout {
            out: m(out), x: m(x), ids: mo(ids), n, t, c, pos0, seed, mode, keep, mem, scale,
        },
    }
}

/// Deterministic pseudo-random values in [lo, hi) (xorshift; no dependency on the library's rng).
pub fn rand_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Deterministic ids in 0..max.
pub fn rand_ids(seed: u64, n: usize, max: u32) -> Vec<u32> {
    rand_vec(seed, n, 0.0, 1.0).into_iter().map(|x| ((x * max as f32) as u32).min(max - 1)).collect()
}

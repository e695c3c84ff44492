//! Per-kernel regression benchmarks (criterion) on the cpu backend: the ops a training step,
//! generation, screening and IG spend their time in, on awkward shapes (not multiples of tiles or
//! lanes). Each reports time and, through `Throughput::Elements`, the op's analytic FLOPs per
//! second (`Op::cost`). The default run is short; for steadier numbers:
//!
//! cargo bench --bench kernels -- [FILTER] [--measurement-time 5] [--sample-size 50]
//! cargo bench --bench kernels -- --save-baseline before   …   --baseline before   (regressions)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memsieve::backend::cpu::{CpuBackend, CpuBuffer};
use memsieve::backend::{Backend, Device, Op, View, WeightLayout};
use memsieve::model::config::Activation;
use std::time::Duration;

struct Bufs {
    dev: Device<CpuBackend>,
    seed: std::cell::Cell<u64>,
}

impl Bufs {
    fn new() -> Self {
        Bufs { dev: Device::new(CpuBackend::new()), seed: std::cell::Cell::new(0x2545_f491) }
    }
    /// Uniform values in [-1, 1) (an LCG: deterministic, no dependency).
    fn rand(&self, n: usize) -> CpuBuffer {
        let mut s = self.seed.get();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        self.seed.set(s);
        let b = self.dev.alloc(n).unwrap();
        self.dev.upload_f32(self.dev.view(&b), &v);
        b
    }
    fn ints(&self, n: usize, below: u32) -> CpuBuffer {
        let v: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2654435761) % below).collect();
        let b = self.dev.alloc(n).unwrap();
        self.dev.upload_u32(self.dev.view(&b), &v);
        b
    }
    fn zeros(&self, n: usize) -> CpuBuffer {
        self.dev.alloc(n).unwrap()
    }
    fn v<'a>(&self, b: &'a CpuBuffer) -> View<'a, CpuBuffer> {
        self.dev.view(b)
    }
}

/// Bench one op: `make` builds it over the buffers (called once per iteration; building is free).
fn bench_op<'a>(c: &mut Criterion, group: &str, id: &str, bufs: &Bufs, make: impl Fn() -> Op<'a, CpuBuffer>) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(make().cost().flops as u64));
    g.bench_function(BenchmarkId::from_parameter(id), |b| b.iter(|| bufs.dev.exec(make())));
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let s = Bufs::new();
    // Matmuls at the model's widths with odd row counts (decode-sized and training-sized).
    for &(n, cin, oc) in &[(13usize, 128usize, 384usize), (1201, 128, 512), (1201, 512, 128), (1201, 128, 14)] {
        let (inp, w, bias, out) = (s.rand(n * cin), s.rand(cin * oc), s.rand(oc), s.zeros(n * oc));
        let id = format!("{n}x{cin}x{oc}");
        bench_op(c, "matmul_forward", &id, &s, || Op::MatmulForward { out: s.v(&out), inp: s.v(&inp), weight: s.v(&w), bias: Some(s.v(&bias)), n, c: cin, oc, layout: WeightLayout::InOut });
        let (dinp, dw, db, dout) = (s.zeros(n * cin), s.zeros(cin * oc), s.zeros(oc), s.rand(n * oc));
        bench_op(c, "matmul_backward", &id, &s, || Op::MatmulBackward {
            dinp: Some(s.v(&dinp)),
            dweight: Some(s.v(&dw)),
            dbias: Some(s.v(&db)),
            dout: s.v(&dout),
            inp: s.v(&inp),
            weight: s.v(&w),
            n,
            c: cin,
            oc,
            layout: WeightLayout::InOut,
        });
    }
    // Attention: T = 149 (not a tile multiple), 4 heads of 32.
    let (b, t, cw, nh) = (3usize, 149usize, 128usize, 4usize);
    let (qkv, out, att) = (s.rand(b * t * 3 * cw), s.zeros(b * t * cw), s.zeros(b * nh * t * t));
    let id = format!("b{b}_t{t}");
    bench_op(c, "attention_forward", &id, &s, || Op::AttentionForward { out: s.v(&out), att: s.v(&att), qkv: s.v(&qkv), b, t, c: cw, nh });
    let (dqkv, scratch, dout) = (s.zeros(b * t * 3 * cw), s.zeros(s.dev.backend.attention_scratch_len(b, t, nh).max(1)), s.rand(b * t * cw));
    bench_op(c, "attention_backward", &id, &s, || Op::AttentionBackward { dqkv: s.v(&dqkv), scratch: s.v(&scratch), dout: s.v(&dout), qkv: s.v(&qkv), att: s.v(&att), b, t, c: cw, nh });
    // Attention statistics of the same rows' suffix queries 50..149 (top-5), streamed over key blocks.
    let stats = s.zeros(b * nh * (t - 50) * memsieve::backend::ATTENTION_STATS);
    bench_op(c, "attention_stats", &format!("{id}_q50-{t}_k5"), &s, || Op::AttentionStats { out: s.v(&stats), qkv: s.v(&qkv), b, t, c: cw, nh, t0: 50, t1: t, top_k: 5 });
    // One decode step of 7 prompts at position 99 against a 150-position cache.
    let (bd, pos, t_max) = (7usize, 99usize, 150usize);
    let (cache, qd, od) = (s.rand(bd * 2 * cw * t_max), s.rand(bd * 3 * cw), s.zeros(bd * cw));
    bench_op(c, "attention_decode", &format!("b{bd}_pos{pos}"), &s, || Op::AttentionDecode { out: s.v(&od), qkv: s.v(&qd), cache: s.v(&cache), b: bd, pos, t_max, c: cw, nh });
    // Row ops over 1201 rows.
    let n = 1201;
    let (x, g, bb, y, mean, rstd) = (s.rand(n * cw), s.rand(cw), s.rand(cw), s.zeros(n * cw), s.zeros(n), s.zeros(n));
    bench_op(c, "layernorm_forward", "1201x128", &s, || Op::LayerNormForward { out: s.v(&y), mean: s.v(&mean), rstd: s.v(&rstd), inp: s.v(&x), weight: s.v(&g), bias: s.v(&bb), n, c: cw, eps: 1e-5 });
    let (dx, dg, dbb, dy) = (s.zeros(n * cw), s.zeros(cw), s.zeros(cw), s.rand(n * cw));
    bench_op(c, "layernorm_backward", "1201x128", &s, || Op::LayerNormBackward { dinp: s.v(&dx), dweight: s.v(&dg), dbias: s.v(&dbb), dout: s.v(&dy), inp: s.v(&x), weight: s.v(&g), mean: s.v(&mean), rstd: s.v(&rstd), n, c: cw });
    let (h, ho) = (s.rand(n * 4 * cw), s.zeros(n * 4 * cw));
    bench_op(c, "activation_forward", "gelu_1201x512", &s, || Op::ActivationForward { out: s.v(&ho), inp: s.v(&h), n: n * 4 * cw, act: Activation::Gelu });
    let v = 14;
    let (logits, probs, losses, targets) = (s.rand(n * v), s.zeros(n * v), s.zeros(n), s.ints(n, v as u32));
    bench_op(c, "softmax_crossentropy_forward", "1201x14", &s, || Op::SoftmaxCrossEntropyForward { losses: s.v(&losses), probs: s.v(&probs), logits: s.v(&logits), targets: s.v(&targets), n, v });
    let np = 100_003;
    let (p, gr, m, vv) = (s.rand(np), s.rand(np), s.zeros(np), s.zeros(np));
    bench_op(c, "adamw", "100003", &s, || Op::AdamW { params: s.v(&p), grads: s.v(&gr), m: s.v(&m), v: s.v(&vv), step: 3, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.1 });
    // Screening: projection and KSG on 1001 samples.
    let (ns, d, k, classes) = (1001usize, 129usize, 97usize, 3usize);
    let (feat, dirs, proj) = (s.rand(ns * d), s.rand(k * d), s.zeros(ns * k));
    bench_op(c, "smi_project", &format!("{ns}x{d}x{k}"), &s, || Op::SmiProject { out: s.v(&proj), x: s.v(&feat), dirs: s.v(&dirs), n: ns, d, k });
    let kk = 13;
    let (pk, labels, mi) = (s.rand(ns * kk), s.ints(ns, classes as u32), s.zeros(2 * kk));
    let scratch = s.zeros(s.dev.backend.smi_ksg_scratch_len(ns, kk, classes).max(1));
    bench_op(c, "smi_ksg", &format!("{ns}x{kk}"), &s, || Op::SmiKsg { mi: s.v(&mi), proj: s.v(&pk), labels: s.v(&labels), scratch: s.v(&scratch), n: ns, k: kk, classes, neighbors: 3 });
}

fn short() -> Criterion {
    // Short by default (regression checks, not publication numbers); the command line overrides.
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(600)).configure_from_args()
}

criterion_group! { name = benches; config = short(); targets = kernels }
criterion_main!(benches);

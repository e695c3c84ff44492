//! Op-by-op parity of any backend against the cpu reference: the same op on the same random inputs,
//! outputs compared within 1e-4 relative. Shapes are chosen awkward (not multiples of tiles or lanes,
//! batch 1, T = 1) by the callers.
#![allow(dead_code)]

use memsieve::backend::cpu::{CpuBackend, CpuBuffer};
use memsieve::backend::{Backend, Device, View};

/// One logical tensor held on both backends.
pub struct Twin<DB> {
    pub cpu: CpuBuffer,
    pub dev: DB,
    pub len: usize,
}

pub struct Pair<'a, B: Backend> {
    pub cpu: &'a Device<CpuBackend>,
    pub dev: &'a Device<B>,
    seed: std::cell::Cell<u64>,
}

impl<'a, B: Backend> Pair<'a, B> {
    pub fn new(cpu: &'a Device<CpuBackend>, dev: &'a Device<B>) -> Self {
        Pair { cpu, dev, seed: std::cell::Cell::new(0x9e37_79b9) }
    }

    /// Uniform values in [-scale, scale) from a small LCG (deterministic per test).
    pub fn random(&self, n: usize, scale: f32) -> Vec<f32> {
        let mut s = self.seed.get();
        let v = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        self.seed.set(s);
        v
    }

    pub fn ints(&self, n: usize, below: u32) -> Vec<u32> {
        self.random(n, 1.0).iter().map(|x| (((x + 1.0) * 0.5 * below as f32) as u32).min(below - 1)).collect()
    }

    pub fn f32s(&self, data: &[f32]) -> Twin<B::Buffer> {
        let t = Twin { cpu: self.cpu.alloc(data.len()).unwrap(), dev: self.dev.alloc(data.len()).unwrap(), len: data.len() };
        self.cpu.upload_f32(self.cpu.view(&t.cpu), data);
        self.dev.upload_f32(self.dev.view(&t.dev), data);
        t
    }

    pub fn rand(&self, n: usize) -> Twin<B::Buffer> {
        self.f32s(&self.random(n, 1.0))
    }

    pub fn u32s(&self, data: &[u32]) -> Twin<B::Buffer> {
        let t = Twin { cpu: self.cpu.alloc(data.len()).unwrap(), dev: self.dev.alloc(data.len()).unwrap(), len: data.len() };
        self.cpu.upload_u32(self.cpu.view(&t.cpu), data);
        self.dev.upload_u32(self.dev.view(&t.dev), data);
        t
    }

    /// |dev − cpu| ≤ 1e-4·(|cpu| + floor) elementwise, where floor is 1e-2 of the tensor's largest
    /// magnitude (so values that cancel to nearly 0 are judged against the tensor's scale).
    pub fn check(&self, what: &str, t: &Twin<B::Buffer>) {
        let want = self.cpu.download_f32(View::new(&t.cpu, 0, t.len));
        let got = self.dev.download_f32(View::new(&t.dev, 0, t.len));
        let floor = 1e-2 * want.iter().fold(0f32, |m, x| m.max(x.abs())) + 1e-6;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-4 * (w.abs() + floor);
            assert!((g - w).abs() <= tol, "{what} on {}: element {i} is {g}, cpu says {w} (tolerance {tol:e})", self.dev.backend.name());
        }
    }

    pub fn check_u32(&self, what: &str, t: &Twin<B::Buffer>) {
        let want = self.cpu.download_u32(View::new(&t.cpu, 0, t.len));
        let got = self.dev.download_u32(View::new(&t.dev, 0, t.len));
        assert_eq!(got, want, "{what} on {}", self.dev.backend.name());
    }
}

pub fn cpu_view<DB>(t: &Twin<DB>) -> View<'_, CpuBuffer> {
    View::new(&t.cpu, 0, t.len)
}
pub fn dev_view<DB>(t: &Twin<DB>) -> View<'_, DB> {
    View::new(&t.dev, 0, t.len)
}

/// Run one op on both backends: `$v(&twin)` is the twin's whole-buffer view on the backend at hand.
#[macro_export]
macro_rules! run_both {
    ($pair:expr, |$v:ident| $op:expr) => {{
        {
            let $v = $crate::common::parity::cpu_view;
            $pair.cpu.exec($op);
        }
        {
            let $v = $crate::common::parity::dev_view;
            $pair.dev.exec($op);
        }
    }};
}

// ---- one check per op family, each over several awkward shapes ----

use memsieve::backend::{Op, WeightLayout, IGNORE_TARGET};
use memsieve::model::config::Activation;

pub fn encoder<B: Backend>(p: &Pair<B>) {
    for (b, t, c, vocab, pos0) in [(3, 5, 70, 11, 2), (1, 1, 8, 3, 0), (2, 17, 33, 300, 4)] {
        let tokens = p.u32s(&p.ints(b * t, vocab as u32));
        let (wte, wpe, out) = (p.rand(vocab * c), p.rand((pos0 + t + 1) * c), p.rand(b * t * c));
        run_both!(p, |v| Op::EncoderForward { out: v(&out), tokens: v(&tokens), wte: v(&wte), wpe: v(&wpe), b, t, c, pos0 });
        p.check("encoder_forward", &out);
        let (dwte, dwpe, dout) = (p.rand(vocab * c), p.rand((pos0 + t + 1) * c), p.rand(b * t * c));
        run_both!(p, |v| Op::EncoderBackward { dwte: v(&dwte), dwpe: v(&dwpe), dout: v(&dout), tokens: v(&tokens), b, t, c, pos0 });
        p.check("encoder_backward dwte", &dwte);
        p.check("encoder_backward dwpe", &dwpe);
    }
}

pub fn layernorm<B: Backend>(p: &Pair<B>) {
    for (n, c) in [(37, 70), (1, 8), (9, 128), (300, 5)] {
        let inp = p.f32s(&p.random(n * c, 3.0));
        let (w, bias, out, mean, rstd) = (p.rand(c), p.rand(c), p.rand(n * c), p.rand(n), p.rand(n));
        run_both!(p, |v| Op::LayerNormForward { out: v(&out), mean: v(&mean), rstd: v(&rstd), inp: v(&inp), weight: v(&w), bias: v(&bias), n, c, eps: 1e-5 });
        p.check("layernorm_forward out", &out);
        p.check("layernorm_forward mean", &mean);
        p.check("layernorm_forward rstd", &rstd);
        // dinp, dweight and dbias accumulate onto what is there.
        let (dinp, dw, db, dout) = (p.rand(n * c), p.rand(c), p.rand(c), p.rand(n * c));
        run_both!(p, |v| Op::LayerNormBackward { dinp: v(&dinp), dweight: v(&dw), dbias: v(&db), dout: v(&dout), inp: v(&inp), weight: v(&w), mean: v(&mean), rstd: v(&rstd), n, c });
        p.check("layernorm_backward dinp", &dinp);
        p.check("layernorm_backward dweight", &dw);
        p.check("layernorm_backward dbias", &db);
    }
}

pub fn matmul<B: Backend>(p: &Pair<B>) {
    // n = 1100 takes the split-k path of weight gradients on GPU backends.
    for (n, c, oc) in [(67, 45, 77), (1, 8, 3), (130, 128, 14), (5, 129, 65), (1100, 40, 30)] {
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for with_bias in [true, false] {
                let what = format!("matmul n={n} c={c} oc={oc} {layout:?} bias={with_bias}");
                let (inp, w, bias, out) = (p.rand(n * c), p.rand(c * oc), p.rand(oc), p.rand(n * oc));
                run_both!(p, |v| Op::MatmulForward { out: v(&out), inp: v(&inp), weight: v(&w), bias: with_bias.then(|| v(&bias)), n, c, oc, layout });
                p.check(&format!("{what} forward"), &out);
                let (dinp, dw, db, dout) = (p.rand(n * c), p.rand(c * oc), p.rand(oc), p.rand(n * oc));
                run_both!(p, |v| Op::MatmulBackward { dinp: Some(v(&dinp)), dweight: Some(v(&dw)), dbias: with_bias.then(|| v(&db)), dout: v(&dout), inp: v(&inp), weight: v(&w), n, c, oc, layout });
                p.check(&format!("{what} dinp"), &dinp);
                p.check(&format!("{what} dweight"), &dw);
                p.check(&format!("{what} dbias"), &db);
            }
        }
    }
}

pub fn attention<B: Backend>(p: &Pair<B>) {
    for (b, t, c, nh) in [(2, 7, 24, 4), (1, 1, 8, 2), (2, 33, 20, 4), (1, 70, 12, 3)] {
        let what = format!("attention b={b} t={t} c={c} nh={nh}");
        let qkv = p.f32s(&p.random(b * t * 3 * c, 2.0));
        let (out, att) = (p.rand(b * t * c), p.rand(b * nh * t * t));
        run_both!(p, |v| Op::AttentionForward { out: v(&out), att: v(&att), qkv: v(&qkv), b, t, c, nh });
        p.check(&format!("{what} forward out"), &out);
        p.check(&format!("{what} forward att"), &att);
        let (dqkv, dout) = (p.rand(b * t * 3 * c), p.rand(b * t * c));
        let scratch_len = p.cpu.backend.attention_scratch_len(b, t, nh).max(p.dev.backend.attention_scratch_len(b, t, nh));
        let scratch = p.rand(scratch_len);
        run_both!(p, |v| Op::AttentionBackward { dqkv: v(&dqkv), scratch: v(&scratch), dout: v(&dout), qkv: v(&qkv), att: v(&att), b, t, c, nh });
        p.check(&format!("{what} backward dqkv"), &dqkv);
    }
}

pub fn kv_cache_decode<B: Backend>(p: &Pair<B>) {
    for (b, t_max, c, nh, prefill) in [(3, 9, 24, 4, 5), (1, 1, 8, 2, 0), (2, 150, 20, 4, 149)] {
        let what = format!("decode b={b} t_max={t_max} c={c} nh={nh}");
        let cache = p.f32s(&vec![0.0; b * 2 * c * t_max]);
        if prefill > 0 {
            let qkv = p.rand(b * prefill * 3 * c);
            run_both!(p, |v| Op::KvCacheWrite { cache: v(&cache), qkv: v(&qkv), b, t: prefill, pos0: 0, t_max, c, nh });
        }
        // One decode step at position `prefill`: write its k, v, then attend.
        let (qkv, out) = (p.f32s(&p.random(b * 3 * c, 2.0)), p.rand(b * c));
        run_both!(p, |v| Op::KvCacheWrite { cache: v(&cache), qkv: v(&qkv), b, t: 1, pos0: prefill, t_max, c, nh });
        p.check(&format!("{what} kv_cache_write"), &cache);
        run_both!(p, |v| Op::AttentionDecode { out: v(&out), qkv: v(&qkv), cache: v(&cache), b, pos: prefill, t_max, c, nh });
        p.check(&format!("{what} attention_decode"), &out);
    }
}

pub fn activation<B: Backend>(p: &Pair<B>) {
    for act in [Activation::Relu, Activation::Gelu, Activation::GeluNew] {
        for n in [1, 1000, 4099] {
            let what = format!("{act:?} n={n}");
            let (inp, out) = (p.f32s(&p.random(n, 6.0)), p.rand(n));
            run_both!(p, |v| Op::ActivationForward { out: v(&out), inp: v(&inp), n, act });
            p.check(&format!("{what} forward"), &out);
            let (dinp, dout) = (p.rand(n), p.rand(n));
            run_both!(p, |v| Op::ActivationBackward { dinp: v(&dinp), inp: v(&inp), dout: v(&dout), n, act });
            p.check(&format!("{what} backward"), &dinp);
            run_both!(p, |v| Op::ActivationBackward { dinp: v(&dout), inp: v(&inp), dout: v(&dout), n, act });
            p.check(&format!("{what} backward in place"), &dout);
        }
    }
}

pub fn crossentropy<B: Backend>(p: &Pair<B>) {
    for (n, v_) in [(37, 14), (1, 3), (20, 300)] {
        let what = format!("crossentropy n={n} v={v_}");
        let logits = p.f32s(&p.random(n * v_, 8.0));
        let mut tg = p.ints(n, v_ as u32);
        tg[0] = IGNORE_TARGET;
        let targets = p.u32s(&tg);
        let (losses, probs) = (p.rand(n), p.rand(n * v_));
        run_both!(p, |v| Op::SoftmaxCrossEntropyForward { losses: v(&losses), probs: v(&probs), logits: v(&logits), targets: v(&targets), n, v: v_ });
        p.check(&format!("{what} losses"), &losses);
        p.check(&format!("{what} probs"), &probs);
        let dlogits = p.rand(n * v_);
        run_both!(p, |v| Op::CrossEntropyBackward { dlogits: v(&dlogits), probs: v(&probs), targets: v(&targets), weights: None, scale: 0.37, n, v: v_ });
        p.check(&format!("{what} dlogits"), &dlogits);
        // Signed per-row weights (BalancedSubnet/Greedy), one of them 0, from a view offset.
        let mut wv = p.random(n + 2, 2.0);
        wv[n / 2 + 2] = 0.0;
        let weights = p.f32s(&wv);
        run_both!(p, |v| Op::CrossEntropyBackward { dlogits: v(&dlogits), probs: v(&probs), targets: v(&targets), weights: Some(v(&weights).slice(2, n)), scale: 0.37, n, v: v_ });
        p.check(&format!("{what} weighted dlogits"), &dlogits);
        run_both!(p, |v| Op::CrossEntropyBackward { dlogits: v(&probs), probs: v(&probs), targets: v(&targets), weights: None, scale: 1.0, n, v: v_ });
        p.check(&format!("{what} dlogits in place"), &probs);
    }
}

pub fn adamw<B: Backend>(p: &Pair<B>) {
    let n = 1237;
    let (params, m, v2) = (p.rand(n), p.f32s(&vec![0.0; n]), p.f32s(&vec![0.0; n]));
    for step in 1..=3u64 {
        let grads = p.f32s(&p.random(n, 0.1));
        run_both!(p, |v| Op::AdamW { params: v(&params), grads: v(&grads), m: v(&m), v: v(&v2), step, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.1 });
    }
    p.check("adamw params", &params);
    p.check("adamw m", &m);
    p.check("adamw v", &v2);
}

pub fn small_ops<B: Backend>(p: &Pair<B>) {
    let n = 1031;
    let (a, b, out) = (p.rand(n), p.rand(n), p.rand(n));
    run_both!(p, |v| Op::Residual { out: v(&out), a: v(&a), b: v(&b), n });
    p.check("residual", &out);
    run_both!(p, |v| Op::Residual { out: v(&a), a: v(&a), b: v(&b), n });
    p.check("residual in place", &a);
    // Column scale (in place) and column dot over awkward widths, a view offset and zero scales.
    for (rows, w) in [(37, 512), (1, 7), (150, 65)] {
        let mut sc = p.random(w, 1.5);
        sc[0] = 0.0;
        let (x, scale, dots, y) = (p.rand(rows * w + 3), p.f32s(&sc), p.rand(w + 2), p.rand(rows * w));
        run_both!(p, |v| Op::ScaleColumns { x: v(&x).slice(3, rows * w), scale: v(&scale), n: rows, w });
        p.check(&format!("scale_columns {rows}×{w}"), &x);
        run_both!(p, |v| Op::ColumnDot { out: v(&dots).slice(1, w), a: v(&x).slice(3, rows * w), b: v(&y), n: rows, w });
        p.check(&format!("column_dot {rows}×{w}"), &dots);
    }
    run_both!(p, |v| Op::Fill { dst: v(&out).slice(3, 500), value: 0.25 });
    p.check("fill", &out);
    let (src, dst) = (p.rand(2 * 7 * 30), p.rand(3 * 9 * 40));
    run_both!(p, |v| Op::CopyStrided { dst: v(&dst).slice(5, 1000), src: v(&src), batches: 2, rows: 7, cols: 13, dst_strides: [9 * 40, 40], src_strides: [7 * 30, 30] });
    p.check("copy_strided", &dst);
    for (rows, vocab, suppress) in [(37, 14, Some(11)), (1, 5, None), (5, 300, Some(0))] {
        let mut l = p.random(rows * vocab, 4.0);
        l[1] = l[3]; // a tie: the first maximal index wins
        l[0] = 9.0;
        l[3] = 9.0;
        let (logits, ids) = (p.f32s(&l), p.u32s(&vec![7; rows]));
        run_both!(p, |v| Op::Argmax { out: v(&ids), logits: v(&logits), n: rows, v: vocab, suppress });
        p.check_u32(&format!("argmax rows={rows} v={vocab}"), &ids);
    }
}

// ---- SMI screening ops (f64 arrays compared as f64) ----

use memsieve::backend::{f64_to_words, words_to_f64};

impl<B: Backend> Pair<'_, B> {
    /// The f64 array in a twin's words: |dev − cpu| ≤ rtol·(|cpu| + 1e-2·max|cpu|) + atol.
    pub fn check_f64(&self, what: &str, t: &Twin<B::Buffer>, rtol: f64, atol: f64) {
        let want = words_to_f64(&self.cpu.download_u32(View::new(&t.cpu, 0, t.len)));
        let got = words_to_f64(&self.dev.download_u32(View::new(&t.dev, 0, t.len)));
        let floor = 1e-2 * want.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = rtol * (w.abs() + floor) + atol;
            assert!((g - w).abs() <= tol || (g.is_nan() && w.is_nan()), "{what} on {}: f64 {i} is {g}, cpu says {w} (tolerance {tol:e})", self.dev.backend.name());
        }
    }
}

/// Projections of three unequal classes with class-dependent offsets, rows × k.
fn smi_inputs<B: Backend>(p: &Pair<B>, rows: usize, k: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let labels: Vec<u32> = (0..rows).map(|i| ((i * i + 3 * i) % (2 * classes + 1)).min(classes - 1) as u32).collect();
    let noise = p.random(rows * k, 1.0);
    let proj = noise.iter().enumerate().map(|(e, v)| v + 0.3 * labels[e / k] as f32 * ((e % k) as f32 * 0.7).sin()).collect();
    (proj, labels)
}

/// Directions from Philox on every backend: the same unit vectors within 1e-6.
pub fn smi_directions<B: Backend>(p: &Pair<B>) {
    for (seed, slice0, k, d) in [(0u64, 0usize, 3usize, 1usize), (42, 7, 5, 37), (u64::MAX - 5, 100_003, 2, 300), (9, 1, 1, 4097)] {
        let out = p.f32s(&vec![0.0; k * d]);
        run_both!(p, |v| Op::SmiDirections { out: v(&out), seed, slice0, k, d });
        let want = p.cpu.download_f32(cpu_view(&out));
        let got = p.dev.download_f32(dev_view(&out));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6, "smi_directions seed {seed} d {d}: element {i} is {g}, cpu {w}");
        }
    }
}

pub fn smi_project<B: Backend>(p: &Pair<B>) {
    for (n, d, k) in [(67, 45, 77), (1, 3, 1), (130, 129, 14)] {
        let (x, dirs, out) = (p.rand(n * d), p.rand(k * d), p.rand(n * k));
        run_both!(p, |v| Op::SmiProject { out: v(&out), x: v(&x), dirs: v(&dirs), n, d, k });
        p.check("smi_project", &out);
    }
}

/// Per-part statistics (n over several parts with a remainder, a class absent from some part), the
/// score of a model built from them, and the per-row summaries with excluded slices and ties.
pub fn smi_stats_score_summary<B: Backend>(p: &Pair<B>) {
    use memsieve::smi::psmi::{ClassSliceStats, Ddof, STATS_ROWS};
    for (n, k, classes) in [(2 * STATS_ROWS + 77, 13, 3), (5, 1, 2), (300, 67, 4)] {
        let (proj_v, labels_v) = smi_inputs(p, n, k, classes);
        let (proj, labels) = (p.f32s(&proj_v), p.u32s(&labels_v));
        let parts = n.div_ceil(STATS_ROWS);
        let stats = p.u32s(&vec![0; parts * 4 * classes * k]);
        run_both!(p, |v| Op::SmiClassStats { stats: v(&stats), proj: v(&proj), labels: v(&labels), n, k, classes });
        p.check_f64("smi_class_stats", &stats, 1e-5, 1e-9);

        // A model from the cpu statistics (slice 0 excluded), then pmi at a column offset.
        let mut total = ClassSliceStats::empty(classes, k);
        let words = words_to_f64(&p.cpu.download_u32(cpu_view(&stats)));
        for (part, w) in words.chunks(2 * classes * k).enumerate() {
            let rows = part * STATS_ROWS..((part + 1) * STATS_ROWS).min(n);
            let mut s = ClassSliceStats::of_rows(&proj_v[rows.start * k..rows.end * k], k, &labels_v[rows], classes);
            assert_eq!(s.mean, w[..classes * k].to_vec(), "cpu statistics are of_rows'");
            s.m2.copy_from_slice(&w[classes * k..]);
            total.merge(&s).unwrap();
        }
        let mut m = total.model(Ddof::One);
        m.degenerate[0] = true;
        let mut values = Vec::new();
        for a in [&m.mu, &m.inv_sigma, &m.log_weight, &m.log_prior] {
            values.extend_from_slice(a);
        }
        let model = p.u32s(&f64_to_words(&values));
        let excluded = p.u32s(&m.degenerate.iter().map(|&e| e as u32).collect::<Vec<_>>());
        let (ld, col0) = (k + 3, 2);
        let pmi = p.f32s(&vec![0.5; n * ld]);
        run_both!(p, |v| Op::SmiScore { pmi: v(&pmi), proj: v(&proj), labels: v(&labels), model: v(&model), excluded: v(&excluded), n, k, classes, ld, col0 });
        let (want, got) = (p.cpu.download_f32(cpu_view(&pmi)), p.dev.download_f32(dev_view(&pmi)));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 2e-5 * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()), "smi_score {n}×{k}: element {i} is {g}, cpu {w}");
        }

        // Summaries over the pmi rows (ld columns: the untouched 0.5 columns are ties), with one more
        // column excluded; k = 1 leaves rows of 3 values.
        let mut flags = vec![0u32; ld];
        flags[col0] = 1; // the excluded slice's NaN column
        flags[ld - 1] = 1;
        let flags = p.u32s(&flags);
        let out = p.u32s(&vec![0; 8 * n]);
        run_both!(p, |v| Op::SmiRowSummary { out: v(&out), pmi: v(&pmi), excluded: v(&flags), n, k: ld });
        p.check_f64("smi_row_summary", &out, 2e-5, 1e-6);
    }
}

// ---- attribution ops (src/attribution: one query row per row, recomputed above a scaled layer) ----

/// Context indices s·t_ctx + t of `n` rows over `seqs` sequences: row 0 at position 0, row 1 at
/// t_ctx − 1, the rest anywhere.
fn row_indices<B: Backend>(p: &Pair<B>, n: usize, seqs: usize, t_ctx: usize) -> Vec<u32> {
    let pos = p.ints(n, t_ctx as u32);
    (0..n)
        .map(|r| {
            let t = match r {
                0 => 0,
                1 => t_ctx - 1,
                _ => pos[r] as usize,
            };
            ((r % seqs) * t_ctx + t) as u32
        })
        .collect()
}

/// Labels for the KSG checks: with ≥ 4 classes, sample 0 alone in the last class (dropped), samples
/// 1–3 in class 1 (≤ k), class C − 2 absent, the rest spread over the others.
fn ksg_labels(n: usize, classes: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let spread = (i * 7 + i / 3) % if classes >= 4 { classes - 2 } else { classes };
            (match (classes >= 4, i) {
                (true, 0) => classes - 1,
                (true, 1..=3) => 1,
                (true, _) if spread == 1 => 0,
                _ => spread,
            }) as u32
        })
        .collect()
}

pub fn gather_rows<B: Backend>(p: &Pair<B>) {
    for (n, w, src_rows) in [(1, 5, 3), (7, 128, 20), (33, 37, 300), (301, 257, 450)] {
        let (src, index, scale) = (p.rand(src_rows * w), p.u32s(&p.ints(n, src_rows as u32)), p.rand(n));
        for scaled in [false, true] {
            // A tail past the n rows must stay as it was.
            let out = p.rand(n * w + 3);
            run_both!(p, |v| Op::GatherRows { out: v(&out), src: v(&src), index: v(&index), scale: scaled.then(|| v(&scale)), n, w });
            p.check(&format!("gather_rows n={n} w={w} scaled={scaled}"), &out);
        }
    }
}

pub fn attention_row<B: Backend>(p: &Pair<B>) {
    // (sequences, t_ctx, c, nh, rows): hs 32 and 16; one position, a short context, the TinyMem
    // context, one past 256; row counts not multiples of any workgroup.
    for (seqs, t_ctx, c, nh, n) in [(1, 1, 128, 4, 1), (2, 5, 48, 3, 7), (3, 150, 128, 4, 33), (2, 257, 48, 3, 12), (4, 5, 128, 4, 301)] {
        let what = format!("attention_row seqs={seqs} t_ctx={t_ctx} c={c} nh={nh} n={n}");
        let index = p.u32s(&row_indices(p, n, seqs, t_ctx));
        let ctx = p.f32s(&p.random(seqs * t_ctx * 3 * c, 2.0));
        let qkv = p.f32s(&p.random(n * 3 * c, 2.0));
        // att starts as noise: entries past each row's position must be written 0.
        let (out, att) = (p.rand(n * c), p.rand(n * nh * t_ctx));
        run_both!(p, |v| Op::AttentionRowForward { out: v(&out), att: v(&att), qkv: v(&qkv), ctx: v(&ctx), index: v(&index), n, t_ctx, c, nh });
        p.check(&format!("{what} forward out"), &out);
        p.check(&format!("{what} forward att"), &att);
        // The backward from the cpu's probabilities on both sides, so it is judged on its own.
        let att = p.f32s(&p.cpu.download_f32(cpu_view(&att)));
        let (dqkv, dout) = (p.rand(n * 3 * c), p.rand(n * c));
        run_both!(p, |v| Op::AttentionRowBackward { dqkv: v(&dqkv), dout: v(&dout), qkv: v(&qkv), ctx: v(&ctx), att: v(&att), index: v(&index), n, t_ctx, c, nh });
        p.check(&format!("{what} backward dqkv"), &dqkv);
        p.check(&format!("{what} qkv untouched"), &qkv);
        p.check(&format!("{what} ctx untouched"), &ctx);
    }
}

pub fn target_prob_backward<B: Backend>(p: &Pair<B>) {
    for (n, v_) in [(1, 3), (7, 14), (33, 300), (301, 37)] {
        // Softmax rows, targets at both ends of the vocabulary, every fourth row ignored.
        let mut probs_v: Vec<f32> = p.random(n * v_, 4.0).into_iter().map(f32::exp).collect();
        for row in probs_v.chunks_mut(v_) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
        let mut tg = p.ints(n, v_ as u32);
        tg[0] = v_ as u32 - 1;
        if n > 2 {
            tg[2] = 0;
        }
        for i in (1..n).step_by(4) {
            tg[i] = IGNORE_TARGET;
        }
        let targets = p.u32s(&tg);
        for log in [false, true] {
            let what = format!("target_prob_backward n={n} v={v_} log={log}");
            let (probs, dlogits) = (p.f32s(&probs_v), p.rand(n * v_));
            run_both!(p, |v| Op::TargetProbBackward { dlogits: v(&dlogits), probs: v(&probs), targets: v(&targets), n, v: v_, log });
            p.check(&what, &dlogits);
            p.check(&format!("{what} probs untouched"), &probs);
            run_both!(p, |v| Op::TargetProbBackward { dlogits: v(&probs), probs: v(&probs), targets: v(&targets), n, v: v_, log });
            p.check(&format!("{what} in place"), &probs);
        }
    }
}

pub fn ig_reduce<B: Backend>(p: &Pair<B>) {
    // (rows, path points per group, width, activation rows); 301 rows leave one row past the last group.
    for (n, m, w, src_rows) in [(1, 1, 5, 2), (7, 1, 33, 9), (60, 20, 128, 10), (301, 20, 37, 40), (40, 20, 257, 3)] {
        let (grads, src, index) = (p.rand(n * w), p.rand(src_rows * w), p.u32s(&p.ints(n, src_rows as u32)));
        // A tail past the n/m groups must stay as it was.
        let ig = p.rand(n / m * w + 3);
        run_both!(p, |v| Op::IgReduce { ig: v(&ig), grads: v(&grads), src: v(&src), index: v(&index), n, m, w });
        p.check(&format!("ig_reduce n={n} m={m} w={w}"), &ig);
    }
}

/// Dataset-level KSG (`SmiKsg`) against the cpu's `ksg_mi_columns`: n from 1 to 15001 (not multiples
/// of the 256 invocations), slice counts that are multiples of nothing, classes of ≤ k samples, a
/// singleton and an absent class, two class digits (18 classes), columns with ties, constant columns,
/// columns of tiny values around 0.
///
/// CUDA computes the cpu's f64 values and counts: |Δ| ≤ 1e-12 on every column. WGSL (no f64) counts
/// on the unscaled f32 values, which is exact arithmetic for the estimator (it is scale-free; f32
/// differences of neighbours are exact), so it is checked against `ksg_mi_1d` on the unscaled values
/// widened to f64 (exact differences) on every column, and against the cpu op on the untied columns.
/// The cpu's x/s rounding breaks exact ties of two distances either way: on the 1/8-grid columns
/// that changes many counts (the cpu value there is an artefact of rounding, which scikit-learn's
/// jitter exists to avoid), and at n = 15001 a continuous column has a few chance ties of f32
/// distances (neighbours ≈ 2000 ulps apart), each flipped count moving the MI by ≈ 1/(m·n) ≈ 7e-6.
pub fn smi_ksg<B: Backend>(p: &Pair<B>) {
    use memsieve::smi::{ksg::ksg_mi_1d, Classes};
    let wgsl = p.dev.backend.name() == "wgpu";
    let mut report = Vec::new();
    let mut informative = 0;
    for (n, k, classes, neighbors) in [(1, 3, 2, 3), (2, 2, 1, 3), (7, 5, 3, 3), (300, 37, 5, 3), (4097, 6, 4, 3), (15001, 4, 3, 3), (700, 9, 12, 1), (701, 5, 18, 5)] {
        let tol = match (wgsl, n) {
            (false, _) => 1e-12,
            (true, ..=5000) => 1e-5,
            (true, _) => 1e-4,
        };
        let mut counts = vec![0; classes];
        let of_sample = ksg_labels(n, classes);
        of_sample.iter().for_each(|&c| counts[c as usize] += 1);
        let cls = Classes { values: (0..classes as i64).collect(), of_sample, counts };
        let labels_v = ksg_labels(n, classes);
        let noise = p.random(n * k, 1.0);
        let proj_v: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(e, &v)| {
                let (i, j) = (e / k, e % k);
                let shifted = v + 0.5 * labels_v[i] as f32 * ((j as f32) * 0.9).cos();
                match j % 4 {
                    0 => shifted,
                    1 => (shifted * 8.0).round() / 8.0, // ties
                    2 => 0.75,                         // zero variance
                    _ => 1e-3 * (shifted - 0.3),       // small values on both sides of 0
                }
            })
            .collect();
        let (proj, labels) = (p.f32s(&proj_v), p.u32s(&labels_v));
        let scratch = p.u32s(&vec![0xdead_beef; p.dev.backend.smi_ksg_scratch_len(n, k, classes).max(1)]);
        let mi = p.u32s(&vec![0; 2 * k]);
        run_both!(p, |v| Op::SmiKsg { mi: v(&mi), proj: v(&proj), labels: v(&labels), scratch: v(&scratch), n, k, classes, neighbors });
        let want = words_to_f64(&p.cpu.download_u32(cpu_view(&mi)));
        let got = words_to_f64(&p.dev.download_u32(dev_view(&mi)));
        let (mut worst, mut worst_exact, mut worst_ties) = (0f64, 0f64, 0f64);
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = (g - w).abs();
            informative += (*w > 1e-3) as usize;
            let case = format!("smi_ksg n {n} k {k} classes {classes} neighbors {neighbors}: slice {j} is {g}");
            if wgsl {
                let col: Vec<f64> = (0..n).map(|i| proj_v[i * k + j] as f64).collect();
                let exact = ksg_mi_1d(&col, &cls, neighbors, false);
                worst_exact = worst_exact.max((g - exact).abs());
                assert!((g - exact).abs() <= 1e-5, "{case}, exact on the f32 values {exact} (tolerance 1e-5)");
                if j % 4 == 1 {
                    worst_ties = worst_ties.max(d);
                    continue;
                }
            }
            worst = worst.max(d);
            assert!(d <= tol, "{case}, cpu {w} (tolerance {tol:e})");
        }
        report.push(if wgsl {
            format!("n {n}: vs cpu {worst:.1e} (tied columns {worst_ties:.1e}), vs exact {worst_exact:.1e}")
        } else {
            format!("n {n}: {worst:.1e}")
        });
    }
    assert!(informative >= 8, "the KSG checks compare too few nonzero MI values ({informative})");
    println!("smi_ksg on {}: worst |Δ MI| {}", p.dev.backend.name(), report.join(", "));
}

// ---- masked-weight unlearning ops (issue 7; src/backend/cpu/mask.rs) ----

use memsieve::backend::SelectKey;

/// Values with many ties in |x|: ±0, magnitudes on a 1/8 grid with both signs, runs of one value.
fn tied_values<B: Backend>(p: &Pair<B>, n: usize) -> Vec<f32> {
    p.random(n, 1.0)
        .into_iter()
        .enumerate()
        .map(|(j, r)| match j % 6 {
            0 => 0.0,
            1 => -0.0,
            2 => 0.75,
            3 => -0.75,
            _ => (r * 8.0).round() / 8.0,
        })
        .collect()
}

/// SelectRank's cut (exact words) and MaskApply below and above it, for both key kinds, with and
/// without y, at ranks 0, 1, n/2, n − 1 and n, on tied values; then Greedy's in-place arg-max form.
pub fn select_mask<B: Backend>(p: &Pair<B>) {
    for n in [1usize, 7, 301, 4099] {
        let xv = tied_values(p, n);
        // y on a small grid of both signs (x·y stays exact and far from denormals).
        let yv: Vec<f32> = p.ints(n, 5).into_iter().map(|i| [-2.0, -0.5, 0.5, 1.0, 3.0][i as usize]).collect();
        let (x, y) = (p.f32s(&xv), p.f32s(&yv));
        let mut ks = vec![0, 1, n / 2, n - 1, n];
        ks.dedup();
        for key in [SelectKey::Abs, SelectKey::Signed] {
            for with_y in [false, true] {
                for &k in ks.iter().filter(|&&k| k <= n) {
                    let what = format!("select_rank n={n} k={k} {key:?} y={with_y}");
                    // The cut sits at a view offset inside a larger buffer.
                    let cut = p.u32s(&[7, 7, 7, 7]);
                    run_both!(p, |v| Op::SelectRank { cut: v(&cut).slice(1, 2), x: v(&x), y: with_y.then(|| v(&y)), n, k, key });
                    p.check_u32(&what, &cut);
                    for below in [true, false] {
                        let w = p.rand(n + 3);
                        run_both!(p, |v| Op::MaskApply { w: v(&w).slice(3, n), x: v(&x), y: with_y.then(|| v(&y)), cut: v(&cut).slice(1, 2), n, key, below });
                        p.check(&format!("mask_apply after {what} below={below}"), &w);
                    }
                }
            }
        }
        // Greedy: zero the arg-max of params·grads in place (w = x).
        let params = p.f32s(&xv);
        let cut = p.u32s(&[0, 0]);
        run_both!(p, |v| Op::SelectRank { cut: v(&cut), x: v(&params), y: Some(v(&y)), n, k: n - 1, key: SelectKey::Signed });
        run_both!(p, |v| Op::MaskApply { w: v(&params), x: v(&params), y: Some(v(&y)), cut: v(&cut), n, key: SelectKey::Signed, below: false });
        p.check_u32(&format!("greedy cut n={n}"), &cut);
        p.check(&format!("greedy mask_apply in place n={n}"), &params);
    }
}

/// The masked matmul forward and backward (dinp, the straight-through dscores, each alone and both)
/// on shapes not multiples of the 64-wide tiles, rows 1/7/301 and 1100 (the GPUs' split-k path of
/// the dscores GEMM), TinyMem's c_fc and c_proj, masks at ranks 0, 1, half, all but one and all.
pub fn masked_matmul<B: Backend>(p: &Pair<B>) {
    for (n, c, oc) in [(1, 33, 70), (7, 33, 70), (301, 70, 33), (1100, 33, 70), (37, 128, 512), (9, 512, 128)] {
        let cw = c * oc;
        let mut sv = p.random(cw, 1.0);
        // Ties in |S|: equal magnitudes of both signs and ±0 (sign 0 in the straight-through gradient).
        for j in (0..cw).step_by(5) {
            sv[j] = if j % 10 == 0 { 0.25 } else { -0.25 };
        }
        sv[1] = 0.0;
        sv[2] = -0.0;
        let (inp, w, bias, s) = (p.rand(n * c), p.rand(cw), p.rand(oc), p.f32s(&sv));
        for k in [0, 1, cw / 2, cw - 1, cw] {
            let what = format!("masked_matmul n={n} c={c} oc={oc} k={k}");
            let cut = p.u32s(&[0, 0]);
            run_both!(p, |v| Op::SelectRank { cut: v(&cut), x: v(&s), y: None, n: cw, k, key: SelectKey::Abs });
            for with_bias in [true, false] {
                let out = p.rand(n * oc);
                run_both!(p, |v| Op::MaskedMatmulForward { out: v(&out), inp: v(&inp), weight: v(&w), bias: with_bias.then(|| v(&bias)), scores: v(&s), cut: v(&cut), n, c, oc });
                p.check(&format!("{what} forward bias={with_bias}"), &out);
            }
            let dout = p.rand(n * oc);
            for (with_dinp, with_ds) in [(true, true), (true, false), (false, true)] {
                let (dinp, ds) = (p.rand(n * c), p.rand(cw));
                run_both!(p, |v| Op::MaskedMatmulBackward { dinp: with_dinp.then(|| v(&dinp)), dscores: with_ds.then(|| v(&ds)), dout: v(&dout), inp: v(&inp), weight: v(&w), scores: v(&s), cut: v(&cut), n, c, oc });
                p.check(&format!("{what} dinp ({with_dinp}, {with_ds})"), &dinp);
                p.check(&format!("{what} dscores ({with_dinp}, {with_ds})"), &ds);
            }
        }
    }
}

/// SOU saliency (a partial last block, an all-zero block, one dominant gradient, block 1 and a
/// block longer than n) and three SGD-with-momentum steps (the first, then two that use the buffer).
pub fn sou_sgd<B: Backend>(p: &Pair<B>) {
    for (n, block) in [(137, 50), (1, 50), (301, 7), (40, 1), (1037, 50)] {
        let mut gv = p.random(n, 1e-3);
        for g in gv.iter_mut().skip(50).take(50) {
            *g = 0.0;
        }
        if n > 120 {
            gv[120] = 1e-2;
        }
        let (w, g, out) = (p.rand(n), p.f32s(&gv), p.rand(n + 2));
        run_both!(p, |v| Op::SouScores { out: v(&out).slice(2, n), w: v(&w), g: v(&g), n, block, lambda: 1e-7 });
        p.check(&format!("sou_scores n={n} block={block}"), &out);
    }
    let n = 1237;
    let (params, buf) = (p.rand(n), p.rand(n));
    for step in 0..3 {
        let grads = p.f32s(&p.random(n, 0.5));
        run_both!(p, |v| Op::SgdMomentum { params: v(&params), grads: v(&grads), buf: v(&buf), lr: 0.1, momentum: 0.9, weight_decay: 5e-4, first: step == 0 });
        p.check(&format!("sgd_momentum step {step} params"), &params);
        p.check(&format!("sgd_momentum step {step} buf"), &buf);
    }
}

/// Attention-distribution statistics: T = 1, 37, 150, 257 (not multiples of the 64-key blocks),
/// head sizes 16, 32 and 64, query ranges from 0 and from t0 > 0 (down to one query), k from 1 to
/// 16 and larger than some rows, a view inside a larger buffer, and scores on a coarse grid (exact
/// ties), where only the tie rule decides which keys are the top k.
pub fn attention_stats<B: Backend>(p: &Pair<B>) {
    use memsieve::backend::ATTENTION_STATS;
    for (b, t, c, nh, t0, t1, top_k, grid) in [
        (1, 1, 128, 4, 0, 1, 5, false),
        (2, 37, 48, 3, 0, 37, 16, false),
        (1, 150, 128, 4, 50, 150, 5, false),
        (2, 257, 48, 3, 100, 257, 7, false),
        (3, 70, 128, 2, 69, 70, 1, false),
        (2, 150, 128, 4, 3, 90, 16, true),
    ] {
        let what = format!("attention_stats b={b} t={t} c={c} nh={nh} queries {t0}..{t1} k={top_k}");
        let mut x = p.random(b * t * 3 * c, 2.0);
        if grid {
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        let qkv = p.f32s(&x);
        let len = b * nh * (t1 - t0) * ATTENTION_STATS;
        // out starts as noise, with a guard word on each side that must survive.
        let out = p.rand(len + 2);
        run_both!(p, |v| Op::AttentionStats { out: v(&out).slice(1, len), qkv: v(&qkv), b, t, c, nh, t0, t1, top_k });
        p.check(&what, &out);
        p.check(&format!("{what} qkv untouched"), &qkv);
    }
}

// ---- training regularizers (tinymem.md §5.1; src/backend/cpu/regularize.rs) ----

/// The spectral power iteration (five steps) and the penalty gradient (both penalties) on blocks of
/// awkward shapes: two column blocks strided inside a 300 × 100 matrix, a single row, a single
/// column, and TinyMem's 128 × 512 and 512 × 128 MLP matrices.
pub fn spectral<B: Backend>(p: &Pair<B>) {
    use memsieve::regularize::spectral::{table_words, SpectralBlock};
    let shapes = [(3, 300, 37, 100), (40, 300, 63, 100), (30_003, 1, 7, 7), (30_010, 9, 1, 1), (30_019, 128, 512, 512), (95_555, 512, 128, 128)];
    let mut blocks = Vec::new();
    let mut state = 0;
    for (off, rows, cols, ld) in shapes {
        blocks.push(SpectralBlock { off, rows, cols, ld, state });
        state += rows + cols;
    }
    let params = p.f32s(&p.random(95_555 + 512 * 128 + 5, 0.1));
    let table = p.u32s(&table_words(&blocks));
    let st = p.f32s(&p.random(state, 1.0));
    let sigma = p.rand(blocks.len());
    let (nb, entries) = (blocks.len(), blocks.iter().map(|b| b.rows * b.cols).sum());
    for it in 0..5 {
        run_both!(p, |v| Op::SpectralPowerIteration { state: v(&st), sigma: v(&sigma), params: v(&params), table: v(&table), blocks: nb, entries });
        p.check(&format!("spectral power iteration {it}: u, v"), &st);
        p.check(&format!("spectral power iteration {it}: sigma"), &sigma);
    }
    for linear in [false, true] {
        let grads = p.f32s(&p.random(95_555 + 512 * 128 + 5, 1e-3));
        run_both!(p, |v| Op::SpectralGradAdd { grads: v(&grads), state: v(&st), sigma: v(&sigma), table: v(&table), blocks: nb, entries, lambda: 0.37, linear });
        p.check(&format!("spectral gradient (linear {linear})"), &grads);
    }
}

/// Example-tied dropout, training and evaluation masks, channels and positions, in place and not,
/// on widths and lengths that are not multiples of the workgroups: the masks must agree bit for bit.
pub fn example_tied_dropout<B: Backend>(p: &Pair<B>) {
    use memsieve::backend::EtdMode::{self, Channels, Positions};
    let cases: [(usize, usize, usize, EtdMode, bool, usize, bool); 8] = [
        (3, 5, 37, Channels, true, 0, false),
        (2, 7, 128, Channels, true, 0, true),
        (4, 1, 128, Channels, false, 0, false),
        (1, 3, 1000, Channels, true, 0, false),
        (3, 130, 20, Positions, true, 0, false),
        (5, 1, 16, Positions, false, 28, true),
        (6, 1, 9, Positions, true, 31, false),
        (2, 45, 3, Positions, false, 0, false),
    ];
    for (rows, t, c, mode, training, pos0, in_place) in cases {
        let n = rows * t;
        let (keep, mem) = match mode {
            Channels => (c / 5, (c / 10) as u32),
            Positions => (30, 429_496_730),
        };
        let scale = if training { 1.0 } else { 1.5 };
        let x = p.rand(n * c + 2);
        let out = if in_place { None } else { Some(p.rand(n * c + 2)) };
        let ids = p.u32s(&(0..rows).map(|r| 1000 * r as u32 + 17).collect::<Vec<_>>());
        let what = format!("example_tied_dropout rows={rows} t={t} c={c} {mode:?} training={training} pos0={pos0} in_place={in_place}");
        let dst = out.as_ref().unwrap_or(&x);
        run_both!(p, |v| Op::ExampleTiedDropout { out: v(dst).slice(1, n * c), x: v(&x).slice(1, n * c), ids: training.then(|| v(&ids)), n, t, c, pos0, seed: 0x1234_5678_9abc, mode, keep, mem, scale });
        p.check_u32(&what, dst);
    }
}

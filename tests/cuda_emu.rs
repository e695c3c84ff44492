//! The cuda backend's kernels and host code against the cpu backend: every op on awkward shapes
//! (sizes that are not multiples of tiles or blocks, batch 1, T = 1, T = context), forward and
//! backward, then a short training run and greedy generation through `Model`.
//!
//! By default they run on the CUDA emulator (kernels/*.cu compiled as C++), so every kernel executes
//! in CI without a GPU. With `MEMSIEVE_TEST_CUDA=1` the same tests run on GPU 0 through the driver.

mod common;
#[path = "common/backend_parity.rs"]
mod backend_parity;

use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::cuda::{emu, CudaDriverBackend, CudaEmuBackend};
use memsieve::backend::{Backend, Device, Op, WeightLayout, IGNORE_TARGET};
use memsieve::model::config::{Activation, ModelConfig};
use memsieve::model::generate::GenerateOptions;
use memsieve::model::{AdamW, Model};
use backend_parity::{rand_ids, rand_vec, Case};
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

fn gpu_requested() -> bool {
    std::env::var("MEMSIEVE_TEST_CUDA").is_ok_and(|v| v == "1")
}

fn gpu_device() -> Arc<Device<CudaDriverBackend>> {
    static DEV: OnceLock<Arc<Device<CudaDriverBackend>>> = OnceLock::new();
    DEV.get_or_init(|| {
        let backend = CudaDriverBackend::new(0).unwrap_or_else(|e| panic!("MEMSIEVE_TEST_CUDA=1 but {e}"));
        println!("testing on {}", backend.describe());
        Arc::new(Device::new(backend))
    })
    .clone()
}

/// The shared emulator device, or None (after a loud message) when this build has no emulator;
/// under CI=true a missing emulator fails instead.
fn emu_device() -> Option<Arc<Device<CudaEmuBackend>>> {
    static DEV: OnceLock<Arc<Device<CudaEmuBackend>>> = OnceLock::new();
    if !emu::built() {
        let msg = "the CUDA emulator was not built into this test binary (no C++ compiler at build time)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
        return None;
    }
    Some(DEV.get_or_init(|| Arc::new(Device::new(CudaEmuBackend::emulator().expect("emulator")))).clone())
}

fn cpu() -> Arc<Device<CpuBackend>> {
    common::cpu_device()
}

/// One #[test] per body, on the GPU when asked, else on the emulator.
macro_rules! cuda_test {
    ($name:ident, $body:ident) => {
        #[test]
        fn $name() {
            if gpu_requested() {
                $body(&gpu_device());
            } else if let Some(dev) = emu_device() {
                $body(&dev);
            }
        }
    };
}

/// The shared op-by-op checks of tests/common/parity.rs (the ones the wgpu backend passes too).
mod shared {
    use super::*;
    use common::parity::{self, Pair};

    macro_rules! shared_parity_tests {
        ($($name:ident),*) => {$(
            #[test]
            fn $name() {
                let cpu = common::cpu_device();
                if gpu_requested() {
                    parity::$name(&Pair::new(&cpu, &gpu_device()));
                } else if let Some(dev) = emu_device() {
                    parity::$name(&Pair::new(&cpu, &dev));
                }
            }
        )*};
    }
    shared_parity_tests!(
        encoder, layernorm, matmul, attention, kv_cache_decode, activation, crossentropy, adamw, small_ops, smi_directions,
        smi_project, smi_stats_score_summary, gather_rows, attention_row, target_prob_backward, ig_reduce, smi_ksg, select_mask, masked_matmul, sou_sgd, attention_stats,
        spectral, example_tied_dropout
    );
}

// This file's own cases (common/backend_parity.rs compares every buffer after each op, inputs included):
// in-place calls, argmax ties/NaN/suppress, and shapes that take the split-reduction paths.
cuda_test!(encoder_forward_and_backward_match_cpu, encoder);
cuda_test!(layernorm_forward_and_backward_match_cpu, layernorm);
cuda_test!(matmul_forward_and_backward_match_cpu, matmul);
cuda_test!(attention_forward_and_backward_match_cpu, attention);
cuda_test!(kv_cache_write_and_decode_match_cpu, kv_cache);
cuda_test!(activations_match_cpu, activation);
cuda_test!(residual_fill_and_strided_copy_match_cpu, small_ops);
cuda_test!(softmax_crossentropy_matches_cpu, crossentropy);
cuda_test!(adamw_matches_cpu, adamw);
cuda_test!(argmax_matches_cpu_ties_nan_and_suppress, argmax);
cuda_test!(five_training_steps_give_the_cpu_losses, training);
cuda_test!(greedy_generation_gives_the_cpu_tokens, generation);
cuda_test!(pytorch_fixtures_logits_loss_and_gradients_match, pytorch_golden);

fn encoder<B: Backend>(dev: &Arc<Device<B>>) {
    for (i, &(b, t, c, vocab, pos0)) in [(1, 1, 5, 3, 0), (3, 7, 20, 11, 2), (2, 9, 40, 6, 0)].iter().enumerate() {
        let s = i as u64 * 100;
        let n = b * t;
        let mut k = Case::new();
        let out = k.f32("out", vec![0.0; n * c]);
        let tokens = k.u32("tokens", rand_ids(s + 1, n, vocab as u32));
        let wte = k.f32("wte", rand_vec(s + 2, vocab * c, -1.0, 1.0));
        let wpe = k.f32("wpe", rand_vec(s + 3, (pos0 + t + 1) * c, -1.0, 1.0));
        k.check(&cpu(), dev, &format!("encoder_forward b{b} t{t} c{c}"), &Op::EncoderForward { out, tokens, wte, wpe, b, t, c, pos0 });

        let mut k = Case::new();
        let dwte = k.f32("dwte", rand_vec(s + 4, vocab * c, -1.0, 1.0));
        let dwpe = k.f32("dwpe", rand_vec(s + 5, (pos0 + t + 1) * c, -1.0, 1.0));
        let dout = k.f32("dout", rand_vec(s + 6, n * c, -1.0, 1.0));
        let tokens = k.u32("tokens", rand_ids(s + 7, n, vocab as u32));
        k.check(&cpu(), dev, &format!("encoder_backward b{b} t{t} c{c}"), &Op::EncoderBackward { dwte, dwpe, dout, tokens, b, t, c, pos0 });
    }
}

/// Row means and 1/std of x [n, c] (what LayerNormForward caches).
fn row_stats(x: &[f32], n: usize, c: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    (0..n)
        .map(|r| {
            let row = &x[r * c..(r + 1) * c];
            let mu = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
            (mu as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
        })
        .unzip()
}

fn layernorm<B: Backend>(dev: &Arc<Device<B>>) {
    for (i, &(n, c)) in [(1, 7), (37, 70), (5, 130), (600, 40)].iter().enumerate() {
        let s = i as u64 * 100;
        let x = rand_vec(s + 1, n * c, -2.0, 3.0);
        let mut k = Case::new();
        let out = k.f32("out", vec![0.0; n * c]);
        let mean = k.f32("mean", vec![0.0; n]);
        let rstd = k.f32("rstd", vec![0.0; n]);
        let inp = k.f32("inp", x.clone());
        let weight = k.f32("weight", rand_vec(s + 2, c, 0.5, 1.5));
        let bias = k.f32("bias", rand_vec(s + 3, c, -0.5, 0.5));
        let op = Op::LayerNormForward { out, mean, rstd, inp, weight, bias, n, c, eps: 1e-5 };
        k.check(&cpu(), dev, &format!("layernorm_forward n{n} c{c}"), &op);

        let (mu, rs) = row_stats(&x, n, c, 1e-5);
        let mut k = Case::new();
        let dinp = k.f32("dinp", rand_vec(s + 4, n * c, -1.0, 1.0));
        let dweight = k.f32("dweight", rand_vec(s + 5, c, -1.0, 1.0));
        let dbias = k.f32("dbias", rand_vec(s + 6, c, -1.0, 1.0));
        let dout = k.f32("dout", rand_vec(s + 7, n * c, -1.0, 1.0));
        let inp = k.f32("inp", x);
        let weight = k.f32("weight", rand_vec(s + 2, c, 0.5, 1.5));
        let mean = k.f32("mean", mu);
        let rstd = k.f32("rstd", rs);
        let op = Op::LayerNormBackward { dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c };
        k.check(&cpu(), dev, &format!("layernorm_backward n{n} c{c}"), &op);
    }
}

fn matmul<B: Backend>(dev: &Arc<Device<B>>) {
    // The last two reduce over enough rows that d(W) and d(bias) take the split-reduction path.
    let shapes = [(1, 5, 3), (37, 33, 70), (70, 130, 65), (130, 17, 1), (1100, 20, 9), (600, 3, 40)];
    for (i, &(n, c, oc)) in shapes.iter().enumerate() {
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for with_bias in [true, false] {
                let s = i as u64 * 100 + with_bias as u64 * 10 + (layout == WeightLayout::OutIn) as u64 * 1000;
                let label = format!("n{n} c{c} oc{oc} {layout:?} bias={with_bias}");
                let mut k = Case::new();
                let out = k.f32("out", rand_vec(s + 1, n * oc, -1.0, 1.0));
                let inp = k.f32("inp", rand_vec(s + 2, n * c, -1.0, 1.0));
                let weight = k.f32("weight", rand_vec(s + 3, c * oc, -1.0, 1.0));
                let bias = with_bias.then(|| k.f32("bias", rand_vec(s + 4, oc, -1.0, 1.0)));
                let op = Op::MatmulForward { out, inp, weight, bias, n, c, oc, layout };
                k.check(&cpu(), dev, &format!("matmul_forward {label}"), &op);

                let mut k = Case::new();
                let dinp = k.f32("dinp", rand_vec(s + 5, n * c, -1.0, 1.0));
                let dweight = k.f32("dweight", rand_vec(s + 6, c * oc, -1.0, 1.0));
                let dbias = with_bias.then(|| k.f32("dbias", rand_vec(s + 7, oc, -1.0, 1.0)));
                let dout = k.f32("dout", rand_vec(s + 8, n * oc, -1.0, 1.0));
                let inp = k.f32("inp", rand_vec(s + 2, n * c, -1.0, 1.0));
                let weight = k.f32("weight", rand_vec(s + 3, c * oc, -1.0, 1.0));
                let op = Op::MatmulBackward { dinp: Some(dinp), dweight: Some(dweight), dbias, dout, inp, weight, n, c, oc, layout };
                k.check(&cpu(), dev, &format!("matmul_backward {label}"), &op);
                // The LM head's d(W)-only call and the first layer's d(inp)-only call.
                let only_dw = Op::MatmulBackward { dinp: None, dweight: Some(dweight), dbias: None, dout, inp, weight, n, c, oc, layout };
                k.check(&cpu(), dev, &format!("matmul_backward dW only {label}"), &only_dw);
                let only_dx = Op::MatmulBackward { dinp: Some(dinp), dweight: None, dbias: None, dout, inp, weight, n, c, oc, layout };
                k.check(&cpu(), dev, &format!("matmul_backward dinp only {label}"), &only_dx);
            }
        }
    }
}

/// Causal attention probabilities [b·nh, t, t]: random positive rows normalized over 0..=i, 0 above.
fn causal_probs(seed: u64, bnh: usize, t: usize) -> Vec<f32> {
    let mut p = rand_vec(seed, bnh * t * t, 0.05, 1.0);
    for row in p.chunks_mut(t).enumerate().map(|(r, row)| (r % t, row)).collect::<Vec<_>>() {
        let (i, row) = row;
        let s: f32 = row[..=i].iter().sum();
        row[..=i].iter_mut().for_each(|x| *x /= s);
        row[i + 1..].fill(0.0);
    }
    p
}

fn attention<B: Backend>(dev: &Arc<Device<B>>) {
    // T = 1; odd head sizes; T longer than a warp; T longer than one 64-row tile of keys.
    for (i, &(b, t, c, nh)) in [(1, 1, 4, 1), (2, 9, 12, 3), (1, 33, 16, 2), (3, 5, 10, 1), (1, 70, 8, 2)].iter().enumerate() {
        let s = i as u64 * 100;
        let label = format!("b{b} t{t} c{c} nh{nh}");
        let mut k = Case::new();
        let out = k.f32("out", vec![0.0; b * t * c]);
        let att = k.f32("att", vec![0.0; b * nh * t * t]);
        let qkv = k.f32("qkv", rand_vec(s + 1, b * t * 3 * c, -2.0, 2.0));
        k.check(&cpu(), dev, &format!("attention_forward {label}"), &Op::AttentionForward { out, att, qkv, b, t, c, nh });

        let mut k = Case::new();
        let dqkv = k.f32("dqkv", rand_vec(s + 2, b * t * 3 * c, -1.0, 1.0));
        let scratch = k.scratch("scratch", dev.backend.attention_scratch_len(b, t, nh).max(b * nh * t * t));
        let dout = k.f32("dout", rand_vec(s + 3, b * t * c, -1.0, 1.0));
        let qkv = k.f32("qkv", rand_vec(s + 1, b * t * 3 * c, -2.0, 2.0));
        let att = k.f32("att", causal_probs(s + 4, b * nh, t));
        let op = Op::AttentionBackward { dqkv, scratch, dout, qkv, att, b, t, c, nh };
        k.check(&cpu(), dev, &format!("attention_backward {label}"), &op);
    }
}

fn kv_cache<B: Backend>(dev: &Arc<Device<B>>) {
    for (i, &(b, t, pos0, t_max, c, nh)) in [(2, 5, 0, 9, 12, 3), (1, 1, 4, 9, 12, 3), (3, 7, 0, 7, 8, 2)].iter().enumerate() {
        let s = i as u64 * 100;
        let hs = c / nh;
        let mut k = Case::new();
        let cache = k.f32("cache", rand_vec(s + 1, b * nh * 2 * hs * t_max, -1.0, 1.0));
        let qkv = k.f32("qkv", rand_vec(s + 2, b * t * 3 * c, -1.0, 1.0));
        let op = Op::KvCacheWrite { cache, qkv, b, t, pos0, t_max, c, nh };
        k.check(&cpu(), dev, &format!("kv_cache_write b{b} t{t} pos0 {pos0}"), &op);
    }
    for (i, &(b, pos, t_max, c, nh)) in [(2, 0, 9, 12, 3), (2, 8, 9, 12, 3), (3, 5, 7, 8, 2), (1, 70, 80, 16, 1)].iter().enumerate() {
        let s = i as u64 * 100 + 50;
        let hs = c / nh;
        let mut k = Case::new();
        let out = k.f32("out", vec![0.0; b * c]);
        let qkv = k.f32("qkv", rand_vec(s + 1, b * 3 * c, -2.0, 2.0));
        let cache = k.f32("cache", rand_vec(s + 2, b * nh * 2 * hs * t_max, -2.0, 2.0));
        let op = Op::AttentionDecode { out, qkv, cache, b, pos, t_max, c, nh };
        k.check(&cpu(), dev, &format!("attention_decode b{b} pos{pos}"), &op);
    }
}

fn activation<B: Backend>(dev: &Arc<Device<B>>) {
    for act in [Activation::Relu, Activation::Gelu, Activation::GeluNew] {
        for (i, &n) in [1usize, 1000].iter().enumerate() {
            let s = i as u64 * 10;
            let mut k = Case::new();
            let out = k.f32("out", vec![0.0; n]);
            let inp = k.f32("inp", rand_vec(s + 1, n, -4.0, 4.0));
            k.check(&cpu(), dev, &format!("activation_forward {act:?} n{n}"), &Op::ActivationForward { out, inp, n, act });

            let mut k = Case::new();
            let dinp = k.f32("dinp", vec![0.0; n]);
            let inp = k.f32("inp", rand_vec(s + 1, n, -4.0, 4.0));
            let dout = k.f32("dout", rand_vec(s + 2, n, -1.0, 1.0));
            k.check(&cpu(), dev, &format!("activation_backward {act:?} n{n}"), &Op::ActivationBackward { dinp, inp, dout, n, act });
            // In place on dout, as the model calls it.
            k.check(&cpu(), dev, &format!("activation_backward in place {act:?} n{n}"), &Op::ActivationBackward { dinp: dout, inp, dout, n, act });
        }
    }
}

fn small_ops<B: Backend>(dev: &Arc<Device<B>>) {
    let n = 1001;
    let mut k = Case::new();
    let out = k.f32("out", vec![0.0; n]);
    let a = k.f32("a", rand_vec(1, n, -1.0, 1.0));
    let b = k.f32("b", rand_vec(2, n, -1.0, 1.0));
    k.check(&cpu(), dev, "residual", &Op::Residual { out, a, b, n });
    k.check(&cpu(), dev, "residual in place", &Op::Residual { out: a, a, b, n });

    let mut k = Case::new();
    let dst = k.f32("dst", rand_vec(3, n, -1.0, 1.0));
    k.check(&cpu(), dev, "fill (a sub-range)", &Op::Fill { dst: dst.slice(3, 900), value: 2.5 });

    let mut k = Case::new();
    let dst = k.f32("dst", rand_vec(4, 100, -1.0, 1.0));
    let src = k.f32("src", rand_vec(5, 60, -1.0, 1.0));
    let op = Op::CopyStrided { dst: dst.slice(7, 90), src: src.slice(1, 55), batches: 2, rows: 3, cols: 5, dst_strides: [40, 10], src_strides: [20, 6] };
    k.check(&cpu(), dev, "copy_strided", &op);
}

fn crossentropy<B: Backend>(dev: &Arc<Device<B>>) {
    for (i, &(n, v)) in [(1, 1), (7, 14), (5, 300), (3, 1500)].iter().enumerate() {
        let s = i as u64 * 100;
        let mut tg = rand_ids(s + 1, n, v as u32);
        if n > 2 {
            tg[1] = IGNORE_TARGET;
        }
        let mut k = Case::new();
        let losses = k.f32("losses", vec![0.0; n]);
        let probs = k.f32("probs", vec![0.0; n * v]);
        let logits = k.f32("logits", rand_vec(s + 2, n * v, -5.0, 5.0));
        let targets = k.u32("targets", tg.clone());
        let op = Op::SoftmaxCrossEntropyForward { losses, probs, logits, targets, n, v };
        k.check(&cpu(), dev, &format!("softmax_crossentropy_forward n{n} v{v}"), &op);

        let mut k = Case::new();
        let dlogits = k.f32("dlogits", rand_vec(s + 3, n * v, -1.0, 1.0));
        let probs = k.f32("probs", rand_vec(s + 4, n * v, 0.0, 1.0));
        let targets = k.u32("targets", tg);
        let scale = 1.0 / n as f32;
        k.check(&cpu(), dev, &format!("crossentropy_backward n{n} v{v}"), &Op::CrossEntropyBackward { dlogits, probs, targets, weights: None, scale, n, v });
        let op = Op::CrossEntropyBackward { dlogits: probs, probs, targets, weights: None, scale, n, v };
        k.check(&cpu(), dev, &format!("crossentropy_backward in place n{n} v{v}"), &op);
    }
}

fn adamw<B: Backend>(dev: &Arc<Device<B>>) {
    let n = 1001;
    for step in [1u64, 7] {
        let mut k = Case::new();
        let params = k.f32("params", rand_vec(1, n, -1.0, 1.0));
        let grads = k.f32("grads", rand_vec(2, n, -0.1, 0.1));
        let m = k.f32("m", rand_vec(3, n, -0.01, 0.01));
        let v = k.f32("v", rand_vec(4, n, 0.0, 0.001));
        let h = AdamW::default();
        let op = Op::AdamW { params, grads, m, v, step, lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weight_decay };
        k.check(&cpu(), dev, &format!("adamw step {step}"), &op);
    }
}

fn argmax<B: Backend>(dev: &Arc<Device<B>>) {
    let (n, v) = (6, 300);
    let mut l = rand_vec(1, n * v, -3.0, 3.0);
    l[0] = 9.0; // row 0: a tie between 0 and 250 → 0
    l[250] = 9.0;
    l[v + 299] = 9.0; // row 1: the maximum in the last column
    l[2 * v + 40] = f32::NAN; // row 2: NaN wins, the first of two
    l[2 * v + 100] = f32::NAN;
    l[2 * v + 10] = 100.0;
    l[3 * v..4 * v].fill(f32::NEG_INFINITY); // row 3: all −∞ → 0 (or the first unsuppressed)
    l[4 * v + 7] = 50.0; // row 4: the maximum is suppressed
    l[4 * v + 8] = 49.0;
    for suppress in [None, Some(7u32), Some(0)] {
        let mut k = Case::new();
        let out = k.u32("out", vec![99; n]);
        let logits = k.f32("logits", l.clone());
        k.check(&cpu(), dev, &format!("argmax suppress {suppress:?}"), &Op::Argmax { out, logits, n, v, suppress });
    }
    // A one-token vocabulary whose only token is suppressed: no candidate (u32::MAX) on both backends.
    let mut k = Case::new();
    let out = k.u32("out", vec![99; 2]);
    let logits = k.f32("logits", vec![1.0, 2.0]);
    k.check(&cpu(), dev, "argmax v1 all suppressed", &Op::Argmax { out, logits, n: 2, v: 1, suppress: Some(0) });
}

/// A tiny TinyMem-like model: 2 layers, width 24, 3 heads (head size 8), context 16.
fn tiny_config(activation: Activation) -> ModelConfig {
    let mut cfg = ModelConfig::tinymem_math(2);
    cfg.n_embd = 24;
    cfg.n_head = 3;
    cfg.n_positions = 16;
    cfg.activation = activation;
    cfg
}

fn training<B: Backend>(dev: &Arc<Device<B>>) {
    for act in [Activation::Relu, Activation::GeluNew] {
        let cfg = tiny_config(act);
        let (b, t) = (2, cfg.n_positions);
        let tokens = rand_ids(7, b * t, cfg.vocab_size as u32);
        let mut on_dev = Model::new(dev.clone(), cfg.clone(), 1).unwrap();
        let mut on_cpu = Model::new(cpu(), cfg.clone(), 1).unwrap();
        let targets = on_cpu.lm_targets(&tokens, b, t, false);
        let h = AdamW::default();
        for step in 0..5 {
            let want = on_cpu.train_step(&tokens, &targets, b, t, &h).unwrap();
            let got = on_dev.train_step(&tokens, &targets, b, t, &h).unwrap();
            println!("{act:?} step {step}: loss {got:.7} vs cpu {want:.7}");
            assert!((got - want).abs() <= 1e-4 * want.abs(), "{act:?} step {step}: loss {got} vs cpu {want}");
        }
    }
}

fn generation<B: Backend>(dev: &Arc<Device<B>>) {
    let cfg = tiny_config(Activation::Relu);
    // Train a few steps first so the logits are not near-uniform (argmax ties would be fragile).
    let (b, t) = (2, cfg.n_positions);
    let tokens = rand_ids(9, b * t, cfg.vocab_size as u32);
    let mut on_cpu = Model::new(cpu(), cfg.clone(), 3).unwrap();
    let targets = on_cpu.lm_targets(&tokens, b, t, false);
    let h = AdamW { lr: 1e-2, ..AdamW::default() };
    for _ in 0..3 {
        on_cpu.train_step(&tokens, &targets, b, t, &h).unwrap();
    }
    let mut on_dev = Model::from_params(dev.clone(), cfg.clone(), &on_cpu.download_params()).unwrap();
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| rand_ids(20 + i, 4, 10)).collect();
    let opts = GenerateOptions { max_length: cfg.n_positions, min_length: cfg.n_positions, batch: 2 };
    let want = on_cpu.generate(&prompts, &opts).unwrap();
    let got = on_dev.generate(&prompts, &opts).unwrap();
    assert_eq!(got, want, "greedy generation differs from the cpu backend");
    println!("generated {:?}", got);
}

// --- The emulator itself (kernels/emu_selftest.cu): barriers in loops, early exit, warp operations,
// and a divergent barrier reported instead of hanging. These run on the emulator even when
// MEMSIEVE_TEST_CUDA=1, since they test the emulator, not the GPU.

fn ptr<T>(v: &mut [T]) -> *mut c_void {
    v.as_mut_ptr() as *mut c_void
}

#[test]
fn emulator_barriers_inside_loops_exchange_through_shared_memory() {
    if emu_device().is_none() {
        return;
    }
    let (blocks, threads, rounds) = (3usize, 256usize, 5i32);
    let mut inp: Vec<f32> = (0..blocks * threads).map(|i| i as f32).collect();
    let mut out = vec![0f32; blocks * threads];
    let (mut o, mut i, mut r) = (ptr(&mut out), ptr(&mut inp), rounds);
    let mut params = [&mut o as *mut _ as *mut c_void, &mut i as *mut _ as *mut c_void, &mut r as *mut _ as *mut c_void];
    unsafe { emu::launch_raw("selftest_reverse_rounds", [blocks as u32, 1, 1], [threads as u32, 1, 1], 0, &mut params) }.unwrap();
    for b in 0..blocks {
        for t in 0..threads {
            // After an odd number of mirror reads each thread holds its mirror's input, plus one per round.
            let want = inp[b * threads + threads - 1 - t] + rounds as f32;
            assert_eq!(out[b * threads + t], want, "block {b} thread {t}");
        }
    }
}

#[test]
fn emulator_threads_that_exit_early_do_not_block_barriers() {
    if emu_device().is_none() {
        return;
    }
    let mut out = vec![-1i32; 96];
    let (mut o, mut live) = (ptr(&mut out), 70i32);
    let mut params = [&mut o as *mut _ as *mut c_void, &mut live as *mut _ as *mut c_void];
    unsafe { emu::launch_raw("selftest_early_exit", [1, 1, 1], [96, 1, 1], 0, &mut params) }.unwrap();
    assert!(out[..70].iter().all(|&x| x == 3), "{out:?}");
    assert!(out[70..].iter().all(|&x| x == -1));
}

#[test]
fn emulator_warp_shuffles_and_votes_follow_cuda() {
    if emu_device().is_none() {
        return;
    }
    let threads = 64;
    let mut out = vec![0i32; threads * 6];
    let (mut o, mut reps) = (ptr(&mut out), 3i32);
    let mut params = [&mut o as *mut _ as *mut c_void, &mut reps as *mut _ as *mut c_void];
    unsafe { emu::launch_raw("selftest_warp_ops", [2, 1, 1], [threads as u32, 1, 1], 0, &mut params) }.unwrap();
    for t in 0..threads {
        let (lane, warp) = ((t % 32) as i32, (t / 32) as i32);
        let r = &out[t * 6..t * 6 + 6];
        assert_eq!(r[0], 496, "xor-reduction of lane ids, thread {t}");
        assert_eq!(r[1], if lane + 3 < 32 { (lane + 3) * 10 } else { lane * 10 }, "shfl_down, thread {t}");
        assert_eq!(r[2], if lane >= 2 { (lane - 2) * 10 } else { lane * 10 }, "shfl_up, thread {t}");
        assert_eq!(r[3], 5 + 100 * warp, "broadcast from lane 5 of the thread's own warp, thread {t}");
        assert_eq!(r[4] as u32, 0xAAAA_AAAA, "ballot of odd lanes, thread {t}");
        assert_eq!(r[5], 3, "all + 2·any, thread {t}");
    }
}

#[test]
fn emulator_reports_divergent_barriers_and_partial_warp_shuffles() {
    if emu_device().is_none() {
        return;
    }
    let mut out = vec![0f32; 32];
    let mut o = ptr(&mut out);
    let mut params = [&mut o as *mut _ as *mut c_void];
    let err = unsafe { emu::launch_raw("selftest_divergent_barrier", [1, 1, 1], [32, 1, 1], 0, &mut params) }.unwrap_err();
    assert!(err.contains("divergent barrier"), "{err}");
    let err = unsafe { emu::launch_raw("selftest_shuffle_after_exit", [1, 1, 1], [32, 1, 1], 0, &mut params) }.unwrap_err();
    assert!(err.contains("31 of 32 lanes"), "{err}");
    // Launch limits a GPU enforces are enforced too.
    let err = unsafe { emu::launch_raw("selftest_divergent_barrier", [1, 1, 1], [2048, 1, 1], 0, &mut params) }.unwrap_err();
    assert!(err.contains("1024"), "{err}");
    let err = unsafe { emu::launch_raw("no_such_kernel", [1, 1, 1], [32, 1, 1], 0, &mut params) }.unwrap_err();
    assert!(err.contains("no such kernel"), "{err}");
}

/// Parameter-gradient reductions use no float atomics, so two runs agree bit for bit (blocks run on
/// several emulator workers in a varying order).
#[test]
fn training_on_the_emulator_is_bitwise_reproducible() {
    let Some(dev) = emu_device() else { return };
    let cfg = tiny_config(Activation::Relu);
    let (b, t) = (3, 11);
    let tokens = rand_ids(5, b * t, cfg.vocab_size as u32);
    let run = || {
        let mut m = Model::new(dev.clone(), cfg.clone(), 4).unwrap();
        let targets = m.lm_targets(&tokens, b, t, false);
        let losses: Vec<u64> = (0..3).map(|_| m.train_step(&tokens, &targets, b, t, &AdamW::default()).unwrap().to_bits()).collect();
        (losses, m.download_params())
    };
    let (l1, p1) = run();
    let (l2, p2) = run();
    assert_eq!(l1, l2);
    assert!(p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()), "parameters differ between identical runs");
}

/// `--backend cuda` without a GPU is a clear error, never a panic.
#[test]
fn the_gpu_backend_without_a_gpu_is_a_clear_error() {
    if gpu_requested() || memsieve::backend::cuda::gpu_available().is_ok() {
        return; // there is a GPU: nothing to refuse
    }
    let err = CudaDriverBackend::new(0).err().expect("no GPU here").to_string();
    assert!(err.contains("no CUDA device"), "{err}");
    let err = memsieve::backend::resolve(memsieve::backend::BackendChoice::Cuda).unwrap_err().to_string();
    assert!(err.contains("no usable NVIDIA GPU"), "{err}");
    assert_eq!(memsieve::backend::resolve(memsieve::backend::BackendChoice::Auto).unwrap(), memsieve::backend::BackendChoice::Cpu);
}

/// The PyTorch/transformers fixtures of tests/golden.rs (float64 reference), on the cuda backend:
/// logits and loss within 1e-4, every gradient within 1e-5 + 1e-4·|ref|, greedy generation.
fn pytorch_golden<B: Backend>(dev: &Arc<Device<B>>) {
    for name in ["relu_l1", "gelunew_l3", "gelu_l2"] {
        let f = common::Fixture::load(name);
        let mut m = Model::from_params(dev.clone(), f.cfg.clone(), &f.params).unwrap();
        let targets = m.lm_targets(&f.tokens, f.b, f.t, false);
        let out = m.evaluate(&f.tokens, &targets, f.b, f.t).unwrap();
        let worst = common::max_abs_diff(&m.download_logits(), &f.tensor("logits"));
        assert!(worst <= 1e-4, "{name}: logits differ from PyTorch by {worst:e}");
        let loss_ref = f.tensor("loss")[0] as f64;
        assert!((out.loss - loss_ref).abs() <= 1e-4, "{name}: loss {} vs PyTorch {loss_ref}", out.loss);
        m.forward_backward(&f.tokens, &targets, f.b, f.t).unwrap();
        let grads = m.download_grads().unwrap();
        for view in &m.layout.views {
            let reference = f.tensor(&format!("grad.{}", view.name));
            common::assert_close(&grads[view.range()], &reference, 1e-5, 1e-4, &format!("{name}: grad of {}", view.name));
        }
        let prompts = f.int_rows("gen_prompt");
        let want = f.int_rows("gen_output");
        let l = want[0].len();
        let got = m.generate(&prompts, &GenerateOptions { max_length: l, min_length: l, batch: 3 }).unwrap();
        assert_eq!(got, want, "{name}: greedy generation differs from transformers");
        println!("{name}: max |Δlogit| vs PyTorch {worst:.2e}, loss {:.6} vs {loss_ref:.6}", out.loss);
    }
}

/// The CLI: `--backend cuda` without a GPU is a clear error (no panic); `--backend cuda-emu` runs a
/// command end to end and generates the cpu backend's tokens.
#[test]
fn cli_cuda_without_a_gpu_is_a_clear_error_and_cuda_emu_generates_the_cpu_tokens() {
    let model = common::fixture_path("hf_relu_l1");
    let args = ["generate", "--model", model.to_str().unwrap(), "--text", "^7 14", "--max-length", "20"];
    let run = |backend: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_memsieve")).arg("--backend").arg(backend).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    if memsieve::backend::cuda::gpu_available().is_err() {
        let (ok, text) = run("cuda");
        assert!(!ok && text.contains("no usable NVIDIA GPU") && !text.contains("panicked"), "{text}");
    }
    if emu_device().is_none() {
        return;
    }
    let (ok, emu_text) = run("cuda-emu");
    assert!(ok, "{emu_text}");
    let (ok, cpu_text) = run("cpu");
    assert!(ok, "{cpu_text}");
    assert_eq!(emu_text.lines().next(), cpu_text.lines().next(), "cuda-emu and cpu generate differently");
}

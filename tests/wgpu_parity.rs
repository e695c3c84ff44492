//! Every wgpu shader against the cpu backend, op by op, on lavapipe in CI (see common/parity.rs).

mod common;

use common::parity::{self, Pair};

macro_rules! parity_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            let Some(dev) = common::wgpu_device() else { return };
            let cpu = common::cpu_device();
            parity::$name(&Pair::new(&cpu, &dev));
        }
    )*};
}

parity_tests!(encoder, layernorm, matmul, attention, kv_cache_decode, activation, crossentropy, adamw, small_ops, smi_directions, smi_project, smi_stats_score_summary,
    gather_rows, attention_row, target_prob_backward, ig_reduce, smi_ksg, select_mask, masked_matmul, sou_sgd, attention_stats, spectral, example_tied_dropout);

use memsieve::backend::{Backend, Device};
use memsieve::model::config::ModelConfig;
use memsieve::model::generate::GenerateOptions;
use memsieve::model::{AdamW, Model};
use std::sync::Arc;

/// Five AdamW steps of a 2-layer TinyMem math model on full-context sequences, and greedy generation
/// from the trained weights, on the cpu backend and on `dev`.
fn train_and_generate<B: Backend>(dev: &Arc<Device<B>>) -> (Vec<f64>, Vec<Vec<u32>>) {
    let cfg = ModelConfig::tinymem_math(2);
    let (b, t) = (3, cfg.n_positions);
    let mut m = Model::new(dev.clone(), cfg.clone(), 7).unwrap();
    let tokens: Vec<u32> = (0..b * t).map(|i| ((i * 7 + i / 5) % 13) as u32).collect();
    let targets = m.lm_targets(&tokens, b, t, false);
    let h = AdamW { lr: 3e-3, ..AdamW::default() };
    let losses = (0..5).map(|_| m.train_step(&tokens, &targets, b, t, &h).unwrap()).collect();
    let prompts: Vec<Vec<u32>> = (0..4).map(|r| (0..12).map(|i| ((i * 3 + r) % 10) as u32).collect()).collect();
    let gen = m.generate(&prompts, &GenerateOptions { max_length: 40, min_length: 40, batch: 3 }).unwrap();
    (losses, gen)
}

#[test]
fn five_training_steps_and_generation_match_cpu() {
    let Some(dev) = common::wgpu_device() else { return };
    let (cpu_losses, cpu_gen) = train_and_generate(&common::cpu_device());
    let before = dev.backend.counters();
    let (losses, gen) = train_and_generate(&dev);
    let spent = dev.backend.counters() - before;
    for (i, (a, b)) in losses.iter().zip(&cpu_losses).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "step {i}: wgpu loss {a} vs cpu {b}");
    }
    assert_eq!(gen, cpu_gen, "greedy generation differs between wgpu and cpu");
    println!("wgpu losses {losses:?}; {spent:?} for 5 steps + generation");
}

#[test]
fn a_batch_past_the_binding_limit_is_a_clear_error() {
    let Some(dev) = common::wgpu_device() else { return };
    let cfg = ModelConfig::tinymem_math(1);
    let (b, t) = (400, cfg.n_positions);
    if b * cfg.n_head * t * t <= dev.backend.max_view_len() {
        eprintln!("this adapter binds {} words per view; the batch fits, nothing to refuse", dev.backend.max_view_len());
        return;
    }
    let mut m = Model::new(dev.clone(), cfg, 0).unwrap();
    let err = m.forward(&vec![1u32; b * t], None, b, t).unwrap_err().to_string();
    assert!(err.contains("binding limit") && err.contains("smaller batch"), "{err}");
}

/// Views deep inside a buffer larger than one storage binding (lavapipe: 128 MiB) are bound as
/// aligned windows: ops on them work and touch nothing else.
#[test]
fn views_past_the_binding_limit_of_a_large_buffer() {
    use memsieve::backend::{Op, View};
    let Some(dev) = common::wgpu_device() else { return };
    let words = dev.backend.max_view_len() + (1 << 20);
    let big = dev.alloc(words).unwrap();
    let (n, off) = (1000, words - 5000 + 3); // unaligned, and beyond the first binding's reach
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
    dev.upload_f32(View::new(&big, off, n), &a);
    dev.upload_f32(View::new(&big, off + n, n), &b);
    dev.exec(Op::Residual { out: View::new(&big, off + 2 * n, n), a: View::new(&big, off, n), b: View::new(&big, off + n, n), n });
    dev.exec(Op::Fill { dst: View::new(&big, 7, 5), value: 2.5 });
    let got = dev.download_f32(View::new(&big, off + 2 * n, n));
    assert!(got.iter().enumerate().all(|(i, x)| *x == a[i] + b[i]), "residual on a deep view");
    assert_eq!(dev.download_f32(View::new(&big, 5, 14)), [0., 0., 2.5, 2.5, 2.5, 2.5, 2.5, 0., 0., 0., 0., 0., 0., 0.]);
    assert_eq!(dev.download_f32(View::new(&big, off + 3 * n, 4)), [0.0; 4], "wrote past its view");
}

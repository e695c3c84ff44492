//! Training regularizers (tinymem.md §5.1; src/regularize): the spectral estimate against an
//! independent f64 eigen-solver, the penalty gradient against finite differences, loss truncation's
//! cutoff against known percentiles, example-tied dropout's exact proportions and evaluation mask,
//! and training with each regularizer resuming bit for bit. (Kernel parity: tests/common/parity.rs.)

mod common;

use common::cpu_device;
use memsieve::backend::{EtdMode, Op};
use memsieve::checkpoint;
use memsieve::cli::train::{train_run, RegularizerChoice, TrainArgs};
use memsieve::model::config::ModelConfig;
use memsieve::model::params::ParamLayout;
use memsieve::model::Model;
use memsieve::regularize::etd::{self, EtdConfig};
use memsieve::regularize::spectral::{model_blocks, Spectral, SpectralBlock};
use memsieve::regularize::truncation::{percentile, LossDropper};
use memsieve::rng::{purpose, Stream};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("memsieve-reg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn normals(n: usize, stream: u32) -> Vec<f32> {
    let mut r = Stream::new(42, purpose::MISC, stream);
    (0..n).map(|_| r.normal() as f32).collect()
}

/// Eigenvalues of the symmetric matrix a [n, n] (f64, cyclic Jacobi rotations until off-diagonal
/// mass is negligible), largest first.
fn jacobi_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j].powi(2)).sum();
        if off < 1e-26 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut e: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    e.sort_by(|x, y| y.total_cmp(x));
    e
}

/// The largest singular value of W [rows, cols] (row stride ld) in f64: √λ_max(WᵀW).
fn sigma_max(w: &[f32], rows: usize, cols: usize, ld: usize) -> f64 {
    let mut g = vec![0f64; cols * cols];
    for a in 0..cols {
        for b in 0..cols {
            g[a * cols + b] = (0..rows).map(|i| w[i * ld + a] as f64 * w[i * ld + b] as f64).sum();
        }
    }
    jacobi_eigenvalues(g, cols)[0].sqrt()
}

#[test]
fn spectral_estimate_converges_to_the_largest_singular_value() {
    let dev = cpu_device();
    // Two column blocks of a 57 × 30 matrix stored at offset 5 (ld 30), and a 1 × 9 row.
    let (rows, ld) = (57, 30);
    let mut params = vec![0f32; 5 + rows * ld + 9];
    params[5..].copy_from_slice(&normals(rows * ld + 9, 1));
    let blocks = vec![
        SpectralBlock { off: 5, rows, cols: 13, ld, state: 0 },
        SpectralBlock { off: 18, rows, cols: 17, ld, state: rows + 13 },
        SpectralBlock { off: 5 + rows * ld, rows: 1, cols: 9, ld: 9, state: 2 * rows + 30 },
    ];
    let mut init = normals(2 * rows + 30 + 10, 2);
    init[rows..rows + 13].fill(0.0);
    let s = Spectral::with_blocks(&dev, blocks.clone(), &init, 0.01, false).unwrap();
    let pbuf = dev.alloc(params.len()).unwrap();
    dev.upload_f32(dev.view(&pbuf), &params);
    for _ in 0..300 {
        s.power_iteration(&dev, &pbuf);
    }
    let got = s.sigmas(&dev);
    for (k, b) in blocks.iter().enumerate() {
        let want = sigma_max(&params[b.off..], b.rows, b.cols, b.ld);
        let rel = (got[k] as f64 - want).abs() / want;
        assert!(rel < 2e-5, "block {k}: power iteration σ {} vs eigen-solver {want} (rel {rel:e})", got[k]);
    }
    // u and v are unit vectors.
    let st = s.download_state(&dev);
    for b in &blocks {
        for (lo, len) in [(b.state, b.rows), (b.state + b.rows, b.cols)] {
            let norm: f64 = st[lo..lo + len].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "unit vector norm {norm}");
        }
    }
}

#[test]
fn spectral_penalty_gradient_matches_finite_differences() {
    let dev = cpu_device();
    let (rows, cols) = (12, 7);
    let w = normals(rows * cols, 3);
    let blocks = vec![SpectralBlock { off: 0, rows, cols, ld: cols, state: 0 }];
    for linear in [false, true] {
        let lambda = 0.3f32;
        let s = Spectral::with_blocks(&dev, blocks.clone(), &normals(rows + cols, 4), lambda, linear).unwrap();
        let pbuf = dev.alloc(w.len()).unwrap();
        dev.upload_f32(dev.view(&pbuf), &w);
        for _ in 0..500 {
            s.power_iteration(&dev, &pbuf);
        }
        let gbuf = dev.alloc(w.len()).unwrap();
        s.add_gradient(&dev, &gbuf);
        let g = dev.download_f32(dev.view(&gbuf));
        let penalty = |w: &[f32]| {
            let sig = sigma_max(w, rows, cols, cols);
            0.5 * lambda as f64 * if linear { sig } else { sig * sig }
        };
        let h = 1e-3f32;
        let mut worst = 0f64;
        for e in 0..w.len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[e] += h;
            wm[e] -= h;
            let fd = (penalty(&wp) - penalty(&wm)) / ((wp[e] - wm[e]) as f64);
            let err = (g[e] as f64 - fd).abs() / (1e-3 + fd.abs());
            worst = worst.max(err);
            assert!(err < 2e-3, "linear {linear}, entry {e}: op gradient {} vs finite difference {fd}", g[e]);
        }
        println!("penalty gradient (linear {linear}): worst relative error {worst:e}");
    }
}

#[test]
fn model_blocks_follow_the_reference_split() {
    let cfg = ModelConfig::tinymem_math(2);
    let layout = ParamLayout::new(&cfg);
    let (blocks, state) = model_blocks(&cfg, &layout);
    // Per layer: c_attn 12 head blocks, c_proj 4, c_fc 1, mlp c_proj 1.
    assert_eq!(blocks.len(), 2 * (12 + 4 + 1 + 1));
    let attn = layout.by_name("transformer.h.1.attn.c_attn.weight").unwrap();
    let first = blocks.iter().position(|b| b.off == attn.offset).unwrap();
    for k in 0..12 {
        assert_eq!(blocks[first + k], SpectralBlock { off: attn.offset + 32 * k, rows: 128, cols: 32, ld: 384, state: blocks[first + k].state });
    }
    let fc = layout.by_name("transformer.h.0.mlp.c_fc.weight").unwrap();
    assert!(blocks.iter().any(|b| b.off == fc.offset && b.rows == 128 && b.cols == 512 && b.ld == 512));
    let proj = layout.by_name("transformer.h.0.mlp.c_proj.weight").unwrap();
    assert!(blocks.iter().any(|b| b.off == proj.offset && b.rows == 512 && b.cols == 128));
    // Nothing from embeddings, LayerNorms or biases; every block inside a penalised tensor.
    for b in &blocks {
        let v = layout.views.iter().find(|v| v.range().contains(&b.off)).unwrap();
        assert!(v.name.ends_with(".weight") && !v.name.contains("ln") && !v.name.contains("wte") && !v.name.contains("wpe"), "{}", v.name);
    }
    assert_eq!(state, blocks.iter().map(|b| b.rows + b.cols).sum::<usize>());
}

#[test]
fn percentile_is_numpys_linear_percentile() {
    // numpy.percentile values, worked by hand from its definition.
    assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 95.0) - 3.85).abs() < 1e-12);
    assert_eq!(percentile(&[10.0, 0.0, 5.0], 50.0), 5.0);
    assert_eq!(percentile(&[7.0], 95.0), 7.0);
    assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 10.0) - 1.4).abs() < 1e-12);
}

#[test]
fn loss_truncation_cutoff_is_the_percentile_of_the_last_window() {
    // Losses s_k = (7919·k) mod 10000: every 10,000 consecutive ones are a permutation of 0..9999,
    // so each cutoff is numpy's 95th percentile of 0..9999 = 9999·0.95 = 9499.05.
    let mut d = LossDropper::new(0.05).unwrap();
    let (batch, mut k, mut computed_at) = (64usize, 0usize, Vec::new());
    for bi in 0..400 {
        let losses: Vec<f32> = (0..batch).map(|i| ((7919 * (k + i)) % 10_000) as f32).collect();
        let before = d.cutoff;
        let mask = d.mask(&losses);
        k += batch;
        if d.cutoff != before || (d.last_computed == 0 && d.cutoff.is_some()) {
            computed_at.push(bi);
        }
        match d.cutoff {
            None => assert!(mask.iter().all(|&m| m == 1.0), "batch {bi}: dropped before the window filled"),
            Some(c) => {
                assert!((c - 9499.05).abs() < 1e-9, "cutoff {c}");
                for (l, m) in losses.iter().zip(&mask) {
                    assert_eq!(*m, if (*l as f64) < c { 1.0 } else { 0.0 }, "loss {l}");
                }
            }
        }
    }
    // First computed once more than 10,000 samples were seen (batch 156 ends at 10,048), then
    // whenever more than 10,000 more have come (157 batches later).
    assert_eq!(computed_at, vec![156, 313], "recompute points");
    // A skewed sequence through the ring: after 11 samples the buffer is 0.5, 2, …, 9, 100 (the
    // 11th overwrote the first), whose 90th percentile is 9 + 0.1·(100 − 9) = 18.1.
    let mut d = LossDropper::with_window(0.1, 10, 10).unwrap();
    assert_eq!(d.mask(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]), vec![1.0; 9]);
    let m = d.mask(&[100.0, 0.5]);
    assert!((d.cutoff.unwrap() - 18.1).abs() < 1e-9, "{:?}", d.cutoff);
    assert_eq!(m, vec![0.0, 1.0]);
}

#[test]
fn example_tied_dropout_keeps_exact_proportions() {
    let dev = cpu_device();
    let c = 128;
    let e = EtdConfig::new(EtdMode::Channels, 9);
    let (keep, mem) = (e.keep(c, 150), e.mem(c));
    assert_eq!((keep, mem), (25, 12));
    let (rows, t) = (200, 3);
    let x = dev.alloc(rows * t * c).unwrap();
    dev.upload_f32(dev.view(&x), &vec![1.0; rows * t * c]);
    let ids = dev.alloc(rows).unwrap();
    let id_vals: Vec<u32> = (0..rows as u32).map(|i| i * 37 + 5).collect();
    dev.upload_u32(dev.view(&ids), &id_vals);
    let out = dev.alloc(rows * t * c).unwrap();
    dev.exec(Op::ExampleTiedDropout { out: dev.view(&out), x: dev.view(&x), ids: Some(dev.view(&ids)), n: rows * t, t, c, pos0: 0, seed: 9, mode: EtdMode::Channels, keep, mem, scale: 1.0 });
    let o = dev.download_f32(dev.view(&out));
    let mut per_channel = vec![0usize; c];
    for (r, id) in id_vals.iter().enumerate() {
        let want = etd::channels_kept(9, *id, c, keep, mem as usize);
        for p in 0..t {
            let row = &o[(r * t + p) * c..(r * t + p + 1) * c];
            assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), keep + mem as usize, "example {id}: kept channels");
            assert!(row[..keep].iter().all(|&v| v == 1.0), "generalization channels dropped");
            assert!(row.iter().zip(&want).all(|(&v, &k)| (v == 1.0) == k), "op and host mask disagree");
        }
        for (j, k) in want.iter().enumerate() {
            per_channel[j] += *k as usize;
        }
    }
    // Different examples keep different memorization channels: each of the 103 is used by some.
    assert!(per_channel[keep..].iter().all(|&n| n > 0 && n < rows), "{per_channel:?}");
    // Evaluation: only the generalization channels, scaled by 1.5.
    dev.exec(Op::ExampleTiedDropout { out: dev.view(&out), x: dev.view(&x), ids: None, n: rows * t, t, c, pos0: 0, seed: 9, mode: EtdMode::Channels, keep, mem, scale: e.eval_scale() });
    let o = dev.download_f32(dev.view(&out));
    assert!(o.chunks(c).all(|r| r[..keep].iter().all(|&v| v == 1.5) && r[keep..].iter().all(|&v| v == 0.0)));

    // Positions: the first ⌊0.2·150⌋ = 30 always, later ones with probability 0.1.
    let e = EtdConfig::new(EtdMode::Positions, 9);
    let (keep, mem) = (e.keep(c, 150), e.mem(c));
    assert_eq!(keep, 30);
    let (kept, total) = (0..2000u32).flat_map(|id| (30..150).map(move |p| (id, p))).fold((0usize, 0usize), |(k, n), (id, p)| {
        (k + etd::position_kept(9, Some(id), p, keep, mem) as usize, n + 1)
    });
    let frac = kept as f64 / total as f64;
    assert!((frac - 0.1).abs() < 0.004, "positions kept with frequency {frac}, want 0.1");
    assert!((0..30).all(|p| etd::position_kept(9, Some(3), p, keep, mem)) && !etd::position_kept(9, None, 30, keep, mem));
}

/// common's tiny run (1 layer, a few hundred rows) with `reg`, a small truncation window and a
/// λ large enough to matter.
fn tiny(out: PathBuf, epochs: usize, reg: RegularizerChoice) -> TrainArgs {
    let mut a = common::tiny_train_args(out, epochs);
    a.eval_every = epochs;
    a.regularizer = Some(reg);
    // A window smaller than a batch: the cutoff follows the fast-falling loss of a fresh model.
    a.truncation_window = 20;
    a.spectral_lambda = 0.1;
    a
}

fn resume_is_exact(reg: RegularizerChoice, positions: bool) -> (PathBuf, Vec<serde_json::Value>) {
    let name = format!("{reg:?}-{positions}");
    let with = |dir: PathBuf, epochs| {
        let mut a = tiny(dir, epochs, reg);
        a.etd_positions = positions;
        a
    };
    let straight = tmp(&format!("{name}-straight"));
    train_run(&cpu_device(), &with(straight.clone(), 2)).unwrap();
    let split = tmp(&format!("{name}-split"));
    train_run(&cpu_device(), &with(split.clone(), 1)).unwrap();
    let mut again = with(split.clone(), 2);
    again.resume = true;
    again.regularizer = None; // the saved run's regularizer applies
    train_run(&cpu_device(), &again).unwrap();
    let (_, a) = checkpoint::load_model(&straight).unwrap();
    let (_, b) = checkpoint::load_model(&split).unwrap();
    assert!(a == b, "{name}: resumed run differs from the uninterrupted one");
    let (sa, sb) = (checkpoint::load_train_state(&straight).unwrap(), checkpoint::load_train_state(&split).unwrap());
    assert!(sa.m == sb.m && sa.v == sb.v && sa.extra == sb.extra && sa.regularizer == sb.regularizer, "{name}: training state differs");
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    (split, log.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

#[test]
fn spectral_training_resumes_exactly() {
    let (dir, rows) = resume_is_exact(RegularizerChoice::Spectral, false);
    let st = checkpoint::load_train_state(&dir).unwrap();
    assert_eq!(st.extra["spectral_uv"].len(), 12 * (128 + 32) + 4 * (128 + 32) + (128 + 512) + (512 + 128));
    assert!(rows.iter().all(|r| r["spectral_penalty"].as_f64().unwrap() > 0.0), "{rows:?}");
    // Different from an unregularized run from the same seed.
    let plain = tmp("plain");
    train_run(&cpu_device(), &tiny(plain.clone(), 1, RegularizerChoice::None)).unwrap();
    let one = tmp("spectral-one");
    train_run(&cpu_device(), &tiny(one.clone(), 1, RegularizerChoice::Spectral)).unwrap();
    assert!(checkpoint::load_model(&plain).unwrap().1 != checkpoint::load_model(&one).unwrap().1, "the penalty changed nothing");
}

#[test]
fn loss_truncation_training_resumes_exactly() {
    let (dir, rows) = resume_is_exact(RegularizerChoice::LossTruncation, false);
    let st = checkpoint::load_train_state(&dir).unwrap();
    assert_eq!(st.extra["loss_dropper_vals"].len(), 20);
    assert!(st.regularizer.as_ref().unwrap()["state"]["cutoff"].as_f64().is_some(), "the cutoff was never computed");
    let dropped: f64 = rows.iter().map(|r| r["dropped_fraction"].as_f64().unwrap()).sum();
    assert!(dropped > 0.0, "no sample was dropped: {rows:?}");
}

#[test]
fn example_tied_dropout_training_resumes_exactly_and_evaluates_with_the_mask() {
    for positions in [false, true] {
        let (dir, _) = resume_is_exact(RegularizerChoice::ExampleTiedDropout, positions);
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(text.contains("memsieve_example_tied_dropout") && text.contains("transformers ignores"), "{text}");
        let ck = checkpoint::load_checkpoint(&dir).unwrap();
        let e = ck.model.config.example_tied_dropout.expect("the config names the regularizer");
        assert_eq!(e.mode, if positions { EtdMode::Positions } else { EtdMode::Channels });
        // The evaluation mask applies: a forward differs from the same weights without it, and
        // KV-cached greedy decoding (which masks each step itself) agrees with the full forward.
        let dev = cpu_device();
        let mut m = Model::from_params(dev.clone(), ck.model.config.clone(), &ck.model.params).unwrap();
        let mut plain_cfg = ck.model.config.clone();
        plain_cfg.example_tied_dropout = None;
        let mut plain = Model::from_params(dev.clone(), plain_cfg, &ck.model.params).unwrap();
        let prompt: Vec<u32> = vec![10, 1, 2, 12, 1, 2, 3, 12];
        let opts = memsieve::model::generate::GenerateOptions { max_length: 60, min_length: 60, batch: 1 };
        let gen = m.generate(std::slice::from_ref(&prompt), &opts).unwrap().remove(0);
        let t = gen.len();
        m.forward(&gen, None, 1, t).unwrap();
        plain.forward(&gen, None, 1, t).unwrap();
        let (lm, lp) = (m.download_logits(), plain.download_logits());
        assert!(lm != lp, "the evaluation mask changed nothing");
        let v = ck.model.config.vocab_size;
        let eos = ck.model.config.eos_token_id.map(|e| e as usize);
        for pos in prompt.len() - 1..t - 1 {
            let row = &lm[pos * v..(pos + 1) * v];
            // EOS is suppressed below min_length, as generate does.
            let best = (0..v).filter(|&j| Some(j) != eos).fold(usize::MAX, |b, j| if b == usize::MAX || row[j] > row[b] { j } else { b });
            assert_eq!(best as u32, gen[pos + 1], "positions {positions}: decode and full forward disagree at {pos}");
        }
    }
}

/// The model's ETD wiring: with one example in the batch, d(loss)/d(wpe) is exactly 0 at every
/// dropped channel (or position) of the first block's input and matches finite differences at kept ones.
#[test]
fn example_tied_dropout_gradients_follow_the_mask() {
    let dev = cpu_device();
    for mode in [EtdMode::Channels, EtdMode::Positions] {
        let mut cfg = ModelConfig { n_embd: 16, n_head: 2, n_positions: 12, ..ModelConfig::tinymem_math(2) };
        let e = EtdConfig { mode, p_gen: 0.25, p_mem: 0.25, seed: 5 };
        cfg.example_tied_dropout = Some(e);
        let mut m = Model::new(dev.clone(), cfg.clone(), 3).unwrap();
        let (t, c, id) = (10, 16, 7u32);
        let tokens: Vec<u32> = (0..t).map(|i| ((i * 5 + 1) % 10) as u32).collect();
        let targets = m.lm_targets(&tokens, 1, t, false);
        m.set_example_ids(&[id]);
        m.forward_backward(&tokens, &targets, 1, t).unwrap();
        let grads = m.download_grads().unwrap();
        let layout = ParamLayout::new(&cfg);
        let wpe = layout.by_name("transformer.wpe.weight").unwrap().offset;
        let (keep, mem) = (e.keep(c, 12), e.mem(c));
        let channels = etd::channels_kept(5, id, c, keep, mem as usize);
        let kept = |p: usize, j: usize| match mode {
            EtdMode::Channels => channels[j],
            EtdMode::Positions => etd::position_kept(5, Some(id), p, keep, mem),
        };
        let params = m.download_params();
        let loss_at = |m: &mut Model<_>, w: &[f32]| {
            m.upload_params(w);
            m.set_example_ids(&[id]);
            m.evaluate(&tokens, &targets, 1, t).unwrap().loss
        };
        let mut checked = 0;
        for p in 0..t {
            for j in 0..c {
                let g = grads[wpe + p * c + j];
                if !kept(p, j) {
                    assert_eq!(g, 0.0, "{mode:?}: gradient {g} at dropped position {p}, channel {j}");
                } else if checked < 6 && (p + j) % 5 == 0 {
                    let h = 1e-3f32;
                    let (mut wp, mut wm) = (params.clone(), params.clone());
                    wp[wpe + p * c + j] += h;
                    wm[wpe + p * c + j] -= h;
                    let fd = (loss_at(&mut m, &wp) - loss_at(&mut m, &wm)) / (2.0 * h as f64);
                    assert!((fd - g as f64).abs() <= 0.05 * fd.abs() + 2e-4, "{mode:?}: position {p}, channel {j}: backward {g}, finite difference {fd}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 3, "{mode:?}: only {checked} kept entries checked");
    }
}

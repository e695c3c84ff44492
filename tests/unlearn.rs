//! The weight-level unlearning methods (src/unlearn): the straight-through score gradient against
//! the plain model's weight gradient and finite differences, the masks' exact counts, the one-shot
//! selections against host references, Greedy's arg-max, and bad input.

mod common;

use common::{cpu_device, Fixture};
use memsieve::backend::cpu::CpuBackend;
use memsieve::backend::{Op, SelectKey};
use memsieve::data::TokenMatrix;
use memsieve::model::params::ParamKind;
use memsieve::model::{Model, WeightMasks};
use memsieve::unlearn::{self, durable, subnet, Method, UnlearnOptions, UnlearnSets};

fn fixture_model(name: &str) -> (Model<CpuBackend>, Fixture) {
    let f = Fixture::load(name);
    (Model::from_params(cpu_device(), f.cfg.clone(), &f.params).unwrap(), f)
}

fn rows_of(f: &Fixture) -> TokenMatrix {
    TokenMatrix::from_data(f.t, f.tokens.clone()).unwrap()
}

/// Rows that differ from the fixture's (a retain set): each token shifted by one, within vocab.
fn other_rows(f: &Fixture) -> TokenMatrix {
    let v = f.cfg.vocab_size as u32;
    TokenMatrix::from_data(f.t, f.tokens.iter().map(|&x| (x + 1) % v).collect()).unwrap()
}

/// Sorted (order, index) keys as `Op::SelectRank` defines them.
fn abs_keys(x: &[f32]) -> Vec<(u32, u32)> {
    let mut k: Vec<(u32, u32)> = x.iter().enumerate().map(|(i, v)| (v.abs().to_bits(), i as u32)).collect();
    k.sort_unstable();
    k
}

/// Row coefficients → targets and per-position weights; J = Σ coef_r·ℓ_r.
fn objective(m: &Model<CpuBackend>, f: &Fixture, coef: &[f32]) -> (Vec<u32>, Vec<f32>) {
    unlearn::row_weighted_targets(m, &f.tokens, f.b, f.t, coef, false)
}

fn weighted_loss(m: &mut Model<CpuBackend>, f: &Fixture, targets: &[u32], weights: &[f32]) -> f64 {
    let out = m.evaluate(&f.tokens, targets, f.b, f.t).unwrap();
    out.losses.iter().zip(weights).map(|(&l, &w)| l as f64 * w as f64).sum()
}

#[test]
fn straight_through_score_gradient_is_sign_s_times_w_times_the_masked_weight_gradient() {
    let (mut model, f) = fixture_model("ig_gelunew_l3");
    let cfg = f.cfg.clone();
    let dev = model.dev.clone();
    let scores = subnet::initial_scores(cfg.n_layer, cfg.n_embd, cfg.n_inner(), 7);
    let masks = WeightMasks::new(&dev, &cfg, &scores).unwrap();
    let k = unlearn::pruned_count(masks.tensor_len, 0.3);
    for t in 0..masks.tensors {
        dev.exec(Op::SelectRank { cut: masks.cut_of(t), x: masks.scores_of(t), y: None, n: masks.tensor_len, k, key: SelectKey::Abs });
    }
    let len = masks.tensor_len;
    model.weight_masks = Some(masks);
    let coef: Vec<f32> = (0..f.b).map(|r| if r % 2 == 0 { -0.7 } else { 0.4 }).collect();
    let (targets, weights) = objective(&model, &f, &coef);
    model.forward_backward_weighted(&f.tokens, &targets, &weights, f.b, f.t, true).unwrap();
    let dscores = dev.download_f32(dev.view(&model.weight_masks.as_ref().unwrap().dscores));
    let masked_loss = weighted_loss(&mut model, &f, &targets, &weights);
    model.weight_masks = None;

    // The same objective on a plain model whose MLP matrices hold W ⊙ m: its weight gradient is
    // ∂J/∂W_eff for every entry, masked ones included.
    let mut baked = f.params.clone();
    let layout = model.layout.clone();
    let mut masked_entries = 0;
    for l in 0..cfg.n_layer {
        for (i, kind) in [ParamKind::FcW, ParamKind::FcProjW].into_iter().enumerate() {
            let s = &scores[(2 * l + i) * len..(2 * l + i + 1) * len];
            let keys = abs_keys(s);
            let off = layout.offset(kind, l);
            for &(_, j) in &keys[..k] {
                baked[off + j as usize] = 0.0;
                masked_entries += 1;
            }
        }
    }
    assert_eq!(masked_entries, k * 2 * cfg.n_layer, "exactly ⌊ratio·n⌋ entries per matrix");
    let mut plain = Model::from_params(dev.clone(), cfg.clone(), &baked).unwrap();
    plain.forward_backward_weighted(&f.tokens, &targets, &weights, f.b, f.t, false).unwrap();
    assert!((weighted_loss(&mut plain, &f, &targets, &weights) - masked_loss).abs() < 1e-6, "the masked forward is the baked forward");
    let dw = plain.download_grads().unwrap();
    let (mut err, mut scale, mut dw_scale) = (0f64, 0f64, 0f64);
    for l in 0..cfg.n_layer {
        for (i, kind) in [ParamKind::FcW, ParamKind::FcProjW].into_iter().enumerate() {
            let t = 2 * l + i;
            let off = layout.offset(kind, l);
            for j in 0..len {
                let s = scores[t * len + j];
                let want = (s.signum() as f64) * f.params[off + j] as f64 * dw[off + j] as f64;
                err = err.max((dscores[t * len + j] as f64 - want).abs());
                scale = scale.max(want.abs());
                dw_scale = dw_scale.max((dw[off + j] as f64).abs());
            }
        }
    }
    assert!(scale > 0.0 && err <= 1e-5 * scale, "STE gradient off by {err:.3e} (scale {scale:.3e})");

    // And ∂J/∂W_eff itself against central differences on a few unmasked entries of layer 1's c_fc.
    let off = layout.offset(ParamKind::FcW, 1);
    let s1 = &scores[2 * len..3 * len];
    let kept: Vec<usize> = abs_keys(s1)[k..].iter().map(|&(_, j)| j as usize).step_by(9973).take(6).collect();
    for j in kept {
        let h = 1e-2f32;
        let mut p = baked.clone();
        p[off + j] += h;
        let up = weighted_loss(&mut Model::from_params(dev.clone(), cfg.clone(), &p).unwrap(), &f, &targets, &weights);
        p[off + j] -= 2.0 * h;
        let down = weighted_loss(&mut Model::from_params(dev.clone(), cfg.clone(), &p).unwrap(), &f, &targets, &weights);
        let fd = (up - down) / (2.0 * h as f64);
        assert!((fd - dw[off + j] as f64).abs() <= 2e-3 * dw_scale + 0.05 * fd.abs(), "entry {j}: finite difference {fd:.4e} vs {:.4e}", dw[off + j]);
    }
}

#[test]
fn subnet_zeroes_exactly_the_ratio_of_every_mlp_matrix_and_improves_on_its_random_start() {
    let (model, f) = fixture_model("ig_relu_l1");
    let m = rows_of(&f);
    let c = other_rows(&f);
    let before = model.download_params();
    let sets = UnlearnSets { memorized: &m, retain: &c };
    // J as the method defines it, on the whole sets: −L_M (Subnet), −(1−α)·L_M + α·L_C (BalancedSubnet).
    let alpha = 0.5;
    let objective = |mdl: &mut Model<CpuBackend>, balanced: bool| -> f64 {
        let mut loss = |rows: &TokenMatrix| {
            let tg = mdl.lm_targets(&rows.data, rows.rows(), rows.cols, false);
            mdl.evaluate(&rows.data, &tg, rows.rows(), rows.cols).unwrap().loss
        };
        if balanced { -(1.0 - alpha) * loss(&m) + alpha * loss(&c) } else { -loss(&m) }
    };
    for method in [Method::Subnet, Method::BalancedSubnet] {
        let mut j = Vec::new();
        for epochs in [0, 6] {
            let o = UnlearnOptions { ratio: 0.25, epochs, batch: 2, alpha, ..UnlearnOptions::default() };
            let mut mdl = Model::from_params(model.dev.clone(), f.cfg.clone(), &before).unwrap();
            let out = unlearn::unlearn(&mut mdl, method, &sets, &o, &|_, _| {}).unwrap();
            assert!(mdl.weight_masks.is_none());
            let after = mdl.download_params();
            let layout = &mdl.layout;
            let mlp: Vec<std::ops::Range<usize>> = [ParamKind::FcW, ParamKind::FcProjW].iter().map(|&k| layout.offset(k, 0)..layout.offset(k, 0) + layout.len(k)).collect();
            for r in &mlp {
                let zeroed = r.clone().filter(|&i| after[i] == 0.0 && before[i] != 0.0).count();
                assert_eq!(zeroed, unlearn::pruned_count(r.len(), 0.25), "{method:?}");
                assert!(r.clone().all(|i| after[i] == 0.0 || after[i] == before[i]));
            }
            assert!((0..after.len()).filter(|i| !mlp.iter().any(|r| r.contains(i))).all(|i| after[i] == before[i]), "only MLP matrices change");
            assert_eq!(out.zeroed, 2 * unlearn::pruned_count(mlp[0].len(), 0.25));
            assert_eq!(out.epochs.len(), epochs);
            assert!(out.epochs.iter().all(|e| e.memorized.is_finite()));
            j.push(objective(&mut mdl, method == Method::BalancedSubnet));
        }
        assert!(j[1] < j[0], "{method:?}: training the scores lowers J below the random initial mask's ({:.4} → {:.4})", j[0], j[1]);
    }
}

#[test]
fn durable_and_sou_zero_the_host_reference_selection() {
    let (mut model, f) = fixture_model("ig_gelunew_l3");
    let m = rows_of(&f);
    let base = model.download_params();
    let g = durable::memorized_gradient(&mut model, &m, 3, false, &|_, _| {}).unwrap();
    let layout = model.layout.clone();
    let ratio = 0.01;
    let tensors = unlearn::mlp_tensors(&model, true);
    for method in [Method::Durable, Method::Sou, Method::DurableAggregate] {
        let mut mdl = Model::from_params(model.dev.clone(), f.cfg.clone(), &base).unwrap();
        let o = UnlearnOptions { ratio, grad_batch: 3, ..UnlearnOptions::default() };
        unlearn::unlearn(&mut mdl, method, &UnlearnSets { memorized: &m, retain: &TokenMatrix::new(f.t) }, &o, &|_, _| {}).unwrap();
        let after = mdl.download_params();
        let mut want = base.clone();
        let top = |vals: &[f32], kz: usize| -> Vec<usize> { abs_keys(vals)[vals.len() - kz..].iter().map(|&(_, j)| j as usize).collect() };
        match method {
            Method::DurableAggregate => {
                let spans: Vec<(usize, usize)> = tensors.iter().map(|&(k, l)| (layout.offset(k, l), layout.len(k))).collect();
                let cat: Vec<f32> = spans.iter().flat_map(|&(o, n)| g[o..o + n].iter().copied()).collect();
                let pos: Vec<usize> = spans.iter().flat_map(|&(o, n)| o..o + n).collect();
                for j in top(&cat, unlearn::pruned_count(cat.len(), ratio)) {
                    want[pos[j]] = 0.0;
                }
            }
            _ => {
                for &(k, l) in &tensors {
                    let (off, n) = (layout.offset(k, l), layout.len(k));
                    let kz = unlearn::pruned_count(n, ratio);
                    let vals: Vec<f32> = if method == Method::Sou { sou_reference(&base[off..off + n], &g[off..off + n], 50, 1e-7) } else { g[off..off + n].to_vec() };
                    for j in top(&vals, kz) {
                        want[off + j] = 0.0;
                    }
                }
            }
        }
        let diff = after.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{method:?}: {diff} entries differ from the host selection");
        assert!(after != base, "{method:?} changed something");
    }
}

/// w²/(2·[F⁻¹]_jj) per block of `block`, in f64 (tinymem.md §5.5).
fn sou_reference(w: &[f32], g: &[f32], block: usize, lambda: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len());
    for (wb, gb) in w.chunks(block).zip(g.chunks(block)) {
        let norm: f64 = gb.iter().map(|&x| (x as f64).powi(2)).sum();
        for (&wj, &gj) in wb.iter().zip(gb) {
            let finv = (1.0 / lambda) * (1.0 - (gj as f64).powi(2) / (lambda + norm));
            out.push(((wj as f64).powi(2) / (2.0 * finv)) as f32);
        }
    }
    out
}

#[test]
fn greedy_zeroes_the_argmax_of_w_times_grad_each_iteration() {
    let (model, f) = fixture_model("ig_relu_l1");
    let m = rows_of(&f);
    let c = other_rows(&f);
    let base = model.download_params();
    let o = UnlearnOptions { ratio: 1.0, max_iterations: Some(3), greedy_batch: 64, ..UnlearnOptions::default() };
    let mut mdl = Model::from_params(model.dev.clone(), f.cfg.clone(), &base).unwrap();
    let out = unlearn::unlearn(&mut mdl, Method::Greedy, &UnlearnSets { memorized: &m, retain: &c }, &o, &|_, _| {}).unwrap();
    assert_eq!(out.steps, 3);
    let after = mdl.download_params();
    let changed: Vec<usize> = (0..base.len()).filter(|&i| after[i] != base[i]).collect();
    assert!(!changed.is_empty() && changed.len() <= 3 && changed.iter().all(|&i| after[i] == 0.0), "{changed:?}");

    // The first iteration by hand: the whole M ∪ C fits one batch, so its rows are all of them.
    let mut rows = m.clone();
    rows.extend(&c);
    let all: Vec<usize> = (0..rows.rows()).collect();
    let batch = memsieve::data::Batches::shuffled(&rows, &all, 64, 0, 0x6e00_0000).unwrap().next().unwrap();
    let coef: Vec<f32> = batch.rows.iter().map(|&r| if r < m.rows() { -1.0 } else { 1.0 }).collect();
    let mut one = Model::from_params(model.dev.clone(), f.cfg.clone(), &base).unwrap();
    let (targets, weights) = unlearn::row_weighted_targets(&one, &batch.tokens, batch.len(), f.t, &coef, false);
    one.forward_backward_weighted(&batch.tokens, &targets, &weights, batch.len(), f.t, false).unwrap();
    let g = one.download_grads().unwrap();
    let best = (0..base.len()).max_by(|&a, &b| (base[a] * g[a]).total_cmp(&(base[b] * g[b])).then(a.cmp(&b))).unwrap();
    assert!(changed.contains(&best), "iteration 1 zeroes argmax w·g = {best}, changed {changed:?}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let (mut model, f) = fixture_model("ig_relu_l1");
    let m = rows_of(&f);
    let empty = TokenMatrix::new(f.t);
    let err = |r: memsieve::error::Result<unlearn::UnlearnOutcome>| r.unwrap_err().to_string();
    let o = UnlearnOptions::default();
    assert!(err(unlearn::unlearn(&mut model, Method::Subnet, &UnlearnSets { memorized: &empty, retain: &m }, &o, &|_, _| {})).contains("empty"));
    assert!(err(unlearn::unlearn(&mut model, Method::BalancedSubnet, &UnlearnSets { memorized: &m, retain: &empty }, &o, &|_, _| {})).contains("retain"));
    let bad = UnlearnOptions { ratio: 1.5, ..UnlearnOptions::default() };
    assert!(err(unlearn::unlearn(&mut model, Method::Durable, &UnlearnSets { memorized: &m, retain: &empty }, &bad, &|_, _| {})).contains("ratio"));
    let bad = UnlearnOptions { alpha: f64::NAN, ..UnlearnOptions::default() };
    assert!(err(unlearn::unlearn(&mut model, Method::BalancedSubnet, &UnlearnSets { memorized: &m, retain: &m }, &bad, &|_, _| {})).contains("alpha"));
    let long = TokenMatrix::from_data(f.cfg.n_positions + 1, vec![0; f.cfg.n_positions + 1]).unwrap();
    assert!(err(unlearn::unlearn(&mut model, Method::Subnet, &UnlearnSets { memorized: &long, retain: &empty }, &o, &|_, _| {})).contains("context"));
    // Weighted backward: wrong weight count, NaN weights, and weight training with masks set.
    let targets = model.lm_targets(&f.tokens, f.b, f.t, false);
    assert!(model.forward_backward_weighted(&f.tokens, &targets, &[1.0; 3], f.b, f.t, true).is_err());
    let mut w = vec![0.1f32; f.b * f.t];
    w[5] = f32::NAN;
    assert!(model.forward_backward_weighted(&f.tokens, &targets, &w, f.b, f.t, false).unwrap_err().to_string().contains("not finite"));
    let cfg = f.cfg.clone();
    model.weight_masks = Some(WeightMasks::new(&model.dev, &cfg, &subnet::initial_scores(cfg.n_layer, cfg.n_embd, cfg.n_inner(), 0)).unwrap());
    assert!(model.forward_backward(&f.tokens, &targets, f.b, f.t).unwrap_err().to_string().contains("masks"));
    assert!(WeightMasks::new(&model.dev, &cfg, &[0.0; 5]).is_err());
}

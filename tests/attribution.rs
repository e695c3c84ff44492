//! Integrated gradients over MLP neurons (src/attribution/ig.rs): the fast single-position form
//! against the plain full-prefix form, completeness on trained models, chunking, bad input, and
//! PyTorch golden values (tests/gen_ig_fixtures.py).

mod common;

use common::{cpu_device, Fixture};
use memsieve::attribution::depn::Grid;
use memsieve::attribution::ig::{ig_full_prefix, integrated_gradients, next_token_queries, IgOptions, IgTarget, Query};
use memsieve::backend::cpu::CpuBackend;
use memsieve::model::{AdamW, Model};

fn fixture_model(name: &str) -> (Model<CpuBackend>, Fixture) {
    let f = Fixture::load(name);
    let m = Model::from_params(cpu_device(), f.cfg.clone(), &f.params).unwrap();
    (m, f)
}

/// The fixture model trained for a few steps on its own batch, so its predictions are confident
/// and the IG path is far from linear.
fn trained(name: &str, steps: usize) -> (Model<CpuBackend>, Fixture) {
    let (mut m, f) = fixture_model(name);
    let targets = m.lm_targets(&f.tokens, f.b, f.t, false);
    let h = AdamW { lr: 3e-3, ..AdamW::default() };
    for _ in 0..steps {
        m.train_step(&f.tokens, &targets, f.b, f.t, &h).unwrap();
    }
    (m, f)
}

fn max_err(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let err = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
    let scale = want.iter().map(|x| (*x as f64).abs()).fold(0.0, f64::max);
    (err, scale)
}

fn queries_at(f: &Fixture, positions: &[usize]) -> Vec<Query> {
    (0..f.b).flat_map(|s| positions.iter().map(move |&pos| Query { seq: s, pos, target: f.tokens[s * f.t + pos + 1] })).collect()
}

#[test]
fn fast_form_matches_the_full_prefix_form() {
    let (mut m, f) = trained("gelunew_l3", 20);
    let queries = queries_at(&f, &[0, 1, 6, 17, f.t - 2]);
    let layers: Vec<usize> = (0..f.cfg.n_layer).collect();
    for (grid, target, steps) in [(Grid::Left, IgTarget::Prob, 6), (Grid::Linspace, IgTarget::LogProb, 5), (Grid::Right, IgTarget::Prob, 3)] {
        let opts = IgOptions { steps, grid, target, max_rows: 64 };
        let fast = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &opts, &|_, _| {}).unwrap();
        let slow = ig_full_prefix(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &opts).unwrap();
        let (err, scale) = max_err(&fast.ig, &slow.ig);
        println!("{grid:?} {target:?}: max |fast − full prefix| {err:.2e} (max |IG| {scale:.2e})");
        assert!(scale > 1e-3, "attributions are not all ~0");
        assert!(err <= 1e-4, "IG {grid:?} {target:?}: {err:e}");
        let (perr, _) = max_err(&fast.path, &slow.path);
        assert!(perr <= 1e-5, "path values {grid:?} {target:?}: {perr:e}");
    }
}

#[test]
fn chunking_does_not_change_results() {
    let (mut m, f) = fixture_model("gelunew_l3");
    let queries = next_token_queries(&f.tokens, f.b, f.t, 20);
    let layers = [2, 0];
    let opts = IgOptions { steps: 4, ..IgOptions::default() };
    let whole = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &IgOptions { max_rows: 1 << 20, ..opts }, &|_, _| {}).unwrap();
    // 7 rows a launch: one query (4 rows) per launch, the last launch partial.
    let parts = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &IgOptions { max_rows: 7, ..opts }, &|_, _| {}).unwrap();
    let (err, scale) = max_err(&parts.ig, &whole.ig);
    assert!(scale > 0.0 && err <= 1e-6 * scale.max(1.0), "{err:e}");
    assert_eq!(whole.layers, vec![2, 0]);
}

/// Σ_k IG[k] ≈ f(a) − f(0) per layer, and the gap shrinks as m grows (depn-attention.md check 1).
#[test]
fn completeness_on_trained_models() {
    for (name, steps) in [("relu_l1", 30), ("gelunew_l3", 40)] {
        let (mut m, f) = trained(name, steps);
        let queries = queries_at(&f, &[2, f.t / 2, f.t - 2]);
        let layers: Vec<usize> = (0..f.cfg.n_layer).collect();
        let (mut gaps, mut spans) = (Vec::new(), Vec::new());
        for steps in [16, 1024] {
            let right = IgOptions { steps, grid: Grid::Right, target: IgTarget::Prob, max_rows: 2048 };
            let ig = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &right, &|_, _| {}).unwrap();
            let zero = IgOptions { steps: 1, grid: Grid::Left, ..right };
            let f0 = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &zero, &|_, _| {}).unwrap();
            let (mut worst, mut span) = (0f64, 0f64);
            for q in 0..queries.len() {
                for li in 0..layers.len() {
                    let sum: f64 = ig.attribution(q, li).iter().map(|&x| x as f64).sum();
                    let delta = *ig.path_values(q, li).last().unwrap() as f64 - f0.path_values(q, li)[0] as f64;
                    worst = worst.max((sum - delta).abs());
                    span = span.max(delta.abs());
                }
            }
            println!("{name}, m = {steps}: max |Σ IG − (f(a) − f(0))| = {worst:.3e}, max |f(a) − f(0)| = {span:.3e}");
            assert!(span > 0.05, "{name}: the scaled activation barely moves f ({span})");
            gaps.push(worst);
            spans.push(span);
        }
        // A right Riemann sum converges as 1/m: 64× the steps, at least 20× closer.
        assert!(gaps[1] <= 0.005 * spans[1] + 1e-4, "{name}: completeness gap {gaps:?} over a span of {spans:?}");
        assert!(gaps[1] * 20.0 <= gaps[0], "{name}: the Riemann gap does not shrink like 1/m: {gaps:?}");
    }
}

#[test]
fn bad_queries_are_clear_errors() {
    let (mut m, f) = fixture_model("gelunew_l3");
    let opts = IgOptions::default();
    let run = |m: &mut Model<CpuBackend>, q: Query, layers: &[usize], o: &IgOptions| {
        integrated_gradients(m, &f.tokens, f.b, f.t, &[q], layers, o, &|_, _| {}).unwrap_err().to_string()
    };
    let ok = Query { seq: 0, pos: 3, target: 1 };
    assert!(run(&mut m, Query { seq: f.b, ..ok }, &[0], &opts).contains("outside the batch"));
    assert!(run(&mut m, Query { pos: f.t, ..ok }, &[0], &opts).contains("outside the batch"));
    assert!(run(&mut m, Query { target: f.cfg.vocab_size as u32, ..ok }, &[0], &opts).contains("vocabulary"));
    assert!(run(&mut m, ok, &[f.cfg.n_layer], &opts).contains("outside a model"));
    assert!(run(&mut m, ok, &[0], &IgOptions { steps: 0, ..opts }).contains("at least"));
    let mut bad = f.tokens.clone();
    bad[0] = 999;
    assert!(integrated_gradients(&mut m, &bad, f.b, f.t, &[ok], &[0], &opts, &|_, _| {}).unwrap_err().to_string().contains("vocabulary"));
}

/// PyTorch golden values (tests/gen_ig_fixtures.py: TinyMem's algorithm in float64 on trained
/// models), for the three grids and both targets.
#[test]
fn matches_pytorch_golden_integrated_gradients() {
    for name in ["ig_relu_l1", "ig_gelunew_l3"] {
        let (mut m, f) = fixture_model(name);
        let q = f.ints("query");
        let queries: Vec<Query> = q.chunks(3).map(|r| Query { seq: r[0] as usize, pos: r[1] as usize, target: r[2] }).collect();
        let layers: Vec<usize> = (0..f.cfg.n_layer).collect();
        for (variant, grid, target, steps) in [
            ("left_prob_20", Grid::Left, IgTarget::Prob, 20),
            ("linspace_prob_20", Grid::Linspace, IgTarget::Prob, 20),
            ("right_logprob_10", Grid::Right, IgTarget::LogProb, 10),
        ] {
            let opts = IgOptions { steps, grid, target, max_rows: 2048 };
            let got = integrated_gradients(&mut m, &f.tokens, f.b, f.t, &queries, &layers, &opts, &|_, _| {}).unwrap();
            let (want, want_path) = (f.tensor(&format!("ig.{variant}")), f.tensor(&format!("path.{variant}")));
            let (err, scale) = max_err(&got.ig, &want);
            println!("{name} {variant}: max |memsieve − PyTorch| {err:.2e} (max |IG| {scale:.2e})");
            common::assert_close(&got.ig, &want, 2e-6, 1e-4, &format!("{name} {variant} IG"));
            common::assert_close(&got.path, &want_path, 1e-6, 1e-5, &format!("{name} {variant} f(α)"));
        }
    }
}

/// Activations and Zero-Out (both conventions) against PyTorch on the trained fixture models.
#[test]
fn activation_and_zero_out_scores_match_pytorch() {
    use memsieve::attribution::methods::{activation_scores, zero_out_scores};
    use memsieve::data::TokenMatrix;
    for name in ["ig_relu_l1", "ig_gelunew_l3"] {
        let (mut m, f) = fixture_model(name);
        let rows = TokenMatrix::from_data(f.t, f.tokens.clone()).unwrap();
        let act = activation_scores(&mut m, &rows, f.t / 3, 2).unwrap();
        let want: Vec<f64> = f.tensor("activations").iter().map(|&x| x as f64).collect();
        let got: Vec<f32> = act.values.iter().map(|&x| x as f32).collect();
        common::assert_close(&got, &f.tensor("activations"), 1e-6, 1e-4, &format!("{name} activations"));
        assert!(want.iter().any(|&x| x > 1e-3));
        for (keep_only, key) in [(false, "zero_out"), (true, "zero_out_keep_only")] {
            let z = zero_out_scores(&mut m, &rows, 2, keep_only, &|_, _| {}).unwrap();
            let got: Vec<f32> = z.values.iter().map(|&x| x as f32).collect();
            let (err, scale) = max_err(&got, &f.tensor(key));
            println!("{name} {key}: max |memsieve − PyTorch| {err:.2e} (max |ΔL| {scale:.2e})");
            // Loss differences of f32 sums of ~10³ terms: absolute error ~1e-6·loss.
            common::assert_close(&got, &f.tensor(key), 2e-5, 1e-3, &format!("{name} {key}"));
            assert!(scale > 1e-4, "{name} {key}: no neuron matters?");
        }
    }
}

/// DEPN's per-text scores are the sums of the IG of its private tokens; the selection is the
/// aggregator over the per-text 0.1 × max candidates.
#[test]
fn depn_selection_is_the_vote_over_per_text_candidates() {
    use memsieve::attribution::depn::{aggregate, candidates};
    use memsieve::attribution::methods::{depn, PrivateText};
    use memsieve::attribution::NeuronScores;
    let (mut m, f) = fixture_model("ig_gelunew_l3");
    let (nl, w) = (f.cfg.n_layer, f.cfg.n_inner());
    let texts: Vec<PrivateText> = (0..f.b).map(|s| PrivateText { tokens: f.tokens[s * f.t..(s + 1) * f.t].to_vec(), positions: vec![10 + s, 20, 30] }).collect();
    let opts = IgOptions { steps: 8, ..IgOptions::default() };
    let r = depn(&mut m, &texts, &opts, 0.1, 7, &|_, _| {}).unwrap();
    let mut per_text = Vec::new();
    let mut total = NeuronScores::zeros(nl, w);
    for text in &texts {
        let queries: Vec<Query> = text.positions.iter().map(|&p| Query { seq: 0, pos: p - 1, target: text.tokens[p] }).collect();
        let layers: Vec<usize> = (0..nl).collect();
        let ig = integrated_gradients(&mut m, &text.tokens, 1, f.t, &queries, &layers, &opts, &|_, _| {}).unwrap();
        let mut own = NeuronScores::zeros(nl, w);
        for q in 0..queries.len() {
            for l in 0..nl {
                for (k, &x) in ig.attribution(q, l).iter().enumerate() {
                    own.values[l * w + k] += x as f64;
                }
            }
        }
        per_text.push(candidates(&own, 0.1));
        total.add(&own).unwrap();
    }
    assert_eq!(r.selected, aggregate(&per_text, 7));
    assert_eq!(r.selected.len(), 7);
    assert_eq!(r.scores, total);
    assert!(depn(&mut m, &[PrivateText { tokens: texts[0].tokens.clone(), positions: vec![0] }], &opts, 0.1, 7, &|_, _| {}).is_err());
}

/// The mask gradient (device ColumnDot through the activation hooks) against central differences
/// of the masked loss, on every layer of a trained 3-layer model, at mask values in (0, 1).
#[test]
fn mask_gradient_matches_finite_differences() {
    use memsieve::attribution::masks::MaskBuffers;
    let (mut m, f) = trained("gelunew_l3", 20);
    let (nl, w) = (f.cfg.n_layer, f.cfg.n_inner());
    let bufs = MaskBuffers::new(&m, f.b, f.t).unwrap();
    let mask: Vec<f32> = (0..nl * w).map(|i| 0.3 + 0.6 * ((i * 37 % 101) as f32 / 101.0)).collect();
    let (loss, grad) = bufs.loss_and_grad(&mut m, &f.tokens, f.t, &mask).unwrap();
    assert!(loss.is_finite());
    let (mut worst, mut biggest) = (0f64, 0f64);
    for l in 0..nl {
        // The neurons with the largest gradients of each layer, and one ordinary one.
        let mut order: Vec<usize> = (0..w).collect();
        order.sort_by(|&a, &b| grad[l * w + b].abs().total_cmp(&grad[l * w + a].abs()));
        for &k in order.iter().take(3).chain([&order[w / 2]]) {
            let i = l * w + k;
            let h = 1e-2f32;
            let mut up = mask.clone();
            up[i] += h;
            let mut down = mask.clone();
            down[i] -= h;
            let fd = (bufs.loss_and_grad(&mut m, &f.tokens, f.t, &up).unwrap().0 - bufs.loss_and_grad(&mut m, &f.tokens, f.t, &down).unwrap().0) / (2.0 * h as f64);
            worst = worst.max((fd - grad[i] as f64).abs());
            biggest = biggest.max((grad[i] as f64).abs());
        }
    }
    println!("mask gradient: max |analytic − central difference| {worst:.2e}, max |grad| {biggest:.2e}");
    assert!(biggest > 1e-3, "gradients are all ~0");
    assert!(worst <= 2e-2 * biggest + 2e-5, "{worst:e} vs {biggest:e}");
}

/// Slimming and Hard Concrete train, keep the memorized loss low while the sparsity term falls, and
/// give scores in [0, 1]; the reference's gradient-accumulation flag changes the result.
#[test]
fn learned_masks_train_and_score() {
    use memsieve::attribution::masks::{learned_mask_scores, MaskMethod, MaskOptions};
    use memsieve::data::TokenMatrix;
    let (mut m, f) = trained("gelunew_l3", 20);
    let rows = TokenMatrix::from_data(f.t, f.tokens.clone()).unwrap();
    for method in [MaskMethod::Slimming, MaskMethod::HardConcrete] {
        let o = MaskOptions { epochs: 12, batch: 2, ..MaskOptions::default() };
        let (s, trace) = learned_mask_scores(&mut m, &rows, method, &o, &|_, _| {}).unwrap();
        println!("{method:?}: {trace:?}");
        assert!(s.values.iter().all(|v| (0.0..=1.0).contains(v)));
        let start = match method {
            MaskMethod::Slimming => 1000.0,
            MaskMethod::HardConcrete => 1000.0 * (1.0 / (1.0 + (2.0f64 / 3.0 * (0.1f64 / 1.1).ln()).exp())),
        };
        assert!(trace.sparsity < 0.9 * start, "{method:?}: the sparsity term did not fall ({} from {start})", trace.sparsity);
        assert!(trace.loss.is_finite() && trace.epochs == 12);
        let acc = learned_mask_scores(&mut m, &rows, method, &MaskOptions { accumulate_epoch_grads: true, ..o }, &|_, _| {}).unwrap().0;
        assert_ne!(acc, s);
    }
    assert!(learned_mask_scores(&mut m, &TokenMatrix::new(f.t), MaskMethod::Slimming, &MaskOptions::default(), &|_, _| {}).is_err());
}

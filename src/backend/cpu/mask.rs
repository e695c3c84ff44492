//! Masked-weight ops (issue 7; tinymem.md §5.5): rank selection over packed 64-bit keys, mask
//! application, the masked matmul, SOU saliency and SGD with momentum.
//!
//! The masked matmul applies the mask while matmul.rs packs W into its column panels (one pass over
//! W's 65k entries a call, negligible next to the product over 4800 rows), so the masked product is
//! the plain one's kernel; the GPU kernels apply the mask in their weight-tile loads.

use super::matmul::{dweight_into, rows_times_packed};
use super::{rd, rd_u32, same, wr, wr_u32, CpuBuffer};
use crate::backend::{cut_from_words, SelectKey, View, WeightLayout, MAX_SELECT, SELECT_SENTINEL};
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

/// Entries per rayon task of the elementwise loops.
const CHUNK: usize = 8192;

/// Entry j's packed key from x (·y).
#[inline(always)]
fn key_of(x: &[f32], y: Option<&[f32]>, j: usize, key: SelectKey) -> u64 {
    key.key(y.map_or(x[j], |y| x[j] * y[j]), j)
}

/// sign(s) with sign(0) = 0 (f32::signum gives ±1 for ±0); NaN gives 0.
#[inline(always)]
fn sign(s: f32) -> f32 {
    if s > 0.0 {
        1.0
    } else if s < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The rank-k key. k = 0 and k = n − 1 (Greedy's arg-max, thousands of calls over the whole
/// parameter buffer) are one parallel min/max pass; other ranks are `select_nth_unstable` on the
/// packed keys — exact, since keys are unique and totally ordered as u64, and expected linear time
/// (the radix select of the GPU kernels would take eight passes here for the same answer).
pub fn select_rank(cut: V, x: V, y: Option<V>, n: usize, k: usize, key: SelectKey) {
    assert!(k <= n, "select_rank: rank {k} of {n} entries");
    assert!(n <= MAX_SELECT, "select_rank: {n} entries exceed the {MAX_SELECT} a selection takes");
    let (x, y) = (&rd(x)[..n], y.map(|y| &rd(y)[..n]));
    let r = if k == n {
        SELECT_SENTINEL
    } else if k == 0 || k == n - 1 {
        let keys = (0..n).into_par_iter().with_min_len(CHUNK).map(|j| key_of(x, y, j, key));
        if k == 0 { keys.min() } else { keys.max() }.expect("n > 0 here")
    } else {
        let mut keys: Vec<u64> = (0..n).into_par_iter().with_min_len(CHUNK).map(|j| key_of(x, y, j, key)).collect();
        *keys.select_nth_unstable(k).1
    };
    wr_u32(cut)[..2].copy_from_slice(&[(r >> 32) as u32, r as u32]);
}

/// w[j] = 0 where key(j) < cut (below) or ≥ cut (!below). w may be x or y itself (Greedy zeroes a
/// parameter by its own value): then the value is read from w before it is written.
pub fn mask_apply(w: V, x: V, y: Option<V>, cut: V, n: usize, key: SelectKey, below: bool) {
    let c = cut_from_words(rd_u32(cut));
    let (x_in_w, y_in_w) = (same(w, x), y.is_some_and(|y| same(w, y)));
    let xs: &[f32] = if x_in_w { &[] } else { &rd(x)[..n] };
    let ys: Option<&[f32]> = match y {
        Some(_) if y_in_w => None,
        Some(y) => Some(&rd(y)[..n]),
        None => None,
    };
    wr(w)[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(ci, wc)| {
        for (i, wj) in wc.iter_mut().enumerate() {
            let j = ci * CHUNK + i;
            let xv = if x_in_w { *wj } else { xs[j] };
            let v = match (y, ys) {
                (None, _) => xv,
                (Some(_), Some(ys)) => xv * ys[j],
                (Some(_), None) => xv * *wj,
            };
            if (key.key(v, j) < c) == below {
                *wj = 0.0;
            }
        }
    });
}

/// Whether entry j of W survives the Abs-key mask of `scores` against `cut`.
fn kept<'a>(scores: V<'a>, cut: V, len: usize) -> impl Fn(usize) -> bool + Sync + 'a {
    let c = cut_from_words(rd_u32(cut));
    let s = &rd(scores)[..len];
    move |j| SelectKey::Abs.key(s[j], j) >= c
}

#[allow(clippy::too_many_arguments)]
pub fn masked_forward(out: V, inp: V, weight: V, bias: Option<V>, scores: V, cut: V, n: usize, c: usize, oc: usize) {
    let (x, y, w, keep) = (rd(inp), wr(out), &rd(weight)[..c * oc], kept(scores, cut, c * oc));
    // The mask is applied while W [c, oc] is packed for the GEMM.
    rows_times_packed(y, x, bias.map(rd), n, c, oc, false, |d, j| if keep(d * oc + j) { w[d * oc + j] } else { 0.0 });
}

#[allow(clippy::too_many_arguments)]
pub fn masked_backward(dinp: Option<V>, dscores: Option<V>, dout: V, inp: V, weight: V, scores: V, cut: V, n: usize, c: usize, oc: usize) {
    let (dy, x) = (rd(dout), rd(inp));
    assert!(dy.len() >= n * oc && x.len() >= n * c, "masked_matmul_backward: views shorter than the shape");
    if let Some(dinp) = dinp {
        // dinp[n, c] = dout[n, oc] · (W ⊙ m)ᵀ: entry (d, j) of (W ⊙ m)ᵀ is W[j, d], contiguous along d.
        let (w, keep) = (&rd(weight)[..c * oc], kept(scores, cut, c * oc));
        rows_times_packed(wr(dinp), dy, None, n, oc, c, true, |d, j| if keep(j * oc + d) { w[j * oc + d] } else { 0.0 });
    }
    if let Some(dscores) = dscores {
        if n == 0 {
            return;
        }
        // ∂J/∂W_eff = inpᵀ·dout (the unmasked dweight GEMM), then the straight-through epilogue.
        let mut g = vec![0f32; c * oc];
        dweight_into(&mut g, x, dy, n, c, oc, WeightLayout::InOut);
        let (w, s) = (rd(weight), rd(scores));
        wr(dscores)[..c * oc].par_chunks_mut(CHUNK).enumerate().for_each(|(ci, d)| {
            let j0 = ci * CHUNK;
            for (i, dj) in d.iter_mut().enumerate() {
                *dj += sign(s[j0 + i]) * w[j0 + i] * g[j0 + i];
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
pub fn sgd_momentum(params: V, grads: V, buf: V, lr: f32, momentum: f32, weight_decay: f32, first: bool) {
    let n = params.len;
    let g = &rd(grads)[..n];
    let (p, b) = (wr(params), &mut wr(buf)[..n]);
    p.par_chunks_mut(CHUNK).zip(b.par_chunks_mut(CHUNK)).enumerate().for_each(|(ci, (p, b))| {
        let g = &g[ci * CHUNK..ci * CHUNK + p.len()];
        for i in 0..p.len() {
            let d = g[i] + weight_decay * p[i];
            b[i] = if first { d } else { momentum * b[i] + d };
            p[i] -= lr * b[i];
        }
    });
}

/// Per block: ‖g_b‖² summed in entry order, then each entry's saliency (the GPU kernels do the same
/// with one invocation per block).
pub fn sou_scores(out: V, w: V, g: V, n: usize, block: usize, lambda: f32) {
    assert!(block > 0, "sou_scores: blocks of 0 entries");
    let (w, g) = (&rd(w)[..n], &rd(g)[..n]);
    let inv_lambda = 1.0 / lambda;
    wr(out)[..n].par_chunks_mut(block).zip(w.par_chunks(block).zip(g.par_chunks(block))).for_each(|(o, (w, g))| {
        let mut norm = 0f32;
        for gj in g {
            norm += gj * gj;
        }
        let denom = lambda + norm;
        for ((oj, wj), gj) in o.iter_mut().zip(w).zip(g) {
            let finv = inv_lambda * (1.0 - gj * gj / denom);
            *oj = wj * wj / (2.0 * finv);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::CpuBackend;
    use crate::backend::{cut_from_words, Backend, Op, SelectKey, View, SELECT_SENTINEL};

    fn up(cpu: &CpuBackend, h: &[f32]) -> super::CpuBuffer {
        let b = cpu.alloc(h.len().max(1)).unwrap();
        cpu.upload_f32(View::new(&b, 0, h.len()), h);
        b
    }

    /// Values with many ties in |x|: ±0, duplicated magnitudes of both signs, a run of equal values.
    fn tied(n: usize) -> Vec<f32> {
        (0..n)
            .map(|j| match j % 7 {
                0 => 0.0,
                1 => -0.0,
                2 => 0.5,
                3 => -0.5,
                4 => ((j * 37) % 11) as f32 * 0.25 - 1.0,
                5 => -(((j * 13) % 5) as f32) * 0.125,
                _ => 1.5,
            })
            .collect()
    }

    /// SelectRank is the rank-k key of a full sort of the packed keys, for every k (with and without
    /// y, both key kinds), and MaskApply(below) at that cut zeroes exactly the k entries below it.
    #[test]
    fn select_rank_is_the_sorted_key_and_mask_apply_zeroes_k() {
        let cpu = CpuBackend::with_threads(2);
        for n in [1usize, 2, 7, 64, 301] {
            let xh = tied(n);
            let yh: Vec<f32> = (0..n).map(|j| if j % 5 == 0 { -2.0 } else { 1.0 + (j % 3) as f32 }).collect();
            let (x, y, cut) = (up(&cpu, &xh), up(&cpu, &yh), cpu.alloc(2).unwrap());
            let xv = View::new(&x, 0, n);
            for key in [SelectKey::Abs, SelectKey::Signed] {
                for with_y in [false, true] {
                    let mut sorted: Vec<u64> = (0..n).map(|j| key.key(if with_y { xh[j] * yh[j] } else { xh[j] }, j)).collect();
                    sorted.sort_unstable();
                    for k in 0..=n {
                        let yv = with_y.then(|| View::new(&y, 0, n));
                        cpu.run(&Op::SelectRank { cut: View::new(&cut, 0, 2), x: xv, y: yv, n, k, key });
                        let mut words = [0u32; 2];
                        cpu.download_u32(View::new(&cut, 0, 2), &mut words);
                        let want = sorted.get(k).copied().unwrap_or(SELECT_SENTINEL);
                        assert_eq!(cut_from_words(&words), want, "n {n} k {k} {key:?} y {with_y}");
                        // Mask a copy of ones below the cut: exactly k zeros, at the k smallest keys.
                        let w = up(&cpu, &vec![1.0; n]);
                        cpu.run(&Op::MaskApply { w: View::new(&w, 0, n), x: xv, y: yv, cut: View::new(&cut, 0, 2), n, key, below: true });
                        let mut got = vec![0f32; n];
                        cpu.download_f32(View::new(&w, 0, n), &mut got);
                        assert_eq!(got.iter().filter(|&&v| v == 0.0).count(), k, "n {n} k {k} {key:?}: zeros");
                        for (j, &g) in got.iter().enumerate() {
                            let kj = sorted.binary_search(&key.key(if with_y { xh[j] * yh[j] } else { xh[j] }, j)).unwrap();
                            assert_eq!(g == 0.0, kj < k, "n {n} k {k}: entry {j} of rank {kj}");
                        }
                    }
                }
            }
        }
    }

    /// Signed keys order values as numbers (−0 just below +0); Abs keys as magnitudes.
    #[test]
    fn key_orders() {
        let vals = [f32::NEG_INFINITY, -3.0, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY];
        for w in vals.windows(2) {
            assert!(SelectKey::Signed.order(w[0]) < SelectKey::Signed.order(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(SelectKey::Abs.order(-2.0), SelectKey::Abs.order(2.0));
        assert_eq!(SelectKey::Abs.order(-0.0), 0);
        assert!(SelectKey::Abs.order(-3.0) > SelectKey::Abs.order(2.0));
    }

    /// In place (w = x, Greedy's form): the arg-max of x·y is zeroed and nothing else.
    #[test]
    fn mask_apply_in_place_zeroes_the_arg_max() {
        let cpu = CpuBackend::with_threads(2);
        let n = 1000;
        let xh: Vec<f32> = (0..n).map(|j| ((j * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let yh: Vec<f32> = (0..n).map(|j| if j % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let (x, y, cut) = (up(&cpu, &xh), up(&cpu, &yh), cpu.alloc(2).unwrap());
        let (xv, yv, cv) = (View::new(&x, 0, n), View::new(&y, 0, n), View::new(&cut, 0, 2));
        cpu.run(&Op::SelectRank { cut: cv, x: xv, y: Some(yv), n, k: n - 1, key: SelectKey::Signed });
        cpu.run(&Op::MaskApply { w: xv, x: xv, y: Some(yv), cut: cv, n, key: SelectKey::Signed, below: false });
        let mut got = vec![0f32; n];
        cpu.download_f32(xv, &mut got);
        let best = (0..n).max_by(|&a, &b| (xh[a] * yh[a]).total_cmp(&(xh[b] * yh[b])).then(a.cmp(&b))).unwrap();
        for j in 0..n {
            assert_eq!(got[j], if j == best { 0.0 } else { xh[j] }, "entry {j} (arg-max {best})");
        }
    }

    /// The straight-through gradient: dscores = sign(S) ⊙ W ⊙ (the plain MatmulBackward's dweight),
    /// and the masked forward/dinp equal the plain ops on W ⊙ m.
    #[test]
    fn masked_matmul_is_the_plain_matmul_on_the_masked_weight() {
        use crate::backend::WeightLayout;
        let cpu = CpuBackend::with_threads(2);
        for (n, c, oc, k) in [(7usize, 33usize, 70usize, 500usize), (301, 128, 40, 0), (1, 5, 3, 15)] {
            let rand = |seed: u64, len: usize| -> Vec<f32> {
                let mut s = seed;
                (0..len).map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                }).collect()
            };
            let (xh, wh, bh, dyh) = (rand(1, n * c), rand(2, c * oc), rand(3, oc), rand(4, n * oc));
            let mut sh = rand(5, c * oc);
            sh[0] = 0.0;
            sh[1] = -0.0;
            let cw = c * oc;
            let (x, w, b, dy, s, cut) = (up(&cpu, &xh), up(&cpu, &wh), up(&cpu, &bh), up(&cpu, &dyh), up(&cpu, &sh), cpu.alloc(2).unwrap());
            fn whole(buf: &super::CpuBuffer, len: usize) -> View<'_, super::CpuBuffer> {
                View::new(buf, 0, len)
            }
            cpu.run(&Op::SelectRank { cut: whole(&cut, 2), x: whole(&s, cw), y: None, n: cw, k, key: SelectKey::Abs });
            let weff = up(&cpu, &wh);
            cpu.run(&Op::MaskApply { w: whole(&weff, cw), x: whole(&s, cw), y: None, cut: whole(&cut, 2), n: cw, key: SelectKey::Abs, below: true });
            let (o1, o2) = (cpu.alloc(n * oc).unwrap(), cpu.alloc(n * oc).unwrap());
            cpu.run(&Op::MaskedMatmulForward { out: whole(&o1, n * oc), inp: whole(&x, n * c), weight: whole(&w, cw), bias: Some(whole(&b, oc)), scores: whole(&s, cw), cut: whole(&cut, 2), n, c, oc });
            cpu.run(&Op::MatmulForward { out: whole(&o2, n * oc), inp: whole(&x, n * c), weight: whole(&weff, cw), bias: Some(whole(&b, oc)), n, c, oc, layout: WeightLayout::InOut });
            let get = |buf: &super::CpuBuffer, len: usize| {
                let mut v = vec![0f32; len];
                cpu.download_f32(View::new(buf, 0, len), &mut v);
                v
            };
            // The baked weight lost exactly the k entries of lowest |S| (W itself has no zeros here).
            let mut order: Vec<usize> = (0..cw).collect();
            order.sort_by_key(|&j| SelectKey::Abs.key(sh[j], j));
            let baked = get(&weff, cw);
            for (rank, &j) in order.iter().enumerate() {
                assert_eq!(baked[j] == 0.0, rank < k, "baked entry {j} of rank {rank} (k {k})");
            }
            assert_eq!(get(&o1, n * oc), get(&o2, n * oc), "forward n {n} c {c} oc {oc}");
            let (d1, d2) = (cpu.alloc(n * c).unwrap(), cpu.alloc(n * c).unwrap());
            let ds = up(&cpu, &vec![0.25; cw]);
            let dw = cpu.alloc(cw).unwrap();
            cpu.run(&Op::MaskedMatmulBackward { dinp: Some(whole(&d1, n * c)), dscores: Some(whole(&ds, cw)), dout: whole(&dy, n * oc), inp: whole(&x, n * c), weight: whole(&w, cw), scores: whole(&s, cw), cut: whole(&cut, 2), n, c, oc });
            cpu.run(&Op::MatmulBackward { dinp: Some(whole(&d2, n * c)), dweight: Some(whole(&dw, cw)), dbias: None, dout: whole(&dy, n * oc), inp: whole(&x, n * c), weight: whole(&weff, cw), n, c, oc, layout: WeightLayout::InOut });
            assert_eq!(get(&d1, n * c), get(&d2, n * c), "dinp n {n} c {c} oc {oc}");
            let (got, g) = (get(&ds, cw), get(&dw, cw));
            for j in 0..cw {
                let sg = if sh[j] > 0.0 { 1.0 } else if sh[j] < 0.0 { -1.0 } else { 0.0 };
                assert_eq!(got[j], 0.25 + sg * wh[j] * g[j], "dscores entry {j}");
            }
            // ∂J/∂W_eff by central differences of the masked forward, J = Σ out ⊙ dout (linear in W,
            // so the difference is exact up to f32 rounding), at unmasked entries: there the
            // straight-through dscores is sign(S)·W·∂J/∂W_eff.
            let mask_cut = {
                let mut words = [0u32; 2];
                cpu.download_u32(whole(&cut, 2), &mut words);
                cut_from_words(&words)
            };
            let j_of = |wv: &[f32]| -> f64 {
                let wb = up(&cpu, wv);
                cpu.run(&Op::MaskedMatmulForward { out: whole(&o1, n * oc), inp: whole(&x, n * c), weight: whole(&wb, cw), bias: None, scores: whole(&s, cw), cut: whole(&cut, 2), n, c, oc });
                get(&o1, n * oc).iter().zip(&dyh).map(|(o, d)| *o as f64 * *d as f64).sum()
            };
            let mut checked = 0;
            for j in (0..cw).step_by(cw / 7 + 1).filter(|&j| SelectKey::Abs.key(sh[j], j) >= mask_cut) {
                let h = 0.25f32;
                let (mut wp, mut wm) = (wh.clone(), wh.clone());
                wp[j] += h;
                wm[j] -= h;
                let fd = (j_of(&wp) - j_of(&wm)) / (2.0 * h as f64);
                let sg = if sh[j] > 0.0 { 1.0 } else if sh[j] < 0.0 { -1.0 } else { 0.0 };
                let want = sg * wh[j] as f64 * fd;
                let tol = 1e-3 * (1.0 + want.abs());
                assert!((got[j] as f64 - 0.25 - want).abs() <= tol, "dscores {j} vs finite differences: {} vs {want}", got[j] - 0.25);
                checked += 1;
            }
            assert!(k == cw || checked > 0, "no unmasked entry checked by finite differences");
            // And the plain dweight itself against f64 (so the chain does not just agree with itself).
            for j in (0..cw).step_by(97) {
                let (i, o) = (j / oc, j % oc);
                let want: f64 = (0..n).map(|r| xh[r * c + i] as f64 * dyh[r * oc + o] as f64).sum();
                assert!((g[j] as f64 - want).abs() <= 1e-5 + 1e-4 * want.abs(), "dweight {j}: {} vs {want}", g[j]);
            }
        }
    }

    /// CrossEntropyBackward's per-row weights: row i is the unweighted gradient times scale·weights[i].
    #[test]
    fn crossentropy_weights_scale_each_row() {
        let cpu = CpuBackend::with_threads(2);
        let (n, v) = (5usize, 7usize);
        let probs: Vec<f32> = (0..n * v).map(|e| ((e * 31) % 7) as f32 / 21.0).collect();
        let targets: Vec<u32> = vec![0, 6, crate::backend::IGNORE_TARGET, 3, 1];
        let weights = [1.0f32, -0.5, 2.0, 0.0, 3.0];
        let (pb, wb, d) = (up(&cpu, &probs), up(&cpu, &weights), cpu.alloc(n * v).unwrap());
        let tb = cpu.alloc(n).unwrap();
        cpu.upload_u32(View::new(&tb, 0, n), &targets);
        let op = Op::CrossEntropyBackward { dlogits: View::new(&d, 0, n * v), probs: View::new(&pb, 0, n * v), targets: View::new(&tb, 0, n), weights: Some(View::new(&wb, 0, n)), scale: 0.5, n, v };
        cpu.run(&op);
        let mut got = vec![0f32; n * v];
        cpu.download_f32(View::new(&d, 0, n * v), &mut got);
        for i in 0..n {
            for j in 0..v {
                let want = if targets[i] == crate::backend::IGNORE_TARGET { 0.0 } else { (probs[i * v + j] - (j as u32 == targets[i]) as u32 as f32) * (0.5 * weights[i]) };
                assert_eq!(got[i * v + j], want, "row {i} column {j}");
            }
        }
    }

    /// SOU against the unsimplified f64 formula 1/λ − g²/(λ² + λ‖g_b‖²), a partial last block and an
    /// all-zero block; SGD with momentum against PyTorch's recurrence in f64.
    #[test]
    fn sou_and_sgd_follow_their_formulas() {
        let cpu = CpuBackend::with_threads(2);
        let (n, block, lambda) = (137usize, 50usize, 1e-7f32);
        let wh: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37).sin()).collect();
        let gh: Vec<f32> = (0..n).map(|j| if (50..100).contains(&j) { 0.0 } else { 1e-3 * (j as f32 * 0.11).cos() }).collect();
        let (w, g, out) = (up(&cpu, &wh), up(&cpu, &gh), cpu.alloc(n).unwrap());
        cpu.run(&Op::SouScores { out: View::new(&out, 0, n), w: View::new(&w, 0, n), g: View::new(&g, 0, n), n, block, lambda });
        let mut got = vec![0f32; n];
        cpu.download_f32(View::new(&out, 0, n), &mut got);
        let l = lambda as f64;
        for (b0, gb) in gh.chunks(block).enumerate() {
            let norm: f64 = gb.iter().map(|&x| x as f64 * x as f64).sum();
            for (i, &gj) in gb.iter().enumerate() {
                let j = b0 * block + i;
                let finv = 1.0 / l - (gj as f64).powi(2) / (l * l + l * norm);
                let want = (wh[j] as f64).powi(2) / (2.0 * finv);
                assert!((got[j] as f64 - want).abs() <= 1e-4 * want.abs() + 1e-30, "sou {j}: {} vs {want}", got[j]);
            }
        }
        let m = 1031;
        let ph: Vec<f32> = (0..m).map(|j| (j as f32 * 0.3).cos()).collect();
        let (p, buf) = (up(&cpu, &ph), up(&cpu, &vec![9.0; m]));
        let (mut pw, mut bw) = (ph.iter().map(|&x| x as f64).collect::<Vec<_>>(), vec![0f64; m]);
        for step in 0..3 {
            let gs: Vec<f32> = (0..m).map(|j| ((j + step) as f32 * 0.7).sin()).collect();
            let gbuf = up(&cpu, &gs);
            cpu.run(&Op::SgdMomentum { params: View::new(&p, 0, m), grads: View::new(&gbuf, 0, m), buf: View::new(&buf, 0, m), lr: 0.1, momentum: 0.9, weight_decay: 5e-4, first: step == 0 });
            for j in 0..m {
                let d = gs[j] as f64 + 5e-4 * pw[j];
                bw[j] = if step == 0 { d } else { 0.9 * bw[j] + d };
                pw[j] -= 0.1 * bw[j];
            }
        }
        let mut got = vec![0f32; m];
        cpu.download_f32(View::new(&p, 0, m), &mut got);
        for j in 0..m {
            assert!((got[j] as f64 - pw[j]).abs() <= 1e-5, "sgd param {j}: {} vs {}", got[j], pw[j]);
        }
    }
}

//! Training regularizers (tinymem.md §5.1; src/regularize): the spectral-norm penalty's power
//! iteration and rank-1 gradient, and example-tied dropout. GPU twins: shaders/regularize.wgsl,
//! kernels/regularize.cu.

use super::{rd, rd_u32, same, wr, CpuBuffer};
use crate::backend::{EtdMode, View};
use crate::regularize::etd;
use crate::regularize::spectral::{normalize, SpectralBlock};
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

fn read_table(table: V, blocks: usize) -> Vec<SpectralBlock> {
    let t = rd_u32(table);
    assert!(t.len() >= 5 * blocks, "spectral: a table of {} words for {blocks} blocks", t.len());
    t.chunks_exact(5).take(blocks).map(SpectralBlock::from_words).collect()
}

/// Per block (in parallel): v = normalize(Wᵀu), u = normalize(W v), σ = uᵀ(W v); sums in index order.
pub fn power_iteration(state: V, sigma: V, params: V, table: V, blocks: usize) {
    let bl = read_table(table, blocks);
    let (w, st) = (rd(params), rd(state));
    let results: Vec<(Vec<f32>, Vec<f32>, f32)> = bl
        .par_iter()
        .map(|b| {
            let at = |i: usize, j: usize| w[b.off + i * b.ld + j];
            let u = &st[b.state..b.state + b.rows];
            let mut v: Vec<f32> = (0..b.cols).map(|j| (0..b.rows).fold(0f32, |s, i| s + at(i, j) * u[i])).collect();
            normalize(&mut v);
            let wv: Vec<f32> = (0..b.rows).map(|i| (0..b.cols).fold(0f32, |s, j| s + at(i, j) * v[j])).collect();
            let mut u = wv.clone();
            normalize(&mut u);
            let s = u.iter().zip(&wv).fold(0f32, |s, (a, b)| s + a * b);
            (u, v, s)
        })
        .collect();
    let (st, sg) = (wr(state), wr(sigma));
    for (k, (b, (u, v, s))) in bl.iter().zip(results).enumerate() {
        st[b.state..b.state + b.rows].copy_from_slice(&u);
        st[b.state + b.rows..b.state + b.rows + b.cols].copy_from_slice(&v);
        sg[k] = s;
    }
}

/// grads[W_b[i, j]] += (coef_b·u_i)·v_j.
pub fn spectral_grad_add(grads: V, state: V, sigma: V, table: V, blocks: usize, lambda: f32, linear: bool) {
    let bl = read_table(table, blocks);
    let (st, sg, g) = (rd(state), rd(sigma), wr(grads));
    for (k, b) in bl.iter().enumerate() {
        let coef = if linear { 0.5 * lambda } else { lambda * sg[k] };
        let (u, v) = (&st[b.state..b.state + b.rows], &st[b.state + b.rows..b.state + b.rows + b.cols]);
        for (i, ui) in u.iter().enumerate() {
            let cu = coef * ui;
            for (gj, vj) in g[b.off + i * b.ld..b.off + i * b.ld + b.cols].iter_mut().zip(v) {
                *gj += cu * vj;
            }
        }
    }
}

/// out = x ⊙ m · scale, one rayon task per row of t positions (the mask depends on the row's example).
#[allow(clippy::too_many_arguments)]
pub fn example_tied_dropout(out: V, x: V, ids: Option<V>, n: usize, t: usize, c: usize, pos0: usize, seed: u64, mode: EtdMode, keep: usize, mem: u32, scale: f32) {
    assert!(t > 0 && n.is_multiple_of(t), "example_tied_dropout: {n} rows are not whole sequences of {t}");
    let ids = ids.map(|v| &rd_u32(v)[..n / t]);
    let in_place = same(out, x);
    let src: &[f32] = if in_place { &[] } else { &rd(x)[..n * c] };
    wr(out)[..n * c].par_chunks_mut(t * c).enumerate().for_each(|(r, o)| {
        let id = ids.map(|ids| ids[r]);
        let channels = match (mode, id) {
            (EtdMode::Channels, Some(id)) => etd::channels_kept(seed, id, c, keep, mem as usize),
            (EtdMode::Channels, None) => (0..c).map(|j| j < keep).collect(),
            (EtdMode::Positions, _) => vec![true; c],
        };
        for p in 0..t {
            let pos_kept = mode == EtdMode::Channels || etd::position_kept(seed, id, pos0 + p, keep, mem);
            for (j, &kept) in channels.iter().enumerate() {
                let e = p * c + j;
                let xv = if in_place { o[e] } else { src[r * t * c + e] };
                o[e] = if pos_kept && kept { xv * scale } else { 0.0 };
            }
        }
    });
}

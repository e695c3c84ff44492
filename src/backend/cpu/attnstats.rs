//! Attention-distribution statistics (depn-attention.md B3, the decoder-only reconstruction): per
//! causal attention row its entropy, normalised entropy, max weight and top-k mass, streamed over
//! blocks of keys so no row of scores is kept (twins: shaders/attnstats.wgsl, kernels/attnstats.cu).

use super::{dot, rd, wr, CpuBuffer};
use crate::backend::{check_attention_stats, View, ATTENTION_STATS, MAX_STATS_TOP_K};
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

/// Keys scored at once: the one block of scores a row holds.
const BLOCK: usize = 64;

/// Running softmax statistics of the scores seen so far: their max m, Z = Σ e^{s−m} and
/// A = Σ e^{s−m}·(s−m), so that H = ln Z − A/Z, max p = 1/Z. A larger max rescales both.
#[derive(Clone, Copy)]
struct Online {
    m: f32,
    z: f32,
    a: f32,
}

impl Online {
    const EMPTY: Online = Online { m: f32::NEG_INFINITY, z: 0.0, a: 0.0 };

    /// Add one block of scores.
    fn push_block(&mut self, s: &[f32]) {
        let mb = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if mb > self.m {
            // e^{s−m'}(s−m') = r·e^{s−m}((s−m) + (m−m')) with r = e^{m−m'}; nothing to rescale while empty.
            if self.z > 0.0 {
                let (d, r) = (self.m - mb, (self.m - mb).exp());
                self.a = r * (self.a + d * self.z);
                self.z *= r;
            }
            self.m = mb;
        }
        for &x in s {
            let d = x - self.m;
            let e = d.exp();
            self.z += e;
            self.a = e.mul_add(d, self.a);
        }
    }
}

/// The k largest scores seen so far, best first; on equal scores the earlier (lower) key ranks first.
struct TopK {
    v: [f32; MAX_STATS_TOP_K],
    k: usize,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK { v: [f32::NEG_INFINITY; MAX_STATS_TOP_K], k }
    }

    /// Offer the score of a key later than every key offered before (so a tie keeps the earlier one).
    #[inline]
    fn offer(&mut self, x: f32) {
        let v = &mut self.v[..self.k];
        if x > v[self.k - 1] {
            let mut j = self.k - 1;
            while j > 0 && v[j - 1] < x {
                v[j] = v[j - 1];
                j -= 1;
            }
            v[j] = x;
        }
    }
}

/// The four statistics of a row over keys 0..=t from its softmax state and top scores.
fn finish(st: &Online, top: &TopK, t: usize) -> [f32; ATTENTION_STATS] {
    let h = st.z.ln() - st.a / st.z;
    // At t = 0 the row is a point mass on the query itself: H = 0 = ln 1, and 0/0 is taken as 0
    // (no spread), not NaN.
    let norm = if t == 0 { 0.0 } else { h / ((t + 1) as f32).ln() };
    let mut mass = 0f32;
    for &v in &top.v[..top.k.min(t + 1)] {
        mass += (v - st.m).exp();
    }
    [h, norm, 1.0 / st.z, mass / st.z]
}

#[allow(clippy::too_many_arguments)]
pub fn attention_stats(out: V, qkv: V, b: usize, t: usize, c: usize, nh: usize, t0: usize, t1: usize, top_k: usize) {
    check_attention_stats(out.len, qkv.len, b, t, c, nh, t0, t1, top_k);
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let nq = t1 - t0;
    let qkv = rd(qkv);
    // One task per (row, head): its queries t0..t1 each stream keys 0..=t in blocks.
    wr(out)[..b * nh * nq * ATTENTION_STATS].par_chunks_mut(nq * ATTENTION_STATS).enumerate().for_each(|(bh, o)| {
        let (bi, h) = (bh / nh, bh % nh);
        let seq = &qkv[bi * t * 3 * c..(bi + 1) * t * 3 * c];
        let mut block = [0f32; BLOCK];
        for (tq, o) in (t0..t1).zip(o.chunks_exact_mut(ATTENTION_STATS)) {
            let q = &seq[tq * 3 * c + h * hs..][..hs];
            let (mut st, mut top) = (Online::EMPTY, TopK::new(top_k));
            for s0 in (0..=tq).step_by(BLOCK) {
                let n = BLOCK.min(tq + 1 - s0);
                for (j, x) in block[..n].iter_mut().enumerate() {
                    *x = dot(q, &seq[(s0 + j) * 3 * c + c + h * hs..][..hs]) * scale;
                    top.offer(*x);
                }
                st.push_block(&block[..n]);
            }
            o.copy_from_slice(&finish(&st, &top, tq));
        }
    });
}

//! Token + position embedding.

use super::{rd, rd_u32, wr, CpuBuffer};
use crate::backend::View;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

#[allow(clippy::too_many_arguments)]
pub fn forward(out: V, tokens: V, wte: V, wpe: V, b: usize, t: usize, c: usize, pos0: usize) {
    let (tok, wte, wpe) = (rd_u32(tokens), rd(wte), rd(wpe));
    wr(out)[..b * t * c].par_chunks_mut(c).enumerate().for_each(|(row, o)| {
        let id = tok[row] as usize;
        let pos = pos0 + row % t;
        let (e, p) = (&wte[id * c..(id + 1) * c], &wpe[pos * c..(pos + 1) * c]);
        for i in 0..c {
            o[i] = e[i] + p[i];
        }
    });
}

/// dwte[tok] += dout; dwpe[pos] += Σ_b dout. Parallel over channel blocks so the scatter is race-free
/// and the summation order is fixed.
#[allow(clippy::too_many_arguments)]
pub fn backward(dwte: V, dwpe: V, dout: V, tokens: V, b: usize, t: usize, c: usize, pos0: usize) {
    let (tok, dout) = (rd_u32(tokens), rd(dout));
    let dwte_ptr = super::SyncPtr(wr(dwte).as_mut_ptr());
    const CB: usize = 16;
    (0..c.div_ceil(CB)).into_par_iter().for_each(|blk| {
        let (c0, c1) = (blk * CB, ((blk + 1) * CB).min(c));
        let p = dwte_ptr;
        for row in 0..b * t {
            let id = tok[row] as usize;
            let d = &dout[row * c + c0..row * c + c1];
            // Safety: each task owns channels c0..c1 of every row of dwte.
            let g = unsafe { std::slice::from_raw_parts_mut(p.0.add(id * c + c0), c1 - c0) };
            for (gi, di) in g.iter_mut().zip(d) {
                *gi += di;
            }
        }
    });
    let dwpe = wr(dwpe);
    dwpe[pos0 * c..(pos0 + t) * c].par_chunks_mut(c).enumerate().for_each(|(ti, g)| {
        for bi in 0..b {
            let d = &dout[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            for (gi, di) in g.iter_mut().zip(d) {
                *gi += di;
            }
        }
    });
}

//! out = inp·W (+ bias) and its backward, through the `gemm` crate (AVX-512 microkernels).

use super::{rd, wr, CpuBuffer, REDUCE_ROWS};
use crate::backend::{View, WeightLayout};
use gemm::Parallelism;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

fn par() -> Parallelism {
    Parallelism::Rayon(rayon::current_num_threads())
}

/// (row stride, col stride) of W viewed as a [c, oc] matrix.
fn w_strides(layout: WeightLayout, c: usize, oc: usize) -> (isize, isize) {
    match layout {
        WeightLayout::InOut => (oc as isize, 1),
        WeightLayout::OutIn => (1, c as isize),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn forward(out: V, inp: V, weight: V, bias: Option<V>, n: usize, c: usize, oc: usize, layout: WeightLayout) {
    let (x, w, y) = (rd(inp), rd(weight), wr(out));
    assert!(x.len() >= n * c && y.len() >= n * oc && w.len() >= c * oc);
    if let Some(b) = bias {
        let b = rd(b);
        y[..n * oc].par_chunks_mut(oc).for_each(|row| row.copy_from_slice(&b[..oc]));
    }
    let (w_rs, w_cs) = w_strides(layout, c, oc);
    unsafe {
        gemm::gemm(
            n, oc, c,
            y.as_mut_ptr(), 1, oc as isize,
            bias.is_some(),
            x.as_ptr(), 1, c as isize,
            w.as_ptr(), w_cs, w_rs,
            1.0, 1.0, false, false, false, par(),
        );
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: Option<V>, dweight: Option<V>, dbias: Option<V>, dout: V, inp: V, weight: V,
    n: usize, c: usize, oc: usize, layout: WeightLayout,
) {
    let (dy, x, w) = (rd(dout), rd(inp), rd(weight));
    if let Some(dinp) = dinp {
        // dinp[n, c] = dout[n, oc] · Wᵀ (overwrite)
        let dx = wr(dinp);
        let (w_rs, w_cs) = w_strides(layout, c, oc); // W as [c, oc]; Wᵀ swaps the strides
        unsafe {
            gemm::gemm(
                n, c, oc,
                dx.as_mut_ptr(), 1, c as isize,
                false,
                dy.as_ptr(), 1, oc as isize,
                w.as_ptr(), w_rs, w_cs,
                0.0, 1.0, false, false, false, par(),
            );
        }
    }
    if let Some(dweight) = dweight {
        let dw = wr(dweight);
        unsafe {
            match layout {
                // dW[c, oc] += inpᵀ · dout
                WeightLayout::InOut => gemm::gemm(
                    c, oc, n,
                    dw.as_mut_ptr(), 1, oc as isize,
                    true,
                    x.as_ptr(), c as isize, 1,
                    dy.as_ptr(), 1, oc as isize,
                    1.0, 1.0, false, false, false, par(),
                ),
                // dW[oc, c] += doutᵀ · inp
                WeightLayout::OutIn => gemm::gemm(
                    oc, c, n,
                    dw.as_mut_ptr(), 1, c as isize,
                    true,
                    dy.as_ptr(), oc as isize, 1,
                    x.as_ptr(), 1, c as isize,
                    1.0, 1.0, false, false, false, par(),
                ),
            }
        }
    }
    if let Some(dbias) = dbias {
        let partials: Vec<Vec<f32>> = dy[..n * oc]
            .par_chunks(REDUCE_ROWS * oc)
            .map(|blk| {
                let mut p = vec![0f32; oc];
                for row in blk.chunks(oc) {
                    for (pi, d) in p.iter_mut().zip(row) {
                        *pi += d;
                    }
                }
                p
            })
            .collect();
        let db = wr(dbias);
        for p in &partials {
            for (d, pi) in db.iter_mut().zip(p) {
                *d += pi;
            }
        }
    }
}

//! MLP activations: relu, exact-erf gelu, tanh-approximate gelu_new.

use super::{rd, same, wr, CpuBuffer};
use crate::backend::View;
use crate::model::config::Activation;
use rayon::prelude::*;

type V<'a> = View<'a, CpuBuffer>;

const CHUNK: usize = 8192;
const S2PI: f32 = 0.797_884_6; // sqrt(2/pi)

#[inline]
pub fn act_f(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::GeluNew => 0.5 * x * (1.0 + (S2PI * (x + 0.044715 * x * x * x)).tanh()),
        Activation::Gelu => (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32,
    }
}

#[inline]
pub fn act_grad(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::GeluNew => {
            let u = S2PI * (x + 0.044715 * x * x * x);
            let th = u.tanh();
            let sech2 = 1.0 - th * th;
            0.5 * (1.0 + th) + 0.5 * x * sech2 * S2PI * (1.0 + 3.0 * 0.044715 * x * x)
        }
        Activation::Gelu => {
            let xd = x as f64;
            let cdf = 0.5 * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (cdf + xd * pdf) as f32
        }
    }
}

pub fn forward(out: V, inp: V, n: usize, act: Activation) {
    let x = &rd(inp)[..n];
    // One loop per activation, so each vectorizes (a per-element match does not).
    fn run(o: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync) {
        o.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(oi, &xi)| *oi = f(xi)));
    }
    let o = &mut wr(out)[..n];
    match act {
        Activation::Relu => run(o, x, |v| act_f(v, Activation::Relu)),
        Activation::GeluNew => run(o, x, |v| act_f(v, Activation::GeluNew)),
        Activation::Gelu => run(o, x, |v| act_f(v, Activation::Gelu)),
    }
}

pub fn backward(dinp: V, inp: V, dout: V, n: usize, act: Activation) {
    let x = &rd(inp)[..n];
    // In place (dinp = dout, as the model calls it) or from a separate dout; one loop per
    // activation either way, so the loops vectorize.
    fn run(d: &mut [f32], dy: Option<&[f32]>, x: &[f32], g: impl Fn(f32) -> f32 + Sync) {
        match dy {
            None => d.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(d, x)| d.iter_mut().zip(x).for_each(|(di, &xi)| *di *= g(xi))),
            Some(dy) => d.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(|((d, x), dy)| {
                d.iter_mut().zip(x).zip(dy).for_each(|((di, &xi), &gi)| *di = gi * g(xi))
            }),
        }
    }
    let dy = if same(dinp, dout) { None } else { Some(&rd(dout)[..n]) };
    let d = &mut wr(dinp)[..n];
    match act {
        Activation::Relu => run(d, dy, x, |v| act_grad(v, Activation::Relu)),
        Activation::GeluNew => run(d, dy, x, |v| act_grad(v, Activation::GeluNew)),
        Activation::Gelu => run(d, dy, x, |v| act_grad(v, Activation::Gelu)),
    }
}

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
    let x = rd(inp);
    wr(out)[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let xs = &x[i * CHUNK..i * CHUNK + o.len()];
        for (oi, xi) in o.iter_mut().zip(xs) {
            *oi = act_f(*xi, act);
        }
    });
}

pub fn backward(dinp: V, inp: V, dout: V, n: usize, act: Activation) {
    let x = rd(inp);
    let in_place = same(dinp, dout);
    let dy: &[f32] = if in_place { &[] } else { rd(dout) };
    wr(dinp)[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(i, d)| {
        let base = i * CHUNK;
        for (j, di) in d.iter_mut().enumerate() {
            let g = if in_place { *di } else { dy[base + j] };
            *di = g * act_grad(x[base + j], act);
        }
    });
}

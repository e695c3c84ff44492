// MLP activations: relu, exact-erf gelu, tanh-approximate gelu_new (act: 0, 1, 2 as on the host).

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, act: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // forward: out; backward: dinp
@group(0) @binding(2) var<storage, read_write> inp: array<f32>;
@group(0) @binding(3) var<storage, read_write> dout: array<f32>;

const S2PI: f32 = 0.7978845608; // sqrt(2/pi)
const INV_SQRT2: f32 = 0.7071067812;
const INV_SQRT_2PI: f32 = 0.3989422804;

// WGSL has no tanh guarantee for large |x| on every driver and no erf at all.
fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// erf with |error| ≤ 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * exp(poly);
    return sign(x) * (1.0 - erfc);
}

fn act_f(x: f32) -> f32 {
    if (p.act == 0u) {
        return max(x, 0.0);
    } else if (p.act == 1u) {
        return 0.5 * x * (1.0 + erf_approx(x * INV_SQRT2));
    }
    return 0.5 * x * (1.0 + tanh_safe(S2PI * (x + 0.044715 * x * x * x)));
}

fn act_grad(x: f32) -> f32 {
    if (p.act == 0u) {
        return select(0.0, 1.0, x > 0.0);
    } else if (p.act == 1u) {
        let cdf = 0.5 * (1.0 + erf_approx(x * INV_SQRT2));
        return cdf + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
    }
    let th = tanh_safe(S2PI * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * S2PI * (1.0 + 3.0 * 0.044715 * x * x);
}

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        out[p.o1 + i] = act_f(inp[p.o2 + i]);
    }
}

// dinp = act'(inp) · dout (may be in place on dout: each thread reads its element before writing it)
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        out[p.o1 + i] = dout[p.o3 + i] * act_grad(inp[p.o2 + i]);
    }
}

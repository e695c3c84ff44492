// AdamW exactly as torch.optim.AdamW: decoupled decay, then the bias-corrected step. The host folds the
// step-dependent scalars (step_size = lr / (1 − β1^t), √(1 − β2^t)) as the cpu backend does.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, beta1: f32, beta2: f32, eps: f32, decay: f32, step_size: f32, bc2_sqrt: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn update(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let g = grads[p.o2 + i];
    let mi = m[p.o3 + i] + (g - m[p.o3 + i]) * (1.0 - p.beta1);
    let vi = v[p.o4 + i] * p.beta2 + (1.0 - p.beta2) * g * g;
    m[p.o3 + i] = mi;
    v[p.o4 + i] = vi;
    let denom = sqrt(vi) / p.bc2_sqrt + p.eps;
    params[p.o1 + i] = params[p.o1 + i] * p.decay - p.step_size * mi / denom;
}

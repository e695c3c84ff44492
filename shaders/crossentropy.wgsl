// Fused softmax + cross-entropy over the vocabulary, and its backward. 32 lanes per row.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, v: u32, scale: f32, has_weights: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>; // backward: dlogits (may equal probs)
@group(0) @binding(3) var<storage, read_write> logits: array<f32>; // backward: probs
@group(0) @binding(4) var<storage, read_write> targets: array<u32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>; // backward: per-row multipliers

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.n;
    let l0 = p.o3 + row * p.v;
    let p0 = p.o2 + row * p.v;
    var mx = -3.0e38;
    if (valid) {
        for (var j = lane; j < p.v; j += LANES) {
            mx = max(mx, logits[l0 + j]);
        }
    }
    mx = row_reduce(lid.x, mx, true);
    var s = 0.0;
    if (valid) {
        for (var j = lane; j < p.v; j += LANES) {
            let e = exp(logits[l0 + j] - mx);
            probs[p0 + j] = e;
            s += e;
        }
    }
    s = row_reduce(lid.x, s, false);
    if (valid) {
        let inv = 1.0 / s;
        for (var j = lane; j < p.v; j += LANES) {
            probs[p0 + j] *= inv;
        }
        if (lane == 0u) {
            let tgt = targets[p.o4 + row];
            var loss = 0.0;
            if (tgt != IGNORE_TARGET) {
                // log-sum-exp form: exact for tiny probabilities.
                loss = log(s) + mx - logits[l0 + tgt];
            }
            losses[p.o1 + row] = loss;
        }
    }
}

// dlogits = (probs − onehot(tgt)) · scale·weights[row] (scale alone without weights); ignored rows
// get 0. One thread per element.
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.n * p.v) {
        return;
    }
    let row = i / p.v;
    let j = i % p.v;
    let tgt = targets[p.o4 + row];
    var d = 0.0;
    if (tgt != IGNORE_TARGET) {
        var s = p.scale;
        if (p.has_weights != 0u) {
            s *= weights[p.o5 + row];
        }
        d = (logits[p.o3 + i] - select(0.0, 1.0, j == tgt)) * s;
    }
    probs[p.o2 + i] = d;
}

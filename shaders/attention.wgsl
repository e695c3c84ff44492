// Causal attention pieces around the GEMMs of matmul.wgsl: the masked row softmax (forward) and its
// backward over the probabilities [b, nh, t, t], the KV-cache write, and the one-query decode step.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    rows: u32, t: u32, // softmax rows (b·nh·t) and row length
    scale: f32,
    b: u32, c: u32, nh: u32, t_max: u32, pos0: u32, // cache write / decode (pos0 = decode position)
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // att (softmax) / cache / decode out
@group(0) @binding(2) var<storage, read_write> probs: array<f32>; // softmax backward: the probabilities
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(4) var<storage, read_write> cache: array<f32>;

const LANES: u32 = 32u;
var<workgroup> red: array<f32, 256>;

fn row_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if ((lid % LANES) < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[lid - lid % LANES];
    workgroupBarrier();
    return r;
}

// In place on out: row r (query position r % t) holds scaled scores; keep columns 0..=r%t as the
// softmax over them and zero the masked rest.
@compute @workgroup_size(256)
fn softmax_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.rows;
    let base = p.o1 + row * p.t;
    let len = row % p.t + 1u;
    var mx = -3.0e38;
    if (valid) {
        for (var j = lane; j < len; j += LANES) {
            mx = max(mx, out[base + j] * p.scale);
        }
    }
    mx = row_reduce(lid.x, mx, true);
    var s = 0.0;
    if (valid) {
        for (var j = lane; j < len; j += LANES) {
            let e = exp(out[base + j] * p.scale - mx);
            out[base + j] = e;
            s += e;
        }
    }
    s = row_reduce(lid.x, s, false);
    if (valid) {
        let inv = 1.0 / s;
        for (var j = lane; j < p.t; j += LANES) {
            if (j < len) {
                out[base + j] *= inv;
            } else {
                out[base + j] = 0.0;
            }
        }
    }
}

// In place on out (= d probs): d scores = P ⊙ (dP − Σ P ⊙ dP) · scale on the causal part, 0 elsewhere.
@compute @workgroup_size(256)
fn softmax_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.rows;
    let base_d = p.o1 + row * p.t;
    let base_p = p.o2 + row * p.t;
    let len = row % p.t + 1u;
    var s = 0.0;
    if (valid) {
        for (var j = lane; j < len; j += LANES) {
            s += probs[base_p + j] * out[base_d + j];
        }
    }
    s = row_reduce(lid.x, s, false);
    if (valid) {
        for (var j = lane; j < p.t; j += LANES) {
            if (j < len) {
                out[base_d + j] = probs[base_p + j] * (out[base_d + j] - s) * p.scale;
            } else {
                out[base_d + j] = 0.0;
            }
        }
    }
}

// cache per (row, head): kᵀ [hs, t_max] then v [t_max, hs]; one thread per (row, t, channel).
@compute @workgroup_size(256)
fn kv_cache_write(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.b * p.t * p.c) {
        return;
    }
    let hs = p.c / p.nh;
    let ch = i % p.c;
    let ti = (i / p.c) % p.t;
    let bi = i / (p.c * p.t);
    let h = ch / hs;
    let d = ch % hs;
    let pos = p.pos0 + ti;
    let blk = p.o4 + (bi * p.nh + h) * 2u * hs * p.t_max;
    let src = p.o3 + (bi * p.t + ti) * 3u * p.c;
    cache[blk + d * p.t_max + pos] = qkv[src + p.c + ch];
    cache[blk + hs * p.t_max + pos * hs + d] = qkv[src + 2u * p.c + ch];
}

// One query per (row, head) at position pos0 against cached positions 0..=pos0: a workgroup per
// (row, head); scores live in shared memory (positions ≤ MAX_DECODE_T, checked by the host).
const MAX_DECODE_T: u32 = 2048u;
const DW: u32 = 64u;
var<workgroup> scores: array<f32, 2048>;
var<workgroup> dred: array<f32, 64>;

fn wg_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    dred[lid] = v;
    workgroupBarrier();
    for (var s = DW / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                dred[lid] = max(dred[lid], dred[lid + s]);
            } else {
                dred[lid] += dred[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = dred[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn decode(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_group(wid, nwg); // (row, head)
    if (g >= p.b * p.nh) {
        return; // a whole workgroup of a folded grid's tail: uniform, so the barriers below stay valid
    }
    let hs = p.c / p.nh;
    let bi = g / p.nh;
    let h = g % p.nh;
    let n = p.pos0 + 1u;
    let blk = p.o4 + g * 2u * hs * p.t_max;
    let q0 = p.o3 + bi * 3u * p.c + h * hs;
    var mx = -3.0e38;
    for (var j = lid.x; j < n; j += DW) {
        var s = 0.0;
        for (var d = 0u; d < hs; d++) {
            s = fma(qkv[q0 + d], cache[blk + d * p.t_max + j], s);
        }
        s *= p.scale;
        scores[j] = s;
        mx = max(mx, s);
    }
    mx = wg_reduce(lid.x, mx, true);
    var sum = 0.0;
    for (var j = lid.x; j < n; j += DW) {
        let e = exp(scores[j] - mx);
        scores[j] = e;
        sum += e;
    }
    sum = wg_reduce(lid.x, sum, false);
    let inv = 1.0 / sum;
    for (var d = lid.x; d < hs; d += DW) {
        var y = 0.0;
        for (var j = 0u; j < n; j++) {
            y = fma(scores[j], cache[blk + hs * p.t_max + j * hs + d], y);
        }
        out[p.o1 + bi * p.c + h * hs + d] = y * inv;
    }
}

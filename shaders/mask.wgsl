// Masked-weight ops of the unlearning methods (cpu twin: src/backend/cpu/mask.rs): the rank-k key by
// a histogram radix select, mask application, the straight-through score gradient's epilogue, SOU
// saliency and SGD with momentum. The masked matmul itself is matmul.wgsl's GEMM, which applies the
// mask in its weight-tile load.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, k: u32, key: u32, flags: u32, block: u32, splits: u32,
    lr: f32, momentum: f32, weight_decay: f32, lambda: f32,
}

// flags
const HAS_Y: u32 = 1u;
const BELOW: u32 = 2u;
const FIRST: u32 = 4u;

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;  // w, dscores, SOU out, SGD params
@group(0) @binding(2) var<storage, read_write> xs: array<f32>;   // x, scores, SOU w, SGD grads
@group(0) @binding(3) var<storage, read_write> ys: array<f32>;   // y, weight, SOU g, SGD momentum buffer
@group(0) @binding(4) var<storage, read_write> cutw: array<u32>; // the cut key (order, index)
@group(0) @binding(5) var<storage, read_write> part: array<f32>; // split-k partial products of inpᵀ·dout

// Entry j's value x[j] (·y[j]) and its order word.
fn entry_order(j: u32) -> u32 {
    var v = xs[p.o2 + j];
    if ((p.flags & HAS_Y) != 0u) {
        v *= ys[p.o3 + j];
    }
    return select_order(v, p.key == 1u);
}

const SELECT_WG: u32 = 256u;
var<workgroup> hist: array<atomic<u32>, 256>;
// The key's prefix found so far (order, index) and the rank still sought within it.
var<workgroup> sel: array<u32, 3>;

// One workgroup: eight passes of 8-bit digits over the 64-bit key, most significant first. Each pass
// counts the digits of the entries whose key matches the prefix above it (integer atomics: the counts
// do not depend on order), then one invocation walks the 256 bins to the one holding the rank.
@compute @workgroup_size(256)
fn select_rank(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    if (p.k >= p.n) {
        if (t == 0u) {
            cutw[p.o4] = 0xffffffffu;
            cutw[p.o4 + 1u] = 0xffffffffu;
        }
        return;
    }
    if (t == 0u) {
        sel[0] = 0u;
        sel[1] = 0u;
        sel[2] = p.k;
    }
    for (var ps = 0u; ps < 8u; ps++) {
        atomicStore(&hist[t], 0u);
        workgroupBarrier();
        let pre_o = sel[0];
        let pre_i = sel[1];
        // The key bits above this pass's digit must equal the prefix (shifts by 32 are not allowed).
        var mask_o = 0xffffffffu;
        var mask_i = 0u;
        if (ps == 0u) {
            mask_o = 0u;
        } else if (ps < 4u) {
            mask_o = 0xffffffffu << (32u - 8u * ps);
        } else if (ps > 4u) {
            mask_i = 0xffffffffu << (64u - 8u * ps);
        }
        for (var j = t; j < p.n; j += SELECT_WG) {
            let o = entry_order(j);
            if ((o & mask_o) == (pre_o & mask_o) && (j & mask_i) == (pre_i & mask_i)) {
                var d: u32;
                if (ps < 4u) {
                    d = (o >> (24u - 8u * ps)) & 255u;
                } else {
                    d = (j >> (56u - 8u * ps)) & 255u;
                }
                atomicAdd(&hist[d], 1u);
            }
        }
        workgroupBarrier();
        if (t == 0u) {
            var rem = sel[2];
            var b = 0u;
            loop {
                let c = atomicLoad(&hist[b]);
                if (rem < c || b == 255u) {
                    break;
                }
                rem -= c;
                b++;
            }
            sel[2] = rem;
            if (ps < 4u) {
                sel[0] = pre_o | (b << (24u - 8u * ps));
            } else {
                sel[1] = pre_i | (b << (56u - 8u * ps));
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        cutw[p.o4] = sel[0];
        cutw[p.o4 + 1u] = sel[1];
    }
}

// w[j] = 0 where key(j) < cut (BELOW) or ≥ cut. In place (w bound as x or y) each invocation reads
// its entry before writing it.
@compute @workgroup_size(256)
fn mask_apply(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_group(wid, nwg) * 256u + lid.x;
    if (j >= p.n) {
        return;
    }
    let below = key_below(entry_order(j), j, cutw[p.o4], cutw[p.o4 + 1u]);
    if (below == ((p.flags & BELOW) != 0u)) {
        dst[p.o1 + j] = 0.0;
    }
}

// dscores[j] += sign(scores[j])·W[j]·Σ_s part[s·n + j] (partials summed in split order; sign(0) = 0).
@compute @workgroup_size(256)
fn ste_accumulate(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_group(wid, nwg) * 256u + lid.x;
    if (j >= p.n) {
        return;
    }
    var g = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        g += part[p.o5 + s * p.n + j];
    }
    let sc = xs[p.o2 + j];
    let sg = select(select(0.0, -1.0, sc < 0.0), 1.0, sc > 0.0);
    dst[p.o1 + j] += sg * ys[p.o3 + j] * g;
}

// One invocation per block of p.block entries: ‖g_b‖² in entry order, then each entry's saliency.
@compute @workgroup_size(256)
fn sou_scores(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_group(wid, nwg) * 256u + lid.x;
    if (b >= (p.n + p.block - 1u) / p.block) {
        return;
    }
    let j0 = b * p.block;
    let j1 = min(j0 + p.block, p.n);
    var norm = 0.0;
    for (var j = j0; j < j1; j++) {
        let g = ys[p.o3 + j];
        norm += g * g;
    }
    let denom = p.lambda + norm;
    let inv_lambda = 1.0 / p.lambda;
    for (var j = j0; j < j1; j++) {
        let g = ys[p.o3 + j];
        let w = xs[p.o2 + j];
        let finv = inv_lambda * (1.0 - g * g / denom);
        dst[p.o1 + j] = w * w / (2.0 * finv);
    }
}

// PyTorch SGD with momentum (dampening 0): d = g + wd·p; buf = d (first step) or momentum·buf + d; p −= lr·buf.
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let pv = dst[p.o1 + i];
    let d = xs[p.o2 + i] + p.weight_decay * pv;
    var b = d;
    if ((p.flags & FIRST) == 0u) {
        b = p.momentum * ys[p.o3 + i] + d;
    }
    ys[p.o3 + i] = b;
    dst[p.o1 + i] = pv - p.lr * b;
}

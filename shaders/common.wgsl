// Prepended to every shader file (by the wgpu backend at load time and by build.rs when it validates).
//
// Conventions shared by all shaders:
// - binding 0 is the op's parameter block `p` (a uniform struct whose first eight fields o1..o8 are the
//   word offsets of the views bound at bindings 1..8; scalars follow);
// - every storage binding is `read_write`, because views of one flat buffer (parameters, activations)
//   are often bound together and wgpu only lets a buffer appear in several bindings of a dispatch
//   when every use is read-write;
// - 1-D launches larger than 65,535 workgroups fold into a 2-D grid; `flat_group` unfolds them.

const IGNORE_TARGET: u32 = 0xffffffffu;

fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Row reductions for kernels that give each row LANES consecutive threads of a 256-thread workgroup
// (8 rows per workgroup): the max or the sum of v over the calling thread's row, in a fixed tree
// order. Every thread of the workgroup must call it (it holds barriers).
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

// Selection keys of the masked-weight ops (backend::SelectKey): entry j's key is (order(v), j),
// compared lexicographically. Abs: the bits of |v|; signed: the total order of f32 as u32.
fn select_order(v: f32, signed_order: bool) -> u32 {
    let b = bitcast<u32>(v);
    if (!signed_order) {
        return b & 0x7fffffffu;
    }
    if ((b >> 31u) == 0u) {
        return b ^ 0x80000000u;
    }
    return ~b;
}

// Whether key (order, j) is below the cut (cut_order, cut_index).
fn key_below(order: u32, j: u32, cut_order: u32, cut_index: u32) -> bool {
    return order < cut_order || (order == cut_order && j < cut_index);
}

// ---- Philox4x32-10 (src/rng.rs) ----

// High 32 bits of a·b from 16-bit limbs (WGSL has no 64-bit integers).
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let lo = a0 * b0;
    let mid1 = a1 * b0;
    let mid2 = a0 * b1;
    let carry = ((lo >> 16u) + (mid1 & 0xffffu) + (mid2 & 0xffffu)) >> 16u;
    return a1 * b1 + (mid1 >> 16u) + (mid2 >> 16u) + carry;
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var x = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let hi0 = mulhi(0xD2511F53u, x.x);
        let lo0 = 0xD2511F53u * x.x;
        let hi1 = mulhi(0xCD9E8D57u, x.z);
        let lo1 = 0xCD9E8D57u * x.z;
        x = vec4<u32>(hi1 ^ x.y ^ k.x, lo1, hi0 ^ x.w ^ k.y, lo0);
    }
    return x;
}

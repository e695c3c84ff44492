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

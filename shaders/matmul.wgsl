// Strided, batched GEMM: C[z] = alpha·A[z]·B[z] + beta·C[z] (+ bias), the one kernel behind the
// matmul forward and backward passes and the attention score / weighted-sum products.
// Element (i, k) of A is a[a_off + i·a_rs + k·a_cs] (likewise B, and C with unit column stride), so
// transposes are stride choices. Batch z splits as (z / nb2, z % nb2) with a stride for each part
// (attention: batch row and head). With k_total set, the batches are instead consecutive k-slices of
// p.k (the last one clipped at k_total) whose partial products the host sums in order: a split-K that
// gives a long, thin reduction such as d(W) = xᵀ·dy over 19,200 rows enough workgroups to fill a GPU
// while staying deterministic. 64×64 output tile per workgroup, 16-deep k-slices staged in shared
// memory, each of the 256 threads accumulating a 4×4 register block.
// With `masked` set, B is a weight W under a Subnet mask (MaskedMatmulForward/Backward): its tile
// load zeroes entry rel = k·b_rs + j·b_cs of W (W's flat index in either orientation) where the Abs
// key (|scores[rel]|, rel) is below the cut — the mask is computed on the fly, no W ⊙ m buffer.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    m: u32, n: u32, k: u32,
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32, c_rs: u32,
    nb2: u32, a_bs1: u32, a_bs2: u32, b_bs1: u32, b_bs2: u32, c_bs1: u32, c_bs2: u32,
    alpha: f32, beta: f32, has_bias: u32,
    k_total: u32, masked: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> cm: array<f32>;
@group(0) @binding(2) var<storage, read_write> am: array<f32>;
@group(0) @binding(3) var<storage, read_write> bm: array<f32>;
@group(0) @binding(4) var<storage, read_write> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> cutm: array<u32>;

const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> a_tile: array<f32, 1024>; // [BK][TILE], k-major
var<workgroup> b_tile: array<f32, 1024>; // [BK][TILE]

@compute @workgroup_size(16, 16)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let tid = ty * 16u + tx;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let z1 = wid.z / p.nb2;
    let z2 = wid.z % p.nb2;
    let a0 = p.o2 + z1 * p.a_bs1 + z2 * p.a_bs2;
    let b0 = p.o3 + z1 * p.b_bs1 + z2 * p.b_bs2;
    let c0 = p.o1 + z1 * p.c_bs1 + z2 * p.c_bs2;

    var cut_o = 0u;
    var cut_i = 0u;
    if (p.masked != 0u) {
        cut_o = cutm[p.o6];
        cut_i = cutm[p.o6 + 1u];
    }
    var kn = p.k;
    if (p.k_total != 0u) {
        kn = min(p.k, p.k_total - z1 * p.k);
    }

    // Row r of the thread's 4×4 block: rows ty + 16r, columns tx + 16q (q = vector lane).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < kn; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = tid + e * 256u;
            // A: consecutive threads take consecutive k of one row (coalesced for row-major A).
            let ai = idx / BK;
            let ak = idx % BK;
            var av = 0.0;
            if (row0 + ai < p.m && k0 + ak < kn) {
                av = am[a0 + (row0 + ai) * p.a_rs + (k0 + ak) * p.a_cs];
            }
            a_tile[ak * TILE + ai] = av;
            // B: consecutive threads take consecutive columns of one k (coalesced for row-major B).
            let bk = idx / TILE;
            let bj = idx % TILE;
            var bv = 0.0;
            if (k0 + bk < kn && col0 + bj < p.n) {
                let rel = (k0 + bk) * p.b_rs + (col0 + bj) * p.b_cs;
                bv = bm[b0 + rel];
                if (p.masked != 0u && key_below(select_order(scores[p.o5 + rel], false), rel, cut_o, cut_i)) {
                    bv = 0.0;
                }
            }
            b_tile[bk * TILE + bj] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ka = kk * TILE + ty;
            let kb = kk * TILE + tx;
            let a = vec4<f32>(a_tile[ka], a_tile[ka + 16u], a_tile[ka + 32u], a_tile[ka + 48u]);
            let b = vec4<f32>(b_tile[kb], b_tile[kb + 16u], b_tile[kb + 32u], b_tile[kb + 48u]);
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        let i = row0 + ty + 16u * r;
        for (var q = 0u; q < 4u; q++) {
            let j = col0 + tx + 16u * q;
            if (i < p.m && j < p.n) {
                let at = c0 + i * p.c_rs + j;
                var v = p.alpha * acc[r][q];
                if (p.beta != 0.0) {
                    v += p.beta * cm[at];
                }
                if (p.has_bias != 0u) {
                    v += bias[p.o4 + j];
                }
                cm[at] = v;
            }
        }
    }
}

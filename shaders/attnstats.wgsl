// Attention-distribution statistics (cpu twin: src/backend/cpu/attnstats.rs; depn-attention.md B3):
// per (row, head, query t) the causal row p = softmax(q_t·k_s/√hs, s ≤ t) as entropy H, H/ln(t+1),
// max p and top-k mass. One workgroup of WG threads per query row walks the keys in blocks of WG, one
// key per thread: each thread keeps an online max m, Z = Σe^{s−m}, A = Σe^{s−m}(s−m) (rescaled when m
// grows) and its own sorted top-k scores; a tree merges the threads' states and lists. No scores are
// stored beyond the WG·k candidates.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    b: u32, t: u32, c: u32, nh: u32,
    t0: u32, t1: u32, top_k: u32,
    scale: f32, // 1/√hs, rounded on the host as the cpu does
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [b, nh, t1 − t0, 4]
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>; // [b, t, 3c]

const WG: u32 = 64u;
const KMAX: u32 = 16u; // backend::MAX_STATS_TOP_K
const EMPTY: f32 = -3.0e38; // below every score: an unused candidate slot, or a thread with no key
const NO_KEY: u32 = 0xffffffffu;

var<workgroup> cand_v: array<f32, 1024>; // WG × KMAX candidates, each thread's list best first
var<workgroup> cand_i: array<u32, 1024>;
var<workgroup> st_m: array<f32, 64>;
var<workgroup> st_z: array<f32, 64>;
var<workgroup> st_a: array<f32, 64>;

// Candidate (v, i) ranks before (w, j): a larger score, or on a tie the lower key.
fn ranks_before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(64)
fn attention_stats(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_group(wid, nwg); // the query row: ((b·nh + h)·nq + t − t0)
    let nq = p.t1 - p.t0;
    if (g >= p.b * p.nh * nq) {
        return; // a whole workgroup of a folded grid's tail: uniform, so the barriers below stay valid
    }
    let tq = p.t0 + g % nq;
    let h = (g / nq) % p.nh;
    let bi = g / nq / p.nh;
    let hs = p.c / p.nh;
    let seq = p.o2 + bi * p.t * 3u * p.c;
    let q0 = seq + tq * 3u * p.c + h * hs;
    let k = p.top_k;
    let lane = lid.x;

    var m = EMPTY;
    var z = 0.0;
    var a = 0.0;
    var tv: array<f32, 16>;
    var ti: array<u32, 16>;
    for (var j = 0u; j < KMAX; j++) {
        tv[j] = EMPTY;
        ti[j] = NO_KEY;
    }
    // Block j holds keys j·WG .. j·WG + WG − 1; this thread takes key j·WG + lane of each.
    for (var s = lane; s <= tq; s += WG) {
        let k0 = seq + s * 3u * p.c + p.c + h * hs;
        var x = 0.0;
        for (var d = 0u; d < hs; d++) {
            x = fma(qkv[q0 + d], qkv[k0 + d], x);
        }
        x *= p.scale;
        if (x > m) {
            if (z > 0.0) {
                let r = exp(m - x);
                a = r * (a + (m - x) * z);
                z *= r;
            }
            m = x;
        }
        let dx = x - m;
        let e = exp(dx);
        z += e;
        a = fma(e, dx, a);
        // Keys arrive in increasing order, so a tie with the list's last entry keeps the earlier key.
        if (x > tv[k - 1u]) {
            var j = k - 1u;
            loop {
                if (j == 0u || tv[j - 1u] >= x) {
                    break;
                }
                tv[j] = tv[j - 1u];
                ti[j] = ti[j - 1u];
                j--;
            }
            tv[j] = x;
            ti[j] = s;
        }
    }
    st_m[lane] = m;
    st_z[lane] = z;
    st_a[lane] = a;
    for (var j = 0u; j < KMAX; j++) {
        cand_v[lane * KMAX + j] = tv[j];
        cand_i[lane * KMAX + j] = ti[j];
    }
    workgroupBarrier();
    // Tree merge: thread lane < half folds thread lane + half's state and list into its own.
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (lane < half) {
            let o = lane + half;
            let z2 = st_z[o];
            if (z2 > 0.0) {
                let z1 = st_z[lane];
                let m2 = st_m[o];
                if (z1 > 0.0) {
                    let m1 = st_m[lane];
                    let mm = max(m1, m2);
                    let r1 = exp(m1 - mm);
                    let r2 = exp(m2 - mm);
                    st_a[lane] = r1 * (st_a[lane] + (m1 - mm) * z1) + r2 * (st_a[o] + (m2 - mm) * z2);
                    st_z[lane] = r1 * z1 + r2 * z2;
                    st_m[lane] = mm;
                } else {
                    st_m[lane] = m2;
                    st_z[lane] = z2;
                    st_a[lane] = st_a[o];
                }
            }
            var x = 0u;
            var y = 0u;
            for (var j = 0u; j < k; j++) {
                // x + y = j < k, so neither list runs out.
                let va = cand_v[lane * KMAX + x];
                let ia = cand_i[lane * KMAX + x];
                let vb = cand_v[o * KMAX + y];
                let ib = cand_i[o * KMAX + y];
                if (ranks_before(va, ia, vb, ib)) {
                    tv[j] = va;
                    ti[j] = ia;
                    x++;
                } else {
                    tv[j] = vb;
                    ti[j] = ib;
                    y++;
                }
            }
            for (var j = 0u; j < k; j++) {
                cand_v[lane * KMAX + j] = tv[j];
                cand_i[lane * KMAX + j] = ti[j];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let mm = st_m[0];
        let zz = st_z[0];
        let hh = log(zz) - st_a[0] / zz;
        var mass = 0.0;
        for (var j = 0u; j < min(k, tq + 1u); j++) {
            mass += exp(cand_v[j] - mm);
        }
        let o = p.o1 + g * 4u;
        out[o] = hh;
        // t = 0: a point mass on the query itself, H = 0 = ln 1; 0/0 is taken as 0 (no spread).
        out[o + 1u] = select(hh / log(f32(tq + 1u)), 0.0, tq == 0u);
        out[o + 2u] = 1.0 / zz;
        out[o + 3u] = mass / zz;
    }
}

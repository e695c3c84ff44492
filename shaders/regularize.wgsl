// Training regularizers (cpu twin: src/backend/cpu/regularize.rs; tinymem.md §5.1): the spectral
// penalty's power iteration and rank-1 gradient (one workgroup per matrix block), and example-tied
// dropout (one workgroup per sequence: its mask is drawn from Philox here and never stored).

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, t: u32, c: u32, pos0: u32, keep: u32, mem: u32, flags: u32, seed_lo: u32, seed_hi: u32,
    scale: f32, lambda: f32,
}

// flags
const HAS_IDS: u32 = 1u;   // ETD: training masks
const POSITIONS: u32 = 2u; // ETD: mask positions, not channels
const LINEAR: u32 = 4u;    // spectral: (λ/2)·Σσ

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;   // spectral state / grads / ETD out
@group(0) @binding(2) var<storage, read_write> src: array<f32>;   // params / ETD x
@group(0) @binding(3) var<storage, read_write> sig: array<f32>;   // σ per block
@group(0) @binding(4) var<storage, read_write> words: array<u32>; // block table / ETD ids
@group(0) @binding(5) var<storage, read_write> st: array<f32>;    // spectral state (gradient add)

const WG: u32 = 256u;
var<workgroup> reg_red: array<f32, 256>;

// Sum of v over the workgroup in a fixed tree order; every invocation gets it.
fn wg_sum(v: f32, t: u32) -> f32 {
    workgroupBarrier();
    reg_red[t] = v;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (t < s) {
            reg_red[t] += reg_red[t + s];
        }
    }
    workgroupBarrier();
    let r = reg_red[0];
    workgroupBarrier();
    return r;
}

fn block_field(b: u32, k: u32) -> u32 {
    return words[p.o4 + 5u * b + k];
}

// v = normalize(Wᵀu) into the state's v, then u = normalize(W v), σ = uᵀ(W v).
@compute @workgroup_size(256)
fn power_iteration(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_group(wid, nwg);
    if (b >= p.n) {
        return;
    }
    let t = lid.x;
    let off = p.o2 + block_field(b, 0u);
    let rows = block_field(b, 1u);
    let cols = block_field(b, 2u);
    let ld = block_field(b, 3u);
    let us = p.o1 + block_field(b, 4u);
    let vs = us + rows;
    var part = 0.0;
    for (var j = t; j < cols; j += WG) {
        var s = 0.0;
        for (var i = 0u; i < rows; i++) {
            s += src[off + i * ld + j] * dst[us + i];
        }
        dst[vs + j] = s;
        part += s * s;
    }
    let vn = max(sqrt(wg_sum(part, t)), 1e-12);
    for (var j = t; j < cols; j += WG) {
        dst[vs + j] = dst[vs + j] / vn;
    }
    storageBarrier();
    workgroupBarrier();
    part = 0.0;
    for (var i = t; i < rows; i += WG) {
        var s = 0.0;
        for (var j = 0u; j < cols; j++) {
            s += src[off + i * ld + j] * dst[vs + j];
        }
        dst[us + i] = s;
        part += s * s;
    }
    let un = max(sqrt(wg_sum(part, t)), 1e-12);
    part = 0.0;
    for (var i = t; i < rows; i += WG) {
        let wv = dst[us + i];
        let u = wv / un;
        dst[us + i] = u;
        part += u * wv;
    }
    let sigma = wg_sum(part, t);
    if (t == 0u) {
        sig[p.o3 + b] = sigma;
    }
}

// grads[W_b[i, j]] += (coef·u_i)·v_j, coef = λσ_b (or λ/2 when linear).
@compute @workgroup_size(256)
fn grad_add(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_group(wid, nwg);
    if (b >= p.n) {
        return;
    }
    let off = p.o1 + block_field(b, 0u);
    let rows = block_field(b, 1u);
    let cols = block_field(b, 2u);
    let ld = block_field(b, 3u);
    let us = p.o5 + block_field(b, 4u);
    let vs = us + rows;
    var coef = p.lambda * sig[p.o3 + b];
    if ((p.flags & LINEAR) != 0u) {
        coef = 0.5 * p.lambda;
    }
    for (var e = lid.x; e < rows * cols; e += WG) {
        let i = e / cols;
        let j = e % cols;
        let cu = coef * st[us + i];
        dst[off + i * ld + j] += cu * st[vs + j];
    }
}

const ETD_WG: u32 = 128u;
const ETD_MAX_C: u32 = 1024u; // backend::ETD_MAX_C
const PURPOSE_ETD: u32 = 8u;  // rng::purpose::ETD
var<workgroup> hash: array<u32, 1024>;
var<workgroup> kept: array<u32, 1024>;

// One workgroup per sequence of p.t rows: the example's channel mask in shared memory (channel j ≥
// keep kept when fewer than mem channels ≥ keep have a lower key (hash, index)), then every entry.
@compute @workgroup_size(128)
fn example_tied_dropout(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat_group(wid, nwg);
    if (r * p.t >= p.n) {
        return;
    }
    let t = lid.x;
    let c = p.c;
    let key = vec2<u32>(p.seed_lo, p.seed_hi);
    let training = (p.flags & HAS_IDS) != 0u;
    let positions = (p.flags & POSITIONS) != 0u;
    var id = 0u;
    if (training) {
        id = words[p.o4 + r];
    }
    if (!positions && training) {
        for (var j = p.keep + t; j < c; j += ETD_WG) {
            hash[j] = philox(vec4<u32>(j, id, PURPOSE_ETD, 0u), key).x;
        }
    }
    workgroupBarrier();
    for (var j = t; j < c; j += ETD_WG) {
        var k = 1u;
        if (!positions && j >= p.keep) {
            k = 0u;
            if (training) {
                var below = 0u;
                let h = hash[j];
                for (var q = p.keep; q < c; q++) {
                    let hq = hash[q];
                    if (hq < h || (hq == h && q < j)) {
                        below++;
                    }
                }
                k = select(0u, 1u, below < p.mem);
            }
        }
        kept[j] = k;
    }
    workgroupBarrier();
    let base = r * p.t * c;
    for (var e = t; e < p.t * c; e += ETD_WG) {
        let j = e % c;
        var keep_it = kept[j] == 1u;
        if (positions) {
            let pos = p.pos0 + e / c;
            var pk = pos < p.keep;
            if (!pk && training) {
                pk = philox(vec4<u32>(pos, id, PURPOSE_ETD, 1u), key).x < p.mem;
            }
            keep_it = pk;
        }
        let x = src[p.o2 + base + e];
        dst[p.o1 + base + e] = select(0.0, x * p.scale, keep_it);
    }
}

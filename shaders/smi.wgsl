// Sliced mutual information screening (cpu twin: src/backend/cpu/smi.rs, which calls src/smi):
// seeded slice directions, per-part class statistics, pmi scoring and per-sample summaries.
//
// WGSL has no f64, so these kernels compute in f32 and exchange the ops' f64 arrays (statistics,
// model, summaries) as IEEE double bit patterns built and read with integer operations. The
// direction generator uses its own log/cos (argument reduction by integer bits, series), so its
// accuracy does not depend on a driver's transcendental precision, and sums are Kahan-compensated.
// The KSG kernels (ksg_*) are at the end.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, k: u32, d: u32, classes: u32, ld: u32, col0: u32,
    seed_lo: u32, seed_hi: u32, slice0: u32, neighbors: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;    // directions, pmi
@group(0) @binding(2) var<storage, read_write> inp: array<f32>;    // projections, pmi (summary)
@group(0) @binding(3) var<storage, read_write> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> words: array<u32>;  // f64 arrays: stats, model, summaries
@group(0) @binding(5) var<storage, read_write> flags: array<u32>;  // excluded slices
@group(0) @binding(6) var<storage, read_write> work: array<u32>;   // KSG scratch
@group(0) @binding(7) var<storage, read_write> work_atomic: array<atomic<u32>>; // KSG scratch (class counts)

const STATS_ROWS: u32 = 1024u; // smi::psmi::STATS_ROWS
const WG: u32 = 256u;
const LN2: f32 = 0.6931471805599453;
const PI_2: f32 = 1.5707963267948966;

// ---- f64 bit patterns (two words, low first) ----

fn f64_words(x: f32) -> vec2<u32> {
    let b = bitcast<u32>(x);
    let sign = b & 0x80000000u;
    let e = (b >> 23u) & 0xffu;
    let m = b & 0x7fffffu;
    if (e == 0u) {
        return vec2<u32>(0u, sign); // ±0 (subnormals flush to zero)
    }
    var e64 = e + 896u; // rebias 127 → 1023
    if (e == 255u) {
        e64 = 2047u;
    }
    return vec2<u32>(m << 29u, sign | (e64 << 20u) | (m >> 3u));
}

fn store_f64(at: u32, x: f32) {
    let w = f64_words(x);
    words[p.o4 + 2u * at] = w.x;
    words[p.o4 + 2u * at + 1u] = w.y;
}

// The f64 at index `at` of the words binding, rounded to nearest f32 (±inf / ±0 outside f32's range).
fn load_f64(at: u32) -> f32 {
    let lo = words[p.o4 + 2u * at];
    let hi = words[p.o4 + 2u * at + 1u];
    let sign = hi & 0x80000000u;
    let e64 = (hi >> 20u) & 0x7ffu;
    let m = ((hi & 0xfffffu) << 3u) | (lo >> 29u);
    if (e64 == 2047u) {
        return bitcast<f32>(sign | 0x7f800000u | select(0u, 0x400000u, m != 0u || (lo & 0x1fffffffu) != 0u));
    }
    if (e64 < 897u) {
        return bitcast<f32>(sign);
    }
    if (e64 > 1150u) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    var bits = sign | ((e64 - 896u) << 23u) | m;
    let rest = lo & 0x1fffffffu;
    if (rest > 0x10000000u || (rest == 0x10000000u && (m & 1u) == 1u)) {
        bits += 1u; // a mantissa carry moves into the exponent, as rounding should
    }
    return bitcast<f32>(bits);
}

// ---- accurate f32 pieces of Box–Muller ----

// 2·atanh(s) = ln((1+s)/(1−s)) for |s| ≤ 1/3 (series to s¹⁹: relative error < 1e-9).
fn two_atanh(s: f32) -> f32 {
    let s2 = s * s;
    var t = 1.0 / 19.0;
    t = t * s2 + 1.0 / 17.0;
    t = t * s2 + 1.0 / 15.0;
    t = t * s2 + 1.0 / 13.0;
    t = t * s2 + 1.0 / 11.0;
    t = t * s2 + 1.0 / 9.0;
    t = t * s2 + 1.0 / 7.0;
    t = t * s2 + 1.0 / 5.0;
    t = t * s2 + 1.0 / 3.0;
    t = t * s2 + 1.0;
    return 2.0 * s * t;
}

// ln u of u = (x + ½)·2⁻³² (rng::uniform_open): below ½ from u's exponent and mantissa, above ½ as
// ln(1 − v) with v = 1 − u = (¬x + ½)·2⁻³² exact, so u near 1 keeps its relative accuracy.
fn log_uniform(x: u32) -> f32 {
    if (x >= 0x80000000u) {
        let v = (f32(~x) + 0.5) * 2.3283064365386963e-10;
        return two_atanh(-v / (2.0 - v));
    }
    let u = (f32(x) + 0.5) * 2.3283064365386963e-10;
    let b = bitcast<u32>(u);
    var e = i32(b >> 23u) - 127;
    var m = bitcast<f32>((b & 0x7fffffu) | 0x3f800000u); // [1, 2)
    if (m > 1.4142135) {
        m *= 0.5;
        e += 1;
    }
    return f32(e) * LN2 + two_atanh((m - 1.0) / (m + 1.0));
}

// cos and sin on [0, π/2] (Taylor series to degree 16/15: error < 1e-9).
fn cos_q(t: f32) -> f32 {
    let t2 = t * t;
    var c = 1.0 / 20922789888000.0;
    c = c * t2 - 1.0 / 87178291200.0;
    c = c * t2 + 1.0 / 479001600.0;
    c = c * t2 - 1.0 / 3628800.0;
    c = c * t2 + 1.0 / 40320.0;
    c = c * t2 - 1.0 / 720.0;
    c = c * t2 + 1.0 / 24.0;
    c = c * t2 - 0.5;
    return c * t2 + 1.0;
}
fn sin_q(t: f32) -> f32 {
    let t2 = t * t;
    var s = 1.0 / 1307674368000.0;
    s = s * t2 - 1.0 / 6227020800.0;
    s = s * t2 + 1.0 / 39916800.0;
    s = s * t2 - 1.0 / 362880.0;
    s = s * t2 + 1.0 / 5040.0;
    s = s * t2 - 1.0 / 120.0;
    s = s * t2 + 1.0 / 6.0;
    return t - t * t2 * s;
}

// cos(2π·u) of u = (x + ½)·2⁻³²: the top two bits pick the quadrant, the rest is an exact fraction of it.
fn cos_uniform(x: u32) -> f32 {
    let t = (f32(x & 0x3fffffffu) + 0.5) * (PI_2 / 1073741824.0);
    switch (x >> 30u) {
        case 0u: { return cos_q(t); }
        case 1u: { return -sin_q(t); }
        case 2u: { return -cos_q(t); }
        default: { return sin_q(t); }
    }
}

// smi::directions::seeded_normal in f32.
fn seeded_normal(key: vec2<u32>, slice: u32, coord: u32, attempt: u32) -> f32 {
    let b = philox(vec4<u32>(coord / 2u, slice, 4u /* purpose::PROJECTION */, attempt), key);
    let pair = select(vec2<u32>(b.x, b.y), vec2<u32>(b.z, b.w), (coord % 2u) == 1u);
    return sqrt(-2.0 * log_uniform(pair.x)) * cos_uniform(pair.y);
}

var<workgroup> wsum: array<f32, 256>;

// Sum over the workgroup in a fixed tree order; every invocation gets it.
fn wg_sum(lid: u32, v: f32) -> f32 {
    wsum[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wsum[lid] += wsum[lid + s];
        }
        workgroupBarrier();
    }
    let r = workgroupUniformLoad(&wsum[0]);
    return r;
}

// out[row, :] = unit direction of slice slice0 + row, one workgroup per row; a zero or non-finite
// norm redraws with the next attempt counter, after 16 the row is NaN (probability 0).
@compute @workgroup_size(256)
fn directions(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lid3.x;
    let row = flat_group(wid, nwg);
    if (row >= p.k) {
        return; // whole workgroups only: uniform
    }
    let key = vec2<u32>(p.seed_lo, p.seed_hi);
    let slice = p.slice0 + row;
    let base = p.o1 + row * p.d;
    for (var attempt = 0u; attempt < 16u; attempt++) {
        var ss = 0.0;
        var comp = 0.0;
        for (var c = lid; c < p.d; c += WG) {
            let g = seeded_normal(key, slice, c, attempt);
            out[base + c] = g;
            // Kahan: ss + g² with the lost low part carried.
            let y = g * g - comp;
            let t = ss + y;
            comp = (t - ss) - y;
            ss = t;
        }
        let norm = sqrt(wg_sum(lid, ss));
        if (norm > 0.0 && norm <= 3.4028235e38) {
            for (var c = lid; c < p.d; c += WG) {
                out[base + c] = out[base + c] / norm;
            }
            return;
        }
    }
    for (var c = lid; c < p.d; c += WG) {
        out[base + c] = bitcast<f32>(0x7fc00000u);
    }
}

// Per part of STATS_ROWS rows, class wid.y, slice j: mean and M2 of the class's rows (two passes,
// Kahan sums). words = stats[part][0: mean | 1: M2][class][slice] as f64.
@compute @workgroup_size(64)
fn class_stats(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = wid.x * 64u + lid.x;
    let c = wid.y;
    let part = wid.z;
    if (j >= p.k) {
        return;
    }
    let r0 = part * STATS_ROWS;
    let r1 = min(p.n, r0 + STATS_ROWS);
    var count = 0u;
    var sum = 0.0;
    var comp = 0.0;
    for (var r = r0; r < r1; r++) {
        if (labels[p.o3 + r] == c) {
            count++;
            let y = inp[p.o2 + r * p.k + j] - comp;
            let t = sum + y;
            comp = (t - sum) - y;
            sum = t;
        }
    }
    var mean = 0.0;
    var m2 = 0.0;
    if (count > 0u) {
        mean = sum / f32(count);
        comp = 0.0;
        for (var r = r0; r < r1; r++) {
            if (labels[p.o3 + r] == c) {
                let dev = inp[p.o2 + r * p.k + j] - mean;
                let y = dev * dev - comp;
                let t = m2 + y;
                comp = (t - m2) - y;
                m2 = t;
            }
        }
    }
    let base = part * 2u * p.classes * p.k + c * p.k + j;
    store_f64(base, mean);
    store_f64(base + p.classes * p.k, m2);
}

// pmi[i·ld + col0 + j], one (sample, slice) per invocation (psmi::pmi_one in f32); the model in the
// words binding is mu, inv_sigma, log_weight ([k][classes] each) then log_prior[classes].
@compute @workgroup_size(256)
fn score(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_group(wid, nwg) * 256u + lid.x;
    if (idx >= p.n * p.k) {
        return;
    }
    let i = idx / p.k;
    let j = idx % p.k;
    let o = p.o1 + i * p.ld + p.col0 + j;
    if (flags[p.o5 + j] != 0u) {
        out[o] = bitcast<f32>(0x7fc00000u);
        return;
    }
    let kc = p.k * p.classes;
    let at = j * p.classes;
    let x = inp[p.o2 + idx];
    let y = labels[p.o3 + i];
    var mx = -3.4028235e38;
    var ty = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        let z = (x - load_f64(at + c)) * load_f64(kc + at + c);
        let t = -0.5 * z * z + load_f64(2u * kc + at + c);
        mx = max(mx, t);
        if (c == y) {
            ty = t;
        }
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        let z = (x - load_f64(at + c)) * load_f64(kc + at + c);
        sum += exp(-0.5 * z * z + load_f64(2u * kc + at + c) - mx);
    }
    out[o] = (ty - load_f64(3u * kc + y)) - (mx + log(sum));
}

// ---- per-sample summary ----

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sel: array<u32, 2>;
var<workgroup> gt_min: atomic<u32>;

// f32 bits as an order-preserving key (f64::total_cmp on the widened values), and back.
fn key_of(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn value_of(key: u32) -> f32 {
    return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// Key of the value of 0-based rank `rank0` among the row's kept values: radix select, 8 bits a pass
// from the top, each pass a workgroup histogram of the values agreeing on the digits found so far.
fn select_rank(lid: u32, row: u32, rank0: u32) -> u32 {
    var prefix = 0u;
    var mask = 0u;
    var rank = rank0;
    for (var digit = 0u; digit < 4u; digit++) {
        let shift = 24u - 8u * digit;
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        for (var j = lid; j < p.k; j += WG) {
            if (flags[p.o5 + j] == 0u) {
                let key = key_of(inp[p.o2 + row * p.k + j]);
                if ((key & mask) == prefix) {
                    atomicAdd(&hist[(key >> shift) & 255u], 1u);
                }
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var cum = 0u;
            var b = 0u;
            while (b < 255u && cum + atomicLoad(&hist[b]) <= rank) {
                cum += atomicLoad(&hist[b]);
                b++;
            }
            sel[0] = b;
            sel[1] = rank - cum;
        }
        workgroupBarrier();
        prefix |= sel[0] << shift;
        mask |= 255u << shift;
        rank = sel[1];
        workgroupBarrier();
    }
    return prefix;
}

// numpy's linear quantile q of the row's `kept` values (stats::quantile_linear, in f32).
fn quantile(lid: u32, row: u32, kept: f32, q: f32) -> f32 {
    let vi = (kept * q + (1.0 - q)) - 1.0;
    let fl = floor(vi);
    let below = clamp(fl, 0.0, kept - 1.0);
    let above = min(below + 1.0, kept - 1.0);
    let t = vi - fl;
    let lo = u32(below);
    let hi = u32(above);
    let key_lo = select_rank(lid, row, lo);
    let a = value_of(key_lo);
    var b = a;
    if (hi > lo) {
        // The next value up: key_lo again if it occurs more than lo + 1 times, else the smallest key above.
        var le = 0.0;
        var gt = 0xffffffffu;
        for (var j = lid; j < p.k; j += WG) {
            if (flags[p.o5 + j] == 0u) {
                let key = key_of(inp[p.o2 + row * p.k + j]);
                if (key <= key_lo) {
                    le += 1.0;
                } else if (key < gt) {
                    gt = key;
                }
            }
        }
        if (lid == 0u) {
            atomicStore(&gt_min, 0xffffffffu);
        }
        let count = wg_sum(lid, le);
        atomicMin(&gt_min, gt);
        workgroupBarrier();
        if (count < f32(hi) + 1.0) {
            b = value_of(atomicLoad(&gt_min));
        }
        workgroupBarrier();
    }
    let diff = b - a;
    if (t >= 0.5) {
        return b - diff * (1.0 - t);
    }
    return a + diff * t;
}

// words[row] = (mean, std (ddof 0), q0.01, q0.99) as f64 of the kept values of inp[row, :], one workgroup per row.
@compute @workgroup_size(256)
fn row_summary(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lid3.x;
    let row = flat_group(wid, nwg);
    if (row >= p.n) {
        return;
    }
    var s = 0.0;
    var comp = 0.0;
    var cnt = 0.0;
    for (var j = lid; j < p.k; j += WG) {
        if (flags[p.o5 + j] == 0u) {
            let y = inp[p.o2 + row * p.k + j] - comp;
            let t = s + y;
            comp = (t - s) - y;
            s = t;
            cnt += 1.0;
        }
    }
    let kept = wg_sum(lid, cnt);
    let mean = wg_sum(lid, s) / kept;
    var s2 = 0.0;
    comp = 0.0;
    for (var j = lid; j < p.k; j += WG) {
        if (flags[p.o5 + j] == 0u) {
            let dv = inp[p.o2 + row * p.k + j] - mean;
            let y = dv * dv - comp;
            let t = s2 + y;
            comp = (t - s2) - y;
            s2 = t;
        }
    }
    let sd = sqrt(wg_sum(lid, s2) / kept);
    let q01 = quantile(lid, row, kept, 0.01);
    let q99 = quantile(lid, row, kept, 0.99);
    if (lid == 0u) {
        store_f64(4u * row, mean);
        store_f64(4u * row + 1u, sd);
        store_f64(4u * row + 2u, q01);
        store_f64(4u * row + 3u, q99);
    }
}

// ---- dataset-level SMI: the 1-D KSG MI of every column (smi::ksg::ksg_mi_columns, no jitter) ----
//
// Scratch words (backend::ksg_scratch_words, from p.o6 / p.o7): [2k unused: the f64 scales of the
// CUDA twin] | totals | class start [classes + 1] | keys A, classes A, keys B, classes B, sorted keys
// G, each [k][n]. Without f64 this works on the unscaled f32 projections: scaling a column by a
// positive s changes no comparison the estimator makes (it is scale-free), while rounding x/s to f32
// would. Distances are f32 differences (exact for neighbours within a factor 2 of each other), so a
// count can differ from the cpu's only where two distances tie within an f32 ulp; ψ and the sums are
// f32 (|Δ MI| ~ 1e-6).

const KSG_RADIX: u32 = 16u;          // 4-bit digits: 16 counters per invocation, 16 KiB in all
const KSG_DROPPED: u32 = 0xffffffffu; // key of a sample whose class has < 2 samples: above every finite f32's

var<workgroup> kcount: array<u32, 4096>; // [digit][invocation]
var<workgroup> kscan: array<u32, 256>;
var<workgroup> kdiffer: atomic<u32>;
var<workgroup> kdiffer_plain: u32;

fn ksg_base() -> u32 {
    return p.o6 + 2u * p.k + 8u + p.classes + 1u;
}
fn ksg_start(c: u32) -> u32 {
    return work[p.o6 + 2u * p.k + 8u + c];
}

// smi::stats::digamma_int in f32.
fn ksg_digamma(m: u32) -> f32 {
    if (m < 20u) {
        var psi = -0.5772156649015329;
        for (var i = 1u; i < m; i++) {
            psi += 1.0 / f32(i);
        }
        return psi;
    }
    let x = f32(m);
    let x2 = x * x;
    return log(x) - 0.5 / x - 1.0 / (12.0 * x2) + 1.0 / (120.0 * x2 * x2) - 1.0 / (252.0 * x2 * x2 * x2);
}

// One workgroup: class sizes → segment starts of the class-sorted order (dropped classes included),
// totals = (ψ(N) + Σ_c n_c/N·(ψ(k_c) − ψ(n_c)) as f32 bits, N = kept samples).
@compute @workgroup_size(256)
fn ksg_classes(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let st = p.o7 + 2u * p.k + 8u;
    for (var c = lid; c <= p.classes; c += WG) {
        atomicStore(&work_atomic[st + c], 0u);
    }
    storageBarrier();
    for (var i = lid; i < p.n; i += WG) {
        atomicAdd(&work_atomic[st + labels[p.o3 + i]], 1u);
    }
    storageBarrier();
    if (lid != 0u) {
        return;
    }
    var at = 0u;
    var kept = 0u;
    for (var c = 0u; c < p.classes; c++) {
        let nc = atomicLoad(&work_atomic[st + c]);
        atomicStore(&work_atomic[st + c], at);
        at += nc;
        if (nc >= 2u) {
            kept += nc;
        }
    }
    atomicStore(&work_atomic[st + p.classes], at);
    var total = 0.0;
    if (kept > 0u) {
        total = ksg_digamma(kept);
        for (var c = 0u; c < p.classes; c++) {
            let nc = atomicLoad(&work_atomic[st + c + 1u]) - atomicLoad(&work_atomic[st + c]);
            if (nc >= 2u) {
                total += f32(nc) / f32(kept) * (ksg_digamma(min(p.neighbors, nc - 1u)) - ksg_digamma(nc));
            }
        }
    }
    atomicStore(&work_atomic[p.o7 + 2u * p.k], bitcast<u32>(total));
    atomicStore(&work_atomic[p.o7 + 2u * p.k + 1u], kept);
}

// One stable counting pass over a column's n elements (offsets into work), digit (v >> shift) & 15 of
// the key or the class: invocation lid owns rows [lo, hi), so its per-digit counters scanned in
// (digit, invocation) order are the output positions of its rows in order.
fn ksg_pass(lid: u32, kin: u32, cin: u32, kout: u32, cout: u32, lo: u32, hi: u32, shift: u32, by_class: bool) {
    for (var b = 0u; b < KSG_RADIX; b++) {
        kcount[b * WG + lid] = 0u;
    }
    for (var i = lo; i < hi; i++) {
        let v = select(work[kin + i], work[cin + i], by_class);
        kcount[((v >> shift) & 15u) * WG + lid] += 1u;
    }
    workgroupBarrier();
    var sum = 0u;
    for (var e = 0u; e < KSG_RADIX; e++) {
        sum += kcount[lid * KSG_RADIX + e];
    }
    kscan[lid] = sum;
    workgroupBarrier();
    for (var o = 1u; o < WG; o <<= 1u) {
        var v = 0u;
        if (lid >= o) {
            v = kscan[lid - o];
        }
        workgroupBarrier();
        kscan[lid] += v;
        workgroupBarrier();
    }
    var run = kscan[lid] - sum;
    for (var e = 0u; e < KSG_RADIX; e++) {
        let c = kcount[lid * KSG_RADIX + e];
        kcount[lid * KSG_RADIX + e] = run;
        run += c;
    }
    workgroupBarrier();
    for (var i = lo; i < hi; i++) {
        let key = work[kin + i];
        let c = work[cin + i];
        let slot = ((select(key, c, by_class) >> shift) & 15u) * WG + lid;
        let at = kcount[slot];
        kcount[slot] = at + 1u;
        work[kout + at] = key;
        work[cout + at] = c;
    }
    storageBarrier();
    workgroupBarrier();
}

// words[j] (f64) = KSG MI of column j, one workgroup per column: the keys radix-sorted by value
// (digits on which all keys agree skipped), kept as the global order G, then stably by class; per
// sample of a kept class its k-th distance within the class segment, the next f32 toward 0, the count
// of G within it by two binary searches, ψ of the count; mean, clip at 0.
@compute @workgroup_size(256)
fn ksg_sort_mi(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lid3.x;
    let j = flat_group(wid, nwg);
    if (j >= p.k) {
        return; // whole workgroups only: uniform
    }
    let n = p.n;
    let nk = n * p.k;
    let base = ksg_base();
    var ka = base + j * n;
    var ca = base + nk + j * n;
    var kb = base + 2u * nk + j * n;
    var cb = base + 3u * nk + j * n;
    let g = base + 4u * nk + j * n;
    if (lid == 0u) {
        atomicStore(&kdiffer, 0u);
    }
    workgroupBarrier();
    var key0 = 0u;
    if (n > 0u) {
        let c = labels[p.o3];
        key0 = select(key_of(inp[p.o2 + j]), KSG_DROPPED, ksg_start(c + 1u) - ksg_start(c) < 2u);
    }
    var mine = 0u;
    for (var i = lid; i < n; i += WG) {
        let c = labels[p.o3 + i];
        let key = select(key_of(inp[p.o2 + i * p.k + j]), KSG_DROPPED, ksg_start(c + 1u) - ksg_start(c) < 2u);
        work[ka + i] = key;
        work[ca + i] = c;
        mine |= key ^ key0;
    }
    atomicOr(&kdiffer, mine);
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        kdiffer_plain = atomicLoad(&kdiffer);
    }
    let differ = workgroupUniformLoad(&kdiffer_plain);
    let chunk = (n + WG - 1u) / WG;
    let lo = min(n, lid * chunk);
    let hi = min(n, lo + chunk);
    for (var shift = 0u; shift < 32u; shift += 4u) {
        if (((differ >> shift) & 15u) == 0u) {
            continue;
        }
        ksg_pass(lid, ka, ca, kb, cb, lo, hi, shift, false);
        let tk = ka;
        ka = kb;
        kb = tk;
        let tc = ca;
        ca = cb;
        cb = tc;
    }
    for (var i = lid; i < n; i += WG) {
        work[g + i] = work[ka + i];
    }
    storageBarrier();
    workgroupBarrier();
    for (var shift = 0u; p.classes > 1u && ((p.classes - 1u) >> shift) != 0u; shift += 4u) {
        ksg_pass(lid, ka, ca, kb, cb, lo, hi, shift, true);
        let tk = ka;
        ka = kb;
        kb = tk;
        let tc = ca;
        ca = cb;
        cb = tc;
    }
    let total = bitcast<f32>(work[p.o6 + 2u * p.k]);
    let kept = work[p.o6 + 2u * p.k + 1u];
    var acc = 0.0;
    for (var q = lid; q < n; q += WG) {
        let c = work[ca + q];
        let c0 = ksg_start(c);
        let nc = ksg_start(c + 1u) - c0;
        if (nc < 2u) {
            continue;
        }
        let kc = min(p.neighbors, nc - 1u);
        let x = value_of(work[ka + q]);
        var r = 0.0;
        var left = q;
        var right = q + 1u;
        for (var step = 0u; step < kc; step++) {
            let has_l = left > c0;
            let has_r = right < c0 + nc;
            var dl = 0.0;
            var dr = 0.0;
            if (has_l) {
                dl = x - value_of(work[ka + left - 1u]);
            }
            if (has_r) {
                dr = value_of(work[ka + right]) - x;
            }
            if (has_l && (!has_r || dl <= dr)) {
                left -= 1u;
                r = dl;
            } else {
                right += 1u;
                r = dr;
            }
        }
        if (r > 0.0) {
            r = bitcast<f32>(bitcast<u32>(r) - 1u);
        }
        var a = 0u;
        var b = kept;
        while (a < b) {
            let mid = (a + b) / 2u;
            if (x - value_of(work[g + mid]) <= r) {
                b = mid;
            } else {
                a = mid + 1u;
            }
        }
        let first = a;
        b = kept;
        while (a < b) {
            let mid = (a + b) / 2u;
            if (value_of(work[g + mid]) - x > r) {
                b = mid;
            } else {
                a = mid + 1u;
            }
        }
        acc += ksg_digamma(a - first);
    }
    var share = 0.0;
    if (kept > 0u) {
        share = acc / f32(kept);
    }
    let mean_psi_m = wg_sum(lid, share);
    if (lid == 0u) {
        var mi = 0.0;
        if (kept > 0u) {
            mi = max(total - mean_psi_m, 0.0);
        }
        store_f64(j, mi);
    }
}

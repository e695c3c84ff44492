// LayerNorm over the last dimension (biased variance). 32 lanes per row, 8 rows per workgroup; row
// statistics reduce through shared memory in a fixed tree order.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, c: u32, eps: f32,
    chunk_rows: u32, // backward_params_partial
}

@group(0) @binding(0) var<uniform> p: P;
// forward: out, mean, rstd, inp, weight, bias; backward: dinp (=out), mean, rstd, inp, weight, dout (=bias slot 6)
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> inp: array<f32>;
@group(0) @binding(5) var<storage, read_write> weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> dout: array<f32>;

const LANES: u32 = 32u;
var<workgroup> red: array<f32, 256>;

// Sum of v over the 32 lanes of the calling thread's row (every thread of the workgroup must call).
fn row_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if ((lid % LANES) < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[lid - lid % LANES];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.n;
    let x0 = p.o4 + row * p.c;
    var s = 0.0;
    if (valid) {
        for (var i = lane; i < p.c; i += LANES) {
            s += inp[x0 + i];
        }
    }
    let mu = row_sum(lid.x, s) / f32(p.c);
    var s2 = 0.0;
    if (valid) {
        for (var i = lane; i < p.c; i += LANES) {
            let d = inp[x0 + i] - mu;
            s2 += d * d;
        }
    }
    let variance = row_sum(lid.x, s2) / f32(p.c);
    let rs = 1.0 / sqrt(variance + p.eps);
    if (valid) {
        for (var i = lane; i < p.c; i += LANES) {
            out[p.o1 + row * p.c + i] = (inp[x0 + i] - mu) * rs * weight[p.o5 + i] + bias[p.o6 + i];
        }
        if (lane == 0u) {
            mean[p.o2 + row] = mu;
            rstd[p.o3 + row] = rs;
        }
    }
}

// dinp += (w·dout − mean(w·dout) − norm·mean(w·dout·norm)) · rstd   (out = dinp)
@compute @workgroup_size(256)
fn backward_input(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.n;
    var mu = 0.0;
    var rs = 0.0;
    if (valid) {
        mu = mean[p.o2 + row];
        rs = rstd[p.o3 + row];
    }
    var sd = 0.0;
    var sdn = 0.0;
    if (valid) {
        for (var i = lane; i < p.c; i += LANES) {
            let dn = weight[p.o5 + i] * dout[p.o7 + row * p.c + i];
            sd += dn;
            sdn += dn * (inp[p.o4 + row * p.c + i] - mu) * rs;
        }
    }
    let dmean = row_sum(lid.x, sd) / f32(p.c);
    let dnorm_norm = row_sum(lid.x, sdn) / f32(p.c);
    if (valid) {
        for (var i = lane; i < p.c; i += LANES) {
            let norm = (inp[p.o4 + row * p.c + i] - mu) * rs;
            let dn = weight[p.o5 + i] * dout[p.o7 + row * p.c + i];
            out[p.o1 + row * p.c + i] += (dn - dmean - norm * dnorm_norm) * rs;
        }
    }
}

// Pass 1 of dweight/dbias: out[chunk·2c + ch] = Σ norm·dout, out[chunk·2c + c + ch] = Σ dout over the
// chunk's rows (pass 2 is elementwise.wgsl's colsum_accumulate).
@compute @workgroup_size(64)
fn backward_params_partial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = wid.x * 64u + lid.x;
    let chunk = wid.y;
    if (ch >= p.c) {
        return;
    }
    let r0 = chunk * p.chunk_rows;
    let r1 = min(r0 + p.chunk_rows, p.n);
    var dw = 0.0;
    var db = 0.0;
    for (var r = r0; r < r1; r++) {
        let dy = dout[p.o7 + r * p.c + ch];
        dw += (inp[p.o4 + r * p.c + ch] - mean[p.o2 + r]) * rstd[p.o3 + r] * dy;
        db += dy;
    }
    out[p.o1 + chunk * 2u * p.c + ch] = dw;
    out[p.o1 + chunk * 2u * p.c + p.c + ch] = db;
}

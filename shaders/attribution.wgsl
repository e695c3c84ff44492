// Attribution ops (cpu twin: src/backend/cpu/attribution.rs): rows gathered from a full pass and
// scaled onto the IG path, causal attention of one query row against a context (forward, backward),
// the gradient of a target probability, and the integrated-gradients reduction over path points.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32, w: u32, m: u32, t_ctx: u32, c: u32, nh: u32,
    flags: u32, // gather: 1 = scaled; target prob: 1 = log, 2 = in place
    scale: f32, // attention: 1/√hs; IG: 1/m (folded on the host exactly as the cpu does)
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // gathered rows / y / dqkv / dlogits / ig
@group(0) @binding(2) var<storage, read_write> att: array<f32>;  // row probabilities [n, nh, t_ctx]
@group(0) @binding(3) var<storage, read_write> inp: array<f32>;  // gather src / qkv / probs / grads
@group(0) @binding(4) var<storage, read_write> ctx: array<f32>;  // attention context / IG activations
@group(0) @binding(5) var<storage, read_write> idx: array<u32>;  // row indices / targets
@group(0) @binding(6) var<storage, read_write> aux: array<f32>;  // gather scale / attention dout

// out[r, :] = scale[r]·src[index[r], :]; one thread per element.
@compute @workgroup_size(256)
fn gather_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.n * p.w) {
        return;
    }
    let r = i / p.w;
    var x = inp[p.o3 + idx[p.o5 + r] * p.w + i % p.w];
    if ((p.flags & 1u) != 0u) {
        x = aux[p.o6 + r] * x;
    }
    out[p.o1 + i] = x;
}

// ---- one query row against a context: a workgroup of LANES threads per (row, head) ----

// The scores (or d scores) of a row live in shared memory: t_ctx ≤ MAX_ROW_T, checked by the host.
const MAX_ROW_T: u32 = 2048u;
var<workgroup> sc: array<f32, 2048>;

// A workgroup's (row, head) g and where its context lies: row r with index s·t_ctx + t attends to the
// context rows base = s·t_ctx .. base + t − 1 and to its own qkv row at position t.
struct QueryRow {
    r: u32,
    col: u32, // the head's first channel
    hs: u32,
    t: u32,
    base: u32,
}

fn query_row(g: u32) -> QueryRow {
    let hs = p.c / p.nh;
    let r = g / p.nh;
    let i = idx[p.o5 + r];
    let t = i % p.t_ctx;
    return QueryRow(r, (g % p.nh) * hs, hs, t, i - t);
}

// Word `col` (= which·c + channel: which 1 = key, 2 = value) of position u ≤ t of the row's context.
fn kv(x: QueryRow, u: u32, col: u32) -> f32 {
    if (u == x.t) {
        return inp[p.o3 + x.r * 3u * p.c + col];
    }
    return ctx[p.o4 + (x.base + u) * 3u * p.c + col];
}

@compute @workgroup_size(32)
fn attention_row_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_group(wid, nwg); // (row, head)
    if (g >= p.n * p.nh) {
        return; // a whole workgroup of a folded grid's tail: uniform, so the barriers below stay valid
    }
    let x = query_row(g);
    let t = x.t;
    let q0 = p.o3 + x.r * 3u * p.c + x.col;
    let lane = lid.x;
    var mx = -3.0e38;
    for (var u = lane; u <= t; u += LANES) {
        var s = 0.0;
        for (var d = 0u; d < x.hs; d++) {
            s = fma(inp[q0 + d], kv(x, u, p.c + x.col + d), s);
        }
        s *= p.scale;
        sc[u] = s;
        mx = max(mx, s);
    }
    mx = row_reduce(lid.x, mx, true);
    var sum = 0.0;
    for (var u = lane; u <= t; u += LANES) {
        let e = exp(sc[u] - mx);
        sc[u] = e;
        sum += e;
    }
    sum = row_reduce(lid.x, sum, false);
    let inv = 1.0 / sum;
    let a0 = p.o2 + g * p.t_ctx;
    for (var u = lane; u < p.t_ctx; u += LANES) {
        var pu = 0.0;
        if (u <= t) {
            pu = sc[u] * inv;
            sc[u] = pu;
        }
        att[a0 + u] = pu;
    }
    workgroupBarrier();
    for (var d = lane; d < x.hs; d += LANES) {
        var y = 0.0;
        for (var u = 0u; u <= t; u++) {
            y = fma(sc[u], kv(x, u, 2u * p.c + x.col + d), y);
        }
        out[p.o1 + x.r * p.c + x.col + d] = y;
    }
}

// dqkv row r, head h (overwritten): dq = Σ_u ds_u·k_u, dk_t = ds_t·q, dv_t = p_t·dy, with
// ds_u = p_u·(dp_u − Σ p·dp)/√hs and dp_u = dy·v_u.
@compute @workgroup_size(32)
fn attention_row_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat_group(wid, nwg);
    if (g >= p.n * p.nh) {
        return;
    }
    let x = query_row(g);
    let t = x.t;
    let q0 = p.o3 + x.r * 3u * p.c + x.col;
    let dy0 = p.o6 + x.r * p.c + x.col;
    let a0 = p.o2 + g * p.t_ctx;
    let lane = lid.x;
    var pdp = 0.0; // Σ p·dp
    for (var u = lane; u <= t; u += LANES) {
        var dp = 0.0;
        for (var d = 0u; d < x.hs; d++) {
            dp = fma(aux[dy0 + d], kv(x, u, 2u * p.c + x.col + d), dp);
        }
        sc[u] = dp;
        pdp += att[a0 + u] * dp;
    }
    pdp = row_reduce(lid.x, pdp, false);
    for (var u = lane; u <= t; u += LANES) {
        sc[u] = att[a0 + u] * (sc[u] - pdp) * p.scale;
    }
    workgroupBarrier();
    let d0 = p.o1 + x.r * 3u * p.c + x.col;
    for (var d = lane; d < x.hs; d += LANES) {
        var dq = 0.0;
        for (var u = 0u; u <= t; u++) {
            dq = fma(sc[u], kv(x, u, p.c + x.col + d), dq);
        }
        out[d0 + d] = dq;
        out[d0 + p.c + d] = sc[t] * inp[q0 + d];
        out[d0 + 2u * p.c + d] = att[a0 + t] * aux[dy0 + d];
    }
}

// ---- the gradient of a target probability: LANES threads per row, 8 rows per workgroup ----

fn probs_at(i: u32) -> f32 {
    if ((p.flags & 2u) != 0u) {
        return out[p.o1 + i]; // in place: read where we write, never through a second binding
    }
    return inp[p.o3 + i];
}

// dlogits = (onehot − p)·p_target, or (onehot − p) with the log flag; 0 on ignored rows.
@compute @workgroup_size(256)
fn target_prob_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_group(wid, nwg) * 8u + lid.x / LANES;
    let lane = lid.x % LANES;
    let valid = row < p.n;
    let base = row * p.w;
    var tgt = IGNORE_TARGET;
    var weight = 1.0;
    if (valid) {
        tgt = idx[p.o5 + row];
        if (tgt != IGNORE_TARGET && (p.flags & 1u) == 0u) {
            weight = probs_at(base + tgt);
        }
    }
    // In place, every lane reads p_target before the lane that owns it overwrites it.
    storageBarrier();
    if (valid) {
        for (var j = lane; j < p.w; j += LANES) {
            var d = 0.0;
            if (tgt != IGNORE_TARGET) {
                d = (select(0.0, 1.0, j == tgt) - probs_at(base + j)) * weight;
            }
            out[p.o1 + base + j] = d;
        }
    }
}

// ig[g, k] = src[index[g·m], k]·((1/m)·Σ_j grads[g·m + j, k]), summed in j order; one thread per (g, k).
@compute @workgroup_size(256)
fn ig_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= (p.n / p.m) * p.w) {
        return;
    }
    let g = i / p.w;
    let k = i % p.w;
    var s = 0.0;
    for (var j = 0u; j < p.m; j++) {
        s += inp[p.o3 + (g * p.m + j) * p.w + k];
    }
    out[p.o1 + i] = s * (ctx[p.o4 + idx[p.o5 + g * p.m] * p.w + k] * p.scale);
}

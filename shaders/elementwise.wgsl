// Small ops: residual add, fill, strided copy, argmax, and the two passes of a deterministic column sum
// (partial sums over fixed row chunks, then the chunks added in order), which the bias, layernorm and
// embedding gradients use because WGSL has no float atomics.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    n: u32,        // elements (residual, fill, copy) or rows (argmax, column sums)
    cols: u32,     // copy: words per row; argmax: vocabulary; column sums: columns
    value: f32,    // fill
    batches: u32, rows: u32, ds0: u32, ds1: u32, ss0: u32, ss1: u32, // copy_strided
    suppress: u32, // argmax: token masked to −∞, or IGNORE_TARGET for none
    row_stride: u32, chunk_rows: u32, chunks: u32, // column sums
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;

// out = a + b
@compute @workgroup_size(256)
fn residual(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        out[p.o1 + i] = a[p.o2 + i] + b[p.o3 + i];
    }
}

// x[r, j] *= scale[j]: n = elements, cols = w; x is `out`, scale is `a`.
@compute @workgroup_size(256)
fn scale_columns(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        out[p.o1 + i] = out[p.o1 + i] * a[p.o2 + i % p.cols];
    }
}

// out[j] = Σ_r a[r, j]·b[r, j]: n = rows, cols = w; one thread per column, rows in order.
@compute @workgroup_size(64)
fn column_dot(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_group(wid, nwg) * 64u + lid.x;
    if (j >= p.cols) {
        return;
    }
    var acc = 0.0;
    for (var r = 0u; r < p.n; r++) {
        acc = fma(a[p.o2 + r * p.cols + j], b[p.o3 + r * p.cols + j], acc);
    }
    out[p.o1 + j] = acc;
}

@compute @workgroup_size(256)
fn fill(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        out[p.o1 + i] = p.value;
    }
}

// out[bi·ds0 + r·ds1 + j] = a[bi·ss0 + r·ss1 + j], one thread per copied word.
@compute @workgroup_size(256)
fn copy_strided(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i < p.n) {
        let j = i % p.cols;
        let r = (i / p.cols) % p.rows;
        let bi = i / (p.cols * p.rows);
        out[p.o1 + bi * p.ds0 + r * p.ds1 + j] = a[p.o2 + bi * p.ss0 + r * p.ss1 + j];
    }
}

// ids[i] = first maximal index of row i of a (NaN counts as the maximum, as torch.argmax).
@compute @workgroup_size(64)
fn argmax(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 64u + lid.x;
    if (i >= p.n) {
        return;
    }
    var best = IGNORE_TARGET;
    var best_val = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        if (j == p.suppress) {
            continue;
        }
        let x = a[p.o2 + i * p.cols + j];
        let x_nan = x != x;
        let best_nan = best_val != best_val;
        if (best == IGNORE_TARGET || x > best_val || (x_nan && !best_nan)) {
            best = j;
            best_val = x;
        }
    }
    ids[p.o4 + i] = best;
}

// Pass 1: out[chunk·cols + j] = Σ over rows chunk·chunk_rows.. of a[row·row_stride + j].
@compute @workgroup_size(64)
fn colsum_partial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = wid.x * 64u + lid.x;
    let chunk = wid.y;
    if (j >= p.cols) {
        return;
    }
    let r0 = chunk * p.chunk_rows;
    let r1 = min(r0 + p.chunk_rows, p.n);
    var acc = 0.0;
    for (var r = r0; r < r1; r++) {
        acc += a[p.o2 + r * p.row_stride + j];
    }
    out[p.o1 + chunk * p.cols + j] = acc;
}

// Pass 2: out[j] += Σ_chunk a[chunk·row_stride + j], chunks in order.
@compute @workgroup_size(64)
fn colsum_accumulate(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_group(wid, nwg) * 64u + lid.x;
    if (j >= p.cols) {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        acc += a[p.o2 + k * p.row_stride + j];
    }
    out[p.o1 + j] += acc;
}

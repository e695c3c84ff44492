// Token + position embedding: out[b,t,:] = wte[tok[b,t]] + wpe[pos0 + t], and its backward.

struct P {
    o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
    b: u32, t: u32, c: u32, pos0: u32,
    vocab: u32, // rows of dwte
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> wte: array<f32>;
@group(0) @binding(3) var<storage, read_write> wpe: array<f32>;
@group(0) @binding(4) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(6) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(7) var<storage, read_write> dout: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.b * p.t * p.c) {
        return;
    }
    let row = i / p.c;
    let ch = i % p.c;
    let id = tokens[p.o4 + row];
    let pos = p.pos0 + row % p.t;
    out[p.o1 + i] = wte[p.o2 + id * p.c + ch] + wpe[p.o3 + pos * p.c + ch];
}

// dwte[v, ch] += Σ over rows with token v of dout[row, ch], rows in order: a workgroup per
// (vocabulary row, block of 64 channels) scans the tokens through shared memory. Deterministic without
// atomics; the scan costs vocab × rows token reads, trivial for TinyMem's 14-token vocabulary.
var<workgroup> tile: array<u32, 256>;

@compute @workgroup_size(64)
fn backward_wte(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blocks = (p.c + 63u) / 64u;
    let g = flat_group(wid, nwg);
    let v = g / blocks;
    let ch = (g % blocks) * 64u + lid.x;
    let n = p.b * p.t;
    var acc = 0.0;
    for (var base = 0u; base < n; base += 256u) {
        for (var j = lid.x; j < 256u; j += 64u) {
            var id = IGNORE_TARGET;
            if (base + j < n) {
                id = tokens[p.o4 + base + j];
            }
            tile[j] = id;
        }
        workgroupBarrier();
        let m = min(256u, n - base);
        if (v < p.vocab && ch < p.c) {
            for (var j = 0u; j < m; j++) {
                if (tile[j] == v) {
                    acc += dout[p.o7 + (base + j) * p.c + ch];
                }
            }
        }
        workgroupBarrier();
    }
    if (v < p.vocab && ch < p.c) {
        dwte[p.o5 + v * p.c + ch] += acc;
    }
}

// dwpe[pos0 + t, ch] += Σ_b dout[b, t, ch]
@compute @workgroup_size(256)
fn backward_wpe(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_group(wid, nwg) * 256u + lid.x;
    if (i >= p.t * p.c) {
        return;
    }
    let ti = i / p.c;
    let ch = i % p.c;
    var acc = 0.0;
    for (var bi = 0u; bi < p.b; bi++) {
        acc += dout[p.o7 + (bi * p.t + ti) * p.c + ch];
    }
    dwpe[p.o6 + (p.pos0 + ti) * p.c + ch] += acc;
}

// Small ops (cpu twin: src/backend/cpu/elementwise.rs): residual add, column scale and dot, fill,
// strided copy, argmax.

// out = a + b; may run in place.
extern "C" __global__ void residual_forward(float* out, const float* a, const float* b, int n) {
    long long i = global_index();
    if (i < n) out[i] = a[i] + b[i];
}
EMU_KERNEL(residual_forward)

// x[r, j] *= scale[j] over total = rows·w elements, in place.
extern "C" __global__ void scale_columns(float* x, const float* scale, long long total, int w) {
    long long i = global_index();
    if (i < total) x[i] *= scale[i % w];
}
EMU_KERNEL(scale_columns)

// out[j] = Σ_r a[r, j]·b[r, j], one thread per column, rows in order (the cpu's order and fma).
extern "C" __global__ void column_dot(float* out, const float* a, const float* b, int n, int w) {
    long long j = global_index();
    if (j >= w) return;
    float acc = 0.0f;
    for (long long r = 0; r < n; r++) acc = fmaf(a[r * w + j], b[r * w + j], acc);
    out[j] = acc;
}
EMU_KERNEL(column_dot)

extern "C" __global__ void fill(float* dst, float value, long long n) {
    long long i = global_index();
    if (i < n) dst[i] = value;
}
EMU_KERNEL(fill)

// dst[b·ds0 + r·ds1 + col] = src[b·ss0 + r·ss1 + col]; one thread per element, coalesced on col.
extern "C" __global__ void copy_strided(float* dst, const float* src, int batches, int rows, int cols,
                                        long long ds0, long long ds1, long long ss0, long long ss1) {
    long long i = global_index();
    if (i >= (long long)batches * rows * cols) return;
    long long col = i % cols, r = i / cols % rows, b = i / cols / rows;
    dst[b * ds0 + r * ds1 + col] = src[b * ss0 + r * ss1 + col];
}
EMU_KERNEL(copy_strided)

// (value, index) candidates ordered as torch.argmax: NaN beats everything, then the larger value, then
// the smaller index. Index 0xffffffff marks "no candidate".
__device__ __forceinline__ bool argmax_better(float va, unsigned ia, float vb, unsigned ib) {
    if (ib == 0xffffffffu) return ia != 0xffffffffu;
    if (ia == 0xffffffffu) return false;
    bool na = va != va, nb = vb != vb;
    if (na != nb) return na;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}

// out[row] = first maximal index of logits[row, :] with token `suppress` skipped (0xffffffff: none).
// One block per row: per-thread candidates, then a warp-shuffle and a shared-memory combine.
extern "C" __global__ void argmax_rows(unsigned* out, const float* logits, int v, unsigned suppress) {
    __shared__ float best_val[32];
    __shared__ unsigned best_idx[32];
    const float* row = logits + (long long)blockIdx.x * v;
    float bv = 0.0f;
    unsigned bi = 0xffffffffu;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        if ((unsigned)j == suppress) continue;
        float x = row[j];
        if (argmax_better(x, (unsigned)j, bv, bi)) { bv = x; bi = (unsigned)j; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        unsigned oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (argmax_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_val[warp] = bv; best_idx[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (argmax_better(best_val[w], best_idx[w], bv, bi)) { bv = best_val[w]; bi = best_idx[w]; }
        out[blockIdx.x] = bi;
    }
}
EMU_KERNEL(argmax_rows)

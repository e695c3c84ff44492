// Token + position embedding (cpu twin: src/backend/cpu/encoder.rs).

// out[row, i] = wte[tokens[row], i] + wpe[pos0 + row % t, i]; one thread per element, coalesced on i.
extern "C" __global__ void encoder_forward(float* out, const unsigned* tokens, const float* wte, const float* wpe,
                                           int n, int t, int c, int pos0) {
    long long idx = global_index();
    if (idx >= (long long)n * c) return;
    int row = (int)(idx / c), i = (int)(idx % c);
    int pos = pos0 + row % t;
    out[idx] = wte[(long long)tokens[row] * c + i] + wpe[(long long)pos * c + i];
}
EMU_KERNEL(encoder_forward)

// dwte[v, i] += Σ_{rows with token v} dout[row, i], rows in order: one block per vocabulary id, threads
// over channels. Deterministic (no atomics), and each block scans the token ids through shared memory.
extern "C" __global__ void encoder_backward_wte(float* dwte, const float* dout, const unsigned* tokens, int n, int c) {
    __shared__ unsigned tok[256];
    const unsigned id = blockIdx.x;
    for (int c0 = 0; c0 < c; c0 += blockDim.x) {
        int i = c0 + threadIdx.x;
        float g = i < c ? dwte[(long long)id * c + i] : 0.0f;
        for (int r0 = 0; r0 < n; r0 += 256) {
            int rows = min(256, n - r0);
            __syncthreads();
            for (int j = threadIdx.x; j < rows; j += blockDim.x) tok[j] = tokens[r0 + j];
            __syncthreads();
            if (i < c)
                for (int j = 0; j < rows; j++)
                    if (tok[j] == id) g += dout[(long long)(r0 + j) * c + i];
        }
        if (i < c) dwte[(long long)id * c + i] = g;
    }
}
EMU_KERNEL(encoder_backward_wte)

// dwpe[pos0 + ti, i] += Σ_b dout[b, ti, i]: one thread per (ti, i), b in order.
extern "C" __global__ void encoder_backward_wpe(float* dwpe, const float* dout, int b, int t, int c, int pos0) {
    long long idx = global_index();
    if (idx >= (long long)t * c) return;
    int ti = (int)(idx / c), i = (int)(idx % c);
    float g = dwpe[(long long)(pos0 + ti) * c + i];
    for (int bi = 0; bi < b; bi++) g += dout[((long long)bi * t + ti) * c + i];
    dwpe[(long long)(pos0 + ti) * c + i] = g;
}
EMU_KERNEL(encoder_backward_wpe)

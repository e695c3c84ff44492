// Training regularizers (cpu twin: src/backend/cpu/regularize.rs; tinymem.md §5.1): the spectral
// penalty's power iteration and rank-1 gradient (one block per matrix block), and example-tied
// dropout (one block per sequence: its mask is drawn from Philox here and never stored).

#define REG_THREADS 256   // blocks of the spectral kernels (a power of two)
#define ETD_THREADS 128   // blocks of example_tied_dropout
#define ETD_MAX_C 1024    // backend::ETD_MAX_C
#define PURPOSE_ETD 8u    // rng::purpose::ETD

// Sum over a block of REG_THREADS threads in a fixed tree order; every thread gets the result.
__device__ __forceinline__ float reg_block_sum(float v, float* red) {
    __syncthreads();
    red[threadIdx.x] = v;
    for (int s = REG_THREADS / 2; s > 0; s >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    }
    __syncthreads();
    const float r = red[0];
    __syncthreads();
    return r;
}

// Block b's table entry: offset, rows, cols, ld, state offset.
struct SpectralBlock {
    long long off;
    int rows, cols, ld;
    long long state;
};

__device__ __forceinline__ SpectralBlock spectral_block(const unsigned* table, int b) {
    const unsigned* e = table + 5 * b;
    SpectralBlock s = {(long long)e[0], (int)e[1], (int)e[2], (int)e[3], (long long)e[4]};
    return s;
}

// v = normalize(Wᵀu) into the state's v, then u = normalize(W v), σ = uᵀ(W v).
extern "C" __global__ void spectral_power_iteration(float* state, float* sigma, const float* params, const unsigned* table) {
    __shared__ float red[REG_THREADS];
    const SpectralBlock b = spectral_block(table, blockIdx.x);
    const float* w = params + b.off;
    float* u = state + b.state;
    float* v = u + b.rows;
    float part = 0.0f;
    for (int j = threadIdx.x; j < b.cols; j += REG_THREADS) {
        float s = 0.0f;
        for (int i = 0; i < b.rows; i++) s = __fadd_rn(s, __fmul_rn(w[(long long)i * b.ld + j], u[i]));
        v[j] = s;
        part = __fadd_rn(part, __fmul_rn(s, s));
    }
    const float vn = fmaxf(sqrtf(reg_block_sum(part, red)), 1e-12f);
    for (int j = threadIdx.x; j < b.cols; j += REG_THREADS) v[j] = v[j] / vn;
    __syncthreads();
    part = 0.0f;
    for (int i = threadIdx.x; i < b.rows; i += REG_THREADS) {
        float s = 0.0f;
        for (int j = 0; j < b.cols; j++) s = __fadd_rn(s, __fmul_rn(w[(long long)i * b.ld + j], v[j]));
        u[i] = s;
        part = __fadd_rn(part, __fmul_rn(s, s));
    }
    const float un = fmaxf(sqrtf(reg_block_sum(part, red)), 1e-12f);
    part = 0.0f;
    for (int i = threadIdx.x; i < b.rows; i += REG_THREADS) {
        const float wv = u[i], ui = wv / un;
        u[i] = ui;
        part = __fadd_rn(part, __fmul_rn(ui, wv));
    }
    const float s = reg_block_sum(part, red);
    if (threadIdx.x == 0) sigma[blockIdx.x] = s;
}
EMU_KERNEL(spectral_power_iteration)

// grads[W_b[i, j]] += (coef·u_i)·v_j, coef = λσ_b (or λ/2 when linear).
extern "C" __global__ void spectral_grad_add(float* grads, const float* state, const float* sigma, const unsigned* table, float lambda, int linear) {
    const SpectralBlock b = spectral_block(table, blockIdx.x);
    const float coef = linear ? 0.5f * lambda : lambda * sigma[blockIdx.x];
    const float* u = state + b.state;
    const float* v = u + b.rows;
    const long long entries = (long long)b.rows * b.cols;
    for (long long e = threadIdx.x; e < entries; e += REG_THREADS) {
        const int i = (int)(e / b.cols), j = (int)(e % b.cols);
        const float cu = __fmul_rn(coef, u[i]);
        float* g = grads + b.off + (long long)i * b.ld + j;
        *g = __fadd_rn(*g, __fmul_rn(cu, v[j]));
    }
}
EMU_KERNEL(spectral_grad_add)

// One block per sequence of t rows: the example's channel mask in shared memory (channel j ≥ keep
// kept when fewer than mem channels ≥ keep have a lower key (hash, index)), then every entry.
// Flags: 1 = training masks (ids given), 2 = positions instead of channels.
extern "C" __global__ void example_tied_dropout(float* out, const float* x, const unsigned* ids, int n, int t, int c, int pos0, int keep,
                                                unsigned mem, int flags, unsigned seed_lo, unsigned seed_hi, float scale) {
    __shared__ unsigned hashes[ETD_MAX_C];
    __shared__ unsigned kept[ETD_MAX_C];
    const int r = blockIdx.x;
    if ((long long)r * t >= n) return;
    const bool training = flags & 1, positions = flags & 2;
    const unsigned id = training ? ids[r] : 0u;
    if (!positions && training) {
        for (int j = keep + threadIdx.x; j < c; j += ETD_THREADS) {
            unsigned ctr[4] = {(unsigned)j, id, PURPOSE_ETD, 0u};
            philox4x32(ctr, seed_lo, seed_hi);
            hashes[j] = ctr[0];
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < c; j += ETD_THREADS) {
        unsigned k = 1u;
        if (!positions && j >= keep) {
            k = 0u;
            if (training) {
                unsigned below = 0u;
                const unsigned h = hashes[j];
                for (int q = keep; q < c; q++) below += (hashes[q] < h || (hashes[q] == h && q < j)) ? 1u : 0u;
                k = below < mem ? 1u : 0u;
            }
        }
        kept[j] = k;
    }
    __syncthreads();
    const long long base = (long long)r * t * c;
    for (long long e = threadIdx.x; e < (long long)t * c; e += ETD_THREADS) {
        const int j = (int)(e % c);
        bool keep_it = kept[j] == 1u;
        if (positions) {
            const unsigned pos = (unsigned)(pos0 + e / c);
            keep_it = pos < (unsigned)keep;
            if (!keep_it && training) {
                unsigned ctr[4] = {pos, id, PURPOSE_ETD, 1u};
                philox4x32(ctr, seed_lo, seed_hi);
                keep_it = ctr[0] < mem;
            }
        }
        out[base + e] = keep_it ? __fmul_rn(x[base + e], scale) : 0.0f;
    }
}
EMU_KERNEL(example_tied_dropout)

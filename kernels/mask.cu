// Masked-weight ops of the unlearning methods (cpu twin: src/backend/cpu/mask.rs): the rank-k key by
// a histogram radix select, mask application, the straight-through score gradient's epilogue, SOU
// saliency and SGD with momentum. The masked matmul itself is matmul.cu's tiled GEMM, which applies
// the mask in its weight-tile load.

#define SELECT_THREADS 1024

// Entry j's value x[j] (·y[j] when y is given).
__device__ __forceinline__ float mask_entry_value(const float* x, const float* y, long long j) {
    return y != 0 ? x[j] * y[j] : x[j];
}

// One block: eight passes of 8-bit digits over the 64-bit key (order, index), most significant first.
// Each pass counts the digits of the entries whose key matches the prefix above it (integer atomics:
// the counts do not depend on order), then thread 0 walks the 256 bins to the one holding the rank.
// cut = the rank-k key; for k == n the sentinel (u32::MAX, u32::MAX).
extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
select_rank(unsigned* cut, const float* x, const float* y, int n, int k, int signed_key) {
    __shared__ unsigned hist[256];
    __shared__ unsigned sel[3];  // prefix (order, index) found so far, rank still sought within it
    const int t = threadIdx.x;
    if (k >= n) {
        if (t == 0) cut[0] = cut[1] = 0xffffffffu;
        return;
    }
    if (t == 0) {
        sel[0] = 0u;
        sel[1] = 0u;
        sel[2] = (unsigned)k;
    }
    for (int ps = 0; ps < 8; ps++) {
        for (int b = t; b < 256; b += blockDim.x) hist[b] = 0u;
        __syncthreads();
        const unsigned pre_o = sel[0], pre_i = sel[1];
        // The key bits above this pass's digit must equal the prefix.
        const unsigned mask_o = ps == 0 ? 0u : ps < 4 ? 0xffffffffu << (32 - 8 * ps) : 0xffffffffu;
        const unsigned mask_i = ps <= 4 ? 0u : 0xffffffffu << (64 - 8 * ps);
        for (int j = t; j < n; j += blockDim.x) {
            const unsigned o = select_order(mask_entry_value(x, y, j), signed_key);
            if ((o & mask_o) == (pre_o & mask_o) && ((unsigned)j & mask_i) == (pre_i & mask_i)) {
                const unsigned d = ps < 4 ? (o >> (24 - 8 * ps)) & 255u : ((unsigned)j >> (56 - 8 * ps)) & 255u;
                atomicAdd(&hist[d], 1u);
            }
        }
        __syncthreads();
        if (t == 0) {
            unsigned rem = sel[2], b = 0;
            while (b < 255 && rem >= hist[b]) rem -= hist[b++];
            sel[2] = rem;
            if (ps < 4) sel[0] = pre_o | (b << (24 - 8 * ps));
            else sel[1] = pre_i | (b << (56 - 8 * ps));
        }
        __syncthreads();
    }
    if (t == 0) {
        cut[0] = sel[0];
        cut[1] = sel[1];
    }
}
EMU_KERNEL(select_rank)

// w[j] = 0 where key(j) < cut (below) or ≥ cut. w may be x or y itself: each thread reads its entry
// before writing it.
extern "C" __global__ void mask_apply(float* w, const float* x, const float* y, const unsigned* cut, int n, int signed_key,
                                      int below) {
    const long long j = global_index();
    if (j >= n) return;
    const bool is_below = key_below(select_order(mask_entry_value(x, y, j), signed_key), (unsigned)j, cut[0], cut[1]);
    if (is_below == (below != 0)) w[j] = 0.0f;
}
EMU_KERNEL(mask_apply)

// dscores[i] += sign(scores[i])·W[i]·Σ_z partials[z·stride + i] (z in order; sign(0) = 0): the
// straight-through epilogue of the dweight GEMM inpᵀ·dout.
extern "C" __global__ void ste_accumulate(float* dscores, const float* partials, const float* scores, const float* weight,
                                          int splits, int count, long long stride) {
    const long long i = global_index();
    if (i >= count) return;
    float g = 0.0f;
    for (int z = 0; z < splits; z++) g += partials[z * stride + i];
    const float s = scores[i];
    const float sg = s > 0.0f ? 1.0f : s < 0.0f ? -1.0f : 0.0f;
    dscores[i] += sg * weight[i] * g;
}
EMU_KERNEL(ste_accumulate)

// One thread per block of `block` entries (the last may be shorter): ‖g_b‖² in entry order, then
// out[j] = w_j² / (2·[F⁻¹]_jj), [F⁻¹]_jj = (1/λ)·(1 − g_j²/(λ + ‖g_b‖²)).
extern "C" __global__ void sou_scores(float* out, const float* w, const float* g, int n, int block, float lambda) {
    const long long j0 = global_index() * block;
    if (j0 >= n) return;
    const long long j1 = j0 + block < n ? j0 + block : n;
    float norm = 0.0f;
    for (long long j = j0; j < j1; j++) norm += g[j] * g[j];
    const float denom = lambda + norm, inv_lambda = 1.0f / lambda;
    for (long long j = j0; j < j1; j++) {
        const float finv = inv_lambda * (1.0f - g[j] * g[j] / denom);
        out[j] = w[j] * w[j] / (2.0f * finv);
    }
}
EMU_KERNEL(sou_scores)

// PyTorch SGD with momentum (dampening 0): d = g + wd·p; buf = d (first step) or momentum·buf + d; p −= lr·buf.
extern "C" __global__ void sgd_momentum(float* params, const float* grads, float* buf, long long n, float lr, float momentum,
                                        float weight_decay, int first) {
    const long long i = global_index();
    if (i >= n) return;
    const float p = params[i];
    const float d = grads[i] + weight_decay * p;
    const float b = first ? d : momentum * buf[i] + d;
    buf[i] = b;
    params[i] = p - lr * b;
}
EMU_KERNEL(sgd_momentum)

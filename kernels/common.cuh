// Shared by every kernel file. NVRTC has no include path, so the Rust side prepends this file to each
// kernel source; the emulator build includes it once after cuda_emu.h. No libc headers anywhere.
#ifndef MEMSIEVE_COMMON_CUH
#define MEMSIEVE_COMMON_CUH

#ifndef MEMSIEVE_EMU
// Under NVRTC: the emulator's registration is a no-op and dynamic shared memory is the extern array.
#define EMU_KERNEL(name)
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#define FULL_MASK 0xffffffffu
#define NEG_INF __uint_as_float(0xff800000u)
// Matches memsieve::backend::IGNORE_TARGET.
#define IGNORE_TARGET 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Block-wide reductions over a 1-D block whose size is a multiple of 32; every thread gets the result.
// `scratch` is a __shared__ float[32] of the caller; the leading barrier lets callers reuse it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? scratch[lane] : 0.0f);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_max(lane < warps ? scratch[lane] : NEG_INF);
}

// Row softmax across the block: s[0..=last] holds scores and mx this thread's partial max of them.
// Leaves the probabilities in s[0..=last] and writes them to row[0..width), 0 past `last` (the
// causal convention every attention kernel stores).
__device__ __forceinline__ void block_softmax_store(float* s, int last, int width, float mx, float* red, float* row) {
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        float e = expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum(sum, red);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        float p = j <= last ? s[j] * inv : 0.0f;
        if (j <= last) s[j] = p;
        row[j] = p;
    }
}

// Global index of this thread in a 1-D launch, 64-bit so B·T·V-sized tensors cannot overflow.
__device__ __forceinline__ long long global_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// Selection keys of the masked-weight ops (backend::SelectKey): entry j's key is (order(v), j),
// compared lexicographically. Abs: the bits of |v|; signed: the total order of f32 as u32.
__device__ __forceinline__ unsigned select_order(float v, int signed_order) {
    unsigned b = __float_as_uint(v);
    if (!signed_order) return b & 0x7fffffffu;
    return (b >> 31) == 0 ? b ^ 0x80000000u : ~b;
}

// Whether key (order, j) is below the cut (cut_order, cut_index).
__device__ __forceinline__ bool key_below(unsigned order, unsigned j, unsigned cut_order, unsigned cut_index) {
    return order < cut_order || (order == cut_order && j < cut_index);
}

// Philox4x32-10 (src/rng.rs): 10 rounds over counter c with key (k0, k1).
__device__ __forceinline__ void philox4x32(unsigned c[4], unsigned k0, unsigned k1) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned long long p0 = (unsigned long long)0xD2511F53u * c[0];
        unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c[2];
        unsigned x0 = (unsigned)(p1 >> 32) ^ c[1] ^ k0, x2 = (unsigned)(p0 >> 32) ^ c[3] ^ k1;
        c[0] = x0;
        c[1] = (unsigned)p1;
        c[2] = x2;
        c[3] = (unsigned)p0;
    }
}

#endif

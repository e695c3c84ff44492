// Self-test kernels for the CUDA emulator only (never compiled for a GPU): barriers inside loops,
// early-exiting threads, warp shuffles and votes, and a divergent barrier the emulator must report.

// Every round, each thread publishes its value and reads its mirror's, plus one.
extern "C" __global__ void selftest_reverse_rounds(float* out, const float* in, int rounds) {
    __shared__ float tile[1024];
    const int n = blockDim.x, tid = threadIdx.x;
    float v = in[blockIdx.x * n + tid];
    for (int r = 0; r < rounds; r++) {
        tile[tid] = v;
        __syncthreads();
        v = tile[n - 1 - tid] + 1.0f;
        __syncthreads();
    }
    out[blockIdx.x * n + tid] = v;
}
EMU_KERNEL(selftest_reverse_rounds)

// Threads beyond `live` leave at once; the rest keep meeting at barriers (exited threads count as arrived).
extern "C" __global__ void selftest_early_exit(int* out, int live) {
    __shared__ int count;
    if ((int)threadIdx.x >= live) return;
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    for (int r = 0; r < 3; r++) {
        if (threadIdx.x == 0) count += 1;
        __syncthreads();
    }
    out[threadIdx.x] = count;
}
EMU_KERNEL(selftest_early_exit)

// Per thread: 6 results of warp operations, repeated `reps` times in a loop.
extern "C" __global__ void selftest_warp_ops(int* out, int reps) {
    const int lane = threadIdx.x & 31;
    int sum = 0, down = 0, bcast = 0, up = 0;
    unsigned ballot = 0;
    int all = 0;
    for (int r = 0; r < reps; r++) {
        int v = lane;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        sum = v;
        down = __shfl_down_sync(0xffffffffu, lane * 10, 3);
        up = __shfl_up_sync(0xffffffffu, lane * 10, 2);
        bcast = __shfl_sync(0xffffffffu, lane + 100 * (int)(threadIdx.x >> 5), 5);
        ballot = __ballot_sync(0xffffffffu, lane & 1);
        all = __all_sync(0xffffffffu, lane < 32) + 2 * __any_sync(0xffffffffu, lane == 31);
    }
    int* o = out + threadIdx.x * 6;
    o[0] = sum;
    o[1] = down;
    o[2] = up;
    o[3] = bcast;
    o[4] = (int)ballot;
    o[5] = all;
}
EMU_KERNEL(selftest_warp_ops)

// Half a warp at __syncthreads, the other half at a shuffle: a hang on a GPU, an error here.
extern "C" __global__ void selftest_divergent_barrier(float* out) {
    if ((threadIdx.x & 31) < 16) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    }
}
EMU_KERNEL(selftest_divergent_barrier)

// Lane 0 leaves, then the rest shuffle with the full mask: undefined on a GPU, an error here.
extern "C" __global__ void selftest_shuffle_after_exit(float* out) {
    if (threadIdx.x == 0) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
EMU_KERNEL(selftest_shuffle_after_exit)

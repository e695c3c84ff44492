// LayerNorm over the last dimension, biased variance (cpu twin: src/backend/cpu/layernorm.rs).

// One warp per row: two-pass mean/variance with warp-shuffle sums; caches mean and 1/std.
extern "C" __global__ void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                             const float* weight, const float* bias, int n, int c, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;  // whole warps leave together, so the shuffles below stay full-warp
    const float* x = inp + (long long)row * c;
    float s = 0.0f;
    for (int i = lane; i < c; i += 32) s += x[i];
    float mu = warp_sum(s) / c;
    float v = 0.0f;
    for (int i = lane; i < c; i += 32) {
        float d = x[i] - mu;
        v += d * d;
    }
    float rs = 1.0f / sqrtf(warp_sum(v) / c + eps);
    float* o = out + (long long)row * c;
    for (int i = lane; i < c; i += 32) o[i] = (x[i] - mu) * rs * weight[i] + bias[i];
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}
EMU_KERNEL(layernorm_forward)

// dinp += (dnorm − mean(dnorm) − norm·mean(dnorm·norm))·rstd with dnorm = weight·dout; one warp per row.
extern "C" __global__ void layernorm_backward_input(float* dinp, const float* dout, const float* inp,
                                                    const float* weight, const float* mean, const float* rstd,
                                                    int n, int c) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float* x = inp + (long long)row * c;
    const float* dy = dout + (long long)row * c;
    float mu = mean[row], rs = rstd[row];
    float dm = 0.0f, dnn = 0.0f;
    for (int i = lane; i < c; i += 32) {
        float dn = weight[i] * dy[i];
        dm += dn;
        dnn += dn * (x[i] - mu) * rs;
    }
    dm = warp_sum(dm) / c;
    dnn = warp_sum(dnn) / c;
    float* dx = dinp + (long long)row * c;
    for (int i = lane; i < c; i += 32) {
        float norm = (x[i] - mu) * rs;
        dx[i] += (weight[i] * dy[i] - dm - norm * dnn) * rs;
    }
}
EMU_KERNEL(layernorm_backward_input)

// dweight[i] += Σ_rows norm·dout, dbias[i] += Σ_rows dout. Block = 32 columns × 8 row lanes: each warp
// reads 32 consecutive columns of a row (coalesced); the 8 partial sums combine in a fixed order, so
// the result is deterministic without atomics. blockIdx.y takes rows [y·rows_split, …): with several
// row splits each writes partials to out_w/out_b + y·out_stride (accumulate = 0), which the host sums
// in order (split_reduce_accumulate); with one it accumulates into dweight/dbias directly.
extern "C" __global__ void layernorm_backward_params(float* out_w, float* out_b, const float* dout,
                                                     const float* inp, const float* mean, const float* rstd,
                                                     int n, int c, int rows_split, int out_stride, int accumulate) {
    __shared__ float part_w[8][33];
    __shared__ float part_b[8][33];
    int col = blockIdx.x * 32 + (threadIdx.x & 31), lane_row = threadIdx.x >> 5;
    const int row_end = min(n, (int)(blockIdx.y + 1) * rows_split);
    float gw = 0.0f, gb = 0.0f;
    if (col < c)
        for (int row = blockIdx.y * rows_split + lane_row; row < row_end; row += 8) {
            long long k = (long long)row * c + col;
            float dy = dout[k];
            gw += (inp[k] - mean[row]) * rstd[row] * dy;
            gb += dy;
        }
    part_w[lane_row][threadIdx.x & 31] = gw;
    part_b[lane_row][threadIdx.x & 31] = gb;
    __syncthreads();
    if (lane_row == 0 && col < c) {
        float sw = 0.0f, sb = 0.0f;
        for (int r = 0; r < 8; r++) {
            sw += part_w[r][threadIdx.x];
            sb += part_b[r][threadIdx.x];
        }
        float* ow = out_w + (long long)blockIdx.y * out_stride;
        float* ob = out_b + (long long)blockIdx.y * out_stride;
        ow[col] = accumulate ? ow[col] + sw : sw;
        ob[col] = accumulate ? ob[col] + sb : sb;
    }
}
EMU_KERNEL(layernorm_backward_params)

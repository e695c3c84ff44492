// out = inp·W (+ bias) and its backward (cpu twin: src/backend/cpu/matmul.rs), all through one tiled
// GEMM: C[M, N] (= or +=) A[M, K]·B[K, N] (+ bias[N]), A and B addressed by (row, column) strides so
// the same kernel reads W in either layout, Wᵀ for d(inp), and inpᵀ / doutᵀ for d(W).
//
// d(W) has a long reduction (K = B·T rows) and a small output, so it is split along K: blockIdx.z
// takes rows [z·k_split, (z+1)·k_split) and writes its own partial product at out + z·M·N; the host
// then sums the partials in z order (split_reduce_accumulate). The split depends on the shape only,
// so results are deterministic and the same on every GPU.
//
// With mask_scores set, B is a weight W under a Subnet mask (MaskedMatmulForward/Backward): the tile
// load zeroes entry rel = k·b_rs + j·b_cs of W (its flat index in either orientation) where the Abs
// key (|scores[rel]|, rel) is below mask_cut — the mask is computed on the fly, no W ⊙ m buffer.

#define MM_BM 64
#define MM_BN 64
#define MM_BK 16
#define MM_THREADS 256
// Each of the 16×16 threads owns a 4×4 register tile, rows ty + 16·i and columns tx + 16·j, so
// neighbouring threads read neighbouring shared-memory words and write neighbouring output columns.
#define MM_TM 4
#define MM_TN 4

extern "C" __global__ void __launch_bounds__(MM_THREADS)
matmul_tiled(float* out, const float* a, const float* b, const float* bias, int m, int n, int k,
             int a_rs, int a_cs, int b_rs, int b_cs, int accumulate, int k_split, const float* mask_scores,
             const unsigned* mask_cut) {
    __shared__ float as[MM_BK][MM_BM + 4];
    __shared__ float bs[MM_BK][MM_BN + 4];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    float acc[MM_TM][MM_TN];
    for (int i = 0; i < MM_TM; i++)
        for (int j = 0; j < MM_TN; j++) acc[i][j] = 0.0f;

    const int k_begin = blockIdx.z * k_split, k_end = min(k, k_begin + k_split);
    out += (long long)blockIdx.z * m * n;
    for (int k0 = k_begin; k0 < k_end; k0 += MM_BK) {
        // Tile loads walk the operand's contiguous dimension with consecutive threads (coalesced),
        // whichever dimension that is; out-of-range elements are zero.
        for (int e = tid; e < MM_BM * MM_BK; e += MM_THREADS) {
            int mm, kk;
            if (a_cs == 1) { kk = e % MM_BK; mm = e / MM_BK; } else { mm = e % MM_BM; kk = e / MM_BM; }
            int gm = m0 + mm, gk = k0 + kk;
            as[kk][mm] = (gm < m && gk < k_end) ? a[(long long)gm * a_rs + (long long)gk * a_cs] : 0.0f;
        }
        for (int e = tid; e < MM_BN * MM_BK; e += MM_THREADS) {
            int nn, kk;
            if (b_cs == 1) { nn = e % MM_BN; kk = e / MM_BN; } else { kk = e % MM_BK; nn = e / MM_BK; }
            int gn = n0 + nn, gk = k0 + kk;
            float bv = 0.0f;
            if (gn < n && gk < k_end) {
                const long long rel = (long long)gk * b_rs + (long long)gn * b_cs;
                bv = b[rel];
                // The cut is read where it is used (cached), not kept in registers across the k loop.
                if (mask_scores != 0 && key_below(select_order(mask_scores[rel], 0), (unsigned)rel, mask_cut[0], mask_cut[1]))
                    bv = 0.0f;
            }
            bs[kk][nn] = bv;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < MM_BK; kk++) {
            float ra[MM_TM], rb[MM_TN];
            for (int i = 0; i < MM_TM; i++) ra[i] = as[kk][ty + 16 * i];
            for (int j = 0; j < MM_TN; j++) rb[j] = bs[kk][tx + 16 * j];
            for (int i = 0; i < MM_TM; i++)
                for (int j = 0; j < MM_TN; j++) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }
    // Fused epilogue: bias and accumulation. Every output has one owner thread summing k in order, so
    // d(W) is deterministic.
    for (int i = 0; i < MM_TM; i++) {
        int gm = m0 + ty + 16 * i;
        if (gm >= m) continue;
        for (int j = 0; j < MM_TN; j++) {
            int gn = n0 + tx + 16 * j;
            if (gn >= n) continue;
            float v = acc[i][j] + (bias != 0 ? bias[gn] : 0.0f);
            long long o = (long long)gm * n + gn;
            out[o] = accumulate ? out[o] + v : v;
        }
    }
}
EMU_KERNEL(matmul_tiled)

// dbias[j] += Σ_rows dout[row, j]: 32 columns × 8 row lanes per block, fixed-order combine (no atomics).
// blockIdx.y takes rows [y·rows_split, …); with several row splits each writes its partial sums to
// out + y·out_stride (accumulate = 0) for split_reduce_accumulate, else it accumulates into dbias.
extern "C" __global__ void matmul_backward_bias(float* out, const float* dout, int n, int oc, int rows_split,
                                                int out_stride, int accumulate) {
    __shared__ float part[8][33];
    int col = blockIdx.x * 32 + (threadIdx.x & 31), lane_row = threadIdx.x >> 5;
    const int row_end = min(n, (int)(blockIdx.y + 1) * rows_split);
    float s = 0.0f;
    if (col < oc)
        for (int row = blockIdx.y * rows_split + lane_row; row < row_end; row += 8) s += dout[(long long)row * oc + col];
    part[lane_row][threadIdx.x & 31] = s;
    __syncthreads();
    if (lane_row == 0 && col < oc) {
        float total = 0.0f;
        for (int r = 0; r < 8; r++) total += part[r][threadIdx.x];
        float* o = out + (long long)blockIdx.y * out_stride;
        o[col] = accumulate ? o[col] + total : total;
    }
}
EMU_KERNEL(matmul_backward_bias)

// dst[i] += Σ_s partials[s·stride + i], s in order: the second pass of every split reduction.
extern "C" __global__ void split_reduce_accumulate(float* dst, const float* partials, int splits, int count,
                                                  long long stride) {
    long long i = global_index();
    if (i >= count) return;
    float s = 0.0f;
    for (int z = 0; z < splits; z++) s += partials[z * stride + i];
    dst[i] += s;
}
EMU_KERNEL(split_reduce_accumulate)

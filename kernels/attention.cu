// Causal multi-head attention over qkv [b, t, 3c] (cpu twin: src/backend/cpu/attention.rs).
// Forward and backward run one block per (query or key row, batch·head); the scores of that row live
// in dynamic shared memory, so nothing of size t² is written except the probabilities `att` the
// backward pass needs and its d(scores) scratch.

// Scores against key (or value) rows go through shared-memory tiles of blockDim rows: the block loads
// a tile with consecutive threads on consecutive channels (coalesced), then each thread dots one row
// of it with the query. Rows are padded to hs + 1 words so those per-thread reads hit distinct banks.

// dots[j] = scale · Σ_d vec[d]·rows[j, d] for j in 0..count, rows of the head at `src` (row stride
// `stride`). `tile` holds blockDim·(hs + 1) floats. Every thread of the block must call this.
__device__ void dot_rows_tiled(float* dots, const float* vec, const float* src, long long stride, int count, int hs,
                               float scale, float* tile) {
    const int per = blockDim.x, w = hs + 1;
    for (int j0 = 0; j0 < count; j0 += per) {
        const int rows = min(per, count - j0);
        __syncthreads();  // the previous tile has been consumed
        for (int e = threadIdx.x; e < rows * hs; e += blockDim.x) {
            int r = e / hs, d = e % hs;
            tile[r * w + d] = src[(long long)(j0 + r) * stride + d];
        }
        __syncthreads();
        if ((int)threadIdx.x < rows) {
            const float* row = tile + threadIdx.x * w;
            float dot = 0.0f;
            for (int d = 0; d < hs; d++) dot += vec[d] * row[d];
            dots[j0 + threadIdx.x] = dot * scale;
        }
    }
    __syncthreads();
}

// One block per (query row tq, bh): scores for keys 0..tq, softmax, y = P·V.
// Dynamic shared memory: hs + t + blockDim·(hs + 1) floats.
extern "C" __global__ void attention_forward(float* out, float* att, const float* qkv, int t, int c, int nh) {
    DYNAMIC_SHARED(float, smem);
    __shared__ float red[32];
    const int hs = c / nh, tq = blockIdx.x, bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    float* q = smem;
    float* s = smem + hs;
    float* tile = s + t;
    const float* base = qkv + (long long)bi * t * 3 * c;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) q[d] = base[(long long)tq * 3 * c + h * hs + d];
    dot_rows_tiled(s, q, base + c + h * hs, 3LL * c, tq + 1, hs, 1.0f / sqrtf((float)hs), tile);
    float mx = NEG_INF;
    for (int j = threadIdx.x; j <= tq; j += blockDim.x) mx = fmaxf(mx, s[j]);
    block_softmax_store(s, tq, t, mx, red, att + ((long long)bh * t + tq) * t);
    __syncthreads();
    // Threads over the head's channels: each step reads one contiguous v row (coalesced).
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float y = 0.0f;
        for (int j = 0; j <= tq; j++) y += s[j] * base[(long long)j * 3 * c + 2 * c + h * hs + d];
        out[((long long)bi * t + tq) * c + h * hs + d] = y;
    }
}
EMU_KERNEL(attention_forward)

// Backward, pass 1 (one block per query row tq, bh): dP = dY·Vᵀ, dS = P ⊙ (dP − Σ P⊙dP)/√hs into
// `dscores` [b·nh, t, t], and dQ = dS·K. Dynamic shared memory: hs + t + blockDim·(hs + 1) floats.
extern "C" __global__ void attention_backward_query(float* dqkv, float* dscores, const float* dout, const float* qkv,
                                                    const float* att, int t, int c, int nh) {
    DYNAMIC_SHARED(float, smem);
    __shared__ float red[32];
    const int hs = c / nh, tq = blockIdx.x, bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    float* dy = smem;
    float* s = smem + hs;
    float* tile = s + t;
    const float* base = qkv + (long long)bi * t * 3 * c;
    const float* prow = att + ((long long)bh * t + tq) * t;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) dy[d] = dout[((long long)bi * t + tq) * c + h * hs + d];
    dot_rows_tiled(s, dy, base + 2 * c + h * hs, 3LL * c, tq + 1, hs, 1.0f, tile);
    float dot = 0.0f;
    for (int j = threadIdx.x; j <= tq; j += blockDim.x) dot += prow[j] * s[j];
    dot = block_sum(dot, red);
    const float scale = 1.0f / sqrtf((float)hs);
    float* dsrow = dscores + ((long long)bh * t + tq) * t;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        float ds = j <= tq ? prow[j] * (s[j] - dot) * scale : 0.0f;
        if (j <= tq) s[j] = ds;
        dsrow[j] = ds;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float g = 0.0f;
        for (int j = 0; j <= tq; j++) g += s[j] * base[(long long)j * 3 * c + c + h * hs + d];
        dqkv[((long long)bi * t + tq) * 3 * c + h * hs + d] = g;
    }
}
EMU_KERNEL(attention_backward_query)

// Backward, pass 2 (one block per key row tk, bh): dK = dSᵀ·Q and dV = Pᵀ·dY over queries tk..t−1,
// the two columns staged in shared memory. Dynamic shared memory: 2t floats.
extern "C" __global__ void attention_backward_key_value(float* dqkv, const float* dscores, const float* dout,
                                                        const float* qkv, const float* att, int t, int c, int nh) {
    DYNAMIC_SHARED(float, smem);
    const int hs = c / nh, tk = blockIdx.x, bh = blockIdx.y, bi = bh / nh, h = bh % nh;
    float* ds_col = smem;
    float* p_col = smem + t;
    for (int j = tk + threadIdx.x; j < t; j += blockDim.x) {
        ds_col[j] = dscores[((long long)bh * t + j) * t + tk];
        p_col[j] = att[((long long)bh * t + j) * t + tk];
    }
    __syncthreads();
    const float* base = qkv + (long long)bi * t * 3 * c;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float gk = 0.0f, gv = 0.0f;
        for (int j = tk; j < t; j++) {
            gk += ds_col[j] * base[(long long)j * 3 * c + h * hs + d];
            gv += p_col[j] * dout[((long long)bi * t + j) * c + h * hs + d];
        }
        float* drow = dqkv + ((long long)bi * t + tk) * 3 * c;
        drow[c + h * hs + d] = gk;
        drow[2 * c + h * hs + d] = gv;
    }
}
EMU_KERNEL(attention_backward_key_value)

// Store k and v of qkv [b, t, 3c] at positions pos0.. of the cache, laid out per (row, head) as
// kᵀ [hs, t_max] then v [t_max, hs]. One thread per (row, channel).
extern "C" __global__ void kv_cache_write(float* cache, const float* qkv, int b, int t, int pos0, int t_max, int c,
                                          int nh) {
    long long idx = global_index();
    if (idx >= (long long)b * t * c) return;
    const int hs = c / nh;
    int row = (int)(idx / c), ch = (int)(idx % c);
    int bi = row / t, pos = pos0 + row % t, h = ch / hs, d = ch % hs;
    float* blk = cache + ((long long)bi * nh + h) * 2 * hs * t_max;
    const float* src = qkv + (long long)row * 3 * c;
    blk[(long long)d * t_max + pos] = src[c + ch];
    blk[(long long)hs * t_max + (long long)pos * hs + d] = src[2 * c + ch];
}
EMU_KERNEL(kv_cache_write)

// One decode step, one block per (row, head): scores over cached positions 0..pos read kᵀ rows
// (consecutive threads, consecutive positions), then y over v rows. Dynamic shared memory: hs + pos + 1.
extern "C" __global__ void attention_decode(float* out, const float* qkv, const float* cache, int pos, int t_max,
                                            int c, int nh) {
    DYNAMIC_SHARED(float, smem);
    __shared__ float red[32];
    const int hs = c / nh, bh = blockIdx.x, bi = bh / nh, h = bh % nh, len = pos + 1;
    float* q = smem;
    float* s = smem + hs;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int d = threadIdx.x; d < hs; d += blockDim.x) q[d] = qkv[(long long)bi * 3 * c + h * hs + d] * scale;
    __syncthreads();
    const float* kt = cache + (long long)bh * 2 * hs * t_max;
    const float* v = kt + (long long)hs * t_max;
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) dot += q[d] * kt[(long long)d * t_max + j];
        s[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum(sum, red);
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float y = 0.0f;
        for (int j = 0; j < len; j++) y += s[j] * v[(long long)j * hs + d];
        out[(long long)bi * c + h * hs + d] = y * inv;
    }
}
EMU_KERNEL(attention_decode)

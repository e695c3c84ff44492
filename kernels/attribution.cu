// Attribution ops (cpu twin: src/backend/cpu/attribution.rs): rows gathered from a full pass and
// scaled onto the IG path, causal attention of one query row against a context (forward, backward),
// the gradient of a target probability, and the integrated-gradients reduction over path points.
// Scalars the cpu derives (1/√hs, 1/m) come from the host, so every backend rounds them alike.

// out[r, :] = scale[r]·src[index[r], :] (a plain copy when scale is null); one thread per element.
extern "C" __global__ void gather_rows(float* out, const float* src, const unsigned* index, const float* scale, int n,
                                       int w) {
    long long i = global_index();
    if (i >= (long long)n * w) return;
    const int r = (int)(i / w);
    const float x = src[(long long)index[r] * w + i % w];
    out[i] = scale ? scale[r] * x : x;
}
EMU_KERNEL(gather_rows)

// ---- one query row against a context: a block per (row, head), the row's scores in dynamic shared
// memory (t_ctx floats) ----

// The block's (row, head) and where its context lies: row r with index s·t_ctx + t attends to the
// context rows s·t_ctx .. s·t_ctx + t − 1 and to its own qkv row at position t.
struct QueryRow {
    long long rh;  // the block: r·nh + h
    int r, col, hs, t, c;  // col: the head's first channel
    const float* own;
    const float* seq;
    // The qkv row of position u ≤ t.
    __device__ const float* at(int u) const { return u == t ? own : seq + (long long)u * 3 * c; }
};

__device__ __forceinline__ QueryRow query_row(const float* qkv, const float* ctx, const unsigned* index, int t_ctx,
                                              int c, int nh) {
    QueryRow x;
    x.rh = blockIdx.x;
    x.r = (int)(x.rh / nh);
    x.hs = c / nh;
    x.col = (int)(x.rh % nh) * x.hs;
    x.c = c;
    const int i = (int)index[x.r];
    x.t = i % t_ctx;
    x.own = qkv + (long long)x.r * 3 * c;
    x.seq = ctx + (long long)(i - x.t) * 3 * c;
    return x;
}

extern "C" __global__ void attention_row_forward(float* out, float* att, const float* qkv, const float* ctx,
                                                 const unsigned* index, int t_ctx, int c, int nh, float scale) {
    DYNAMIC_SHARED(float, s);
    __shared__ float red[32];
    const QueryRow x = query_row(qkv, ctx, index, t_ctx, c, nh);
    const int t = x.t, hs = x.hs;
    const float* q = x.own + x.col;
    float mx = NEG_INF;
    for (int u = threadIdx.x; u <= t; u += blockDim.x) {
        const float* k = x.at(u) + c + x.col;
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) dot = fmaf(q[d], k[d], dot);
        dot *= scale;
        s[u] = dot;
        mx = fmaxf(mx, dot);
    }
    block_softmax_store(s, t, t_ctx, mx, red, att + x.rh * t_ctx);
    __syncthreads();
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float y = 0.0f;
        for (int u = 0; u <= t; u++) y = fmaf(s[u], x.at(u)[2 * c + x.col + d], y);
        out[(long long)x.r * c + x.col + d] = y;
    }
}
EMU_KERNEL(attention_row_forward)

// dqkv row r, head h (overwritten): dq = Σ_u ds_u·k_u, dk_t = ds_t·q, dv_t = p_t·dy, with
// ds_u = p_u·(dp_u − Σ p·dp)/√hs and dp_u = dy·v_u; the context itself gets no gradient.
extern "C" __global__ void attention_row_backward(float* dqkv, const float* dout, const float* qkv, const float* ctx,
                                                  const float* att, const unsigned* index, int t_ctx, int c, int nh,
                                                  float scale) {
    DYNAMIC_SHARED(float, s);
    __shared__ float red[32];
    const QueryRow x = query_row(qkv, ctx, index, t_ctx, c, nh);
    const int t = x.t, hs = x.hs;
    const float* prow = att + x.rh * t_ctx;
    const float* dy = dout + (long long)x.r * c + x.col;
    float pdp = 0.0f;
    for (int u = threadIdx.x; u <= t; u += blockDim.x) {
        const float* v = x.at(u) + 2 * c + x.col;
        float dp = 0.0f;
        for (int d = 0; d < hs; d++) dp = fmaf(dy[d], v[d], dp);
        s[u] = dp;
        pdp += prow[u] * dp;
    }
    pdp = block_sum(pdp, red);
    for (int u = threadIdx.x; u <= t; u += blockDim.x) s[u] = prow[u] * (s[u] - pdp) * scale;
    __syncthreads();
    float* drow = dqkv + (long long)x.r * 3 * c + x.col;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float dq = 0.0f;
        for (int u = 0; u <= t; u++) dq = fmaf(s[u], x.at(u)[c + x.col + d], dq);
        drow[d] = dq;
        drow[c + d] = s[t] * x.own[x.col + d];
        drow[2 * c + d] = prow[t] * dy[d];
    }
}
EMU_KERNEL(attention_row_backward)

// dlogits = (onehot − p)·p_target, or (onehot − p) with log_prob; 0 on ignored rows. One block per
// row; may run in place on probs (hence no __restrict__ and the barrier below).
extern "C" __global__ void target_prob_backward(float* dlogits, const float* probs, const unsigned* targets, int v,
                                                int log_prob) {
    const long long row = blockIdx.x;
    const unsigned target = targets[row];
    float* d = dlogits + row * v;
    const float* p = probs + row * v;
    if (target == IGNORE_TARGET) {  // uniform over the block
        for (int j = threadIdx.x; j < v; j += blockDim.x) d[j] = 0.0f;
        return;
    }
    const float weight = log_prob ? 1.0f : p[target];
    // In place, every thread reads p_target before the thread that owns it overwrites it.
    __syncthreads();
    for (int j = threadIdx.x; j < v; j += blockDim.x) d[j] = (((unsigned)j == target ? 1.0f : 0.0f) - p[j]) * weight;
}
EMU_KERNEL(target_prob_backward)

// ig[g, k] = src[index[g·m], k]·(inv_m·Σ_j grads[g·m + j, k]), summed in j order; one thread per (g, k).
extern "C" __global__ void ig_reduce(float* ig, const float* grads, const float* src, const unsigned* index, int groups,
                                     int m, int w, float inv_m) {
    long long i = global_index();
    if (i >= (long long)groups * w) return;
    const long long g = i / w, k = i % w;
    float s = 0.0f;
    for (int j = 0; j < m; j++) s += grads[(g * m + j) * w + k];
    ig[i] = s * (src[(long long)index[g * m] * w + k] * inv_m);
}
EMU_KERNEL(ig_reduce)

// Attention-distribution statistics (cpu twin: src/backend/cpu/attnstats.rs; depn-attention.md B3):
// per (row, head, query t) the causal row p = softmax(q_t·k_s/√hs, s ≤ t) as entropy H, H/ln(t+1),
// max p and top-k mass. One block of STATS_THREADS per query row walks the keys in blocks of
// STATS_THREADS, one key per thread: each thread keeps an online max m, Z = Σe^{s−m},
// A = Σe^{s−m}(s−m) (rescaled when m grows) and its own sorted top-k scores; a tree in shared memory
// merges the threads' states and lists. No scores are stored beyond the threads' k candidates.

#define STATS_THREADS 64
#define STATS_MAX_K 16  // backend::MAX_STATS_TOP_K
#define STATS_NO_KEY 0xffffffffu

// Candidate (v, i) ranks before (w, j): a larger score, or on a tie the lower key.
__device__ __forceinline__ bool ranks_before(float v, unsigned i, float w, unsigned j) {
    return v > w || (v == w && i < j);
}

extern "C" __global__ void attention_stats(float* out, const float* qkv, int t, int c, int nh, int t0, int t1,
                                           int top_k, float scale) {
    __shared__ float cand_v[STATS_THREADS * STATS_MAX_K];
    __shared__ unsigned cand_i[STATS_THREADS * STATS_MAX_K];
    __shared__ float st_m[STATS_THREADS], st_z[STATS_THREADS], st_a[STATS_THREADS];
    const int nq = t1 - t0;
    const long long g = blockIdx.x;  // the query row: ((b·nh + h)·nq + t − t0)
    const int tq = t0 + (int)(g % nq);
    const int h = (int)(g / nq % nh);
    const long long bi = g / nq / nh;
    const int hs = c / nh, k = top_k, lane = threadIdx.x;
    const float* seq = qkv + bi * t * 3 * c;
    const float* q = seq + (long long)tq * 3 * c + h * hs;

    float m = NEG_INF, z = 0.0f, a = 0.0f;
    float tv[STATS_MAX_K];
    unsigned ti[STATS_MAX_K];
    for (int j = 0; j < STATS_MAX_K; j++) {
        tv[j] = NEG_INF;
        ti[j] = STATS_NO_KEY;
    }
    // Block j holds keys j·STATS_THREADS …; this thread takes key j·STATS_THREADS + lane of each.
    for (int s = lane; s <= tq; s += STATS_THREADS) {
        const float* key = seq + (long long)s * 3 * c + c + h * hs;
        float x = 0.0f;
        for (int d = 0; d < hs; d++) x = fmaf(q[d], key[d], x);
        x *= scale;
        if (x > m) {
            if (z > 0.0f) {
                const float r = expf(m - x);
                a = r * (a + (m - x) * z);
                z *= r;
            }
            m = x;
        }
        const float dx = x - m, e = expf(dx);
        z += e;
        a = fmaf(e, dx, a);
        // Keys arrive in increasing order, so a tie with the list's last entry keeps the earlier key.
        if (x > tv[k - 1]) {
            int j = k - 1;
            for (; j > 0 && tv[j - 1] < x; j--) {
                tv[j] = tv[j - 1];
                ti[j] = ti[j - 1];
            }
            tv[j] = x;
            ti[j] = (unsigned)s;
        }
    }
    st_m[lane] = m;
    st_z[lane] = z;
    st_a[lane] = a;
    for (int j = 0; j < STATS_MAX_K; j++) {
        cand_v[lane * STATS_MAX_K + j] = tv[j];
        cand_i[lane * STATS_MAX_K + j] = ti[j];
    }
    __syncthreads();
    // Tree merge: thread lane < half folds thread lane + half's state and list into its own.
    for (int half = STATS_THREADS / 2; half > 0; half >>= 1) {
        if (lane < half) {
            const int o = lane + half;
            const float z2 = st_z[o];
            if (z2 > 0.0f) {
                const float z1 = st_z[lane], m2 = st_m[o];
                if (z1 > 0.0f) {
                    const float m1 = st_m[lane], mm = fmaxf(m1, m2);
                    const float r1 = expf(m1 - mm), r2 = expf(m2 - mm);
                    st_a[lane] = r1 * (st_a[lane] + (m1 - mm) * z1) + r2 * (st_a[o] + (m2 - mm) * z2);
                    st_z[lane] = r1 * z1 + r2 * z2;
                    st_m[lane] = mm;
                } else {
                    st_m[lane] = m2;
                    st_z[lane] = z2;
                    st_a[lane] = st_a[o];
                }
            }
            const float* va = cand_v + lane * STATS_MAX_K;
            const unsigned* ia = cand_i + lane * STATS_MAX_K;
            const float* vb = cand_v + o * STATS_MAX_K;
            const unsigned* ib = cand_i + o * STATS_MAX_K;
            int x = 0, y = 0;
            for (int j = 0; j < k; j++) {  // x + y = j < k, so neither list runs out
                if (ranks_before(va[x], ia[x], vb[y], ib[y])) {
                    tv[j] = va[x];
                    ti[j] = ia[x++];
                } else {
                    tv[j] = vb[y];
                    ti[j] = ib[y++];
                }
            }
            for (int j = 0; j < k; j++) {
                cand_v[lane * STATS_MAX_K + j] = tv[j];
                cand_i[lane * STATS_MAX_K + j] = ti[j];
            }
        }
        __syncthreads();
    }
    if (lane == 0) {
        const float mm = st_m[0], zz = st_z[0];
        const float hh = logf(zz) - st_a[0] / zz;
        float mass = 0.0f;
        for (int j = 0; j < min(k, tq + 1); j++) mass += expf(cand_v[j] - mm);
        float* o = out + g * 4;
        o[0] = hh;
        // t = 0: a point mass on the query itself, H = 0 = ln 1; 0/0 is taken as 0 (no spread).
        o[1] = tq == 0 ? 0.0f : hh / logf((float)(tq + 1));
        o[2] = 1.0f / zz;
        o[3] = mass / zz;
    }
}
EMU_KERNEL(attention_stats)

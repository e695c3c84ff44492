// Sliced mutual information screening (cpu twin: src/backend/cpu/smi.rs, which calls src/smi):
// seeded slice directions, per-part class statistics, pmi scoring and per-sample summaries. As on the
// cpu, everything after the f32 projection is f64: statistics, model and summaries are double arrays,
// and products that the cpu rounds separately use __dmul_rn/__dadd_rn, which NVRTC never fuses, so
// results match the cpu to the last bits of exp/log. The projection itself is matmul_tiled. The KSG
// kernels (ksg_*) are at the end.

#define SMI_STATS_ROWS 1024  // smi::psmi::STATS_ROWS
#define SMI_THREADS 256      // blocks of smi_directions and smi_row_summary (a power of two)

// smi::directions::seeded_normal: Box–Muller on the pair of block (coord/2, slice, PROJECTION, attempt).
__device__ __forceinline__ double smi_normal(unsigned k0, unsigned k1, unsigned slice, long long coord, unsigned attempt) {
    unsigned c[4] = {(unsigned)(coord / 2), slice, 4u /* purpose::PROJECTION */, attempt};
    philox4x32(c, k0, k1);
    int pair = 2 * (int)(coord % 2);
    double u1 = ((double)c[pair] + 0.5) * (1.0 / 4294967296.0);
    double u2 = ((double)c[pair + 1] + 0.5) * (1.0 / 4294967296.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2);
}

// Sum over a block of SMI_THREADS threads in a fixed tree order; every thread gets the result.
__device__ __forceinline__ double smi_block_sum(double v, double* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = SMI_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    double r = red[0];
    __syncthreads();
    return r;
}

// out[row, :] = unit direction of slice slice0 + row (one block per row). A zero or non-finite norm
// redraws with the next attempt counter, as on the cpu; after 16 the row is NaN (probability 0).
extern "C" __global__ void __launch_bounds__(SMI_THREADS)
smi_directions(float* out, unsigned k0, unsigned k1, unsigned slice0, int d) {
    __shared__ double red[SMI_THREADS];
    unsigned slice = slice0 + blockIdx.x;
    float* o = out + (long long)blockIdx.x * d;
    for (unsigned attempt = 0; attempt < 16; attempt++) {
        double ss = 0.0;
        for (int c = threadIdx.x; c < d; c += SMI_THREADS) {
            double g = smi_normal(k0, k1, slice, c, attempt);
            ss += g * g;
        }
        double norm = sqrt(smi_block_sum(ss, red));
        if (norm > 0.0 && norm <= 1.7976931348623157e308) {
            for (int c = threadIdx.x; c < d; c += SMI_THREADS) o[c] = (float)(smi_normal(k0, k1, slice, c, attempt) / norm);
            return;
        }
    }
    for (int c = threadIdx.x; c < d; c += SMI_THREADS) o[c] = __int_as_float(0x7fc00000);
}
EMU_KERNEL(smi_directions)

// Per part of SMI_STATS_ROWS rows, class c = blockIdx.y, slice j: mean and M2 of the class's rows,
// summed in row order (ClassSliceStats::of_rows). stats[part][0: mean | 1: M2][c][j].
extern "C" __global__ void smi_class_stats(double* stats, const float* proj, const unsigned* labels, int n, int k, int classes) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned c = blockIdx.y;
    int part = blockIdx.z;
    if (j >= k) return;
    int r0 = part * SMI_STATS_ROWS, r1 = min(n, r0 + SMI_STATS_ROWS);
    unsigned count = 0;
    double sum = 0.0;
    for (int r = r0; r < r1; r++)
        if (labels[r] == c) {
            count++;
            sum += (double)proj[(long long)r * k + j];
        }
    double mean = 0.0, m2 = 0.0;
    if (count > 0) {
        mean = __dmul_rn(sum, 1.0 / (double)count);
        for (int r = r0; r < r1; r++)
            if (labels[r] == c) {
                double dev = (double)proj[(long long)r * k + j] - mean;
                m2 = __dadd_rn(m2, __dmul_rn(dev, dev));
            }
    }
    double* base = stats + (long long)part * 2 * classes * k + (long long)c * k + j;
    base[0] = mean;
    base[(long long)classes * k] = m2;
}
EMU_KERNEL(smi_class_stats)

// One class term of psmi::pmi_one: ln π_c + ℓ_c = −½·z² + (ln π_c − ln σ_c).
__device__ __forceinline__ double smi_term(double p, double mu, double inv_sigma, double log_weight) {
    double z = __dmul_rn(p - mu, inv_sigma);
    return __dadd_rn(__dmul_rn(__dmul_rn(-0.5, z), z), log_weight);
}

// pmi[i·ld + col0 + j] for one (sample, slice) per thread; model = mu, inv_sigma, log_weight
// ([k][classes] each), then log_prior[classes]. Excluded slices give NaN.
extern "C" __global__ void smi_score(float* pmi, const float* proj, const unsigned* labels, const double* model,
                                     const unsigned* excluded, int n, int k, int classes, int ld, int col0) {
    long long idx = global_index();
    if (idx >= (long long)n * k) return;
    int i = (int)(idx / k), j = (int)(idx % k);
    float* o = pmi + (long long)i * ld + col0 + j;
    if (excluded[j]) {
        *o = __int_as_float(0x7fc00000);
        return;
    }
    long long kc = (long long)k * classes, at = (long long)j * classes;
    const double *mu = model + at, *inv_sigma = model + kc + at, *log_weight = model + 2 * kc + at;
    const double* log_prior = model + 3 * kc;
    double p = (double)proj[idx];
    unsigned y = labels[i];
    double mx = smi_term(p, mu[0], inv_sigma[0], log_weight[0]);
    for (int c = 1; c < classes; c++) mx = fmax(mx, smi_term(p, mu[c], inv_sigma[c], log_weight[c]));
    double sum = 0.0;
    for (int c = 0; c < classes; c++) sum += exp(smi_term(p, mu[c], inv_sigma[c], log_weight[c]) - mx);
    double ty = smi_term(p, mu[y], inv_sigma[y], log_weight[y]);
    *o = (float)((ty - log_prior[y]) - (mx + log(sum)));
}
EMU_KERNEL(smi_score)

// f32 bits in an order-preserving unsigned key (f64::total_cmp on the widened values).
__device__ __forceinline__ unsigned smi_key(float x) {
    unsigned b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float smi_unkey(unsigned key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Key of the value of 0-based rank `rank` among the row's kept values: radix select, 8 bits a pass
// from the top, each pass a shared-memory histogram of the values that agree on the digits so far.
__device__ __forceinline__ unsigned smi_select(const float* v, const unsigned* excluded, int k, unsigned rank, unsigned* hist, unsigned* state) {
    unsigned prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += SMI_THREADS) hist[b] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < k; j += SMI_THREADS) {
            if (excluded[j]) continue;
            unsigned key = smi_key(v[j]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned cum = 0, b = 0;
            while (b < 255 && cum + hist[b] <= rank) cum += hist[b++];
            state[0] = b;
            state[1] = rank - cum;
        }
        __syncthreads();
        prefix |= state[0] << shift;
        mask |= 255u << shift;
        rank = state[1];
        __syncthreads();
    }
    return prefix;
}

// numpy's linear quantile q of the row's `kept` values (stats::quantile_linear, same f64 steps).
__device__ __forceinline__ double smi_quantile(const float* v, const unsigned* excluded, int k, double kept, double q, unsigned* hist,
                               unsigned* state, double* red) {
    double vi = __dsub_rn(__dadd_rn(__dmul_rn(kept, q), __dadd_rn(1.0, __dmul_rn(q, -1.0))), 1.0);
    double fl = floor(vi);
    double below = fmin(fmax(fl, 0.0), kept - 1.0);
    double above = fmin(below + 1.0, kept - 1.0);
    double t = vi - fl;
    unsigned lo = (unsigned)below, hi = (unsigned)above;
    unsigned key_lo = smi_select(v, excluded, k, lo, hist, state);
    double a = (double)smi_unkey(key_lo), b = a;
    if (hi > lo) {
        // The next value up: key_lo again if it occurs more than lo + 1 times, else the smallest key above.
        unsigned le = 0, gt = 0xffffffffu;
        for (int j = threadIdx.x; j < k; j += SMI_THREADS) {
            if (excluded[j]) continue;
            unsigned key = smi_key(v[j]);
            if (key <= key_lo) le++;
            else if (key < gt) gt = key;
        }
        if (threadIdx.x == 0) state[0] = 0xffffffffu;
        __syncthreads();
        double count = smi_block_sum((double)le, red);
        atomicMin(&state[0], gt);
        __syncthreads();
        if (count < (double)hi + 1.0) b = (double)smi_unkey(state[0]);
        __syncthreads();
    }
    double diff = b - a;
    return t >= 0.5 ? __dsub_rn(b, __dmul_rn(diff, 1.0 - t)) : __dadd_rn(a, __dmul_rn(diff, t));
}

// out[row] = (mean, std (ddof 0), q0.01, q0.99) over the kept values of pmi[row, :], one block per row.
// (No __launch_bounds__: with it ptxas held this kernel to 32 registers and spilled.)
extern "C" __global__ void smi_row_summary(double* out, const float* pmi, const unsigned* excluded, int k) {
    __shared__ double red[SMI_THREADS];
    __shared__ unsigned hist[256];
    __shared__ unsigned state[2];
    const float* v = pmi + (long long)blockIdx.x * k;
    double s = 0.0, cnt = 0.0;
    for (int j = threadIdx.x; j < k; j += SMI_THREADS)
        if (!excluded[j]) {
            s += (double)v[j];
            cnt += 1.0;
        }
    double kept = smi_block_sum(cnt, red);
    double mean = smi_block_sum(s, red) / kept;
    double s2 = 0.0;
    for (int j = threadIdx.x; j < k; j += SMI_THREADS)
        if (!excluded[j]) {
            double dv = (double)v[j] - mean;
            s2 += dv * dv;
        }
    double var = smi_block_sum(s2, red) / kept;
    double q01 = smi_quantile(v, excluded, k, kept, 0.01, hist, state, red);
    double q99 = smi_quantile(v, excluded, k, kept, 0.99, hist, state, red);
    if (threadIdx.x == 0) {
        double* o = out + 4 * (long long)blockIdx.x;
        o[0] = mean;
        o[1] = sqrt(var);
        o[2] = q01;
        o[3] = q99;
    }
}
EMU_KERNEL(smi_row_summary)

// ---- dataset-level SMI: the 1-D KSG MI of every column (smi::ksg::ksg_mi_columns, no jitter) ----
//
// Scratch (backend::ksg_scratch_words), in words: scale f64[k] | totals f64[4] | class start
// u32[classes + 1] | keys A, classes A, keys B, classes B, sorted keys G, each [k][n]. The values
// are the cpu's, operation for operation, in f64: the std from numpy's pairwise sums, x/s, the
// differences, nextafter and ≤. So every radius and neighbour count equals the cpu's; only ψ's log
// (CUDA's, within 1 ulp of libm's) and the order of the per-column sum of ψ(m) differ.

#define KSG_RADIX 16                 // 4-bit digits: every thread's counter of every digit fits in 16 KiB
#define KSG_DROPPED 0xffffffffu      // key of a sample whose class has < 2 samples: above every finite f32's
#define KSG_EPS 2.220446049250313e-16  // f64::EPSILON

struct KsgLayout {
    double* scale;
    double* totals;  // ψ(kept), Σ n_c·ψ(k_c), Σ n_c·ψ(n_c), kept
    unsigned* start;
    unsigned *keys_a, *cls_a, *keys_b, *cls_b, *sorted;
};

__device__ __forceinline__ KsgLayout ksg_layout(unsigned* scratch, int n, int k, int classes) {
    long long nk = (long long)n * k, base = 2LL * k + 8 + classes + 1;
    KsgLayout s;
    s.scale = (double*)scratch;
    s.totals = (double*)(scratch + 2LL * k);
    s.start = scratch + 2LL * k + 8;
    s.keys_a = scratch + base;
    s.cls_a = s.keys_a + nk;
    s.keys_b = s.cls_a + nk;
    s.cls_b = s.keys_b + nk;
    s.sorted = s.cls_b + nk;
    return s;
}

// smi::stats::digamma_int, the same operations in the same order.
__device__ __forceinline__ double ksg_digamma(long long m) {
    if (m < 20) {
        double psi = -0.5772156649015329;
        for (long long i = 1; i < m; i++) psi = __dadd_rn(psi, 1.0 / (double)i);
        return psi;
    }
    double x = (double)m, x2 = __dmul_rn(x, x);
    double r = __dsub_rn(log(x), 0.5 / x);
    r = __dsub_rn(r, 1.0 / __dmul_rn(12.0, x2));
    r = __dadd_rn(r, 1.0 / __dmul_rn(__dmul_rn(120.0, x2), x2));
    return __dsub_rn(r, 1.0 / __dmul_rn(__dmul_rn(__dmul_rn(252.0, x2), x2), x2));
}

// Class sizes → each class's segment start in the class-sorted order (dropped classes included, so
// every sample has a place) and the class ψ sums over the kept classes, in class order as on the cpu.
extern "C" __global__ void __launch_bounds__(SMI_THREADS)
ksg_classes(unsigned* scratch, const unsigned* labels, int n, int k, int classes, int neighbors) {
    KsgLayout s = ksg_layout(scratch, n, k, classes);
    for (int c = threadIdx.x; c <= classes; c += SMI_THREADS) s.start[c] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += SMI_THREADS) atomicAdd(&s.start[labels[i]], 1u);
    __syncthreads();
    if (threadIdx.x != 0) return;
    unsigned at = 0;
    long long kept = 0;
    double psi_k = 0.0, psi_nc = 0.0;
    for (int c = 0; c < classes; c++) {
        unsigned nc = atomicExch(&s.start[c], at);  // read where the atomics landed, not a cached copy
        at += nc;
        if (nc >= 2) {
            kept += nc;
            psi_k = __dadd_rn(psi_k, __dmul_rn((double)nc, ksg_digamma(min(neighbors, (int)nc - 1))));
            psi_nc = __dadd_rn(psi_nc, __dmul_rn((double)nc, ksg_digamma(nc)));
        }
    }
    s.start[classes] = at;
    s.totals[0] = kept > 0 ? ksg_digamma(kept) : 0.0;
    s.totals[1] = psi_k;
    s.totals[2] = psi_nc;
    s.totals[3] = (double)kept;
}
EMU_KERNEL(ksg_classes)

// Row i of a column (stride k), or its squared deviation from `mean`.
__device__ __forceinline__ double ksg_term(const float* col, int k, int i, double mean, bool squares) {
    double v = (double)col[(long long)i * k];
    if (!squares) return v;
    double dv = v - mean;
    return __dmul_rn(dv, dv);
}

// A leaf of numpy's pairwise sum: < 8 values in order from −0, else 8 strided accumulators.
__device__ double ksg_leaf(const float* col, int k, int off, int len, double mean, bool squares) {
    if (len < 8) {
        double res = -0.0;
        for (int i = 0; i < len; i++) res = __dadd_rn(res, ksg_term(col, k, off + i, mean, squares));
        return res;
    }
    double r[8];
#pragma unroll
    for (int e = 0; e < 8; e++) r[e] = ksg_term(col, k, off + e, mean, squares);
    int whole = len - len % 8;
    for (int i = 8; i < whole; i += 8) {
#pragma unroll
        for (int e = 0; e < 8; e++) r[e] = __dadd_rn(r[e], ksg_term(col, k, off + i + e, mean, squares));
    }
    double res = __dadd_rn(__dadd_rn(__dadd_rn(r[0], r[1]), __dadd_rn(r[2], r[3])), __dadd_rn(__dadd_rn(r[4], r[5]), __dadd_rn(r[6], r[7])));
    for (int i = whole; i < len; i++) res = __dadd_rn(res, ksg_term(col, k, off + i, mean, squares));
    return res;
}

// smi::stats::numpy_pairwise_sum over rows [0, n): leaves of ≤ 128 values, split at half rounded down
// to a multiple of 8, left + right. Iterative: each frame waits for its left (1), then right (2) sum.
__device__ double ksg_pairwise(const float* col, int k, int n, double mean, bool squares) {
    if (n <= 128) return ksg_leaf(col, k, 0, n, mean, squares);
    int off[32], len[32], state[32];
    double left[32];
    int top = 0;
    off[0] = 0;
    len[0] = n;
    state[0] = 0;
    double ret = 0.0;
    for (;;) {
        int o = off[top], l = len[top], half = l / 2 - (l / 2) % 8;
        if (state[top] == 0 && l <= 128) {
            ret = ksg_leaf(col, k, o, l, mean, squares);
            top--;
        } else if (state[top] == 0) {
            state[top] = 1;
            top++;
            off[top] = o, len[top] = half, state[top] = 0;
            continue;
        } else if (state[top] == 1) {
            left[top] = ret;
            state[top] = 2;
            top++;
            off[top] = o + half, len[top] = l - half, state[top] = 0;
            continue;
        } else {
            ret = __dadd_rn(left[top], ret);
            top--;
        }
        if (top < 0) return ret;
    }
}

// smi::ksg::scale_column's divisor per column, one thread per column (rows read across threads).
extern "C" __global__ void ksg_scale(unsigned* scratch, const float* proj, int n, int k, int classes) {
    long long j = global_index();
    if (j >= k) return;
    KsgLayout s = ksg_layout(scratch, n, k, classes);
    const float* col = proj + j;
    double mean = __dadd_rn(0.0, ksg_pairwise(col, k, n, 0.0, false)) / (double)n;
    double var = __dadd_rn(0.0, ksg_pairwise(col, k, n, mean, true)) / (double)n;
    double sd = sqrt(var);
    s.scale[j] = sd < 10.0 * KSG_EPS ? 1.0 : sd;
}
EMU_KERNEL(ksg_scale)

// One stable counting pass of the block's radix sort over n elements, digit (value >> shift) & 15 of
// the key or of the class. Thread t owns the contiguous rows [lo, hi), so its per-digit counters,
// scanned in (digit, thread) order, are the output positions of its rows in order: stable.
__device__ __forceinline__ void ksg_radix_pass(const unsigned* kin, const unsigned* cin, unsigned* kout, unsigned* cout, int lo, int hi, int shift,
                               bool by_class, unsigned* count, unsigned* scan) {
    unsigned t = threadIdx.x;
    for (int b = 0; b < KSG_RADIX; b++) count[b * SMI_THREADS + t] = 0;
    for (int i = lo; i < hi; i++) count[(((by_class ? cin[i] : kin[i]) >> shift) & 15u) * SMI_THREADS + t]++;
    __syncthreads();
    unsigned sum = 0;
    for (int e = 0; e < KSG_RADIX; e++) sum += count[t * KSG_RADIX + e];
    scan[t] = sum;
    __syncthreads();
    for (int o = 1; o < SMI_THREADS; o <<= 1) {
        unsigned v = t >= (unsigned)o ? scan[t - o] : 0;
        __syncthreads();
        scan[t] += v;
        __syncthreads();
    }
    unsigned run = scan[t] - sum;
    for (int e = 0; e < KSG_RADIX; e++) {
        unsigned c = count[t * KSG_RADIX + e];
        count[t * KSG_RADIX + e] = run;
        run += c;
    }
    __syncthreads();
    for (int i = lo; i < hi; i++) {
        unsigned key = kin[i], c = cin[i];
        unsigned at = count[(((by_class ? c : key) >> shift) & 15u) * SMI_THREADS + t]++;
        kout[at] = key;
        cout[at] = c;
    }
    __syncthreads();
}

// The scaled value of a sort key (smi::ksg: x / s of the f32 projection).
__device__ __forceinline__ double ksg_value(unsigned key, double sd) { return (double)smi_unkey(key) / sd; }

// mi[j] for column j = blockIdx.x: its keys sorted by value (LSD radix, digits on which all keys agree
// skipped, as on the cpu), kept as the global order G, then stably by class; per sample of a kept
// class the k-th distance within its class segment, nextafter toward 0, the count of G within it by
// two binary searches (x − G ≤ r from the left, G − x > r beyond the right), ψ of the count.
// (No __launch_bounds__: with it ptxas spilled around the ψ calls.)
extern "C" __global__ void ksg_sort_mi(double* mi, unsigned* scratch, const float* proj, const unsigned* labels, int n, int k, int classes, int neighbors) {
    __shared__ unsigned count[KSG_RADIX * SMI_THREADS];
    __shared__ unsigned scan[SMI_THREADS];
    __shared__ double red[SMI_THREADS];
    __shared__ unsigned differ;
    KsgLayout s = ksg_layout(scratch, n, k, classes);
    int j = blockIdx.x;
    unsigned t = threadIdx.x;
    long long col = (long long)j * n;
    unsigned *ka = s.keys_a + col, *ca = s.cls_a + col, *kb = s.keys_b + col, *cb = s.cls_b + col, *g = s.sorted + col;
    const unsigned* start = s.start;
    unsigned key0 = n > 0 ? (start[labels[0] + 1] - start[labels[0]] < 2 ? KSG_DROPPED : smi_key(proj[j])) : 0;
    if (t == 0) differ = 0;
    __syncthreads();
    unsigned mine = 0;
    for (int i = t; i < n; i += SMI_THREADS) {
        unsigned c = labels[i];
        unsigned key = start[c + 1] - start[c] < 2 ? KSG_DROPPED : smi_key(proj[(long long)i * k + j]);
        ka[i] = key;
        ca[i] = c;
        mine |= key ^ key0;
    }
    atomicOr(&differ, mine);
    __syncthreads();
    int chunk = (n + SMI_THREADS - 1) / SMI_THREADS;
    int lo = min(n, (int)t * chunk), hi = min(n, lo + chunk);
    unsigned diff = differ;
    for (int shift = 0; shift < 32; shift += 4) {
        if (((diff >> shift) & 15u) == 0) continue;
        ksg_radix_pass(ka, ca, kb, cb, lo, hi, shift, false, count, scan);
        unsigned* tmp = ka;
        ka = kb, kb = tmp;
        tmp = ca;
        ca = cb, cb = tmp;
    }
    for (int i = t; i < n; i += SMI_THREADS) g[i] = ka[i];
    __syncthreads();
    for (int shift = 0; classes > 1 && ((unsigned)(classes - 1) >> shift) != 0; shift += 4) {
        ksg_radix_pass(ka, ca, kb, cb, lo, hi, shift, true, count, scan);
        unsigned* tmp = ka;
        ka = kb, kb = tmp;
        tmp = ca;
        ca = cb, cb = tmp;
    }
    double sd = s.scale[j];
    int kept = (int)s.totals[3];
    double acc = 0.0;
    for (int q = t; q < n; q += SMI_THREADS) {
        unsigned c = ca[q];
        int c0 = (int)start[c], nc = (int)(start[c + 1] - start[c]);
        if (nc < 2) continue;
        int kc = min(neighbors, nc - 1);
        double x = ksg_value(ka[q], sd), r = 0.0;
        int left = q, right = q + 1;
        for (int step = 0; step < kc; step++) {
            bool has_l = left > c0, has_r = right < c0 + nc;
            double dl = has_l ? x - ksg_value(ka[left - 1], sd) : 0.0;
            double dr = has_r ? ksg_value(ka[right], sd) - x : 0.0;
            if (has_l && (!has_r || dl <= dr)) {
                left--;
                r = dl;
            } else {
                right++;
                r = dr;
            }
        }
        if (r > 0.0) r = __longlong_as_double(__double_as_longlong(r) - 1);
        int a = 0, b = kept;
        while (a < b) {
            int mid = (a + b) / 2;
            if (x - ksg_value(g[mid], sd) <= r) b = mid;
            else a = mid + 1;
        }
        int first = a;
        b = kept;
        while (a < b) {
            int mid = (a + b) / 2;
            if (ksg_value(g[mid], sd) - x > r) b = mid;
            else a = mid + 1;
        }
        acc += ksg_digamma(a - first);
    }
    double psi_m = smi_block_sum(acc, red);
    if (t == 0) {
        double nk = (double)kept;
        double v = kept > 0 ? __dsub_rn(__dsub_rn(__dadd_rn(s.totals[0], s.totals[1] / nk), s.totals[2] / nk), psi_m / nk) : 0.0;
        mi[j] = fmax(v, 0.0);
    }
}
EMU_KERNEL(ksg_sort_mi)

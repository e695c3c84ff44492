// Sliced mutual information screening (cpu twin: src/backend/cpu/smi.rs, which calls src/smi):
// seeded slice directions, per-part class statistics, pmi scoring and per-sample summaries. As on the
// cpu, everything after the f32 projection is f64: statistics, model and summaries are double arrays,
// and products that the cpu rounds separately use __dmul_rn/__dadd_rn, which NVRTC never fuses, so
// results match the cpu to the last bits of exp/log. The projection itself is matmul_tiled.

#define SMI_STATS_ROWS 1024  // smi::psmi::STATS_ROWS
#define SMI_THREADS 256      // blocks of smi_directions and smi_row_summary (a power of two)

// Philox4x32-10 (src/rng.rs): 10 rounds over counter c with key (k0, k1).
__device__ __forceinline__ void smi_philox(unsigned c[4], unsigned k0, unsigned k1) {
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

// smi::directions::seeded_normal: Box–Muller on the pair of block (coord/2, slice, PROJECTION, attempt).
__device__ __forceinline__ double smi_normal(unsigned k0, unsigned k1, unsigned slice, long long coord, unsigned attempt) {
    unsigned c[4] = {(unsigned)(coord / 2), slice, 4u /* purpose::PROJECTION */, attempt};
    smi_philox(c, k0, k1);
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

// Fused softmax + cross-entropy over the vocabulary (cpu twin: src/backend/cpu/crossentropy.rs).

// One block per row: max, Σ exp (block reductions), probs, and loss = log Σ + max − logit[target]
// (log-sum-exp form, exact for tiny probabilities); 0 where the target is ignored.
extern "C" __global__ void softmax_crossentropy_forward(float* losses, float* probs, const float* logits,
                                                        const unsigned* targets, int v) {
    __shared__ float red[32];
    const long long row = blockIdx.x;
    const float* x = logits + row * v;
    float* p = probs + row * v;
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, x[j]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float e = expf(x[j] - mx);
        p[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    const float inv = 1.0f / sum;
    // Each thread rescales the entries it wrote itself, so no barrier is needed before this.
    for (int j = threadIdx.x; j < v; j += blockDim.x) p[j] *= inv;
    if (threadIdx.x == 0) {
        unsigned target = targets[row];
        losses[row] = target == IGNORE_TARGET ? 0.0f : logf(sum) + mx - x[target];
    }
}
EMU_KERNEL(softmax_crossentropy_forward)

// dlogits = (probs − onehot(target))·scale·weights[row] (scale alone without weights), 0 on ignored
// rows; may run in place on probs.
extern "C" __global__ void crossentropy_backward(float* dlogits, const float* probs, const unsigned* targets,
                                                 const float* weights, float scale, int n, int v) {
    long long i = global_index();
    if (i >= (long long)n * v) return;
    long long row = i / v;
    unsigned target = targets[row], j = (unsigned)(i % v);
    if (target == IGNORE_TARGET) {
        dlogits[i] = 0.0f;
        return;
    }
    const float s = weights != 0 ? scale * weights[row] : scale;
    dlogits[i] = (probs[i] - (j == target ? 1.0f : 0.0f)) * s;
}
EMU_KERNEL(crossentropy_backward)

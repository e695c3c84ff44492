// AdamW as torch.optim.AdamW (cpu twin: src/backend/cpu/adamw.rs). The host computes the
// bias-correction terms once per step in f64, exactly as the cpu backend does.

extern "C" __global__ void adamw_update(float* params, const float* grads, float* m, float* v, long long n,
                                        float beta1, float beta2, float eps, float decay, float step_size,
                                        float bc2_sqrt) {
    long long i = global_index();
    if (i >= n) return;
    float g = grads[i];
    float p = params[i] * decay;
    float mi = m[i] + (g - m[i]) * (1.0f - beta1);
    float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    params[i] = p - step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
}
EMU_KERNEL(adamw_update)

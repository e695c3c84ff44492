// MLP activations (cpu twin: src/backend/cpu/activation.rs). `act`: 0 relu, 1 gelu (exact erf),
// 2 gelu_new (tanh approximation). Elementwise, so dinp may alias dout (each thread reads, then writes
// its own element).

#define ACT_RELU 0
#define ACT_GELU 1
#define ACT_GELU_NEW 2
#define SQRT_2_OVER_PI 0.7978845608f
#define INV_SQRT_2 0.7071067812f
#define INV_SQRT_2PI 0.3989422804f

__device__ __forceinline__ float act_value(float x, int act) {
    if (act == ACT_RELU) return fmaxf(x, 0.0f);
    if (act == ACT_GELU) return 0.5f * x * (1.0f + erff(x * INV_SQRT_2));
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float act_derivative(float x, int act) {
    if (act == ACT_RELU) return x > 0.0f ? 1.0f : 0.0f;
    if (act == ACT_GELU) {
        float cdf = 0.5f * (1.0f + erff(x * INV_SQRT_2));
        float pdf = expf(-0.5f * x * x) * INV_SQRT_2PI;
        return cdf + x * pdf;
    }
    float th = tanhf(SQRT_2_OVER_PI * (x + 0.044715f * x * x * x));
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);
}

extern "C" __global__ void activation_forward(float* out, const float* inp, int n, int act) {
    long long i = global_index();
    if (i < n) out[i] = act_value(inp[i], act);
}
EMU_KERNEL(activation_forward)

extern "C" __global__ void activation_backward(float* dinp, const float* inp, const float* dout, int n, int act) {
    long long i = global_index();
    if (i < n) dinp[i] = dout[i] * act_derivative(inp[i], act);
}
EMU_KERNEL(activation_backward)

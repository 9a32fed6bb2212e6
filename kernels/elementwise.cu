// Residual add and the SwiGLU activation, forward and backward (elementwise, fp32).

extern "C" __global__ void add_f32(float* out, const float* a, const float* b, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g * sigmoidf(g) * up[i];
    }
}

extern "C" __global__ void swiglu_backward(float* d_gate, float* d_up, const float* d_out, const float* gate,
                                           const float* up, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i], s = sigmoidf(g), d = d_out[i];
        d_up[i] += d * g * s;
        // d silu(g)/dg = s (1 + g (1 - s))
        d_gate[i] += d * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

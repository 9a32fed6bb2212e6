// Residual add and the SwiGLU activation, forward and backward (elementwise, fp32).

extern "C" __global__ void add_f32(float* out, const float* a, const float* b, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// The `shadow` outputs (may be null) get the results rounded to bf16 too: the GEMMs' copies.
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, u64 n,
                                          __nv_bfloat16* shadow) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        const float v = g * sigmoidf(g) * up[i];
        out[i] = v;
        if (shadow) shadow[i] = __float2bfloat16_rn(v);
    }
}

// Backward writes (does not add to) d_gate and d_up.
extern "C" __global__ void swiglu_backward(float* d_gate, float* d_up, const float* d_out, const float* gate,
                                           const float* up, u64 n, __nv_bfloat16* gate_shadow,
                                           __nv_bfloat16* up_shadow) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i], s = sigmoidf(g), d = d_out[i];
        const float du = d * g * s;
        // d silu(g)/dg = s (1 + g (1 - s))
        const float dg = d * up[i] * s * (1.0f + g * (1.0f - s));
        d_up[i] = du;
        d_gate[i] = dg;
        if (up_shadow) up_shadow[i] = __float2bfloat16_rn(du);
        if (gate_shadow) gate_shadow[i] = __float2bfloat16_rn(dg);
    }
}

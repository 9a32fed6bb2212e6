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

// Mixed precision's SwiGLU: gate and up are the bf16 outputs of their products, and the results
// are read only by products, so they are stored in bf16 alone (autocast's dtypes; fp32 math).
// Eight values a thread with 16-byte loads where aligned (load8/store8: common.cuh).
extern "C" __global__ void swiglu_forward_bf16(__nv_bfloat16* out, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                               u64 n) {
    const u64 i = 8 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 7 < n && aligned16(out) && aligned16(gate) && aligned16(up)) {
        float g[8], u[8], v[8];
        load8(g, gate + i);
        load8(u, up + i);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = g[j] * sigmoidf(g[j]) * u[j];
        store8(out + i, v);
    } else {
        for (u64 j = i; j < n && j < i + 8; j++) {
            const float g = __bfloat162float(gate[j]);
            out[j] = __float2bfloat16_rn(g * sigmoidf(g) * __bfloat162float(up[j]));
        }
    }
}

// d_out is the down product's input gradient: fp32 (`d_out`) or, when that product stored it in
// bf16 alone, bf16 (`d_out_bf16`; `d_out` is then null). d_gate and d_up are written in bf16 only.
__device__ __forceinline__ float load_d_out(const float* d_out, const __nv_bfloat16* d_out_bf16, u64 j) {
    return d_out ? d_out[j] : __bfloat162float(d_out_bf16[j]);
}

extern "C" __global__ void swiglu_backward_bf16(__nv_bfloat16* d_gate, __nv_bfloat16* d_up, const float* d_out,
                                                const __nv_bfloat16* d_out_bf16, const __nv_bfloat16* gate,
                                                const __nv_bfloat16* up, u64 n) {
    const u64 i = 8 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    const bool wide = d_out != nullptr;
    if (i + 7 < n && aligned16(d_gate) && aligned16(d_up) && aligned16(wide ? (const void*)d_out : (const void*)d_out_bf16) &&
        aligned16(gate) && aligned16(up)) {
        float g[8], u[8], d[8], dg[8], du[8];
        load8(g, gate + i);
        load8(u, up + i);
        if (wide) {
            const float4 d0 = *reinterpret_cast<const float4*>(d_out + i), d1 = *reinterpret_cast<const float4*>(d_out + i + 4);
            d[0] = d0.x, d[1] = d0.y, d[2] = d0.z, d[3] = d0.w, d[4] = d1.x, d[5] = d1.y, d[6] = d1.z, d[7] = d1.w;
        } else {
            load8(d, d_out_bf16 + i);
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float s = sigmoidf(g[j]);
            du[j] = d[j] * g[j] * s;
            dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
        }
        store8(d_gate + i, dg);
        store8(d_up + i, du);
    } else {
        for (u64 j = i; j < n && j < i + 8; j++) {
            const float g = __bfloat162float(gate[j]), s = sigmoidf(g), d = load_d_out(d_out, d_out_bf16, j);
            d_up[j] = __float2bfloat16_rn(d * g * s);
            d_gate[j] = __float2bfloat16_rn(d * __bfloat162float(up[j]) * s * (1.0f + g * (1.0f - s)));
        }
    }
}

// Residual add and the SwiGLU activation, forward and backward (elementwise, fp32).

extern "C" __global__ void add_f32(float* out, const float* a, const float* b, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// SwiGLU reads gate and up from the stacked gate/up product: out[r, c] = silu(gate[r, c]) up[r, c]
// for c < width, where gate's and up's rows are `stride` values apart (up = gate + width,
// stride = 2 width) and out's are `width`; the backward writes d_gate and d_up in that layout.
__device__ __forceinline__ u64 strided_index(u64 j, u32 width, u32 stride) {
    const u64 row = j / width;
    return row * stride + (j - row * width);
}

// The `shadow` outputs (may be null) get the results rounded to bf16 too: the GEMMs' copies.
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, u64 n, u32 width, u32 stride,
                                          __nv_bfloat16* shadow) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const u64 s = strided_index(i, width, stride);
        float g = gate[s];
        const float v = g * sigmoidf(g) * up[s];
        out[i] = v;
        if (shadow) shadow[i] = __float2bfloat16_rn(v);
    }
}

// Backward writes (does not add to) d_gate and d_up.
extern "C" __global__ void swiglu_backward(float* d_gate, float* d_up, const float* d_out, const float* gate,
                                           const float* up, u64 n, u32 width, u32 stride, __nv_bfloat16* gate_shadow,
                                           __nv_bfloat16* up_shadow) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const u64 j = strided_index(i, width, stride);
        float g = gate[j], s = sigmoidf(g), d = d_out[i];
        const float du = d * g * s;
        // d silu(g)/dg = s (1 + g (1 - s))
        const float dg = d * up[j] * s * (1.0f + g * (1.0f - s));
        d_up[j] = du;
        d_gate[j] = dg;
        if (up_shadow) up_shadow[j] = __float2bfloat16_rn(du);
        if (gate_shadow) gate_shadow[j] = __float2bfloat16_rn(dg);
    }
}

// Mixed precision's SwiGLU: gate and up are the bf16 outputs of their products, and the results
// are read only by products, so they are stored in bf16 alone (autocast's dtypes; fp32 math).
// Eight values a thread with 16-byte loads where aligned and a row holds whole groups of eight
// (load8/store8: common.cuh).
extern "C" __global__ void swiglu_forward_bf16(__nv_bfloat16* out, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                               u64 n, u32 width, u32 stride) {
    const u64 i = 8 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 7 < n && width % 8 == 0 && stride % 8 == 0 && aligned16(out) && aligned16(gate) && aligned16(up)) {
        const u64 s = strided_index(i, width, stride);
        float g[8], u[8], v[8];
        load8(g, gate + s);
        load8(u, up + s);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = g[j] * sigmoidf(g[j]) * u[j];
        store8(out + i, v);
    } else {
        for (u64 j = i; j < n && j < i + 8; j++) {
            const u64 s = strided_index(j, width, stride);
            const float g = __bfloat162float(gate[s]);
            out[j] = __float2bfloat16_rn(g * sigmoidf(g) * __bfloat162float(up[s]));
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
                                                const __nv_bfloat16* up, u64 n, u32 width, u32 stride) {
    const u64 i = 8 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    const bool wide = d_out != nullptr;
    if (i + 7 < n && width % 8 == 0 && stride % 8 == 0 && aligned16(d_gate) && aligned16(d_up) &&
        aligned16(wide ? (const void*)d_out : (const void*)d_out_bf16) && aligned16(gate) && aligned16(up)) {
        const u64 s = strided_index(i, width, stride);
        float g[8], u[8], d[8], dg[8], du[8];
        load8(g, gate + s);
        load8(u, up + s);
        if (wide) {
            load8(d, d_out + i);
        } else {
            load8(d, d_out_bf16 + i);
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float sg = sigmoidf(g[j]);
            du[j] = d[j] * g[j] * sg;
            dg[j] = d[j] * u[j] * sg * (1.0f + g[j] * (1.0f - sg));
        }
        store8(d_gate + s, dg);
        store8(d_up + s, du);
    } else {
        for (u64 j = i; j < n && j < i + 8; j++) {
            const u64 s = strided_index(j, width, stride);
            const float g = __bfloat162float(gate[s]), sg = sigmoidf(g), d = load_d_out(d_out, d_out_bf16, j);
            d_up[s] = __float2bfloat16_rn(d * g * sg);
            d_gate[s] = __float2bfloat16_rn(d * __bfloat162float(up[s]) * sg * (1.0f + g * (1.0f - sg)));
        }
    }
}

// f32 <-> bf16 copies: the GEMMs read bf16 operands made from the fp32 buffers, and a buffer whose
// last writer stored bf16 only (a mixed-precision activation) is widened when an fp32 reader asks.

extern "C" __global__ void cast_f32_to_bf16(__nv_bfloat16* out, const float* in, u64 n) {
    // Four values a thread: one 16-byte load, one 8-byte store.
    u64 i = 4 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 3 < n && (((u64)in & 15) == 0)) {
        float4 v = *reinterpret_cast<const float4*>(in + i);
        __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        *reinterpret_cast<__nv_bfloat162*>(out + i) = lo;
        *reinterpret_cast<__nv_bfloat162*>(out + i + 2) = hi;
    } else {
        for (u64 j = i; j < n && j < i + 4; j++) out[j] = __float2bfloat16_rn(in[j]);
    }
}

extern "C" __global__ void cast_bf16_to_f32(float* out, const __nv_bfloat16* in, u64 n) {
    u64 i = 4 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 3 < n && (((u64)in & 7) == 0)) {
        const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(in + i));
        const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(in + i + 2));
        *reinterpret_cast<float4*>(out + i) = make_float4(lo.x, lo.y, hi.x, hi.y);
    } else {
        for (u64 j = i; j < n && j < i + 4; j++) out[j] = __bfloat162float(in[j]);
    }
}

// Shared by every kernel file: the bf16 type and deterministic block reductions.
// NVRTC compiles this prelude followed by the op files as one program (see shared/cuda).
#include <cuda_bf16.h>

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

typedef unsigned int u32;
typedef unsigned long long u64;

// Sum over the block in a fixed order (warp shuffles, then warp 0 over the warps' sums), so
// results do not change between runs. `scratch` holds 32 values; every thread gets the sum.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Eight bf16 values (16 bytes) to fp32 and back: the vectorised loads of the elementwise kernels.
__device__ __forceinline__ void load8(float* dst, const __nv_bfloat16* src) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __bfloat1622float2(pairs[j]);
        dst[2 * j] = f.x;
        dst[2 * j + 1] = f.y;
    }
}

__device__ __forceinline__ void store8(__nv_bfloat16* dst, const float* src) {
    uint4 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; j++) pairs[j] = __floats2bfloat162_rn(src[2 * j], src[2 * j + 1]);
    *reinterpret_cast<uint4*>(dst) = raw;
}

// The same for fp32 values (two 16-byte accesses).
__device__ __forceinline__ void load8(float* dst, const float* src) {
    const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w, dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}

__device__ __forceinline__ void store8(float* dst, const float* src) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
}

__device__ __forceinline__ bool aligned16(const void* p) { return ((u64)p & 15) == 0; }

// The optimizer's kernels: fused AdamW (PyTorch's order of operations; `shadow`, when not null,
// gets the new weights in bf16 too) and the sum of squares for the global gradient norm
// (per-block partials in f64, summed on the host in block order).

struct AdamW {
    float beta1, beta2, eps, decay, step_size, bias_correction2_sqrt, grad_scale;

    // One weight: updates its moments in place and returns the new value. Rounded intrinsics,
    // which the compiler never contracts into FMAs: left to it, the contraction differed between
    // the single and the grouped kernel (other weights after a step); this way every kernel
    // rounds as the CPU backend does, operation by operation.
    __device__ __forceinline__ float step(float param, float grad, float& m, float& v) const {
        const float g = __fmul_rn(grad, grad_scale);
        const float p = __fmul_rn(param, decay);
        m = __fadd_rn(__fmul_rn(beta1, m), __fmul_rn(1.0f - beta1, g));
        v = __fadd_rn(__fmul_rn(beta2, v), __fmul_rn(__fmul_rn(1.0f - beta2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bias_correction2_sqrt), eps);
        return __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, m), denom));
    }
};

// Loads and stores of the update's arrays, with the streaming cache hints (`.cs`: evict first)
// when `streaming` (DSLLM_ADAMW_STREAMING): each value is touched once, and the forward's
// products, running beside the update, then keep more of their operands in L2. Same values.
template <typename T>
__device__ __forceinline__ T adamw_load(const T* p, bool streaming) {
    return streaming ? __ldcs(p) : *p;
}
template <typename T>
__device__ __forceinline__ void adamw_store(T* p, T value, bool streaming) {
    if (streaming) {
        __stcs(p, value);
    } else {
        *p = value;
    }
}

// W (4 or 8) weights a thread: W / 4 16-byte loads of each array issued before any arithmetic,
// the bf16 copy stored 2W bytes at a time, where every array is aligned for that; else (and for
// the tail) one weight at a time. Eight a thread keeps twice the bytes in flight.
// `thread` numbers the tensor's threads from 0.
template <int W>
__device__ __forceinline__ void adamw_update_wide(float* param, const float* grad, float* m, float* v, u64 n,
                                                  const AdamW& opt, __nv_bfloat16* shadow, u64 thread, bool streaming) {
    static_assert(W == 4 || W == 8, "four or eight weights a thread");
    constexpr int H = W / 4;
    const u64 i = W * thread;
    if (i >= n) return;
    const bool aligned = (((u64)param | (u64)grad | (u64)m | (u64)v) & 15) == 0 && ((u64)shadow & (2 * W - 1)) == 0;
    if (i + W - 1 < n && aligned) {
        float4 p[H], mi[H], vi[H], g[H];
#pragma unroll
        for (int h = 0; h < H; h++) {
            p[h] = adamw_load(reinterpret_cast<const float4*>(param + i + 4 * h), streaming);
            mi[h] = adamw_load(reinterpret_cast<const float4*>(m + i + 4 * h), streaming);
            vi[h] = adamw_load(reinterpret_cast<const float4*>(v + i + 4 * h), streaming);
            g[h] = adamw_load(reinterpret_cast<const float4*>(grad + i + 4 * h), streaming);
        }
        uint4 packed;  // the bf16 copy's values (16-byte aligned, unlike an array of bf16 pairs)
        __nv_bfloat162* halves = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
        for (int h = 0; h < H; h++) {
            p[h].x = opt.step(p[h].x, g[h].x, mi[h].x, vi[h].x);
            p[h].y = opt.step(p[h].y, g[h].y, mi[h].y, vi[h].y);
            p[h].z = opt.step(p[h].z, g[h].z, mi[h].z, vi[h].z);
            p[h].w = opt.step(p[h].w, g[h].w, mi[h].w, vi[h].w);
            adamw_store(reinterpret_cast<float4*>(param + i + 4 * h), p[h], streaming);
            adamw_store(reinterpret_cast<float4*>(m + i + 4 * h), mi[h], streaming);
            adamw_store(reinterpret_cast<float4*>(v + i + 4 * h), vi[h], streaming);
            halves[2 * h] = __floats2bfloat162_rn(p[h].x, p[h].y);
            halves[2 * h + 1] = __floats2bfloat162_rn(p[h].z, p[h].w);
        }
        if (shadow) {  // the products' copy, so no cast pass follows
            if constexpr (W == 8) {
                adamw_store(reinterpret_cast<uint4*>(shadow + i), packed, streaming);
            } else {
                adamw_store(reinterpret_cast<uint2*>(shadow + i), make_uint2(packed.x, packed.y), streaming);
            }
        }
        return;
    }
    for (u64 j = i; j < n && j < i + W; j++) {
        const float next = opt.step(param[j], grad[j], m[j], v[j]);
        param[j] = next;
        if (shadow) shadow[j] = __float2bfloat16_rn(next);
    }
}

extern "C" __global__ void adamw_update(float* param, const float* grad, float* m, float* v, u64 n, float beta1,
                                        float beta2, float eps, float decay, float step_size,
                                        float bias_correction2_sqrt, float grad_scale, __nv_bfloat16* shadow, int streaming) {
    adamw_update_wide<4>(param, grad, m, v, n, AdamW{beta1, beta2, eps, decay, step_size, bias_correction2_sqrt, grad_scale}, shadow,
                         (u64)blockIdx.x * blockDim.x + threadIdx.x, streaming != 0);
}

// DSLLM_ADAMW_WIDTH=8.
extern "C" __global__ void adamw_update8(float* param, const float* grad, float* m, float* v, u64 n, float beta1,
                                         float beta2, float eps, float decay, float step_size,
                                         float bias_correction2_sqrt, float grad_scale, __nv_bfloat16* shadow, int streaming) {
    adamw_update_wide<8>(param, grad, m, v, n, AdamW{beta1, beta2, eps, decay, step_size, bias_correction2_sqrt, grad_scale}, shadow,
                         (u64)blockIdx.x * blockDim.x + threadIdx.x, streaming != 0);
}

// The embedding lookup of the next forward with the table as its pending AdamW update will
// leave it (DSLLM_DEFER_GATHERED, CudaBackend::deferred): each gathered weight's new value is
// computed from the old weight, gradient and moments, with the same rounded steps as
// adamw_update, so the rows are the bits the update writes. The update itself then runs on the
// optimizer stream beside the forward instead of before it.
extern "C" __global__ void embedding_forward_updated(float* out, const u32* tokens, const float* table, const float* grad,
                                                     const float* m, const float* v, int dim, u64 n, float beta1,
                                                     float beta2, float eps, float decay, float step_size,
                                                     float bias_correction2_sqrt, float grad_scale) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u64 at = (u64)tokens[i / dim] * dim + i % dim;
    float mi = m[at], vi = v[at];
    out[i] = AdamW{beta1, beta2, eps, decay, step_size, bias_correction2_sqrt, grad_scale}.step(table[at], grad[at], mi, vi);
}

// Up to ADAMW_GROUP tensors in one launch (DSLLM_ADAMW_GROUPED): tensor t takes blocks
// first_block[t] .. first_block[t + 1] - 1, four weights a thread, as adamw_update. Passed by
// value (the kernel's parameters), so nothing is copied to the GPU first. Layout: the Rust
// AdamWGroupArgs (backend.rs), field for field.
#define ADAMW_GROUP 16
struct AdamWGroup {
    u64 param[ADAMW_GROUP], grad[ADAMW_GROUP], m[ADAMW_GROUP], v[ADAMW_GROUP], shadow[ADAMW_GROUP], n[ADAMW_GROUP];
    float decay[ADAMW_GROUP];
    unsigned first_block[ADAMW_GROUP + 1];
    int count;
};

static_assert(sizeof(AdamWGroup) == 6 * 8 * ADAMW_GROUP + 4 * ADAMW_GROUP + 4 * (ADAMW_GROUP + 1) + 4,
              "AdamWGroup must match AdamWGroupArgs (backend.rs) byte for byte");

// __grid_constant__: read in place from the parameter space, not copied per thread to local
// memory for the runtime index `t`.
extern "C" __global__ void adamw_update_group(const __grid_constant__ AdamWGroup group, float beta1, float beta2, float eps, float step_size,
                                              float bias_correction2_sqrt, float grad_scale, int streaming) {
    int t = 0;
    while (t + 1 < group.count && blockIdx.x >= group.first_block[t + 1]) t++;
    const AdamW opt{beta1, beta2, eps, group.decay[t], step_size, bias_correction2_sqrt, grad_scale};
    const u64 thread = (u64)(blockIdx.x - group.first_block[t]) * blockDim.x + threadIdx.x;
    adamw_update_wide<4>(reinterpret_cast<float*>(group.param[t]), reinterpret_cast<const float*>(group.grad[t]),
                         reinterpret_cast<float*>(group.m[t]), reinterpret_cast<float*>(group.v[t]), group.n[t], opt,
                         reinterpret_cast<__nv_bfloat16*>(group.shadow[t]), thread, streaming != 0);
}

extern "C" __global__ void sum_squares_partial(double* partial, const float* x, u64 n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 start = 0;
    if (((u64)x & 15) == 0) {
        // 16-byte loads where the range is aligned (a whole tensor, most shards): this pass is
        // bound by memory bandwidth. The rest below, one at a time.
        // Four loads issued before their sums, so each thread keeps 64 bytes in flight.
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const u64 n4 = n / 4;
        u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
        for (; i + 3 * stride < n4; i += 4 * stride) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) v[u] = x4[i + u * stride];
#pragma unroll
            for (int u = 0; u < 4; u++) acc += (double)v[u].x * v[u].x + (double)v[u].y * v[u].y + (double)v[u].z * v[u].z + (double)v[u].w * v[u].w;
        }
        for (; i < n4; i += stride) {
            const float4 v = x4[i];
            acc += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
        }
        start = n / 4 * 4;
    }
    for (u64 i = start + (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double v = x[i];
        acc += v * v;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Busy-waits about `cycles` clock cycles: a test launches it on the optimizer stream before each
// update so that a missing wait between the streams reads values not yet written (the kernels
// are otherwise too short for the streams to overlap in a small model's steps).
extern "C" __global__ void spin_cycles(u64 cycles) {
    const long long start = clock64();
    while ((u64)(clock64() - start) < cycles) {
    }
}

// Cross-entropy over rows of logits: one block a row. The forward keeps a running (max, sum)
// per thread so the row is read once; the backward overwrites the logits with their gradient.

#define IGNORE_TARGET 0xffffffffu

__device__ __forceinline__ void merge_max_sum(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    if (mm == -INFINITY) return;  // both empty
    s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
    m = mm;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// The block's log-sum-exp from each thread's running (max, sum), returned to every thread.
__device__ float block_lse(float m, float s) {
    __shared__ float shared_m[32], shared_s[32];
    __shared__ float result;
    for (int o = 16; o > 0; o >>= 1) merge_max_sum(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? shared_m[lane] : -INFINITY;
        s = lane < warps ? shared_s[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) merge_max_sum(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
        if (lane == 0) result = m + logf(s);
    }
    __syncthreads();
    return result;
}

// The log-sum-exp of row `x`, returned to every thread of the block. Each thread keeps a
// running (max, sum), so the row is read once.
template <typename T>
__device__ float block_row_lse(const T* x, int vocab) {
    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float v = to_float(x[j]);
        if (v > m) {
            s = s * __expf(m - v) + 1.0f;
            m = v;
        } else {
            s += __expf(v - m);
        }
    }
    return block_lse(m, s);
}

extern "C" __global__ void cross_entropy_forward(float* losses, float* lse, const float* logits, const u32* targets,
                                                 int vocab) {
    const u64 row = blockIdx.x;
    const float* x = logits + row * vocab;
    const float l = block_row_lse(x, vocab);
    if (threadIdx.x == 0) {
        lse[row] = l;
        const u32 t = targets[row];
        losses[row] = t == IGNORE_TARGET ? 0.0f : l - x[t];
    }
}

// One chunk of the output layer's rows (Backend::output_loss): the loss and lse as
// cross_entropy_forward, and, when `grad` is not null, the gradient scale · (softmax − onehot)
// written in bf16 only (it feeds the lm_head GEMMs): the logits are just read. A block takes
// rows blockIdx.x, blockIdx.x + gridDim.x, ...: with one block an SM, the rows being read at
// once (a vocabulary each) fit in L2, so the gradient pass re-reads its row from L2, not memory.
template <typename T>
__device__ void cross_entropy_chunk_row(u64 row, float* losses, float* lse, __nv_bfloat16* grad, const T* logits,
                                        const u32* targets, int vocab, float scale) {
    const T* x = logits + row * vocab;
    const float l = block_row_lse(x, vocab);
    const u32 t = targets[row];
    if (threadIdx.x == 0) {
        lse[row] = l;
        losses[row] = t == IGNORE_TARGET ? 0.0f : l - to_float(x[t]);
    }
    if (!grad) return;
    __nv_bfloat16* g = grad + row * vocab;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float value = 0.0f;
        if (t != IGNORE_TARGET) value = scale * __expf(to_float(x[j]) - l) - (j == (int)t ? scale : 0.0f);
        g[j] = __float2bfloat16_rn(value);
    }
}

// fp32 logits (fp32 precision).
// `prefetch_packs` is the bf16 kernel's (below); unused here.
extern "C" __global__ void cross_entropy_chunk(float* losses, float* lse, __nv_bfloat16* grad, const float* logits,
                                               const u32* targets, int vocab, float scale, int rows, int prefetch_packs) {
    for (u64 row = blockIdx.x; row < (u64)rows; row += gridDim.x)
        cross_entropy_chunk_row(row, losses, lse, grad, logits, targets, vocab, scale);
}

// Eight bf16 logits into a thread's running (max, sum): the sum is rescaled only when the max
// grows (one exponential a value, not two).
__device__ __forceinline__ void add_pack_to_max_sum(const uint4 raw, float& m, float& s) {
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
    float v[8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __bfloat1622float2(pairs[j]);
        v[2 * j] = f.x;
        v[2 * j + 1] = f.y;
    }
    float local = v[0];
#pragma unroll
    for (int j = 1; j < 8; j++) local = fmaxf(local, v[j]);
    if (local > m) {
        s = m == -INFINITY ? 0.0f : s * __expf(m - local);
        m = local;
    }
    if (m == -INFINITY) return;  // nothing but -inf so far
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) sum += __expf(v[j] - m);
    s += sum;
}

// bf16 logits, as the GEMM rounds them in mixed precision (PyTorch's autocast does the same):
// half the bytes written and read. Rows whose length is a multiple of 8 (every padded
// vocabulary) are read and written 8 values (16 bytes) a thread at a time: the scalar loop
// moved 2 bytes per load and ran at a third of the memory bandwidth. With one block an SM,
// a thread keeps four loads in flight (one at a time left the kernel waiting on memory).
// `prefetch_packs` (0: none): the first that many packs of the block's next row are asked into
// L2 before the gradient pass, so that memory reads go on while this row's gradient is written.
#define CE_LOADS 4

// The gradient of eight bf16 logits (pack `at` of the row): scale · (softmax − onehot(t)).
__device__ __forceinline__ uint4 gradient_pack(const uint4 raw, int at, float l, float scale, u32 t) {
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
    uint4 out;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 f = __bfloat1622float2(pairs[j]);
        const int col = 8 * at + 2 * j;
        const float a = scale * __expf(f.x - l) - (col == (int)t ? scale : 0.0f);
        const float b = scale * __expf(f.y - l) - (col + 1 == (int)t ? scale : 0.0f);
        o[j] = __floats2bfloat162_rn(a, b);
    }
    return out;
}

// KEEP_ROW (`DSLLM_CE_SHARED=1`): the first pass also stores the row in shared memory
// (vocab · 2 bytes: 200 KiB for 102,400 tokens, one block an SM) and the gradient pass reads it
// from there rather than from L2, which 132 rows of 200 KB being read at once overfill. Each
// thread reads back only the packs it stored, so no barrier guards the row.
template <bool KEEP_ROW>
__device__ void cross_entropy_rows_bf16(float* losses, float* lse, __nv_bfloat16* grad, const __nv_bfloat16* logits,
                                        const u32* targets, int vocab, float scale, int rows, int prefetch_packs) {
    extern __shared__ __align__(16) uint4 ce_kept_row[];
    for (u64 row = blockIdx.x; row < (u64)rows; row += gridDim.x) {
        if (vocab % 8 != 0) {
            cross_entropy_chunk_row(row, losses, lse, grad, logits, targets, vocab, scale);
            continue;
        }
        const uint4* x = reinterpret_cast<const uint4*>(logits + row * vocab);
        const int packs = vocab / 8, step = blockDim.x;
        float m = -INFINITY, s = 0.0f;
        int p = threadIdx.x;
        for (; p + (CE_LOADS - 1) * step < packs; p += CE_LOADS * step) {
            uint4 raw[CE_LOADS];
#pragma unroll
            for (int u = 0; u < CE_LOADS; u++) raw[u] = x[p + u * step];
#pragma unroll
            for (int u = 0; u < CE_LOADS; u++) {
                if (KEEP_ROW) ce_kept_row[p + u * step] = raw[u];
                add_pack_to_max_sum(raw[u], m, s);
            }
        }
        for (; p < packs; p += step) {
            const uint4 raw = x[p];
            if (KEEP_ROW) ce_kept_row[p] = raw;
            add_pack_to_max_sum(raw, m, s);
        }
        const float l = block_lse(m, s);
        const u32 t = targets[row];
        if (threadIdx.x == 0) {
            lse[row] = l;
            losses[row] = t == IGNORE_TARGET ? 0.0f : l - __bfloat162float(logits[row * vocab + t]);
        }
        const u64 next = row + gridDim.x;
        if (prefetch_packs > 0 && next < (u64)rows) {
            const char* ahead = reinterpret_cast<const char*>(logits + next * vocab);
            const int lines = min(prefetch_packs, packs) / 8;  // 128-byte lines of 8 packs
            for (int q = threadIdx.x; q < lines; q += step) asm volatile("prefetch.global.L2 [%0];" ::"l"(ahead + (u64)q * 128));
        }
        if (!grad) continue;
        uint4* g = reinterpret_cast<uint4*>(grad + row * vocab);
        if (t == IGNORE_TARGET) {
            for (int q = threadIdx.x; q < packs; q += step) g[q] = make_uint4(0, 0, 0, 0);
            continue;
        }
        if (KEEP_ROW) {
            for (int q = threadIdx.x; q < packs; q += step) g[q] = gradient_pack(ce_kept_row[q], q, l, scale, t);
            continue;
        }
        // The gradient pass re-reads the row (from L2), two packs in flight a thread.
        for (int q = threadIdx.x; q < packs; q += 2 * step) {
            uint4 raw[2];
            const bool second = q + step < packs;
            raw[0] = x[q];
            if (second) raw[1] = x[q + step];
            g[q] = gradient_pack(raw[0], q, l, scale, t);
            if (second) g[q + step] = gradient_pack(raw[1], q + step, l, scale, t);
        }
    }
}

extern "C" __global__ void cross_entropy_chunk_bf16(float* losses, float* lse, __nv_bfloat16* grad,
                                                    const __nv_bfloat16* logits, const u32* targets, int vocab,
                                                    float scale, int rows, int prefetch_packs) {
    cross_entropy_rows_bf16<false>(losses, lse, grad, logits, targets, vocab, scale, rows, prefetch_packs);
}

// Launched with vocab · 2 bytes of dynamic shared memory (the backend checks it fits).
extern "C" __global__ void cross_entropy_chunk_bf16_kept(float* losses, float* lse, __nv_bfloat16* grad,
                                                         const __nv_bfloat16* logits, const u32* targets, int vocab,
                                                         float scale, int rows, int prefetch_packs) {
    cross_entropy_rows_bf16<true>(losses, lse, grad, logits, targets, vocab, scale, rows, prefetch_packs);
}

// `shadow` (may be null): the gradient rounded to bf16 as well, the lm_head GEMMs' operand.
extern "C" __global__ void cross_entropy_backward(float* logits, const float* lse, const u32* targets, int vocab,
                                                  float scale, __nv_bfloat16* shadow) {
    const u64 row = blockIdx.x;
    float* x = logits + row * vocab;
    const u32 t = targets[row];
    const float l = lse[row];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float g = 0.0f;
        if (t != IGNORE_TARGET) g = scale * __expf(x[j] - l) - (j == (int)t ? scale : 0.0f);
        x[j] = g;
        if (shadow) shadow[row * vocab + j] = __float2bfloat16_rn(g);
    }
}

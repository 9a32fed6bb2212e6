// Rotate-half RoPE fused with the split of the q/k/v product: forward reads each token's row of
// qkv[tokens, q_dim + 2 kv_dim] and writes q[batch, seq, heads, head_dim] and k rotated and v
// as is; backward gathers dQ and dK rotated back (direction -1, the transpose) and dV into the
// rows of d_qkv, the stacked product's output gradient. The table is cos[seq, half] followed by
// sin[seq, half]. One kernel moves between a "source" and a "destination" side, each given as
// q, k and v's addresses and row strides (in values), so the same code splits and gathers.
// Index math is 32-bit (the backend checks the sizes): 64-bit divisions cost more than the
// memory traffic of these kernels.

__device__ __forceinline__ float rope_load(const float* p) { return *p; }
__device__ __forceinline__ float rope_load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void rope_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void rope_store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// A thread takes eight neighbouring pairs (i, i + half) of one head of one token: 16-byte loads
// and stores where half the head size is a multiple of 8 (every usual head size) and the rows
// are aligned, else the pairs one by one. V's heads are copied the same way, unrotated.
template <typename In, typename Out>
__device__ void qkv_rope_move(Out* dst_q, Out* dst_k, Out* dst_v, u32 dst_stride_q, u32 dst_stride_kv, const In* src_q,
                              const In* src_k, const In* src_v, u32 src_stride_q, u32 src_stride_kv, const float* table,
                              int seq, int heads, int kv_heads, int head_dim, u32 groups, float direction) {
    const u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups) return;
    const u32 half = head_dim / 2, per_head = (half + 7) / 8, slots = heads + 2 * kv_heads;
    const u32 token = g / (slots * per_head);
    const u32 rest = g - token * slots * per_head;
    const u32 slot = rest / per_head, first = (rest - slot * per_head) * 8;
    const In* src;
    Out* dst;
    bool rotate = true;
    if (slot < (u32)heads) {
        src = src_q + (u64)token * src_stride_q + slot * head_dim;
        dst = dst_q + (u64)token * dst_stride_q + slot * head_dim;
    } else if (slot < (u32)(heads + kv_heads)) {
        src = src_k + (u64)token * src_stride_kv + (slot - heads) * head_dim;
        dst = dst_k + (u64)token * dst_stride_kv + (slot - heads) * head_dim;
    } else {
        src = src_v + (u64)token * src_stride_kv + (slot - heads - kv_heads) * head_dim;
        dst = dst_v + (u64)token * dst_stride_kv + (slot - heads - kv_heads) * head_dim;
        rotate = false;
    }
    const u32 t = token % seq;
    const float *cos_row = table + t * half, *sin_row = table + (u64)seq * half + t * half;
    if (half % 8 == 0 && aligned16(src) && aligned16(dst)) {
        float a[8], b[8];
        load8(a, src + first);
        load8(b, src + first + half);
        if (rotate) {
            float c[8], s[8], ra[8], rb[8];
            load8(c, cos_row + first);
            load8(s, sin_row + first);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float sj = direction * s[j];
                ra[j] = a[j] * c[j] - b[j] * sj;
                rb[j] = b[j] * c[j] + a[j] * sj;
            }
            store8(dst + first, ra);
            store8(dst + first + half, rb);
        } else {
            store8(dst + first, a);
            store8(dst + first + half, b);
        }
        return;
    }
    for (u32 i = first; i < first + 8 && i < half; i++) {
        const float a = rope_load(src + i), b = rope_load(src + i + half);
        if (rotate) {
            const float c = cos_row[i], s = direction * sin_row[i];
            rope_store(dst + i, a * c - b * s);
            rope_store(dst + i + half, b * c + a * s);
        } else {
            rope_store(dst + i, a);
            rope_store(dst + i + half, b);
        }
    }
}

// The entry points, by (source, destination) value type: bf16 both ways in mixed precision
// (the product's bf16 output in, bf16 q/k/v for attention out; bf16 dQ/dK/dV from cuDNN in,
// bf16 d_qkv for the products out), fp32 where fp32 is kept.
#define QKV_ROPE(name, In, Out)                                                                                     \
    extern "C" __global__ void name(Out* dst_q, Out* dst_k, Out* dst_v, u32 dst_stride_q, u32 dst_stride_kv,        \
                                    const In* src_q, const In* src_k, const In* src_v, u32 src_stride_q,            \
                                    u32 src_stride_kv, const float* table, int seq, int heads, int kv_heads,         \
                                    int head_dim, u32 groups, float direction) {                                     \
        qkv_rope_move<In, Out>(dst_q, dst_k, dst_v, dst_stride_q, dst_stride_kv, src_q, src_k, src_v, src_stride_q, \
                               src_stride_kv, table, seq, heads, kv_heads, head_dim, groups, direction);             \
    }
QKV_ROPE(qkv_rope_bf16, __nv_bfloat16, __nv_bfloat16)
QKV_ROPE(qkv_rope_f32, float, float)
QKV_ROPE(qkv_rope_f32_to_bf16, float, __nv_bfloat16)
QKV_ROPE(qkv_rope_bf16_to_f32, __nv_bfloat16, float)

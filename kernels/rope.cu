// Rotate-half RoPE in place on x[batch, seq, heads, head_dim]; direction -1 applies the
// transpose (the backward). The table is cos[seq, half] followed by sin[seq, half].
// Index math is 32-bit (the backend checks the sizes): the 64-bit divisions it replaced cost
// more than the memory traffic of these kernels.

// Pair p: its row's first value, its index i within the half, and the rotation (cos, ±sin).
struct RopePair {
    u64 row_start;
    u32 i, half;
    float c, s;
};

__device__ __forceinline__ RopePair rope_pair(u32 p, const float* table, int seq, int heads, int head_dim, float direction) {
    const u32 half = head_dim / 2;
    const u32 row = p / half;
    const u32 i = p - row * half;
    const u32 t = (row / heads) % seq;
    return {(u64)row * head_dim, i, half, table[t * half + i], direction * table[(u64)seq * half + t * half + i]};
}

// fp32 input; the result goes back into x, or (mixed precision, where only attention or the
// products read it) into `out_bf16` alone when that is not null.
extern "C" __global__ void rope_rotate(float* x, const float* table, int seq, int heads, int head_dim,
                                       u32 pairs, float direction, __nv_bfloat16* out_bf16) {
    const u32 p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const RopePair r = rope_pair(p, table, seq, heads, head_dim, direction);
    float* v = x + r.row_start;
    const float a = v[r.i], b = v[r.i + r.half];
    if (out_bf16) {
        __nv_bfloat16* o = out_bf16 + r.row_start;
        o[r.i] = __float2bfloat16_rn(a * r.c - b * r.s);
        o[r.i + r.half] = __float2bfloat16_rn(b * r.c + a * r.s);
    } else {
        v[r.i] = a * r.c - b * r.s;
        v[r.i + r.half] = b * r.c + a * r.s;
    }
}

// The same rotation in place on bf16 values (q and k from their bf16 products, dQ and dK from
// cuDNN), in fp32 math. A thread takes eight neighbouring pairs of a row: 16-byte loads and
// stores of x and 32-byte ones of the table where half the head size is a multiple of 8 (every
// usual head size), else the pairs one by one.
extern "C" __global__ void rope_rotate_bf16(__nv_bfloat16* x, const float* table, int seq, int heads, int head_dim,
                                            u32 groups, float direction) {
    const u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups) return;
    const u32 half = head_dim / 2, per_row = (half + 7) / 8;
    const u32 row = g / per_row, first = (g - row * per_row) * 8;
    const u32 t = (row / heads) % seq;
    __nv_bfloat16* v = x + (u64)row * head_dim;
    const float *cos_row = table + t * half, *sin_row = table + (u64)seq * half + t * half;
    if (half % 8 == 0 && aligned16(x)) {
        float a[8], b[8], c[8], s[8], ra[8], rb[8];
        load8(a, v + first);
        load8(b, v + first + half);
        const float4 *c4 = reinterpret_cast<const float4*>(cos_row + first), *s4 = reinterpret_cast<const float4*>(sin_row + first);
        const float4 c0 = c4[0], c1 = c4[1], s0 = s4[0], s1 = s4[1];
        c[0] = c0.x, c[1] = c0.y, c[2] = c0.z, c[3] = c0.w, c[4] = c1.x, c[5] = c1.y, c[6] = c1.z, c[7] = c1.w;
        s[0] = s0.x, s[1] = s0.y, s[2] = s0.z, s[3] = s0.w, s[4] = s1.x, s[5] = s1.y, s[6] = s1.z, s[7] = s1.w;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float sj = direction * s[j];
            ra[j] = a[j] * c[j] - b[j] * sj;
            rb[j] = b[j] * c[j] + a[j] * sj;
        }
        store8(v + first, ra);
        store8(v + first + half, rb);
        return;
    }
    for (u32 i = first; i < first + 8 && i < half; i++) {
        const float c = cos_row[i], s = direction * sin_row[i];
        const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + half]);
        v[i] = __float2bfloat16_rn(a * c - b * s);
        v[i + half] = __float2bfloat16_rn(b * c + a * s);
    }
}

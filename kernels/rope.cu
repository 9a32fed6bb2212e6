// Rotate-half RoPE in place on x[batch, seq, heads, head_dim]; direction -1 applies the
// transpose (the backward). The table is cos[seq, half] followed by sin[seq, half].

// Pair p: its row's first value, its index i within the half, and the rotation (cos, ±sin).
struct RopePair {
    u64 row_start;
    int i, half;
    float c, s;
};

__device__ __forceinline__ RopePair rope_pair(u64 p, const float* table, int seq, int heads, int head_dim, float direction) {
    const int half = head_dim / 2;
    const u64 row = p / half;
    const int i = p % half;
    const int t = (row / heads) % seq;
    return {row * head_dim, i, half, table[t * half + i], direction * table[(u64)seq * half + t * half + i]};
}

// fp32 input; the result goes back into x, or (mixed precision, where only attention or the
// products read it) into `out_bf16` alone when that is not null.
extern "C" __global__ void rope_rotate(float* x, const float* table, int seq, int heads, int head_dim,
                                       u64 pairs, float direction, __nv_bfloat16* out_bf16) {
    const u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
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

// The same rotation in place on bf16 values (the bf16 output of the q/k products), in fp32 math.
extern "C" __global__ void rope_rotate_bf16(__nv_bfloat16* x, const float* table, int seq, int heads, int head_dim,
                                            u64 pairs, float direction) {
    const u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const RopePair r = rope_pair(p, table, seq, heads, head_dim, direction);
    __nv_bfloat16* v = x + r.row_start;
    const float a = __bfloat162float(v[r.i]), b = __bfloat162float(v[r.i + r.half]);
    v[r.i] = __float2bfloat16_rn(a * r.c - b * r.s);
    v[r.i + r.half] = __float2bfloat16_rn(b * r.c + a * r.s);
}

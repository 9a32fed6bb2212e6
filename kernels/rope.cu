// Rotate-half RoPE in place on x[batch, seq, heads, head_dim]; direction -1 applies the
// transpose (the backward). The table is cos[seq, half] followed by sin[seq, half].

// fp32 input; the result goes back into x, or (mixed precision, where only attention or the
// products read it) into `out_bf16` alone when that is not null.
extern "C" __global__ void rope_rotate(float* x, const float* table, int seq, int heads, int head_dim,
                                       u64 pairs, float direction, __nv_bfloat16* out_bf16) {
    const u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const int half = head_dim / 2;
    const u64 row = p / half;
    const int i = p % half;
    const int t = (row / heads) % seq;
    const float c = table[t * half + i], s = direction * table[(u64)seq * half + t * half + i];
    float* v = x + row * head_dim;
    const float a = v[i], b = v[i + half];
    if (out_bf16) {
        __nv_bfloat16* o = out_bf16 + row * head_dim;
        o[i] = __float2bfloat16_rn(a * c - b * s);
        o[i + half] = __float2bfloat16_rn(b * c + a * s);
    } else {
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

// The same rotation in place on bf16 values (the bf16 output of the q/k products), in fp32 math.
extern "C" __global__ void rope_rotate_bf16(__nv_bfloat16* x, const float* table, int seq, int heads, int head_dim,
                                            u64 pairs, float direction) {
    const u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const int half = head_dim / 2;
    const u64 row = p / half;
    const int i = p % half;
    const int t = (row / heads) % seq;
    const float c = table[t * half + i], s = direction * table[(u64)seq * half + t * half + i];
    __nv_bfloat16* v = x + row * head_dim;
    const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + half]);
    v[i] = __float2bfloat16_rn(a * c - b * s);
    v[i + half] = __float2bfloat16_rn(b * c + a * s);
}

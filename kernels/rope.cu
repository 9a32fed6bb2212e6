// Rotate-half RoPE in place on x[batch, seq, heads, head_dim]; direction -1 applies the
// transpose (the backward). The table is cos[seq, half] followed by sin[seq, half].

extern "C" __global__ void rope_rotate(float* x, const float* table, int seq, int heads, int head_dim,
                                       u64 pairs, float direction) {
    const u64 p = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pairs) return;
    const int half = head_dim / 2;
    const u64 row = p / half;
    const int i = p % half;
    const int t = (row / heads) % seq;
    const float c = table[t * half + i], s = direction * table[(u64)seq * half + t * half + i];
    float* v = x + row * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
}

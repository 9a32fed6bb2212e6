// Causal grouped-query attention, flash-attention style: online softmax over key tiles kept in
// shared memory, no seq x seq matrix anywhere, the row log-sum-exp saved for the backward.
// Layout: q, out [batch, seq, heads, head_dim]; k, v [batch, seq, kv_heads, head_dim].
//
// A row (a query, or a key in dK/dV) is handled by head_dim / dpt threads of one warp, each
// holding dpt = min(DPT, head_dim) of its values (loops run to DPT and skip the rest, so the
// arrays stay in registers) at stride head_dim / DPT (so a warp's shared-memory reads fall in
// distinct banks); dot products finish with shuffles inside that group.
// fp32 CUDA cores, not tensor cores: the correct reference the faster version must match.
//
// Packed sequences: with `segments` (one id per position, [batch, seq]) a query sees only the
// keys at or before it with its own id, so documents packed into one row never attend to each
// other (SFT packing). A null `segments` is plain causal attention.

#define DPT 16      // values of a row per thread
#define TILE 32     // keys (forward, dQ) or queries (dK/dV) per shared-memory tile

__device__ __forceinline__ float group_sum(float v, int group) {
    for (int o = group >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// grid (ceil(seq / rows), heads, batch), block rows * head_dim / DPT threads,
// shared 2 * TILE * head_dim floats + TILE segment ids.
extern "C" __global__ void attention_forward(float* out, float* lse, const float* q, const float* k,
                                             const float* v, const unsigned* segments, int seq, int heads,
                                             int kv_heads, int head_dim, float scale) {
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = smem + TILE * head_dim;
    unsigned* kseg = (unsigned*)(vs + TILE * head_dim);
    const int dpt = head_dim < DPT ? head_dim : DPT, tpr = head_dim / dpt, rows = blockDim.x / tpr;
    const int r = threadIdx.x / tpr, s = threadIdx.x % tpr;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads);
    const int t = blockIdx.x * rows + r;
    const bool valid = t < seq;
    const u64 qrow = ((u64)b * seq + (valid ? t : 0)) * heads + h;
    float qr[DPT], acc[DPT];
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) {
        qr[i] = valid ? q[qrow * head_dim + s + i * tpr] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const unsigned qseg = segments && valid ? segments[(u64)b * seq + t] : 0u;
    const int last_query = min(seq - 1, (int)(blockIdx.x + 1) * rows - 1);
    for (int k0 = 0; k0 <= last_query; k0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * head_dim; idx += blockDim.x) {
            const int j = idx / head_dim, d = idx % head_dim, key = k0 + j;
            const u64 at = (((u64)b * seq + key) * kv_heads + g) * head_dim + d;
            ks[idx] = key < seq ? k[at] : 0.0f;
            vs[idx] = key < seq ? v[at] : 0.0f;
        }
        for (int j = threadIdx.x; j < TILE; j += blockDim.x)
            kseg[j] = segments && k0 + j < seq ? segments[(u64)b * seq + k0 + j] : 0u;
        __syncthreads();
        float sc[TILE];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < DPT; i++) if (i < dpt) dot += qr[i] * ks[j * head_dim + s + i * tpr];
            dot = group_sum(dot, tpr);
            sc[j] = (k0 + j <= t && kseg[j] == qseg) ? dot : -INFINITY;
            tile_max = fmaxf(tile_max, sc[j]);
        }
        if (tile_max == -INFINITY) continue;  // every key of this tile is in the row's future
        const float m_new = fmaxf(m, tile_max), correction = __expf(m - m_new);
        l *= correction;
#pragma unroll
        for (int i = 0; i < DPT; i++) if (i < dpt) acc[i] *= correction;
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            const float p = __expf(sc[j] - m_new);
            l += p;
#pragma unroll
            for (int i = 0; i < DPT; i++) if (i < dpt) acc[i] += p * vs[j * head_dim + s + i * tpr];
        }
        m = m_new;
    }
    if (!valid) return;
    const float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) out[qrow * head_dim + s + i * tpr] = acc[i] * inv;
    if (s == 0) lse[qrow] = m + logf(l);
}

// dQ += scale * sum_j P_ij (dP_ij - D_i) k_j with P recomputed from lse, dP = dO V^T and
// D_i = dO_i . O_i, which this kernel also writes for attention_backward_dkdv.
// Same grid, block and shared memory as the forward.
extern "C" __global__ void attention_backward_dq(float* d_q, float* row_dot, const float* d_out, const float* out,
                                                 const float* lse, const float* q, const float* k, const float* v,
                                                 const unsigned* segments, int seq, int heads, int kv_heads,
                                                 int head_dim, float scale) {
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = smem + TILE * head_dim;
    unsigned* kseg = (unsigned*)(vs + TILE * head_dim);
    const int dpt = head_dim < DPT ? head_dim : DPT, tpr = head_dim / dpt, rows = blockDim.x / tpr;
    const int r = threadIdx.x / tpr, s = threadIdx.x % tpr;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads);
    const int t = blockIdx.x * rows + r;
    const bool valid = t < seq;
    const u64 qrow = ((u64)b * seq + (valid ? t : 0)) * heads + h;
    float qr[DPT], dor[DPT], dq[DPT];
    float d_dot = 0.0f;
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) {
        const u64 at = qrow * head_dim + s + i * tpr;
        qr[i] = valid ? q[at] * scale : 0.0f;
        dor[i] = valid ? d_out[at] : 0.0f;
        d_dot += dor[i] * (valid ? out[at] : 0.0f);
        dq[i] = 0.0f;
    }
    d_dot = group_sum(d_dot, tpr);
    const float row_lse = valid ? lse[qrow] : 0.0f;
    if (valid && s == 0) row_dot[qrow] = d_dot;
    const unsigned qseg = segments && valid ? segments[(u64)b * seq + t] : 0u;
    const int last_query = min(seq - 1, (int)(blockIdx.x + 1) * rows - 1);
    for (int k0 = 0; k0 <= last_query; k0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * head_dim; idx += blockDim.x) {
            const int j = idx / head_dim, d = idx % head_dim, key = k0 + j;
            const u64 at = (((u64)b * seq + key) * kv_heads + g) * head_dim + d;
            ks[idx] = key < seq ? k[at] : 0.0f;
            vs[idx] = key < seq ? v[at] : 0.0f;
        }
        for (int j = threadIdx.x; j < TILE; j += blockDim.x)
            kseg[j] = segments && k0 + j < seq ? segments[(u64)b * seq + k0 + j] : 0u;
        __syncthreads();
#pragma unroll 4
        for (int j = 0; j < TILE; j++) {
            float sc = 0.0f, dp = 0.0f;
#pragma unroll
            for (int i = 0; i < DPT; i++) if (i < dpt) {
                sc += qr[i] * ks[j * head_dim + s + i * tpr];
                dp += dor[i] * vs[j * head_dim + s + i * tpr];
            }
            sc = group_sum(sc, tpr);
            dp = group_sum(dp, tpr);
            const float p = (k0 + j <= t && kseg[j] == qseg) ? __expf(sc - row_lse) : 0.0f;
            const float ds = p * (dp - d_dot);
#pragma unroll
            for (int i = 0; i < DPT; i++) if (i < dpt) dq[i] += ds * ks[j * head_dim + s + i * tpr];
        }
    }
    if (!valid) return;
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) d_q[qrow * head_dim + s + i * tpr] += scale * dq[i];
}

// dK += scale * sum_i dS_ij q_i and dV += sum_i P_ij dO_i over the queries i >= j of every
// query head that reads this K/V head. grid (ceil(seq / rows), kv_heads, batch), block
// rows * head_dim / DPT threads, shared 2 * TILE * head_dim + 3 * TILE floats.
extern "C" __global__ void attention_backward_dkdv(float* d_k, float* d_v, const float* d_out, const float* lse,
                                                   const float* row_dot, const float* q, const float* k,
                                                   const float* v, const unsigned* segments, int seq, int heads,
                                                   int kv_heads, int head_dim, float scale) {
    extern __shared__ float smem[];
    float* qs = smem;
    float* dos = smem + TILE * head_dim;
    float* lses = dos + TILE * head_dim;
    float* dots = lses + TILE;
    unsigned* qsegs = (unsigned*)(dots + TILE);
    const int dpt = head_dim < DPT ? head_dim : DPT, tpr = head_dim / dpt, rows = blockDim.x / tpr;
    const int r = threadIdx.x / tpr, s = threadIdx.x % tpr;
    const int b = blockIdx.z, g = blockIdx.y, group = heads / kv_heads;
    const int first_key = blockIdx.x * rows;
    const int key = first_key + r;
    const bool valid = key < seq;
    const u64 krow = ((u64)b * seq + (valid ? key : 0)) * kv_heads + g;
    const unsigned kseg = segments && valid ? segments[(u64)b * seq + key] : 0u;
    float kr[DPT], vr[DPT], dk[DPT], dv[DPT];
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) {
        kr[i] = valid ? k[krow * head_dim + s + i * tpr] * scale : 0.0f;
        vr[i] = valid ? v[krow * head_dim + s + i * tpr] : 0.0f;
        dk[i] = 0.0f;
        dv[i] = 0.0f;
    }
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int q0 = first_key; q0 < seq; q0 += TILE) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < TILE * head_dim; idx += blockDim.x) {
                const int i = idx / head_dim, d = idx % head_dim, query = q0 + i;
                const u64 at = (((u64)b * seq + query) * heads + h) * head_dim + d;
                qs[idx] = query < seq ? q[at] : 0.0f;
                dos[idx] = query < seq ? d_out[at] : 0.0f;
            }
            for (int i = threadIdx.x; i < TILE; i += blockDim.x) {
                const int query = q0 + i;
                const u64 at = ((u64)b * seq + query) * heads + h;
                lses[i] = query < seq ? lse[at] : 0.0f;
                dots[i] = query < seq ? row_dot[at] : 0.0f;
                qsegs[i] = segments && query < seq ? segments[(u64)b * seq + query] : 0u;
            }
            __syncthreads();
#pragma unroll 4
            for (int i = 0; i < TILE; i++) {
                float qi[DPT], doi[DPT];
                float sc = 0.0f, dp = 0.0f;
#pragma unroll
                for (int x = 0; x < DPT; x++) if (x < dpt) {
                    qi[x] = qs[i * head_dim + s + x * tpr];
                    doi[x] = dos[i * head_dim + s + x * tpr];
                    sc += kr[x] * qi[x];
                    dp += vr[x] * doi[x];
                }
                sc = group_sum(sc, tpr);
                dp = group_sum(dp, tpr);
                const int query = q0 + i;
                const float p = (query >= key && query < seq && qsegs[i] == kseg) ? __expf(sc - lses[i]) : 0.0f;
                const float ds = p * (dp - dots[i]);
#pragma unroll
                for (int x = 0; x < DPT; x++) if (x < dpt) {
                    dv[x] += p * doi[x];
                    dk[x] += ds * qi[x];
                }
            }
        }
    }
    if (!valid) return;
#pragma unroll
    for (int i = 0; i < DPT; i++) if (i < dpt) {
        d_k[krow * head_dim + s + i * tpr] += scale * dk[i];
        d_v[krow * head_dim + s + i * tpr] += dv[i];
    }
}

// The row log-sum-exp between our layout [batch, seq, heads] and cuDNN's Stats layout
// [batch, heads, seq]: out[b, c, r] = in[b, r, c] for in of shape [batch, rows, cols].
extern "C" __global__ void transpose_last_two(float* __restrict__ out, const float* __restrict__ in, int batch, int rows, int cols) {
    const u64 per = (u64)rows * cols;
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (u64)batch * per) return;
    const u64 b = i / per, at = i % per;
    const u64 c = at / rows, r = at % rows;
    out[i] = in[b * per + r * cols + c];
}

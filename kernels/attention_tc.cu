// Causal grouped-query attention on the tensor cores (WMMA, bf16 operands, fp32 accumulation),
// flash-attention style: 64 x 64 tiles in shared memory, online softmax, no seq x seq matrix.
// Same contract as attention.cu (the fp32 reference): layouts [batch, seq, heads, head_dim],
// the row log-sum-exp saved by the forward, gradients added into d_q, d_k, d_v.
//
// A block is 4 warps over 64 rows; each warp owns 16 rows of every tile it computes. Tiles are
// read from the fp32 buffers and rounded to bf16 on the way into shared memory. Products go
// through smem-resident fp32 accumulators (WMMA fragments hide their row mapping, and the
// online softmax must rescale rows). Shared-memory rows are padded against bank conflicts.
#include <mma.h>

typedef __nv_bfloat16 bf16;
#define TC_TILE 64

// C[16, 16 * NF] (+)= A[16, K] . B[K, 16 * NF] for one warp; A row-major (lda); B element
// (k, n) at b[n * ldb + k] if B_TRANSPOSED (B stored as [n][k]), else at b[k * ldb + n];
// C fp32 row-major (ldc).
template <bool B_TRANSPOSED, int K, int NF>
__device__ __forceinline__ void warp_mma(float* c, int ldc, const bf16* a, int lda, const bf16* b, int ldb,
                                         bool accumulate) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[K / 16];
#pragma unroll
    for (int k = 0; k < K / 16; k++) wmma::load_matrix_sync(fa[k], a + k * 16, lda);
#pragma unroll
    for (int f = 0; f < NF; f++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        if (accumulate) wmma::load_matrix_sync(acc, c + f * 16, ldc, wmma::mem_row_major);
        else wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < K / 16; k++) {
            if (B_TRANSPOSED) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fb, b + f * 16 * ldb + k * 16, ldb);
                wmma::mma_sync(acc, fa[k], fb, acc);
            } else {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, b + k * 16 * ldb + f * 16, ldb);
                wmma::mma_sync(acc, fa[k], fb, acc);
            }
        }
        wmma::store_matrix_sync(c + f * 16, acc, ldc, wmma::mem_row_major);
    }
}

// Rows row0 .. row0 + 63 of head `head` of x[batch, seq, nheads, HD], times `scale`, as bf16
// into dst[64][ld]; rows past the end are zeros.
template <int HD>
__device__ __forceinline__ void load_tile(bf16* dst, int ld, const float* x, int b, int row0, int seq, int nheads,
                                          int head, float scale) {
    for (int idx = threadIdx.x; idx < TC_TILE * HD / 4; idx += blockDim.x) {
        const int r = idx / (HD / 4), c = (idx % (HD / 4)) * 4, t = row0 + r;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t < seq) v = *reinterpret_cast<const float4*>(x + (((u64)b * seq + t) * nheads + head) * HD + c);
        bf16* d = dst + r * ld + c;
        d[0] = __float2bfloat16_rn(v.x * scale);
        d[1] = __float2bfloat16_rn(v.y * scale);
        d[2] = __float2bfloat16_rn(v.z * scale);
        d[3] = __float2bfloat16_rn(v.w * scale);
    }
}

// Shared-memory strides (elements): bf16 [64][HD], fp32 [64][64], bf16 [64][64], fp32 [64][HD].
template <int HD> struct Strides {
    static constexpr int H = HD + 8, S = TC_TILE + 4, P = TC_TILE + 8, O = HD + 4;
    static constexpr int H_BYTES = TC_TILE * H * 2, S_BYTES = TC_TILE * S * 4, P_BYTES = TC_TILE * P * 2,
                         O_BYTES = TC_TILE * O * 4;
};

// grid (ceil(seq / 64), heads, batch), 128 threads, shared: 3 H + P + S + O + 2 * 64 floats.
template <int HD>
__device__ void attention_forward_tc(float* out, float* lse, const float* q, const float* k, const float* v, int seq,
                                     int heads, int kv_heads, float scale) {
    typedef Strides<HD> L;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    unsigned char* smem = tc_smem;
    bf16* qs = (bf16*)smem;
    bf16* ks = (bf16*)(smem + L::H_BYTES);
    bf16* vs = (bf16*)(smem + 2 * L::H_BYTES);
    bf16* ps = (bf16*)(smem + 3 * L::H_BYTES);
    float* ss = (float*)(smem + 3 * L::H_BYTES + L::P_BYTES);
    float* os = (float*)(smem + 3 * L::H_BYTES + L::P_BYTES + L::S_BYTES);
    float* row_m = (float*)(smem + 3 * L::H_BYTES + L::P_BYTES + L::S_BYTES + L::O_BYTES);
    float* row_l = row_m + TC_TILE;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = blockIdx.x * TC_TILE;
    load_tile<HD>(qs, L::H, q, b, q0, seq, heads, h, scale);
    for (int i = threadIdx.x; i < TC_TILE * L::O; i += blockDim.x) os[i] = 0.0f;
    for (int i = threadIdx.x; i < TC_TILE; i += blockDim.x) { row_m[i] = -INFINITY; row_l[i] = 0.0f; }
    // Lane pairs share a row: lane / 2 picks it, lane % 2 the half of the columns.
    const int r = warp * 16 + lane / 2, half = lane & 1, query = q0 + r;
    const int key_end = min(seq, q0 + TC_TILE);
    for (int k0 = 0; k0 < key_end; k0 += TC_TILE) {
        __syncthreads();
        load_tile<HD>(ks, L::H, k, b, k0, seq, kv_heads, g, 1.0f);
        load_tile<HD>(vs, L::H, v, b, k0, seq, kv_heads, g, 1.0f);
        __syncthreads();
        warp_mma<true, HD, 4>(ss + warp * 16 * L::S, L::S, qs + warp * 16 * L::H, L::H, ks, L::H, false);
        __syncwarp();
        float* srow = ss + r * L::S + half * 32;
        float mx = -INFINITY;
#pragma unroll 8
        for (int c = 0; c < 32; c++) {
            const int key = k0 + half * 32 + c;
            const float s = (key <= query && key < seq) ? srow[c] : -INFINITY;
            srow[c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_old = row_m[r], m_new = fmaxf(m_old, mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float correction = __expf(m_old - m_use);
        float sum = 0.0f;
        bf16* prow = ps + r * L::P + half * 32;
#pragma unroll 8
        for (int c = 0; c < 32; c++) {
            const float p = __expf(srow[c] - m_use);
            prow[c] = __float2bfloat16_rn(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        float* orow = os + r * L::O + half * (HD / 2);
        for (int d = 0; d < HD / 2; d++) orow[d] *= correction;
        __syncwarp();
        if (half == 0) { row_m[r] = m_new; row_l[r] = row_l[r] * correction + sum; }
        __syncwarp();
        warp_mma<false, TC_TILE, HD / 16>(os + warp * 16 * L::O, L::O, ps + warp * 16 * L::P, L::P, vs, L::H, true);
    }
    __syncwarp();
    for (int i = lane; i < 16 * HD; i += 32) {
        const int rr = warp * 16 + i / HD, d = i % HD, t = q0 + rr;
        if (t < seq) out[(((u64)b * seq + t) * heads + h) * HD + d] = os[rr * L::O + d] / row_l[rr];
    }
    if (lane < 16) {
        const int rr = warp * 16 + lane, t = q0 + rr;
        if (t < seq) lse[((u64)b * seq + t) * heads + h] = row_m[rr] + logf(row_l[rr]);
    }
}

// row_dot[row] = dO[row] . O[row] over head_dim, one warp a (position, head) row.
extern "C" __global__ void attention_row_dot(float* row_dot, const float* d_out, const float* out, u64 rows,
                                             int head_dim) {
    const u64 row = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float acc = 0.0f;
    for (int d = lane; d < head_dim; d += 32) acc += d_out[row * head_dim + d] * out[row * head_dim + d];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) row_dot[row] = acc;
}

// The same where dO or O (or both) are stored in bf16 alone (mixed precision): each comes as an
// fp32 pointer or, when that is null, a bf16 one.
extern "C" __global__ void attention_row_dot_mixed(float* row_dot, const float* d_out, const bf16* d_out_bf16,
                                                   const float* out, const bf16* out_bf16, u64 rows, int head_dim) {
    const u64 row = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float acc = 0.0f;
    for (int d = lane; d < head_dim; d += 32) {
        const u64 at = row * head_dim + d;
        acc += (d_out ? d_out[at] : __bfloat162float(d_out_bf16[at])) * (out ? out[at] : __bfloat162float(out_bf16[at]));
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) row_dot[row] = acc;
}

// dQ += scale * dS K with dS = P (dP - D), P = exp(S - lse), dP = dO V^T, per 64-query block.
// grid (ceil(seq / 64), heads, batch), 128 threads, shared: 4 H + 2 S + P + O + 2 * 64 floats.
template <int HD>
__device__ void attention_backward_dq_tc(float* d_q, const float* d_out, const float* lse, const float* row_dot,
                                         const float* q, const float* k, const float* v, int seq, int heads,
                                         int kv_heads, float scale) {
    typedef Strides<HD> L;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    unsigned char* smem = tc_smem;
    bf16* qs = (bf16*)smem;
    bf16* dos = (bf16*)(smem + L::H_BYTES);
    bf16* ks = (bf16*)(smem + 2 * L::H_BYTES);
    bf16* vs = (bf16*)(smem + 3 * L::H_BYTES);
    float* ss = (float*)(smem + 4 * L::H_BYTES);
    float* dps = (float*)(smem + 4 * L::H_BYTES + L::S_BYTES);
    bf16* dss = (bf16*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES);
    float* dqs = (float*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + L::P_BYTES);
    float* lses = (float*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + L::P_BYTES + L::O_BYTES);
    float* dots = lses + TC_TILE;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = blockIdx.x * TC_TILE;
    load_tile<HD>(qs, L::H, q, b, q0, seq, heads, h, scale);
    load_tile<HD>(dos, L::H, d_out, b, q0, seq, heads, h, 1.0f);
    for (int i = threadIdx.x; i < TC_TILE * L::O; i += blockDim.x) dqs[i] = 0.0f;
    for (int i = threadIdx.x; i < TC_TILE; i += blockDim.x) {
        const int t = q0 + i;
        const u64 at = ((u64)b * seq + t) * heads + h;
        lses[i] = t < seq ? lse[at] : 0.0f;
        dots[i] = t < seq ? row_dot[at] : 0.0f;
    }
    const int r = warp * 16 + lane / 2, half = lane & 1, query = q0 + r;
    const int key_end = min(seq, q0 + TC_TILE);
    for (int k0 = 0; k0 < key_end; k0 += TC_TILE) {
        __syncthreads();
        load_tile<HD>(ks, L::H, k, b, k0, seq, kv_heads, g, 1.0f);
        load_tile<HD>(vs, L::H, v, b, k0, seq, kv_heads, g, 1.0f);
        __syncthreads();
        warp_mma<true, HD, 4>(ss + warp * 16 * L::S, L::S, qs + warp * 16 * L::H, L::H, ks, L::H, false);
        warp_mma<true, HD, 4>(dps + warp * 16 * L::S, L::S, dos + warp * 16 * L::H, L::H, vs, L::H, false);
        __syncwarp();
        const float row_lse = lses[r], row_d = dots[r];
#pragma unroll 8
        for (int c = 0; c < 32; c++) {
            const int col = half * 32 + c, key = k0 + col;
            const float p = (key <= query && key < seq) ? __expf(ss[r * L::S + col] - row_lse) : 0.0f;
            dss[r * L::P + col] = __float2bfloat16_rn(p * (dps[r * L::S + col] - row_d));
        }
        __syncwarp();
        warp_mma<false, TC_TILE, HD / 16>(dqs + warp * 16 * L::O, L::O, dss + warp * 16 * L::P, L::P, ks, L::H, true);
    }
    __syncwarp();
    for (int i = lane; i < 16 * HD; i += 32) {
        const int rr = warp * 16 + i / HD, d = i % HD, t = q0 + rr;
        if (t < seq) d_q[(((u64)b * seq + t) * heads + h) * HD + d] += scale * dqs[rr * L::O + d];
    }
}

// dV += P^T dO and dK += scale * dS^T Q over the queries at or after each key, for every query
// head reading this K/V head. grid (ceil(seq / 64), kv_heads, batch), 128 threads, shared:
// 4 H + 2 S + 2 P + 2 O + 2 * 64 floats.
template <int HD>
__device__ void attention_backward_dkdv_tc(float* d_k, float* d_v, const float* d_out, const float* lse,
                                           const float* row_dot, const float* q, const float* k, const float* v,
                                           int seq, int heads, int kv_heads, float scale) {
    typedef Strides<HD> L;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    unsigned char* smem = tc_smem;
    bf16* ks = (bf16*)smem;
    bf16* vs = (bf16*)(smem + L::H_BYTES);
    bf16* qs = (bf16*)(smem + 2 * L::H_BYTES);
    bf16* dos = (bf16*)(smem + 3 * L::H_BYTES);
    float* st = (float*)(smem + 4 * L::H_BYTES);
    float* dpt = (float*)(smem + 4 * L::H_BYTES + L::S_BYTES);
    bf16* pt = (bf16*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES);
    bf16* dst = (bf16*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + L::P_BYTES);
    float* dks = (float*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + 2 * L::P_BYTES);
    float* dvs = (float*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + 2 * L::P_BYTES + L::O_BYTES);
    float* lses = (float*)(smem + 4 * L::H_BYTES + 2 * L::S_BYTES + 2 * L::P_BYTES + 2 * L::O_BYTES);
    float* dots = lses + TC_TILE;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int b = blockIdx.z, g = blockIdx.y, group = heads / kv_heads, k0 = blockIdx.x * TC_TILE;
    load_tile<HD>(ks, L::H, k, b, k0, seq, kv_heads, g, scale);
    load_tile<HD>(vs, L::H, v, b, k0, seq, kv_heads, g, 1.0f);
    for (int i = threadIdx.x; i < TC_TILE * L::O; i += blockDim.x) { dks[i] = 0.0f; dvs[i] = 0.0f; }
    const int r = warp * 16 + lane / 2, half = lane & 1, key = k0 + r;
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int q0 = k0; q0 < seq; q0 += TC_TILE) {
            __syncthreads();
            load_tile<HD>(qs, L::H, q, b, q0, seq, heads, h, 1.0f);
            load_tile<HD>(dos, L::H, d_out, b, q0, seq, heads, h, 1.0f);
            for (int i = threadIdx.x; i < TC_TILE; i += blockDim.x) {
                const int t = q0 + i;
                const u64 at = ((u64)b * seq + t) * heads + h;
                lses[i] = t < seq ? lse[at] : 0.0f;
                dots[i] = t < seq ? row_dot[at] : 0.0f;
            }
            __syncthreads();
            warp_mma<true, HD, 4>(st + warp * 16 * L::S, L::S, ks + warp * 16 * L::H, L::H, qs, L::H, false);
            warp_mma<true, HD, 4>(dpt + warp * 16 * L::S, L::S, vs + warp * 16 * L::H, L::H, dos, L::H, false);
            __syncwarp();
#pragma unroll 8
            for (int c = 0; c < 32; c++) {
                const int col = half * 32 + c, query = q0 + col;
                const float p = (query >= key && query < seq) ? __expf(st[r * L::S + col] - lses[col]) : 0.0f;
                pt[r * L::P + col] = __float2bfloat16_rn(p);
                dst[r * L::P + col] = __float2bfloat16_rn(p * (dpt[r * L::S + col] - dots[col]));
            }
            __syncwarp();
            warp_mma<false, TC_TILE, HD / 16>(dvs + warp * 16 * L::O, L::O, pt + warp * 16 * L::P, L::P, dos, L::H, true);
            warp_mma<false, TC_TILE, HD / 16>(dks + warp * 16 * L::O, L::O, dst + warp * 16 * L::P, L::P, qs, L::H, true);
        }
    }
    __syncwarp();
    for (int i = lane; i < 16 * HD; i += 32) {
        const int rr = warp * 16 + i / HD, d = i % HD, t = k0 + rr;
        if (t < seq) {
            const u64 at = (((u64)b * seq + t) * kv_heads + g) * HD + d;
            d_k[at] += scale * dks[rr * L::O + d];
            d_v[at] += dvs[rr * L::O + d];
        }
    }
}

#define TC_ENTRY_POINTS(HD)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attention_forward_tc##HD(                                  \
        float* out, float* lse, const float* q, const float* k, const float* v, int seq, int heads, int kv_heads, \
        float scale) {                                                                                           \
        attention_forward_tc<HD>(out, lse, q, k, v, seq, heads, kv_heads, scale);                                \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_dq_tc##HD(                              \
        float* d_q, const float* d_out, const float* lse, const float* row_dot, const float* q, const float* k,   \
        const float* v, int seq, int heads, int kv_heads, float scale) {                                         \
        attention_backward_dq_tc<HD>(d_q, d_out, lse, row_dot, q, k, v, seq, heads, kv_heads, scale);            \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_dkdv_tc##HD(                            \
        float* d_k, float* d_v, const float* d_out, const float* lse, const float* row_dot, const float* q,      \
        const float* k, const float* v, int seq, int heads, int kv_heads, float scale) {                         \
        attention_backward_dkdv_tc<HD>(d_k, d_v, d_out, lse, row_dot, q, k, v, seq, heads, kv_heads, scale);     \
    }

TC_ENTRY_POINTS(64)
TC_ENTRY_POINTS(128)

// Causal grouped-query attention, flash-attention-2 style: mma.sync m16n8k16 (bf16 operands,
// fp32 accumulation), ldmatrix from padded shared-memory tiles, accumulators and the online
// softmax in registers, K/V (or Q/dO) tiles double-buffered with cp.async.
//
// Same contract as attention.cu, except that the gradients overwrite d_q, d_k, d_v (fp32):
// layouts [batch, seq, heads, HD], the row log-sum-exp saved by the forward (natural log). The inputs q, k, v and
// d_out are the bf16 copies of the fp32 buffers (the backend's shadows). A block is 4 warps;
// each warp owns 16 rows of the block's 64 (queries in the forward and dQ, keys in dK/dV).
// dQ and dK/dV are separate kernels, so no atomics: every sum has a fixed order.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 * g + t): A a0 (g, 2t..2t+1), a1 (g + 8,
// 2t..), a2 (g, 2t + 8..), a3 (g + 8, 2t + 8..); B b0 (k 2t..2t+1, n g), b1 (k 2t + 8.., n g);
// C c0, c1 (g, 2t..2t+1), c2, c3 (g + 8, 2t..2t+1). Two C tiles side by side are one A tile.

namespace fa {

typedef __nv_bfloat16 bf16;
constexpr int THREADS = 128;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// c (16 x 8, fp32) += a (16 x 16) . b (16 x 8)
__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo in the low half: the lower column
    return *reinterpret_cast<u32*>(&v);
}

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Rows row0 .. row0 + ROWS - 1 of head `head` of x[batch, seq, nheads, HD] into dst[ROWS][HD + 8]
// (bf16), asynchronously; rows past the end are zeros.
template <int ROWS, int HD>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* x, int b, int row0, int seq, int nheads, int head) {
    constexpr int CHUNKS = HD / 8, LD = HD + 8;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * CHUNKS; i += THREADS) {
        const int r = i / CHUNKS, c = (i % CHUNKS) * 8, t = row0 + r;
        const bool ok = t < seq;
        const bf16* src = x + ((((u64)b * seq + (ok ? t : 0)) * nheads + head) * HD + c);
        cp_async16(smem_addr(dst + r * LD + c), src, ok ? 16 : 0);
    }
}

// A fragment of rows row0 .. row0 + 15, columns col0 .. col0 + 15 of a row-major tile.
__device__ __forceinline__ void load_a(u32* a, const bf16* tile, int ld, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4(a[0], a[1], a[2], a[3], smem_addr(tile + (row0 + (lane & 15)) * ld + col0 + (lane >> 4) * 8));
}

// The same from a tile stored transposed ([k][m]: dS read from dSᵀ), through the transposing load.
__device__ __forceinline__ void load_a_km(u32* a, const bf16* tile, int ld, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4_t(a[0], a[1], a[2], a[3], smem_addr(tile + (col0 + (lane & 7) + ((lane >> 4) & 1) * 8) * ld + row0 + ((lane >> 3) & 1) * 8));
}

__device__ __forceinline__ void atomic_add2(float* at, float x, float y) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(at), make_float2(x, y));
#else
    atomicAdd(at, x);
    atomicAdd(at + 1, y);
#endif
}

// B fragments of two n-tiles (n0 .. n0 + 7 and n0 + 8 .. n0 + 15) over k0 .. k0 + 15 from a tile
// stored [n][k] (B = tileᵀ: K in S = Q Kᵀ).
__device__ __forceinline__ void load_b_nk(u32& b0, u32& b1, u32& b2, u32& b3, const bf16* tile, int ld, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4(b0, b1, b2, b3, smem_addr(tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8));
}

// The same from a tile stored [k][n] (V in O = P V), through the transposing load.
__device__ __forceinline__ void load_b_kn(u32& b0, u32& b1, u32& b2, u32& b3, const bf16* tile, int ld, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4_t(b0, b1, b2, b3, smem_addr(tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8));
}

// acc[16, N] += A[16, K] . tile[N, K]ᵀ, A from registers (K / 16 fragments).
template <int K, int N>
__device__ __forceinline__ void mma_a_regs_nk(float (*acc)[4], const u32 (*a)[4], const bf16* tile, int ld) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            u32 b0, b1, b2, b3;
            load_b_nk(b0, b1, b2, b3, tile, ld, np * 16, kk * 16);
            mma(acc[2 * np], a[kk], b0, b1);
            mma(acc[2 * np + 1], a[kk], b2, b3);
        }
    }
}

// acc[16, N] += A[16, K] . tile[N, K]ᵀ, A read from shared memory (rows a_row0.., ld a_ld).
template <int K, int N>
__device__ __forceinline__ void mma_a_smem_nk(float (*acc)[4], const bf16* a_tile, int a_ld, int a_row0, const bf16* tile,
                                              int ld) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        u32 a[4];
        load_a(a, a_tile, a_ld, a_row0, kk * 16);
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            u32 b0, b1, b2, b3;
            load_b_nk(b0, b1, b2, b3, tile, ld, np * 16, kk * 16);
            mma(acc[2 * np], a, b0, b1);
            mma(acc[2 * np + 1], a, b2, b3);
        }
    }
}

// acc[16, N] += P[16, K] . tile[K, N] with P given as K / 8 C fragments (fp32, rounded to bf16 here).
template <int K, int N>
__device__ __forceinline__ void mma_c_regs_kn(float (*acc)[4], const float (*p)[4], const bf16* tile, int ld) {
#pragma unroll
    for (int kc = 0; kc < K / 16; kc++) {
        const u32 a[4] = {pack(p[2 * kc][0], p[2 * kc][1]), pack(p[2 * kc][2], p[2 * kc][3]),
                          pack(p[2 * kc + 1][0], p[2 * kc + 1][1]), pack(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < N / 16; dp++) {
            u32 b0, b1, b2, b3;
            load_b_kn(b0, b1, b2, b3, tile, ld, dp * 16, kc * 16);
            mma(acc[2 * dp], a, b0, b1);
            mma(acc[2 * dp + 1], a, b2, b3);
        }
    }
}

// One key tile of the online softmax, shared by the fa2 and wgmma forwards: scales S_j (keys
// k0 on, in the mma accumulator layout) into the log2 domain, masking keys after a row or past
// the end when `edge` says the tile may hold any; raises the running row maxima m, and turns S_j
// into P_j = exp2(S_j − m) in place; returns the factors (c_a, c_b) that rescale O and updates
// the row sums l (per-thread partials). Rows row_a, row_b.
template <int BN>
__device__ __forceinline__ float2 online_softmax(float (*s)[4], int k0, bool edge, int row_a, int row_b, int seq, float sl2,
                                                 float& m_a, float& m_b, float& l_a, float& l_b) {
    const int lane = threadIdx.x & 31;
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        if (edge) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + j * 8 + 2 * (lane & 3) + (e & 1), row = e < 2 ? row_a : row_b;
                s[j][e] = (key <= row && key < seq) ? s[j][e] * sl2 : -INFINITY;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] *= sl2;
        }
        mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1]));
        mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
    }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
    const float mu_a = mn_a == -INFINITY ? 0.0f : mn_a, mu_b = mn_b == -INFINITY ? 0.0f : mn_b;
    const float c_a = exp2_approx(m_a - mu_a), c_b = exp2_approx(m_b - mu_b);
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        s[j][0] = exp2_approx(s[j][0] - mu_a);
        s[j][1] = exp2_approx(s[j][1] - mu_a);
        s[j][2] = exp2_approx(s[j][2] - mu_b);
        s[j][3] = exp2_approx(s[j][3] - mu_b);
        sum_a += s[j][0] + s[j][1];
        sum_b += s[j][2] + s[j][3];
    }
    l_a = l_a * c_a + sum_a;
    l_b = l_b * c_b + sum_b;
    m_a = mn_a;
    m_b = mn_b;
    return make_float2(c_a, c_b);
}

// The forward's epilogue (fa2 and wgmma kernels): O / l and the natural-log log-sum-exp of rows
// row_a, row_b (the row sums l are still per-thread partials here). O goes to `out` in fp32, or
// to `out_bf16` alone when that is not null (mixed precision: only products read it).
template <int HD>
__device__ __forceinline__ void store_output(float* out, bf16* out_bf16, float* lse, const float (*o)[4], float m_a,
                                             float m_b, float l_a, float l_b, int b, int h, int row_a, int row_b, int seq,
                                             int heads) {
    const int lane = threadIdx.x & 31;
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
    const int col = 2 * (lane & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = half ? row_b : row_a;
        const float inv = half ? inv_b : inv_a;
        if (row >= seq) continue;
        const u64 at = (((u64)b * seq + row) * heads + h) * HD + col;
        if (out_bf16) {
#pragma unroll
            for (int j = 0; j < HD / 8; j++)
                *reinterpret_cast<__nv_bfloat162*>(out_bf16 + at + j * 8) = __floats2bfloat162_rn(o[j][2 * half] * inv, o[j][2 * half + 1] * inv);
        } else {
#pragma unroll
            for (int j = 0; j < HD / 8; j++) *reinterpret_cast<float2*>(out + at + j * 8) = make_float2(o[j][2 * half] * inv, o[j][2 * half + 1] * inv);
        }
        if ((lane & 3) == 0) lse[((u64)b * seq + row) * heads + h] = ((half ? m_b : m_a) + log2f(half ? l_b : l_a)) * LN2;
    }
}

// Forward: grid (ceil(seq / 64), heads, batch), 128 threads; shared (64 + 4 * 64) * (HD + 8) bf16.
template <int HD>
__device__ __forceinline__ void forward(float* out, bf16* out_bf16, float* lse, const bf16* q, const bf16* k, const bf16* v, int seq,
                                        int heads, int kv_heads, float scale) {
    constexpr int BM = 64, BN = 64, LD = HD + 8;
    extern __shared__ __align__(128) unsigned char fa_smem[];
    bf16* qs = (bf16*)fa_smem;
    bf16* ks = qs + BM * LD;      // [2][BN][LD]
    bf16* vs = ks + 2 * BN * LD;  // [2][BN][LD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt = gridDim.x - 1 - blockIdx.x;  // the longest rows first
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = qt * BM;
    const int n_kt = (min(seq, q0 + BM) + BN - 1) / BN;
    load_tile<BM, HD>(qs, q, b, q0, seq, heads, h);
    load_tile<BN, HD>(ks, k, b, 0, seq, kv_heads, g);
    load_tile<BN, HD>(vs, v, b, 0, seq, kv_heads, g);
    cp_async_commit();

    const float sl2 = scale * LOG2E;
    const int row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
    u32 qf[HD / 16][4];
    float o[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) {
        if (kt + 1 < n_kt) {
            const int nb = (kt + 1) & 1;
            load_tile<BN, HD>(ks + nb * BN * LD, k, b, (kt + 1) * BN, seq, kv_heads, g);
            load_tile<BN, HD>(vs + nb * BN * LD, v, b, (kt + 1) * BN, seq, kv_heads, g);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == 0) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) load_a(qf[kk], qs, LD, warp * 16, kk * 16);
        }
        const bf16* kb = ks + (kt & 1) * BN * LD;
        const bf16* vb = vs + (kt & 1) * BN * LD;
        float s[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        mma_a_regs_nk<HD, BN>(s, qf, kb, LD);

        // Only the tile on the diagonal (the last one) has keys after some row or past the end.
        const float2 c = online_softmax<BN>(s, kt * BN, kt == n_kt - 1, row_a, row_b, seq, sl2, m_a, m_b, l_a, l_b);
        const float c_a = c.x, c_b = c.y;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) {
            o[j][0] *= c_a;
            o[j][1] *= c_a;
            o[j][2] *= c_b;
            o[j][3] *= c_b;
        }
        mma_c_regs_kn<BN, HD>(o, s, vb, LD);
        __syncthreads();  // the next iteration's loads overwrite this buffer
    }
    store_output<HD>(out, out_bf16, lse, o, m_a, m_b, l_a, l_b, b, h, row_a, row_b, seq, heads);
}

// dQ += scale · dS K with dS = P ∘ (dP − D), P = exp(S − lse), dP = dO Vᵀ, per 64 queries.
// grid (ceil(seq / 64), heads, batch), 128 threads; shared (2 * 64 + 4 * BN) * (HD + 8) bf16.
template <int HD, int BN>
__device__ __forceinline__ void backward_dq(float* d_q, const float* lse, const float* row_dot, const bf16* q,
                                            const bf16* k, const bf16* v, const bf16* d_out, int seq, int heads,
                                            int kv_heads, float scale) {
    constexpr int BM = 64, LD = HD + 8;
    extern __shared__ __align__(128) unsigned char fa_smem[];
    bf16* qs = (bf16*)fa_smem;
    bf16* dos = qs + BM * LD;
    bf16* ks = dos + BM * LD;     // [2][BN][LD]
    bf16* vs = ks + 2 * BN * LD;  // [2][BN][LD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = qt * BM;
    const int n_kt = (min(seq, q0 + BM) + BN - 1) / BN;
    load_tile<BM, HD>(qs, q, b, q0, seq, heads, h);
    load_tile<BM, HD>(dos, d_out, b, q0, seq, heads, h);
    load_tile<BN, HD>(ks, k, b, 0, seq, kv_heads, g);
    load_tile<BN, HD>(vs, v, b, 0, seq, kv_heads, g);
    cp_async_commit();

    const float sl2 = scale * LOG2E;
    const int row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
    const float lse_a = row_a < seq ? lse[((u64)b * seq + row_a) * heads + h] * LOG2E : 0.0f;
    const float lse_b = row_b < seq ? lse[((u64)b * seq + row_b) * heads + h] * LOG2E : 0.0f;
    const float d_a = row_a < seq ? row_dot[((u64)b * seq + row_a) * heads + h] : 0.0f;
    const float d_b = row_b < seq ? row_dot[((u64)b * seq + row_b) * heads + h] : 0.0f;
    u32 qf[HD / 16][4], dof[HD / 16][4];
    float dq[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) {
        if (kt + 1 < n_kt) {
            const int nb = (kt + 1) & 1;
            load_tile<BN, HD>(ks + nb * BN * LD, k, b, (kt + 1) * BN, seq, kv_heads, g);
            load_tile<BN, HD>(vs + nb * BN * LD, v, b, (kt + 1) * BN, seq, kv_heads, g);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == 0) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                load_a(qf[kk], qs, LD, warp * 16, kk * 16);
                load_a(dof[kk], dos, LD, warp * 16, kk * 16);
            }
        }
        const bf16* kb = ks + (kt & 1) * BN * LD;
        const bf16* vb = vs + (kt & 1) * BN * LD;
        float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
        }
        mma_a_regs_nk<HD, BN>(s, qf, kb, LD);
        mma_a_regs_nk<HD, BN>(dp, dof, vb, LD);
        const int k0 = kt * BN;
        // Tiles wholly before the block's first query and inside the sequence need no mask.
        const bool edge = k0 + BN - 1 > q0 || k0 + BN > seq;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + j * 8 + 2 * (lane & 3) + (e & 1), row = e < 2 ? row_a : row_b;
                const bool live = !edge || (key <= row && key < seq);
                const float p = live ? exp2_approx(s[j][e] * sl2 - (e < 2 ? lse_a : lse_b)) : 0.0f;
                s[j][e] = p * (dp[j][e] - (e < 2 ? d_a : d_b));  // dS
            }
        }
        mma_c_regs_kn<BN, HD>(dq, s, kb, LD);
        __syncthreads();
    }
    const int col = 2 * (lane & 3);
    if (row_a < seq) {
        float* dst = d_q + (((u64)b * seq + row_a) * heads + h) * HD + col;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) *reinterpret_cast<float2*>(dst + j * 8) = make_float2(scale * dq[j][0], scale * dq[j][1]);
    }
    if (row_b < seq) {
        float* dst = d_q + (((u64)b * seq + row_b) * heads + h) * HD + col;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) *reinterpret_cast<float2*>(dst + j * 8) = make_float2(scale * dq[j][2], scale * dq[j][3]);
    }
}

// dV = Pᵀ dO and dK = scale · dSᵀ Q over the queries at or after each of 64 keys, for every
// query head reading this K/V head, BM queries a step. grid (ceil(seq / 64), kv_heads, batch),
// 128 threads; shared (2 * 64 + 4 * BM) * (HD + 8) bf16 + 4 * BM floats.
// With FUSE_DQ (d_q zeroed by the caller) it also adds scale · dS K into d_q with atomics, as
// FlashAttention-2 does: dS goes through shared memory (another 64 * (BM + 8) bf16) and S, dP
// are computed once instead of again in backward_dq. Atomics make d_q's sums order-dependent.
// With `split_heads` (grouped-query attention) a block serves one query head (grid.y = heads)
// and writes that head's share of dK/dV to d_k/d_v laid out [batch, seq, heads, HD]; the caller
// sums each group's shares in a fixed order (attention_sum_head_groups). More, shorter blocks:
// one K/V head's block otherwise walks all its query heads one after another.
template <int HD, int BM, bool FUSE_DQ>
__device__ __forceinline__ void backward_dkdv(float* d_q, float* d_k, float* d_v, const float* lse, const float* row_dot,
                                              const bf16* q, const bf16* k, const bf16* v, const bf16* d_out, int seq,
                                              int heads, int kv_heads, float scale, int split_heads) {
    constexpr int BN = 64, LD = HD + 8;
    extern __shared__ __align__(128) unsigned char fa_smem[];
    bf16* ks = (bf16*)fa_smem;
    bf16* vs = ks + BN * LD;
    bf16* qs = vs + BN * LD;      // [2][BM][LD]
    bf16* dos = qs + 2 * BM * LD;  // [2][BM][LD]
    float* lses = (float*)(dos + 2 * BM * LD);  // [2][BM], log2 units
    float* dots = lses + 2 * BM;                // [2][BM]
    constexpr int LDS = BM + 8;
    bf16* dss = (bf16*)(dots + 2 * BM);         // [BN][LDS]: dSᵀ of the step (FUSE_DQ)
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int b = blockIdx.z, group = heads / kv_heads, k0 = blockIdx.x * BN;
    const int g = split_heads ? blockIdx.y / group : blockIdx.y, head0 = split_heads ? blockIdx.y : g * group;
    const int qt_first = k0 / BM, n_qt = (seq + BM - 1) / BM - qt_first, steps = (split_heads ? 1 : group) * n_qt;

    // Step i reads query head head0 + i / n_qt, queries (qt_first + i % n_qt) * BM ...
    auto issue = [&](int i, int buf) {
        const int h = head0 + i / n_qt, q0 = (qt_first + i % n_qt) * BM;
        load_tile<BM, HD>(qs + buf * BM * LD, q, b, q0, seq, heads, h);
        load_tile<BM, HD>(dos + buf * BM * LD, d_out, b, q0, seq, heads, h);
        for (int r = threadIdx.x; r < BM; r += THREADS) {
            const int t = q0 + r;
            const u64 at = ((u64)b * seq + t) * heads + h;
            lses[buf * BM + r] = t < seq ? lse[at] * LOG2E : 0.0f;
            dots[buf * BM + r] = t < seq ? row_dot[at] : 0.0f;
        }
    };
    load_tile<BN, HD>(ks, k, b, k0, seq, kv_heads, g);
    load_tile<BN, HD>(vs, v, b, k0, seq, kv_heads, g);
    issue(0, 0);
    cp_async_commit();

    const float sl2 = scale * LOG2E;
    const int key_a = k0 + warp * 16 + (lane >> 2), key_b = key_a + 8;
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) {
        dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.0f;
        dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.0f;
    }
    for (int i = 0; i < steps; i++) {
        if (i + 1 < steps) {
            issue(i + 1, (i + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int buf = i & 1, q0 = (qt_first + i % n_qt) * BM;
        const bf16* qb = qs + buf * BM * LD;
        const bf16* dob = dos + buf * BM * LD;
        const float* lb = lses + buf * BM;
        const float* db = dots + buf * BM;
        float st[BM / 8][4], dpt[BM / 8][4];
#pragma unroll
        for (int j = 0; j < BM / 8; j++) {
            st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.0f;
            dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.0f;
        }
        mma_a_smem_nk<HD, BM>(st, ks, LD, warp * 16, qb, LD);   // Sᵀ = K Qᵀ
        mma_a_smem_nk<HD, BM>(dpt, vs, LD, warp * 16, dob, LD);  // dPᵀ = V dOᵀ
        // Query tiles wholly after the block's last key and inside the sequence need no mask.
        const bool edge = q0 < k0 + BN - 1 || q0 + BM > seq;
#pragma unroll
        for (int j = 0; j < BM / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = j * 8 + 2 * (lane & 3) + (e & 1), query = q0 + c, key = e < 2 ? key_a : key_b;
                const bool live = !edge || (query >= key && query < seq);
                const float p = live ? exp2_approx(st[j][e] * sl2 - lb[c]) : 0.0f;
                st[j][e] = p;
                dpt[j][e] = p * (dpt[j][e] - db[c]);  // dSᵀ
            }
        }
        mma_c_regs_kn<BM, HD>(dv, st, dob, LD);   // dV += Pᵀ dO
        mma_c_regs_kn<BM, HD>(dk, dpt, qb, LD);   // dK += dSᵀ Q
        if constexpr (FUSE_DQ) {
            const int key_row = warp * 16 + (lane >> 2), col = 2 * (lane & 3);
#pragma unroll
            for (int j = 0; j < BM / 8; j++) {
                *reinterpret_cast<u32*>(dss + key_row * LDS + j * 8 + col) = pack(dpt[j][0], dpt[j][1]);
                *reinterpret_cast<u32*>(dss + (key_row + 8) * LDS + j * 8 + col) = pack(dpt[j][2], dpt[j][3]);
            }
            __syncthreads();
            // dQ[BM, HD] += dS[BM, 64 keys] K[64 keys, HD]: warp = (m-tile, column part).
            constexpr int MT = BM / 16, PARTS = 4 / MT, COLS = HD / PARTS;
            const int mt = warp % MT, part = warp / MT;
            float dq[COLS / 8][4];
#pragma unroll
            for (int j = 0; j < COLS / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) {
                u32 a[4];
                load_a_km(a, dss, LDS, mt * 16, kk * 16);
#pragma unroll
                for (int np = 0; np < COLS / 16; np++) {
                    u32 b0, b1, b2, b3;
                    load_b_kn(b0, b1, b2, b3, ks, LD, part * COLS + np * 16, kk * 16);
                    mma(dq[2 * np], a, b0, b1);
                    mma(dq[2 * np + 1], a, b2, b3);
                }
            }
            const int h = head0 + i / n_qt, row_a = q0 + mt * 16 + (lane >> 2), row_b = row_a + 8;
#pragma unroll
            for (int j = 0; j < COLS / 8; j++) {
                const int c = part * COLS + j * 8 + col;
                if (row_a < seq) atomic_add2(d_q + (((u64)b * seq + row_a) * heads + h) * HD + c, scale * dq[j][0], scale * dq[j][1]);
                if (row_b < seq) atomic_add2(d_q + (((u64)b * seq + row_b) * heads + h) * HD + c, scale * dq[j][2], scale * dq[j][3]);
            }
        }
        __syncthreads();
    }
    const int col = 2 * (lane & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int key = half ? key_b : key_a;
        if (key >= seq) continue;
        const u64 at = split_heads ? (((u64)b * seq + key) * heads + head0) * HD + col : (((u64)b * seq + key) * kv_heads + g) * HD + col;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) {
            *reinterpret_cast<float2*>(d_k + at + j * 8) = make_float2(scale * dk[j][2 * half], scale * dk[j][2 * half + 1]);
            *reinterpret_cast<float2*>(d_v + at + j * 8) = make_float2(dv[j][2 * half], dv[j][2 * half + 1]);
        }
    }
}

}  // namespace fa

// Entry points per head size: DQ_BN keys a step in dQ, DKDV_BM queries a step in dK/dV (smaller
// for head_dim 128 so the register accumulators fit without spilling).
#define FA_ENTRY_POINTS(HD, DQ_BN, DKDV_BM)                                                                          \
    extern "C" __global__ void __launch_bounds__(128) attention_forward_fa##HD(                                      \
        float* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, int seq,     \
        int heads, int kv_heads, float scale, __nv_bfloat16* out_bf16) {                                             \
        fa::forward<HD>(out, out_bf16, lse, q, k, v, seq, heads, kv_heads, scale);                                   \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_dq_fa##HD(                                  \
        float* d_q, const float* lse, const float* row_dot, const __nv_bfloat16* q, const __nv_bfloat16* k,          \
        const __nv_bfloat16* v, const __nv_bfloat16* d_out, int seq, int heads, int kv_heads, float scale) {         \
        fa::backward_dq<HD, DQ_BN>(d_q, lse, row_dot, q, k, v, d_out, seq, heads, kv_heads, scale);                  \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_dkdv_fa##HD(                                \
        float* d_k, float* d_v, const float* lse, const float* row_dot, const __nv_bfloat16* q,                      \
        const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_out, int seq, int heads, int kv_heads, \
        float scale, int split_heads) {                                                                              \
        fa::backward_dkdv<HD, DKDV_BM, false>(nullptr, d_k, d_v, lse, row_dot, q, k, v, d_out, seq, heads, kv_heads,  \
                                              scale, split_heads);                                                   \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(128) attention_backward_fused_fa##HD(                               \
        float* d_q, float* d_k, float* d_v, const float* lse, const float* row_dot, const __nv_bfloat16* q,          \
        const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_out, int seq, int heads, int kv_heads, \
        float scale) {                                                                                               \
        fa::backward_dkdv<HD, DKDV_BM, true>(d_q, d_k, d_v, lse, row_dot, q, k, v, d_out, seq, heads, kv_heads,       \
                                             scale, 0);                                                              \
    }

FA_ENTRY_POINTS(64, 64, 64)
FA_ENTRY_POINTS(128, 32, 32)

// out[row, g, :] = Σ_r shares[row, g * group + r, :] over r = 0 .. group - 1 in order: the per
// query head dK or dV shares of the split-heads backward, summed into their K/V head.
extern "C" __global__ void attention_sum_head_groups(float* out, const float* shares, u64 rows, int kv_heads, int group,
                                                     int head_dim) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * kv_heads * head_dim) return;
    const u64 d = i % head_dim, g = (i / head_dim) % kv_heads, row = i / ((u64)head_dim * kv_heads);
    const float* src = shares + ((row * kv_heads + g) * group) * head_dim + d;
    float sum = 0.0f;
    for (int r = 0; r < group; r++) sum += src[(u64)r * head_dim];
    out[i] = sum;
}

// Causal grouped-query attention on Hopper's warpgroup MMA (wgmma, sm_90a): the same three
// kernels and contract as attention_fa.cu (forward; dQ; dK/dV), but each warpgroup of 4 warps
// multiplies 64 rows at a time with operands read by the tensor cores straight from shared
// memory, so there is no ldmatrix traffic through the register file and no Q/K/V fragments
// held in registers. P and dS stay in registers as the A operand (their fp32 accumulator
// layout is the A fragment layout, as in attention_fa.cu). Accumulator fragment of a
// warpgroup's m64nN tile: warp w, lane 4g + t holds d[4j + e] = (row 16w + g + 8 (e >= 2),
// column 8j + 2t + (e & 1)): per warp exactly the mma.sync C layout of attention_fa.cu.
//
// Shared tiles are stored in wgmma's unswizzled "core matrix" layout: 8 x 8 blocks of 128
// contiguous bytes ordered [row block][column block][8 rows][8 columns]. A tile [rows][HD] is
// then K-major when HD is the reduction (Q, K in S = Q Kᵀ) and MN-major when rows are (V in
// O = P V). Built only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the entry points trap
// and the backend never selects them.

namespace wg {

using fa::bf16;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Matrix descriptor of a shared tile in the core-matrix layout (no swizzle, base offset 0):
// start address, leading and stride byte offsets, all in 16-byte units.
__device__ __forceinline__ u64 descriptor(const bf16* tile, u32 leading_bytes, u32 stride_bytes) {
    const u64 address = fa::smem_addr(tile);
    return ((address & 0x3FFFF) >> 4) | ((u64)(leading_bytes >> 4) << 16) | ((u64)(stride_bytes >> 4) << 32);
}

// k-step kk (16 columns) of a tile [rows][HD] whose columns are the reduction (K-major):
// blocks adjacent in k are 128 bytes apart, row blocks HD / 8 * 128.
template <int HD, bool SWAP = false>
__device__ __forceinline__ u64 k_major(const bf16* tile, int kk) {
    return SWAP ? descriptor(tile + kk * 128, HD / 8 * 128, 128) : descriptor(tile + kk * 128, 128, HD / 8 * 128);
}

// k-step kc (16 rows) of a tile [rows][HD] whose rows are the reduction (MN-major, N = HD):
// row blocks (k) are HD / 8 * 128 bytes apart, column blocks (n) 128.
template <int HD, bool SWAP = false>
__device__ __forceinline__ u64 mn_major(const bf16* tile, int kc) {
    return SWAP ? descriptor(tile + kc * 16 * HD, 128, HD / 8 * 128) : descriptor(tile + kc * 16 * HD, HD / 8 * 128, 128);
}

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// cp.async wrote the tiles through the generic proxy; wgmma reads them through the async one.
__device__ __forceinline__ void fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Keeps the compiler from touching accumulators between an MMA's issue and its wait.
template <int N>
__device__ __forceinline__ void pin(float* d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// d[64 x N] (+)= A[64 x 16] . B[16 x N], both from shared memory, B K-major.
template <int N>
__device__ __forceinline__ void mma_ss(float* d, u64 a, u64 b, int accumulate);
// d[64 x N] += A[64 x 16] (registers, the mma.sync A fragment of each warp's 16 rows) . B, B MN-major.
template <int N>
__device__ __forceinline__ void mma_rs(float* d, const u32* a, u64 b);

template <> __device__ __forceinline__ void mma_ss<32>(float* d, u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(a), "l"(b), "r"(accumulate));
}
template <> __device__ __forceinline__ void mma_rs<32>(float* d, const u32* a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
template <> __device__ __forceinline__ void mma_ss<64>(float* d, u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(accumulate));
}
template <> __device__ __forceinline__ void mma_rs<64>(float* d, const u32* a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
template <> __device__ __forceinline__ void mma_ss<128>(float* d, u64 a, u64 b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(a), "l"(b), "r"(accumulate));
}
template <> __device__ __forceinline__ void mma_rs<128>(float* d, const u32* a, u64 b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

#endif

// Rows row0 .. row0 + ROWS - 1 of head `head` of x[batch, seq, nheads, HD] into dst in the
// core-matrix layout, asynchronously; rows past the end are zeros. Consecutive threads fill
// consecutive 16-byte rows of a block (conflict-free), 8 threads cover a row's 32-byte sectors.
template <int ROWS, int HD, int NT>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* x, int b, int row0, int seq, int nheads, int head) {
    constexpr int CB = HD / 8;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * CB; i += NT) {
        const int r = (i >> 3) / CB * 8 + (i & 7), c = (i >> 3) % CB * 8, t = row0 + r;
        const bool ok = t < seq;
        const bf16* src = x + ((((u64)b * seq + (ok ? t : 0)) * nheads + head) * HD + c);
        fa::cp_async16(fa::smem_addr(dst + i * 8), src, ok ? 16 : 0);
    }
}

// The A fragment (16 x 16, bf16) of k-step kc from fp32 accumulator fragments p[8 columns][4].
__device__ __forceinline__ void a_fragment(u32* a, const float (*p)[4], int kc) {
    a[0] = fa::pack(p[2 * kc][0], p[2 * kc][1]);
    a[1] = fa::pack(p[2 * kc][2], p[2 * kc][3]);
    a[2] = fa::pack(p[2 * kc + 1][0], p[2 * kc + 1][1]);
    a[3] = fa::pack(p[2 * kc + 1][2], p[2 * kc + 1][3]);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// One step of a double-buffered loop over `steps` tiles: `issue(i + 1, buffer)` starts the next
// tile's cp.async loads into the other buffer, then this waits for tile i and makes it visible to
// the tensor cores' async proxy and to every thread.
template <class Issue>
__device__ __forceinline__ void next_stage(int i, int steps, Issue issue) {
    if (i + 1 < steps) {
        issue(i + 1, (i + 1) & 1);
        fa::cp_async_commit();
        fa::cp_async_wait<1>();
    } else {
        fa::cp_async_wait<0>();
    }
    fence_proxy();
    __syncthreads();
}

// next_stage over key tiles of K and V (the forward and dQ).
template <int BN, int HD, int NT>
__device__ __forceinline__ void next_kv_tile(bf16* ks, bf16* vs, const bf16* k, const bf16* v, int b, int kt, int n_kt, int seq,
                                             int kv_heads, int g) {
    next_stage(kt, n_kt, [&](int next, int buffer) {
        load_tile<BN, HD, NT>(ks + buffer * BN * HD, k, b, next * BN, seq, kv_heads, g);
        load_tile<BN, HD, NT>(vs + buffer * BN * HD, v, b, next * BN, seq, kv_heads, g);
    });
}

// Forward: WGS warpgroups a block, each 64 query rows; BN keys a step, K/V double-buffered.
// grid (ceil(seq / (64 WGS)), heads, batch), 128 WGS threads; shared (64 WGS + 4 BN) HD bf16.
// SWAP (tuning aid, 0 in the backend): bit 0 swaps the K-major descriptor's byte offsets, bit 1
// the MN-major one's; a device run then shows which reading of the PTX layout rules is right.
template <int HD, int BN, int WGS, int SWAP = 0>
__device__ __forceinline__ void forward(float* out, bf16* out_bf16, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                        int seq, int heads, int kv_heads, float scale) {
    constexpr int BM = 64 * WGS, NT = 128 * WGS;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    bf16* qs = (bf16*)wg_smem;
    bf16* ks = qs + BM * HD;      // [2][BN * HD]
    bf16* vs = ks + 2 * BN * HD;  // [2][BN * HD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, group = warp >> 2;
    const int qt = gridDim.x - 1 - blockIdx.x;  // the longest rows first
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = qt * BM;
    const int n_kt = (min(seq, q0 + BM) + BN - 1) / BN;
    load_tile<BM, HD, NT>(qs, q, b, q0, seq, heads, h);
    load_tile<BN, HD, NT>(ks, k, b, 0, seq, kv_heads, g);
    load_tile<BN, HD, NT>(vs, v, b, 0, seq, kv_heads, g);
    fa::cp_async_commit();

    const float sl2 = scale * fa::LOG2E;
    const int first_row = q0 + group * 64, row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
    const bf16* qg = qs + group * 64 * HD;
    float o[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) {
        next_kv_tile<BN, HD, NT>(ks, vs, k, v, b, kt, n_kt, seq, kv_heads, g);
        const int k0 = kt * BN;
        if (k0 <= first_row + 63) {  // else every key of the tile is after this warpgroup's rows
            const bf16* kb = ks + (kt & 1) * BN * HD;
            const bf16* vb = vs + (kt & 1) * BN * HD;
            float s[BN / 8][4];
            fence();
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) mma_ss<BN>(&s[0][0], k_major<HD, SWAP & 1>(qg, kk), k_major<HD, SWAP & 1>(kb, kk), kk);
            commit();
            wait_all();
            pin<BN / 2>(&s[0][0]);

            const float2 c = fa::online_softmax<BN>(s, k0, k0 + BN - 1 > first_row || k0 + BN > seq, row_a, row_b, seq, sl2, m_a, m_b, l_a, l_b);
            const float c_a = c.x, c_b = c.y;
#pragma unroll
            for (int j = 0; j < HD / 8; j++) {
                o[j][0] *= c_a;
                o[j][1] *= c_a;
                o[j][2] *= c_b;
                o[j][3] *= c_b;
            }
            u32 pa[BN / 16][4];  // every A fragment before the first MMA: no register changes in between
#pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) a_fragment(pa[kc], s, kc);
            fence();
#pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) mma_rs<HD>(&o[0][0], pa[kc], mn_major<HD, (SWAP >> 1) & 1>(vb, kc));
            commit();
            wait_all();
            pin<HD / 2>(&o[0][0]);
        }
        __syncthreads();  // the next iteration's loads overwrite this buffer
    }
    fa::store_output<HD>(out, out_bf16, lse, o, m_a, m_b, l_a, l_b, b, h, row_a, row_b, seq, heads);
}

// The forward with FlashAttention-3's intra-warpgroup overlap: step j issues S_j = Q K_jᵀ and
// O += P_{j-1} V_{j-1} together, then computes P_j's softmax while the second product runs.
// K and V have separate double buffers: K_j's buffer is refilled (with K_{j+2}) once S_j is
// done, V_{j-1}'s (with V_{j+1}) once P_{j-1} V_{j-1} is. One warpgroup a block (64 queries).
template <int HD, int BN>
__device__ __forceinline__ void forward_overlap(float* out, bf16* out_bf16, float* lse, const bf16* q, const bf16* k,
                                                const bf16* v, int seq, int heads, int kv_heads, float scale) {
    constexpr int NT = 128;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    bf16* qs = (bf16*)wg_smem;
    bf16* ks = qs + 64 * HD;      // [2][BN * HD]
    bf16* vs = ks + 2 * BN * HD;  // [2][BN * HD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = qt * 64;
    const int n_kt = (min(seq, q0 + 64) + BN - 1) / BN;
    // cp.async groups, in order: K0 (with Q), V0, K1, then per step j: K_{j+2}, V_{j+1} (empty
    // groups past the end keep the count), so "all but the newest two" means K_j and V_{j-1}.
    load_tile<64, HD, NT>(qs, q, b, q0, seq, heads, h);
    load_tile<BN, HD, NT>(ks, k, b, 0, seq, kv_heads, g);
    fa::cp_async_commit();
    load_tile<BN, HD, NT>(vs, v, b, 0, seq, kv_heads, g);
    fa::cp_async_commit();
    if (n_kt > 1) load_tile<BN, HD, NT>(ks + BN * HD, k, b, BN, seq, kv_heads, g);
    fa::cp_async_commit();

    const float sl2 = scale * fa::LOG2E;
    const int row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
    float o[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
    u32 pa[BN / 16][4];  // P_{j-1} as A fragments

    for (int kt = 0; kt < n_kt; kt++) {
        fa::cp_async_wait<2>();
        fence_proxy();
        __syncthreads();
        const bf16* kb = ks + (kt & 1) * BN * HD;
        float s[BN / 8][4];
        fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_ss<BN>(&s[0][0], k_major<HD>(qs, kk), k_major<HD>(kb, kk), kk);
        commit();
        if (kt > 0) {
#pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) mma_rs<HD>(&o[0][0], pa[kc], mn_major<HD>(vs + ((kt - 1) & 1) * BN * HD, kc));
        }
        commit();
        asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // S_j done
        pin<BN / 2>(&s[0][0]);
        __syncthreads();  // every warp's S_j done: K_j's buffer takes K_{j+2}
        if (kt + 2 < n_kt) load_tile<BN, HD, NT>(ks + (kt & 1) * BN * HD, k, b, (kt + 2) * BN, seq, kv_heads, g);
        fa::cp_async_commit();

        const int k0 = kt * BN;
        const float2 c = fa::online_softmax<BN>(s, k0, k0 + BN - 1 > q0 || k0 + BN > seq, row_a, row_b, seq, sl2, m_a, m_b, l_a, l_b);
        const float c_a = c.x, c_b = c.y;
        wait_all();  // P_{j-1} V_{j-1} done: O is stable and V_{j-1}'s buffer takes V_{j+1}
        pin<HD / 2>(&o[0][0]);
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) a_fragment(pa[kc], s, kc);
#pragma unroll
        for (int j = 0; j < HD / 8; j++) {
            o[j][0] *= c_a;
            o[j][1] *= c_a;
            o[j][2] *= c_b;
            o[j][3] *= c_b;
        }
        __syncthreads();
        if (kt + 1 < n_kt) load_tile<BN, HD, NT>(vs + ((kt + 1) & 1) * BN * HD, v, b, (kt + 1) * BN, seq, kv_heads, g);
        fa::cp_async_commit();
    }
    fa::cp_async_wait<0>();
    fence_proxy();
    __syncthreads();
    fence();
#pragma unroll
    for (int kc = 0; kc < BN / 16; kc++) mma_rs<HD>(&o[0][0], pa[kc], mn_major<HD>(vs + ((n_kt - 1) & 1) * BN * HD, kc));
    commit();
    wait_all();
    pin<HD / 2>(&o[0][0]);

    fa::store_output<HD>(out, out_bf16, lse, o, m_a, m_b, l_a, l_b, b, h, row_a, row_b, seq, heads);
}

// dQ = scale · dS K with dS = P ∘ (dP − D), P = exp(S − lse), dP = dO Vᵀ, per 64 queries a
// warpgroup (WGS of them a block share each K/V tile), BN keys a step. grid (ceil(seq / (64 WGS)),
// heads, batch), 128 WGS threads; shared (2 · 64 WGS + 4 BN) HD bf16.
template <int HD, int BN, int WGS = 1>
__device__ __forceinline__ void backward_dq(float* d_q, const float* lse, const float* row_dot, const bf16* q,
                                            const bf16* k, const bf16* v, const bf16* d_out, int seq, int heads,
                                            int kv_heads, float scale) {
    constexpr int BM = 64 * WGS, NT = 128 * WGS;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    bf16* qs = (bf16*)wg_smem;
    bf16* dos = qs + BM * HD;
    bf16* ks = dos + BM * HD;     // [2][BN * HD]
    bf16* vs = ks + 2 * BN * HD;  // [2][BN * HD]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int b = blockIdx.z, h = blockIdx.y, g = h / (heads / kv_heads), q0 = qt * BM;
    const int n_kt = (min(seq, q0 + BM) + BN - 1) / BN;
    load_tile<BM, HD, NT>(qs, q, b, q0, seq, heads, h);
    load_tile<BM, HD, NT>(dos, d_out, b, q0, seq, heads, h);
    load_tile<BN, HD, NT>(ks, k, b, 0, seq, kv_heads, g);
    load_tile<BN, HD, NT>(vs, v, b, 0, seq, kv_heads, g);
    fa::cp_async_commit();

    const float sl2 = scale * fa::LOG2E;
    const int row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
    const int wg = WGS > 1 ? warp >> 2 : 0;  // (a constant 0 keeps the one-warpgroup code as it was)
    const int first_row = q0 + wg * 64;      // this warpgroup's first query
    const bf16* qg = qs + wg * 64 * HD;
    const bf16* dog = dos + wg * 64 * HD;
    const float lse_a = row_a < seq ? lse[((u64)b * seq + row_a) * heads + h] * fa::LOG2E : 0.0f;
    const float lse_b = row_b < seq ? lse[((u64)b * seq + row_b) * heads + h] * fa::LOG2E : 0.0f;
    const float d_a = row_a < seq ? row_dot[((u64)b * seq + row_a) * heads + h] : 0.0f;
    const float d_b = row_b < seq ? row_dot[((u64)b * seq + row_b) * heads + h] : 0.0f;
    float dq[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) {
        next_kv_tile<BN, HD, NT>(ks, vs, k, v, b, kt, n_kt, seq, kv_heads, g);
        const int k0 = kt * BN;
        if (WGS > 1 && k0 > first_row + 63) {  // every key of the tile is after this warpgroup's rows
            __syncthreads();
            continue;
        }
        const bf16* kb = ks + (kt & 1) * BN * HD;
        const bf16* vb = vs + (kt & 1) * BN * HD;
        float s[BN / 8][4], dp[BN / 8][4];
        fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_ss<BN>(&s[0][0], k_major<HD>(qg, kk), k_major<HD>(kb, kk), kk);
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_ss<BN>(&dp[0][0], k_major<HD>(dog, kk), k_major<HD>(vb, kk), kk);
        commit();
        wait_all();
        pin<BN / 2>(&s[0][0]);
        pin<BN / 2>(&dp[0][0]);
        const bool edge = k0 + BN - 1 > first_row || k0 + BN > seq;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + j * 8 + 2 * (lane & 3) + (e & 1), row = e < 2 ? row_a : row_b;
                const bool live = !edge || (key <= row && key < seq);
                const float p = live ? fa::exp2_approx(s[j][e] * sl2 - (e < 2 ? lse_a : lse_b)) : 0.0f;
                s[j][e] = p * (dp[j][e] - (e < 2 ? d_a : d_b));  // dS
            }
        }
        u32 da[BN / 16][4];
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) a_fragment(da[kc], s, kc);
        fence();
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) mma_rs<HD>(&dq[0][0], da[kc], mn_major<HD>(kb, kc));
        commit();
        wait_all();
        pin<HD / 2>(&dq[0][0]);
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

// dV = Pᵀ dO and dK = scale · dSᵀ Q for 64 keys a warpgroup (WGS of them a block share each
// Q/dO tile), BM queries a step; the `split_heads` layout of attention_fa.cu's backward_dkdv.
// grid (ceil(seq / (64 WGS)), kv_heads or heads, batch), 128 WGS threads; shared
// (2 · 64 WGS + 4 BM) HD bf16 + 4 BM floats.
template <int HD, int BM, int WGS = 1>
__device__ __forceinline__ void backward_dkdv(float* d_k, float* d_v, const float* lse, const float* row_dot,
                                              const bf16* q, const bf16* k, const bf16* v, const bf16* d_out, int seq,
                                              int heads, int kv_heads, float scale, int split_heads) {
    constexpr int BN = 64 * WGS, NT = 128 * WGS;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    bf16* ks = (bf16*)wg_smem;
    bf16* vs = ks + BN * HD;
    bf16* qs = vs + BN * HD;         // [2][BM * HD]
    bf16* dos = qs + 2 * BM * HD;    // [2][BM * HD]
    float* lses = (float*)(dos + 2 * BM * HD);  // [2][BM], log2 units
    float* dots = lses + 2 * BM;                // [2][BM]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int b = blockIdx.z, group = heads / kv_heads, k0 = blockIdx.x * BN;
    const int g = split_heads ? blockIdx.y / group : blockIdx.y, head0 = split_heads ? blockIdx.y : g * group;
    const int qt_first = k0 / BM, n_qt = (seq + BM - 1) / BM - qt_first, steps = (split_heads ? 1 : group) * n_qt;

    auto issue = [&](int i, int buf) {
        const int h = head0 + i / n_qt, q0 = (qt_first + i % n_qt) * BM;
        load_tile<BM, HD, NT>(qs + buf * BM * HD, q, b, q0, seq, heads, h);
        load_tile<BM, HD, NT>(dos + buf * BM * HD, d_out, b, q0, seq, heads, h);
        for (int r = threadIdx.x; r < BM; r += NT) {
            const int t = q0 + r;
            const u64 at = ((u64)b * seq + t) * heads + h;
            lses[buf * BM + r] = t < seq ? lse[at] * fa::LOG2E : 0.0f;
            dots[buf * BM + r] = t < seq ? row_dot[at] : 0.0f;
        }
    };
    load_tile<BN, HD, NT>(ks, k, b, k0, seq, kv_heads, g);
    load_tile<BN, HD, NT>(vs, v, b, k0, seq, kv_heads, g);
    issue(0, 0);
    fa::cp_async_commit();

    const float sl2 = scale * fa::LOG2E;
    const int key_a = k0 + warp * 16 + (lane >> 2), key_b = key_a + 8;
    const int wg = WGS > 1 ? warp >> 2 : 0;  // (a constant 0 keeps the one-warpgroup code as it was)
    const int first_key = k0 + wg * 64;      // this warpgroup's first key
    const bf16* kg = ks + wg * 64 * HD;
    const bf16* vg = vs + wg * 64 * HD;
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) {
        dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.0f;
        dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.0f;
    }
    for (int i = 0; i < steps; i++) {
        next_stage(i, steps, issue);
        const int buf = i & 1, q0 = (qt_first + i % n_qt) * BM;
        const bf16* qb = qs + buf * BM * HD;
        const bf16* dob = dos + buf * BM * HD;
        const float* lb = lses + buf * BM;
        const float* db = dots + buf * BM;
        if (WGS > 1 && q0 + BM - 1 < first_key) {  // every query of the step is before this warpgroup's keys
            __syncthreads();
            continue;
        }
        float st[BM / 8][4], dpt[BM / 8][4];
        fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_ss<BM>(&st[0][0], k_major<HD>(kg, kk), k_major<HD>(qb, kk), kk);  // Sᵀ = K Qᵀ
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) mma_ss<BM>(&dpt[0][0], k_major<HD>(vg, kk), k_major<HD>(dob, kk), kk);  // dPᵀ = V dOᵀ
        commit();
        wait_all();
        pin<BM / 2>(&st[0][0]);
        pin<BM / 2>(&dpt[0][0]);
        const bool edge = q0 < first_key + 63 || q0 + BM > seq;
#pragma unroll
        for (int j = 0; j < BM / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = j * 8 + 2 * (lane & 3) + (e & 1), query = q0 + c, key = e < 2 ? key_a : key_b;
                const bool live = !edge || (query >= key && query < seq);
                const float p = live ? fa::exp2_approx(st[j][e] * sl2 - lb[c]) : 0.0f;
                st[j][e] = p;
                dpt[j][e] = p * (dpt[j][e] - db[c]);  // dSᵀ
            }
        }
        u32 pa[BM / 16][4], da[BM / 16][4];
#pragma unroll
        for (int kc = 0; kc < BM / 16; kc++) {
            a_fragment(pa[kc], st, kc);
            a_fragment(da[kc], dpt, kc);
        }
        fence();
#pragma unroll
        for (int kc = 0; kc < BM / 16; kc++) mma_rs<HD>(&dv[0][0], pa[kc], mn_major<HD>(dob, kc));  // dV += Pᵀ dO
#pragma unroll
        for (int kc = 0; kc < BM / 16; kc++) mma_rs<HD>(&dk[0][0], da[kc], mn_major<HD>(qb, kc));  // dK += dSᵀ Q
        commit();
        wait_all();
        pin<HD / 2>(&dv[0][0]);
        pin<HD / 2>(&dk[0][0]);
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

#define WG_BODY(call) call
#else
#define WG_BODY(call) __trap()
#endif

}  // namespace wg

// Entry points: forward with BN keys a step and WGS warpgroups (64 rows each) a block; dQ with
// BN keys a step; dK/dV with BM queries a step. Shared memory per launch: see the kernels above.
#define WG_FORWARD(NAME, HD, BN, WGS)                                                                                 \
    extern "C" __global__ void __launch_bounds__(128 * WGS) NAME(float* out, float* lse, const __nv_bfloat16* q,      \
                                                                 const __nv_bfloat16* k, const __nv_bfloat16* v,      \
                                                                 int seq, int heads, int kv_heads, float scale,       \
                                                                 __nv_bfloat16* out_bf16) {                           \
        WG_BODY((wg::forward<HD, BN, WGS>(out, out_bf16, lse, q, k, v, seq, heads, kv_heads, scale)));                \
    }
#define WG_DQ(NAME, HD, BN, WGS)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128 * WGS) NAME(float* d_q, const float* lse, const float* row_dot,         \
                                                           const __nv_bfloat16* q, const __nv_bfloat16* k,            \
                                                           const __nv_bfloat16* v, const __nv_bfloat16* d_out, int seq, \
                                                           int heads, int kv_heads, float scale) {                    \
        WG_BODY((wg::backward_dq<HD, BN, WGS>(d_q, lse, row_dot, q, k, v, d_out, seq, heads, kv_heads, scale)));      \
    }
#define WG_DKDV(NAME, HD, BM, WGS)                                                                                    \
    extern "C" __global__ void __launch_bounds__(128 * WGS) NAME(float* d_k, float* d_v, const float* lse,                   \
                                                           const float* row_dot, const __nv_bfloat16* q,              \
                                                           const __nv_bfloat16* k, const __nv_bfloat16* v,            \
                                                           const __nv_bfloat16* d_out, int seq, int heads,            \
                                                           int kv_heads, float scale, int split_heads) {              \
        WG_BODY((wg::backward_dkdv<HD, BM, WGS>(d_k, d_v, lse, row_dot, q, k, v, d_out, seq, heads, kv_heads, scale,   \
                                           split_heads)));                                                            \
    }

WG_FORWARD(attention_forward_wg64, 64, 64, 1)
WG_FORWARD(attention_forward_wg64_w2, 64, 64, 2)
WG_FORWARD(attention_forward_wg64_bn128, 64, 128, 1)
WG_FORWARD(attention_forward_wg128, 128, 64, 1)
WG_FORWARD(attention_forward_wg128_w2, 128, 64, 2)
WG_FORWARD(attention_forward_wg128_bn32, 128, 32, 1)
#define WG_FORWARD_SWAP(NAME, HD, SWAP)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) NAME(float* out, float* lse, const __nv_bfloat16* q,             \
                                                           const __nv_bfloat16* k, const __nv_bfloat16* v, int seq,   \
                                                           int heads, int kv_heads, float scale,                      \
                                                           __nv_bfloat16* out_bf16) {                                 \
        WG_BODY((wg::forward<HD, 64, 1, SWAP>(out, out_bf16, lse, q, k, v, seq, heads, kv_heads, scale)));            \
    }
WG_FORWARD_SWAP(attention_forward_wg64_kswap, 64, 1)
WG_FORWARD_SWAP(attention_forward_wg64_mnswap, 64, 2)
WG_FORWARD_SWAP(attention_forward_wg128_kswap, 128, 1)
WG_FORWARD_SWAP(attention_forward_wg128_mnswap, 128, 2)
#define WG_FORWARD_OVERLAP(NAME, HD, BN)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) NAME(float* out, float* lse, const __nv_bfloat16* q,             \
                                                           const __nv_bfloat16* k, const __nv_bfloat16* v, int seq,   \
                                                           int heads, int kv_heads, float scale,                      \
                                                           __nv_bfloat16* out_bf16) {                                 \
        WG_BODY((wg::forward_overlap<HD, BN>(out, out_bf16, lse, q, k, v, seq, heads, kv_heads, scale)));             \
    }
WG_FORWARD_OVERLAP(attention_forward_wg64_ov, 64, 64)
WG_FORWARD_OVERLAP(attention_forward_wg128_ov, 128, 64)
WG_DQ(attention_backward_dq_wg64, 64, 64, 1)
WG_DQ(attention_backward_dq_wg64_w2, 64, 64, 2)
WG_DQ(attention_backward_dq_wg128, 128, 64, 1)
WG_DQ(attention_backward_dq_wg128_w2, 128, 64, 2)
WG_DQ(attention_backward_dq_wg128_bn32, 128, 32, 1)
WG_DKDV(attention_backward_dkdv_wg64, 64, 64, 1)
WG_DKDV(attention_backward_dkdv_wg64_w2, 64, 64, 2)
WG_DKDV(attention_backward_dkdv_wg128, 128, 64, 1)
WG_DKDV(attention_backward_dkdv_wg128_w2, 128, 64, 2)
WG_DKDV(attention_backward_dkdv_wg128_bm32, 128, 32, 1)

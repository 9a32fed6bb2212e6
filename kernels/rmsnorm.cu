// RMSNorm: one block a row for the forward and the input gradient; the weight gradient is a
// column sum over rows done in two fixed-order passes (per-chunk partials, then their sum).

// Rows whose length is a multiple of 4 (every model's) are read four floats (16 bytes) a thread
// at a time and their bf16 copies written four values (8 bytes) at a time; the scalar loops
// moved 4 bytes a load and ran at about half the memory bandwidth. A row's second pass re-reads
// it from L1.
__device__ __forceinline__ bool rows_vectorise(int dim, const void* a, const void* b, const void* c) {
    return dim % 4 == 0 && aligned16(a) && aligned16(b) && aligned16(c);
}

__device__ __forceinline__ void store4_bf16(__nv_bfloat16* dst, float4 v) {
    uint2 raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
    pairs[0] = __floats2bfloat162_rn(v.x, v.y);
    pairs[1] = __floats2bfloat162_rn(v.z, v.w);
    *reinterpret_cast<uint2*>(dst) = raw;
}

// `shadow` (may be null): the output rounded to bf16 as well, the GEMMs' copy of it; `out` may be
// null when that copy is all anyone reads (mixed precision: the norms feed only products).
extern "C" __global__ void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                                           int dim, float eps, __nv_bfloat16* shadow) {
    __shared__ float scratch[32];
    const u64 row = blockIdx.x;
    const float* x = inp + row * dim;
    float* y = out ? out + row * dim : nullptr;
    __nv_bfloat16* z = shadow ? shadow + row * dim : nullptr;
    if (rows_vectorise(dim, x, weight, y ? (const void*)y : (const void*)x)) {
        const float4 *x4 = reinterpret_cast<const float4*>(x), *w4 = reinterpret_cast<const float4*>(weight);
        float ss = 0.0f;
        for (int j = threadIdx.x; j < dim / 4; j += blockDim.x) {
            const float4 v = x4[j];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        ss = block_sum(ss, scratch);
        const float r = rsqrtf(ss / dim + eps);
        if (threadIdx.x == 0) rstd[row] = r;
        for (int j = threadIdx.x; j < dim / 4; j += blockDim.x) {
            const float4 v = x4[j], w = w4[j];
            const float4 o = make_float4(w.x * (v.x * r), w.y * (v.y * r), w.z * (v.z * r), w.w * (v.w * r));
            if (y) reinterpret_cast<float4*>(y)[j] = o;
            if (z) store4_bf16(z + 4 * j, o);
        }
        return;
    }
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += x[j] * x[j];
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / dim + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        const float v = weight[j] * (x[j] * r);
        if (y) y[j] = v;
        if (z) z[j] = __float2bfloat16_rn(v);
    }
}

// `d_inp_shadow` (may be null) gets the updated d_inp in bf16: the next products' operand.
// y = w x r with r = (mean(x^2) + eps)^-1/2, so dx = r w g - r^3 / dim * x * sum(g w x).
extern "C" __global__ void rmsnorm_backward_input(float* d_inp, const float* d_out, const float* inp,
                                                  const float* weight, const float* rstd, int dim,
                                                  __nv_bfloat16* d_inp_shadow) {
    __shared__ float scratch[32];
    const u64 row = blockIdx.x;
    const float *g = d_out + row * dim, *x = inp + row * dim;
    float* dx = d_inp + row * dim;
    __nv_bfloat16* z = d_inp_shadow ? d_inp_shadow + row * dim : nullptr;
    const float r = rstd[row];
    if (rows_vectorise(dim, g, x, dx) && aligned16(weight)) {
        const float4 *g4 = reinterpret_cast<const float4*>(g), *x4 = reinterpret_cast<const float4*>(x),
                     *w4 = reinterpret_cast<const float4*>(weight);
        float gwx = 0.0f;
        for (int j = threadIdx.x; j < dim / 4; j += blockDim.x) {
            const float4 a = g4[j], b = x4[j], w = w4[j];
            gwx += a.x * w.x * b.x + a.y * w.y * b.y + a.z * w.z * b.z + a.w * w.w * b.w;
        }
        gwx = block_sum(gwx, scratch);
        const float correction = gwx * r * r * r / dim;
        float4* dx4 = reinterpret_cast<float4*>(dx);
        for (int j = threadIdx.x; j < dim / 4; j += blockDim.x) {
            const float4 a = g4[j], b = x4[j], w = w4[j], d = dx4[j];
            const float4 u = make_float4(d.x + (r * w.x * a.x - correction * b.x), d.y + (r * w.y * a.y - correction * b.y),
                                         d.z + (r * w.z * a.z - correction * b.z), d.w + (r * w.w * a.w - correction * b.w));
            dx4[j] = u;
            if (z) store4_bf16(z + 4 * j, u);
        }
        return;
    }
    float gwx = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) gwx += g[j] * weight[j] * x[j];
    gwx = block_sum(gwx, scratch);
    const float correction = gwx * r * r * r / dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        const float updated = dx[j] + (r * weight[j] * g[j] - correction * x[j]);
        dx[j] = updated;
        if (z) z[j] = __float2bfloat16_rn(updated);
    }
}

// partial[chunk, col] = sum over the chunk's rows of d_out * inp * rstd. A thread takes four
// neighbouring columns (16-byte loads) where dim is a multiple of 4 and the rows are aligned:
// grid.x covers dim / 4 threads (the backend sizes it so for every dim).
extern "C" __global__ void rmsnorm_backward_weight_partial(float* partial, const float* d_out, const float* inp,
                                                           const float* rstd, int rows, int dim, int rows_per_chunk) {
    const int first = blockIdx.y * rows_per_chunk;
    const int last = min(rows, first + rows_per_chunk);
    if (dim % 4 == 0 && aligned16(d_out) && aligned16(inp) && aligned16(partial)) {
        const int col4 = blockIdx.x * blockDim.x + threadIdx.x;
        if (col4 >= dim / 4) return;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
        for (int row = first; row < last; row++) {
            const u64 at = (u64)row * (dim / 4) + col4;
            const float4 a = reinterpret_cast<const float4*>(d_out)[at], b = reinterpret_cast<const float4*>(inp)[at];
            const float r = rstd[row];
            acc.x += a.x * b.x * r, acc.y += a.y * b.y * r, acc.z += a.z * b.z * r, acc.w += a.w * b.w * r;
        }
        reinterpret_cast<float4*>(partial + (u64)blockIdx.y * dim)[col4] = acc;
        return;
    }
    // Strided, so the grid sized for the four-column path covers every column here too.
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < dim; col += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int row = first; row < last; row++) {
            const u64 at = (u64)row * dim + col;
            acc += d_out[at] * inp[at] * rstd[row];
        }
        partial[(u64)blockIdx.y * dim + col] = acc;
    }
}

// out[col] += sum over chunks of partial[chunk, col]. Blocks of 32 columns x 8 lanes: lane y sums
// chunks y, y + 8, ... and the eight sums are added in lane order (fixed, so deterministic); one
// thread per column summing every chunk waited on one load after another.
#define COLUMN_SUM_LANES 8
extern "C" __global__ void column_sum_add(float* out, const float* partial, int chunks, int dim) {
    __shared__ float sums[COLUMN_SUM_LANES][32];
    const int col = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (col < dim) {
#pragma unroll 4
        for (int c = threadIdx.y; c < chunks; c += COLUMN_SUM_LANES) acc += partial[(u64)c * dim + col];
    }
    sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || col >= dim) return;
    float total = sums[0][threadIdx.x];
    for (int y = 1; y < COLUMN_SUM_LANES; y++) total += sums[y][threadIdx.x];
    out[col] += total;
}

// The input gradient (added to d_inp) and the weight gradient's per-block partials in one pass
// over d_out and inp (the per-row kernels above read both twice): a block takes
// `rows_per_block` consecutive rows; thread t owns the float4 columns t + c · blockDim.x
// (c < NORM_COLS4), keeping their weights and partial sums in registers, and loads the next
// row's values before this row's block sum so the loads overlap the reduction. Partials sum
// the rows in order (deterministic). Needs dim % 4 == 0, dim <= 4 · NORM_COLS4 · blockDim.x
// and a blockDim.x multiple of 32 (the backend checks). `d_inp_shadow` (may be null) gets the
// updated d_inp in bf16: the next products' operand.
#define NORM_COLS4 2
extern "C" __global__ void rmsnorm_backward_fused(float* d_inp, float* partial, const float* d_out, const float* inp,
                                                  const float* weight, const float* rstd, int rows, int dim,
                                                  int rows_per_block, __nv_bfloat16* d_inp_shadow) {
    __shared__ float scratch[32];
    const int dim4 = dim / 4;
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 w[NORM_COLS4], acc[NORM_COLS4], g[NORM_COLS4], x[NORM_COLS4];
    const int first = blockIdx.x * rows_per_block, last = min(rows, first + rows_per_block);
#pragma unroll
    for (int c = 0; c < NORM_COLS4; c++) {
        const int j = threadIdx.x + c * blockDim.x;
        w[c] = j < dim4 ? reinterpret_cast<const float4*>(weight)[j] : zero;
        acc[c] = zero;
        g[c] = j < dim4 && first < last ? reinterpret_cast<const float4*>(d_out + (u64)first * dim)[j] : zero;
        x[c] = j < dim4 && first < last ? reinterpret_cast<const float4*>(inp + (u64)first * dim)[j] : zero;
    }
    for (int row = first; row < last; row++) {
        float gwx = 0.0f;
        float4 g_next[NORM_COLS4], x_next[NORM_COLS4];
#pragma unroll
        for (int c = 0; c < NORM_COLS4; c++) {
            gwx += g[c].x * w[c].x * x[c].x + g[c].y * w[c].y * x[c].y + g[c].z * w[c].z * x[c].z + g[c].w * w[c].w * x[c].w;
            const int j = threadIdx.x + c * blockDim.x;
            const bool more = j < dim4 && row + 1 < last;
            g_next[c] = more ? reinterpret_cast<const float4*>(d_out + (u64)(row + 1) * dim)[j] : zero;
            x_next[c] = more ? reinterpret_cast<const float4*>(inp + (u64)(row + 1) * dim)[j] : zero;
        }
        gwx = block_sum(gwx, scratch);
        const float r = rstd[row];
        const float correction = gwx * r * r * r / dim;
        float4* dx4 = reinterpret_cast<float4*>(d_inp + (u64)row * dim);
#pragma unroll
        for (int c = 0; c < NORM_COLS4; c++) {
            const int j = threadIdx.x + c * blockDim.x;
            if (j < dim4) {
                const float4 a = g[c], b = x[c], ww = w[c], d = dx4[j];
                const float4 u = make_float4(d.x + (r * ww.x * a.x - correction * b.x), d.y + (r * ww.y * a.y - correction * b.y),
                                             d.z + (r * ww.z * a.z - correction * b.z), d.w + (r * ww.w * a.w - correction * b.w));
                dx4[j] = u;
                if (d_inp_shadow) store4_bf16(d_inp_shadow + (u64)row * dim + 4 * j, u);
                acc[c].x += a.x * b.x * r, acc[c].y += a.y * b.y * r, acc[c].z += a.z * b.z * r, acc[c].w += a.w * b.w * r;
            }
            g[c] = g_next[c];
            x[c] = x_next[c];
        }
    }
#pragma unroll
    for (int c = 0; c < NORM_COLS4; c++) {
        const int j = threadIdx.x + c * blockDim.x;
        if (j < dim4) reinterpret_cast<float4*>(partial + (u64)blockIdx.x * dim)[j] = acc[c];
    }
}

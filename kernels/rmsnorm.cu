// RMSNorm: one block a row for the forward and the input gradient; the weight gradient is a
// column sum over rows done in two fixed-order passes (per-chunk partials, then their sum).

// `shadow` (may be null): the output rounded to bf16 as well, the GEMMs' copy of it; `out` may be
// null when that copy is all anyone reads (mixed precision: the norms feed only products).
extern "C" __global__ void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                                           int dim, float eps, __nv_bfloat16* shadow) {
    __shared__ float scratch[32];
    const u64 row = blockIdx.x;
    const float* x = inp + row * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += x[j] * x[j];
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / dim + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    float* y = out + row * dim;
    if (shadow) {
        __nv_bfloat16* z = shadow + row * dim;
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            const float v = weight[j] * (x[j] * r);
            if (out) y[j] = v;
            z[j] = __float2bfloat16_rn(v);
        }
    } else {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) y[j] = weight[j] * (x[j] * r);
    }
}

// `d_inp_shadow` (may be null) gets the updated d_inp in bf16: the next products' operand.
extern "C" __global__ void rmsnorm_backward_input(float* d_inp, const float* d_out, const float* inp,
                                                  const float* weight, const float* rstd, int dim,
                                                  __nv_bfloat16* d_inp_shadow) {
    __shared__ float scratch[32];
    const u64 row = blockIdx.x;
    const float *g = d_out + row * dim, *x = inp + row * dim;
    float gwx = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) gwx += g[j] * weight[j] * x[j];
    gwx = block_sum(gwx, scratch);
    const float r = rstd[row];
    // y = w x r with r = (mean(x^2) + eps)^-1/2, so dx = r w g - r^3 / dim * x * sum(g w x).
    const float correction = gwx * r * r * r / dim;
    float* dx = d_inp + row * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        const float updated = dx[j] + (r * weight[j] * g[j] - correction * x[j]);
        dx[j] = updated;
        if (d_inp_shadow) d_inp_shadow[row * dim + j] = __float2bfloat16_rn(updated);
    }
}

// partial[chunk, col] = sum over the chunk's rows of d_out * inp * rstd.
extern "C" __global__ void rmsnorm_backward_weight_partial(float* partial, const float* d_out, const float* inp,
                                                           const float* rstd, int rows, int dim, int rows_per_chunk) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= dim) return;
    const int first = blockIdx.y * rows_per_chunk;
    const int last = min(rows, first + rows_per_chunk);
    float acc = 0.0f;
    for (int row = first; row < last; row++) {
        const u64 at = (u64)row * dim + col;
        acc += d_out[at] * inp[at] * rstd[row];
    }
    partial[(u64)blockIdx.y * dim + col] = acc;
}

// out[col] += sum over chunks of partial[chunk, col].
extern "C" __global__ void column_sum_add(float* out, const float* partial, int chunks, int dim) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= dim) return;
    float acc = 0.0f;
    for (int c = 0; c < chunks; c++) acc += partial[(u64)c * dim + col];
    out[col] += acc;
}

// The input gradient (added to d_inp) and the weight gradient's per-chunk partials in one pass:
// a block takes `rows_per_block` rows, each thread keeps its columns' d_out, inp and weight in
// registers for the row (one read of each from memory) and sums d_out · inp · rstd over the
// block's rows for those columns, in row order. dim <= 256 · RMS_COLS (the backend checks).
// `d_inp_shadow` (may be null) gets the updated d_inp in bf16: the next products' operand.
#define RMS_COLS 16
extern "C" __global__ void rmsnorm_backward_fused(float* d_inp, float* partial, const float* d_out, const float* inp,
                                                  const float* weight, const float* rstd, int rows, int dim,
                                                  int rows_per_block, __nv_bfloat16* d_inp_shadow) {
    __shared__ float scratch[32];
    float w[RMS_COLS], acc[RMS_COLS];
#pragma unroll
    for (int c = 0; c < RMS_COLS; c++) {
        const int j = threadIdx.x + c * 256;
        w[c] = j < dim ? weight[j] : 0.0f;
        acc[c] = 0.0f;
    }
    const int first = blockIdx.x * rows_per_block, last = min(rows, first + rows_per_block);
    for (int row = first; row < last; row++) {
        const float *g = d_out + (u64)row * dim, *x = inp + (u64)row * dim;
        float gv[RMS_COLS], xv[RMS_COLS], gwx = 0.0f;
#pragma unroll
        for (int c = 0; c < RMS_COLS; c++) {
            const int j = threadIdx.x + c * 256;
            gv[c] = j < dim ? g[j] : 0.0f;
            xv[c] = j < dim ? x[j] : 0.0f;
            gwx += gv[c] * w[c] * xv[c];
        }
        gwx = block_sum(gwx, scratch);
        const float r = rstd[row];
        const float correction = gwx * r * r * r / dim;
        float* dx = d_inp + (u64)row * dim;
#pragma unroll
        for (int c = 0; c < RMS_COLS; c++) {
            const int j = threadIdx.x + c * 256;
            if (j < dim) {
                const float updated = dx[j] + (r * w[c] * gv[c] - correction * xv[c]);
                dx[j] = updated;
                if (d_inp_shadow) d_inp_shadow[(u64)row * dim + j] = __float2bfloat16_rn(updated);
                acc[c] += gv[c] * xv[c] * r;
            }
        }
    }
#pragma unroll
    for (int c = 0; c < RMS_COLS; c++) {
        const int j = threadIdx.x + c * 256;
        if (j < dim) partial[(u64)blockIdx.x * dim + j] = acc[c];
    }
}

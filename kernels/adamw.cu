// The optimizer's kernels: fused AdamW (PyTorch's order of operations; `shadow`, when not null,
// gets the new weights in bf16 too) and the sum of squares for the global gradient norm
// (per-block partials in f64, summed on the host in block order).

extern "C" __global__ void adamw_update(float* param, const float* grad, float* m, float* v, u64 n,
                                        float beta1, float beta2, float eps, float decay, float step_size,
                                        float bias_correction2_sqrt, float grad_scale, __nv_bfloat16* shadow) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = grad[i] * grad_scale;
    float p = param[i] * decay;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    const float next = p - step_size * mi / denom;
    param[i] = next;
    if (shadow) shadow[i] = __float2bfloat16_rn(next);  // the products' copy, so no cast pass follows
}

extern "C" __global__ void sum_squares_partial(double* partial, const float* x, u64 n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const double v = x[i];
        acc += v * v;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Token embedding lookup and its gradient. The backward gets the positions grouped by token
// (sorted on the host), so each table row is summed by one block in position order: no atomics,
// same result every run.

extern "C" __global__ void embedding_forward(float* out, const u32* tokens, const float* table, int dim, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u64 row = i / dim;
    const int j = i % dim;
    out[i] = table[(u64)tokens[row] * dim + j];
}

// Segment s covers order[seg_start[s] .. seg_start[s + 1]), all positions of token seg_token[s].
extern "C" __global__ void embedding_backward(float* d_table, const float* d_out, const u32* order,
                                              const u32* seg_start, const u32* seg_token, int dim) {
    const int s = blockIdx.x;
    const u32 first = seg_start[s], last = seg_start[s + 1];
    float* row = d_table + (u64)seg_token[s] * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = 0.0f;
        for (u32 k = first; k < last; k++) acc += d_out[(u64)order[k] * dim + j];
        row[j] += acc;
    }
}

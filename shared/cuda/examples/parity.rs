//! Every op and two training steps of the CUDA backend against the CPU backend.
//! `cargo run --release -p dsllm-cuda --example parity`; exits 1 if any check fails, 0 with a
//! message when there is no GPU.

use dsllm_cuda::parity::{check_adamw_many, check_attention, check_elementwise, check_ops, check_output_loss, check_products, check_training, print_checks, Check};
use dsllm_cuda::{gpu_unavailable_reason, AttentionKernels, CudaBackend, Precision};

fn main() -> anyhow::Result<()> {
    if let Some(reason) = gpu_unavailable_reason() {
        println!("no parity check: {reason}");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut gpu = CudaBackend::new(0)?;
    println!("{} (backend ready in {:.2} s)", gpu.device_name(), started.elapsed().as_secs_f64());
    let default_attention = gpu.attention;
    println!("attention kernels by default: {}", default_attention.name());
    let mut checks = check_ops(&gpu);
    // The other RMSNorm backward (DSLLM_NORM_BACKWARD) too.
    gpu.fused_norm_backward = !gpu.fused_norm_backward;
    checks.extend(check_elementwise(&gpu));
    gpu.fused_norm_backward = !gpu.fused_norm_backward;
    // The settings still being measured, each against the CPU with only it changed.
    let rmsnorm_backward = |gpu: &CudaBackend| only(check_elementwise(gpu), "rmsnorm_backward");
    let adamw = |gpu: &CudaBackend| only(check_elementwise(gpu), "adamw");
    // DSLLM_NORM_ROWS: blocks of a few rows, the last one partial.
    checks.extend(variant(&mut gpu, |g| &mut g.fused_norm_rows, 3, " (3 rows a block)", rmsnorm_backward));
    // DSLLM_CE_PREFETCH: a hint, the same values.
    checks.extend(variant(&mut gpu, |g| &mut g.cross_entropy_prefetch, 1.0, " (next rows prefetched)", check_output_loss));
    // DSLLM_CE_SHARED: the setting the default did not run (kept: the row in shared memory for
    // the gradient pass, 102,400 logits: 200 KiB; 1000: whole packs; 5003 runs the usual
    // kernel), the same values.
    let other_ce = !gpu.cross_entropy_keep_row;
    let ce_name = if other_ce { " (row kept in shared memory)" } else { " (row re-read from L2)" };
    checks.extend(variant(&mut gpu, |g| &mut g.cross_entropy_keep_row, other_ce, ce_name, check_output_loss));
    // DSLLM_OUTPUT_CHUNK_MIB: 64 rows of a 5003-token vocabulary a chunk.
    checks.extend(variant(&mut gpu, |g| &mut g.output_chunk_bytes, Some(1 << 20), " (1 MiB chunks)", check_output_loss));
    // DSLLM_ADAMW_GROUPED: a step's tensors one launch each and grouped (the default).
    checks.extend(variant(&mut gpu, |g| &mut g.adamw_grouped, false, " (one launch a tensor)", check_adamw_many));
    checks.extend(variant(&mut gpu, |g| &mut g.adamw_grouped, true, " (grouped)", check_adamw_many));
    // DSLLM_ADAMW_WIDTH: the width the default did not run.
    let other_width = !gpu.adamw_eight_wide;
    checks.extend(variant(&mut gpu, |g| &mut g.adamw_eight_wide, other_width, " (the other width)", adamw));
    // DSLLM_ADAMW_STREAMING: cache hints only, the same bits (one launch a tensor and grouped).
    checks.extend(variant(&mut gpu, |g| &mut g.adamw_streaming, true, " (streaming cache hints)", adamw));
    checks.extend(variant(&mut gpu, |g| &mut g.adamw_streaming, true, " (streaming cache hints)", check_adamw_many));
    // The attention backward with and without atomics, whichever check_ops did not run, for the
    // fused flash-attention backward here and for cuDNN's below.
    let other_determinism = !gpu.deterministic;
    gpu.attention = AttentionKernels::Fa2;
    checks.extend(variant(&mut gpu, |g| &mut g.deterministic, other_determinism, "", check_attention));
    // The other attention kernels too (check_ops ran the default).
    let hopper = gpu.compute_capability() == (9, 0);
    let others = [AttentionKernels::Cudnn, AttentionKernels::Fa2, AttentionKernels::Wgmma, AttentionKernels::Wmma, AttentionKernels::Fp32];
    for kernels in others.into_iter().filter(|&k| k != default_attention && (hopper || k != AttentionKernels::Wgmma)) {
        gpu.attention = kernels;
        checks.extend(check_attention(&gpu));
    }
    if gpu.cudnn_attention().is_some() {
        gpu.attention = AttentionKernels::Cudnn;
        checks.extend(variant(&mut gpu, |g| &mut g.deterministic, other_determinism, "", check_attention));
    }
    // Mixed precision with fp32 activations (DSLLM_BF16_ACTIVATIONS=0), if check_ops ran bf16 ones.
    if gpu.bf16_activations {
        gpu.bf16_activations = false;
        checks.extend(check_products(&gpu));
        checks.extend(check_elementwise(&gpu));
        gpu.bf16_activations = true;
    }
    // fp32 precision (evaluation): fp32 products, attention and activations, to fp32 tolerance.
    gpu.precision = Precision::Fp32;
    checks.extend(check_products(&gpu));
    checks.extend(check_attention(&gpu));
    checks.extend(check_elementwise(&gpu));
    checks.extend(check_output_loss(&gpu));
    gpu.precision = Precision::Mixed;
    gpu.attention = default_attention;
    checks.extend(check_training(|| CudaBackend::new(0), 3)?);
    let passed = print_checks(&checks);
    if let Ok(dir) = std::env::var("OUT") {
        std::fs::write(format!("{dir}/parity.json"), serde_json::to_string_pretty(&checks)?)?;
    }
    println!("{}", if passed { "all checks passed" } else { "SOME CHECKS FAILED" });
    std::process::exit(if passed { 0 } else { 1 });
}

/// `check` run with one setting of `gpu` changed to `value` (put back after), its checks' names
/// marked with `label`.
fn variant<T>(gpu: &mut CudaBackend, setting: fn(&mut CudaBackend) -> &mut T, value: T, label: &str, check: impl Fn(&CudaBackend) -> Vec<Check>) -> Vec<Check> {
    let default = std::mem::replace(setting(gpu), value);
    let checks: Vec<Check> = check(gpu)
        .into_iter()
        .map(|mut c| {
            c.name += label;
            c
        })
        .collect();
    *setting(gpu) = default;
    checks
}

/// The checks whose names contain `op`.
fn only(checks: Vec<Check>, op: &str) -> Vec<Check> {
    checks.into_iter().filter(|c| c.name.contains(op)).collect()
}

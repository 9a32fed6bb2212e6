//! Every op and two training steps of the CUDA backend against the CPU backend.
//! `cargo run --release -p dsllm-cuda --example parity`; exits 1 if any check fails, 0 with a
//! message when there is no GPU.

use dsllm_cuda::parity::{check_attention, check_ops, check_training, print_checks};
use dsllm_cuda::{gpu_unavailable_reason, CudaBackend};

fn main() -> anyhow::Result<()> {
    if let Some(reason) = gpu_unavailable_reason() {
        println!("no parity check: {reason}");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut gpu = CudaBackend::new(0)?;
    println!("{} (backend ready in {:.2} s)", gpu.device_name(), started.elapsed().as_secs_f64());
    let mut checks = check_ops(&gpu);
    // The fp32 reference attention kernels too (the tensor-core ones ran in check_ops).
    gpu.tensor_core_attention = false;
    checks.extend(check_attention(&gpu));
    checks.extend(check_training(|| CudaBackend::new(0), 3)?);
    let passed = print_checks(&checks);
    if let Ok(dir) = std::env::var("OUT") {
        std::fs::write(format!("{dir}/parity.json"), serde_json::to_string_pretty(&checks)?)?;
    }
    println!("{}", if passed { "all checks passed" } else { "SOME CHECKS FAILED" });
    std::process::exit(if passed { 0 } else { 1 });
}

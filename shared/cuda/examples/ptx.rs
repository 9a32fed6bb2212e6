//! Writes the kernels' PTX for an architecture (default sm_90) to stdout, for `ptxas -v`
//! resource reports without a GPU: `cargo run -p dsllm-cuda --example ptx -- sm_90 > k.ptx`.
//!
//! With `--cache`, stores it in the kernel cache instead (`DSLLM_KERNEL_CACHE`, under the name
//! the backend looks for), so a GPU machine with the same NVRTC version skips the ~35 s compile
//! of its first process: `DSLLM_KERNEL_CACHE=.devbin/kernels ptx sm_90a --cache`, then copy the
//! folder's files into the machine's cache (shared/cuda/device-levers.sh does).

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch: &'static str = match args.iter().find(|a| a.starts_with("sm_")).map(String::as_str) {
        Some("sm_80") => "sm_80",
        Some("sm_89") => "sm_89",
        Some("sm_90a") => "sm_90a",
        Some("sm_90") | None => "sm_90",
        Some(other) => anyhow::bail!("unknown architecture {other:?}: expected sm_80, sm_89, sm_90 or sm_90a"),
    };
    if args.iter().any(|a| a == "--cache") {
        let path = dsllm_cuda::kernels::cache_path(arch).ok_or_else(|| anyhow::anyhow!("no kernel cache folder (DSLLM_KERNEL_CACHE is off)"))?;
        dsllm_cuda::kernels::cached_ptx(arch)?;
        anyhow::ensure!(path.exists(), "the PTX was compiled but {} could not be written", path.display());
        eprintln!("{}", path.display());
        return Ok(());
    }
    print!("{}", dsllm_cuda::kernels::compile_ptx(arch)?.to_src());
    Ok(())
}

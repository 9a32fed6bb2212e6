//! Writes the kernels' PTX for an architecture (default sm_90) to stdout, for `ptxas -v`
//! resource reports without a GPU: `cargo run -p dsllm-cuda --example ptx -- sm_90 > k.ptx`.

fn main() -> anyhow::Result<()> {
    let arch: &'static str = match std::env::args().nth(1).as_deref() {
        Some("sm_80") => "sm_80",
        Some("sm_89") => "sm_89",
        _ => "sm_90",
    };
    print!("{}", dsllm_cuda::kernels::compile_ptx(arch)?.to_src());
    Ok(())
}

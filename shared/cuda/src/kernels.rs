//! The CUDA kernels of `kernels/*.cu`, embedded in the binary and compiled by NVRTC when the
//! backend starts (for the GPU present, so one binary serves any card of that architecture).

use std::sync::Arc;

use anyhow::{Context, Result};
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

/// The prelude every op file uses, then one file per op family, compiled as one program.
pub const SOURCES: [(&str, &str); 12] = [
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("cast.cu", include_str!("../../../kernels/cast.cu")),
    ("elementwise.cu", include_str!("../../../kernels/elementwise.cu")),
    ("rmsnorm.cu", include_str!("../../../kernels/rmsnorm.cu")),
    ("rope.cu", include_str!("../../../kernels/rope.cu")),
    ("attention.cu", include_str!("../../../kernels/attention.cu")),
    ("attention_tc.cu", include_str!("../../../kernels/attention_tc.cu")),
    ("attention_fa.cu", include_str!("../../../kernels/attention_fa.cu")),
    ("attention_wg.cu", include_str!("../../../kernels/attention_wg.cu")),
    ("embedding.cu", include_str!("../../../kernels/embedding.cu")),
    ("cross_entropy.cu", include_str!("../../../kernels/cross_entropy.cu")),
    ("adamw.cu", include_str!("../../../kernels/adamw.cu")),
];

/// Where NVRTC finds `cuda_bf16.h` on the GPU machine (CUDA 13); `DSLLM_CUDA_INCLUDE` overrides.
const CUDA_INCLUDE: &str = "/usr/local/cuda/include";

/// Compiles [`program_source`] to PTX for `arch` (needs only NVRTC and the CUDA headers, no GPU).
pub fn compile_ptx(arch: &'static str) -> Result<Ptx> {
    let include = std::env::var("DSLLM_CUDA_INCLUDE").unwrap_or_else(|_| CUDA_INCLUDE.to_string());
    let options = CompileOptions {
        include_paths: vec![include],
        arch: Some(arch),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    compile_ptx_with_opts(program_source(), options).map_err(|e| anyhow::anyhow!("NVRTC could not compile kernels/*.cu for {arch}: {e}"))
}

/// 64-bit FNV-1a: a stable hash (the same in every build) for the PTX cache's file names.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Where compiled PTX is kept: `DSLLM_KERNEL_CACHE` (`off` disables the cache), else
/// `$XDG_CACHE_HOME/dsllm/kernels`, else `$HOME/.cache/dsllm/kernels`.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    match std::env::var("DSLLM_KERNEL_CACHE") {
        Ok(v) if v == "off" || v == "0" => None,
        Ok(v) if !v.is_empty() => Some(v.into()),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
            .map(|d| d.join("dsllm").join("kernels")),
    }
}

/// The cache file of this program text for `arch`: keyed by a hash of the source, the
/// architecture and the NVRTC version, so any edit or toolchain change compiles afresh.
pub fn cache_path(arch: &str) -> Option<std::path::PathBuf> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; only called once NVRTC is known to be present.
    let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    let version = format!("{major}.{minor}");
    let key = fnv1a(format!("{}\0{arch}\0{version}", program_source()).as_bytes());
    cache_dir().map(|d| d.join(format!("{key:016x}-{arch}.ptx")))
}

/// PTX for `arch`, from the on-disk cache when it holds this exact program, else compiled by
/// NVRTC and stored (atomically: a temporary file renamed into place). A cache that cannot
/// be read or written only costs the compile.
pub fn cached_ptx(arch: &'static str) -> Result<Ptx> {
    let path = cache_path(arch);
    if let Some(path) = &path {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.contains(".entry") {
                return Ok(Ptx::from_src(text));
            }
        }
    }
    let ptx = compile_ptx(arch)?;
    if let Some(path) = &path {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, ptx.to_src()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    Ok(ptx)
}

/// One program text: the files in order, each introduced by a `#line` so compiler errors name
/// the real file and line. With `DSLLM_KERNELS_DIR` set (kernel development), the files are
/// read from that folder at run time instead of the copies built into the binary, so a kernel
/// edit needs no rebuild.
pub fn program_source() -> String {
    let dir = std::env::var_os("DSLLM_KERNELS_DIR").map(std::path::PathBuf::from);
    let mut text = String::new();
    for (name, source) in SOURCES {
        let source = match &dir {
            Some(dir) => std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("DSLLM_KERNELS_DIR: cannot read {}: {e}", dir.join(name).display())),
            None => source.to_string(),
        };
        text.push_str(&format!("#line 1 \"{name}\"\n{source}\n"));
    }
    text
}

macro_rules! kernel_table {
    ($($name:ident),* $(,)?) => {
        /// Every kernel entry point, loaded from the compiled module.
        pub struct Kernels {
            $(pub $name: CudaFunction,)*
        }

        /// Names of every `extern "C" __global__` function the backend launches.
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Kernels {
            /// Compiles the program for `arch` (e.g. "sm_90") and loads every kernel.
            pub fn compile(context: &Arc<CudaContext>, arch: &'static str) -> Result<Self> {
                let ptx = cached_ptx(arch)?;
                let module = context.load_module(ptx).context("cannot load the compiled kernels")?;
                Ok(Self {
                    $($name: module.load_function(stringify!($name)).with_context(|| format!("kernel {} is missing", stringify!($name)))?,)*
                })
            }
        }
    };
}

kernel_table!(
    cast_f32_to_bf16,
    cast_bf16_to_f32,
    add_f32,
    swiglu_forward,
    swiglu_backward,
    swiglu_forward_bf16,
    swiglu_backward_bf16,
    rmsnorm_forward,
    rmsnorm_backward_input,
    rmsnorm_backward_fused,
    rmsnorm_backward_weight_partial,
    column_sum_add,
    qkv_rope_bf16,
    qkv_rope_f32,
    qkv_rope_f32_to_bf16,
    qkv_rope_bf16_to_f32,
    attention_forward,
    attention_backward_dq,
    attention_backward_dkdv,
    attention_row_dot,
    attention_row_dot_mixed,
    attention_forward_tc64,
    attention_backward_dq_tc64,
    attention_backward_dkdv_tc64,
    attention_forward_tc128,
    attention_backward_dq_tc128,
    attention_backward_dkdv_tc128,
    attention_forward_fa64,
    attention_backward_dq_fa64,
    attention_backward_dkdv_fa64,
    attention_backward_fused_fa64,
    attention_forward_fa128,
    attention_backward_dq_fa128,
    attention_backward_dkdv_fa128,
    attention_backward_fused_fa128,
    attention_forward_wg64,
    attention_backward_dq_wg64,
    attention_backward_dkdv_wg64,
    attention_forward_wg128,
    attention_forward_wg64_ov,
    attention_forward_wg128_ov,
    attention_forward_wg64_w2,
    attention_forward_wg128_w2,
    attention_backward_dq_wg128,
    attention_backward_dkdv_wg128,
    attention_sum_head_groups,
    transpose_last_two,
    embedding_forward,
    embedding_backward,
    embedding_forward_updated,
    cross_entropy_forward,
    cross_entropy_backward,
    cross_entropy_chunk,
    cross_entropy_chunk_bf16,
    cross_entropy_chunk_bf16_kept,
    adamw_update,
    adamw_update8,
    adamw_update_group,
    sum_squares_partial,
    spin_cycles,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_in_the_sources() {
        let text = program_source();
        for name in KERNEL_NAMES {
            // The tensor-core kernels are stamped out per head size by a macro (`name##HD`).
            // The wgmma kernels are stamped out by WG_FORWARD(name, ...) and its siblings.
            let declaration = match name.strip_suffix("64").or_else(|| name.strip_suffix("128")) {
                Some(stem) if stem.ends_with("_tc") || stem.ends_with("_fa") => format!(" {stem}##HD("),
                _ => format!("__global__ void {name}("),
            };
            let stamped = format!("({name},");
            assert!(text.contains(&declaration) || text.contains(&stamped), "no `{declaration}` in kernels/*.cu");
        }
    }

    /// Needs NVRTC (not a GPU); skips where it is missing, as in CI.
    #[test]
    fn kernels_compile_with_nvrtc() {
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipping the NVRTC compile test: no libnvrtc on this machine");
            return;
        }
        // sm_90a compiles the wgmma kernels' bodies; elsewhere they are stubs.
        for arch in ["sm_90", "sm_90a"] {
            let ptx = compile_ptx(arch).unwrap_or_else(|e| panic!("{e}"));
            for name in KERNEL_NAMES {
                assert!(ptx.to_src().contains(&format!(".entry {name}(")), "no entry {name} in the PTX for {arch}");
            }
        }
    }
}

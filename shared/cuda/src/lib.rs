//! The CUDA backend of dsllm: [`CudaBackend`] implements the model's
//! [`Backend`](dsllm_model::Backend) on one NVIDIA GPU, op for op like the CPU backend.
//!
//! - Kernels live in `kernels/*.cu` (one file per op family), are embedded in the binary and
//!   compiled by NVRTC at start for the GPU present ([`kernels`]).
//! - Matrix products go through cuBLASLt with bf16 operands and fp32 accumulation ([`gemm`]);
//!   weights, gradients, optimizer state and activations stay fp32 ([`backend`]).
//! - [`cudnn_attention`]: causal attention on cuDNN's fused flash-attention engines (the
//!   default where cuDNN 9 loads), built through cuDNN's backend graph API.
//! - [`nccl`]: the collectives of data-parallel training (ZeRO-1) between GPUs.
//! - [`parity`] checks every op and whole training steps against the CPU backend;
//!   [`bench`](mod@bench) measures training throughput.
//!
//! cudarc loads the CUDA libraries at run time, so this crate builds and its CPU-side tests run
//! on machines without CUDA; [`gpu_unavailable_reason`] says why a GPU cannot be used.

pub mod backend;
pub mod bench;
pub mod cudnn_attention;
pub mod gemm;
pub mod kernels;
pub mod nccl;
pub mod parity;
pub mod profile;

pub use backend::{check_head_dim, gpu_unavailable_reason, open_gpu, open_gpu_ordinal, AttentionKernels, CudaBackend, GpuBuffer, GpuTokens, Precision, WgmmaChoice};
pub use nccl::{nccl_unavailable_reason, NcclCollective};

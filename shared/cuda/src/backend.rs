//! [`CudaBackend`]: the model's primitive ops on one NVIDIA GPU.
//!
//! Precision, as the paper trains: every buffer the model sees is fp32 (master weights,
//! gradients, optimizer moments, activations), and the matrix products run in bf16 on the
//! tensor cores with fp32 accumulation. A buffer keeps a bf16 copy of itself for the GEMMs,
//! refreshed only when the buffer changed since (each `&mut` use bumps its version), so a
//! weight is converted once per optimizer step and an activation once however many products
//! read it. Norms, softmaxes, RoPE and the optimizer run in fp32.
//!
//! Everything is queued on the main stream, except AdamW (and the gradient norm's sums started
//! during the last backward), which run on a second, low-priority stream ordered by events kept
//! in the buffers ([`CudaBackend::overlap_optimizer`]); only downloads (losses, gradient norms),
//! freeing a buffer the optimizer stream still uses, and GEMM autotuning wait for the GPU.

use std::cell::{Cell, RefCell, RefMut};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use dsllm_model::{AdamWStep, AdamWUpdate, AttentionShape, Backend, OutputGrad, Store};
use half::bf16;

use crate::gemm::{Gemm, GemmShape, Operands};
use crate::kernels::Kernels;
use crate::profile::{OpScope, OpTime, Profiler, WaitProbe, WaitTime};

/// Threads per block of the elementwise and row kernels.
const BLOCK: u32 = 256;
/// Threads per block of cross-entropy rows (a row is a whole vocabulary).
const CE_BLOCK: u32 = 512;
/// Threads of a cross-entropy block when there is one block an SM.
const CE_SM_BLOCK: u32 = 1024;
/// Rows summed by one block in the first pass of RMSNorm's weight gradient.
const NORM_ROWS_PER_CHUNK: usize = 64;
/// Rows per block of the fused RMSNorm backward (default of `DSLLM_NORM_ROWS`): 16 rows keep
/// ~500 blocks for 8k-token batches while the weight gradient's partials stay small
/// (rows / 16 · dim floats).
const FUSED_NORM_ROWS_PER_BLOCK: usize = 16;
/// 1024 threads of two float4 columns (kernels/rmsnorm.cu, NORM_COLS4).
const FUSED_NORM_MAX_DIM: usize = 8 * 1024;
/// Logits of one chunk of rows in [`CudaBackend::output_loss`], at most (default of
/// `DSLLM_OUTPUT_CHUNK_MIB`): 256 MiB of fp32 logits, 128 MiB of bf16 ones (the same rows,
/// 640 of a 102,400-token vocabulary).
const OUTPUT_CHUNK_BYTES_F32: usize = 256 << 20;
const OUTPUT_CHUNK_BYTES_BF16: usize = 128 << 20;
/// SMs the products leave to AdamW while it runs, by default (`DSLLM_OPTIMIZER_SMS`).
const DEFAULT_OPTIMIZER_SMS: u32 = 8;
/// Tensors of one grouped AdamW launch (kernels/adamw.cu, ADAMW_GROUP).
const ADAMW_GROUP: usize = 16;
/// Slices of a spread AdamW update at most, and the size from which one is spread
/// ([`CudaBackend::adamw_spread`]).
const ADAMW_SPREAD_SLICES: usize = 16;
const ADAMW_SPREAD_MIN: usize = 1 << 20;
/// Elements from which a tensor's AdamW update is launched alone (it fills the GPU by itself).
const ADAMW_ALONE: usize = 16 << 20;
/// Blocks of the sum-of-squares reduction (their f64 partials are summed on the host).
const SUM_BLOCKS: usize = 1024;
/// Must match `DPT` and `TILE` in kernels/attention.cu.
const ATTENTION_VALUES_PER_THREAD: usize = 16;
const ATTENTION_TILE: usize = 32;

/// An fp32 buffer on the GPU, with a bf16 copy made on demand for the matrix products.
///
/// In mixed precision some activations are stored in bf16 alone (autocast's dtypes): the
/// outputs of the products and of the kernels whose results only products or attention read.
/// Their fp32 values are then out of date (`f32_stale`) and are widened from the bf16 copy the
/// first time something reads them in fp32; until then, none is allocated (`data` is made on
/// first fp32 use), so such buffers take half the memory.
pub struct GpuBuffer {
    /// Unique in the process: keys what is kept about a buffer ([`CudaBackend::prefetch_sum_squares`]).
    id: u64,
    len: usize,
    data: OnceLock<CudaSlice<f32>>,
    /// Bumped by every mutable use, so a stale bf16 copy is never read.
    version: u64,
    /// The bf16 copy holds the values; `data` (if allocated) is out of date.
    f32_stale: AtomicBool,
    shadow: Mutex<Option<(u64, CudaSlice<bf16>)>>,
    /// Work on the optimizer stream that uses this buffer and that the main stream has not yet
    /// waited for (see [`CudaBackend::optimizer_stream`]): taken by the first access. Shared so
    /// that an update held back ([`CudaBackend::deferred`]) can leave its event here when it is
    /// launched, and can tell whether the buffer still exists.
    pending: PendingSlot,
}

type PendingSlot = Arc<Mutex<Option<Arc<CudaEvent>>>>;

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        // The memory goes back to the main stream's pool: the optimizer stream must be done with it.
        if let Some(event) = self.pending.lock().ok().and_then(|mut p| p.take()) {
            let _ = event.synchronize();
        }
    }
}

impl GpuBuffer {
    fn new(len: usize, data: Option<CudaSlice<f32>>) -> Self {
        let cell = OnceLock::new();
        if let Some(data) = data {
            let _ = cell.set(data);
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), len, data: cell, version: 0, f32_stale: AtomicBool::new(false), shadow: Mutex::new(None), pending: PendingSlot::default() }
    }
    /// Number of floats.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether the last writer stored bf16 values only.
    pub fn holds_bf16_only(&self) -> bool {
        self.f32_stale.load(Ordering::Relaxed)
    }
}

/// One side of the q/k/v RoPE kernel: q's, k's and v's device addresses, the row strides (in
/// values) of q and of k/v, and whether the values are bf16.
struct QkvSide {
    ptrs: [u64; 3],
    strides: [u32; 2],
    bf16: bool,
}

/// The block partials of one buffer range's sum of squares, computed on the optimizer stream.
struct PrefetchedSquares {
    /// The buffer's version they were computed at: any later change makes them stale.
    version: u64,
    partials: CudaSlice<f64>,
    done: Arc<CudaEvent>,
}

/// Token ids on the GPU, and the host copy they were written from (the embedding backward
/// groups positions by token on the host).
pub struct GpuTokens {
    ids: CudaSlice<u32>,
    host: Vec<u32>,
}

/// The CUDA backend: a context, its two streams, the compiled kernels and a cuBLASLt handle.
pub struct CudaBackend {
    /// Which attention kernels run where the head size allows (64 or 128; other sizes always
    /// run the fp32 reference). `DSLLM_ATTENTION=cudnn|fa2|wgmma|wmma|fp32` picks at start;
    /// default cudnn where cuDNN 9 loads, else fa2.
    pub attention: AttentionKernels,
    /// What the matrix products and attention compute in; `DSLLM_PRECISION=fp32` picks at start.
    pub precision: Precision,
    /// Bit-identical reruns (`DSLLM_DETERMINISTIC=1`): no atomics, so the flash-attention
    /// backward computes dQ in a kernel of its own, and cuDNN's backward writes dQ without its
    /// atomic accumulator. The default allows the atomics, as PyTorch's attention does: ds-160m
    /// steps 5% faster with cuDNN on the H100 (BENCHMARKS.md v16), ds-1b 0.1-0.4%, 0.5-1% with fa2
    /// (v7); the sums' order then varies between runs.
    pub deterministic: bool,
    /// Which kernels run on wgmma when `attention` is `Wgmma` (see [`WgmmaChoice`]).
    pub wgmma: WgmmaChoice,
    /// In mixed precision, store the products' outputs and the activations only products read
    /// in bf16 alone, as autocast does (default; `DSLLM_BF16_ACTIVATIONS=0` keeps fp32 copies:
    /// v7's behaviour, for comparison). See [`GpuBuffer`].
    pub bf16_activations: bool,
    /// RMSNorm's backward as one pass per 16-row block (default: 1.3-1.6% faster steps on the
    /// H100, BENCHMARKS.md v13) or as a block per row plus a column-sum pass
    /// (`DSLLM_NORM_BACKWARD=rows`).
    pub fused_norm_backward: bool,
    /// Consecutive rows a block of the one-pass RMSNorm backward takes (`DSLLM_NORM_ROWS`,
    /// default 16): fewer rows, more blocks in flight and more partials to sum.
    pub fused_norm_rows: usize,
    /// Blocks and threads of the output layer's cross-entropy: a few blocks an SM looping over
    /// rows (default one of `CE_SM_BLOCK` threads: the rows read at once fit in L2 for the
    /// gradient pass; `DSLLM_CE_GRID=<blocks an SM>x<threads>`, e.g. `2x512`, to compare) or,
    /// with `DSLLM_CE_GRID=rows`, one block of `CE_BLOCK` threads a row (v9's launch).
    pub cross_entropy_blocks: Option<(u32, u32)>,
    /// Share of a row (0 to 1) the cross-entropy asks into L2 for the block's next row before
    /// its gradient pass (`DSLLM_CE_PREFETCH`; default 0: none).
    pub cross_entropy_prefetch: f32,
    /// The cross-entropy keeps each row in shared memory for its gradient pass instead of
    /// re-reading it from L2 (default; `DSLLM_CE_SHARED=0` re-reads; same values): +1.2% a
    /// ds-160m step on the H100 (BENCHMARKS.md v14). Where the row does not fit (vocab · 2 bytes
    /// beyond the GPU's shared memory a block) the usual kernel runs.
    pub cross_entropy_keep_row: bool,
    /// Bytes of dynamic shared memory the kept-row kernel is allowed so far (set on first use).
    cross_entropy_kept_bytes: Cell<usize>,
    /// AdamW with eight weights a thread instead of four (`DSLLM_ADAMW_WIDTH=8`; same values).
    pub adamw_eight_wide: bool,
    /// AdamW's loads and stores with the streaming cache hint, evicted from L2 first
    /// (`DSLLM_ADAMW_STREAMING=1`, off until measured; same values): its ~30 bytes a weight pass
    /// through L2 once, beside the forward's products, whose operands then stay there longer.
    pub adamw_streaming: bool,
    /// AdamW's tensors below `ADAMW_ALONE` elements launched up to `ADAMW_GROUP` at a time
    /// (default; `DSLLM_ADAMW_GROUPED=0`: one launch a tensor; same values): fewer launches for
    /// the host to issue before the next forward, ds-160m +0.7% on the H100 (v16).
    pub adamw_grouped: bool,
    /// The last tensor's AdamW update, when it is at least twice the size of any other launch
    /// (the output layer's), is split into up to `ADAMW_SPREAD_SLICES` slices queued between the
    /// other launches (`DSLLM_ADAMW_SPREAD=1`, off until measured; same values). The forward
    /// needs that tensor last, but queued last as one launch it can hold the forward at the
    /// output layer while the optimizer stream, on a few SMs, works through it.
    pub adamw_spread: bool,
    /// A gathered table's AdamW update (the token embedding's) is held back until the next
    /// forward's lookup, which computes its rows as the update will leave them, then runs on the
    /// optimizer stream beside the forward (`DSLLM_DEFER_GATHERED`, default on; same bits). Else
    /// the forward waits for the whole table's update first, when nothing else can run (ds-1b:
    /// 210M weights, 1.9 ms of the optimizer's 14.9 on an H100; +0.6% a step, BENCHMARKS.md v16).
    pub defer_gathered_updates: bool,
    /// Buffers [`Backend::embedding_forward`] has read as its table: their updates may be held back.
    gathered_tables: RefCell<std::collections::HashSet<u64>>,
    /// The update held back, if any (at most one); any other use of its buffers launches it first.
    deferred: RefCell<Option<DeferredUpdate>>,
    /// SMs the matrix products leave to the optimizer stream while its AdamW update may still be
    /// running (`DSLLM_OPTIMIZER_SMS`; default 8, or an eighth of a smaller GPU's; 0: none;
    /// ds-1b +0.7-0.9% and ds-1b-gqa +0.6% on the H100, v15/v16). The forward's products otherwise hold every SM
    /// (one block of ~200 KiB of shared memory each), so AdamW's blocks, at the lowest
    /// priority, only run in the gaps between kernels and the update barely overlaps the
    /// forward. With a few SMs free it streams beside the products (cuBLASLt's
    /// `SM_COUNT_TARGET`); the limit ends once the forward reaches the last updated tensor.
    pub optimizer_sms: u32,
    sm_count: u32,
    /// The parameter buffer of the last update on the optimizer stream while the main stream has
    /// not yet waited for it (see [`CudaBackend::optimizer_sms`]).
    optimizer_tail: Cell<Option<u64>>,
    /// Bytes of one chunk's logits in the output layer (`DSLLM_OUTPUT_CHUNK_MIB`; `None`: 256 MiB
    /// in fp32, 128 MiB in bf16). Bigger chunks, fewer and larger logit products.
    pub output_chunk_bytes: Option<usize>,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// AdamW runs on a stream of its own (default; `DSLLM_OPTIMIZER_STREAM=0` keeps one stream), so the next step's
    /// forward overlaps it, and the gradient norm's sums of squares start there during the last
    /// backward ([`Backend::prefetch_sum_squares`]). Each update records an event in the
    /// buffers it touches, and the main stream waits for it at the buffer's next use (see
    /// [`CudaBackend::settle`]): layer 0's forward starts while later layers are still being
    /// updated. The same kernels in the same order: bit-identical weights (a parity check).
    /// The optimizer stream has the lowest priority and the main stream the highest, so the
    /// block scheduler gives the forward's kernels the SMs first and AdamW fills the gaps
    /// (`DSLLM_STREAM_PRIORITIES=0`: both at the default priority). Profiling always runs AdamW
    /// on the main stream, where the op timer measures it.
    pub overlap_optimizer: bool,
    /// Clock cycles the optimizer stream busy-waits before each update and prefetched sum (0:
    /// none): parity sets it so that a missing wait between the streams shows as a difference.
    pub optimizer_stream_delay: u64,
    optimizer_stream: Arc<CudaStream>,
    kernels: Kernels,
    gemm: Gemm,
    norm_partials: RefCell<CudaSlice<f32>>,
    /// cuDNN attention, opened on first use (`None`: unavailable, said once).
    cudnn: std::cell::OnceCell<Option<crate::cudnn_attention::CudnnAttention>>,
    /// cuDNN's Stats (`[batch, heads, seq]`), transposed to and from `lse`.
    attention_stats: RefCell<CudaSlice<f32>>,
    attention_row_dot: RefCell<CudaSlice<f32>>,
    /// Per-query-head dK and dV shares of the grouped-query attention backward.
    attention_k_shares: RefCell<CudaSlice<f32>>,
    attention_v_shares: RefCell<CudaSlice<f32>>,
    sum_partials: RefCell<CudaSlice<f64>>,
    /// Sums of squares started early (see [`Backend::prefetch_sum_squares`]), by (buffer id,
    /// range start, range length).
    prefetched_squares: RefCell<std::collections::HashMap<(u64, usize, usize), PrefetchedSquares>>,
    embedding_segments: RefCell<CudaSlice<u32>>,
    /// The output layer's logit gradient for the whole batch, in bf16 (its GEMMs' operand).
    output_grad: RefCell<CudaSlice<bf16>>,
    profiler: Profiler,
    wait_probe: WaitProbe,
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // Queued work (AdamW on the optimizer stream included) finishes before the kernels'
        // module and the handles go.
        let _ = self.stream.synchronize();
        let _ = self.optimizer_stream.synchronize();
    }
}

/// The attention implementations the backend carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernels {
    /// Flash-attention-2 style: mma.sync m16n8k16 with ldmatrix, register accumulators
    /// (kernels/attention_fa.cu). Head sizes 64 and 128.
    Fa2,
    /// cuDNN's fused flash attention (what PyTorch's SDPA runs), see [`crate::cudnn_attention`];
    /// falls back to `Fa2` (with one message) where cuDNN or a plan for the shape is missing.
    Cudnn,
    /// Hopper's warpgroup MMA reading K/V (Q/dO) straight from shared memory
    /// (kernels/attention_wg.cu, sm_90a). Head sizes 64 and 128, compute capability 9.0 only.
    Wgmma,
    /// v2's WMMA kernels with shared-memory accumulators (kernels/attention_tc.cu).
    Wmma,
    /// The fp32 reference on CUDA cores (kernels/attention.cu), any head size up to 128.
    Fp32,
}

impl AttentionKernels {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fa2 => "fa2",
            Self::Cudnn => "cudnn",
            Self::Wgmma => "wgmma",
            Self::Wmma => "wmma",
            Self::Fp32 => "fp32",
        }
    }
    /// `DSLLM_ATTENTION` names the kernels; by default cuDNN's where cuDNN 9 loads (1.5-3x
    /// fa2's speed, BENCHMARKS.md v10), else fa2.
    fn from_env(hopper: bool) -> Self {
        match std::env::var("DSLLM_ATTENTION").as_deref() {
            Ok("fp32") => Self::Fp32,
            Ok("wmma") | Ok("tc") => Self::Wmma,
            Ok("fa2") => Self::Fa2,
            Ok("cudnn") => Self::Cudnn,
            Ok("wgmma") if hopper => Self::Wgmma,
            _ if crate::cudnn_attention::cudnn_unavailable_reason().is_none() => Self::Cudnn,
            _ => Self::Fa2,
        }
    }
}

/// The arithmetic of the matrix products and attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bf16 operands on the tensor cores with fp32 accumulation, as the paper trains.
    Mixed,
    /// fp32 operands (no TF32) and the fp32 attention kernels: for evaluation that must match
    /// an fp32 reference to 1e-6 rather than bf16's 1e-2. The output layer's gradient products
    /// stay bf16 (its logit gradient is stored in bf16).
    Fp32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mixed => "bf16",
            Self::Fp32 => "fp32",
        }
    }
    fn from_env() -> Self {
        match std::env::var("DSLLM_PRECISION").as_deref() {
            Ok("fp32") => Self::Fp32,
            _ => Self::Mixed,
        }
    }
}

/// Why no GPU can be used here, or `None` when one can: the driver library, NVRTC, cuBLASLt
/// and a device must all be present.
pub fn gpu_unavailable_reason() -> Option<String> {
    // SAFETY: these only try to load the shared libraries.
    unsafe {
        if !cudarc::driver::sys::is_culib_present() {
            return Some("no CUDA driver library (libcuda.so) on this machine".into());
        }
        if !cudarc::nvrtc::sys::is_culib_present() {
            return Some("no NVRTC library (libnvrtc.so) on this machine".into());
        }
        if !cudarc::cublaslt::sys::is_culib_present() {
            return Some("no cuBLASLt library (libcublasLt.so) on this machine".into());
        }
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver sees no GPU".into()),
        Err(e) => Some(format!("the CUDA driver did not start: {e:?}")),
    }
}

/// Opens GPU 0 for a model with heads of `head_dim` (checked first, so an unsupported size is
/// a clear error rather than a panic mid-run); returns the backend and a line saying which GPU.
pub fn open_gpu(head_dim: Option<usize>) -> Result<(CudaBackend, String)> {
    open_gpu_ordinal(head_dim, 0)
}

/// [`open_gpu`] for a data-parallel rank's GPU: GPU `local_rank` where the process sees all of
/// its machine's GPUs (torchrun), the only one where it sees one (srun --gpus-per-task 1, or
/// CUDA_VISIBLE_DEVICES set per process).
pub fn open_gpu_ordinal(head_dim: Option<usize>, local_rank: usize) -> Result<(CudaBackend, String)> {
    if let Some(head_dim) = head_dim {
        check_head_dim(head_dim)?;
    }
    let count = CudaContext::device_count().unwrap_or(0).max(0) as usize;
    let ordinal = if count == 1 { 0 } else { local_rank };
    if ordinal >= count {
        bail!("local rank {local_rank} needs GPU {ordinal}, but this process sees {count} GPU(s): start at most {count} processes per machine");
    }
    let backend = CudaBackend::new(ordinal)?;
    let determinism = if backend.deterministic { "bit-identical reruns" } else { "attention backward with atomics, as PyTorch's: reruns differ in the last bits; DSLLM_DETERMINISTIC=1 for bit-identical ones" };
    let reason = format!("GPU {ordinal} ({}; {determinism})", backend.device_name());
    Ok((backend, reason))
}

impl CudaBackend {
    /// Opens GPU `ordinal` and compiles the kernels for it.
    pub fn new(ordinal: usize) -> Result<Self> {
        if let Some(reason) = gpu_unavailable_reason() {
            bail!("cannot use the CUDA backend: {reason}");
        }
        let context = CudaContext::new(ordinal).with_context(|| format!("cannot open GPU {ordinal}"))?;
        // Stream order, and the events kept in GpuBuffer between the two streams, make every use
        // safe: skip cudarc's per-buffer events.
        unsafe { context.disable_event_tracking() };
        let (stream, optimizer_stream) = if env_switch("DSLLM_STREAM_PRIORITIES", true)? {
            // Numerically lower is more urgent: `greatest` is the highest priority.
            let (least, greatest) = cudarc::driver::result::stream::get_priority_range().context("cannot read the CUDA stream priorities")?;
            (context.new_stream_with_priority(greatest), context.new_stream_with_priority(least))
        } else {
            (context.new_stream(), context.new_stream())
        };
        let stream = stream.context("cannot create the main CUDA stream")?;
        let optimizer_stream = optimizer_stream.context("cannot create the optimizer's CUDA stream")?;
        let (major, minor) = context.compute_capability()?;
        let arch: &'static str = match (major, minor) {
            // "a": the architecture-specific features (wgmma) of exactly this chip.
            (9, 0) => "sm_90a",
            (8, 0) => "sm_80",
            (8, 6) => "sm_86",
            (8, 9) => "sm_89",
            (10, 0) => "sm_100",
            (12, 0) => "sm_120",
            _ => bail!("GPU compute capability {major}.{minor} is not supported (bf16 needs 8.0 or newer)"),
        };
        let kernels = Kernels::compile(&context, arch)?;
        // The tensor-core attention kernels keep more than the default 48 KiB in shared memory.
        for head_dim in [64, 128] {
            let (forward, dq, dkdv) = tensor_core_kernels(&kernels, head_dim);
            let bytes = tensor_core_shared_bytes(head_dim);
            for (function, size) in [(forward, bytes.0), (dq, bytes.1), (dkdv, bytes.2)] {
                function
                    .set_attribute(cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, size as i32)
                    .context("cannot give the attention kernels their shared memory")?;
            }
            let fa = flash_kernels(&kernels, AttentionKernels::Fa2, head_dim, WgmmaChoice { forward: false, dq: false, dkdv: false, overlap: false });
            let wg = flash_kernels(&kernels, AttentionKernels::Wgmma, head_dim, WgmmaChoice { forward: true, dq: true, dkdv: true, overlap: false });
            let wg_overlap = flash_kernels(&kernels, AttentionKernels::Wgmma, head_dim, WgmmaChoice { forward: true, dq: false, dkdv: false, overlap: true });
            let fused = (fa_fused_kernel(&kernels, head_dim), fa_fused_shared_bytes(head_dim));
            let sizes = [(fa.forward, fa.shared.0), (fa.dq, fa.shared.1), (fa.dkdv, fa.shared.2), fused];
            for (function, size) in sizes.into_iter().chain([(wg.forward, wg.shared.0), (wg_overlap.forward, wg_overlap.shared.0), (wg.dq, wg.shared.1), (wg.dkdv, wg.shared.2)]) {
                function
                    .set_attribute(cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, size as i32)
                    .context("cannot give the flash-attention kernels their shared memory")?;
            }
        }
        let device = format!("{} sm_{major}{minor}", context.name().unwrap_or_default());
        let gemm = Gemm::new(stream.clone(), &device)?;
        let sm_count = context.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let empty_f32 = || stream.alloc_zeros::<f32>(1);
        Ok(Self {
            attention: AttentionKernels::from_env((major, minor) == (9, 0)),
            precision: Precision::from_env(),
            deterministic: env_switch("DSLLM_DETERMINISTIC", false)?,
            wgmma: WgmmaChoice::from_env(),
            bf16_activations: env_switch("DSLLM_BF16_ACTIVATIONS", true)?,
            fused_norm_backward: match std::env::var("DSLLM_NORM_BACKWARD").as_deref() {
                Err(_) | Ok("") | Ok("fused") => true,
                Ok("rows") => false,
                Ok(other) => bail!("DSLLM_NORM_BACKWARD={other:?}: expected `fused` (the default) or `rows`"),
            },
            fused_norm_rows: env_number("DSLLM_NORM_ROWS", 1..=256, "rows a block")?.unwrap_or(FUSED_NORM_ROWS_PER_BLOCK),
            cross_entropy_blocks: cross_entropy_grid(std::env::var("DSLLM_CE_GRID").ok().as_deref(), sm_count)?,
            cross_entropy_prefetch: env_number("DSLLM_CE_PREFETCH", 0.0..=1.0, "the share of a row to prefetch")?.unwrap_or(0.0),
            cross_entropy_keep_row: env_switch("DSLLM_CE_SHARED", true)?,
            cross_entropy_kept_bytes: Cell::new(0),
            adamw_eight_wide: match std::env::var("DSLLM_ADAMW_WIDTH").as_deref() {
                Err(_) | Ok("") | Ok("4") => false,
                Ok("8") => true,
                Ok(other) => bail!("DSLLM_ADAMW_WIDTH={other:?}: expected 4 (the default) or 8"),
            },
            adamw_grouped: env_switch("DSLLM_ADAMW_GROUPED", true)?,
            adamw_streaming: env_switch("DSLLM_ADAMW_STREAMING", false)?,
            defer_gathered_updates: env_switch("DSLLM_DEFER_GATHERED", true)?,
            adamw_spread: env_switch("DSLLM_ADAMW_SPREAD", false)?,
            gathered_tables: RefCell::new(std::collections::HashSet::new()),
            deferred: RefCell::new(None),
            optimizer_sms: env_number("DSLLM_OPTIMIZER_SMS", 0..=sm_count - 1, "SMs left to the optimizer stream")?.unwrap_or(DEFAULT_OPTIMIZER_SMS.min(sm_count / 8)),
            sm_count,
            optimizer_tail: Cell::new(None),
            output_chunk_bytes: env_number("DSLLM_OUTPUT_CHUNK_MIB", 1..=65536usize, "MiB of logits a chunk")?.map(|mib| mib << 20),
            norm_partials: RefCell::new(empty_f32()?),
            cudnn: std::cell::OnceCell::new(),
            attention_stats: RefCell::new(empty_f32()?),
            attention_row_dot: RefCell::new(empty_f32()?),
            attention_k_shares: RefCell::new(empty_f32()?),
            attention_v_shares: RefCell::new(empty_f32()?),
            sum_partials: RefCell::new(stream.alloc_zeros::<f64>(SUM_BLOCKS)?),
            prefetched_squares: RefCell::new(std::collections::HashMap::new()),
            embedding_segments: RefCell::new(stream.alloc_zeros::<u32>(1)?),
            output_grad: RefCell::new(stream.alloc_zeros::<bf16>(1)?),
            profiler: Profiler::default(),
            wait_probe: WaitProbe::default(),
            overlap_optimizer: env_switch("DSLLM_OPTIMIZER_STREAM", true)?,
            optimizer_stream_delay: 0,
            optimizer_stream,
            context,
            stream,
            kernels,
            gemm,
        })
    }

    /// The stream every op runs on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device address of `buf`, for a library that writes it (NCCL): counts as a change, so
    /// its bf16 copy is refreshed before the next product reads it.
    pub(crate) fn address_for_writing(&self, buf: &mut GpuBuffer) -> u64 {
        self.ptr(self.f32_inout(buf))
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> String {
        self.context.name().unwrap_or_else(|_| "unknown GPU".into())
    }

    /// The GPU's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.context.compute_capability().unwrap_or((0, 0))
    }

    /// Turns per-op GPU timing on or off (see [`crate::profile`]).
    pub fn set_profiling(&self, on: bool) {
        self.profiler.set_enabled(on);
    }

    /// GPU time per op since profiling was turned on or last taken, largest first.
    pub fn take_profile(&self) -> Vec<OpTime> {
        self.profiler.take()
    }

    /// Times the main stream's waits for the optimizer stream from now on (see
    /// [`crate::profile::WaitProbe`]); unlike profiling, AdamW stays on its own stream.
    pub fn set_stream_waits(&self, on: bool) {
        self.wait_probe.set_enabled(on);
    }

    /// The main stream's stalls on the optimizer stream since [`CudaBackend::set_stream_waits`]
    /// or the last take, by buffer size, largest first.
    pub fn take_stream_waits(&self) -> Vec<WaitTime> {
        self.wait_probe.take()
    }

    fn op(&self, name: impl FnOnce() -> String) -> Option<OpScope<'_>> {
        self.profiler.scope(&self.stream, name)
    }

    /// Waits for all queued work (the optimizer stream's too).
    pub fn synchronize(&self) {
        self.stream.synchronize().expect("CUDA stream failed");
        self.optimizer_stream.synchronize().expect("CUDA optimizer stream failed");
    }

    /// The block partials of `n` floats' sum of squares at `from` into `count` f64 at `to`.
    fn launch_sum_squares(&self, stream: &Arc<CudaStream>, to: u64, from: u64, n64: u64, count: usize) {
        let config = LaunchConfig { grid_dim: (count as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        self.launch_on(stream, &self.kernels.sum_squares_partial, config, |b| {
            b.arg(&to).arg(&from).arg(&n64);
        });
    }

    /// Makes the optimizer stream `side` start after everything queued so far on the main stream
    /// (the gradients, and any allocation or cast that taking the pointers queued), then busy-wait
    /// [`CudaBackend::optimizer_stream_delay`] cycles, if any.
    fn side_after_main(&self, side: &Arc<CudaStream>) {
        let ready = self.stream.record_event(None).expect("cannot record a CUDA event");
        side.wait(&ready).expect("cannot order the CUDA streams");
        if self.optimizer_stream_delay > 0 {
            let cycles = self.optimizer_stream_delay;
            self.launch_on(side, &self.kernels.spin_cycles, LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 }, |b| {
                b.arg(&cycles);
            });
        }
    }

    /// A prefetched sum's partials, once the main stream has waited for the kernel writing them
    /// (so they may be read, reused or freed on the main stream).
    fn retire(&self, old: PrefetchedSquares) -> CudaSlice<f64> {
        self.stream.wait(&old.done).expect("cannot order the CUDA streams");
        old.partials
    }

    /// Makes the main stream wait for optimizer-stream work on `buf` not yet waited for. Every
    /// accessor of a buffer's memory calls it first.
    fn settle(&self, buf: &GpuBuffer) {
        if self.deferred.borrow().as_ref().is_some_and(|d| d.buffers.contains(&buf.id)) {
            self.flush_deferred();
        }
        if let Some(event) = buf.pending.lock().expect("pending event lock").take() {
            self.wait_probe.around(&self.stream, buf.len, || self.stream.wait(&event).expect("cannot order the CUDA streams"));
            if self.optimizer_tail.get() == Some(buf.id) {
                self.optimizer_tail.set(None);
            }
        }
    }

    /// The products, on all SMs or on those [`CudaBackend::optimizer_sms`] leaves while the
    /// optimizer stream may still be updating weights. Call after settling the operands.
    fn gemm(&self) -> &Gemm {
        let limited = self.optimizer_sms > 0 && self.optimizer_tail.get().is_some();
        self.gemm.set_sm_target(if limited { self.sm_count - self.optimizer_sms } else { 0 });
        &self.gemm
    }

    /// Bytes of device memory in use (total minus free), this process's and any other's.
    pub fn memory_in_use(&self) -> usize {
        let (free, total) = self.context.mem_get_info().expect("cuMemGetInfo failed");
        total - free
    }

    fn launch<'a>(&'a self, function: &'a CudaFunction, config: LaunchConfig, push: impl FnOnce(&mut LaunchArgs<'a>)) {
        self.launch_on(&self.stream, function, config, push)
    }

    fn launch_on<'a>(&'a self, stream: &'a Arc<CudaStream>, function: &'a CudaFunction, config: LaunchConfig, push: impl FnOnce(&mut LaunchArgs<'a>)) {
        let mut builder = stream.launch_builder(function);
        push(&mut builder);
        // SAFETY: each op passes the argument list its kernel declares, with sizes checked by
        // the caller's slice lengths.
        unsafe { builder.launch(config) }.expect("CUDA kernel launch failed");
    }

    fn ptr<T>(&self, slice: &CudaSlice<T>) -> u64 {
        let (pointer, _sync) = slice.device_ptr(&self.stream);
        pointer
    }

    /// The device address of `buf`'s bf16 copy, converting first if `buf` changed since.
    fn bf16_ptr(&self, buf: &GpuBuffer) -> u64 {
        self.settle(buf);
        // fp32 values to convert from, if the copy is out of date: taken before the copy's lock
        // (f32_in locks it to widen). A buffer holding bf16 only has a current copy, so this
        // never widens what it is about to narrow again.
        let data = (!buf.holds_bf16_only()).then(|| self.f32_in(buf));
        let mut shadow = buf.shadow.lock().expect("bf16 copy lock");
        let fresh = matches!(&*shadow, Some((version, _)) if *version == buf.version);
        if !fresh {
            let n = buf.len;
            let data = data.expect("a buffer holding bf16 only has a current copy");
            let mut copy = match shadow.take() {
                Some((_, copy)) => copy,
                None => self.alloc_bf16(n),
            };
            let n64 = n as u64;
            let threads = n.div_ceil(4) as u32;
            // Profiled on its own too (inside the op that asked): what bf16 storage would save.
            let _cast = self.op(|| "· cast to bf16".into());
            self.launch(&self.kernels.cast_f32_to_bf16, grid_for(threads), |b| {
                b.arg(&mut copy).arg(data).arg(&n64);
            });
            *shadow = Some((buf.version, copy));
        }
        self.ptr(&shadow.as_ref().expect("just set").1)
    }

    fn alloc_bf16(&self, n: usize) -> CudaSlice<bf16> {
        // SAFETY: every user writes the copy before anything reads it.
        unsafe { self.stream.alloc::<bf16>(n.max(1)) }.expect("cannot allocate a bf16 copy")
    }

    /// `buf`'s fp32 values for reading: allocated (zeros) on first use, widened from the bf16
    /// copy if the last writer stored only that.
    fn f32_in<'b>(&self, buf: &'b GpuBuffer) -> &'b CudaSlice<f32> {
        self.settle(buf);
        let data = buf.data.get_or_init(|| self.stream.alloc_zeros::<f32>(buf.len.max(1)).expect("cannot allocate GPU memory"));
        if buf.f32_stale.swap(false, Ordering::Relaxed) {
            let shadow = buf.shadow.lock().expect("bf16 copy lock");
            let (_, copy) = shadow.as_ref().expect("a buffer holding bf16 only has its copy");
            let (n64, to) = (buf.len as u64, self.ptr(data));
            let _widen = self.op(|| "· widen to fp32".into());
            self.launch(&self.kernels.cast_bf16_to_f32, grid_for(buf.len.div_ceil(4) as u32), |b| {
                b.arg(&to).arg(copy).arg(&n64);
            });
        }
        data
    }

    /// `buf`'s fp32 values for an op that reads and writes them (or writes part of them).
    fn f32_inout<'b>(&self, buf: &'b mut GpuBuffer) -> &'b mut CudaSlice<f32> {
        self.f32_in(buf);
        buf.version += 1;
        buf.data.get_mut().expect("f32_in allocated it")
    }

    /// `buf`'s fp32 values for an op that overwrites all of them (nothing is widened first).
    fn f32_out<'b>(&self, buf: &'b mut GpuBuffer) -> &'b mut CudaSlice<f32> {
        self.settle(buf);
        if buf.data.get().is_none() {
            let _ = buf.data.set(self.stream.alloc_zeros::<f32>(buf.len.max(1)).expect("cannot allocate GPU memory"));
        }
        *buf.f32_stale.get_mut() = false;
        buf.version += 1;
        buf.data.get_mut().expect("just allocated")
    }

    /// `buf`'s fp32 values for an op that writes the first `n` of them: [`Self::f32_out`] when
    /// that is all of them, else [`Self::f32_inout`] (the rest must stay current).
    fn f32_out_first<'b>(&self, buf: &'b mut GpuBuffer, n: usize) -> &'b mut CudaSlice<f32> {
        if n >= buf.len {
            self.f32_out(buf)
        } else {
            self.f32_inout(buf)
        }
    }

    /// Whether mixed-precision activations are stored in bf16 alone (see [`GpuBuffer`]).
    fn bf16_outputs(&self) -> bool {
        self.precision == Precision::Mixed && self.bf16_activations
    }

    /// Whether this backend stores products' outputs and the activations only products read in
    /// bf16 alone (mixed precision with [`CudaBackend::bf16_activations`]).
    pub fn stores_bf16_activations(&self) -> bool {
        self.bf16_outputs()
    }

    /// The device address of `buf`'s bf16 copy for an op that overwrites all `n` values in bf16
    /// alone, or `None` when the op must write fp32 (fp32 precision, bf16 activations off, or
    /// `n` short of the buffer).
    fn bf16_out(&self, buf: &mut GpuBuffer, n: usize) -> Option<u64> {
        if !self.bf16_outputs() || n != buf.len {
            return None;
        }
        Some(self.bf16_store(buf))
    }

    /// The device address of `buf`'s bf16 copy for an op that overwrites all of it and can
    /// only write bf16 (cuDNN attention), whatever [`CudaBackend::bf16_activations`] says: the
    /// fp32 values are widened from it if something reads them.
    fn bf16_store(&self, buf: &mut GpuBuffer) -> u64 {
        self.settle(buf);
        let n = buf.len;
        buf.version += 1;
        *buf.f32_stale.get_mut() = true;
        let shadow = buf.shadow.get_mut().expect("bf16 copy lock");
        let copy = match shadow.take() {
            Some((_, copy)) => copy,
            None => self.alloc_bf16(n),
        };
        let pointer = self.ptr(&copy);
        *shadow = Some((buf.version, copy));
        pointer
    }

    /// A buffer holding `host` rounded to bf16 and nothing else, as a product's output is stored
    /// in mixed precision: for checks of the ops that read such values.
    pub fn upload_as_bf16(&self, host: &[f32]) -> GpuBuffer {
        let values: Vec<bf16> = host.iter().map(|&x| bf16::from_f32(x)).collect();
        let copy = self.stream.clone_htod(&values).expect("cannot copy to the GPU");
        let mut buf = GpuBuffer::new(host.len(), None);
        buf.version = 1;
        *buf.f32_stale.get_mut() = true;
        *buf.shadow.get_mut().expect("bf16 copy lock") = Some((1, copy));
        buf
    }

    /// The bf16 copy of `buf` (refreshed if out of date), for checks of the bf16 values the
    /// products read.
    pub fn download_bf16(&self, buf: &GpuBuffer) -> Vec<bf16> {
        self.bf16_ptr(buf);
        let shadow = buf.shadow.lock().expect("bf16 copy lock");
        let copy = &shadow.as_ref().expect("bf16_ptr made it").1;
        let mut host = self.stream.clone_dtoh(copy).expect("cannot copy from the GPU");
        host.truncate(buf.len);
        host
    }

    /// The element type of the matrix products' operands.
    fn operands(&self) -> Operands {
        match self.precision {
            Precision::Mixed => Operands::Bf16,
            Precision::Fp32 => Operands::F32,
        }
    }

    /// The device address of `buf` as a matrix product reads it: its bf16 copy, or in fp32
    /// precision the buffer itself.
    fn operand_ptr(&self, buf: &GpuBuffer) -> u64 {
        match self.precision {
            Precision::Mixed => self.bf16_ptr(buf),
            Precision::Fp32 => self.ptr(self.f32_in(buf)),
        }
    }

    /// For a kernel about to overwrite all of `buf` (whose version the kernel's `data_mut`
    /// already bumped): the device address of `buf`'s bf16 copy, marked current, for the kernel
    /// to write alongside the fp32 values, so no cast pass follows. 0 (no copy written) when
    /// the kernel covers only `n` < len values.
    fn fused_bf16_ptr(&self, buf: &GpuBuffer, n: usize) -> u64 {
        if n != buf.len || std::env::var_os("DSLLM_NO_FUSED_CAST").is_some() {
            return 0;
        }
        self.settle(buf);
        let mut shadow = buf.shadow.lock().expect("bf16 copy lock");
        let copy = match shadow.take() {
            Some((_, copy)) => copy,
            None => self.alloc_bf16(n),
        };
        let pointer = self.ptr(&copy);
        *shadow = Some((buf.version, copy));
        pointer
    }

    /// Bytes of one output-layer chunk's logits and of one logit (bf16 in mixed precision).
    fn output_chunk_budget(&self) -> (usize, usize) {
        match self.precision {
            Precision::Mixed => (self.output_chunk_bytes.unwrap_or(OUTPUT_CHUNK_BYTES_BF16), 2),
            Precision::Fp32 => (self.output_chunk_bytes.unwrap_or(OUTPUT_CHUNK_BYTES_F32), 4),
        }
    }

    fn scratch<'a, T: DeviceRepr + ValidAsZeroBits>(&self, cell: &'a RefCell<CudaSlice<T>>, len: usize) -> RefMut<'a, CudaSlice<T>> {
        let mut slice = cell.borrow_mut();
        if slice.len() < len {
            *slice = self.stream.alloc_zeros::<T>(len).expect("cannot allocate scratch memory");
        }
        slice
    }
}

/// `out[rows, out_dim] = inp[rows, in_dim] · W[out_dim, in_dim]ᵀ` in cuBLASLt's column-major
/// terms: row-major X[r, c] is column-major Xᵀ, so outᵀ[out, rows] = W[out, in] · inpᵀ[in, rows]
/// with W stored column-major as [in, out] (transposed).
fn forward_shape(operands: Operands, rows: usize, in_dim: usize, out_dim: usize) -> GemmShape {
    GemmShape {
        operands,
        transa: true,
        transb: false,
        m: out_dim as u64,
        n: rows as u64,
        k: in_dim as u64,
        lda: in_dim as i64,
        ldb: in_dim as i64,
        ldc: out_dim as i64,
    }
}

/// One thread per item, `BLOCK` threads a block.
fn grid_for(items: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (items.div_ceil(BLOCK).max(1), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn grid_for_u64(items: usize) -> LaunchConfig {
    grid_for(u32::try_from(items).expect("more than 2^32 elements in one elementwise launch"))
}

/// `column_sum_add`: blocks of 32 columns x 8 lanes over the chunks.
fn column_sum_grid(dim: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (dim.div_ceil(32) as u32, 1, 1), block_dim: (32, 8, 1), shared_mem_bytes: 0 }
}

/// An on/off setting from the environment: `1`/`on`/`true`/`yes` or `0`/`off`/`false`/`no`,
/// `default` when unset or empty; anything else is an error that names the variable.
pub(crate) fn env_switch(name: &str, default: bool) -> Result<bool> {
    parse_switch(name, std::env::var(name).ok().as_deref(), default)
}

fn parse_switch(name: &str, value: Option<&str>, default: bool) -> Result<bool> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("1" | "on" | "true" | "yes") => Ok(true),
        Some("0" | "off" | "false" | "no") => Ok(false),
        Some(_) => bail!("{name}={:?}: expected 1/on/true/yes or 0/off/false/no", value.unwrap_or_default()),
    }
}

/// A number setting from the environment within `valid` (`None` when unset or empty); anything
/// else is an error that names the variable and says what it holds (`what`).
pub(crate) fn env_number<T>(name: &str, valid: std::ops::RangeInclusive<T>, what: &str) -> Result<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    parse_number(name, std::env::var(name).ok().as_deref(), valid, what)
}

fn parse_number<T>(name: &str, value: Option<&str>, valid: std::ops::RangeInclusive<T>, what: &str) -> Result<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<T>() {
            Ok(number) if valid.contains(&number) => Ok(Some(number)),
            _ => bail!("{name}={text:?}: expected {what}, from {} to {}", valid.start(), valid.end()),
        },
    }
}

/// `DSLLM_CE_GRID`'s cross-entropy launch on a GPU of `sms` SMs: `None` for a block a row.
fn cross_entropy_grid(setting: Option<&str>, sms: u32) -> Result<Option<(u32, u32)>> {
    let (per_sm, threads) = match setting {
        Some("rows") => return Ok(None),
        None | Some("") => (1, CE_SM_BLOCK),
        Some(text) => {
            let parsed = text.split_once('x').and_then(|(b, t)| Some((b.parse::<u32>().ok()?, t.parse::<u32>().ok()?)));
            match parsed {
                Some((b, t)) if b >= 1 && (32..=1024).contains(&t) && t % 32 == 0 => (b, t),
                _ => bail!("DSLLM_CE_GRID={text:?}: expected `rows` or <blocks an SM>x<threads> (threads a multiple of 32 up to 1024, e.g. 2x512)"),
            }
        }
    };
    Ok(Some((per_sm * sms, threads)))
}

/// One block per row.
fn rows_grid(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The forward, dQ and dK/dV tensor-core kernels for a head size (64 or 128).
fn tensor_core_kernels(kernels: &Kernels, head_dim: usize) -> (&CudaFunction, &CudaFunction, &CudaFunction) {
    if head_dim == 64 {
        (&kernels.attention_forward_tc64, &kernels.attention_backward_dq_tc64, &kernels.attention_backward_dkdv_tc64)
    } else {
        (&kernels.attention_forward_tc128, &kernels.attention_backward_dq_tc128, &kernels.attention_backward_dkdv_tc128)
    }
}


/// How `AttentionKernels::Wgmma` runs: which of the three flash-attention kernels use wgmma
/// (the others are the fa2 ones; `DSLLM_WG_KERNELS`, e.g. "fwd,dq,dkdv"; default "fwd": on the
/// H100 the dQ kernel on wgmma was slower than fa2's and dK/dV no faster, BENCHMARKS.md v8),
/// and whether the forward is the 2-warpgroup one (128 queries a block sharing each K/V tile,
/// default) or the one that overlaps softmax with P·V (`DSLLM_WG_OVERLAP=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgmmaChoice {
    pub forward: bool,
    pub dq: bool,
    pub dkdv: bool,
    pub overlap: bool,
}

impl WgmmaChoice {
    fn from_env() -> Self {
        let parts = std::env::var("DSLLM_WG_KERNELS").unwrap_or_else(|_| "fwd".into());
        let has = |part: &str| parts.split(',').any(|p| p.trim() == part);
        Self { forward: has("fwd"), dq: has("dq"), dkdv: has("dkdv"), overlap: std::env::var("DSLLM_WG_OVERLAP").is_ok_and(|v| v != "0") }
    }
}

/// One set of flash-attention kernels (forward, dQ, dK/dV) for a head size. The backward
/// kernels' blocks cover 64 rows (queries, or keys in dK/dV) with 128 threads; the forward's
/// `forward_rows` with `forward_threads`; `shared` is each kernel's shared memory.
struct FlashKernels<'a> {
    forward: &'a CudaFunction,
    forward_rows: usize,
    forward_threads: u32,
    dq: &'a CudaFunction,
    dkdv: &'a CudaFunction,
    shared: (usize, usize, usize),
}

/// The flash-attention-2 (`Fa2`) or wgmma (`Wgmma`, the parts `wg` names) kernels for a head
/// size (64 or 128).
fn flash_kernels(kernels: &Kernels, which: AttentionKernels, head_dim: usize, wg: WgmmaChoice) -> FlashKernels<'_> {
    let k = kernels;
    let wide = head_dim != 64;
    let mut set = FlashKernels {
        forward: if wide { &k.attention_forward_fa128 } else { &k.attention_forward_fa64 },
        forward_rows: 64,
        forward_threads: 128,
        dq: if wide { &k.attention_backward_dq_fa128 } else { &k.attention_backward_dq_fa64 },
        dkdv: if wide { &k.attention_backward_dkdv_fa128 } else { &k.attention_backward_dkdv_fa64 },
        shared: fa_shared_bytes(head_dim),
    };
    if which != AttentionKernels::Wgmma {
        return set;
    }
    let wg_bytes = wg_shared_bytes(head_dim);
    if wg.forward && wg.overlap {
        set.forward = if wide { &k.attention_forward_wg128_ov } else { &k.attention_forward_wg64_ov };
        set.shared.0 = wg_bytes.0;
    } else if wg.forward {
        set.forward = if wide { &k.attention_forward_wg128_w2 } else { &k.attention_forward_wg64_w2 };
        (set.forward_rows, set.forward_threads) = (128, 256);
        // Two warpgroups' 128 queries, then two stages of 64 keys and values.
        set.shared.0 = (128 + 4 * 64) * head_dim * 2;
    }
    if wg.dq {
        set.dq = if wide { &k.attention_backward_dq_wg128 } else { &k.attention_backward_dq_wg64 };
        set.shared.1 = wg_bytes.1;
    }
    if wg.dkdv {
        set.dkdv = if wide { &k.attention_backward_dkdv_wg128 } else { &k.attention_backward_dkdv_wg64 };
        set.shared.2 = wg_bytes.2;
    }
    set
}

/// Shared memory of the wgmma kernels; mirrors kernels/attention_wg.cu (unpadded tiles: the
/// forward's 64 queries and two stages of 64 keys and values; dQ also holds dO; dK/dV holds 64
/// keys and values and two stages of 64 queries, dO, log-sum-exp and D).
pub fn wg_shared_bytes(head_dim: usize) -> (usize, usize, usize) {
    let row = head_dim * 2;
    (320 * row, 384 * row, 384 * row + 4 * 64 * 4)
}

/// The flash-attention-2 backward that also adds dQ (atomics), replacing the dQ kernel.
fn fa_fused_kernel(kernels: &Kernels, head_dim: usize) -> &CudaFunction {
    if head_dim == 64 {
        &kernels.attention_backward_fused_fa64
    } else {
        &kernels.attention_backward_fused_fa128
    }
}

/// The dK/dV kernel's shared memory plus its dSᵀ tile (64 keys x (step + 8) bf16).
pub fn fa_fused_shared_bytes(head_dim: usize) -> usize {
    let step = if head_dim == 64 { 64 } else { 32 };
    fa_shared_bytes(head_dim).2 + 64 * (step + 8) * 2
}

/// Shared memory of the flash-attention-2 kernels; mirrors kernels/attention_fa.cu (64-row
/// blocks; dQ steps over 64 keys and dK/dV over 64 queries for head_dim 64, 32 for 128).
pub fn fa_shared_bytes(head_dim: usize) -> (usize, usize, usize) {
    let row = (head_dim + 8) * 2;
    let step = if head_dim == 64 { 64 } else { 32 };
    (320 * row, (128 + 4 * step) * row, (128 + 4 * step) * row + 4 * step * 4)
}

/// Shared memory of the forward, dQ and dK/dV tensor-core kernels; mirrors `Strides` in
/// kernels/attention_tc.cu.
pub fn tensor_core_shared_bytes(head_dim: usize) -> (usize, usize, usize) {
    let tile = 64;
    let h = tile * (head_dim + 8) * 2;
    let s = tile * (tile + 4) * 4;
    let p = tile * (tile + 8) * 2;
    let o = tile * (head_dim + 4) * 4;
    let rows = 2 * tile * 4;
    (3 * h + p + s + o + rows, 4 * h + 2 * s + p + o + rows, 4 * h + 2 * s + 2 * p + 2 * o + rows)
}

/// Threads per attention row and rows per block of the fp32 attention kernels for a head size
/// (a row's values are split evenly over a power-of-two group of threads, at most 16 each).
/// Panics on a size [`check_head_dim`] refuses.
pub fn attention_geometry(head_dim: usize) -> (usize, usize) {
    if let Err(e) = check_head_dim(head_dim) {
        panic!("{e}");
    }
    let per_row = head_dim.div_ceil(ATTENTION_VALUES_PER_THREAD);
    (per_row, BLOCK as usize / per_row)
}

/// Whether the CUDA attention kernels take this head size: a power of two from 2 to 128 (every
/// LLaMA-family size but 80 and 96; those run on the CPU backend).
pub fn check_head_dim(head_dim: usize) -> Result<()> {
    if !(2..=128).contains(&head_dim) || !head_dim.is_power_of_two() {
        bail!("the CUDA attention kernels support head sizes 2, 4, ..., 64 or 128 (powers of two), not {head_dim}: use the CPU backend for this model");
    }
    Ok(())
}

impl Backend for CudaBackend {
    type Buffer = GpuBuffer;
    type Tokens = GpuTokens;

    fn alloc(&self, len: usize) -> GpuBuffer {
        // Zeros, allocated on first use (see GpuBuffer).
        GpuBuffer::new(len, None)
    }
    fn upload(&self, host: &[f32]) -> GpuBuffer {
        if host.is_empty() {
            return self.alloc(0);
        }
        GpuBuffer::new(host.len(), Some(self.stream.clone_htod(host).expect("cannot copy to the GPU")))
    }
    fn download(&self, buf: &GpuBuffer) -> Vec<f32> {
        let mut host = self.stream.clone_dtoh(self.f32_in(buf)).expect("cannot copy from the GPU");
        host.truncate(buf.len);
        host
    }
    fn write(&self, buf: &mut GpuBuffer, host: &[f32]) {
        if host.is_empty() {
            return;
        }
        let data = if host.len() == buf.len { self.f32_out(buf) } else { self.f32_inout(buf) };
        let mut view = data.slice_mut(..host.len());
        self.stream.memcpy_htod(host, &mut view).expect("cannot copy to the GPU");
    }
    fn zero(&self, buf: &mut GpuBuffer) {
        let _op = self.op(|| "zero".into());
        self.stream.memset_zeros(self.f32_out(buf)).expect("cannot clear GPU memory");
    }
    fn upload_tokens(&self, host: &[u32]) -> GpuTokens {
        let mut ids = self.stream.alloc_zeros::<u32>(host.len().max(1)).expect("cannot allocate GPU memory");
        if !host.is_empty() {
            self.stream.memcpy_htod(host, &mut ids).expect("cannot copy to the GPU");
        }
        GpuTokens { ids, host: host.to_vec() }
    }
    fn write_tokens(&self, buf: &mut GpuTokens, host: &[u32]) {
        if host.is_empty() {
            return;
        }
        let mut view = buf.ids.slice_mut(..host.len());
        self.stream.memcpy_htod(host, &mut view).expect("cannot copy to the GPU");
        buf.host[..host.len()].copy_from_slice(host);
    }

    fn matmul_forward(&self, out: &mut GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rows: usize, in_dim: usize, out_dim: usize) {
        let _op = self.op(|| format!("matmul_forward {rows}x{in_dim}->{out_dim}"));
        let (w, x) = (self.operand_ptr(weight), self.operand_ptr(inp));
        // Mixed precision: the product rounded to bf16 and stored so alone (autocast's output).
        let (c, operands) = match self.bf16_out(out, rows * out_dim) {
            Some(c) => (c, Operands::Bf16WithBf16Output),
            None => (self.ptr(self.f32_out_first(out, rows * out_dim)), self.operands()),
        };
        unsafe { self.gemm().run(forward_shape(operands, rows, in_dim, out_dim), w, x, c, 1.0, 0.0) }.expect("matmul_forward");
    }

    fn matmul_forward_residual(
        &self,
        out: &mut GpuBuffer,
        residual: &GpuBuffer,
        inp: &GpuBuffer,
        weight: &GpuBuffer,
        _scratch: &mut GpuBuffer,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
    ) {
        let _op = self.op(|| format!("matmul_forward_residual {rows}x{in_dim}->{out_dim}"));
        // One product with the residual as C (beta 1) and `out` as D: the fp32 sum the separate
        // product and add gave, without storing the product or reading it back.
        let (w, x) = (self.operand_ptr(weight), self.operand_ptr(inp));
        let c = self.ptr(self.f32_in(residual));
        let d = self.ptr(self.f32_out_first(out, rows * out_dim));
        unsafe { self.gemm().run_to(forward_shape(self.operands(), rows, in_dim, out_dim), w, x, c, d, 1.0, 1.0) }.expect("matmul_forward_residual");
    }

    fn matmul_backward(
        &self,
        d_inp: &mut GpuBuffer,
        d_weight: &mut GpuBuffer,
        d_out: &GpuBuffer,
        inp: &GpuBuffer,
        weight: &GpuBuffer,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
        d_inp_store: Store,
        d_weight_store: Store,
    ) {
        let _op = self.op(|| format!("matmul_backward {rows}x{in_dim}->{out_dim}"));
        let (g, w, x) = (self.operand_ptr(d_out), self.operand_ptr(weight), self.operand_ptr(inp));
        // The two products timed apart too: a small weight gradient (few output tiles, long K)
        // and an input gradient added into C behave differently.
        let part = self.op(|| format!("· matmul_backward d_input {rows}x{in_dim}->{out_dim}"));
        // d_inpᵀ[in, rows] (+)= Wᵀ[in, out] · d_outᵀ[out, rows]: beta 0 overwrites without reading.
        let low_precision = match d_inp_store {
            Store::OverwriteLowPrecision => self.bf16_out(d_inp, rows * in_dim),
            _ => None,
        };
        let (beta, c, operands) = match (d_inp_store, low_precision) {
            (_, Some(c)) => (0.0, c, Operands::Bf16WithBf16Output),
            (Store::Add, None) => (1.0, self.ptr(self.f32_inout(d_inp)), self.operands()),
            (_, None) => (0.0, self.ptr(self.f32_out_first(d_inp, rows * in_dim)), self.operands()),
        };
        let shape = GemmShape {
            operands,
            transa: false,
            transb: false,
            m: in_dim as u64,
            n: rows as u64,
            k: out_dim as u64,
            lda: in_dim as i64,
            ldb: out_dim as i64,
            ldc: in_dim as i64,
        };
        unsafe { self.gemm().run(shape, w, g, c, 1.0, beta) }.expect("matmul_backward (input)");
        drop(part);
        let _part = self.op(|| format!("· matmul_backward d_weight {rows}x{in_dim}->{out_dim}"));
        // d_Wᵀ[in, out] (+)= inpᵀ[in, rows] · d_out[rows, out]
        let (beta, c) = match d_weight_store {
            Store::Add => (1.0, self.ptr(self.f32_inout(d_weight))),
            _ => (0.0, self.ptr(self.f32_out(d_weight))),
        };
        let shape = GemmShape {
            operands: self.operands(),
            transa: false,
            transb: true,
            m: in_dim as u64,
            n: out_dim as u64,
            k: rows as u64,
            lda: in_dim as i64,
            ldb: out_dim as i64,
            ldc: in_dim as i64,
        };
        unsafe { self.gemm().run(shape, x, g, c, 1.0, beta) }.expect("matmul_backward (weight)");
    }

    fn rmsnorm_forward(&self, out: &mut GpuBuffer, rstd: &mut GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rows: usize, dim: usize, eps: f32) {
        let _op = self.op(|| "rmsnorm_forward".into());
        let dim32 = dim as i32;
        // Mixed precision: only products read the normalised values, so bf16 alone (out_ptr 0).
        let (out_ptr, shadow) = match self.bf16_out(out, rows * dim) {
            Some(shadow) => (0, shadow),
            None => {
                let out_ptr = self.ptr(self.f32_out_first(out, rows * dim));
                (out_ptr, self.fused_bf16_ptr(out, rows * dim))
            }
        };
        let (inp, weight) = (self.f32_in(inp), self.f32_in(weight));
        self.launch(&self.kernels.rmsnorm_forward, rows_grid(rows, BLOCK), |b| {
            b.arg(&out_ptr).arg(self.f32_out_first(rstd, rows)).arg(inp).arg(weight).arg(&dim32).arg(&eps).arg(&shadow);
        });
    }

    fn rmsnorm_backward(
        &self,
        d_inp: &mut GpuBuffer,
        d_weight: &mut GpuBuffer,
        d_out: &GpuBuffer,
        inp: &GpuBuffer,
        weight: &GpuBuffer,
        rstd: &GpuBuffer,
        rows: usize,
        dim: usize,
    ) {
        let _op = self.op(|| "rmsnorm_backward".into());
        let (rows32, dim32) = (rows as i32, dim as i32);
        let (d_out, inp, weight, rstd) = (self.f32_in(d_out), self.f32_in(inp), self.f32_in(weight), self.f32_in(rstd));
        // The residual gradient feeds the next products too: its bf16 copy in the same pass.
        let d_inp_at = self.ptr(self.f32_inout(d_inp));
        let shadow = if self.precision == Precision::Mixed { self.fused_bf16_ptr(d_inp, rows * dim) } else { 0 };
        if dim % 4 == 0 && dim <= FUSED_NORM_MAX_DIM && self.fused_norm_backward {
            // One pass: the input gradient and the weight gradient's partials per block of rows
            // (float4 columns, NORM_COLS4 = 2 a thread, whole warps).
            let chunks = rows.div_ceil(self.fused_norm_rows);
            let mut partial = self.scratch(&self.norm_partials, chunks * dim);
            let per_block = self.fused_norm_rows as i32;
            let threads = (dim / 4).div_ceil(2).div_ceil(32) as u32 * 32;
            self.launch(&self.kernels.rmsnorm_backward_fused, rows_grid(chunks, threads), |b| {
                b.arg(&d_inp_at).arg(&mut *partial).arg(d_out).arg(inp).arg(weight).arg(rstd);
                b.arg(&rows32).arg(&dim32).arg(&per_block).arg(&shadow);
            });
            let chunks32 = chunks as i32;
            self.launch(&self.kernels.column_sum_add, column_sum_grid(dim), |b| {
                b.arg(self.f32_inout(d_weight)).arg(&*partial).arg(&chunks32).arg(&dim32);
            });
            return;
        }
        self.launch(&self.kernels.rmsnorm_backward_input, rows_grid(rows, BLOCK), |b| {
            b.arg(&d_inp_at).arg(d_out).arg(inp).arg(weight).arg(rstd).arg(&dim32).arg(&shadow);
        });
        let chunks = rows.div_ceil(NORM_ROWS_PER_CHUNK);
        let mut partial = self.scratch(&self.norm_partials, chunks * dim);
        let per_chunk = NORM_ROWS_PER_CHUNK as i32;
        // Four columns a thread (the kernel falls back to striding over single columns).
        let columns = (dim.div_ceil(4) as u32).div_ceil(BLOCK);
        let config = LaunchConfig { grid_dim: (columns, chunks as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        self.launch(&self.kernels.rmsnorm_backward_weight_partial, config, |b| {
            b.arg(&mut *partial).arg(d_out).arg(inp).arg(rstd).arg(&rows32).arg(&dim32).arg(&per_chunk);
        });
        let chunks32 = chunks as i32;
        self.launch(&self.kernels.column_sum_add, column_sum_grid(dim), |b| {
            b.arg(self.f32_inout(d_weight)).arg(&*partial).arg(&chunks32).arg(&dim32);
        });
    }

    fn rope_table(&self, seq: usize, head_dim: usize, theta: f64) -> GpuBuffer {
        // Computed on the host exactly as the CPU backend does, so both rotate identically.
        self.upload(&dsllm_model::CpuBackend.rope_table(seq, head_dim, theta))
    }

    fn qkv_rope_forward(&self, q: &mut GpuBuffer, k: &mut GpuBuffer, v: &mut GpuBuffer, qkv: &GpuBuffer, table: &GpuBuffer, shape: AttentionShape) {
        let _op = self.op(|| "qkv_rope_forward".into());
        let (n, q_dim, kv_dim) = (shape.batch * shape.seq, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
        let width = q_dim + 2 * kv_dim;
        assert!(qkv.len >= n * width, "qkv_rope_forward: {} values for {n} rows of {width}", qkv.len);
        let source = self.qkv_side_in(&[qkv], [0, q_dim, q_dim + kv_dim], [width, width]);
        // q, k and v are read by attention alone: bf16 alone in mixed precision.
        let lens = [n * q_dim, n * kv_dim, n * kv_dim];
        assert!(q.len >= lens[0] && k.len >= lens[1] && v.len >= lens[2], "qkv_rope_forward: q/k/v too short for {n} rows");
        let destination = if self.bf16_outputs() && q.len == lens[0] && k.len == lens[1] && v.len == lens[2] {
            let ptrs = [self.bf16_out(q, lens[0]), self.bf16_out(k, lens[1]), self.bf16_out(v, lens[2])].map(|p| p.expect("checked"));
            QkvSide { ptrs, strides: [q_dim as u32, kv_dim as u32], bf16: true }
        } else {
            let ptrs = [self.ptr(self.f32_out_first(q, lens[0])), self.ptr(self.f32_out_first(k, lens[1])), self.ptr(self.f32_out_first(v, lens[2]))];
            QkvSide { ptrs, strides: [q_dim as u32, kv_dim as u32], bf16: false }
        };
        self.qkv_rope_launch(destination, source, table, shape, 1.0);
    }

    fn qkv_rope_backward(&self, d_qkv: &mut GpuBuffer, d_q: &GpuBuffer, d_k: &GpuBuffer, d_v: &GpuBuffer, table: &GpuBuffer, shape: AttentionShape) {
        let _op = self.op(|| "qkv_rope_backward".into());
        let (n, q_dim, kv_dim) = (shape.batch * shape.seq, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
        let width = q_dim + 2 * kv_dim;
        assert!(d_qkv.len >= n * width && d_q.len >= n * q_dim && d_k.len >= n * kv_dim && d_v.len >= n * kv_dim, "qkv_rope_backward: buffers too short for {n} rows");
        let source = self.qkv_side_in(&[d_q, d_k, d_v], [0, 0, 0], [q_dim, kv_dim]);
        // d_qkv feeds the q/k/v product's backward alone: bf16 alone in mixed precision.
        let destination = match self.bf16_out(d_qkv, n * width) {
            Some(base) => QkvSide { ptrs: [base, base + 2 * q_dim as u64, base + 2 * (q_dim + kv_dim) as u64], strides: [width as u32; 2], bf16: true },
            None => {
                let base = self.ptr(self.f32_out_first(d_qkv, n * width));
                QkvSide { ptrs: [base, base + 4 * q_dim as u64, base + 4 * (q_dim + kv_dim) as u64], strides: [width as u32; 2], bf16: false }
            }
        };
        self.qkv_rope_launch(destination, source, table, shape, -1.0);
    }

    fn attention_forward(&self, out: &mut GpuBuffer, lse: &mut GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, shape: AttentionShape) {
        let _op = self.op(|| "attention_forward".into());
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        let (seq32, heads32, kv32) = (seq as i32, heads as i32, kv_heads as i32);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut which = self.attention_kernels(head_dim);
        if which == AttentionKernels::Cudnn {
            if self.cudnn_attention_forward(out, lse, q, k, v, shape) {
                return;
            }
            which = AttentionKernels::Fa2;
        }
        if matches!(which, AttentionKernels::Fa2 | AttentionKernels::Wgmma) {
            let (qb, kb, vb) = (self.bf16_ptr(q), self.bf16_ptr(k), self.bf16_ptr(v));
            let flash = flash_kernels(&self.kernels, which, head_dim, self.wgmma);
            let config = LaunchConfig {
                grid_dim: (seq.div_ceil(flash.forward_rows) as u32, heads as u32, batch as u32),
                block_dim: (flash.forward_threads, 1, 1),
                shared_mem_bytes: flash.shared.0 as u32,
            };
            // Mixed precision: O in bf16 alone (the output projection and the row dot read it).
            let (out_f32, out_bf16) = match self.bf16_out(out, batch * seq * heads * head_dim) {
                Some(values) => (0, values),
                None => (self.ptr(self.f32_out_first(out, batch * seq * heads * head_dim)), 0),
            };
            self.launch(flash.forward, config, |b| {
                b.arg(&out_f32).arg(self.f32_out_first(lse, batch * seq * heads)).arg(&qb).arg(&kb).arg(&vb);
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale).arg(&out_bf16);
            });
            return;
        }
        if self.attention_kernels(head_dim) == AttentionKernels::Wmma {
            let (forward, _, _) = tensor_core_kernels(&self.kernels, head_dim);
            let config = tensor_core_grid(seq, heads, batch, tensor_core_shared_bytes(head_dim).0);
            self.launch(forward, config, |b| {
                b.arg(self.f32_out_first(out, batch * seq * heads * head_dim)).arg(self.f32_out_first(lse, batch * seq * heads));
                b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v));
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale);
            });
            return;
        }
        self.reference_attention_forward(out, lse, q, k, v, None, shape);
    }

    fn attention_backward(
        &self,
        d_q: &mut GpuBuffer,
        d_k: &mut GpuBuffer,
        d_v: &mut GpuBuffer,
        d_out: &GpuBuffer,
        out: &GpuBuffer,
        lse: &GpuBuffer,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        shape: AttentionShape,
    ) {
        let _op = self.op(|| "attention_backward".into());
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        let (q_len, kv_len) = (batch * seq * heads * head_dim, batch * seq * kv_heads * head_dim);
        let (seq32, heads32, kv32, hd32) = (seq as i32, heads as i32, kv_heads as i32, head_dim as i32);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut which = self.attention_kernels(head_dim);
        if which == AttentionKernels::Cudnn {
            if self.cudnn_attention_backward(d_q, d_k, d_v, d_out, out, lse, q, k, v, shape) {
                return;
            }
            which = AttentionKernels::Fa2;
        }
        let mut row_dot = self.scratch(&self.attention_row_dot, batch * seq * heads);
        if matches!(which, AttentionKernels::Fa2 | AttentionKernels::Wgmma) {
            let rows = (batch * seq * heads) as u64;
            let (qb, kb, vb, gb) = (self.bf16_ptr(q), self.bf16_ptr(k), self.bf16_ptr(v), self.bf16_ptr(d_out));
            if d_out.holds_bf16_only() || out.holds_bf16_only() {
                // dO from its product (Store::OverwriteLowPrecision) or O from the forward, in bf16.
                let (d_out_f32, d_out_bf16) = if d_out.holds_bf16_only() { (0, gb) } else { (self.ptr(self.f32_in(d_out)), 0) };
                let (out_f32, out_bf16) = if out.holds_bf16_only() { (0, self.bf16_ptr(out)) } else { (self.ptr(self.f32_in(out)), 0) };
                self.launch(&self.kernels.attention_row_dot_mixed, grid_for_u64(batch * seq * heads * 32), |b| {
                    b.arg(&mut *row_dot).arg(&d_out_f32).arg(&d_out_bf16).arg(&out_f32).arg(&out_bf16).arg(&rows).arg(&hd32);
                });
            } else {
                self.launch(&self.kernels.attention_row_dot, grid_for_u64(batch * seq * heads * 32), |b| {
                    b.arg(&mut *row_dot).arg(self.f32_in(d_out)).arg(self.f32_in(out)).arg(&rows).arg(&hd32);
                });
            }
            if !self.deterministic && which == AttentionKernels::Fa2 {
                // One kernel: dK, dV and (atomically, into zeros) dQ.
                self.stream.memset_zeros(self.f32_out(d_q)).expect("cannot clear GPU memory");
                let fused = fa_fused_kernel(&self.kernels, head_dim);
                self.launch(fused, tensor_core_grid(seq, kv_heads, batch, fa_fused_shared_bytes(head_dim)), |b| {
                    b.arg(self.f32_inout(d_q)).arg(self.f32_out_first(d_k, kv_len)).arg(self.f32_out_first(d_v, kv_len)).arg(self.f32_in(lse)).arg(&*row_dot);
                    b.arg(&qb).arg(&kb).arg(&vb).arg(&gb);
                    b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale);
                });
                return;
            }
            let FlashKernels { dq, dkdv, shared: bytes, .. } = flash_kernels(&self.kernels, which, head_dim, self.wgmma);
            self.launch(dq, tensor_core_grid(seq, heads, batch, bytes.1), |b| {
                b.arg(self.f32_out_first(d_q, q_len)).arg(self.f32_in(lse)).arg(&*row_dot);
                b.arg(&qb).arg(&kb).arg(&vb).arg(&gb);
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale);
            });
            if kv_heads == heads {
                let split = 0i32;
                self.launch(dkdv, tensor_core_grid(seq, kv_heads, batch, bytes.2), |b| {
                    b.arg(self.f32_out_first(d_k, kv_len)).arg(self.f32_out_first(d_v, kv_len)).arg(self.f32_in(lse)).arg(&*row_dot);
                    b.arg(&qb).arg(&kb).arg(&vb).arg(&gb);
                    b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale).arg(&split);
                });
                return;
            }
            // Grouped-query: one block per query head writes its share of dK/dV, then each
            // group's shares are summed in order (deterministic, and no block walks the group).
            let shares_len = batch * seq * heads * head_dim;
            let mut k_shares = self.scratch(&self.attention_k_shares, shares_len);
            let mut v_shares = self.scratch(&self.attention_v_shares, shares_len);
            let split = 1i32;
            self.launch(dkdv, tensor_core_grid(seq, heads, batch, bytes.2), |b| {
                b.arg(&mut *k_shares).arg(&mut *v_shares).arg(self.f32_in(lse)).arg(&*row_dot);
                b.arg(&qb).arg(&kb).arg(&vb).arg(&gb);
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale).arg(&split);
            });
            let (rows, group) = ((batch * seq) as u64, (heads / kv_heads) as i32);
            for (out, shares) in [(&mut *d_k, &*k_shares), (&mut *d_v, &*v_shares)] {
                self.launch(&self.kernels.attention_sum_head_groups, grid_for_u64(batch * seq * kv_heads * head_dim), |b| {
                    b.arg(self.f32_out_first(out, kv_len)).arg(shares).arg(&rows).arg(&kv32).arg(&group).arg(&hd32);
                });
            }
            return;
        }
        // The other kernels add into their outputs.
        for buf in [&mut *d_q, &mut *d_k, &mut *d_v] {
            self.stream.memset_zeros(self.f32_out(buf)).expect("cannot clear GPU memory");
        }
        if self.attention_kernels(head_dim) == AttentionKernels::Wmma {
            let rows = (batch * seq * heads) as u64;
            self.launch(&self.kernels.attention_row_dot, grid_for_u64(batch * seq * heads * 32), |b| {
                b.arg(&mut *row_dot).arg(self.f32_in(d_out)).arg(self.f32_in(out)).arg(&rows).arg(&hd32);
            });
            let (_, dq, dkdv) = tensor_core_kernels(&self.kernels, head_dim);
            let bytes = tensor_core_shared_bytes(head_dim);
            self.launch(dq, tensor_core_grid(seq, heads, batch, bytes.1), |b| {
                b.arg(self.f32_inout(d_q)).arg(self.f32_in(d_out)).arg(self.f32_in(lse)).arg(&*row_dot);
                b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v));
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale);
            });
            self.launch(dkdv, tensor_core_grid(seq, kv_heads, batch, bytes.2), |b| {
                b.arg(self.f32_inout(d_k)).arg(self.f32_inout(d_v)).arg(self.f32_in(d_out)).arg(self.f32_in(lse)).arg(&*row_dot);
                b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v));
                b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&scale);
            });
            return;
        }
        drop(row_dot);
        self.reference_attention_backward(d_q, d_k, d_v, d_out, out, lse, q, k, v, None, shape);
    }

    fn supports_segmented_attention(&self) -> bool {
        true
    }

    fn attention_forward_segmented(&self, out: &mut GpuBuffer, lse: &mut GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, segments: &GpuTokens, shape: AttentionShape) {
        self.packed_attention_forward(out, lse, q, k, v, segments, shape);
    }

    fn attention_backward_segmented(
        &self,
        d_q: &mut GpuBuffer,
        d_k: &mut GpuBuffer,
        d_v: &mut GpuBuffer,
        d_out: &GpuBuffer,
        out: &GpuBuffer,
        lse: &GpuBuffer,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        segments: &GpuTokens,
        shape: AttentionShape,
    ) {
        self.packed_attention_backward(d_q, d_k, d_v, d_out, out, lse, q, k, v, segments, shape);
    }

    fn swiglu_forward(&self, out: &mut GpuBuffer, gate_up: &GpuBuffer, rows: usize, width: usize) {
        let _op = self.op(|| "swiglu_forward".into());
        let n = rows * width;
        let (n64, width32, stride32) = (n as u64, u32::try_from(width).expect("SwiGLU width below 2^31"), (2 * width) as u32);
        if let Some(values) = self.bf16_out(out, n) {
            // Mixed precision: bf16 gate and up (the product's output) in, bf16 alone out
            // (only the down product reads it).
            let gate = self.bf16_ptr(gate_up);
            let up = gate + 2 * width as u64;
            self.launch(&self.kernels.swiglu_forward_bf16, grid_for_u64(n.div_ceil(8)), |b| {
                b.arg(&values).arg(&gate).arg(&up).arg(&n64).arg(&width32).arg(&stride32);
            });
            return;
        }
        let out_ptr = self.ptr(self.f32_out_first(out, n));
        let shadow = self.fused_bf16_ptr(out, n);
        let gate = self.ptr(self.f32_in(gate_up));
        let up = gate + 4 * width as u64;
        self.launch(&self.kernels.swiglu_forward, grid_for_u64(n), |b| {
            b.arg(&out_ptr).arg(&gate).arg(&up).arg(&n64).arg(&width32).arg(&stride32).arg(&shadow);
        });
    }

    fn swiglu_backward(&self, d_gate_up: &mut GpuBuffer, d_out: &GpuBuffer, gate_up: &GpuBuffer, rows: usize, width: usize) {
        let _op = self.op(|| "swiglu_backward".into());
        let n = rows * width;
        let (n64, width32, stride32) = (n as u64, u32::try_from(width).expect("SwiGLU width below 2^31"), (2 * width) as u32);
        if let Some(d_gate) = self.bf16_out(d_gate_up, 2 * n) {
            // d_gate and d_up feed only the gate/up product: bf16 alone.
            let gate = self.bf16_ptr(gate_up);
            let (up, d_up) = (gate + 2 * width as u64, d_gate + 2 * width as u64);
            // d_out as stored: bf16 when its product kept only that (Store::OverwriteLowPrecision).
            let (d_out_f32, d_out_bf16) = if d_out.holds_bf16_only() { (0, self.bf16_ptr(d_out)) } else { (self.ptr(self.f32_in(d_out)), 0) };
            self.launch(&self.kernels.swiglu_backward_bf16, grid_for_u64(n.div_ceil(8)), |b| {
                b.arg(&d_gate).arg(&d_up).arg(&d_out_f32).arg(&d_out_bf16).arg(&gate).arg(&up).arg(&n64).arg(&width32).arg(&stride32);
            });
            return;
        }
        let d_gate = self.ptr(self.f32_out_first(d_gate_up, 2 * n));
        let d_up = d_gate + 4 * width as u64;
        let gate_shadow = self.fused_bf16_ptr(d_gate_up, 2 * n);
        let up_shadow = if gate_shadow == 0 { 0 } else { gate_shadow + 2 * width as u64 };
        let gate = self.ptr(self.f32_in(gate_up));
        let up = gate + 4 * width as u64;
        self.launch(&self.kernels.swiglu_backward, grid_for_u64(n), |b| {
            b.arg(&d_gate).arg(&d_up).arg(self.f32_in(d_out)).arg(&gate).arg(&up).arg(&n64).arg(&width32).arg(&stride32).arg(&gate_shadow).arg(&up_shadow);
        });
    }

    fn embedding_forward(&self, out: &mut GpuBuffer, tokens: &GpuTokens, table: &GpuBuffer, n_tokens: usize, dim: usize) {
        let _op = self.op(|| "embedding_forward".into());
        let (dim32, n64) = (dim as i32, (n_tokens * dim) as u64);
        // (Where AdamW has lost its stream since, profiling, `f32_in` below launches it first.)
        let held = self.deferred.borrow_mut().take_if(|d| d.table == table.id && self.optimizer_overlaps());
        // (A held update whose gradient or moments were dropped is moot.)
        if let Some(held) = held.filter(|d| d.slots.iter().all(|slot| slot.strong_count() > 0)) {
            // The rows as the held-back update leaves them, read before it runs: the optimizer
            // stream starts it after this lookup.
            // Its gradient and moments are read below by address: wait for any optimizer-stream
            // work on them queued since the update was held (none in the trainer's order).
            for slot in held.slots.iter().filter_map(std::sync::Weak::upgrade) {
                if let Some(event) = slot.lock().expect("pending event lock").take() {
                    self.stream.wait(&event).expect("cannot order the CUDA streams");
                }
            }
            let (at, hp) = (held.at, held.hp);
            let (decay, step_size, bias_correction2_sqrt) = adamw_scalars(&hp);
            let table_at = self.ptr(self.f32_in(table));
            self.launch(&self.kernels.embedding_forward_updated, grid_for_u64(n_tokens * dim), |b| {
                b.arg(self.f32_out_first(out, n_tokens * dim)).arg(&tokens.ids).arg(&table_at).arg(&at.grad).arg(&at.m).arg(&at.v).arg(&dim32).arg(&n64);
                b.arg(&hp.beta1).arg(&hp.beta2).arg(&hp.eps).arg(&decay).arg(&step_size).arg(&bias_correction2_sqrt).arg(&hp.grad_scale);
            });
            let side = self.optimizer_side_stream().expect("checked by optimizer_overlaps");
            self.launch_adamw(side, &at, &hp);
            let done = Arc::new(side.record_event(None).expect("cannot record a CUDA event"));
            for slot in held.slots.iter().filter_map(std::sync::Weak::upgrade) {
                *slot.lock().expect("pending event lock") = Some(done.clone());
            }
            return;
        }
        self.gathered_tables.borrow_mut().insert(table.id);
        self.launch(&self.kernels.embedding_forward, grid_for_u64(n_tokens * dim), |b| {
            b.arg(self.f32_out_first(out, n_tokens * dim)).arg(&tokens.ids).arg(self.f32_in(table)).arg(&dim32).arg(&n64);
        });
    }

    fn embedding_backward(&self, d_table: &mut GpuBuffer, d_out: &GpuBuffer, tokens: &GpuTokens, n_tokens: usize, dim: usize) {
        let _op = self.op(|| "embedding_backward".into());
        // Group positions by token on the host: [order (n), segment starts (u + 1), tokens (u)].
        let ids = &tokens.host[..n_tokens];
        let mut order: Vec<u32> = (0..n_tokens as u32).collect();
        order.sort_by_key(|&i| (ids[i as usize], i));
        let mut starts = Vec::new();
        let mut segment_tokens = Vec::new();
        for (k, &position) in order.iter().enumerate() {
            let token = ids[position as usize];
            if segment_tokens.last() != Some(&token) {
                starts.push(k as u32);
                segment_tokens.push(token);
            }
        }
        let segments = segment_tokens.len();
        if segments == 0 {
            return;
        }
        starts.push(n_tokens as u32);
        let mut packed = order;
        packed.extend_from_slice(&starts);
        packed.extend_from_slice(&segment_tokens);
        let mut device = self.scratch(&self.embedding_segments, packed.len());
        self.stream.memcpy_htod(&packed, &mut device.slice_mut(..packed.len())).expect("cannot copy to the GPU");
        let order_view = device.slice(..n_tokens);
        let starts_view = device.slice(n_tokens..n_tokens + segments + 1);
        let tokens_view = device.slice(n_tokens + segments + 1..packed.len());
        let dim32 = dim as i32;
        self.launch(&self.kernels.embedding_backward, rows_grid(segments, 128), |b| {
            b.arg(self.f32_inout(d_table)).arg(self.f32_in(d_out)).arg(&order_view).arg(&starts_view).arg(&tokens_view).arg(&dim32);
        });
    }

    fn add(&self, out: &mut GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, n: usize) {
        let _op = self.op(|| "add".into());
        let n64 = n as u64;
        self.launch(&self.kernels.add_f32, grid_for_u64(n), |l| {
            l.arg(self.f32_inout(out)).arg(self.f32_in(a)).arg(self.f32_in(b)).arg(&n64);
        });
    }

    fn cross_entropy_forward(&self, losses: &mut GpuBuffer, lse: &mut GpuBuffer, logits: &GpuBuffer, targets: &GpuTokens, rows: usize, vocab: usize) {
        let _op = self.op(|| "cross_entropy_forward".into());
        let vocab32 = vocab as i32;
        self.launch(&self.kernels.cross_entropy_forward, rows_grid(rows, CE_BLOCK), |b| {
            b.arg(self.f32_inout(losses)).arg(self.f32_inout(lse)).arg(self.f32_in(logits)).arg(&targets.ids).arg(&vocab32);
        });
    }

    fn cross_entropy_backward(&self, logits: &mut GpuBuffer, lse: &GpuBuffer, targets: &GpuTokens, rows: usize, vocab: usize, scale: f32) {
        let _op = self.op(|| "cross_entropy_backward".into());
        let vocab32 = vocab as i32;
        let logits_ptr = self.ptr(self.f32_inout(logits));
        let shadow = self.fused_bf16_ptr(logits, rows * vocab);
        self.launch(&self.kernels.cross_entropy_backward, rows_grid(rows, CE_BLOCK), |b| {
            b.arg(&logits_ptr).arg(self.f32_in(lse)).arg(&targets.ids).arg(&vocab32).arg(&scale).arg(&shadow);
        });
    }

    fn sum_squares(&self, x: &GpuBuffer, n: usize) -> f64 {
        self.sum_squares_many(&[(x, 0..n)])
    }

    fn sum_squares_many(&self, xs: &[(&GpuBuffer, Range<usize>)]) -> f64 {
        let _op = self.op(|| "sum_squares_many".into());
        // Every buffer's block partials into one array, one copy to the host, then the same
        // sums in the same order as `sum_squares` buffer by buffer.
        let blocks: Vec<usize> = xs.iter().map(|(_, range)| range.len().div_ceil(BLOCK as usize).clamp(1, SUM_BLOCKS)).collect();
        let total: usize = blocks.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let mut partial = self.scratch(&self.sum_partials, total);
        let base = self.ptr(&*partial);
        let mut prefetched = self.prefetched_squares.borrow_mut();
        let mut offset = 0;
        for ((x, range), &count) in xs.iter().zip(&blocks) {
            let (n64, at) = (range.len() as u64, base + (offset * std::mem::size_of::<f64>()) as u64);
            // Partials the optimizer stream computed, where the buffer is unchanged since.
            let early = prefetched.remove(&(x.id, range.start, range.len())).map(|old| (old.version == x.version, self.retire(old)));
            match early {
                Some((true, partials)) => {
                    self.settle(x);
                    let mut to = partial.slice_mut(offset..offset + count);
                    self.stream.memcpy_dtod(&partials.slice(..count), &mut to).expect("cannot copy on the GPU");
                }
                _ => {
                    let from = self.ptr(self.f32_in(x)) + (range.start * std::mem::size_of::<f32>()) as u64;
                    self.launch_sum_squares(&self.stream, at, from, n64, count);
                }
            }
            offset += count;
        }
        drop(prefetched);
        let host = self.stream.clone_dtoh(&partial.slice(..total)).expect("cannot copy from the GPU");
        let mut sum = 0.0;
        let mut offset = 0;
        for &count in &blocks {
            sum += host[offset..offset + count].iter().sum::<f64>();
            offset += count;
        }
        sum
    }

    fn prefetch_sum_squares(&self, xs: &[(&GpuBuffer, Range<usize>)]) {
        // Only where the optimizer stream runs beside the main one (not while profiling, whose
        // op timer measures the main stream).
        if !self.overlap_optimizer || self.profiler.enabled() || xs.is_empty() {
            return;
        }
        let side = &self.optimizer_stream;
        let mut jobs = Vec::with_capacity(xs.len());
        let mut prefetched = self.prefetched_squares.borrow_mut();
        for (x, range) in xs {
            let count = range.len().div_ceil(BLOCK as usize).clamp(1, SUM_BLOCKS);
            let key = (x.id, range.start, range.len());
            let partials = match prefetched.remove(&key).map(|old| self.retire(old)) {
                Some(old) if old.len() >= count => old,
                // SAFETY: the kernel below writes all `count` partials before anything reads them.
                _ => unsafe { self.stream.alloc::<f64>(count) }.expect("cannot allocate GPU memory"),
            };
            let from = self.ptr(self.f32_in(x)) + (range.start * std::mem::size_of::<f32>()) as u64;
            jobs.push((key, x, partials, from, range.len() as u64, count));
        }
        self.side_after_main(side);
        for (_, _, partials, from, n64, count) in &jobs {
            self.launch_sum_squares(side, self.ptr(partials), *from, *n64, *count);
        }
        let done = Arc::new(side.record_event(None).expect("cannot record a CUDA event"));
        for (key, x, partials, ..) in jobs {
            // The next write of the gradient waits for this read.
            *x.pending.lock().expect("pending event lock") = Some(done.clone());
            prefetched.insert(key, PrefetchedSquares { version: x.version, partials, done: done.clone() });
        }
    }

    fn output_chunk_rows(&self, rows: usize, vocab: usize) -> usize {
        let (bytes, logit) = self.output_chunk_budget();
        // Whole multiples of 64 rows keep the chunk GEMMs on full tiles.
        let max = (bytes / (vocab.max(1) * logit)).max(64) / 64 * 64;
        rows.min(max)
    }

    fn output_scratch_floats(&self, rows: usize, vocab: usize) -> usize {
        let chunk = self.output_chunk_rows(rows, vocab);
        if chunk >= rows {
            // One chunk: the trait's unchunked compositions (output_loss_weighted) may use the
            // scratch as the batch's fp32 logits.
            return rows * vocab;
        }
        (chunk * vocab * self.output_chunk_budget().1).div_ceil(4)
    }

    fn output_loss(
        &self,
        losses: &mut GpuBuffer,
        lse: &mut GpuBuffer,
        scratch: &mut GpuBuffer,
        hidden: &GpuBuffer,
        weight: &GpuBuffer,
        targets: &GpuTokens,
        rows: usize,
        dim: usize,
        vocab: usize,
        grad: Option<OutputGrad<'_, GpuBuffer>>,
    ) {
        let _op = self.op(|| format!("output_loss {rows}x{dim}->{vocab}{}", if grad.is_some() { " +grad" } else { "" }));
        // Per chunk: the logits (GEMM; bf16 in mixed precision, as autocast rounds them, fp32 in
        // fp32 precision), then loss, lse and the bf16 gradient in one kernel that only reads
        // them. After the loop, the two gradient GEMMs over the whole batch.
        let chunk = self.output_chunk_rows(rows, vocab);
        let (h, w) = (self.operand_ptr(hidden), self.operand_ptr(weight));
        let operands = self.operands();
        let kept_row_bytes = self.cross_entropy_row_kept(vocab);
        let (logits_operands, chunk_kernel) = match self.precision {
            Precision::Mixed if kept_row_bytes > 0 => (Operands::Bf16WithBf16Output, &self.kernels.cross_entropy_chunk_bf16_kept),
            Precision::Mixed => (Operands::Bf16WithBf16Output, &self.kernels.cross_entropy_chunk_bf16),
            Precision::Fp32 => (operands, &self.kernels.cross_entropy_chunk),
        };
        // What the chunks below write: `chunk` rows of logits, bf16 in mixed precision.
        let needed = (chunk.min(rows) * vocab * self.output_chunk_budget().1).div_ceil(4);
        assert!(scratch.len >= needed, "output_loss: scratch of {} floats, one chunk's logits need {needed}", scratch.len);
        let logits = self.ptr(self.f32_inout(scratch));
        let (losses_at, lse_at, targets_at) = (self.ptr(self.f32_out_first(losses, rows)), self.ptr(self.f32_out_first(lse, rows)), self.ptr(&targets.ids));
        let grad_logits = grad.is_some().then(|| self.scratch(&self.output_grad, rows * vocab));
        let grad_at = grad_logits.as_ref().map_or(0, |g| self.ptr(&**g));
        let scale = grad.as_ref().map_or(0.0, |g| g.scale);
        let vocab32 = vocab as i32;
        for first in (0..rows).step_by(chunk) {
            let count = chunk.min(rows - first);
            let part = self.op(|| "· output_loss logits GEMMs".into());
            let shape = GemmShape { operands: logits_operands, transa: true, transb: false, m: vocab as u64, n: count as u64, k: dim as u64, lda: dim as i64, ldb: dim as i64, ldc: vocab as i64 };
            unsafe { self.gemm().run(shape, w, h + first as u64 * dim as u64 * operands.bytes(), logits, 1.0, 0.0) }.expect("output_loss (logits)");
            drop(part);
            let _part = self.op(|| "· output_loss cross-entropy".into());
            let (row_losses, row_lse, row_targets) = (losses_at + (first * 4) as u64, lse_at + (first * 4) as u64, targets_at + (first * 4) as u64);
            let row_grad = if grad_at == 0 { 0 } else { grad_at + (first * vocab * 2) as u64 };
            let count32 = count as i32;
            let prefetch_packs = (self.cross_entropy_prefetch * (vocab / 8) as f32).round() as i32;
            let mut config = match self.cross_entropy_blocks {
                Some((blocks, threads)) => rows_grid(count.min(blocks as usize), threads),
                None => rows_grid(count, CE_BLOCK),
            };
            config.shared_mem_bytes = kept_row_bytes as u32;
            self.launch(chunk_kernel, config, |b| {
                b.arg(&row_losses).arg(&row_lse).arg(&row_grad).arg(&logits).arg(&row_targets).arg(&vocab32).arg(&scale).arg(&count32).arg(&prefetch_packs);
            });
        }
        if let Some(grad) = grad {
            // The logit gradient is bf16, so these two products are bf16 in either precision.
            let (h, w) = (self.bf16_ptr(hidden), self.bf16_ptr(weight));
            // d_hiddenᵀ[dim, rows] = Wᵀ[dim, vocab] · d_logitsᵀ[vocab, rows], overwriting.
            let d_hidden = self.ptr(self.f32_out_first(grad.d_hidden, rows * dim));
            let part = self.op(|| "· output_loss d_hidden GEMM".into());
            let shape = GemmShape { operands: Operands::Bf16, transa: false, transb: false, m: dim as u64, n: rows as u64, k: vocab as u64, lda: dim as i64, ldb: vocab as i64, ldc: dim as i64 };
            unsafe { self.gemm().run(shape, w, grad_at, d_hidden, 1.0, 0.0) }.expect("output_loss (d_hidden)");
            drop(part);
            let _part = self.op(|| "· output_loss d_weight GEMM".into());
            // d_Wᵀ[dim, vocab] += hiddenᵀ[dim, rows] · d_logits[rows, vocab]
            let (beta, d_weight) = match grad.weight_store {
                Store::Add => (1.0, self.ptr(self.f32_inout(grad.d_weight))),
                _ => (0.0, self.ptr(self.f32_out(grad.d_weight))),
            };
            let shape = GemmShape { operands: Operands::Bf16, transa: false, transb: true, m: dim as u64, n: vocab as u64, k: rows as u64, lda: dim as i64, ldb: vocab as i64, ldc: dim as i64 };
            unsafe { self.gemm().run(shape, h, grad_at, d_weight, 1.0, beta) }.expect("output_loss (d_weight)");
        }
    }

    fn adamw_update(&self, param: &mut GpuBuffer, grad: &GpuBuffer, m: &mut GpuBuffer, v: &mut GpuBuffer, range: Range<usize>, hp: AdamWStep) {
        self.adamw_update_many(&mut [AdamWUpdate { param, grad, m, v, range, hp }]);
    }

    /// Operands of every update first (taking them settles the buffers and may queue allocations
    /// or casts on the main stream), then the optimizer stream is ordered after the main stream
    /// once, not once a tensor: two driver calls fewer per tensor (~150 tensors a ds-1b step)
    /// while the GPU's main stream waits for the host to reach the next forward.
    fn adamw_update_many(&self, updates: &mut [AdamWUpdate<'_, GpuBuffer>]) {
        let operands: Vec<Option<AdamWOperands>> = updates.iter_mut().map(|u| self.take_adamw_operands(u)).collect();
        // Launches: single updates, or groups of small ones sharing the step's settings but the
        // weight decay; none for an update held back.
        let mut units: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        while start < updates.len() {
            let groupable = |i: usize| operands[i].is_some() && updates[i].range.len() < ADAMW_ALONE;
            let same_step = |a: &AdamWStep, b: &AdamWStep| AdamWStep { weight_decay: a.weight_decay, ..*b } == *a;
            let mut end = start + 1;
            if self.adamw_grouped && groupable(start) {
                while end < updates.len() && end - start < ADAMW_GROUP && groupable(end) && same_step(&updates[start].hp, &updates[end].hp) {
                    end += 1;
                }
            }
            if operands[start].is_some() {
                units.push(start..end);
            }
            start = end;
        }
        let side = self.optimizer_side_stream();
        let stream = side.unwrap_or(&self.stream);
        let launch = |unit: &Range<usize>, slice: Option<Range<usize>>| {
            {
                let _op = self.op(|| "adamw_update".into());
                let first = operands[unit.start].expect("units are not held back");
                match (&slice, unit.len()) {
                    (Some(part), _) => self.launch_adamw(stream, &first.slice(part.clone()), &updates[unit.start].hp),
                    (None, 1) => self.launch_adamw(stream, &first, &updates[unit.start].hp),
                    (None, _) => self.launch_adamw_group(stream, &updates[unit.clone()], &operands[unit.clone()]),
                }
            }
            if let Some(side) = side {
                self.optimizer_tail.set(Some(updates[unit.end - 1].param.id));
                let used: Vec<&GpuBuffer> = updates[unit.clone()].iter().flat_map(|u| [&*u.param, u.grad, &*u.m, &*u.v]).collect();
                self.leave_optimizer_event(side, &used);
            }
        };
        // DSLLM_ADAMW_SPREAD: the last tensor (the output layer, needed last by the forward but
        // as large as several blocks) in slices between the others, so that the optimizer
        // stream's work is even over the forward rather than a large tail it ends on.
        let spread = self.adamw_spread && side.is_some() && units.len() > 2 && {
            let size = |unit: &Range<usize>| unit.clone().map(|i| updates[i].range.len()).sum::<usize>();
            let last = units.last().expect("more than two units");
            let largest_other = units[..units.len() - 1].iter().map(size).max().unwrap_or(0);
            last.len() == 1 && size(last) >= ADAMW_SPREAD_MIN && size(last) >= 2 * largest_other
        };
        if !spread {
            for unit in &units {
                launch(unit, None);
            }
            return;
        }
        let last = units.pop().expect("spread needs units");
        let n = operands[last.start].expect("units are not held back").n;
        for step in spread_order(units.len(), n) {
            match step {
                SpreadStep::Unit(i) => launch(&units[i], None),
                SpreadStep::Slice(part) => launch(&last, Some(part)),
            }
        }
    }
}

/// One launch of a spread AdamW update ([`CudaBackend::adamw_spread`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum SpreadStep {
    /// The i-th of the other launches.
    Unit(usize),
    /// Values of the spread tensor.
    Slice(Range<usize>),
}

/// The launches of `units` other updates with a tensor of `n` values spread between them: up to
/// `ADAMW_SPREAD_SLICES` slices, one after each equal share of the others and the last after
/// the last of them. Slice bounds fall on 1024-value steps, so every slice's arrays stay
/// 16-byte aligned for the kernel's vector accesses.
fn spread_order(units: usize, n: usize) -> Vec<SpreadStep> {
    let slices = units.clamp(1, ADAMW_SPREAD_SLICES);
    let bound = |j: usize| if j == slices { n } else { (n * j / slices) & !1023 };
    let mut order = Vec::with_capacity(units + slices);
    let mut next = 0;
    for i in 0..units {
        order.push(SpreadStep::Unit(i));
        while next < slices && (i + 1) * slices >= (next + 1) * units {
            order.push(SpreadStep::Slice(bound(next)..bound(next + 1)));
            next += 1;
        }
    }
    // No other launch: the tensor alone, in one piece.
    order.extend((next..slices).map(|j| SpreadStep::Slice(bound(j)..bound(j + 1))));
    order
}

/// `adamw_update_group`'s first parameter: struct AdamWGroup in kernels/adamw.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AdamWGroupArgs {
    param: [u64; ADAMW_GROUP],
    grad: [u64; ADAMW_GROUP],
    m: [u64; ADAMW_GROUP],
    v: [u64; ADAMW_GROUP],
    shadow: [u64; ADAMW_GROUP],
    n: [u64; ADAMW_GROUP],
    decay: [f32; ADAMW_GROUP],
    first_block: [u32; ADAMW_GROUP + 1],
    count: i32,
}

// SAFETY: plain integers and floats in C layout, the kernel's struct.
unsafe impl DeviceRepr for AdamWGroupArgs {}

impl CudaBackend {
    /// One update's operands, or `None` where it is held back until the next lookup of its table
    /// ([`CudaBackend::deferred`]): a whole gathered table, with AdamW on the optimizer stream.
    fn take_adamw_operands(&self, u: &mut AdamWUpdate<'_, GpuBuffer>) -> Option<AdamWOperands> {
        let at = self.adamw_operands(u.param, u.grad, u.m, u.v, &u.range);
        let whole = u.range.start == 0 && u.range.len() == u.param.len;
        if !(whole && self.defer_gathered_updates && self.optimizer_overlaps() && self.gathered_tables.borrow().contains(&u.param.id)) {
            return Some(at);
        }
        self.flush_deferred();
        let buffers = [u.param.id, u.grad.id, u.m.id, u.v.id];
        let slots = [&*u.param, u.grad, &*u.m, &*u.v].map(|b| Arc::downgrade(&b.pending));
        *self.deferred.borrow_mut() = Some(DeferredUpdate { table: u.param.id, buffers, slots, at, hp: u.hp });
        None
    }

    /// Up to `ADAMW_GROUP` tensors of one step's update in one launch on `stream`.
    fn launch_adamw_group(&self, stream: &Arc<CudaStream>, group: &[AdamWUpdate<'_, GpuBuffer>], operands: &[Option<AdamWOperands>]) {
        assert!((2..=ADAMW_GROUP).contains(&group.len()), "a group of {} AdamW updates", group.len());
        let hp = group[0].hp;
        let (_, step_size, bias_correction2_sqrt) = adamw_scalars(&hp);
        let mut args = AdamWGroupArgs { count: group.len() as i32, ..Default::default() };
        let mut blocks = 0u64;
        for (t, (u, at)) in group.iter().zip(operands).enumerate() {
            assert_eq!(AdamWStep { weight_decay: hp.weight_decay, ..u.hp }, hp, "one AdamW launch is one step's update");
            let at = at.expect("held-back updates are not grouped");
            (args.param[t], args.grad[t], args.m[t], args.v[t], args.shadow[t], args.n[t]) = (at.param, at.grad, at.m, at.v, at.shadow, at.n as u64);
            args.decay[t] = adamw_scalars(&u.hp).0;
            args.first_block[t] = u32::try_from(blocks).expect("more than 2^32 blocks in one AdamW launch");
            blocks += (at.n as u64).div_ceil(4).div_ceil(BLOCK as u64).max(1);
        }
        args.first_block[group.len()] = u32::try_from(blocks).expect("more than 2^32 blocks in one AdamW launch");
        let config = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let streaming = self.adamw_streaming as i32;
        self.launch_on(stream, &self.kernels.adamw_update_group, config, |b| {
            b.arg(&args).arg(&hp.beta1).arg(&hp.beta2).arg(&hp.eps).arg(&step_size).arg(&bias_correction2_sqrt).arg(&hp.grad_scale).arg(&streaming);
        });
    }

    /// Device addresses of one tensor's update, fetched in the order that settles and
    /// versions the buffers. A whole tensor's update also writes the products' bf16 copy (no
    /// cast pass at the next forward); a ZeRO-1 shard leaves it to the cast after the all-gather.
    fn adamw_operands(&self, param: &mut GpuBuffer, grad: &GpuBuffer, m: &mut GpuBuffer, v: &mut GpuBuffer, range: &Range<usize>) -> AdamWOperands {
        let (n, offset) = (range.len(), (range.start * std::mem::size_of::<f32>()) as u64);
        let param_at = self.ptr(self.f32_inout(param)) + offset;
        // A gathered table's bf16 copy is read by nothing (the lookup reads fp32): not written.
        let whole = range.start == 0 && n == param.len && self.precision == Precision::Mixed && !self.gathered_tables.borrow().contains(&param.id);
        let shadow = if whole { self.fused_bf16_ptr(param, n) } else { 0 };
        let grad_at = self.ptr(self.f32_in(grad)) + offset;
        let (m_at, v_at) = (self.ptr(self.f32_inout(m)), self.ptr(self.f32_inout(v)));
        AdamWOperands { param: param_at, grad: grad_at, m: m_at, v: v_at, shadow, n }
    }

    /// One tensor's AdamW update on `stream`, one launch.
    fn launch_adamw(&self, stream: &Arc<CudaStream>, at: &AdamWOperands, hp: &AdamWStep) {
        let (decay, step_size, bias_correction2_sqrt) = adamw_scalars(hp);
        let n64 = at.n as u64;
        let (kernel, per_thread) = if self.adamw_eight_wide { (&self.kernels.adamw_update8, 8) } else { (&self.kernels.adamw_update, 4) };
        let streaming = self.adamw_streaming as i32;
        self.launch_on(stream, kernel, grid_for_u64(at.n.div_ceil(per_thread)), |b| {
            b.arg(&at.param).arg(&at.grad).arg(&at.m).arg(&at.v).arg(&n64);
            b.arg(&hp.beta1).arg(&hp.beta2).arg(&hp.eps).arg(&decay).arg(&step_size).arg(&bias_correction2_sqrt).arg(&hp.grad_scale).arg(&at.shadow);
            b.arg(&streaming);
        });
    }

    /// Launches the update held back ([`CudaBackend::deferred`]) on the main stream, where it is
    /// ordered before whatever is about to use its buffers; dropped if one of them is gone.
    fn flush_deferred(&self) {
        let Some(held) = self.deferred.borrow_mut().take() else { return };
        if held.slots.iter().all(|slot| slot.strong_count() > 0) {
            let _op = self.op(|| "adamw_update".into());
            self.launch_adamw(&self.stream, &held.at, &held.hp);
        }
    }

    /// Whether AdamW runs on the optimizer stream (profiled steps keep it on the main stream,
    /// where the op timer measures it).
    fn optimizer_overlaps(&self) -> bool {
        self.overlap_optimizer && !self.profiler.enabled()
    }

    /// The optimizer stream, ordered after the main stream's work so far, where AdamW overlaps
    /// the next forward; `None` (the main stream) otherwise.
    fn optimizer_side_stream(&self) -> Option<&Arc<CudaStream>> {
        let side = Some(&self.optimizer_stream).filter(|_| self.optimizer_overlaps());
        if let Some(side) = side {
            self.side_after_main(side);
        }
        side
    }

    /// Records the optimizer stream's work so far in `used`: the main stream waits for it at
    /// each buffer's next use ([`CudaBackend::settle`]).
    fn leave_optimizer_event(&self, side: &CudaStream, used: &[&GpuBuffer]) {
        let done = Arc::new(side.record_event(None).expect("cannot record a CUDA event"));
        for buf in used {
            *buf.pending.lock().expect("pending event lock") = Some(done.clone());
        }
    }
}

/// Addresses and length of one tensor's AdamW update ([`CudaBackend::adamw_operands`]).
#[derive(Clone, Copy)]
struct AdamWOperands {
    param: u64,
    grad: u64,
    m: u64,
    v: u64,
    /// 0: no bf16 copy to write.
    shadow: u64,
    n: usize,
}

impl AdamWOperands {
    /// The update of values `part` of this one (the bf16 copy, if any, offset alike).
    fn slice(&self, part: Range<usize>) -> AdamWOperands {
        assert!(part.start <= part.end && part.end <= self.n, "slice {part:?} of an update of {} values", self.n);
        let (f32_offset, bf16_offset) = (4 * part.start as u64, 2 * part.start as u64);
        AdamWOperands {
            param: self.param + f32_offset,
            grad: self.grad + f32_offset,
            m: self.m + f32_offset,
            v: self.v + f32_offset,
            shadow: if self.shadow == 0 { 0 } else { self.shadow + bf16_offset },
            n: part.len(),
        }
    }
}

/// A table's AdamW update held back until the next embedding lookup ([`CudaBackend::deferred`]).
struct DeferredUpdate {
    /// The parameter buffer's id: the lookup of this table runs the update.
    table: u64,
    /// Ids of the parameter, gradient and moment buffers: any other use launches it first.
    buffers: [u64; 4],
    /// Their pending-event slots, which get the update's event once it runs on the optimizer
    /// stream (each buffer's next use then waits for it); a dead slot means a buffer was dropped.
    slots: [std::sync::Weak<Mutex<Option<Arc<CudaEvent>>>>; 4],
    at: AdamWOperands,
    hp: AdamWStep,
}

/// One step's scalars, computed as the CPU backend computes them: (weight decay factor,
/// step size, square root of the second moment's bias correction).
fn adamw_scalars(hp: &AdamWStep) -> (f32, f32, f32) {
    let decay = 1.0 - hp.learning_rate * hp.weight_decay;
    let step_size = hp.learning_rate / (1.0 - (hp.beta1 as f64).powi(hp.step as i32)) as f32;
    let bias_correction2_sqrt = (1.0 - (hp.beta2 as f64).powi(hp.step as i32)).sqrt() as f32;
    (decay, step_size, bias_correction2_sqrt)
}

/// 64-row tiles of 4 warps: grid (ceil(seq / 64), heads, batch).
fn tensor_core_grid(seq: usize, heads: usize, batch: usize, shared_bytes: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (seq.div_ceil(64) as u32, heads as u32, batch as u32), block_dim: (128, 1, 1), shared_mem_bytes: shared_bytes as u32 }
}

impl CudaBackend {
    /// The kernels that run attention of this head size.
    /// cuDNN attention, opened on first use; `None` (said once on stderr) where it cannot be.
    pub fn cudnn_attention(&self) -> Option<&crate::cudnn_attention::CudnnAttention> {
        self.cudnn
            .get_or_init(|| match crate::cudnn_attention::CudnnAttention::new(self.stream.clone()) {
                Ok(cudnn) => Some(cudnn),
                Err(e) => {
                    eprintln!("dsllm-cuda: {e:#}; attention runs on the fa2 kernels");
                    None
                }
            })
            .as_ref()
    }

    fn cudnn_shape(shape: AttentionShape) -> crate::cudnn_attention::Shape {
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        crate::cudnn_attention::Shape { batch, seq, heads, kv_heads, head_dim }
    }

    /// `lse[batch, seq, heads]` to or from cuDNN's Stats `[batch, heads, seq]`.
    fn transpose_lse(&self, to: u64, from: u64, batch: usize, rows: usize, cols: usize) {
        let (b32, r32, c32) = (batch as i32, rows as i32, cols as i32);
        self.launch(&self.kernels.transpose_last_two, grid_for_u64(batch * rows * cols), |b| {
            b.arg(&to).arg(&from).arg(&b32).arg(&r32).arg(&c32);
        });
    }

    /// The forward on cuDNN; false (nothing written) where there is no cuDNN plan for it.
    fn cudnn_attention_forward(&self, out: &mut GpuBuffer, lse: &mut GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, shape: AttentionShape) -> bool {
        let AttentionShape { batch, seq, heads, head_dim, .. } = shape;
        let rows = batch * seq * heads;
        let Some(cudnn) = self.cudnn_attention() else { return false };
        if out.len() != rows * head_dim || !cudnn.has_plan(Self::cudnn_shape(shape), false, false) {
            return false;
        }
        let (qb, kb, vb) = (self.bf16_ptr(q), self.bf16_ptr(k), self.bf16_ptr(v));
        let o = self.bf16_store(out);
        let stats = self.scratch(&self.attention_stats, rows);
        let stats = self.ptr(&*stats);
        cudnn.forward(Self::cudnn_shape(shape), o, stats, qb, kb, vb).expect("cuDNN attention forward failed");
        let lse = self.ptr(self.f32_out_first(lse, rows));
        self.transpose_lse(lse, stats, batch, heads, seq);
        true
    }

    /// The backward on cuDNN; false (nothing written) where there is no cuDNN plan for it.
    #[allow(clippy::too_many_arguments)]
    fn cudnn_attention_backward(
        &self,
        d_q: &mut GpuBuffer,
        d_k: &mut GpuBuffer,
        d_v: &mut GpuBuffer,
        d_out: &GpuBuffer,
        out: &GpuBuffer,
        lse: &GpuBuffer,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        shape: AttentionShape,
    ) -> bool {
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        let rows = batch * seq * heads;
        let Some(cudnn) = self.cudnn_attention() else { return false };
        let lengths_fit = d_q.len() == rows * head_dim && d_k.len() == batch * seq * kv_heads * head_dim && d_v.len() == d_k.len();
        if !lengths_fit || !cudnn.has_plan(Self::cudnn_shape(shape), true, self.deterministic) {
            return false;
        }
        let stats = self.scratch(&self.attention_stats, rows);
        let stats = self.ptr(&*stats);
        let lse = self.ptr(self.f32_in(lse));
        self.transpose_lse(stats, lse, batch, seq, heads);
        let (qb, kb, vb, ob, gb) = (self.bf16_ptr(q), self.bf16_ptr(k), self.bf16_ptr(v), self.bf16_ptr(out), self.bf16_ptr(d_out));
        let (dq, dk, dv) = (self.bf16_store(d_q), self.bf16_store(d_k), self.bf16_store(d_v));
        cudnn.backward(Self::cudnn_shape(shape), self.deterministic, dq, dk, dv, gb, ob, stats, qb, kb, vb).expect("cuDNN attention backward failed");
        true
    }

    /// What ran the attention of this head size: [`CudaBackend::attention_kernels`]' name, and
    /// for cuDNN whether it fell back to fa2 (no cuDNN, or no plan for a shape used so far).
    pub fn attention_in_use(&self, head_dim: usize) -> String {
        let kernels = self.attention_kernels(head_dim);
        if kernels != AttentionKernels::Cudnn {
            return kernels.name().to_string();
        }
        match self.cudnn.get() {
            Some(None) => "fa2 (cuDNN unavailable)".into(),
            Some(Some(cudnn)) if cudnn.fell_back() => "cudnn (fa2 for some shapes)".into(),
            _ => format!("cudnn {}", crate::cudnn_attention::cudnn_version_name()),
        }
    }

    pub fn attention_kernels(&self, head_dim: usize) -> AttentionKernels {
        if self.precision == Precision::Mixed && (head_dim == 64 || head_dim == 128) {
            self.attention
        } else {
            AttentionKernels::Fp32
        }
    }

    /// Attention over packed sequences: `segments` holds one id per position (`[batch, seq]`),
    /// and a query sees only the keys at or before it with its own id. Runs the fp32 kernels
    /// (in either precision).
    #[allow(clippy::too_many_arguments)]
    pub fn packed_attention_forward(&self, out: &mut GpuBuffer, lse: &mut GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, segments: &GpuTokens, shape: AttentionShape) {
        let _op = self.op(|| "attention_forward (packed)".into());
        self.reference_attention_forward(out, lse, q, k, v, Some(segments), shape);
    }

    /// The backward of [`CudaBackend::packed_attention_forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn packed_attention_backward(
        &self,
        d_q: &mut GpuBuffer,
        d_k: &mut GpuBuffer,
        d_v: &mut GpuBuffer,
        d_out: &GpuBuffer,
        out: &GpuBuffer,
        lse: &GpuBuffer,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        segments: &GpuTokens,
        shape: AttentionShape,
    ) {
        let _op = self.op(|| "attention_backward (packed)".into());
        // The fp32 kernels add into their outputs.
        for buf in [&mut *d_q, &mut *d_k, &mut *d_v] {
            self.stream.memset_zeros(self.f32_out(buf)).expect("cannot clear GPU memory");
        }
        self.reference_attention_backward(d_q, d_k, d_v, d_out, out, lse, q, k, v, Some(segments), shape);
    }

    /// The fp32 attention kernels (kernels/attention.cu), causal or over packed segments.
    #[allow(clippy::too_many_arguments)]
    fn reference_attention_forward(&self, out: &mut GpuBuffer, lse: &mut GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, segments: Option<&GpuTokens>, shape: AttentionShape) {
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        let (seq32, heads32, kv32, hd32) = (seq as i32, heads as i32, kv_heads as i32, head_dim as i32);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let segments_at = segments.map_or(0, |s| self.ptr(&s.ids));
        let (_, rows) = attention_geometry(head_dim);
        let config = LaunchConfig {
            grid_dim: (seq.div_ceil(rows) as u32, heads as u32, batch as u32),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: ((2 * ATTENTION_TILE * head_dim + ATTENTION_TILE) * 4) as u32,
        };
        self.launch(&self.kernels.attention_forward, config, |b| {
            b.arg(self.f32_out_first(out, batch * seq * heads * head_dim)).arg(self.f32_out_first(lse, batch * seq * heads));
            b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v)).arg(&segments_at);
            b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&hd32).arg(&scale);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn reference_attention_backward(
        &self,
        d_q: &mut GpuBuffer,
        d_k: &mut GpuBuffer,
        d_v: &mut GpuBuffer,
        d_out: &GpuBuffer,
        out: &GpuBuffer,
        lse: &GpuBuffer,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        segments: Option<&GpuTokens>,
        shape: AttentionShape,
    ) {
        let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
        let (seq32, heads32, kv32, hd32) = (seq as i32, heads as i32, kv_heads as i32, head_dim as i32);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let segments_at = segments.map_or(0, |s| self.ptr(&s.ids));
        let mut row_dot = self.scratch(&self.attention_row_dot, batch * seq * heads);
        let (_, rows) = attention_geometry(head_dim);
        let config = LaunchConfig {
            grid_dim: (seq.div_ceil(rows) as u32, heads as u32, batch as u32),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: ((2 * ATTENTION_TILE * head_dim + ATTENTION_TILE) * 4) as u32,
        };
        self.launch(&self.kernels.attention_backward_dq, config, |b| {
            b.arg(self.f32_inout(d_q)).arg(&mut *row_dot).arg(self.f32_in(d_out)).arg(self.f32_in(out)).arg(self.f32_in(lse));
            b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v)).arg(&segments_at);
            b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&hd32).arg(&scale);
        });
        let config = LaunchConfig {
            grid_dim: (seq.div_ceil(rows) as u32, kv_heads as u32, batch as u32),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: ((2 * ATTENTION_TILE * head_dim + 3 * ATTENTION_TILE) * 4) as u32,
        };
        self.launch(&self.kernels.attention_backward_dkdv, config, |b| {
            b.arg(self.f32_inout(d_k)).arg(self.f32_inout(d_v)).arg(self.f32_in(d_out)).arg(self.f32_in(lse)).arg(&*row_dot);
            b.arg(self.f32_in(q)).arg(self.f32_in(k)).arg(self.f32_in(v)).arg(&segments_at);
            b.arg(&seq32).arg(&heads32).arg(&kv32).arg(&hd32).arg(&scale);
        });
    }

    #[allow(clippy::too_many_arguments)]
    /// Addresses and row strides of q/k/v inputs: `bufs` is the stacked buffer (one) or the three
    /// tensors, `offsets` each part's first value in its buffer. bf16 when every buffer holds
    /// bf16 alone (products' outputs, cuDNN's gradients), else their fp32 values.
    fn qkv_side_in(&self, bufs: &[&GpuBuffer], offsets: [usize; 3], strides: [usize; 2]) -> QkvSide {
        let bf16 = bufs.iter().all(|b| b.holds_bf16_only());
        let bases: Vec<u64> = bufs.iter().map(|b| if bf16 { self.bf16_ptr(b) } else { self.ptr(self.f32_in(b)) }).collect();
        let size = if bf16 { 2 } else { 4 };
        let ptrs = std::array::from_fn(|i| bases[i.min(bases.len() - 1)] + (size * offsets[i]) as u64);
        QkvSide { ptrs, strides: strides.map(|s| s as u32), bf16 }
    }

    /// Shared-memory bytes of the kept-row cross-entropy for bf16 rows of `vocab` logits, or 0
    /// where it is off, in fp32, the rows are not whole packs of eight, or the GPU cannot give a
    /// block that much (the driver refuses the kernel's limit).
    fn cross_entropy_row_kept(&self, vocab: usize) -> usize {
        let bytes = vocab * 2;
        if !self.cross_entropy_keep_row || self.precision != Precision::Mixed || vocab % 8 != 0 {
            return 0;
        }
        if bytes > self.cross_entropy_kept_bytes.get() {
            let attribute = cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            if self.kernels.cross_entropy_chunk_bf16_kept.set_attribute(attribute, bytes as i32).is_err() {
                return 0;
            }
            self.cross_entropy_kept_bytes.set(bytes);
        }
        bytes
    }

    /// Runs the q/k/v RoPE kernel (kernels/rope.cu) for these value types.
    fn qkv_rope_launch(&self, to: QkvSide, from: QkvSide, table: &GpuBuffer, shape: AttentionShape, direction: f32) {
        let slots = shape.heads + 2 * shape.kv_heads;
        let groups = shape.batch * shape.seq * slots * (shape.head_dim / 2).div_ceil(8);
        let groups32 = u32::try_from(groups).expect("q/k/v RoPE over more than 2^32 groups in one launch");
        let (seq, heads, kv_heads, head_dim) = (shape.seq as i32, shape.heads as i32, shape.kv_heads as i32, shape.head_dim as i32);
        let kernel = match (from.bf16, to.bf16) {
            (true, true) => &self.kernels.qkv_rope_bf16,
            (false, false) => &self.kernels.qkv_rope_f32,
            (false, true) => &self.kernels.qkv_rope_f32_to_bf16,
            (true, false) => &self.kernels.qkv_rope_bf16_to_f32,
        };
        let table = self.f32_in(table);
        self.launch(kernel, grid_for_u64(groups), |b| {
            b.arg(&to.ptrs[0]).arg(&to.ptrs[1]).arg(&to.ptrs[2]).arg(&to.strides[0]).arg(&to.strides[1]);
            b.arg(&from.ptrs[0]).arg(&from.ptrs[1]).arg(&from.ptrs[2]).arg(&from.strides[0]).arg(&from.strides[1]);
            b.arg(table).arg(&seq).arg(&heads).arg(&kv_heads).arg(&head_dim).arg(&groups32).arg(&direction);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_adamw_arguments_have_the_kernels_layout() {
        // struct AdamWGroup in kernels/adamw.cu: six u64 arrays, a float array, ADAMW_GROUP + 1
        // block starts and the count, no padding.
        assert_eq!(std::mem::size_of::<AdamWGroupArgs>(), 6 * 8 * ADAMW_GROUP + 4 * ADAMW_GROUP + 4 * (ADAMW_GROUP + 1) + 4);
        assert_eq!(std::mem::offset_of!(AdamWGroupArgs, decay), 6 * 8 * ADAMW_GROUP);
        assert_eq!(std::mem::offset_of!(AdamWGroupArgs, count), 6 * 8 * ADAMW_GROUP + 4 * (2 * ADAMW_GROUP + 1));
        assert!(crate::kernels::program_source().contains(&format!("#define ADAMW_GROUP {ADAMW_GROUP}")));
    }

    /// Every value of the spread tensor updated exactly once, in aligned slices, each slice after
    /// its share of the other launches, all of those in order, the last launch a slice.
    #[test]
    fn spread_slices_cover_the_tensor_once_between_the_other_launches() {
        for (units, n) in [(1, 1 << 20), (3, 5_000_000), (13, 4_194_304), (35, 210_000_000), (100, (1 << 20) + 7)] {
            let order = spread_order(units, n);
            let slices: Vec<Range<usize>> = order.iter().filter_map(|s| if let SpreadStep::Slice(r) = s { Some(r.clone()) } else { None }).collect();
            let others: Vec<usize> = order.iter().filter_map(|s| if let SpreadStep::Unit(i) = s { Some(*i) } else { None }).collect();
            assert_eq!(others, (0..units).collect::<Vec<_>>(), "{units} units");
            assert_eq!(slices.len(), units.min(ADAMW_SPREAD_SLICES));
            assert_eq!(slices.first().unwrap().start, 0);
            assert_eq!(slices.last().unwrap().end, n);
            for pair in slices.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "slices must tile the tensor");
                assert!(pair[0].end % 1024 == 0 && !pair[0].is_empty(), "slice {:?} of {n}", pair[0]);
            }
            assert!(matches!(order.last(), Some(SpreadStep::Slice(_))), "the tensor's last slice comes last");
            // Slice j goes out once at least (j + 1) / slices of the other launches have.
            let mut seen_units = 0;
            let mut seen_slices = 0;
            for step in &order {
                match step {
                    SpreadStep::Unit(_) => seen_units += 1,
                    SpreadStep::Slice(_) => {
                        seen_slices += 1;
                        assert!(seen_units * slices.len() >= seen_slices * units, "slice {seen_slices} after {seen_units} of {units} launches");
                    }
                }
            }
        }
    }

    #[test]
    fn slices_of_an_update_offset_every_array() {
        let at = AdamWOperands { param: 1 << 20, grad: 2 << 20, m: 3 << 20, v: 4 << 20, shadow: 5 << 20, n: 4096 };
        let part = at.slice(1024..3072);
        assert_eq!((part.param, part.grad, part.m, part.v, part.shadow, part.n), ((1 << 20) + 4096, (2 << 20) + 4096, (3 << 20) + 4096, (4 << 20) + 4096, (5 << 20) + 2048, 2048));
        assert_eq!(AdamWOperands { shadow: 0, ..at }.slice(1024..2048).shadow, 0, "no bf16 copy stays none");
    }

    #[test]
    fn switches_read_on_off_and_refuse_the_rest() {
        assert!(parse_switch("X", None, true).unwrap());
        assert!(!parse_switch("X", Some(""), false).unwrap());
        assert!(parse_switch("X", Some("Yes"), false).unwrap());
        assert!(!parse_switch("X", Some("off"), true).unwrap());
        assert!(!parse_switch("X", Some("0"), true).unwrap());
        let error = parse_switch("DSLLM_OPTIMIZER_STREAM", Some("maybe"), true).unwrap_err().to_string();
        assert!(error.contains("DSLLM_OPTIMIZER_STREAM") && error.contains("maybe"), "{error}");
    }

    #[test]
    fn number_settings_read_within_their_range() {
        assert_eq!(parse_number("DSLLM_NORM_ROWS", None, 1..=256usize, "rows").unwrap(), None);
        assert_eq!(parse_number("DSLLM_NORM_ROWS", Some(""), 1..=256usize, "rows").unwrap(), None);
        assert_eq!(parse_number("DSLLM_NORM_ROWS", Some("4"), 1..=256usize, "rows").unwrap(), Some(4));
        assert_eq!(parse_number("DSLLM_CE_PREFETCH", Some("0.5"), 0.0..=1.0f32, "a share").unwrap(), Some(0.5));
        for bad in ["0", "257", "-1", "four"] {
            let error = parse_number("DSLLM_NORM_ROWS", Some(bad), 1..=256usize, "rows").unwrap_err().to_string();
            assert!(error.contains("DSLLM_NORM_ROWS") && error.contains(bad) && error.contains("1 to 256"), "{error}");
        }
        assert!(parse_number("DSLLM_CE_PREFETCH", Some("1.5"), 0.0..=1.0f32, "a share").is_err());
    }

    #[test]
    fn cross_entropy_grid_reads_the_setting() {
        assert_eq!(cross_entropy_grid(None, 132).unwrap(), Some((132, CE_SM_BLOCK)));
        assert_eq!(cross_entropy_grid(Some("rows"), 132).unwrap(), None);
        assert_eq!(cross_entropy_grid(Some("2x512"), 132).unwrap(), Some((264, 512)));
        for bad in ["2", "0x512", "2x500", "2x2048", "x512", "ax512"] {
            let error = cross_entropy_grid(Some(bad), 132).unwrap_err().to_string();
            assert!(error.contains("DSLLM_CE_GRID") && error.contains(bad), "{error}");
        }
    }
}

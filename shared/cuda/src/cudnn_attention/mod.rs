//! Causal attention on cuDNN's fused flash-attention engines: the kernels PyTorch's SDPA (and
//! so torch.compile) runs on Hopper.
//!
//! No Rust library builds cuDNN graphs (cudarc binds only the C API), and cudnn-frontend is
//! C++: so the graphs are written here op by op through cuDNN's backend API, as cudnn-frontend
//! expands its SDPA node for cuDNN 9 before the single-node SDPA operations (causal masks on
//! those need 9.21, the backward 9.27). cuDNN pattern-matches these graphs to its kernels.
//!
//! Forward: S = Q·Kᵀ·scale, causal mask, softmax with its row statistics (Stats, the row
//! log-sum-exp), O = P·V. Backward: rowsum(dO ⊙ O), S and P recomputed from Stats, dV = Pᵀ·dO,
//! dS = P ⊙ (dO·Vᵀ − rowsum)·scale, dK = dSᵀ·Q, dQ = dS·K. Grouped-query heads are summed by a
//! reduction over each group.
//!
//! Layouts are ours: Q, K, V, O and their gradients `[batch, seq, heads, head_dim]` (strides
//! given to cuDNN); Stats is `[batch, heads, seq]` (cuDNN's backward takes no other), so the
//! backend transposes it to and from its `lse[batch, seq, heads]`.

mod descriptor;
mod graph;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cudarc::cudnn::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use sys::cudnnDataType_t as DataType;
use sys::cudnnPointwiseMode_t as Pw;
use sys::cudnnReduceTensorOp_t as Reduce;

use descriptor::check;
use graph::{Graph, Plan, Tensor};

/// The shape of one attention call (what a plan is built for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The points where cudnn-frontend's versions built the graph differently; cuDNN versions may
/// accept one and not the other, so plans are tried in [`Variant::candidates`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The masked-out score: -inf (frontend for cuDNN >= 9.10) or the lowest float (older).
    pub fill_neg_inf: bool,
    /// GEN_INDEX computed in int32 (frontend 1.5) rather than fp32 (newer).
    pub index_math_int32: bool,
    /// Pointwise alpha1/alpha2 set to 1 (frontend 1.x builder).
    pub pointwise_alphas: bool,
    /// Backward: rowsum(dO ⊙ O) as a workspace tensor (newer) rather than virtual.
    pub softmax_sum_in_workspace: bool,
    /// Backward: the causal mask after subtracting Stats (newer) rather than before.
    pub mask_after_stats: bool,
    /// Backward: the K view dQ's product reads in bf16 rather than fp32.
    pub k_view_bf16: bool,
    /// Backward: the fp32 dQ accumulator with F16x16 reordering (frontend 1.5).
    pub dq_accumulator_f16x16: bool,
    /// Backward: dQ accumulated in fp32 in the workspace, then converted (cuDNN's fast path);
    /// without it the product writes dQ directly (cudnn-frontend's deterministic mode).
    pub dq_accumulator: bool,
}

impl Variant {
    /// Newer frontend first, then frontend 1.5's choices; each also without the dQ accumulator
    /// (cudnn-frontend's deterministic algorithm) when `deterministic`.
    pub fn candidates(deterministic: bool) -> Vec<Variant> {
        let newer = Variant {
            fill_neg_inf: true,
            index_math_int32: false,
            pointwise_alphas: false,
            softmax_sum_in_workspace: true,
            mask_after_stats: true,
            k_view_bf16: false,
            dq_accumulator_f16x16: false,
            dq_accumulator: !deterministic,
        };
        let older = Variant {
            fill_neg_inf: false,
            index_math_int32: true,
            pointwise_alphas: true,
            softmax_sum_in_workspace: false,
            mask_after_stats: false,
            k_view_bf16: false,
            dq_accumulator_f16x16: true,
            dq_accumulator: !deterministic,
        };
        vec![
            newer,
            Variant { k_view_bf16: true, ..newer },
            Variant { index_math_int32: true, pointwise_alphas: true, ..newer },
            older,
            Variant { dq_accumulator_f16x16: false, ..older },
            Variant { k_view_bf16: true, ..older },
        ]
    }
}

const Q: i64 = 1;
const K: i64 = 2;
const V: i64 = 3;
const O: i64 = 4;
const STATS: i64 = 5;
const SCALE: i64 = 6;
const FILL: i64 = 7;
const D_OUT: i64 = 8;
const D_Q: i64 = 9;
const D_K: i64 = 10;
const D_V: i64 = 11;
const ONE: i64 = 12;
const D_Q_ACCUMULATOR: i64 = 13;
const SOFTMAX_SUM: i64 = 14;

const F32: DataType = DataType::CUDNN_DATA_FLOAT;
const BF16: DataType = DataType::CUDNN_DATA_BFLOAT16;

/// Dims and strides of the tensors in our `[batch, seq, heads, head_dim]` memory.
struct Layout {
    b: i64,
    hq: i64,
    hkv: i64,
    s: i64,
    d: i64,
}

impl Layout {
    fn new(shape: Shape) -> Self {
        Self { b: shape.batch as i64, hq: shape.heads as i64, hkv: shape.kv_heads as i64, s: shape.seq as i64, d: shape.head_dim as i64 }
    }
    /// [b, heads, s, d] over [b, s, heads, d] memory.
    fn bshd(&self, heads: i64) -> ([i64; 4], [i64; 4]) {
        let Self { b, s, d, .. } = *self;
        ([b, heads, s, d], [s * heads * d, d, heads * d, 1])
    }
    /// The transposed view [b, heads, d, s] of the same memory (Kᵀ, Vᵀ).
    fn bshd_transposed(&self, heads: i64) -> ([i64; 4], [i64; 4]) {
        let Self { b, s, d, .. } = *self;
        ([b, heads, d, s], [s * heads * d, d, 1, heads * d])
    }
    fn scores(&self) -> [i64; 4] {
        [self.b, self.hq, self.s, self.s]
    }
    fn rows(&self) -> [i64; 4] {
        [self.b, self.hq, self.s, 1]
    }
}

/// Scaled, causally masked scores of Q·Kᵀ: the graph's first four steps in both directions.
fn masked_scores(g: &mut Graph, l: &Layout, v: Variant, q: Tensor, kt: Tensor, scale: Tensor, fill: Tensor, mask: bool) -> Result<Tensor> {
    let s = g.virtual_tensor(l.scores(), F32)?;
    g.matmul(q, kt, s)?;
    let scaled = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_MUL, s, Some(scale), None, scaled, None)?;
    if !mask {
        return Ok(scaled);
    }
    causal_mask(g, l, v, scaled, fill)
}

/// Keeps the scores where row >= column, `fill` elsewhere (GEN_INDEX, CMP_GE, BINARY_SELECT).
fn causal_mask(g: &mut Graph, l: &Layout, v: Variant, scores: Tensor, fill: Tensor) -> Result<Tensor> {
    let index_math = if v.index_math_int32 { DataType::CUDNN_DATA_INT32 } else { F32 };
    let row = g.virtual_tensor(l.scores(), DataType::CUDNN_DATA_INT32)?;
    g.pointwise_in(Pw::CUDNN_POINTWISE_GEN_INDEX, index_math, scores, None, None, row, Some(2))?;
    let col = g.virtual_tensor(l.scores(), DataType::CUDNN_DATA_INT32)?;
    g.pointwise_in(Pw::CUDNN_POINTWISE_GEN_INDEX, index_math, scores, None, None, col, Some(3))?;
    let keep = g.virtual_tensor(l.scores(), DataType::CUDNN_DATA_BOOLEAN)?;
    g.pointwise_in(Pw::CUDNN_POINTWISE_CMP_GE, DataType::CUDNN_DATA_BOOLEAN, row, Some(col), None, keep, None)?;
    let masked = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_BINARY_SELECT, scores, Some(fill), Some(keep), masked, None)?;
    Ok(masked)
}

fn forward_graph(shape: Shape, v: Variant) -> Result<Graph> {
    let l = Layout::new(shape);
    let mut g = Graph::new();
    g.pointwise_alphas = v.pointwise_alphas;
    let (q_dims, q_strides) = l.bshd(l.hq);
    let q = g.io(Q, q_dims, q_strides, BF16)?;
    let (kt_dims, kt_strides) = l.bshd_transposed(l.hkv);
    let kt = g.io(K, kt_dims, kt_strides, BF16)?;
    let (kv_dims, kv_strides) = l.bshd(l.hkv);
    let v_in = g.io(V, kv_dims, kv_strides, BF16)?;
    let o = g.io(O, q_dims, q_strides, BF16)?;
    let stats = g.io(STATS, l.rows(), graph::packed(l.rows()), F32)?;
    let scale = g.scalar(SCALE, F32)?;
    let fill = g.scalar(FILL, F32)?;

    let masked = masked_scores(&mut g, &l, v, q, kt, scale, fill, true)?;
    let max = g.virtual_tensor(l.rows(), F32)?;
    g.reduction(Reduce::CUDNN_REDUCE_TENSOR_MAX, masked, max)?;
    let shifted = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_SUB, masked, Some(max), None, shifted, None)?;
    let exp = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_EXP, shifted, None, None, exp, None)?;
    let sum = g.virtual_tensor(l.rows(), F32)?;
    g.reduction(Reduce::CUDNN_REDUCE_TENSOR_ADD, exp, sum)?;
    let log = g.virtual_tensor(l.rows(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_LOG, sum, None, None, log, None)?;
    g.pointwise(Pw::CUDNN_POINTWISE_ADD, max, Some(log), None, stats, None)?;
    // The second product reads P in the I/O type (a requirement of cuDNN's engine).
    let p = g.virtual_tensor(l.scores(), BF16)?;
    g.pointwise(Pw::CUDNN_POINTWISE_DIV, exp, Some(sum), None, p, None)?;
    g.matmul(p, v_in, o)?;
    Ok(g)
}

fn backward_graph(shape: Shape, v: Variant) -> Result<Graph> {
    let l = Layout::new(shape);
    let grouped = l.hkv != l.hq;
    let mut g = Graph::new();
    g.pointwise_alphas = v.pointwise_alphas;
    let (q_dims, q_strides) = l.bshd(l.hq);
    let (kv_dims, kv_strides) = l.bshd(l.hkv);
    let (kt_dims, kt_strides) = l.bshd_transposed(l.hkv);
    let q = g.io(Q, q_dims, q_strides, BF16)?;
    let kt = g.io(K, kt_dims, kt_strides, BF16)?;
    let vt = g.io(V, kt_dims, kt_strides, BF16)?;
    let o = g.io(O, q_dims, q_strides, BF16)?;
    let d_out = g.io(D_OUT, q_dims, q_strides, BF16)?;
    let stats = g.io(STATS, l.rows(), graph::packed(l.rows()), F32)?;
    let d_q = g.io(D_Q, q_dims, q_strides, BF16)?;
    let d_k = g.io(D_K, kv_dims, kv_strides, BF16)?;
    let d_v = g.io(D_V, kv_dims, kv_strides, BF16)?;
    let scale = g.scalar(SCALE, F32)?;
    let fill = g.scalar(FILL, F32)?;
    let one = g.scalar(ONE, F32)?;

    // rowsum(dO ⊙ O), named by a multiply by one.
    let d_out_o = g.virtual_tensor(q_dims, F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_MUL, d_out, Some(o), None, d_out_o, None)?;
    let row_dot = g.virtual_tensor(l.rows(), F32)?;
    g.reduction(Reduce::CUDNN_REDUCE_TENSOR_ADD, d_out_o, row_dot)?;
    let softmax_sum = if v.softmax_sum_in_workspace { g.io(SOFTMAX_SUM, l.rows(), graph::packed(l.rows()), F32)? } else { g.virtual_tensor(l.rows(), F32)? };
    g.pointwise(Pw::CUDNN_POINTWISE_MUL, row_dot, Some(one), None, softmax_sum, None)?;

    // P recomputed in fp32 from Stats.
    let mut scores = masked_scores(&mut g, &l, v, q, kt, scale, fill, !v.mask_after_stats)?;
    let centred = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_SUB, scores, Some(stats), None, centred, None)?;
    scores = centred;
    if v.mask_after_stats {
        scores = causal_mask(&mut g, &l, v, scores, fill)?;
    }
    let p = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_EXP, scores, None, None, p, None)?;

    // dV = Pᵀ·dO (per query head, then summed over each group).
    let transposed_scores = |l: &Layout| ([l.b, l.hq, l.s, l.s], [l.hq * l.s * l.s, l.s * l.s, 1, l.s]);
    let (pt_dims, pt_strides) = transposed_scores(&l);
    let pt = g.virtual_strided(pt_dims, pt_strides, BF16)?;
    g.reshape(p, pt)?;
    grouped_product(&mut g, &l, pt, d_out, d_v, grouped)?;

    // dS = P ⊙ (dO·Vᵀ − rowsum) · scale.
    let dp = g.virtual_tensor(l.scores(), F32)?;
    g.matmul(d_out, vt, dp)?;
    let dp = if v.pointwise_alphas {
        // Frontend 1.5 multiplied by the (absent) dropout scale: one.
        let scaled = g.virtual_tensor(l.scores(), F32)?;
        g.pointwise(Pw::CUDNN_POINTWISE_MUL, dp, Some(one), None, scaled, None)?;
        scaled
    } else {
        dp
    };
    let centred = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_SUB, dp, Some(softmax_sum), None, centred, None)?;
    let weighted = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_MUL, centred, Some(p), None, weighted, None)?;
    let ds = g.virtual_tensor(l.scores(), F32)?;
    g.pointwise(Pw::CUDNN_POINTWISE_MUL, weighted, Some(scale), None, ds, None)?;

    // dK = dSᵀ·Q.
    let dst = g.virtual_strided(pt_dims, pt_strides, BF16)?;
    g.reshape(ds, dst)?;
    grouped_product(&mut g, &l, dst, q, d_k, grouped)?;

    // dQ = dS·K (K back from its transposed view), through the fp32 accumulator or directly.
    let k_view = g.virtual_strided(kv_dims, kv_strides, if v.k_view_bf16 { BF16 } else { F32 })?;
    g.reshape(kt, k_view)?;
    if v.dq_accumulator {
        let packed_q = graph::packed(q_dims);
        let accumulator = if v.dq_accumulator_f16x16 { g.io_f16x16(D_Q_ACCUMULATOR, q_dims, packed_q, F32)? } else { g.io(D_Q_ACCUMULATOR, q_dims, packed_q, F32)? };
        g.matmul(ds, k_view, accumulator)?;
        g.pointwise(Pw::CUDNN_POINTWISE_IDENTITY, accumulator, None, None, d_q, None)?;
    } else {
        g.matmul(ds, k_view, d_q)?;
    }
    Ok(g)
}

/// `out = a·b` per query head; with grouped-query heads through a [b, hq, s, d] intermediate
/// summed over each group into `out`'s kv heads.
fn grouped_product(g: &mut Graph, l: &Layout, a: Tensor, b: Tensor, out: Tensor, grouped: bool) -> Result<()> {
    if !grouped {
        return g.matmul(a, b, out);
    }
    let full = g.virtual_tensor([l.b, l.hq, l.s, l.d], BF16)?;
    g.matmul(a, b, full)?;
    g.reduction(Reduce::CUDNN_REDUCE_TENSOR_ADD, full, out)
}

/// A plan, the variant it was built from, and its workspace regions.
struct Built {
    plan: Plan,
    variant: Variant,
}

/// The cuDNN handle, the plans built so far (one per shape and direction) and the workspace.
pub struct CudnnAttention {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    version: usize,
    /// Built plans by shape, direction (true: backward) and determinism; `None` where none
    /// could be.
    plans: RefCell<HashMap<(Shape, bool, bool), Option<Rc<Built>>>>,
    workspace: RefCell<Option<CudaSlice<u8>>>,
    /// Every variant tried and why it failed, for error messages and `attention_bench`.
    pub log: RefCell<Vec<String>>,
}

impl Drop for CudnnAttention {
    fn drop(&mut self) {
        unsafe { sys::cudnnDestroy(self.handle) };
    }
}

/// Why cuDNN cannot be used here, or `None`: the library must load (`LD_LIBRARY_PATH`), be 9.x,
/// and not be 9.10.0/9.10.1 (bf16 attention bugs, as cudnn-frontend refuses them too).
pub fn cudnn_unavailable_reason() -> Option<String> {
    if !unsafe { sys::is_culib_present() } {
        return Some("libcudnn.so.9 is not on the library path (LD_LIBRARY_PATH; pip's nvidia-cudnn-cu12/cu13 installs it under site-packages/nvidia/cudnn/lib)".into());
    }
    let version = unsafe { sys::cudnnGetVersion() };
    if !(90000..100000).contains(&version) {
        return Some(format!("cuDNN {version} is not 9.x"));
    }
    if (91000..91002).contains(&version) {
        return Some(format!("cuDNN {version} has known bf16 attention bugs (use 9.10.2 or newer)"));
    }
    None
}

/// The loaded cuDNN's version as "9.19.0".
pub fn cudnn_version_name() -> String {
    let v = unsafe { sys::cudnnGetVersion() };
    format!("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
}

fn round_up(bytes: usize) -> usize {
    bytes.div_ceil(256) * 256
}

impl CudnnAttention {
    /// A handle on `stream`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        if let Some(reason) = cudnn_unavailable_reason() {
            bail!("cannot use cuDNN attention: {reason}");
        }
        let version = unsafe { sys::cudnnGetVersion() };
        let mut handle = std::ptr::null_mut();
        check(unsafe { sys::cudnnCreate(&mut handle) }, || "cudnnCreate".into())?;
        let raw_stream = stream.cu_stream() as sys::cudaStream_t;
        let attention = Self {
            handle,
            stream,
            version,
            plans: RefCell::default(),
            workspace: RefCell::default(),
            log: RefCell::default(),
        };
        check(unsafe { sys::cudnnSetStream(handle, raw_stream) }, || "cudnnSetStream".into())?;
        Ok(attention)
    }

    pub fn version(&self) -> usize {
        self.version
    }

    /// The plan for `shape` in one direction: cached, else the first variant cuDNN plans. A
    /// shape with no plan is remembered too (and said once on stderr).
    /// `deterministic` keeps only plans whose engine does not note nondeterminism (and builds
    /// the backward without the dQ accumulator).
    fn plan(&self, shape: Shape, backward: bool, deterministic: bool) -> Result<Rc<Built>> {
        let direction = if backward { "backward" } else { "forward" };
        if let Some(cached) = self.plans.borrow().get(&(shape, backward, deterministic)) {
            return cached.clone().ok_or_else(|| anyhow::anyhow!("cuDNN has no attention {direction} plan for {shape:?} (said above)"));
        }
        let built = self.build(shape, backward, deterministic);
        if let Err(e) = &built {
            eprintln!("dsllm-cuda: {e:#}\ndsllm-cuda: attention {direction} for {shape:?} runs on the fa2 kernels instead");
        }
        let built = built.ok().map(Rc::new);
        self.plans.borrow_mut().insert((shape, backward, deterministic), built.clone());
        built.ok_or_else(|| anyhow::anyhow!("cuDNN has no attention {direction} plan for {shape:?}"))
    }

    fn build(&self, shape: Shape, backward: bool, deterministic: bool) -> Result<Built> {
        let direction = if backward { "backward" } else { "forward" };
        let mut failures = Vec::new();
        let mut candidates = Variant::candidates(deterministic);
        if !backward {
            // The forward's graph depends on the first three choices only.
            candidates.dedup_by_key(|v| (v.fill_neg_inf, v.index_math_int32, v.pointwise_alphas));
        }
        for variant in candidates {
            let name = format!("attention {direction} {shape:?}{}", if deterministic { " (deterministic)" } else { "" });
            let graph = if backward { backward_graph(shape, variant) } else { forward_graph(shape, variant) };
            match graph.and_then(|g| g.plan(self.handle, deterministic, &name)) {
                Ok(plan) => {
                    self.log.borrow_mut().push(format!("{name}: {} with {variant:?}, workspace {} bytes", plan.engine_name, plan.workspace_bytes));
                    return Ok(Built { plan, variant });
                }
                Err(e) => {
                    let line = format!("{direction} {variant:?}: {e:#}");
                    self.log.borrow_mut().push(line.clone());
                    failures.push(line);
                }
            }
        }
        bail!("cuDNN {} built no attention {direction} plan for {shape:?}:\n  {}", self.version, failures.join("\n  "))
    }

    /// Whether some shape had no plan (its attention ran on the fa2 kernels).
    pub fn fell_back(&self) -> bool {
        self.plans.borrow().values().any(Option::is_none)
    }

    /// Whether cuDNN has a plan for `shape` in this direction (built now if not yet tried).
    pub fn has_plan(&self, shape: Shape, backward: bool, deterministic: bool) -> bool {
        self.plan(shape, backward, deterministic).is_ok()
    }

    /// The engine and variant of a built plan, for reports.
    pub fn describe(&self, shape: Shape, backward: bool, deterministic: bool) -> Option<String> {
        let plans = self.plans.borrow();
        let built = plans.get(&(shape, backward, deterministic))?.as_ref()?;
        Some(format!("{}{} {:?}", built.plan.engine_name, if built.plan.nondeterministic { " (nondeterministic)" } else { "" }, built.variant))
    }

    /// A device address of at least `bytes` of workspace (grown, never shrunk).
    fn workspace(&self, bytes: usize) -> Result<u64> {
        let mut workspace = self.workspace.borrow_mut();
        if workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            *workspace = None;
            *workspace = Some(unsafe { self.stream.alloc::<u8>(bytes.max(256)) }.context("cannot allocate cuDNN's attention workspace")?);
        }
        let (pointer, _sync) = workspace.as_ref().expect("just allocated").device_ptr(&self.stream);
        Ok(pointer)
    }

    fn fill(&self, variant: Variant) -> f32 {
        if variant.fill_neg_inf {
            f32::NEG_INFINITY
        } else {
            f32::MIN
        }
    }

    /// O and Stats (`[batch, heads, seq]`) from bf16 Q, K, V (device addresses).
    pub fn forward(&self, shape: Shape, o: u64, stats: u64, q: u64, k: u64, v: u64) -> Result<()> {
        // The forward has no atomics: one plan serves both modes.
        let built = self.plan(shape, false, false)?;
        let workspace = self.workspace(built.plan.workspace_bytes)?;
        let (scale, fill) = (1.0 / (shape.head_dim as f32).sqrt(), self.fill(built.variant));
        let device = |p: u64| p as *mut c_void;
        let host = |p: &f32| p as *const f32 as *mut c_void;
        let pointers = [(Q, device(q)), (K, device(k)), (V, device(v)), (O, device(o)), (STATS, device(stats)), (SCALE, host(&scale)), (FILL, host(&fill))];
        built.plan.execute(self.handle, &pointers, device(workspace))
    }

    /// bf16 dQ, dK, dV from bf16 dO, O, Q, K, V and the forward's Stats.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, shape: Shape, deterministic: bool, d_q: u64, d_k: u64, d_v: u64, d_out: u64, o: u64, stats: u64, q: u64, k: u64, v: u64) -> Result<()> {
        let built = self.plan(shape, true, deterministic)?;
        let variant = built.variant;
        let Shape { batch, seq, heads, head_dim, .. } = shape;
        // Our part of the workspace first (as cudnn-frontend lays it out), cuDNN's after it.
        let accumulator_bytes = if variant.dq_accumulator { round_up(batch * heads * seq * head_dim * 4) } else { 0 };
        let sum_bytes = if variant.softmax_sum_in_workspace { round_up(batch * heads * seq * 4) } else { 0 };
        let ours = accumulator_bytes + sum_bytes;
        let workspace = self.workspace(ours + built.plan.workspace_bytes)?;
        if variant.dq_accumulator && self.version < 90600 {
            // Before cuDNN 9.6 the engine added into the accumulator without clearing it.
            let status = unsafe { cudarc::driver::sys::cuMemsetD8Async(workspace, 0, accumulator_bytes, self.stream.cu_stream()) };
            if status != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
                bail!("cannot clear cuDNN's dQ accumulator: {status:?}");
            }
        }
        let (scale, fill, one) = (1.0 / (head_dim as f32).sqrt(), self.fill(variant), 1.0f32);
        let device = |p: u64| p as *mut c_void;
        let host = |p: &f32| p as *const f32 as *mut c_void;
        let mut pointers = vec![
            (Q, device(q)),
            (K, device(k)),
            (V, device(v)),
            (O, device(o)),
            (D_OUT, device(d_out)),
            (STATS, device(stats)),
            (D_Q, device(d_q)),
            (D_K, device(d_k)),
            (D_V, device(d_v)),
            (SCALE, host(&scale)),
            (FILL, host(&fill)),
            (ONE, host(&one)),
        ];
        if variant.dq_accumulator {
            pointers.push((D_Q_ACCUMULATOR, device(workspace)));
        }
        if variant.softmax_sum_in_workspace {
            pointers.push((SOFTMAX_SUM, device(workspace + accumulator_bytes as u64)));
        }
        built.plan.execute(self.handle, &pointers, device(workspace + ours as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether to skip (no libcudnn here); shared/cuda/cudnn-cpu-test.sh sets
    /// `DSLLM_REQUIRE_CUDNN` so a setup that failed to provide it fails instead.
    fn skip_without_cudnn(what: &str) -> bool {
        let Some(reason) = cudnn_unavailable_reason() else { return false };
        assert!(std::env::var_os("DSLLM_REQUIRE_CUDNN").is_none(), "DSLLM_REQUIRE_CUDNN is set but {reason}");
        eprintln!("skipping the cuDNN {what} test: {reason} (shared/cuda/cudnn-cpu-test.sh provides it)");
        true
    }

    /// Every variant of both graphs is made of descriptors cuDNN accepts (tensors and operations
    /// finalize; the operation graph and plans need a GPU). Needs libcudnn 9 on the library path,
    /// not a GPU: skips where it is missing.
    #[test]
    fn graphs_finalize_their_tensors_and_operations() {
        if skip_without_cudnn("graph") {
            return;
        }
        let shapes = [
            Shape { batch: 2, seq: 256, heads: 4, kv_heads: 4, head_dim: 64 },
            Shape { batch: 1, seq: 384, heads: 8, kv_heads: 2, head_dim: 128 },
        ];
        for shape in shapes {
            for variant in Variant::candidates(false).into_iter().chain(Variant::candidates(true)) {
                let forward = forward_graph(shape, variant).unwrap_or_else(|e| panic!("forward {shape:?} {variant:?}: {e:#}"));
                assert_eq!(forward.operation_count(), 14, "forward: F1-F14");
                let backward = backward_graph(shape, variant).unwrap_or_else(|e| panic!("backward {shape:?} {variant:?}: {e:#}"));
                let grouped = if shape.kv_heads != shape.heads { 2 } else { 0 };
                let expected = 21 + grouped + usize::from(variant.pointwise_alphas) + usize::from(variant.dq_accumulator);
                assert_eq!(backward.operation_count(), expected, "backward {variant:?}");
            }
        }
    }

    #[test]
    fn a_bad_tensor_is_refused_with_cudnns_reason() {
        if skip_without_cudnn("error") {
            return;
        }
        let mut g = Graph::new();
        // A negative dimension.
        let e = g.io(1, [1, 1, -4, 4], [16, 16, 4, 1], F32).err().expect("refused");
        let message = format!("{e:#}");
        assert!(message.contains("cuDNN") && message.contains("tensor 1"), "{message}");
    }
}

//! A cuDNN operation graph written op by op (tensors, pointwise, matmul, reduction), then
//! turned into an execution plan by cuDNN's heuristics.

use std::ffi::c_void;

use anyhow::{bail, Context, Result};
use cudarc::cudnn::sys;
use sys::cudnnBackendAttributeName_t as Attr;
use sys::cudnnBackendDescriptorType_t as Kind;
use sys::cudnnDataType_t as DataType;

use super::descriptor::Descriptor;

/// A tensor of the graph: its unique id and descriptor.
#[derive(Clone, Copy)]
pub struct Tensor {
    pub uid: i64,
    index: usize,
}

/// Packed strides of a [b, h, s, t] tensor, innermost last.
pub fn packed(dims: [i64; 4]) -> [i64; 4] {
    [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
}

#[derive(Default)]
pub struct Graph {
    tensors: Vec<Descriptor>,
    /// Operator descriptors (pointwise, matmul, reduction) the operations point at.
    operators: Vec<Descriptor>,
    operations: Vec<Descriptor>,
    next_virtual_uid: i64,
    /// Set the pointwise operations' alpha1/alpha2 to 1 (as cudnn-frontend 1.x's builder did).
    pub pointwise_alphas: bool,
}

/// A finalized plan and everything it was built from (cuDNN keeps references, not copies).
pub struct Plan {
    pub plan: Descriptor,
    pub workspace_bytes: usize,
    /// Whether the engine said its results may vary from run to run (atomics).
    pub nondeterministic: bool,
    pub engine_name: String,
    _graph: Graph,
    _op_graph: Descriptor,
    _configs: Vec<Descriptor>,
}

impl Graph {
    pub fn new() -> Self {
        Self { next_virtual_uid: 1000, ..Default::default() }
    }

    fn add_tensor(&mut self, uid: i64, dims: [i64; 4], strides: [i64; 4], data_type: DataType, is_virtual: bool, by_value: bool) -> Result<Tensor> {
        self.add_tensor_reordered(uid, dims, strides, data_type, is_virtual, by_value, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_tensor_reordered(&mut self, uid: i64, dims: [i64; 4], strides: [i64; 4], data_type: DataType, is_virtual: bool, by_value: bool, f16x16: bool) -> Result<Tensor> {
        let d = Descriptor::new(Kind::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
        d.data_type(Attr::CUDNN_ATTR_TENSOR_DATA_TYPE, data_type)?;
        d.i64s(Attr::CUDNN_ATTR_TENSOR_DIMENSIONS, &dims)?;
        d.i64s(Attr::CUDNN_ATTR_TENSOR_STRIDES, &strides)?;
        d.i64(Attr::CUDNN_ATTR_TENSOR_UNIQUE_ID, uid)?;
        d.i64(Attr::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 16)?;
        d.boolean(Attr::CUDNN_ATTR_TENSOR_IS_VIRTUAL, is_virtual)?;
        if by_value {
            d.boolean(Attr::CUDNN_ATTR_TENSOR_IS_BY_VALUE, true)?;
        }
        if f16x16 {
            d.reordering(sys::cudnnBackendTensorReordering_t::CUDNN_TENSOR_REORDERING_F16x16)?;
        }
        let d = d.finalize().with_context(|| format!("tensor {uid} {dims:?} strides {strides:?} {data_type:?}"))?;
        self.tensors.push(d);
        Ok(Tensor { uid, index: self.tensors.len() - 1 })
    }

    /// A tensor in GPU memory the caller passes at execution (uid fixed by the caller).
    pub fn io(&mut self, uid: i64, dims: [i64; 4], strides: [i64; 4], data_type: DataType) -> Result<Tensor> {
        self.add_tensor(uid, dims, strides, data_type, false, false)
    }

    /// [`Graph::io`] with cuDNN's F16x16 reordering (older frontends' dQ accumulator).
    pub fn io_f16x16(&mut self, uid: i64, dims: [i64; 4], strides: [i64; 4], data_type: DataType) -> Result<Tensor> {
        self.add_tensor_reordered(uid, dims, strides, data_type, false, false, true)
    }

    /// A host scalar passed by value at execution ([1, 1, 1, 1]).
    pub fn scalar(&mut self, uid: i64, data_type: DataType) -> Result<Tensor> {
        self.add_tensor(uid, [1; 4], [1; 4], data_type, false, true)
    }

    /// An intermediate the engine keeps to itself (packed, fp32 unless said).
    pub fn virtual_tensor(&mut self, dims: [i64; 4], data_type: DataType) -> Result<Tensor> {
        self.next_virtual_uid += 1;
        self.add_tensor(self.next_virtual_uid, dims, packed(dims), data_type, true, false)
    }

    /// An intermediate with explicit strides (a transposed view).
    pub fn virtual_strided(&mut self, dims: [i64; 4], strides: [i64; 4], data_type: DataType) -> Result<Tensor> {
        self.next_virtual_uid += 1;
        self.add_tensor(self.next_virtual_uid, dims, strides, data_type, true, false)
    }

    #[cfg(test)]
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    fn tensor(&self, t: Tensor) -> &Descriptor {
        &self.tensors[t.index]
    }

    /// `y = mode(x[, b[, t]])`, computed in fp32 (`Float` math precision).
    pub fn pointwise(&mut self, mode: sys::cudnnPointwiseMode_t, x: Tensor, b: Option<Tensor>, t: Option<Tensor>, y: Tensor, axis: Option<i64>) -> Result<()> {
        self.pointwise_in(mode, DataType::CUDNN_DATA_FLOAT, x, b, t, y, axis)
    }

    pub fn pointwise_in(
        &mut self,
        mode: sys::cudnnPointwiseMode_t,
        math: DataType,
        x: Tensor,
        b: Option<Tensor>,
        t: Option<Tensor>,
        y: Tensor,
        axis: Option<i64>,
    ) -> Result<()> {
        let what = || format!("pointwise {mode:?} -> tensor {}", y.uid);
        let pw = Descriptor::new(Kind::CUDNN_BACKEND_POINTWISE_DESCRIPTOR)?;
        pw.pointwise_mode(mode)?;
        pw.data_type(Attr::CUDNN_ATTR_POINTWISE_MATH_PREC, math)?;
        if let Some(axis) = axis {
            pw.i64(Attr::CUDNN_ATTR_POINTWISE_AXIS, axis)?;
        }
        let pw = pw.finalize().with_context(what)?;
        let op = Descriptor::new(Kind::CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, &pw)?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_POINTWISE_XDESC, self.tensor(x))?;
        if let Some(b) = b {
            op.descriptor(Attr::CUDNN_ATTR_OPERATION_POINTWISE_BDESC, self.tensor(b))?;
        }
        if let Some(t) = t {
            op.descriptor(Attr::CUDNN_ATTR_OPERATION_POINTWISE_TDESC, self.tensor(t))?;
        }
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_POINTWISE_YDESC, self.tensor(y))?;
        if self.pointwise_alphas {
            op.float(Attr::CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, 1.0)?;
            if b.is_some() {
                op.float(Attr::CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, 1.0)?;
            }
        }
        let op = op.finalize().with_context(what)?;
        self.operators.push(pw);
        self.operations.push(op);
        Ok(())
    }

    /// `c = a · b` over the last two dimensions, batched over the first two, fp32 accumulation.
    pub fn matmul(&mut self, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        let what = || format!("matmul {} x {} -> {}", a.uid, b.uid, c.uid);
        let mm = Descriptor::new(Kind::CUDNN_BACKEND_MATMUL_DESCRIPTOR)?;
        mm.data_type(Attr::CUDNN_ATTR_MATMUL_COMP_TYPE, DataType::CUDNN_DATA_FLOAT)?;
        let mm = mm.finalize().with_context(what)?;
        let op = Descriptor::new(Kind::CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR)?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_MATMUL_ADESC, self.tensor(a))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_MATMUL_BDESC, self.tensor(b))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_MATMUL_CDESC, self.tensor(c))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_MATMUL_DESC, &mm)?;
        let op = op.finalize().with_context(what)?;
        self.operators.push(mm);
        self.operations.push(op);
        Ok(())
    }

    /// `y = reduce(x)` over the dimensions where `y` is 1, in fp32.
    pub fn reduction(&mut self, operator: sys::cudnnReduceTensorOp_t, x: Tensor, y: Tensor) -> Result<()> {
        let what = || format!("reduction {operator:?} {} -> {}", x.uid, y.uid);
        let red = Descriptor::new(Kind::CUDNN_BACKEND_REDUCTION_DESCRIPTOR)?;
        red.reduction_operator(operator)?;
        red.data_type(Attr::CUDNN_ATTR_REDUCTION_COMP_TYPE, DataType::CUDNN_DATA_FLOAT)?;
        let red = red.finalize().with_context(what)?;
        let op = Descriptor::new(Kind::CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR)?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_REDUCTION_XDESC, self.tensor(x))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_REDUCTION_YDESC, self.tensor(y))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_REDUCTION_DESC, &red)?;
        let op = op.finalize().with_context(what)?;
        self.operators.push(red);
        self.operations.push(op);
        Ok(())
    }

    /// `y = x` viewed with other dimensions/strides (a transpose of the same memory).
    pub fn reshape(&mut self, x: Tensor, y: Tensor) -> Result<()> {
        let what = || format!("reshape {} -> {}", x.uid, y.uid);
        let op = Descriptor::new(Kind::CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR)?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_RESHAPE_XDESC, self.tensor(x))?;
        op.descriptor(Attr::CUDNN_ATTR_OPERATION_RESHAPE_YDESC, self.tensor(y))?;
        let op = op.finalize().with_context(what)?;
        self.operations.push(op);
        Ok(())
    }

    /// The operation graph, the heuristics' engine configurations (mode A, then the fallback
    /// list) and the first one cuDNN can build a plan from. With `deterministic`, configurations
    /// whose engine notes nondeterminism are skipped.
    pub fn plan(self, handle: sys::cudnnHandle_t, deterministic: bool, name: &str) -> Result<Plan> {
        let op_graph = Descriptor::new(Kind::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        op_graph.handle(Attr::CUDNN_ATTR_OPERATIONGRAPH_HANDLE, handle)?;
        let ops: Vec<&Descriptor> = self.operations.iter().collect();
        op_graph.descriptors(Attr::CUDNN_ATTR_OPERATIONGRAPH_OPS, &ops)?;
        let op_graph = op_graph.finalize().with_context(|| format!("the {name} graph ({} operations)", ops.len()))?;
        let mut tried = Vec::new();
        for mode in [sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A, sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_FALLBACK] {
            let heuristics = Descriptor::new(Kind::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
            heuristics.descriptor(Attr::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &op_graph)?;
            heuristics.heuristic_mode(mode)?;
            let heuristics = match heuristics.finalize() {
                Ok(h) => h,
                Err(e) => {
                    tried.push(format!("heuristics {mode:?}: {e:#}"));
                    continue;
                }
            };
            let configs = heuristics.get_descriptors(Attr::CUDNN_ATTR_ENGINEHEUR_RESULTS, Kind::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, 32)?;
            for (i, config) in configs.iter().enumerate() {
                let engine = config.get_descriptors(Attr::CUDNN_ATTR_ENGINECFG_ENGINE, Kind::CUDNN_BACKEND_ENGINE_DESCRIPTOR, 1)?;
                let index = engine.first().map(|e| e.get_i64(Attr::CUDNN_ATTR_ENGINE_GLOBAL_INDEX).unwrap_or(-1)).unwrap_or(-1);
                let notes = engine.first().map(|e| e.numerical_notes().unwrap_or_default()).unwrap_or_default();
                let nondeterministic = notes.contains(&sys::cudnnBackendNumericalNote_t::CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC);
                if deterministic && nondeterministic {
                    tried.push(format!("{mode:?} #{i} engine {index}: nondeterministic"));
                    continue;
                }
                let plan = Descriptor::new(Kind::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
                plan.handle(Attr::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, handle)?;
                plan.descriptor(Attr::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config)?;
                match plan.finalize() {
                    Ok(plan) => {
                        let workspace_bytes = plan.get_i64(Attr::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)?.max(0) as usize;
                        return Ok(Plan {
                            plan,
                            workspace_bytes,
                            nondeterministic,
                            engine_name: format!("engine {index} ({mode:?} #{i})"),
                            _graph: self,
                            _op_graph: op_graph,
                            _configs: configs,
                        });
                    }
                    Err(e) => tried.push(format!("{mode:?} #{i} engine {index}: {e:#}")),
                }
            }
        }
        bail!("cuDNN has no engine for the {name} graph; tried: {}", if tried.is_empty() { "none offered".into() } else { tried.join("; ") })
    }
}

impl Plan {
    /// Runs the plan on the handle's stream. `pointers` pairs each non-virtual uid with its
    /// device address (or, for by-value scalars, a host address).
    pub fn execute(&self, handle: sys::cudnnHandle_t, pointers: &[(i64, *mut c_void)], workspace: *mut c_void) -> Result<()> {
        let uids: Vec<i64> = pointers.iter().map(|p| p.0).collect();
        let addresses: Vec<*mut c_void> = pointers.iter().map(|p| p.1).collect();
        let pack = Descriptor::new(Kind::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
        pack.i64s(Attr::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, &uids)?;
        pack.pointers(Attr::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, &addresses)?;
        pack.pointers(Attr::CUDNN_ATTR_VARIANT_PACK_WORKSPACE, &[workspace])?;
        let pack = pack.finalize()?;
        let status = unsafe { sys::cudnnBackendExecute(handle, self.plan.raw(), pack.raw()) };
        super::descriptor::check(status, || format!("running {}", self.engine_name))
    }
}

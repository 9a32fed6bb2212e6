//! Matrix products through cuBLASLt: bf16 operands (or fp32 ones, for evaluation that must
//! match an fp32 reference), fp32 accumulation, fp32 output (with `beta = 1` the product is
//! added to the output, which is how gradients accumulate in fp32).
//! The plan of each shape (descriptors, layouts, the algorithm) is made once and reused. The
//! algorithm is the fastest of the heuristic's first [`CANDIDATES`] (`DSLLM_GEMM_CANDIDATES`), timed on the shape's first
//! call (with that call's operands) and kept on disk per GPU and cuBLASLt version
//! ([`TuningCache`]), so later runs skip the timing and pick the same algorithm (bit-identical
//! reruns); `DSLLM_GEMM_AUTOTUNE=verbose` also prints each timing, `=0` takes the heuristic's
//! first choice untimed, as does the default where there is no cache folder to keep choices in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

/// cuBLASLt's recommended workspace on Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;
/// Algorithms the heuristic proposes per shape, timed when autotuning (with eight, the fastest
/// was often the eighth: BENCHMARKS.md v11).
const CANDIDATES: usize = 16;
/// The most `DSLLM_GEMM_CANDIDATES` may ask for.
const MAX_CANDIDATES: usize = 64;
/// Timed runs per candidate (after one untimed run).
const TUNING_RUNS: usize = 5;

/// The element types of A and B, and of C (fp32 unless said).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operands {
    /// bf16 on the tensor cores (training).
    #[default]
    Bf16,
    /// bf16 A and B, and a bf16 C (fp32 accumulation, rounded once): the output layer's logits.
    Bf16WithBf16Output,
    /// Full fp32 (`CUBLAS_COMPUTE_32F`, no TF32): about 30x slower, exact to fp32 rounding.
    F32,
}

impl Operands {
    pub fn bytes(self) -> u64 {
        match self {
            Self::Bf16 | Self::Bf16WithBf16Output => 2,
            Self::F32 => 4,
        }
    }
}

/// A column-major product `C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmShape {
    pub operands: Operands,
    pub transa: bool,
    pub transb: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
}

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    /// The heuristic's proposals, best first by its estimate.
    candidates: Vec<sys::cublasLtMatmulAlgo_t>,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            for layout in self.layouts {
                let _ = lt::destroy_matrix_layout(layout);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// How each shape's algorithm is chosen (`DSLLM_GEMM_AUTOTUNE`). On by default: +4.2% ds-160m,
/// +1.4% ds-1b steps on the H100 (BENCHMARKS.md v13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autotune {
    /// `0`: the heuristic's first proposal, untimed.
    Off,
    /// Default (`1`): the fastest proposal, timed once per shape and kept in the [`TuningCache`].
    On,
    /// `verbose`: as `On`, printing every timing.
    Verbose,
}

impl Autotune {
    /// `DSLLM_GEMM_AUTOTUNE`: unset means on where choices can be kept on disk (`cache`), so
    /// that reruns choose the same algorithms; explicitly on times even without a cache.
    pub fn from_env(cache: bool) -> Result<Self> {
        match std::env::var("DSLLM_GEMM_AUTOTUNE").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Err(_) | Ok("") => Ok(if cache { Self::On } else { Self::Off }),
            Ok("verbose") => Ok(Self::Verbose),
            Ok(_) => Ok(if crate::backend::env_switch("DSLLM_GEMM_AUTOTUNE", true)? { Self::On } else { Self::Off }),
        }
    }
}

/// The chosen algorithm of every tuned shape, in a text file a line per shape
/// (`gemm-<key>.tune` beside the PTX cache, the key a hash of the GPU's name, its compute
/// capability and the cuBLASLt version: an algorithm is only valid for the library that made
/// it). cuBLASLt documents its algorithm struct as serialisable for reuse with the same
/// library version; each loaded one is still checked (`cublasLtMatmulAlgoCheck`) before use.
#[derive(Debug, Default)]
pub struct TuningCache {
    path: Option<PathBuf>,
    chosen: HashMap<String, [u64; 8]>,
}

impl TuningCache {
    /// The cache of this GPU and library, read from `dir` (`None`: kept in memory only).
    pub fn open(dir: Option<PathBuf>, device: &str) -> Self {
        let version = unsafe { sys::cublasLtGetVersion() };
        let key = crate::kernels::fnv1a(format!("{device}\0{version}").as_bytes());
        let path = dir.map(|d| d.join(format!("gemm-{key:016x}.tune")));
        let chosen = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).map(|text| Self::parse(&text)).unwrap_or_default();
        Self { path, chosen }
    }

    /// The canonical text of a shape run on `sms` SMs (0: all): the line's key. A limited SM
    /// count rides on the first field (`Bf16@120`), so lines written before it still parse.
    fn key(shape: &GemmShape, sms: u32) -> String {
        let GemmShape { operands, transa, transb, m, n, k, lda, ldb, ldc } = *shape;
        let on = if sms == 0 { String::new() } else { format!("@{sms}") };
        format!("{operands:?}{on} {} {} {m} {n} {k} {lda} {ldb} {ldc}", transa as u8, transb as u8)
    }

    /// Lines of `key algo0 … algo7` (hex); a malformed line is skipped (it only costs a retune).
    fn parse(text: &str) -> HashMap<String, [u64; 8]> {
        let mut chosen = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 17 {
                continue;
            }
            let mut algo = [0u64; 8];
            if fields[9..].iter().zip(&mut algo).all(|(field, slot)| u64::from_str_radix(field, 16).map(|v| *slot = v).is_ok()) {
                chosen.insert(fields[..9].join(" "), algo);
            }
        }
        chosen
    }

    fn format(chosen: &HashMap<String, [u64; 8]>) -> String {
        let mut lines: Vec<String> =
            chosen.iter().map(|(key, algo)| format!("{key} {}", algo.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>().join(" "))).collect();
        lines.sort();
        lines.iter().map(|l| l.clone() + "\n").collect()
    }

    fn get(&self, shape: &GemmShape, sms: u32) -> Option<sys::cublasLtMatmulAlgo_t> {
        self.chosen.get(&Self::key(shape, sms)).map(|&data| sys::cublasLtMatmulAlgo_t { data })
    }

    /// Records a choice and rewrites the file, merged with what other processes added since
    /// (under a lock file, written to a temporary file renamed into place). The first choice
    /// of a shape to reach the file wins: another process's (data-parallel ranks tune at once)
    /// replaces ours and is returned, so every process, and every later run, uses the same
    /// algorithm. A cache that cannot be written only costs the timing next run.
    fn insert(&mut self, shape: &GemmShape, sms: u32, algo: sys::cublasLtMatmulAlgo_t) -> sys::cublasLtMatmulAlgo_t {
        let key = Self::key(shape, sms);
        self.chosen.insert(key.clone(), algo.data);
        let Some(path) = self.path.clone() else { return algo };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Held until the end of this function; a lock that cannot be taken only risks a race.
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.with_extension("lock"));
        let _locked = lock.as_ref().ok().filter(|file| file.lock().is_ok());
        let on_disk = std::fs::read_to_string(&path).map(|text| Self::parse(&text)).unwrap_or_default();
        for (k, v) in &on_disk {
            self.chosen.insert(k.clone(), *v);
        }
        let mut merged = on_disk;
        merged.extend(self.chosen.iter().map(|(k, v)| (k.clone(), *v)));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, Self::format(&merged)).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        sys::cublasLtMatmulAlgo_t { data: self.chosen[&key] }
    }
}

/// A cuBLASLt handle, its workspace and the plans made so far.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// Plans by shape and SM target.
    plans: RefCell<HashMap<(GemmShape, u32), Plan>>,
    /// SMs the products may use (0: all): fewer leave room for another stream's kernels
    /// (cuBLASLt's `SM_COUNT_TARGET`; see `CudaBackend::optimizer_sms`).
    sm_target: std::cell::Cell<u32>,
    /// Proposals asked of the heuristic per shape (`DSLLM_GEMM_CANDIDATES`, default [`CANDIDATES`]).
    candidates: usize,
    autotune: Autotune,
    tuning: RefCell<TuningCache>,
    /// Whether this process has said it is timing new shapes.
    announced: std::cell::Cell<bool>,
}

impl Gemm {
    /// A handle on `stream`; `device` names the GPU for the tuning cache.
    pub fn new(stream: Arc<CudaStream>, device: &str) -> Result<Self> {
        let handle = lt::create_handle().map_err(|e| anyhow!("cuBLASLt handle: {e:?}"))?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES)?;
        let cache = crate::kernels::cache_dir();
        let autotune = Autotune::from_env(cache.is_some())?;
        let candidates = crate::backend::env_number("DSLLM_GEMM_CANDIDATES", 1..=MAX_CANDIDATES, "cuBLASLt algorithms to time a shape")?.unwrap_or(CANDIDATES);
        // Choices among another number of candidates are kept in a file of their own.
        let cache_name = if candidates == CANDIDATES { device.to_string() } else { format!("{device}\0{candidates} candidates") };
        let tuning = match autotune {
            Autotune::Off => TuningCache::default(),
            _ => TuningCache::open(cache, &cache_name),
        };
        Ok(Self { handle, workspace, stream, plans: RefCell::new(HashMap::new()), sm_target: Default::default(), candidates, autotune, tuning: RefCell::new(tuning), announced: Default::default() })
    }

    /// Whether `algo` can run `plan` here (a cached choice from another library build cannot).
    fn usable(&self, plan: &Plan, algo: &sys::cublasLtMatmulAlgo_t) -> bool {
        let mut result: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        let status = unsafe { sys::cublasLtMatmulAlgoCheck(self.handle, plan.desc, plan.layouts[0], plan.layouts[1], plan.layouts[2], plan.layouts[2], algo, &mut result) };
        status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS && result.workspaceSize <= WORKSPACE_BYTES
    }

    /// The SMs later products may use (0: all).
    pub fn set_sm_target(&self, sms: u32) {
        self.sm_target.set(sms);
    }

    fn plan(&self, shape: GemmShape, sms: u32) -> Result<Plan> {
        let f32t = sys::cudaDataType_t::CUDA_R_32F;
        let (operand, output) = match shape.operands {
            Operands::Bf16 => (sys::cudaDataType_t::CUDA_R_16BF, f32t),
            Operands::Bf16WithBf16Output => (sys::cudaDataType_t::CUDA_R_16BF, sys::cudaDataType_t::CUDA_R_16BF),
            Operands::F32 => (f32t, f32t),
        };
        let (a_rows, a_cols) = if shape.transa { (shape.k, shape.m) } else { (shape.m, shape.k) };
        let (b_rows, b_cols) = if shape.transb { (shape.n, shape.k) } else { (shape.k, shape.n) };
        let err = |what: &str, e: lt::CublasError| anyhow!("cuBLASLt {what} for {shape:?}: {e:?}");
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t).map_err(|e| err("descriptor", e))?;
        let set = |attr, value: i32| unsafe {
            lt::set_matmul_desc_attribute(desc, attr, (&value) as *const i32 as *const c_void, std::mem::size_of::<i32>())
        };
        set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, shape.transa as i32).map_err(|e| err("transa", e))?;
        set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, shape.transb as i32).map_err(|e| err("transb", e))?;
        if sms > 0 {
            set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, sms as i32).map_err(|e| err("SM count target", e))?;
        }
        let layouts = [
            lt::create_matrix_layout(operand, a_rows, a_cols, shape.lda).map_err(|e| err("layout A", e))?,
            lt::create_matrix_layout(operand, b_rows, b_cols, shape.ldb).map_err(|e| err("layout B", e))?,
            lt::create_matrix_layout(output, shape.m, shape.n, shape.ldc).map_err(|e| err("layout C", e))?,
        ];
        let pref = lt::create_matmul_pref().map_err(|e| err("preference", e))?;
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&WORKSPACE_BYTES) as *const usize as *const c_void,
                std::mem::size_of::<usize>(),
            )
            .map_err(|e| err("workspace preference", e))?;
        }
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> = vec![unsafe { std::mem::zeroed() }; self.candidates];
        let mut count = 0;
        let status = unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                desc,
                layouts[0],
                layouts[1],
                layouts[2],
                layouts[2],
                pref,
                self.candidates as i32,
                results.as_mut_ptr(),
                &mut count,
            )
        };
        unsafe {
            let _ = lt::destroy_matmul_pref(pref);
        }
        let candidates: Vec<_> = results[..count.max(0) as usize]
            .iter()
            .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|r| r.algo)
            .collect();
        if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS || candidates.is_empty() {
            return Err(anyhow!("cuBLASLt algorithm heuristic for {shape:?}: {status:?}, {} algorithms", candidates.len()));
        }
        Ok(Plan { desc, layouts, algo: candidates[0], candidates })
    }

    /// One matmul with `algo` on the stream.
    #[allow(clippy::too_many_arguments)]
    unsafe fn launch(&self, plan: &Plan, algo: &sys::cublasLtMatmulAlgo_t, a: u64, b: u64, c: u64, d: u64, alpha: f32, beta: f32) -> Result<(), lt::CublasError> {
        let (workspace, _sync) = self.workspace.device_ptr(&self.stream);
        lt::matmul(
            self.handle,
            plan.desc,
            (&alpha) as *const f32 as *const c_void,
            (&beta) as *const f32 as *const c_void,
            a as *const c_void,
            plan.layouts[0],
            b as *const c_void,
            plan.layouts[1],
            c as *const c_void,
            plan.layouts[2],
            d as *mut c_void,
            plan.layouts[2],
            algo,
            workspace as *mut c_void,
            WORKSPACE_BYTES,
            self.stream.cu_stream() as sys::cudaStream_t,
        )
    }

    /// The fastest candidate on these operands. The timing runs write D, which the real call
    /// then overwrites; where the product is added into C = D it writes a scratch matrix
    /// instead, so the accumulated values are untouched. Waits for the GPU (first call only).
    #[allow(clippy::too_many_arguments)]
    unsafe fn fastest(&self, plan: &Plan, shape: GemmShape, a: u64, b: u64, c: u64, d: u64, alpha: f32, beta: f32) -> Result<sys::cublasLtMatmulAlgo_t> {
        let scratch = if beta != 0.0 && c == d {
            let bytes = shape.ldc as usize * shape.n as usize * if shape.operands == Operands::Bf16WithBf16Output { 2 } else { 4 };
            Some(self.stream.alloc_zeros::<u8>(bytes)?)
        } else {
            None
        };
        let (c, d) = match &scratch {
            Some(buffer) => {
                let (at, _sync) = buffer.device_ptr(&self.stream);
                (at, at)
            }
            None => (c, d),
        };
        // Nothing else running while timing (another stream's work, e.g. the optimizer stream's,
        // would skew the choice that is then kept on disk).
        self.stream.context().synchronize()?;
        let mut times = Vec::new();
        for (index, algo) in plan.candidates.iter().enumerate() {
            // A candidate the library proposes but cannot run here is skipped.
            if self.launch(plan, algo, a, b, c, d, alpha, beta).is_err() {
                continue;
            }
            let start = self.stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
            for _ in 0..TUNING_RUNS {
                self.launch(plan, algo, a, b, c, d, alpha, beta).map_err(|e| anyhow!("cuBLASLt matmul {shape:?}: {e:?}"))?;
            }
            let end = self.stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
            self.stream.synchronize()?;
            times.push((start.elapsed_ms(&end)? / TUNING_RUNS as f32, index));
        }
        drop(scratch);
        let &(best_ms, best) = times.iter().min_by(|x, y| x.0.total_cmp(&y.0)).ok_or_else(|| anyhow!("no cuBLASLt algorithm ran {shape:?}"))?;
        let first_ms = times.iter().find(|t| t.1 == 0).map_or(f32::NAN, |t| t.0);
        if self.autotune != Autotune::Verbose {
            return Ok(plan.candidates[best]);
        }
        eprintln!(
            "dsllm-cuda: GEMM autotune m={} n={} k={} {:?}{}{}: heuristic's first {first_ms:.4} ms, chosen #{best} of {} {best_ms:.4} ms",
            shape.m,
            shape.n,
            shape.k,
            shape.operands,
            if shape.transa { " Aᵀ" } else { "" },
            if shape.transb { " Bᵀ" } else { "" },
            times.len()
        );
        Ok(plan.candidates[best])
    }

    /// `C = alpha · op(A) · op(B) + beta · C` with A, B of `shape.operands` and C f32
    /// (column-major device pointers).
    ///
    /// # Safety
    /// The pointers must hold matrices of the sizes `shape` says.
    pub unsafe fn run(&self, shape: GemmShape, a: u64, b: u64, c: u64, alpha: f32, beta: f32) -> Result<()> {
        self.run_to(shape, a, b, c, c, alpha, beta)
    }

    /// `D = alpha · op(A) · op(B) + beta · C` with D a matrix of C's type and layout at another
    /// address: a residual connection added in the product's epilogue.
    ///
    /// # Safety
    /// As [`Gemm::run`], for C and D both.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_to(&self, shape: GemmShape, a: u64, b: u64, c: u64, d: u64, alpha: f32, beta: f32) -> Result<()> {
        let mut plans = self.plans.borrow_mut();
        let sms = self.sm_target.get();
        let plan = match plans.entry((shape, sms)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let mut plan = self.plan(shape, sms)?;
                let cached = self.tuning.borrow().get(&shape, sms).filter(|algo| self.usable(&plan, algo));
                if let Some(algo) = cached {
                    plan.algo = algo;
                } else if self.autotune != Autotune::Off && plan.candidates.len() > 1 {
                    if !self.announced.replace(true) {
                        let path = self.tuning.borrow().path.clone();
                        let kept = path.map_or("kept for this run only (no cache folder)".into(), |p| format!("kept in {}", p.display()));
                        eprintln!("dsllm-cuda: timing cuBLASLt's algorithms for new GEMM shapes (DSLLM_GEMM_AUTOTUNE; once per GPU and shape; {kept})");
                    }
                    // Timing that fails leaves the heuristic's choice (said once per shape).
                    match self.fastest(&plan, shape, a, b, c, d, alpha, beta) {
                        Ok(algo) => {
                            let agreed = self.tuning.borrow_mut().insert(&shape, sms, algo);
                            plan.algo = if self.usable(&plan, &agreed) { agreed } else { algo };
                        }
                        Err(e) => eprintln!("dsllm-cuda: GEMM autotune of {shape:?} failed ({e:#}); using the heuristic's first algorithm"),
                    }
                }
                entry.insert(plan)
            }
        };
        self.launch(plan, &plan.algo, a, b, c, d, alpha, beta).map_err(|e| anyhow!("cuBLASLt matmul {shape:?}: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_cache_round_trips_and_skips_bad_lines() {
        let shape = GemmShape { operands: Operands::Bf16WithBf16Output, transa: true, transb: false, m: 102400, n: 8192, k: 2048, lda: 2048, ldb: 2048, ldc: 102400 };
        let other = GemmShape { operands: Operands::F32, transb: true, ..shape };
        let mut chosen = HashMap::new();
        chosen.insert(TuningCache::key(&shape, 0), [1, 2, 3, 4, 5, 6, 7, u64::MAX]);
        chosen.insert(TuningCache::key(&other, 120), [0; 8]);
        let text = TuningCache::format(&chosen) + "Bf16 0 0 1 2 3\nnot a line at all\nBf16 0 0 1 1 1 1 1 1 0 0 0 0 0 0 0 zz\n";
        let parsed = TuningCache::parse(&text);
        assert_eq!(parsed, chosen);
        let cache = TuningCache { path: None, chosen: parsed };
        assert_eq!(cache.get(&shape, 0).map(|a| a.data), Some([1, 2, 3, 4, 5, 6, 7, u64::MAX]));
        assert_eq!(cache.get(&GemmShape { m: 1, ..shape }, 0).map(|a| a.data), None);
        // An SM-limited plan is a shape of its own.
        assert_eq!(cache.get(&other, 120).map(|a| a.data), Some([0; 8]));
        assert_eq!(cache.get(&other, 0).map(|a| a.data), None);
    }

    #[test]
    fn tuning_cache_merges_with_the_file_on_disk() {
        let dir = std::env::temp_dir().join(format!("dsllm-tune-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("gemm-test.tune");
        let a = GemmShape { operands: Operands::Bf16, transa: false, transb: true, m: 64, n: 128, k: 256, lda: 64, ldb: 128, ldc: 64 };
        let b = GemmShape { m: 32, ..a };
        // Two processes, each tuning one shape: the file ends with both.
        let mut first = TuningCache { path: Some(path.clone()), chosen: HashMap::new() };
        let mut second = TuningCache { path: Some(path.clone()), chosen: HashMap::new() };
        first.insert(&a, 0, sys::cublasLtMatmulAlgo_t { data: [7; 8] });
        second.insert(&b, 0, sys::cublasLtMatmulAlgo_t { data: [9; 8] });
        let on_disk = TuningCache::parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(on_disk.len(), 2);
        assert_eq!(on_disk[&TuningCache::key(&a, 0)], [7; 8]);
        assert_eq!(on_disk[&TuningCache::key(&b, 0)], [9; 8]);
        // The second process also timed `a` (as data-parallel ranks do): the first choice on
        // disk wins, is returned for this process to use, and stays on disk.
        let agreed = second.insert(&a, 0, sys::cublasLtMatmulAlgo_t { data: [5; 8] });
        assert_eq!(agreed.data, [7; 8]);
        assert_eq!(second.get(&a, 0).unwrap().data, [7; 8]);
        assert_eq!(TuningCache::parse(&std::fs::read_to_string(&path).unwrap())[&TuningCache::key(&a, 0)], [7; 8]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.borrow_mut().clear();
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

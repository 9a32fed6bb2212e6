//! Attention kernels alone, on the GPU benchmark's shapes: each forward, dQ and dK/dV variant
//! against the flash-attention-2 kernels (relative error; NaN fails) and its time (median of
//! 20 launches, CUDA events), TFLOP/s on the causal FLOPs. For choosing kernels on the device:
//! `attention_bench [variant-substring]`. Then cuDNN's fused attention (`cudnn`, and
//! `cudnn-det` without atomics) on the same inputs, and the cuDNN plans it built.

use std::sync::Arc;

use anyhow::{Context, Result};
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use half::bf16;
use rand::{RngExt, SeedableRng};

/// The forward kernels' bf16 output pointer: null, so they write fp32.
const NO_BF16_OUTPUT: u64 = 0;

struct Shape {
    name: &'static str,
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

const SHAPES: &[Shape] = &[
    Shape { name: "ds-160m", batch: 8, seq: 2048, heads: 12, kv_heads: 12, head_dim: 64 },
    Shape { name: "ds-1b", batch: 4, seq: 2048, heads: 16, kv_heads: 16, head_dim: 128 },
    Shape { name: "ds-1b-gqa", batch: 4, seq: 2048, heads: 16, kv_heads: 4, head_dim: 128 },
    Shape { name: "odd", batch: 2, seq: 333, heads: 4, kv_heads: 2, head_dim: 64 },
    Shape { name: "odd128", batch: 2, seq: 300, heads: 4, kv_heads: 2, head_dim: 128 },
];

/// Which kernel: the name, rows a block (the grid's x divides the sequence by it), threads,
/// shared bytes.
struct Variant {
    kind: &'static str,
    name: String,
    rows: usize,
    threads: u32,
    shared: usize,
}

fn variants(hd: usize) -> Vec<Variant> {
    let row = (hd + 8) * 2;
    let tile = |rows: usize| rows * hd * 2;
    let fa_step = if hd == 64 { 64 } else { 32 };
    let mut v = vec![
        Variant { kind: "fwd", name: format!("attention_forward_fa{hd}"), rows: 64, threads: 128, shared: 320 * row },
        Variant { kind: "dq", name: format!("attention_backward_dq_fa{hd}"), rows: 64, threads: 128, shared: (128 + 4 * fa_step) * row },
        Variant { kind: "dkdv", name: format!("attention_backward_dkdv_fa{hd}"), rows: 64, threads: 128, shared: (128 + 4 * fa_step) * row + 4 * fa_step * 4 },
        Variant { kind: "fwd", name: format!("attention_forward_wg{hd}"), rows: 64, threads: 128, shared: tile(64 + 4 * 64) },
        Variant { kind: "fwd", name: format!("attention_forward_wg{hd}_w2"), rows: 128, threads: 256, shared: tile(128 + 4 * 64) },
        Variant { kind: "dq", name: format!("attention_backward_dq_wg{hd}"), rows: 64, threads: 128, shared: tile(128 + 4 * 64) },
        Variant { kind: "dkdv", name: format!("attention_backward_dkdv_wg{hd}"), rows: 64, threads: 128, shared: tile(128 + 4 * 64) + 4 * 64 * 4 },
    ];
    if hd == 64 {
        v.push(Variant { kind: "fwd", name: "attention_forward_wg64_bn128".into(), rows: 64, threads: 128, shared: tile(64 + 4 * 128) });
    } else {
        v.push(Variant { kind: "fwd", name: "attention_forward_wg128_bn32".into(), rows: 64, threads: 128, shared: tile(64 + 4 * 32) });
        v.push(Variant { kind: "dq", name: "attention_backward_dq_wg128_bn32".into(), rows: 64, threads: 128, shared: tile(128 + 4 * 32) });
        v.push(Variant { kind: "dkdv", name: "attention_backward_dkdv_wg128_bm32".into(), rows: 64, threads: 128, shared: tile(128 + 4 * 32) + 4 * 32 * 4 });
    }
    // More candidates without a rebuild (with DSLLM_KERNELS_DIR): ATTENTION_VARIANTS=
    // "kind:name:rows:threads:shared,...", `{hd}` in the name stands for the head size and
    // shared is in units of head_dim-wide bf16 rows, plus bytes after a `+`.
    for spec in std::env::var("ATTENTION_VARIANTS").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = spec.split(':').collect();
        let [kind, name, rows, threads, shared] = parts[..] else { panic!("ATTENTION_VARIANTS entry {spec:?}: want kind:name:rows:threads:shared") };
        let kind: &'static str = match kind { "fwd" => "fwd", "dq" => "dq", _ => "dkdv" };
        let (tiles, extra) = shared.split_once('+').unwrap_or((shared, "0"));
        let shared = tile(tiles.parse().expect("shared rows")) + extra.parse::<usize>().expect("shared bytes");
        v.push(Variant { kind, name: name.replace("{hd}", &hd.to_string()), rows: rows.parse().expect("rows"), threads: threads.parse().expect("threads"), shared });
    }
    v
}

fn random_bf16(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<bf16>) {
    let f: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let b = f.iter().map(|&x| bf16::from_f32(x)).collect();
    (f, b)
}

fn rel_err(x: &[f32], reference: &[f32]) -> f64 {
    if x.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in x.iter().zip(reference) {
        num += ((a - b) as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

struct Bufs {
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    d_out: CudaSlice<bf16>,
    d_out_f32: CudaSlice<f32>,
    out: CudaSlice<f32>,
    lse: CudaSlice<f32>,
    /// The candidates' forward outputs (the backward kernels read the reference's).
    out_candidate: CudaSlice<f32>,
    lse_candidate: CudaSlice<f32>,
    row_dot: CudaSlice<f32>,
    d_q: CudaSlice<f32>,
    d_k: CudaSlice<f32>,
    d_v: CudaSlice<f32>,
    k_shares: CudaSlice<f32>,
    v_shares: CudaSlice<f32>,
}

fn time_ms(stream: &Arc<CudaStream>, reps: usize, mut launch: impl FnMut()) -> Result<f64> {
    launch();
    let mut times = Vec::new();
    for _ in 0..reps {
        let a = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        launch();
        let b = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        b.synchronize()?;
        times.push(a.elapsed_ms(&b)? as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

fn main() -> Result<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if let Some(reason) = dsllm_cuda::gpu_unavailable_reason() {
        println!("no attention benchmark: {reason}");
        return Ok(());
    }
    let context = CudaContext::new(0)?;
    let stream = context.default_stream();
    let (major, minor) = context.compute_capability()?;
    anyhow::ensure!((major, minor) == (9, 0), "the wgmma kernels need compute capability 9.0, not {major}.{minor}");
    let ptx = dsllm_cuda::kernels::cached_ptx("sm_90a")?;
    let module: Arc<CudaModule> = context.load_module(ptx).context("cannot load the kernels")?;
    let load = |name: &str, shared: usize| -> Result<CudaFunction> {
        let f = module.load_function(name).with_context(|| format!("no kernel {name}"))?;
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)?;
        Ok(f)
    };
    let row_dot_kernel = module.load_function("attention_row_dot")?;
    let sum_groups = module.load_function("attention_sum_head_groups")?;
    // cuDNN's fused attention, fast (atomics) and deterministic, where cuDNN loads.
    let cudnn = match dsllm_cuda::cudnn_attention::cudnn_unavailable_reason() {
        Some(reason) => {
            println!("no cuDNN attention: {reason}");
            None
        }
        None => Some(dsllm_cuda::cudnn_attention::CudnnAttention::new(stream.clone())?),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for shape in SHAPES {
        let Shape { name, batch, seq, heads, kv_heads, head_dim: hd } = *shape;
        let (nq, nkv) = (batch * seq * heads * hd, batch * seq * kv_heads * hd);
        let (_, qh) = random_bf16(&mut rng, nq);
        let (_, kh) = random_bf16(&mut rng, nkv);
        let (_, vh) = random_bf16(&mut rng, nkv);
        let (dof, doh) = random_bf16(&mut rng, nq);
        let dof: Vec<f32> = dof.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        let mut b = Bufs {
            q: stream.clone_htod(&qh)?,
            k: stream.clone_htod(&kh)?,
            v: stream.clone_htod(&vh)?,
            d_out: stream.clone_htod(&doh)?,
            d_out_f32: stream.clone_htod(&dof)?,
            out: stream.alloc_zeros(nq)?,
            lse: stream.alloc_zeros(batch * seq * heads)?,
            out_candidate: stream.alloc_zeros(nq)?,
            lse_candidate: stream.alloc_zeros(batch * seq * heads)?,
            row_dot: stream.alloc_zeros(batch * seq * heads)?,
            d_q: stream.alloc_zeros(nq)?,
            d_k: stream.alloc_zeros(nkv)?,
            d_v: stream.alloc_zeros(nkv)?,
            k_shares: stream.alloc_zeros(nq)?,
            v_shares: stream.alloc_zeros(nq)?,
        };
        let (seq32, h32, kv32, hd32) = (seq as i32, heads as i32, kv_heads as i32, hd as i32);
        let scale = 1.0 / (hd as f32).sqrt();
        // Causal FLOPs of one product (2 · T² / 2 · d per head and sequence).
        let product = 2.0 * (seq * seq) as f64 / 2.0 * hd as f64 * (batch * heads) as f64;
        let all = variants(hd);
        let mut reference: Vec<(&str, Vec<Vec<f32>>)> = Vec::new();
        for variant in &all {
            let is_reference = variant.name.contains("_fa");
            if !is_reference && !variant.name.contains(&filter) {
                continue;
            }
            let f = match load(&variant.name, variant.shared) {
                Ok(f) => f,
                Err(e) => {
                    println!("{name:10} skip {}: {e:#}", variant.name);
                    continue;
                }
            };
            let config = LaunchConfig {
                grid_dim: (seq.div_ceil(variant.rows) as u32, heads as u32, batch as u32),
                block_dim: (variant.threads, 1, 1),
                shared_mem_bytes: variant.shared as u32,
            };
            let split = if kv_heads == heads { 0i32 } else { 1 };
            let (ms, outputs, flops) = match variant.kind {
                "fwd" => {
                    let (out, lse) = if is_reference { (&mut b.out, &mut b.lse) } else { (&mut b.out_candidate, &mut b.lse_candidate) };
                    let ms = time_ms(&stream, 20, || {
                        let mut l = stream.launch_builder(&f);
                        l.arg(&mut *out).arg(&mut *lse).arg(&b.q).arg(&b.k).arg(&b.v).arg(&seq32).arg(&h32).arg(&kv32).arg(&scale).arg(&NO_BF16_OUTPUT);
                        unsafe { l.launch(config) }.expect("launch");
                    })?;
                    let outputs = vec![stream.clone_dtoh(&*out)?, stream.clone_dtoh(&*lse)?];
                    if is_reference {
                        // D = rowsum(dO ∘ O) for the backward kernels, from the reference output.
                        let rows = (batch * seq * heads) as u64;
                        let threads = batch * seq * heads * 32;
                        let cfg = LaunchConfig { grid_dim: (threads.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                        let mut l = stream.launch_builder(&row_dot_kernel);
                        l.arg(&mut b.row_dot).arg(&b.d_out_f32).arg(&b.out).arg(&rows).arg(&hd32);
                        unsafe { l.launch(cfg) }?;
                    }
                    (ms, outputs, 2.0 * product)
                }
                "dq" => {
                    let ms = time_ms(&stream, 20, || {
                        let mut l = stream.launch_builder(&f);
                        l.arg(&mut b.d_q).arg(&b.lse).arg(&b.row_dot).arg(&b.q).arg(&b.k).arg(&b.v).arg(&b.d_out);
                        l.arg(&seq32).arg(&h32).arg(&kv32).arg(&scale);
                        unsafe { l.launch(config) }.expect("launch");
                    })?;
                    (ms, vec![stream.clone_dtoh(&b.d_q)?], 3.0 * product)
                }
                _ => {
                    let config = LaunchConfig { grid_dim: (seq.div_ceil(64) as u32, if split == 1 { heads } else { kv_heads } as u32, batch as u32), ..config };
                    let rows = (batch * seq) as u64;
                    let group = (heads / kv_heads) as i32;
                    let sum_cfg = LaunchConfig { grid_dim: (nkv.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                    let ms = time_ms(&stream, 20, || {
                        let mut l = stream.launch_builder(&f);
                        if split == 1 {
                            l.arg(&mut b.k_shares).arg(&mut b.v_shares);
                        } else {
                            l.arg(&mut b.d_k).arg(&mut b.d_v);
                        }
                        l.arg(&b.lse).arg(&b.row_dot).arg(&b.q).arg(&b.k).arg(&b.v).arg(&b.d_out);
                        l.arg(&seq32).arg(&h32).arg(&kv32).arg(&scale).arg(&split);
                        unsafe { l.launch(config) }.expect("launch");
                        if split == 1 {
                            let mut l = stream.launch_builder(&sum_groups);
                            l.arg(&mut b.d_k).arg(&b.k_shares).arg(&rows).arg(&kv32).arg(&group).arg(&hd32);
                            unsafe { l.launch(sum_cfg) }.expect("launch");
                            let mut l = stream.launch_builder(&sum_groups);
                            l.arg(&mut b.d_v).arg(&b.v_shares).arg(&rows).arg(&kv32).arg(&group).arg(&hd32);
                            unsafe { l.launch(sum_cfg) }.expect("launch");
                        }
                    })?;
                    (ms, vec![stream.clone_dtoh(&b.d_k)?, stream.clone_dtoh(&b.d_v)?], 4.0 * product)
                }
            };
            let tflops = flops / ms / 1e9;
            let errors = match reference.iter().find(|(k, _)| *k == variant.kind) {
                Some((_, r)) => outputs.iter().zip(r).map(|(x, r)| format!("{:.2e}", rel_err(x, r))).collect::<Vec<_>>().join(" "),
                None => "reference".to_string(),
            };
            println!("{name:10} {:5} {:40} {ms:8.3} ms {tflops:6.1} TFLOP/s  err {errors}", variant.kind, variant.name);
            if is_reference {
                reference.push((variant.kind, outputs));
            }
        }
        if let Some(cudnn) = &cudnn {
            let cudnn_shape = dsllm_cuda::cudnn_attention::Shape { batch, seq, heads, kv_heads, head_dim: hd };
            for deterministic in [false, true] {
                if let Err(e) = time_cudnn(&stream, cudnn, cudnn_shape, deterministic, &b, &reference, product, name) {
                    println!("{name:10} cudnn{} failed: {e:#}", if deterministic { " (deterministic)" } else { "" });
                }
            }
        }
    }
    if let Some(cudnn) = &cudnn {
        println!("cuDNN {} plans:", cudnn.version());
        for line in cudnn.log.borrow().iter() {
            println!("  {line}");
        }
    }
    Ok(())
}

/// cuDNN's fused attention on the same inputs: forward against the fa2 forward's O and lse,
/// backward (from cuDNN's own O and Stats) against fa2's dQ, dK, dV.
#[allow(clippy::too_many_arguments)]
fn time_cudnn(
    stream: &Arc<CudaStream>,
    cudnn: &dsllm_cuda::cudnn_attention::CudnnAttention,
    shape: dsllm_cuda::cudnn_attention::Shape,
    deterministic: bool,
    b: &Bufs,
    reference: &[(&str, Vec<Vec<f32>>)],
    product: f64,
    name: &str,
) -> Result<()> {
    let dsllm_cuda::cudnn_attention::Shape { batch, seq, heads, kv_heads, head_dim } = shape;
    let (nq, nkv, rows) = (batch * seq * heads * head_dim, batch * seq * kv_heads * head_dim, batch * seq * heads);
    let tag = if deterministic { "cudnn-det" } else { "cudnn" };
    let (o, stats) = (stream.alloc_zeros::<bf16>(nq)?, stream.alloc_zeros::<f32>(rows)?);
    let (d_q, d_k, d_v) = (stream.alloc_zeros::<bf16>(nq)?, stream.alloc_zeros::<bf16>(nkv)?, stream.alloc_zeros::<bf16>(nkv)?);
    let p = |s: &CudaSlice<bf16>| s.device_ptr(stream).0;
    let (q, k, v, d_out, o_ptr, stats_ptr) = (p(&b.q), p(&b.k), p(&b.v), p(&b.d_out), p(&o), stats.device_ptr(stream).0);
    let find = |kind: &str| reference.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
    let widen = |s: &CudaSlice<bf16>| -> Result<Vec<f32>> { Ok(stream.clone_dtoh(s)?.iter().map(|x| x.to_f32()).collect()) };
    if !deterministic && cudnn.has_plan(shape, false, false) {
        let ms = time_ms(stream, 20, || cudnn.forward(shape, o_ptr, stats_ptr, q, k, v).expect("cuDNN forward"))?;
        let errors = match find("fwd") {
            Some(r) => {
                // Stats is [batch, heads, seq]; the reference lse [batch, seq, heads].
                let stats_host = stream.clone_dtoh(&stats)?;
                let lse: Vec<f32> = (0..rows).map(|i| { let (bt, rest) = (i / (seq * heads), i % (seq * heads)); stats_host[bt * seq * heads + (rest % heads) * seq + rest / heads] }).collect();
                format!("{:.2e} {:.2e}", rel_err(&widen(&o)?, &r[0]), rel_err(&lse, &r[1]))
            }
            None => "no reference".into(),
        };
        println!("{name:10} fwd   {tag:40} {ms:8.3} ms {:6.1} TFLOP/s  err {errors}  [{}]", 2.0 * product / ms / 1e9, cudnn.describe(shape, false, false).unwrap_or_default());
    }
    if deterministic {
        // The deterministic backward reads the forward's outputs: run it once.
        cudnn.forward(shape, o_ptr, stats_ptr, q, k, v)?;
    }
    if cudnn.has_plan(shape, true, deterministic) {
        let ms = time_ms(stream, 20, || {
            cudnn.backward(shape, deterministic, p(&d_q), p(&d_k), p(&d_v), d_out, o_ptr, stats_ptr, q, k, v).expect("cuDNN backward")
        })?;
        let dq_err = find("dq").map(|r| rel_err(&widen(&d_q).unwrap_or_default(), &r[0]));
        let dkdv_err = find("dkdv").map(|r| (rel_err(&widen(&d_k).unwrap_or_default(), &r[0]), rel_err(&widen(&d_v).unwrap_or_default(), &r[1])));
        // Backward FLOPs as PyTorch counts them: five products (2.5x the forward).
        println!(
            "{name:10} bwd   {tag:40} {ms:8.3} ms {:6.1} TFLOP/s  err dq {:.2e} dk {:.2e} dv {:.2e}  [{}]",
            5.0 * product / ms / 1e9,
            dq_err.unwrap_or(f64::NAN),
            dkdv_err.map_or(f64::NAN, |e| e.0),
            dkdv_err.map_or(f64::NAN, |e| e.1),
            cudnn.describe(shape, true, deterministic).unwrap_or_default()
        );
    }
    Ok(())
}

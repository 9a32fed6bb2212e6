//! The collectives of data-parallel training between GPUs, through NCCL (cudarc's bindings,
//! loaded at run time like the other CUDA libraries).
//!
//! Gradients are reduce-scattered in place on a second stream, one NCCL group per bucket (a
//! block's nine tensors), ordered after the backward kernels that wrote them by an event, so
//! the reductions of later blocks run while the backward pass goes on through earlier ones;
//! [`Collective::finish_gradients`] makes the compute stream wait for them before the
//! optimizer. Updated weights are all-gathered in place the same way. Where a tensor's length
//! is not a multiple of the world size (never for the usual shapes), its shards are uneven
//! and the reduce-scatter becomes one in-place reduce to each shard's owner (the all-gather one
//! broadcast from each), grouped. Rendezvous and the few host-side values (loss sums, the
//! squared gradient norm, checkpoint gathers) go through [`TcpCollective`].

use std::ffi::c_void;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaEvent, CudaStream};
use cudarc::nccl::{result, sys};
use dsllm_model::dist::{shard_range, Collective, TcpCollective, TensorRef, World};

use crate::backend::{CudaBackend, GpuBuffer};

/// Why NCCL cannot be used here, or `None` when it can.
pub fn nccl_unavailable_reason() -> Option<String> {
    // SAFETY: only tries to load the shared library.
    if unsafe { sys::is_culib_present() } {
        None
    } else {
        Some(
            "no NCCL library (libnccl.so) on the loader path; pip's nvidia-nccl-cu12 ships libnccl.so.2: link it as libnccl.so in a folder on LD_LIBRARY_PATH"
                .into(),
        )
    }
}

/// One rank's NCCL communicator, its communication stream, and the TCP link used for the
/// rendezvous and host-side sums.
pub struct NcclCollective {
    world: World,
    comm: sys::ncclComm_t,
    comm_stream: Arc<CudaStream>,
    host: TcpCollective,
    /// Reduce-scatters started since the last [`Collective::finish_gradients`].
    pending: bool,
}

impl NcclCollective {
    /// Joins the run `world` describes, on `backend`'s GPU: TCP rendezvous at MASTER_ADDR /
    /// MASTER_PORT, rank 0's NCCL id sent to all, then the communicator. NVLink multicast
    /// (NVLS) stays off unless NCCL_NVLS_ENABLE says otherwise.
    pub fn connect(world: World, backend: &CudaBackend) -> Result<Self> {
        if let Some(reason) = nccl_unavailable_reason() {
            bail!("cannot run data-parallel on GPUs: {reason}");
        }
        if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
            // SAFETY: set before NCCL or any other thread reads the environment.
            std::env::set_var("NCCL_NVLS_ENABLE", "0");
        }
        let mut host = TcpCollective::connect(world.clone()).context("NCCL rendezvous")?;
        let id = if world.rank == 0 {
            let id = result::get_uniqueid().map_err(|e| anyhow::anyhow!("ncclGetUniqueId failed: {e:?}"))?;
            host.broadcast_from_root(id.internal.iter().map(|&c| c as u8).collect())?
        } else {
            host.broadcast_from_root(Vec::new())?
        };
        if id.len() != 128 {
            bail!("NCCL rendezvous: rank 0 sent a {}-byte id, expected 128", id.len());
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (slot, &byte) in internal.iter_mut().zip(&id) {
            *slot = byte as std::ffi::c_char;
        }
        let stream = backend.stream();
        stream.context().bind_to_thread().context("cannot bind the GPU to this thread")?;
        // As urgent as the main stream (the highest priority): the reduce-scatters of finished
        // buckets must not wait for the backward's remaining blocks to be issued first.
        let (_, greatest) = cudarc::driver::result::stream::get_priority_range().context("cannot read the CUDA stream priorities")?;
        let comm_stream = stream.context().new_stream_with_priority(greatest).context("cannot create the communication stream")?;
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: every rank passes the same id and world size, and its own rank.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), world.world_size as i32, sys::ncclUniqueId { internal }, world.rank as i32)
                .map_err(|e| anyhow::anyhow!("ncclCommInitRank failed for rank {} of {}: {e:?}", world.rank, world.world_size))?;
            comm.assume_init()
        };
        Ok(Self { world, comm, comm_stream, host, pending: false })
    }

    fn raw_stream(&self) -> sys::cudaStream_t {
        self.comm_stream.cu_stream() as sys::cudaStream_t
    }

    /// Makes `waiter` wait for the work queued so far on `on`.
    fn order(waiter: &CudaStream, on: &CudaStream) -> Result<()> {
        let event: CudaEvent = on.record_event(None).context("cannot record a CUDA event")?;
        waiter.wait(&event).context("cannot order the CUDA streams")
    }

    /// One NCCL group over `tensors`, in place, on the communication stream after the work
    /// queued so far on the compute stream: `even(whole, own_shard, shard_len, ..)` where the
    /// world size divides a tensor's length, else `uneven(shard, shard_len, owner, ..)` once per
    /// rank's shard.
    fn grouped(
        &mut self,
        backend: &CudaBackend,
        tensors: &mut [TensorRef<'_, GpuBuffer>],
        even: impl Fn(*mut c_void, *mut c_void, usize, sys::cudaStream_t, sys::ncclComm_t) -> Result<result::NcclStatus, result::NcclError>,
        uneven: impl Fn(*mut c_void, usize, i32, sys::cudaStream_t, sys::ncclComm_t) -> Result<result::NcclStatus, result::NcclError>,
        what: &str,
    ) -> Result<()> {
        // Addresses first: taking one may queue work on the compute stream (allocating a buffer
        // not used yet, widening one held in bf16), which the ordering below must cover.
        let bases: Vec<u64> = tensors.iter_mut().map(|(buf, _)| backend.address_for_writing(buf)).collect();
        Self::order(&self.comm_stream, backend.stream())?;
        let (world_size, rank, stream, comm) = (self.world.world_size, self.world.rank, self.raw_stream(), self.comm);
        let at = |base: u64, index: usize| (base + (index * std::mem::size_of::<f32>()) as u64) as *mut c_void;
        result::group_start().map_err(|e| anyhow::anyhow!("ncclGroupStart: {e:?}"))?;
        for ((_, n), &base) in tensors.iter().zip(&bases) {
            let outcome = if *n % world_size == 0 {
                let chunk = *n / world_size;
                even(at(base, 0), at(base, rank * chunk), chunk, stream, comm)
            } else {
                (0..world_size)
                    .map(|owner| (owner, shard_range(*n, world_size, owner)))
                    .filter(|(_, shard)| !shard.is_empty())
                    .try_for_each(|(owner, shard)| uneven(at(base, shard.start), shard.len(), owner as i32, stream, comm).map(|_| ()))
                    .map(|_| result::NcclStatus::Success)
            };
            if let Err(e) = outcome {
                let _ = result::group_end();
                bail!("NCCL {what} of a tensor of {n} values failed on rank {}: {e:?}", self.world.rank);
            }
        }
        result::group_end().map_err(|e| anyhow::anyhow!("NCCL {what}: ncclGroupEnd failed: {e:?}"))?;
        Ok(())
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by this value and is used by nothing else.
        unsafe {
            let _ = self.comm_stream.synchronize();
            let _ = result::comm_destroy(self.comm);
        }
    }
}

const F32: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
const SUM: sys::ncclRedOp_t = sys::ncclRedOp_t::ncclSum;

impl Collective<CudaBackend> for NcclCollective {
    fn world(&self) -> &World {
        &self.world
    }

    fn is_identity(&self) -> bool {
        false
    }

    fn reduce_scatter(&mut self, backend: &CudaBackend, tensors: &mut [TensorRef<'_, GpuBuffer>]) -> Result<()> {
        // Each rank's shard of the buffer receives the sum of everyone's. Ordered after the
        // backward kernels that wrote these gradients, not after those that follow them.
        // SAFETY (both): pointers and lengths stay within the buffer's n values.
        self.grouped(
            backend,
            tensors,
            |whole, own, len, stream, comm| unsafe { result::reduce_scatter(whole, own, len, F32, SUM, comm, stream) },
            |shard, len, owner, stream, comm| unsafe { result::reduce(shard, shard, len, F32, SUM, owner, comm, stream) },
            "reduce-scatter",
        )?;
        self.pending = true;
        Ok(())
    }

    fn finish_gradients(&mut self, backend: &CudaBackend) -> Result<()> {
        if std::mem::take(&mut self.pending) {
            Self::order(backend.stream(), &self.comm_stream)?;
        }
        Ok(())
    }

    fn all_gather(&mut self, backend: &CudaBackend, tensors: &mut [TensorRef<'_, GpuBuffer>]) -> Result<()> {
        // Each rank's shard is its send buffer, the whole tensor the receive buffer.
        // SAFETY (both): pointers and lengths stay within the buffer's n values.
        self.grouped(
            backend,
            tensors,
            |whole, own, len, stream, comm| unsafe { result::all_gather(own, whole, len, F32, comm, stream) },
            |shard, len, owner, stream, comm| unsafe { result::broadcast(shard, shard, len, F32, owner, comm, stream) },
            "all-gather",
        )?;
        Self::order(backend.stream(), &self.comm_stream)
    }

    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()> {
        Collective::<CudaBackend>::all_reduce_host(&mut self.host, values)
    }

    fn gather_host(&mut self, shard: &[f32], n: usize) -> Result<Option<Vec<f32>>> {
        Collective::<CudaBackend>::gather_host(&mut self.host, shard, n)
    }
}

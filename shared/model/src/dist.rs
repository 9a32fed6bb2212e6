//! Data-parallel training: which process this is ([`World`], from torchrun's or Slurm's
//! variables), how a tensor is split between ranks for ZeRO-1 ([`shard_range`]), and the
//! collectives the trainer needs ([`Collective`]): a no-op one for a single process
//! ([`SingleProcess`]) and a TCP one that works with any backend ([`TcpCollective`]; CPU runs
//! and tests). The GPU one (NCCL) lives in dsllm-cuda.
//!
//! ZeRO-1 as the trainer uses it: every rank holds the whole model and its whole gradient; after
//! the backward pass the gradients are reduce-scattered (each rank ends with the sum over ranks
//! of its own slice of every tensor), each rank runs AdamW on its slice only (so it keeps the
//! moments of its slice only: 1/N of the optimizer state), and the updated slices are
//! all-gathered back into every rank's full weights.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backend::Backend;

/// Port torchrun uses when MASTER_PORT is not set.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// This process's place among the processes of one training run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine: the GPU this process drives.
    pub local_rank: usize,
    /// Where rank 0 listens for the others (rendezvous).
    pub master_addr: String,
    pub master_port: u16,
    /// Which launcher's variables said so ("single", "torchrun", "slurm").
    pub launcher: &'static str,
}

impl World {
    /// One process alone.
    pub fn single() -> Self {
        Self { rank: 0, world_size: 1, local_rank: 0, master_addr: "127.0.0.1".into(), master_port: DEFAULT_MASTER_PORT, launcher: "single" }
    }

    /// From the environment: torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
    /// else Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (srun), with MASTER_ADDR or the
    /// first host of the step's node list, and MASTER_PORT or 29500; else a single process.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`World::from_env`] over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(text) => text.trim().parse().map(Some).with_context(|| format!("{name}={text:?} is not a whole number")),
            }
        };
        let port = || -> Result<u16> {
            match var("MASTER_PORT") {
                None => Ok(DEFAULT_MASTER_PORT),
                Some(text) => text.trim().parse().with_context(|| format!("MASTER_PORT={text:?} is not a port number")),
            }
        };
        let world = if let Some(world_size) = number("WORLD_SIZE")? {
            let rank = number("RANK")?.context("WORLD_SIZE is set but RANK is not (launch with torchrun, or set both)")?;
            let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
            let master_addr = match var("MASTER_ADDR") {
                Some(addr) => addr,
                None if world_size == 1 => "127.0.0.1".into(),
                None => bail!("WORLD_SIZE={world_size} but MASTER_ADDR is not set: rank 0's address is needed for the rendezvous"),
            };
            Self { rank, world_size, local_rank, master_addr, master_port: port()?, launcher: "torchrun" }
        } else if let Some(world_size) = number("SLURM_NTASKS")? {
            let rank = number("SLURM_PROCID")?.context("SLURM_NTASKS is set but SLURM_PROCID is not: start one process per task with srun")?;
            let local_rank = number("SLURM_LOCALID")?.unwrap_or(0);
            let master_addr = match var("MASTER_ADDR") {
                Some(addr) => addr,
                None => match var("SLURM_STEP_NODELIST").or_else(|| var("SLURM_JOB_NODELIST")) {
                    Some(list) => first_slurm_host(&list).with_context(|| format!("cannot read the first host of the Slurm node list {list:?}"))?,
                    None if world_size == 1 => "127.0.0.1".into(),
                    None => bail!("SLURM_NTASKS={world_size} but neither MASTER_ADDR nor SLURM_STEP_NODELIST is set"),
                },
            };
            Self { rank, world_size, local_rank, master_addr, master_port: port()?, launcher: "slurm" }
        } else {
            return Ok(Self::single());
        };
        if world.world_size == 0 || world.rank >= world.world_size {
            bail!("rank {} is not below the world size {} ({} variables)", world.rank, world.world_size, world.launcher);
        }
        Ok(world)
    }

    /// Rank 0 writes checkpoints, metrics and plots and draws the progress bar.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
}

/// The first host name of a Slurm node list: "gpu[07-09,12],cpu1" -> "gpu07".
pub fn first_slurm_host(list: &str) -> Option<String> {
    let list = list.trim();
    let first_item_end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..first_item_end];
    if list[first_item_end..].starts_with('[') {
        let inside = &list[first_item_end + 1..];
        let first = inside.split([',', '-', ']']).next()?;
        (!first.is_empty()).then(|| format!("{prefix}{first}"))
    } else {
        (!prefix.is_empty()).then(|| prefix.to_string())
    }
}

/// The slice of a tensor of `n` values that `rank` of `world_size` owns under ZeRO-1:
/// ceil(n / world_size) values each, the last ranks' shorter or empty. When `world_size`
/// divides `n` (every tensor of the usual shapes) the slices are equal, which NCCL's
/// reduce-scatter and all-gather need.
pub fn shard_range(n: usize, world_size: usize, rank: usize) -> Range<usize> {
    let chunk = n.div_ceil(world_size.max(1));
    (rank * chunk).min(n)..((rank + 1) * chunk).min(n)
}

/// One gradient or weight tensor handed to a collective: the buffer and its length.
pub type TensorRef<'a, Buf> = (&'a mut Buf, usize);

/// The collectives of data-parallel training with ZeRO-1. Gradient reductions may run in the
/// background (overlapped with the rest of the backward pass); [`Collective::finish_gradients`]
/// waits for them.
pub trait Collective<B: Backend> {
    fn world(&self) -> &World;

    /// True when every collective leaves the data as it is (a single process), so the trainer
    /// can skip them. A communicator of one GPU still runs them (a check of that path).
    fn is_identity(&self) -> bool {
        self.world().world_size == 1
    }

    /// Starts summing `tensors` over the ranks: once [`Collective::finish_gradients`] returns,
    /// this rank's [`shard_range`] of each holds the sum (the rest of the tensor is unspecified).
    /// Called with each bucket of gradients as soon as the backward pass has finished it.
    fn reduce_scatter(&mut self, backend: &B, tensors: &mut [TensorRef<'_, B::Buffer>]) -> Result<()>;
    /// Waits for every [`Collective::reduce_scatter`] started.
    fn finish_gradients(&mut self, backend: &B) -> Result<()>;
    /// Every rank's [`shard_range`] of each tensor to every rank (the updated weights).
    fn all_gather(&mut self, backend: &B, tensors: &mut [TensorRef<'_, B::Buffer>]) -> Result<()>;
    /// Sums `values` over the ranks, in place (losses, token counts, squared norms).
    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `shard` (its [`shard_range`] of a tensor of `n` values) assembled into the
    /// whole tensor on rank 0, which writes checkpoints (`None` on the other ranks).
    fn gather_host(&mut self, shard: &[f32], n: usize) -> Result<Option<Vec<f32>>>;
}

/// A single process: every collective is the identity.
#[derive(Debug, Clone)]
pub struct SingleProcess {
    world: World,
}

impl Default for SingleProcess {
    fn default() -> Self {
        Self { world: World::single() }
    }
}

impl<B: Backend> Collective<B> for SingleProcess {
    fn world(&self) -> &World {
        &self.world
    }
    fn reduce_scatter(&mut self, _: &B, _: &mut [TensorRef<'_, B::Buffer>]) -> Result<()> {
        Ok(())
    }
    fn finish_gradients(&mut self, _: &B) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, _: &B, _: &mut [TensorRef<'_, B::Buffer>]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_host(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn gather_host(&mut self, shard: &[f32], n: usize) -> Result<Option<Vec<f32>>> {
        assert_eq!(shard.len(), n, "a single process owns the whole tensor");
        Ok(Some(shard.to_vec()))
    }
}

/// Collectives over TCP through rank 0 (a star: the others send to rank 0, which sums or
/// assembles in rank order and sends the result back), on host copies of the buffers, so any
/// backend can use it. Sums are in rank order, so every run of the same world size gives the
/// same bits. Meant for CPU runs and tests; its traffic grows with N x the model, so GPUs use
/// NCCL. Hand-written because no maintained crate offers MPI-style collectives without a
/// system MPI.
pub struct TcpCollective {
    world: World,
    /// Rank 0: a stream to every other rank, in rank order (index r-1 for rank r). Others: one
    /// stream to rank 0.
    peers: Vec<TcpStream>,
}

/// How long a rank keeps trying to reach rank 0, and rank 0 waits for the others.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

impl TcpCollective {
    /// Rendezvous at `world.master_addr:master_port`: rank 0 listens there, the others connect.
    pub fn connect(world: World) -> Result<Self> {
        if world.rank == 0 && world.world_size > 1 {
            let addr = format!("0.0.0.0:{}", world.master_port);
            let listener = TcpListener::bind(&addr).with_context(|| format!("rank 0 cannot listen on {addr} (MASTER_PORT)"))?;
            return Self::accept(world, listener);
        }
        Self::connect_to_root(world)
    }

    /// Rank 0 with a listener already bound (tests bind port 0 to get a free one).
    pub fn accept(world: World, listener: TcpListener) -> Result<Self> {
        let mut slots: Vec<Option<TcpStream>> = (1..world.world_size).map(|_| None).collect();
        listener.set_nonblocking(true)?;
        let started = Instant::now();
        while slots.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_nodelay(true)?;
                    let mut hello = [0u8; 16];
                    stream.read_exact(&mut hello).with_context(|| format!("rendezvous: no hello from {from}"))?;
                    let rank = u64::from_le_bytes(hello[..8].try_into().unwrap()) as usize;
                    let size = u64::from_le_bytes(hello[8..].try_into().unwrap()) as usize;
                    if size != world.world_size || rank == 0 || rank >= world.world_size {
                        bail!("rendezvous: {from} says it is rank {rank} of {size}; this run has world size {}", world.world_size);
                    }
                    if slots[rank - 1].replace(stream).is_some() {
                        bail!("rendezvous: two processes say they are rank {rank}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if started.elapsed() > RENDEZVOUS_TIMEOUT {
                        let missing: Vec<usize> = slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i + 1).collect();
                        bail!("rendezvous: ranks {missing:?} did not connect within {} s", RENDEZVOUS_TIMEOUT.as_secs());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("rendezvous: accept failed"),
            }
        }
        Ok(Self { world, peers: slots.into_iter().map(|s| s.expect("all connected")).collect() })
    }

    fn connect_to_root(world: World) -> Result<Self> {
        if world.world_size == 1 {
            return Ok(Self { world, peers: Vec::new() });
        }
        let target = format!("{}:{}", world.master_addr, world.master_port);
        let started = Instant::now();
        let mut stream = loop {
            let addrs: Vec<SocketAddr> = target.to_socket_addrs().with_context(|| format!("cannot resolve MASTER_ADDR {target}"))?.collect();
            match addrs.iter().find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(5)).ok()) {
                Some(stream) => break stream,
                None if started.elapsed() > RENDEZVOUS_TIMEOUT => {
                    bail!("rank {} could not reach rank 0 at {target} within {} s", world.rank, RENDEZVOUS_TIMEOUT.as_secs())
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_nodelay(true)?;
        let mut hello = (world.rank as u64).to_le_bytes().to_vec();
        hello.extend((world.world_size as u64).to_le_bytes());
        stream.write_all(&hello).context("rendezvous: cannot greet rank 0")?;
        Ok(Self { world, peers: vec![stream] })
    }

    fn send(stream: &mut TcpStream, bytes: &[u8], peer: usize) -> Result<()> {
        stream.write_all(&(bytes.len() as u64).to_le_bytes()).and_then(|_| stream.write_all(bytes)).with_context(|| format!("lost the connection to rank {peer}"))
    }

    fn receive(stream: &mut TcpStream, peer: usize) -> Result<Vec<u8>> {
        let mut len = [0u8; 8];
        stream.read_exact(&mut len).with_context(|| format!("lost the connection to rank {peer}"))?;
        let mut bytes = vec![0u8; u64::from_le_bytes(len) as usize];
        stream.read_exact(&mut bytes).with_context(|| format!("lost the connection to rank {peer}"))?;
        Ok(bytes)
    }

    /// Rank 0 gets every rank's `mine`, in rank order (its own first); the others get `None`.
    fn gather_to_root(&mut self, mine: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>> {
        if self.world.rank != 0 {
            Self::send(&mut self.peers[0], &mine, 0)?;
            return Ok(None);
        }
        let mut all = vec![mine];
        for (i, peer) in self.peers.iter_mut().enumerate() {
            all.push(Self::receive(peer, i + 1)?);
        }
        Ok(Some(all))
    }

    /// Rank 0's `bytes` to every rank (what the others pass is ignored): the NCCL rendezvous
    /// sends its unique id this way.
    pub fn broadcast_from_root(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if self.world.rank != 0 {
            return Self::receive(&mut self.peers[0], 0);
        }
        for (i, peer) in self.peers.iter_mut().enumerate() {
            Self::send(peer, &bytes, i + 1)?;
        }
        Ok(bytes)
    }

    /// Rank 0 receives every rank's `mine` (in rank order, its own first) and answers all with
    /// `combine`'s result; the others send `mine` and get that result.
    fn gather_combine_broadcast(&mut self, mine: Vec<u8>, combine: impl FnOnce(Vec<Vec<u8>>) -> Vec<u8>) -> Result<Vec<u8>> {
        if self.world.world_size == 1 {
            return Ok(combine(vec![mine]));
        }
        if self.world.rank == 0 {
            let mut all = vec![mine];
            for (i, peer) in self.peers.iter_mut().enumerate() {
                all.push(Self::receive(peer, i + 1)?);
            }
            let result = combine(all);
            for (i, peer) in self.peers.iter_mut().enumerate() {
                Self::send(peer, &result, i + 1)?;
            }
            Ok(result)
        } else {
            Self::send(&mut self.peers[0], &mine, 0)?;
            Self::receive(&mut self.peers[0], 0)
        }
    }

    /// The sum over ranks of `values`, element by element, added in rank order.
    fn all_reduce_f32(&mut self, values: &[f32]) -> Result<Vec<f32>> {
        let n = values.len();
        let bytes = self.gather_combine_broadcast(f32_bytes(values), |all| {
            let mut sum = vec![0f32; n];
            for part in &all {
                for (s, v) in sum.iter_mut().zip(bytes_f32(part)) {
                    *s += v;
                }
            }
            f32_bytes(&sum)
        })?;
        Ok(bytes_f32(&bytes).collect())
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))
}

impl<B: Backend> Collective<B> for TcpCollective {
    fn world(&self) -> &World {
        &self.world
    }

    fn reduce_scatter(&mut self, backend: &B, tensors: &mut [TensorRef<'_, B::Buffer>]) -> Result<()> {
        // The whole sum everywhere (an all-reduce): more traffic than a reduce-scatter, the
        // same result where it counts, and one message per bucket.
        let mut host = Vec::new();
        for (buf, n) in tensors.iter() {
            host.extend_from_slice(&backend.download(buf)[..*n]);
        }
        let sum = self.all_reduce_f32(&host)?;
        let mut at = 0;
        for (buf, n) in tensors.iter_mut() {
            let mut full = backend.download(buf);
            full[..*n].copy_from_slice(&sum[at..at + *n]);
            backend.write(buf, &full);
            at += *n;
        }
        Ok(())
    }

    fn finish_gradients(&mut self, _: &B) -> Result<()> {
        Ok(())
    }

    fn all_gather(&mut self, backend: &B, tensors: &mut [TensorRef<'_, B::Buffer>]) -> Result<()> {
        let (world_size, rank) = (self.world.world_size, self.world.rank);
        for (buf, n) in tensors.iter_mut() {
            let mut full = backend.download(buf);
            // Shards are in rank order, so concatenating them is the whole tensor.
            let bytes = self.gather_combine_broadcast(f32_bytes(&full[shard_range(*n, world_size, rank)]), |all| all.concat())?;
            if bytes.len() != *n * 4 {
                bail!("all-gather assembled {} values where the tensor has {n}", bytes.len() / 4);
            }
            for (value, gathered) in full[..*n].iter_mut().zip(bytes_f32(&bytes)) {
                *value = gathered;
            }
            backend.write(buf, &full);
        }
        Ok(())
    }

    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()> {
        let mine: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = values.len();
        let bytes = self.gather_combine_broadcast(mine, |all| {
            let mut sum = vec![0f64; n];
            for part in &all {
                for (s, c) in sum.iter_mut().zip(part.chunks_exact(8)) {
                    *s += f64::from_le_bytes(c.try_into().unwrap());
                }
            }
            sum.iter().flat_map(|v| v.to_le_bytes()).collect()
        })?;
        for (v, c) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *v = f64::from_le_bytes(c.try_into().unwrap());
        }
        Ok(())
    }

    fn gather_host(&mut self, shard: &[f32], n: usize) -> Result<Option<Vec<f32>>> {
        let expected = shard_range(n, self.world.world_size, self.world.rank).len();
        assert_eq!(shard.len(), expected, "rank {} owns {expected} of {n} values", self.world.rank);
        let Some(parts) = self.gather_to_root(f32_bytes(shard))? else { return Ok(None) };
        let bytes = parts.concat();
        if bytes.len() != n * 4 {
            bail!("gathered {} values where the tensor has {n}", bytes.len() / 4);
        }
        Ok(Some(bytes_f32(&bytes).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::testutil::with_tcp_world;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn world_from_torchrun_slurm_or_nothing() {
        assert_eq!(World::from_vars(vars(&[])).unwrap(), World::single());
        let w = World::from_vars(vars(&[("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "3"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "1234")])).unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank, w.master_addr.as_str(), w.master_port, w.launcher), (3, 8, 3, "10.0.0.1", 1234, "torchrun"));
        let w = World::from_vars(vars(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1"), ("SLURM_STEP_NODELIST", "gpu[07-09,12]")])).unwrap();
        assert_eq!((w.rank, w.world_size, w.local_rank, w.master_addr.as_str(), w.master_port, w.launcher), (5, 16, 1, "gpu07", DEFAULT_MASTER_PORT, "slurm"));
        // torchrun's variables win over Slurm's (torchrun started inside an allocation).
        let w = World::from_vars(vars(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")])).unwrap();
        assert_eq!((w.rank, w.world_size, w.launcher), (1, 2, "torchrun"));

        let error = World::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "0")])).unwrap_err().to_string();
        assert!(error.contains("MASTER_ADDR"), "{error}");
        let error = World::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")])).unwrap_err().to_string();
        assert!(error.contains("rank 2 is not below the world size 2"), "{error}");
        let error = format!("{:#}", World::from_vars(vars(&[("WORLD_SIZE", "two"), ("RANK", "0")])).unwrap_err());
        assert!(error.contains("WORLD_SIZE=\"two\""), "{error}");
    }

    #[test]
    fn slurm_host_lists() {
        assert_eq!(first_slurm_host("gpu[07-09,12],cpu1").as_deref(), Some("gpu07"));
        assert_eq!(first_slurm_host("node3,node4").as_deref(), Some("node3"));
        assert_eq!(first_slurm_host("single").as_deref(), Some("single"));
        assert_eq!(first_slurm_host("a[1,3]").as_deref(), Some("a1"));
        assert_eq!(first_slurm_host(""), None);
    }

    #[test]
    fn shards_cover_each_tensor_once() {
        for n in [0, 1, 7, 8, 64, 1001] {
            for world in 1..=9 {
                let ranges: Vec<Range<usize>> = (0..world).map(|r| shard_range(n, world, r)).collect();
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next.min(n));
                    next = r.end;
                }
                assert_eq!(next, n);
                if n % world == 0 {
                    assert!(ranges.iter().all(|r| r.len() == n / world), "even shards for {n} over {world}");
                }
            }
        }
    }

    #[test]
    fn tcp_collectives_sum_and_gather_in_rank_order() {
        let results = with_tcp_world(3, |mut c| {
            let be = CpuBackend;
            let rank = c.world.rank;
            // Two tensors of 7 and 4 values: rank r holds r+1 everywhere.
            let mut a = vec![(rank + 1) as f32; 7];
            let mut b = vec![(rank + 1) as f32 * 10.0; 4];
            Collective::<CpuBackend>::reduce_scatter(&mut c, &be, &mut [(&mut a, 7), (&mut b, 4)]).unwrap();
            Collective::<CpuBackend>::finish_gradients(&mut c, &be).unwrap();
            let mut values = [rank as f64, 1.0];
            Collective::<CpuBackend>::all_reduce_host(&mut c, &mut values).unwrap();
            // All-gather: each rank writes its rank into its own shard of a 7-value tensor.
            let mut w = vec![-1.0f32; 7];
            for i in shard_range(7, 3, rank) {
                w[i] = rank as f32;
            }
            Collective::<CpuBackend>::all_gather(&mut c, &be, &mut [(&mut w, 7)]).unwrap();
            let shard = vec![rank as f32 + 0.5; shard_range(7, 3, rank).len()];
            let gathered = Collective::<CpuBackend>::gather_host(&mut c, &shard, 7).unwrap();
            assert_eq!(gathered.is_some(), rank == 0, "only rank 0 gets the gathered tensor");
            if let Some(full) = gathered {
                assert_eq!(full, vec![0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5]);
            }
            (rank, a, b, values, w)
        });
        for (rank, a, b, values, w) in results {
            for i in shard_range(7, 3, rank) {
                assert_eq!(a[i], 6.0);
            }
            for i in shard_range(4, 3, rank) {
                assert_eq!(b[i], 60.0);
            }
            assert_eq!(values, [3.0, 3.0]);
            assert_eq!(w, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]);
        }
    }
}

//! The training loop's pieces: a data-source trait with a resumable cursor, the trainer
//! (micro-batches, gradient accumulation, AdamW, LR schedule), validation loss and
//! bits-per-byte, checkpoint save and exact resume, and a metrics JSONL writer.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, IGNORE_TARGET};
use crate::checkpoint::{self, CheckpointData};
use crate::config::ModelConfig;
use crate::dist::{Collective, SingleProcess, World};
use crate::model::{HostTensor, Llama, LossSum, TokenBatch};
use crate::optimizer::{AdamW, AdamWConfig};
use crate::weights::Weights;
use crate::schedule::LrSchedule;

/// Token sequences for training or evaluation, with a position that can be saved and restored
/// (the shard reader implements this).
pub trait SequenceSource {
    /// The next sequence: `seq_len + 1` tokens (inputs, then targets shifted by one) or
    /// `seq_len` tokens (then the last position has no target). `None` at the end.
    fn next_sequence(&mut self) -> Result<Option<Vec<u32>>>;
    /// Where the source is, as JSON, for `trainer_state.json`.
    fn cursor(&self) -> serde_json::Value;
    /// Moves the source back to a position [`SequenceSource::cursor`] returned.
    fn restore(&mut self, cursor: &serde_json::Value) -> Result<()>;
}

/// An in-memory source (tests, demos): yields its sequences in order, optionally cycling.
#[derive(Debug, Clone)]
pub struct VecSource {
    pub sequences: Vec<Vec<u32>>,
    pub position: usize,
    pub cycle: bool,
}

impl VecSource {
    pub fn new(sequences: Vec<Vec<u32>>, cycle: bool) -> Self {
        Self { sequences, position: 0, cycle }
    }
}

impl SequenceSource for VecSource {
    fn next_sequence(&mut self) -> Result<Option<Vec<u32>>> {
        if self.position >= self.sequences.len() {
            if !self.cycle || self.sequences.is_empty() {
                return Ok(None);
            }
            self.position = 0;
        }
        self.position += 1;
        Ok(Some(self.sequences[self.position - 1].clone()))
    }
    fn cursor(&self) -> serde_json::Value {
        serde_json::json!({ "position": self.position })
    }
    fn restore(&mut self, cursor: &serde_json::Value) -> Result<()> {
        self.position = cursor["position"].as_u64().context("cursor has no position")? as usize;
        Ok(())
    }
}

/// How to train; serialised into `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Tokens per sequence the model sees (l_seq).
    pub seq_len: usize,
    /// Sequences per forward/backward pass.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step, over all ranks together: a step sees
    /// micro_batch_size · grad_accum_steps sequences whatever the number of processes (each of
    /// N data-parallel ranks runs grad_accum_steps / N of them), so a checkpoint resumes with
    /// another world size at the same global batch.
    pub grad_accum_steps: usize,
    pub schedule: LrSchedule,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Seeds the weight initialisation and the trainer's random stream.
    pub seed: u64,
}

impl TrainerConfig {
    /// Tokens per optimizer step (the batch size B in tokens).
    pub fn tokens_per_step(&self) -> usize {
        self.seq_len * self.micro_batch_size * self.grad_accum_steps
    }
}

/// Position of the trainer's random stream: ChaCha8 seed and word position. Nothing in
/// pretraining draws from it yet (no dropout, data order comes from the source); it is saved
/// so that anything that does later still resumes exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    pub word_pos: u64,
}

/// Progress, as `trainer_state.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// Input tokens processed by those steps.
    pub tokens_seen: u64,
    /// The training source's [`SequenceSource::cursor`] after the last step.
    pub data_cursor: serde_json::Value,
    pub rng: RngState,
    pub config: TrainerConfig,
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    /// Mean next-token loss over the step's targets, in nats.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_seen: u64,
    pub tokens_per_second: f64,
}

/// Validation result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    pub tokens: usize,
    /// Bits per UTF-8 byte of the evaluated text, when its byte count is known.
    pub bits_per_byte: Option<f64>,
}

/// Bits per byte of text whose tokens cost `loss_sum_nats` in total: a tokenizer-independent
/// measure (`Σ loss / ln 2 / bytes`).
pub fn bits_per_byte(loss_sum_nats: f64, byte_count: u64) -> f64 {
    loss_sum_nats / std::f64::consts::LN_2 / byte_count as f64
}

/// Model, optimizer and progress, and the collectives of data-parallel training (one process:
/// [`SingleProcess`]).
pub struct Trainer<B: Backend> {
    pub model: Llama<B>,
    pub optimizer: AdamW<B>,
    pub config: TrainerConfig,
    pub state: TrainerState,
    rng: ChaCha8Rng,
    collective: Box<dyn Collective<B>>,
}

impl<B: Backend> Trainer<B> {
    /// A trainer for a freshly initialised model.
    pub fn new(backend: B, model_config: ModelConfig, config: TrainerConfig) -> Result<Self> {
        let model = Llama::new_random(backend, model_config, config.seed)?;
        Self::from_model(model, config)
    }

    /// A trainer for a freshly initialised model, one of the data-parallel ranks `collective`
    /// connects. Every rank initialises the same weights from the same seed.
    pub fn new_distributed(backend: B, model_config: ModelConfig, config: TrainerConfig, collective: Box<dyn Collective<B>>) -> Result<Self> {
        let model = Llama::new_random(backend, model_config, config.seed)?;
        Self::from_model_distributed(model, config, collective)
    }

    /// A trainer starting from existing weights (an imported checkpoint, for fine-tuning).
    pub fn from_model(model: Llama<B>, config: TrainerConfig) -> Result<Self> {
        Self::from_model_distributed(model, config, Box::new(SingleProcess::default()))
    }

    /// [`Trainer::from_model`] for one of the data-parallel ranks `collective` connects.
    pub fn from_model_distributed(model: Llama<B>, config: TrainerConfig, collective: Box<dyn Collective<B>>) -> Result<Self> {
        if config.seq_len > model.config.max_position_embeddings {
            bail!("seq_len {} exceeds the model's max_position_embeddings {}", config.seq_len, model.config.max_position_embeddings);
        }
        if config.micro_batch_size == 0 || config.grad_accum_steps == 0 {
            bail!("micro_batch_size and grad_accum_steps must be positive");
        }
        let world_size = collective.world().world_size;
        if config.grad_accum_steps % world_size != 0 {
            bail!(
                "{} micro-batches per step cannot be split evenly over {world_size} processes: make the step's micro-batches (gradient accumulation) a multiple of the world size",
                config.grad_accum_steps
            );
        }
        let optimizer = AdamW::sharded(&model, config.optimizer.clone(), collective.world());
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let state = TrainerState {
            step: 0,
            tokens_seen: 0,
            data_cursor: serde_json::Value::Null,
            rng: RngState { seed: config.seed, word_pos: 0 },
            config: config.clone(),
        };
        Ok(Self { model, optimizer, config, state, rng, collective })
    }

    /// Which process of the data-parallel run this is.
    pub fn world(&self) -> &World {
        self.collective.world()
    }

    /// Sums `values` over the data-parallel ranks (decisions every rank must take alike).
    pub fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()> {
        self.collective.all_reduce_host(values)
    }

    /// Reads `micro_batch_size` sequences as one batch; `None` if the source ended first.
    fn read_batch(&self, source: &mut dyn SequenceSource) -> Result<Option<TokenBatch>> {
        let (t, b) = (self.config.seq_len, self.config.micro_batch_size);
        let mut batch = TokenBatch { batch_size: b, seq_len: t, inputs: Vec::with_capacity(b * t), targets: Vec::with_capacity(b * t) };
        for _ in 0..b {
            let Some(sequence) = source.next_sequence()? else { return Ok(None) };
            if sequence.len() == t + 1 {
                batch.inputs.extend_from_slice(&sequence[..t]);
                batch.targets.extend_from_slice(&sequence[1..]);
            } else if sequence.len() == t {
                batch.inputs.extend_from_slice(&sequence);
                batch.targets.extend_from_slice(&sequence[1..]);
                batch.targets.push(IGNORE_TARGET);
            } else {
                bail!("the data source gave a sequence of {} tokens; seq_len is {t}, so expected {t} or {}", sequence.len(), t + 1);
            }
        }
        Ok(Some(batch))
    }

    /// One optimizer step: `grad_accum_steps` micro-batches forward and backward, gradients
    /// accumulated as the mean over the step's targets, clipped, then AdamW. With N ranks each
    /// reads the whole step's sequences (so every rank's data cursor is the same) and runs its
    /// own contiguous N-th of the micro-batches; the last micro-batch's gradients are
    /// reduce-scattered bucket by bucket while its backward pass goes on (ZeRO-1).
    pub fn train_step(&mut self, source: &mut dyn SequenceSource) -> Result<StepMetrics> {
        let started = Instant::now();
        let mut batches = Vec::with_capacity(self.config.grad_accum_steps);
        for _ in 0..self.config.grad_accum_steps {
            match self.read_batch(source)? {
                Some(batch) => batches.push(batch),
                None => bail!("the training data ran out after {} tokens (step {})", self.state.tokens_seen, self.state.step),
            }
        }
        // The mean over the whole step's targets, on every rank alike.
        let targets: usize = batches.iter().map(TokenBatch::target_count).sum();
        let loss_scale = 1.0 / targets.max(1) as f32;
        let world = self.collective.world().clone();
        let per_rank = self.config.grad_accum_steps / world.world_size;
        let mine = &batches[world.rank * per_rank..(world.rank + 1) * per_rank];
        // The first backward writes the gradients (no pass clearing them first).
        if mine.is_empty() {
            self.model.zero_grads();
        } else {
            self.model.overwrite_grads_next();
        }
        let mut loss = LossSum::default();
        let (model, collective) = (&mut self.model, &mut self.collective);
        for (i, batch) in mine.iter().enumerate() {
            let last = i + 1 == mine.len();
            let micro = if last && !collective.is_identity() {
                let mut failed = None;
                let micro = model.forward_backward_bucketed(batch, loss_scale, &mut |backend, bucket| {
                    if failed.is_none() {
                        failed = collective.reduce_scatter(backend, bucket).err();
                    }
                })?;
                if let Some(error) = failed {
                    return Err(error.context("gradient reduce-scatter failed"));
                }
                micro
            } else if last {
                // The last backward finishes each gradient: its sum of squares (the clipping
                // norm) can start then, beside the backward of the earlier layers.
                model.forward_backward_bucketed(batch, loss_scale, &mut |backend, bucket| {
                    let grads: Vec<(&B::Buffer, std::ops::Range<usize>)> = bucket.iter().map(|(buf, n)| (&**buf, 0..*n)).collect();
                    backend.prefetch_sum_squares(&grads);
                })?
            } else {
                model.forward_backward(batch, loss_scale)?
            };
            loss.sum_nats += micro.sum_nats;
            loss.tokens += micro.tokens;
        }
        collective.finish_gradients(&model.backend)?;
        let mut sums = [loss.sum_nats, loss.tokens as f64];
        collective.all_reduce_host(&mut sums)?;
        let loss = LossSum { sum_nats: sums[0], tokens: sums[1] as usize };
        let lr = self.config.schedule.learning_rate(self.state.step);
        let grad_norm = self.optimizer.update_with(&mut self.model, lr as f32, self.collective.as_mut())?;
        let step_tokens = self.config.tokens_per_step() as u64;
        self.state.step += 1;
        self.state.tokens_seen += step_tokens;
        self.state.data_cursor = source.cursor();
        Ok(StepMetrics {
            step: self.state.step,
            loss: loss.mean(),
            lr,
            grad_norm,
            tokens_seen: self.state.tokens_seen,
            tokens_per_second: step_tokens as f64 / started.elapsed().as_secs_f64(),
        })
    }

    /// Mean loss over up to `max_batches` micro-batches of `source` (all of it if `None`; a
    /// last partial micro-batch is skipped). Give `byte_count`, the UTF-8 size of the text the
    /// evaluated tokens encode, to get bits per byte. With N ranks, micro-batch i is evaluated
    /// by rank i mod N and the sums are added over the ranks.
    pub fn evaluate(&mut self, source: &mut dyn SequenceSource, max_batches: Option<usize>, byte_count: Option<u64>) -> Result<EvalMetrics> {
        let world = self.collective.world().clone();
        let mut total = LossSum::default();
        let mut batches = 0;
        while max_batches.is_none_or(|max| batches < max) {
            let Some(batch) = self.read_batch(source)? else { break };
            if batches % world.world_size == world.rank {
                let loss = self.model.forward(&batch)?;
                total.sum_nats += loss.sum_nats;
                total.tokens += loss.tokens;
            }
            batches += 1;
        }
        let mut sums = [total.sum_nats, total.tokens as f64];
        self.collective.all_reduce_host(&mut sums)?;
        let total = LossSum { sum_nats: sums[0], tokens: sums[1] as usize };
        if total.tokens == 0 {
            bail!("the validation data holds no full batch of {} sequences", self.config.micro_batch_size);
        }
        Ok(EvalMetrics { loss: total.mean(), tokens: total.tokens, bits_per_byte: byte_count.map(|b| bits_per_byte(total.sum_nats, b)) })
    }

    /// A copy of everything needed to resume, for [`checkpoint::save_checkpoint`] or a
    /// [`checkpoint::CheckpointWriter`]. `extra_files` (the tokenizer's) are copied in. A
    /// single process only: data-parallel ranks call [`Trainer::gather_checkpoint`].
    pub fn checkpoint_data(&self, extra_files: Vec<PathBuf>) -> CheckpointData {
        assert_eq!(self.world().world_size, 1, "with several ranks, gather_checkpoint assembles the sharded optimizer state");
        let backend = &self.model.backend;
        let moments = |buffers: &Weights<B::Buffer>| buffers.tensors().into_iter().map(|m| backend.download(m)).collect();
        self.checkpoint_from(moments(&self.optimizer.exp_avg), moments(&self.optimizer.exp_avg_sq), extra_files)
    }

    /// [`Trainer::checkpoint_data`] for data-parallel runs: every rank must call it (the
    /// optimizer moments are all-gathered from the ranks' shards); rank 0 gets the data to
    /// write, the others `None`. The checkpoint is the same whatever the world size.
    pub fn gather_checkpoint(&mut self, extra_files: Vec<PathBuf>) -> Result<Option<CheckpointData>> {
        let main = self.world().is_main();
        let (mut exp_avg, mut exp_avg_sq) = (Vec::new(), Vec::new());
        let numels: Vec<usize> = self.model.specs.tensors().iter().map(|s| s.numel()).collect();
        for (i, n) in numels.into_iter().enumerate() {
            let shard_len = self.optimizer.shards[i].len();
            for (moments, out) in [(&self.optimizer.exp_avg, &mut exp_avg), (&self.optimizer.exp_avg_sq, &mut exp_avg_sq)] {
                let mut local = self.model.backend.download(moments.tensors()[i]);
                local.truncate(shard_len);
                if let Some(full) = self.collective.gather_host(&local, n).context("cannot gather the optimizer state for a checkpoint")? {
                    out.push(full);
                }
            }
        }
        Ok(main.then(|| self.checkpoint_from(exp_avg, exp_avg_sq, extra_files)))
    }

    fn checkpoint_from(&self, exp_avg: Vec<Vec<f32>>, exp_avg_sq: Vec<Vec<f32>>, extra_files: Vec<PathBuf>) -> CheckpointData {
        let mut optimizer = Vec::new();
        for ((spec, m), v) in self.model.specs.tensors().into_iter().zip(exp_avg).zip(exp_avg_sq) {
            optimizer.extend(spec.split(&m, ".exp_avg"));
            optimizer.extend(spec.split(&v, ".exp_avg_sq"));
        }
        let mut state = self.state.clone();
        state.config = self.config.clone();
        state.rng = RngState { seed: self.config.seed, word_pos: self.rng.get_word_pos() as u64 };
        CheckpointData {
            config: self.model.config.clone(),
            weights: self.model.host_tensors(),
            optimizer,
            trainer_state: Some(serde_json::to_value(&state).expect("trainer state serialises")),
            extra_files,
        }
    }

    /// Continues from a checkpoint directory written by this trainer: weights, optimizer
    /// moments, step, tokens seen, RNG, and the data source's cursor (restored into
    /// `source`). The training config is the checkpoint's; change `trainer.config` afterwards
    /// to train on differently (later checkpoints record the change).
    pub fn resume(backend: B, checkpoint_dir: &Path, source: &mut dyn SequenceSource) -> Result<Self> {
        Self::resume_distributed(backend, checkpoint_dir, source, Box::new(SingleProcess::default()))
    }

    /// [`Trainer::resume`] as one of the data-parallel ranks `collective` connects; the world
    /// size may differ from the run that wrote the checkpoint (each rank takes its shard of the
    /// saved optimizer moments).
    pub fn resume_distributed(backend: B, checkpoint_dir: &Path, source: &mut dyn SequenceSource, collective: Box<dyn Collective<B>>) -> Result<Self> {
        let (model_config, weights) = checkpoint::load_hf_model(checkpoint_dir)?;
        let state_path = checkpoint_dir.join(checkpoint::TRAINER_STATE_FILE);
        let state: TrainerState = serde_json::from_value(checkpoint::read_json(&state_path)?)
            .with_context(|| format!("{} is not a trainer state", state_path.display()))?;
        let model = Llama::from_host_tensors(backend, model_config, &weights)?;
        let mut trainer = Self::from_model_distributed(model, state.config.clone(), collective)?;
        let optimizer_path = checkpoint_dir.join(checkpoint::OPTIMIZER_FILE);
        let moments: HashMap<String, HostTensor> = checkpoint::read_safetensors(&optimizer_path)?;
        let specs = trainer.model.specs.tensors().into_iter().cloned().collect::<Vec<_>>();
        let backend = &trainer.model.backend;
        for (suffix, buffers) in [(".exp_avg", &mut trainer.optimizer.exp_avg), (".exp_avg_sq", &mut trainer.optimizer.exp_avg_sq)] {
            for ((spec, buffer), shard) in specs.iter().zip(buffers.tensors_mut()).zip(&trainer.optimizer.shards) {
                let values = spec.join(&moments, suffix).with_context(|| format!("in {}", optimizer_path.display()))?;
                if !shard.is_empty() {
                    backend.write(buffer, &values[shard.clone()]);
                }
            }
        }
        trainer.optimizer.step = state.step;
        trainer.rng = ChaCha8Rng::seed_from_u64(state.rng.seed);
        trainer.rng.set_word_pos(state.rng.word_pos as u128);
        // A checkpoint taken before the first step has no cursor: the source starts at its start.
        if !state.data_cursor.is_null() {
            source.restore(&state.data_cursor).context("cannot restore the data cursor")?;
        }
        trainer.state = state;
        Ok(trainer)
    }
}

/// Appends one JSON object per line to a metrics file, flushing each line so a crash loses
/// nothing already reported.
pub struct MetricsWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl MetricsWriter {
    /// Opens `path` for appending (a resumed run continues the same file).
    pub fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open metrics file {}", path.display()))?;
        Ok(Self { file: std::io::BufWriter::new(file), path: path.to_path_buf() })
    }

    /// Opens `path` to continue a run resumed at optimizer step `step`: records of later steps
    /// (written before a crash, after the checkpoint resumed from) are dropped first, so the
    /// file reads as one uninterrupted run. The file is rewritten atomically. Records without a
    /// `step` field, or unreadable lines (a line cut by the crash), are dropped too.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read metrics file {}", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line).ok().and_then(|record| record["step"].as_u64()).is_some_and(|s| s <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            let temp = path.with_extension("jsonl.tmp");
            std::fs::write(&temp, kept).with_context(|| format!("cannot write {}", temp.display()))?;
            std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
        Self::append(path)
    }

    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(record)?;
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests;

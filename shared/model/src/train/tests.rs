use super::*;
use crate::checkpoint::{checkpoint_name, latest_checkpoint, load_hf_model, CheckpointWriter};
use crate::cpu::CpuBackend;
use crate::testutil::tiny_test_config;

fn trainer_config(total_steps: u64) -> TrainerConfig {
    TrainerConfig {
        seq_len: 8,
        micro_batch_size: 2,
        grad_accum_steps: 2,
        schedule: LrSchedule::MultiStep { peak_lr: 3e-2, warmup_steps: 2, total_steps },
        optimizer: AdamWConfig::default(),
        seed: 42,
    }
}

/// Sequences of `seq_len + 1` tokens following a simple rule (next = 3·previous + 1 mod vocab)
/// from varied starting tokens, so a model can learn them.
fn patterned_source(count: usize, seq_len: usize, vocab: u32) -> VecSource {
    let sequences = (0..count as u32)
        .map(|i| {
            let mut token = (i * 7) % vocab;
            (0..=seq_len)
                .map(|_| {
                    let current = token;
                    token = (3 * token + 1) % vocab;
                    current
                })
                .collect()
        })
        .collect();
    VecSource::new(sequences, true)
}

#[test]
fn resume_continues_bit_identically() {
    let (total, split) = (6, 3);
    let vocab = tiny_test_config().vocab_size as u32;

    let mut straight = Trainer::new(CpuBackend, tiny_test_config(), trainer_config(total)).unwrap();
    let mut source = patterned_source(13, 8, vocab);
    let straight_losses: Vec<u64> = (0..total).map(|_| straight.train_step(&mut source).unwrap().loss.to_bits()).collect();

    let run = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(CpuBackend, tiny_test_config(), trainer_config(total)).unwrap();
    let mut source = patterned_source(13, 8, vocab);
    let mut losses: Vec<u64> = (0..split).map(|_| first.train_step(&mut source).unwrap().loss.to_bits()).collect();
    let mut writer = CheckpointWriter::new();
    writer.save(run.path(), &checkpoint_name(first.state.step), first.checkpoint_data(vec![])).unwrap();
    // Training may go on while the checkpoint is written; this step's result is thrown away,
    // as if the process were killed.
    first.train_step(&mut source).unwrap();
    writer.wait().unwrap();
    drop(first);

    let latest = latest_checkpoint(run.path()).unwrap().unwrap();
    let mut source = patterned_source(13, 8, vocab);
    let mut resumed = Trainer::resume(CpuBackend, &latest, &mut source).unwrap();
    assert_eq!(resumed.state.step, split);
    losses.extend((split..total).map(|_| resumed.train_step(&mut source).unwrap().loss.to_bits()));
    assert_eq!(losses, straight_losses);
}

#[test]
fn losses_are_identical_for_any_thread_count() {
    let vocab = tiny_test_config().vocab_size as u32;
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut trainer = Trainer::new(CpuBackend, tiny_test_config(), trainer_config(3)).unwrap();
            let mut source = patterned_source(13, 8, vocab);
            (0..3).map(|_| trainer.train_step(&mut source).unwrap().loss.to_bits()).collect::<Vec<_>>()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}

#[test]
fn gradient_accumulation_matches_one_large_batch() {
    let vocab = tiny_test_config().vocab_size as u32;
    let mut accumulated_config = trainer_config(1);
    accumulated_config.grad_accum_steps = 3;
    accumulated_config.micro_batch_size = 2;
    let mut single_config = accumulated_config.clone();
    single_config.grad_accum_steps = 1;
    single_config.micro_batch_size = 6;
    let mut results = Vec::new();
    for config in [accumulated_config, single_config] {
        let mut trainer = Trainer::new(CpuBackend, tiny_test_config(), config).unwrap();
        let metrics = trainer.train_step(&mut patterned_source(6, 8, vocab)).unwrap();
        results.push((metrics, trainer.model.weights.lm_head.clone()));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!((a.0.loss - b.0.loss).abs() < 1e-6 && (a.0.grad_norm - b.0.grad_norm).abs() < 1e-5);
    let max_diff = a.1.iter().zip(&b.1).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max_diff < 1e-5, "weights differ by {max_diff}");
}

#[test]
fn training_learns_a_pattern_and_evaluation_reports_bits_per_byte() {
    let config = tiny_test_config();
    let vocab = config.vocab_size as u32;
    let mut trainer = Trainer::new(CpuBackend, config, trainer_config(40)).unwrap();
    let mut train = patterned_source(16, 8, vocab);
    let first = trainer.train_step(&mut train).unwrap();
    for _ in 0..39 {
        trainer.train_step(&mut train).unwrap();
    }
    let mut validation = patterned_source(4, 8, vocab);
    validation.cycle = false;
    let eval = trainer.evaluate(&mut validation, None, Some(100)).unwrap();
    println!("pattern: first loss {:.3}, validation loss after 40 steps {:.3}", first.loss, eval.loss);
    // The rule is deterministic, so the loss should fall far below the uniform ln(11) ≈ 2.4.
    assert!(first.loss > 2.0 && eval.loss < 0.5, "first {} validation {}", first.loss, eval.loss);
    assert_eq!(eval.tokens, 2 * 2 * 8);
    let bpb = eval.bits_per_byte.unwrap();
    assert!((bpb - eval.loss * 32.0 / std::f64::consts::LN_2 / 100.0).abs() < 1e-9);
}

#[test]
fn sequences_of_seq_len_leave_the_last_target_empty() {
    let mut trainer = Trainer::new(CpuBackend, tiny_test_config(), trainer_config(1)).unwrap();
    let mut source = VecSource::new(vec![(0..8).collect(); 6], false);
    let batch = trainer.read_batch(&mut source).unwrap().unwrap();
    assert_eq!(batch.targets[..8], [1, 2, 3, 4, 5, 6, 7, IGNORE_TARGET]);
    assert_eq!(batch.target_count(), 14);
    trainer.train_step(&mut source).unwrap();
    let error = trainer.train_step(&mut source).unwrap_err().to_string();
    assert!(error.contains("ran out"), "{error}");
}

#[test]
fn checkpoint_is_a_loadable_hugging_face_directory() {
    let config = tiny_test_config();
    let trainer = Trainer::new(CpuBackend, config.clone(), trainer_config(1)).unwrap();
    let run = tempfile::tempdir().unwrap();
    let extra = run.path().join("tokenizer.json");
    std::fs::write(&extra, "{}").unwrap();
    let dir = crate::checkpoint::save_checkpoint(run.path(), "export", &trainer.checkpoint_data(vec![extra])).unwrap();
    for file in ["model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json", "tokenizer.json"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let hf_config = crate::checkpoint::read_json(&dir.join("config.json")).unwrap();
    assert_eq!(hf_config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(hf_config["tie_word_embeddings"], false);
    let (loaded_config, tensors) = load_hf_model(&dir).unwrap();
    assert_eq!(loaded_config, config);
    assert!(tensors.contains_key("model.layers.1.self_attn.k_proj.weight"));
    let mut original = trainer.model;
    let mut loaded = Llama::from_host_tensors(CpuBackend, loaded_config, &tensors).unwrap();
    let batch = TokenBatch { batch_size: 1, seq_len: 5, inputs: vec![1, 2, 3, 4, 5], targets: vec![IGNORE_TARGET; 5] };
    assert_eq!(original.logits(&batch).unwrap(), loaded.logits(&batch).unwrap());
}

#[test]
fn metrics_lines_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    MetricsWriter::append(&path).unwrap().write(&serde_json::json!({"step": 1})).unwrap();
    MetricsWriter::append(&path).unwrap().write(&serde_json::json!({"step": 2})).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"step\":1}\n{\"step\":2}\n");
}

#[test]
fn metrics_resume_drops_what_came_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"step\":1}\n{\"step\":2,\"val_loss\":3.0}\n{\"step\":3}\n{\"step\":4,\"lo").unwrap();
    MetricsWriter::resume(&path, 2).unwrap().write(&serde_json::json!({"step": 3})).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"step\":1}\n{\"step\":2,\"val_loss\":3.0}\n{\"step\":3}\n");
}

/// The ZeRO-1 data-parallel trainer on N ranks (threads joined by the TCP collective) follows
/// one process with the same global batch; its checkpoint, written once, resumes in a world
/// of another size; validation split over the ranks gives the single process's loss.
#[test]
fn data_parallel_ranks_follow_one_process_and_resume_with_another_world_size() {
    use crate::dist::Collective;
    use crate::testutil::with_tcp_world;
    let (total, split) = (5u64, 3u64);
    let vocab = tiny_test_config().vocab_size as u32;
    // Six micro-batches a step: 2 ranks run 3 each, 3 ranks 2 each (uneven ZeRO-1 shards: the
    // 176-value embedding over 3 ranks).
    let config = move || TrainerConfig { grad_accum_steps: 6, ..trainer_config(total) };
    let val = move || VecSource::new(patterned_source(7, 8, vocab).sequences, false);
    let close = |a: f64, b: f64| (a - b).abs() <= 2e-5 * b.abs().max(1.0);

    let mut single = Trainer::new(CpuBackend, tiny_test_config(), config()).unwrap();
    let mut source = patterned_source(13, 8, vocab);
    let reference: Vec<f64> = (0..total).map(|_| single.train_step(&mut source).unwrap().loss).collect();
    let reference_val = single.evaluate(&mut val(), None, None).unwrap();
    assert!(reference[total as usize - 1] < reference[0], "the run learns: {reference:?}");

    let run = tempfile::tempdir().unwrap();
    for world_size in [2, 3] {
        let dir = run.path().join(format!("world{world_size}"));
        let results = with_tcp_world(world_size, move |collective| {
            let rank = Collective::<CpuBackend>::world(&collective).rank;
            let mut trainer = Trainer::new_distributed(CpuBackend, tiny_test_config(), config(), Box::new(collective)).unwrap();
            let mut source = patterned_source(13, 8, vocab);
            let mut losses: Vec<f64> = (0..split).map(|_| trainer.train_step(&mut source).unwrap().loss).collect();
            match trainer.gather_checkpoint(vec![]).unwrap() {
                Some(data) => {
                    assert_eq!(rank, 0, "only rank 0 gets the checkpoint to write");
                    crate::checkpoint::save_checkpoint(&dir, &checkpoint_name(split), &data).unwrap();
                }
                None => assert_ne!(rank, 0),
            }
            losses.extend((split..total).map(|_| trainer.train_step(&mut source).unwrap().loss));
            let val_loss = trainer.evaluate(&mut val(), None, None).unwrap();
            let weights: Vec<Vec<f32>> = trainer.model.host_tensors().into_iter().map(|(_, t)| t.data).collect();
            (losses, val_loss, weights)
        });
        for (rank, (losses, val_loss, weights)) in results.iter().enumerate() {
            for (step, (a, b)) in losses.iter().zip(&reference).enumerate() {
                assert!(close(*a, *b), "world {world_size} rank {rank} step {}: loss {a} vs one process's {b}", step + 1);
            }
            assert!(close(val_loss.loss, reference_val.loss) && val_loss.tokens == reference_val.tokens, "{val_loss:?} vs {reference_val:?}");
            assert_eq!(weights, &results[0].2, "rank {rank}'s weights differ from rank 0's after the all-gather");
        }

        // The checkpoint of N ranks resumed by one process: the same run goes on.
        let mut source = patterned_source(13, 8, vocab);
        let mut resumed = Trainer::resume(CpuBackend, &run.path().join(format!("world{world_size}")).join(checkpoint_name(split)), &mut source).unwrap();
        assert_eq!(resumed.state.step, split);
        for step in split..total {
            let loss = resumed.train_step(&mut source).unwrap().loss;
            assert!(close(loss, reference[step as usize]), "resumed from world {world_size}, step {}: {loss} vs {}", step + 1, reference[step as usize]);
        }
    }

    // A world size that does not divide the step's micro-batches is refused, naming both.
    let error = with_tcp_world(4, move |collective| {
        Trainer::new_distributed(CpuBackend, tiny_test_config(), config(), Box::new(collective)).err().map(|e| e.to_string())
    });
    let message = error[0].clone().expect("4 ranks cannot split 6 micro-batches");
    assert!(message.contains("6 micro-batches") && message.contains("4 processes"), "{message}");
}

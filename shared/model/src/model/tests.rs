use super::*;
use crate::cpu::CpuBackend;
use crate::testutil::{numeric_gradient, random_vec, relative_error, tiny_test_config};

fn random_batch(seed: u64, batch_size: usize, seq_len: usize, vocab: usize) -> TokenBatch {
    let tokens: Vec<u32> = random_vec(seed, batch_size * (seq_len + 1), 1.0)
        .iter()
        .map(|v| ((v.abs() * 1000.0) as usize % vocab) as u32)
        .collect();
    let mut batch = TokenBatch { batch_size, seq_len, inputs: vec![], targets: vec![] };
    for s in tokens.chunks(seq_len + 1) {
        batch.inputs.extend_from_slice(&s[..seq_len]);
        batch.targets.extend_from_slice(&s[1..]);
    }
    batch
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let config = tiny_test_config();
    let mut model = Llama::new_random(CpuBackend, config.clone(), 7).unwrap();
    let mut batch = random_batch(8, 2, 6, config.vocab_size);
    batch.targets[3] = IGNORE_TARGET;
    let loss = model.forward(&batch).unwrap();
    model.zero_grads();
    model.backward(1.0 / loss.tokens as f32);
    let grads: Vec<Vec<f32>> = model.grads.tensors().into_iter().cloned().collect();
    let names: Vec<String> = model.specs.tensors().iter().map(|s| s.name.clone()).collect();
    let (mut all_analytic, mut all_numeric) = (Vec::new(), Vec::new());
    for (t, name) in names.iter().enumerate() {
        let mut x = model.weights.tensors()[t].clone();
        let original = x.clone();
        let (indices, numeric) = numeric_gradient(&mut x, 6, 1e-2, |xi| {
            *model.weights.tensors_mut()[t] = xi.to_vec();
            model.forward(&batch).unwrap().mean()
        });
        *model.weights.tensors_mut()[t] = original;
        let analytic: Vec<f64> = indices.iter().map(|&i| grads[t][i] as f64).collect();
        let error = relative_error(&analytic, &numeric);
        println!("gradient check model {name}: relative error {error:.2e}");
        assert!(error < 2e-3, "{name}: relative error {error:.2e}");
        all_analytic.extend(analytic);
        all_numeric.extend(numeric);
    }
    let error = relative_error(&all_analytic, &all_numeric);
    println!("gradient check whole model: relative error {error:.2e}");
    assert!(error < 1e-3, "whole model: relative error {error:.2e}");
}

#[test]
fn forward_and_backward_are_identical_for_any_thread_count() {
    let config = tiny_test_config();
    let batch = random_batch(9, 3, 7, config.vocab_size);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut model = Llama::new_random(CpuBackend, config.clone(), 3).unwrap();
            let loss = model.forward(&batch).unwrap();
            model.zero_grads();
            model.backward(0.1);
            (loss.sum_nats.to_bits(), model.grads.tensors().into_iter().cloned().collect::<Vec<_>>())
        })
    };
    let one = run(1);
    assert!(one == run(2) && one == run(3));
}

#[test]
fn positions_do_not_see_the_future() {
    let config = tiny_test_config();
    let mut model = Llama::new_random(CpuBackend, config.clone(), 5).unwrap();
    let mut batch = random_batch(10, 1, 8, config.vocab_size);
    let before = model.logits(&batch).unwrap();
    batch.inputs[5] = (batch.inputs[5] + 1) % config.vocab_size as u32;
    let after = model.logits(&batch).unwrap();
    let v = config.vocab_size;
    assert_eq!(before[..5 * v], after[..5 * v], "logits before the changed token must not move");
    assert_ne!(before[5 * v..6 * v], after[5 * v..6 * v]);
}

#[test]
fn out_of_vocabulary_tokens_are_an_error() {
    let config = tiny_test_config();
    let mut model = Llama::new_random(CpuBackend, config.clone(), 5).unwrap();
    let mut batch = random_batch(10, 1, 4, config.vocab_size);
    batch.inputs[2] = 99;
    let error = model.forward(&batch).unwrap_err().to_string();
    assert!(error.contains("99"), "{error}");
}

/// Segment ids for rows of `seq_len` holding conversations of the given lengths, in order.
fn packed_segments(lengths: &[&[usize]], seq_len: usize) -> Vec<u32> {
    let mut ids = Vec::new();
    for (row, parts) in lengths.iter().enumerate() {
        let mut n = 0;
        for (i, &len) in parts.iter().enumerate() {
            ids.extend(std::iter::repeat_n((row * 10 + i) as u32, len));
            n += len;
        }
        assert_eq!(n, seq_len);
    }
    ids
}

#[test]
fn packed_sequences_give_the_losses_they_give_alone() {
    let config = tiny_test_config();
    let mut model = Llama::new_random(CpuBackend, config.clone(), 11).unwrap();
    let batch = random_batch(12, 2, 9, config.vocab_size);
    let segments = packed_segments(&[&[4, 5], &[2, 3, 4]], 9);
    model.forward_segmented(&batch, Some(&segments)).unwrap();
    let packed = model.token_losses().unwrap();
    let mut start = 0;
    while start < segments.len() {
        let end = (start..segments.len()).find(|&i| segments[i] != segments[start]).unwrap_or(segments.len());
        let alone = TokenBatch {
            batch_size: 1,
            seq_len: end - start,
            inputs: batch.inputs[start..end].to_vec(),
            targets: batch.targets[start..end].to_vec(),
        };
        model.forward(&alone).unwrap();
        for (a, b) in model.token_losses().unwrap().iter().zip(&packed[start..end]) {
            assert!((a - b).abs() < 1e-4, "segment at {start}: {a} vs {b}");
        }
        start = end;
    }
    // Without segments the later conversations see the earlier ones.
    model.forward(&batch).unwrap();
    assert!(model.token_losses().unwrap()[4..9].iter().zip(&packed[4..9]).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn packed_and_weighted_gradients_match_finite_differences() {
    let config = tiny_test_config();
    let mut model = Llama::new_random(CpuBackend, config.clone(), 13).unwrap();
    let batch = random_batch(14, 2, 6, config.vocab_size);
    let segments = packed_segments(&[&[3, 3], &[6]], 6);
    // Mixed signs, as DPO gives (chosen tokens down-weighted, rejected up).
    let scales: Vec<f32> = random_vec(15, 12, 1.0).iter().map(|s| s.signum() * (0.5 + s.abs())).collect();
    let objective = |model: &mut Llama<CpuBackend>| -> f64 {
        model.forward_segmented(&batch, Some(&segments)).unwrap();
        model.token_losses().unwrap().iter().zip(&scales).map(|(&l, &s)| l as f64 * s as f64).sum()
    };
    objective(&mut model);
    model.zero_grads();
    model.backward_weighted(&scales);
    let grads: Vec<Vec<f32>> = model.grads.tensors().into_iter().cloned().collect();
    let (mut all_analytic, mut all_numeric) = (Vec::new(), Vec::new());
    for t in 0..grads.len() {
        let mut x = model.weights.tensors()[t].clone();
        let original = x.clone();
        // A step of 3e-3: at 1e-2 the embedding's large gradients show 2e-3 of truncation error.
        let (indices, numeric) = numeric_gradient(&mut x, 4, 3e-3, |xi| {
            *model.weights.tensors_mut()[t] = xi.to_vec();
            objective(&mut model)
        });
        *model.weights.tensors_mut()[t] = original;
        all_analytic.extend(indices.iter().map(|&i| grads[t][i] as f64));
        all_numeric.extend(numeric);
    }
    let error = relative_error(&all_analytic, &all_numeric);
    println!("gradient check packed, weighted model: relative error {error:.2e}");
    assert!(error < 1e-3, "relative error {error:.2e}");
}

#[test]
fn fused_segmented_forward_backward_equals_forward_then_backward() {
    let config = tiny_test_config();
    let batch = random_batch(16, 2, 7, config.vocab_size);
    let segments = packed_segments(&[&[2, 5], &[7]], 7);
    let mut fused = Llama::new_random(CpuBackend, config.clone(), 17).unwrap();
    let mut split = Llama::new_random(CpuBackend, config, 17).unwrap();
    let a = fused.forward_backward_segmented(&batch, Some(&segments), 0.25).unwrap();
    let b = split.forward_segmented(&batch, Some(&segments)).unwrap();
    split.backward(0.25);
    assert_eq!(a, b);
    for (g, h) in fused.grads.tensors().into_iter().zip(split.grads.tensors()) {
        for (x, y) in g.iter().zip(h) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
    // Uniform row scales through the weighted path give the uniform gradient.
    let mut weighted = Llama::new_random(CpuBackend, tiny_test_config(), 17).unwrap();
    weighted.forward_segmented(&batch, Some(&segments)).unwrap();
    weighted.backward_weighted(&vec![0.25; 14]);
    for (g, h) in weighted.grads.tensors().into_iter().zip(split.grads.tensors()) {
        for (x, y) in g.iter().zip(h) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn overwriting_gradients_equals_zeroing_then_adding() {
    let config = tiny_test_config();
    let (first, second) = (random_batch(21, 2, 6, config.vocab_size), random_batch(22, 2, 6, config.vocab_size));
    // Two micro-batches accumulated, starting from gradients full of garbage.
    let run = |overwrite: bool| {
        let mut model = Llama::new_random(CpuBackend, config.clone(), 5).unwrap();
        for grad in model.grads.tensors_mut() {
            grad.iter_mut().for_each(|g| *g = f32::NAN);
        }
        if overwrite {
            model.overwrite_grads_next();
        } else {
            model.zero_grads();
        }
        model.forward_backward(&first, 0.1).unwrap();
        model.forward(&second).unwrap();
        model.backward(0.1);
        model.grads.tensors().into_iter().cloned().collect::<Vec<Vec<f32>>>()
    };
    let (zeroed, overwritten) = (run(false), run(true));
    assert!(overwritten.iter().flatten().all(|g| g.is_finite()), "a gradient kept the stale values");
    assert_eq!(zeroed, overwritten);
}

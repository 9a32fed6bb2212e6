//! Helpers shared by the unit tests.

use std::net::TcpListener;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;
use crate::dist::{TcpCollective, World};

/// `n` values from N(0, scale²), reproducible from `seed`.
pub fn random_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, scale).unwrap();
    (0..n).map(|_| normal.sample(&mut rng)).collect()
}

/// `‖a − b‖ / max(‖a‖, ‖b‖)`: the relative error of two gradients.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(a).max(norm(b)).max(1e-30)
}

/// A model small enough for finite differences, with GQA (4 query heads on 2 K/V heads).
pub fn tiny_test_config() -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 11,
        max_position_embeddings: 32,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        initializer_range: 0.3,
        bos_token_id: None,
        eos_token_id: None,
    }
}

/// Central finite differences of `loss` at up to `samples` evenly spread entries of `x`;
/// returns (indices, numeric gradients).
pub fn numeric_gradient(x: &mut [f32], samples: usize, eps: f32, mut loss: impl FnMut(&[f32]) -> f64) -> (Vec<usize>, Vec<f64>) {
    let stride = (x.len() / samples.max(1)).max(1);
    let indices: Vec<usize> = (0..x.len()).step_by(stride).take(samples).collect();
    let mut grads = Vec::new();
    for &i in &indices {
        let original = x[i];
        x[i] = original + eps;
        let plus = loss(x);
        x[i] = original - eps;
        let minus = loss(x);
        x[i] = original;
        grads.push((plus - minus) / (2.0 * eps as f64));
    }
    (indices, grads)
}

/// `world_size` ranks as threads on localhost, each running `body`.
pub fn with_tcp_world<T: Send + 'static>(world_size: usize, body: impl Fn(TcpCollective) -> T + Send + Sync + 'static) -> Vec<T> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::sync::Arc::new(body);
    let mut listener = Some(listener);
    let handles: Vec<_> = (0..world_size)
        .map(|rank| {
            let world = World { rank, world_size, local_rank: rank, master_addr: "127.0.0.1".into(), master_port: port, launcher: "torchrun" };
            let listener = if rank == 0 { listener.take() } else { None };
            let body = body.clone();
            std::thread::spawn(move || {
                let collective = match listener {
                    Some(listener) if world_size > 1 => TcpCollective::accept(world, listener).unwrap(),
                    _ => TcpCollective::connect(world).unwrap(),
                };
                body(collective)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}


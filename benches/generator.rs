//! Tokens per second of the generator, at a small but real size: a LLaMA of width 512, 8
//! layers, 8 query / 4 key-value heads, SwiGLU 1376, a 32000-token vocabulary (55M parameters),
//! on the default CPU backend (Flex).
//!
//! - Greedy decoding with the KV cache (prompt 16, 32 new tokens), batch 1 and 8. At batch 1
//!   every token reads every weight once, so the bound is memory bandwidth: the figure is
//!   tokens/s next to `bandwidth / weight bytes`, with the bandwidth measured in the same
//!   process (a multi-threaded sum over a 256 MB buffer, the best the machine's memory gives).
//! - A training step (teacher-forced forward, token NLL, backward) on 4 × 64 tokens. The figure
//!   is tokens/s and the GFLOP/s it implies (`6 · matmul parameters` per token, plus attention)
//!   next to the backend's own matmul rate on the MLP's `[256, 512] × [512, 1376]`.
//!
//! The figures are printed when run as a benchmark (`cargo bench -p rag-benches --bench
//! generator`); `cargo test` runs each case once as a smoke test.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rag_generator::{GenerationConfig, Llama, LlamaConfig};

const PROMPT: usize = 16;
const NEW: usize = 32;
const TRAIN_BATCH: usize = 4;
const TRAIN_LEN: usize = 64;

fn config() -> LlamaConfig {
    LlamaConfig::new(32000, 512, 8, 8, 4, 1376)
}

/// Parameters that take part in a matmul per token (all but the embedding lookup).
fn matmul_params(c: &LlamaConfig) -> f64 {
    let (d, hd, f) = (c.hidden_size as f64, c.head_dim() as f64, c.intermediate_size as f64);
    let (h, kv) = (c.num_attention_heads as f64, c.kv_heads() as f64);
    let layer = d * h * hd * 2.0 + d * kv * hd * 2.0 + 3.0 * d * f;
    c.num_hidden_layers as f64 * layer + d * c.vocab_size as f64
}

fn all_params(c: &LlamaConfig) -> f64 {
    matmul_params(c) + (c.hidden_size * c.vocab_size) as f64
}

fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    std::hint::black_box(t.into_data());
}

fn best_of<F: FnMut()>(rounds: usize, mut f: F) -> f64 {
    f();
    (0..rounds)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Read bandwidth in GB/s: the best of three multi-threaded sums over 256 MB of f32.
fn memory_read_gbps() -> f64 {
    use rayon::prelude::*;
    let data = vec![1.0f32; 64 << 20];
    let secs = best_of(3, || {
        let total: f32 = data
            .par_chunks(1 << 16)
            .map(|chunk| {
                let mut lanes = [0.0f32; 16];
                for block in chunk.chunks_exact(16) {
                    for (lane, x) in lanes.iter_mut().zip(block) {
                        *lane += x;
                    }
                }
                lanes.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(total);
    });
    (data.len() * 4) as f64 / secs / 1e9
}

fn prompts(batch: usize) -> Vec<Vec<u32>> {
    (0..batch).map(|b| (0..PROMPT).map(|i| (1 + 37 * (b * PROMPT + i) % 31000) as u32).collect()).collect()
}

fn greedy(model: &Llama<Flex>, batch: usize) -> usize {
    let generation = GenerationConfig {
        max_new_tokens: Some(NEW),
        min_new_tokens: Some(NEW),
        ..GenerationConfig::for_llama(model.config())
    };
    let out = model.generate(&prompts(batch), &generation).expect("valid prompts");
    out.sequences.len() * NEW
}

fn train_step(model: &Llama<Autodiff<Flex>>, ids: &Tensor<Autodiff<Flex>, 2, Int>) {
    let [b, t] = ids.dims();
    let mask = ids.ones_like();
    let logits = model.forward(ids.clone(), mask);
    let targets = ids.clone().narrow(1, 1, t - 1).reshape([b, t - 1, 1]);
    let logp = log_softmax(logits.narrow(1, 0, t - 1), 2).gather(2, targets);
    let grads = logp.mean().neg().backward();
    std::hint::black_box(grads);
}

fn print_figures(model: &Llama<Flex>, trainable: &Llama<Autodiff<Flex>>, ids: &Tensor<Autodiff<Flex>, 2, Int>) {
    let device = Default::default();
    let c = config();
    let bandwidth = memory_read_gbps();
    let bound = bandwidth * 1e9 / (all_params(&c) * 4.0);
    let rate = |batch: usize| {
        (batch * NEW) as f64
            / best_of(1, || {
                greedy(model, batch);
            })
    };
    let (one, eight) = (rate(1), rate(8));
    println!(
        "generator greedy decode, LLaMA 512x8 ({:.0}M params), prompt {PROMPT} + {NEW} new (prefill included): \
         batch 1 {one:.1} tokens/s; memory read {bandwidth:.1} GB/s bounds batch 1 at {bound:.1} tokens/s \
         (ratio {:.2}); batch 8 {eight:.1} tokens/s ({:.1}x batch 1)",
        all_params(&c) / 1e6,
        one / bound,
        eight / one
    );
    let (m, k, n) = (TRAIN_BATCH * TRAIN_LEN, c.hidden_size, c.intermediate_size);
    let a = Tensor::<Flex, 2>::random([m, k], Distribution::Default, &device);
    let b = Tensor::<Flex, 2>::random([k, n], Distribution::Default, &device);
    let gemm = 2.0 * (m * k * n) as f64 / best_of(5, || sync(a.clone().matmul(b.clone()))) / 1e9;
    let secs = best_of(1, || train_step(trainable, ids));
    let tokens = (TRAIN_BATCH * TRAIN_LEN) as f64;
    let attention = 4.0 * TRAIN_LEN as f64 * c.hidden_size as f64 * c.num_hidden_layers as f64;
    let gflops = tokens * 3.0 * (2.0 * matmul_params(&c) + attention) / secs / 1e9;
    println!(
        "generator training step (forward + NLL + backward), LLaMA 512x8, {TRAIN_BATCH} x {TRAIN_LEN} tokens: \
         {:.1} tokens/s, {gflops:.1} GFLOP/s; the backend's matmul on [{m}, {k}] x [{k}, {n}]: {gemm:.1} GFLOP/s \
         (ratio {:.2})",
        tokens / secs,
        gflops / gemm
    );
}

fn generator(c: &mut Criterion) {
    let device = Default::default();
    let model = Llama::<Flex>::init(&config(), 0.0, &device).expect("a valid config");
    let trainable = Llama::<Autodiff<Flex>>::init(&config(), 0.0, &device).expect("a valid config");
    let ids = Tensor::<Autodiff<Flex>, 2, Int>::random(
        [TRAIN_BATCH, TRAIN_LEN],
        Distribution::Uniform(1.0, 32000.0),
        &device,
    );
    if std::env::args().any(|a| a == "--bench") {
        print_figures(&model, &trainable, &ids);
    }
    let mut group = c.benchmark_group("generator");
    group.sample_size(10);
    for batch in [1, 8] {
        group.throughput(Throughput::Elements((batch * NEW) as u64));
        group.bench_function(format!("greedy_llama512x8_b{batch}_p{PROMPT}_n{NEW}_flex"), |b| {
            b.iter(|| greedy(&model, batch))
        });
    }
    group.throughput(Throughput::Elements((TRAIN_BATCH * TRAIN_LEN) as u64));
    group.bench_function(format!("train_step_llama512x8_b{TRAIN_BATCH}_s{TRAIN_LEN}_flex"), |b| {
        b.iter(|| train_step(&trainable, &ids))
    });
    group.finish();
}

criterion_group!(benches, generator);
criterion_main!(benches);

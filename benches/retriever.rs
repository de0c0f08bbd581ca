//! Passages encoded per second by the retriever's document encoder at MiniLM size (6 layers,
//! width 384, 12 heads, feed-forward 1536, 30522-token vocabulary), sequence length 128, batch
//! 32: the cost of building or refreshing an index.
//!
//! The figure: passages/s and the GFLOP/s they imply (counting the matmuls:
//! `L·s·(8d² + 4d·d_ff + 4s·d)` flops per passage, 2.87 GFLOP here), next to the rate of the
//! backend's own matmul on the encoder's largest product (`[32·128, 384] × [384, 1536]`),
//! measured in the same process: the encoder cannot beat its GEMM, and the gap is softmax,
//! LayerNorm, GELU and the attention's small batched products. Both CPU backends are measured
//! (Flex, the default, and NdArray) so the backend choice rests on numbers.

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rag_retriever::{BertConfig, BertInput, Encoder, Pooling};

const BATCH: usize = 32;
const LEN: usize = 128;

fn flops_per_passage(c: &BertConfig) -> f64 {
    let (d, i, s) = (c.hidden_size as f64, c.intermediate_size as f64, LEN as f64);
    c.num_hidden_layers as f64 * s * (8.0 * d * d + 4.0 * d * i + 4.0 * s * d)
}

fn input<B: Backend>(config: &BertConfig, device: &B::Device) -> BertInput<B> {
    let ids =
        Tensor::<B, 2, Int>::random([BATCH, LEN], Distribution::Uniform(1000.0, config.vocab_size as f64), device);
    BertInput { input_ids: ids, attention_mask: Tensor::ones([BATCH, LEN], device), token_type_ids: None }
}

fn sync<B: Backend>(t: Tensor<B, 2>) {
    std::hint::black_box(t.into_data());
}

/// Best of five `[32·128, d] × [d, d_ff]` products, GFLOP/s.
fn gemm_gflops<B: Backend>(config: &BertConfig, device: &B::Device) -> f64 {
    let (m, k, n) = (BATCH * LEN, config.hidden_size, config.intermediate_size);
    let a = Tensor::<B, 2>::random([m, k], Distribution::Default, device);
    let b = Tensor::<B, 2>::random([k, n], Distribution::Default, device);
    let mut best = f64::INFINITY;
    for round in 0..6 {
        let start = std::time::Instant::now();
        sync(a.clone().matmul(b.clone()));
        if round > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn measure<B: Backend>(name: &str, c: &mut Criterion) {
    let device = B::Device::default();
    let config = BertConfig::minilm_l6();
    let encoder = Encoder::<B>::init(&config, Pooling::Mean, true, &device).expect("a valid config");
    let input = input::<B>(&config, &device);
    sync(encoder.forward(input.clone())); // warm-up
    let start = std::time::Instant::now();
    sync(encoder.forward(input.clone()));
    let secs = start.elapsed().as_secs_f64();
    let rate = BATCH as f64 / secs;
    let gemm = gemm_gflops::<B>(&config, &device);
    println!(
        "retriever encode on {name}, MiniLM-L6 size, batch {BATCH} x {LEN} tokens: {rate:.1} passages/s, \
         {:.1} GFLOP/s; the backend's matmul on [{}, {}] x [{}, {}]: {gemm:.1} GFLOP/s (ratio {:.2})",
        rate * flops_per_passage(&config) / 1e9,
        BATCH * LEN,
        config.hidden_size,
        config.hidden_size,
        config.intermediate_size,
        rate * flops_per_passage(&config) / 1e9 / gemm,
    );
    let mut group = c.benchmark_group("retriever");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("encode_minilm_b{BATCH}_s{LEN}_{name}"), |b| {
        b.iter(|| sync(encoder.forward(input.clone())))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    measure::<Flex>("flex", c);
    measure::<NdArray>("ndarray", c);
}

criterion_group!(benches, encode);
criterion_main!(benches);

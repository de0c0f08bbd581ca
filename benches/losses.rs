//! Forward + backward of RAG-Token and RAG-Sequence at a realistic size: B = 8 questions, K = 5
//! documents, T = 32 target tokens, V = 50265 (BART's vocabulary), f32, on the CPU backends.
//!
//! The figure: bytes per second over the logits. A loss step must at least read the logits once
//! (forward) and write their gradient once (backward): 2 × B·K·T·V × 4 bytes = 515 MB. Criterion
//! prints the throughput over those bytes; the line printed first gives the machine's measured copy
//! bandwidth, the bound that throughput can approach but not pass.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Bool, Distribution, Int, Tensor, backend::AutodiffBackend};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use rag_losses::{NllConfig, Reduction, rag_sequence_nll, rag_token_nll};

const B: usize = 8;
const K: usize = 5;
const T: usize = 32;
const V: usize = 50265;

fn logits_bytes() -> usize {
    B * K * T * V * size_of::<f32>()
}

fn bench_backend<AB: AutodiffBackend>(group: &mut BenchmarkGroup<'_, WallTime>, backend: &str) {
    let device = Default::default();
    AB::seed(&device, 7);
    let logits = Tensor::<AB, 4>::random([B, K, T, V], Distribution::Normal(0.0, 2.0), &device);
    let scores = Tensor::<AB, 2>::random([B, K], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<AB, 2, Int>::random([B, T], Distribution::Uniform(0.0, V as f64), &device);
    let mask = Tensor::<AB, 2, Bool>::from_data(burn::tensor::TensorData::new(vec![true; B * T], [B, T]), &device);
    type Loss<AB> = fn(
        Tensor<AB, 4>,
        Tensor<AB, 2>,
        Tensor<AB, 2, Int>,
        Tensor<AB, 2, Bool>,
        &NllConfig,
    ) -> rag_losses::Result<Tensor<AB, 1>>;
    let runs: [(&str, Loss<AB>, f64); 3] = [
        ("rag_token", rag_token_nll::<AB>, 0.0),
        ("rag_token_smoothed", rag_token_nll::<AB>, 0.1),
        ("rag_sequence", rag_sequence_nll::<AB>, 0.0),
    ];
    for (name, loss_fn, eps) in runs {
        let config = NllConfig::new().with_label_smoothing(eps).with_reduction(Reduction::TokenMean);
        group.bench_function(format!("{name}/{backend}"), |bencher| {
            bencher.iter(|| {
                let logits = logits.clone().require_grad();
                let scores = scores.clone().require_grad();
                let loss = loss_fn(logits.clone(), scores.clone(), target.clone(), mask.clone(), &config)
                    .expect("valid inputs");
                let grads = loss.backward();
                let grad = logits.grad(&grads).expect("logits require grad");
                AB::sync(&device).expect("the CPU backends cannot fail to sync");
                std::hint::black_box(grad)
            })
        });
    }
}

fn losses(c: &mut Criterion) {
    let bytes = 2 * logits_bytes();
    println!(
        "rag-losses bench: B={B} K={K} T={T} V={V} f32; the logits must cross memory at least \
         once each way: {:.0} MB per step; measured copy bandwidth (bound): {:.1} GB/s",
        bytes as f64 / 1e6,
        rag_benches::copy_bandwidth_gbs(logits_bytes()),
    );
    let mut group = c.benchmark_group("loss_forward_backward");
    group.sample_size(10).throughput(Throughput::Bytes(bytes as u64));
    bench_backend::<Autodiff<Flex>>(&mut group, "flex");
    bench_backend::<Autodiff<NdArray>>(&mut group, "ndarray");
    group.finish();
}

criterion_group!(benches, losses);
criterion_main!(benches);

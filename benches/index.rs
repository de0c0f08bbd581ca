//! Exact (flat) search over 100k × 384 f32 vectors (MiniLM's width), for a batch of 64 queries: the
//! retrieval of one training step with a large batch, and the ground truth of every recall figure.
//!
//! The figure: GFLOP/s of the search, counting `2 · n · dim` flops per query, next to the machine's
//! measured peak multiply-add rate (all threads, registers only), the bound no search can pass,
//! and the general SGEMM kernel's rate (the `gemm` crate: the path of CPUs without AVX-512). On
//! AVX-512 the search's fused scan passes the SGEMM's rate; the gap to the peak is the vectors'
//! memory traffic and the top-k test.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rag_index::synthetic::Clustered;
use rag_index::{FlatIndex, Metric, VectorIndex};

const N: usize = 100_000;
const DIM: usize = 384;
const QUERIES: usize = 64;
const K: usize = 10;

fn flat_search(c: &mut Criterion) {
    let gemm = rag_benches::sgemm_gflops(1024);
    let peak = rag_benches::fma_peak_gflops();
    let dist = Clustered::new(DIM, 256, 0.6, 1);
    let mut index = FlatIndex::new(DIM, Metric::InnerProduct).expect("valid dim");
    let ids: Vec<u64> = (0..N as u64).collect();
    index.add(&ids, &dist.sample(N, 2)).expect("finite vectors");
    let queries = dist.sample(QUERIES, 3);
    let flops = 2 * N * DIM * QUERIES;
    // One timed run outside criterion, so the ratio to the bound is printed even in `--test` mode.
    let start = std::time::Instant::now();
    std::hint::black_box(index.search(&queries, K).expect("valid queries"));
    let secs = start.elapsed().as_secs_f64();
    let rate = flops as f64 / secs / 1e9;
    let peak = match peak {
        Some(p) => format!("multiply-add peak {p:.1} GFLOP/s (ratio {:.2})", rate / p),
        None => "multiply-add peak not measured (no AVX2 or AVX-512 here)".into(),
    };
    println!(
        "flat search {N}x{DIM}, {QUERIES} queries, k={K}: {rate:.1} GFLOP/s, {:.0} queries/s; on {} threads: \
         {peak}; the general SGEMM {gemm:.1} GFLOP/s (ratio {:.2})",
        QUERIES as f64 / secs,
        rayon::current_num_threads(),
        rate / gemm
    );
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    // Criterion's "elements" are flops here, so its thousands/s reading is a flop rate.
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function(format!("flat_search_{N}x{DIM}_q{QUERIES}_k{K}"), |b| {
        b.iter(|| std::hint::black_box(index.search(&queries, K).expect("valid queries")))
    });
    group.finish();
}

criterion_group!(benches, flat_search);
criterion_main!(benches);

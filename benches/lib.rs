//! Shared helpers for the criterion benches in this directory (one file per topic). Each bench
//! prints the figure it exists for next to its bound, measured in the same process.

use std::time::Instant;

/// Measured memory bandwidth of this machine in GB/s (10⁹ bytes per second): the best of a few
/// single-threaded copies of `bytes` bytes, counting the read and the write. This is the bound a
/// memory-bound kernel over `bytes` of data is compared with.
pub fn copy_bandwidth_gbs(bytes: usize) -> f64 {
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n * 4) as f64 / best / 1e9
}

/// Measured single-precision GEMM rate of this machine in GFLOP/s: every rayon thread multiplies
/// its own pair of `n × n` matrices with the SGEMM kernel that `rag_index::FlatIndex` uses
/// ([`rag_index::inner_products`]: the `gemm` crate, AVX-512 / AVX2 / scalar picked at run time);
/// the best of ten rounds after one warm-up (on a shared machine a single round can be half as
/// fast), counting `2n³` flops per product. This is the bound exact search is compared with.
pub fn sgemm_gflops(n: usize) -> f64 {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let a: Vec<f32> = (0..n * n).map(|i| ((i / n * 31 + i % n * 17) % 13) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i / n * 7 + i % n * 3) % 11) as f32 * 0.1).collect();
    let mut best = f64::INFINITY;
    for round in 0..11 {
        let start = Instant::now();
        (0..threads).into_par_iter().for_each(|_| {
            let mut c = vec![0f32; n * n];
            rag_index::inner_products(&a, &b, n, &mut c).expect("square matrices");
            std::hint::black_box(&c);
        });
        if round > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    (threads * 2 * n * n * n) as f64 / best / 1e9
}

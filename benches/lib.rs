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
/// (matrixmultiply through ndarray, AVX2/FMA picked at run time); the best of ten rounds after one
/// warm-up (on a shared machine a single round can be half as fast), counting `2n³` flops per
/// product. This is the bound exact search is compared with.
pub fn sgemm_gflops(n: usize) -> f64 {
    use ndarray::{Array2, linalg::general_mat_mul};
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let a = Array2::from_shape_fn((n, n), |(i, j)| ((i * 31 + j * 17) % 13) as f32 * 0.1);
    let b = Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let mut best = f64::INFINITY;
    for round in 0..11 {
        let start = Instant::now();
        (0..threads).into_par_iter().for_each(|_| {
            let mut c = Array2::<f32>::zeros((n, n));
            general_mat_mul(1.0, &a, &b, 0.0, &mut c);
            std::hint::black_box(&c);
        });
        if round > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    (threads * 2 * n * n * n) as f64 / best / 1e9
}

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

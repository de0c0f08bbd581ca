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

/// Measured peak single-precision multiply-add rate of this machine in GFLOP/s, the compute bound
/// of exact search: every rayon thread runs fused multiply-adds on 24 independent registers and
/// nothing else (AVX-512 where the CPU has it, else AVX2 with FMA), the best of five rounds,
/// counting 2 flops per lane. `None` on a CPU with neither (or off x86-64).
pub fn fma_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use rayon::prelude::*;
        let lanes = if std::arch::is_x86_feature_detected!("avx512f") {
            16
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            8
        } else {
            return None;
        };
        const STEPS: usize = 20_000_000;
        let threads = rayon::current_num_threads();
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            (0..threads).into_par_iter().for_each(|t| {
                std::hint::black_box(fma::run(lanes, STEPS, t as f32));
            });
            best = best.min(start.elapsed().as_secs_f64());
        }
        Some((threads * STEPS * fma::ACCUMULATORS * lanes * 2) as f64 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod fma {
    use std::arch::x86_64::{
        __m256, __m512, _mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps, _mm512_fmadd_ps,
        _mm512_reduce_add_ps, _mm512_set1_ps,
    };

    pub(crate) const ACCUMULATORS: usize = 24;

    /// `steps` rounds of one multiply-add into each accumulator; returns their sum so the work is
    /// kept. `lanes` (16 or 8) says which kernel [`super::fma_peak_gflops`] checked the CPU for.
    pub(crate) fn run(lanes: usize, steps: usize, seed: f32) -> f32 {
        // SAFETY: the caller checked AVX-512F (16 lanes) or AVX2 and FMA (8 lanes) at run time.
        unsafe { if lanes == 16 { avx512(steps, seed) } else { avx2(steps, seed) } }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512(steps: usize, seed: f32) -> f32 {
        let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(seed * 1e-9));
        let mut acc: [__m512; ACCUMULATORS] = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..steps {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2(steps: usize, seed: f32) -> f32 {
        let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(seed * 1e-9));
        // Of AVX2's 16 registers two hold the operands: 12 accumulators, run twice per step so
        // the count of multiply-adds matches the AVX-512 kernel's.
        let mut acc: [__m256; ACCUMULATORS / 2] = [_mm256_set1_ps(1.0); ACCUMULATORS / 2];
        for _ in 0..steps * 2 {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let sum = acc.iter().fold(_mm256_set1_ps(0.0), |s, &a| _mm256_add_ps(s, a));
        let mut out = [0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
}

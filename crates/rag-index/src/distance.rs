//! Inner products of two f32 vectors on the CPU's widest vector unit, picked at run time: the
//! distance HNSW search computes hundreds of times per query, exact rescoring, and norms.
//!
//! usearch's own f32 inner product (numkong's `nk_dot_f32_skylake` on AVX-512) widens every value
//! to f64 and sums into one register, 8 values per dependent multiply-add: 48% of an HNSW search's
//! samples in a profile here. These kernels keep f32 and four independent accumulators (64
//! values a step on AVX-512, 32 on AVX2), as FAISS's `fvec_inner_product` does. f32 sums of 384
//! products differ from the f64 ones in the last bits, as any two summation orders do.

#![allow(unsafe_code)]

/// `Σ a[i] · b[i]` over the shorter of the two slices (callers pass equal lengths).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// `(Σ a·b, Σ a·a, Σ b·b)`: the cosine metric's three sums in one pass.
pub(crate) fn dot_and_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    (kernels().dot_and_norms)(a, b)
}

/// `[q · b[0], q · b[1], q · b[2], q · b[3]]`: four inner products with one query, computed
/// together so that the four vectors are read from memory at once (HNSW's neighbours are rarely in
/// cache; measuring them one at a time waits on each first load in turn).
pub(crate) fn dots4(q: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    (kernels().dots4)(q, b)
}

/// A kernel of [`dot`]'s shape.
type Dot = fn(&[f32], &[f32]) -> f32;
/// A kernel of [`dots4`]'s shape.
type Dots4 = fn(&[f32], [&[f32]; 4]) -> [f32; 4];
/// A kernel of [`dot_and_norms`]'s shape.
type DotAndNorms = fn(&[f32], &[f32]) -> (f32, f32, f32);

/// The kernels this CPU runs, chosen on first use.
struct Kernels {
    dot: Dot,
    dot_and_norms: DotAndNorms,
    dots4: Dots4,
}

fn kernels() -> &'static Kernels {
    static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernels {
                    dot: x86::dot_avx512_checked,
                    dot_and_norms: x86::dot_and_norms_avx512_checked,
                    dots4: x86::dots4_avx512_checked,
                };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernels {
                    dot: x86::dot_avx2_checked,
                    dot_and_norms: x86::dot_and_norms_avx2_checked,
                    dots4: |q, b| b.map(|b| x86::dot_avx2_checked(q, b)),
                };
            }
        }
        Kernels {
            dot: dot_portable,
            dot_and_norms: dot_and_norms_portable,
            dots4: |q, b| b.map(|b| dot_portable(q, b)),
        }
    })
}

/// Eight independent accumulators, so the compiler vectorizes without reassociating one sum.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot_and_norms_portable(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    (dot_portable(a, b), dot_portable(a, a), dot_portable(b, b))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_add_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm512_add_ps, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps,
    };

    // The `_checked` wrappers are handed out only after `kernels` detected the instructions.
    pub(super) fn dot_avx512_checked(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: chosen only where AVX-512F was detected.
        unsafe { dot_avx512(a, b) }
    }

    pub(super) fn dot_and_norms_avx512_checked(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        // SAFETY: chosen only where AVX-512F was detected.
        unsafe { dot_and_norms_avx512(a, b) }
    }

    pub(super) fn dots4_avx512_checked(q: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: chosen only where AVX-512F was detected.
        unsafe { dots4_avx512(q, b) }
    }

    pub(super) fn dot_avx2_checked(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: chosen only where AVX2 and FMA were detected.
        unsafe { dot_avx2(a, b) }
    }

    pub(super) fn dot_and_norms_avx2_checked(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        // SAFETY: chosen only where AVX2 and FMA were detected.
        unsafe { dot_and_norms_avx2(a, b) }
    }

    /// Loads 16 values of `a` and `b` at `i`, or the `n - i < 16` left (zeros past them): the
    /// masked load reads no byte past the slice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load16(a: &[f32], b: &[f32], i: usize, n: usize) -> (__m512, __m512) {
        // SAFETY: lanes past `n - i` are masked off and never read; the others are below n.
        unsafe {
            if i + 16 <= n {
                (_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)))
            } else {
                let mask = ((1u32 << (n - i)) - 1) as u16;
                (_mm512_maskz_loadu_ps(mask, a.as_ptr().add(i)), _mm512_maskz_loadu_ps(mask, b.as_ptr().add(i)))
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let (x, y) = load16(a, b, i + 16 * j, n);
                *acc = _mm512_fmadd_ps(x, y, *acc);
            }
            i += 64;
        }
        let mut j = 0;
        while i < n {
            let (x, y) = load16(a, b, i, n);
            acc[j] = _mm512_fmadd_ps(x, y, acc[j]);
            (i, j) = (i + 16, j + 1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    }

    /// Two accumulators per vector (eight chains of multiply-adds), 32 values a step. The
    /// accumulators are named, never indexed by a counter, so that they stay in registers.
    #[target_feature(enable = "avx512f")]
    fn dots4_avx512(q: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        let n = b.iter().fold(q.len(), |n, b| n.min(b.len()));
        let mut even = [_mm512_setzero_ps(); 4];
        let mut odd = [_mm512_setzero_ps(); 4];
        let step = |acc: &mut [__m512; 4], i: usize| {
            for (acc, b) in acc.iter_mut().zip(b) {
                let (x, y) = load16(q, b, i, n);
                *acc = _mm512_fmadd_ps(x, y, *acc);
            }
        };
        let mut i = 0;
        while i + 32 <= n {
            step(&mut even, i);
            step(&mut odd, i + 16);
            i += 32;
        }
        if i < n {
            step(&mut even, i);
        }
        if i + 16 < n {
            step(&mut odd, i + 16);
        }
        [0, 1, 2, 3].map(|j| _mm512_reduce_add_ps(_mm512_add_ps(even[j], odd[j])))
    }

    #[target_feature(enable = "avx512f")]
    fn dot_and_norms_avx512(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let n = a.len().min(b.len());
        let (mut ab, mut aa, mut bb) = ([_mm512_setzero_ps(); 2], [_mm512_setzero_ps(); 2], [_mm512_setzero_ps(); 2]);
        let mut i = 0;
        let mut j = 0;
        while i < n {
            let (x, y) = load16(a, b, i, n);
            ab[j] = _mm512_fmadd_ps(x, y, ab[j]);
            aa[j] = _mm512_fmadd_ps(x, x, aa[j]);
            bb[j] = _mm512_fmadd_ps(y, y, bb[j]);
            (i, j) = (i + 16, j ^ 1);
        }
        let sum = |v: [__m512; 2]| _mm512_reduce_add_ps(_mm512_add_ps(v[0], v[1]));
        (sum(ab), sum(aa), sum(bb))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(_mm_hadd_ps(s, s))
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8j + 8 <= i + 32 <= n.
                let (x, y) =
                    unsafe { (_mm256_loadu_ps(a.as_ptr().add(i + 8 * j)), _mm256_loadu_ps(b.as_ptr().add(i + 8 * j))) };
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 <= n.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
        hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_and_norms_avx2(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let n = a.len().min(b.len());
        let (mut ab, mut aa, mut bb) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n.
            let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
            ab = _mm256_fmadd_ps(x, y, ab);
            aa = _mm256_fmadd_ps(x, x, aa);
            bb = _mm256_fmadd_ps(y, y, bb);
            i += 8;
        }
        let (mut t_ab, mut t_aa, mut t_bb) = (0f32, 0f32, 0f32);
        for (x, y) in a[i..n].iter().zip(&b[i..n]) {
            (t_ab, t_aa, t_bb) = (t_ab + x * y, t_aa + x * x, t_bb + y * y);
        }
        (hsum256(ab) + t_ab, hsum256(aa) + t_aa, hsum256(bb) + t_bb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU can run against an f64 reference, at lengths around each kernel's
    /// steps (8, 16, 32, 64) and a real width.
    #[test]
    fn every_kernel_matches_an_f64_sum() {
        let mut kernels: Vec<(&str, Dot, DotAndNorms)> = vec![("portable", dot_portable, dot_and_norms_portable)];
        let mut fours: Vec<(&str, Dots4)> = vec![("chosen", dots4)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", x86::dot_avx512_checked, x86::dot_and_norms_avx512_checked));
                fours.push(("avx512", x86::dots4_avx512_checked));
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(("avx2", x86::dot_avx2_checked, x86::dot_and_norms_avx2_checked));
            }
        }
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.37).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.21).collect();
            let exact = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
            let close = |got: f32, want: f64| (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs());
            for (name, dot, three) in &kernels {
                let d = dot(&a, &b);
                assert!(close(d, exact(&a, &b)), "{name} dot at n={n}: {d} vs {}", exact(&a, &b));
                let (ab, aa, bb) = three(&a, &b);
                assert!(
                    close(ab, exact(&a, &b)) && close(aa, exact(&a, &a)) && close(bb, exact(&b, &b)),
                    "{name} at n={n}"
                );
            }
            let others: Vec<Vec<f32>> =
                (1..=4).map(|s| (0..n).map(|i| ((i * (s + 2) % 17) as f32 - 8.0) * 0.13).collect()).collect();
            for (name, four) in &fours {
                let got = four(&a, [&b, &others[0], &others[1], &others[2]]);
                for (j, other) in [&b, &others[0], &others[1], &others[2]].into_iter().enumerate() {
                    assert!(
                        close(got[j], exact(&a, other)),
                        "{name} dots4[{j}] at n={n}: {} vs {}",
                        got[j],
                        exact(&a, other)
                    );
                }
            }
        }
    }
}

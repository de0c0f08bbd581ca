//! The one matrix product exact search needs, `scores = queries · rowsᵀ`, through the `gemm`
//! crate (the kernels Burn's CPU backend uses): it detects AVX-512, AVX2/FMA or neither at run
//! time, so one binary is right on every x86-64 CPU and fast on the one it runs on. Measured here
//! against the `matrixmultiply` kernel it replaced, on this machine's AVX-512 cores:
//! docs/index.md ("Exact search").
//!
//! `gemm`'s entry point takes raw pointers and strides; this module is the only place that calls
//! it, with every length checked first.

use crate::error::{IndexError, Result};

/// `out[q·n + r] = Σ_d queries[q·dim + d] · rows[r·dim + d]` for `m = queries.len() / dim` queries
/// and `n = rows.len() / dim` rows (both row-major), on the calling thread: the kernel exact
/// search runs (callers split the rows across threads), public so benchmarks measure the bound
/// search is compared with.
///
/// A length that is not a multiple of `dim`, or an `out` that is not `m · n` long, is an
/// [`IndexError::InvalidOption`] naming the slice.
pub fn inner_products(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) -> Result<()> {
    let bad = |field: &'static str, value: usize, reason: String| IndexError::InvalidOption {
        field,
        value: value.to_string(),
        reason,
    };
    if dim == 0 {
        return Err(bad("dim", dim, "must be at least 1".into()));
    }
    if !queries.len().is_multiple_of(dim) {
        return Err(bad("queries", queries.len(), format!("values: not a multiple of dim {dim}")));
    }
    if !rows.len().is_multiple_of(dim) {
        return Err(bad("rows", rows.len(), format!("values: not a multiple of dim {dim}")));
    }
    let (m, n) = (queries.len() / dim, rows.len() / dim);
    if out.len() != m * n {
        return Err(bad("out", out.len(), format!("values: {m} queries × {n} rows need {}", m * n)));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let signed = |x: usize| isize::try_from(x).expect("a slice length fits isize");
    // SAFETY: `gemm` reads `lhs` at `i·lhs_rs + p·lhs_cs` for i < m, p < dim: `queries` holds
    // m·dim values, row-major (row stride dim, column stride 1). It reads `rhs` (the transposed
    // rows, dim × n) at `p·rhs_rs + j·rhs_cs` = `j·dim + p` for p < dim, j < n: `rows` holds n·dim.
    // It writes `dst` at `i·dst_rs + j·dst_cs` = `i·n + j` < m·n = `out.len()`. The three slices
    // do not overlap (`out` is borrowed mutably), and `read_dst` is false, so `out`'s prior
    // contents are never read.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            out.as_mut_ptr(),
            1,
            signed(n),
            false,
            queries.as_ptr(),
            1,
            signed(dim),
            rows.as_ptr(),
            signed(dim),
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::inner_products;

    #[test]
    fn scores_are_the_inner_products_of_every_query_and_row() {
        // Sizes that are not multiples of any kernel's tile, and one of each degenerate shape.
        for (m, n, dim) in [(3, 5, 7), (1, 1, 1), (17, 33, 384), (64, 1, 9), (1, 100, 16)] {
            let q: Vec<f32> = (0..m * dim).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25).collect();
            let r: Vec<f32> = (0..n * dim).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.125).collect();
            let mut out = vec![f32::NAN; m * n];
            inner_products(&q, &r, dim, &mut out).expect("consistent lengths");
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..dim).map(|d| q[i * dim + d] * r[j * dim + d]).sum();
                    let got = out[i * n + j];
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "[{i}, {j}] of {m}x{n}x{dim}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn lengths_that_do_not_fit_are_errors_naming_the_slice() {
        let mut out = vec![0.0; 4];
        let err = inner_products(&[1.0; 6], &[1.0; 4], 2, &mut out).unwrap_err().to_string();
        assert!(err.contains("out"), "{err}");
        let err = inner_products(&[1.0; 5], &[1.0; 4], 2, &mut out).unwrap_err().to_string();
        assert!(err.contains("queries"), "{err}");
        let err = inner_products(&[1.0; 4], &[1.0; 3], 2, &mut out).unwrap_err().to_string();
        assert!(err.contains("rows"), "{err}");
        assert!(inner_products(&[], &[], 0, &mut []).is_err());
    }
}

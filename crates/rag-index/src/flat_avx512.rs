//! Exact search's scan on AVX-512: the scores and the top-k test fused, with no score matrix.
//!
//! The general path ([`crate::gemm::inner_products`] into a block of scores, then a scan of the
//! block) spends its time in a general SGEMM that packs both operands and writes every score to
//! memory before the heaps read it back. Exact search needs one product shape, `queries · rowsᵀ`
//! with both operands row-major along the dimension, and only the scores that beat a query's
//! current k-th best. So here:
//!
//! - the queries are packed once per search into panels of [`LANES`] queries, dimension-major
//!   (for each dimension, the panel's 16 values: one `zmm` load);
//! - the stored rows are read where they are, [`TILE_ROWS`] at a time, one value broadcast per
//!   fused multiply-add (`vfmadd231ps` with an embedded broadcast), so the 150 MB of a 100k × 384
//!   index is never copied;
//! - a micro-tile is 8 rows × 3 panels (48 queries): 24 registers of partial sums, each 16
//!   queries against one row, summed over [`DIM_CHUNK`] dimensions at a time so the tile's rows
//!   and panels stay in L1;
//! - the top-k test is one compare per row and panel against the panel's 16 thresholds, and only
//!   a score that beats some query's current k-th best leaves the registers: no score matrix is
//!   written or read back.
//!
//! Blocking: the rows are walked in blocks of [`ROW_BLOCK`](crate::ROW_BLOCK) (1.5 MiB at 384
//! dimensions, re-read from the last-level cache once per block of queries), the queries in
//! blocks of [`BLOCK_PANELS`] panels (360 KiB at 384 dimensions, kept in L2). The tile shape and
//! chunk were measured on this project's AVX-512 machine (docs/index.md): shapes from 8 × 3 to
//! 14 × 2 and chunks from 64 to the whole dimension ran at 98–108 GFLOP/s on one core, 8 × 3 with
//! chunks of 128 at the top of that range.
//!
//! This module is compiled on x86-64 only and entered only after [`available`] said the CPU has
//! AVX-512F; everywhere else exact search takes the general path, which dispatches AVX2 / scalar
//! kernels at run time.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, _CMP_GE_OQ, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};
use std::ops::Range;

use crate::vectors::{Candidate, TopK};

/// Queries per panel: the lanes of one `zmm` register.
pub(crate) const LANES: usize = 16;
/// Stored rows per micro-tile.
const TILE_ROWS: usize = 8;
/// Query panels per micro-tile: `TILE_ROWS · TILE_PANELS` accumulators held in registers (of
/// AVX-512's 32, `TILE_PANELS` more for the panels' values).
const TILE_PANELS: usize = 3;
/// Dimensions per pass over a micro-tile: 8 rows and 3 panels of 128 dimensions are 4 + 24 KiB,
/// which fit a 32 KiB L1 while the tile's partial sums go to memory between passes.
const DIM_CHUNK: usize = 128;
/// Query panels per block of queries (240 queries, a whole number of micro-tiles).
const BLOCK_PANELS: usize = 15;

/// Whether this CPU runs the AVX-512 scan (checked at run time; cached by the standard library).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Queries packed for the scan: panel `p` holds, for each dimension `d`, the values of queries
/// `16p .. 16p + 16` at `d` (zero past the last query).
pub(crate) struct PackedQueries {
    dim: usize,
    n_queries: usize,
    panels: usize,
    data: Vec<f32>,
}

impl PackedQueries {
    /// Packs `n_queries = queries.len() / dim` row-major queries.
    pub(crate) fn new(queries: &[f32], dim: usize) -> Self {
        let n_queries = queries.len() / dim;
        // A whole number of micro-tiles' panels; the padding queries are zero.
        let panels = n_queries.div_ceil(LANES).next_multiple_of(TILE_PANELS);
        let mut data = vec![0f32; panels * dim * LANES];
        for (q, values) in queries.chunks_exact(dim).enumerate() {
            let (panel, lane) = (q / LANES, q % LANES);
            let base = panel * dim * LANES + lane;
            for (d, &v) in values.iter().enumerate() {
                data[base + d * LANES] = v;
            }
        }
        Self { dim, n_queries, panels, data }
    }
}

/// The stored side of a scan: row-major vectors, their ids, and `1 / |row|` under the cosine
/// metric.
pub(crate) struct Rows<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) ids: &'a [u64],
    pub(crate) inv_norms: Option<&'a [f32]>,
}

/// The top `k` of rows `rows` for every packed query.
///
/// Panics if the CPU lacks AVX-512F (callers check [`available`]), or if `rows` is not within the
/// table.
pub(crate) fn scan(queries: &PackedQueries, table: &Rows<'_>, k: usize, rows: Range<usize>) -> Vec<TopK> {
    assert!(available(), "the AVX-512 scan called on a CPU without AVX-512F");
    let dim = queries.dim;
    assert!(rows.end * dim <= table.data.len() && rows.end <= table.ids.len(), "rows past the table");
    if let Some(inv) = table.inv_norms {
        assert!(rows.end <= inv.len(), "rows past the table's norms");
    }
    // SAFETY: AVX-512F is present (asserted above); every row index the scan forms is below
    // `rows.end`, whose vectors, ids and norms were just checked to be in the table.
    unsafe { scan_avx512(queries, table, k, rows) }
}

/// Per-search state of the top-k test: one heap and one threshold per query, the thresholds laid
/// out as the panels (`+inf` for the padding lanes, which therefore never pass).
struct Heaps {
    heaps: Vec<TopK>,
    thresholds: Vec<f32>,
}

#[target_feature(enable = "avx512f")]
unsafe fn scan_avx512(queries: &PackedQueries, table: &Rows<'_>, k: usize, rows: Range<usize>) -> Vec<TopK> {
    let dim = queries.dim;
    let mut state = Heaps {
        heaps: (0..queries.n_queries).map(|_| TopK::new(k)).collect(),
        thresholds: (0..queries.panels * LANES)
            .map(|q| if q < queries.n_queries { f32::NEG_INFINITY } else { f32::INFINITY })
            .collect(),
    };
    let panel_len = dim * LANES;
    let groups_per_block = BLOCK_PANELS / TILE_PANELS;
    let mut sums = vec![[[_mm512_setzero_ps(); TILE_PANELS]; TILE_ROWS]; groups_per_block];
    for block_start in rows.clone().step_by(crate::ROW_BLOCK) {
        let block_end = (block_start + crate::ROW_BLOCK).min(rows.end);
        for first_panel in (0..queries.panels).step_by(BLOCK_PANELS) {
            let groups = (first_panel..(first_panel + BLOCK_PANELS).min(queries.panels)).step_by(TILE_PANELS);
            let mut row = block_start;
            while row < block_end {
                let tile_rows = TILE_ROWS.min(block_end - row);
                sums.iter_mut().for_each(|s| *s = [[_mm512_setzero_ps(); TILE_PANELS]; TILE_ROWS]);
                for d0 in (0..dim).step_by(DIM_CHUNK) {
                    let chunk = DIM_CHUNK.min(dim - d0);
                    for (sum, panel) in sums.iter_mut().zip(groups.clone()) {
                        // SAFETY: panels `panel .. panel + TILE_PANELS` lie within `queries.data`
                        // (the panel count is a multiple of TILE_PANELS); rows `row .. row +
                        // tile_rows` are below `block_end <= rows.end`; `d0 + chunk <= dim`.
                        let (q, r) = unsafe {
                            (
                                queries.data.as_ptr().add(panel * panel_len + d0 * LANES),
                                table.data.as_ptr().add(row * dim + d0),
                            )
                        };
                        if tile_rows == TILE_ROWS {
                            // SAFETY: as above.
                            unsafe { tile::<TILE_ROWS>(q, panel_len, r, dim, chunk, sum) };
                        } else {
                            for (j, s) in sum[..tile_rows].iter_mut().enumerate() {
                                let one: &mut [[__m512; TILE_PANELS]; 1] =
                                    std::slice::from_mut(s).try_into().expect("one row");
                                // SAFETY: as above, for row `row + j < row + tile_rows`.
                                unsafe { tile::<1>(q, panel_len, r.add(j * dim), dim, chunk, one) };
                            }
                        }
                    }
                }
                for (sum, panel) in sums.iter().zip(groups.clone()) {
                    for (j, scores) in sum[..tile_rows].iter().enumerate() {
                        for (p, &s) in scores.iter().enumerate() {
                            // SAFETY: row + j < rows.end, and panel + p < panels.
                            unsafe { offer(s, panel + p, row + j, table, &mut state) };
                        }
                    }
                }
                row += tile_rows;
            }
        }
    }
    state.heaps
}

/// Adds to `sums` the partial inner products over `chunk` dimensions of `R` consecutive rows
/// (row-major, `dim` apart, starting at `rows`) with [`TILE_PANELS`] panels of 16 queries
/// (`panel_len` apart, starting at `panels`): `sums[j][p]` holds row `j` against panel `p`.
///
/// Safety: `panels + p·panel_len + d·16 .. + 16` must be readable for p < TILE_PANELS, d < chunk,
/// and `rows + j·dim + d` for j < R, d < chunk.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize>(
    panels: *const f32,
    panel_len: usize,
    rows: *const f32,
    dim: usize,
    chunk: usize,
    sums: &mut [[__m512; TILE_PANELS]; R],
) {
    let mut acc = *sums;
    for d in 0..chunk {
        let mut values = [_mm512_setzero_ps(); TILE_PANELS];
        for (p, v) in values.iter_mut().enumerate() {
            // SAFETY: p < TILE_PANELS and d < chunk (the function's contract).
            *v = unsafe { _mm512_loadu_ps(panels.add(p * panel_len + d * LANES)) };
        }
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: j < R and d < chunk (the function's contract).
            let x = _mm512_set1_ps(unsafe { *rows.add(j * dim + d) });
            for (a, &v) in a.iter_mut().zip(&values) {
                *a = _mm512_fmadd_ps(x, v, *a);
            }
        }
    }
    *sums = acc;
}

/// The top-k test of one row's scores against one panel: the 16 scores (scaled by `1 / |row|`
/// under cosine) against the panel's 16 thresholds in one compare; a query whose threshold the row
/// beats gets it in its heap, which raises the threshold.
///
/// Safety: `row` must be within `table`'s ids (and norms), and `panel` below the number of panels.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn offer(s: __m512, panel: usize, row: usize, table: &Rows<'_>, state: &mut Heaps) {
    let first = panel * LANES;
    // SAFETY: `thresholds` holds `panels · 16` values and panel < panels.
    let thresholds = unsafe { _mm512_loadu_ps(state.thresholds.as_ptr().add(first)) };
    let s = match table.inv_norms {
        // SAFETY: row < rows.end <= inv.len() (checked by `scan`).
        Some(inv) => _mm512_mul_ps(s, _mm512_set1_ps(unsafe { *inv.get_unchecked(row) })),
        None => s,
    };
    let mut passed = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(s, thresholds);
    if passed == 0 {
        return;
    }
    let mut values = [0f32; LANES];
    // SAFETY: `values` holds 16 floats.
    unsafe { _mm512_storeu_ps(values.as_mut_ptr(), s) };
    // SAFETY: row < rows.end <= ids.len() (checked by `scan`).
    let id = unsafe { *table.ids.get_unchecked(row) };
    while passed != 0 {
        let lane = passed.trailing_zeros() as usize;
        passed &= passed - 1;
        let q = first + lane;
        let heap = &mut state.heaps[q];
        heap.push(Candidate { score: values[lane], id, row });
        state.thresholds[q] = heap.threshold();
    }
}

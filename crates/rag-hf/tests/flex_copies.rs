//! The CPU backend's copy of a strided tensor into a contiguous one, which the workspace patches
//! (`vendor/burn-flex`: an N-D layout whose innermost dimension is contiguous is copied a run at
//! a time). Every permutation of a 4-D tensor, with and without a sliced offset, read back
//! element by element against index arithmetic: the patched path (inner runs of 4 or more), the
//! 2-D tiled path and the element-wise fallback (shorter runs) all go through here.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

/// Every permutation of `0..4`.
fn permutations() -> Vec<[usize; 4]> {
    let mut out = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let p = [a, b, c, d];
                    if (0..4).all(|i| p.contains(&i)) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn permuted_and_sliced_tensors_copy_to_the_values_index_arithmetic_gives() {
    let device = Default::default();
    // Inner dims of 5 and 8 take the run-at-a-time copy; 3 and 2 the element-wise one.
    for shape in [[2usize, 3, 4, 5], [3, 2, 5, 8], [2, 4, 3, 2], [1, 6, 2, 4]] {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let base = Tensor::<Flex, 4>::from_data(TensorData::new(values, shape), &device);
        let strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1];
        for axes in permutations() {
            // The whole tensor, then its second half along the outer dim (a non-zero offset).
            for first in [0, shape[0] / 2] {
                let view = base.clone().narrow(0, first, shape[0] - first).permute(axes);
                let dims = view.dims();
                let got = view.into_data().to_vec::<f32>().expect("f32 data");
                let mut want = Vec::with_capacity(got.len());
                for i in 0..dims[0] {
                    for j in 0..dims[1] {
                        for k in 0..dims[2] {
                            for l in 0..dims[3] {
                                let mut at = [0usize; 4];
                                for (pos, &index) in [i, j, k, l].iter().enumerate() {
                                    at[axes[pos]] = index;
                                }
                                at[0] += first;
                                want.push((0..4).map(|d| at[d] * strides[d]).sum::<usize>() as f32);
                            }
                        }
                    }
                }
                assert_eq!(got, want, "shape {shape:?}, permutation {axes:?}, offset row {first}");
            }
        }
    }
}

/// Merging attention heads, the copy the patch exists for: `[b, h, t, d]` → `[b, t, h·d]`.
#[test]
fn merged_heads_match_a_head_by_head_copy() {
    let device = Default::default();
    let (b, h, t, d) = (2, 4, 7, 16);
    let values: Vec<f32> = (0..b * h * t * d).map(|i| (i as f32 * 0.37).sin()).collect();
    let heads = Tensor::<Flex, 4>::from_data(TensorData::new(values.clone(), [b, h, t, d]), &device);
    let merged = heads.swap_dims(1, 2).reshape([b, t, h * d]).into_data().to_vec::<f32>().expect("f32 data");
    for (i, &x) in merged.iter().enumerate() {
        let (bi, rest) = (i / (t * h * d), i % (t * h * d));
        let (ti, rest) = (rest / (h * d), rest % (h * d));
        let (hi, di) = (rest / d, rest % d);
        assert_eq!(x, values[((bi * h + hi) * t + ti) * d + di], "element {i}");
    }
}

//! Pieces both architectures share: head splitting, masks and the per-layer key/value cache.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor};

/// `[b, t, heads·dh]` → `[b, heads, t, dh]`.
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, t, width] = x.dims();
    x.reshape([b, t, heads, width / heads]).swap_dims(1, 2)
}

/// Scaled dot-product attention of `q` `[b, h, tq, dh]` over `k`, `v` `[b, h, tk, dh]`;
/// `masked` `[b, 1, tq, tk]` is true where a query may not look. Returns `[b, tq, h·dh]`.
pub(crate) fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Tensor<B, 4, Bool>,
) -> Tensor<B, 3> {
    let [b, h, tq, dh] = q.dims();
    let tk = k.dims()[2];
    let masked = masked.expand([b, h, tq, tk]);
    attention(q, k, v, Some(masked), None, AttentionModuleOptions::default()).swap_dims(1, 2).reshape([b, tq, h * dh])
}

/// Grouped-query attention (Ainslie et al. 2023) of `q` `[b, kv·group, tq, dh]` over `k`, `v`
/// `[b, kv, tk, dh]`: query head `h` reads key/value head `h / group` (HF's `repeat_kv`
/// layout). The `group` query heads of a key/value head are stacked as `group · tq` queries
/// instead of copying the keys and values `group` times: only the mask, `tk` booleans per
/// query, is repeated. Returns `[b, tq, heads·dh]`.
pub(crate) fn attend_grouped<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    masked: Tensor<B, 4, Bool>,
    group: usize,
) -> Tensor<B, 3> {
    if group == 1 {
        return attend(q, k, v, masked);
    }
    let [b, h, tq, dh] = q.dims();
    let [_, kv, tk, _] = k.dims();
    let q = q.reshape([b, kv, group * tq, dh]);
    let masked = masked.expand([b, 1, tq, tk]).reshape([b, 1, 1, tq, tk]).expand([b, 1, group, tq, tk]);
    let masked = masked.reshape([b, 1, group * tq, tk]).expand([b, kv, group * tq, tk]);
    let out = attention(q, k, v, Some(masked), None, AttentionModuleOptions::default());
    // `[b, kv, group·tq, dh]` is `[b, kv·group, tq, dh]`: head `kv_index · group + g`.
    out.reshape([b, h, tq, dh]).swap_dims(1, 2).reshape([b, tq, h * dh])
}

/// The causal part of a mask for `n` new queries after `past` cached positions:
/// `[1, 1, n, past + n]`, true where the key comes after the query.
pub(crate) fn causal<B: Backend>(past: usize, n: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    Tensor::<B, 2, Bool>::tril_mask([n, past + n], past as i64, device).reshape([1, 1, n, past + n])
}

/// A padding mask on keys `[b, tk]` (true = padding) broadcast to `[b, 1, 1, tk]`.
pub(crate) fn key_padding<B: Backend>(padded: Tensor<B, 2, Bool>) -> Tensor<B, 4, Bool> {
    let [b, tk] = padded.dims();
    padded.reshape([b, 1, 1, tk])
}

/// One attention layer's cached keys and values, `[rows, heads, t, dh]` each.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Keys.
    pub keys: Tensor<B, 4>,
    /// Values.
    pub values: Tensor<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Appends new keys and values along the time axis.
    pub(crate) fn append(cache: &mut Option<Self>, keys: Tensor<B, 4>, values: Tensor<B, 4>) -> Self {
        let next = match cache.take() {
            Some(past) => {
                Self { keys: Tensor::cat(vec![past.keys, keys], 2), values: Tensor::cat(vec![past.values, values], 2) }
            }
            None => Self { keys, values },
        };
        *cache = Some(next.clone());
        next
    }

    /// Keeps the rows `rows` (in that order; a row may repeat).
    pub(crate) fn select_rows(self, rows: Tensor<B, 1, Int>) -> Self {
        Self { keys: self.keys.select(0, rows.clone()), values: self.values.select(0, rows) }
    }
}

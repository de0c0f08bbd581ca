//! `log p(y) = x_y − log Σ_v exp(x_v)` for every row of `[N, V]` logits in one pass over each
//! row, and its gradient `g · (onehot(y) − softmax(x))` in one more: the read every RAG and RA-DIT
//! loss makes of a vocabulary-sized tensor.
//!
//! Composed from Burn's tensor ops, the same value costs about fourteen passes over the logits
//! under autodiff (max, shift, exp and sum forward; a scatter, a broadcast and two products
//! backward, each a new tensor): 0.79 s for RAG-Token's loss over B 8, K 5, T 32, V 50,265
//! (58 times the memory-bound pass; PyTorch took 0.23 s). Here the forward reads each row once
//! from memory (its maximum, then `Σ exp` from cache, and the target's logit) and keeps one
//! normalizer per row; the backward reads the logits once more and writes the gradient once.
//!
//! Burn 0.21 has no way to add an operation with its own backward to code generic over the
//! backend. So this is a fast path for the CPU backend, `Flex` and `Autodiff<Flex>`, recognized
//! at run time by the tensor's type (`Any`), for f32 data, and with the feature `tch` for
//! LibTorch (`fused_tch.rs`): everything else (another backend, f64, a row without a finite
//! logit) gets `None` and the caller composes the ops, which the tests compare this with, value
//! and gradient.

use std::any::Any;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

/// Rows per rayon task: enough work per task at small vocabularies.
fn rows_per_task(vocab: usize) -> usize {
    (16_384 / vocab.max(1)).max(1)
}

/// `log softmax(logits)[n, target[n]]` `[N]` of `logits` `[N, V]`, differentiable in the logits,
/// or `None` when no fused kernel serves this backend, dtype or input (compose the ops then).
/// Ids must already be checked to lie in `[0, V)`; an id outside gives `None`.
pub(crate) fn target_log_probs<B: Backend>(logits: &Tensor<B, 2>, target: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1>> {
    if logits.dtype() != DType::F32 {
        return None;
    }
    let any: &dyn Any = logits;
    if let Some(logits) = any.downcast_ref::<Tensor<Autodiff<Flex>, 2>>() {
        return as_backend(tracked(logits.clone(), ids(target)?)?);
    }
    if let Some(logits) = any.downcast_ref::<Tensor<Flex, 2>>() {
        let logits = logits.clone().into_primitive().tensor().to_contiguous();
        let (values, _) = forward(&logits, &ids(target)?)?;
        return as_backend(Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(values)));
    }
    #[cfg(feature = "tch")]
    {
        use burn::backend::LibTorch;
        let target: &dyn Any = target;
        if let (Some(logits), Some(target)) = (
            any.downcast_ref::<Tensor<Autodiff<LibTorch<f32>>, 2>>(),
            target.downcast_ref::<Tensor<Autodiff<LibTorch<f32>>, 1, Int>>(),
        ) {
            return as_backend(crate::fused_tch::tracked(logits, target)?);
        }
        if let (Some(logits), Some(target)) =
            (any.downcast_ref::<Tensor<LibTorch<f32>, 2>>(), target.downcast_ref::<Tensor<LibTorch<f32>, 1, Int>>())
        {
            return as_backend(crate::fused_tch::untracked(logits, target)?);
        }
    }
    None
}

/// A tensor of the concrete backend `target_log_probs` recognized, as the caller's `Tensor<B, 1>`
/// (the same type: `None` cannot happen).
fn as_backend<C: Backend, B: Backend>(tensor: Tensor<C, 1>) -> Option<Tensor<B, 1>> {
    (Box::new(tensor) as Box<dyn Any>).downcast::<Tensor<B, 1>>().ok().map(|b| *b)
}

fn ids<B: Backend>(target: &Tensor<B, 1, Int>) -> Option<Arc<Vec<usize>>> {
    let data = target.to_data().convert::<i64>();
    let ids: Option<Vec<usize>> = data.iter::<i64>().map(|id| usize::try_from(id).ok()).collect();
    ids.map(Arc::new)
}

/// The forward pass over contiguous f32 `logits` `[N, V]`: the values `[N]` and each row's
/// `log Σ exp` (kept for the backward pass). `None` for an id out of range or a row whose
/// normalizer is not finite (a row of `-inf`, a NaN, an overflow).
fn forward(logits: &FlexTensor, target: &[usize]) -> Option<(FlexTensor, Arc<Vec<f32>>)> {
    let shape = logits.layout().shape();
    let (n, v) = (shape[0], shape[1]);
    let x: &[f32] = logits.as_slice()?;
    if target.len() != n || x.len() != n * v || target.iter().any(|&y| y >= v) {
        return None;
    }
    let mut values = vec![0f32; n];
    let mut norms = vec![0f32; n];
    let chunk = rows_per_task(v);
    x.par_chunks(v * chunk)
        .zip(target.par_chunks(chunk))
        .zip(values.par_chunks_mut(chunk).zip(norms.par_chunks_mut(chunk)))
        .for_each(|((rows, ys), (out, norms))| {
            for (((row, &y), value), norm) in rows.chunks_exact(v).zip(ys).zip(out).zip(norms) {
                let lse = log_sum_exp(row);
                *norm = lse;
                *value = row[y] - lse;
            }
        });
    if norms.iter().any(|l| !l.is_finite()) {
        return None;
    }
    Some((FlexTensor::from_data(TensorData::new(values, [n])), Arc::new(norms)))
}

/// `max + log Σ exp(x − max)` of one row.
fn log_sum_exp(row: &[f32]) -> f32 {
    pulp::Arch::new().dispatch(LogSumExp(row))
}

/// [`log_sum_exp`]'s loop, compiled once per instruction set `pulp` dispatches to (its body is
/// inlined into the function that enables the target features, so the loops vectorize with
/// AVX-512 or AVX2 where the CPU has them).
struct LogSumExp<'a>(&'a [f32]);

impl pulp::WithSimd for LogSumExp<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f32 {
        let row = self.0;
        let max = lanes_max(row);
        let mut acc = [0f32; 16];
        let chunks = row.chunks_exact(16);
        let tail: f32 = chunks.remainder().iter().map(|&x| exp(x - max)).sum();
        for c in chunks {
            for i in 0..16 {
                acc[i] += exp(c[i] - max);
            }
        }
        max + (acc.iter().sum::<f32>() + tail).ln()
    }
}

/// The largest value of a row, with sixteen independent lanes so it vectorizes.
#[inline(always)]
fn lanes_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// `exp(x)` for `x ≤ 0` (arguments here are shifted by the row's maximum) in branch-free f32
/// arithmetic that vectorizes: Cody–Waite range reduction `x = n·ln 2 + r`, Cephes' degree-6
/// polynomial for `e^r` on `|r| ≤ ln2/2` (relative error about 1e-7), `2^n` from the exponent
/// bits. Below −87.3 it returns about 1e-38 where `e^x` underflows to 0: nothing a sum of
/// probabilities can see.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·C1 is exact.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * C1 - n * C2;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // Wrapping integer ops: the dev profile's overflow checks would branch and stop the loop
    // from vectorizing (n lies in [-126, 128], so nothing wraps).
    let bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32).wrapping_add(127).wrapping_shl(23);
    e * f32::from_bits(bits as u32)
}

/// The backward pass's state: the logits (shared, not copied), the ids and the normalizers.
#[derive(Debug, Clone)]
struct Saved {
    logits: FlexTensor,
    target: Arc<Vec<usize>>,
    norms: Arc<Vec<f32>>,
}

#[derive(Debug)]
struct TargetLogProbs;

impl Backward<Flex, 1> for TargetLogProbs {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let Saved { logits, target, norms } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = grad.to_contiguous();
            let g: &[f32] = grad.as_slice().expect("a contiguous f32 gradient of an f32 output");
            let shape = logits.layout().shape();
            let (n, v) = (shape[0], shape[1]);
            let x: &[f32] = logits.as_slice().expect("saved contiguous in the forward pass");
            let mut out = vec![0f32; n * v];
            let chunk = rows_per_task(v);
            out.par_chunks_mut(v * chunk)
                .zip(x.par_chunks(v * chunk))
                .zip(target.par_chunks(chunk).zip(norms.par_chunks(chunk).zip(g.par_chunks(chunk))))
                .for_each(|((out, rows), (ys, (norms, gs)))| {
                    for ((((o, row), &y), &lse), &g) in
                        out.chunks_exact_mut(v).zip(rows.chunks_exact(v)).zip(ys).zip(norms).zip(gs)
                    {
                        softmax_gradient_row(o, row, lse, g);
                        o[y] += g;
                    }
                });
            FlexTensor::from_data(TensorData::new(out, [n, v]))
        });
    }
}

/// `out = −g · exp(row − lse)`: the softmax part of one row's gradient.
fn softmax_gradient_row(out: &mut [f32], row: &[f32], lse: f32, g: f32) {
    pulp::Arch::new().dispatch(SoftmaxGradient { out, row, lse, g })
}

/// [`softmax_gradient_row`]'s loop, dispatched like [`LogSumExp`].
struct SoftmaxGradient<'a> {
    out: &'a mut [f32],
    row: &'a [f32],
    lse: f32,
    g: f32,
}

impl pulp::WithSimd for SoftmaxGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (lse, g) = (self.lse, self.g);
        for (o, &x) in self.out.iter_mut().zip(self.row) {
            *o = -g * exp(x - lse);
        }
    }
}

/// The op on the autodiff backend: forward now, [`TargetLogProbs`] registered for backward.
fn tracked(logits: Tensor<Autodiff<Flex>, 2>, target: Arc<Vec<usize>>) -> Option<Tensor<Autodiff<Flex>, 1>> {
    let input = logits.into_primitive().tensor();
    let data = input.primitive.to_contiguous();
    let (values, norms) = forward(&data, &target)?;
    let output = match TargetLogProbs.prepare::<NoCheckpointing>([input.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(Saved { logits: data, target, norms }, values),
        OpsKind::UnTracked(prep) => prep.finish(values),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_is_within_a_few_ulps_of_the_library_exp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (f64::from(exp(x)), f64::from(x).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }
}

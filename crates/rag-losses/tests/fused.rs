//! The fused one-pass kernel (`Flex` / `Autodiff<Flex>`, f32) against the composed ops (the same
//! losses in f64, which never take the fused path): values and gradients of every loss that reads
//! the target's log-probability, over random shapes, including vocabularies that are not a
//! multiple of the kernel's 16 lanes, logits with `-inf` entries, and a row of `-inf` (which the
//! kernel hands back to the composed ops).

mod common;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use common::{Ad, Cpu, bools, floats, ints, values};
use proptest::collection::vec;
use proptest::prelude::*;
use rag_losses::{NllConfig, Reduction, lm_nll, rag_sequence_nll, rag_token_nll};

fn f32s<B: burn::tensor::backend::Backend, const D: usize>(data: &[f64], shape: [usize; D]) -> Tensor<B, D> {
    let data: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), (&Default::default(), DType::F32))
}

/// The largest difference relative to the largest magnitude (floored at 1).
fn relative(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[derive(Debug, Clone)]
struct Case {
    shape: (usize, usize, usize, usize),
    logits: Vec<f64>,
    scores: Vec<f64>,
    target: Vec<i64>,
    mask: Vec<bool>,
    eps: f64,
}

fn case() -> impl Strategy<Value = Case> {
    (1..=3usize, 1..=4usize, 1..=5usize, prop_oneof![1..=20usize, 30..=70usize, Just(1000usize)])
        .prop_flat_map(|(b, k, t, v)| {
            let n = b * k * t * v;
            (
                Just((b, k, t, v)),
                vec(prop_oneof![9 => -20.0..20.0f64, 1 => Just(f64::NEG_INFINITY)], n),
                vec(-3.0..3.0f64, b * k),
                vec(0..v as i64, b * t),
                vec(any::<bool>(), b * t),
                prop_oneof![Just(0.0), 0.05..0.3f64],
            )
        })
        .prop_map(|(shape, mut logits, scores, target, mask, eps)| {
            // The target's own logit finite (a -inf target gives an infinite loss on both paths).
            let (b, k, t, v) = shape;
            for bi in 0..b {
                for z in 0..k {
                    for ti in 0..t {
                        let y = target[bi * t + ti] as usize;
                        let at = ((bi * k + z) * t + ti) * v + y;
                        if logits[at].is_infinite() {
                            logits[at] = 0.5;
                        }
                    }
                }
            }
            Case { shape, logits, scores, target, mask, eps }
        })
}

type Loss<A> = fn(
    Tensor<A, 4>,
    Tensor<A, 2>,
    Tensor<A, 2, burn::tensor::Int>,
    Tensor<A, 2, burn::tensor::Bool>,
    &NllConfig,
) -> rag_losses::Result<Tensor<A, 1>>;

/// (loss values, logits gradient, doc-score gradient) of `loss` with logits and scores in `dtype`.
fn run<A: AutodiffBackend>(loss: Loss<A>, c: &Case, f64_inputs: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, k, t, v) = c.shape;
    let (logits, scores) = if f64_inputs {
        (floats::<A, 4>(&c.logits, [b, k, t, v]), floats::<A, 2>(&c.scores, [b, k]))
    } else {
        (f32s::<A, 4>(&c.logits, [b, k, t, v]), f32s::<A, 2>(&c.scores, [b, k]))
    };
    let (logits, scores) = (logits.require_grad(), scores.require_grad());
    let config = NllConfig::new().with_label_smoothing(c.eps).with_reduction(Reduction::None);
    let out = loss(logits.clone(), scores.clone(), ints(&c.target, [b, t]), bools(&c.mask, [b, t]), &config).unwrap();
    let grads = out.clone().sum().backward();
    (values(out), values(logits.grad(&grads).unwrap()), values(scores.grad(&grads).unwrap()))
}

fn agree<A: AutodiffBackend>(loss: Loss<A>, c: &Case) -> Result<(), TestCaseError> {
    let (l32, g32, s32) = run(loss, c, false);
    let (l64, g64, s64) = run(loss, c, true);
    prop_assert!(relative(&l32, &l64) < 2e-5, "losses {l32:?} vs {l64:?}");
    prop_assert!(relative(&g32, &g64) < 2e-5, "logits' gradient differs by {}", relative(&g32, &g64));
    prop_assert!(relative(&s32, &s64) < 2e-5, "doc scores' gradient differs by {}", relative(&s32, &s64));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn fused_rag_token_agrees_with_the_composed_ops(c in case()) {
        agree(rag_token_nll::<Ad>, &c)?;
    }

    #[test]
    fn fused_rag_sequence_agrees_with_the_composed_ops(c in case()) {
        agree(rag_sequence_nll::<Ad>, &c)?;
    }

    #[test]
    fn fused_lm_nll_and_lm_scores_agree_with_the_composed_ops(c in case()) {
        let (b, k, t, v) = c.shape;
        let rows = b * k;
        let target: Vec<i64> = (0..rows).flat_map(|r| c.target[(r / k) * t..(r / k + 1) * t].to_vec()).collect();
        let mask: Vec<bool> = (0..rows).flat_map(|r| c.mask[(r / k) * t..(r / k + 1) * t].to_vec()).collect();
        let config = NllConfig::new().with_label_smoothing(c.eps).with_reduction(Reduction::None);
        let lm = |f64_inputs: bool| {
            let logits = if f64_inputs { floats::<Ad, 3>(&c.logits, [rows, t, v]) } else { f32s::<Ad, 3>(&c.logits, [rows, t, v]) };
            let logits = logits.require_grad();
            let out = lm_nll(logits.clone(), ints(&target, [rows, t]), bools(&mask, [rows, t]), &config).unwrap();
            let grads = out.clone().sum().backward();
            (values(out), values(logits.grad(&grads).unwrap()))
        };
        let ((l32, g32), (l64, g64)) = (lm(false), lm(true));
        prop_assert!(relative(&l32, &l64) < 2e-5, "{l32:?} vs {l64:?}");
        prop_assert!(relative(&g32, &g64) < 2e-5, "gradient differs by {}", relative(&g32, &g64));
        // The plain backend (no autodiff) takes the fused forward too.
        let plain = |f64_inputs: bool| {
            let logits = if f64_inputs { floats::<Cpu, 4>(&c.logits, [b, k, t, v]) } else { f32s::<Cpu, 4>(&c.logits, [b, k, t, v]) };
            let config = NllConfig::new().with_reduction(Reduction::None);
            let lp = logits.reshape([rows, t, v]);
            values(lm_nll(lp, ints(&target, [rows, t]), bools(&mask, [rows, t]), &config).unwrap())
        };
        prop_assert!(relative(&plain(false), &plain(true)) < 2e-5);
    }
}

#[test]
fn a_row_without_a_finite_logit_takes_the_composed_ops() {
    // Document 0's row is all -inf: its normalizer is -inf, so the kernel declines and the
    // composed ops give what they give, whatever that is (the same on both paths).
    let (b, k, t, v) = (1, 2, 1, 5);
    let mut logits = vec![0.3; b * k * t * v];
    logits[..v].iter_mut().for_each(|x| *x = f64::NEG_INFINITY);
    let c = Case { shape: (b, k, t, v), logits, scores: vec![0.0, 0.0], target: vec![2], mask: vec![true], eps: 0.0 };
    let (l32, _, _) = run(rag_token_nll::<Ad>, &c, false);
    let (l64, _, _) = run(rag_token_nll::<Ad>, &c, true);
    assert_eq!(l32[0].is_nan(), l64[0].is_nan(), "{l32:?} vs {l64:?}");
    if !l64[0].is_nan() {
        assert!((l32[0] - l64[0]).abs() < 1e-5 * l64[0].abs().max(1.0), "{l32:?} vs {l64:?}");
    }
}

/// The LibTorch kernel (`fused_tch.rs`, feature `tch`: `scripts/libtorch.sh cargo test -p
/// rag-losses --features tch`) against the composed ops on the same backend.
#[cfg(feature = "tch")]
mod libtorch {
    use burn::backend::{Autodiff, LibTorch};
    use proptest::prelude::*;
    use rag_losses::{rag_sequence_nll, rag_token_nll};

    use super::{agree, case};

    type Torch = Autodiff<LibTorch<f32>>;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn fused_losses_on_libtorch_agree_with_the_composed_ops(c in case()) {
            agree(rag_token_nll::<Torch>, &c)?;
            agree(rag_sequence_nll::<Torch>, &c)?;
        }
    }
}

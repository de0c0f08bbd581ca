//! Property tests of invariants the losses must satisfy whatever their inputs.

mod common;

use burn::tensor::{Tensor, backend::Backend};
use common::reference::Problem;
use common::{Ad, Cpu, assert_close, bools, floats, ints, scalar, values};
use proptest::collection::vec;
use proptest::prelude::*;
use rag_losses::{KlDirection, LsrConfig, NllConfig, Reduction, lm_nll, lsr_loss, rag_sequence_nll, rag_token_nll};

const TOL: f64 = 1e-10;

fn problem(min_k: usize, max_k: usize) -> impl Strategy<Value = (Problem, f64)> {
    (1..=3usize, min_k..=max_k, 1..=4usize, 2..=6usize)
        .prop_flat_map(|(b, k, t, v)| {
            (
                Just((b, k, t, v)),
                vec(-4.0..4.0f64, b * k * t * v),
                vec(-3.0..3.0f64, b * k),
                vec(0..v as i64, b * t),
                vec(any::<bool>(), b * t),
                prop_oneof![Just(0.0), 0.01..0.4f64],
            )
        })
        .prop_map(|((b, k, t, v), logits, scores, target, mask, eps)| {
            (Problem { b, k, t, v, logits, scores, target, mask }, eps)
        })
}

fn per_example<B: Backend>(p: &Problem, eps: f64, token: bool) -> Vec<f64> {
    let f = if token { rag_token_nll::<B> } else { rag_sequence_nll::<B> };
    values(
        f(
            floats(&p.logits, [p.b, p.k, p.t, p.v]),
            floats(&p.scores, [p.b, p.k]),
            ints(&p.target, [p.b, p.t]),
            bools(&p.mask, [p.b, p.t]),
            &NllConfig::new().with_label_smoothing(eps),
        )
        .unwrap(),
    )
}

/// The problem with documents reordered by `perm` (scores and logits together).
fn permuted(p: &Problem, perm: &[usize]) -> Problem {
    let block = p.t * p.v;
    let mut q = p.clone();
    for b in 0..p.b {
        for (z, &from) in perm.iter().enumerate() {
            q.scores[b * p.k + z] = p.scores[b * p.k + from];
            let (dst, src) = ((b * p.k + z) * block, (b * p.k + from) * block);
            q.logits[dst..dst + block].copy_from_slice(&p.logits[src..src + block]);
        }
    }
    q
}

/// The problem without document `drop`.
fn without_doc(p: &Problem, drop: usize) -> Problem {
    let block = p.t * p.v;
    let mut q = p.clone();
    q.k -= 1;
    q.scores.clear();
    q.logits.clear();
    for b in 0..p.b {
        for z in (0..p.k).filter(|&z| z != drop) {
            q.scores.push(p.scores[b * p.k + z]);
            let src = (b * p.k + z) * block;
            q.logits.extend_from_slice(&p.logits[src..src + block]);
        }
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With one document, RAG-Token = RAG-Sequence = the plain LM NLL, whatever the score.
    #[test]
    fn one_document_makes_every_loss_the_plain_nll((p, eps) in problem(1, 1)) {
        let token = per_example::<Cpu>(&p, eps, true);
        let sequence = per_example::<Cpu>(&p, eps, false);
        let lm = values(lm_nll::<Cpu>(
            floats(&p.logits, [p.b, p.t, p.v]),
            ints(&p.target, [p.b, p.t]),
            bools(&p.mask, [p.b, p.t]),
            &NllConfig::new().with_label_smoothing(eps),
        ).unwrap());
        assert_close("token vs lm", &token, &lm, TOL);
        assert_close("sequence vs lm", &sequence, &lm, TOL);
    }

    /// Reordering documents (scores and logits together) changes nothing.
    #[test]
    fn permuting_documents_leaves_losses_unchanged((p, eps) in problem(2, 5), rot in 1..5usize) {
        let perm: Vec<usize> = (0..p.k).map(|z| (z + rot) % p.k).rev().collect();
        let q = permuted(&p, &perm);
        for token in [true, false] {
            assert_close("permuted", &per_example::<Cpu>(&q, eps, token), &per_example::<Cpu>(&p, eps, token), TOL);
        }
    }

    /// `p(z|x)` is a softmax: a constant added to an example's scores changes nothing.
    #[test]
    fn shifting_doc_scores_leaves_losses_unchanged((p, eps) in problem(1, 5), shift in -50.0..50.0f64) {
        let mut q = p.clone();
        for s in &mut q.scores[..p.k] {
            *s += shift;
        }
        for token in [true, false] {
            assert_close("shifted", &per_example::<Cpu>(&q, eps, token), &per_example::<Cpu>(&p, eps, token), 1e-9);
        }
    }

    /// RAG-Sequence: ∂loss/∂s_z = p(z|x) − p(z|x,y) (prior − posterior), per example.
    #[test]
    fn rag_sequence_doc_gradient_is_prior_minus_posterior((p, _) in problem(1, 5)) {
        let scores = floats::<Ad, 2>(&p.scores, [p.b, p.k]).require_grad();
        let loss = rag_sequence_nll(
            floats::<Ad, 4>(&p.logits, [p.b, p.k, p.t, p.v]),
            scores.clone(),
            ints(&p.target, [p.b, p.t]),
            bools(&p.mask, [p.b, p.t]),
            &NllConfig::new().with_reduction(Reduction::Sum),
        ).unwrap();
        let g = values(scores.grad(&loss.backward()).unwrap());
        for b in 0..p.b {
            let expected: Vec<f64> = p.prior_probs(b).iter().zip(p.sequence_posterior(b)).map(|(a, c)| a - c).collect();
            assert_close(&format!("example {b}"), &g[b * p.k..(b + 1) * p.k], &expected, TOL);
        }
    }

    /// A `-inf` doc score is the same as removing the document, and no gradient becomes NaN.
    #[test]
    fn minus_infinity_score_removes_the_document((p, eps) in problem(2, 5), drop_seed in 0..5usize) {
        let drop = drop_seed % p.k;
        let mut q = p.clone();
        for b in 0..p.b {
            q.scores[b * p.k + drop] = f64::NEG_INFINITY;
        }
        let removed = without_doc(&p, drop);
        for token in [true, false] {
            assert_close("-inf vs removed", &per_example::<Cpu>(&q, eps, token), &per_example::<Cpu>(&removed, eps, token), TOL);
            let generator = floats::<Ad, 4>(&q.logits, [q.b, q.k, q.t, q.v]).require_grad();
            let scores = floats::<Ad, 2>(&q.scores, [q.b, q.k]).require_grad();
            let f = if token { rag_token_nll::<Ad> } else { rag_sequence_nll::<Ad> };
            let loss = f(generator.clone(), scores.clone(), ints(&q.target, [q.b, q.t]), bools(&q.mask, [q.b, q.t]),
                &NllConfig::new().with_label_smoothing(eps).with_reduction(Reduction::Sum)).unwrap();
            let grads = loss.backward();
            let all: Vec<f64> = values(generator.grad(&grads).unwrap()).into_iter().chain(values(scores.grad(&grads).unwrap())).collect();
            prop_assert!(all.iter().all(|g| g.is_finite()), "NaN or inf gradient with a -inf doc score");
        }
    }

    /// The LSR loss is zero when the retriever already agrees with the LM, in both directions.
    #[test]
    fn lsr_vanishes_when_distributions_agree(scores in vec(-3.0..3.0f64, 4), tau in 0.2..2.0f64) {
        for direction in [KlDirection::LsrToRetriever, KlDirection::RetrieverToLsr] {
            let config = LsrConfig::new()
                .with_retriever_temperature(tau)
                .with_lm_temperature(2.0 * tau)
                .with_direction(direction);
            let lm: Vec<f64> = scores.iter().map(|s| 2.0 * s).collect();
            let loss = lsr_loss::<Cpu>(floats(&scores, [1, 4]), floats(&lm, [1, 4]), &config).unwrap();
            prop_assert!(scalar(loss).abs() < TOL);
        }
    }
}

/// Logits of magnitude 1e4 in f32 (the default dtype) give finite losses and gradients.
#[test]
fn huge_logits_stay_finite_in_f32() {
    let (b, k, t, v) = (2, 3, 4, 7);
    let device = Default::default();
    let logits: Vec<f32> = (0..b * k * t * v).map(|i| if i % 3 == 0 { 1e4 } else { -1e4 + i as f32 }).collect();
    let generator =
        Tensor::<Ad, 4>::from_data(burn::tensor::TensorData::new(logits, [b, k, t, v]), &device).require_grad();
    let scores =
        Tensor::<Ad, 2>::from_floats([[1e4, -1e4, 0.0], [3.0, f32::NEG_INFINITY, 1.0]], &device).require_grad();
    let target = Tensor::<Ad, 2, burn::tensor::Int>::from_ints([[1, 2, 3, 4], [0, 6, 5, 1]], &device);
    let mask = Tensor::<Ad, 2, burn::tensor::Bool>::from_bool(
        burn::tensor::TensorData::from([[true, true, true, false], [true, true, true, true]]),
        &device,
    );
    for token in [true, false] {
        for eps in [0.0, 0.1] {
            let f = if token { rag_token_nll::<Ad> } else { rag_sequence_nll::<Ad> };
            let loss = f(
                generator.clone(),
                scores.clone(),
                target.clone(),
                mask.clone(),
                &NllConfig::new().with_label_smoothing(eps).with_reduction(Reduction::TokenMean),
            )
            .unwrap();
            let value = values(loss.clone());
            assert!(value.iter().all(|x| x.is_finite()), "token={token} eps={eps}: loss {value:?}");
            let grads = loss.backward();
            for g in values(generator.grad(&grads).unwrap()).into_iter().chain(values(scores.grad(&grads).unwrap())) {
                assert!(g.is_finite(), "token={token} eps={eps}: gradient {g}");
            }
        }
    }
}

/// Bad inputs are errors that name the tensor or option, never panics.
#[test]
fn bad_inputs_are_named_errors() {
    let generator = floats::<Cpu, 4>(&[0.0; 24], [1, 2, 3, 4]);
    let target = ints::<Cpu, 2>(&[0, 1, 2], [1, 3]);
    let mask = bools::<Cpu, 2>(&[true; 3], [1, 3]);
    let config = NllConfig::new();

    let wrong_scores = floats::<Cpu, 2>(&[0.0; 3], [1, 3]);
    let e = rag_token_nll(generator.clone(), wrong_scores, target.clone(), mask.clone(), &config).unwrap_err();
    assert!(e.to_string().contains("doc_scores") && e.to_string().contains("K=2"), "{e}");

    let scores = floats::<Cpu, 2>(&[0.0; 2], [1, 2]);
    let out_of_vocab = ints::<Cpu, 2>(&[0, 4, 2], [1, 3]);
    let e = rag_sequence_nll(generator.clone(), scores.clone(), out_of_vocab, mask.clone(), &config).unwrap_err();
    assert!(e.to_string().contains("token id 4") && e.to_string().contains("[0, 4)"), "{e}");

    let short_mask = bools::<Cpu, 2>(&[true; 2], [1, 2]);
    let e = rag_token_nll(generator.clone(), scores.clone(), target.clone(), short_mask, &config).unwrap_err();
    assert!(e.to_string().contains("target_mask"), "{e}");

    let e = rag_token_nll(
        generator.clone(),
        scores.clone(),
        target.clone(),
        mask.clone(),
        &config.clone().with_label_smoothing(1.5),
    )
    .unwrap_err();
    assert!(e.to_string().contains("label_smoothing"), "{e}");

    let e = rag_losses::split_docs(floats::<Cpu, 3>(&[0.0; 36], [3, 3, 4]), 2).unwrap_err();
    assert!(e.to_string().contains("K=2"), "{e}");

    // HF's entry point shifts the target inside; the error still names the user's position.
    let hf_target = ints::<Cpu, 2>(&[0, 5, 2], [1, 3]);
    let e = rag_losses::hf::rag_token_get_nll(
        floats::<Cpu, 3>(&[0.0; 24], [2, 3, 4]),
        scores.clone(),
        hf_target,
        &rag_losses::hf::HfNllOptions::new(1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("token id 5 at flat position 1"), "{e}");

    let e =
        lsr_loss(scores.clone(), scores.clone(), &LsrConfig::new().with_reduction(Reduction::TokenMean)).unwrap_err();
    assert!(e.to_string().contains("reduction"), "{e}");
    let e = lsr_loss(scores.clone(), scores, &LsrConfig::new().with_lm_temperature(0.0)).unwrap_err();
    assert!(e.to_string().contains("lm_temperature"), "{e}");
}

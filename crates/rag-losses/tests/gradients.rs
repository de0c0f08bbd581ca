//! Property tests: every loss's autodiff gradient against central finite differences in f64, over
//! random shapes (B, K, T, V), masks, label smoothing, temperatures and both KL directions; and
//! every loss's value against the naive host reference in `common/reference.rs`.
//!
//! Finite differences are taken along random directions (one directional derivative checks every
//! coordinate at once) and along every doc-score coordinate, with h = 1e-6.

mod common;

use burn::tensor::{Tensor, backend::Backend};
use common::reference::{Problem, kl};
use common::{Ad, Cpu, assert_close, bools, floats, ints, log_softmax_rows, logsumexp, scalar, values};
use proptest::collection::vec;
use proptest::prelude::*;
use rag_losses::hf::{HfNllOptions, rag_sequence_get_nll, rag_token_get_nll};
use rag_losses::{
    GeneratorOutput, KlDirection, LmScore, LsrConfig, NllConfig, Reduction, lm_nll, lm_scores, lsr_loss,
    parallel_marginal_log_likelihood, rag_sequence_nll, rag_token_nll,
};

const H: f64 = 1e-6;
const FD_TOL: f64 = 1e-6;
const VALUE_TOL: f64 = 1e-10;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

/// A random RAG problem with directions for the finite differences.
#[derive(Debug, Clone)]
struct Case {
    p: Problem,
    eps: f64,
    log_prob_input: bool,
    reduction: Reduction,
    dir_logits: Vec<f64>,
}

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![Just(Reduction::None), Just(Reduction::Sum), Just(Reduction::TokenMean), Just(Reduction::BatchMean)]
}

fn case(max_k: usize) -> impl Strategy<Value = Case> {
    (1..=3usize, 1..=max_k, 1..=4usize, 2..=6usize)
        .prop_flat_map(|(b, k, t, v)| {
            let n = b * k * t * v;
            (
                (Just((b, k, t, v)), vec(-4.0..4.0f64, n), vec(-3.0..3.0f64, b * k)),
                (vec(0..v as i64, b * t), vec(any::<bool>(), b * t)),
                (prop_oneof![Just(0.0), 0.01..0.4f64], any::<bool>(), reduction()),
                vec(-1.0..1.0f64, n),
            )
        })
        .prop_map(|(((b, k, t, v), logits, scores), (target, mask), (eps, lp, reduction), dir)| Case {
            p: Problem { b, k, t, v, logits, scores, target, mask },
            eps,
            log_prob_input: lp,
            reduction,
            dir_logits: dir,
        })
}

#[derive(Debug, Clone, Copy)]
enum Rag {
    Token,
    Sequence,
}

impl Case {
    fn generator_values(&self) -> Vec<f64> {
        if self.log_prob_input { log_softmax_rows(&self.p.logits, self.p.v) } else { self.p.logits.clone() }
    }

    fn nll_config(&self) -> NllConfig {
        NllConfig::new()
            .with_label_smoothing(self.eps)
            .with_reduction(self.reduction)
            .with_input(if self.log_prob_input { GeneratorOutput::LogProbs } else { GeneratorOutput::Logits })
    }

    /// The loss as a tensor; reduced to a scalar by summation (any reduction is linear).
    fn loss<B: Backend>(&self, which: Rag, generator: Tensor<B, 4>, scores: Tensor<B, 2>) -> Tensor<B, 1> {
        let p = &self.p;
        let target = ints::<B, 2>(&p.target, [p.b, p.t]);
        let mask = bools::<B, 2>(&p.mask, [p.b, p.t]);
        let f = match which {
            Rag::Token => rag_token_nll::<B>,
            Rag::Sequence => rag_sequence_nll::<B>,
        };
        f(generator, scores, target, mask, &self.nll_config()).unwrap().sum()
    }

    fn value_at(&self, which: Rag, generator: &[f64], scores: &[f64]) -> f64 {
        let p = &self.p;
        scalar(self.loss::<Cpu>(which, floats(generator, [p.b, p.k, p.t, p.v]), floats(scores, [p.b, p.k])))
    }

    /// The reference value of the reduced loss.
    fn reference(&self, which: Rag) -> f64 {
        let per_example = match which {
            Rag::Token => self.p.rag_token(self.eps),
            Rag::Sequence => self.p.rag_sequence(self.eps),
        };
        let sum: f64 = per_example.iter().sum();
        let tokens = self.p.mask.iter().filter(|&&m| m).count().max(1) as f64;
        match self.reduction {
            Reduction::None | Reduction::Sum => sum,
            Reduction::TokenMean => sum / tokens,
            Reduction::BatchMean => sum / self.p.b as f64,
        }
    }
}

fn axpy(x: &[f64], a: f64, d: &[f64]) -> Vec<f64> {
    x.iter().zip(d).map(|(x, d)| x + a * d).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Checks value and gradients of a RAG loss.
fn check_rag(c: &Case, which: Rag) {
    let p = &c.p;
    let gen_values = c.generator_values();
    let generator = floats::<Ad, 4>(&gen_values, [p.b, p.k, p.t, p.v]).require_grad();
    let scores = floats::<Ad, 2>(&p.scores, [p.b, p.k]).require_grad();
    let loss = c.loss(which, generator.clone(), scores.clone());
    assert_close("loss vs reference", &[scalar(loss.clone())], &[c.reference(which)], VALUE_TOL);
    let grads = loss.backward();
    let g_gen = values(generator.grad(&grads).unwrap());
    let g_scores = values(scores.grad(&grads).unwrap());
    assert!(g_gen.iter().chain(&g_scores).all(|g| g.is_finite()), "non-finite gradient");

    let f = |gv: &[f64], sv: &[f64]| c.value_at(which, gv, sv);
    let fd_dir = (f(&axpy(&gen_values, H, &c.dir_logits), &p.scores)
        - f(&axpy(&gen_values, -H, &c.dir_logits), &p.scores))
        / (2.0 * H);
    assert_close("d loss / d generator along a direction", &[dot(&g_gen, &c.dir_logits)], &[fd_dir], FD_TOL);
    for i in 0..p.scores.len() {
        let mut e = vec![0.0; p.scores.len()];
        e[i] = 1.0;
        let fd = (f(&gen_values, &axpy(&p.scores, H, &e)) - f(&gen_values, &axpy(&p.scores, -H, &e))) / (2.0 * H);
        assert_close(&format!("d loss / d doc_scores[{i}]"), &[g_scores[i]], &[fd], FD_TOL);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rag_token_value_and_gradients(c in case(4)) {
        check_rag(&c, Rag::Token);
    }

    #[test]
    fn rag_sequence_value_and_gradients(c in case(4)) {
        check_rag(&c, Rag::Sequence);
    }

    /// HF's entry points, quirks included: gradients against finite differences, on targets that
    /// sometimes start with [eos, bos] so `exclude_bos_score` triggers.
    #[test]
    fn hf_get_nll_gradients(c in case(4), exclude_bos in any::<bool>(), generated_style in any::<bool>()) {
        let p = &c.p;
        let (pad, bos) = (1i64, 0i64);
        let mut target = p.target.clone();
        if generated_style && p.t >= 2 {
            for b in 0..p.b {
                target[b * p.t] = 2 % p.v as i64;
                target[b * p.t + 1] = bos;
            }
        }
        for b in 0..p.b {
            // Padding at the end of some rows, as a batch of different lengths has.
            for t in 0..p.t {
                if !p.mask[b * p.t + t] && t + 1 == p.t {
                    target[b * p.t + t] = pad;
                }
            }
        }
        let options = HfNllOptions {
            epsilon: c.eps,
            exclude_bos_score: exclude_bos,
            bos_id: Some(bos),
            ..HfNllOptions::new(pad)
        };
        for kind in [Rag::Token, Rag::Sequence] {
            let value = |gv: &[f64], sv: &[f64]| -> f64 {
                let f = match kind { Rag::Token => rag_token_get_nll::<Cpu>, Rag::Sequence => rag_sequence_get_nll::<Cpu> };
                scalar(f(floats(gv, [p.b * p.k, p.t, p.v]), floats(sv, [p.b, p.k]), ints(&target, [p.b, p.t]), &options).unwrap().sum())
            };
            let f = match kind { Rag::Token => rag_token_get_nll::<Ad>, Rag::Sequence => rag_sequence_get_nll::<Ad> };
            let generator = floats::<Ad, 3>(&p.logits, [p.b * p.k, p.t, p.v]).require_grad();
            let scores = floats::<Ad, 2>(&p.scores, [p.b, p.k]).require_grad();
            let grads = f(generator.clone(), scores.clone(), ints(&target, [p.b, p.t]), &options).unwrap().sum().backward();
            // No gradient means the loss does not depend on it (HF drops the prior when T = 1).
            let g_gen = generator.grad(&grads).map(values).unwrap_or(vec![0.0; p.logits.len()]);
            let g_scores = scores.grad(&grads).map(values).unwrap_or(vec![0.0; p.scores.len()]);
            let fd = (value(&axpy(&p.logits, H, &c.dir_logits), &p.scores) - value(&axpy(&p.logits, -H, &c.dir_logits), &p.scores)) / (2.0 * H);
            assert_close("hf d/d logits", &[dot(&g_gen, &c.dir_logits)], &[fd], FD_TOL);
            let dir_scores: Vec<f64> = (0..p.scores.len()).map(|i| ((i * 7 + 3) % 5) as f64 - 2.0).collect();
            let fd = (value(&p.logits, &axpy(&p.scores, H, &dir_scores)) - value(&p.logits, &axpy(&p.scores, -H, &dir_scores))) / (2.0 * H);
            assert_close("hf d/d doc_scores", &[dot(&g_scores, &dir_scores)], &[fd], FD_TOL);
        }
    }

    /// RA-DIT LM fine-tuning: value against the reference (RAG with K = 1 is a plain LM), gradient
    /// against finite differences.
    #[test]
    fn lm_nll_value_and_gradient(c in case(1)) {
        let p = &c.p;
        let gen_values = c.generator_values();
        let loss = |gv: Tensor<Ad, 3>| -> Tensor<Ad, 1> {
            lm_nll(gv, ints(&p.target, [p.b, p.t]), bools(&p.mask, [p.b, p.t]), &c.nll_config()).unwrap().sum()
        };
        let generator = floats::<Ad, 3>(&gen_values, [p.b, p.t, p.v]).require_grad();
        let l = loss(generator.clone());
        assert_close("lm_nll vs reference", &[scalar(l.clone())], &[c.reference(Rag::Token)], VALUE_TOL);
        let g = values(generator.grad(&l.backward()).unwrap());
        let value = |gv: &[f64]| scalar(lm_nll(floats::<Cpu, 3>(gv, [p.b, p.t, p.v]), ints(&p.target, [p.b, p.t]), bools(&p.mask, [p.b, p.t]), &c.nll_config()).unwrap().sum());
        let fd = (value(&axpy(&gen_values, H, &c.dir_logits)) - value(&axpy(&gen_values, -H, &c.dir_logits))) / (2.0 * H);
        assert_close("lm_nll d/d generator", &[dot(&g, &c.dir_logits)], &[fd], FD_TOL);
    }

    /// LSR: both KL directions, both temperatures, every LM score kind; value against the host KL,
    /// gradient w.r.t. the retriever scores against finite differences, and none into the LM.
    #[test]
    fn lsr_value_and_gradient(
        (b, k, t) in (1..=3usize, 1..=5usize, 1..=4usize),
        seed in vec(-3.0..3.0f64, 60),
        token_lp in vec(-3.0..-0.01f64, 60),
        mask_bits in vec(any::<bool>(), 60),
        tau_r in 0.1..2.0f64,
        tau_lm in 0.1..2.0f64,
        direction in prop_oneof![Just(KlDirection::LsrToRetriever), Just(KlDirection::RetrieverToLsr)],
        kind in prop_oneof![Just(LmScore::Probability), Just(LmScore::SumLogProb), Just(LmScore::MeanLogProb)],
        reduction in prop_oneof![Just(Reduction::None), Just(Reduction::Sum), Just(Reduction::BatchMean)],
    ) {
        let scores: Vec<f64> = seed[..b * k].to_vec();
        let lp: Vec<f64> = token_lp[..b * k * t].to_vec();
        let mask: Vec<bool> = mask_bits[..b * k * t].to_vec();
        let config = LsrConfig::new()
            .with_retriever_temperature(tau_r)
            .with_lm_temperature(tau_lm)
            .with_direction(direction)
            .with_reduction(reduction);
        // Host reference.
        let mut expected = 0.0;
        for bi in 0..b {
            let lm: Vec<f64> = (0..k).map(|z| {
                let row = (bi * k + z) * t;
                let sum: f64 = (0..t).filter(|&i| mask[row + i]).map(|i| lp[row + i]).sum();
                let n = (0..t).filter(|&i| mask[row + i]).count().max(1) as f64;
                match kind { LmScore::Probability => sum.exp(), LmScore::SumLogProb => sum, LmScore::MeanLogProb => sum / n }
            }).collect();
            let r: Vec<f64> = scores[bi * k..(bi + 1) * k].iter().map(|s| s / tau_r).collect();
            let l: Vec<f64> = lm.iter().map(|s| s / tau_lm).collect();
            let (lr, ll) = (log_softmax_rows(&r, k), log_softmax_rows(&l, k));
            expected += match direction { KlDirection::LsrToRetriever => kl(&ll, &lr), KlDirection::RetrieverToLsr => kl(&lr, &ll) };
        }
        if reduction == Reduction::BatchMean { expected /= b as f64; }

        let token_lp_t = floats::<Ad, 3>(&lp, [b, k, t]).require_grad();
        let lm = lm_scores(token_lp_t.clone(), bools(&mask, [b, k, t]), kind).unwrap();
        let s = floats::<Ad, 2>(&scores, [b, k]).require_grad();
        let loss = lsr_loss(s.clone(), lm, &config).unwrap().sum();
        assert_close("lsr vs reference", &[scalar(loss.clone())], &[expected], VALUE_TOL);
        let grads = loss.backward();
        let g = values(s.grad(&grads).unwrap());
        let lm_grad = token_lp_t.grad(&grads).map(values).unwrap_or_default();
        prop_assert!(lm_grad.iter().all(|&x| x == 0.0), "gradient reached the LM: {lm_grad:?}");
        let value = |sv: &[f64]| {
            let lm = lm_scores(floats::<Cpu, 3>(&lp, [b, k, t]), bools(&mask, [b, k, t]), kind).unwrap();
            scalar(lsr_loss(floats::<Cpu, 2>(sv, [b, k]), lm, &config).unwrap().sum())
        };
        for i in 0..b * k {
            let mut e = vec![0.0; b * k];
            e[i] = 1.0;
            let fd = (value(&axpy(&scores, H, &e)) - value(&axpy(&scores, -H, &e))) / (2.0 * H);
            assert_close(&format!("lsr d/d scores[{i}]"), &[g[i]], &[fd], FD_TOL);
        }
    }

    /// REPLUG's ensemble likelihood: value and gradients in both inputs.
    #[test]
    fn parallel_marginal_value_and_gradients(
        (b, k) in (1..=3usize, 1..=5usize),
        seed in vec(-3.0..3.0f64, 15),
        ll in vec(-20.0..0.0f64, 15),
        tau in 0.1..2.0f64,
    ) {
        let (s, l) = (seed[..b * k].to_vec(), ll[..b * k].to_vec());
        let expected: f64 = (0..b).map(|bi| {
            let r: Vec<f64> = s[bi * k..(bi + 1) * k].iter().map(|x| x / tau).collect();
            let lr = log_softmax_rows(&r, k);
            logsumexp(&lr.iter().zip(&l[bi * k..]).map(|(a, b)| a + b).collect::<Vec<_>>())
        }).sum();
        let st = floats::<Ad, 2>(&s, [b, k]).require_grad();
        let lt = floats::<Ad, 2>(&l, [b, k]).require_grad();
        let out = parallel_marginal_log_likelihood(st.clone(), lt.clone(), tau).unwrap().sum();
        assert_close("replug vs reference", &[scalar(out.clone())], &[expected], VALUE_TOL);
        let grads = out.backward();
        let (gs, gl) = (values(st.grad(&grads).unwrap()), values(lt.grad(&grads).unwrap()));
        let value = |sv: &[f64], lv: &[f64]| scalar(parallel_marginal_log_likelihood(floats::<Cpu, 2>(sv, [b, k]), floats::<Cpu, 2>(lv, [b, k]), tau).unwrap().sum());
        for i in 0..b * k {
            let mut e = vec![0.0; b * k];
            e[i] = 1.0;
            let fd_s = (value(&axpy(&s, H, &e), &l) - value(&axpy(&s, -H, &e), &l)) / (2.0 * H);
            let fd_l = (value(&s, &axpy(&l, H, &e)) - value(&s, &axpy(&l, -H, &e))) / (2.0 * H);
            assert_close("replug d/d scores", &[gs[i]], &[fd_s], FD_TOL);
            assert_close("replug d/d lm", &[gl[i]], &[fd_l], FD_TOL);
        }
    }
}

//! `RagModel` end to end through a real (small) index: which parameters each loss trains,
//! finite-difference checks of the gradient from question text to the query encoder, empty
//! index slots, and re-encoding passages when the document encoder is trained.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use common::{ANSWERS, Ad, Arch, PASSAGES, QUESTIONS, config, world};
use rag::rag_index::{FlatIndex, Metric, NO_ID, PassageStore};
use rag::{RagConfig, RagLoss, RagModel};
use rag_check::gradcheck::directional_derivative;

/// Trainable parameter tensors, and how many of them got a non-zero gradient.
struct GradCount<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    params: usize,
    nonzero: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradCount<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.val().is_require_grad() {
            return;
        }
        self.params += 1;
        if let Some(g) = param.val().grad(self.grads) {
            let max = rag_check::values(g.abs().max()).into_iter().fold(0.0, f64::max);
            if max > 0.0 {
                self.nonzero += 1;
            }
        }
    }
}

/// (trainable tensors, tensors with a non-zero gradient).
fn count<M: Module<Ad>>(module: &M, grads: &<Ad as AutodiffBackend>::Gradients) -> (usize, usize) {
    let mut c = GradCount::<Ad> { grads, params: 0, nonzero: 0 };
    module.visit(&mut c);
    (c.params, c.nonzero)
}

fn grads_by_part(model: &RagModel<Ad>, loss: Tensor<Ad, 1>) -> [(usize, usize); 3] {
    let grads = loss.backward();
    [
        count(model.retriever().query_encoder(), &grads),
        count(model.retriever().document_encoder(), &grads),
        count(model.generator(), &grads),
    ]
}

#[test]
fn rag_losses_train_query_encoder_and_generator_from_question_text_through_the_index() {
    for loss in [RagLoss::RagToken, RagLoss::RagSequence] {
        let w = world::<Ad>(Arch::Bart, config(Arch::Bart, loss), DType::F64);
        let out = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
        for passages in &out.retrieval.passages {
            assert_eq!(passages.len(), 3);
            assert!(passages.iter().all(|p| p.id != NO_ID && PASSAGES.iter().any(|(_, text)| *text == p.text)));
        }
        let [(q_params, q_nonzero), (d_params, _), (g_params, g_nonzero)] = grads_by_part(&w.model, out.loss);
        assert!(q_params > 0 && q_nonzero == q_params, "{loss:?}: query encoder {q_nonzero}/{q_params}");
        assert_eq!(d_params, 0, "{loss:?}: the document encoder is frozen");
        assert!(g_params > 0 && g_nonzero == g_params, "{loss:?}: generator {g_nonzero}/{g_params}");

        let check =
            directional_derivative(&w.model, |m| m.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap().loss, 11, 1e-5);
        eprintln!("{loss:?}: relative error {:.1e} ({check:?})", check.relative_error());
        assert!(check.relative_error() < 1e-6, "{loss:?}: {check:?}");
        // The query encoder alone: the gradient that reaches it only through the doc scores.
        let query_only = RagModel::new(
            w.model.retriever().clone(),
            w.model.generator().clone().no_grad(),
            w.model.passage_tokenizer().clone(),
            w.model.generator_tokenizer().clone(),
            w.model.config().clone(),
        )
        .unwrap();
        let check =
            directional_derivative(&query_only, |m| m.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap().loss, 13, 1e-5);
        eprintln!("{loss:?}, query encoder only: relative error {:.1e} ({check:?})", check.relative_error());
        assert_eq!(check.params_with_grad, q_params);
        // Measured 5e-7 (RAG-Token) and 1e-8 (RAG-Sequence): this derivative is 1e4 times smaller
        // than the generator's, so the central difference's own error weighs more.
        assert!(check.relative_error() < 1e-5, "{loss:?}, query encoder only: {check:?}");
    }
}

#[test]
fn lm_finetuning_trains_only_the_generator_and_lsr_only_the_query_encoder() {
    let w = world::<Ad>(Arch::Llama, config(Arch::Llama, RagLoss::LmFinetune), DType::F64);
    let out = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
    let [(_, q_nonzero), _, (g_params, g_nonzero)] = grads_by_part(&w.model, out.loss);
    assert_eq!(q_nonzero, 0, "LM fine-tuning does not train the retriever");
    assert_eq!(g_nonzero, g_params, "every generator tensor is trained");

    let w = world::<Ad>(Arch::Llama, config(Arch::Llama, RagLoss::Lsr), DType::F64);
    let out = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
    let [(q_params, q_nonzero), _, (_, g_nonzero)] = grads_by_part(&w.model, out.loss);
    assert_eq!(q_nonzero, q_params, "LSR trains the query encoder");
    assert_eq!(g_nonzero, 0, "the LM is a frozen teacher in LSR");
    let check = directional_derivative(&w.model, |m| m.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap().loss, 5, 1e-5);
    eprintln!("LSR: relative error {:.1e} ({check:?})", check.relative_error());
    assert!(check.relative_error() < 1e-6, "LSR: {check:?}");
}

#[test]
fn every_loss_works_with_both_generators_and_empty_index_slots() {
    for arch in [Arch::Bart, Arch::Llama] {
        for loss in [RagLoss::RagToken, RagLoss::RagSequence, RagLoss::LmFinetune, RagLoss::Lsr] {
            // 8 slots over a 6-passage index: two empty slots per question.
            let rag = RagConfig { n_docs: 8, ..config(arch, loss) };
            let w = world::<Ad>(arch, rag, DType::F32);
            let out = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
            let scores: Vec<f32> = out.retrieval.doc_scores.clone().into_data().to_vec().unwrap();
            for (q, passages) in out.retrieval.passages.iter().enumerate() {
                assert_eq!(passages.iter().filter(|p| p.id == NO_ID).count(), 2);
                for (z, p) in passages.iter().enumerate() {
                    assert_eq!(p.id == NO_ID, scores[q * 8 + z] == f32::NEG_INFINITY, "{arch:?} {loss:?}");
                }
            }
            let per_example: Vec<f32> = out.per_example.into_data().to_vec().unwrap();
            assert!(per_example.iter().all(|l| l.is_finite() && *l >= -1e-5), "{arch:?} {loss:?}: {per_example:?}");
            let grads = out.loss.backward();
            let (params, nonzero) = count(w.model.retriever().query_encoder(), &grads);
            let trains_retriever = loss != RagLoss::LmFinetune;
            assert_eq!(nonzero == params, trains_retriever, "{arch:?} {loss:?}");
        }
    }
}

#[test]
fn training_the_document_encoder_re_encodes_the_retrieved_passages() {
    let frozen = world::<Ad>(Arch::Bart, config(Arch::Bart, RagLoss::RagSequence), DType::F64);
    let rag = RagConfig { train_document_encoder: true, ..config(Arch::Bart, RagLoss::RagSequence) };
    let trained = world::<Ad>(Arch::Bart, rag, DType::F64);
    let a = frozen.model.loss(&frozen.knowledge, &QUESTIONS, &ANSWERS).unwrap();
    let b = trained.model.loss(&trained.knowledge, &QUESTIONS, &ANSWERS).unwrap();
    // Re-encoded passages score as their stored (f32) vectors do: the same passages, the same
    // tokenization as the index build.
    let diff = rag_check::max_abs_diff(
        &rag_check::values(a.retrieval.doc_scores.clone()),
        &rag_check::values(b.retrieval.doc_scores.clone()),
    );
    assert!(diff < 1e-5, "doc scores differ by {diff}");
    let [(q_params, q_nonzero), (d_params, d_nonzero), _] = grads_by_part(&trained.model, b.loss);
    assert_eq!(q_nonzero, q_params);
    assert!(d_params > 0 && d_nonzero == d_params, "document encoder {d_nonzero}/{d_params}");
    let check = directional_derivative(
        &trained.model,
        |m| m.loss(&trained.knowledge, &QUESTIONS, &ANSWERS).unwrap().loss,
        3,
        1e-5,
    );
    eprintln!("document encoder trained: relative error {:.1e} ({check:?})", check.relative_error());
    assert!(check.relative_error() < 1e-6, "{check:?}");
}

#[test]
fn mismatched_parts_are_refused_with_the_reason() {
    let w = world::<Ad>(Arch::Bart, config(Arch::Bart, RagLoss::RagToken), DType::F32);
    let err = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS[..1]).unwrap_err().to_string();
    assert!(err.contains("2 questions and 1 answers"), "{err}");
    let err = w.model.loss(&w.knowledge, &[], &[]).unwrap_err().to_string();
    assert!(err.contains("no questions"), "{err}");
    let narrow = rag::Knowledge {
        store: PassageStore::open(&w.paths.store).unwrap(),
        index: Box::new(FlatIndex::new(8, Metric::InnerProduct).unwrap()),
    };
    let err = w.model.loss(&narrow, &QUESTIONS, &ANSWERS).unwrap_err().to_string();
    assert!(err.contains("8-dimensional"), "{err}");
    // A decoder-only generator with HF's seq2seq context format.
    let llama = world::<Ad>(Arch::Llama, config(Arch::Llama, RagLoss::RagToken), DType::F32);
    let retriever = llama.model.retriever().clone();
    let err = RagModel::new(
        retriever,
        llama.model.generator().clone(),
        llama.model.passage_tokenizer().clone(),
        llama.model.generator_tokenizer().clone(),
        config(Arch::Bart, RagLoss::RagToken),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("field `context`") && err.contains("llama"), "{err}");
}

/// Flattened gradients of the generator's trainable parameters, in visiting order.
fn generator_grads(model: &RagModel<Ad>, loss: Tensor<Ad, 1>) -> Vec<f64> {
    struct Collect<'a> {
        grads: &'a <Ad as AutodiffBackend>::Gradients,
        out: Vec<f64>,
    }
    impl ModuleVisitor<Ad> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            if let Some(g) = param.val().grad(self.grads) {
                assert_eq!(g.dtype(), DType::F32, "master gradients are f32");
                self.out.extend(rag_check::values(g));
            }
        }
    }
    let grads = loss.backward();
    let mut c = Collect { grads: &grads, out: Vec::new() };
    model.generator().visit(&mut c);
    c.out
}

#[test]
fn a_half_precision_generator_forward_trains_the_f32_weights_with_an_f32_loss() {
    for (arch, loss) in
        [(Arch::Bart, RagLoss::RagToken), (Arch::Bart, RagLoss::RagSequence), (Arch::Llama, RagLoss::RagToken)]
    {
        let w = world::<Ad>(arch, config(arch, loss), DType::F32);
        let full = w.model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
        let reference = generator_grads(&w.model, full.loss.clone());
        for (precision, tolerance) in [(rag::Precision::Bf16, 2e-3), (rag::Precision::F16, 2e-4)] {
            let config = RagConfig { generator_precision: precision, ..w.model.config().clone() };
            let model = w.model.clone().with_config(config).unwrap();
            let half = model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
            assert_eq!(half.loss.dtype(), DType::F32, "the loss is computed in f32");
            let (a, b) = (rag_check::values(full.loss.clone())[0], rag_check::values(half.loss.clone())[0]);
            assert!(((a - b) / a).abs() < tolerance, "{arch:?} {loss:?} {precision:?}: loss {b} vs f32 {a}");
            // The gradient reaches the f32 weights through the casts: the same direction.
            let grads = generator_grads(&model, half.loss);
            assert_eq!(grads.len(), reference.len(), "every generator weight gets a gradient");
            let dot: f64 = grads.iter().zip(&reference).map(|(x, y)| x * y).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cosine = dot / (norm(&grads) * norm(&reference));
            assert!(cosine > 0.999, "{arch:?} {loss:?} {precision:?}: gradient cosine {cosine}");
            eprintln!(
                "{arch:?} {loss:?} {precision:?}: loss rel diff {:.1e}, gradient cosine {cosine:.5}",
                ((a - b) / a).abs()
            );
        }
    }
}

/// Partial fine-tuning: with the generator's top layer (and LLaMA's final norm) the only
/// generator group that trains, the layers below and the embeddings require no gradient (so
/// their backward pass is never recorded), and every tensor of the top layer gets one.
#[test]
fn partial_fine_tuning_trains_only_the_generators_top_layers() {
    for arch in [Arch::Llama, Arch::Bart] {
        let loss = if arch == Arch::Llama { RagLoss::LmFinetune } else { RagLoss::RagToken };
        let w = world::<Ad>(arch, config(arch, loss), DType::F64);
        let top: Vec<String> =
            w.model.generator().top_layers(1).unwrap().into_iter().map(|p| format!("generator.{p}")).collect();
        let recipe = if arch == Arch::Llama { rag::Recipe::RaDitLm } else { rag::Recipe::RagToken };
        let groups = rag::train_only(recipe.param_groups(&rag::GroupOptions::new(1e-3, 1e-3)), "generator", &top);
        let model = rag_trainer::freeze(w.model.clone(), &groups);
        let trainable = rag_trainer::trainable_paths(&model);
        let generator: Vec<&String> = trainable.iter().filter(|p| p.starts_with("generator.")).collect();
        assert!(!generator.is_empty(), "{arch:?}: the top layer trains");
        assert!(!generator.iter().any(|p| p.contains("embed") || p.contains("shared")), "{arch:?}: {generator:?}");
        for path in &generator {
            assert!(top.iter().any(|t| path.starts_with(&format!("{t}."))), "{arch:?}: {path} should be frozen");
        }
        let out = model.loss(&w.knowledge, &QUESTIONS, &ANSWERS).unwrap();
        let [_, _, (g_params, g_nonzero)] = grads_by_part(&model, out.loss);
        assert_eq!((g_params, g_nonzero), (generator.len(), generator.len()), "{arch:?}");
        let err = w.model.generator().top_layers(99).unwrap_err().to_string();
        assert!(err.contains("generator_layers") && err.contains("99"), "{err}");
    }
}

//! Answering with provenance, ensemble decoding against a cache-free reference, and whole-model
//! checkpoints.

mod common;

use burn::backend::Flex;
use burn::tensor::DType;
use burn::tensor::activation::log_softmax;
use common::{ANSWERS, Arch, QUESTIONS, config, world};
use rag::{Answer, DecodeMode, Generator, Knowledge, RagLoss, RagModel};
use rag_generator::{GenerationConfig, Padded, PaddingSide};

fn generation(model: &RagModel<Flex>, beams: usize) -> GenerationConfig {
    let mut g = match model.generator() {
        Generator::Bart(m) => GenerationConfig::for_bart(m.config()),
        Generator::Llama(m) => GenerationConfig::for_llama(m.config()),
    };
    g.max_new_tokens = Some(6);
    g.num_beams = beams;
    g
}

fn assert_provenance(answer: &Answer, mode: DecodeMode, k: usize) {
    // Priors come from an f32 log-softmax.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-5;
    assert_eq!(answer.passages.len(), k);
    assert!(close(answer.passages.iter().map(|p| p.prior).sum(), 1.0), "{answer:?}");
    assert!(close(answer.passages.iter().map(|p| p.posterior).sum(), 1.0), "{answer:?}");
    assert!(answer.passages.windows(2).all(|w| w[0].prior >= w[1].prior - 1e-12), "best prior first");
    assert!(answer.log_prob.is_finite() && answer.log_prob <= 0.0);
    if mode == DecodeMode::Token {
        assert_eq!(answer.token_posteriors.len(), answer.tokens.len());
        assert!(answer.token_posteriors.iter().all(|p| p.len() == k && close(p.iter().sum(), 1.0)));
    } else {
        assert!(answer.token_posteriors.is_empty());
    }
}

#[test]
fn bart_answers_in_every_mode_carry_their_provenance() {
    let w = world::<Flex>(Arch::Bart, config(Arch::Bart, RagLoss::RagToken), DType::F32);
    for mode in [DecodeMode::Token, DecodeMode::SequenceThorough, DecodeMode::SequenceFast] {
        for beams in [1, 2] {
            if beams == 1 && mode != DecodeMode::Token {
                continue;
            }
            let answers = w.model.answer(&w.knowledge, &QUESTIONS, mode, &generation(&w.model, beams)).unwrap();
            assert_eq!(answers.len(), 2);
            for answer in &answers {
                assert_provenance(answer, mode, 3);
                let ended = answer.tokens.last() == Some(&2);
                assert!(ended || answer.tokens.len() == 6, "{mode:?}: at most 6 new tokens, EOS last: {answer:?}");
                assert!(!answer.tokens[..answer.tokens.len() - 1].contains(&2), "cut after the first EOS");
            }
        }
    }
}

/// Ensemble decoding by brute force: every step runs the LM on each augmented prompt plus the
/// tokens so far (no cache, no split of prompt and instruction) and takes the argmax of the
/// prior-weighted mixture of next-token distributions.
fn reference_ensemble_greedy(model: &RagModel<Flex>, knowledge: &Knowledge, question: &str, steps: usize) -> Vec<u32> {
    let Generator::Llama(llama) = model.generator() else { unreachable!() };
    let retrieval = model.retrieve(knowledge, &[question]).unwrap();
    let prompts = model.context_rows(&[question], &retrieval.passages).unwrap();
    let log_prior = log_softmax(retrieval.doc_scores.clone(), 1);
    let eos = model.special_tokens().eos;
    let mut out = Vec::new();
    for _ in 0..steps {
        let rows: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().chain(&out).copied().collect()).collect();
        let padded = Padded::new(&rows, model.special_tokens().pad, PaddingSide::Left);
        let (ids, mask) = padded.tensors::<Flex>(&Default::default());
        let logits = llama.forward(ids, mask);
        let [k, t, v] = logits.dims();
        let last = log_softmax(logits.narrow(1, t - 1, 1).reshape([k, v]), 1);
        let mixture = (last + log_prior.clone().reshape([k, 1])).exp().sum_dim(0).reshape([v]);
        let next = mixture.argmax(0).into_data().convert::<i64>().to_vec::<i64>().unwrap()[0] as u32;
        out.push(next);
        if next == eos {
            break;
        }
    }
    out
}

#[test]
fn ensemble_decoding_of_a_decoder_only_lm_matches_a_cache_free_reference() {
    let w = world::<Flex>(Arch::Llama, config(Arch::Llama, RagLoss::LmFinetune), DType::F32);
    let mut g = generation(&w.model, 1);
    // No early stop at EOS, so the comparison covers all six steps.
    g.eos_token_id.clear();
    let answers = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::Token, &g).unwrap();
    for (question, answer) in QUESTIONS.iter().zip(&answers) {
        assert_eq!(answer.tokens, reference_ensemble_greedy(&w.model, &w.knowledge, question, 6), "{question}");
        assert_provenance(answer, DecodeMode::Token, 3);
    }
    let beam = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::Token, &generation(&w.model, 3)).unwrap();
    assert!(beam.iter().all(|a| !a.tokens.is_empty()));
}

/// `log p(answer | prompt)` by one cache-free forward pass over the prompt and the answer.
fn reference_log_likelihood(model: &RagModel<Flex>, prompt: &[u32], answer: &[u32]) -> f64 {
    let Generator::Llama(llama) = model.generator() else { unreachable!() };
    let row: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    let (ids, mask) = Padded::new(&[row], 1, PaddingSide::Left).tensors::<Flex>(&Default::default());
    let logits = log_softmax(llama.forward(ids, mask), 2);
    let lp = logits.into_data().convert::<f64>().to_vec::<f64>().unwrap();
    let v = model.generator().vocab_size();
    answer.iter().enumerate().map(|(t, &y)| lp[(prompt.len() - 1 + t) * v + y as usize]).sum()
}

/// One prompt decoded greedily on its own, cache-free, up to and including EOS.
fn reference_greedy(model: &RagModel<Flex>, prompt: &[u32], steps: usize) -> Vec<u32> {
    let Generator::Llama(llama) = model.generator() else { unreachable!() };
    let eos = model.special_tokens().eos;
    let mut out = Vec::new();
    for _ in 0..steps {
        let row: Vec<u32> = prompt.iter().chain(&out).copied().collect();
        let (ids, mask) = Padded::new(&[row], 1, PaddingSide::Left).tensors::<Flex>(&Default::default());
        let logits = llama.forward(ids, mask);
        let t = logits.dims()[1];
        let next = logits.narrow(1, t - 1, 1).flatten::<1>(0, 2).argmax(0).into_data().convert::<i64>();
        let next = next.to_vec::<i64>().unwrap()[0] as u32;
        out.push(next);
        if next == eos {
            break;
        }
    }
    out
}

/// RAG-Sequence thorough decoding by brute force: each passage's prompt decoded alone, the
/// distinct answers rescored on every passage, the best marginal `log Σ_z p(z|x) p(y|x,z)` kept
/// (the first of equals).
fn reference_sequence_thorough(
    model: &RagModel<Flex>,
    knowledge: &Knowledge,
    question: &str,
    steps: usize,
) -> (Vec<u32>, f64, usize) {
    let retrieval = model.retrieve(knowledge, &[question]).unwrap();
    let prompts = model.context_rows(&[question], &retrieval.passages).unwrap();
    let log_prior = log_softmax(retrieval.doc_scores.clone(), 1).into_data().convert::<f64>().to_vec::<f64>().unwrap();
    let mut candidates: Vec<Vec<u32>> = Vec::new();
    for prompt in &prompts {
        let answer = reference_greedy(model, prompt, steps);
        if !candidates.contains(&answer) {
            candidates.push(answer);
        }
    }
    let marginal = |y: &[u32]| -> f64 {
        let joint: Vec<f64> =
            prompts.iter().zip(&log_prior).map(|(p, lp)| lp + reference_log_likelihood(model, p, y)).collect();
        let max = joint.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + joint.iter().map(|j| (j - max).exp()).sum::<f64>().ln()
    };
    let mut best = (Vec::new(), f64::NEG_INFINITY, candidates.len());
    for y in candidates {
        let m = marginal(&y);
        if m > best.1 {
            best = (y, m, best.2);
        }
    }
    best
}

#[test]
fn sequence_decoding_of_a_decoder_only_lm_matches_a_brute_force_reference() {
    let w = world::<Flex>(Arch::Llama, config(Arch::Llama, RagLoss::LmFinetune), DType::F32);
    assert_eq!(w.model.default_decode_mode(), DecodeMode::SequenceThorough);
    let g = generation(&w.model, 1);
    let thorough = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::SequenceThorough, &g).unwrap();
    let fast = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::SequenceFast, &g).unwrap();
    let mut most_candidates = 0;
    for ((question, answer), quick) in QUESTIONS.iter().zip(&thorough).zip(&fast) {
        let (tokens, log_prob, candidates) = reference_sequence_thorough(&w.model, &w.knowledge, question, 6);
        most_candidates = most_candidates.max(candidates);
        assert_eq!(answer.tokens, tokens, "{question}");
        assert!((answer.log_prob - log_prob).abs() < 1e-4, "{question}: {} against {log_prob}", answer.log_prob);
        assert_provenance(answer, DecodeMode::SequenceThorough, 3);
        // Fast decoding picks among the same candidates, without rescoring.
        let retrieval = w.model.retrieve(&w.knowledge, &[question]).unwrap();
        let prompts = w.model.context_rows(&[question], &retrieval.passages).unwrap();
        assert!(prompts.iter().any(|p| reference_greedy(&w.model, p, 6) == quick.tokens), "{question}: {quick:?}");
        assert_provenance(quick, DecodeMode::SequenceFast, 3);
    }
    assert!(most_candidates > 1, "the passages' own answers differ, so the rescoring chooses");
    let beam = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::SequenceThorough, &generation(&w.model, 3));
    assert!(beam.unwrap().iter().all(|a| !a.tokens.is_empty()));
}

fn loss_of(model: &RagModel<Flex>, knowledge: &Knowledge) -> Vec<f64> {
    rag_check::values(model.loss(knowledge, &QUESTIONS, &ANSWERS).unwrap().per_example)
}

#[test]
fn a_saved_model_loads_back_with_the_same_losses_answers_and_index() {
    for arch in [Arch::Bart, Arch::Llama] {
        let w = world::<Flex>(arch, config(arch, RagLoss::RagSequence), DType::F32);
        let dir = w.dir.path().join("model");
        w.model.save(&dir, Some(&w.paths)).unwrap();
        // Saving again replaces the directory whole.
        w.model.save(&dir, Some(&w.paths)).unwrap();
        let loaded = RagModel::<Flex>::load(&dir, &Default::default(), DType::F32).unwrap();
        let paths = loaded.knowledge.expect("the knowledge paths were recorded");
        let knowledge = Knowledge::open(&paths).unwrap();
        assert_eq!(loss_of(&w.model, &w.knowledge), loss_of(&loaded.model, &knowledge), "{arch:?}");
        assert_eq!(loaded.model.config(), w.model.config());
        let g = generation(&w.model, 2);
        let before = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::Token, &g).unwrap();
        let after = loaded.model.answer(&knowledge, &QUESTIONS, DecodeMode::Token, &g).unwrap();
        assert_eq!(before, after, "{arch:?}");
        // In f64 the weights are the f32 values widened: the losses agree to f32 rounding.
        let wide = RagModel::<Flex>::load(&dir, &Default::default(), DType::F64).unwrap().model;
        let diff = rag_check::max_abs_diff(&loss_of(&wide, &knowledge), &loss_of(&w.model, &w.knowledge));
        assert!(diff < 1e-4, "{arch:?}: {diff}");
    }
}

#[test]
fn a_damaged_checkpoint_is_refused_by_name() {
    let w = world::<Flex>(Arch::Bart, config(Arch::Bart, RagLoss::RagToken), DType::F32);
    let dir = w.dir.path().join("model");
    w.model.save(&dir, None).unwrap();
    let load = || RagModel::<Flex>::load(&dir, &Default::default(), DType::F32).map(|_| ()).unwrap_err().to_string();
    let manifest = std::fs::read_to_string(dir.join("rag.json")).unwrap();

    std::fs::write(dir.join("rag.json"), manifest.replace("\"version\": 1", "\"version\": 9")).unwrap();
    let err = load();
    assert!(err.contains("rag.json") && err.contains("version"), "{err}");

    std::fs::write(dir.join("rag.json"), manifest.replace("rag-rs/rag-model", "something-else")).unwrap();
    let err = load();
    assert!(err.contains("not a rag-rs model checkpoint"), "{err}");
    std::fs::write(dir.join("rag.json"), &manifest).unwrap();

    // Weights of a different model: a tensor with another shape, a missing one, an extra one.
    let checkpoint = rag_hf::Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let good: Vec<(String, burn::tensor::TensorData)> =
        checkpoint.names().map(|n| (n.to_string(), checkpoint.read(n).unwrap())).collect();
    drop(checkpoint);
    let victim = good.iter().position(|(n, _)| n.ends_with("q_proj.weight")).unwrap();
    let name = good[victim].0.clone();
    let write = |tensors: &[(String, burn::tensor::TensorData)]| {
        rag_hf::write_safetensors(&dir.join("model.safetensors"), tensors).unwrap();
    };

    let mut tensors = good.clone();
    tensors[victim].1 = burn::tensor::TensorData::new(vec![0f32; 6], [2, 3]);
    write(&tensors);
    let err = load();
    assert!(err.contains(&name) && err.contains("[2, 3]"), "{err}");

    let mut tensors = good.clone();
    tensors.remove(victim);
    write(&tensors);
    let err = load();
    assert!(err.contains("missing tensor") && err.contains(&name), "{err}");

    let mut tensors = good.clone();
    tensors.push(("generator.extra.weight".into(), burn::tensor::TensorData::new(vec![0f32; 2], [2])));
    write(&tensors);
    let err = load();
    assert!(err.contains("generator.extra.weight") && err.contains("no parameter"), "{err}");
    write(&good);
    assert!(RagModel::<Flex>::load(&dir, &Default::default(), DType::F32).is_ok());

    std::fs::remove_file(dir.join("rag.json")).unwrap();
    let err = load();
    assert!(err.contains("no checkpoint manifest"), "{err}");
}

/// `PassageSource::Bm25`: the generator reads BM25's top-K (a uniform prior) and recall@k is
/// BM25's own, as `Bm25::recall` measures it.
#[test]
fn evaluation_over_bm25_passages_reads_bm25s_top_k_and_reports_its_recall() {
    use rag::{Bm25, EvalOptions, PassageSource, QaExample, Retrieval, evaluate};
    let w = world::<Flex>(Arch::Llama, config(Arch::Llama, RagLoss::RagToken), DType::F32);
    let examples: Vec<QaExample> = QUESTIONS
        .iter()
        .zip(ANSWERS)
        .map(|(q, a)| QaExample { question: q.to_string(), answers: vec![a.to_string()], gold: None })
        .collect();
    let options = EvalOptions {
        batch_size: 2,
        ks: vec![1, 3],
        mode: DecodeMode::Token,
        generation: generation(&w.model, 1),
        passages: PassageSource::Bm25,
    };
    let report = evaluate(&w.model, &w.knowledge, &examples, &options).unwrap();
    let bm25 = Bm25::build(&w.knowledge.store).unwrap();
    assert_eq!(report.recall, bm25.recall(&w.knowledge.store, &examples, &[1, 3]).unwrap());
    let rows: Vec<Vec<_>> = QUESTIONS
        .iter()
        .map(|q| bm25.search(q, 3).unwrap().into_iter().map(|(id, _)| w.knowledge.passage(id).unwrap()).collect())
        .collect();
    assert!(rows.iter().all(|r| r.len() == 3), "every question shares words with three passages: {rows:?}");
    let retrieval = Retrieval::given_rows(rows, 3, &Default::default());
    let answers = w.model.answer_retrieved(&QUESTIONS, &retrieval, DecodeMode::Token, &options.generation).unwrap();
    let expected: Vec<String> = answers.into_iter().map(|a| a.text).collect();
    assert_eq!(report.predictions, expected);
}

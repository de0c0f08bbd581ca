//! RAG-Sequence fast decoding against thorough decoding: they agree when one document dominates
//! the prior (on HF's fixture model), and they differ when a candidate found by one document's
//! beam is also likely under another document whose beam missed it: thorough rescoring counts
//! that document, fast decoding counts it as zero (on small seeded models over a real index).

mod common;

use burn::backend::Flex;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rag::{HfRag, rag_sequence_fast, rag_sequence_thorough};
use rag_generator::{ConfigFile, GenerationConfig};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/rag");

struct Inputs {
    model: HfRag<Flex>,
    config: rag::HfRagConfig,
    ids: Tensor<Flex, 2, Int>,
    mask: Tensor<Flex, 2, Int>,
    generation: GenerationConfig,
}

fn inputs() -> Inputs {
    let dir = std::path::Path::new(FIXTURE);
    let (model, config) = HfRag::<Flex>::load(dir, &Default::default(), DType::F64).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let int = |name: &str| {
        let a = &expected[name];
        let shape: Vec<usize> = serde_json::from_value(a["shape"].clone()).unwrap();
        let data: Vec<i64> = serde_json::from_value(a["data"].clone()).unwrap();
        Tensor::<Flex, 2, Int>::from_data(TensorData::new(data, [shape[0], shape[1]]), &Default::default())
    };
    let generation = GenerationConfig {
        max_length: 8,
        num_beams: 2,
        ..GenerationConfig::from_file(&dir.join("generation_config.json")).unwrap()
    };
    Inputs { model, config, ids: int("context_input_ids"), mask: int("context_attention_mask"), generation }
}

fn scores(rows: [[f64; 3]; 2]) -> Tensor<Flex, 2> {
    Tensor::from_data(TensorData::new(rows.concat(), [2, 3]), (&Default::default(), DType::F64))
}

fn both(i: &Inputs, doc_scores: Tensor<Flex, 2>) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let g = &i.model.generator;
    let options = i.config.nll_options(true);
    let thorough =
        rag_sequence_thorough(g, i.ids.clone(), i.mask.clone(), doc_scores.clone(), &i.generation, true, &options)
            .unwrap();
    let fast = rag_sequence_fast(g, i.ids.clone(), i.mask.clone(), doc_scores, &i.generation).unwrap();
    (thorough, fast)
}

#[test]
fn fast_and_thorough_agree_when_one_document_dominates() {
    let i = inputs();
    for dominant in 0..3 {
        let mut rows = [[0.0; 3]; 2];
        rows[0][dominant] = 60.0;
        rows[1][(dominant + 1) % 3] = 60.0;
        let (thorough, fast) = both(&i, scores(rows));
        assert_eq!(thorough, fast, "document {dominant} dominates");
    }
}

/// Both modes rank the same candidates (the union of the per-document beams); thorough decoding
/// by their true marginal likelihood, fast decoding by a sum that leaves out the documents whose
/// beam missed a candidate. So where they differ, thorough decoding's answer has the higher
/// true likelihood, and fast decoding's choice came from undercounting it.
#[test]
fn fast_and_thorough_differ_when_a_beam_misses_a_likely_candidate() {
    use common::{Arch, QUESTIONS, config, world_with_seed};
    use rag::{DecodeMode, Generator, RagLoss};

    let mut differing = Vec::new();
    for seed in 0..12 {
        let w = world_with_seed::<Flex>(Arch::Bart, config(Arch::Bart, RagLoss::RagSequence), DType::F64, seed);
        let Generator::Bart(bart) = w.model.generator() else { unreachable!() };
        let g = GenerationConfig { num_beams: 2, max_new_tokens: Some(4), ..GenerationConfig::for_bart(bart.config()) };
        let thorough = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::SequenceThorough, &g).unwrap();
        let fast = w.model.answer(&w.knowledge, &QUESTIONS, DecodeMode::SequenceFast, &g).unwrap();
        for (t, f) in thorough.iter().zip(&fast) {
            if t.tokens != f.tokens {
                eprintln!(
                    "seed {seed}: thorough {:?} (log p {:.4}), fast {:?} (log p {:.4})",
                    t.tokens, t.log_prob, f.tokens, f.log_prob
                );
                assert!(t.log_prob > f.log_prob, "seed {seed}: {t:?} vs {f:?}");
                differing.push(seed);
            }
        }
    }
    assert!(!differing.is_empty(), "no seeded model made the two modes differ");
}

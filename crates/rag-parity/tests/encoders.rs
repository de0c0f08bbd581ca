//! Parity with HuggingFace through the fixtures in `crates/rag-retriever/tests/fixtures/hf`
//! (copies of `shared/fixtures/hf/{bert,dpr,minilm}`): f32 within 1e-4 absolute (the bar) and f64
//! within 1e-9 (the fixtures are float64 outputs, so an exact implementation matches closely).

mod common;

use burn::tensor::DType;
use common::{B, fixture};
use rag_check::minilm_dir;
use rag_parity::{check_bert, check_dpr, check_minilm};

#[test]
fn bert_matches_hf_bert_model() {
    for dtype in [DType::F32, DType::F64] {
        let report = check_bert::<B>(&fixture("rag-retriever", "bert"), &Default::default(), dtype).unwrap();
        println!("{dtype:?}: {report}");
        assert!(report.passed(), "{report}");
        assert_eq!(report.cases, 3, "last_hidden_state, pooler_output and mean_pooled are all compared");
    }
}

#[test]
fn dpr_matches_hf_dpr_question_encoder() {
    for dtype in [DType::F32, DType::F64] {
        let report = check_dpr::<B>(&fixture("rag-retriever", "dpr"), &Default::default(), dtype).unwrap();
        println!("{dtype:?}: {report}");
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn minilm_matches_sentence_transformers_with_real_weights() {
    let Some(weights) = minilm_dir() else { return };
    let report =
        check_minilm::<B>(&fixture("rag-retriever", "minilm"), &weights, &Default::default(), DType::F32).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.cases, 3, "token ids, embeddings and the cosine matrix are compared");
}

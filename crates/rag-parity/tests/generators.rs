//! Parity with HF transformers on the fixtures in `crates/rag-generator/tests/fixtures/hf`:
//! logits (full and through the KV cache) and greedy / beam outputs token for token, in f32 and
//! f64. Other checkpoint layouts are `rag-generator`'s loading tests (the same logits).

mod common;

use burn::tensor::DType;
use common::{B, fixture};
use rag_parity::{check_bart, check_llama};

fn assert_passes(report: rag_parity::ComponentReport) {
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.cases >= 4, "logits, cached logits and at least the generation cases: {report}");
}

#[test]
fn bart_matches_hf_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        assert_passes(check_bart::<B>(&fixture("rag-generator", "bart"), &Default::default(), dtype).unwrap());
    }
}

#[test]
fn llama_matches_hf_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        let report = check_llama::<B>(&fixture("rag-generator", "llama"), &Default::default(), dtype).unwrap();
        println!("{report}");
        assert!(report.passed() && report.cases >= 3, "{report}");
    }
}

//! Parity with HF's `RagTokenForGeneration` / `RagSequenceForGeneration` on the fixture (a copy of
//! `shared/fixtures/hf/rag` in `crates/rag`): doc scores, per-example losses, the gradient reaching
//! the question encoder's word embeddings, RAG-Token greedy and beam search and RAG-Sequence
//! thorough decoding, in f32 and f64.

mod common;

use burn::tensor::DType;
use common::{Ad, fixture};

#[test]
fn rag_matches_hf_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        let report = rag_parity::check_rag::<Ad>(&fixture("rag", "rag"), &Default::default(), dtype).unwrap();
        println!("{report}");
        assert!(report.passed(), "{report}");
        assert!(report.cases >= 9, "2 × (scores, loss, gradient) and 3 decodings: {report}");
    }
}

//! HF's RAG checkpoint (the fixture) as a `RagModel`. Its parity with HF's
//! `RagTokenForGeneration` / `RagSequenceForGeneration` (doc scores, losses, gradients, decoding)
//! is `rag-parity`'s test `rag.rs`.

use burn::backend::{Autodiff, Flex};
use burn::tensor::DType;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/rag");

/// HF's RAG checkpoint as a full `RagModel`: the question encoder (shared as the document
/// encoder here) builds an index over a small corpus, and the model retrieves, trains and
/// answers over it. Its doc scores are HF's `q·d` of the stored vectors.
#[test]
fn an_hf_rag_checkpoint_becomes_a_rag_model_over_a_live_index() {
    use rag::rag_index::{FlatIndex, Metric, PassageStore, StoreBuilder};
    use rag::{DecodeMode, HfRag, Knowledge, RagLoss, index_store};
    use rag_generator::{ConfigFile, GenerationConfig, GeneratorTokenizer};
    use rag_retriever::{EncodeOptions, TextTokenizer};

    let device = Default::default();
    let (hf, config) = HfRag::<Autodiff<Flex>>::load(FIXTURE.as_ref(), &device, DType::F32).unwrap();
    assert_eq!((config.title_sep.as_str(), config.doc_sep.as_str()), (" / ", " // "));
    let texts = ["alpha beta gamma", "delta epsilon", "beta delta zeta", "gamma eta theta"];
    // A word-level vocabulary small enough for the fixture's 101-token models.
    let words = TextTokenizer::word_level(texts.iter().chain(&["who is alpha"]), 1, 32).unwrap();
    let generator_tokenizer = GeneratorTokenizer::from_tokenizer(words.inner().clone());
    let model = hf.into_rag_model(&config, None, words, generator_tokenizer, RagLoss::RagToken).unwrap();
    assert_eq!(model.config().n_docs, config.n_docs);

    let dir = tempfile::tempdir().unwrap();
    let mut builder = StoreBuilder::create(&dir.path().join("store")).unwrap();
    for (i, text) in texts.iter().enumerate() {
        builder.push(Some(i as u64), "", text).unwrap();
    }
    let store = builder.finish().unwrap();
    let mut index = FlatIndex::new(model.retriever().dim(), Metric::InnerProduct).unwrap();
    let options = EncodeOptions { batch_size: 2, with_titles: true, progress: false };
    let valid = burn::module::AutodiffModule::valid(&model);
    index_store(valid.retriever().document_encoder(), valid.passage_tokenizer(), &store, &mut index, &options).unwrap();
    let knowledge = Knowledge { store: PassageStore::open(&dir.path().join("store")).unwrap(), index: Box::new(index) };

    let out = model.loss(&knowledge, &["who is alpha"], &["beta"]).unwrap();
    let q = model.encode_questions(&["who is alpha"]).unwrap();
    let ids: Vec<u64> = out.retrieval.passages[0].iter().map(|p| p.id).collect();
    let stored: Vec<f32> = ids.iter().flat_map(|&id| knowledge.index.vector(id).unwrap().to_vec()).collect();
    let d = q.dims()[1];
    let documents = burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(stored, [1, ids.len(), d]), &device);
    let expected = HfRag::doc_scores(q, documents);
    let diff =
        rag_check::max_abs_diff(&rag_check::values(out.retrieval.doc_scores.clone()), &rag_check::values(expected));
    assert!(diff < 1e-5, "{diff}");
    let grads = out.loss.backward();
    let embeddings = model.retriever().query_encoder().bert().word_embeddings().weight.val();
    assert!(embeddings.grad(&grads).is_some(), "the loss reaches the question encoder");

    let path = std::path::Path::new(FIXTURE).join("generation_config.json");
    let generation = GenerationConfig { max_length: 6, num_beams: 2, ..GenerationConfig::from_file(&path).unwrap() };
    let answers = valid.answer(&knowledge, &["who is alpha"], DecodeMode::SequenceThorough, &generation).unwrap();
    assert_eq!(answers[0].passages.len(), config.n_docs);
}

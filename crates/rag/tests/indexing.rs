//! A store encoded into an index: every passage is found by its own vector under its id, and
//! parts that do not fit are refused.

use burn::backend::Flex;
use rag::{RagError, index_store};
use rag_index::{FlatIndex, Metric, StoreBuilder, VectorIndex};
use rag_retriever::{BertConfig, EncodeOptions, Encoder, Pooling, TextTokenizer};

/// The retriever tests' tiny WordPiece tokenizer (ids below 31).
fn tokenizer() -> TextTokenizer {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rag-retriever/tests/fixtures/tiny-wordpiece/tokenizer.json");
    TextTokenizer::from_file(path, None).unwrap()
}

#[test]
fn every_passage_is_its_own_nearest_neighbour_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = StoreBuilder::create(&dir.path().join("corpus.store")).unwrap();
    let texts = ["the cat sat", "a dog ran on the mat", "city blue", "blue river and red city", "paris"];
    for (i, text) in texts.iter().enumerate() {
        builder.push(Some(100 + i as u64), if i % 2 == 0 { "river" } else { "" }, text).unwrap();
    }
    let store = builder.finish().unwrap();
    let device = Default::default();
    let encoder = Encoder::<Flex>::init(&BertConfig::new(31, 16, 1, 2, 24, 16), Pooling::Mean, true, &device).unwrap();
    let mut index = FlatIndex::new(16, Metric::InnerProduct).unwrap();
    let options = EncodeOptions { batch_size: 2, with_titles: true, progress: false };
    let report = index_store(&encoder, &tokenizer(), &store, &mut index, &options).unwrap();
    assert_eq!(report.passages, 5);
    assert_eq!(index.len(), 5);
    for i in 0..5u64 {
        let own = index.vector(100 + i).unwrap();
        let hits = index.search(own, 1).unwrap();
        assert_eq!(hits.ids, vec![100 + i]);
        assert!((hits.scores[0] - 1.0).abs() < 1e-5, "unit vectors score 1 against themselves");
    }

    let mut narrow = FlatIndex::new(8, Metric::InnerProduct).unwrap();
    let err = index_store(&encoder, &tokenizer(), &store, &mut narrow, &options).unwrap_err();
    assert!(matches!(err, RagError::Dimension { index: 8, .. }), "{err}");
    // Indexing the same store twice: the index refuses ids it holds, naming the batch.
    let err = index_store(&encoder, &tokenizer(), &store, &mut index, &options).unwrap_err().to_string();
    assert!(err.contains("passages 100..=101"), "{err}");
}

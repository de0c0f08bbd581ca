//! A store encoded into an index: every passage is found by its own vector under its id, and
//! parts that do not fit are refused.

mod common;

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

#[test]
fn a_reused_index_is_checked_against_the_store_and_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let store_of = |name: &str, texts: &[&str]| {
        let mut builder = StoreBuilder::create(&dir.path().join(name)).unwrap();
        for (i, text) in texts.iter().enumerate() {
            builder.push(Some(i as u64), "river", text).unwrap();
        }
        builder.finish().unwrap()
    };
    let texts = ["the cat sat", "a dog ran on the mat", "city blue", "blue river and red city", "paris"];
    let store = store_of("corpus.store", &texts);
    let device = Default::default();
    let config = BertConfig::new(31, 16, 1, 2, 24, 16);
    let encoder = Encoder::<Flex>::init(&config, Pooling::Mean, true, &device).unwrap();
    let options = EncodeOptions { batch_size: 2, with_titles: true, progress: false };
    let mut index = FlatIndex::new(16, Metric::InnerProduct).unwrap();
    index_store(&encoder, &tokenizer(), &store, &mut index, &options).unwrap();
    let path = dir.path().join("corpus.index");
    let check = |encoder: &Encoder<Flex>, store: &rag_index::PassageStore, index: &FlatIndex| {
        rag::check_index(encoder, &tokenizer(), store, index, &path, &options, 3)
    };
    check(&encoder, &store, &index).unwrap();

    // Another corpus: one passage more.
    let bigger = store_of("bigger.store", &[texts.as_slice(), &["one more"]].concat());
    let err = check(&encoder, &bigger, &index).unwrap_err().to_string();
    assert!(err.contains("holds 5 vectors and the store 6 passages") && err.contains("corpus.index"), "{err}");
    // The same count, another id.
    let mut holed = FlatIndex::new(16, Metric::InnerProduct).unwrap();
    let vectors: Vec<f32> = (0..4u64).flat_map(|id| index.vector(id).unwrap().to_vec()).collect();
    holed.add(&[0, 1, 2, 3], &vectors).unwrap();
    holed.add(&[9], index.vector(4).unwrap()).unwrap();
    let err = check(&encoder, &store, &holed).unwrap_err().to_string();
    assert!(err.contains("no vector for passage 4"), "{err}");
    // Another encoder's vectors.
    let other = common::reinit(encoder.clone(), 7);
    let err = check(&other, &store, &index).unwrap_err().to_string();
    assert!(err.contains("was not built by this document encoder"), "{err}");
}

//! Tokenization from a local `tokenizer.json`: padding to the batch's longest sequence,
//! truncation, (title, text) pairs with token types, and clear errors.

mod common;

use common::{minilm_dir, tiny_tokenizer_dir};
use rag_retriever::TextTokenizer;

const PAD: i64 = 0;
const CLS: i64 = 2;
const SEP: i64 = 3;

fn id(word: &str) -> i64 {
    5 + common::WORDS.iter().position(|w| *w == word).unwrap() as i64
}

#[test]
fn batches_are_padded_to_the_longest_with_masks() {
    let dir = tiny_tokenizer_dir(true);
    let tok = TextTokenizer::from_file(dir.path(), None).unwrap();
    assert_eq!(tok.max_len(), 512, "no truncation in the file: BERT's 512");
    let batch = tok.encode(&["The cat sat.", "Dogs ran"]).unwrap();
    assert_eq!((batch.batch, batch.len), (2, 6));
    assert_eq!(
        batch.input_ids,
        vec![CLS, id("the"), id("cat"), id("sat"), id("."), SEP, CLS, id("dog"), id("##s"), id("ran"), SEP, PAD,]
    );
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    assert_eq!(batch.token_type_ids, vec![0; 12]);
    assert_eq!(batch.row_ids(1), vec![CLS, id("dog"), id("##s"), id("ran"), SEP]);
}

#[test]
fn pairs_get_token_types_and_truncation_keeps_the_special_tokens() {
    let dir = tiny_tokenizer_dir(true);
    let tok = TextTokenizer::from_file(dir.path().join("tokenizer.json"), Some(7)).unwrap();
    let batch = tok.encode_pairs(&[("Paris", "Paris is the capital of France.")]).unwrap();
    assert_eq!(batch.len, 7);
    // Longest-first truncation takes the text down to 3 tokens: [CLS] paris [SEP] paris is the [SEP].
    assert_eq!(batch.input_ids, vec![CLS, id("paris"), SEP, id("paris"), id("is"), id("the"), SEP]);
    assert_eq!(batch.token_type_ids, vec![0, 0, 0, 1, 1, 1, 1]);
    let batch = tok.encode(&["a red dog and a blue cat sat on the mat"]).unwrap();
    assert_eq!(batch.len, 7);
    assert_eq!(batch.input_ids[6], SEP);
}

#[test]
fn unusable_tokenizers_are_refused_with_the_path() {
    let err = TextTokenizer::from_file("/nonexistent/tokenizer.json", None).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tokenizer.json") && err.contains("no such file"), "{err}");

    let dir = tiny_tokenizer_dir(false);
    let err = TextTokenizer::from_file(dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("no [PAD] or <pad> token"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"version\": ").unwrap();
    let err = TextTokenizer::from_file(dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");

    let dir = tiny_tokenizer_dir(true);
    assert!(TextTokenizer::from_file(dir.path(), Some(1)).unwrap_err().to_string().contains("max length 1"));
}

#[test]
fn minilm_tokenizer_pads_to_the_batch_not_to_its_fixed_128() {
    let Some(dir) = minilm_dir() else { return };
    let tok = TextTokenizer::from_file(&dir, None).unwrap();
    assert_eq!(tok.max_len(), 128, "the file's truncation length");
    let batch = tok.encode(&["A man is eating food.", "Hello"]).unwrap();
    assert_eq!(batch.len, 8);
    assert_eq!(&batch.input_ids[..8], &[101, 1037, 2158, 2003, 5983, 2833, 1012, 102]);
}

#[test]
fn a_word_level_tokenizer_built_from_text_encodes_pairs_and_saves() {
    let texts = ["Zorblat lives in Quenta.", "quenta is a town", "zorblat, zorblat"];
    let tok = TextTokenizer::word_level(texts, 2, 16).unwrap();
    // Specials, then the words seen at least twice, sorted: quenta, zorblat.
    assert_eq!(tok.vocab_size(), 7);
    let batch = tok.encode_pairs(&[("Zorblat", "quenta town")]).unwrap();
    let (quenta, zorblat, unk) = (5, 6, 1);
    assert_eq!(batch.input_ids, vec![CLS, zorblat, SEP, quenta, unk, SEP]);
    assert_eq!(batch.token_type_ids, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(tok.max_len(), 16);
    let dir = tempfile::tempdir().unwrap();
    tok.save(&dir.path().join("tokenizer.json")).unwrap();
    let back = TextTokenizer::from_file(dir.path(), None).unwrap();
    assert_eq!(back.max_len(), 16);
    assert_eq!(back.encode_pairs(&[("Zorblat", "quenta town")]).unwrap(), batch);
}

//! Encoding a corpus in batches gives each passage the vector it gets alone, in input order,
//! with titles encoded as DPR's (title, text) pairs.

mod common;

use common::{B, max_abs_diff, tiny_tokenizer_dir, values};
use rag_retriever::{BertConfig, EncodeOptions, Encoder, Pooling, RetrieverError, TextTokenizer, encode_passages};

fn passages() -> Vec<(u64, &'static str, &'static str)> {
    vec![
        (10, "Paris", "Paris is the capital of France."),
        (11, "", "The cat sat on the mat."),
        (12, "Dogs", "A dog ran."),
        (13, "", "Blue river, red city."),
        (14, "France", "What is the capital?"),
        (15, "Cats", "Cats sat."),
        (16, "", "Who wrote it?"),
    ]
}

#[test]
fn batches_give_every_passage_its_own_vector_in_order() {
    let device = Default::default();
    let encoder = Encoder::<B>::init(&BertConfig::new(40, 16, 2, 2, 24, 32), Pooling::Cls, true, &device).unwrap();
    let dir = tiny_tokenizer_dir(true);
    let tokenizer = TextTokenizer::from_file(dir.path(), None).unwrap();
    let options = EncodeOptions { batch_size: 3, with_titles: true, progress: false };
    let mut seen_ids = Vec::new();
    let mut seen = Vec::new();
    let mut calls = 0;
    let report = encode_passages(&encoder, &tokenizer, passages(), Some(7), &options, |ids, vectors| {
        calls += 1;
        assert_eq!(vectors.len(), ids.len() * 16);
        seen_ids.extend_from_slice(ids);
        seen.extend(vectors.iter().map(|&v| f64::from(v)));
        Ok::<(), String>(())
    })
    .unwrap();
    assert_eq!(report.passages, 7);
    assert_eq!(calls, 3, "7 passages in batches of 3");
    assert_eq!(seen_ids, (10..17).collect::<Vec<_>>());
    for (i, (_, title, text)) in passages().into_iter().enumerate() {
        let alone = if title.is_empty() {
            tokenizer.encode(&[text]).unwrap()
        } else {
            tokenizer.encode_pairs(&[(title, text)]).unwrap()
        };
        let want = values(encoder.encode(&alone).unwrap());
        let err = max_abs_diff(&seen[i * 16..(i + 1) * 16], &want);
        assert!(err < 1e-5, "passage {i}: batched differs from alone by {err}");
    }
}

#[test]
fn a_refusing_sink_stops_the_run_and_names_the_batch() {
    let device = Default::default();
    let encoder = Encoder::<B>::init(&BertConfig::new(40, 16, 1, 2, 24, 32), Pooling::Cls, false, &device).unwrap();
    let dir = tiny_tokenizer_dir(true);
    let tokenizer = TextTokenizer::from_file(dir.path(), None).unwrap();
    let options = EncodeOptions { batch_size: 2, with_titles: false, progress: false };
    let mut batches = 0;
    let err = encode_passages(&encoder, &tokenizer, passages(), None, &options, |ids, _| {
        batches += 1;
        if ids.contains(&13) { Err(format!("id {} exists", 13)) } else { Ok(()) }
    })
    .unwrap_err();
    assert_eq!(batches, 2);
    assert!(matches!(err, RetrieverError::Sink { first_id: 12, last_id: 13, .. }), "{err}");
    assert!(err.to_string().contains("passages 12..=13: id 13 exists"), "{err}");

    let zero = EncodeOptions { batch_size: 0, ..options };
    let err = encode_passages(&encoder, &tokenizer, passages(), None, &zero, |_, _| Ok::<(), String>(())).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

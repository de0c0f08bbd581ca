//! Checkpoints and configs that do not fit are refused with errors naming the tensor, the
//! field or the file; tokenizers load from local files and decode back to text.

mod common;

use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{B, edited_model, fixture, load_bart, load_llama, max_abs_diff, values};
use rag_generator::{
    BartBatch, BartConfig, ConfigFile, GenerationConfig, GeneratorError, GeneratorTokenizer, LlamaConfig, PaddingSide,
};

#[test]
fn a_missing_tensor_is_named() {
    let dir = edited_model(
        "llama",
        |t| t.into_iter().filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight").collect(),
        |_| {},
    );
    let err = load_llama::<B>(dir.path(), DType::F32).unwrap_err().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
}

#[test]
fn a_shape_mismatch_names_the_tensor_and_both_shapes() {
    let dir = edited_model(
        "bart",
        |t| {
            t.into_iter()
                .map(|(n, d)| {
                    if n == "model.decoder.layers.0.fc1.weight" {
                        (n, TensorData::new(vec![0f32; 63 * 32], [63, 32]))
                    } else {
                        (n, d)
                    }
                })
                .collect()
        },
        |_| {},
    );
    let err = load_bart::<B>(dir.path(), DType::F32).unwrap_err().to_string();
    assert!(err.contains("model.decoder.layers.0.fc1.weight"), "{err}");
    assert!(err.contains("[64, 32]") && err.contains("[63, 32]"), "{err}");
}

#[test]
fn config_errors_name_the_file_and_field() {
    let dir = edited_model("llama", |t| t, |c| c["rope_parameters"]["rope_type"] = "yarn".into());
    let err = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap_err();
    assert!(matches!(err, GeneratorError::Config { field: "rope_parameters", .. }), "{err}");
    assert!(err.to_string().contains("yarn") && err.to_string().contains("config.json"), "{err}");

    let dir = edited_model("llama", |t| t, |c| c["num_key_value_heads"] = 3.into());
    let err = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap_err();
    assert!(err.to_string().contains("num_key_value_heads"), "{err}");

    let dir = edited_model("bart", |t| t, |c| c["model_type"] = "mbart".into());
    let err = BartConfig::from_file(&dir.path().join("config.json")).unwrap_err();
    assert!(err.to_string().contains("normalize_before"), "{err}");

    let dir = edited_model("bart", |t| t, |c| c["d_model"] = "wide".into());
    let err = BartConfig::from_file(&dir.path().join("config.json")).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("line"), "{err}");
}

#[test]
fn generation_configs_accept_hf_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generation_config.json");
    std::fs::write(&path, r#"{"eos_token_id": [128001, 128009], "early_stopping": "never", "num_beams": 4}"#).unwrap();
    let config = GenerationConfig::from_file(&path).unwrap();
    assert_eq!(config.eos_token_id, vec![128001, 128009]);
    assert_eq!(config.early_stopping, rag_generator::EarlyStopping::Never);
    assert_eq!((config.num_beams, config.max_length), (4, 20));
    std::fs::write(&path, r#"{"num_beams": 2, "num_return_sequences": 5}"#).unwrap();
    let err = GenerationConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("num_return_sequences") && err.contains("generation_config.json"), "{err}");
}

#[test]
fn a_trained_byte_level_bpe_round_trips_any_text_and_reloads() {
    let corpus = [
        "The capital of Zorvania is Quellmoor.",
        "Quellmoor lies on the river Astrel, north of the Vey mountains.",
        "The Astrel flows into the Pale Sea.",
        "Zorvania was founded in 1312 by Maren Tolk.",
    ];
    let specials = ["<s>", "<pad>", "</s>", "<unk>"];
    let tokenizer = GeneratorTokenizer::train_byte_level_bpe(corpus.iter().cycle().take(40), 300, &specials).unwrap();
    assert_eq!(tokenizer.token_id("<pad>"), Some(1));
    assert!(tokenizer.vocab_size() <= 300 && tokenizer.vocab_size() > 256, "{}", tokenizer.vocab_size());
    let text = "Who founded Zorvania? Maren Tolk — in 1312 (ünïcödé too).";
    let ids = tokenizer.encode(text, false).unwrap();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    let known = tokenizer.encode("Quellmoor", false).unwrap();
    assert!(known.len() < "Quellmoor".len(), "frequent words merge: {known:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tokenizer.save(&path).unwrap();
    let reloaded = GeneratorTokenizer::from_file(dir.path()).unwrap();
    assert_eq!(reloaded.encode(text, false).unwrap(), ids);
    let with_special = [vec![0], ids.clone(), vec![2]].concat();
    assert_eq!(reloaded.decode(&with_special, true).unwrap(), text);

    let padded = rag_generator::Padded::new(&[ids.clone(), vec![5]], 1, PaddingSide::Left);
    assert_eq!(padded.ids[1][..ids.len() - 1], vec![1; ids.len() - 1][..]);
    assert_eq!(padded.mask[1][ids.len() - 1], 1);
}

#[test]
fn a_missing_or_broken_tokenizer_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = GeneratorTokenizer::from_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("no such file"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let err = GeneratorTokenizer::from_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn bart_reads_the_older_layout_with_separate_embedding_and_head_keys() {
    // transformers before 5 stored the tied matrices under every name; some files lack `shared`.
    let dir = edited_model(
        "bart",
        |mut tensors| {
            let shared = tensors.iter().position(|(n, _)| n == "model.shared.weight").unwrap();
            let (_, data) = tensors.remove(shared);
            for name in ["model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"] {
                tensors.push((name.to_string(), data.clone()));
            }
            tensors
        },
        |_| {},
    );
    logits_match_the_fixture("bart", dir.path());
}

#[test]
fn llama_with_tied_embeddings_reads_no_lm_head() {
    // Tie the head to the embeddings: logits change, so compare against our own untied model
    // whose head is a copy of the embeddings.
    let tied = edited_model(
        "llama",
        |tensors| tensors.into_iter().filter(|(n, _)| n != "lm_head.weight").collect(),
        |c| c["tie_word_embeddings"] = true.into(),
    );
    let untied_copy = edited_model(
        "llama",
        |mut tensors| {
            let embed: TensorData = tensors.iter().find(|(n, _)| n == "model.embed_tokens.weight").unwrap().1.clone();
            tensors.iter_mut().find(|(n, _)| n == "lm_head.weight").unwrap().1 = embed;
            tensors
        },
        |_| {},
    );
    let a = load_llama::<B>(tied.path(), DType::F64).unwrap();
    let b = load_llama::<B>(untied_copy.path(), DType::F64).unwrap();
    let ids = Tensor::<B, 2, Int>::from_data([[1, 5, 9, 2]], &Default::default());
    let mask = ids.ones_like();
    let diff = max_abs_diff(&values(a.forward(ids.clone(), mask.clone())), &values(b.forward(ids, mask)));
    assert!(diff < 1e-12, "{diff}");
}

#[test]
fn older_llama_configs_with_a_top_level_rope_theta_load_the_same() {
    let dir = edited_model(
        "llama",
        |t| t,
        |c| {
            let theta = c["rope_parameters"]["rope_theta"].clone();
            c.as_object_mut().unwrap().remove("rope_parameters");
            c["rope_theta"] = theta;
        },
    );
    logits_match_the_fixture("llama", dir.path());
}

#[test]
fn sharded_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("bart");
    let checkpoint = rag_hf::Checkpoint::open(&src).unwrap();
    let names: Vec<String> = checkpoint.names().map(str::to_string).collect();
    let mut map = serde_json::Map::new();
    for (part, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", part + 1);
        let tensors: Vec<_> = chunk.iter().map(|n| (n.clone(), checkpoint.read(n).unwrap())).collect();
        rag_hf::write_safetensors(&dir.path().join(&file), &tensors).unwrap();
        for n in chunk {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    for extra in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(extra), dir.path().join(extra)).unwrap();
    }
    logits_match_the_fixture("bart", dir.path());
}

/// The model in `dir`, edited from fixture `component` into another layout, computes the
/// fixture's logits (whose parity with HF is `rag-parity`'s test) to the last bit, in f64.
fn logits_match_the_fixture(component: &str, dir: &std::path::Path) {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data([[0, 5, 9, 12, 2]], &device);
    let mask = ids.ones_like();
    let logits = |at: &std::path::Path| match component {
        "bart" => load_bart::<B>(at, DType::F64).unwrap().forward(BartBatch {
            input_ids: ids.clone(),
            attention_mask: mask.clone(),
            decoder_input_ids: ids.clone(),
            decoder_attention_mask: None,
        }),
        _ => load_llama::<B>(at, DType::F64).unwrap().forward(ids.clone(), mask.clone()),
    };
    let diff = max_abs_diff(&values(logits(dir)), &values(logits(&fixture(component))));
    assert_eq!(diff, 0.0, "{component} in another layout");
}

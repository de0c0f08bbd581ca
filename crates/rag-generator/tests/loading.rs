//! Checkpoints and configs that do not fit are refused with errors naming the tensor, the
//! field or the file; tokenizers load from local files and decode back to text.

mod common;

use burn::tensor::{DType, TensorData};
use common::{B, edited_model, load_bart, load_llama};
use rag_generator::{
    BartConfig, ConfigFile, GenerationConfig, GeneratorError, GeneratorTokenizer, LlamaConfig, PaddingSide,
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

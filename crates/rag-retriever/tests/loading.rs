//! Loading HF checkpoints: every layout the crate reads gives the fixture's outputs, and every
//! way a checkpoint can fail to fit is an error that names the tensor, file or field.

mod common;

use std::path::Path;

use burn::tensor::DType;
use common::{B, edited_model, fixture, max_abs_diff, read_all, values, write_safetensors};
use rag_retriever::{BertConfig, Encoder, EncoderOptions, Pooling, RetrieverError, TokenBatch, WeightLayout};
use safetensors::tensor::Dtype;

#[derive(serde::Deserialize)]
struct Array<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

#[derive(serde::Deserialize)]
struct Expected {
    input_ids: Array<i64>,
    attention_mask: Array<i64>,
    #[serde(default)]
    token_type_ids: Option<Array<i64>>,
    #[serde(default)]
    pooler_output: Option<Array<f64>>,
    #[serde(default)]
    mean_pooled: Option<Array<f64>>,
}

fn expected(component: &str) -> Expected {
    serde_json::from_str(&std::fs::read_to_string(fixture(component).join("expected.json")).unwrap()).unwrap()
}

fn batch(e: &Expected) -> TokenBatch {
    let [b, l] = [e.input_ids.shape[0], e.input_ids.shape[1]];
    TokenBatch::new(
        e.input_ids.data.clone(),
        e.attention_mask.data.clone(),
        e.token_type_ids.as_ref().map(|t| t.data.clone()),
        b,
        l,
    )
    .unwrap()
}

fn encode(dir: &Path, pooling: Option<Pooling>, normalize: Option<bool>, e: &Expected) -> Vec<f64> {
    let options = EncoderOptions { pooling, normalize, dropout: 0.0 };
    let encoder = Encoder::<B>::from_pretrained(dir, &options, &Default::default(), DType::F32).unwrap();
    values(encoder.encode(&batch(e)).unwrap())
}

fn load_error(dir: &Path) -> String {
    Encoder::<B>::from_pretrained(dir, &EncoderOptions::default(), &Default::default(), DType::F32)
        .unwrap_err()
        .to_string()
}

#[test]
fn dpr_cls_vector_and_plain_bert_mean_and_pooler_outputs_load_from_fixture_directories() {
    let e = expected("dpr");
    assert!(max_abs_diff(&encode(&fixture("dpr"), None, None, &e), &e.pooler_output.unwrap().data) < 1e-4);
    let e = expected("bert");
    let mean = encode(&fixture("bert"), Some(Pooling::Mean), None, &e);
    assert!(max_abs_diff(&mean, &e.mean_pooled.as_ref().unwrap().data) < 1e-4);
    let pooled = encode(&fixture("bert"), Some(Pooling::Pooler), None, &e);
    assert!(max_abs_diff(&pooled, &e.pooler_output.as_ref().unwrap().data) < 1e-4);
}

#[test]
fn sentence_transformers_directory_picks_pooling_and_normalisation_from_its_modules() {
    let dir = edited_model("bert", |t| t, |_| {});
    std::fs::write(
        dir.path().join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}"#,
    )
    .unwrap();
    let e = expected("bert");
    let ours = encode(dir.path(), None, None, &e);
    let mean = &e.mean_pooled.as_ref().unwrap().data;
    let unit: Vec<f64> = mean
        .chunks(32)
        .flat_map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
            row.iter().map(move |x| x / norm)
        })
        .collect();
    assert!(max_abs_diff(&ours, &unit) < 1e-4);

    // Explicit options override the directory's choices.
    assert!(max_abs_diff(&encode(dir.path(), None, Some(false), &e), mean) < 1e-4);

    std::fs::write(
        dir.path().join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("modules.json") && err.contains("sentence_transformers.models.Dense"), "{err}");
}

#[test]
fn bert_prefix_of_bert_for_classes_is_detected() {
    let dir = edited_model("bert", |t| t.into_iter().map(|(n, s, v)| (format!("bert.{n}"), s, v)).collect(), |_| {});
    let e = expected("bert");
    let pooled = encode(dir.path(), Some(Pooling::Pooler), None, &e);
    assert!(max_abs_diff(&pooled, &e.pooler_output.as_ref().unwrap().data) < 1e-4);
}

#[test]
fn dpr_context_encoder_layout_and_projection() {
    let e = expected("dpr");
    let cls = e.pooler_output.as_ref().unwrap().data.clone();
    // The same weights written as a DPRContextEncoder.
    let dir = edited_model(
        "dpr",
        |t| t.into_iter().map(|(n, s, v)| (n.replace("question_encoder.", "ctx_encoder."), s, v)).collect(),
        |c| c["architectures"] = serde_json::json!(["DPRContextEncoder"]),
    );
    assert!(max_abs_diff(&encode(dir.path(), None, None, &e), &cls) < 1e-4);

    // projection_dim > 0: `encode_proj` maps the [CLS] vector to 3 dims: y = W·cls + b.
    let w: Vec<f32> = (0..3 * 32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
    let b = vec![0.5f32, -0.25, 0.0];
    let (w2, b2) = (w.clone(), b.clone());
    let dir = edited_model(
        "dpr",
        move |mut t| {
            t.push(("question_encoder.encode_proj.weight".into(), vec![3, 32], w2));
            t.push(("question_encoder.encode_proj.bias".into(), vec![3], b2));
            t
        },
        |c| c["projection_dim"] = serde_json::json!(3),
    );
    let ours = encode(dir.path(), None, None, &e);
    let want: Vec<f64> = cls
        .chunks(32)
        .flat_map(|x| {
            (0..3).map(|o| b[o] as f64 + (0..32).map(|i| w[o * 32 + i] as f64 * x[i]).sum::<f64>()).collect::<Vec<_>>()
        })
        .collect();
    assert!(max_abs_diff(&ours, &want) < 1e-4, "{ours:?} vs {want:?}");
}

#[test]
fn half_precision_and_sharded_checkpoints_load() {
    let e = expected("dpr");
    let cls = &e.pooler_output.as_ref().unwrap().data;
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = edited_model("dpr", |t| t, |_| {});
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &read_all(&fixture("dpr").join("model.safetensors")),
            dtype,
        );
        let err = max_abs_diff(&encode(dir.path(), None, None, &e), cls);
        assert!(err < 0.1, "{dtype:?} weights give {err}");
    }

    // Two shards and an index, as `save_pretrained(max_shard_size=...)` writes.
    let dir = edited_model("dpr", |t| t, |_| {});
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let tensors = read_all(&fixture("dpr").join("model.safetensors"));
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    write_safetensors(&dir.path().join(names[0]), first, Dtype::F32);
    write_safetensors(&dir.path().join(names[1]), second, Dtype::F32);
    let map: serde_json::Map<String, serde_json::Value> = first
        .iter()
        .map(|t| (t.0.clone(), names[0].into()))
        .chain(second.iter().map(|t| (t.0.clone(), names[1].into())))
        .collect();
    std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"weight_map": map}).to_string())
        .unwrap();
    assert!(max_abs_diff(&encode(dir.path(), None, None, &e), cls) < 1e-4);
}

#[test]
fn a_missing_tensor_is_named_with_its_checkpoint() {
    let gone = "encoder.layer.1.output.dense.weight";
    let dir = edited_model("bert", |t| t.into_iter().filter(|t| t.0 != gone).collect(), |_| {});
    let err = load_error(dir.path());
    assert!(err.contains(&format!("missing tensor `{gone}`")), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_shape_mismatch_names_the_tensor_and_both_shapes() {
    let dir = edited_model("bert", |t| t, |c| c["intermediate_size"] = serde_json::json!(48));
    let err = load_error(dir.path());
    assert!(err.contains("`encoder.layer.0.intermediate.dense.weight`"), "{err}");
    assert!(err.contains("expects shape [48, 32]") && err.contains("has [64, 32]"), "{err}");
}

#[test]
fn a_wrong_prefix_gets_a_hint_naming_the_right_one() {
    let checkpoint = rag_hf::Checkpoint::open(fixture("dpr")).unwrap();
    let config = BertConfig::from_file(&fixture("dpr").join("config.json")).unwrap();
    let err = Encoder::<B>::load(
        &checkpoint,
        &WeightLayout::bert(),
        &config,
        Pooling::Cls,
        false,
        0.0,
        &Default::default(),
        DType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing tensor `embeddings.word_embeddings.weight`"), "{err}");
    assert!(err.contains("prefix `question_encoder.bert_model.`"), "{err}");
}

#[test]
fn bad_configs_are_refused_with_file_line_or_field() {
    let dir = edited_model("bert", |t| t, |_| {});
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{\n  \"hidden_size\": 32,\n  \"vocab_size\": oops\n}").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("config.json:3:"), "{err}");

    let dir = edited_model("bert", |t| t, |c| c["position_embedding_type"] = serde_json::json!("relative_key"));
    let err = load_error(dir.path());
    assert!(err.contains("position_embedding_type") && err.contains("relative_key"), "{err}");

    let dir = edited_model("bert", |t| t, |c| c["hidden_act"] = serde_json::json!("gelu_10"));
    assert!(load_error(dir.path()).contains("gelu_10"));

    let dir = edited_model("bert", |t| t, |c| c["num_attention_heads"] = serde_json::json!(5));
    let err = load_error(dir.path());
    assert!(err.contains("num_attention_heads") && err.contains("does not divide hidden_size 32"), "{err}");

    let err = load_error(Path::new("/nonexistent/model"));
    assert!(err.contains("/nonexistent/model"), "{err}");

    let dir = edited_model("bert", |t| t, |_| {});
    std::fs::write(dir.path().join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("model.safetensors is not a valid safetensors file"), "{err}");
}

#[test]
fn inputs_that_do_not_fit_the_model_are_refused() {
    let encoder =
        Encoder::<B>::from_pretrained(fixture("bert"), &EncoderOptions::default(), &Default::default(), DType::F32)
            .unwrap();
    let vocab = BertConfig::from_file(&fixture("bert").join("config.json")).unwrap().vocab_size as i64;
    let batch = TokenBatch::new(vec![1, 2, vocab], vec![1, 1, 1], None, 1, 3).unwrap();
    match encoder.encode(&batch) {
        Err(RetrieverError::Input { field: "input_ids", message }) => {
            assert!(message.contains(&format!("value {vocab} at row 0, position 2")), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let long = 65;
    let batch = TokenBatch::new(vec![1; long], vec![1; long], None, 1, long).unwrap();
    let err = encoder.encode(&batch).unwrap_err().to_string();
    assert!(err.contains("length 65 exceeds the model's 64 positions"), "{err}");
    assert!(TokenBatch::new(vec![1, 2], vec![1, 2], None, 1, 2).unwrap_err().to_string().contains("must be 0 or 1"));
    assert!(TokenBatch::new(vec![1, 2], vec![1], None, 1, 2).is_err());
}

//! Parity with HF transformers on the fixtures: logits (full and through the KV cache) and
//! greedy / beam outputs token for token, in f32 and f64, and for every checkpoint layout.

mod common;

use burn::tensor::DType;
use burn::tensor::TensorData;
use common::{B, edited_model, fixture};
use rag_parity::{check_bart, check_llama};

fn assert_passes(report: rag_parity::ComponentReport) {
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.cases >= 4, "logits, cached logits and at least the generation cases: {report}");
}

#[test]
fn bart_matches_hf_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        assert_passes(check_bart::<B>(&fixture("bart"), &Default::default(), dtype).unwrap());
    }
}

#[test]
fn llama_matches_hf_in_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        let report = check_llama::<B>(&fixture("llama"), &Default::default(), dtype).unwrap();
        println!("{report}");
        assert!(report.passed() && report.cases >= 3, "{report}");
    }
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
    assert_passes(check_bart::<B>(dir.path(), &Default::default(), DType::F32).unwrap());
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
    let a = common::load_llama::<B>(tied.path(), DType::F64).unwrap();
    let b = common::load_llama::<B>(untied_copy.path(), DType::F64).unwrap();
    let ids = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data([[1, 5, 9, 2]], &Default::default());
    let mask = ids.ones_like();
    let diff = common::max_abs_diff(
        &common::values(a.forward(ids.clone(), mask.clone())),
        &common::values(b.forward(ids, mask)),
    );
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
    let report = check_llama::<B>(dir.path(), &Default::default(), DType::F32).unwrap();
    assert!(report.passed(), "{report}");
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
    for extra in ["config.json", "generation_config.json", "expected.json"] {
        std::fs::copy(src.join(extra), dir.path().join(extra)).unwrap();
    }
    assert_passes(check_bart::<B>(dir.path(), &Default::default(), DType::F32).unwrap());
}

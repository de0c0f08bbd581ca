//! Components `bart` and `llama`: the generators against HF's `BartForConditionalGeneration`
//! and `LlamaForCausalLM`: teacher-forced logits, the same logits through the KV cache one token
//! at a time, and `generate` outputs token for token.
//!
//! Generation cases are found by name, so another fixture set may hold other lengths and beam
//! counts: `greedy_max_length_N`, `beamK_max_length_N` (BART, `early_stopping=True`,
//! `length_penalty=1.0`) and `greedy_N_new_tokens` (LLaMA, `min_new_tokens = N`).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rag_generator::{
    Bart, BartConfig, ConfigFile, DecodeState, EarlyStopping, GenerationConfig, Llama, LlamaConfig, StepModel,
};
use rag_hf::{Checkpoint, Loader};
use serde_json::{Map, Value};

use crate::encoders::{compare, empty_report, field, shaped};
use rag_check::{Array, FixtureError, read_json};
use rag_check::{ComponentReport, Errors};

type Expected = Map<String, Value>;

pub(crate) fn array<T: serde::de::DeserializeOwned>(
    path: &Path,
    expected: &Expected,
    name: &str,
    rank: usize,
) -> Result<Array<T>, FixtureError> {
    let value = expected.get(name).ok_or_else(|| field(path, name, "array", "missing".into()))?;
    let array: Array<T> =
        serde_json::from_value(value.clone()).map_err(|e| field(path, name, "array", e.to_string()))?;
    array.validate(rank).map_err(|m| field(path, name, "array", m))?;
    Ok(array)
}

fn rows(array: &Array<i64>) -> Vec<Vec<u32>> {
    let width = array.shape[1];
    array.data.chunks(width.max(1)).map(|r| r.iter().map(|&v| v as u32).collect()).collect()
}

pub(crate) fn int_tensor<B: Backend>(array: &Array<i64>, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(array.data.clone(), [array.shape[0], array.shape[1]]), device)
}

/// Compares generated rows with the reference token for token; a difference is an infinite
/// error naming the row and position.
pub(crate) fn compare_tokens(report: &mut ComponentReport, name: &str, ours: &[Vec<u32>], expected: &Array<i64>) {
    report.cases += 1;
    let want = rows(expected);
    let mismatch = if ours.len() != want.len() || ours.iter().any(|r| r.len() != expected.shape[1]) {
        Some(format!(
            "{name}: shape [{}, {}], expected {:?}",
            ours.len(),
            ours.first().map_or(0, Vec::len),
            expected.shape
        ))
    } else {
        ours.iter().zip(&want).enumerate().find_map(|(r, (a, b))| {
            a.iter().zip(b).position(|(x, y)| x != y).map(|p| format!("{name}: row {r} differs at {p}: {a:?} vs {b:?}"))
        })
    };
    if let Some(what) = mismatch {
        let infinite = Errors { max_abs: f64::INFINITY, max_rel: f64::INFINITY };
        report.errors = report.errors.max(infinite);
        report.failures.push((what, infinite));
    }
}

/// Feeds `tokens` one position at a time through the cache and stacks the logits `[b, t, V]`.
fn cached_logits<B: Backend, M: StepModel<B>>(
    model: &M,
    mut state: M::State,
    tokens: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let [b, t] = tokens.dims();
    let steps: Vec<Tensor<B, 3>> = (0..t)
        .map(|i| {
            let logits = model.step(&mut state, tokens.clone().narrow(1, i, 1));
            let vocab = logits.dims()[1];
            logits.reshape([b, 1, vocab])
        })
        .collect();
    debug_assert_eq!(state.len(), t);
    Tensor::cat(steps, 1)
}

/// Parses `prefix N suffix` names (`greedy_max_length_10` → 10).
fn number_between(name: &str, prefix: &str, suffix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

fn generation_config(dir: &Path, fallback: GenerationConfig) -> Result<GenerationConfig, FixtureError> {
    let path = dir.join("generation_config.json");
    if path.exists() {
        GenerationConfig::from_file(&path).map_err(|e| field(&path, "config", "generation_config.json", e.to_string()))
    } else {
        Ok(fallback)
    }
}

/// Component `bart`.
pub fn check_bart<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<ComponentReport, FixtureError> {
    let expected_path = dir.join("expected.json");
    let expected: Expected = read_json(&expected_path)?;
    let model_error = |e: rag_generator::GeneratorError| field(dir, "model", "model.safetensors", e.to_string());
    let config = BartConfig::from_file(&dir.join("config.json")).map_err(model_error)?;
    let checkpoint = Checkpoint::open(dir).map_err(|e| model_error(e.into()))?;
    let model = Bart::<B>::load(&config, &Loader::new(&checkpoint, "", device, dtype), 0.0).map_err(model_error)?;
    let generation = generation_config(dir, GenerationConfig::for_bart(&config))?;

    let input_ids = array::<i64>(&expected_path, &expected, "input_ids", 2)?;
    let attention_mask = array::<i64>(&expected_path, &expected, "attention_mask", 2)?;
    let decoder_input_ids = array::<i64>(&expected_path, &expected, "decoder_input_ids", 2)?;
    let logits = array::<f64>(&expected_path, &expected, "logits", 3)?;
    model
        .check_ids("input_ids", &rows(&input_ids))
        .map_err(|e| field(&expected_path, "inputs", "input_ids", e.to_string()))?;
    model
        .check_ids("decoder_input_ids", &rows(&decoder_input_ids))
        .map_err(|e| field(&expected_path, "inputs", "decoder_input_ids", e.to_string()))?;
    let ids = int_tensor::<B>(&input_ids, device);
    let mask = int_tensor::<B>(&attention_mask, device);
    let decoder_ids = int_tensor::<B>(&decoder_input_ids, device);

    let mut report = empty_report("bart", dtype);
    let encoded = model.encode(ids.clone(), mask.clone());
    let ours = model.decode(decoder_ids.clone(), None, encoded.clone(), mask.clone());
    compare(&mut report, "logits", shaped(ours), &logits);
    let state = model.begin_from_encoded(encoded, mask);
    compare(
        &mut report,
        "logits (KV cache, one token at a time)",
        shaped(cached_logits(&model, state, decoder_ids)),
        &logits,
    );

    let inputs = unpadded(&input_ids, &attention_mask);
    for name in expected.keys() {
        let (beams, max_length) = if let Some(n) = number_between(name, "greedy_max_length_", "") {
            (1, n)
        } else if let Some((beams, n)) = name
            .strip_prefix("beam")
            .and_then(|rest| rest.split_once("_max_length_"))
            .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))
        {
            (beams, n)
        } else {
            continue;
        };
        let want = array::<i64>(&expected_path, &expected, name, 2)?;
        let config = GenerationConfig {
            max_length,
            max_new_tokens: None,
            num_beams: beams,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: if beams > 1 { EarlyStopping::True } else { generation.early_stopping },
            ..generation.clone()
        };
        let out =
            model.generate(&inputs, &config).map_err(|e| field(&expected_path, name, "generate", e.to_string()))?;
        compare_tokens(&mut report, name, &out.sequences, &want);
    }
    Ok(report)
}

/// The absolute tolerance on LLaMA logits: 1e-4 in f32 (the bound). In f64 it is 1e-5,
/// not 1e-9: HF's `LlamaRMSNorm` and `LlamaRotaryEmbedding` compute in float32 even in a float64
/// model, so the float64 reference itself carries float32 rounding (5e-7 measured on the
/// fixture, whose BART, computed without such upcasts, matches to 1e-15).
pub fn llama_tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 { 1e-5 } else { 1e-4 }
}

/// Component `llama`.
pub fn check_llama<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<ComponentReport, FixtureError> {
    let expected_path = dir.join("expected.json");
    let expected: Expected = read_json(&expected_path)?;
    let model_error = |e: rag_generator::GeneratorError| field(dir, "model", "model.safetensors", e.to_string());
    let config = LlamaConfig::from_file(&dir.join("config.json")).map_err(model_error)?;
    let checkpoint = Checkpoint::open(dir).map_err(|e| model_error(e.into()))?;
    let model = Llama::<B>::load(&config, &Loader::new(&checkpoint, "", device, dtype), 0.0).map_err(model_error)?;
    let generation = generation_config(dir, GenerationConfig::for_llama(&config))?;

    let input_ids = array::<i64>(&expected_path, &expected, "input_ids", 2)?;
    let mask = match expected.get("attention_mask") {
        Some(_) => array::<i64>(&expected_path, &expected, "attention_mask", 2)?,
        None => Array { shape: input_ids.shape.clone(), data: vec![1; input_ids.data.len()] },
    };
    let logits = array::<f64>(&expected_path, &expected, "logits", 3)?;
    model
        .check_ids("input_ids", &rows(&input_ids))
        .map_err(|e| field(&expected_path, "inputs", "input_ids", e.to_string()))?;
    let ids = int_tensor::<B>(&input_ids, device);
    let mask_tensor = int_tensor::<B>(&mask, device);

    let mut report = empty_report("llama", dtype);
    report.tolerance = llama_tolerance(dtype);
    compare(&mut report, "logits", shaped(model.forward(ids.clone(), mask_tensor.clone())), &logits);
    let [b, t] = ids.dims();
    // The cache path: the first token as a one-token prompt, then one token at a time.
    let mut state = model.begin(mask_tensor.clone().narrow(1, 0, 1));
    let mut steps = Vec::with_capacity(t);
    for i in 0..t {
        // Every token keeps the fixture's mask (padding inside the prompt stays masked).
        state.set_next_mask(mask_tensor.clone().narrow(1, i, 1));
        let step = model.step(&mut state, ids.clone().narrow(1, i, 1));
        let vocab = step.dims()[1];
        steps.push(step.reshape([b, 1, vocab]));
    }
    compare(&mut report, "logits (KV cache, one token at a time)", shaped(Tensor::cat(steps, 1)), &logits);

    let prompts = unpadded(&input_ids, &mask);
    for name in expected.keys() {
        let Some(new_tokens) = number_between(name, "greedy_", "_new_tokens") else { continue };
        let want = array::<i64>(&expected_path, &expected, name, 2)?;
        let config = GenerationConfig {
            max_new_tokens: Some(new_tokens),
            min_new_tokens: Some(new_tokens),
            num_beams: 1,
            num_return_sequences: 1,
            ..generation.clone()
        };
        let out =
            model.generate(&prompts, &config).map_err(|e| field(&expected_path, name, "generate", e.to_string()))?;
        compare_tokens(&mut report, name, &out.sequences, &want);
    }
    Ok(report)
}

/// The rows of `ids` without their padding (where `mask` is 0).
pub(crate) fn unpadded(ids: &Array<i64>, mask: &Array<i64>) -> Vec<Vec<u32>> {
    rows(ids)
        .into_iter()
        .zip(rows(mask))
        .map(|(r, m)| r.into_iter().zip(m).filter(|(_, m)| *m != 0).map(|(t, _)| t).collect())
        .collect()
}

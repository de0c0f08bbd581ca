//! Components `bert`, `dpr` and `minilm`: the retriever's BERT encoder against HF's `BertModel`,
//! `DPRQuestionEncoder` (or `DPRContextEncoder`) and sentence-transformers all-MiniLM-L6-v2.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rag_hf::{Checkpoint, Loader};
use rag_retriever::{BertConfig, BertModel, Encoder, EncoderOptions, Pooling, TextTokenizer, TokenBatch, WeightLayout};
use serde::Deserialize;

use rag_check::{Array, FixtureError, read_json};
use rag_check::{ComponentReport, Errors, values};

/// The absolute tolerance the retriever issue sets: 1e-4 in f32; in f64 the computation is
/// held to 1e-9 (the fixtures are float64 outputs of float32 weights, so f64 must match closely).
pub fn encoder_tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 { 1e-9 } else { 1e-4 }
}

#[derive(Deserialize)]
struct BertExpected {
    input_ids: Array<i64>,
    attention_mask: Array<i64>,
    #[serde(default)]
    token_type_ids: Option<Array<i64>>,
    #[serde(default)]
    last_hidden_state: Option<Array<f64>>,
    #[serde(default)]
    pooler_output: Option<Array<f64>>,
    #[serde(default)]
    mean_pooled: Option<Array<f64>>,
}

#[derive(Deserialize)]
struct MinilmExpected {
    sentences: Vec<String>,
    input_ids: Array<i64>,
    attention_mask: Array<i64>,
    embeddings: Array<f64>,
    cosine: Array<f64>,
}

pub(crate) fn field(path: &Path, case: &str, field: &'static str, message: String) -> FixtureError {
    FixtureError::Field { path: path.to_path_buf(), case: case.to_string(), field, message }
}

fn model_error(dir: &Path, e: rag_retriever::RetrieverError) -> FixtureError {
    field(dir, "model", "model.safetensors", e.to_string())
}

/// Compares `ours` with `expected` (shape and values) and folds the errors into `report`.
pub(crate) fn compare(report: &mut ComponentReport, name: &str, ours: (Vec<usize>, Vec<f64>), expected: &Array<f64>) {
    let same_shape = ours.0 == expected.shape;
    let errors = if same_shape {
        Errors::between(&ours.1, &expected.data)
    } else {
        Errors { max_abs: f64::INFINITY, max_rel: f64::INFINITY }
    };
    report.cases += 1;
    report.errors = report.errors.max(errors);
    if errors.max_abs.is_nan() || errors.max_abs > report.tolerance {
        let label = if same_shape {
            name.to_string()
        } else {
            format!("{name} (shape {:?}, expected {:?})", ours.0, expected.shape)
        };
        report.failures.push((label, errors));
    }
}

pub(crate) fn shaped<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f64>) {
    (t.dims().to_vec(), values(t))
}

fn token_batch(
    path: &Path,
    ids: &Array<i64>,
    mask: &Array<i64>,
    types: Option<&Array<i64>>,
) -> Result<TokenBatch, FixtureError> {
    ids.validate(2).map_err(|m| field(path, "inputs", "input_ids", m))?;
    if mask.shape != ids.shape {
        return Err(field(
            path,
            "inputs",
            "attention_mask",
            format!("shape {:?} differs from input_ids {:?}", mask.shape, ids.shape),
        ));
    }
    if let Some(types) = types
        && types.shape != ids.shape
    {
        return Err(field(
            path,
            "inputs",
            "token_type_ids",
            format!("shape {:?} differs from input_ids {:?}", types.shape, ids.shape),
        ));
    }
    let [batch, len] = ids.dims::<2>();
    TokenBatch::new(ids.data.clone(), mask.data.clone(), types.map(|t| t.data.clone()), batch, len)
        .map_err(|e| field(path, "inputs", "input_ids", e.to_string()))
}

pub(crate) fn empty_report(component: &'static str, dtype: DType) -> ComponentReport {
    ComponentReport {
        component,
        errors: Errors::default(),
        tolerance: encoder_tolerance(dtype),
        absolute: true,
        cases: 0,
        failures: Vec::new(),
    }
}

/// Component `bert`: `last_hidden_state`, `pooler_output` and `mean_pooled` of HF's
/// `BertModel` (each compared when the fixture has it).
pub fn check_bert<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<ComponentReport, FixtureError> {
    let expected_path = dir.join("expected.json");
    let expected: BertExpected = read_json(&expected_path)?;
    let config = BertConfig::from_file(&dir.join("config.json")).map_err(|e| model_error(dir, e))?;
    let checkpoint = Checkpoint::open(dir).map_err(|e| model_error(dir, e.into()))?;
    let layout = WeightLayout::detect(&config, &checkpoint);
    let loader = Loader::<B>::new(&checkpoint, &layout.bert, device, dtype);
    let pooler = expected.pooler_output.is_some();
    let model = BertModel::load(&config, &loader, pooler, 0.0).map_err(|e| model_error(dir, e))?;
    let batch =
        token_batch(&expected_path, &expected.input_ids, &expected.attention_mask, expected.token_type_ids.as_ref())?;
    batch
        .check_fits(config.vocab_size, config.type_vocab_size, config.max_position_embeddings)
        .map_err(|e| field(&expected_path, "inputs", "input_ids", e.to_string()))?;
    let input = batch.to_input::<B>(device);
    let mask = input.attention_mask.clone();
    let output = model.forward(input);
    let mut report = empty_report("bert", dtype);
    if let Some(mean) = &expected.mean_pooled {
        let ours = Pooling::Mean.pool(output.last_hidden_state.clone(), mask, None);
        compare(&mut report, "mean_pooled", shaped(ours), mean);
    }
    if let Some(hidden) = &expected.last_hidden_state {
        compare(&mut report, "last_hidden_state", shaped(output.last_hidden_state), hidden);
    }
    if let (Some(pooled), Some(ours)) = (&expected.pooler_output, output.pooler_output) {
        compare(&mut report, "pooler_output", shaped(ours), pooled);
    }
    Ok(report)
}

/// Component `dpr`: HF's `DPRQuestionEncoder` / `DPRContextEncoder` `pooler_output` (the [CLS]
/// hidden state, projected when `projection_dim > 0`).
pub fn check_dpr<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<ComponentReport, FixtureError> {
    let expected_path = dir.join("expected.json");
    let expected: BertExpected = read_json(&expected_path)?;
    let options = EncoderOptions { pooling: Some(Pooling::Cls), normalize: Some(false), dropout: 0.0 };
    let encoder = Encoder::<B>::from_pretrained(dir, &options, device, dtype).map_err(|e| model_error(dir, e))?;
    let batch =
        token_batch(&expected_path, &expected.input_ids, &expected.attention_mask, expected.token_type_ids.as_ref())?;
    let ours = encoder.encode(&batch).map_err(|e| field(&expected_path, "inputs", "input_ids", e.to_string()))?;
    let mut report = empty_report("dpr", dtype);
    let pooled = expected
        .pooler_output
        .as_ref()
        .ok_or_else(|| field(&expected_path, "outputs", "pooler_output", "missing".into()))?;
    compare(&mut report, "pooler_output", shaped(ours), pooled);
    Ok(report)
}

/// Component `minilm`: real all-MiniLM-L6-v2 weights from `weights` (a sentence-transformers
/// directory). Token ids of the fixture's sentences must be identical (a mismatch is an
/// infinite error), then the normalised mean-pooled embeddings and their cosine matrix are
/// compared.
pub fn check_minilm<B: Backend>(
    dir: &Path,
    weights: &Path,
    device: &B::Device,
    dtype: DType,
) -> Result<ComponentReport, FixtureError> {
    let expected_path = dir.join("expected.json");
    let expected: MinilmExpected = read_json(&expected_path)?;
    let weights_error = |e: rag_retriever::RetrieverError| field(weights, "weights", "minilm-weights", e.to_string());
    let tokenizer = TextTokenizer::from_file(weights, None).map_err(weights_error)?;
    let encoder =
        Encoder::<B>::from_pretrained(weights, &EncoderOptions::default(), device, dtype).map_err(weights_error)?;
    let mut report = empty_report("minilm", dtype);

    let ours = tokenizer.encode(&expected.sentences).map_err(weights_error)?;
    let want = token_batch(&expected_path, &expected.input_ids, &expected.attention_mask, None)?;
    let (batch, len) = (want.batch, want.len);
    report.cases += 1;
    if ours.batch != batch
        || ours.len != len
        || ours.input_ids != want.input_ids
        || ours.attention_mask != want.attention_mask
    {
        let row = (0..batch.min(ours.batch)).find(|&r| ours.row_ids(r) != want.row_ids(r));
        let infinite = Errors { max_abs: f64::INFINITY, max_rel: f64::INFINITY };
        let what = match row {
            Some(r) => format!("token ids of sentence {r} ({:?})", expected.sentences[r]),
            None => format!("token batch shape [{}, {}], expected [{batch}, {len}]", ours.batch, ours.len),
        };
        report.failures.push((what, infinite));
        report.errors = report.errors.max(infinite);
        return Ok(report);
    }
    let vectors = encoder.encode(&ours).map_err(weights_error)?;
    let cosine = {
        let unit = vectors.clone() / vectors.clone().powi_scalar(2).sum_dim(1).sqrt();
        unit.clone().matmul(unit.transpose())
    };
    compare(&mut report, "embeddings", shaped(vectors), &expected.embeddings);
    compare(&mut report, "cosine", shaped(cosine), &expected.cosine);
    Ok(report)
}

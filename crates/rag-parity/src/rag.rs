//! Component `rag`: HF's `RagTokenForGeneration` / `RagSequenceForGeneration` from given contexts
//! (the fixture's `context_input_ids` and `retrieved_doc_embeds`): doc scores, per-example losses
//! and the gradient of their sum with respect to the question encoder's word embeddings, for both
//! marginalizations; then RAG-Token greedy and beam search and RAG-Sequence thorough decoding,
//! token for token.
//!
//! Decoding cases are found by name: `rag_token_greedy_max_length_N`,
//! `rag_token_beamK_max_length_N`, `rag_sequence_thorough_beamK_max_length_N`.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use rag::{HfRag, Marginalization, RagTokenDecoder, hf_loss, rag_sequence_thorough};
use rag_generator::{ConfigFile, GenerationConfig, generate};
use serde_json::{Map, Value};

use crate::encoders::field;
use crate::generators::{array, compare_tokens, int_tensor};
use rag_check::{Array, FixtureError, read_json};
use rag_check::{ComponentReport, Errors, relative_error, values};

/// Relative tolerances the issue sets: doc scores and losses 1e-4 and the gradient 1e-3 in f32;
/// 1e-9 for everything in f64.
pub fn rag_tolerances(dtype: DType) -> (f64, f64) {
    if dtype == DType::F64 { (1e-9, 1e-9) } else { (1e-4, 1e-3) }
}

fn float_tensor<B: Backend, const D: usize>(array: &Array<f64>, device: &B::Device, dtype: DType) -> Tensor<B, D> {
    let mut shape = [0; D];
    shape.copy_from_slice(&array.shape);
    Tensor::from_data(TensorData::new(array.data.clone(), shape), (device, dtype))
}

/// Compares with a per-case relative tolerance; the report's own tolerance is the loosest.
fn compare_relative(report: &mut ComponentReport, name: &str, ours: Vec<f64>, expected: &Array<f64>, tolerance: f64) {
    report.cases += 1;
    let errors = Errors::between(&ours, &expected.data);
    let errors = Errors { max_rel: relative_error(&ours, &expected.data), ..errors };
    report.errors = report.errors.max(errors);
    if errors.max_rel.is_nan() || errors.max_rel > tolerance {
        report.failures.push((format!("{name} (tolerance {tolerance:.0e})"), errors));
    }
}

/// The fixture's inputs: questions, given contexts, their document embeddings, labels.
struct Inputs {
    q_ids: Array<i64>,
    q_mask: Array<i64>,
    ctx_ids: Array<i64>,
    ctx_mask: Array<i64>,
    doc_embeds: Array<f64>,
    labels: Array<i64>,
}

impl Inputs {
    fn read(path: &Path, expected: &Map<String, Value>) -> Result<Self, FixtureError> {
        Ok(Self {
            q_ids: array::<i64>(path, expected, "question_input_ids", 2)?,
            q_mask: array::<i64>(path, expected, "question_attention_mask", 2)?,
            ctx_ids: array::<i64>(path, expected, "context_input_ids", 2)?,
            ctx_mask: array::<i64>(path, expected, "context_attention_mask", 2)?,
            doc_embeds: array::<f64>(path, expected, "retrieved_doc_embeds", 3)?,
            labels: array::<i64>(path, expected, "labels", 2)?,
        })
    }
}

/// Doc scores `[B, K]` and per-example losses `[B]` of the fixture's inputs, in the autodiff
/// graph of `model`.
fn forward<B: AutodiffBackend>(
    model: &HfRag<B>,
    config: &rag::HfRagConfig,
    inputs: &Inputs,
    marginalization: Marginalization,
    path: &Path,
    device: &B::Device,
    dtype: DType,
) -> Result<(Tensor<B, 2>, Tensor<B, 1>), FixtureError> {
    let kind = match marginalization {
        Marginalization::Token => "rag_token",
        Marginalization::Sequence => "rag_sequence",
    };
    let q = model.question_vectors(int_tensor::<B>(&inputs.q_ids, device), int_tensor::<B>(&inputs.q_mask, device));
    let doc_scores = HfRag::<B>::doc_scores(q, float_tensor::<B, 3>(&inputs.doc_embeds, device, dtype));
    let labels = int_tensor::<B>(&inputs.labels, device);
    let logits = model
        .generator_logits(
            int_tensor::<B>(&inputs.ctx_ids, device),
            int_tensor::<B>(&inputs.ctx_mask, device),
            labels.clone(),
        )
        .map_err(|e| field(path, kind, "context_input_ids", e.to_string()))?;
    let options = config.nll_options(config.exclude_bos_score);
    let loss = hf_loss(marginalization, logits, doc_scores.clone(), labels, &options)
        .map_err(|e| field(path, kind, "loss", e.to_string()))?;
    Ok((doc_scores, loss))
}

/// The `rag` fixture of a directory, for running its loss on any backend: `cargo xtask backends`
/// compares the losses and gradients across backends.
pub struct RagFixture {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    inputs: Inputs,
    config: rag::HfRagConfig,
}

impl RagFixture {
    /// Reads `dir/expected.json`'s inputs and `dir/config.json`.
    pub fn open(dir: &Path) -> Result<Self, FixtureError> {
        let path = dir.join("expected.json");
        let expected: Map<String, Value> = read_json(&path)?;
        let inputs = Inputs::read(&path, &expected)?;
        let config = rag::HfRagConfig::from_file(&dir.join("config.json"))
            .map_err(|e| field(dir, "config", "config.json", e.to_string()))?;
        Ok(Self { dir: dir.to_path_buf(), path, inputs, config })
    }

    /// The fixture model on `device`.
    pub fn model<B: AutodiffBackend>(&self, device: &B::Device, dtype: DType) -> Result<HfRag<B>, FixtureError> {
        HfRag::<B>::load(&self.dir, device, dtype)
            .map(|(model, _)| model)
            .map_err(|e| field(&self.dir, "model", "model.safetensors", e.to_string()))
    }

    /// Per-example RAG-Token or RAG-Sequence losses `[B]` of the fixture's inputs, in the
    /// autodiff graph of `model` (take `loss.sum().backward()` for the gradients).
    pub fn loss<B: AutodiffBackend>(
        &self,
        model: &HfRag<B>,
        marginalization: Marginalization,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, 1>, FixtureError> {
        forward(model, &self.config, &self.inputs, marginalization, &self.path, device, dtype).map(|(_, loss)| loss)
    }
}

/// Component `rag`. The training half runs on the autodiff backend `B`, decoding on its inner
/// backend.
pub fn check_rag<B: AutodiffBackend>(
    dir: &Path,
    device: &B::Device,
    dtype: DType,
) -> Result<ComponentReport, FixtureError> {
    let path = dir.join("expected.json");
    let expected: Map<String, Value> = read_json(&path)?;
    let model_error = |e: rag::RagError| field(dir, "model", "model.safetensors", e.to_string());
    let (model, config) = HfRag::<B>::load(dir, device, dtype).map_err(model_error)?;
    let (tol, grad_tol) = rag_tolerances(dtype);
    let mut report = ComponentReport {
        component: "rag",
        errors: Errors::default(),
        tolerance: grad_tol,
        absolute: false,
        cases: 0,
        failures: Vec::new(),
    };
    let inputs = Inputs::read(&path, &expected)?;
    let sub = |kind: &str, name: &str, rank: usize| -> Result<Array<f64>, FixtureError> {
        let value = expected.get(kind).and_then(|v| v.get(name)).cloned().unwrap_or(Value::Null);
        let mut map = Map::new();
        map.insert(name.to_string(), value);
        array::<f64>(&path, &map, name, rank)
    };

    for (kind, marginalization) in [("rag_token", Marginalization::Token), ("rag_sequence", Marginalization::Sequence)]
    {
        if !expected.contains_key(kind) {
            continue;
        }
        let (doc_scores, loss) = forward(&model, &config, &inputs, marginalization, &path, device, dtype)?;
        compare_relative(
            &mut report,
            &format!("{kind}.doc_scores"),
            values(doc_scores),
            &sub(kind, "doc_scores", 2)?,
            tol,
        );
        compare_relative(&mut report, &format!("{kind}.loss"), values(loss.clone()), &sub(kind, "loss", 1)?, tol);
        let grads = loss.sum().backward();
        let embeddings = model.question_encoder.bert().word_embeddings().weight.val();
        let grad = embeddings.grad(&grads).map(values).unwrap_or_default();
        compare_relative(
            &mut report,
            &format!("{kind}.grad_question_word_embeddings"),
            grad,
            &sub(kind, "grad_question_word_embeddings", 2)?,
            grad_tol,
        );
    }
    let Inputs { q_ids, q_mask, ctx_ids, ctx_mask, doc_embeds, .. } = inputs;

    // Decoding runs without a graph, on the same weights.
    let inner = model.valid();
    let generation_path = dir.join("generation_config.json");
    let generation = if generation_path.exists() {
        GenerationConfig::from_file(&generation_path)
            .map_err(|e| field(&generation_path, "config", "generation_config.json", e.to_string()))?
    } else {
        GenerationConfig::for_bart(&config.generator)
    };
    let q = inner.question_vectors(int_tensor(&q_ids, device), int_tensor(&q_mask, device));
    let doc_scores = HfRag::<B::InnerBackend>::doc_scores(q, float_tensor(&doc_embeds, device, dtype));
    let (ctx, mask) =
        (int_tensor::<B::InnerBackend>(&ctx_ids, device), int_tensor::<B::InnerBackend>(&ctx_mask, device));
    let batch = q_ids.shape[0];
    let start = generation.decoder_start_token_id.unwrap_or(config.generator.decoder_start_token_id);
    for name in expected.keys() {
        let parse = |prefix: &str| -> Option<(usize, usize)> {
            let rest = name.strip_prefix(prefix)?;
            let (beams, length) = rest.split_once("_max_length_")?;
            let beams = if beams == "greedy" { 1 } else { beams.strip_prefix("beam")?.parse().ok()? };
            Some((beams, length.parse().ok()?))
        };
        let want = || array::<i64>(&path, &expected, name, 2);
        let run = |(beams, max_length): (usize, usize)| GenerationConfig {
            max_length,
            max_new_tokens: None,
            num_beams: beams,
            num_return_sequences: 1,
            ..generation.clone()
        };
        if let Some(case) = parse("rag_token_") {
            let run = run(case);
            let decoder = RagTokenDecoder::new(&inner.generator, config.n_docs);
            let state = decoder.begin(inner.generator.begin(ctx.clone(), mask.clone()), doc_scores.clone());
            let out = generate(&decoder, state, &vec![vec![start]; batch], &run)
                .map_err(|e| field(&path, name, "generate", e.to_string()))?;
            compare_tokens(&mut report, name, &out.sequences, &want()?);
        } else if let Some(case) = parse("rag_sequence_thorough_") {
            let run = run(case);
            let options = config.nll_options(true);
            let out = rag_sequence_thorough(
                &inner.generator,
                ctx.clone(),
                mask.clone(),
                doc_scores.clone(),
                &run,
                config.do_deduplication,
                &options,
            )
            .map_err(|e| field(&path, name, "generate", e.to_string()))?;
            compare_tokens(&mut report, name, &out, &want()?);
        }
    }
    Ok(report)
}

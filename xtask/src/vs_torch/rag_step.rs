//! The RAG training steps: the embedded default's (the step `cargo xtask train` takes) and one at
//! a reference size, each with the trainer's own step (loss, backward, global clipping at 1.0,
//! AdamW), their inputs written for `compare.py rag-step`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rag::rag_losses::{NllConfig, Reduction, rag_token_nll, split_docs};
use rag::rag_retriever::{BertConfig, BiEncoder, Encoder, Pooling, TokenBatch};
use rag::rag_trainer::{AdamWConfig, BoxError, DataPosition, Loader, Metrics, ParamGroup, TrainTask, TrainerConfig};
use rag::{Generator, Precision, QaExample, SpecialTokens};
use serde_json::{Value, json};

use super::{Options, Side, library, step_trainer, write_case};
use crate::step::{self, EmbeddedWorld};

fn trainer_json(config: &TrainerConfig) -> Value {
    let groups: serde_json::Map<String, Value> = config
        .groups
        .iter()
        .map(|g| (g.name.clone(), json!({"lr": if g.frozen { 0.0 } else { g.lr }, "weight_decay": g.weight_decay})))
        .collect();
    let AdamWConfig { beta1, beta2, epsilon } = config.adamw;
    json!({
        "groups": groups,
        "adamw": {"beta1": beta1, "beta2": beta2, "epsilon": epsilon},
        "max_grad_norm": config.max_grad_norm,
    })
}

fn question_rows(tokens: &TokenBatch) -> Vec<Vec<i64>> {
    (0..tokens.batch).map(|row| tokens.row_ids(row)).collect()
}

fn special_json(special: SpecialTokens) -> Value {
    json!({"pad": special.pad, "decoder_start": special.decoder_start, "eos": special.eos, "bos": special.bos})
}

/// The embedded default's step ([`crate::step`], what `bench-train` times), 3 untimed and 20
/// timed steps of batch 16.
pub fn embedded<B: Backend>(dir: &Path, options: &Options, device: &B::Device) -> Result<Side> {
    let (warmup, steps) = if options.quick { (1, 3) } else { (3, 20) };
    eprintln!("generating the embedded task and encoding its corpus");
    let world = EmbeddedWorld::create(&dir.join("world"))?;
    let mut model = world.model::<B>(device, Precision::F32)?;
    model.valid().save(&dir.join("model"), None)?;
    let special = model.special_tokens();
    let (ids, vectors) = world.corpus()?;
    let dim = vectors.len() / ids.len();
    rag::rag_hf::write_safetensors(
        &dir.join("corpus.safetensors"),
        &[
            ("vectors".into(), TensorData::new(vectors, [ids.len(), dim])),
            ("ids".into(), TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()])),
        ],
    )?;
    let train: &[QaExample] = world.train();
    let mut loader = Loader::new(train.len(), 16, 0, DataPosition { epoch: 0, cursor: 0 });
    let mut optim = step::optimizer::<B>(&world);
    let (mut seconds, mut losses, mut batches) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        let batch: Vec<&QaExample> = loader.next_batch().into_iter().map(|j| &train[j]).collect();
        let (next, result) = step::step(&world, model, &mut optim, &batch, i as u64)?;
        model = next;
        if i >= warmup {
            seconds.push(result.seconds);
        }
        losses.push(result.loss);
        batches.push(json!({
            "question_ids": question_rows(&result.read.questions),
            "doc_ids": result.read.doc_ids,
            "contexts": result.read.contexts,
            "answers": result.read.answers,
        }));
    }
    let manifest = rag::read_manifest(&dir.join("model"))?;
    let mut case = trainer_json(world.trainer_config());
    case["threads"] = json!(options.threads);
    case["warmup"] = json!(warmup);
    case["special"] = special_json(special);
    case["model"] = json!({
        "weights": "model/model.safetensors", "query_encoder": "model/query_encoder/config.json",
        "generator": "model/generator/config.json", "pooling": manifest.pooling, "normalize": manifest.normalize,
        "n_docs": manifest.config.n_docs, "retriever_temperature": manifest.config.retriever_temperature,
        "loss": manifest.config.loss, "label_smoothing": manifest.config.label_smoothing,
    });
    case["search"] = json!(true);
    case["batches"] = Value::Array(batches);
    write_case(dir, &case)?;
    Ok(json!({"unit": "step", "seconds": seconds, "losses": losses, "library": library::<B>(device),
              "what": "embedded default, RAG-Token, B 16, K 3"}))
}

/// The reference step's model: a query encoder and a generator, in the module paths the
/// recipes' parameter groups name.
#[derive(Module, Debug)]
pub struct RefModel<B: Backend> {
    retriever: BiEncoder<B>,
    generator: Generator<B>,
}

/// One reference batch: the query encoder's input, the retrieved documents' vectors, the
/// generator's rows.
pub struct RefBatch {
    questions: TokenBatch,
    documents: Vec<f32>,
    contexts: Vec<Vec<u32>>,
    answers: Vec<Vec<u32>>,
}

const REF_B: usize = 8;
const REF_K: usize = 5;
const REF_D: usize = 256;
const REF_VOCAB: usize = 8000;
const REF_CONTEXT: usize = 128;
const REF_TARGET: usize = 24;
const REF_QUESTION: usize = 24;

/// The reference step's loss: exactly what `RagModel::loss_from_retrieval` computes for
/// RAG-Token (query vectors, `q·d` over the given documents, BART over the `B·K` rows, the
/// marginal NLL, the batch mean), on given token rows.
struct RefTask {
    special: SpecialTokens,
}

impl<AB: AutodiffBackend> TrainTask<AB, RefModel<AB>> for RefTask {
    type Item = RefBatch;

    fn loss(&mut self, model: &RefModel<AB>, batch: &[&RefBatch]) -> Result<Tensor<AB, 1>, BoxError> {
        let batch = batch[0];
        let device = model.generator.device();
        let query = model.retriever.encode_queries(&batch.questions)?;
        let documents =
            Tensor::<AB, 3>::from_data(TensorData::new(batch.documents.clone(), [REF_B, REF_K, REF_D]), &device);
        let scores = BiEncoder::<AB>::scores(query, documents);
        let out = model.generator.answer_logits(&batch.contexts, &batch.answers, self.special)?;
        let nll = NllConfig::new().with_reduction(Reduction::None);
        let per_example = rag_token_nll(split_docs(out.logits, REF_K)?, scores, out.target, out.mask, &nll)?;
        Ok(per_example.mean())
    }

    fn evaluate(&mut self, _model: &<RefModel<AB> as AutodiffModule<AB>>::InnerModule) -> Result<Metrics, BoxError> {
        Ok(Metrics::default())
    }
}

/// A seeded generator of uniform ids and normal values.
fn synthetic_batch(rng: &mut rag_index::synthetic::SplitMix64, special: SpecialTokens) -> Result<RefBatch> {
    // Ids above the special tokens (0..=3), so no row holds a pad or an end token by chance.
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| 4 + rng.below(REF_VOCAB - 4) as u32).collect() };
    let question_rows: Vec<Vec<u32>> = (0..REF_B).map(|_| ids(REF_QUESTION)).collect();
    let contexts: Vec<Vec<u32>> = (0..REF_B * REF_K).map(|_| ids(REF_CONTEXT)).collect();
    let answers: Vec<Vec<u32>> = (0..REF_B)
        .map(|_| {
            let mut a = ids(REF_TARGET - 1);
            a.push(special.eos);
            a
        })
        .collect();
    let flat: Vec<i64> = question_rows.concat().into_iter().map(i64::from).collect();
    let questions = TokenBatch::new(flat, vec![1; REF_B * REF_QUESTION], None, REF_B, REF_QUESTION)?;
    let documents: Vec<f32> = (0..REF_B * REF_K * REF_D).map(|_| (rng.normal() * 0.1) as f32).collect();
    Ok(RefBatch { questions, documents, contexts, answers })
}

/// A RAG-Token step at the reference size, 2 untimed and 10 timed steps, each on a new seeded
/// batch.
pub fn reference<B: Backend>(dir: &Path, options: &Options, device: &B::Device) -> Result<Side> {
    let (warmup, steps) = if options.quick { (1, 2) } else { (2, 10) };
    Autodiff::<B>::seed(device, 0);
    let bert: BertConfig = serde_json::from_value(json!({
        "vocab_size": REF_VOCAB, "hidden_size": REF_D, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 4 * REF_D, "max_position_embeddings": 512, "hidden_act": "gelu",
        "model_type": "bert", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
    }))?;
    let encoder = Encoder::<Autodiff<B>>::init(&bert, Pooling::Cls, false, device)?;
    let bart = json!({
        "vocab_size": REF_VOCAB, "d_model": REF_D, "encoder_layers": 3, "decoder_layers": 3,
        "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 4 * REF_D,
        "decoder_ffn_dim": 4 * REF_D, "max_position_embeddings": 256, "pad_token_id": 1, "bos_token_id": 0,
        "eos_token_id": 2, "decoder_start_token_id": 2, "forced_eos_token_id": 2, "init_std": 0.02,
        "activation_function": "gelu",
    });
    let generator = Generator::<Autodiff<B>>::init("bart", bart, 0.0, device)?;
    let special = generator.special_tokens()?;
    let model = RefModel { retriever: BiEncoder::shared(encoder), generator };
    std::fs::create_dir_all(dir.join("model/query_encoder"))?;
    std::fs::create_dir_all(dir.join("model/generator"))?;
    rag::rag_hf::write_atomic(&dir.join("model/query_encoder/config.json"), serde_json::to_string(&bert)?.as_bytes())?;
    rag::rag_hf::write_atomic(
        &dir.join("model/generator/config.json"),
        serde_json::to_string(&model.generator.config_json())?.as_bytes(),
    )?;
    rag::rag_hf::save_module(&model.valid(), &dir.join("model/model.safetensors"))?;

    let (trainer, _scratch) = step_trainer(vec![
        ParamGroup::new("query_encoder", &["retriever.query"], 1e-4, 0.01),
        ParamGroup::new("generator", &["generator"], 1e-4, 0.01),
    ])?;
    let config = trainer.config().clone();
    let mut model = trainer.prepare(model)?;
    let mut optim = trainer.optimizer::<B>();
    let mut task = RefTask { special };
    let mut rng = rag_index::synthetic::SplitMix64::new(7);
    let (mut seconds, mut losses, mut batches, mut documents) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        let batch = synthetic_batch(&mut rng, special)?;
        let started = Instant::now();
        let (next, outcome) = trainer.step(model, &mut optim, &mut task, &[vec![&batch]], i as u64)?;
        step::sync::<B>(device);
        let elapsed = started.elapsed().as_secs_f64();
        model = next;
        if i >= warmup {
            seconds.push(elapsed);
        }
        losses.push(outcome.losses[0]);
        batches.push(json!({
            "question_ids": question_rows(&batch.questions),
            "contexts": batch.contexts,
            "answers": batch.answers,
        }));
        documents.push((format!("step{i}"), TensorData::new(batch.documents, [REF_B, REF_K, REF_D])));
    }
    rag::rag_hf::write_safetensors(&dir.join("documents.safetensors"), &documents)
        .context("writing the documents' vectors")?;
    let mut case = trainer_json(&config);
    case["threads"] = json!(options.threads);
    case["warmup"] = json!(warmup);
    case["special"] = special_json(special);
    case["model"] = json!({
        "weights": "model/model.safetensors", "query_encoder": "model/query_encoder/config.json",
        "generator": "model/generator/config.json", "pooling": Pooling::Cls, "normalize": false,
        "n_docs": REF_K, "retriever_temperature": 1.0, "loss": "rag-token", "label_smoothing": 0.0,
    });
    case["search"] = json!(false);
    case["batches"] = Value::Array(batches);
    write_case(dir, &case)?;
    Ok(json!({"unit": "step", "seconds": seconds, "losses": losses, "library": library::<B>(device),
              "what": "BERT 4L/256 + BART 3+3L/256, vocabulary 8,000, B 8, K 5, context 128, target 24"}))
}

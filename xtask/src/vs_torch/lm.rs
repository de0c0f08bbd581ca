//! SmolLM2-135M-Instruct (from its GGUF file) on SQuAD rows: RA-DIT's LM fine-tuning step (the
//! whole LM trained) and the scoring pass LSR takes (no gradients), on the prompts the SQuAD preset
//! builds (ChatML, one passage per row).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use rag::rag_generator::{answer_token_log_probs, find_gguf, tokenizer_from_gguf};
use rag::rag_retriever::{BertConfig, BiEncoder, Encoder, Pooling, TextTokenizer};
use rag::rag_trainer::{BoxError, Metrics, TrainTask};
use rag::{ContextFormat, Generator, GroupOptions, PassageText, RagConfig, RagModel, Recipe, Retrieval};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Options, Side, library, step_trainer, write_case};
use crate::step;

/// Questions per step and passages per question (the SQuAD preset's).
const B: usize = 2;
const K: usize = 3;

#[derive(Deserialize)]
struct Paragraph {
    id: u64,
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct Question {
    question: String,
    answers: Vec<String>,
    gold: u64,
}

/// One step's questions, answers and passages: the gold paragraph and the two paragraphs of the
/// same article nearest to it.
struct LmBatch {
    questions: Vec<String>,
    answers: Vec<String>,
    passages: Vec<Vec<PassageText>>,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1)))
        .collect()
}

/// `n` batches from the repository's SQuAD copy: questions in file order, one per paragraph
/// (consecutive questions of one paragraph would repeat its rows).
fn squad_batches(n: usize) -> Result<Vec<LmBatch>> {
    let data = crate::repo::root().join("data/squad-v1.1-dev");
    let corpus: Vec<Paragraph> = read_jsonl(&data.join("corpus.jsonl"))?;
    let questions: Vec<Question> = read_jsonl(&data.join("questions.jsonl"))?;
    let by_id: BTreeMap<u64, usize> = corpus.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let passage =
        |i: usize| PassageText { id: corpus[i].id, title: corpus[i].title.clone(), text: corpus[i].text.clone() };
    let mut picked = Vec::new();
    let mut last_gold = None;
    for q in &questions {
        if Some(q.gold) == last_gold {
            continue;
        }
        last_gold = Some(q.gold);
        let Some(&gold) = by_id.get(&q.gold) else { bail!("question's gold passage {} is not in the corpus", q.gold) };
        // The article's other paragraphs, nearest first.
        let mut others: Vec<usize> =
            (0..corpus.len()).filter(|&i| i != gold && corpus[i].title == corpus[gold].title).collect();
        others.sort_by_key(|&i| i.abs_diff(gold));
        if others.len() < K - 1 {
            continue;
        }
        let mut rows = vec![passage(gold)];
        rows.extend(others[..K - 1].iter().map(|&i| passage(i)));
        picked.push((q.question.clone(), q.answers[0].clone(), rows));
        if picked.len() == n * B {
            break;
        }
    }
    if picked.len() < n * B {
        bail!("the SQuAD copy has {} usable questions, {} wanted", picked.len(), n * B);
    }
    Ok(picked
        .chunks(B)
        .map(|c| LmBatch {
            questions: c.iter().map(|q| q.0.clone()).collect(),
            answers: c.iter().map(|q| q.1.clone()).collect(),
            passages: c.iter().map(|q| q.2.clone()).collect(),
        })
        .collect())
}

fn gguf_path(options: &Options) -> Result<PathBuf> {
    let given = options.smollm2.as_ref().context("SmolLM2's GGUF file was not found (give --smollm2)")?;
    find_gguf(given).with_context(|| format!("{}: no .gguf file there", given.display()))
}

/// The preset's RAG model around SmolLM2: ChatML prompts, `K` passages, RA-DIT's LM loss. Its
/// retriever is a small random one, frozen: the LM fine-tuning step never runs it.
fn model<B: Backend>(gguf: &Path, batches: &[LmBatch], device: &B::Device) -> Result<RagModel<B>> {
    let file = rag::rag_hf::GgufFile::open(gguf)?;
    let generator = Generator::<B>::from_pretrained(gguf, 0.0, device, DType::F32)?;
    let gen_tokenizer = tokenizer_from_gguf(&file)?;
    let words = batches.iter().flat_map(|b| b.questions.iter().cloned());
    let tokenizer = TextTokenizer::word_level(words, 1, 64)?;
    let bert = BertConfig::new(tokenizer.vocab_size(), 32, 1, 2, 64, 64);
    let encoder = Encoder::<B>::init(&bert, Pooling::Mean, true, device)?;
    let config =
        RagConfig { n_docs: K, loss: Recipe::RaDitLm.loss(), context: ContextFormat::chatml(), ..RagConfig::default() };
    Ok(RagModel::new(BiEncoder::shared(encoder), generator, tokenizer, gen_tokenizer, config)?)
}

/// Rows and answers as the generator sees them, for `compare.py`.
fn rows_json<B: Backend>(model: &RagModel<B>, batch: &LmBatch) -> Result<Value> {
    let questions: Vec<&str> = batch.questions.iter().map(String::as_str).collect();
    let contexts = model.context_rows(&questions, &batch.passages)?;
    let answers: Vec<Vec<u32>> = batch.answers.iter().map(|a| model.answer_ids(a)).collect::<rag::Result<_>>()?;
    Ok(json!({"contexts": contexts, "answers": answers}))
}

fn lm_case(options: &Options, gguf: &Path, warmup: usize, special: rag::SpecialTokens, batches: Vec<Value>) -> Value {
    json!({
        "threads": options.threads,
        "warmup": warmup,
        "gguf": gguf,
        "special": {"pad": special.pad, "eos": special.eos, "bos": special.bos},
        "batches": batches,
    })
}

struct LmTask;

impl<B: Backend> TrainTask<Autodiff<B>, RagModel<Autodiff<B>>> for LmTask {
    type Item = LmBatch;

    fn loss(
        &mut self,
        model: &RagModel<Autodiff<B>>,
        batch: &[&LmBatch],
    ) -> Result<burn::tensor::Tensor<Autodiff<B>, 1>, BoxError> {
        let batch = batch[0];
        let questions: Vec<&str> = batch.questions.iter().map(String::as_str).collect();
        let answers: Vec<&str> = batch.answers.iter().map(String::as_str).collect();
        let retrieval = Retrieval::given_rows(batch.passages.clone(), K, &model.generator().device());
        Ok(model.loss_from_retrieval(&questions, &answers, retrieval)?.loss)
    }

    fn evaluate(&mut self, _model: &RagModel<B>) -> Result<Metrics, BoxError> {
        Ok(Metrics::default())
    }
}

/// RA-DIT's LM fine-tuning step on SmolLM2 (the whole LM at 3e-5, weight decay 0.01, clipping
/// at 1.0, no dropout on either side), 1 untimed and 3 timed steps.
pub fn step<B: Backend>(dir: &Path, options: &Options, device: &B::Device) -> Result<Side> {
    let (warmup, steps) = if options.quick { (0, 1) } else { (1, 3) };
    let gguf = gguf_path(options)?;
    let batches = squad_batches(warmup + steps)?;
    let model: RagModel<Autodiff<B>> = model(&gguf, &batches, device)?;
    let (trainer, _scratch) = step_trainer(Recipe::RaDitLm.param_groups(&GroupOptions::new(0.0, 3e-5)))?;
    let config = trainer.config().clone();
    let mut model = trainer.prepare(model)?;
    let mut optim = trainer.optimizer::<B>();
    let special = model.special_tokens();
    let (mut seconds, mut losses, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for (i, batch) in batches.iter().enumerate() {
        rows.push(rows_json(&model, batch)?);
        let started = Instant::now();
        let (next, outcome) = trainer.step(model, &mut optim, &mut LmTask, &[vec![batch]], i as u64)?;
        step::sync::<B>(device);
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!("step {i}: loss {:.4}, {elapsed:.2} s", outcome.losses[0]);
        model = next;
        if i >= warmup {
            seconds.push(elapsed);
        }
        losses.push(outcome.losses[0]);
    }
    let generator = config.groups.iter().find(|g| g.name == "generator").context("the recipe has a generator group")?;
    let mut case = lm_case(options, &gguf, warmup, special, rows);
    case["lr"] = json!(generator.lr);
    case["weight_decay"] = json!(generator.weight_decay);
    case["adamw"] = json!({"beta1": config.adamw.beta1, "beta2": config.adamw.beta2, "epsilon": config.adamw.epsilon});
    case["max_grad_norm"] = json!(config.max_grad_norm);
    write_case(dir, &case)?;
    Ok(json!({"unit": "step", "seconds": seconds, "losses": losses, "library": library::<B>(device),
              "what": "SmolLM2-135M RA-DIT LM-ft step, 2 questions × 3 passages, whole LM"}))
}

/// The answers' summed log-probabilities under SmolLM2 for every (question, passage) row, no
/// gradients (what LSR's teacher computes), 1 untimed and 5 timed batches.
pub fn score<B: Backend>(dir: &Path, options: &Options, device: &B::Device) -> Result<Side> {
    let (warmup, steps) = if options.quick { (0, 1) } else { (1, 5) };
    let gguf = gguf_path(options)?;
    let batches = squad_batches(warmup + steps)?;
    let model: RagModel<B> = model(&gguf, &batches, device)?;
    let special = model.special_tokens();
    let (mut seconds, mut scores, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for (i, batch) in batches.iter().enumerate() {
        rows.push(rows_json(&model, batch)?);
        let questions: Vec<&str> = batch.questions.iter().map(String::as_str).collect();
        let contexts = model.context_rows(&questions, &batch.passages)?;
        let answers: Vec<Vec<u32>> = batch.answers.iter().map(|a| model.answer_ids(a)).collect::<rag::Result<_>>()?;
        let started = Instant::now();
        let out = model.generator().answer_logits(&contexts, &answers, special)?;
        let [b, a] = out.target.dims();
        let log_probs = answer_token_log_probs(out.logits, out.target);
        let mask = out.mask.float().reshape([b, 1, a]);
        let summed = (log_probs * mask).sum_dim(2).reshape([b * K]);
        let values: Vec<f32> = summed.into_data().convert::<f32>().into_vec().expect("f32");
        let elapsed = started.elapsed().as_secs_f64();
        if i >= warmup {
            seconds.push(elapsed);
        }
        scores.extend(values.into_iter().map(f64::from));
    }
    write_case(dir, &lm_case(options, &gguf, warmup, special, rows))?;
    Ok(json!({"unit": "batch", "seconds": seconds, "scores": scores, "library": library::<B>(device),
              "what": "SmolLM2-135M answer log-likelihoods, 2 questions × 3 passages per batch, no gradients"}))
}

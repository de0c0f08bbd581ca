//! [`Generator`]: one handle over the architectures, so that a crate composing a RAG model asks
//! what a generator can do (its [`GeneratorKind`], special tokens, teacher-forced answer logits,
//! loading by `model_type`) instead of matching on which model it is. A new architecture is a
//! new variant here and nowhere else.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor};

use crate::error::{config_error, input_error};
use crate::{
    Bart, BartConfig, BartState, ConfigFile, DecodeState, GenerationConfig, Llama, LlamaConfig, LlamaState, Padded,
    PaddingSide, Result, StepModel,
};

/// The generator of a RAG model: a seq2seq BART (RAG) or a decoder-only LLaMA (RA-DIT, REPLUG).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant, reason = "one per model: the size of a handle does not matter")]
pub enum Generator<B: Backend> {
    /// BART, reading each passage + question in its encoder.
    Bart(Bart<B>),
    /// A LLaMA-family LM, reading each passage + question as a prompt.
    Llama(Llama<B>),
}

/// How a generator reads its passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorKind {
    /// An encoder reads passage + question; the decoder writes the answer from its start token.
    Seq2Seq,
    /// One stack reads the prompt (passage, question, instruction) and continues it.
    DecoderOnly,
}

/// The special token ids the rows are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<s>` / `<bos>`.
    pub bos: Option<u32>,
    /// `</s>` / `<eos>`: ends answers (and BART contexts).
    pub eos: u32,
    /// Padding.
    pub pad: u32,
    /// The first decoder input of a seq2seq generator.
    pub decoder_start: Option<u32>,
}

/// What [`Generator::answer_logits`] returns.
#[derive(Debug, Clone)]
pub struct AnswerLogits<B: Backend> {
    /// `[B·K, A, V]`: row `b·K + z`, position `t` predicts answer `b`'s token `t`.
    pub logits: Tensor<B, 3>,
    /// The answers, right-padded: `[B, A]`.
    pub target: Tensor<B, 2, Int>,
    /// `[B, A]`: `true` on answer tokens.
    pub mask: Tensor<B, 2, Bool>,
}

/// The `model_type`s [`Generator::from_pretrained`] and [`Generator::from_config_file`] take.
pub const ARCHITECTURES: [&str; 2] = ["bart", "llama"];

impl<B: Backend> Generator<B> {
    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bart(m) => m.config().vocab_size,
            Self::Llama(m) => m.config().vocab_size,
        }
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        match self {
            Self::Bart(m) => m.dtype(),
            Self::Llama(m) => m.dtype(),
        }
    }

    /// The device of the weights.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Bart(m) => m.device(),
            Self::Llama(m) => m.device(),
        }
    }

    /// How it reads passages.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            Self::Bart(_) => GeneratorKind::Seq2Seq,
            Self::Llama(_) => GeneratorKind::DecoderOnly,
        }
    }

    /// The architecture's name, HF's `model_type` (`bart`, `llama`).
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Bart(_) => "bart",
            Self::Llama(_) => "llama",
        }
    }

    /// The module paths (below the generator, at Burn's dot boundaries) of its top `n`
    /// transformer layers, and of the final norm that reads them (LLaMA's): what partial
    /// fine-tuning trains. For BART the layers are the decoder's top `n`; its encoder, embeddings
    /// and lower layers then carry no gradient and cost no backward pass.
    pub fn top_layers(&self, n: usize) -> Result<Vec<String>> {
        let (layers, prefix, tail): (usize, &str, &[&str]) = match self {
            Self::Bart(m) => (m.config().decoder_layers, "Bart.decoder.layers", &[]),
            Self::Llama(m) => (m.config().num_hidden_layers, "Llama.layers", &["Llama.norm"]),
        };
        if n == 0 || n > layers {
            return Err(input_error("generator_layers", format!("{n}: the generator has {layers} layers to train")));
        }
        Ok((layers - n..layers).map(|i| format!("{prefix}.{i}")).chain(tail.iter().map(|t| t.to_string())).collect())
    }

    /// Loads a HF checkpoint directory (`config.json` with `model_type` `bart` or `llama`, and
    /// `model.safetensors`, single or sharded), or a LLaMA GGUF file or a directory holding one
    /// ([`crate::generator_gguf`]).
    pub fn from_pretrained(dir: &Path, dropout: f64, device: &B::Device, dtype: DType) -> Result<Self> {
        if let Some(gguf) = crate::gguf::generator_gguf(dir) {
            let file = rag_hf::GgufFile::open(gguf)?;
            return Ok(Self::Llama(crate::gguf::llama_from_gguf(&file, dropout, device, dtype)?.0));
        }
        let config_path = dir.join("config.json");
        let raw: serde_json::Value = rag_hf::read_json(&config_path)?;
        let checkpoint = rag_hf::Checkpoint::open(dir)?;
        let loader = rag_hf::Loader::new(&checkpoint, "", device, dtype);
        match raw.get("model_type").and_then(|t| t.as_str()) {
            Some("bart") => Ok(Self::Bart(Bart::load(&BartConfig::from_file(&config_path)?, &loader, dropout)?)),
            Some("llama") => Ok(Self::Llama(Llama::load(&LlamaConfig::from_file(&config_path)?, &loader, dropout)?)),
            other => Err(config_error(
                &config_path,
                "model_type",
                format!("{other:?}: the generators are {}", ARCHITECTURES.join(" and ")),
            )),
        }
    }

    /// A freshly initialized model of `architecture` (one of [`ARCHITECTURES`]) from its HF
    /// `config` as JSON (what `config.json` holds), with `dropout` in training: a generator
    /// trained from scratch.
    pub fn init(architecture: &str, config: serde_json::Value, dropout: f64, device: &B::Device) -> Result<Self> {
        let at = Path::new("<in memory>");
        fn parse<C: ConfigFile>(config: serde_json::Value, at: &Path) -> Result<C> {
            let config: C =
                serde_json::from_value(config).map_err(|e| config_error(at, "config", format!("not a config: {e}")))?;
            config.validate_at(at)?;
            Ok(config)
        }
        match architecture {
            "bart" => Ok(Self::Bart(Bart::init(&parse(config, at)?, dropout, device)?)),
            "llama" => Ok(Self::Llama(Llama::init(&parse(config, at)?, dropout, device)?)),
            other => Err(config_error(
                at,
                "architecture",
                format!("`{other}`: expected one of {}", ARCHITECTURES.join(", ")),
            )),
        }
    }

    /// A freshly initialized generator of `architecture` (one of [`ARCHITECTURES`]) from its
    /// config file, without dropout: what a whole-model checkpoint loads its weights into.
    pub fn from_config_file(architecture: &str, config: &Path, device: &B::Device) -> Result<Self> {
        match architecture {
            "bart" => Ok(Self::Bart(Bart::init(&BartConfig::from_file(config)?, 0.0, device)?)),
            "llama" => Ok(Self::Llama(Llama::init(&LlamaConfig::from_file(config)?, 0.0, device)?)),
            other => Err(config_error(
                config,
                "architecture",
                format!("`{other}`: expected one of {}", ARCHITECTURES.join(", ")),
            )),
        }
    }

    /// Its config as HF's `config.json` would hold it ([`Generator::from_config_file`] reads
    /// it back).
    pub fn config_json(&self) -> serde_json::Value {
        let value = match self {
            Self::Bart(m) => serde_json::to_value(m.config()),
            Self::Llama(m) => serde_json::to_value(m.config()),
        };
        value.expect("a config of plain numbers, strings and lists serializes")
    }

    /// Search options from the generator's config (its end, pad and start tokens), greedy.
    pub fn generation_config(&self) -> GenerationConfig {
        match self {
            Self::Bart(m) => GenerationConfig::for_bart(m.config()),
            Self::Llama(m) => GenerationConfig::for_llama(m.config()),
        }
    }

    /// The special tokens rows are built with, from the generator's config (a config without an
    /// `eos_token_id` is an error: nothing would end an answer).
    pub fn special_tokens(&self) -> Result<SpecialTokens> {
        let no_eos = |what: &str| config_error(Path::new("<generator config>"), "eos_token_id", what.to_string());
        match self {
            Self::Bart(m) => {
                let c = m.config();
                let eos =
                    *c.eos_token_id.first().ok_or_else(|| no_eos("BART needs one to end contexts and answers"))?;
                Ok(SpecialTokens {
                    bos: Some(c.bos_token_id),
                    eos,
                    pad: c.pad_token_id,
                    decoder_start: Some(c.decoder_start_token_id),
                })
            }
            Self::Llama(m) => {
                let c = m.config();
                let eos = *c.eos_token_id.first().ok_or_else(|| no_eos("a LLaMA LM needs one to end answers"))?;
                Ok(SpecialTokens {
                    bos: c.bos_token_id.first().copied(),
                    eos,
                    pad: c.pad_token_id.first().copied().unwrap_or(eos),
                    decoder_start: None,
                })
            }
        }
    }

    /// Teacher-forced logits aligned with the answers, for `contexts` (`B·K` rows, row
    /// `b·K + z`: encoder inputs for a seq2seq generator, prompts for a decoder-only one) and
    /// `answers` (`B` target rows, padded here to `A`): position `t` of a row predicts
    /// `answers[b][t]`.
    pub fn answer_logits(
        &self,
        contexts: &[Vec<u32>],
        answers: &[Vec<u32>],
        special: SpecialTokens,
    ) -> Result<AnswerLogits<B>> {
        let b = answers.len();
        if b == 0 || !contexts.len().is_multiple_of(b) || contexts.is_empty() {
            return Err(input_error(
                "contexts",
                format!("{} context rows for {b} answers: need K ≥ 1 rows per answer", contexts.len()),
            ));
        }
        if answers.iter().any(Vec::is_empty) {
            return Err(input_error("answers", "an answer has no tokens"));
        }
        let k = contexts.len() / b;
        let device = self.device();
        let target = Padded::new(answers, special.pad, PaddingSide::Right);
        let a = target.len();
        let (target_ids, target_mask) = target.tensors::<B>(&device);
        let per_doc = |rows: &[Vec<u32>]| -> Vec<Vec<u32>> {
            rows.iter().flat_map(|r| std::iter::repeat_n(r.clone(), k)).collect()
        };
        let logits = match self {
            Self::Bart(m) => {
                m.check_ids("contexts", contexts)?;
                m.check_ids("answers", answers)?;
                let start = special
                    .decoder_start
                    .ok_or_else(|| input_error("special", "a seq2seq generator needs a decoder start token"))?;
                let inputs = Padded::new(contexts, special.pad, PaddingSide::Right);
                let (ids, mask) = inputs.tensors::<B>(&device);
                let decoder_rows: Vec<Vec<u32>> = target
                    .ids
                    .iter()
                    .map(|row| std::iter::once(start).chain(row[..a - 1].iter().copied()).collect())
                    .collect();
                let decoder = Padded::new(&per_doc(&decoder_rows), special.pad, PaddingSide::Right);
                let (decoder_ids, _) = decoder.tensors::<B>(&device);
                let encoded = m.encode(ids, mask.clone());
                m.decode(decoder_ids, None, encoded, mask)
            }
            Self::Llama(m) => {
                m.check_ids("contexts", contexts)?;
                m.check_ids("answers", answers)?;
                if contexts.iter().any(Vec::is_empty) {
                    return Err(input_error("contexts", "a prompt has no tokens"));
                }
                let prompts = Padded::new(contexts, special.pad, PaddingSide::Left);
                let p = prompts.len();
                let answers = per_doc(&target.ids);
                let answer_masks = per_doc(&target.mask);
                let join = |left: &[Vec<u32>], right: &[Vec<u32>]| -> Vec<Vec<u32>> {
                    left.iter().zip(right).map(|(l, r)| l.iter().chain(r).copied().collect()).collect()
                };
                let rows = Padded { ids: join(&prompts.ids, &answers), mask: join(&prompts.mask, &answer_masks) };
                let (ids, mask) = rows.tensors::<B>(&device);
                // The LM head only where an answer token is predicted: the prompt's positions would
                // cost `p · vocab` floats per row (SmolLM2: 49,152 per position).
                m.lm_logits(m.forward_hidden(ids, mask).narrow(1, p - 1, a))
            }
        };
        Ok(AnswerLogits { logits, target: target_ids, mask: target_mask.equal_elem(1) })
    }
}

impl<B: Backend> Generator<B> {
    /// Starts incremental decoding of `contexts` (encoder inputs for a seq2seq generator,
    /// prompts for a decoder-only one), in consecutive groups of `group` rows that one search
    /// row drives (a question's `K` passages for RAG-Token and ensemble decoding; 1 for a
    /// search per row). Returns the state over all the rows and each group's search prompt:
    /// the decoder start token (`special.decoder_start`) for a seq2seq generator, its contexts
    /// encoded now; for a decoder-only one the last token of group `g`'s rows, whose last
    /// `shared_suffix[g]` tokens (the instruction) must be the same in all of them. Everything
    /// before that last token is fed now: the part before the shared suffix with
    /// [`Llama::prefill`] (length-sorted passes; rows that repeat, such as one passage
    /// retrieved for several questions, fed once), then the suffix, left-padded.
    /// `shared_suffix` is read only for a decoder-only generator.
    pub fn begin_rows(
        &self,
        contexts: &[Vec<u32>],
        group: usize,
        shared_suffix: &[usize],
        special: SpecialTokens,
    ) -> Result<(GeneratorState<B>, Vec<Vec<u32>>)> {
        if group == 0 || contexts.is_empty() || !contexts.len().is_multiple_of(group) {
            return Err(input_error(
                "contexts",
                format!("{} rows cannot be split into groups of {group}", contexts.len()),
            ));
        }
        let groups = contexts.len() / group;
        let device = self.device();
        match self {
            Self::Bart(m) => {
                m.check_ids("contexts", contexts)?;
                let start = special
                    .decoder_start
                    .ok_or_else(|| input_error("special", "a seq2seq generator needs a decoder start token"))?;
                let (ids, mask) = Padded::new(contexts, special.pad, PaddingSide::Right).tensors(&device);
                Ok((GeneratorState::Bart(m.begin(ids, mask)), vec![vec![start]; groups]))
            }
            Self::Llama(m) => {
                m.check_ids("contexts", contexts)?;
                if shared_suffix.len() != groups {
                    return Err(input_error(
                        "shared_suffix",
                        format!("{} lengths for {groups} groups", shared_suffix.len()),
                    ));
                }
                let mut prefixes = Vec::with_capacity(contexts.len());
                let mut heads = Vec::with_capacity(contexts.len());
                let mut prompts = Vec::with_capacity(groups);
                for (g, rows) in contexts.chunks(group).enumerate() {
                    let n = shared_suffix[g];
                    let suffix = |row: &[u32]| row.len().checked_sub(n).map(|start| row[start..].to_vec());
                    let shared = suffix(&rows[0]).filter(|s| !s.is_empty());
                    let Some(shared) = shared.filter(|s| rows.iter().all(|r| suffix(r).as_ref() == Some(s))) else {
                        return Err(input_error(
                            "shared_suffix",
                            format!("group {g}: its rows do not all end in the same {n} tokens (at least 1)"),
                        ));
                    };
                    prefixes.extend(rows.iter().map(|r| r[..r.len() - n].to_vec()));
                    heads.extend(std::iter::repeat_n(shared[..n - 1].to_vec(), group));
                    prompts.push(vec![shared[n - 1]]);
                }
                // What differs between rows (the passages) is fed first, a repeated one once;
                // then the shared suffix but its last token, which stays for the search to feed:
                // every token of a row is fed once, however many continuations are scored.
                let mut state =
                    if prefixes.iter().all(Vec::is_empty) { None } else { Some(m.prefill(&prefixes, special.pad)?) };
                if heads.iter().any(|h| !h.is_empty()) {
                    let (ids, mask) = Padded::new(&heads, special.pad, PaddingSide::Left).tensors::<B>(&device);
                    let mut fed = match state {
                        Some(mut state) => {
                            state.set_next_mask(mask);
                            state
                        }
                        None => m.begin(mask),
                    };
                    m.feed(&mut fed, ids);
                    state = Some(fed);
                }
                let state = state.unwrap_or_else(|| m.begin(Tensor::ones([groups * group, 1], &device)));
                Ok((GeneratorState::Llama(state), prompts))
            }
        }
    }
}

/// The incremental decoding state of a [`Generator`] (from [`Generator::begin_rows`]).
#[derive(Debug, Clone)]
pub enum GeneratorState<B: Backend> {
    /// BART's encoder output and decoder caches.
    Bart(BartState<B>),
    /// LLaMA's caches.
    Llama(LlamaState<B>),
}

impl<B: Backend> DecodeState<B> for GeneratorState<B> {
    fn rows(&self) -> usize {
        match self {
            Self::Bart(s) => s.rows(),
            Self::Llama(s) => s.rows(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Bart(s) => s.len(),
            Self::Llama(s) => s.len(),
        }
    }

    fn device(&self) -> B::Device {
        match self {
            Self::Bart(s) => s.device(),
            Self::Llama(s) => s.device(),
        }
    }

    fn select_rows(&mut self, rows: Tensor<B, 1, Int>) {
        match self {
            Self::Bart(s) => s.select_rows(rows),
            Self::Llama(s) => s.select_rows(rows),
        }
    }
}

impl<B: Backend> StepModel<B> for Generator<B> {
    type State = GeneratorState<B>;

    fn vocab_size(&self) -> usize {
        Generator::vocab_size(self)
    }

    fn max_positions(&self) -> usize {
        match self {
            Self::Bart(m) => StepModel::max_positions(m),
            Self::Llama(m) => StepModel::max_positions(m),
        }
    }

    /// # Panics
    /// On a state of the other architecture: states come from this generator's
    /// [`Generator::begin_rows`].
    fn step_all(&self, state: &mut GeneratorState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match (self, state) {
            (Self::Bart(m), GeneratorState::Bart(s)) => m.step_all(s, tokens),
            (Self::Llama(m), GeneratorState::Llama(s)) => m.step_all(s, tokens),
            (m, _) => panic!("a decoding state of another architecture fed to a {} generator", m.architecture()),
        }
    }
}

/// `log p(answer_b[t] | row b·K + z)` `[B, K, A]` of answer-aligned logits `[B·K, A, V]` and the
/// padded answers `[B, A]` (the padding positions hold the pad token's log-prob).
pub fn answer_token_log_probs<B: Backend>(logits: Tensor<B, 3>, target: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [rows, a, _] = logits.dims();
    let b = target.dims()[0];
    let k = rows / b;
    let index = target.reshape([b, 1, a]).expand([b, k, a]).reshape([rows, a, 1]);
    log_softmax(logits, 2).gather(2, index).reshape([b, k, a])
}

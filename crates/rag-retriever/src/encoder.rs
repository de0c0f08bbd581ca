//! `Encoder`: a BERT model plus pooling, an optional projection and L2 normalisation; loading
//! from HF model directories (BertModel, DPR, sentence-transformers).

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rag_hf::{Checkpoint, Loader, init_linear};
use serde::{Deserialize, Serialize};

use crate::bert::{BertInput, BertModel};
use crate::config::BertConfig;
use crate::pooling::{Pooling, l2_normalize};
use crate::tokenize::TokenBatch;
use crate::{Result, RetrieverError};

/// Where an encoder's tensors sit in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightLayout {
    /// Prefix of the `BertModel` tensors: `""`, `"bert."`, `"question_encoder.bert_model."`…
    pub bert: String,
    /// Name of the output projection (DPR's `encode_proj`), when the model has one.
    pub projection: Option<String>,
}

impl WeightLayout {
    /// HF `BertModel` with tensors at the root.
    pub fn bert() -> Self {
        Self { bert: String::new(), projection: None }
    }

    /// HF `DPRQuestionEncoder`.
    pub fn dpr_question() -> Self {
        Self { bert: "question_encoder.bert_model.".into(), projection: Some("question_encoder.encode_proj".into()) }
    }

    /// HF `DPRContextEncoder`.
    pub fn dpr_context() -> Self {
        Self { bert: "ctx_encoder.bert_model.".into(), projection: Some("ctx_encoder.encode_proj".into()) }
    }

    /// The same layout nested under `prefix` (a RAG checkpoint stores its DPR question encoder
    /// under `rag.question_encoder.`).
    pub fn under(self, prefix: &str) -> Self {
        Self { bert: format!("{prefix}{}", self.bert), projection: self.projection.map(|p| format!("{prefix}{p}")) }
    }

    /// The layout HF's class named in `config.architectures` writes; for plain BERT checkpoints
    /// the `bert.` prefix of the `BertFor*` classes is detected from the tensor names.
    pub fn detect(config: &BertConfig, checkpoint: &Checkpoint) -> Self {
        let is = |name: &str| config.architectures.iter().any(|a| a == name);
        if is("DPRQuestionEncoder") {
            Self::dpr_question()
        } else if is("DPRContextEncoder") {
            Self::dpr_context()
        } else if !checkpoint.contains("embeddings.word_embeddings.weight")
            && checkpoint.contains("bert.embeddings.word_embeddings.weight")
        {
            Self { bert: "bert.".into(), projection: None }
        } else {
            Self::bert()
        }
    }
}

/// Choices that a checkpoint does not fix, or that override what it implies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncoderOptions {
    /// Pooling; `None` takes the checkpoint's (sentence-transformers `1_Pooling`), else CLS
    /// (DPR's and the usual default for a plain BERT retriever).
    pub pooling: Option<Pooling>,
    /// L2-normalise the output; `None` takes the checkpoint's (a sentence-transformers
    /// `Normalize` module), else no.
    pub normalize: Option<bool>,
    /// Dropout probability in training (Burn applies dropout whenever the backend is autodiff,
    /// so the default is 0; set it to `config.hidden_dropout_prob` to train as HF does).
    pub dropout: f64,
}

/// A text encoder: BERT → pooling → optional projection → optional L2 normalisation. The
/// vector of a sequence is what a bi-encoder scores with inner products.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    bert: BertModel<B>,
    projection: Option<Linear<B>>,
    pooling: Pooling,
    normalize: bool,
    /// The config it was built from (`projection_dim` 0 when it has no projection).
    config: BertConfig,
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

/// What a sentence-transformers directory's `modules.json` says.
struct SentenceTransformers {
    pooling: Pooling,
    normalize: bool,
}

fn read_sentence_transformers(dir: &Path) -> Result<Option<SentenceTransformers>> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(None);
    }
    let modules: Vec<StModule> = rag_hf::read_json(&modules_path)?;
    let layout = |message: String| RetrieverError::Layout { path: modules_path.clone(), message };
    let mut pooling = None;
    let mut normalize = false;
    for (i, module) in modules.iter().enumerate() {
        let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
        match kind {
            "Transformer" if i == 0 => {
                if !module.path.is_empty() {
                    return Err(layout(format!(
                        "the Transformer module sits in `{}`; load that directory instead",
                        module.path
                    )));
                }
            }
            "Pooling" if pooling.is_none() => {
                let path = dir.join(&module.path).join("config.json");
                let config: StPooling = rag_hf::read_json(&path)?;
                let modes = [
                    (config.pooling_mode_cls_token, Some(Pooling::Cls), "pooling_mode_cls_token"),
                    (config.pooling_mode_mean_tokens, Some(Pooling::Mean), "pooling_mode_mean_tokens"),
                    (config.pooling_mode_max_tokens, Some(Pooling::Max), "pooling_mode_max_tokens"),
                    (
                        config.pooling_mode_mean_sqrt_len_tokens,
                        Some(Pooling::MeanSqrtLen),
                        "pooling_mode_mean_sqrt_len_tokens",
                    ),
                    (config.pooling_mode_weightedmean_tokens, None, "pooling_mode_weightedmean_tokens"),
                    (config.pooling_mode_lasttoken, None, "pooling_mode_lasttoken"),
                ];
                let on: Vec<_> = modes.iter().filter(|m| m.0).collect();
                pooling = match on.as_slice() {
                    [(_, Some(mode), _)] => Some(*mode),
                    [(_, None, name)] => {
                        return Err(RetrieverError::Layout { path, message: format!("`{name}` is not supported") });
                    }
                    _ => {
                        let names: Vec<_> = on.iter().map(|m| m.2).collect();
                        return Err(RetrieverError::Layout {
                            path,
                            message: format!("exactly one pooling mode must be on, found {names:?}"),
                        });
                    }
                };
            }
            "Normalize" => normalize = true,
            _ => {
                return Err(layout(format!(
                    "module {i} of type `{}` is not supported (supported: Transformer, Pooling, Normalize)",
                    module.kind
                )));
            }
        }
    }
    let pooling = pooling.ok_or_else(|| layout("no Pooling module".into()))?;
    Ok(Some(SentenceTransformers { pooling, normalize }))
}

impl<B: Backend> Encoder<B> {
    /// A freshly initialized encoder (HF's initialization), for training from scratch. A
    /// projection to `config.projection_dim` is added when it is non-zero.
    pub fn init(config: &BertConfig, pooling: Pooling, normalize: bool, device: &B::Device) -> Result<Self> {
        Self::init_with_dropout(config, pooling, normalize, 0.0, device)
    }

    /// [`Encoder::init`] with dropout in training.
    pub fn init_with_dropout(
        config: &BertConfig,
        pooling: Pooling,
        normalize: bool,
        dropout: f64,
        device: &B::Device,
    ) -> Result<Self> {
        let bert = BertModel::init(config, pooling == Pooling::Pooler, dropout, device)?;
        let projection = (config.projection_dim > 0)
            .then(|| init_linear(config.hidden_size, config.projection_dim, true, config.initializer_range, device));
        Ok(Self { bert, projection, pooling, normalize, config: config.clone() })
    }

    /// Loads an encoder from a HF model directory: `config.json` plus `model.safetensors` (or a
    /// sharded checkpoint), written by `BertModel`/`BertFor*`, `DPRQuestionEncoder`,
    /// `DPRContextEncoder` or sentence-transformers (`modules.json`, `1_Pooling/config.json`).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: &EncoderOptions,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(RetrieverError::Layout { path: dir.to_path_buf(), message: "not a directory".into() });
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let st = read_sentence_transformers(dir)?;
        let checkpoint = Checkpoint::open(dir)?;
        let layout = WeightLayout::detect(&config, &checkpoint);
        let pooling = options.pooling.or(st.as_ref().map(|st| st.pooling)).unwrap_or(Pooling::Cls);
        let normalize = options.normalize.or(st.as_ref().map(|st| st.normalize)).unwrap_or(false);
        Self::load(&checkpoint, &layout, &config, pooling, normalize, options.dropout, device, dtype)
    }

    /// Loads an encoder from `checkpoint` with an explicit layout (e.g. a RAG checkpoint's
    /// question encoder: `WeightLayout::dpr_question().under("rag.question_encoder.")`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        checkpoint: &Checkpoint,
        layout: &WeightLayout,
        config: &BertConfig,
        pooling: Pooling,
        normalize: bool,
        dropout: f64,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        let loader = Loader::<B>::new(checkpoint, &layout.bert, device, dtype);
        let bert = BertModel::load(config, &loader, pooling == Pooling::Pooler, dropout)?;
        let projection = match (&layout.projection, config.projection_dim) {
            (Some(name), d_out) if d_out > 0 => {
                let root = Loader::<B>::new(checkpoint, "", device, dtype);
                Some(root.linear(name, config.hidden_size, d_out, true)?)
            }
            _ => None,
        };
        let config = BertConfig {
            projection_dim: if projection.is_some() { config.projection_dim } else { 0 },
            ..config.clone()
        };
        Ok(Self { bert, projection, pooling, normalize, config })
    }

    /// The config it was built from (with `projection_dim` 0 when it has no projection), so
    /// [`Encoder::init`] rebuilds the same structure.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The underlying BERT model.
    pub fn bert(&self) -> &BertModel<B> {
        &self.bert
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether outputs are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Width of the output vectors.
    pub fn dim(&self) -> usize {
        self.projection.as_ref().map_or(self.bert.hidden_size(), |p| p.weight.dims()[1])
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.bert.word_embeddings().weight.val().device()
    }

    /// Encodes a tokenized batch into `[batch, dim]` vectors after checking that it fits the
    /// model (ids inside the vocabulary, length within the position table).
    pub fn encode(&self, batch: &TokenBatch) -> Result<Tensor<B, 2>> {
        batch.check_fits(self.bert.vocab_size(), self.bert.type_vocab_size(), self.bert.max_positions())?;
        Ok(self.forward(batch.to_input(&self.device())))
    }

    /// Encodes a batch of tensors (unchecked: see [`BertModel::forward`]).
    pub fn forward(&self, input: BertInput<B>) -> Tensor<B, 2> {
        let mask = input.attention_mask.clone();
        let output = self.bert.forward(input);
        let pooled = self.pooling.pool(output.last_hidden_state, mask, output.pooler_output);
        let projected = match &self.projection {
            Some(projection) => projection.forward(pooled),
            None => pooled,
        };
        if self.normalize { l2_normalize(projected) } else { projected }
    }
}

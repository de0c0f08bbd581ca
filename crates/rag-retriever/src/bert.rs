//! BERT (Devlin et al. 2019), faithful to HuggingFace's `BertModel`
//! (`transformers/models/bert/modeling_bert.py`).
//!
//! Embeddings are the sum of word, absolute position and token-type (segment) embeddings,
//! followed by LayerNorm. Each layer is post-LN: `x = LN(x + Wo·attn(x))`, then
//! `x = LN(x + W2·act(W1·x))`. Padded keys are masked out of every attention row. The optional
//! pooler is `tanh(W·h[CLS])` (HF's `BertPooler`); DPR checkpoints have none.
//!
//! Field names follow the checkpoint's (`embeddings.word_embeddings`,
//! `encoder.layer.N.attention.self.query`…) so [`BertModel::new`] reads like the HF module
//! tree; it builds the model from a checkpoint ([`BertModel::load`]) or from scratch
//! ([`BertModel::init`]) through one [`Weights`].
//!
//! Quirks kept for parity: HF's `gelu` is the exact erf form; an all-padding row (attention mask
//! all zero) attends to nothing here and yields the embedding path only, where HF's additive
//! mask would spread attention uniformly over the padding (a row that has no tokens has no
//! meaningful embedding either way).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Int, Tensor};
use rag_hf::{Loader, Weights, project};

use crate::Result;
use crate::config::{Activation, BertConfig};

/// The inputs of one batch: token ids, the attention mask (1 = token, 0 = padding) and the
/// token types (segment ids; zeros when absent), all `[batch, len]`.
#[derive(Debug, Clone)]
pub struct BertInput<B: Backend> {
    /// Token ids `[batch, len]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, len]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Segment ids `[batch, len]` (HF's `token_type_ids`); `None` means all zeros.
    pub token_type_ids: Option<Tensor<B, 2, Int>>,
}

/// What [`BertModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct BertOutput<B: Backend> {
    /// `[batch, len, d]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `tanh(W·h[CLS])` `[batch, d]` when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

/// Word + position + token-type embeddings, then LayerNorm (HF's `BertEmbeddings`).
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    token_type_embeddings: Embedding<B>,
    layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

/// One post-LN transformer layer (HF's `BertLayer`).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    attention_output: Linear<B>,
    attention_norm: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
    output_norm: LayerNorm<B>,
    dropout: Dropout,
    heads: usize,
    activation: Activation,
}

/// The BERT encoder: embeddings, `num_hidden_layers` layers and an optional pooler.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    embeddings: BertEmbeddings<B>,
    layers: Vec<BertLayer<B>>,
    pooler: Option<Linear<B>>,
    vocab_size: usize,
    type_vocab_size: usize,
    max_positions: usize,
}

fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}

impl<B: Backend> BertModel<B> {
    /// A model with HF's initialization (weights `N(0, initializer_range)`, LayerNorm 1/0), for
    /// training from scratch. `pooler` adds the tanh pooler; `dropout` is applied in training
    /// under autodiff (0 for none).
    pub fn init(config: &BertConfig, pooler: bool, dropout_prob: f64, device: &B::Device) -> Result<Self> {
        Self::new(config, &Weights::init(device, config.initializer_range), pooler, dropout_prob)
    }

    /// Loads HF `BertModel` weights from `loader` (positioned at the model's root, e.g. `""`,
    /// `"bert."` or `"question_encoder.bert_model."`). The pooler is loaded when `pooler` is set
    /// (and must then be present).
    pub fn load(config: &BertConfig, loader: &Loader<'_, B>, pooler: bool, dropout_prob: f64) -> Result<Self> {
        Self::new(config, &Weights::Load(loader.clone()), pooler, dropout_prob)
    }

    /// The model with its tensors from `weights`, named as HF's `BertModel` names them.
    pub fn new(config: &BertConfig, weights: &Weights<'_, B>, pooler: bool, dropout_prob: f64) -> Result<Self> {
        config.validate()?;
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        let at = weights.push("embeddings");
        let embeddings = BertEmbeddings {
            word_embeddings: at.embedding("word_embeddings", config.vocab_size, d)?,
            position_embeddings: at.embedding("position_embeddings", config.max_position_embeddings, d)?,
            token_type_embeddings: at.embedding("token_type_embeddings", config.type_vocab_size, d)?,
            layer_norm: at.layer_norm("LayerNorm", d, eps)?,
            dropout: dropout(dropout_prob),
        };
        let layers = (0..config.num_hidden_layers)
            .map(|n| BertLayer::new(config, &weights.push("encoder.layer").push(&n.to_string()), dropout_prob))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if pooler { Some(weights.push("pooler").linear("dense", d, d, true)?) } else { None };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            vocab_size: config.vocab_size,
            type_vocab_size: config.type_vocab_size,
            max_positions: config.max_position_embeddings,
        })
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Rows of the token-type table.
    pub fn type_vocab_size(&self) -> usize {
        self.type_vocab_size
    }

    /// The longest input the position table allows.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Whether the model has the tanh pooler.
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The word-embedding matrix `[vocab, d]` (the parameter RAG's parity gradient is taken on).
    pub fn word_embeddings(&self) -> &Embedding<B> {
        &self.embeddings.word_embeddings
    }

    /// Runs the encoder. The inputs must fit the model (ids below the vocabulary size, length
    /// at most the position table); [`crate::Encoder::encode`] checks a [`crate::TokenBatch`]
    /// for that before calling it.
    pub fn forward(&self, input: BertInput<B>) -> BertOutput<B> {
        let [batch, len] = input.input_ids.dims();
        let device = input.input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device).reshape([1, len]);
        let token_types = input.token_type_ids.unwrap_or_else(|| Tensor::zeros([batch, len], &device));
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(input.input_ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(token_types);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));

        // true = masked: a padded key, for every head and query row.
        let heads = self.layers.first().map_or(1, |l| l.heads);
        let padded: Tensor<B, 4, Bool> =
            input.attention_mask.equal_elem(0).reshape([batch, 1, 1, len]).expand([batch, heads, len, len]);
        for layer in &self.layers {
            x = layer.forward(x, padded.clone());
        }
        let pooler_output = self.pooler.as_ref().map(|pooler| {
            let d = x.dims()[2];
            let cls = x.clone().narrow(1, 0, 1).reshape([batch, d]);
            pooler.forward(cls).tanh()
        });
        BertOutput { last_hidden_state: x, pooler_output }
    }

    /// The float dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embeddings.word_embeddings.weight.val().dtype()
    }
}

impl<B: Backend> BertLayer<B> {
    /// Layer `encoder.layer.N` with its tensors from `at`.
    fn new(config: &BertConfig, at: &Weights<'_, B>, dropout_prob: f64) -> Result<Self> {
        let (d, i, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let attn = at.push("attention");
        Ok(Self {
            query: attn.push("self").linear("query", d, d, true)?,
            key: attn.push("self").linear("key", d, d, true)?,
            value: attn.push("self").linear("value", d, d, true)?,
            attention_output: attn.push("output").linear("dense", d, d, true)?,
            attention_norm: attn.push("output").layer_norm("LayerNorm", d, eps)?,
            intermediate: at.push("intermediate").linear("dense", d, i, true)?,
            output: at.push("output").linear("dense", i, d, true)?,
            output_norm: at.push("output").layer_norm("LayerNorm", d, eps)?,
            dropout: dropout(dropout_prob),
            heads: config.num_attention_heads,
            activation: config.hidden_act,
        })
    }

    fn forward(&self, x: Tensor<B, 3>, padded: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let [batch, len, d] = x.dims();
        let split = |t: Tensor<B, 3>| t.reshape([batch, len, self.heads, d / self.heads]).swap_dims(1, 2);
        let q = split(project(&self.query, x.clone()));
        let k = split(project(&self.key, x.clone()));
        let v = split(project(&self.value, x.clone()));
        let context = attention(q, k, v, Some(padded), None, AttentionModuleOptions::default())
            .swap_dims(1, 2)
            .reshape([batch, len, d]);
        let attended = self.attention_norm.forward(self.dropout.forward(project(&self.attention_output, context)) + x);
        let hidden = project(&self.intermediate, attended.clone());
        let hidden = self.activation.apply(hidden);
        self.output_norm.forward(self.dropout.forward(project(&self.output, hidden)) + attended)
    }
}

//! BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training"), faithful to
//! HuggingFace's `BartForConditionalGeneration` (`transformers/models/bart/modeling_bart.py`).
//!
//! - Token embeddings (`model.shared`, times `sqrt(d_model)` when `scale_embedding`) plus
//!   learned positions read at `position + 2` (HF's `BartLearnedPositionalEmbedding` offset: its
//!   tables have `max_position_embeddings + 2` rows), then `layernorm_embedding`.
//! - Post-LN layers: `x = LN(x + attn(x))`, in the decoder then `x = LN(x + cross_attn(x, enc))`,
//!   then `x = LN(x + fc2(act(fc1(x))))`. No final LayerNorm (that is mBART).
//! - The LM head is `model.shared` (tied) plus the `final_logits_bias` buffer. Checkpoints from
//!   older transformers also store `model.{encoder,decoder}.embed_tokens` and `lm_head`; they are
//!   copies of `model.shared` and are not read. A config with `tie_word_embeddings: false` reads
//!   a separate `lm_head.weight`.
//! - Encoder padding is masked on keys in encoder self-attention and decoder cross-attention;
//!   decoder padding (teacher forcing) on keys in decoder self-attention, with the causal mask.
//!
//! Field names follow the checkpoint so [`Bart::new`] reads like HF's module tree; it builds the
//! model from a checkpoint ([`Bart::load`]) or from scratch ([`Bart::init`]) through one
//! [`Weights`].

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor};
use rag_hf::{Activation, Loader, Weights, project};

use crate::attention::{KvCache, attend, causal, key_padding, split_heads};
use crate::config::{BartConfig, ConfigFile};
use crate::error::input_error;
use crate::generation::GenerationConfig;
use crate::search::{DecodeState, Generated, StepModel, generate};
use crate::tokenizer::{Padded, PaddingSide};
use crate::{GeneratorError, Result};

/// HF's `BartLearnedPositionalEmbedding` reads row `position + 2`.
const POSITION_OFFSET: usize = 2;
/// `nn.LayerNorm`'s default epsilon, which BART uses.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Multi-head attention with q/k/v/out projections (HF's `BartAttention`).
#[derive(Module, Debug)]
pub struct BartAttention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    out_proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> BartAttention<B> {
    fn new(at: &Weights<'_, B>, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q_proj: at.linear("q_proj", d, d, true)?,
            k_proj: at.linear("k_proj", d, d, true)?,
            v_proj: at.linear("v_proj", d, d, true)?,
            out_proj: at.linear("out_proj", d, d, true)?,
            heads,
        })
    }

    /// Keys and values of `x` `[b, t, d]`, split into heads.
    fn keys_values(&self, x: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (split_heads(project(&self.k_proj, x.clone()), self.heads), split_heads(project(&self.v_proj, x), self.heads))
    }

    fn forward(&self, x: Tensor<B, 3>, kv: (Tensor<B, 4>, Tensor<B, 4>), masked: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let q = split_heads(project(&self.q_proj, x), self.heads);
        project(&self.out_proj, attend(q, kv.0, kv.1, masked))
    }
}

/// The feed-forward block `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
struct FeedForward<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
    activation: Activation,
    activation_dropout: Dropout,
}

impl<B: Backend> FeedForward<B> {
    fn new(at: &Weights<'_, B>, config: &BartConfig, width: usize, dropout_prob: f64) -> Result<Self> {
        let d = config.d_model;
        Ok(Self {
            fc1: at.linear("fc1", d, width, true)?,
            fc2: at.linear("fc2", width, d, true)?,
            activation: config.activation_function,
            activation_dropout: dropout(config.activation_dropout.min(dropout_prob)),
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        project(&self.fc2, self.activation_dropout.forward(self.activation.apply(project(&self.fc1, x))))
    }
}

/// One encoder layer (HF's `BartEncoderLayer`).
#[derive(Module, Debug)]
pub struct BartEncoderLayer<B: Backend> {
    self_attn: BartAttention<B>,
    self_attn_layer_norm: LayerNorm<B>,
    ffn: FeedForward<B>,
    final_layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

/// One decoder layer (HF's `BartDecoderLayer`).
#[derive(Module, Debug)]
pub struct BartDecoderLayer<B: Backend> {
    self_attn: BartAttention<B>,
    self_attn_layer_norm: LayerNorm<B>,
    encoder_attn: BartAttention<B>,
    encoder_attn_layer_norm: LayerNorm<B>,
    ffn: FeedForward<B>,
    final_layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

/// Positions, embedding LayerNorm and layers of one side (encoder or decoder).
#[derive(Module, Debug)]
pub struct BartStack<B: Backend, L: Module<B>> {
    embed_positions: Embedding<B>,
    layernorm_embedding: LayerNorm<B>,
    layers: Vec<L>,
    dropout: Dropout,
}

impl<B: Backend, L: Module<B>> BartStack<B, L> {
    /// One side's positions, embedding LayerNorm and `n` layers (`layers.N`, built by `layer`).
    fn new(
        at: &Weights<'_, B>,
        positions: usize,
        d: usize,
        n: usize,
        dropout_prob: f64,
        layer: impl Fn(&Weights<'_, B>) -> Result<L>,
    ) -> Result<Self> {
        Ok(Self {
            embed_positions: at.embedding("embed_positions", positions, d)?,
            layernorm_embedding: at.layer_norm("layernorm_embedding", d, LAYER_NORM_EPS)?,
            layers: (0..n).map(|i| layer(&at.push("layers").push(&i.to_string()))).collect::<Result<_>>()?,
            dropout: dropout(dropout_prob),
        })
    }
}

/// `BartForConditionalGeneration`: shared embeddings, encoder, decoder and the LM head.
#[derive(Module, Debug)]
pub struct Bart<B: Backend> {
    shared: Embedding<B>,
    encoder: BartStack<B, BartEncoderLayer<B>>,
    decoder: BartStack<B, BartDecoderLayer<B>>,
    /// `Some` only for an untied head (`tie_word_embeddings: false`), `[vocab, d]` as HF stores it.
    lm_head: Option<Param<Tensor<B, 2>>>,
    /// HF's `final_logits_bias` buffer `[1, vocab]` (not trained).
    final_logits_bias: Param<Tensor<B, 2>>,
    embed_scale: f64,
    config: BartConfig,
}

/// The inputs of a teacher-forced BART step: the encoder side and the decoder side, each with
/// its attention mask (1 = token, 0 = padding), all `[batch, len]`.
#[derive(Debug, Clone)]
pub struct BartBatch<B: Backend> {
    /// Encoder token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// Encoder attention mask.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Decoder inputs: the target shifted right, starting with `decoder_start_token_id`.
    pub decoder_input_ids: Tensor<B, 2, Int>,
    /// Decoder attention mask; `None` means no decoder padding.
    pub decoder_attention_mask: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> BartEncoderLayer<B> {
    fn new(at: &Weights<'_, B>, config: &BartConfig, dropout_prob: f64) -> Result<Self> {
        let d = config.d_model;
        Ok(Self {
            self_attn: BartAttention::new(&at.push("self_attn"), d, config.encoder_attention_heads)?,
            self_attn_layer_norm: at.layer_norm("self_attn_layer_norm", d, LAYER_NORM_EPS)?,
            ffn: FeedForward::new(at, config, config.encoder_ffn_dim, dropout_prob)?,
            final_layer_norm: at.layer_norm("final_layer_norm", d, LAYER_NORM_EPS)?,
            dropout: dropout(dropout_prob),
        })
    }

    /// `x = LN(x + attn(x))`, then `x = LN(x + ffn(x))`; `masked` hides padded keys.
    fn forward(&self, x: Tensor<B, 3>, masked: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let attended = self.self_attn.forward(x.clone(), self.self_attn.keys_values(x.clone()), masked);
        let x = self.self_attn_layer_norm.forward(x + self.dropout.forward(attended));
        let hidden = self.dropout.forward(self.ffn.forward(x.clone()));
        self.final_layer_norm.forward(x + hidden)
    }
}

impl<B: Backend> BartDecoderLayer<B> {
    fn new(at: &Weights<'_, B>, config: &BartConfig, dropout_prob: f64) -> Result<Self> {
        let (d, heads) = (config.d_model, config.decoder_attention_heads);
        Ok(Self {
            self_attn: BartAttention::new(&at.push("self_attn"), d, heads)?,
            self_attn_layer_norm: at.layer_norm("self_attn_layer_norm", d, LAYER_NORM_EPS)?,
            encoder_attn: BartAttention::new(&at.push("encoder_attn"), d, heads)?,
            encoder_attn_layer_norm: at.layer_norm("encoder_attn_layer_norm", d, LAYER_NORM_EPS)?,
            ffn: FeedForward::new(at, config, config.decoder_ffn_dim, dropout_prob)?,
            final_layer_norm: at.layer_norm("final_layer_norm", d, LAYER_NORM_EPS)?,
            dropout: dropout(dropout_prob),
        })
    }

    /// Self-attention over `self_kv` (the cache's keys and values, or this pass's), then
    /// cross-attention over the encoder's `cross_kv`, then the feed-forward block, each post-LN.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        self_kv: (Tensor<B, 4>, Tensor<B, 4>),
        self_masked: Tensor<B, 4, Bool>,
        cross_kv: (Tensor<B, 4>, Tensor<B, 4>),
        cross_masked: Tensor<B, 4, Bool>,
    ) -> Tensor<B, 3> {
        let attended = self.self_attn.forward(x.clone(), self_kv, self_masked);
        let x = self.self_attn_layer_norm.forward(x + self.dropout.forward(attended));
        let attended = self.encoder_attn.forward(x.clone(), cross_kv, cross_masked);
        let x = self.encoder_attn_layer_norm.forward(x + self.dropout.forward(attended));
        let hidden = self.dropout.forward(self.ffn.forward(x.clone()));
        self.final_layer_norm.forward(x + hidden)
    }
}

fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}

fn padding<B: Backend>(mask: Tensor<B, 2, Int>) -> Tensor<B, 2, Bool> {
    mask.equal_elem(0)
}

impl<B: Backend> Bart<B> {
    /// A model with HF's initialization (weights `N(0, init_std)`, LayerNorm 1/0, zero biases),
    /// for training from scratch. `dropout` is applied at HF's places in training under autodiff
    /// (Burn has no eval flag; 0 turns it off).
    pub fn init(config: &BartConfig, dropout_prob: f64, device: &B::Device) -> Result<Self> {
        Self::new(config, &Weights::init(device, config.init_std), dropout_prob)
    }

    /// Loads `BartForConditionalGeneration` weights. `loader` sits at the model's root (`""` for
    /// a BART checkpoint, `"rag.generator."` inside a RAG one).
    pub fn load(config: &BartConfig, loader: &Loader<'_, B>, dropout_prob: f64) -> Result<Self> {
        Self::new(config, &Weights::Load(loader.clone()), dropout_prob)
    }

    /// The model with its tensors from `weights`, named as HF's `BartForConditionalGeneration`
    /// names them. The token embeddings are `model.shared.weight`, or
    /// `model.encoder.embed_tokens.weight` when a checkpoint lacks the shared name; a missing
    /// `final_logits_bias` is zeros, as in HF. Fresh weights are drawn encoder, decoder, untied
    /// LM head, then the shared embeddings.
    pub fn new(config: &BartConfig, weights: &Weights<'_, B>, dropout_prob: f64) -> Result<Self> {
        config.validate()?;
        let (d, v) = (config.d_model, config.vocab_size);
        let model = weights.push("model");
        let positions = config.max_position_embeddings + POSITION_OFFSET;
        let encoder =
            BartStack::new(&model.push("encoder"), positions, d, config.encoder_layers, dropout_prob, |at| {
                BartEncoderLayer::new(at, config, dropout_prob)
            })?;
        let decoder =
            BartStack::new(&model.push("decoder"), positions, d, config.decoder_layers, dropout_prob, |at| {
                BartDecoderLayer::new(at, config, dropout_prob)
            })?;
        let lm_head =
            if config.tie_word_embeddings { None } else { Some(weights.push("lm_head").normal("weight", [v, d])?) };
        let shared = if model.contains("shared.weight") || !model.contains("encoder.embed_tokens.weight") {
            model.embedding("shared", v, d)?
        } else {
            model.push("encoder").embedding("embed_tokens", v, d)?
        };
        let final_logits_bias = weights.zeros_unless_stored("final_logits_bias", [1, v])?;
        Ok(Self {
            shared,
            encoder,
            decoder,
            lm_head,
            final_logits_bias: Param::from_tensor(final_logits_bias).set_require_grad(false),
            embed_scale: if config.scale_embedding { (d as f64).sqrt() } else { 1.0 },
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &BartConfig {
        &self.config
    }

    /// The float dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.shared.weight.val().dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> B::Device {
        self.shared.weight.val().device()
    }

    /// The token-embedding matrix `[vocab, d]` shared by encoder, decoder and (tied) LM head.
    pub fn shared(&self) -> &Embedding<B> {
        &self.shared
    }

    fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.shared.forward(ids);
        if self.embed_scale == 1.0 { x } else { x.mul_scalar(self.embed_scale) }
    }

    fn with_positions<L: Module<B>>(&self, stack: &BartStack<B, L>, x: Tensor<B, 3>, past: usize) -> Tensor<B, 3> {
        let [_, t, _] = x.dims();
        let start = (past + POSITION_OFFSET) as i64;
        let positions = Tensor::<B, 1, Int>::arange(start..start + t as i64, &x.device()).reshape([1, t]);
        let x = x + stack.embed_positions.forward(positions);
        stack.dropout.forward(stack.layernorm_embedding.forward(x))
    }

    /// Runs the encoder: `[batch, len]` ids and mask (1 = token) → hidden states `[batch, len, d]`.
    pub fn encode(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let masked = key_padding(padding(attention_mask));
        let mut x = self.with_positions(&self.encoder, self.embed(input_ids), 0);
        for layer in &self.encoder.layers {
            x = layer.forward(x, masked.clone());
        }
        x
    }

    /// Logits `[b, t, vocab]` of decoder hidden states `[b, t, d]`.
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = hidden.dims();
        let head = self.lm_head.as_ref().unwrap_or(&self.shared.weight).val();
        let vocab = head.dims()[0];
        let logits = hidden.reshape([b * t, d]).matmul(head.transpose()) + self.final_logits_bias.val();
        logits.reshape([b, t, vocab])
    }

    /// Runs the decoder over `ids` `[b, t]` (after `past` positions held in `caches`, or from the
    /// start) and returns hidden states `[b, t, d]`. `self_masked` is the decoder self-attention
    /// mask `[b|1, 1, t, past + t]`.
    fn decode_hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        past: usize,
        self_masked: Tensor<B, 4, Bool>,
        cross_masked: Tensor<B, 4, Bool>,
        mut caches: Option<&mut [DecoderLayerCache<B>]>,
        encoder_hidden: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let mut x = self.with_positions(&self.decoder, self.embed(ids), past);
        for (n, layer) in self.decoder.layers.iter().enumerate() {
            let (k, v) = layer.self_attn.keys_values(x.clone());
            let (self_kv, cross_kv) = match caches.as_deref_mut() {
                Some(caches) => {
                    let cache = &mut caches[n];
                    let all = KvCache::append(&mut cache.self_attn, k, v);
                    ((all.keys, all.values), (cache.cross.keys.clone(), cache.cross.values.clone()))
                }
                None => {
                    let encoder_hidden = encoder_hidden.expect("the teacher-forced path passes the encoder output");
                    ((k, v), layer.encoder_attn.keys_values(encoder_hidden.clone()))
                }
            };
            x = layer.forward(x, self_kv, self_masked.clone(), cross_kv, cross_masked.clone());
        }
        x
    }

    /// Teacher-forced decoder: logits `[b, t, vocab]` for `decoder_input_ids` given the encoder's
    /// output and mask. Differentiable on an autodiff backend.
    pub fn decode(
        &self,
        decoder_input_ids: Tensor<B, 2, Int>,
        decoder_attention_mask: Option<Tensor<B, 2, Int>>,
        encoder_hidden: Tensor<B, 3>,
        encoder_attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [_, t] = decoder_input_ids.dims();
        let device = decoder_input_ids.device();
        let mut self_masked = causal::<B>(0, t, &device);
        if let Some(mask) = decoder_attention_mask {
            let [b, _] = mask.dims();
            self_masked = self_masked.expand([b, 1, t, t]).bool_or(key_padding(padding(mask)).expand([b, 1, t, t]));
        }
        let cross_masked = key_padding(padding(encoder_attention_mask));
        let hidden = self.decode_hidden(decoder_input_ids, 0, self_masked, cross_masked, None, Some(&encoder_hidden));
        self.lm_logits(hidden)
    }

    /// The teacher-forced forward pass: logits `[batch, decoder_len, vocab]`.
    pub fn forward(&self, batch: BartBatch<B>) -> Tensor<B, 3> {
        let encoder_hidden = self.encode(batch.input_ids, batch.attention_mask.clone());
        self.decode(batch.decoder_input_ids, batch.decoder_attention_mask, encoder_hidden, batch.attention_mask)
    }

    /// Checks that ids `[rows][len]` fit the model (below the vocabulary, within the position
    /// table); `field` names the input in the error.
    pub fn check_ids(&self, field: &'static str, ids: &[Vec<u32>]) -> Result<()> {
        check_ids(field, ids, self.config.vocab_size, self.config.max_position_embeddings)
    }

    /// Starts incremental decoding: runs the encoder once over `input_ids` with its mask
    /// (`[rows, len]`, 1 = token) and caches every layer's cross-attention keys and values. Feed
    /// decoder tokens (first `decoder_start_token_id`) with [`StepModel::step`].
    pub fn begin(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> BartState<B> {
        let encoder_hidden = self.encode(input_ids, attention_mask.clone());
        self.begin_from_encoded(encoder_hidden, attention_mask)
    }

    /// Starts incremental decoding from encoder states computed elsewhere (`[rows, len, d]`).
    pub fn begin_from_encoded(&self, encoder_hidden: Tensor<B, 3>, attention_mask: Tensor<B, 2, Int>) -> BartState<B> {
        let layers = self
            .decoder
            .layers
            .iter()
            .map(|layer| {
                let (keys, values) = layer.encoder_attn.keys_values(encoder_hidden.clone());
                DecoderLayerCache { self_attn: None, cross: KvCache { keys, values } }
            })
            .collect();
        BartState { encoder_mask: attention_mask, layers, past: 0 }
    }
}

impl<B: Backend> Bart<B> {
    /// Right-pads encoder inputs `[rows][len]` with `pad_token_id`, checks them and starts
    /// decoding (runs the encoder once).
    pub fn begin_ids(&self, inputs: &[Vec<u32>]) -> Result<BartState<B>> {
        self.check_ids("input_ids", inputs)?;
        if inputs.iter().any(Vec::is_empty) {
            return Err(input_error("input_ids", "an input is empty"));
        }
        let (ids, mask) =
            Padded::new(inputs, self.config.pad_token_id, PaddingSide::Right).tensors::<B>(&self.device());
        Ok(self.begin(ids, mask))
    }

    /// Greedy or beam search from encoder inputs `[rows][len]` (right-padded here); each output
    /// row starts with the decoder start token, as HF's `generate` returns them.
    pub fn generate(&self, inputs: &[Vec<u32>], config: &GenerationConfig) -> Result<Generated> {
        let state = self.begin_ids(inputs)?;
        let start = config.decoder_start_token_id.unwrap_or(self.config.decoder_start_token_id);
        generate(self, state, &vec![vec![start]; inputs.len()], config)
    }
}

/// The per-layer cache of BART's decoder: self-attention keys/values so far and the
/// cross-attention keys/values of the encoder output (computed once).
#[derive(Debug, Clone)]
pub struct DecoderLayerCache<B: Backend> {
    self_attn: Option<KvCache<B>>,
    cross: KvCache<B>,
}

/// The state of incremental BART decoding for a set of rows (examples × beams × documents).
#[derive(Debug, Clone)]
pub struct BartState<B: Backend> {
    /// The encoder's attention mask (1 = token). Kept as Int: Flex's `select` on a Bool tensor
    /// returns a U8 tensor that later Bool ops refuse.
    encoder_mask: Tensor<B, 2, Int>,
    layers: Vec<DecoderLayerCache<B>>,
    past: usize,
}

impl<B: Backend> DecodeState<B> for BartState<B> {
    fn rows(&self) -> usize {
        self.encoder_mask.dims()[0]
    }

    fn len(&self) -> usize {
        self.past
    }

    fn device(&self) -> B::Device {
        self.encoder_mask.device()
    }

    fn select_rows(&mut self, rows: Tensor<B, 1, Int>) {
        self.encoder_mask = self.encoder_mask.clone().select(0, rows.clone());
        for layer in &mut self.layers {
            layer.self_attn = layer.self_attn.take().map(|c| c.select_rows(rows.clone()));
            layer.cross = layer.cross.clone().select_rows(rows.clone());
        }
    }
}

impl<B: Backend> StepModel<B> for Bart<B> {
    type State = BartState<B>;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn step_all(&self, state: &mut BartState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let hidden = self.step_hidden(state, tokens);
        self.lm_logits(hidden)
    }

    fn step(&self, state: &mut BartState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let hidden = self.step_hidden(state, tokens);
        let [rows, n, _] = hidden.dims();
        self.lm_logits(hidden.narrow(1, n - 1, 1)).reshape([rows, self.config.vocab_size])
    }
}

impl<B: Backend> Bart<B> {
    fn step_hidden(&self, state: &mut BartState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, n] = tokens.dims();
        let device = tokens.device();
        let past = state.past;
        let self_masked = causal::<B>(past, n, &device);
        let cross_masked = key_padding(padding(state.encoder_mask.clone()));
        let hidden = self.decode_hidden(tokens, past, self_masked, cross_masked, Some(&mut state.layers), None);
        state.past += n;
        hidden
    }
}

/// Checks token ids against a vocabulary size and a position table.
pub(crate) fn check_ids(field: &'static str, ids: &[Vec<u32>], vocab: usize, max_len: usize) -> Result<()> {
    for (row, tokens) in ids.iter().enumerate() {
        if tokens.len() > max_len {
            return Err(input_error(
                field,
                format!("row {row} has {} tokens, more than the {max_len} positions", tokens.len()),
            ));
        }
        if let Some((position, id)) = tokens.iter().enumerate().find(|(_, id)| **id as usize >= vocab) {
            return Err(GeneratorError::Input {
                field,
                message: format!("row {row}, position {position}: id {id} is outside the vocabulary of {vocab}"),
            });
        }
    }
    Ok(())
}

//! LLaMA (Touvron et al. 2023), faithful to HuggingFace's `LlamaForCausalLM`
//! (`transformers/models/llama/modeling_llama.py`); also serves the Llama-architecture family
//! (TinyLlama, Llama 2/3, and checkpoints that share the layout).
//!
//! - Pre-norm layers: `x += o_proj(attn(rms(x)))`, `x += down(act(gate(rms(x))) · up(rms(x)))`,
//!   a final RMSNorm, and an LM head that is `lm_head.weight` or, with `tie_word_embeddings`,
//!   the token-embedding matrix.
//! - RMSNorm is written here (`x / sqrt(mean(x²) + eps) · w`) in the input's dtype: Burn's own
//!   computes in f32, which breaks f64 gradient checks.
//! - Rotary embeddings in HF's `rotate_half` layout (pairs `i` and `i + d/2`), not Burn's
//!   interleaved `RotaryEncoding`; θ and scaling (`default`, `linear`, `llama3`) from the config.
//! - Grouped-query attention: query head `h` reads key/value head `h / (heads / kv_heads)`.
//! - Left padding: position ids come from the attention mask (`cumsum(mask) - 1`, as HF's
//!   `generate` computes them), and padded keys are masked, so a row's logits do not depend on
//!   how much padding precedes it.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};
use rag_hf::{Activation, Loader, Weights, project};

use crate::Result;
use crate::attention::{KvCache, attend_grouped, causal, key_padding, split_heads};
use crate::config::{ConfigFile, LlamaConfig, RopeScaling};
use crate::generation::GenerationConfig;
use crate::search::{DecodeState, Generated, StepModel, generate};
use crate::tokenizer::{Padded, PaddingSide};

/// Root-mean-square LayerNorm without centering or bias (HF's `LlamaRMSNorm`).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    fn new(at: &Weights<'_, B>, d: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: at.ones("weight", [d])?, eps })
    }

    /// `x / sqrt(mean(x², last axis) + eps) · weight`, in `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mean_square = x.clone().square().mean_dim(D - 1);
        let normalized = x * mean_square.add_scalar(self.eps).sqrt().recip();
        normalized * self.weight.val().unsqueeze()
    }
}

/// Rotary position embedding in HF's `rotate_half` layout.
#[derive(Debug, Clone)]
pub struct Rotary {
    /// `1 / θ^(2i/d)` for `i < d/2`, after scaling.
    inv_freq: Vec<f64>,
}

impl Rotary {
    /// Frequencies for heads of width `head_dim` (HF's `_compute_default_rope_parameters`
    /// and, for `llama3`, `_compute_llama3_parameters`).
    pub fn new(head_dim: usize, theta: f64, scaling: RopeScaling) -> Self {
        let half = head_dim / 2;
        let base: Vec<f64> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        let inv_freq = match scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let low_wavelen = original_max_position_embeddings / low_freq_factor;
                let high_wavelen = original_max_position_embeddings / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_position_embeddings / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Self { inv_freq }
    }

    /// `cos` and `sin` `[b, 1, t, d]` for position ids `[b, t]`, in `dtype`.
    ///
    /// Angles and their cos/sin are computed in f32 whatever the model's dtype, as HF's
    /// `LlamaRotaryEmbedding` does: in half precision `position · inv_freq` would lose whole
    /// radians past a few thousand positions, and in f64 this keeps parity with HF's numbers.
    fn tables<B: Backend>(&self, positions: Tensor<B, 2, Int>, dtype: DType) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t] = positions.dims();
        let half = self.inv_freq.len();
        let device = positions.device();
        let inv_freq: Vec<f32> = self.inv_freq.iter().map(|&f| f as f32).collect();
        let inv_freq = Tensor::<B, 1>::from_data(TensorData::new(inv_freq, [half]), (&device, DType::F32));
        let angles = positions.float().cast(DType::F32).reshape([b, t, 1]) * inv_freq.reshape([1, 1, half]);
        let angles = Tensor::cat(vec![angles.clone(), angles], 2).reshape([b, 1, t, 2 * half]);
        (angles.clone().cos().cast(dtype), angles.sin().cast(dtype))
    }

    /// Rotates `x` `[b, h, t, d]` by the tables: `x·cos + rotate_half(x)·sin`, where
    /// `rotate_half([x1, x2]) = [-x2, x1]`.
    fn apply<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
        let half = x.dims()[3] / 2;
        let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
        x * cos + rotated * sin
    }
}

/// Grouped-query self-attention (HF's `LlamaAttention`).
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
    heads: usize,
    kv_heads: usize,
}

/// The SwiGLU feed-forward block (HF's `LlamaMLP`).
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
    activation: Activation,
}

/// One decoder layer (HF's `LlamaDecoderLayer`).
#[derive(Module, Debug)]
pub struct LlamaLayer<B: Backend> {
    self_attn: LlamaAttention<B>,
    mlp: LlamaMlp<B>,
    input_layernorm: RmsNorm<B>,
    post_attention_layernorm: RmsNorm<B>,
    dropout: Dropout,
}

/// `LlamaForCausalLM`.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    embed_tokens: Embedding<B>,
    layers: Vec<LlamaLayer<B>>,
    norm: RmsNorm<B>,
    /// `None` when tied to `embed_tokens`.
    lm_head: Option<Linear<B>>,
    rotary: Rotary,
    config: LlamaConfig,
}

impl<B: Backend> LlamaAttention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &(Tensor<B, 4>, Tensor<B, 4>),
        masked: Tensor<B, 4, Bool>,
        cache: Option<&mut Option<KvCache<B>>>,
    ) -> Tensor<B, 3> {
        let q =
            Rotary::apply(split_heads(project(&self.q_proj, x.clone()), self.heads), rope.0.clone(), rope.1.clone());
        let k =
            Rotary::apply(split_heads(project(&self.k_proj, x.clone()), self.kv_heads), rope.0.clone(), rope.1.clone());
        let v = split_heads(project(&self.v_proj, x), self.kv_heads);
        let (k, v) = match cache {
            Some(cache) => {
                let all = KvCache::append(cache, k, v);
                (all.keys, all.values)
            }
            None => (k, v),
        };
        project(&self.o_proj, attend_grouped(q, k, v, masked, self.heads / self.kv_heads))
    }
}

impl<B: Backend> LlamaLayer<B> {
    /// Layer `model.layers.N` with its tensors from `at`.
    fn new(at: &Weights<'_, B>, config: &LlamaConfig, dropout_prob: f64) -> Result<Self> {
        let (d, hd) = (config.hidden_size, config.head_dim());
        let (heads, kv) = (config.num_attention_heads, config.kv_heads());
        let (ab, mb, ffn, eps) =
            (config.attention_bias, config.mlp_bias, config.intermediate_size, config.rms_norm_eps);
        let (attn, mlp) = (at.push("self_attn"), at.push("mlp"));
        Ok(Self {
            self_attn: LlamaAttention {
                q_proj: attn.linear("q_proj", d, heads * hd, ab)?,
                k_proj: attn.linear("k_proj", d, kv * hd, ab)?,
                v_proj: attn.linear("v_proj", d, kv * hd, ab)?,
                o_proj: attn.linear("o_proj", heads * hd, d, ab)?,
                heads,
                kv_heads: kv,
            },
            mlp: LlamaMlp {
                gate_proj: mlp.linear("gate_proj", d, ffn, mb)?,
                up_proj: mlp.linear("up_proj", d, ffn, mb)?,
                down_proj: mlp.linear("down_proj", ffn, d, mb)?,
                activation: config.hidden_act,
            },
            input_layernorm: RmsNorm::new(&at.push("input_layernorm"), d, eps)?,
            post_attention_layernorm: RmsNorm::new(&at.push("post_attention_layernorm"), d, eps)?,
            dropout: DropoutConfig::new(dropout_prob).init(),
        })
    }

    /// `x += attn(rms(x))`, then `x += mlp(rms(x))`, with this layer's cache when decoding.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &(Tensor<B, 4>, Tensor<B, 4>),
        masked: Tensor<B, 4, Bool>,
        cache: Option<&mut Option<KvCache<B>>>,
    ) -> Tensor<B, 3> {
        let attended = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, masked, cache);
        let x = x + self.dropout.forward(attended);
        let hidden = self.mlp.forward(self.post_attention_layernorm.forward(x.clone()));
        x + self.dropout.forward(hidden)
    }
}

impl<B: Backend> LlamaMlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.activation.apply(project(&self.gate_proj, x.clone()));
        project(&self.down_proj, gate * project(&self.up_proj, x))
    }
}

/// Position ids from an attention mask `[b, t]` (1 = token): `cumsum(mask) - 1`, and 1 at
/// padding (HF's `generate`; the value at padding is never attended to).
pub fn positions_from_mask<B: Backend>(mask: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
    let positions = mask.clone().cumsum(1).sub_scalar(1);
    positions.mask_fill(mask.equal_elem(0), 1)
}

impl<B: Backend> Llama<B> {
    /// A model with HF's initialization (weights `N(0, initializer_range)`, norms 1), for
    /// training from scratch. `dropout` (HF has none in LLaMA's residual stream; RA-DIT uses it
    /// for fine-tuning) is applied after attention and MLP under autodiff; 0 turns it off.
    pub fn init(config: &LlamaConfig, dropout_prob: f64, device: &B::Device) -> Result<Self> {
        Self::new(config, &Weights::init(device, config.initializer_range), dropout_prob)
    }

    /// Loads `LlamaForCausalLM` weights; `loader` sits at the model's root (`""` for a LLaMA
    /// checkpoint).
    pub fn load(config: &LlamaConfig, loader: &Loader<'_, B>, dropout_prob: f64) -> Result<Self> {
        Self::new(config, &Weights::Load(loader.clone()), dropout_prob)
    }

    /// The model with its tensors from `weights`, named as HF's `LlamaForCausalLM` names them;
    /// `lm_head.weight` unless the config ties it to the embeddings. Fresh weights are drawn
    /// layer by layer, then the embeddings, then an untied head.
    pub fn new(config: &LlamaConfig, weights: &Weights<'_, B>, dropout_prob: f64) -> Result<Self> {
        config.validate()?;
        let (d, hd, v) = (config.hidden_size, config.head_dim(), config.vocab_size);
        let model = weights.push("model");
        let layers = (0..config.num_hidden_layers)
            .map(|n| LlamaLayer::new(&model.push("layers").push(&n.to_string()), config, dropout_prob))
            .collect::<Result<_>>()?;
        let embed_tokens = model.embedding("embed_tokens", v, d)?;
        let norm = RmsNorm::new(&model.push("norm"), d, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(weights.linear("lm_head", d, v, false)?) };
        let (theta, scaling) = config.rope()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(hd, theta, scaling),
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The float dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.weight.val().dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.weight.val().device()
    }

    /// The token-embedding matrix `[vocab, d]`.
    pub fn embed_tokens(&self) -> &Embedding<B> {
        &self.embed_tokens
    }

    /// Logits `[b, t, vocab]` of final-normed hidden states `[b, t, d]` ([`Llama::forward_hidden`]).
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => project(head, hidden),
            None => {
                let [b, t, d] = hidden.dims();
                let weight = self.embed_tokens.weight.val();
                let vocab = weight.dims()[0];
                hidden.reshape([b * t, d]).matmul(weight.transpose()).reshape([b, t, vocab])
            }
        }
    }

    fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        masked: Tensor<B, 4, Bool>,
        mut caches: Option<&mut [Option<KvCache<B>>]>,
    ) -> Tensor<B, 3> {
        let mut x = self.embed_tokens.forward(input_ids);
        let rope = self.rotary.tables(positions, x.dtype());
        for (n, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[n]);
            x = layer.forward(x, &rope, masked.clone(), cache);
        }
        self.norm.forward(x)
    }

    /// The teacher-forced forward pass: logits `[b, t, vocab]` for `input_ids` `[b, t]` with
    /// `attention_mask` (1 = token, 0 = padding; left or right). Differentiable.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.lm_logits(self.forward_hidden(input_ids, attention_mask))
    }

    /// [`Llama::forward`] without the LM head: the final-normed hidden states `[b, t, d]`, so a
    /// caller that needs the logits of a few positions applies [`Llama::lm_logits`] to those
    /// alone (the head over every prompt position is `t · vocab` floats per row).
    pub fn forward_hidden(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = input_ids.dims();
        let positions = positions_from_mask(attention_mask.clone());
        let masked = mask(0, t, attention_mask.equal_elem(0), &input_ids.device());
        self.hidden(input_ids, positions, masked, None)
    }

    /// Checks that ids `[rows][len]` are inside the vocabulary; `field` names the input.
    pub fn check_ids(&self, field: &'static str, ids: &[Vec<u32>]) -> Result<()> {
        crate::bart::check_ids(field, ids, self.config.vocab_size, usize::MAX)
    }

    /// Starts incremental decoding for rows whose first tokens (fed by the first
    /// [`StepModel::step`]) have `prompt_mask` `[rows, len]` (1 = token, 0 = padding; pad on
    /// the left). Later tokens are all real.
    pub fn begin(&self, prompt_mask: Tensor<B, 2, Int>) -> LlamaState<B> {
        let device = prompt_mask.device();
        LlamaState { layers: vec![None; self.layers.len()], seen_mask: None, pending: Some(prompt_mask), device }
    }
}

/// Tokens one pass of [`Llama::prefill`] holds (rows × the longest of them): enough rows for
/// the linear layers' GEMMs to run at speed, while a pass's attention scores
/// (`rows · heads · len²` floats) stay small.
pub const PREFILL_TOKENS: usize = 4096;

impl<B: Backend> Llama<B> {
    /// Feeds `rows` (ragged) into a fresh decoding state: the caches a search or a
    /// teacher-forced continuation then starts from. Rows are fed in passes of similar length
    /// (sorted; at most [`PREFILL_TOKENS`] padded tokens a pass, or one row when it is longer;
    /// a pass of an eighth of that or more ends before a row it would pad by over a quarter), so
    /// a short passage is not padded to the longest of the batch: padding costs as much as a
    /// token in every linear layer. The passes' caches are then left-padded to the longest row (masked, so no query
    /// sees the padding) and put back in `rows`' order; positions come from the mask, so the
    /// result is the state one left-padded pass would give. A row that repeats an earlier one is
    /// fed once and its caches copied.
    pub fn prefill(&self, rows: &[Vec<u32>], pad: u32) -> Result<LlamaState<B>> {
        self.prefill_in_passes(rows, pad, PREFILL_TOKENS)
    }

    /// [`Llama::prefill`] with at most `tokens_per_pass` padded tokens a pass.
    pub fn prefill_in_passes(&self, rows: &[Vec<u32>], pad: u32, tokens_per_pass: usize) -> Result<LlamaState<B>> {
        self.check_ids("prompts", rows)?;
        if rows.is_empty() {
            return Err(crate::error::input_error("prompts", "no rows to feed"));
        }
        let device = self.device();
        // Rows that repeat (one passage retrieved for several questions) are fed once.
        let mut first_of: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        let mut distinct: Vec<&[u32]> = Vec::new();
        let source: Vec<usize> = rows
            .iter()
            .map(|row| {
                *first_of.entry(row.as_slice()).or_insert_with(|| {
                    distinct.push(row);
                    distinct.len() - 1
                })
            })
            .collect();
        let mut order: Vec<usize> = (0..distinct.len()).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(distinct[r].len()));
        let longest = distinct[order[0]].len();
        let mut passes: Vec<LlamaState<B>> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first: a pass's first row sets its padded length.
            let len = distinct[order[start]].len().max(1);
            let most = (tokens_per_pass / len).clamp(1, order.len() - start);
            // A pass ends before a row it would pad by more than a quarter of the pass length,
            // unless the pass is still small enough that fewer GEMM rows would cost more.
            let take = (1..most)
                .find(|&i| {
                    let row = distinct[order[start + i]].len();
                    4 * row < 3 * len && 8 * i * len >= tokens_per_pass
                })
                .unwrap_or(most);
            let pass: Vec<Vec<u32>> = order[start..start + take].iter().map(|&r| distinct[r].to_vec()).collect();
            let mut padded = Padded::new(&pass, pad, PaddingSide::Left);
            if padded.is_empty() {
                // Rows with nothing to feed: one masked position each (a query sees itself).
                padded = Padded { ids: vec![vec![pad]; take], mask: vec![vec![0]; take] };
            }
            let (ids, mask) = padded.tensors::<B>(&device);
            let mut state = self.begin(mask);
            self.feed(&mut state, ids);
            passes.push(state.left_padded(longest));
            start += take;
        }
        let mut state = LlamaState::cat_rows(passes);
        // Row `i` of the passes is distinct row `order[i]`; row `r` of `rows` is distinct row
        // `source[r]`.
        let mut fed_at = vec![0i64; order.len()];
        for (i, &d) in order.iter().enumerate() {
            fed_at[d] = i as i64;
        }
        let index: Vec<i64> = source.iter().map(|&d| fed_at[d]).collect();
        if index.iter().enumerate().any(|(r, &i)| i != r as i64) {
            state.select_rows(Tensor::from_data(TensorData::new(index, [rows.len()]), &device));
        }
        Ok(state)
    }

    /// Left-pads `prompts` with `pad` and starts decoding them; returns the state and the padded
    /// prompt rows to feed first (as [`crate::generate`]'s `prompt`).
    pub fn begin_prompts(&self, prompts: &[Vec<u32>], pad: u32) -> Result<(LlamaState<B>, Vec<Vec<u32>>)> {
        self.check_ids("prompts", prompts)?;
        if prompts.iter().any(Vec::is_empty) {
            return Err(crate::error::input_error(
                "prompts",
                "a prompt is empty (a decoder-only LM needs at least one token)",
            ));
        }
        let padded = Padded::new(prompts, pad, PaddingSide::Left);
        let (_, mask) = padded.tensors::<B>(&self.device());
        Ok((self.begin(mask), padded.ids))
    }

    /// Greedy or beam search continuing `prompts` (left-padded here); rows of the result hold
    /// the padded prompt followed by the new tokens, as HF's `generate` returns them.
    pub fn generate(&self, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Generated> {
        let (state, padded) = self.begin_prompts(prompts, config.pad_id())?;
        generate(self, state, &padded, config)
    }
}

/// The attention mask for `n` queries after `past` positions: causal, and padded keys
/// `padded` `[b, past + n]` masked, except that a query always sees itself (so a padding row
/// never has an empty softmax).
fn mask<B: Backend>(past: usize, n: usize, padded: Tensor<B, 2, Bool>, device: &B::Device) -> Tensor<B, 4, Bool> {
    let total = past + n;
    let own = Tensor::<B, 2, Bool>::tril_mask([n, total], past as i64 - 1, device)
        .bool_and(Tensor::<B, 2, Bool>::tril_mask([n, total], past as i64, device).bool_not());
    let b = padded.dims()[0];
    let padded_keys = key_padding(padded).expand([b, 1, n, total]);
    let others_padded = padded_keys.bool_and(own.bool_not().reshape([1, 1, n, total]).expand([b, 1, n, total]));
    causal::<B>(past, n, device).expand([b, 1, n, total]).bool_or(others_padded)
}

/// The state of incremental LLaMA decoding: per-layer key/value caches and the attention mask
/// of the cached positions (which also gives each new token's position id).
#[derive(Debug, Clone)]
pub struct LlamaState<B: Backend> {
    layers: Vec<Option<KvCache<B>>>,
    /// The attention mask of the cached positions `[rows, past]` (1 = token; `None` before the
    /// first step). Kept as Int: Flex's `select` on a Bool tensor returns a U8 tensor that
    /// `cat` then refuses.
    seen_mask: Option<Tensor<B, 2, Int>>,
    /// The mask of the next fed tokens (the prompt's, from `begin`), consumed by the next step.
    pending: Option<Tensor<B, 2, Int>>,
    device: B::Device,
}

impl<B: Backend> LlamaState<B> {
    /// The state with `len - self.len()` masked positions before the cached ones (zero keys and
    /// values, mask 0): rows fed apart become rows of one state.
    fn left_padded(self, len: usize) -> Self {
        let past = self.len();
        if len <= past {
            return self;
        }
        let fill = len - past;
        let device = self.device.clone();
        let zeros = |t: Tensor<B, 4>| {
            let [r, h, _, d] = t.dims();
            let pad = Tensor::<B, 4>::zeros([r, h, fill, d], (&device, t.dtype()));
            Tensor::cat(vec![pad, t], 2)
        };
        let layers = self
            .layers
            .into_iter()
            .map(|c| c.map(|c| KvCache { keys: zeros(c.keys), values: zeros(c.values) }))
            .collect();
        let seen_mask = self.seen_mask.map(|m| {
            let rows = m.dims()[0];
            Tensor::cat(vec![Tensor::zeros([rows, fill], (&device, m.dtype())), m], 1)
        });
        Self { layers, seen_mask, pending: self.pending, device }
    }

    /// The rows of `states` (same length, none pending) one after another.
    fn cat_rows(mut states: Vec<Self>) -> Self {
        if states.len() == 1 {
            return states.remove(0);
        }
        let device = states[0].device.clone();
        let depth = states[0].layers.len();
        let mut layers = Vec::with_capacity(depth);
        for n in 0..depth {
            let caches: Option<Vec<KvCache<B>>> = states.iter_mut().map(|s| s.layers[n].take()).collect();
            layers.push(caches.map(|caches| {
                let (keys, values): (Vec<_>, Vec<_>) = caches.into_iter().map(|c| (c.keys, c.values)).unzip();
                KvCache { keys: Tensor::cat(keys, 0), values: Tensor::cat(values, 0) }
            }));
        }
        let masks: Option<Vec<Tensor<B, 2, Int>>> = states.iter_mut().map(|s| s.seen_mask.take()).collect();
        Self { layers, seen_mask: masks.map(|m| Tensor::cat(m, 0)), pending: None, device }
    }

    /// Sets the attention mask `[rows, n]` (1 = token, 0 = padding) of the tokens the next step
    /// feeds; without it they are all real. [`Llama::begin`] sets the prompt's.
    pub fn set_next_mask(&mut self, mask: Tensor<B, 2, Int>) {
        self.pending = Some(mask);
    }
}

impl<B: Backend> DecodeState<B> for LlamaState<B> {
    fn rows(&self) -> usize {
        self.seen_mask.as_ref().or(self.pending.as_ref()).map_or(0, |mask| mask.dims()[0])
    }

    fn len(&self) -> usize {
        self.seen_mask.as_ref().map_or(0, |p| p.dims()[1])
    }

    fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn select_rows(&mut self, rows: Tensor<B, 1, Int>) {
        for layer in &mut self.layers {
            *layer = layer.take().map(|c| c.select_rows(rows.clone()));
        }
        self.seen_mask = self.seen_mask.take().map(|p| p.select(0, rows.clone()));
        self.pending = self.pending.take().map(|p| p.select(0, rows));
    }
}

impl<B: Backend> Llama<B> {
    /// Feeds `tokens` `[rows, n]` after the cached positions (with the mask
    /// [`LlamaState::set_next_mask`] set, else all real), computing no logits: a prompt whose
    /// continuation is fed later.
    pub fn feed(&self, state: &mut LlamaState<B>, tokens: Tensor<B, 2, Int>) {
        self.step_hidden(state, tokens);
    }

    fn step_hidden(&self, state: &mut LlamaState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [rows, n] = tokens.dims();
        let device = tokens.device();
        let past = state.len();
        let fed = state.pending.take().unwrap_or_else(|| Tensor::ones([rows, n], &device));
        let seen_mask = match state.seen_mask.take() {
            Some(past) => Tensor::cat(vec![past, fed], 1),
            None => fed,
        };
        state.seen_mask = Some(seen_mask.clone());
        let positions = positions_from_mask(seen_mask.clone()).narrow(1, past, n);
        let masked = mask(past, n, seen_mask.equal_elem(0), &device);
        self.hidden(tokens, positions, masked, Some(&mut state.layers))
    }
}

impl<B: Backend> StepModel<B> for Llama<B> {
    type State = LlamaState<B>;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Rotary positions have no table: any length is accepted (quality beyond
    /// `max_position_embeddings` is the model's business, as in HF).
    fn max_positions(&self) -> usize {
        usize::MAX
    }

    fn step_all(&self, state: &mut LlamaState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let hidden = self.step_hidden(state, tokens);
        self.lm_logits(hidden)
    }

    fn step(&self, state: &mut LlamaState<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let hidden = self.step_hidden(state, tokens);
        let [rows, n, _] = hidden.dims();
        let last = hidden.narrow(1, n - 1, 1);
        self.lm_logits(last).reshape([rows, self.config.vocab_size])
    }
}

//! The embedded default of `cargo xtask train`: the generated task of [`crate::SyntheticTask`],
//! tokenizers built from its text, and small models trained from scratch (a BERT-style
//! bi-encoder; BART for the RAG recipes, a LLaMA-style LM for RA-DIT).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rag_generator::{Generator, GeneratorTokenizer};
use rag_index::{FlatIndex, Metric, PassageStore};
use rag_retriever::{BertConfig, BiEncoder, EncodeOptions, Encoder, Pooling, TextTokenizer};

use crate::embedded::synthetic::{SyntheticConfig, SyntheticTask};
use crate::files::qa::write_qa_jsonl;
use crate::model::RagModel;
use crate::model::config::{ContextFormat, RagConfig};
use crate::model::indexing::index_store;
use crate::model::knowledge::{Knowledge, KnowledgePaths};
use crate::training::recipe::Recipe;
use crate::{RagError, Result};

/// Sizes of the embedded default's models.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedConfig {
    /// The generated task.
    pub task: SyntheticConfig,
    /// Width of the generator.
    pub d_model: usize,
    /// Width of the retriever (its feed-forward layer is twice as wide). Its random features are
    /// all it can match the fixed document vectors with: at 64 the trained recall@1 stalled at
    /// 0.85 on the dev entities, at 256 it reached 1.0.
    pub retriever_width: usize,
    /// Retriever layers.
    pub retriever_layers: usize,
    /// Generator layers (encoder and decoder each for BART).
    pub generator_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width of the generator.
    pub ffn: usize,
    /// The generator's byte-level BPE vocabulary.
    pub generator_vocab: usize,
    /// Dropout of the generator in training (0: no draw from the backend's RNG, so stages may
    /// train side by side and a resumed run repeats an uninterrupted one exactly).
    pub dropout: f64,
    /// Passages retrieved per question.
    pub n_docs: usize,
    /// τ_R of the prior over passages (the encoders' vectors are unit length, so scores are
    /// cosines in [−1, 1] before it).
    pub retriever_temperature: f64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            task: SyntheticConfig::default(),
            d_model: 64,
            retriever_width: 256,
            retriever_layers: 2,
            generator_layers: 2,
            heads: 4,
            ffn: 128,
            generator_vocab: 1500,
            dropout: 0.0,
            n_docs: 3,
            retriever_temperature: 0.05,
        }
    }
}

/// The generated task written out, with its tokenizers.
pub struct EmbeddedSetup {
    /// The sizes.
    pub config: EmbeddedConfig,
    /// Passages and questions.
    pub task: SyntheticTask,
    /// The passage store file.
    pub store: PathBuf,
    /// Word-level tokenizer of the retriever.
    pub retriever_tokenizer: TextTokenizer,
    /// Byte-level BPE of the generator (`<s>`, `<pad>`, `</s>`, `<unk>` are ids 0–3).
    pub generator_tokenizer: GeneratorTokenizer,
    /// Per retriever token id, its squared inverse document frequency over the corpus scaled
    /// to `[0, 1]` (0 for a token in no passage): the size of its initial embedding.
    pub word_weights: Vec<f32>,
}

impl EmbeddedSetup {
    /// Generates the task and its tokenizers into `dir`: `corpus.store`, the same passages as
    /// `corpus.jsonl` (`{"id", "title", "text"}`, the store's ids, for anyone's own baseline),
    /// the questions as `train.jsonl`, `dev.jsonl` and `test.jsonl` (`{"question", "answers",
    /// "gold"}`), `retriever_tokenizer.json` and `generator_tokenizer.json`.
    pub fn create(config: EmbeddedConfig, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| RagError::Io { path: dir.to_path_buf(), source })?;
        let task = SyntheticTask::generate(&config.task)?;
        let store = dir.join("corpus.store");
        task.write_store(&store)?;
        task.write_corpus_jsonl(&dir.join("corpus.jsonl"))?;
        for (name, split) in [("train.jsonl", &task.train), ("dev.jsonl", &task.dev), ("test.jsonl", &task.test)] {
            write_qa_jsonl(&dir.join(name), split)?;
        }
        let texts = task.texts();
        let retriever_tokenizer = TextTokenizer::word_level(&texts, 1, 48)?;
        retriever_tokenizer.save(&dir.join("retriever_tokenizer.json"))?;
        let word_weights = idf_weights(&retriever_tokenizer, &task)?;
        let generator_tokenizer = GeneratorTokenizer::train_byte_level_bpe_with(
            texts.iter(),
            config.generator_vocab,
            &["<s>", "<pad>", "</s>", "<unk>"],
            true,
        )?;
        generator_tokenizer.save(&dir.join("generator_tokenizer.json"))?;
        Ok(Self { config, task, store, retriever_tokenizer, generator_tokenizer, word_weights })
    }

    /// A model with fresh weights drawn from `seed` for `recipe`: query and document encoders
    /// start as the same network (as DPR's both start from one BERT), a random-feature,
    /// IDF-weighted bag of words (`BagOfWordsInit`), so retrieval before training matches
    /// rare words (the entity) and cannot tell a paraphrased fact from a distractor that repeats
    /// the question's words; `n_docs` passages (1 for a closed-book model).
    pub fn model<B: Backend>(
        &self,
        recipe: Recipe,
        n_docs: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<RagModel<B>> {
        let c = &self.config;
        B::seed(device, seed);
        let (width, layers, heads) = (c.retriever_width, c.retriever_layers, c.heads);
        let mut bert = BertConfig::new(self.retriever_tokenizer.vocab_size(), width, layers, heads, 2 * width, 64);
        // An epsilon as large as the embeddings' variance: LayerNorm then keeps a small vector small
        // (with BERT's 1e-12 it rescales every token to unit size, and the IDF weights are lost).
        bert.layer_norm_eps = 1.0;
        let mut init = BagOfWordsInit {
            path: Default::default(),
            word_weights: self.word_weights.clone(),
            scale: 1.0 / bert.initializer_range,
        };
        let encoder = Encoder::<B>::init(&bert, Pooling::Mean, true, device)?.map(&mut init);
        let retriever = BiEncoder::separate(encoder.clone(), encoder)?;
        let vocab = self.generator_tokenizer.vocab_size();
        // HF's 0.02 suits widths near 768; at this width it leaves the tied output embeddings so
        // small that every logit is near 0 and learning to copy a token takes hundreds of steps.
        // 1/√d is the usual fan-in scale.
        let init_std = 1.0 / (c.d_model as f64).sqrt();
        let (architecture, config) = if recipe.decoder_only() {
            (
                "llama",
                serde_json::json!({
                    "vocab_size": vocab, "hidden_size": c.d_model, "intermediate_size": c.ffn,
                    "num_hidden_layers": 2 * c.generator_layers, "num_attention_heads": c.heads,
                    "num_key_value_heads": c.heads, "max_position_embeddings": 256,
                    "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": true,
                    "initializer_range": init_std
                }),
            )
        } else {
            (
                "bart",
                serde_json::json!({
                    "vocab_size": vocab, "d_model": c.d_model, "encoder_layers": c.generator_layers,
                    "decoder_layers": c.generator_layers, "encoder_attention_heads": c.heads,
                    "decoder_attention_heads": c.heads, "encoder_ffn_dim": c.ffn, "decoder_ffn_dim": c.ffn,
                    "max_position_embeddings": 128, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                    "decoder_start_token_id": 2, "forced_eos_token_id": 2, "init_std": init_std
                }),
            )
        };
        let generator = Generator::init(architecture, config, c.dropout, device)?;
        let context = if recipe.decoder_only() {
            ContextFormat::Background {
                background: "Background: {title} {text}\n\n".into(),
                instruction: "{question}\nAnswer:".into(),
                answer_prefix: " ".into(),
                max_background_tokens: 48,
            }
        } else {
            ContextFormat::Seq2Seq { title_sep: " / ".into(), doc_sep: " // ".into(), max_tokens: 64 }
        };
        let config = RagConfig {
            n_docs,
            loss: recipe.loss(),
            context,
            max_query_tokens: 24,
            retriever_temperature: c.retriever_temperature,
            ..RagConfig::default()
        };
        RagModel::new(retriever, generator, self.retriever_tokenizer.clone(), self.generator_tokenizer.clone(), config)
    }

    /// The corpus encoded by `model`'s document encoder into an exact inner-product index.
    pub fn knowledge<B: Backend>(&self, model: &RagModel<B>) -> Result<Knowledge> {
        let store = PassageStore::open(&self.store)?;
        let mut index = FlatIndex::new(model.retriever().dim(), Metric::InnerProduct)?;
        let options = EncodeOptions { batch_size: 64, with_titles: true, progress: false };
        index_store(model.retriever().document_encoder(), model.passage_tokenizer(), &store, &mut index, &options)?;
        Ok(Knowledge { store, index: Box::new(index) })
    }

    /// Where the knowledge files go when saved beside a checkpoint.
    pub fn knowledge_paths(&self, index: &Path) -> KnowledgePaths {
        KnowledgePaths { store: self.store.clone(), index: index.to_path_buf() }
    }
}

/// Per retriever token id: `(ln((N+1)/(df+1)) / ln(N+1))²` over the `N` passages (title and
/// text, as the document encoder reads them), 0 for a token in no passage (words only questions
/// use, the special tokens): 1 for a word in one passage, near 0 for one in most. Squared, so
/// that the entity (in a handful of passages) outweighs the template words (in hundreds):
/// measured on a 300-entity task, untrained recall@5 0.58 with the plain ratio, 0.71 squared.
fn idf_weights(tokenizer: &TextTokenizer, task: &SyntheticTask) -> Result<Vec<f32>> {
    let mut df = vec![0usize; tokenizer.vocab_size()];
    for p in &task.passages {
        let encoding = tokenizer
            .inner()
            .encode((p.title.as_str(), p.text.as_str()), true)
            .map_err(|e| crate::error::input("passages", format!("retriever tokenizer on passage {}: {e}", p.id)))?;
        let unique: std::collections::BTreeSet<u32> = encoding.get_ids().iter().copied().collect();
        for id in unique {
            df[id as usize] += 1;
        }
    }
    let n = task.passages.len() as f64;
    Ok(df
        .into_iter()
        .map(|d| if d == 0 { 0.0 } else { (((n + 1.0) / (d as f64 + 1.0)).ln() / (n + 1.0).ln()).powi(2) as f32 })
        .collect())
}

/// The retriever's starting point, a random-feature IDF-weighted bag of words: each word's
/// embedding is its random draw (rescaled to unit variance) times its [`idf_weights`] `w`; the
/// encoder's LayerNorm epsilon is 1, so a token with a small embedding stays small instead of
/// being rescaled to unit size; position and segment embeddings are zeroed, so with small
/// transformer weights each output token is its weighted word vector plus a little, and the
/// mean-pooled, normalized vector is an IDF-weighted bag of random features. Retrieval before
/// training is then a noisy lexical match, what an unsupervised retriever gives RAG to start
/// from in miniature: it finds the entity's passages and ranks among them by the question's
/// words, so the distractor that repeats them comes first. Training has to learn the
/// paraphrase. (With BERT's own init the question's many common words dominate: recall@20 was
/// 0.19 on the task's first, 300-entity version.)
struct BagOfWordsInit {
    path: rag_hf::ModulePath,
    word_weights: Vec<f32>,
    scale: f64,
}

impl<B: Backend> ModuleMapper<B> for BagOfWordsInit {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let zero = self.path.contains("position_embeddings") || self.path.contains("token_type_embeddings");
        let words = self.path.contains("word_embeddings");
        // `map` also materializes the lazily initialized parameters: a clone of a lazy one would
        // draw its own values, and the two encoders would not start as one network.
        param.map(|t| {
            if zero {
                return t.zeros_like().require_grad();
            }
            let dims = t.dims();
            if !words || D != 2 || dims[0] != self.word_weights.len() {
                return t;
            }
            let (v, d) = (dims[0], dims[1]);
            let device = t.device();
            let w = Tensor::<B, 1>::from_data(TensorData::new(self.word_weights.clone(), [v]), &device)
                .cast(t.dtype())
                .reshape([v, 1]);
            let own: Tensor<B, 2> = t.reshape([v, d]);
            let mixed = own.mul_scalar(self.scale) * w;
            // A fresh leaf: under autodiff the mix is an op on the drawn weights.
            mixed.reshape(dims).detach().require_grad()
        })
    }
}

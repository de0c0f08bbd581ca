//! The embedded default of `cargo xtask train`: the generated task of [`crate::SyntheticTask`],
//! tokenizers built from its text, and small models trained from scratch (a BERT-style
//! bi-encoder; BART for the RAG recipes, a LLaMA-style LM for RA-DIT).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rag_generator::{Bart, BartConfig, GeneratorTokenizer, Llama, LlamaConfig};
use rag_index::{FlatIndex, Metric, PassageStore};
use rag_retriever::{BertConfig, BiEncoder, EncodeOptions, Encoder, Pooling, TextTokenizer};

use crate::config::{ContextFormat, RagConfig};
use crate::indexing::index_store;
use crate::model::{Generator, Knowledge, KnowledgePaths, RagModel};
use crate::synthetic::{SyntheticConfig, SyntheticTask};
use crate::training::Recipe;
use crate::{RagError, Result};

/// Sizes of the embedded default's models.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedConfig {
    /// The generated task.
    pub task: SyntheticConfig,
    /// Width of every model.
    pub d_model: usize,
    /// Retriever layers.
    pub retriever_layers: usize,
    /// Generator layers (encoder and decoder each for BART).
    pub generator_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
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
}

impl EmbeddedSetup {
    /// Generates the task and its tokenizers into `dir` (`corpus.store`, `retriever_tokenizer.json`,
    /// `generator_tokenizer.json`).
    pub fn create(config: EmbeddedConfig, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| RagError::Io { path: dir.to_path_buf(), source })?;
        let task = SyntheticTask::generate(&config.task)?;
        let store = dir.join("corpus.store");
        task.write_store(&store)?;
        let texts = task.texts();
        let retriever_tokenizer = TextTokenizer::word_level(&texts, 1, 48)?;
        retriever_tokenizer.save(&dir.join("retriever_tokenizer.json"))?;
        let generator_tokenizer = GeneratorTokenizer::train_byte_level_bpe_with(
            texts.iter(),
            config.generator_vocab,
            &["<s>", "<pad>", "</s>", "<unk>"],
            true,
        )?;
        generator_tokenizer.save(&dir.join("generator_tokenizer.json"))?;
        Ok(Self { config, task, store, retriever_tokenizer, generator_tokenizer })
    }

    /// A model with fresh weights drawn from `seed` for `recipe`: query and document encoders
    /// start as the same network (as DPR's both start from one BERT), so retrieval before
    /// training is a fixed random feature match; `n_docs` passages (1 for a closed-book model).
    pub fn model<B: Backend>(&self, recipe: Recipe, n_docs: usize, seed: u64, device: &B::Device) -> Result<RagModel<B>> {
        let c = &self.config;
        B::seed(device, seed);
        let bert = BertConfig::new(self.retriever_tokenizer.vocab_size(), c.d_model, c.retriever_layers, c.heads, c.ffn, 64);
        let encoder = Encoder::<B>::init(&bert, Pooling::Mean, true, device)?.map(&mut BagOfWordsInit::default());
        let retriever = BiEncoder::separate(encoder.clone(), encoder)?;
        let vocab = self.generator_tokenizer.vocab_size();
        // HF's 0.02 suits widths near 768; at this width it leaves the tied output embeddings so
        // small that every logit is near 0 and learning to copy a token takes hundreds of steps.
        // 1/√d is the usual fan-in scale.
        let init_std = 1.0 / (c.d_model as f64).sqrt();
        let generator = if recipe.decoder_only() {
            let config: LlamaConfig = serde_json::from_value(serde_json::json!({
                "vocab_size": vocab, "hidden_size": c.d_model, "intermediate_size": c.ffn,
                "num_hidden_layers": 2 * c.generator_layers, "num_attention_heads": c.heads,
                "num_key_value_heads": c.heads, "max_position_embeddings": 256,
                "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": true,
                "initializer_range": init_std
            }))
            .expect("a valid LLaMA config");
            Generator::Llama(Llama::init(&config, c.dropout, device)?)
        } else {
            let config: BartConfig = serde_json::from_value(serde_json::json!({
                "vocab_size": vocab, "d_model": c.d_model, "encoder_layers": c.generator_layers,
                "decoder_layers": c.generator_layers, "encoder_attention_heads": c.heads,
                "decoder_attention_heads": c.heads, "encoder_ffn_dim": c.ffn, "decoder_ffn_dim": c.ffn,
                "max_position_embeddings": 128, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                "decoder_start_token_id": 2, "forced_eos_token_id": 2, "init_std": init_std
            }))
            .expect("a valid BART config");
            Generator::Bart(Bart::init(&config, c.dropout, device)?)
        };
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

/// The retriever's starting point: position and segment embeddings zeroed, so with small
/// transformer weights each output token is its own normalized word embedding plus a little, and
/// a mean-pooled, normalized vector is a random-feature bag of words. Retrieval before training
/// is then a noisy word-overlap match (what a pretrained DPR gives RAG to start from, in
/// miniature); training has to turn it into entity matching.
#[derive(Default)]
struct BagOfWordsInit {
    path: rag_hf::ModulePath,
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
        // `map` also materializes the lazily initialized parameters: a clone of a lazy one would
        // draw its own values, and the two encoders would not start as one network.
        param.map(|t| if zero { t.zeros_like().require_grad() } else { t })
    }
}

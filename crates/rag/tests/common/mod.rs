//! A tiny world for `RagModel` tests: six passages about invented people, a flat index built
//! with the document encoder, word-level and byte-level BPE tokenizers trained on the text, and
//! small models whose weights come from a seeded generator (so every run sees the same model,
//! whatever other tests do with the backend's global RNG).
#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rag::rag_index::synthetic::SplitMix64;
use rag::rag_index::{FlatIndex, Metric, PassageStore, StoreBuilder, VectorIndex};
use rag::{ContextFormat, Generator, Knowledge, KnowledgePaths, RagConfig, RagLoss, RagModel, index_store};
use rag_generator::{Bart, BartConfig, GeneratorTokenizer, Llama, LlamaConfig};
use rag_retriever::{BertConfig, BiEncoder, EncodeOptions, Encoder, Pooling, TextTokenizer};

pub type Ad = Autodiff<Flex>;

pub const PASSAGES: [(&str, &str); 6] = [
    ("Zorblat", "zorblat lives in quenta and keeps red birds"),
    ("Mirelle", "mirelle lives in morrow and sells blue lamps"),
    ("Tavik", "tavik lives in pellam and paints old boats"),
    ("Quenta", "quenta is a town of red roofs near the sea"),
    ("Orsolo", "orsolo lives in vantry and grows tall corn"),
    ("", "the river runs past morrow and pellam"),
];

pub const QUESTIONS: [&str; 2] = ["where does zorblat live", "where does tavik live"];
pub const ANSWERS: [&str; 2] = ["quenta", "pellam"];

/// Replaces every float parameter with seeded `N(0, std)` values (LayerNorm/RMSNorm scales
/// are then random too, which only makes the model less regular).
pub struct Reinit {
    pub rng: SplitMix64,
    pub std: f64,
}

impl<B: Backend> ModuleMapper<B> for Reinit {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (rng, std) = (&mut self.rng, self.std);
        param.map(|t| {
            let shape = t.shape();
            let values: Vec<f64> = (0..shape.num_elements()).map(|_| rng.normal() * std).collect();
            let trainable = t.is_require_grad();
            let fresh = Tensor::from_data(TensorData::new(values, shape), (&t.device(), t.dtype()));
            if trainable { fresh.require_grad() } else { fresh }
        })
    }
}

pub fn reinit<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    module.map(&mut Reinit { rng: SplitMix64::new(seed), std: 0.3 })
}

pub fn retriever_tokenizer() -> TextTokenizer {
    let texts = PASSAGES.iter().flat_map(|(t, x)| [*t, *x]).chain(QUESTIONS);
    TextTokenizer::word_level(texts, 1, 48).unwrap()
}

pub fn generator_tokenizer() -> GeneratorTokenizer {
    let texts: Vec<String> = PASSAGES
        .iter()
        .map(|(t, x)| format!("{t} {x}"))
        .chain(QUESTIONS.iter().chain(&ANSWERS).map(|s| s.to_string()))
        .collect();
    GeneratorTokenizer::train_byte_level_bpe(texts.into_iter(), 300, &["<s>", "<pad>", "</s>", "<unk>"]).unwrap()
}

pub fn bart_config(vocab: usize) -> BartConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": vocab, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 24, "decoder_ffn_dim": 24, "max_position_embeddings": 96,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
        "forced_eos_token_id": 2
    }))
    .unwrap()
}

pub fn llama_config(vocab: usize) -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "tie_word_embeddings": true
    }))
    .unwrap()
}

/// Which generator a world has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bart,
    Llama,
}

/// The model, its knowledge and where the knowledge's files are.
pub struct World<B: Backend> {
    pub model: RagModel<B>,
    pub knowledge: Knowledge,
    pub paths: KnowledgePaths,
    pub dir: tempfile::TempDir,
}

pub fn config(arch: Arch, loss: RagLoss) -> RagConfig {
    RagConfig {
        n_docs: 3,
        loss,
        context: match arch {
            Arch::Bart => ContextFormat::Seq2Seq { title_sep: " / ".into(), doc_sep: " // ".into(), max_tokens: 48 },
            Arch::Llama => ContextFormat::ra_dit(),
        },
        ..RagConfig::default()
    }
}

/// A world on backend `B` with weights in `dtype`: separate (DPR-style) query and document
/// encoders, the index built by the document encoder.
pub fn world<B: Backend>(arch: Arch, rag: RagConfig, dtype: DType) -> World<B> {
    world_with_seed(arch, rag, dtype, 3)
}

/// [`world`] with the generator's weights drawn from `seed`.
pub fn world_with_seed<B: Backend>(arch: Arch, rag: RagConfig, dtype: DType, seed: u64) -> World<B> {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut builder = StoreBuilder::create(&dir.path().join("corpus.store")).unwrap();
    for (i, (title, text)) in PASSAGES.iter().enumerate() {
        builder.push(Some(10 + i as u64), title, text).unwrap();
    }
    let store = builder.finish().unwrap();
    let rt = retriever_tokenizer();
    let bert = BertConfig::new(rt.vocab_size(), 16, 1, 2, 24, 48);
    let cast = |m: Encoder<B>| -> Encoder<B> { rag_hf::cast_module(m, dtype) };
    let query = cast(reinit(Encoder::<B>::init(&bert, Pooling::Mean, false, &device).unwrap(), 1));
    let document = cast(reinit(Encoder::<B>::init(&bert, Pooling::Mean, false, &device).unwrap(), 2));
    let gt = generator_tokenizer();
    let generator = match arch {
        Arch::Bart => {
            Generator::Bart(reinit(Bart::<B>::init(&bart_config(gt.vocab_size()), 0.0, &device).unwrap(), seed))
        }
        Arch::Llama => {
            Generator::Llama(reinit(Llama::<B>::init(&llama_config(gt.vocab_size()), 0.0, &device).unwrap(), seed))
        }
    };
    let generator = match generator {
        Generator::Bart(m) => Generator::Bart(rag_hf::cast_module(m, dtype)),
        Generator::Llama(m) => Generator::Llama(rag_hf::cast_module(m, dtype)),
    };
    let retriever = BiEncoder::separate(query, document).unwrap();
    let model = RagModel::new(retriever, generator, rt, gt, rag).unwrap();
    let mut index = FlatIndex::new(16, Metric::InnerProduct).unwrap();
    let options = EncodeOptions { batch_size: 4, with_titles: true, progress: false };
    index_store(model.retriever().document_encoder(), model.passage_tokenizer(), &store, &mut index, &options).unwrap();
    let paths = KnowledgePaths { store: dir.path().join("corpus.store"), index: dir.path().join("corpus.index") };
    VectorIndex::save(&index, &paths.index).unwrap();
    let knowledge = Knowledge { store: PassageStore::open(&paths.store).unwrap(), index: Box::new(index) };
    World { model, knowledge, paths, dir }
}

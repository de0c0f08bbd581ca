//! Whole-model checkpoints: one directory holding everything a [`RagModel`] needs.
//!
//! ```text
//! rag.json                      format, version, RagConfig, pooling, generator kind, index path
//! query_encoder/config.json     BertConfig (HF field names)
//! document_encoder/config.json  only when the document encoder is separate
//! retriever_tokenizer.json
//! generator/config.json         BartConfig or LlamaConfig (HF field names)
//! generator_tokenizer.json
//! model.safetensors             every parameter, named by module path
//! ```
//!
//! The directory is written beside its final place and renamed into it, so a crash leaves the
//! previous checkpoint (or none), never a half-written one.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use rag_generator::{Generator, GeneratorTokenizer};
use rag_retriever::{BertConfig, BiEncoder, Encoder, Pooling, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::model::RagModel;
use crate::model::config::RagConfig;
use crate::model::knowledge::KnowledgePaths;
use crate::{RagError, Result};

/// `rag.json`'s `format`.
pub const CHECKPOINT_FORMAT: &str = "rag-rs/rag-model";
/// The checkpoint version this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

const MANIFEST: &str = "rag.json";
const WEIGHTS: &str = "model.safetensors";
const QUERY_CONFIG: &str = "query_encoder/config.json";
const DOCUMENT_CONFIG: &str = "document_encoder/config.json";
const GENERATOR_CONFIG: &str = "generator/config.json";
const RETRIEVER_TOKENIZER: &str = "retriever_tokenizer.json";
const GENERATOR_TOKENIZER: &str = "generator_tokenizer.json";

/// `rag.json`, a whole-model checkpoint's manifest ([`read_manifest`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    /// [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The model's config.
    pub config: RagConfig,
    /// The encoders' pooling.
    pub pooling: Pooling,
    /// Whether the encoders L2-normalise.
    pub normalize: bool,
    /// Whether queries and documents share one encoder.
    pub shared_encoder: bool,
    /// The generator's architecture (`bart` or `llama`).
    pub generator: String,
    /// The passage store and index the model retrieves from, if recorded (relative to the
    /// checkpoint directory when they were inside it).
    pub knowledge: Option<KnowledgePaths>,
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

/// A loaded checkpoint: the model, and the knowledge it was saved with (if recorded).
#[derive(Debug)]
pub struct LoadedRag<B: Backend> {
    /// The model.
    pub model: RagModel<B>,
    /// The store and index paths recorded at save time (relative ones resolved against the
    /// checkpoint directory).
    pub knowledge: Option<KnowledgePaths>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RagError + '_ {
    move |source| RagError::Io { path: path.to_path_buf(), source }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("plain data serializes");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, text + "\n").map_err(io(path))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.{suffix}"))
}

impl<B: Backend> RagModel<B> {
    /// Saves the whole model to `dir` (created, or replaced whole), recording `knowledge`'s
    /// paths so [`RagModel::load`] can reopen the index. Paths inside `dir` are stored relative.
    pub fn save(&self, dir: &Path, knowledge: Option<&KnowledgePaths>) -> Result<()> {
        let staging = sibling(dir, "saving");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let retriever = self.retriever();
        let shared_encoder = std::ptr::eq(retriever.query_encoder(), retriever.document_encoder());
        write_json(&staging.join(QUERY_CONFIG), retriever.query_encoder().config())?;
        if !shared_encoder {
            write_json(&staging.join(DOCUMENT_CONFIG), retriever.document_encoder().config())?;
        }
        write_json(&staging.join(GENERATOR_CONFIG), &self.generator().config_json())?;
        self.passage_tokenizer().save(&staging.join(RETRIEVER_TOKENIZER))?;
        self.generator_tokenizer().save(&staging.join(GENERATOR_TOKENIZER))?;
        rag_hf::save_module(self, &staging.join(WEIGHTS))?;
        let knowledge = knowledge.map(|k| {
            let relative = |p: &Path| {
                let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
                let root = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
                absolute.strip_prefix(&root).map_or(absolute.clone(), Path::to_path_buf)
            };
            KnowledgePaths { store: relative(&k.store), index: relative(&k.index) }
        });
        let manifest = ModelManifest {
            format: CHECKPOINT_FORMAT.into(),
            version: CHECKPOINT_VERSION,
            config: self.config().clone(),
            pooling: retriever.query_encoder().pooling(),
            normalize: retriever.query_encoder().normalizes(),
            shared_encoder,
            generator: self.generator().architecture().into(),
            knowledge,
        };
        write_json(&staging.join(MANIFEST), &manifest)?;
        // Swap the finished directory into place.
        let old = sibling(dir, "old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(io(dir))?;
        }
        std::fs::rename(&staging, dir).map_err(io(dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            rag_hf::sync_dir(parent).map_err(io(parent))?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    }

    /// Loads a directory written by [`RagModel::save`] on `device`, with weights in `dtype`.
    /// A directory of another format or version, a missing file, or weights that do not fit the
    /// configs is an error naming the file (and the tensor).
    pub fn load(dir: &Path, device: &B::Device, dtype: DType) -> Result<LoadedRag<B>> {
        let manifest = read_manifest(dir)?;
        let encoder = |file: &str| -> Result<Encoder<B>> {
            let config: BertConfig = rag_hf::read_json(&dir.join(file))?;
            Ok(Encoder::init(&config, manifest.pooling, manifest.normalize, device)?)
        };
        let query = encoder(QUERY_CONFIG)?;
        let retriever = if manifest.shared_encoder {
            BiEncoder::shared(query)
        } else {
            BiEncoder::separate(query, encoder(DOCUMENT_CONFIG)?)?
        };
        let generator_config = dir.join(GENERATOR_CONFIG);
        let generator = Generator::from_config_file(&manifest.generator, &generator_config, device)?;
        let passage_tokenizer = TextTokenizer::from_file(dir.join(RETRIEVER_TOKENIZER), None)?;
        let generator_tokenizer = GeneratorTokenizer::from_file(dir.join(GENERATOR_TOKENIZER))?;
        let model = RagModel::new(retriever, generator, passage_tokenizer, generator_tokenizer, manifest.config)?;
        let model = rag_hf::load_module(model, &dir.join(WEIGHTS), Some(dtype))?.refreeze();
        let knowledge =
            manifest.knowledge.map(|k| KnowledgePaths { store: dir.join(k.store), index: dir.join(k.index) });
        Ok(LoadedRag { model, knowledge })
    }
}

/// Reads and checks the manifest (`rag.json`) of a directory written by [`RagModel::save`]: its
/// format, version, config and generator architecture. A missing, malformed or foreign manifest
/// is an error naming the file and field.
pub fn read_manifest(dir: &Path) -> Result<ModelManifest> {
    let manifest_path = dir.join(MANIFEST);
    if !manifest_path.is_file() {
        let hint = if sibling(dir, "old").is_dir() {
            format!(" (a save was interrupted: the previous checkpoint is in {})", sibling(dir, "old").display())
        } else {
            String::new()
        };
        return Err(RagError::Io {
            path: manifest_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("no checkpoint manifest{hint}")),
        });
    }
    let header: Header = rag_hf::read_json(&manifest_path)?;
    let field =
        |field: &str, message: String| RagError::Config { path: manifest_path.clone(), field: field.into(), message };
    if header.format.as_deref() != Some(CHECKPOINT_FORMAT) {
        return Err(field("format", format!("expected \"{CHECKPOINT_FORMAT}\": not a rag-rs model checkpoint")));
    }
    if header.version != Some(CHECKPOINT_VERSION) {
        return Err(field("version", format!("{:?}: this build reads version {CHECKPOINT_VERSION}", header.version)));
    }
    let manifest: ModelManifest = rag_hf::read_json(&manifest_path)?;
    manifest.config.validate_at(&manifest_path)?;
    if !rag_generator::ARCHITECTURES.contains(&manifest.generator.as_str()) {
        return Err(field(
            "generator",
            format!("`{}`: expected one of {}", manifest.generator, rag_generator::ARCHITECTURES.join(", ")),
        ));
    }
    Ok(manifest)
}

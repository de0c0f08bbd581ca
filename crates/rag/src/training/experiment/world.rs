//! What an experiment trains on: the embedded task, or the user's files and pretrained models.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rag_generator::{GenerationConfig, GeneratorTokenizer};
use rag_index::{IngestOptions, Metric, PassageStore, StoreBuilder, VectorIndex};
use rag_retriever::{BiEncoder, EncodeOptions, Encoder, EncoderOptions, TextTokenizer};

use super::{ExperimentConfig, ExperimentData};
use crate::error::{WithContext, input};
use crate::{
    ContextFormat, EmbeddedConfig, EmbeddedSetup, Generator, GeneratorKind, Knowledge, QaExample, RagConfig, RagModel,
    Recipe, Result, SyntheticConfig, check_gold_ids, index_store, read_qa_jsonl,
};

/// Builds a fresh model for a recipe with `n_docs` passages.
type Builder<B> = Box<dyn Fn(Recipe, usize) -> Result<RagModel<B>> + Send + Sync>;
/// Encodes the corpus with a model's document encoder.
type KnowledgeFor<B> = Box<dyn Fn(&RagModel<B>) -> Result<Knowledge> + Send + Sync>;

/// What a run trains on: data, a way to build fresh models, and the knowledge for a model (each
/// stage encodes the corpus with its own model; nothing is encoded before that).
pub(super) struct World<AB: AutodiffBackend> {
    pub train: Vec<QaExample>,
    /// Evaluated during training (choosing settings).
    pub dev: Vec<QaExample>,
    /// Reported (the embedded task's test entities; your `--dev` file otherwise).
    pub test: Vec<QaExample>,
    pub store_path: PathBuf,
    /// Passages in the store.
    pub passages: usize,
    /// Search options from the generator's config.
    pub generation: GenerationConfig,
    pub build: Builder<AB>,
    pub knowledge_for: KnowledgeFor<AB::InnerBackend>,
    /// What identifies the data and models (the embedded task's size; the user's files by
    /// content hash, the model directories by path): part of every stage's run identity.
    pub identity: BTreeMap<String, String>,
    /// Whether training draws from the backend's random numbers (dropout). The backend's RNG
    /// is one per process, reseeded by each trainer every step: stages that draw must run one
    /// after another to be reproducible and to resume exactly.
    pub draws: bool,
}

impl<AB: AutodiffBackend> World<AB> {
    /// The world of `config.data`; models are initialized on backend `I` (embedded task).
    pub fn new<I: Backend>(config: &ExperimentConfig, device: &AB::Device) -> Result<Self> {
        match &config.data {
            ExperimentData::Embedded { entities } => embedded::<AB, I>(config, *entities, device),
            ExperimentData::Files(_) => files(config, device),
        }
    }
}

fn embedded<AB: AutodiffBackend, I: Backend>(
    config: &ExperimentConfig,
    entities: usize,
    device: &AB::Device,
) -> Result<World<AB>> {
    let task = EmbeddedConfig { task: SyntheticConfig::with_entities(entities), ..EmbeddedConfig::default() };
    let setup = Arc::new(EmbeddedSetup::create(task, &config.run_dir.join("data"))?);
    let seed = config.seed;
    let device = device.clone();
    let (s2, s3) = (setup.clone(), setup.clone());
    let (mut dev, mut test) = (setup.task.dev.clone(), setup.task.test.clone());
    apply_limits(config, &mut dev, &mut test);
    let probe: RagModel<I> = setup.model(config.recipe, config.n_docs.unwrap_or(3), seed, &Default::default())?;
    Ok(World {
        train: setup.task.train.clone(),
        dev,
        test,
        store_path: setup.store.clone(),
        passages: setup.task.passages.len(),
        generation: probe.generator().generation_config(),
        // Initialized on `I` and copied: every backend starts from the same weights.
        build: Box::new(move |r, k| {
            let init: RagModel<I> = s2.model(r, k, seed, &Default::default())?;
            Ok(rag_hf::copy_module(&init, s2.model::<AB>(r, k, seed, &device)?)?)
        }),
        knowledge_for: Box::new(move |m| s3.knowledge(m)),
        identity: BTreeMap::from([
            ("data".to_string(), "embedded".to_string()),
            ("entities".to_string(), entities.to_string()),
        ]),
        draws: setup.config.dropout > 0.0,
    })
}

fn files<AB: AutodiffBackend>(config: &ExperimentConfig, device: &AB::Device) -> Result<World<AB>> {
    let ExperimentData::Files(files) = &config.data else { unreachable!("called for files") };
    let test_file = files.test.as_ref().map(|t| ("test", t));
    for (field, path) in
        [("corpus", &files.corpus), ("train", &files.train), ("dev", &files.dev)].into_iter().chain(test_file)
    {
        if !path.is_file() {
            return Err(input(field, format!("{}: no such file", path.display())));
        }
    }
    // The data first: a bad line fails in a second, before any model is read.
    let train = read_qa_jsonl(&files.train)?;
    let mut dev = read_qa_jsonl(&files.dev)?;
    let mut test = match &files.test {
        Some(path) => read_qa_jsonl(path)?,
        None => dev.clone(),
    };
    let gguf = rag_generator::generator_gguf(&files.generator);
    let mut hf_dirs =
        vec![("question_encoder", &files.question_encoder), ("document_encoder", &files.document_encoder)];
    if gguf.is_none() {
        hf_dirs.push(("generator", &files.generator));
    }
    for (field, path) in hf_dirs {
        if !path.join("config.json").is_file() || !path.join("tokenizer.json").is_file() {
            return Err(input(
                field,
                format!(
                    "{}: not a HF model directory with config.json and tokenizer.json{}",
                    path.display(),
                    if field == "generator" { ", nor a .gguf file or a directory holding one" } else { "" }
                ),
            ));
        }
    }
    let read = |path: PathBuf| std::fs::read(&path).map_err(|source| crate::RagError::Io { path, source });
    if read(files.question_encoder.join("tokenizer.json"))? != read(files.document_encoder.join("tokenizer.json"))? {
        return Err(input(
            "document_encoder",
            format!(
                "{}/tokenizer.json differs from the question encoder's ({}/tokenizer.json): a model reads queries and \
                 passages with one tokenizer",
                files.document_encoder.display(),
                files.question_encoder.display()
            ),
        ));
    }
    apply_limits(config, &mut dev, &mut test);
    let store_path = config.run_dir.join("corpus.store");
    let mut builder = StoreBuilder::create(&store_path)?;
    builder
        .ingest(&files.corpus, &IngestOptions::default())
        .within(|| format!("ingesting {}", files.corpus.display()))?;
    let store = builder.finish()?;
    let mut identity = BTreeMap::from([("data".to_string(), "files".to_string())]);
    for (name, path) in [("corpus", &files.corpus), ("train", &files.train)] {
        identity.insert(name.to_string(), sha256_file(path)?);
    }
    if let Some(prompt) = &config.prompt {
        identity.insert("prompt".to_string(), serde_json::to_string(prompt).expect("a format serializes"));
    }
    for (name, path) in [
        ("retriever", &files.question_encoder),
        ("document_encoder", &files.document_encoder),
        ("generator", &files.generator),
    ] {
        identity.insert(name.to_string(), path.display().to_string());
    }
    check_gold_ids(&files.train, &train, &store)?;
    check_gold_ids(&files.dev, &dev, &store)?;
    if let Some(path) = &files.test {
        check_gold_ids(path, &test, &store)?;
    }
    let passages = store.len();
    let parts = Arc::new(Parts {
        tokenizer: TextTokenizer::from_file(files.question_encoder.join("tokenizer.json"), Some(256))?,
        gen_tokenizer: match &gguf {
            Some(path) => rag_generator::tokenizer_from_gguf(&rag_hf::GgufFile::open(path)?)?,
            None => GeneratorTokenizer::from_file(files.generator.join("tokenizer.json"))?,
        },
        question_encoder: files.question_encoder.clone(),
        document_encoder: files.document_encoder.clone(),
        generator: files.generator.clone(),
        prompt: config.prompt.clone(),
    });
    // A probe on the training backend's inner side: its generation config, and the pretrained
    // document encoder a given index is checked against.
    let probe: RagModel<AB::InnerBackend> = parts.build(device, config.recipe, config.n_docs.unwrap_or(5))?;
    let encode = EncodeOptions { batch_size: 32, with_titles: true, progress: config.progress };
    let indexes = Arc::new(SharedIndexes::new(config.run_dir.join("indexes"), config.index_storage));
    if let Some(path) = &files.index {
        let index = rag_index::open_index(path).within(|| "reading --index".to_string())?;
        let encoder = probe.retriever().document_encoder();
        crate::check_index(encoder, probe.passage_tokenizer(), &store, index.as_ref(), path, &encode, 8)?;
        indexes.insert(fingerprint(encoder), path.clone());
    }
    let store_for = store_path.clone();
    let knowledge_for = move |m: &RagModel<AB::InnerBackend>| -> Result<Knowledge> {
        let store = PassageStore::open(&store_for)?;
        let index = indexes.get_or_encode(m, &store, &encode)?;
        Ok(Knowledge { store, index })
    };
    let device = device.clone();
    Ok(World {
        train,
        dev,
        test,
        store_path,
        passages,
        generation: probe.generator().generation_config(),
        build: Box::new(move |r, k| parts.build(&device, r, k)),
        knowledge_for: Box::new(knowledge_for),
        identity,
        draws: FILES_DROPOUT > 0.0,
    })
}

/// `--eval-limit` on the dev and test questions, then `--dev-limit` on the dev ones.
fn apply_limits(config: &ExperimentConfig, dev: &mut Vec<QaExample>, test: &mut Vec<QaExample>) {
    if let Some(limit) = config.eval_limit {
        dev.truncate(limit);
        test.truncate(limit);
    }
    if let Some(limit) = config.dev_limit {
        dev.truncate(limit);
    }
}

/// The corpus encoded once per document encoder: every stage whose document encoder has the
/// same weights (all of them unless it trains) opens one index file instead of re-encoding.
struct SharedIndexes {
    dir: PathBuf,
    storage: Option<rag_index::Storage>,
    /// Document-encoder fingerprint → its index file.
    files: std::sync::Mutex<BTreeMap<String, PathBuf>>,
}

impl SharedIndexes {
    fn new(dir: PathBuf, storage: Option<rag_index::Storage>) -> Self {
        Self { dir, storage, files: Default::default() }
    }

    fn insert(&self, fingerprint: String, path: PathBuf) {
        self.files.lock().expect("no panic while holding the lock").insert(fingerprint, path);
    }

    /// The index of `store` by `model`'s document encoder: the file encoded before for the same
    /// weights, or a new encoding (written under the run's `indexes/`).
    fn get_or_encode<B: Backend>(
        &self,
        model: &RagModel<B>,
        store: &PassageStore,
        encode: &EncodeOptions,
    ) -> Result<Box<dyn VectorIndex>> {
        let encoder = model.retriever().document_encoder();
        let key = fingerprint(encoder);
        // Held while encoding: two stages wanting the same index encode it once.
        let mut files = self.files.lock().expect("no panic while holding the lock");
        if let Some(path) = files.get(&key) {
            return Ok(rag_index::open_index(path)?);
        }
        let mut index = rag_index::empty_index(encoder.dim(), Metric::InnerProduct, self.storage)?;
        if encode.progress {
            eprintln!("encoding {} passages with the document encoder", store.len());
        }
        let report = index_store(encoder, model.passage_tokenizer(), store, index.as_mut(), encode)?;
        if encode.progress {
            eprintln!(
                "encoded {} passages in {:.1} s ({:.1} passages/s)",
                report.passages,
                report.seconds,
                report.rate()
            );
        }
        let path = self.dir.join(format!("{}.index", &key[..16]));
        std::fs::create_dir_all(&self.dir).map_err(|source| crate::RagError::Io { path: self.dir.clone(), source })?;
        index.save(&path)?;
        files.insert(key, path);
        Ok(index)
    }
}

/// A hash of an encoder's weights: equal weights, equal vectors.
fn fingerprint<B: Backend>(encoder: &Encoder<B>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for (name, data) in rag_hf::module_tensors(encoder) {
        hasher.update(name.as_bytes());
        hasher.update(data.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The dropout of a pretrained generator in training (HF's BART default).
const FILES_DROPOUT: f64 = 0.1;

/// The user's pretrained models and tokenizers.
struct Parts {
    tokenizer: TextTokenizer,
    gen_tokenizer: GeneratorTokenizer,
    question_encoder: PathBuf,
    document_encoder: PathBuf,
    generator: PathBuf,
    prompt: Option<ContextFormat>,
}

impl Parts {
    /// A model from the files: the two encoders (separate copies when they are one directory,
    /// so the query encoder trains alone), the generator with dropout [`FILES_DROPOUT`].
    fn build<B: Backend>(&self, device: &B::Device, recipe: Recipe, n_docs: usize) -> Result<RagModel<B>> {
        let load = |dir: &Path| Encoder::<B>::from_pretrained(dir, &EncoderOptions::default(), device, DType::F32);
        let query = load(&self.question_encoder)?;
        let document =
            if self.document_encoder == self.question_encoder { query.clone() } else { load(&self.document_encoder)? };
        let bi = BiEncoder::separate(query, document)?;
        let generator = Generator::<B>::from_pretrained(&self.generator, FILES_DROPOUT, device, DType::F32)?;
        let decoder_only = generator.kind() == GeneratorKind::DecoderOnly;
        // The RAG recipes marginalize over per-passage rows of either kind of generator
        // (REPLUG-style prompts for a decoder-only LM); RA-DIT's are a decoder-only LM's.
        if recipe.decoder_only() && !decoder_only {
            return Err(input(
                "generator",
                format!(
                    "recipe {recipe} needs a decoder-only (LLaMA-family) generator, and `{}` is seq2seq",
                    generator.architecture()
                ),
            ));
        }
        let context = match (&self.prompt, decoder_only) {
            (_, false) => ContextFormat::hf(),
            (Some(prompt), true) => prompt.clone(),
            (None, true) => ContextFormat::ra_dit(),
        };
        let config = RagConfig { n_docs, loss: recipe.loss(), context, ..RagConfig::default() };
        RagModel::new(bi, generator, self.tokenizer.clone(), self.gen_tokenizer.clone(), config)
    }
}

/// `sha256:<hex>` of a file's bytes, read in blocks.
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let io = |source| crate::RagError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// `sha256:<hex>` of examples (question, answers, gold), in order.
pub(super) fn sha256_examples(examples: &[QaExample]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for e in examples {
        let line = serde_json::json!([e.question, e.answers, e.gold]).to_string();
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    format!("sha256:{}", hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

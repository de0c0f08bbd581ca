//! Every parser of outside bytes under mutated real files: corpora (JSONL, DPR TSV), question
//! files, `config.json`s, tokenizer files, safetensors headers, index and store files, and the
//! checkpoints' metadata (`rag.json`, `trainer.json`). Each input must parse or be refused with an
//! error naming the file; none may panic, hang or allocate more than `ALLOCATION_CAP` at once.
//! `RAG_FUZZ_CASES` sets the inputs per parser (see the crate docs).

use std::path::{Path, PathBuf};

use rag_fuzz::{CountingAllocator, cases, fuzz};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn fixtures(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("tests/fixtures")
}

/// A scratch directory in memory where there is one (many small files are written).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() }
}

/// Writes each input to `path` and runs `parse` on it; a refusal must name the file.
fn fuzz_file(
    parser: &str,
    path: &Path,
    seeds: &[Vec<u8>],
    focus: Option<usize>,
    seed: u64,
    mut parse: impl FnMut(&Path) -> Result<(), String>,
) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    fuzz(parser, seeds, focus, cases(), seed, |bytes| {
        std::fs::write(path, bytes).unwrap();
        parse(path).map_err(|message| {
            assert!(message.contains(&name), "{parser}: the error does not name {name}: {message}");
            message
        })
    });
}

const CORPUS_JSONL: &[&str] = &[
    "{\"id\": 0, \"title\": \"Aaron\", \"text\": \"Aaron is a prophet, high priest, and the brother of Moses.\"}\n\
     {\"id\": \"1\", \"title\": \"Ahärôn\", \"text\": \"In the Hebrew Bible ( \\\"Aharon\\\" ) \\u00e9 …\"}\n\n\
     {\"title\": \"\", \"text\": \"untitled\", \"extra\": [1, 2]}\n",
    "{\"id\": 18446744073709551615, \"text\": \"the largest id\"}\r\n{\"id\": null, \"title\": \"t\", \"text\": \" \"}\n",
];

const CORPUS_TSV: &[&str] = &[
    "id\ttext\ttitle\n1\t\"Aaron Aaron ( or ; \"\"Ahärôn\"\") is a prophet, high priest.\"\tAaron\n\
     2\t\"a cell\twith a tab\"\t\"Tab, the title\"\n3\t\"two\nlines\"\tLines\n",
    "title\tid\ttext\r\nT\t7\tseven\r\nU\t8\t\r\n",
];

fn ingest(path: &Path, store: &Path) -> Result<(), String> {
    use rag_index::{IngestOptions, OnMalformed, PassageStore, StoreBuilder};
    let mut builder = StoreBuilder::create(store).map_err(|e| e.to_string())?;
    let skip = IngestOptions { on_malformed: OnMalformed::Skip, ..IngestOptions::default() };
    builder
        .ingest(path, &IngestOptions::default())
        .or_else(|_| builder.ingest(path, &skip))
        .map_err(|e| e.to_string())?;
    builder.finish().map_err(|e| e.to_string())?;
    let store = PassageStore::open(store).map_err(|e| e.to_string())?;
    for passage in store.iter() {
        passage.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn corpus_jsonl() {
    let dir = scratch();
    let seeds: Vec<Vec<u8>> = CORPUS_JSONL.iter().map(|s| s.as_bytes().to_vec()).collect();
    let store = dir.path().join("corpus.store");
    fuzz_file("corpus-jsonl", &dir.path().join("corpus.jsonl"), &seeds, None, 1, |p| ingest(p, &store));
}

#[test]
fn corpus_tsv() {
    let dir = scratch();
    let seeds: Vec<Vec<u8>> = CORPUS_TSV.iter().map(|s| s.as_bytes().to_vec()).collect();
    let store = dir.path().join("corpus.store");
    fuzz_file("corpus-tsv", &dir.path().join("psgs_w100.tsv"), &seeds, None, 2, |p| ingest(p, &store));
}

#[test]
fn question_files() {
    let dir = scratch();
    let seeds = vec![
        b"{\"question\": \"who wrote hamlet ?\", \"answers\": [\"Shakespeare\", \"William Shakespeare\"], \"gold\": 3}\n\n\
          {\"question\": \"q\", \"answers\": [\"a\"], \"passage_id\": 18446744073709551615, \"id\": \"x\"}\n"
            .to_vec(),
        b"{\"question\": \"\\u00e9t\\u00e9 ?\", \"answers\": [\"\\\"yes\\\"\"]}\r\n".to_vec(),
    ];
    fuzz_file("questions", &dir.path().join("dev.jsonl"), &seeds, None, 3, |p| {
        rag::read_qa_jsonl(p).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn model_configs() {
    use rag_generator::{BartConfig, ConfigFile, GenerationConfig, LlamaConfig};
    let dir = scratch();
    let read = |krate: &str, f: &str| std::fs::read(fixtures(krate).join("hf").join(f)).unwrap();
    let bert = vec![read("rag-retriever", "bert/config.json"), read("rag-retriever", "dpr/config.json")];
    fuzz_file("config-bert", &dir.path().join("config.json"), &bert, None, 4, |p| {
        rag_retriever::BertConfig::from_file(p).map(|_| ()).map_err(|e| e.to_string())
    });
    let bart = vec![read("rag-generator", "bart/config.json")];
    fuzz_file("config-bart", &dir.path().join("config.json"), &bart, None, 5, |p| {
        BartConfig::from_file(p).map(|_| ()).map_err(|e| e.to_string())
    });
    let llama = vec![read("rag-generator", "llama/config.json")];
    fuzz_file("config-llama", &dir.path().join("config.json"), &llama, None, 6, |p| {
        LlamaConfig::from_file(p).map(|_| ()).map_err(|e| e.to_string())
    });
    let generation = vec![read("rag-generator", "bart/generation_config.json")];
    fuzz_file("config-generation", &dir.path().join("generation_config.json"), &generation, None, 7, |p| {
        GenerationConfig::from_file(p).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn tokenizer_files() {
    let dir = scratch();
    let wordpiece = std::fs::read(fixtures("rag-retriever").join("tiny-wordpiece/tokenizer.json")).unwrap();
    let texts = ["alpha beta gamma", "delta epsilon zeta", "who is alpha ?"];
    let bpe = rag_generator::GeneratorTokenizer::train_byte_level_bpe_with(
        texts.iter(),
        300,
        &["<s>", "<pad>", "</s>"],
        true,
    )
    .unwrap();
    let bpe_path = dir.path().join("bpe.json");
    bpe.save(&bpe_path).unwrap();
    let seeds = vec![wordpiece, std::fs::read(&bpe_path).unwrap()];
    fuzz_file("tokenizer-retriever", &dir.path().join("tokenizer.json"), &seeds, None, 8, |p| {
        let t = rag_retriever::TextTokenizer::from_file(p, Some(16)).map_err(|e| e.to_string())?;
        t.encode(&["who is alpha ?", "ünïcode \u{0}"]).map(|_| ()).map_err(|e| format!("{}: {e}", p.display()))
    });
    fuzz_file("tokenizer-generator", &dir.path().join("tokenizer.json"), &seeds, None, 9, |p| {
        let t = rag_generator::GeneratorTokenizer::from_file(p).map_err(|e| e.to_string())?;
        let ids = t.encode("who is alpha ?", true).map_err(|e| format!("{}: {e}", p.display()))?;
        t.decode(&ids, true).map(|_| ()).map_err(|e| format!("{}: {e}", p.display()))
    });
}

#[test]
fn safetensors_headers() {
    let dir = scratch();
    let seed = std::fs::read(fixtures("rag-retriever").join("hf/bert/model.safetensors")).unwrap();
    // The header: its 8-byte length, then that much JSON.
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let path = dir.path().join("model.safetensors");
    fuzz_file("safetensors", &path, &[seed], Some(header), 10, |p| {
        let checkpoint = rag_hf::Checkpoint::open(p).map_err(|e| e.to_string())?;
        let names: Vec<String> = checkpoint.names().map(str::to_string).collect();
        for name in names {
            checkpoint.read(&name).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
}

#[test]
fn index_files() {
    use rag_index::{FlatIndex, HnswConfig, HnswIndex, Metric, VectorIndex, open_index};
    let dir = scratch();
    let (dim, n) = (4, 24);
    let ids: Vec<u64> = (0..n as u64).collect();
    let data: Vec<f32> = (0..n * dim).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
    let mut seeds = Vec::new();
    let mut flat = FlatIndex::new(dim, Metric::InnerProduct).unwrap();
    flat.add(&ids, &data).unwrap();
    let mut hnsw = HnswIndex::new(dim, HnswConfig { metric: Metric::Cosine, ..Default::default() }).unwrap();
    hnsw.add(&ids, &data).unwrap();
    for (i, index) in [&flat as &dyn VectorIndex, &hnsw].into_iter().enumerate() {
        let path = dir.path().join(format!("seed{i}.rix"));
        index.save(&path).unwrap();
        seeds.push(std::fs::read(&path).unwrap());
    }
    let query = vec![0.5f32; dim];
    fuzz_file("index", &dir.path().join("corpus.index"), &seeds, None, 11, |p| {
        let index = open_index(p).map_err(|e| e.to_string())?;
        if index.dim() == dim {
            index.search(&query, 5).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    });
}

#[test]
fn store_files() {
    use rag_index::{PassageStore, StoreBuilder};
    let dir = scratch();
    let seed_path = dir.path().join("seed.store");
    let mut builder = StoreBuilder::create(&seed_path).unwrap();
    builder.push(Some(7), "Aaron", "Aaron is a prophet.").unwrap();
    builder.push(None, "", "untitled ünïcode").unwrap();
    builder.push(Some(u64::MAX - 1), "big", "the largest id").unwrap();
    builder.finish().unwrap();
    let seeds = vec![std::fs::read(&seed_path).unwrap()];
    fuzz_file("store", &dir.path().join("corpus.store"), &seeds, None, 12, |p| {
        let store = PassageStore::open(p).map_err(|e| e.to_string())?;
        for passage in store.iter() {
            passage.map_err(|e| e.to_string())?;
        }
        let _ = store.get(7).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn checkpoint_metadata() {
    let dir = scratch();
    let manifest = rag::ModelManifest {
        format: rag::CHECKPOINT_FORMAT.into(),
        version: rag::CHECKPOINT_VERSION,
        config: rag::RagConfig::default(),
        pooling: rag_retriever::Pooling::Mean,
        normalize: true,
        shared_encoder: false,
        generator: "llama".into(),
        knowledge: Some(rag::KnowledgePaths { store: "corpus.store".into(), index: "corpus.index".into() }),
    };
    let seeds = vec![serde_json::to_vec_pretty(&manifest).unwrap()];
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    fuzz_file("rag-json", &model.join("rag.json"), &seeds, None, 13, |_| {
        rag::read_manifest(&model).map(|_| ()).map_err(|e| e.to_string())
    });

    let state = rag_trainer::CheckpointState {
        format: rag_trainer::CHECKPOINT_FORMAT.into(),
        version: rag_trainer::CHECKPOINT_VERSION,
        step: 800,
        data: rag_trainer::DataPosition { epoch: 2, cursor: 48 },
        train_seconds: 93.5,
        examples: 12800,
        optimizer_steps: [("generator.layers.0.fc1.weight".to_string(), 800)].into_iter().collect(),
        window: (12.25, 4),
        config: rag_trainer::TrainerConfig {
            run_identity: [("train".to_string(), "sha256:00ff".to_string())].into_iter().collect(),
            ..rag_trainer::TrainerConfig::default()
        },
    };
    let seeds = vec![serde_json::to_vec_pretty(&state).unwrap()];
    let checkpoint = dir.path().join("step-00000800");
    std::fs::create_dir_all(&checkpoint).unwrap();
    fuzz_file("trainer-json", &checkpoint.join("trainer.json"), &seeds, None, 14, |_| {
        rag_trainer::read_checkpoint(&checkpoint).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn gguf_files() {
    use rag_hf::{GgmlType, GgufFile, GgufTensorData, GgufValue, write_gguf};
    let dir = scratch();
    let s = |v: &str| GgufValue::String(v.to_string());
    let meta = [
        ("general.architecture", s("llama")),
        ("general.alignment", GgufValue::U32(32)),
        ("llama.block_count", GgufValue::U32(1)),
        ("llama.embedding_length", GgufValue::U64(32)),
        ("llama.feed_forward_length", GgufValue::U32(64)),
        ("llama.attention.head_count", GgufValue::U32(4)),
        ("llama.attention.head_count_kv", GgufValue::U32(2)),
        ("llama.rope.freq_base", GgufValue::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.tokens", GgufValue::Array(vec![s("<s>"), s("a"), s("Ġb")])),
        ("tokenizer.ggml.merges", GgufValue::Array(vec![s("Ġ b")])),
        ("tokenizer.ggml.bos_token_id", GgufValue::I32(0)),
    ];
    // One block of each type the reader dequantizes, with varied bytes.
    let kinds = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    let tensors: Vec<GgufTensorData> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let len = kind.block_len().max(8) as u64;
            let bytes =
                (0..len as usize / kind.block_len() * kind.block_bytes()).map(|b| (b * 37 + i) as u8 % 61).collect();
            GgufTensorData { name: format!("blk.0.t{i}.weight"), kind, dims: vec![len], bytes }
        })
        .collect();
    let seed = dir.path().join("seed.gguf");
    write_gguf(&seed, &meta, &tensors).unwrap();
    let seeds = vec![std::fs::read(&seed).unwrap()];
    fuzz_file("gguf", &dir.path().join("model.gguf"), &seeds, None, 15, |p| {
        let file = GgufFile::open(p).map_err(|e| e.to_string())?;
        let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
        for name in names {
            file.dequantize(&name).map_err(|e| e.to_string())?;
        }
        rag_generator::llama_config_from_gguf(&file).map(|_| ()).map_err(|e| e.to_string())
    });
}

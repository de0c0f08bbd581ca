//! LLaMA-family models and their tokenizers from a GGUF file (llama.cpp's format), as most
//! people who run small LMs locally have them on disk.
//!
//! - The config comes from the `llama.*` metadata (`block_count`, `embedding_length`,
//!   `attention.head_count(_kv)`, `rope.freq_base`...) and the `tokenizer.ggml.*` special ids.
//! - Tensors are dequantized to f32 and renamed to HF's (`blk.N.attn_q.weight` →
//!   `model.layers.N.self_attn.q_proj.weight`); llama.cpp's converter permutes the rows of the
//!   query and key projections for its rotary layout, and that permutation is undone here, so
//!   [`Llama::load`] reads them as it reads a HF checkpoint.
//! - The tokenizer (`tokenizer.ggml.model = gpt2`) is GPT-2's byte-level BPE over the file's
//!   tokens and merges, with the pre-tokenizer `tokenizer.ggml.pre` names, and the control and
//!   user-defined tokens as special tokens.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use rag_hf::{Checkpoint, GgufFile, GgufValue, Loader};

use crate::config::{ConfigFile, LlamaConfig};
use crate::error::config_error;
use crate::llama::Llama;
use crate::tokenizer::GeneratorTokenizer;
use crate::{GeneratorError, Result};

/// The `.gguf` file `path` names: the file itself, or the one `.gguf` file of a directory.
pub fn find_gguf(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")).then(|| path.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

/// The GGUF file a generator path stands for ([`find_gguf`]), unless it is a HF checkpoint
/// directory (one with `config.json`), which `Generator::from_pretrained` reads as such.
pub fn generator_gguf(path: &Path) -> Option<PathBuf> {
    if path.join("config.json").is_file() { None } else { find_gguf(path) }
}

fn gguf_error(file: &GgufFile, message: String) -> GeneratorError {
    GeneratorError::Checkpoint(rag_hf::HfError::Gguf { path: file.path().to_path_buf(), message })
}

fn meta_u64(file: &GgufFile, key: &str) -> Result<u64> {
    file.get(key)
        .and_then(GgufValue::as_u64)
        .ok_or_else(|| gguf_error(file, format!("metadata `{key}` is missing or not an integer")))
}

/// The LLaMA config a GGUF file's metadata describes (`general.architecture` must be `llama`).
pub fn llama_config_from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
    let arch = file.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
    if arch != "llama" {
        return Err(gguf_error(file, format!("general.architecture `{arch}`: this build reads `llama` GGUF files")));
    }
    if let Some(kind) = file.get("llama.rope.scaling.type").and_then(GgufValue::as_str)
        && kind != "none"
    {
        return Err(gguf_error(file, format!("llama.rope.scaling.type `{kind}` is not read by this build")));
    }
    let heads = meta_u64(file, "llama.attention.head_count")?;
    let hidden = meta_u64(file, "llama.embedding_length")?;
    let vocab = match file.get("llama.vocab_size").and_then(GgufValue::as_u64) {
        Some(v) => v,
        None => file.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map_or(0, |t| t.len() as u64),
    };
    let head_dim = match file.get("llama.rope.dimension_count").and_then(GgufValue::as_u64) {
        Some(d) => d,
        None if heads > 0 => hidden / heads,
        None => 0,
    };
    let id = |key: &str| file.get(key).and_then(GgufValue::as_u64);
    let ids = |key: &str| id(key).map_or(Vec::new(), |v| vec![v]);
    let config = serde_json::json!({
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": meta_u64(file, "llama.feed_forward_length")?,
        "num_hidden_layers": meta_u64(file, "llama.block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": id("llama.attention.head_count_kv").unwrap_or(heads),
        "head_dim": head_dim,
        "max_position_embeddings": id("llama.context_length").unwrap_or(2048),
        "rms_norm_eps": file.get("llama.attention.layer_norm_rms_epsilon").and_then(GgufValue::as_f64).unwrap_or(1e-5),
        "rope_theta": file.get("llama.rope.freq_base").and_then(GgufValue::as_f64).unwrap_or(10000.0),
        "tie_word_embeddings": file.tensor("output.weight").is_none(),
        "bos_token_id": ids("tokenizer.ggml.bos_token_id"),
        "eos_token_id": ids("tokenizer.ggml.eos_token_id"),
        "pad_token_id": ids("tokenizer.ggml.padding_token_id"),
    });
    let config: LlamaConfig = serde_json::from_value(config)
        .map_err(|e| gguf_error(file, format!("the llama.* metadata do not make a config: {e}")))?;
    config.validate_at(file.path())?;
    Ok(config)
}

/// HF's name of llama.cpp's tensor `name`, if it is one of LLaMA's.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's row permutation of a query or key projection (`[heads·head_dim, ...]`):
/// its converter moved HF row `h·d + j·d/2 + i` to `h·d + 2i + j` (interleaving the two halves
/// that HF's `rotate_half` pairs).
fn unpermute(data: TensorData, heads: usize) -> std::result::Result<TensorData, String> {
    let shape = data.shape.to_vec();
    let rows = shape[0];
    let cols: usize = shape[1..].iter().product();
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(format!("{rows} rows do not split into {heads} heads of an even size"));
    }
    let d = rows / heads;
    let values = data.into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let (to, from) = (h * d + j * d / 2 + i, h * d + 2 * i + j);
                out[to * cols..(to + 1) * cols].copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(TensorData::new(out, shape))
}

/// A LLaMA model from a GGUF file, its weights dequantized to f32 and created in `dtype`, with
/// `dropout` in training; and its config.
pub fn llama_from_gguf<B: Backend>(
    file: &GgufFile,
    dropout: f64,
    device: &B::Device,
    dtype: DType,
) -> Result<(Llama<B>, LlamaConfig)> {
    let config = llama_config_from_gguf(file)?;
    let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
    let mut tensors = Vec::with_capacity(file.tensors().len());
    for t in file.tensors() {
        let Some(name) = hf_name(&t.name) else { continue };
        let mut data = file.dequantize(&t.name)?;
        if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
            data = unpermute(data, heads).map_err(|m| gguf_error(file, format!("tensor `{}`: {m}", t.name)))?;
        } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
            data = unpermute(data, kv_heads).map_err(|m| gguf_error(file, format!("tensor `{}`: {m}", t.name)))?;
        }
        tensors.push((name, data));
    }
    let checkpoint = Checkpoint::from_tensors(file.path(), tensors);
    let model = Llama::load(&config, &Loader::new(&checkpoint, "", device, dtype), dropout)?;
    Ok((model, config))
}

/// The pre-tokenizers of the `tokenizer.ggml.pre` names this build knows, as `tokenizer.json`
/// sections: GPT-2's byte-level split, with single digits split first for SmolLM.
fn pre_tokenizer(pre: &str) -> Option<serde_json::Value> {
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        "gpt2" | "default" => Some(byte_level),
        "smollm" => Some(serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})),
        _ => None,
    }
}

/// The tokenizer a GGUF file carries (`tokenizer.ggml.*`, model `gpt2`): byte-level BPE over its
/// tokens and merges, the pre-tokenizer `tokenizer.ggml.pre` names (`gpt2`, `smollm`), and its
/// control and user-defined tokens as special tokens.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<GeneratorTokenizer> {
    let model = file.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
    if model != "gpt2" {
        return Err(gguf_error(
            file,
            format!("tokenizer.ggml.model `{model}`: this build reads `gpt2` (byte-level BPE)"),
        ));
    }
    let pre_name = file.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        gguf_error(file, format!("tokenizer.ggml.pre `{pre_name}`: this build knows gpt2, default and smollm"))
    })?;
    let strings = |key: &str| -> Result<Vec<&str>> {
        let values =
            file.get(key).and_then(GgufValue::as_array).ok_or_else(|| gguf_error(file, format!("no `{key}` array")))?;
        values
            .iter()
            .map(|v| v.as_str().ok_or_else(|| gguf_error(file, format!("`{key}` holds a non-string"))))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(t) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if vocab.insert(token.to_string(), id.into()).is_some() {
            return Err(gguf_error(file, format!("token `{token}` appears twice in tokenizer.ggml.tokens")));
        }
        // 3: control, 4: user-defined (llama.cpp's token types).
        if matches!(types.get(id), Some(3 | 4)) {
            added.push(serde_json::json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}));
        }
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let inner: tokenizers::Tokenizer =
        json.to_string().parse().map_err(|e| gguf_error(file, format!("its tokenizer does not build: {e}")))?;
    Ok(GeneratorTokenizer::from_tokenizer_at(inner, file.path().to_path_buf()))
}

/// Opens a `.gguf` file for [`llama_from_gguf`] / [`tokenizer_from_gguf`]: `path` is the file or
/// a directory holding exactly one.
pub fn open_gguf(path: &Path) -> Result<GgufFile> {
    let file = find_gguf(path)
        .ok_or_else(|| config_error(path, "gguf", "no .gguf file here (a directory must hold exactly one)"))?;
    Ok(GgufFile::open(file)?)
}

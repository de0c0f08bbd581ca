//! Reading HuggingFace checkpoints for Burn models.
//!
//! - [`Checkpoint`]: a memory-mapped safetensors file, or a model directory with
//!   `model.safetensors` or a sharded checkpoint (`model.safetensors.index.json`). F32, F64, F16
//!   and BF16 tensors are read; offsets are validated when the file is opened.
//! - [`Loader`]: builds tensors, `Linear`, `LayerNorm` and `Embedding` modules by their HF names
//!   under a prefix, on a chosen device and dtype. A tensor the model needs and the checkpoint
//!   lacks, or one whose shape differs from what the config implies, is an [`HfError`] naming the
//!   tensor (and both shapes), with a hint when the same tensor sits under another prefix.
//! - [`Activation`]: the feed-forward activations HF configs name; [`project`]: a linear layer
//!   over `[batch, len, d]` as one matrix product.
//! - [`write_safetensors`]: tensors to a safetensors file, atomically.
//! - [`save_module`] / [`load_module`]: a whole Burn module's parameters to and from one
//!   safetensors file, named by module path (whole-model checkpoints).
//! - [`read_json`]: config files with errors that name the file, line and column.
//!
//! The model crates (`rag-retriever`, `rag-generator`) share this one reader so that every model
//! loads and fails the same way. Nothing here touches the network.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use rag_hf::{Checkpoint, Loader};
//!
//! let checkpoint = Checkpoint::open("all-MiniLM-L6-v2")?; // a directory or a .safetensors file
//! let loader = Loader::<Flex>::new(&checkpoint, "", &Default::default(), DType::F32);
//! let query = loader.push("encoder.layer.0.attention.self").linear("query", 384, 384, true)?;
//! # Ok::<(), rag_hf::HfError>(())
//! ```

mod activation;
mod checkpoint;
mod error;
mod gguf;
mod json;
mod loader;
mod module_file;
mod quant;
mod write;

pub use activation::{Activation, project};
pub use checkpoint::{Checkpoint, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
pub use error::{HfError, Result};
pub use gguf::{GGUF_MAGIC, GgufFile, GgufTensor, GgufTensorData, GgufValue, write_gguf};
pub use json::{read_json, read_tokenizer};
pub use loader::{Loader, Weights, init_embedding, init_linear};
pub use module_file::{
    ModulePath, cast_module, cast_module_in_graph, copy_module, load_module, module_tensors, save_module,
};
pub use quant::{GgmlType, dequantize};
pub use write::{sync_dir, write_atomic, write_safetensors};

//! The retriever of a RAG model: a BERT-family bi-encoder (DPR, Contriever, sentence-transformers)
//! in Burn, loading HuggingFace checkpoints.
//!
//! - [`BertModel`] (`bert.rs`): faithful to HF's `BertModel` (word + position + token-type
//!   embeddings, post-LN layers, padding mask, optional tanh pooler), sized by [`BertConfig`]
//!   parsed from `config.json`.
//! - [`Encoder`]: BERT → [`Pooling`] (CLS, mean, max, mean/√len, pooler) → optional projection
//!   (DPR's `encode_proj`) → optional L2 normalisation. [`Encoder::from_pretrained`] reads
//!   `BertModel`/`BertFor*`, `DPRQuestionEncoder`/`DPRContextEncoder` and sentence-transformers
//!   directories; a missing tensor or a shape mismatch names the tensor and both shapes.
//! - [`BiEncoder`]: query and document encoders, shared or separate, with retrieval scores
//!   `q·d`; the document side is a constant of the autodiff graph (RAG trains the query encoder).
//! - [`TextTokenizer`]: a local `tokenizer.json`, batches padded to the longest sequence and
//!   truncated, (title, text) pairs with token types ([`TokenBatch`]).
//! - [`encode_passages`]: a corpus in batches, with a progress bar, into any sink (an index).
//!
//! Generic over the Burn backend; it never picks one, and knows nothing of the index crate.
//!
//! ```
//! use burn::backend::Flex;
//! use rag_retriever::{BertConfig, BiEncoder, Encoder, Pooling, TokenBatch};
//!
//! let device = Default::default();
//! let config = BertConfig::new(100, 32, 2, 4, 64, 16);
//! let encoder = Encoder::<Flex>::init(&config, Pooling::Mean, true, &device)?;
//! let bi = BiEncoder::shared(encoder);
//! // Two sequences of length 3, the second padded.
//! let batch = TokenBatch::new(vec![1, 5, 2, 1, 2, 0], vec![1, 1, 1, 1, 1, 0], None, 2, 3)?;
//! let q = bi.encode_queries(&batch)?; // [2, 32], unit norm
//! let d = bi.encode_documents(&batch)?.reshape([1, 2, 32]);
//! let scores = BiEncoder::scores(q.narrow(0, 0, 1), d); // [1, 2]
//! let s: Vec<f32> = scores.into_data().to_vec().unwrap();
//! assert!((s[0] - 1.0).abs() < 1e-5); // a sequence scores 1 against itself
//! # Ok::<(), rag_retriever::RetrieverError>(())
//! ```

mod bert;
mod bi_encoder;
mod config;
mod corpus;
mod encoder;
mod error;
mod pooling;
mod tokenize;

pub use bert::{BertEmbeddings, BertInput, BertLayer, BertModel, BertOutput};
pub use bi_encoder::BiEncoder;
pub use config::{Activation, BertConfig};
pub use corpus::{EncodeOptions, EncodeReport, encode_passages};
pub use encoder::{Encoder, EncoderOptions, WeightLayout};
pub use error::{Result, RetrieverError};
pub use pooling::Pooling;
pub use tokenize::{TextTokenizer, TokenBatch};

//! Building an index from a passage store with the document encoder.

use burn::tensor::backend::Backend;
use rag_index::{PassageStore, VectorIndex};
use rag_retriever::{EncodeOptions, EncodeReport, Encoder, TextTokenizer, encode_passages};

use crate::{RagError, Result};

/// Encodes every passage of `store` with `encoder` and adds the vectors to `index` under the
/// passages' ids, in batches (with a progress bar when `options.progress` and stderr is a
/// terminal).
///
/// Give an encoder on a plain backend (`model.valid()` for an autodiff one): this is inference.
/// The index must be empty of these ids and as wide as the encoder's vectors; a store read error
/// or an index refusal stops the run (the index then holds the batches added before it).
pub fn index_store<B: Backend>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    store: &PassageStore,
    index: &mut dyn VectorIndex,
    options: &EncodeOptions,
) -> Result<EncodeReport> {
    encode_store(encoder, tokenizer, store, index, options, |index, ids, vectors| index.add(ids, vectors))
}

/// Re-encodes every passage of `store` with `encoder` and replaces their vectors in `index`, in
/// place (the index refresh of REPLUG / Atlas when the document encoder trains). Ids the index
/// lacks are added.
pub fn refresh_index<B: Backend>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    store: &PassageStore,
    index: &mut dyn VectorIndex,
    options: &EncodeOptions,
) -> Result<EncodeReport> {
    encode_store(encoder, tokenizer, store, index, options, |index, ids, vectors| index.update(ids, vectors))
}

fn encode_store<B: Backend>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    store: &PassageStore,
    index: &mut dyn VectorIndex,
    options: &EncodeOptions,
    mut write: impl FnMut(&mut dyn VectorIndex, &[u64], &[f32]) -> rag_index::Result<()>,
) -> Result<EncodeReport> {
    if index.dim() != encoder.dim() {
        return Err(RagError::Dimension { index: index.dim(), encoder: "document encoder", dim: encoder.dim() });
    }
    let mut read_error = None;
    let passages = store.iter().map_while(|p| match p {
        Ok(p) => Some((p.id, p.title, p.text)),
        Err(e) => {
            read_error = Some(e);
            None
        }
    });
    let report = encode_passages(encoder, tokenizer, passages, Some(store.len() as u64), options, |ids, vectors| {
        write(index, ids, vectors)
    })?;
    match read_error {
        Some(e) => Err(e.into()),
        None => Ok(report),
    }
}

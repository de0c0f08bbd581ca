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

/// Checks that `index` (read from `path`) is an index of `store` by `encoder`: the same width,
/// exactly the store's ids, and the vectors of `samples` passages spread over the store equal to
/// what `encoder` makes of them now (within 1e-3 of each vector's largest entry). An index
/// built from another corpus or by another encoder is refused, naming the file.
pub fn check_index<B: Backend>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    store: &PassageStore,
    index: &dyn VectorIndex,
    path: &std::path::Path,
    options: &EncodeOptions,
    samples: usize,
) -> Result<()> {
    let refuse = |message: String| RagError::Corpus { store: store.path().to_path_buf(), message };
    if index.dim() != encoder.dim() {
        return Err(RagError::Dimension { index: index.dim(), encoder: "document encoder", dim: encoder.dim() });
    }
    if index.len() != store.len() {
        return Err(refuse(format!(
            "the index {} holds {} vectors and the store {} passages: built from another corpus?",
            path.display(),
            index.len(),
            store.len()
        )));
    }
    let mut picked = Vec::new();
    let step = (store.len() / samples.max(1)).max(1);
    for (i, passage) in store.iter().enumerate() {
        let passage = passage?;
        if !index.contains(passage.id) {
            return Err(refuse(format!("the index {} has no vector for passage {}", path.display(), passage.id)));
        }
        if i % step == 0 && picked.len() < samples {
            picked.push((passage.id, passage.title.to_string(), passage.text.to_string()));
        }
    }
    let mut worst: Option<(u64, f32)> = None;
    let options = EncodeOptions { progress: false, ..options.clone() };
    encode_passages(encoder, tokenizer, picked, None, &options, |ids, vectors| {
        for (id, now) in ids.iter().zip(vectors.chunks(encoder.dim())) {
            let stored = index.vector(*id).expect("checked above: the index holds every passage");
            let scale = now.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            let diff = now.iter().zip(stored).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            if worst.is_none_or(|(_, w)| diff > w) {
                worst = Some((*id, diff));
            }
        }
        Ok::<(), rag_index::IndexError>(())
    })?;
    if let Some((id, diff)) = worst
        && diff > 1e-3
    {
        return Err(refuse(format!(
            "the index {} was not built by this document encoder: passage {id}'s vector differs from its encoding \
             now by {diff:.3} of its largest entry (built with other weights, pooling, max length or titles?)",
            path.display()
        )));
    }
    Ok(())
}

//! Tokenization from a local `tokenizer.json` (HF `tokenizers`, never the network), and the
//! padded batches an encoder takes.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{
    EncodeInput, NormalizedString, Normalizer, OffsetReferential, OffsetType, PaddingDirection, PaddingParams,
    PaddingStrategy, PostProcessor, PreTokenizedString, PreTokenizer, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::bert::BertInput;
use crate::{Result, RetrieverError};

/// BERT's position table size: the truncation length when neither the caller nor the
/// tokenizer file sets one.
const DEFAULT_MAX_LEN: usize = 512;

/// A padded batch of token ids, row-major `[batch, len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids (0 for the first text of a pair, 1 for the second).
    pub token_type_ids: Vec<i64>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub len: usize,
}

impl TokenBatch {
    /// A batch from row-major arrays; `token_type_ids` `None` means zeros.
    pub fn new(
        input_ids: Vec<i64>,
        attention_mask: Vec<i64>,
        token_type_ids: Option<Vec<i64>>,
        batch: usize,
        len: usize,
    ) -> Result<Self> {
        let token_type_ids = token_type_ids.unwrap_or_else(|| vec![0; input_ids.len()]);
        for (field, values) in
            [("input_ids", &input_ids), ("attention_mask", &attention_mask), ("token_type_ids", &token_type_ids)]
        {
            if values.len() != batch * len {
                return Err(RetrieverError::Input {
                    field,
                    message: format!("{} values for a [{batch}, {len}] batch", values.len()),
                });
            }
        }
        if let Some(i) = attention_mask.iter().position(|&m| m != 0 && m != 1) {
            return Err(RetrieverError::Input {
                field: "attention_mask",
                message: format!(
                    "value {} at row {}, position {} (must be 0 or 1)",
                    attention_mask[i],
                    i / len,
                    i % len
                ),
            });
        }
        Ok(Self { input_ids, attention_mask, token_type_ids, batch, len })
    }

    /// Checks that a model with these table sizes can take the batch.
    pub fn check_fits(&self, vocab_size: usize, type_vocab_size: usize, max_positions: usize) -> Result<()> {
        if self.len > max_positions {
            return Err(RetrieverError::Input {
                field: "input_ids",
                message: format!(
                    "length {} exceeds the model's {max_positions} positions (truncate to at most that)",
                    self.len
                ),
            });
        }
        for (field, values, limit) in
            [("input_ids", &self.input_ids, vocab_size), ("token_type_ids", &self.token_type_ids, type_vocab_size)]
        {
            if let Some(i) = values.iter().position(|&v| v < 0 || v as u64 >= limit as u64) {
                return Err(RetrieverError::Input {
                    field,
                    message: format!(
                        "value {} at row {}, position {} is outside the model's table of {limit}",
                        values[i],
                        i / self.len,
                        i % self.len
                    ),
                });
            }
        }
        Ok(())
    }

    /// The batch as tensors on `device`.
    pub fn to_input<B: Backend>(&self, device: &B::Device) -> BertInput<B> {
        let t = |v: &[i64]| int_tensor::<B>(v, self.batch, self.len, device);
        BertInput {
            input_ids: t(&self.input_ids),
            attention_mask: t(&self.attention_mask),
            token_type_ids: Some(t(&self.token_type_ids)),
        }
    }

    /// The ids of row `row` without its padding.
    pub fn row_ids(&self, row: usize) -> Vec<i64> {
        let range = row * self.len..(row + 1) * self.len;
        self.input_ids[range.clone()]
            .iter()
            .zip(&self.attention_mask[range])
            .filter(|(_, m)| **m == 1)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// A tokenizer loaded from a local `tokenizer.json`, set to pad each batch to its longest
/// sequence (right padding) and to truncate to `max_len` tokens including special tokens.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_len: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (a file, or a model directory holding one). `max_len` overrides
    /// the file's truncation length (default: the file's, else 512).
    pub fn from_file(path: impl AsRef<Path>, max_len: Option<usize>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let fail = |message: String| RetrieverError::Tokenizer { path: path.clone(), message };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let inner = rag_hf::read_tokenizer(&path).map_err(|e| match e {
            rag_hf::HfError::Tokenizer { message, .. } => fail(message),
            other => other.into(),
        })?;
        Self::from_tokenizer(inner, path.clone(), max_len)
    }

    /// Wraps an in-memory tokenizer (`path` names it in errors).
    pub fn from_tokenizer(mut inner: Tokenizer, path: PathBuf, max_len: Option<usize>) -> Result<Self> {
        let fail = |message: String| RetrieverError::Tokenizer { path: path.clone(), message };
        let max_len = max_len.or(inner.get_truncation().map(|t| t.max_length)).unwrap_or(DEFAULT_MAX_LEN);
        // The file's padding (sentence-transformers ship `Fixed(128)`) is replaced by
        // batch-longest; its pad token is kept.
        let (pad_id, pad_type_id, pad_token) = match inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id, p.pad_token.clone()),
            None => {
                let token = ["[PAD]", "<pad>", "<PAD>"].into_iter().find(|t| inner.token_to_id(t).is_some());
                let token = token.ok_or_else(|| {
                    fail("it sets no padding and has no [PAD] or <pad> token to pad batches with".into())
                })?;
                (inner.token_to_id(token).expect("found above"), 0, token.to_string())
            }
        };
        // tokenizers subtracts the special tokens from the length without a check (an overflow).
        let specials = inner.get_post_processor().map_or(0, |p| p.added_tokens(true));
        if max_len <= specials {
            return Err(fail(format!(
                "max length {max_len} leaves no room for text beside the {specials} special tokens of a pair"
            )));
        }
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id,
            pad_token,
        }));
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| fail(format!("max length {max_len}: {e}")))?;
        Ok(Self { inner, path, max_len })
    }

    /// A word-level BERT tokenizer over the words of `texts`, for retrievers trained from
    /// scratch: BERT's normalizer (lowercase) and pre-tokenizer (whitespace and punctuation),
    /// `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4, then every word seen at least
    /// `min_count` times in sorted order (deterministic), and `[CLS] a [SEP] b [SEP]` with token
    /// types 0/1 for pairs. Words not in the vocabulary read as `[UNK]`.
    pub fn word_level<S: AsRef<str>>(
        texts: impl IntoIterator<Item = S>,
        min_count: usize,
        max_len: usize,
    ) -> Result<Self> {
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let normalizer = serde_json::json!({
            "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true
        });
        // Words are counted as the tokenizer will see them: normalized, then pre-tokenized.
        let fail = |message: String| RetrieverError::Tokenizer { path: "<word_level>".into(), message };
        let bert_normalizer = BertNormalizer::new(true, true, None, true);
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for text in texts {
            let mut normalized = NormalizedString::from(text.as_ref());
            bert_normalizer.normalize(&mut normalized).map_err(|e| fail(e.to_string()))?;
            let mut words = PreTokenizedString::from(normalized);
            BertPreTokenizer.pre_tokenize(&mut words).map_err(|e| fail(e.to_string()))?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Char) {
                *counts.entry(word.to_string()).or_default() += 1;
            }
        }
        let mut vocab = serde_json::Map::new();
        for (id, token) in specials.iter().enumerate() {
            vocab.insert((*token).into(), id.into());
        }
        for word in counts.into_iter().filter(|(_, c)| *c >= min_count.max(1)).map(|(w, _)| w) {
            let id = vocab.len();
            vocab.entry(word).or_insert(id.into());
        }
        let added: Vec<serde_json::Value> = specials
            .iter()
            .enumerate()
            .map(|(id, token)| {
                serde_json::json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let inner: Tokenizer = serde_json::from_value(serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        }))
        .map_err(|e| fail(e.to_string()))?;
        Self::from_tokenizer(inner, "<word_level>".into(), Some(max_len))
    }

    /// Writes the tokenizer (with its truncation length) as `tokenizer.json` at `path`,
    /// atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |message: String| RetrieverError::Tokenizer { path: path.to_path_buf(), message };
        let text = self.inner.to_string(false).map_err(|e| fail(e.to_string()))?;
        rag_hf::write_atomic(path, text.as_bytes()).map_err(|e| fail(e.to_string()))
    }

    /// The file it was loaded from (or a `<...>` description of where it came from).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The longest sequence a batch can have (special tokens included).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenizes single texts (`[CLS] text [SEP]` for BERT).
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        self.batch(texts.iter().map(|t| EncodeInput::Single(t.as_ref().into())).collect())
    }

    /// Tokenizes (first, second) pairs, e.g. a passage's (title, text) as DPR does:
    /// `[CLS] title [SEP] text [SEP]` with token types 0 then 1.
    pub fn encode_pairs<S: AsRef<str>, T: AsRef<str>>(&self, pairs: &[(S, T)]) -> Result<TokenBatch> {
        self.batch(pairs.iter().map(|(a, b)| EncodeInput::Dual(a.as_ref().into(), b.as_ref().into())).collect())
    }

    fn batch(&self, inputs: Vec<EncodeInput<'_>>) -> Result<TokenBatch> {
        let batch = inputs.len();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| RetrieverError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        let mut types = Vec::with_capacity(batch * len);
        for e in &encodings {
            ids.extend(widen(e.get_ids()));
            mask.extend(widen(e.get_attention_mask()));
            types.extend(widen(e.get_type_ids()));
        }
        TokenBatch::new(ids, mask, Some(types), batch, len)
    }
}

/// Builds a `[batch, len]` Int tensor from row-major ids.
fn int_tensor<B: Backend>(values: &[i64], batch: usize, len: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [batch, len]), device)
}

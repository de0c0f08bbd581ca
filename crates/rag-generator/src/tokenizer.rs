//! `GeneratorTokenizer`: the generator's tokenizer from a local `tokenizer.json` (byte-level BPE
//! for BART and LLaMA-3, SentencePiece-style BPE for LLaMA-2), with decoding back to text; and
//! [`Padded`], a batch of id rows padded on the side each architecture wants.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::{GeneratorError, Result};

/// Which side padding goes on: right for BART inputs and teacher-forced targets, left for
/// decoder-only prompts (so the last real token is the last position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Pad after the tokens.
    Right,
    /// Pad before the tokens.
    Left,
}

/// Rows of ids padded to one length, with their attention mask (1 = token, 0 = padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    /// `[rows][len]` ids.
    pub ids: Vec<Vec<u32>>,
    /// `[rows][len]` mask.
    pub mask: Vec<Vec<u32>>,
}

impl Padded {
    /// Pads `rows` with `pad` to the longest row, on `side`.
    pub fn new(rows: &[Vec<u32>], pad: u32, side: PaddingSide) -> Self {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len());
        let mut mask = Vec::with_capacity(rows.len());
        for row in rows {
            let fill = len - row.len();
            let (mut r, mut m) = (Vec::with_capacity(len), Vec::with_capacity(len));
            if side == PaddingSide::Left {
                r.extend(std::iter::repeat_n(pad, fill));
                m.extend(std::iter::repeat_n(0, fill));
            }
            r.extend_from_slice(row);
            m.extend(std::iter::repeat_n(1, row.len()));
            if side == PaddingSide::Right {
                r.extend(std::iter::repeat_n(pad, fill));
                m.extend(std::iter::repeat_n(0, fill));
            }
            ids.push(r);
            mask.push(m);
        }
        Self { ids, mask }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The common length.
    pub fn len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids and the mask as `[rows, len]` tensors.
    pub fn tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        (int_tensor(&self.ids, device), int_tensor(&self.mask, device))
    }
}

/// `[rows][len]` values as an Int tensor.
pub(crate) fn int_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let len = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().map(|&t| i64::from(t))).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

/// A tokenizer loaded from a local `tokenizer.json`; nothing is downloaded.
#[derive(Debug, Clone)]
pub struct GeneratorTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl GeneratorTokenizer {
    /// Loads `path`: a `tokenizer.json`, or a model directory holding one.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        if !file.is_file() {
            return Err(GeneratorError::Tokenizer { path: file, message: "no such file".into() });
        }
        let inner = rag_hf::read_tokenizer(&file).map_err(|e| match e {
            rag_hf::HfError::Tokenizer { message, .. } => GeneratorError::Tokenizer { path: file.clone(), message },
            other => other.into(),
        })?;
        Ok(Self { inner, path: file })
    }

    /// Wraps a tokenizer built in code.
    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        Self { inner, path: PathBuf::from("<in memory>") }
    }

    /// Wraps a tokenizer built from the file `path` (a GGUF file's metadata), named in errors.
    pub fn from_tokenizer_at(inner: Tokenizer, path: PathBuf) -> Self {
        Self { inner, path }
    }

    /// Trains a byte-level BPE tokenizer (GPT-2/BART style: every byte is in the alphabet, so
    /// any text encodes and decodes back exactly) of at most `vocab_size` tokens on `texts`.
    /// `special_tokens` get the first ids, in order (e.g. `["<s>", "<pad>", "</s>", "<unk>"]`
    /// gives BART's 0, 1, 2, 3).
    pub fn train_byte_level_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
        special_tokens: &[&str],
    ) -> Result<Self> {
        Self::train_byte_level_bpe_with(texts, vocab_size, special_tokens, false)
    }

    /// [`GeneratorTokenizer::train_byte_level_bpe`], optionally with a space added before every
    /// text (HF's `add_prefix_space`): a word then has the same token at the start of a text as
    /// inside one, so an answer's tokens are the ones its passage contains.
    pub fn train_byte_level_bpe_with<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
        special_tokens: &[&str],
        add_prefix_space: bool,
    ) -> Result<Self> {
        let fail =
            |e: tokenizers::Error| GeneratorError::Tokenizer { path: "<training>".into(), message: e.to_string() };
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(special_tokens.iter().map(|t| AddedToken::from(t.to_string(), true)).collect())
            .build();
        let mut tokenizer = Tokenizer::new(BPE::default());
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        let mut trainer = tokenizers::models::TrainerWrapper::from(trainer);
        tokenizer.train(&mut trainer, texts).map_err(fail)?;
        Ok(Self::from_tokenizer(tokenizer))
    }

    /// Writes `tokenizer.json` atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |message: String| GeneratorError::Tokenizer { path: path.to_path_buf(), message };
        let text = self.inner.to_string(false).map_err(|e| fail(e.to_string()))?;
        rag_hf::write_atomic(path, text.as_bytes()).map_err(|e| fail(e.to_string()))
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token (e.g. `"</s>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn error(&self, e: tokenizers::Error) -> GeneratorError {
        GeneratorError::Tokenizer { path: self.path.clone(), message: e.to_string() }
    }

    /// Token ids of `text`; `add_special_tokens` applies the file's post-processor (BART's
    /// `<s> … </s>`, LLaMA's `<s>`…).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// [`GeneratorTokenizer::encode`] for several texts.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t, add_special_tokens)).collect()
    }

    /// The text of `ids`; `skip_special_tokens` drops `<s>`, `</s>`, `<pad>`…
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.error(e))
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

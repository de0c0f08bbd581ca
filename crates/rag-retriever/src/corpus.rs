//! Encoding a whole corpus in batches, for building or refreshing an index.

use std::time::Instant;

use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Encoder, Result, RetrieverError, TextTokenizer};

/// How [`encode_passages`] batches and tokenizes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// Passages per forward pass.
    pub batch_size: usize,
    /// Encode `(title, text)` pairs as DPR does (`[CLS] title [SEP] text [SEP]`); otherwise the
    /// text alone (a passage without a title is always encoded alone).
    pub with_titles: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self { batch_size: 32, with_titles: true, progress: true }
    }
}

/// What [`encode_passages`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeReport {
    /// Passages encoded.
    pub passages: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl EncodeReport {
    /// Passages per second.
    pub fn rate(&self) -> f64 {
        self.passages as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Encodes `(id, title, text)` passages with `encoder` in batches and hands each batch's ids and
/// row-major f32 vectors `[n, dim]` to `sink` (typically an index's `add`), batch by batch in
/// input order. The forward passes themselves run over passages of similar length: 16 batches
/// are read at a time and encoded longest first.
///
/// Pass an encoder on a plain (non-autodiff) backend, e.g. `model.valid()`, so no graph is
/// recorded: this is inference. `total` sizes the progress bar. A sink error stops the run and
/// names the batch's ids.
pub fn encode_passages<B, I, S, T, F, E>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    passages: I,
    total: Option<u64>,
    options: &EncodeOptions,
    mut sink: F,
) -> Result<EncodeReport>
where
    B: Backend,
    I: IntoIterator<Item = (u64, S, T)>,
    S: AsRef<str>,
    T: AsRef<str>,
    F: FnMut(&[u64], &[f32]) -> Result<(), E>,
    E: std::fmt::Display,
{
    if options.batch_size == 0 {
        return Err(RetrieverError::Input { field: "batch_size", message: "must be at least 1".into() });
    }
    let start = Instant::now();
    let bar = progress_bar(total, options.progress);
    let dim = encoder.dim();
    let mut done = 0;
    let mut window: Vec<(u64, S, T)> = Vec::with_capacity(options.batch_size * WINDOW_BATCHES);
    let mut passages = passages.into_iter().peekable();
    while passages.peek().is_some() {
        window.clear();
        window.extend(passages.by_ref().take(options.batch_size * WINDOW_BATCHES));
        // Forward passes over passages of similar length: a batch is padded to its longest
        // passage, and a padding token costs as much as a real one in every layer
        // (sentence-transformers sorts the same way, by characters).
        let chars = |p: &(u64, S, T)| p.1.as_ref().len() + p.2.as_ref().len();
        let mut order: Vec<usize> = (0..window.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(chars(&window[i])));
        let mut vectors = vec![0f32; window.len() * dim];
        for rows in order.chunks(options.batch_size) {
            encode_rows(encoder, tokenizer, &window, rows, options.with_titles, &mut vectors)?;
        }
        // The sink sees the input's batches, in input order.
        for (batch, batch_vectors) in window.chunks(options.batch_size).zip(vectors.chunks(options.batch_size * dim)) {
            let ids: Vec<u64> = batch.iter().map(|p| p.0).collect();
            sink(&ids, batch_vectors).map_err(|e| RetrieverError::Sink {
                first_id: ids[0],
                last_id: ids[ids.len() - 1],
                message: e.to_string(),
            })?;
            done += ids.len();
            bar.inc(ids.len() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(EncodeReport { passages: done, seconds: start.elapsed().as_secs_f64() })
}

/// Input batches read at once and encoded sorted by length.
const WINDOW_BATCHES: usize = 16;

/// Encodes `passages[i]` for every `i` in `rows` (one forward pass per kind, titled or not) and
/// writes its vector at row `i` of `out` (`[passages.len(), dim]`).
fn encode_rows<B: Backend, S: AsRef<str>, T: AsRef<str>>(
    encoder: &Encoder<B>,
    tokenizer: &TextTokenizer,
    passages: &[(u64, S, T)],
    rows: &[usize],
    with_titles: bool,
    out: &mut [f32],
) -> Result<()> {
    // Titled and untitled passages tokenize differently: each group is its own forward pass.
    let titled = |i: usize| with_titles && !passages[i].1.as_ref().is_empty();
    let dim = encoder.dim();
    for group in [true, false] {
        let members: Vec<usize> = rows.iter().copied().filter(|&i| titled(i) == group).collect();
        if members.is_empty() {
            continue;
        }
        let tokens = if group {
            let pairs: Vec<(&str, &str)> =
                members.iter().map(|&i| (passages[i].1.as_ref(), passages[i].2.as_ref())).collect();
            tokenizer.encode_pairs(&pairs)?
        } else {
            let texts: Vec<&str> = members.iter().map(|&i| passages[i].2.as_ref()).collect();
            tokenizer.encode(&texts)?
        };
        let vectors = encoder.encode(&tokens)?;
        let values = vectors.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32 just above");
        for (k, &i) in members.iter().enumerate() {
            out[i * dim..(i + 1) * dim].copy_from_slice(&values[k * dim..(k + 1) * dim]);
        }
    }
    Ok(())
}

fn progress_bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("encoding {bar:40} {pos}/{len} passages {per_sec} eta {eta}")
                .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("encoding {spinner} {pos} passages {per_sec}").expect("a valid template"),
        ),
    };
    // indicatif draws nothing when stderr is not a terminal.
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

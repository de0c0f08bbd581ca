//! Incremental decoding behind one interface, and greedy and beam search with HF's semantics.
//!
//! [`StepModel`] is the seam both architectures serve: feed new tokens for every row of a
//! [`DecodeState`] (its key/value caches), get next-token logits back, and reorder or repeat
//! rows with [`DecodeState::select_rows`]. Greedy and beam search here drive it; RAG-Token
//! decoding (crate `rag`) drives it too, over (example, beam, document) rows.
//!
//! The beam search follows transformers' vectorized `_beam_search`: each step keeps the best
//! `2·num_beams` continuations per input; those among the first `num_beams` that end in EOS (or
//! reach `max_length`) become finished hypotheses scored `sum log p / (generated_len ^
//! length_penalty)`, where `generated_len` counts the EOS token; the best `num_beams` others keep
//! running; `early_stopping` decides when an input is done. Scores accumulate in f32 as in HF.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use crate::Result;
use crate::config::ConfigFile;
use crate::error::input_error;
use crate::generation::{EarlyStopping, GenerationConfig};
use crate::tokenizer::int_tensor;

/// The per-row state of incremental decoding (key/value caches, masks, positions).
pub trait DecodeState<B: Backend> {
    /// Rows being decoded.
    fn rows(&self) -> usize;

    /// Positions fed so far.
    fn len(&self) -> usize;

    /// The device the caches live on.
    fn device(&self) -> B::Device;

    /// Whether nothing was fed yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps rows `rows` of every cache, in that order; a row may repeat (beam expansion) or be
    /// dropped.
    fn select_rows(&mut self, rows: Tensor<B, 1, Int>);
}

/// A model that decodes incrementally from a [`DecodeState`].
pub trait StepModel<B: Backend> {
    /// The decoding state.
    type State: DecodeState<B>;

    /// Vocabulary size (width of the logits).
    fn vocab_size(&self) -> usize;

    /// The longest sequence the position table allows.
    fn max_positions(&self) -> usize;

    /// Feeds `tokens` `[rows, n]` after the positions already in `state` and returns the logits
    /// of every fed position `[rows, n, vocab]`.
    fn step_all(&self, state: &mut Self::State, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3>;

    /// Like [`StepModel::step_all`], returning only the last position's logits `[rows, vocab]`.
    fn step(&self, state: &mut Self::State, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let logits = self.step_all(state, tokens);
        let [rows, n, vocab] = logits.dims();
        logits.narrow(1, n - 1, 1).reshape([rows, vocab])
    }
}

/// Teacher-forced logits `[rows, a, vocab]` of `answers` (`[rows][a]`, padded by the caller)
/// continuing `prompt` (`[rows][p]`, a search's prompt rows) from `state`: position `t` of a row
/// predicts `answers[row][t]`. The state is what a search would start from (its cached prefix:
/// a passage's prompt, an encoded context), so scoring answers re-encodes nothing; it is left
/// holding the fed tokens. Only the answer positions reach the LM head.
pub fn continuation_logits<B: Backend, M: StepModel<B>>(
    model: &M,
    state: &mut M::State,
    prompt: &[Vec<u32>],
    answers: &[Vec<u32>],
) -> Result<Tensor<B, 3>> {
    let (rows, vocab) = (state.rows(), model.vocab_size());
    check_fed("prompt", prompt, rows, vocab)?;
    let a = check_fed("answers", answers, rows, vocab)?;
    let device = state.device();
    let first = model.step(state, int_tensor::<B>(prompt, &device)).reshape([rows, 1, vocab]);
    if a == 1 {
        return Ok(first);
    }
    let fed: Vec<Vec<u32>> = answers.iter().map(|r| r[..a - 1].to_vec()).collect();
    let rest = model.step_all(state, int_tensor::<B>(&fed, &device));
    Ok(Tensor::cat(vec![first, rest], 1))
}

/// Checks token rows fed to a state of `rows` rows: that many, all of one length (at least 1),
/// every id inside `vocab`; `field` names them in the error. Returns their length.
fn check_fed(field: &'static str, fed: &[Vec<u32>], rows: usize, vocab: usize) -> Result<usize> {
    if fed.len() != rows {
        return Err(input_error(field, format!("{} {field} rows for a state of {rows} rows", fed.len())));
    }
    let len = fed.first().map_or(0, Vec::len);
    if len == 0 || fed.iter().any(|r| r.len() != len) {
        return Err(input_error(field, "every row needs the same number (at least 1) of tokens; pad them"));
    }
    if let Some((row, id)) =
        fed.iter().enumerate().find_map(|(r, p)| p.iter().find(|&&t| t as usize >= vocab).map(|t| (r, t)))
    {
        return Err(input_error(field, format!("row {row}: id {id} is outside the vocabulary of {vocab}")));
    }
    Ok(len)
}

/// What [`generate`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// `inputs × num_return_sequences` rows, best first within an input: the prompt, then the
    /// generated tokens, then `pad` after EOS up to the longest row (HF's layout).
    pub sequences: Vec<Vec<u32>>,
    /// The score of each row: for beam search the length-penalized sum of log-probs (what beams
    /// are ranked by); for greedy search the sum of the chosen tokens' log-probs.
    pub scores: Vec<f64>,
    /// `log p(row's new tokens | prompt)`: the sum of the generated tokens' log-probs, without
    /// length penalty (RAG-Sequence's fast decoding marginalizes these).
    pub log_probs: Vec<f64>,
    /// Tokens of the prompt at the start of every row.
    pub prompt_len: usize,
}

impl Generated {
    /// The generated tokens of row `row`: after the prompt, up to and without EOS or padding.
    pub fn new_tokens(&self, row: usize, config: &GenerationConfig) -> &[u32] {
        let tokens = &self.sequences[row][self.prompt_len..];
        let end = tokens.iter().position(|t| config.eos_token_id.contains(t)).unwrap_or(tokens.len());
        &tokens[..end]
    }
}

/// Columns forbidden at this step by HF's logits processors (min length, min new tokens,
/// forced BOS, forced EOS), or `None` when every token is allowed.
fn forbidden(
    config: &GenerationConfig,
    vocab: usize,
    cur_len: usize,
    prompt_len: usize,
    max_len: usize,
) -> Option<Vec<bool>> {
    let eos_banned = cur_len < config.min_length || config.min_new_tokens.is_some_and(|n| cur_len - prompt_len < n);
    let forced = match (config.forced_bos_token_id, config.forced_eos_token_id) {
        (Some(bos), _) if cur_len == 1 => Some(bos),
        (_, Some(eos)) if cur_len + 1 == max_len => Some(eos),
        _ => None,
    };
    // Most steps ban nothing: no vocabulary-sized mask is built for them.
    if let Some(forced) = forced.filter(|&t| (t as usize) < vocab) {
        return Some((0..vocab).map(|t| t != forced as usize).collect());
    }
    let eos: Vec<usize> = config.eos_token_id.iter().map(|&t| t as usize).filter(|&t| t < vocab).collect();
    (eos_banned && !eos.is_empty()).then(|| (0..vocab).map(|t| eos.contains(&t)).collect())
}

fn apply_forbidden<B: Backend>(scores: Tensor<B, 2>, banned: Option<Vec<bool>>) -> Tensor<B, 2> {
    match banned {
        None => scores,
        Some(banned) => {
            let vocab = banned.len();
            let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(banned, [1, vocab]), &scores.device());
            let rows = scores.dims()[0];
            scores.mask_fill(mask.expand([rows, vocab]), f64::NEG_INFINITY)
        }
    }
}

fn host_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().expect("converted to f64 just above")
}

fn host_ids<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<usize> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("converted to i64 just above")
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// Greedy or beam search (by `config.num_beams`) from `state`, whose rows are the inputs.
/// `prompt` holds each row's first tokens (all the same length): the decoder start token for
/// BART, the (left-padded) prompt for a decoder-only LM, whose padding `state` already masks.
pub fn generate<B: Backend, M: StepModel<B>>(
    model: &M,
    mut state: M::State,
    prompt: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Generated> {
    config.validate()?;
    let prompt_len = check_fed("prompt", prompt, state.rows(), model.vocab_size())?;
    let max_len = config.max_length_for(prompt_len);
    if max_len > model.max_positions() {
        return Err(input_error(
            "max_length",
            format!("{max_len} is beyond the model's {} positions", model.max_positions()),
        ));
    }
    if prompt_len >= max_len {
        return Ok(Generated {
            sequences: prompt
                .iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), config.num_return_sequences))
                .collect(),
            scores: vec![0.0; prompt.len() * config.num_return_sequences],
            log_probs: vec![0.0; prompt.len() * config.num_return_sequences],
            prompt_len,
        });
    }
    if config.num_beams == 1 {
        Ok(greedy(model, state, prompt, config, max_len))
    } else {
        let device = state.device();
        let beams = config.num_beams;
        let expand: Vec<i64> = (0..prompt.len() as i64).flat_map(|r| std::iter::repeat_n(r, beams)).collect();
        state.select_rows(Tensor::from_data(TensorData::new(expand, [prompt.len() * beams]), &device));
        Ok(beam(model, state, prompt, config, max_len))
    }
}

fn greedy<B: Backend, M: StepModel<B>>(
    model: &M,
    mut state: M::State,
    prompt: &[Vec<u32>],
    config: &GenerationConfig,
    max_len: usize,
) -> Generated {
    let prompt_len = prompt[0].len();
    let pad = config.pad_id();
    let mut sequences = prompt.to_vec();
    let mut scores = vec![0.0; prompt.len()];
    let mut running = vec![true; prompt.len()];
    let device = state.device();
    let mut logits = model.step(&mut state, int_tensor::<B>(prompt, &device));
    let mut cur_len = prompt_len;
    let mut rng = Sampler::new(config.seed);
    loop {
        let banned = forbidden(config, model.vocab_size(), cur_len, prompt_len, max_len);
        let log_probs = apply_forbidden(log_softmax(logits, 1), banned);
        let (best, next) = if config.do_sample {
            rng.sample(&host_f64(log_probs), model.vocab_size(), config)
        } else {
            let (best, next) = log_probs.max_dim_with_indices(1);
            (host_f64(best), host_ids(next))
        };
        for (row, seq) in sequences.iter_mut().enumerate() {
            if running[row] {
                seq.push(next[row] as u32);
                scores[row] += best[row];
                running[row] = !config.eos_token_id.contains(&(next[row] as u32));
            } else {
                seq.push(pad);
            }
        }
        cur_len += 1;
        if cur_len >= max_len || running.iter().all(|r| !r) {
            break;
        }
        let last: Vec<Vec<u32>> = sequences.iter().map(|s| vec![s[cur_len - 1]]).collect();
        logits = model.step(&mut state, int_tensor::<B>(&last, &device));
    }
    Generated { log_probs: scores.clone(), sequences, scores, prompt_len }
}

/// Sampling's random numbers (splitmix64, seeded) and the draw of one token per row.
struct Sampler {
    state: u64,
}

impl Sampler {
    fn new(seed: u64) -> Self {
        Self { state: seed ^ 0x5eed_5a3b_1e00_0000 }
    }

    /// A uniform number in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One token per row of `log_probs` (`rows × vocab`, forbidden tokens at −∞), drawn after
    /// HF's warpers in their order: temperature, top-k, top-p. Returns each draw's model
    /// log-prob (before the warpers) and the tokens.
    fn sample(&mut self, log_probs: &[f64], vocab: usize, config: &GenerationConfig) -> (Vec<f64>, Vec<usize>) {
        let (mut scores, mut tokens) = (Vec::new(), Vec::new());
        for row in log_probs.chunks(vocab) {
            let mut order: Vec<usize> = (0..vocab).filter(|&t| row[t].is_finite()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            if config.top_k > 0 {
                order.truncate(config.top_k.max(1));
            }
            let warped: Vec<f64> = order.iter().map(|&t| row[t] / config.temperature).collect();
            let top = warped.first().copied().unwrap_or(0.0);
            let mut weights: Vec<f64> = warped.iter().map(|w| (w - top).exp()).collect();
            let total: f64 = weights.iter().sum();
            if config.top_p < 1.0 {
                // The smallest prefix whose probability reaches top_p (at least one token).
                let mut mass = 0.0;
                let keep = weights
                    .iter()
                    .position(|w| {
                        mass += w / total;
                        mass >= config.top_p
                    })
                    .map_or(weights.len(), |i| i + 1);
                weights.truncate(keep);
            }
            let total: f64 = weights.iter().sum();
            let mut u = self.uniform() * total;
            let mut pick = weights.len().saturating_sub(1);
            for (i, w) in weights.iter().enumerate() {
                if u < *w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            let token = order.get(pick).copied().unwrap_or(0);
            scores.push(row[token]);
            tokens.push(token);
        }
        (scores, tokens)
    }
}

/// One input's finished hypotheses: at most `num_beams`, best first.
struct Finished {
    /// (length-penalized score, sum of log-probs, sequence).
    hypotheses: Vec<(f32, f32, Vec<u32>)>,
}

fn beam<B: Backend, M: StepModel<B>>(
    model: &M,
    mut state: M::State,
    prompt: &[Vec<u32>],
    config: &GenerationConfig,
    max_len: usize,
) -> Generated {
    const NEG: f32 = -1.0e9;
    let (batch, beams, vocab) = (prompt.len(), config.num_beams, model.vocab_size());
    let prompt_len = prompt[0].len();
    let keep = 2.max(1 + config.eos_token_id.len()) * beams;
    // HF fills beam outputs with `pad_token_id or eos_token_id[0]`: Python's `or` skips a pad id
    // of 0 (LLaMA's), so such rows are filled with EOS.
    let fill = match (config.pad_token_id, config.eos_token_id.first()) {
        (Some(0) | None, Some(&eos)) => eos,
        _ => config.pad_id(),
    };
    let lp = config.length_penalty;
    let device = state.device();
    let mut running: Vec<Vec<u32>> = prompt.iter().flat_map(|p| std::iter::repeat_n(p.clone(), beams)).collect();
    // Only the first beam of each input starts live, so the first step does not pick the same
    // token `num_beams` times.
    let mut running_scores: Vec<f32> = (0..batch * beams).map(|i| if i % beams == 0 { 0.0 } else { NEG }).collect();
    let mut finished: Vec<Finished> = (0..batch).map(|_| Finished { hypotheses: Vec::new() }).collect();
    let mut improvable = vec![true; batch];
    let mut logits = model.step(&mut state, int_tensor::<B>(&running, &device));
    let mut cur_len = prompt_len;
    loop {
        let banned = forbidden(config, vocab, cur_len, prompt_len, max_len);
        let log_probs = apply_forbidden(log_softmax(logits.cast(DType::F32), 1), banned);
        let offsets =
            Tensor::<B, 1>::from_data(TensorData::new(running_scores.clone(), [batch * beams]), (&device, DType::F32));
        let totals = (log_probs + offsets.reshape([batch * beams, 1])).reshape([batch, beams * vocab]);
        let (values, indices) = totals.topk_with_indices(keep, 1);
        let (values, indices) = (host_f64(values), host_ids(indices));
        let generated_len = (cur_len + 1 - prompt_len) as f64;
        let at_max = cur_len + 1 >= max_len;
        let mut next_running = Vec::with_capacity(batch * beams);
        let mut next_scores = Vec::with_capacity(batch * beams);
        let mut parents = Vec::with_capacity(batch * beams);
        let mut all_stopped = true;
        for b in 0..batch {
            let full = finished[b].hypotheses.len() == beams;
            let mut continuing = Vec::with_capacity(keep);
            for c in 0..keep {
                let (score, index) = (values[b * keep + c] as f32, indices[b * keep + c]);
                let (parent, token) = (b * beams + index / vocab, (index % vocab) as u32);
                let stops = at_max || config.eos_token_id.contains(&token);
                all_stopped &= stops;
                if !stops {
                    continuing.push((score, parent, token));
                    continue;
                }
                let can_add = c < beams && improvable[b] && !(full && config.early_stopping == EarlyStopping::True);
                if can_add {
                    let mut seq = running[parent].clone();
                    seq.push(token);
                    insert(&mut finished[b], (score / generated_len.powf(lp) as f32, score, seq), beams);
                }
            }
            // The best `num_beams` continuations that did not stop keep running; at max_length
            // (or when fewer remain) the slots are filled with dead beams, as HF's -1e9 scores.
            for slot in 0..beams {
                match continuing.get(slot) {
                    Some(&(score, parent, token)) => {
                        let mut seq = running[parent].clone();
                        seq.push(token);
                        next_running.push(seq);
                        next_scores.push(score);
                        parents.push(parent as i64);
                    }
                    None => {
                        let mut seq = running[b * beams].clone();
                        seq.push(fill);
                        next_running.push(seq);
                        next_scores.push(NEG + NEG);
                        parents.push((b * beams) as i64);
                    }
                }
            }
        }
        running = next_running;
        running_scores = next_scores;
        cur_len += 1;
        // HF's `_check_early_stop_heuristic`.
        for b in 0..batch {
            let best_len = if config.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_len - prompt_len
            } else {
                cur_len - prompt_len
            };
            let best_running = running_scores[b * beams] / (best_len as f64).powf(lp) as f32;
            let hyps = &finished[b].hypotheses;
            let worst = if hyps.len() == beams { hyps.iter().map(|h| h.0).fold(f32::INFINITY, f32::min) } else { NEG };
            improvable[b] &= best_running > worst;
        }
        let all_full = finished.iter().all(|f| f.hypotheses.len() == beams);
        let done = !improvable.iter().any(|&i| i)
            || (all_full && config.early_stopping == EarlyStopping::True)
            || all_stopped
            || cur_len >= max_len;
        if done {
            break;
        }
        state.select_rows(Tensor::from_data(TensorData::new(parents, [batch * beams]), &device));
        let last: Vec<Vec<u32>> = running.iter().map(|s| vec![s[cur_len - 1]]).collect();
        logits = model.step(&mut state, int_tensor::<B>(&last, &device));
    }
    let mut sequences = Vec::with_capacity(batch * config.num_return_sequences);
    let mut scores = Vec::with_capacity(batch * config.num_return_sequences);
    let mut log_probs = Vec::with_capacity(batch * config.num_return_sequences);
    for f in &finished {
        for (score, log_prob, seq) in f.hypotheses.iter().take(config.num_return_sequences) {
            sequences.push(seq.clone());
            scores.push(f64::from(*score));
            log_probs.push(f64::from(*log_prob));
        }
    }
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(prompt_len);
    for seq in &mut sequences {
        seq.resize(longest, fill);
    }
    Generated { sequences, scores, log_probs, prompt_len }
}

/// Adds a hypothesis, keeping the best `beams`, best first (a later equal score ranks after).
fn insert(finished: &mut Finished, hypothesis: (f32, f32, Vec<u32>), beams: usize) {
    let at = finished.hypotheses.iter().position(|h| h.0 < hypothesis.0).unwrap_or(finished.hypotheses.len());
    finished.hypotheses.insert(at, hypothesis);
    finished.hypotheses.truncate(beams);
}

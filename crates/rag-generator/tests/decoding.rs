//! Incremental decoding and search on small random models: the cache gives the full forward's
//! logits, padding does not change a row's output, rows reorder with their caches, and beam
//! search returns its hypotheses best first. Bad requests are errors that name the input.

mod common;

use burn::tensor::{Int, Tensor};
use common::{B, max_abs_diff, values};
use rag_generator::{
    Bart, BartConfig, DecodeState, GenerationConfig, GeneratorError, Llama, LlamaConfig, Padded, PaddingSide,
    StepModel, generate,
};

fn bart() -> Bart<B> {
    let mut config = BartConfig::new(40, 16, 2, 4, 32);
    config.max_position_embeddings = 32;
    config.init_std = 0.5;
    Bart::init(&config, 0.0, &Default::default()).unwrap()
}

fn llama() -> Llama<B> {
    let mut config = LlamaConfig::new(40, 16, 2, 4, 2, 24);
    config.initializer_range = 0.5;
    Llama::init(&config, 0.0, &Default::default()).unwrap()
}

fn ids(rows: &[Vec<u32>]) -> Tensor<B, 2, Int> {
    Padded::new(rows, 0, PaddingSide::Right).tensors::<B>(&Default::default()).0
}

#[test]
fn llama_cache_gives_the_full_forward_logits_with_left_padding() {
    let model = llama();
    let prompts = vec![vec![1, 5, 9, 12, 7, 3], vec![1, 30, 4]];
    let padded = Padded::new(&prompts, 0, PaddingSide::Left);
    let (ids, mask) = padded.tensors::<B>(&Default::default());
    let full = model.forward(ids.clone(), mask.clone());
    // Prefill the first four positions at once, then one token at a time.
    let mut state = model.begin(mask.clone().narrow(1, 0, 4));
    let mut parts = vec![model.step_all(&mut state, ids.clone().narrow(1, 0, 4))];
    for i in 4..6 {
        parts.push(model.step_all(&mut state, ids.clone().narrow(1, i, 1)));
    }
    assert_eq!(state.len(), 6);
    let cached = Tensor::cat(parts, 1);
    // Padded positions' logits are meaningless in both; compare the real ones.
    let keep = |t: Tensor<B, 3>| values(t.narrow(1, 3, 3));
    let diff = max_abs_diff(&keep(full.clone()), &keep(cached.clone()));
    assert!(diff < 1e-5, "{diff}");
    let row0 = max_abs_diff(&values(full.narrow(0, 0, 1)), &values(cached.narrow(0, 0, 1)));
    assert!(row0 < 1e-5, "the unpadded row matches everywhere: {row0}");
}

#[test]
fn left_padding_does_not_change_a_prompts_continuation() {
    let model = llama();
    let short = vec![1, 30, 4];
    // EOS is banned so the lengths do not depend on the random weights.
    let config = GenerationConfig {
        max_new_tokens: Some(5),
        min_new_tokens: Some(5),
        ..GenerationConfig::for_llama(model.config())
    };
    let alone = model.generate(std::slice::from_ref(&short), &config).unwrap();
    let batched = model.generate(&[vec![1, 5, 9, 12, 7, 3], short], &config).unwrap();
    assert_eq!(alone.new_tokens(0, &config), batched.new_tokens(1, &config));
    assert_eq!(alone.sequences[0].len(), 3 + 5);
    assert_eq!(batched.sequences[1][..3], [0, 0, 0], "the prompt is left-padded with pad_token_id");
}

#[test]
fn bart_cache_gives_the_full_decoder_logits_and_padding_is_invisible() {
    let model = bart();
    let inputs = vec![vec![0, 7, 9, 11, 2], vec![0, 5, 2]];
    let padded = Padded::new(&inputs, 1, PaddingSide::Right);
    let (input_ids, mask) = padded.tensors::<B>(&Default::default());
    let targets = ids(&[vec![2, 8, 13, 21], vec![2, 4, 4, 9]]);
    let encoded = model.encode(input_ids.clone(), mask.clone());
    let full = model.decode(targets.clone(), None, encoded, mask.clone());
    let mut state = model.begin(input_ids, mask);
    let steps: Vec<_> = (0..4).map(|i| model.step_all(&mut state, targets.clone().narrow(1, i, 1))).collect();
    assert!(max_abs_diff(&values(full.clone()), &values(Tensor::cat(steps, 1))) < 1e-5);
    // The short input alone (no padding) decodes to the same logits as its padded row.
    let alone = model.forward(rag_generator::BartBatch {
        input_ids: ids(&[vec![0, 5, 2]]),
        attention_mask: ids(&[vec![1, 1, 1]]),
        decoder_input_ids: targets.narrow(0, 1, 1),
        decoder_attention_mask: None,
    });
    assert!(max_abs_diff(&values(alone), &values(full.narrow(0, 1, 1))) < 1e-5);
}

#[test]
fn rows_reorder_and_repeat_with_their_caches() {
    let model = bart();
    let inputs = vec![vec![0, 7, 9, 11, 2], vec![0, 5, 2]];
    let mut a = model.begin_ids(&inputs).unwrap();
    let mut b = a.clone();
    let _ = model.step(&mut a, ids(&[vec![2], vec![2]]));
    let _ = model.step(&mut b, ids(&[vec![2], vec![2]]));
    // Swap and duplicate rows of `b`: row r of `b` is now row [1, 0, 1][r] of `a`.
    b.select_rows(Tensor::from_data([1, 0, 1], &Default::default()));
    assert_eq!(b.rows(), 3);
    let la = values(model.step(&mut a, ids(&[vec![8], vec![6]])));
    let lb = values(model.step(&mut b, ids(&[vec![6], vec![8], vec![6]])));
    let v = 40;
    assert!(max_abs_diff(&lb[..v], &la[v..]) < 1e-6);
    assert!(max_abs_diff(&lb[v..2 * v], &la[..v]) < 1e-6);
    assert!(max_abs_diff(&lb[2 * v..], &la[v..]) < 1e-6);
}

#[test]
fn beam_search_returns_distinct_hypotheses_best_first() {
    let model = bart();
    let inputs = vec![vec![0, 7, 9, 11, 2], vec![0, 5, 2]];
    let base = GenerationConfig { max_length: 8, num_beams: 4, ..GenerationConfig::for_bart(model.config()) };
    let all = model.generate(&inputs, &GenerationConfig { num_return_sequences: 4, ..base.clone() }).unwrap();
    assert_eq!(all.sequences.len(), 8);
    for input in 0..2 {
        let scores = &all.scores[input * 4..input * 4 + 4];
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        let rows = &all.sequences[input * 4..input * 4 + 4];
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], 2, "rows start with the decoder start token");
            assert!(rows[..i].iter().all(|other| other != r), "hypotheses are distinct: {rows:?}");
        }
    }
    let best = model.generate(&inputs, &base).unwrap();
    assert_eq!(best.sequences[0][..], all.sequences[0][..best.sequences[0].len()]);
    assert_eq!(best.sequences[1][..], all.sequences[4][..best.sequences[1].len()]);
}

#[test]
fn forced_tokens_and_lengths_are_respected() {
    let model = bart();
    let inputs = vec![vec![0, 7, 9, 11, 2]];
    for beams in [1, 3] {
        let config = GenerationConfig {
            max_length: 6,
            num_beams: beams,
            forced_bos_token_id: Some(17),
            forced_eos_token_id: Some(2),
            ..GenerationConfig::for_bart(model.config())
        };
        let out = model.generate(&inputs, &config).unwrap();
        let row = &out.sequences[0];
        assert_eq!(row[1], 17, "forced first token ({beams} beams): {row:?}");
        assert!(row.len() <= 6);
        assert!(row.contains(&2) || row.len() < 6, "EOS forced at max_length: {row:?}");
    }
}

#[test]
fn the_step_interface_drives_the_same_search_as_generate() {
    let model = llama();
    let prompts = vec![vec![1, 5, 9], vec![1, 30, 4, 8]];
    let config =
        GenerationConfig { max_new_tokens: Some(4), num_beams: 2, ..GenerationConfig::for_llama(model.config()) };
    let (state, padded) = model.begin_prompts(&prompts, config.pad_id()).unwrap();
    assert_eq!(generate(&model, state, &padded, &config).unwrap(), model.generate(&prompts, &config).unwrap());
}

#[test]
fn bad_requests_are_errors_that_name_the_input() {
    let model = bart();
    let config = GenerationConfig::for_bart(model.config());
    let err = model.generate(&[vec![0, 99, 2]], &config).unwrap_err();
    assert!(matches!(err, GeneratorError::Input { field: "input_ids", .. }), "{err}");
    assert!(err.to_string().contains("id 99"), "{err}");
    let err = model.generate(&[vec![0; 40]], &config).unwrap_err();
    assert!(err.to_string().contains("32 positions"), "{err}");
    let err = model
        .generate(&[vec![0, 2]], &GenerationConfig { num_beams: 2, num_return_sequences: 3, ..config.clone() })
        .unwrap_err();
    assert!(err.to_string().contains("num_return_sequences"), "{err}");
    let err = model.generate(&[vec![0, 2]], &GenerationConfig { max_length: 64, ..config }).unwrap_err();
    assert!(err.to_string().contains("max_length"), "{err}");
    let llama = llama();
    let err = llama.generate(&[vec![]], &GenerationConfig::for_llama(llama.config())).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn the_generator_handle_decodes_groups_from_their_shared_suffix_as_the_model_does_alone() {
    use rag_generator::{Generator, GeneratorKind, SpecialTokens};
    let special = SpecialTokens { bos: Some(1), eos: 2, pad: 0, decoder_start: Some(2) };
    let generator = Generator::Llama(llama());
    assert_eq!(generator.kind(), GeneratorKind::DecoderOnly);
    // Two groups of two rows; each group's rows end in the same two tokens.
    let rows = vec![vec![1, 5, 9, 7, 3], vec![1, 30, 7, 3], vec![1, 8, 4, 6], vec![1, 11, 12, 13, 4, 6]];
    let (mut state, prompt) = generator.begin_rows(&rows, 2, &[2, 2], special).unwrap();
    assert_eq!(prompt, vec![vec![3], vec![6]]);
    assert_eq!(state.rows(), 4);
    // Feeding the prompts (once per row) gives what the LM gives on each whole row alone.
    let per_row =
        Tensor::<B, 2, Int>::from_data(burn::tensor::TensorData::new(vec![3i64, 3, 6, 6], [4, 1]), &Default::default());
    let last = generator.step(&mut state, per_row);
    let Generator::Llama(llama) = &generator else { unreachable!() };
    for (r, row) in rows.iter().enumerate() {
        let alone = llama.forward(ids(std::slice::from_ref(row)), ids(&[vec![1; row.len()]]));
        let alone = alone.narrow(1, row.len() - 1, 1).reshape([1, 40]);
        let diff = max_abs_diff(&values(last.clone().narrow(0, r, 1)), &values(alone));
        assert!(diff < 1e-4, "row {r}: {diff}");
    }
    // Rows that do not end in the same tokens, or a group size that does not divide them, are
    // refused by name.
    let err = generator.begin_rows(&rows, 2, &[3, 2], special).unwrap_err().to_string();
    assert!(err.contains("shared_suffix") && err.contains("group 0"), "{err}");
    let err = generator.begin_rows(&rows, 3, &[2], special).unwrap_err().to_string();
    assert!(err.contains("groups of 3"), "{err}");

    let bart = Generator::Bart(bart());
    assert_eq!(bart.kind(), GeneratorKind::Seq2Seq);
    let (state, prompt) = bart.begin_rows(&rows, 2, &[], special).unwrap();
    assert_eq!((state.rows(), prompt), (4, vec![vec![2], vec![2]]));
    let no_start = SpecialTokens { decoder_start: None, ..special };
    let err = bart.begin_rows(&rows, 2, &[], no_start).unwrap_err().to_string();
    assert!(err.contains("decoder start"), "{err}");
}

#[test]
fn a_generator_saved_as_its_config_comes_back_as_the_same_architecture() {
    use rag_generator::Generator;
    let dir = tempfile::tempdir().unwrap();
    for generator in [Generator::Bart(bart()), Generator::Llama(llama())] {
        let path = dir.path().join(format!("{}.json", generator.architecture()));
        std::fs::write(&path, generator.config_json().to_string()).unwrap();
        let back = Generator::<B>::from_config_file(generator.architecture(), &path, &Default::default()).unwrap();
        assert_eq!((back.architecture(), back.vocab_size()), (generator.architecture(), generator.vocab_size()));
        assert_eq!(back.config_json(), generator.config_json());
        let err = Generator::<B>::from_config_file("t5", &path, &Default::default()).unwrap_err().to_string();
        assert!(err.contains("`t5`") && err.contains("bart, llama"), "{err}");
    }
}

/// Sampling draws from the model's distribution after temperature, top-k and top-p: with top-k
/// 1 it is greedy search; a seed repeats its draws; a token outside the top k is never drawn; and
/// beam sampling is refused by name.
#[test]
fn sampling_is_seeded_and_keeps_to_its_top_k_and_top_p() {
    let model = llama();
    let prompts = vec![vec![1, 5, 9], vec![1, 30, 4, 7]];
    let base = GenerationConfig {
        max_new_tokens: Some(6),
        eos_token_id: vec![2],
        pad_token_id: Some(0),
        ..Default::default()
    };
    let greedy = model.generate(&prompts, &base).unwrap();
    let sample =
        |extra: GenerationConfig| model.generate(&prompts, &GenerationConfig { do_sample: true, ..extra }).unwrap();
    assert_eq!(sample(GenerationConfig { top_k: 1, seed: 7, ..base.clone() }).sequences, greedy.sequences);
    let hot = GenerationConfig { top_k: 0, temperature: 3.0, ..base.clone() };
    let a = sample(GenerationConfig { seed: 1, ..hot.clone() });
    assert_eq!(a.sequences, sample(GenerationConfig { seed: 1, ..hot.clone() }).sequences, "a seed repeats");
    let differ = (2..8).any(|seed| sample(GenerationConfig { seed, ..hot.clone() }).sequences != a.sequences);
    assert!(differ, "other seeds draw other tokens");
    // The first drawn token of each row is among the prompt's 3 most likely next tokens, and
    // with top-p 1e-9 it is the most likely one.
    for (row, prompt) in prompts.iter().enumerate() {
        let logits = values(model.forward(ids(std::slice::from_ref(prompt)), ids(&[vec![1; prompt.len()]])));
        let last = &logits[(prompt.len() - 1) * 40..prompt.len() * 40];
        let mut order: Vec<usize> = (0..40).collect();
        order.sort_by(|&x, &y| last[y].total_cmp(&last[x]));
        for seed in 0..20 {
            let out = sample(GenerationConfig { top_k: 3, temperature: 5.0, seed, ..base.clone() });
            let first = out.sequences[row][prompt.len().max(4)..][0] as usize;
            assert!(order[..3].contains(&first), "row {row}, seed {seed}: token {first} is outside the top 3");
        }
        let nucleus = sample(GenerationConfig { top_k: 0, top_p: 1e-9, seed: 3, ..base.clone() });
        assert_eq!(nucleus.sequences[row], greedy.sequences[row]);
    }
    let err = model.generate(&prompts, &GenerationConfig { do_sample: true, num_beams: 2, ..base }).unwrap_err();
    assert!(err.to_string().contains("do_sample"), "{err}");
}

#[test]
fn a_ragged_prefill_in_passes_continues_each_row_as_the_row_alone() {
    let model = llama();
    // The third row comes twice: it is fed once.
    let rows =
        vec![vec![1, 5, 9, 12, 7, 3], vec![1, 30], vec![1, 8, 4, 6, 2], vec![1, 11, 13], vec![4], vec![1, 8, 4, 6, 2]];
    let next = vec![vec![17u32, 18], vec![19, 20], vec![21, 22], vec![23, 24], vec![25, 26], vec![27, 28]];
    let continued = |tokens_per_pass: usize| {
        let mut state = model.prefill_in_passes(&rows, 0, tokens_per_pass).unwrap();
        assert_eq!((state.rows(), state.len()), (6, 6));
        model.step_all(&mut state, ids(&next))
    };
    // Six tokens a pass: the distinct rows are fed as [6], [5], [3], [2], [1] (a pass ends
    // before a row it would pad by over a quarter); 1,000: one left-padded pass.
    let (passes, one) = (continued(6), continued(1000));
    for (r, row) in rows.iter().enumerate() {
        let whole: Vec<u32> = row.iter().chain(&next[r]).copied().collect();
        let alone = model.forward(ids(std::slice::from_ref(&whole)), ids(&[vec![1; whole.len()]]));
        let alone = values(alone.narrow(1, row.len(), 2));
        for (what, got) in [("passes", &passes), ("one pass", &one)] {
            let diff = max_abs_diff(&values(got.clone().narrow(0, r, 1)), &alone);
            assert!(diff < 1e-4, "{what}, row {r}: {diff}");
        }
    }
    let err = model.prefill(&[], 0).unwrap_err().to_string();
    assert!(err.contains("prompts"), "{err}");
    let err = model.prefill(&[vec![1, 99]], 0).unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
}

#[test]
fn continuing_a_cached_prefix_gives_the_teacher_forced_answer_logits() {
    use rag_generator::{Generator, SpecialTokens, continuation_logits};
    let special = SpecialTokens { bos: Some(1), eos: 2, pad: 0, decoder_start: Some(2) };
    // Two answers on two rows each, the rows of an answer ending in the same two tokens.
    let rows = vec![vec![1, 5, 9, 7, 3], vec![1, 30, 7, 3], vec![1, 8, 4, 6], vec![1, 11, 12, 13, 4, 6]];
    let answers = vec![vec![14u32, 15, 2], vec![16, 2, 0]];
    for generator in [Generator::Llama(llama()), Generator::Bart(bart())] {
        let shared: &[usize] = if generator.architecture() == "llama" { &[2, 2, 2, 2] } else { &[] };
        let (mut state, prompt) = generator.begin_rows(&rows, 1, shared, special).unwrap();
        let per_row: Vec<Vec<u32>> = answers.iter().flat_map(|a| [a.clone(), a.clone()]).collect();
        let cached = continuation_logits(&generator, &mut state, &prompt, &per_row).unwrap();
        let forced = generator.answer_logits(&rows, &answers, special).unwrap().logits;
        assert_eq!(cached.dims(), forced.dims());
        // The answers' real tokens (the second answer's padding is scored differently).
        for (r, real) in [(0, 3), (1, 3), (2, 2), (3, 2)] {
            let row = |t: Tensor<B, 3>| values(t.narrow(0, r, 1).narrow(1, 0, real));
            let diff = max_abs_diff(&row(cached.clone()), &row(forced.clone()));
            assert!(diff < 1e-4, "{}, row {r}: {diff}", generator.architecture());
        }
        let err = continuation_logits(&generator, &mut state.clone(), &prompt[..2], &per_row).unwrap_err();
        assert!(err.to_string().contains("prompt rows"), "{err}");
    }
}

//! Agreement of the aligned API with HuggingFace's `get_nll` on `tests/fixtures/hf/losses.json`
//! (a copy of `shared/fixtures/hf/losses.json`) wherever HF's quirks do not trigger. The parity of
//! the HF-compatible entry points themselves is `rag-parity`'s test `losses.rs`.

mod common;

use std::path::Path;

use common::{Ad, assert_close, bools, floats, ints, values};
use rag_check::{LossKind, load_loss_cases};
use rag_losses::{NllConfig, rag_sequence_nll, rag_token_nll, split_docs};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/losses.json");

/// The aligned API, fed HF's shifted target and pad mask, gives HF's loss and gradients unless a
/// quirk triggers: RAG-Sequence's prior lost when shifted position 1 is padding (or T = 1), or
/// `exclude_bos_score` with every shifted row starting with BOS.
#[test]
fn aligned_api_agrees_with_hf_where_quirks_do_not_trigger() {
    let cases = load_loss_cases(Path::new(FIXTURE)).unwrap();
    let mut compared = 0;
    for case in &cases {
        let [rows, t, v] = case.seq_logits.dims::<3>();
        let [b, k] = case.doc_scores.dims::<2>();
        let shifted: Vec<i64> = case
            .target
            .data
            .chunks(t)
            .flat_map(|row| row[1..].iter().copied().chain([case.pad_id]).collect::<Vec<_>>())
            .collect();
        let counted: Vec<bool> = shifted.iter().map(|&id| id != case.pad_id).collect();
        let prior_lost = t < 2 || (0..b).any(|r| !counted[r * t + 1]);
        let bos_dropped =
            case.exclude_bos_score && case.bos_id.is_some_and(|bos| (0..b).all(|r| shifted[r * t] == bos));
        let quirk = case.kind == LossKind::RagSequence && (prior_lost || bos_dropped);
        if quirk {
            continue;
        }
        let logits = floats::<Ad, 3>(&case.seq_logits.data, [rows, t, v]).require_grad();
        let scores = floats::<Ad, 2>(&case.doc_scores.data, [b, k]).require_grad();
        let f = match case.kind {
            LossKind::RagToken => rag_token_nll::<Ad>,
            LossKind::RagSequence => rag_sequence_nll::<Ad>,
        };
        let loss = f(
            split_docs(logits.clone(), k).unwrap(),
            scores.clone(),
            ints(&shifted, [b, t]),
            bools(&counted, [b, t]),
            &NllConfig::new().with_label_smoothing(case.epsilon),
        )
        .unwrap();
        let grads = loss.clone().sum().backward();
        let tol = 1e-9;
        assert_close(&format!("{} loss", case.name), &values(loss), &case.loss.data, tol);
        assert_close(
            &format!("{} grad doc_scores", case.name),
            &values(scores.grad(&grads).unwrap()),
            &case.grad_doc_scores.data,
            tol,
        );
        assert_close(
            &format!("{} grad logits", case.name),
            &values(logits.grad(&grads).unwrap()),
            &case.grad_seq_logits.data,
            tol,
        );
        compared += 1;
    }
    println!("aligned API compared with HF on {compared} of {} cases", cases.len());
    assert!(compared >= cases.len() / 2, "too few cases free of quirks: {compared}");
}

/// A fixture whose quirk does trigger really differs from the aligned API (the quirk is real).
#[test]
fn rag_sequence_prior_quirk_changes_the_loss_when_target_has_one_position() {
    let cases = load_loss_cases(Path::new(FIXTURE)).unwrap();
    let case = cases
        .iter()
        .find(|c| c.kind == LossKind::RagSequence && c.target.shape[1] == 1 && c.doc_scores.shape[1] > 1)
        .expect("the fixture set has a tgt_len = 1 RAG-Sequence case");
    // With T = 1 the shifted target is all padding and HF drops the prior: every document's
    // (empty) sequence scores log 1 = 0, so HF's loss is −((1 − ε) + ε/V)·log K, where the aligned
    // API, which keeps the prior, gives an NLL of −log Σ_z p(z|x) = 0 (shown without smoothing).
    let k = case.doc_scores.shape[1] as f64;
    let v = case.seq_logits.shape[2] as f64;
    let hf = -((1.0 - case.epsilon) + case.epsilon / v) * k.ln();
    assert_close("HF loss with the prior lost", &case.loss.data, &vec![hf; case.loss.data.len()], 1e-12);
    let [b, _] = case.doc_scores.dims::<2>();
    let aligned = rag_sequence_nll(
        split_docs(floats::<Ad, 3>(&case.seq_logits.data, case.seq_logits.dims::<3>()), case.doc_scores.shape[1])
            .unwrap(),
        floats::<Ad, 2>(&case.doc_scores.data, case.doc_scores.dims::<2>()),
        ints(&vec![case.pad_id; b], [b, 1]),
        bools(&vec![false; b], [b, 1]),
        &NllConfig::new(),
    )
    .unwrap();
    assert_close("aligned API keeps the prior", &values(aligned), &vec![0.0; b], 1e-12);
}

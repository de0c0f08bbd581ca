//! `cargo xtask train` killed (SIGKILL) in the middle of training and resumed with `--resume`
//! ends with the metrics of an uninterrupted run: the same losses at every logged step and the
//! same evaluation.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn train(runs: &Path, name: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["train", "--runs-dir"]).arg(runs).args(["--name", name]);
    cmd.args([
        "--entities",
        "30",
        "--read-steps",
        "4",
        "--steps",
        "16",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "4",
        "--eval-limit",
        "12",
        "--no-baselines",
        "--progress",
        "false",
    ]);
    cmd.args(extra);
    cmd
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    stage_losses(run, "main")
}

fn stage_losses(run: &Path, stage: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join(stage).join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn report(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_run_killed_mid_training_and_resumed_matches_an_uninterrupted_one() {
    let runs = tempfile::tempdir().unwrap();
    let whole = train(runs.path(), "whole", &[]).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let last_line = String::from_utf8_lossy(&whole.stdout).lines().last().unwrap().to_string();
    assert!(last_line.ends_with("report.json") && Path::new(&last_line).is_file(), "last line: {last_line}");

    // Kill the second run as soon as its second checkpoint (step 8) is in place.
    let cut = runs.path().join("cut");
    let mut child = train(runs.path(), "cut", &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let latest = cut.join("main").join("checkpoints").join("latest");
    loop {
        if std::fs::read_to_string(&latest).is_ok_and(|s| s.trim() == "step-00000008") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "no checkpoint at step 8 in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.join("report.json").exists(), "killed before the end");

    let resumed = train(runs.path(), "cut", &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming at step"));
    let (a, b) = (report(&runs.path().join("whole")), report(&cut));
    assert_eq!(b["stages"]["main"]["resumed_from"].as_u64().map(|s| s >= 8), Some(true), "{b}");
    assert_eq!(losses(&runs.path().join("whole")), losses(&cut), "every logged loss, each step once");
    assert_eq!(a["after"], b["after"], "the same final evaluation");
    assert_eq!(a["before"], b["before"]);

    // A resume with a setting that shapes the run changed is refused, naming it; on purpose it
    // goes on.
    let changed = train(runs.path(), "cut", &["--resume", "--generator-lr", "0.001"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success(), "{stderr}");
    assert!(stderr.contains("not the one that wrote the checkpoint") && stderr.contains("lr was 0.002, is now 0.001"));
    let forced = ["--resume", "--generator-lr", "0.001", "--allow-changed-resume"];
    let forced = train(runs.path(), "cut", &forced).output().unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
}

#[test]
fn user_data_with_a_bad_line_fails_early_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let corpus = write("corpus.jsonl", "{\"id\": 1, \"title\": \"t\", \"text\": \"x\"}\n");
    let train =
        write("train.jsonl", "{\"question\": \"q\", \"answers\": [\"a\"]}\n{\"question\": \"q\", \"answers\": []}\n");
    let dev = write("dev.jsonl", "{\"question\": \"q\", \"answers\": [\"a\"]}\n");
    let run = |train: &Path, retriever: &Path| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["train", "--runs-dir"])
            .arg(dir.path().join("runs"))
            .arg("--corpus")
            .arg(&corpus)
            .arg("--train")
            .arg(train)
            .arg("--dev")
            .arg(&dev)
            .arg("--retriever")
            .arg(retriever)
            .arg("--generator")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&train, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("train.jsonl:2") && stderr.contains("`answers` is an empty list"), "{stderr}");
    let good = write("good.jsonl", "{\"question\": \"q\", \"answers\": [\"a\"]}\n");
    let out = run(&good, &dir.path().join("nowhere"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--retriever") && stderr.contains("nowhere"), "{stderr}");
}

#[test]
fn training_the_document_encoder_refreshes_the_index_and_reports_it() {
    let runs = tempfile::tempdir().unwrap();
    let out = train(runs.path(), "docs", &["--train-doc-encoder", "--refresh-every", "4", "--retriever-start", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report(&runs.path().join("docs"));
    assert_eq!(report["settings"]["train_doc_encoder"], true);
    let lr = std::fs::read_to_string(runs.path().join("docs").join("main").join("metrics.jsonl")).unwrap();
    assert!(lr.contains("\"document_encoder\""), "the document encoder has a learning rate: {lr}");
}

#[test]
fn seeds_runs_every_seed_and_reports_each_rows_mean_and_spread() {
    let runs = tempfile::tempdir().unwrap();
    let out = train(runs.path(), "multi", &["--seeds", "2", "--seed", "5"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    assert!(last.ends_with("seeds.json"), "last line: {last}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    assert_eq!(summary["seeds"], serde_json::json!([5, 6]));
    let (a, b) = (report(&runs.path().join("multi").join("seed-5")), report(&runs.path().join("multi").join("seed-6")));
    let recall = &summary["rows"]["after"]["recall_at_1"];
    let (ra, rb) = (a["after"]["recall_at_1"].as_f64().unwrap(), b["after"]["recall_at_1"].as_f64().unwrap());
    assert_eq!(recall["n"], 2);
    assert!((recall["mean"].as_f64().unwrap() - (ra + rb) / 2.0).abs() < 1e-12, "{summary}");
    assert_eq!(recall["min"].as_f64().unwrap(), ra.min(rb));
    assert!(summary["rows"]["bm25"]["recall_at_1"]["std"].as_f64().unwrap() == 0.0, "BM25 does not depend on the seed");
}

#[test]
fn ra_dit_lsr_runs_its_copy_read_lm_and_lsr_stages_and_reports_its_teacher() {
    let runs = tempfile::tempdir().unwrap();
    let extra = [
        "--recipe",
        "ra-dit-lsr",
        "--copy-steps",
        "4",
        "--lm-steps",
        "4",
        "--min-teacher-exact-match",
        "0",
        "--n-docs",
        "4",
    ];
    let out = train(runs.path(), "lsr", &extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report(&runs.path().join("lsr"));
    for stage in ["copy", "read", "lm", "main"] {
        assert!(report["stages"][stage]["steps"].as_u64().unwrap() > 0, "stage {stage}: {report}");
    }
    assert_eq!(report["stages"]["copy"]["reads"], "closed-book");
    assert_eq!(report["stages"]["lm"]["reads"], "gold-and-retrieved");
    assert_eq!(report["settings"]["lm_docs"], 3);
    assert!(report["teacher"]["exact_match"].is_number(), "the teacher's gold-passage exact match is reported");
    // The LM stage trained on three slots and was measured on the model's four.
    assert!(report["stages"]["lm"]["test"]["recall_at_1"].is_number());
}

/// Words of the user-data world below: few enough for the fixtures' vocabularies (97 and 101).
const ENTITIES: [&str; 8] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
const VALUES: [&str; 8] = ["red", "blue", "green", "black", "white", "pink", "gray", "gold"];

/// A user's data as `--corpus/--train/--dev/--retriever/--generator` take it, written by the test:
/// HF-format models from the fixtures (a BERT and a BART, with the BART's dropout on in training)
/// with word-level tokenizers over the words above.
fn user_world(dir: &Path) -> Vec<std::ffi::OsString> {
    user_world_with(dir, "bart")
}

/// [`user_world`] with the generator fixture `generator` (`bart` or `llama`).
fn user_world_with(dir: &Path, generator_fixture: &str) -> Vec<std::ffi::OsString> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let copy = |from: &str, to: &Path, files: &[&str]| {
        std::fs::create_dir_all(to).unwrap();
        for f in files {
            std::fs::copy(root.join(from).join(f), to.join(f)).unwrap();
        }
    };
    let (retriever, generator) = (dir.join("retriever"), dir.join("generator"));
    copy("crates/rag-retriever/tests/fixtures/hf/bert", &retriever, &["config.json", "model.safetensors"]);
    let fixture = format!("crates/rag-generator/tests/fixtures/hf/{generator_fixture}");
    copy(&fixture, &generator, &["config.json", "model.safetensors"]);
    let mut passages = String::new();
    let (mut train, mut dev) = (String::new(), String::new());
    for (i, (e, v)) in ENTITIES.iter().zip(VALUES).enumerate() {
        passages.push_str(&format!("{{\"id\": {i}, \"title\": \"{e}\", \"text\": \"{e} likes {v} .\"}}\n"));
        let q = format!("{{\"question\": \"what does {e} like ?\", \"answers\": [\"{v}\"], \"gold\": {i}}}\n");
        if i < 6 { train.push_str(&q) } else { dev.push_str(&q) }
    }
    let texts: Vec<String> = passages.lines().chain(train.lines()).chain(dev.lines()).map(str::to_string).collect();
    rag_retriever::TextTokenizer::word_level(&texts, 1, 32).unwrap().save(&retriever.join("tokenizer.json")).unwrap();
    let mut vocab = serde_json::Map::new();
    let words = ["<s>", "<pad>", "</s>", "<unk>", "likes", ".", "what", "does", "like", "?", "/", "//"];
    for w in words.iter().chain(&ENTITIES).chain(&VALUES) {
        vocab.insert(w.to_string(), vocab.len().into());
    }
    let added: Vec<Value> = words[..4]
        .iter()
        .enumerate()
        .map(|(id, w)| {
            serde_json::json!({"id": id, "content": w, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}});
    std::fs::write(generator.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let files = [("corpus.jsonl", passages), ("train.jsonl", train), ("dev.jsonl", dev)];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for (flag, path) in [
        ("--corpus", dir.join("corpus.jsonl")),
        ("--train", dir.join("train.jsonl")),
        ("--dev", dir.join("dev.jsonl")),
        ("--retriever", retriever),
        ("--generator", generator),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args
}

fn user_train(runs: &Path, name: &str, world: &[std::ffi::OsString], extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["train", "--runs-dir"]).arg(runs).args(["--name", name]).args(world);
    cmd.args(["--n-docs", "2", "--steps", "12", "--batch-size", "3", "--checkpoint-every", "4", "--eval-every", "0"]);
    cmd.args(["--progress", "false"]).args(extra);
    cmd
}

fn all_losses(run: &Path) -> Vec<(String, u64, f64)> {
    ["main", "frozen_retriever", "closed_book"]
        .iter()
        .flat_map(|stage| stage_losses(run, stage).into_iter().map(|(s, l)| (stage.to_string(), s, l)))
        .collect()
}

/// With dropout (a pretrained generator) every stage draws from the backend's one RNG: a run
/// repeats itself exactly and, killed mid-training and resumed, ends as an uninterrupted one
/// (the baselines ran on a second thread beside the main stage, and two identical runs logged
/// different losses).
#[test]
fn a_user_data_run_with_dropout_repeats_itself_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let world = user_world(dir.path());
    let runs = dir.path().join("runs");
    for name in ["first", "second"] {
        let out = user_train(&runs, name, &world, &[]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let first = all_losses(&runs.join("first"));
    assert!(first.iter().filter(|(s, _, _)| s == "main").count() >= 1, "{first:?}");
    assert_eq!(first, all_losses(&runs.join("second")), "two identical runs log the same losses");

    let cut = runs.join("cut");
    let mut child = user_train(&runs, "cut", &world, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let latest = cut.join("main").join("checkpoints").join("latest");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_to_string(&latest).is_ok_and(|s| s.trim() == "step-00000008") {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "no checkpoint at step 8 in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = user_train(&runs, "cut", &world, &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(report(&cut)["stages"]["main"]["resumed_from"].as_u64().map(|s| s >= 8), Some(true));
    assert_eq!(first, all_losses(&cut), "the resumed run logs what an uninterrupted one does");
    assert_eq!(report(&runs.join("first"))["after"], report(&cut)["after"]);
}

/// The RAG recipes train a decoder-only generator too (each passage its own prompt, the
/// marginal per token or per answer), and decode as they trained: RAG-Token with the per-token
/// mixture, RAG-Sequence with whole answers.
#[test]
fn rag_token_and_rag_sequence_train_a_decoder_only_generator() {
    let dir = tempfile::tempdir().unwrap();
    let world = user_world_with(dir.path(), "llama");
    let runs = dir.path().join("runs");
    for (recipe, decoding) in [("rag-token", "Token"), ("rag-sequence", "SequenceThorough")] {
        let args = ["--recipe", recipe, "--no-baselines", "--generator-lr", "0.01"];
        let out = user_train(&runs, recipe, &world, &args).output().unwrap();
        assert!(out.status.success(), "{recipe}: {}", String::from_utf8_lossy(&out.stderr));
        let run = runs.join(recipe);
        assert_eq!(report(&run)["settings"]["decoding"], decoding, "{recipe}");
        let losses = stage_losses(&run, "main");
        let (first, last) = (losses.first().unwrap().1, losses.last().unwrap().1);
        assert!(last < first, "{recipe}: the loss goes down: {losses:?}");
    }
}

/// A held-out `--test` file, the two encoders named apart, one index shared by every stage and
/// reused by a second run with `--index` (checked: another corpus's index is refused), then the
/// trained run evaluated on another corpus with `eval --corpus --dev --json`.
#[test]
fn a_run_reuses_one_index_and_is_evaluated_on_another_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let world = user_world(dir.path());
    let runs = dir.path().join("runs");
    let (corpus, retriever) = (dir.path().join("corpus.jsonl"), dir.path().join("retriever"));
    let test = dir.path().join("test.jsonl");
    std::fs::write(&test, "{\"question\": \"what does golf like ?\", \"answers\": [\"gray\"], \"gold\": 6}\n").unwrap();
    // --retriever from the world, then the two encoders apart (the same directory twice).
    let mut args: Vec<std::ffi::OsString> = world.clone();
    for (flag, path) in [("--question-encoder", &retriever), ("--document-encoder", &retriever), ("--test", &test)] {
        args.push(flag.into());
        args.push(path.into());
    }
    let out = user_train(&runs, "first", &args, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = runs.join("first");
    let encoded: Vec<_> = std::fs::read_dir(first.join("indexes")).unwrap().collect();
    assert_eq!(encoded.len(), 1, "main, frozen_retriever and closed_book share one encoding: {encoded:?}");
    assert_eq!(report(&first)["evaluated_on"], "test");
    assert_eq!(report(&first)["settings"]["test_questions"], 1);

    // BM25 as the retriever at inference: its index was kept beside the run's store (the BM25
    // baseline built it), and the question's one rare term finds its passage first.
    let bm25 = std::fs::read_dir(&first).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name());
    assert!(bm25.into_iter().any(|n| n.to_string_lossy().ends_with(".store.bm25")), "no BM25 index in the run");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["ask", "what does golf like ?", "--retriever", "bm25", "--run"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let passages: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with('[')).collect();
    assert!(passages.first().is_some_and(|p| p.contains("#6 golf: golf likes")), "{stdout}");

    let mut reuse = args.clone();
    reuse.extend(["--index".into(), first.join("corpus.index").into()]);
    let out = user_train(&runs, "second", &reuse, &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!runs.join("second").join("indexes").exists(), "the given index is used, nothing encoded");

    // An index of another corpus (one passage fewer) is refused, naming the file.
    let small = dir.path().join("small.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap();
    std::fs::write(&small, text.lines().take(7).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let store = dir.path().join("small.store");
    let ingest = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["ingest"]).arg(&small).arg("-o").arg(&store).output();
    assert!(ingest.unwrap().status.success());
    let index = dir.path().join("small.index");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["index", "--store"])
        .arg(&store)
        .arg("--encoder")
        .arg(&retriever)
        .arg("-o")
        .arg(&index)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut wrong = args.clone();
    wrong.extend(["--index".into(), index.clone().into()]);
    let out = user_train(&runs, "third", &wrong, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("small.index") && stderr.contains("holds 7 vectors and the store 8"), "{stderr}");

    // The trained run over another corpus: the same passages and one more, which the question
    // about it is answered from.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, format!("{text}{{\"id\": 8, \"title\": \"india\", \"text\": \"india likes red .\"}}\n"))
        .unwrap();
    let questions = dir.path().join("other-questions.jsonl");
    std::fs::write(&questions, "{\"question\": \"what does india like ?\", \"answers\": [\"red\"], \"gold\": 8}\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval", "--run"])
        .arg(&first)
        .arg("--corpus")
        .arg(&other)
        .arg("--dev")
        .arg(&questions)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object on one line: {stdout}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["corpus_passages"], 9);
    assert_eq!(result["examples"], 1);
    for metric in ["recall_at_1", "recall_at_5", "recall_at_20", "exact_match", "f1"] {
        assert!(result["metrics"][metric].is_number(), "{metric}: {result}");
    }
    // Passage 8 exists only in the other corpus: with the run's own it would be a refused gold id.
    assert_eq!(result["metrics"]["recall_at_20"], 1.0, "{result}");
}

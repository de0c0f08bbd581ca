//! The command line as a user runs it: output lines and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOSS_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/rag-losses/tests/fixtures/hf");
const RETRIEVER_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/rag-retriever/tests/fixtures/hf");

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("the xtask binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fixture directory with `losses.json` and an empty `rag/`, removed on drop.
struct TempFixtures(PathBuf);

impl TempFixtures {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rag-xtask-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rag")).unwrap();
        std::fs::copy(Path::new(LOSS_FIXTURES).join("losses.json"), dir.join("losses.json")).unwrap();
        Self(dir)
    }
}

impl Drop for TempFixtures {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn parity_losses_passes_and_prints_one_line() {
    let out = xtask(&["parity", LOSS_FIXTURES, "--component", "losses"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().next().unwrap();
    assert!(line.starts_with("losses: ok max_abs_err="), "{line}");
    assert!(line.contains("max_rel_err="), "{line}");
}

#[test]
fn parity_without_components_checks_what_is_present_and_reports_the_rest() {
    let dir = TempFixtures::new("present");
    let out = xtask(&["parity", dir.0.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("losses: ok"), "{text}");
    assert!(text.contains("rag: FAIL"), "an unreadable component is reported: {text}");
    assert!(!text.contains("llama"), "absent components are skipped: {text}");
    assert!(!out.status.success(), "a present component that fails is a failure: {text}");
}

#[test]
fn parity_fails_for_a_requested_component_that_is_unreadable_or_missing() {
    let dir = TempFixtures::new("requested");
    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "rag"]);
    assert!(stdout(&out).contains("rag: FAIL"), "{}", stdout(&out));
    assert!(stdout(&out).contains("expected.json"), "names the file it could not read: {}", stdout(&out));
    assert!(!out.status.success());

    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "losses"]);
    assert!(out.status.success(), "the other components still pass: {}", stdout(&out));

    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "llama"]);
    assert!(stdout(&out).contains("llama: FAIL missing"), "{}", stdout(&out));
    assert!(!out.status.success());
}

#[test]
fn parity_fails_when_a_fixture_value_is_wrong() {
    let dir = TempFixtures::new("wrong");
    let path = dir.0.join("losses.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let loss = &mut json["cases"][0]["loss"]["data"][0];
    *loss = serde_json::json!(loss.as_f64().unwrap() + 1e-3);
    std::fs::write(&path, json.to_string()).unwrap();
    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "losses"]);
    let text = stdout(&out);
    assert!(text.starts_with("losses: FAIL"), "{text}");
    assert!(text.contains(json["cases"][0]["name"].as_str().unwrap()), "names the case: {text}");
    assert!(!out.status.success());
}

#[test]
fn train_refuses_an_unknown_recipe_naming_the_recipes() {
    let out = xtask(&["train", "--recipe", "rag-tokn", "--runs-dir", "/nonexistent-runs-dir/x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown recipe `rag-tokn`") && err.contains("ra-dit-lsr"), "{err}");
}

#[test]
fn bench_index_prints_one_json_object() {
    let out =
        xtask(&["bench-index", "--synthetic", "3000", "16", "--n-queries", "50", "--kind", "hnsw-f16", "--k", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(v["n"], 3000);
    assert_eq!(v["kind"], "HnswF16");
    let recall = v["recall_at_k"].as_f64().unwrap();
    assert!(recall > 0.9 && recall <= 1.0, "{recall}");
    for field in ["build_seconds", "queries_per_second", "bytes_per_vector"] {
        assert!(v[field].as_f64().unwrap() > 0.0, "{field}");
    }
}

#[test]
fn bench_index_reads_fvecs_and_names_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("rag-xtask-fvecs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<f32> = (0..200 * 8).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
    rag_index::write_fvecs(&dir.join("base.fvecs"), 8, &data).unwrap();
    rag_index::write_fvecs(&dir.join("q.fvecs"), 8, &data[..10 * 8]).unwrap();
    let (base, q) = (dir.join("base.fvecs"), dir.join("q.fvecs"));
    let out =
        xtask(&["bench-index", "--base", base.to_str().unwrap(), "--queries", q.to_str().unwrap(), "--kind", "flat"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["n"].as_u64(), v["n_queries"].as_u64(), v["recall_at_k"].as_f64()), (Some(200), Some(10), Some(1.0)));

    std::fs::write(&q, b"\x08\x00\x00\x00\x00").unwrap();
    let out = xtask(&["bench-index", "--base", base.to_str().unwrap(), "--queries", q.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("q.fvecs: record 0: truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ingest_builds_a_store_and_reports_skips() {
    let dir = std::env::temp_dir().join(format!("rag-xtask-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tsv = dir.join("psgs.tsv");
    std::fs::write(&tsv, "id\ttext\ttitle\n1\tone two three four five\tA\n2\t\tB\nbad line\n").unwrap();
    let store = dir.join("p.rps");
    let out = xtask(&["ingest", tsv.to_str().unwrap(), "-o", store.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("psgs.tsv:4: 1 tab-separated fields, the header has 3"), "{err}");
    assert!(!store.exists());

    let out = xtask(&[
        "ingest",
        tsv.to_str().unwrap(),
        "-o",
        store.to_str().unwrap(),
        "--skip-malformed",
        "--chunk-words",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passages"], 3);
    let report = &v["inputs"][0]["report"];
    assert_eq!((report["skipped_malformed"].as_u64(), report["skipped_empty"].as_u64()), (Some(1), Some(1)));
    let store = rag_index::PassageStore::open(&store).unwrap();
    assert_eq!(store.get(2).unwrap().unwrap().text, "five");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parity_bert_and_dpr_pass_in_f32_within_1e_4() {
    let out = xtask(&["parity", RETRIEVER_FIXTURES, "--component", "bert", "--component", "dpr", "--precision", "f32"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("bert: ok") && text.contains("dpr: ok"), "{text}");
    assert!(text.contains("tolerance=1e-4 (absolute)"), "{text}");
}

#[test]
fn parity_minilm_without_weights_is_skipped_with_the_reason() {
    let out = xtask(&["parity", RETRIEVER_FIXTURES, "--component", "minilm"]);
    let text = stdout(&out);
    assert!(text.contains("minilm: skipped: no --minilm-weights"), "{text}");
    assert!(!out.status.success(), "a requested check that did not run is not a pass");

    let out = xtask(&["parity", RETRIEVER_FIXTURES]);
    let text = stdout(&out);
    assert!(text.contains("minilm: skipped"), "{text}");
    assert!(out.status.success(), "not requested: {text}");
}

#[test]
fn parity_reports_an_unreadable_component_and_goes_on() {
    let dir = TempFixtures::new("unreadable");
    std::fs::create_dir_all(dir.0.join("bert")).unwrap();
    let out = xtask(&["parity", dir.0.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("bert: FAIL cannot read fixture"), "{text}");
    assert!(text.contains("expected.json"), "names the file: {text}");
    assert!(text.contains("losses: ok"), "the other components still run: {text}");
    assert!(!out.status.success());
}

#[test]
fn index_encodes_a_store_with_a_hf_encoder_and_writes_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\": 7, \"title\": \"Paris\", \"text\": \"Paris is the capital of France.\"}\n\
         {\"id\": 8, \"title\": \"\", \"text\": \"The cat sat on the mat.\"}\n",
    )
    .unwrap();
    let store = dir.path().join("corpus.store");
    let out = xtask(&["ingest", corpus.to_str().unwrap(), "-o", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let encoder = format!("{RETRIEVER_FIXTURES}/dpr");
    let tokenizer = format!("{RETRIEVER_FIXTURES}/../tiny-wordpiece/tokenizer.json");
    let index = dir.path().join("corpus.index");
    let args = ["index", "--store", store.to_str().unwrap(), "--encoder", &encoder, "--tokenizer", &tokenizer];
    let args: Vec<&str> = args.into_iter().chain(["-o", index.to_str().unwrap()]).collect();

    // The tokenizer would allow 512 tokens; the fixture encoder has 64 positions.
    let out = xtask(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pass --max-len 64"), "{err}");
    assert!(!index.exists());

    let out = xtask(&args.iter().copied().chain(["--max-len", "64"]).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["passages"], 2);
    assert_eq!(report["dim"], 32);
    let index = rag_index::open_index(&index).unwrap();
    assert_eq!(index.len(), 2);
    assert!(index.vector(7).is_some() && index.vector(8).is_some());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_device_not_compiled_in_is_refused_with_the_feature_to_add() {
    if cfg!(feature = "cuda") {
        return println!("skipped: this xtask has the cuda feature");
    }
    for args in [&["--device", "cuda", "parity", LOSS_FIXTURES][..], &["parity", LOSS_FIXTURES, "--device", "cuda:1"]] {
        let out = xtask(args);
        assert!(!out.status.success());
        let text = stderr(&out);
        assert!(text.contains("built without the `cuda` feature"), "{text}");
        assert!(text.contains("--features cuda"), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["parity", LOSS_FIXTURES])
        .env("RAG_DEVICE", "vulkan")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--device vulkan: this xtask was built without the `wgpu` feature"),
        "{}",
        stderr(&out)
    );
    let out = xtask(&["--device", "tpu", "parity", LOSS_FIXTURES]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown device `tpu`"), "{}", stderr(&out));
}

#[test]
fn backends_on_a_cpu_only_build_compares_the_cpu_with_itself_and_skips_the_rest() {
    let json = std::env::temp_dir().join(format!("rag-backends-{}.json", std::process::id()));
    let out = xtask(&["backends", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for case in ["rag-token fixture", "rag-sequence fixture", "embedded step"] {
        let line = text.lines().find(|l| l.starts_with(case)).unwrap_or_else(|| panic!("no {case} row in\n{text}"));
        assert!(line.contains(" cpu ") && line.contains(" ok "), "{line}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    if !cfg!(feature = "cuda") && !cfg!(feature = "wgpu") {
        assert_eq!(rows.len(), 3, "{report}");
    }
    for row in rows.iter().filter(|r| r["device"] == "cpu") {
        assert_eq!(row["max_rel_diff"], 0.0);
        assert!(row["loss"].as_f64().unwrap().is_finite() && row["grad_norm"].as_f64().unwrap() > 0.0, "{row}");
    }
    // The fixture's RAG-Token loss is HF's (checked to 1e-4 by the parity tests): the same
    // computation, so the same number here.
    let token = rows.iter().find(|r| r["case"] == "rag-token fixture").unwrap();
    assert!(token["loss"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_file(json);
    let out = xtask(&["backends", "--require", "cuda"]);
    if !cfg!(feature = "cuda") {
        assert!(!out.status.success());
        assert!(stdout(&out).contains("cuda:0: required but absent: not compiled in"), "{}", stdout(&out));
    }
}

#[test]
fn bench_train_prints_throughput_as_json() {
    let out = xtask(&["bench-train", "--steps", "2", "--warmup", "1", "--batch-size", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["device"], "cpu");
    let result = &report["result"];
    for key in ["examples_per_second", "tokens_per_second", "step_ms_median", "final_loss"] {
        assert!(result[key].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{key}: {result}");
    }
    // Tokens per step: 4 questions × 3 passages, each context row plus the answer.
    assert!(result["tokens_per_step"].as_f64().unwrap() > 4.0 * 3.0 * 5.0, "{result}");
    assert!(report.get("reference").is_none(), "no CPU reference of a CPU run");
}

/// A write that fails halfway (a full disk; here the file-size limit of `ulimit -f`, with
/// SIGXFSZ ignored so the write returns EFBIG as a full disk returns ENOSPC) leaves the previous
/// index as it was and no temporary file, and the error names the file.
#[cfg(unix)]
#[test]
fn a_failed_index_save_keeps_the_previous_index_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": {i}, \"title\": \"t{i}\", \"text\": \"passage number {i} of the corpus\"}}\n"))
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let store = dir.path().join("corpus.store");
    assert!(xtask(&["ingest", corpus.to_str().unwrap(), "-o", store.to_str().unwrap()]).status.success());
    let (encoder, tokenizer) =
        (format!("{RETRIEVER_FIXTURES}/dpr"), format!("{RETRIEVER_FIXTURES}/../tiny-wordpiece/tokenizer.json"));
    let index = dir.path().join("corpus.index");
    let args = [
        "index",
        "--store",
        store.to_str().unwrap(),
        "--encoder",
        &encoder,
        "--tokenizer",
        &tokenizer,
        "--max-len",
        "64",
        "-o",
        index.to_str().unwrap(),
    ];
    assert!(xtask(&args).status.success());
    let before = std::fs::read(&index).unwrap();
    assert!(before.len() > 32 * 1024, "the index must outgrow the limit: {} bytes", before.len());
    let out = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 32; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the save should have failed: {err}");
    assert!(err.contains("corpus.index") && err.to_lowercase().contains("file too large"), "{err}");
    assert_eq!(std::fs::read(&index).unwrap(), before, "the previous index is intact");
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "no temporary file is left: {names:?}");
}

/// `bench-vs-torch` runs the project's side of its cases on its own and, without a Python that
/// can run the reference, says so per case and still exits 0 (the figures are the project's).
#[test]
fn bench_vs_torch_runs_the_project_side_and_reports_a_missing_reference() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("vs.json");
    let out = xtask(&[
        "bench-vs-torch",
        "--quick",
        "--cases",
        "flat,reference-step",
        "--threads",
        "2",
        "--python",
        "/nonexistent/python3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let seconds = case["project"]["seconds"].as_array().unwrap();
        assert!(!seconds.is_empty() && seconds.iter().all(|s| s.as_f64().unwrap() > 0.0), "{case}");
        assert!(case["project"]["peak_rss_bytes"].as_u64().unwrap() > 0, "{case}");
        assert!(case["reference_skipped"].as_str().unwrap().contains("/nonexistent/python3"), "{case}");
        assert!(case.get("speed_ratio").is_none(), "no ratio without a reference: {case}");
    }
    assert_eq!(report["threads"], 2);
}

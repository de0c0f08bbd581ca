//! The command line as a user runs it: output lines and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOSS_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/rag-losses/tests/fixtures/hf"
);

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("the xtask binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fixture directory with `losses.json` and an empty `bert/`, removed on drop.
struct TempFixtures(PathBuf);

impl TempFixtures {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rag-xtask-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bert")).unwrap();
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
    assert!(text.contains("bert: not implemented"), "{text}");
    assert!(!text.contains("bart"), "absent components are skipped: {text}");
    assert!(out.status.success(), "not requested, so not a failure: {text}");
}

#[test]
fn parity_fails_for_a_requested_component_that_is_not_implemented_or_missing() {
    let dir = TempFixtures::new("requested");
    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "bert"]);
    assert!(stdout(&out).contains("bert: not implemented"));
    assert!(!out.status.success());

    let out = xtask(&["parity", dir.0.to_str().unwrap(), "--component", "llama"]);
    assert!(stdout(&out).contains("llama: FAIL missing"), "{}", stdout(&out));
    assert!(!out.status.success());
}

#[test]
fn parity_fails_when_a_fixture_value_is_wrong() {
    let dir = TempFixtures::new("wrong");
    let path = dir.0.join("losses.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
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
fn train_explains_itself_and_exits_non_zero_until_the_trainer_lands() {
    let out = xtask(&["train"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("not implemented yet"), "{err}");
    assert!(err.contains("rag-token"), "{err}");
}

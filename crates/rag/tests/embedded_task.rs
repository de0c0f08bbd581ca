//! The embedded task as a user meets it: generated from the seed alone, hard for keyword search,
//! and written out so anyone can run their own baseline on it.

use rag::rag_index::PassageStore;
use rag::{Bm25, EmbeddedConfig, EmbeddedSetup, SyntheticConfig, SyntheticTask, read_qa_jsonl};

#[test]
fn the_task_depends_on_the_seed_alone() {
    let config = SyntheticConfig::default();
    let a = SyntheticTask::generate(&config).unwrap();
    // Another thread (another hash seed, another stack): the same task.
    let b = std::thread::spawn(move || SyntheticTask::generate(&SyntheticConfig::default()).unwrap()).join().unwrap();
    assert_eq!(a.passages, b.passages);
    assert_eq!((&a.train, &a.dev, &a.test), (&b.train, &b.dev, &b.test));
    let other = SyntheticTask::generate(&SyntheticConfig { seed: config.seed + 1, ..config.clone() }).unwrap();
    assert_ne!(a.passages, other.passages, "the seed changes the task");

    // The files a run writes are byte for byte the same.
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let small = EmbeddedConfig { task: SyntheticConfig::with_entities(40), ..EmbeddedConfig::default() };
    EmbeddedSetup::create(small.clone(), d1.path()).unwrap();
    EmbeddedSetup::create(small, d2.path()).unwrap();
    for file in [
        "corpus.jsonl",
        "train.jsonl",
        "dev.jsonl",
        "test.jsonl",
        "retriever_tokenizer.json",
        "generator_tokenizer.json",
    ] {
        let (x, y) = (std::fs::read(d1.path().join(file)).unwrap(), std::fs::read(d2.path().join(file)).unwrap());
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
}

#[test]
fn bm25_prefers_a_distractor_on_the_default_task_and_the_written_files_agree_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let setup = EmbeddedSetup::create(EmbeddedConfig::default(), dir.path()).unwrap();
    let store = PassageStore::open(&setup.store).unwrap();
    let bm25 = Bm25::build(&store).unwrap();
    let recall = bm25.recall(&store, &setup.task.test, &[1, 5]).unwrap();
    assert!(recall[0].1 <= 0.5, "BM25 recall@1 {} on the test questions: the task is a keyword match", recall[0].1);
    // A distractor outranks the fact because it repeats the question's words.
    let first = &setup.task.test[0];
    let top = bm25.search(&first.question, 1).unwrap()[0].0;
    assert_ne!(Some(top), first.gold);

    let test = read_qa_jsonl(&dir.path().join("test.jsonl")).unwrap();
    assert_eq!(test, setup.task.test);
    let corpus = std::fs::read_to_string(dir.path().join("corpus.jsonl")).unwrap();
    assert_eq!(corpus.lines().count(), store.len());
    for line in corpus.lines().take(50) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let passage = store.get(v["id"].as_u64().unwrap()).unwrap().unwrap();
        assert_eq!((v["title"].as_str().unwrap(), v["text"].as_str().unwrap()), (passage.title, passage.text));
    }
}

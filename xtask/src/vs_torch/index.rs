//! The vector indexes against FAISS on the same vectors: exact inner-product search
//! (`IndexFlatIP`), and HNSW (`IndexHNSWFlat`, M 16, efConstruction 128) at the smallest `ef`
//! each reaches recall@10 ≥ 0.95 with.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::TensorData;
use rag::rag_index::synthetic::Clustered;
use rag::rag_index::{FlatIndex, HnswConfig, HnswIndex, Metric, Storage, VectorIndex, write_fvecs};
use serde_json::{Value, json};

use super::{Options, Side, median, write_case};

const DIM: usize = 384;
const QUERIES: usize = 1000;
const K: usize = 10;
/// The `ef` values both sides sweep.
pub const EFS: [usize; 9] = [10, 16, 24, 32, 48, 64, 96, 128, 192];
/// The recall both sides must reach.
const RECALL: f64 = 0.95;
const ROUNDS: usize = 3;

/// 100,000 clustered vectors (as `bench-index --synthetic` draws them) and 1,000 queries,
/// written as `.fvecs` for the reference.
fn vectors(dir: &Path, options: &Options) -> Result<(usize, Vec<f32>, Vec<f32>)> {
    let n = if options.quick { 20_000 } else { 100_000 };
    let dist = Clustered::new(DIM, (n / 400).clamp(16, 4096), 0.6, 42);
    let base = dist.sample(n, 43);
    let queries = dist.sample(QUERIES, 44);
    write_fvecs(&dir.join("base.fvecs"), DIM, &base)?;
    write_fvecs(&dir.join("queries.fvecs"), DIM, &queries)?;
    Ok((n, base, queries))
}

/// Exact search over every query in one call (what FAISS users do), best of 3 rounds after one
/// untimed; the top 10 ids go to the reference, which counts how many it found too.
pub fn flat(dir: &Path, options: &Options) -> Result<Side> {
    let (n, base, queries) = vectors(dir, options)?;
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut index = FlatIndex::new(DIM, Metric::InnerProduct)?;
    index.add(&ids, &base)?;
    let (seconds, found) = timed_search(&index, &queries)?;
    let found: Vec<i64> = found.into_iter().map(|i| i as i64).collect();
    rag::rag_hf::write_safetensors(
        &dir.join("project_ids.safetensors"),
        &[("ids".into(), TensorData::new(found, [QUERIES, K]))],
    )?;
    write_case(dir, &json!({"threads": options.threads, "k": K, "rounds": ROUNDS}))?;
    Ok(json!({"unit": format!("{QUERIES} queries"), "seconds": seconds, "n": n, "dim": DIM,
              "library": "rag-rs FlatIndex"}))
}

/// HNSW, f32 storage, M 16, efConstruction 128, rescoring off (`rerank` 1): the build, then
/// every `ef` of [`EFS`] over all queries (best of 3), recall@10 against exact search.
pub fn hnsw(dir: &Path, options: &Options) -> Result<Side> {
    let (n, base, queries) = vectors(dir, options)?;
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut exact = FlatIndex::new(DIM, Metric::InnerProduct)?;
    exact.add(&ids, &base)?;
    let truth = exact.search(&queries, K)?.ids;
    let truth_i64: Vec<i64> = truth.iter().map(|&i| i as i64).collect();
    rag::rag_hf::write_safetensors(
        &dir.join("truth.safetensors"),
        &[("ids".into(), TensorData::new(truth_i64, [QUERIES, K]))],
    )?;
    let config = HnswConfig {
        metric: Metric::InnerProduct,
        storage: Storage::F32,
        connectivity: 16,
        expansion_add: 128,
        expansion_search: EFS[0],
        rerank: 1,
    };
    let mut index = HnswIndex::new(DIM, config)?;
    let start = Instant::now();
    index.add(&ids, &base)?;
    let build_seconds = start.elapsed().as_secs_f64();
    eprintln!("built HNSW over {n} vectors in {build_seconds:.1} s");
    let mut sweep = Vec::new();
    for ef in EFS {
        index.set_expansion_search(ef)?;
        let (times, got) = timed_search(&index, &queries)?;
        let hits: usize =
            got.chunks(K).zip(truth.chunks(K)).map(|(g, t)| g.iter().filter(|id| t.contains(id)).count()).sum();
        let recall = hits as f64 / (QUERIES * K) as f64;
        eprintln!("ef {ef}: recall@10 {recall:.4}, {:.0} queries/s", QUERIES as f64 / median(&times));
        sweep.push(json!({"ef": ef, "recall": recall, "seconds": median(&times)}));
    }
    write_case(
        dir,
        &json!({"threads": options.threads, "k": K, "rounds": ROUNDS, "efs": EFS,
                            "connectivity": 16, "ef_construction": 128}),
    )?;
    let chosen = at_recall(&sweep);
    Ok(
        json!({"unit": format!("{QUERIES} queries"), "seconds": chosen.map(|c| vec![c["seconds"].clone()]).unwrap_or_default(),
              "sweep": sweep, "build_seconds": build_seconds, "n": n, "library": "rag-rs HnswIndex (usearch 2.26 builds, own search)"}),
    )
}

/// Every query in one call, [`ROUNDS`] timed rounds after an untimed one: the rounds' seconds
/// and the top-[`K`] ids.
fn timed_search(index: &dyn VectorIndex, queries: &[f32]) -> Result<(Vec<f64>, Vec<u64>)> {
    let mut seconds = Vec::new();
    let mut ids = Vec::new();
    for round in 0..=ROUNDS {
        let start = Instant::now();
        let hits = index.search(queries, K)?;
        if round > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
        ids = hits.ids;
    }
    Ok((seconds, ids))
}

/// The sweep's entry at the smallest `ef` reaching [`RECALL`].
fn at_recall(sweep: &[Value]) -> Option<&Value> {
    sweep.iter().find(|s| s["recall"].as_f64().unwrap_or(0.0) >= RECALL)
}

/// Fills the HNSW row: each side at its own smallest `ef` reaching the recall, and the builds.
pub fn hnsw_row(project: &Side, reference: &Side, row: &mut Value) -> (bool, String) {
    let empty = Vec::new();
    let p = at_recall(project["sweep"].as_array().unwrap_or(&empty));
    let r = at_recall(reference["sweep"].as_array().unwrap_or(&empty));
    row["project"]["build_seconds"] = project["build_seconds"].clone();
    row["reference"]["build_seconds"] = reference["build_seconds"].clone();
    row["project"]["sweep"] = project["sweep"].clone();
    row["reference"]["sweep"] = reference["sweep"].clone();
    match (p, r) {
        (Some(p), Some(r)) => (
            true,
            format!(
                "ef {} here (recall {:.3}), ef {} there (recall {:.3}); builds {:.1} s vs {:.1} s",
                p["ef"],
                p["recall"].as_f64().unwrap_or(f64::NAN),
                r["ef"],
                r["recall"].as_f64().unwrap_or(f64::NAN),
                project["build_seconds"].as_f64().unwrap_or(f64::NAN),
                reference["build_seconds"].as_f64().unwrap_or(f64::NAN),
            ),
        ),
        _ => (false, format!("recall@10 {RECALL} not reached on both sides over ef {EFS:?}")),
    }
}

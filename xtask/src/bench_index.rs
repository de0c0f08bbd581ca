//! `cargo xtask bench-index`: build time, queries per second, recall@k against exact search and
//! memory per vector of one index kind, as one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rag_index::synthetic::Clustered;
use rag_index::{FlatIndex, HnswConfig, HnswIndex, Metric, Storage, VectorIndex, read_fvecs};
use serde_json::json;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Flat,
    HnswF32,
    HnswF16,
    HnswI8,
}

impl Kind {
    /// The HNSW storage of this kind; `None` for the exact index.
    pub fn hnsw_storage(self) -> Option<Storage> {
        match self {
            Kind::Flat => None,
            Kind::HnswF32 => Some(Storage::F32),
            Kind::HnswF16 => Some(Storage::F16),
            Kind::HnswI8 => Some(Storage::I8),
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchIndexArgs {
    /// Base vectors (.fvecs).
    #[arg(long, requires = "queries", conflicts_with = "synthetic")]
    base: Option<PathBuf>,
    /// Query vectors (.fvecs).
    #[arg(long, requires = "base")]
    queries: Option<PathBuf>,
    /// Generate N seeded clustered DIM-dimensional base vectors (and --n-queries queries) instead.
    #[arg(long, num_args = 2, value_names = ["N", "DIM"], required_unless_present = "base")]
    synthetic: Option<Vec<usize>>,
    /// Number of queries (synthetic), or the first queries of the file.
    #[arg(long, default_value_t = 1000)]
    n_queries: usize,
    /// Hits per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The index to measure.
    #[arg(long, value_enum, default_value_t = Kind::HnswF32)]
    kind: Kind,
    /// Similarity.
    #[arg(long, value_enum, default_value_t = MetricArg::Ip)]
    metric: MetricArg,
    /// HNSW edges per node (M).
    #[arg(long, default_value_t = 16)]
    connectivity: usize,
    /// HNSW candidate list while building (efConstruction).
    #[arg(long, default_value_t = 128)]
    expansion_add: usize,
    /// HNSW candidate list while searching (ef).
    #[arg(long, default_value_t = 64)]
    expansion_search: usize,
    /// Candidates per hit rescored exactly on the f32 vectors.
    #[arg(long, default_value_t = 1)]
    rerank: usize,
    /// Queries per search call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of the synthetic set.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MetricArg {
    Ip,
    Cosine,
}

impl From<MetricArg> for Metric {
    fn from(metric: MetricArg) -> Self {
        match metric {
            MetricArg::Ip => Metric::InnerProduct,
            MetricArg::Cosine => Metric::Cosine,
        }
    }
}

pub fn run(args: BenchIndexArgs) -> Result<std::process::ExitCode> {
    let metric = Metric::from(args.metric);
    if args.k == 0 || args.batch == 0 || args.n_queries == 0 {
        bail!("--k, --batch and --n-queries must be at least 1");
    }
    let (dim, base, queries, source) = match (&args.base, &args.queries, &args.synthetic) {
        (Some(b), Some(q), _) => {
            let base = read_fvecs(b, None).with_context(|| format!("reading base vectors {}", b.display()))?;
            let queries =
                read_fvecs(q, Some(args.n_queries)).with_context(|| format!("reading queries {}", q.display()))?;
            if base.dim != queries.dim {
                bail!("{} has dimension {}, {} has {}", b.display(), base.dim, q.display(), queries.dim);
            }
            (base.dim, base.data, queries.data, json!({"base": b, "queries": q}))
        }
        (_, _, Some(nd)) => {
            let (n, dim) = (nd[0], nd[1]);
            if n == 0 || dim == 0 {
                bail!("--synthetic N DIM needs N and DIM of at least 1");
            }
            eprintln!("generating {n} x {dim} clustered vectors (seed {})", args.seed);
            let dist = Clustered::new(dim, (n / 400).clamp(16, 4096), 0.6, args.seed);
            (
                dim,
                dist.sample(n, args.seed + 1),
                dist.sample(args.n_queries, args.seed + 2),
                json!({"synthetic": [n, dim], "seed": args.seed}),
            )
        }
        _ => bail!("give --base FILE --queries FILE, or --synthetic N DIM"),
    };
    let n = base.len() / dim;
    let n_queries = queries.len() / dim;
    let ids: Vec<u64> = (0..n as u64).collect();

    eprintln!("exact ground truth over {n} vectors for {n_queries} queries");
    let mut exact = FlatIndex::new(dim, metric)?;
    let start = Instant::now();
    exact.add(&ids, &base)?;
    let flat_build = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let truth = search_batched(&exact, &queries, dim, args.k, args.batch)?;
    let flat_secs = start.elapsed().as_secs_f64();
    let flat_gflops = 2.0 * n as f64 * dim as f64 * n_queries as f64 / flat_secs / 1e9;

    let (index, build_seconds): (Box<dyn VectorIndex>, f64) = match args.kind.hnsw_storage() {
        None => (Box::new(exact.clone()), flat_build),
        Some(storage) => {
            let config = HnswConfig {
                metric,
                storage,
                connectivity: args.connectivity,
                expansion_add: args.expansion_add,
                expansion_search: args.expansion_search,
                rerank: args.rerank,
            };
            eprintln!("building {:?} over {n} vectors", args.kind);
            let mut h = HnswIndex::new(dim, config)?;
            let start = Instant::now();
            h.add(&ids, &base)?;
            (Box::new(h), start.elapsed().as_secs_f64())
        }
    };
    // The first search after a build reads HNSW's graph out of usearch (f32 storage): timed on
    // its own, so that queries/s is the steady rate.
    let start = Instant::now();
    index.search(&queries[..dim], args.k)?;
    let first_search_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let got = search_batched(index.as_ref(), &queries, dim, args.k, args.batch)?;
    let search_secs = start.elapsed().as_secs_f64();
    let mut hits = 0usize;
    for (g, t) in got.chunks(args.k).zip(truth.chunks(args.k)) {
        hits += g.iter().filter(|id| t.contains(id)).count();
    }
    let recall = hits as f64 / (n_queries * args.k) as f64;
    let gemm = rag_benches::sgemm_gflops(1024);
    let peak = rag_benches::fma_peak_gflops();
    let report = json!({
        "kind": format!("{:?}", args.kind),
        "metric": metric.to_string(),
        "source": source,
        "n": n,
        "dim": dim,
        "n_queries": n_queries,
        "k": args.k,
        "batch": args.batch,
        "threads": rayon::current_num_threads(),
        "params": {"connectivity": args.connectivity, "expansion_add": args.expansion_add,
                   "expansion_search": args.expansion_search, "rerank": args.rerank},
        "build_seconds": build_seconds,
        "first_search_seconds": first_search_seconds,
        "queries_per_second": n_queries as f64 / search_secs,
        "recall_at_k": recall,
        "bytes_per_vector": index.memory_bytes() as f64 / n as f64,
        "vector_bytes_f32": dim * 4,
        "exact": {"queries_per_second": n_queries as f64 / flat_secs, "gflops": flat_gflops,
                  "fma_peak_gflops": peak, "fraction_of_peak": peak.map(|p| flat_gflops / p),
                  "general_sgemm_gflops": gemm, "ratio_to_general_sgemm": flat_gflops / gemm},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(std::process::ExitCode::SUCCESS)
}

fn search_batched(index: &dyn VectorIndex, queries: &[f32], dim: usize, k: usize, batch: usize) -> Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(queries.len() / dim * k);
    for chunk in queries.chunks(batch * dim) {
        ids.extend(index.search(chunk, k)?.ids);
    }
    Ok(ids)
}

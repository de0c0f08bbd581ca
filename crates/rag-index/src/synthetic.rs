//! Seeded synthetic vectors with cluster structure, for tests and benchmarks without a dataset.
//!
//! Real passage embeddings are not uniform: they sit in topical clusters, which is what makes
//! graph indexes work and uniform random data a misleadingly hard benchmark. Here, `clusters`
//! centres are drawn uniformly on the unit sphere and every vector is a centre plus isotropic
//! Gaussian noise of total norm about `spread`.

/// splitmix64: a small, fast, seedable generator (Steele et al. 2014). Not cryptographic.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A clustered distribution of `dim`-dimensional vectors.
#[derive(Debug, Clone)]
pub struct Clustered {
    dim: usize,
    spread: f64,
    centres: Vec<f32>,
}

impl Clustered {
    /// `clusters` centres on the unit sphere, drawn from `seed`; noise of norm about `spread`.
    pub fn new(dim: usize, clusters: usize, spread: f64, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut centres = Vec::with_capacity(dim * clusters);
        for _ in 0..clusters.max(1) {
            let c: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
            let n = c.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            centres.extend(c.iter().map(|x| (x / n) as f32));
        }
        Self { dim, spread, centres }
    }

    /// `n` vectors (row-major) drawn with `seed`: the same seed gives the same vectors.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed ^ 0xD1B5_4A32_D192_ED03);
        let clusters = self.centres.len() / self.dim;
        let sigma = self.spread / (self.dim as f64).sqrt();
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let c = rng.below(clusters);
            let centre = &self.centres[c * self.dim..(c + 1) * self.dim];
            out.extend(centre.iter().map(|&x| (x as f64 + sigma * rng.normal()) as f32));
        }
        out
    }
}

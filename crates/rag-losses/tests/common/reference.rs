//! The losses computed with plain loops, from the definitions in docs/losses.md. Slow and obvious,
//! so that a disagreement points at the tensor code.

use super::{log_softmax_rows, logsumexp};

/// A RAG problem on the host: `logits` `[B, K, T, V]`, `scores` `[B, K]`, `target`/`mask` `[B, T]`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub b: usize,
    pub k: usize,
    pub t: usize,
    pub v: usize,
    pub logits: Vec<f64>,
    pub scores: Vec<f64>,
    pub target: Vec<i64>,
    pub mask: Vec<bool>,
}

impl Problem {
    fn log_probs(&self) -> Vec<f64> {
        log_softmax_rows(&self.logits, self.v)
    }

    fn at(&self, lp: &[f64], b: usize, z: usize, t: usize, v: usize) -> f64 {
        lp[((b * self.k + z) * self.t + t) * self.v + v]
    }

    fn prior(&self, b: usize) -> Vec<f64> {
        log_softmax_rows(&self.scores[b * self.k..(b + 1) * self.k], self.k)
    }

    /// RAG-Token per example.
    pub fn rag_token(&self, eps: f64) -> Vec<f64> {
        let lp = self.log_probs();
        (0..self.b)
            .map(|b| {
                let prior = self.prior(b);
                let (mut nll, mut smooth) = (0.0, 0.0);
                for t in (0..self.t).filter(|&t| self.mask[b * self.t + t]) {
                    let mix = |v: usize| {
                        let terms: Vec<f64> = (0..self.k).map(|z| prior[z] + self.at(&lp, b, z, t, v)).collect();
                        logsumexp(&terms)
                    };
                    nll -= mix(self.target[b * self.t + t] as usize);
                    smooth -= (0..self.v).map(mix).sum::<f64>();
                }
                (1.0 - eps) * nll + eps / self.v as f64 * smooth
            })
            .collect()
    }

    /// RAG-Sequence per example (HF's smoothing: the prior counted V times in the smooth term).
    pub fn rag_sequence(&self, eps: f64) -> Vec<f64> {
        let lp = self.log_probs();
        (0..self.b)
            .map(|b| {
                let prior = self.prior(b);
                let (mut ll, mut sm) = (vec![], vec![]);
                for (z, &p) in prior.iter().enumerate().take(self.k) {
                    let counted = (0..self.t).filter(|&t| self.mask[b * self.t + t]);
                    let (mut l, mut s) = (p, self.v as f64 * p);
                    for t in counted {
                        l += self.at(&lp, b, z, t, self.target[b * self.t + t] as usize);
                        s += (0..self.v).map(|v| self.at(&lp, b, z, t, v)).sum::<f64>();
                    }
                    ll.push(l);
                    sm.push(s);
                }
                -(1.0 - eps) * logsumexp(&ll) - eps / self.v as f64 * logsumexp(&sm)
            })
            .collect()
    }

    /// `p(z | x, y)` for RAG-Sequence (ε = 0).
    pub fn sequence_posterior(&self, b: usize) -> Vec<f64> {
        let lp = self.log_probs();
        let prior = self.prior(b);
        let joint: Vec<f64> = (0..self.k)
            .map(|z| {
                prior[z]
                    + (0..self.t)
                        .filter(|&t| self.mask[b * self.t + t])
                        .map(|t| self.at(&lp, b, z, t, self.target[b * self.t + t] as usize))
                        .sum::<f64>()
            })
            .collect();
        let norm = logsumexp(&joint);
        joint.iter().map(|j| (j - norm).exp()).collect()
    }

    pub fn prior_probs(&self, b: usize) -> Vec<f64> {
        self.prior(b).iter().map(|p| p.exp()).collect()
    }
}

/// `Σ_c p_a(c) (log p_a(c) − log p_b(c))` from two log-distributions.
pub fn kl(log_a: &[f64], log_b: &[f64]) -> f64 {
    log_a.iter().zip(log_b).map(|(a, b)| if *a == f64::NEG_INFINITY { 0.0 } else { a.exp() * (a - b) }).sum()
}

//! The data order: a fresh seeded permutation of the examples every epoch, consumed in batches
//! (the last partial batch of an epoch is dropped, so every step sees a full batch). The whole
//! position is `(epoch, cursor)`: saved in a checkpoint, it puts a resumed run on the same
//! examples as an uninterrupted one.

use serde::{Deserialize, Serialize};

/// splitmix64 (Steele et al. 2014): small, seedable, and its whole state is one integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so every value is equally likely.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// A seed mixed from several numbers (run seed, epoch, step…), so nearby inputs give unrelated
/// streams.
pub fn mix(parts: &[u64]) -> u64 {
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    for &p in parts {
        rng.0 ^= p;
        rng.next_u64();
    }
    rng.next_u64()
}

/// Where the loader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Epochs started so far minus one (0 in the first).
    pub epoch: u64,
    /// Examples of this epoch's permutation already consumed.
    pub cursor: usize,
}

/// Batches of example indices in a seeded order.
#[derive(Debug, Clone)]
pub struct Loader {
    len: usize,
    batch_size: usize,
    seed: u64,
    position: DataPosition,
    order: Vec<usize>,
}

impl Loader {
    /// A loader over `len` examples at `position`.
    pub fn new(len: usize, batch_size: usize, seed: u64, position: DataPosition) -> Self {
        let mut loader = Self { len, batch_size, seed, position, order: Vec::new() };
        loader.order = loader.permutation(position.epoch);
        loader
    }

    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        let mut rng = Rng(mix(&[self.seed, epoch]));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order
    }

    /// The next batch of example indices (needs `len ≥ batch_size`).
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.position.cursor + self.batch_size > self.len {
            self.position = DataPosition { epoch: self.position.epoch + 1, cursor: 0 };
            self.order = self.permutation(self.position.epoch);
        }
        let start = self.position.cursor;
        self.position.cursor += self.batch_size;
        self.order[start..start + self.batch_size].to_vec()
    }

    /// The position (for a checkpoint).
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// Epochs consumed, fractional.
    pub fn epochs(&self) -> f64 {
        self.position.epoch as f64 + self.position.cursor as f64 / self.len.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_resuming_continues_the_same_order() {
        let mut a = Loader::new(10, 3, 7, DataPosition { epoch: 0, cursor: 0 });
        let first: Vec<usize> = (0..3).flat_map(|_| a.next_batch()).collect();
        let mut sorted = first.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 9, "one epoch never repeats an example: {first:?}");
        let saved = a.position();
        let next: Vec<Vec<usize>> = (0..4).map(|_| a.next_batch()).collect();
        let mut b = Loader::new(10, 3, 7, saved);
        let resumed: Vec<Vec<usize>> = (0..4).map(|_| b.next_batch()).collect();
        assert_eq!(next, resumed);
        assert_eq!(a.position().epoch, 2, "3 batches an epoch: batch 7 opens the third");
        let other: Vec<usize> = Loader::new(10, 3, 8, DataPosition { epoch: 0, cursor: 0 }).next_batch();
        assert_ne!(other, first[..3].to_vec(), "another seed, another order");
    }
}

//! The simulation's one source of randomness: SplitMix64, seeded per history. Plugins draw from a
//! shared copy in the order the (single-threaded) runtime runs them, which a seed fixes too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Rng(u64);

/// The plugins' generator, forked from the history's own.
pub type SharedRng = Arc<Mutex<Rng>>;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// One of `items`, each as likely as its weight.
    pub fn weighted<T: Copy>(&mut self, items: &[(u64, T)]) -> T {
        let total: u64 = items.iter().map(|(w, _)| w).sum();
        let mut roll = self.below(total);
        for &(weight, item) in items {
            if roll < weight {
                return item;
            }
            roll -= weight;
        }
        unreachable!("weights add up")
    }

    /// A duration in `lo..=hi`, to the millisecond.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.range(lo.as_millis() as u64, hi.as_millis() as u64))
    }

    /// A generator of its own, for the plugins.
    pub fn fork(&mut self) -> SharedRng {
        Arc::new(Mutex::new(Rng::new(self.next_u64())))
    }
}

/// Draws from a shared generator.
pub fn draw<T>(rng: &SharedRng, f: impl FnOnce(&mut Rng) -> T) -> T {
    f(&mut rng.lock().unwrap())
}

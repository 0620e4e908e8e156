//! Retry timing: exponential [`Backoff`] with full jitter.

use std::time::Duration;

/// Exponential backoff: the n-th retry waits up to `initial × 2^(n-1)`, capped at `max`; with
/// jitter (the default) the wait is drawn uniformly from `(0, that]` ("full jitter"), so many
/// clients failing together do not retry together. The manager never retries sooner than 100 ms
/// after a failure, whatever the backoff. Give it to
/// [`AccessManagerBuilder::backoff`](crate::AccessManagerBuilder::backoff).
///
/// ```
/// use access_manager::{AccessManager, Backoff};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A mobile app on a flaky network: first retry within 2 s, then no more than every 5 min.
/// let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
/// let waits: Vec<u64> = (1..=10).map(|n| backoff.ceiling(n).as_secs()).collect();
/// assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
/// let _manager = AccessManager::builder().backoff(backoff).build().unwrap();
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// The default first delay: 1 s.
    ///
    /// ```
    /// use access_manager::Backoff;
    ///
    /// assert_eq!(Backoff::default().initial(), Backoff::DEFAULT_INITIAL);
    /// ```
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
    /// The default cap: 60 s.
    ///
    /// ```
    /// use access_manager::Backoff;
    ///
    /// assert_eq!(Backoff::default().max(), Backoff::DEFAULT_MAX);
    /// ```
    pub const DEFAULT_MAX: Duration = Duration::from_secs(60);

    /// Doubling from `initial` up to `max` (a `max` below `initial` is raised to it), with jitter.
    ///
    /// ```
    /// use access_manager::Backoff;
    /// use std::time::Duration;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    /// assert_eq!(backoff.ceiling(1), Duration::from_millis(500));
    /// assert_eq!(backoff.ceiling(3), Duration::from_secs(2));
    /// assert!(backoff.has_jitter());
    /// // A cap below the first delay is raised to it.
    /// let flat = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
    /// assert_eq!(flat.max(), Duration::from_secs(10));
    /// ```
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: true,
        }
    }

    /// The same schedule without jitter: exact waits, for tests and for single clients.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use access_manager::{fetcher_fn, AccessManager, Backoff, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let (_manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .backoff(Backoff::default().without_jitter())
    ///     .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("offline")) }))
    ///     .build_with_events()?;
    /// let Some(Event::RefreshFailed { retry_at, .. }) = events.recv().await else { panic!() };
    /// assert_eq!(retry_at, Some(clock.now() + Backoff::DEFAULT_INITIAL)); // exactly 1 s
    /// # Ok(()) }
    /// ```
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The first delay.
    ///
    /// ```
    /// use access_manager::Backoff;
    /// use std::time::Duration;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    /// assert_eq!(backoff.initial(), Duration::from_millis(250));
    /// ```
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap.
    ///
    /// ```
    /// use access_manager::Backoff;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Backoff::default().max(), Duration::from_secs(60));
    /// ```
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Whether waits are jittered.
    ///
    /// ```
    /// use access_manager::Backoff;
    ///
    /// assert!(Backoff::default().has_jitter());
    /// assert!(!Backoff::default().without_jitter().has_jitter());
    /// ```
    pub fn has_jitter(&self) -> bool {
        self.jitter
    }

    /// The longest wait before retry number `failures` (1 after the first failure):
    /// `initial × 2^(failures-1)`, capped at `max`; zero at every count when `initial` is zero.
    /// Without jitter it is the wait itself.
    ///
    /// ```
    /// use access_manager::Backoff;
    /// use std::time::Duration;
    ///
    /// let backoff = Backoff::default(); // 1 s doubling to 60 s
    /// assert_eq!(backoff.ceiling(1), Duration::from_secs(1));
    /// assert_eq!(backoff.ceiling(4), Duration::from_secs(8));
    /// assert_eq!(backoff.ceiling(7), Duration::from_secs(60));
    /// assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn ceiling(&self, failures: u32) -> Duration {
        let mut ceiling = self.initial;
        // Doubling a non-zero duration reaches any cap within 94 steps (1 ns to `Duration::MAX`);
        // the loop ends there, not after `failures` steps.
        for _ in 1..failures {
            if ceiling.is_zero() || ceiling >= self.max {
                break;
            }
            ceiling = ceiling.saturating_mul(2);
        }
        ceiling.min(self.max)
    }

    pub(crate) fn delay(&self, failures: u32, rng: &mut SplitMix64) -> Duration {
        let ceiling = self.ceiling(failures);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        // Uniform in (0, ceiling].
        Duration::from_nanos(rng.next() % nanos + 1)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Self::DEFAULT_INITIAL, Self::DEFAULT_MAX)
    }
}

/// A small seedable generator (SplitMix64): jitter needs spread, not cryptographic strength.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound]`.
    pub(crate) fn up_to(&mut self, bound: Duration) -> Duration {
        let nanos = bound.as_nanos().min(u64::MAX as u128 - 1) as u64;
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let b = Backoff::default().without_jitter();
        let mut rng = SplitMix64::new(1);
        let secs: Vec<u64> = (1..=9).map(|n| b.delay(n, &mut rng).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap_from_any_initial_delay() {
        let max = Duration::from_secs(60);
        let tiny = Backoff::new(Duration::from_nanos(1), max);
        assert_eq!(tiny.ceiling(1), Duration::from_nanos(1));
        assert_eq!(tiny.ceiling(33), Duration::from_nanos(1 << 32));
        assert_eq!(tiny.ceiling(40), max);
        assert_eq!(tiny.ceiling(u32::MAX), max);

        let zero = Backoff::new(Duration::ZERO, max);
        assert_eq!(zero.ceiling(1), Duration::ZERO);
        assert_eq!(zero.ceiling(u32::MAX), Duration::ZERO);

        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(1), Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);

        for initial in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(3),
            Duration::from_micros(1),
            Duration::from_secs(1),
            max,
        ] {
            let b = Backoff::new(initial, max);
            let ceilings: Vec<Duration> = (1..=200).map(|n| b.ceiling(n)).collect();
            assert!(
                ceilings.windows(2).all(|w| w[0] <= w[1]),
                "not monotonic from {initial:?}: {ceilings:?}"
            );
            let last = if initial.is_zero() { initial } else { max };
            assert_eq!(ceilings[199], last, "from {initial:?}");
            assert!(ceilings.iter().all(|c| *c <= max), "from {initial:?}");
            assert_eq!(b.ceiling(0), initial);
        }
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let b = Backoff::default();
        let mut rng = SplitMix64::new(7);
        let waits: Vec<Duration> = (0..200).map(|_| b.delay(4, &mut rng)).collect();
        assert!(waits
            .iter()
            .all(|w| !w.is_zero() && *w <= Duration::from_secs(8)));
        let below_half = waits
            .iter()
            .filter(|w| **w < Duration::from_secs(4))
            .count();
        assert!(
            (60..140).contains(&below_half),
            "{below_half} of 200 below half"
        );
    }
}

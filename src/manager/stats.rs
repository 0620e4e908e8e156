//! [`Stats`]: what the manager has done since it was built, for dashboards and support tickets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Counts since the manager was built, from [`AccessManager::stats`](crate::AccessManager::stats),
/// as the manager's task has handled them: a token refused at the call (one that does not even
/// parse) is counted a moment after the call answered. Fields may be added: read them by name.
///
/// ```
/// use access_manager::clock::{Clock, ManualClock};
/// use access_manager::{fetcher_fn, AccessManager, Backoff, Event, FetchError};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let (manager, mut events) = AccessManager::builder()
///     .clock(clock.clone())
///     .backoff(Backoff::default().without_jitter())
///     .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("HTTP 502")) }))
///     .build_with_events()?;
/// let Some(Event::RefreshFailed { retry_at, .. }) = events.recv().await else { panic!() };
///
/// // What a support ticket would show: one fetch, failed, the next one planned.
/// let stats = manager.stats();
/// assert_eq!((stats.fetches, stats.fetch_failures, stats.tokens_installed), (1, 1, 0));
/// assert_eq!(stats.next_fetch_at, retry_at);
/// assert_eq!(stats.last_fetch_duration, Some(Duration::ZERO)); // no time passed on this clock
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens that became current: initial, stored, pushed or fetched.
    pub tokens_installed: u64,
    /// Fetches started.
    pub fetches: u64,
    /// Fetches that failed, timed out, panicked, or brought a token that was refused.
    pub fetch_failures: u64,
    /// Tokens offered (pushed, fetched or stored) and refused.
    pub tokens_rejected: u64,
    /// Tokens handed to consumers, whatever their answer.
    pub deliveries: u64,
    /// Deliveries that failed, timed out or panicked, and consumers skipped for lacking their
    /// required grant.
    pub consumer_failures: u64,
    /// Service errors reported, by the app or by consumers.
    pub service_rejections: u64,
    /// Token store reads, writes or removals that failed.
    pub store_failures: u64,
    /// Token store calls that did not answer within
    /// [`STORE_TIMEOUT`](crate::store::STORE_TIMEOUT): the manager went on without them.
    pub store_timeouts: u64,
    /// How long the last finished fetch took, on the manager's wall clock.
    pub last_fetch_duration: Option<Duration>,
    /// When the next automatic fetch is planned, if one is.
    pub next_fetch_at: Option<SystemTime>,
}

/// The live counters behind [`Stats`]: written by the driver only.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) tokens_installed: AtomicU64,
    pub(super) fetches: AtomicU64,
    pub(super) fetch_failures: AtomicU64,
    pub(super) tokens_rejected: AtomicU64,
    pub(super) deliveries: AtomicU64,
    pub(super) consumer_failures: AtomicU64,
    pub(super) service_rejections: AtomicU64,
    pub(super) store_failures: AtomicU64,
    pub(super) store_timeouts: AtomicU64,
    /// Nanoseconds, plus one; 0 for none.
    last_fetch_duration: AtomicU64,
    /// Nanoseconds since the unix epoch, plus one; 0 for none.
    next_fetch_at: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A value plus one, so that 0 can mean none; saturating.
fn encode(nanos: Option<u128>) -> u64 {
    nanos.map_or(0, |n| u64::try_from(n).unwrap_or(u64::MAX - 1) + 1)
}

fn decode(raw: u64) -> Option<Duration> {
    raw.checked_sub(1).map(Duration::from_nanos)
}

impl Counters {
    pub(super) fn set_last_fetch_duration(&self, took: Duration) {
        self.last_fetch_duration
            .store(encode(Some(took.as_nanos())), Ordering::Relaxed);
    }

    pub(super) fn set_next_fetch_at(&self, at: Option<SystemTime>) {
        let nanos = at.map(|at| at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
        self.next_fetch_at.store(encode(nanos), Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            tokens_installed: get(&self.tokens_installed),
            fetches: get(&self.fetches),
            fetch_failures: get(&self.fetch_failures),
            tokens_rejected: get(&self.tokens_rejected),
            deliveries: get(&self.deliveries),
            consumer_failures: get(&self.consumer_failures),
            service_rejections: get(&self.service_rejections),
            store_failures: get(&self.store_failures),
            store_timeouts: get(&self.store_timeouts),
            last_fetch_duration: decode(get(&self.last_fetch_duration)),
            next_fetch_at: decode(get(&self.next_fetch_at)).map(|d| UNIX_EPOCH + d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_as_written_and_none_as_none() {
        let counters = Counters::default();
        assert_eq!(counters.snapshot(), Stats::default());
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        counters.set_next_fetch_at(Some(at));
        counters.set_last_fetch_duration(Duration::from_millis(1500));
        bump(&counters.fetches);
        let stats = counters.snapshot();
        assert_eq!(stats.next_fetch_at, Some(at));
        assert_eq!(stats.last_fetch_duration, Some(Duration::from_millis(1500)));
        assert_eq!(stats.fetches, 1);
        counters.set_next_fetch_at(None);
        assert_eq!(counters.snapshot().next_fetch_at, None);
    }
}

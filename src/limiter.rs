//! [`FetchLimiter`]: one limit on concurrent fetches, shared by many managers.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Caps how many fetches run at once across every manager given this limiter, so that a process
/// holding many identities does not flood its backend when their tokens expire together. Waiting
/// for a slot does not count against a fetch's timeout; slots are granted first come, first served.
///
/// ```
/// use access_manager::{AccessManager, FetchLimiter};
/// use std::num::NonZeroUsize;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = FetchLimiter::new(NonZeroUsize::new(8).unwrap());
/// let managers: Vec<AccessManager> = (0..3)
///     .map(|_| AccessManager::builder().fetch_limiter(&limiter).build().unwrap())
///     .collect();
/// assert_eq!(limiter.in_flight(), 0);
/// # drop(managers);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FetchLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Semaphore,
    max: usize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// A held slot; frees it when dropped.
pub(crate) struct Slot<'a> {
    inner: &'a Inner,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl FetchLimiter {
    /// At most `max_concurrent` fetches at once.
    pub fn new(max_concurrent: NonZeroUsize) -> Self {
        let max = max_concurrent.get().min(Semaphore::MAX_PERMITS);
        FetchLimiter {
            inner: Arc::new(Inner {
                slots: Semaphore::new(max),
                max,
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// The limit.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max
    }

    /// Fetches running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// The most fetches that ever ran at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Acquire)
    }

    pub(crate) async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .inner
            .slots
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        let now = self.inner.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.peak.fetch_max(now, Ordering::AcqRel);
        Slot {
            inner: &self.inner,
            _permit: permit,
        }
    }
}

//! Time: the [`Clock`] trait, the real [`SystemClock`] and the fake [`ManualClock`] for tests.
//!
//! Every timer and every "now" in this crate goes through the manager's clock, so an app's tests can
//! drive the whole token lifecycle (refresh ahead of expiry, fetch timeouts, backoff, consumer
//! timeouts) deterministically with a [`ManualClock`], without waiting.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

/// A source of wall-clock time and sleeps.
///
/// Implementations must be cheap to call. `sleep_until` resolves once `now() >= deadline`; a
/// deadline in the past resolves at once.
///
/// ```
/// use access_manager::clock::Clock;
/// use std::{future::Future, pin::Pin, time::SystemTime};
///
/// /// A clock frozen at one instant whose sleeps never end (e.g. for a snapshot test).
/// #[derive(Debug)]
/// struct Frozen(SystemTime);
///
/// impl Clock for Frozen {
///     fn now(&self) -> SystemTime { self.0 }
///     fn sleep_until(&self, deadline: SystemTime) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
///         if deadline <= self.0 { Box::pin(std::future::ready(())) } else { Box::pin(std::future::pending()) }
///     }
/// }
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// A future that resolves once [`now`](Self::now) has reached `deadline`.
    fn sleep_until(
        &self,
        deadline: SystemTime,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
    fn sleep_until(
        &self,
        deadline: SystemTime,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        (**self).sleep_until(deadline)
    }
}

/// The longest single sleep of [`SystemClock`]: after at most this long it re-reads the wall clock.
pub const SYSTEM_CLOCK_SLICE: Duration = Duration::from_secs(30);

/// The real clock: `SystemTime::now()` and tokio's timer.
///
/// Sleeps in slices of at most [`SYSTEM_CLOCK_SLICE`] (30 s) and re-reads the wall clock after each,
/// so a suspended laptop or a clock change is noticed within one slice. Needs a tokio runtime with
/// time enabled (as `#[tokio::main]` gives).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads ambient time: everything else goes through a `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    #[allow(clippy::disallowed_methods)]
    fn sleep_until(
        &self,
        deadline: SystemTime,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(async move {
            loop {
                let left = match deadline.duration_since(SystemTime::now()) {
                    Ok(left) if !left.is_zero() => left,
                    _ => return,
                };
                tokio::time::sleep(left.min(SYSTEM_CLOCK_SLICE)).await;
            }
        })
    }
}

/// A fake clock for tests: time moves only when told to.
///
/// Clones share one time. [`advance`](Self::advance) and [`set`](Self::set) wake every sleeper whose
/// deadline has been reached, in deadline order; a sleeper woken runs when the async runtime polls it,
/// so after moving the clock, await what you expect (an event, a consumer's call) rather than sleeping.
///
/// ```
/// use access_manager::clock::{Clock, ManualClock};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let wake = clock.sleep_until(clock.now() + Duration::from_secs(60));
/// let handle = tokio::spawn(wake);
/// clock.advance(Duration::from_secs(60));
/// handle.await.unwrap(); // resolves: the clock reached the deadline
/// # }
/// ```
#[derive(Clone)]
pub struct ManualClock {
    shared: Arc<Mutex<ManualState>>,
}

struct ManualState {
    now: SystemTime,
    next_id: u64,
    /// Pending sleepers by (deadline, registration order).
    sleepers: BTreeMap<(SystemTime, u64), Option<Waker>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            shared: Arc::new(Mutex::new(ManualState {
                now: start,
                next_id: 0,
                sleepers: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // A panic while holding this lock cannot leave the state inconsistent: recover the guard.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves time forward by `by`, waking every sleeper whose deadline has passed, in deadline order.
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        state.now = state.now.checked_add(by).unwrap_or(state.now);
        self.wake_due(state);
    }

    /// Jumps to `to`, forwards or backwards, waking as [`advance`](Self::advance) does.
    pub fn set(&self, to: SystemTime) {
        let mut state = self.lock();
        state.now = to;
        self.wake_due(state);
    }

    /// How many sleeps are pending (a sleep that resolved or was dropped is not counted).
    pub fn pending_sleeps(&self) -> usize {
        self.lock().sleepers.len()
    }

    /// The earliest pending deadline, if any: handy to step a test from one timer to the next.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.lock().sleepers.keys().next().map(|(d, _)| *d)
    }

    fn wake_due(&self, mut state: MutexGuard<'_, ManualState>) {
        let now = state.now;
        let mut wakers = Vec::new();
        for (_, waker) in state.sleepers.range_mut(..(now, u64::MAX)) {
            if let Some(w) = waker.take() {
                wakers.push(w);
            }
        }
        drop(state);
        // Wake outside the lock: a woken task may poll (and lock) at once.
        for w in wakers {
            w.wake();
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &state.now)
            .field("pending_sleeps", &state.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().now
    }

    fn sleep_until(
        &self,
        deadline: SystemTime,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        if state.now < deadline {
            state.sleepers.insert((deadline, id), None);
        }
        drop(state);
        Box::pin(ManualSleep {
            clock: self.clone(),
            key: (deadline, id),
        })
    }
}

struct ManualSleep {
    clock: ManualClock,
    key: (SystemTime, u64),
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.lock();
        if state.now >= self.key.0 {
            state.sleepers.remove(&self.key);
            return Poll::Ready(());
        }
        // Re-register: the sleeper may have been woken by a jump that time then undid.
        state.sleepers.insert(self.key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        self.clock.lock().sleepers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[tokio::test]
    async fn manual_sleep_resolves_only_when_time_reaches_the_deadline() {
        let clock = ManualClock::new(t(100));
        let mut sleep = clock.sleep_until(t(110));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(9));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.pending_sleeps(), 0);
    }

    #[tokio::test]
    async fn dropped_sleeps_are_forgotten_and_past_deadlines_are_ready() {
        let clock = ManualClock::new(t(100));
        let sleep = clock.sleep_until(t(200));
        assert_eq!(clock.pending_sleeps(), 1);
        assert_eq!(clock.next_deadline(), Some(t(200)));
        drop(sleep);
        assert_eq!(clock.pending_sleeps(), 0);
        clock.sleep_until(t(50)).await;
    }

    #[tokio::test]
    async fn set_backwards_keeps_sleepers_waiting() {
        let clock = ManualClock::new(t(100));
        let mut sleep = clock.sleep_until(t(150));
        clock.set(t(40));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.set(t(150));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }
}

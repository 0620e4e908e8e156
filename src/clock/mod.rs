//! Time: the [`Clock`] trait, the real [`SystemClock`] and the fake [`ManualClock`] for tests.
//!
//! Every timer and every "now" in this crate goes through the manager's clock, so an app's tests can
//! drive the whole token lifecycle (refresh ahead of expiry, fetch timeouts, backoff, consumer
//! timeouts) deterministically with a [`ManualClock`], without waiting.
//!
//! A clock gives two kinds of time, kept apart:
//! - **wall time** ([`Clock::now`], [`Clock::sleep_until`]) judges tokens: a token expires at a
//!   wall-clock instant, so its validity and its will-expire and expired timers follow the wall
//!   clock, jumps included (a laptop that slept past `exp` must notice it expired);
//! - **elapsed time** ([`Clock::sleep`]) runs timeouts, backoff and spacing between fetches, so that
//!   setting the wall clock back an hour neither stretches a 30 s fetch timeout to an hour nor
//!   shortens a retry delay to nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

/// The process-wide wall-clock watcher behind `SystemClock`'s wall sleeps.
mod wall_watch;

/// A boxed sleep, as [`Clock`] returns them.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of wall-clock time, wall-clock deadlines and elapsed-time sleeps.
///
/// Implementations must be cheap to call. `sleep_until` resolves once `now() >= deadline` (a
/// deadline in the past resolves at once); `sleep` resolves once `duration` has elapsed, whatever
/// the wall clock does meanwhile.
///
/// ```
/// use access_manager::clock::{Clock, Sleep};
/// use std::time::{Duration, SystemTime};
///
/// /// A clock frozen at one instant whose sleeps never end (e.g. for a snapshot test).
/// #[derive(Debug)]
/// struct Frozen(SystemTime);
///
/// impl Clock for Frozen {
///     fn now(&self) -> SystemTime { self.0 }
///     fn sleep_until(&self, deadline: SystemTime) -> Sleep {
///         if deadline <= self.0 { Box::pin(std::future::ready(())) } else { Box::pin(std::future::pending()) }
///     }
///     fn sleep(&self, duration: Duration) -> Sleep {
///         if duration.is_zero() { Box::pin(std::future::ready(())) } else { Box::pin(std::future::pending()) }
///     }
/// }
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// A future that resolves once [`now`](Self::now) has reached `deadline` (wall time: used for
    /// token deadlines).
    fn sleep_until(&self, deadline: SystemTime) -> Sleep;
    /// A future that resolves once `duration` has elapsed (elapsed time: used for timeouts, backoff
    /// and spacing; a change of the wall clock does not move it).
    fn sleep(&self, duration: Duration) -> Sleep;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        (**self).sleep_until(deadline)
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        (**self).sleep(duration)
    }
}

/// `t + d`, or the latest representable time when that overflows.
pub(crate) fn saturating_add(t: SystemTime, d: Duration) -> SystemTime {
    if let Some(sum) = t.checked_add(d) {
        return sum;
    }
    // The largest representable time differs by platform: approach it by halving steps.
    let (mut t, mut step) = (t, d);
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(sum) => t = sum,
            None => step /= 2,
        }
    }
    t
}

/// The longest the wall-clock watcher of [`SystemClock`] sleeps: after at most this long it
/// re-reads the wall clock, so a jump is noticed within one slice.
pub const SYSTEM_CLOCK_SLICE: Duration = Duration::from_secs(30);

/// The real clock: `SystemTime::now()` for wall time and tokio's (monotonic) timer for elapsed time.
///
/// # The wall-clock watcher
///
/// Wall-clock sleeps ([`sleep_until`](Clock::sleep_until)) are watched by one thread for the
/// whole process, not by each sleeper: the watcher sleeps on the monotonic clock until the
/// earliest deadline or for [`SYSTEM_CLOCK_SLICE`] (30 s), whichever comes first, re-reads the
/// wall clock, and wakes only the sleepers that are due. So idle managers cost nothing however
/// many there are (the watcher's one wake-up per slice is all), and a suspended laptop or a
/// clock change is still noticed within one slice. The thread, named `access-manager-wall-clock`,
/// starts with the first wall-clock sleep and ends when none remains. Elapsed-time sleeps
/// ([`sleep`](Clock::sleep)) are tokio's timer and need a tokio runtime with time enabled (as
/// `#[tokio::main]` gives); wall-clock sleeps need no runtime.
///
/// ```
/// use access_manager::clock::{Clock, SystemClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = SystemClock;
/// // A deadline already passed resolves at once, without the watcher.
/// clock.sleep_until(clock.now() - Duration::from_secs(1)).await;
/// // A far one is the watcher's until it resolves or is dropped.
/// let far = clock.sleep_until(clock.now() + Duration::from_secs(3600));
/// drop(far);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// The system's wall clock.
    ///
    /// ```
    /// use access_manager::clock::{Clock, SystemClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let now = SystemClock.now();
    /// assert!(now > UNIX_EPOCH + Duration::from_secs(1_700_000_000)); // after November 2023
    /// ```
    // The one place that reads ambient time: everything else goes through a `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Resolves once the wall clock reads `deadline`, woken by the process's wall-clock watcher
    /// (see [`SystemClock`]); at once for a deadline already passed.
    ///
    /// ```
    /// use access_manager::clock::{Clock, SystemClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let past = SystemClock.now() - Duration::from_secs(60);
    /// SystemClock.sleep_until(past).await; // resolves at once
    /// # }
    /// ```
    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        Box::pin(wall_watch::WallSleep::new(deadline))
    }

    /// Resolves once `duration` has elapsed on tokio's monotonic timer, whatever the wall clock
    /// does meanwhile.
    ///
    /// ```
    /// use access_manager::clock::{Clock, SystemClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// SystemClock.sleep(Duration::ZERO).await; // nothing to wait for
    /// # }
    /// ```
    #[allow(clippy::disallowed_methods)]
    fn sleep(&self, duration: Duration) -> Sleep {
        // tokio's timer runs on the monotonic clock (and saturates a huge duration).
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A fake clock for tests: time moves only when told to.
///
/// Clones share one time. [`advance`](Self::advance) is time passing: wall time and elapsed time
/// both move. [`set`](Self::set) is the wall clock jumping (the user or NTP changing it, a laptop
/// waking up): elapsed time stays. Both wake every sleeper that is due, in deadline order; a sleeper
/// woken runs when the async runtime polls it, so after moving the clock, await what you expect (an
/// event, a consumer's call) rather than sleeping.
///
/// ```
/// use access_manager::clock::{Clock, ManualClock};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let deadline = tokio::spawn(clock.sleep_until(clock.now() + Duration::from_secs(60)));
/// let timeout = tokio::spawn(clock.sleep(Duration::from_secs(60)));
/// clock.set(clock.now() - Duration::from_secs(3600)); // the wall clock goes back an hour
/// clock.advance(Duration::from_secs(60));
/// timeout.await.unwrap(); // 60 s elapsed: resolved
/// assert!(!deadline.is_finished()); // the wall clock is an hour short of the deadline
/// # }
/// ```
#[derive(Clone)]
pub struct ManualClock {
    shared: Arc<Mutex<ManualState>>,
}

/// A pending sleep's deadline: a wall-clock instant or an elapsed-time mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Wall(SystemTime),
    Elapsed(Duration),
}

struct ManualState {
    wall: SystemTime,
    /// Elapsed time since the clock was made.
    elapsed: Duration,
    next_id: u64,
    /// Pending wall-clock sleepers by (deadline, registration order), and their wakers.
    wall_sleepers: BTreeMap<(SystemTime, u64), Option<Waker>>,
    /// Pending elapsed-time sleepers by (mark, registration order), and their wakers.
    elapsed_sleepers: BTreeMap<(Duration, u64), Option<Waker>>,
}

impl ManualState {
    fn is_due(&self, deadline: Deadline) -> bool {
        match deadline {
            Deadline::Wall(at) => self.wall >= at,
            Deadline::Elapsed(mark) => self.elapsed >= mark,
        }
    }

    fn waker_slot(&mut self, deadline: Deadline, id: u64) -> Option<&mut Option<Waker>> {
        match deadline {
            Deadline::Wall(at) => self.wall_sleepers.get_mut(&(at, id)),
            Deadline::Elapsed(mark) => self.elapsed_sleepers.get_mut(&(mark, id)),
        }
    }

    /// Registers a sleeper; returns the waker it replaces, for the caller to drop after unlocking
    /// (a waker's code never runs under the lock).
    #[must_use]
    fn insert(&mut self, deadline: Deadline, id: u64, waker: Option<Waker>) -> Option<Waker> {
        match deadline {
            Deadline::Wall(at) => self.wall_sleepers.insert((at, id), waker),
            Deadline::Elapsed(mark) => self.elapsed_sleepers.insert((mark, id), waker),
        }
        .flatten()
    }

    /// Forgets a sleeper; returns its waker, for the caller to drop after unlocking.
    #[must_use]
    fn remove(&mut self, deadline: Deadline, id: u64) -> Option<Waker> {
        match deadline {
            Deadline::Wall(at) => self.wall_sleepers.remove(&(at, id)),
            Deadline::Elapsed(mark) => self.elapsed_sleepers.remove(&(mark, id)),
        }
        .flatten()
    }

    fn len(&self) -> usize {
        self.wall_sleepers.len() + self.elapsed_sleepers.len()
    }

    /// The wall-clock sleepers due at `wall`, with how far from the current wall time each is.
    fn wall_due(&self, wall: SystemTime) -> impl Iterator<Item = (Duration, Deadline, u64)> + '_ {
        let from = self.wall;
        self.wall_sleepers
            .range(..=(wall, u64::MAX))
            .map(move |(&(at, id), _)| {
                let until = at.duration_since(from).unwrap_or_default();
                (until, Deadline::Wall(at), id)
            })
    }

    /// Takes the wakers of `due` (sorted into deadline order) to wake them outside the lock.
    fn take_wakers(&mut self, mut due: Vec<(Duration, Deadline, u64)>) -> Vec<Waker> {
        due.sort_by_key(|&(until, _, id)| (until, id));
        due.into_iter()
            .filter_map(|(_, deadline, id)| self.waker_slot(deadline, id)?.take())
            .collect()
    }
}

impl ManualClock {
    /// A clock standing at `start`, with no time elapsed.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// assert_eq!(clock.now(), start);
    /// assert_eq!(clock.elapsed(), Duration::ZERO);
    /// assert_eq!(clock.clone().now(), start); // clones share one time
    /// ```
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            shared: Arc::new(Mutex::new(ManualState {
                wall: start,
                elapsed: Duration::ZERO,
                next_id: 0,
                wall_sleepers: BTreeMap::new(),
                elapsed_sleepers: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // No code that can panic runs under this lock: recover the guard if it ever did.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time passes: wall time and elapsed time both move forward by `by` (saturating at the latest
    /// representable time). Wakes every sleeper now due, in deadline order.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use access_manager::{AccessManager, AccessToken, Event};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .issued_at(clock.now())
    ///     .ttl(Duration::from_secs(3600))
    ///     .to_jwt()?;
    /// let (manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .initial_token(jwt)
    ///     .build_with_events()?;
    /// clock.advance(Duration::from_secs(3600)); // an hour passes, at once
    /// assert!(matches!(events.recv().await, Some(Event::TokenWillExpire { .. })));
    /// assert!(matches!(events.recv().await, Some(Event::TokenExpired { .. })));
    /// assert!(manager.is_expired());
    /// # Ok(()) }
    /// ```
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        let (wall, elapsed) = (
            saturating_add(state.wall, by),
            state.elapsed.saturating_add(by),
        );
        let mut due: Vec<_> = state.wall_due(wall).collect();
        let from = state.elapsed;
        due.extend(
            state
                .elapsed_sleepers
                .range(..=(elapsed, u64::MAX))
                .map(|(&(mark, id), _)| (mark.saturating_sub(from), Deadline::Elapsed(mark), id)),
        );
        let wakers = state.take_wakers(due);
        state.wall = wall;
        state.elapsed = elapsed;
        wake(state, wakers);
    }

    /// Time passes until the wall clock reads `to`: [`advance`](Self::advance) by `to - now`
    /// (nothing when `to` is not later than now). Handy with [`next_deadline`](Self::next_deadline).
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let ninety = Duration::from_secs(90);
    /// clock.advance_to(start + ninety);
    /// assert_eq!((clock.now(), clock.elapsed()), (start + ninety, ninety));
    /// clock.advance_to(start); // in the past: time does not go back
    /// assert_eq!(clock.now(), start + ninety);
    /// ```
    pub fn advance_to(&self, to: SystemTime) {
        let by = to.duration_since(self.now()).unwrap_or_default();
        self.advance(by);
    }

    /// The wall clock jumps to `to`, forwards or backwards; elapsed time does not move. Wakes every
    /// wall-clock sleeper now due, in deadline order.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use access_manager::{AccessManager, AccessToken, Event};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .issued_at(clock.now())
    ///     .ttl(Duration::from_secs(3600))
    ///     .to_jwt()?;
    /// let (manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .initial_token(jwt)
    ///     .build_with_events()?;
    /// // The laptop wakes up two hours later: the wall clock jumps, no time elapsed for the app.
    /// clock.set(clock.now() + Duration::from_secs(7200));
    /// assert!(matches!(events.recv().await, Some(Event::TokenWillExpire { .. })));
    /// assert!(matches!(events.recv().await, Some(Event::TokenExpired { .. })));
    /// assert!(manager.is_expired());
    /// assert_eq!(clock.elapsed(), Duration::ZERO);
    /// # Ok(()) }
    /// ```
    pub fn set(&self, to: SystemTime) {
        let mut state = self.lock();
        let due: Vec<_> = state.wall_due(to).collect();
        let wakers = state.take_wakers(due);
        state.wall = to;
        wake(state, wakers);
    }

    /// How much time has passed through [`advance`](Self::advance) since the clock was made.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// clock.advance(Duration::from_secs(30));
    /// clock.set(UNIX_EPOCH); // a wall-clock jump is not elapsed time
    /// assert_eq!(clock.elapsed(), Duration::from_secs(30));
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.lock().elapsed
    }

    /// How many sleeps are pending (a sleep that resolved or was dropped is not counted).
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let short = clock.sleep(Duration::from_secs(1));
    /// let long = clock.sleep(Duration::from_secs(60));
    /// assert_eq!(clock.pending_sleeps(), 2);
    /// clock.advance(Duration::from_secs(1));
    /// short.await; // resolved: no longer pending
    /// assert_eq!(clock.pending_sleeps(), 1);
    /// drop(long); // dropped: no longer pending
    /// assert_eq!(clock.pending_sleeps(), 0);
    /// # }
    /// ```
    pub fn pending_sleeps(&self) -> usize {
        self.lock().len()
    }

    /// The wall-clock instant at which the next pending sleep is due, if any (an elapsed-time
    /// sleep counts as due when [`advance`](Self::advance) reaches it): handy to step a test from
    /// one timer to the next with [`advance_to`](Self::advance_to).
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// assert_eq!(clock.next_deadline(), None);
    /// let refresh = clock.sleep_until(start + Duration::from_secs(420)); // wall time
    /// let timeout = clock.sleep(Duration::from_secs(30)); // elapsed time
    /// assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(30)));
    /// clock.advance_to(clock.next_deadline().unwrap());
    /// timeout.await;
    /// assert_eq!(clock.next_deadline(), Some(start + Duration::from_secs(420)));
    /// clock.advance_to(clock.next_deadline().unwrap());
    /// refresh.await;
    /// assert_eq!(clock.next_deadline(), None);
    /// # }
    /// ```
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let state = self.lock();
        let wall = state
            .wall_sleepers
            .keys()
            .next()
            .map(|&(at, _)| at.max(state.wall));
        let elapsed = state
            .elapsed_sleepers
            .keys()
            .next()
            .map(|&(mark, _)| saturating_add(state.wall, mark.saturating_sub(state.elapsed)));
        wall.into_iter().chain(elapsed).min()
    }

    fn sleep_to(&self, deadline: Deadline) -> Sleep {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        if !state.is_due(deadline) {
            let _new_id_replaces_nothing = state.insert(deadline, id, None);
        }
        drop(state);
        Box::pin(ManualSleep {
            clock: self.clone(),
            deadline,
            id,
        })
    }
}

/// Wakes outside the lock: a woken task may poll (and lock) at once.
fn wake(state: MutexGuard<'_, ManualState>, wakers: Vec<Waker>) {
    drop(state);
    for waker in wakers {
        waker.wake();
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &state.wall)
            .field("elapsed", &state.elapsed)
            .field("pending_sleeps", &state.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().wall
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        self.sleep_to(Deadline::Wall(deadline))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mark = self.lock().elapsed.saturating_add(duration);
        self.sleep_to(Deadline::Elapsed(mark))
    }
}

struct ManualSleep {
    clock: ManualClock,
    deadline: Deadline,
    id: u64,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let waker = cx.waker().clone();
        let mut state = self.clock.lock();
        if state.is_due(self.deadline) {
            let old = state.remove(self.deadline, self.id);
            drop(state);
            drop((old, waker));
            return Poll::Ready(());
        }
        // Re-registered: the sleeper may have been woken by a jump that time then undid.
        let old = state.insert(self.deadline, self.id, Some(waker));
        drop(state);
        drop(old);
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let old = self.clock.lock().remove(self.deadline, self.id);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn poll(sleep: &mut Sleep) -> bool {
        let waker = futures::task::noop_waker();
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }

    #[test]
    fn manual_sleep_resolves_only_when_time_reaches_the_deadline() {
        let clock = ManualClock::new(t(100));
        let mut sleep = clock.sleep_until(t(110));
        assert!(!poll(&mut sleep));
        clock.advance(Duration::from_secs(9));
        assert!(!poll(&mut sleep));
        clock.advance(Duration::from_secs(1));
        assert!(poll(&mut sleep));
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
        clock.sleep(Duration::ZERO).await;
    }

    #[test]
    fn set_backwards_keeps_wall_sleepers_waiting() {
        let clock = ManualClock::new(t(100));
        let mut sleep = clock.sleep_until(t(150));
        clock.set(t(40));
        assert!(!poll(&mut sleep));
        clock.set(t(150));
        assert!(poll(&mut sleep));
    }

    #[test]
    fn setting_the_wall_clock_neither_stretches_nor_shortens_an_elapsed_sleep() {
        let clock = ManualClock::new(t(10_000));
        let mut timeout = clock.sleep(Duration::from_secs(30));
        clock.set(t(10_000 - 3600));
        clock.advance(Duration::from_secs(29));
        assert!(!poll(&mut timeout));
        clock.set(t(10_000 + 86_400));
        assert!(!poll(&mut timeout), "a jump forward ended an elapsed sleep");
        clock.advance(Duration::from_secs(1));
        assert!(poll(&mut timeout), "30 s elapsed but the sleep goes on");
        assert_eq!(clock.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn advancing_by_the_largest_duration_saturates_and_wakes_everyone() {
        let clock = ManualClock::new(t(100));
        let mut wall = clock.sleep_until(t(u32::MAX as u64));
        let mut elapsed = clock.sleep(Duration::from_secs(u64::MAX / 2));
        clock.advance(Duration::MAX);
        assert!(clock.now() > t(100), "advance(Duration::MAX) did nothing");
        assert_eq!(clock.elapsed(), Duration::MAX);
        assert!(poll(&mut wall) && poll(&mut elapsed));
        clock.advance(Duration::from_secs(1)); // still saturated, no panic
    }

    #[test]
    fn advance_wakes_sleepers_of_both_kinds_in_deadline_order() {
        let clock = ManualClock::new(t(100));
        let order = Arc::new(Mutex::new(Vec::new()));
        let waker_for = |name: &'static str| {
            let order = order.clone();
            futures::task::waker(Arc::new(Recorder(name, order)))
        };
        let mut sleeps: Vec<(Sleep, &'static str)> = vec![
            (clock.sleep(Duration::from_secs(30)), "elapsed 30"),
            (clock.sleep_until(t(110)), "wall 10"),
            (clock.sleep(Duration::from_secs(20)), "elapsed 20"),
            (clock.sleep_until(t(140)), "wall 40"),
        ];
        for (sleep, name) in &mut sleeps {
            let waker = waker_for(name);
            assert!(sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        clock.advance(Duration::from_secs(35));
        assert_eq!(
            *order.lock().unwrap(),
            ["wall 10", "elapsed 20", "elapsed 30"]
        );
        // Woken sleeps are due until polled; polled, they are gone and the next is the last one.
        assert_eq!(clock.next_deadline(), Some(clock.now()));
        for (sleep, _) in &mut sleeps[..3] {
            assert!(poll(sleep));
        }
        assert_eq!(clock.next_deadline(), Some(t(140)));
    }

    struct Recorder(&'static str, Arc<Mutex<Vec<&'static str>>>);
    impl futures::task::ArcWake for Recorder {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.1.lock().unwrap().push(arc_self.0);
        }
    }

    #[test]
    fn saturating_add_reaches_the_latest_time_without_panicking() {
        let latest = saturating_add(t(0), Duration::MAX);
        assert!(latest > t(u32::MAX as u64));
        assert_eq!(saturating_add(latest, Duration::from_secs(1)), latest);
        assert_eq!(saturating_add(t(5), Duration::from_secs(5)), t(10));
    }
}

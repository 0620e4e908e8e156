//! [`FetchLimiter`]: a backend's capacity, shared by many managers and planned so that every token
//! is refreshed before its deadline whenever the capacity allows it.

mod plan;
mod state;

use crate::clock::{Clock, SystemClock};
use state::{Config, Next, State, Task};
use std::fmt;
use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

pub(crate) use state::Outcome;

/// The backend's capacity, shared by every manager given this limiter: a process holding many
/// identities refreshes each token before its deadline without flooding its token backend.
///
/// # Policy
///
/// - **Capacity**: at most [`max_concurrent`](Self::max_concurrent) fetches at once and, with a
///   [`rate`](FetchLimiterBuilder::rate), at most that many starts a second, evenly spaced.
/// - **Deadlines, planned backwards**: each manager files its refresh deadline (`exp -
///   refresh_ahead` of the token it holds) while it holds a token; the limiter schedules the
///   refreshes backwards from their deadlines in deadline order, as if each fetch took the
///   estimated duration, and tells each manager to start when the plan needs it to: as late as
///   the capacity allows, and early enough that every refresh ends before its deadline whenever
///   the capacity over the tokens' lives allows it. A manager the plan has not called yet still
///   starts on its own at its deadline.
/// - **Earliest deadline first**: a fetch waiting for a slot gets one before any fetch with a
///   later deadline (a manager without a token first of all), not first come, first served.
/// - **Learned durations**: the estimate is the 90th percentile of the last 64 fetch durations
///   observed, each counted at most [`MAX_FETCH_ESTIMATE`](Self::MAX_FETCH_ESTIMATE) (before
///   any, [`initial_fetch_estimate`](FetchLimiterBuilder::initial_fetch_estimate), 5 s by
///   default); a fetch slower than planned only moves the next starts earlier.
/// - **Push-back**: a fetch failing with a `Retry-After` ([`FetchError::with_retry_after`], which
///   `HttpFetcher` sets on 429 and 503) pauses every manager of the group for that long, and
///   tells the group where the backend's ceiling is: refused while `n` fetches ran (itself
///   included), the group holds at `n - 1` fetches at once (at least 1; the refusals of one
///   burst, in whatever order, leave the lowest), and the rate in step with the slots.
/// - **Recovery**: the group stays below the ceiling until [`QUIET_PERIOD`](Self::QUIET_PERIOD)
///   passes without a push-back, then tries one slot more; each further quiet period gives back
///   twice as many as the one before (2, then 4, ...) up to `max_concurrent`, where the ceiling
///   is forgotten. A refused try holds the group below the ceiling again and the quiet period
///   starts over: against a backend that stays saturated, the group is refused about once a
///   quiet period. A slot given back is used when a fetch next ends or asks for one.
///
/// The plan's starts are wall-clock instants (deadlines are); the rate's spacing and a
/// push-back's pause are elapsed time, which setting the wall clock back does not stretch.
/// Waiting for a slot does not count against a fetch's timeout. The plan runs on the limiter's
/// clock ([`FetchLimiterBuilder::clock`]), which must be the managers' clock: a lazily started
/// task sleeps until the next planned start and ends once no manager holds a ticket or waits for
/// a slot.
///
/// [`FetchError::with_retry_after`]: crate::FetchError::with_retry_after
///
/// ```
/// use access_manager::clock::{Clock, ManualClock};
/// use access_manager::{fetcher_fn, AccessManager, AccessToken, FetchError, FetchLimiter};
/// use std::num::NonZeroUsize;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// fn mint(who: &str, iat: SystemTime, ttl: u64) -> String {
///     AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
///         .identity(who).issued_at(iat).ttl(Duration::from_secs(ttl)).to_jwt().unwrap()
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// // One fetch at a time, each planned to take 10 s until fetches are observed.
/// let limiter = FetchLimiter::builder(NonZeroUsize::new(1).unwrap())
///     .clock(clock.clone())
///     .initial_fetch_estimate(Duration::from_secs(10))
///     .build();
/// // Three managers whose tokens all reach their refresh deadline (exp - 180 s) in 20 minutes.
/// let managers: Vec<AccessManager> = ["ann", "bob", "cat"].into_iter().map(|who| {
///     let clock_ = clock.clone();
///     let fetcher = fetcher_fn(move |_| {
///         let jwt = mint(who, clock_.now(), 3600);
///         async move { Ok::<_, FetchError>(jwt) }
///     });
///     AccessManager::builder().clock(clock.clone()).fetcher(fetcher).fetch_limiter(&limiter)
///         .initial_token(mint(who, clock.now(), 1380)).build().unwrap()
/// }).collect();
/// let fetches = || managers.iter().map(|m| m.stats().fetches).sum::<u64>();
/// let settle = || async { for _ in 0..10 { tokio::task::yield_now().await } };
/// settle().await;
/// assert_eq!(limiter.planned(), 3);
/// // Planned backwards from the deadline, 10 s each, one at a time: the first starts 30 s
/// // before it, and no earlier.
/// clock.advance(Duration::from_secs(1200 - 31));
/// settle().await;
/// assert_eq!(fetches(), 0);
/// clock.advance(Duration::from_secs(1));
/// settle().await;
/// assert_eq!(fetches(), 1);
/// // It answered at once: the estimate is learned, and its new token's refresh joins the two
/// // still planned.
/// assert_eq!(limiter.fetch_estimate(), Duration::ZERO);
/// assert_eq!(limiter.planned(), 3);
/// # }
/// ```
#[derive(Clone)]
pub struct FetchLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Tells the planning task that the plan or the slots changed.
    changed: Notify,
}

/// Builds a [`FetchLimiter`]: the backend's capacity and the clock the managers run on.
///
/// ```
/// use access_manager::clock::ManualClock;
/// use access_manager::FetchLimiter;
/// use std::num::{NonZeroU32, NonZeroUsize};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let limiter = FetchLimiter::builder(NonZeroUsize::new(64).unwrap())
///     .rate(NonZeroU32::new(20).unwrap())
///     .clock(ManualClock::new(UNIX_EPOCH))
///     .initial_fetch_estimate(Duration::from_secs(2))
///     .build();
/// assert_eq!((limiter.max_concurrent(), limiter.rate()), (64, Some(20)));
/// ```
#[derive(Debug)]
pub struct FetchLimiterBuilder {
    max_concurrent: NonZeroUsize,
    rate: Option<NonZeroU32>,
    clock: Arc<dyn Clock>,
    initial_estimate: Duration,
}

impl FetchLimiterBuilder {
    /// At most `per_second` fetches start each second, evenly spaced (default: no rate, only the
    /// concurrency limit).
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::{NonZeroU32, NonZeroUsize};
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(8).unwrap())
    ///     .rate(NonZeroU32::new(5).unwrap())
    ///     .build();
    /// assert_eq!(limiter.rate(), Some(5));
    /// ```
    pub fn rate(mut self, per_second: NonZeroU32) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// The clock the plan runs on: the managers' clock (default [`SystemClock`]).
    ///
    /// ```
    /// # use access_manager::clock::{Clock, ManualClock};
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// # use std::time::UNIX_EPOCH;
    /// let clock = ManualClock::new(UNIX_EPOCH);
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(8).unwrap()).clock(clock.clone()).build();
    /// assert!(format!("{limiter:?}").contains("ManualClock"));
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The fetch duration the plan assumes until fetches have been observed (default
    /// [`FetchLimiter::DEFAULT_FETCH_ESTIMATE`], 5 s).
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// # use std::time::Duration;
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(8).unwrap())
    ///     .initial_fetch_estimate(Duration::from_millis(300))
    ///     .build();
    /// assert_eq!(limiter.fetch_estimate(), Duration::from_millis(300));
    /// ```
    pub fn initial_fetch_estimate(mut self, estimate: Duration) -> Self {
        self.initial_estimate = estimate;
        self
    }

    /// The limiter.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(3).unwrap()).build();
    /// assert_eq!(limiter.max_concurrent(), 3);
    /// ```
    pub fn build(self) -> FetchLimiter {
        let config = Config {
            max_concurrent: self.max_concurrent.get(),
            rate: self.rate.map(|r| f64::from(r.get())),
            initial_estimate: self.initial_estimate,
        };
        FetchLimiter {
            inner: Arc::new(Inner {
                clock: self.clock,
                state: Mutex::new(State::new(config)),
                changed: Notify::new(),
            }),
        }
    }
}

impl FetchLimiter {
    /// The fetch duration assumed before any fetch was observed.
    pub const DEFAULT_FETCH_ESTIMATE: Duration = Duration::from_secs(5);

    /// The longest fetch duration the estimate counts: durations are read on the wall clock, and
    /// a longer one is the clock jumping during the fetch, not a slow backend.
    pub const MAX_FETCH_ESTIMATE: Duration = state::MAX_FETCH_ESTIMATE;

    /// How long the backend must go without pushing back before the group tries one slot above
    /// the ceiling it learned; each further quiet period doubles the slots added.
    pub const QUIET_PERIOD: Duration = state::QUIET_PERIOD;

    /// At most `max_concurrent` fetches at once, no rate, on the [`SystemClock`].
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// let limiter = FetchLimiter::new(NonZeroUsize::new(64).unwrap());
    /// assert_eq!((limiter.max_concurrent(), limiter.rate()), (64, None));
    /// ```
    pub fn new(max_concurrent: NonZeroUsize) -> Self {
        Self::builder(max_concurrent).build()
    }

    /// A limiter of at most `max_concurrent` fetches at once, to configure further.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::{NonZeroU32, NonZeroUsize};
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(16).unwrap())
    ///     .rate(NonZeroU32::new(10).unwrap())
    ///     .build();
    /// assert_eq!(limiter.rate(), Some(10));
    /// ```
    pub fn builder(max_concurrent: NonZeroUsize) -> FetchLimiterBuilder {
        FetchLimiterBuilder {
            max_concurrent,
            rate: None,
            clock: Arc::new(SystemClock),
            initial_estimate: Self::DEFAULT_FETCH_ESTIMATE,
        }
    }

    /// The most fetches allowed at once.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).max_concurrent(), 8);
    /// ```
    pub fn max_concurrent(&self) -> usize {
        self.inner.lock().config.max_concurrent
    }

    /// The most fetches started a second, if a rate was set.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).rate(), None);
    /// ```
    pub fn rate(&self) -> Option<u32> {
        self.inner.lock().config.rate.map(|r| r as u32)
    }

    /// The fetches allowed at once now: [`max_concurrent`](Self::max_concurrent), or fewer while
    /// the group holds below the ceiling the backend's push-backs taught it (see the policy on
    /// [`FetchLimiter`]).
    ///
    /// ```
    /// use access_manager::clock::ManualClock;
    /// use access_manager::{fetcher_fn, AccessManager, FetchError, FetchLimiter};
    /// use std::num::NonZeroUsize;
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let limiter = FetchLimiter::builder(NonZeroUsize::new(8).unwrap()).clock(clock.clone()).build();
    /// assert_eq!(limiter.current_limit(), 8); // no push-back yet
    /// // A backend that refuses every fetch for now.
    /// let fetcher = fetcher_fn(|_| async {
    ///     Err::<String, _>(FetchError::transient("503").with_retry_after(Duration::from_secs(1)))
    /// });
    /// let manager = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .fetcher(fetcher)
    ///     .fetch_limiter(&limiter)
    ///     .build()
    ///     .unwrap();
    /// assert!(manager.refresh().await.is_err());
    /// // Refused with one fetch running: the group holds at one at once…
    /// assert_eq!((limiter.pushbacks(), limiter.current_limit()), (1, 1));
    /// // …until a quiet period without push-back gives a slot back.
    /// clock.advance(FetchLimiter::QUIET_PERIOD);
    /// assert_eq!(limiter.current_limit(), 2);
    /// # }
    /// ```
    pub fn current_limit(&self) -> usize {
        let now = self.inner.clock.now();
        self.inner.lock().slots(now)
    }

    /// Fetches holding a slot now.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight
    }

    /// The most fetches that ever held a slot at once.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).peak(), 0);
    /// ```
    pub fn peak(&self) -> usize {
        self.inner.lock().peak
    }

    /// Refreshes planned: managers holding a token whose refresh the plan has not started yet.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).planned(), 0);
    /// ```
    pub fn planned(&self) -> usize {
        self.inner.lock().tickets()
    }

    /// Fetches waiting for a slot now.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).waiting(), 0);
    /// ```
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiting()
    }

    /// How long the plan assumes a fetch takes: the 90th percentile of the recent fetch
    /// durations, or the initial estimate before any.
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// let limiter = FetchLimiter::new(NonZeroUsize::new(8).unwrap());
    /// assert_eq!(limiter.fetch_estimate(), FetchLimiter::DEFAULT_FETCH_ESTIMATE);
    /// ```
    pub fn fetch_estimate(&self) -> Duration {
        self.inner.lock().estimate()
    }

    /// How many times the backend pushed back (a fetch failed with a `Retry-After`).
    ///
    /// ```
    /// # use access_manager::FetchLimiter;
    /// # use std::num::NonZeroUsize;
    /// assert_eq!(FetchLimiter::new(NonZeroUsize::new(8).unwrap()).pushbacks(), 0);
    /// ```
    pub fn pushbacks(&self) -> u64 {
        self.inner.lock().pushbacks
    }

    /// Files a refresh that must end by `deadline`: the ticket is ready once the plan says it
    /// starts; dropping it withdraws the refresh from the plan.
    fn file(&self, deadline: SystemTime) -> Ticket {
        let mut state = self.inner.lock();
        let key = state.file(deadline);
        self.inner.kick(&mut state);
        drop(state);
        Ticket {
            inner: self.inner.clone(),
            key,
        }
    }

    /// Waits for a slot, earliest `deadline` first; the slot is held until the [`Slot`] drops.
    fn acquire(&self, deadline: SystemTime) -> Acquire {
        Acquire {
            inner: self.inner.clone(),
            deadline,
            key: None,
        }
    }
}

impl fmt::Debug for FetchLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = self.inner.clock.now();
        let state = self.inner.lock();
        f.debug_struct("FetchLimiter")
            .field("max_concurrent", &state.config.max_concurrent)
            .field("rate", &state.config.rate)
            .field("current_limit", &state.slots(now))
            .field("in_flight", &state.in_flight)
            .field("waiting", &state.waiting())
            .field("planned", &state.tickets())
            .field("fetch_estimate", &state.estimate())
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock: recover the guard if it ever did.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the planning task something changed, starting it if it is not running (it needs a
    /// tokio runtime: without one, as while a runtime shuts down, nothing is planned).
    fn kick(self: &Arc<Self>, state: &mut State) {
        if state.task == Task::Stopped {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.task = Task::Running;
                // The task ends on its own once no ticket and no waiting fetch remains.
                drop(runtime.spawn(plan(self.clone())));
            }
        }
        self.changed.notify_one();
    }
}

impl Inner {
    /// Tells a running planning task that nothing is left to plan, so that it ends now rather
    /// than at its next planned instant.
    fn end_if_idle(&self, state: &State) {
        if state.is_idle() && state.task == Task::Running {
            self.changed.notify_one();
        }
    }
}

/// The planning task: releases the refreshes the plan says start now and grants the slots that
/// time frees (rate, push-back), then sleeps until the next of those or a change.
async fn plan(inner: Arc<Inner>) {
    loop {
        let now = inner.clock.now();
        let (wakers, next) = inner.lock().turn(now);
        wake(wakers);
        let changed = inner.changed.notified();
        let Next::Wait { plan, grant } = next else {
            return;
        };
        // The plan's starts are wall-clock instants (deadlines are); the rate's spacing and a
        // push-back's pause are elapsed time, which setting the wall clock back does not stretch.
        let planned = async {
            match plan {
                Some(at) => inner.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let granted = async {
            match grant {
                Some(after) => inner.clock.sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = changed => {}
            () = planned => {}
            () = granted => {}
        }
    }
}

fn wake(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// A manager's place in a limiter's group: the limiter, and the ticket of the manager's planned
/// automatic fetch, if any.
pub(crate) struct Member {
    limiter: FetchLimiter,
    ticket: Option<Ticket>,
}

impl Member {
    pub(crate) fn new(limiter: FetchLimiter) -> Box<Self> {
        Box::new(Member {
            limiter,
            ticket: None,
        })
    }

    /// Files the manager's planned fetch, due by `at`, in place of the one filed before; `None`
    /// withdraws it.
    pub(crate) fn plan(&mut self, at: Option<SystemTime>) {
        self.ticket = at.map(|at| self.limiter.file(at));
    }

    /// `true` when the plan says the planned fetch starts now (once: the ticket is then spent).
    pub(crate) fn poll_start(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self
            .ticket
            .as_ref()
            .is_some_and(|t| t.poll_due(cx).is_ready());
        if due {
            self.ticket = None;
        }
        due
    }

    /// A slot for a fetch due by `deadline`, earliest deadline first.
    pub(crate) fn acquire(&self, deadline: SystemTime) -> Acquire {
        self.limiter.acquire(deadline)
    }
}

/// A manager's filed refresh deadline.
struct Ticket {
    inner: Arc<Inner>,
    key: state::Key,
}

impl Ticket {
    /// Ready once the plan says this refresh starts (and from then on).
    fn poll_due(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.lock().poll_ticket(self.key, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        let waker = state.drop_ticket(self.key);
        self.inner.end_if_idle(&state);
        drop(state);
        drop(waker);
    }
}

/// A fetch waiting for a slot.
pub(crate) struct Acquire {
    inner: Arc<Inner>,
    deadline: SystemTime,
    /// Set while it waits.
    key: Option<state::Key>,
}

impl Future for Acquire {
    type Output = Slot;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        let this = self.get_mut();
        let now = this.inner.clock.now();
        let mut state = this.inner.lock();
        let (key, others) = match this.key {
            Some(key) => (key, Vec::new()),
            None => {
                let key = state.wait_for_slot(this.deadline);
                (key, state.grant(now))
            }
        };
        this.key = Some(key);
        let running = state.poll_slot(key, cx.waker());
        if running.is_none() && state.waits_on_time(now) {
            this.inner.kick(&mut state);
        }
        drop(state);
        wake(others);
        let Some(running) = running else {
            return Poll::Pending;
        };
        this.key = None;
        Poll::Ready(Slot {
            inner: this.inner.clone(),
            started: now,
            running,
            outcome: None,
        })
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let now = self.inner.clock.now();
            let mut state = self.inner.lock();
            let (own, freed) = state.stop_waiting(key, now);
            self.inner.end_if_idle(&state);
            drop(state);
            drop(own);
            wake(freed);
        }
    }
}

/// A held slot; frees it when dropped.
pub(crate) struct Slot {
    inner: Arc<Inner>,
    started: SystemTime,
    /// Fetches running when this one went out, itself included: a push-back says the backend's
    /// ceiling is below it.
    running: usize,
    outcome: Option<Outcome>,
}

impl Slot {
    /// The fetch ended this way: its duration or the backend's push-back informs the plan.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        let estimate = state.estimate();
        let wakers = state.release(self.started, self.running, self.outcome, now);
        let replan = state.estimate() > estimate
            || matches!(self.outcome, Some(Outcome::PushedBack(_)))
            || state.waits_on_time(now);
        if replan {
            self.inner.kick(&mut state);
        }
        self.inner.end_if_idle(&state);
        drop(state);
        wake(wakers);
    }
}

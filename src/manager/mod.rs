//! The [`AccessManager`] handle and its [`AccessManagerBuilder`].

mod current;
mod driver;
pub(crate) mod error;
mod fanout;
mod shared;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::consumer::ConsumerId;
use crate::event::Events;
use crate::{AccessToken, FetchLimiter, TokenConsumer, TokenFetcher};
use error::{BuildError, RefreshError, UpdateError, UpdateReport};
use shared::{lock, shift, Command, Shared, Slot};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// How long before expiry the manager refreshes by default: 180 s.
pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(180);
/// How long one fetch may take by default: 30 s.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one consumer may take to take a token by default: 10 s.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many events a subscriber may fall behind before it loses the oldest: 64.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

/// Holds one identity's access token, refreshes it in time and hands it to every SDK client.
///
/// A cheap handle: clones share one manager. The manager runs as a background task on the tokio
/// runtime it was built in, and stops on [`shutdown`](Self::shutdown) or when the last handle is
/// dropped. See the [crate docs](crate) for a full example.
#[derive(Clone)]
pub struct AccessManager {
    handle: Arc<Handle>,
}

/// Dropping the last one tells the driver to stop.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.mailbox).handles_gone = true;
        self.shared.driver_waker.wake();
    }
}

impl AccessManager {
    /// Starts configuring a manager.
    pub fn builder() -> AccessManagerBuilder {
        AccessManagerBuilder::default()
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The current token (possibly expired; see [`is_expired`](Self::is_expired)), or `None` before
    /// the first one. Lock-free: never blocks, never awaits.
    ///
    /// Each thread remembers the token it last read from a manager (a small table per thread, eight
    /// entries shared by all managers), so a repeated read is one atomic load and one reference
    /// count increment. A replaced token is never returned; it (or the token of a manager that is
    /// gone) stays in memory until each thread that read it reads any manager again, or ends.
    pub fn token(&self) -> Option<AccessToken> {
        self.shared().current.get()
    }

    /// Calls `f` with the current token without cloning it. Lock-free, and the fastest read: when the
    /// thread's entry for this manager is current (see [`token`](Self::token)), no reference count
    /// is touched. `f` may read managers itself.
    pub fn with_token<R>(&self, f: impl FnOnce(Option<&AccessToken>) -> R) -> R {
        self.shared().current.with(f)
    }

    /// The current token's identity.
    pub fn identity(&self) -> Option<String> {
        self.with_token(|t| t.and_then(|t| t.identity().map(str::to_owned)))
    }

    /// When the current token expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.with_token(|t| t.map(AccessToken::expires_at))
    }

    /// Whether the current token has expired on the manager's clock (shifted by the issuer's clock
    /// offset when [`estimate_clock_skew`](AccessManagerBuilder::estimate_clock_skew) is on);
    /// `false` while there is none.
    pub fn is_expired(&self) -> bool {
        self.with_token(|t| {
            t.is_some_and(|t| {
                let now = shift(self.shared().clock.now(), self.shared().applied_offset());
                now >= t.expires_at()
            })
        })
    }

    /// The estimated offset of the token issuer's clock from the manager's clock, in seconds
    /// (positive: the issuer is ahead), from the `iat` (else `nbf`) of the last fetched token that
    /// had one. `None` before any.
    pub fn clock_offset(&self) -> Option<i64> {
        self.shared().clock_offset()
    }

    /// The manager's clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.shared().clock
    }

    /// Offers a token pushed by the app.
    ///
    /// The token is parsed and validated at the clock's now. A new valid token becomes current,
    /// `TokenUpdated` is emitted, and it is delivered to every consumer; this returns once each has
    /// answered or timed out. The same token again changes nothing (`changed() == false`).
    ///
    /// # Errors
    /// An invalid, expired, not yet valid or over-24 h token, or one for another identity or account
    /// than the token held: the state, timers and consumers are untouched and `TokenRejected` is
    /// emitted. `Closed` after shutdown.
    ///
    /// # Cancel safety
    /// Once called, the update happens even if this future is dropped; only the report is lost.
    pub async fn update_token(&self, jwt: impl AsRef<str>) -> Result<UpdateReport, UpdateError> {
        if self.shared().is_closed() {
            return Err(UpdateError::Closed);
        }
        let token = match AccessToken::parse(jwt.as_ref()) {
            Ok(token) => token,
            Err(e) => {
                self.shared().send(Command::Rejected(e.clone()));
                return Err(UpdateError::Invalid(e));
            }
        };
        let (reply, answer) = oneshot::channel();
        // Without consumers to wait for, an idle driver answers before this returns.
        if let Err(command) = driver::run_inline(self.shared(), Command::Update { token, reply }) {
            if !self.shared().send(command) {
                return Err(UpdateError::Closed);
            }
        }
        answer.await.unwrap_or(Err(UpdateError::Closed))
    }

    /// Fetches a new token now, joining a fetch already in flight.
    ///
    /// # Errors
    /// `NoFetcher` without a fetcher; `Fetch` or `Rejected` when the fetch fails (the current token
    /// is kept and automatic retries go on); `Closed` after shutdown.
    pub async fn refresh(&self) -> Result<AccessToken, RefreshError> {
        self.request_fetch(None).await
    }

    /// A token with at least `min_remaining` left: the current one at once when it qualifies, else
    /// the result of a fetch (joined or started).
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh): `Closed` after shutdown, even when the held token qualifies.
    pub async fn fresh_token(&self, min_remaining: Duration) -> Result<AccessToken, RefreshError> {
        if self.shared().is_closed() {
            return Err(RefreshError::Closed);
        }
        if let Some(token) = self.token() {
            let now = self.shared().clock.now();
            let now = shift(now, self.shared().applied_offset());
            if token.remaining_at(now) >= min_remaining && now < token.expires_at() {
                return Ok(token);
            }
        }
        self.request_fetch(Some(min_remaining)).await
    }

    async fn request_fetch(
        &self,
        min_remaining: Option<Duration>,
    ) -> Result<AccessToken, RefreshError> {
        let (reply, answer) = oneshot::channel();
        if !self.shared().send(Command::Refresh {
            min_remaining,
            reply,
        }) {
            return Err(RefreshError::Closed);
        }
        answer.await.unwrap_or(Err(RefreshError::Closed))
    }

    /// Registers an SDK client. It is held weakly: dropping the app's last `Arc` unregisters it.
    /// A consumer registered while a token is current receives it promptly.
    pub fn register<C: TokenConsumer>(&self, consumer: &Arc<C>) -> ConsumerId {
        let id = ConsumerId(
            self.shared()
                .next_consumer_id
                .fetch_add(1, Ordering::Relaxed),
        );
        let name: Arc<str> = consumer.name().into();
        let required = consumer.required_grant();
        let weak = Arc::downgrade(consumer);
        let mut consumers = lock(&self.shared().consumers);
        // Most apps register a handful: grow one slot at a time at first, then by doubling.
        if consumers.len() < 4 {
            consumers.reserve_exact(1);
        }
        consumers.push(Slot {
            id,
            consumer: weak,
            name,
            required,
            busy: false,
            wants_current: false,
            needs_current: true,
        });
        drop(consumers);
        self.shared().send(Command::Registered(id));
        id
    }

    /// Unregisters a consumer: it receives no further token. `false` when it was not registered.
    pub fn unregister(&self, id: ConsumerId) -> bool {
        let removed = {
            let mut consumers = lock(&self.shared().consumers);
            let before = consumers.len();
            consumers.retain(|slot| slot.id != id);
            consumers.len() != before
        };
        if removed {
            self.shared().send(Command::Unregistered(id));
        }
        removed
    }

    /// How many consumers are registered (including any whose `Arc` was dropped but not yet noticed).
    pub fn consumer_count(&self) -> usize {
        lock(&self.shared().consumers).len()
    }

    /// Subscribes to events. After shutdown, the subscription yields `Closed` and ends.
    pub fn subscribe(&self) -> Events {
        self.shared().subscribe()
    }

    /// Stops the manager and waits until it has stopped: in-flight fetches and deliveries are
    /// dropped, waiting calls answer `Closed`, subscribers get `Closed`. Idempotent.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        let closed = shared.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if shared.is_closed() {
            return;
        }
        shared.send(Command::Shutdown);
        if shared.is_closed() {
            return;
        }
        closed.await;
    }

    /// Whether the manager has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }
}

impl fmt::Debug for AccessManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessManager")
            .field("token", &self.token())
            .field("consumers", &self.consumer_count())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Configures an [`AccessManager`]. Every setting has a default.
pub struct AccessManagerBuilder {
    pub(crate) fetcher: Option<Arc<dyn TokenFetcher>>,
    pub(crate) initial_token: Option<String>,
    pub(crate) refresh_ahead: Duration,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) fetch_timeout: Duration,
    pub(crate) consumer_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) seed: Option<u64>,
    pub(crate) event_capacity: usize,
    pub(crate) limiter: Option<FetchLimiter>,
    pub(crate) refresh_jitter: Duration,
    pub(crate) estimate_clock_skew: bool,
}

impl Default for AccessManagerBuilder {
    fn default() -> Self {
        AccessManagerBuilder {
            fetcher: None,
            initial_token: None,
            refresh_ahead: DEFAULT_REFRESH_AHEAD,
            clock: None,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            consumer_timeout: DEFAULT_CONSUMER_TIMEOUT,
            backoff: Backoff::default(),
            seed: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            limiter: None,
            refresh_jitter: Duration::ZERO,
            estimate_clock_skew: false,
        }
    }
}

impl AccessManagerBuilder {
    /// Where new tokens come from. Optional: without one, the app pushes tokens with
    /// [`AccessManager::update_token`]. With one and no initial token, the manager fetches at once.
    pub fn fetcher(mut self, fetcher: impl TokenFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// A token to start with (default: none). It must be valid at the clock's now.
    pub fn initial_token(mut self, jwt: impl Into<String>) -> Self {
        self.initial_token = Some(jwt.into());
        self
    }

    /// How long before expiry `TokenWillExpire` fires and fetching starts (default
    /// [`DEFAULT_REFRESH_AHEAD`], 180 s).
    pub fn refresh_ahead(mut self, lead: Duration) -> Self {
        self.refresh_ahead = lead;
        self
    }

    /// The clock every timer runs on (default [`SystemClock`]). Use a
    /// [`ManualClock`](crate::clock::ManualClock) in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How long one fetch may take before it counts as a transient failure (default
    /// [`DEFAULT_FETCH_TIMEOUT`], 30 s). Must be non-zero.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// How long one consumer may take to take a token before it counts as failed (default
    /// [`DEFAULT_CONSUMER_TIMEOUT`], 10 s). Must be non-zero.
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// Retry timing after failed fetches (default [`Backoff::default`]: 1 s doubling to 60 s, full
    /// jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the jitter's random source, for exact tests (default: seeded from the clock and a
    /// per-manager counter).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many events a subscriber may fall behind before losing the oldest (default
    /// [`DEFAULT_EVENT_CAPACITY`], 64). Must be non-zero.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Shares a cap on concurrent fetches with other managers (default: no cap).
    pub fn fetch_limiter(mut self, limiter: &FetchLimiter) -> Self {
        self.limiter = Some(limiter.clone());
        self
    }

    /// Spreads automatic refreshes: each starts at a random point of `[exp - refresh_ahead,
    /// exp - refresh_ahead + spread]` instead of at its start, so that many managers whose tokens
    /// expire together do not fetch together (default: zero, no spread). `TokenWillExpire` still
    /// fires at `exp - refresh_ahead`. Must be shorter than `refresh_ahead`.
    pub fn refresh_jitter(mut self, spread: Duration) -> Self {
        self.refresh_jitter = spread;
        self
    }

    /// Schedules fetched tokens by the issuer's clock (default: off, so that "expired" means
    /// `now >= exp` on the manager's clock).
    ///
    /// When on, each fetched token's `iat` (else `nbf`) at receipt estimates the offset between the
    /// issuer's clock and the manager's (within ±24 h), and tokens are validated and their timers set
    /// from that: a device clock hours off then neither rejects fresh tokens as expired nor refreshes
    /// hours late. A fetched token that expires before the token held is not taken (a stale token
    /// from the backend cannot pass for a fresh one). Either way, the estimate is exposed by
    /// [`AccessManager::clock_offset`], and an offset over 5 minutes is reported once as
    /// [`Event::ClockSkewSuspected`](crate::Event::ClockSkewSuspected).
    pub fn estimate_clock_skew(mut self, on: bool) -> Self {
        self.estimate_clock_skew = on;
        self
    }

    /// Starts the manager on the current tokio runtime.
    ///
    /// # Errors
    /// `NoRuntime` outside a tokio runtime; `InvalidInitialToken` when the initial token is invalid
    /// or expired at the clock's now; `InvalidConfig` for a zero timeout or event capacity.
    pub fn build(self) -> Result<AccessManager, BuildError> {
        self.start(false).map(|(manager, _)| manager)
    }

    /// [`build`](Self::build), with a subscription made before the manager starts, so that not
    /// even its first event (the initial fetch's `TokenUpdated`) can be missed.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with_events(self) -> Result<(AccessManager, Events), BuildError> {
        self.start(true)
            .map(|(manager, events)| (manager, events.unwrap_or_else(Events::closed)))
    }

    fn start(mut self, subscribe: bool) -> Result<(AccessManager, Option<Events>), BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        if self.fetch_timeout.is_zero() {
            return Err(BuildError::InvalidConfig("fetch_timeout must be non-zero"));
        }
        if self.consumer_timeout.is_zero() {
            return Err(BuildError::InvalidConfig(
                "consumer_timeout must be non-zero",
            ));
        }
        if !self.refresh_jitter.is_zero() && self.refresh_jitter >= self.refresh_ahead {
            return Err(BuildError::InvalidConfig(
                "refresh_jitter must be shorter than refresh_ahead",
            ));
        }
        if self.event_capacity == 0 {
            return Err(BuildError::InvalidConfig("event_capacity must be non-zero"));
        }
        let clock: Arc<dyn Clock> = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let initial = match self.initial_token.take() {
            None => None,
            Some(jwt) => {
                // The app's String becomes the token's text: no copy.
                let token =
                    AccessToken::parse_owned(jwt).map_err(BuildError::InvalidInitialToken)?;
                token
                    .validate_at(clock.now())
                    .map_err(BuildError::InvalidInitialToken)?;
                Some(token)
            }
        };
        let shared = Arc::new(Shared::new(clock, self.event_capacity));
        let events = subscribe.then(|| shared.subscribe());
        let driver = driver::Driver::new(self, shared.clone(), initial);
        *lock(&shared.driver) = Some(driver);
        runtime.spawn(driver::DriverTask(shared.clone()));
        let manager = AccessManager {
            handle: Arc::new(Handle { shared }),
        };
        Ok((manager, events))
    }
}

impl fmt::Debug for AccessManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessManagerBuilder")
            .field("fetcher", &self.fetcher.as_ref().map(|_| ".."))
            .field(
                "initial_token",
                &self.initial_token.as_ref().map(|_| "<redacted>"),
            )
            .field("refresh_ahead", &self.refresh_ahead)
            .field("clock", &self.clock)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("consumer_timeout", &self.consumer_timeout)
            .field("backoff", &self.backoff)
            .field("event_capacity", &self.event_capacity)
            .field("fetch_limiter", &self.limiter)
            .field("refresh_jitter", &self.refresh_jitter)
            .field("estimate_clock_skew", &self.estimate_clock_skew)
            .finish_non_exhaustive()
    }
}

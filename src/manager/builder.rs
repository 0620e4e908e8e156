//! [`AccessManagerBuilder`]: configuring and starting a manager.

use super::driver::{Config, Driver};
use super::error::BuildError;
use super::shared::Shared;
use super::{AccessManager, Handle};
use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::event::Events;
use crate::store::TokenStore;
use crate::{AccessToken, FetchLimiter, TokenFetcher};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long before expiry the manager refreshes by default: 180 s.
pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(180);
/// How long one fetch may take by default: 30 s.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one consumer may take to take a token by default: 10 s.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many events a subscriber may fall behind before it loses the oldest: 64.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

impl AccessManager {
    /// Starts configuring a manager.
    pub fn builder() -> AccessManagerBuilder {
        AccessManagerBuilder::default()
    }
}

/// Configures an [`AccessManager`]. Every setting has a default.
pub struct AccessManagerBuilder {
    fetcher: Option<Arc<dyn TokenFetcher>>,
    initial_token: Option<String>,
    refresh_ahead: Duration,
    clock: Option<Arc<dyn Clock>>,
    fetch_timeout: Duration,
    consumer_timeout: Duration,
    backoff: Backoff,
    seed: Option<u64>,
    event_capacity: usize,
    limiter: Option<FetchLimiter>,
    refresh_jitter: Duration,
    estimate_clock_skew: bool,
    store: Option<Arc<dyn TokenStore>>,
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
            store: None,
        }
    }
}

impl AccessManagerBuilder {
    /// Where new tokens come from. Optional: without one, the app pushes tokens with
    /// [`AccessManager::update_token`]. With one and no initial token, the manager fetches at once.
    ///
    /// The manager owns its fetcher: a fetcher (or a `fetcher_fn` closure) that holds an
    /// [`AccessManager`] keeps the manager alive, and fetching, after the app dropped every handle
    /// of its own. A fetcher that needs its manager holds a
    /// [`WeakAccessManager`](crate::WeakAccessManager) (see [`AccessManager::downgrade`]).
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

    /// Seeds the jitter's random source, for exact tests (default: seeded from the clock and the
    /// manager's address, so that managers alive at once draw different jitter).
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

    /// Shares a backend's capacity with other managers: the limiter plans this manager's
    /// refreshes with theirs, earliest deadline first (default: none; see [`FetchLimiter`]).
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

    /// Keeps the current token in `store`, so that an app that restarts reconnects at once
    /// (default: none). See [`store`](crate::store).
    ///
    /// Without an initial token, the stored token, if it passes the rules of
    /// [`AccessManager::update_token`], becomes current at start without a fetch; a corrupt,
    /// expired or invalid one is cleared and the manager fetches as usual. Each new current token
    /// is saved; [`AccessManager::sign_out`] clears the store. Store calls run on tokio's blocking
    /// pool, one at a time; a failing store is a warning and a count in
    /// [`Stats::store_failures`](crate::Stats::store_failures), never a stop.
    ///
    /// ```no_run
    /// use access_manager::{store::FileTokenStore, AccessManager};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder()
    ///     .store(FileTokenStore::new("/var/lib/my-app/twilio-token.jwt"))
    ///     .build()
    ///     .unwrap();
    /// # drop(manager);
    /// # }
    /// ```
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
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
        let clock: Arc<dyn Clock> = self.clock.take().unwrap_or_else(|| Arc::new(SystemClock));
        let now = clock.now();
        let initial = match self.initial_token.take() {
            None => None,
            Some(jwt) => {
                // The app's String becomes the token's text: no copy.
                let token = AccessToken::try_from(jwt).map_err(BuildError::InvalidInitialToken)?;
                token
                    .validate_at(now)
                    .map_err(BuildError::InvalidInitialToken)?;
                Some(token)
            }
        };
        let shared = Arc::new(Shared::new(
            clock,
            self.fetcher.is_some(),
            self.event_capacity,
        ));
        let seed = self.seed.unwrap_or_else(|| seed_from(now, shared.key()));
        let events = subscribe.then(|| shared.subscribe());
        let config = Config {
            fetcher: self.fetcher,
            refresh_ahead: self.refresh_ahead,
            fetch_timeout: self.fetch_timeout,
            consumer_timeout: self.consumer_timeout,
            backoff: self.backoff,
            seed,
            limiter: self.limiter.map(crate::limiter::Member::new),
            refresh_jitter: self.refresh_jitter,
            estimate_clock_skew: self.estimate_clock_skew,
            store: self.store,
        };
        // The task is the driver: it ends when the last handle is dropped or on `shutdown()`.
        runtime.spawn(Driver::new(config, shared.clone(), initial));
        let manager = AccessManager {
            handle: Arc::new(Handle { shared }),
        };
        Ok((manager, events))
    }
}

/// A jitter seed from the time and the manager's address, so that managers built at the same
/// instant (alive at once, so at different addresses) draw different jitter.
fn seed_from(now: SystemTime, address: usize) -> u64 {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
            .field("store", &self.store.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

//! [`AccessManagerBuilder`]: configuring and starting a manager.

use super::driver::{Config, Driver, Start};
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
    ///
    /// ```
    /// use access_manager::AccessManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Every setting has a default: this manager waits for the app to push a token.
    /// let manager = AccessManager::builder().build().unwrap();
    /// assert!(manager.token().is_none());
    /// # }
    /// ```
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
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, AccessToken, FetchError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Your backend call goes here; this one mints tokens locally.
    /// let fetcher = fetcher_fn(|_request| async {
    ///     AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .identity("alice")
    ///         .to_jwt()
    ///         .map_err(FetchError::permanent)
    /// });
    /// // With a fetcher and no initial token, the manager fetches at once; this call joins that fetch.
    /// let manager = AccessManager::builder().fetcher(fetcher).build().unwrap();
    /// let token = manager.fresh_token(std::time::Duration::ZERO).await.unwrap();
    /// assert_eq!(token.identity(), Some("alice"));
    /// assert_eq!(manager.stats().fetches, 1);
    /// # }
    /// ```
    pub fn fetcher(mut self, fetcher: impl TokenFetcher) -> Self {
        self.fetcher = Some(Arc::new(fetcher));
        self
    }

    /// A token to start with (default: none). It must be valid at the clock's now.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, BuildError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(&jwt).build().unwrap();
    /// assert_eq!(manager.token().unwrap().as_str(), jwt);
    /// let refused = AccessManager::builder().initial_token("not a token").build();
    /// assert!(matches!(refused, Err(BuildError::InvalidInitialToken(_))));
    /// # }
    /// ```
    pub fn initial_token(mut self, jwt: impl Into<String>) -> Self {
        self.initial_token = Some(jwt.into());
        self
    }

    /// How long before expiry `TokenWillExpire` fires and fetching starts (default
    /// [`DEFAULT_REFRESH_AHEAD`], 180 s).
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, AccessManager, AccessToken};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .issued_at(start)
    ///     .ttl(Duration::from_secs(3600))
    ///     .to_jwt()
    ///     .unwrap();
    /// let manager = AccessManager::builder()
    ///     .clock(clock)
    ///     .initial_token(jwt)
    ///     .refresh_ahead(Duration::from_secs(600))
    ///     .fetcher(access_manager::fetcher_fn(|_| async { Err(access_manager::FetchError::transient("unused")) }))
    ///     .build()
    ///     .unwrap();
    /// // The hour-long token is refreshed 10 minutes before it expires.
    /// assert_eq!(manager.stats().next_fetch_at, Some(start + Duration::from_secs(3000)));
    /// # }
    /// ```
    pub fn refresh_ahead(mut self, lead: Duration) -> Self {
        self.refresh_ahead = lead;
        self
    }

    /// The clock every timer runs on (default [`SystemClock`]). Use a
    /// [`ManualClock`](crate::clock::ManualClock) in tests.
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, AccessManager, AccessToken};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .issued_at(start)
    ///     .ttl(Duration::from_secs(3600))
    ///     .to_jwt()
    ///     .unwrap();
    /// let manager = AccessManager::builder().clock(clock.clone()).initial_token(jwt).build().unwrap();
    /// // Time passes only when the test says so.
    /// clock.advance(Duration::from_secs(3599));
    /// assert!(!manager.is_expired());
    /// clock.advance(Duration::from_secs(1));
    /// assert!(manager.is_expired());
    /// # }
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How long one fetch may take before it counts as a transient failure (default
    /// [`DEFAULT_FETCH_TIMEOUT`], 30 s). Must be non-zero.
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, FetchError, RefreshError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let hanging = fetcher_fn(|_| std::future::pending::<Result<String, FetchError>>());
    /// let manager = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .fetcher(hanging)
    ///     .fetch_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// let waiting = tokio::spawn({
    ///     let manager = manager.clone();
    ///     async move { manager.refresh().await }
    /// });
    /// while clock.next_deadline().is_none() { tokio::task::yield_now().await } // the fetch started
    /// clock.advance(Duration::from_secs(5));
    /// match waiting.await.unwrap() {
    ///     Err(RefreshError::Fetch(e)) => assert!(e.to_string().contains("timed out")),
    ///     other => panic!("expected the timeout, got {other:?}"),
    /// }
    /// # }
    /// ```
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// How long one consumer may take to take a token before it counts as failed (default
    /// [`DEFAULT_CONSUMER_TIMEOUT`], 10 s). Must be non-zero.
    ///
    /// ```
    /// use access_manager::{async_trait, clock::ManualClock, AccessManager, AccessToken, ConsumerError,
    ///                      TokenConsumer};
    /// use std::sync::Arc;
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// /// An SDK client that never answers.
    /// struct Stuck;
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Stuck {
    ///     fn name(&self) -> &str { "stuck" }
    ///     async fn update_token(&self, _: &AccessToken) -> Result<(), ConsumerError> {
    ///         std::future::pending().await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let manager = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .consumer_timeout(Duration::from_secs(2))
    ///     .build()
    ///     .unwrap();
    /// let stuck = Arc::new(Stuck);
    /// manager.register(&stuck);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").issued_at(start).to_jwt().unwrap();
    /// let update = tokio::spawn(manager.update_token(jwt));
    /// while clock.next_deadline().is_none() { tokio::task::yield_now().await } // the call started
    /// clock.advance(Duration::from_secs(2));
    /// let report = update.await.unwrap().unwrap();
    /// assert_eq!(report.failed().map(|(name, _)| name).collect::<Vec<_>>(), ["stuck"]);
    /// # }
    /// ```
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// Retry timing after failed fetches (default [`Backoff::default`]: 1 s doubling to 60 s, full
    /// jitter).
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, Backoff, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let (_manager, mut events) = AccessManager::builder()
    ///     .clock(ManualClock::new(start))
    ///     .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("down")) }))
    ///     .backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(30)).without_jitter())
    ///     .build_with_events()
    ///     .unwrap();
    /// match events.recv().await {
    ///     Some(Event::RefreshFailed { retry_at, .. }) => {
    ///         assert_eq!(retry_at, Some(start + Duration::from_secs(2)));
    ///     }
    ///     other => panic!("expected RefreshFailed, got {other:?}"),
    /// }
    /// # }
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the jitter's random source, for exact tests (default: seeded from the clock and the
    /// manager's address, so that managers alive at once draw different jitter).
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, Backoff, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// /// When a manager seeded with `seed` retries its first failed fetch.
    /// async fn first_retry(seed: u64) -> Option<std::time::SystemTime> {
    ///     let (_manager, mut events) = AccessManager::builder()
    ///         .clock(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
    ///         .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("down")) }))
    ///         .backoff(Backoff::new(Duration::from_secs(8), Duration::from_secs(60)))
    ///         .jitter_seed(seed)
    ///         .build_with_events()
    ///         .unwrap();
    ///     match events.recv().await {
    ///         Some(Event::RefreshFailed { retry_at, .. }) => retry_at,
    ///         other => panic!("expected RefreshFailed, got {other:?}"),
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert_eq!(first_retry(7).await, first_retry(7).await); // exact, for tests
    /// # }
    /// ```
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many events a subscriber may fall behind before losing the oldest (default
    /// [`DEFAULT_EVENT_CAPACITY`], 64). Must be non-zero.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mint = |who: &str| {
    ///     AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .identity(who)
    ///         .to_jwt()
    ///         .unwrap()
    /// };
    /// let manager = AccessManager::builder().event_capacity(1).build().unwrap();
    /// let mut events = manager.subscribe();
    /// manager.update_token(mint("alice")).await.unwrap();
    /// manager.sign_out().await;
    /// // Two events, room for one: the subscriber lost the oldest.
    /// assert_eq!(events.recv().await, Some(Event::Lagged { missed: 1 }));
    /// assert_eq!(events.recv().await, Some(Event::SignedOut));
    /// # }
    /// ```
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Shares a backend's capacity with other managers: the limiter plans this manager's
    /// refreshes with theirs, earliest deadline first (default: none; see [`FetchLimiter`]).
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, AccessToken, FetchError, FetchLimiter};
    /// use std::num::NonZeroUsize;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Many identities on one device: at most two fetches at once, whatever the managers.
    /// let limiter = FetchLimiter::new(NonZeroUsize::new(2).unwrap());
    /// let managers: Vec<_> = ["alice", "bob", "carol"]
    ///     .into_iter()
    ///     .map(|who| {
    ///         let fetcher = fetcher_fn(move |_| {
    ///             let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///                 .identity(who)
    ///                 .to_jwt()
    ///                 .map_err(FetchError::permanent);
    ///             async move { jwt }
    ///         });
    ///         AccessManager::builder().fetcher(fetcher).fetch_limiter(&limiter).build().unwrap()
    ///     })
    ///     .collect();
    /// for manager in &managers {
    ///     manager.fresh_token(std::time::Duration::ZERO).await.unwrap();
    /// }
    /// assert!(limiter.peak() <= 2);
    /// # }
    /// ```
    pub fn fetch_limiter(mut self, limiter: &FetchLimiter) -> Self {
        self.limiter = Some(limiter.clone());
        self
    }

    /// Spreads automatic refreshes: each starts at a random point of `[exp - refresh_ahead,
    /// exp - refresh_ahead + spread]` instead of at its start, so that many managers whose tokens
    /// expire together do not fetch together (default: zero, no spread). `TokenWillExpire` still
    /// fires at `exp - refresh_ahead`. Must be shorter than `refresh_ahead`.
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, AccessManager, AccessToken};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .issued_at(start)
    ///     .ttl(Duration::from_secs(3600))
    ///     .to_jwt()
    ///     .unwrap();
    /// let manager = AccessManager::builder()
    ///     .clock(clock)
    ///     .initial_token(jwt)
    ///     .fetcher(access_manager::fetcher_fn(|_| async { Err(access_manager::FetchError::transient("unused")) }))
    ///     .refresh_jitter(Duration::from_secs(60))
    ///     .build()
    ///     .unwrap();
    /// // Somewhere in the minute after the refresh point (exp - 180 s).
    /// let at = manager.stats().next_fetch_at.unwrap();
    /// let refresh_point = start + Duration::from_secs(3600 - 180);
    /// assert!(at >= refresh_point && at <= refresh_point + Duration::from_secs(60));
    /// # }
    /// ```
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
    /// hours late. The offset moves only with a fetched token the manager takes, and the held
    /// token's timers move with it; an offset a fetched token rules out (the device's clock was set
    /// since) is dropped for the manager's own clock. A fetched token that expires before the token held is not taken (a stale token
    /// from the backend cannot pass for a fresh one). Either way, the estimate is exposed by
    /// [`AccessManager::clock_offset`], and an offset over 5 minutes is reported once as
    /// [`Event::ClockSkewSuspected`](crate::Event::ClockSkewSuspected).
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, AccessToken, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// // The backend's clock is 10 minutes ahead of the device's.
    /// let fetcher = fetcher_fn(move |_| {
    ///     let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .issued_at(start + Duration::from_secs(600))
    ///         .to_jwt()
    ///         .map_err(FetchError::permanent);
    ///     async move { jwt }
    /// });
    /// let manager = AccessManager::builder()
    ///     .clock(ManualClock::new(start))
    ///     .fetcher(fetcher)
    ///     .estimate_clock_skew(true)
    ///     .build()
    ///     .unwrap();
    /// manager.refresh().await.unwrap();
    /// // The token lives an hour from the backend's now: its refresh point (180 s before its end) is
    /// // 3420 s from the device's now, not 600 s later.
    /// assert_eq!(manager.clock_offset(), Some(600));
    /// assert_eq!(manager.stats().next_fetch_at, Some(start + Duration::from_secs(3420)));
    /// # }
    /// ```
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
    /// ```
    /// use access_manager::store::TokenStore;
    /// use access_manager::{AccessManager, AccessToken, Event};
    /// use std::io;
    /// use std::sync::Mutex;
    ///
    /// /// A store in memory (use `FileTokenStore` for a file).
    /// struct Memory(Mutex<Option<String>>);
    ///
    /// impl TokenStore for Memory {
    ///     fn load(&self) -> io::Result<Option<String>> { Ok(self.0.lock().unwrap().clone()) }
    ///     fn save(&self, jwt: &str) -> io::Result<()> { *self.0.lock().unwrap() = Some(jwt.into()); Ok(()) }
    ///     fn clear(&self) -> io::Result<()> { *self.0.lock().unwrap() = None; Ok(()) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// // Saved by the app's last run: taken at start, without a fetch.
    /// let (manager, mut events) = AccessManager::builder()
    ///     .store(Memory(Mutex::new(Some(jwt.clone()))))
    ///     .build_with_events()
    ///     .unwrap();
    /// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. })));
    /// assert_eq!(manager.token().unwrap().as_str(), jwt);
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
    ///
    /// # Examples
    ///
    /// ```
    /// use access_manager::{AccessManager, BuildError};
    /// use std::time::Duration;
    ///
    /// // Outside a tokio runtime there is nowhere to run the manager.
    /// assert!(matches!(AccessManager::builder().build(), Err(BuildError::NoRuntime)));
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// runtime.block_on(async {
    ///     assert!(AccessManager::builder().build().is_ok());
    ///     let zero = AccessManager::builder().fetch_timeout(Duration::ZERO).build();
    ///     assert!(matches!(zero, Err(BuildError::InvalidConfig(_))));
    /// });
    /// ```
    pub fn build(self) -> Result<AccessManager, BuildError> {
        self.start(false).map(|(manager, _)| manager)
    }

    /// [`build`](Self::build), with a subscription made before the manager starts, so that not
    /// even its first event (the initial fetch's `TokenUpdated`) can be missed.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, AccessToken, Event, FetchError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Your backend call goes here; this one mints tokens locally.
    /// let fetcher = fetcher_fn(|_request| async {
    ///     AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .identity("alice")
    ///         .to_jwt()
    ///         .map_err(FetchError::permanent)
    /// });
    /// let (manager, mut events) = AccessManager::builder().fetcher(fetcher).build_with_events().unwrap();
    /// // The initial fetch's token cannot be missed, however fast the fetcher.
    /// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. })));
    /// assert!(manager.token().is_some());
    /// # }
    /// ```
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
        let shared = Arc::new(Shared::new(clock, self.event_capacity));
        let seed = self.seed.unwrap_or_else(|| seed_from(now, shared.key()));
        let events = subscribe.then(|| shared.subscribe());
        let config = Config {
            fetcher: self.fetcher,
            refresh_ahead: self.refresh_ahead,
            fetch_timeout: self.fetch_timeout,
            consumer_timeout: self.consumer_timeout,
            backoff: self.backoff,
            limiter: self.limiter.map(crate::limiter::Member::new),
            refresh_jitter: self.refresh_jitter,
            estimate_clock_skew: self.estimate_clock_skew,
        };
        let start = Start {
            initial,
            store: self.store,
            seed,
        };
        // The task is the driver: it ends when the last handle is dropped or on `shutdown()`.
        runtime.spawn(Driver::new(config, shared.clone(), start));
        let manager = AccessManager {
            handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
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

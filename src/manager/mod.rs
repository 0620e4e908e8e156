//! The [`AccessManager`] handle: the public face of one manager.
//!
//! One manager holds one identity's token. Its driver (`driver`) is the only owner of the manager's
//! state and runs as the manager's task; a handle reads what the driver publishes (the token with
//! the clock offset it is judged by, the counters) and sends it commands through the mailbox
//! (`shared`). Modules import one way: `builder` → the handle (this file) and `driver`; `driver` →
//! `fanout`; the handle, `driver` and `fanout` → `shared` (the mailbox and what the driver
//! publishes) → `call` (one consumer call) → `plugin`; and any of them → the leaves `service`,
//! `stats`, `error`.
//!
//! # The states a manager can be in
//!
//! The driver's state is two small enums, each moved by one function; everything else it holds
//! (the consumers, the store, the armed timer) serves them.
//!
//! ```text
//! the token (Driver::current, Phase; moved by on_time on the wall clock)
//!
//!   None ──install──▶ Fresh ──exp − refresh_ahead──▶ WillExpire ──exp──▶ Expired
//!    ▲                  └──────────── a new token installed: Fresh again ◀───┘
//!    └── sign_out (any phase)          a service's refusal marks it `refused` (not delivered again)
//!
//! automatic fetching (Driver::fetching: Fetching; planned by Driver::plan)
//!
//!   Idle       no fetcher, or the stored token is being read
//!   Planned    { reason, attempt, at: wall-clock instant, wait: Backoff | Spacing (elapsed) }
//!                ──due (instant reached, wait over; a Spacing is over once the token expired)──▶
//!   InFlight   { reason, attempt, waiters, halt_after }   one at a time; refresh() joins it
//!                ──token taken──▶ Planned(WillExpire at the refresh point, Spacing: half its life)
//!                ──failed──▶ Planned(same reason, attempt + 1, Backoff)  or Halted if permanent
//!   Halted     until refresh() or update_token(): a permanent failure, Permanent, sign_out
//! ```
//!
//! Who moves what: commands (in mailbox order, after the token's phase caught up with the clock)
//! install tokens, start or join fetches and halt; the automatic fetch starts last in a turn, so
//! that it sees what the commands changed.
//!
//! # Behaviour
//!
//! What the manager promises; tests name the number they check (`b7_…`, "behaviour 7").
//!
//! 1. An offered token (`update_token`) is parsed and validated at the clock's now: a malformed,
//!    expired, not yet valid or over-24 h token, or one for another identity or account than the
//!    one held, is an `Err` and a `TokenRejected` event, and changes nothing else.
//! 2. The token held, offered again: `Ok` with `changed() == false`, and nothing happens.
//! 3. A new valid token becomes current, then `TokenUpdated`, then every consumer gets it;
//!    `update_token` returns once each consumer answered or timed out (10 s by default).
//! 4. Each token's events come Updated → WillExpire (at `exp − refresh_ahead`, or at once when less
//!    is left) → Expired (at `exp`), each at most once, and none once it is replaced.
//! 5. With a fetcher and no token, the manager fetches at once (`Initial`); `refresh()` and
//!    `fresh_token()` join that fetch. It fetches again at WillExpire, and with `Expired` past
//!    `exp`. A failure keeps the token, says `RefreshFailed` with the next attempt's time, and is
//!    retried with backoff and jitter (1 s doubling to 60 s) for as long as the manager lives; a
//!    retry keeps the reason of the fetch it retries.
//! 6. One fetch at a time, joined by `refresh()` and `fresh_token()`, each bounded by a timeout
//!    (30 s); a fetcher that panics or hangs is a transient failure. A permanent failure stops
//!    automatic fetching until `refresh()` or `update_token()`.
//! 7. A fetcher handing out short tokens (or handing back the one held) does not make the manager
//!    loop: the next automatic fetch waits half the token's remaining life, at least 1 s.
//! 8. Each consumer gets tokens in order and, when busy, only the newest; a slow, failing or
//!    panicking consumer harms no other and is a `ConsumerFailed` event and a report row, as is a
//!    consumer skipped for lacking its required grant.
//! 9. Consumers are held weakly (dropping the app's `Arc` unregisters); one registered while a
//!    token is current gets it promptly.
//! 10. `fresh_token(min)` answers the held token at once when it has `min` left (with or without a
//!     fetcher), else the result of a fetch; never `Ok` with less than `min` (`TooShort` carries the
//!     best token).
//! 11. A wall-clock jump past `exp` (a suspend, a clock change) is noticed within one sleep slice:
//!     WillExpire and Expired fire and fetching starts.
//! 12. `shutdown()` or the last handle dropped stops the task: no plugin call and no event after
//!     `Closed`, nothing left running, and every later call answers `Closed` (or `Ignore`).
//! 13. No log, print or error shows a token's signature or a secret, and no copy of a token is kept
//!     once it is replaced, signed out or its manager is gone.
//! 14. A plugin that calls its own manager never waits for itself; one that needs its manager
//!     holds a `WeakAccessManager`.
//! 15. Timeouts, backoff and spacing run on elapsed time: a wall-clock change neither stretches
//!     nor shortens them.
//! 16. Every fact has one writer: the driver decides (service reports too, in mailbox order) and
//!     publishes; handles read the snapshot. `unregister` answers `true` for every registered
//!     consumer, and `consumer_count()` converges to the live ones.
//! 17. When `sign_out()` returns the store holds no token, no save lands after a clear or after
//!     `shutdown()`, and a blocking or failing store never stops fetching.
//! 18. A spacing wait only guards a token that is still valid: once the wall clock says the token
//!     expired, fetching starts at once (after a wake, within one slice; at once on `resume()`).
//! 19. No event, queue or buffer keeps a replaced token.
//! 20. Dropping user code (a timed-out call, a fetcher, a consumer, the error a plugin returned)
//!     never closes the manager, even when its `Drop` panics.

mod builder;
mod call;
mod driver;
pub(crate) mod error;
mod fanout;
mod plugin;
pub(crate) mod service;
mod shared;
pub(crate) mod stats;

pub use builder::{
    AccessManagerBuilder, DEFAULT_CONSUMER_TIMEOUT, DEFAULT_EVENT_CAPACITY, DEFAULT_FETCH_TIMEOUT,
    DEFAULT_REFRESH_AHEAD,
};

use crate::clock::Clock;
use crate::consumer::ConsumerId;
use crate::event::Events;
use crate::{AccessToken, TokenConsumer};
use call::Held;
use error::{RefreshError, UpdateError, UpdateReport};
use plugin::Role;
use service::ServiceAction;
use shared::{shift, Command, Registration, Shared};
use stats::Stats;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// Holds one identity's access token, refreshes it in time and hands it to every SDK client.
///
/// A cheap handle: clones share one manager. The manager runs as a task on the tokio runtime it
/// was built in, and stops on [`shutdown`](Self::shutdown) or when the last handle is dropped. A
/// plugin (fetcher or consumer) that needs its manager keeps a [`WeakAccessManager`] from
/// [`downgrade`](Self::downgrade), so that it does not keep the manager alive. See the
/// [crate docs](crate) for a full example.
#[derive(Clone)]
pub struct AccessManager {
    handle: Arc<Handle>,
    /// The handle's shared part, held here too (it never changes), so that a read follows one
    /// pointer to the published token instead of two.
    shared: Arc<Shared>,
}

/// A handle that does not keep its manager alive: for plugins that need to call their manager.
///
/// ```
/// use access_manager::{fetcher_fn, AccessManager, FetchError, WeakAccessManager};
/// use std::sync::{Arc, OnceLock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // The fetcher reads its manager's current token through a weak handle.
/// let weak: Arc<OnceLock<WeakAccessManager>> = Arc::default();
/// let slot = weak.clone();
/// let fetcher = fetcher_fn(move |_request| {
///     let manager = slot.get().and_then(WeakAccessManager::upgrade);
///     async move {
///         let held = manager.and_then(|m| m.identity());
///         Err::<String, _>(FetchError::transient(format!("no backend here (holding {held:?})")))
///     }
/// });
/// let manager = AccessManager::builder().fetcher(fetcher).build().unwrap();
/// weak.set(manager.downgrade()).unwrap();
/// drop(manager); // the manager stops: the fetcher's weak handle did not keep it alive
/// assert!(weak.get().unwrap().upgrade().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct WeakAccessManager {
    handle: Weak<Handle>,
}

impl WeakAccessManager {
    /// The manager, if any strong handle to it is left.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(jwt).build().unwrap();
    /// let weak = manager.downgrade();
    /// assert_eq!(weak.upgrade().unwrap().identity().as_deref(), Some("alice"));
    /// drop(manager);
    /// assert!(weak.upgrade().is_none());
    /// # }
    /// ```
    pub fn upgrade(&self) -> Option<AccessManager> {
        self.handle.upgrade().map(|handle| AccessManager {
            shared: handle.shared.clone(),
            handle,
        })
    }
}

impl fmt::Debug for WeakAccessManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakAccessManager")
            .field("alive", &(self.handle.strong_count() > 0))
            .finish()
    }
}

/// The strong handles' shared part: dropping the last one tells the driver to stop.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.handles_gone();
    }
}

impl AccessManager {
    #[inline]
    fn shared(&self) -> &Shared {
        &self.shared
    }

    /// A handle that does not keep the manager alive.
    ///
    /// ```
    /// use access_manager::AccessManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder().build().unwrap();
    /// let weak = manager.downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(manager);
    /// assert!(weak.upgrade().is_none()); // the weak handle kept nothing alive
    /// # }
    /// ```
    pub fn downgrade(&self) -> WeakAccessManager {
        WeakAccessManager {
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// The current token (possibly expired; see [`is_expired`](Self::is_expired)), or `None` before
    /// the first one, after [`sign_out`](Self::sign_out) and after shutdown. Lock-free: never
    /// blocks, never awaits.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// assert!(manager.token().is_none());
    /// manager.update_token(&jwt).await.unwrap();
    /// assert_eq!(manager.token().unwrap().as_str(), jwt);
    /// # }
    /// ```
    #[inline]
    pub fn token(&self) -> Option<AccessToken> {
        self.shared()
            .current
            .load()
            .as_ref()
            .map(|p| p.token.clone())
    }

    /// Calls `f` with the current token, borrowed rather than cloned. Lock-free; `f` may read
    /// managers itself.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(&jwt).build().unwrap();
    /// // An SDK call that only needs to read the token text: no clone.
    /// let header = manager.with_token(|t| t.map(|t| format!("Bearer {}", t.as_str())));
    /// assert_eq!(header, Some(format!("Bearer {jwt}")));
    /// # }
    /// ```
    #[inline]
    pub fn with_token<R>(&self, f: impl FnOnce(Option<&AccessToken>) -> R) -> R {
        let current = self.shared().current.load();
        f(current.as_ref().map(|p| &p.token))
    }

    /// The current token's identity.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(jwt).build().unwrap();
    /// assert_eq!(manager.identity().as_deref(), Some("alice"));
    /// # }
    /// ```
    pub fn identity(&self) -> Option<String> {
        self.with_token(|t| t.and_then(|t| t.identity().map(str::to_owned)))
    }

    /// When the current token expires.
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
    /// let manager = AccessManager::builder().clock(clock).initial_token(jwt).build().unwrap();
    /// assert_eq!(manager.expires_at(), Some(start + Duration::from_secs(3600)));
    /// # }
    /// ```
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.with_token(|t| t.map(AccessToken::expires_at))
    }

    /// Whether the current token has expired: `now >= exp` at the time tokens are judged at (the
    /// clock's now, shifted by the issuer's clock offset when
    /// [`estimate_clock_skew`](AccessManagerBuilder::estimate_clock_skew) is on); `false` while
    /// there is none.
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
    /// assert!(!manager.is_expired());
    /// clock.advance(Duration::from_secs(3600)); // at `exp` the token is expired
    /// assert!(manager.is_expired());
    /// # }
    /// ```
    pub fn is_expired(&self) -> bool {
        let current = self.shared().current.load();
        current.as_ref().is_some_and(|p| {
            shift(self.shared().clock.now(), p.applied_offset) >= p.token.expires_at()
        })
    }

    /// The estimated offset of the token issuer's clock from the manager's clock, in seconds
    /// (positive: the issuer is ahead), from the `iat` (else `nbf`) of the last fetched token that
    /// had one. `None` before any.
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
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(manager.clock_offset(), None);
    /// manager.refresh().await.unwrap();
    /// assert_eq!(manager.clock_offset(), Some(600));
    /// # }
    /// ```
    pub fn clock_offset(&self) -> Option<i64> {
        self.shared().clock_offset()
    }

    /// The manager's clock.
    ///
    /// ```
    /// use access_manager::{clock::{Clock, ManualClock}, AccessManager};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = ManualClock::new(start);
    /// let manager = AccessManager::builder().clock(clock.clone()).build().unwrap();
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(manager.clock().now(), start + Duration::from_secs(5));
    /// # }
    /// ```
    pub fn clock(&self) -> &dyn Clock {
        &*self.shared().clock
    }

    /// Whether the caller runs inside this manager's own plugin of `role`.
    fn called_from(&self, role: Role) -> bool {
        plugin::inside(self.shared().key(), role)
    }

    /// Offers a token pushed by the app.
    ///
    /// The token is parsed when this is called, and sent to the manager then: the update happens
    /// even if the returned future is dropped unpolled (only the report is lost). The manager
    /// validates it at the time tokens are judged at (the clock's now, shifted by the issuer's
    /// clock offset when [`estimate_clock_skew`](AccessManagerBuilder::estimate_clock_skew) is on).
    /// A new valid token becomes current, `TokenUpdated` is emitted, and it is delivered to every
    /// consumer; the future resolves once each has answered or timed out. The same token again
    /// changes nothing (`changed() == false`).
    ///
    /// Called from inside one of this manager's consumers (its `update_token`), it resolves once
    /// the token is current, without waiting for deliveries: they would wait for the caller.
    ///
    /// # Errors
    /// An invalid, expired, not yet valid or over-24 h token, or one for another identity or account
    /// than the token held: the state, timers and consumers are untouched and `TokenRejected` is
    /// emitted. `Closed` after shutdown.
    ///
    /// # Cancel safety
    /// The update is sent when this is called; dropping the future loses only the report.
    ///
    /// # Examples
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, UpdateError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// assert!(manager.update_token(&jwt).await.unwrap().changed());
    /// assert!(!manager.update_token(&jwt).await.unwrap().changed()); // the same token again
    /// let refused = manager.update_token("not a token").await;
    /// assert!(matches!(refused, Err(UpdateError::Invalid(_))));
    /// assert_eq!(manager.token().unwrap().as_str(), jwt); // kept
    /// # }
    /// ```
    pub fn update_token(
        &self,
        jwt: impl AsRef<str>,
    ) -> impl Future<Output = Result<UpdateReport, UpdateError>> + Send + 'static {
        let sent = self.send_update(jwt.as_ref());
        async move { sent?.await.unwrap_or(Err(UpdateError::Closed)) }
    }

    fn send_update(
        &self,
        jwt: &str,
    ) -> Result<oneshot::Receiver<Result<UpdateReport, UpdateError>>, UpdateError> {
        let shared = self.shared();
        if shared.is_closed() {
            return Err(UpdateError::Closed);
        }
        let token = AccessToken::parse(jwt).map_err(|e| {
            // The driver counts and reports it, as for every refused token.
            shared.send(Command::Rejected(e.clone()));
            UpdateError::Invalid(e)
        })?;
        let (reply, answer) = oneshot::channel();
        let from_consumer = self.called_from(Role::Consumer);
        if !shared.send(Command::Update {
            token,
            reply,
            from_consumer,
        }) {
            return Err(UpdateError::Closed);
        }
        Ok(answer)
    }

    /// Fetches a new token now, joining a fetch already in flight. Resumes automatic fetching if a
    /// permanent failure, a service's refusals or a sign-out had stopped it.
    ///
    /// # Errors
    /// `NoFetcher` without a fetcher; `Fetch` or `Rejected` when the fetch fails (the current token
    /// is kept, and automatic retries go on unless the failure is permanent); `SignedOut` when a sign-out cancels the fetch;
    /// `Reentrant` from inside this manager's own fetcher (it would wait for itself); `Closed`
    /// after shutdown.
    ///
    /// # Examples
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
    /// let manager = AccessManager::builder().fetcher(fetcher).build().unwrap();
    /// let token = manager.refresh().await.unwrap();
    /// assert_eq!(token.identity(), Some("alice"));
    /// assert_eq!(manager.token(), Some(token));
    /// # }
    /// ```
    pub async fn refresh(&self) -> Result<AccessToken, RefreshError> {
        self.request_fetch(None).await
    }

    /// A token with at least `min_remaining` left: the current one when it qualifies (and no
    /// service refused it), else the result of a fetch (joined or started). Never `Ok` with less
    /// than `min_remaining` left. The manager's task answers, in order with the app's other calls:
    /// after `report_service_error`, the refused token is never the answer.
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh), and `TooShort` (carrying the best token) when the fetched
    /// token has less than `min_remaining` left. From inside this manager's own fetcher, the held
    /// token when it qualifies, else `Reentrant`. `Closed` after shutdown, even when the held token
    /// qualifies.
    ///
    /// # Examples
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, RefreshError};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(&jwt).build().unwrap();
    /// // About an hour left: enough for a 5-minute call.
    /// let token = manager.fresh_token(Duration::from_secs(300)).await.unwrap();
    /// assert_eq!(token.as_str(), jwt);
    /// // Two hours are more than it has, and without a fetcher there is no other.
    /// let longer = manager.fresh_token(Duration::from_secs(7200)).await;
    /// assert!(matches!(longer, Err(RefreshError::NoFetcher)));
    /// # }
    /// ```
    pub async fn fresh_token(&self, min_remaining: Duration) -> Result<AccessToken, RefreshError> {
        self.request_fetch(Some(min_remaining)).await
    }

    async fn request_fetch(
        &self,
        min_remaining: Option<Duration>,
    ) -> Result<AccessToken, RefreshError> {
        let (reply, answer) = oneshot::channel();
        if !self.shared().send(Command::Refresh {
            min_remaining,
            from_fetcher: self.called_from(Role::Fetcher),
            reply,
        }) {
            return Err(RefreshError::Closed);
        }
        answer.await.unwrap_or(Err(RefreshError::Closed))
    }

    /// Registers an SDK client; it receives the current token promptly, and every new one.
    ///
    /// It is held weakly: dropping the app's last `Arc` unregisters it (the manager notices at its
    /// next token, or when registrations have doubled the list since it last looked). `Arc<dyn TokenConsumer>` works too. After
    /// shutdown nothing is registered. A consumer that needs its manager holds a
    /// [`WeakAccessManager`], not an `AccessManager`.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
    /// use std::sync::{Arc, Mutex};
    ///
    /// /// An SDK client: it keeps the last token it was given.
    /// struct Chat(Mutex<Option<String>>);
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Chat {
    ///     fn name(&self) -> &str { "chat" }
    ///     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
    ///         *self.0.lock().unwrap() = Some(token.as_str().to_owned());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// let chat = Arc::new(Chat(Mutex::new(None)));
    /// manager.register(&chat);
    /// manager.update_token(&jwt).await.unwrap(); // returns once every consumer has it
    /// assert_eq!(chat.0.lock().unwrap().as_deref(), Some(jwt.as_str()));
    /// # }
    /// ```
    pub fn register<C: TokenConsumer + ?Sized>(&self, consumer: &Arc<C>) -> ConsumerId {
        let name: Arc<str> = consumer.name().into();
        let required = consumer.required_grant();
        let held = Box::new(Held(Arc::downgrade(consumer)));
        self.shared().register(|id| Registration {
            id,
            consumer: held,
            name,
            required,
        })
    }

    /// Unregisters a consumer: it receives no further token. `false` when it was not registered,
    /// already unregistered, or dropped by the app and noticed as gone.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
    /// use std::sync::{Arc, Mutex};
    ///
    /// /// An SDK client: it keeps the last token it was given.
    /// struct Chat(Mutex<Option<String>>);
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Chat {
    ///     fn name(&self) -> &str { "chat" }
    ///     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
    ///         *self.0.lock().unwrap() = Some(token.as_str().to_owned());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// let chat = Arc::new(Chat(Mutex::new(None)));
    /// let id = manager.register(&chat);
    /// assert!(manager.unregister(id));
    /// assert!(!manager.unregister(id)); // already gone
    /// manager.update_token(&jwt).await.unwrap();
    /// assert_eq!(*chat.0.lock().unwrap(), None); // no longer called
    /// # }
    /// ```
    pub fn unregister(&self, id: ConsumerId) -> bool {
        self.shared().unregister(id)
    }

    /// How many consumers are registered. A consumer whose last `Arc` the app dropped counts until
    /// the manager notices: at its next token, or when registrations have doubled the list since
    /// it last looked (an idle manager does no work to find out). `unregister` removes one at once.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
    /// use std::sync::{Arc, Mutex};
    ///
    /// /// An SDK client: it keeps the last token it was given.
    /// struct Chat(Mutex<Option<String>>);
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Chat {
    ///     fn name(&self) -> &str { "chat" }
    ///     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
    ///         *self.0.lock().unwrap() = Some(token.as_str().to_owned());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// let chat = Arc::new(Chat(Mutex::new(None)));
    /// let id = manager.register(&chat);
    /// assert_eq!(manager.consumer_count(), 1);
    /// manager.unregister(id);
    /// assert_eq!(manager.consumer_count(), 0);
    /// # let _ = jwt;
    /// # }
    /// ```
    pub fn consumer_count(&self) -> usize {
        self.shared().consumer_count()
    }

    /// Subscribes to events. After shutdown, the subscription yields `Closed` and ends.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// let mut events = manager.subscribe();
    /// manager.update_token(&jwt).await.unwrap();
    /// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. })));
    /// manager.shutdown().await;
    /// assert_eq!(events.recv().await, Some(Event::Closed));
    /// assert_eq!(events.recv().await, None);
    /// # }
    /// ```
    pub fn subscribe(&self) -> Events {
        self.shared().subscribe()
    }

    /// Tells the manager that a service refused its current token with Twilio error `code` (an
    /// SDK's `tokenAboutToExpire`/`updateToken` error, an HTTP 401 body's code), and answers what
    /// it does about it: [`Refresh`](ServiceAction::Refresh) (a new token is fetched),
    /// [`Permanent`](ServiceAction::Permanent) (no automatic fetch until [`refresh`](Self::refresh)
    /// or [`update_token`](Self::update_token)) or [`Ignore`](ServiceAction::Ignore). Which code
    /// leads to which action is the rule documented on [`ServiceAction`].
    ///
    /// The report is sent when this is called and the manager's task decides, after every command
    /// sent before it (a `refresh()` that resumed fetching, a pushed token), about the token
    /// current then. Every report is an [`Event::ServiceRejected`](crate::Event::ServiceRejected).
    /// `Ignore` after shutdown.
    ///
    /// # Cancel safety
    /// The report is sent when this is called; dropping the future loses only the answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, AccessToken};
    /// use access_manager::{FetchError, ServiceAction};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let minted = AtomicU64::new(0);
    /// let fetcher = fetcher_fn(move |_| {
    ///     let n = minted.fetch_add(1, Ordering::SeqCst); // each token issued a second later
    ///     let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .issued_at(start + Duration::from_secs(n))
    ///         .to_jwt()
    ///         .map_err(FetchError::permanent);
    ///     async move { jwt }
    /// });
    /// let manager = AccessManager::builder()
    ///     .clock(ManualClock::new(start))
    ///     .fetcher(fetcher)
    ///     .build()
    ///     .unwrap();
    /// let first = manager.refresh().await.unwrap();
    /// // The voice service says the token is unauthorized (51215): a new one is fetched.
    /// assert_eq!(manager.report_service_error(51215).await, ServiceAction::Refresh);
    /// // `fresh_token` never answers a refused token: it waits for the new one.
    /// let second = manager.fresh_token(Duration::ZERO).await.unwrap();
    /// assert_ne!(second, first);
    /// // A code that says nothing about the token changes nothing.
    /// assert_eq!(manager.report_service_error(20003).await, ServiceAction::Ignore);
    /// # }
    /// ```
    pub fn report_service_error(
        &self,
        code: u32,
    ) -> impl Future<Output = ServiceAction> + Send + 'static + use<> {
        let (reply, answer) = oneshot::channel();
        // Unsent after shutdown: the dropped reply answers `Ignore`.
        self.shared().send(Command::ServiceRefused { code, reply });
        async move { answer.await.unwrap_or(ServiceAction::Ignore) }
    }

    /// Signs out: forgets the token (`token()` is `None`), cancels the timers and any fetch (its
    /// callers get `SignedOut`), answers updates still waiting for deliveries, calls each
    /// consumer's [`signed_out`](TokenConsumer::signed_out), emits `SignedOut` and clears the
    /// store. Nothing is fetched automatically until [`refresh`](Self::refresh) or
    /// [`update_token`](Self::update_token), and the next token may be for any identity: this is
    /// how an app switches users without rebuilding its SDK wiring.
    ///
    /// The sign-out is sent when this is called; the future resolves once every consumer's
    /// `signed_out` has run (or timed out) and the store's clear has run, after any save in
    /// flight: once it returns the store holds no token, and no save lands afterwards, so an app
    /// may exit at once. Called from inside one of this manager's consumers, it waits for the
    /// store only (waiting for consumers would wait for the caller).
    ///
    /// # Errors
    /// The store could not be cleared: its error, `TimedOut` past
    /// [`STORE_TIMEOUT`](crate::store::STORE_TIMEOUT), or `NotConnected` after shutdown (nothing
    /// was done). The sign-out in memory happened anyway.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let token = |who: &str| {
    ///     AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                          "SKfedcba9876543210fedcba9876543210", "secret")
    ///         .identity(who)
    ///         .to_jwt()
    ///         .unwrap()
    /// };
    /// let manager = AccessManager::builder().initial_token(token("alice")).build().unwrap();
    /// manager.sign_out().await.unwrap(); // alice's consumers drop their sessions
    /// assert!(manager.token().is_none());
    /// manager.update_token(token("bob")).await.unwrap(); // same wiring, another user
    /// assert_eq!(manager.identity().as_deref(), Some("bob"));
    /// # }
    /// ```
    pub fn sign_out(&self) -> impl Future<Output = io::Result<()>> + Send + 'static + use<> {
        let (reply, done) = oneshot::channel();
        let (cleared, store_cleared) = oneshot::channel();
        let sent = self.shared().send(Command::SignOut { reply, cleared });
        // A consumer waiting for the consumers' `signed_out` would wait for itself; the store's
        // clear waits for no consumer.
        let wait_consumers = !self.called_from(Role::Consumer);
        async move {
            if !sent {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the manager is closed",
                ));
            }
            if wait_consumers {
                let _ = done.await;
            }
            store_cleared.await.unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the manager stopped before the store was cleared",
                ))
            })
        }
    }

    /// Re-reads the clock at once and acts on what is due (events, fetching): a fetch waiting out
    /// its backoff after a failure is tried now, and a token that expired while the machine slept
    /// is fetched now. It never cuts short the spacing that keeps a short-lived but valid token
    /// from making the backend loop (behaviour 7), so an app may call it on every network or
    /// foreground notice. For apps told of a wake from sleep or a network return; without it,
    /// [`SystemClock`](crate::clock::SystemClock) notices a jump within 30 s.
    ///
    /// ```
    /// use access_manager::{clock::ManualClock, fetcher_fn, AccessManager, AccessToken, Backoff, Event};
    /// use access_manager::FetchError;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let online = AtomicBool::new(false);
    /// let fetcher = fetcher_fn(move |_| {
    ///     let answer = if online.swap(true, Ordering::SeqCst) {
    ///         AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").issued_at(start).to_jwt()
    ///             .map_err(FetchError::permanent)
    ///     } else {
    ///         Err(FetchError::transient("offline"))
    ///     };
    ///     async move { answer }
    /// });
    /// let (manager, mut events) = AccessManager::builder()
    ///     .clock(ManualClock::new(start))
    ///     .fetcher(fetcher)
    ///     .backoff(Backoff::new(Duration::from_secs(60), Duration::from_secs(60)))
    ///     .build_with_events()
    ///     .unwrap();
    /// // The first fetch fails: the next one would wait out up to a minute of backoff…
    /// assert!(matches!(events.recv().await, Some(Event::RefreshFailed { .. })));
    /// // …but the app hears that the network is back.
    /// manager.resume();
    /// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. })));
    /// assert!(manager.token().is_some());
    /// # }
    /// ```
    pub fn resume(&self) {
        self.shared().send(Command::Resume);
    }

    /// What the manager has done since it was built: counts, the last fetch's duration and the next
    /// planned fetch. A snapshot of what the manager's task has handled so far, read without a lock.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mint = || AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity("alice");
    /// let manager = AccessManager::builder().build().unwrap();
    /// manager.update_token(mint().to_jwt().unwrap()).await.unwrap();
    /// let expired = mint().issued_at(UNIX_EPOCH + Duration::from_secs(1_000)).to_jwt().unwrap();
    /// assert!(manager.update_token(expired).await.is_err());
    /// let stats = manager.stats();
    /// assert_eq!((stats.tokens_installed, stats.tokens_rejected), (1, 1));
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared().counters.snapshot()
    }

    /// Stops the manager and waits until it has stopped: in-flight fetches and deliveries are
    /// dropped, waiting calls answer `Closed`, subscribers get `Closed`, and the token is
    /// forgotten. Idempotent.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, UpdateError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef", "SKfedcba9876543210fedcba9876543210", "secret").identity("alice").to_jwt().unwrap();
    /// let manager = AccessManager::builder().initial_token(&jwt).build().unwrap();
    /// manager.shutdown().await;
    /// assert!(manager.token().is_none()); // forgotten
    /// assert!(matches!(manager.update_token(&jwt).await, Err(UpdateError::Closed)));
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.send(Command::Shutdown);
        shared.closed().await;
    }

    /// Whether the manager has stopped.
    ///
    /// ```
    /// use access_manager::AccessManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder().build().unwrap();
    /// assert!(!manager.is_closed());
    /// manager.shutdown().await;
    /// assert!(manager.is_closed());
    /// # }
    /// ```
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

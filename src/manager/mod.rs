//! The [`AccessManager`] handle: the public face of one manager.
//!
//! One manager holds one identity's token. Its driver (`driver`) is the only owner of the manager's
//! state and runs as the manager's task; a handle reads what the driver publishes (the token, the
//! counters) and sends it commands through the mailbox (`shared`). Modules import one way:
//! `builder` → the handle (this file) and `driver`; `driver` → `fanout`; the handle, `driver` and
//! `fanout` → `shared` (the mailbox and what the driver publishes) → `call` (one consumer call) →
//! `plugin`; and any of them → the leaves `service`, `stats`, `error`.

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
use service::{decide, ServiceAction, Situation};
use shared::{Command, Registration, Shared};
use stats::Stats;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
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
    pub fn upgrade(&self) -> Option<AccessManager> {
        self.handle.upgrade().map(|handle| AccessManager { handle })
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
    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// A handle that does not keep the manager alive.
    pub fn downgrade(&self) -> WeakAccessManager {
        WeakAccessManager {
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// The current token (possibly expired; see [`is_expired`](Self::is_expired)), or `None` before
    /// the first one, after [`sign_out`](Self::sign_out) and after shutdown. Lock-free: never
    /// blocks, never awaits.
    pub fn token(&self) -> Option<AccessToken> {
        self.shared()
            .current
            .load()
            .as_ref()
            .map(|p| p.token.clone())
    }

    /// Calls `f` with the current token, borrowed rather than cloned. Lock-free; `f` may read
    /// managers itself.
    pub fn with_token<R>(&self, f: impl FnOnce(Option<&AccessToken>) -> R) -> R {
        let current = self.shared().current.load();
        f(current.as_ref().map(|p| &p.token))
    }

    /// The current token's identity.
    pub fn identity(&self) -> Option<String> {
        self.with_token(|t| t.and_then(|t| t.identity().map(str::to_owned)))
    }

    /// When the current token expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.with_token(|t| t.map(AccessToken::expires_at))
    }

    /// Whether the current token has expired: `now >= exp` at the time tokens are judged at (the
    /// clock's now, shifted by the issuer's clock offset when
    /// [`estimate_clock_skew`](AccessManagerBuilder::estimate_clock_skew) is on); `false` while
    /// there is none.
    pub fn is_expired(&self) -> bool {
        self.with_token(|t| t.is_some_and(|t| self.shared().token_now() >= t.expires_at()))
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
    pub fn unregister(&self, id: ConsumerId) -> bool {
        self.shared().unregister(id)
    }

    /// How many consumers are registered (including any whose `Arc` was dropped but not yet
    /// noticed).
    pub fn consumer_count(&self) -> usize {
        self.shared().consumer_count()
    }

    /// Subscribes to events. After shutdown, the subscription yields `Closed` and ends.
    pub fn subscribe(&self) -> Events {
        self.shared().subscribe()
    }

    /// Tells the manager that a service refused its current token with Twilio error `code` (an
    /// SDK's `tokenAboutToExpire`/`updateToken` error, an HTTP 401 body's code), and answers what
    /// it does about it:
    ///
    /// | codes | meaning | action |
    /// |---|---|---|
    /// | 20104, 20105, 51215 | expired, not yet valid, unauthorized: a new token fixes it | `Refresh` |
    /// | 20101, 20102, 20103, 20106, 20107, 20151, 20157, 20160, 51007 | the backend mints tokens the service refuses | `Refresh` the first time, `Permanent` when the next token is refused too |
    /// | anything else; any code without a fetcher | nothing about the token | `Ignore` |
    ///
    /// `Refresh` fetches at once (reason `Rejected { code }`), joining a fetch in flight, and the
    /// refused token is not delivered again; when the token that replaced a refused one is refused
    /// too, the fetch waits a backoff instead (growing with each token refused in a row), so that a
    /// service refusing every token does not make the manager loop. `Permanent` stops automatic fetching until
    /// [`refresh`](Self::refresh) or [`update_token`](Self::update_token). Every report is an
    /// [`Event::ServiceRejected`](crate::Event::ServiceRejected). `Ignore` after shutdown. See
    /// [`ServiceAction`] for the whole rule.
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, FetchError, ServiceAction};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder()
    ///     .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("offline")) }))
    ///     .build()
    ///     .unwrap();
    /// // No token yet: nothing to refuse.
    /// assert_eq!(manager.report_service_error(51215), ServiceAction::Ignore);
    /// # }
    /// ```
    pub fn report_service_error(&self, code: u32) -> ServiceAction {
        let shared = self.shared();
        let generation = shared.current.load().as_ref().map(|p| p.generation);
        let situation = Situation {
            has_fetcher: shared.has_fetcher,
            current: generation,
            invalid_strike: shared.invalid_strike.load(Ordering::Acquire),
            halted: shared.halted.load(Ordering::Acquire),
        };
        let generation = generation.unwrap_or(0);
        let action = decide(code, generation, situation);
        let sent = shared.send(Command::ServiceRefused {
            code,
            generation,
            action,
        });
        if sent {
            action
        } else {
            ServiceAction::Ignore
        }
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
    pub fn sign_out(&self) -> impl Future<Output = io::Result<()>> + Send + 'static {
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

    /// Re-reads the clock at once and acts on what is due (events, fetching); a fetch waiting out
    /// its backoff is tried now. For apps told of a wake from sleep or a network return; without
    /// it, [`SystemClock`](crate::clock::SystemClock) notices a jump within 30 s.
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
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.send(Command::Shutdown);
        shared.closed().await;
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

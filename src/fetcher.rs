//! Getting new tokens: the [`TokenFetcher`] plugin the app implements, and what the manager tells it.

use crate::caught::Caught;
use crate::AccessToken;
use async_trait::async_trait;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Gets a fresh token from the app's backend. The manager calls it in time, one call at a time,
/// with a timeout, and retries failures with backoff.
///
/// A fetcher that needs its manager holds a [`WeakAccessManager`](crate::WeakAccessManager), never
/// an `AccessManager`: the manager owns its fetcher, so a strong handle inside it would keep the
/// manager alive, and fetching, after the app dropped its handles. `refresh()` or `fresh_token()`
/// called from inside the fetch answers [`RefreshError::Reentrant`](crate::RefreshError::Reentrant)
/// at once (it would wait for itself).
///
/// Return the token text (a JWT). Return [`FetchError::transient`] for failures worth retrying
/// (network, 5xx) and [`FetchError::permanent`] for failures that retrying cannot fix (the user is
/// logged out): the manager then stops fetching until [`AccessManager::refresh`] or
/// [`AccessManager::update_token`] is called. A panic or a call that outlives the fetch timeout
/// counts as a transient failure.
///
/// [`AccessManager::refresh`]: crate::AccessManager::refresh
/// [`AccessManager::update_token`]: crate::AccessManager::update_token
///
/// ```
/// use access_manager::{
///     async_trait, AccessManager, AccessToken, FetchError, FetchRequest, TokenFetcher,
/// };
///
/// /// Stands in for the app's backend: it mints tokens for one user (a real app calls its
/// /// server here; `HttpFetcher`, feature `http`, is a ready one).
/// struct Backend { user: String }
///
/// #[async_trait]
/// impl TokenFetcher for Backend {
///     async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
///         if request.attempt() > 5 {
///             return Err(FetchError::permanent("the backend keeps failing: giving up"));
///         }
///         AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                              "SKfedcba9876543210fedcba9876543210", "api-secret")
///             .identity(self.user.as_str())
///             .to_jwt()
///             .map_err(FetchError::transient)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = AccessManager::builder()
///     .fetcher(Backend { user: "alice".into() })
///     .build()?;
/// let token = manager.refresh().await?; // joins the first fetch, made at once
/// assert_eq!(token.identity(), Some("alice"));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait TokenFetcher: Send + Sync + 'static {
    /// Fetches a new token.
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError>;
}

#[async_trait]
impl<T: TokenFetcher + ?Sized> TokenFetcher for Arc<T> {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        (**self).fetch_token(request).await
    }
}

#[async_trait]
impl<T: TokenFetcher + ?Sized> TokenFetcher for Box<T> {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        (**self).fetch_token(request).await
    }
}

/// Why the manager is fetching: [`FetchRequest::reason`]. A retry keeps the reason of the refresh
/// it retries. It displays as the lowercase word logs use.
///
/// ```
/// use access_manager::FetchReason;
///
/// assert_eq!(FetchReason::WillExpire.to_string(), "will_expire");
/// assert_eq!(FetchReason::Rejected { code: 20107 }.to_string(), "rejected (20107)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FetchReason {
    /// There is no token yet.
    Initial,
    /// The current token enters its refresh-ahead window.
    WillExpire,
    /// The current token has expired.
    Expired,
    /// The app asked, through `refresh()` or `fresh_token()`.
    Manual,
    /// A service refused the current token with this Twilio error code (reported by the app or a
    /// consumer; see [`ServiceAction`](crate::ServiceAction)).
    Rejected {
        /// The service's error code.
        code: u32,
    },
}

impl fmt::Display for FetchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchReason::Initial => f.write_str("initial"),
            FetchReason::WillExpire => f.write_str("will_expire"),
            FetchReason::Expired => f.write_str("expired"),
            FetchReason::Manual => f.write_str("manual"),
            FetchReason::Rejected { code } => write!(f, "rejected ({code})"),
        }
    }
}

/// What the manager tells the fetcher about a fetch: why ([`reason`](Self::reason)), which try
/// ([`attempt`](Self::attempt)) and the token it holds ([`current`](Self::current)).
#[derive(Debug, Clone)]
pub struct FetchRequest {
    reason: FetchReason,
    attempt: u32,
    current: Option<AccessToken>,
}

impl FetchRequest {
    /// A request, as the manager makes them; for testing fetchers.
    ///
    /// ```
    /// use access_manager::{fetcher_fn, FetchError, FetchReason, FetchRequest, TokenFetcher};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // The fetcher under test gives up after three tries.
    /// let fetcher = fetcher_fn(|request: FetchRequest| async move {
    ///     let err = format!("backend down (try {})", request.attempt());
    ///     Err::<String, _>(if request.attempt() < 3 {
    ///         FetchError::transient(err)
    ///     } else {
    ///         FetchError::permanent(err)
    ///     })
    /// });
    /// let second = FetchRequest::new(FetchReason::Initial, 2, None);
    /// assert!(!fetcher.fetch_token(second).await.unwrap_err().is_permanent());
    /// let third = FetchRequest::new(FetchReason::Initial, 3, None);
    /// assert!(fetcher.fetch_token(third).await.unwrap_err().is_permanent());
    /// # }
    /// ```
    pub fn new(reason: FetchReason, attempt: u32, current: Option<AccessToken>) -> Self {
        FetchRequest {
            reason,
            attempt,
            current,
        }
    }

    /// Why the manager is fetching.
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, AccessToken, FetchError, FetchReason};
    /// use std::sync::mpsc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mint = || AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()
    ///     .map_err(FetchError::transient);
    /// let (seen, reasons) = mpsc::channel();
    /// let fetcher = fetcher_fn(move |request| {
    ///     seen.send(request.reason()).unwrap();
    ///     async move { mint() }
    /// });
    /// let (manager, mut events) = AccessManager::builder().fetcher(fetcher).build_with_events()?;
    /// events.recv().await; // the first token arrived
    /// manager.refresh().await?; // the app asks for a new token
    /// let seen: Vec<FetchReason> = reasons.try_iter().collect();
    /// assert_eq!(seen, [FetchReason::Initial, FetchReason::Manual]);
    /// # Ok(()) }
    /// ```
    pub fn reason(&self) -> FetchReason {
        self.reason
    }

    /// 1 for the first try of a refresh, 2 for its first retry, and so on.
    ///
    /// ```
    /// use access_manager::clock::ManualClock;
    /// use access_manager::{fetcher_fn, AccessManager, Backoff, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let fetcher = fetcher_fn(|request| async move {
    ///     Err::<String, _>(FetchError::transient(format!("offline at try {}", request.attempt())))
    /// });
    /// let (_manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .backoff(Backoff::default().without_jitter()) // retries after 1 s, 2 s, 4 s, ...
    ///     .fetcher(fetcher)
    ///     .build_with_events()?;
    /// for (attempt, wait) in [(1, 1), (2, 2), (3, 4)] {
    ///     let Some(Event::RefreshFailed { error, .. }) = events.recv().await else { panic!() };
    ///     assert!(error.ends_with(&format!("offline at try {attempt}")), "{error}");
    ///     clock.advance(Duration::from_secs(wait));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The token the manager holds now (possibly expired), if any: a fetcher may tell its backend
    /// whose token it renews.
    ///
    /// ```
    /// use access_manager::{AccessToken, FetchReason, FetchRequest};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let held = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                 "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()?
    ///     .parse::<AccessToken>()?;
    /// let request = FetchRequest::new(FetchReason::WillExpire, 1, Some(held));
    /// assert_eq!(request.current().and_then(AccessToken::identity), Some("alice"));
    /// assert!(FetchRequest::new(FetchReason::Initial, 1, None).current().is_none());
    /// # Ok(()) }
    /// ```
    pub fn current(&self) -> Option<&AccessToken> {
        self.current.as_ref()
    }
}

/// A failed fetch: transient (retried with backoff) or permanent (not retried automatically). Its
/// message is the wrapped error's, and [`source`](Error::source) is the wrapped error.
///
/// ```
/// use access_manager::FetchError;
/// use std::error::Error;
/// use std::time::Duration;
///
/// /// How a fetcher might read its backend's answer.
/// fn from_status(status: u16, retry_after: Option<Duration>) -> FetchError {
///     let err = format!("token endpoint answered {status}");
///     match (status, retry_after) {
///         (401 | 403, _) => FetchError::permanent(err), // log the user in again
///         (_, Some(after)) => FetchError::transient(err).with_retry_after(after),
///         _ => FetchError::transient(err),
///     }
/// }
///
/// let busy = from_status(429, Some(Duration::from_secs(30)));
/// assert_eq!(busy.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(busy.source().unwrap().to_string(), "token endpoint answered 429");
/// assert_eq!(
///     from_status(401, None).to_string(),
///     "token endpoint answered 401 (permanent: no automatic retry)"
/// );
/// ```
pub struct FetchError {
    permanent: bool,
    retry_after: Option<Duration>,
    /// The app's error: its `Drop` is the app's code, so it is dropped with any panic caught.
    source: Caught<Box<dyn Error + Send + Sync>>,
}

impl FetchError {
    /// A failure worth retrying (network, timeout, 5xx). Retried with backoff, for as long as the
    /// manager lives; the current token is kept meanwhile.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use access_manager::{fetcher_fn, AccessManager, Backoff, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// let (_manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .backoff(Backoff::default().without_jitter())
    ///     .fetcher(fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("HTTP 503")) }))
    ///     .build_with_events()?;
    /// let secs = Duration::from_secs;
    /// let Some(Event::RefreshFailed { attempt, retry_at, .. }) = events.recv().await else {
    ///     panic!("expected a failed refresh")
    /// };
    /// assert_eq!((attempt, retry_at), (1, Some(clock.now() + secs(1))));
    /// clock.advance(secs(1)); // the retry fails too, and waits twice as long
    /// let Some(Event::RefreshFailed { attempt, retry_at, .. }) = events.recv().await else {
    ///     panic!("expected a failed refresh")
    /// };
    /// assert_eq!((attempt, retry_at), (2, Some(clock.now() + secs(2))));
    /// # Ok(()) }
    /// ```
    pub fn transient(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        FetchError {
            permanent: false,
            retry_after: None,
            source: Caught::new(err.into()),
        }
    }

    /// A failure retrying cannot fix (401, 403). No automatic retry until
    /// [`refresh`](crate::AccessManager::refresh) or
    /// [`update_token`](crate::AccessManager::update_token).
    ///
    /// ```
    /// use access_manager::{fetcher_fn, AccessManager, Event, FetchError, RefreshError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let fetcher = fetcher_fn(|_| async {
    ///     Err::<String, _>(FetchError::permanent("HTTP 401: the session expired"))
    /// });
    /// let (manager, mut events) = AccessManager::builder().fetcher(fetcher).build_with_events()?;
    /// let Some(Event::RefreshFailed { retry_at, .. }) = events.recv().await else { panic!() };
    /// assert_eq!(retry_at, None); // no automatic retry
    /// // After the user logs in again, the app asks for a token itself.
    /// let Err(RefreshError::Fetch(err)) = manager.refresh().await else { panic!() };
    /// assert!(err.is_permanent());
    /// # Ok(()) }
    /// ```
    pub fn permanent(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        FetchError {
            permanent: true,
            retry_after: None,
            source: Caught::new(err.into()),
        }
    }

    /// Asks the manager to wait at least this long before the next attempt (e.g. `Retry-After`).
    /// Waits over 24 h ([`MAX_LIFETIME`](crate::MAX_LIFETIME), the longest a token lives) are cut
    /// to 24 h.
    ///
    /// ```
    /// use access_manager::clock::{Clock, ManualClock};
    /// use access_manager::{fetcher_fn, AccessManager, Event, FetchError};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// // The backend answered 429 with `Retry-After: 120`.
    /// let fetcher = fetcher_fn(|_| async {
    ///     let busy = FetchError::transient("HTTP 429").with_retry_after(Duration::from_secs(120));
    ///     Err::<String, _>(busy)
    /// });
    /// let (_manager, mut events) = AccessManager::builder()
    ///     .clock(clock.clone())
    ///     .fetcher(fetcher)
    ///     .build_with_events()?;
    /// let Some(Event::RefreshFailed { retry_at, .. }) = events.recv().await else { panic!() };
    /// assert_eq!(retry_at, Some(clock.now() + Duration::from_secs(120)));
    /// # Ok(()) }
    /// ```
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether automatic retries stop.
    ///
    /// ```
    /// use access_manager::FetchError;
    ///
    /// assert!(FetchError::permanent("HTTP 403").is_permanent());
    /// assert!(!FetchError::transient("connection reset").is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The earliest next attempt the fetcher asked for, if any.
    ///
    /// ```
    /// use access_manager::FetchError;
    /// use std::time::Duration;
    ///
    /// let busy = FetchError::transient("HTTP 503").with_retry_after(Duration::from_secs(5));
    /// assert_eq!(busy.retry_after(), Some(Duration::from_secs(5)));
    /// assert_eq!(FetchError::transient("HTTP 503").retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchError")
            .field("permanent", &self.permanent)
            .field("retry_after", &self.retry_after)
            .field("source", &*self.source)
            .finish()
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.source, f)?;
        if self.permanent {
            f.write_str(" (permanent: no automatic retry)")?;
        }
        Ok(())
    }
}

impl Error for FetchError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.source)
    }
}

/// A [`TokenFetcher`] from an async closure: the closure makes the future each fetch awaits.
///
/// ```
/// use access_manager::{fetcher_fn, AccessManager, AccessToken, FetchError, FetchRequest};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let user = String::from("alice"); // what the closure needs, it owns
/// let fetcher = fetcher_fn(move |request: FetchRequest| {
///     let user = user.clone();
///     async move {
///         // A real app calls its backend here, e.g. with `request.reason()` in the query.
///         let _ = request.reason();
///         AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                              "SKfedcba9876543210fedcba9876543210", "api-secret")
///             .identity(user)
///             .to_jwt()
///             .map_err(FetchError::transient)
///     }
/// });
/// let manager = AccessManager::builder().fetcher(fetcher).build()?;
/// assert_eq!(manager.refresh().await?.identity(), Some("alice"));
/// # Ok(()) }
/// ```
pub fn fetcher_fn<F, Fut>(f: F) -> impl TokenFetcher
where
    F: Fn(FetchRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, FetchError>> + Send + 'static,
{
    FnFetcher(f)
}

struct FnFetcher<F>(F);

#[async_trait]
impl<F, Fut> TokenFetcher for FnFetcher<F>
where
    F: Fn(FetchRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, FetchError>> + Send + 'static,
{
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        (self.0)(request).await
    }
}

//! Getting new tokens: the [`TokenFetcher`] plugin the app implements, and what the manager tells it.

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
/// use access_manager::{FetchError, FetchRequest, TokenFetcher};
///
/// #[derive(Debug)]
/// struct Backend { url: String }
///
/// #[async_trait::async_trait]
/// impl TokenFetcher for Backend {
///     async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
///         // A real app calls its server here (see `HttpFetcher` for a ready one).
///         let _ = (&self.url, request.reason(), request.attempt());
///         Err(FetchError::transient("backend unreachable"))
///     }
/// }
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

/// Why the manager is fetching.
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

/// What the manager tells the fetcher about a fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    reason: FetchReason,
    attempt: u32,
    current: Option<AccessToken>,
}

impl FetchRequest {
    /// A request, as the manager makes them; for testing fetchers.
    pub fn new(reason: FetchReason, attempt: u32, current: Option<AccessToken>) -> Self {
        FetchRequest {
            reason,
            attempt,
            current,
        }
    }

    /// Why the manager is fetching.
    pub fn reason(&self) -> FetchReason {
        self.reason
    }

    /// 1 for the first try of a refresh, 2 for its first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The token the manager holds now (possibly expired), if any.
    pub fn current(&self) -> Option<&AccessToken> {
        self.current.as_ref()
    }
}

/// A failed fetch: transient (retried with backoff) or permanent (not retried automatically).
pub struct FetchError {
    permanent: bool,
    retry_after: Option<Duration>,
    source: Box<dyn Error + Send + Sync>,
}

impl FetchError {
    /// A failure worth retrying (network, timeout, 5xx). Retried with backoff.
    pub fn transient(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        FetchError {
            permanent: false,
            retry_after: None,
            source: err.into(),
        }
    }

    /// A failure retrying cannot fix (401, 403). No automatic retry until `refresh()` or
    /// `update_token()`.
    pub fn permanent(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        FetchError {
            permanent: true,
            retry_after: None,
            source: err.into(),
        }
    }

    /// Asks the manager to wait at least this long before the next attempt (e.g. `Retry-After`).
    /// Waits over 24 h ([`MAX_LIFETIME`](crate::MAX_LIFETIME), the longest a token lives) are cut
    /// to 24 h.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Whether automatic retries stop.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The earliest next attempt the fetcher asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchError")
            .field("permanent", &self.permanent)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        if self.permanent {
            f.write_str(" (permanent: no automatic retry)")?;
        }
        Ok(())
    }
}

impl Error for FetchError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A [`TokenFetcher`] from an async closure.
///
/// ```
/// use access_manager::{fetcher_fn, FetchError, FetchRequest};
///
/// let fetcher = fetcher_fn(|request: FetchRequest| async move {
///     let _ = request.reason();
///     Err::<String, _>(FetchError::transient("no backend in this example"))
/// });
/// # let _ = fetcher;
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

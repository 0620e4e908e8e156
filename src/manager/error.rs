//! What the manager's calls answer: [`UpdateReport`] and the errors.

use crate::{AccessToken, ConsumerError, FetchError, TokenError};
use std::sync::Arc;
use std::time::Duration;

/// What became of a token given to [`AccessManager::update_token`](crate::AccessManager::update_token).
#[derive(Debug)]
pub struct UpdateReport {
    pub(crate) token: AccessToken,
    pub(crate) changed: bool,
    pub(crate) delivered: usize,
    pub(crate) failures: Vec<(String, ConsumerError)>,
}

impl UpdateReport {
    /// The report for the token already held: nothing happened.
    pub(crate) fn unchanged(token: AccessToken) -> Self {
        UpdateReport {
            token,
            changed: false,
            delivered: 0,
            failures: Vec::new(),
        }
    }

    /// The report for a new token whose deliveries were not waited for.
    pub(crate) fn undelivered(token: AccessToken) -> Self {
        UpdateReport {
            changed: true,
            ..UpdateReport::unchanged(token)
        }
    }

    /// `false` when the token was the one already held: nothing happened.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()?;
    /// let manager = AccessManager::builder().build()?;
    /// assert!(manager.update_token(&jwt).await?.changed());
    /// assert!(!manager.update_token(&jwt).await?.changed()); // the same token again
    /// # Ok(()) }
    /// ```
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The token now current.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()?;
    /// let manager = AccessManager::builder().build()?;
    /// let report = manager.update_token(&jwt).await?;
    /// assert_eq!(report.token().identity(), Some("alice"));
    /// assert_eq!(report.token().as_str(), jwt);
    /// # Ok(()) }
    /// ```
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// How many consumers took this token.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
    /// use std::sync::Arc;
    ///
    /// struct Sdk(&'static str);
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Sdk {
    ///     fn name(&self) -> &str { self.0 }
    ///     async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()?;
    /// let manager = AccessManager::builder().build()?;
    /// let sdks = [Arc::new(Sdk("chat")), Arc::new(Sdk("sync"))];
    /// for sdk in &sdks {
    ///     manager.register(sdk);
    /// }
    /// assert_eq!(manager.update_token(jwt).await?.delivered(), 2);
    /// # Ok(()) }
    /// ```
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The consumers that failed, timed out, panicked or lacked their required grant, with why.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, GrantKind,
    ///                      TokenConsumer};
    /// use std::sync::Arc;
    ///
    /// struct Video;
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Video {
    ///     fn name(&self) -> &str { "video" }
    ///     fn required_grant(&self) -> Option<GrantKind> { Some(GrantKind::Video) }
    ///     async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice") // and no video grant
    ///     .to_jwt()?;
    /// let manager = AccessManager::builder().build()?;
    /// let video = Arc::new(Video);
    /// manager.register(&video);
    /// let report = manager.update_token(jwt).await?;
    /// let failed: Vec<&str> = report.failed().map(|(name, _why)| name).collect();
    /// assert_eq!(failed, ["video"]);
    /// # Ok(()) }
    /// ```
    pub fn failed(&self) -> impl Iterator<Item = (&str, &ConsumerError)> + '_ {
        self.failures.iter().map(|(name, err)| (name.as_str(), err))
    }
}

/// Why [`AccessManager::update_token`](crate::AccessManager::update_token) refused a token. The
/// token held before is kept.
///
/// ```
/// use access_manager::{AccessManager, AccessToken, UpdateError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mint = |who: &str| {
///     AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                          "SKfedcba9876543210fedcba9876543210", "api-secret")
///         .identity(who)
///         .to_jwt()
/// };
/// let manager = AccessManager::builder().initial_token(mint("alice")?).build()?;
/// match manager.update_token(mint("bob")?).await {
///     Err(UpdateError::IdentityMismatch { current, offered }) => {
///         assert_eq!((current.as_deref(), offered.as_deref()), (Some("alice"), Some("bob")));
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(manager.identity().as_deref(), Some("alice")); // kept
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// Malformed, expired, not yet valid or over 24 h.
    #[error(transparent)]
    Invalid(TokenError),
    /// The token is for another identity than the token held.
    #[error("token is for identity {offered:?}, the manager holds {current:?}")]
    IdentityMismatch {
        /// The identity held.
        current: Option<String>,
        /// The identity offered.
        offered: Option<String>,
    },
    /// The token is for another account than the token held.
    #[error("token is for account {offered}, the manager holds account {current}")]
    AccountMismatch {
        /// The account SID held.
        current: String,
        /// The account SID offered.
        offered: String,
    },
    /// The manager has shut down.
    #[error("access manager is closed")]
    Closed,
}

impl UpdateError {
    /// The refusal as a [`TokenError`] with its Twilio code (`None` for `Closed`), as the
    /// [`Event::TokenRejected`](crate::Event::TokenRejected) event carries it: another identity is a
    /// grants refusal (20106), another account a subject refusal (20103).
    ///
    /// ```
    /// use access_manager::AccessManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder().build().unwrap();
    /// let refused = manager.update_token("not a token").await.unwrap_err();
    /// let error = refused.token_error().unwrap(); // what `Event::TokenRejected` carries
    /// assert_eq!(error.code(), 20101); // malformed
    /// # }
    /// ```
    pub fn token_error(&self) -> Option<TokenError> {
        match self {
            UpdateError::Invalid(e) => Some(e.clone()),
            UpdateError::IdentityMismatch { .. } => Some(TokenError::InvalidGrants {
                reason: self.to_string(),
            }),
            UpdateError::AccountMismatch { .. } => Some(TokenError::InvalidIssuer {
                reason: self.to_string(),
            }),
            UpdateError::Closed => None,
        }
    }

    /// The Twilio error code of the refusal (`None` for `Closed`).
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mint = |who: &str| {
    ///     AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                          "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///         .identity(who)
    ///         .to_jwt()
    /// };
    /// let manager = AccessManager::builder().initial_token(mint("alice")?).build()?;
    /// let refused = manager.update_token(mint("bob")?).await.unwrap_err();
    /// assert_eq!(refused.code(), Some(20106)); // another identity: a grants refusal
    /// manager.shutdown().await;
    /// assert_eq!(manager.update_token(mint("alice")?).await.unwrap_err().code(), None); // closed
    /// # Ok(()) }
    /// ```
    pub fn code(&self) -> Option<u32> {
        self.token_error().map(|e| e.code())
    }
}

/// Why [`AccessManager::refresh`](crate::AccessManager::refresh) or
/// [`fresh_token`](crate::AccessManager::fresh_token) gave no token. The token held is kept.
///
/// ```
/// use access_manager::{fetcher_fn, AccessManager, FetchError, RefreshError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pushed_only = AccessManager::builder().build().unwrap();
/// assert!(matches!(pushed_only.refresh().await, Err(RefreshError::NoFetcher)));
///
/// let offline = fetcher_fn(|_| async { Err::<String, _>(FetchError::transient("offline")) });
/// let manager = AccessManager::builder().fetcher(offline).build().unwrap();
/// match manager.refresh().await {
///     Err(RefreshError::Fetch(err)) => assert!(!err.is_permanent()),
///     other => panic!("{other:?}"),
/// }
/// manager.shutdown().await;
/// assert!(matches!(manager.refresh().await, Err(RefreshError::Closed)));
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The manager has no fetcher: the app pushes tokens with `update_token`.
    #[error("no token fetcher configured")]
    NoFetcher,
    /// The fetcher failed, panicked or timed out. Shared by every caller that joined the fetch.
    #[error("token fetch failed: {0}")]
    Fetch(Arc<FetchError>),
    /// The fetched token was refused: invalid, or for another identity or account. Never
    /// [`UpdateError::Closed`].
    #[error("fetched token rejected: {0}")]
    Rejected(UpdateError),
    /// [`fresh_token`](crate::AccessManager::fresh_token) got a token, but with less than the time
    /// asked for left: the backend issues shorter tokens. `token` is the best the manager has.
    #[error("the freshest token has less than the {} s asked for left", wanted.as_secs_f64())]
    TooShort {
        /// The token with the most time left (the current one).
        token: AccessToken,
        /// The time left that was asked for.
        wanted: Duration,
    },
    /// The app signed out while the fetch ran: it was cancelled.
    #[error("the fetch was cancelled by sign-out")]
    SignedOut,
    /// Called from inside this manager's own fetcher: the fetch it would join is the caller's own.
    #[error("refresh called from inside the manager's own fetcher")]
    Reentrant,
    /// The manager has shut down.
    #[error("access manager is closed")]
    Closed,
}

/// Why [`AccessManagerBuilder::build`](crate::AccessManagerBuilder::build) failed.
///
/// ```
/// use access_manager::{AccessManager, AccessToken, BuildError};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Outside a tokio runtime there is nowhere to run the manager's task.
/// assert_eq!(AccessManager::builder().build().unwrap_err(), BuildError::NoRuntime);
///
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let _inside = runtime.enter();
/// let expired = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                                    "SKfedcba9876543210fedcba9876543210", "api-secret")
///     .issued_at(UNIX_EPOCH + Duration::from_secs(1_000_000))
///     .to_jwt()?;
/// match AccessManager::builder().initial_token(expired).build() {
///     Err(BuildError::InvalidInitialToken(e)) => assert_eq!(e.code(), 20104), // expired
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build()` was called outside a tokio runtime.
    #[error("AccessManager::build must be called inside a tokio runtime")]
    NoRuntime,
    /// The initial token is invalid or expired.
    #[error("initial token rejected: {0}")]
    InvalidInitialToken(TokenError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

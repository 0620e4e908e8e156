//! Receiving tokens: the [`TokenConsumer`] trait an SDK client implements.

use crate::caught::Caught;
use crate::{AccessToken, GrantKind};
use async_trait::async_trait;
use std::error::Error;
use std::fmt;

/// An SDK client (chat, sync, voice, video) that must hold the newest token.
///
/// The manager calls [`update_token`](Self::update_token) for every new token, one call at a time
/// per consumer, newest first: a consumer still busy when two newer tokens arrive gets only the
/// newest. Calls have a timeout; an error, a timeout or a panic becomes a `ConsumerFailed` event
/// and harms no other consumer. When the SDK's service refuses the token, answer
/// [`ConsumerError::rejected`] with the service's error code: the manager then acts on it (see
/// [`ServiceAction`](crate::ServiceAction)).
///
/// A consumer that needs its manager (to push a token it got elsewhere, say) holds a
/// [`WeakAccessManager`](crate::WeakAccessManager), never an `AccessManager`: the manager holds its
/// consumers weakly, but a strong handle inside a consumer the app keeps would keep the manager
/// running after the app dropped its own handles. Such a call from inside
/// [`update_token`](Self::update_token) is answered without waiting for deliveries (they would wait
/// for the caller).
///
/// ```
/// use access_manager::grants::ChatGrant;
/// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, GrantKind,
///                      TokenConsumer};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Debug, Default)]
/// struct ChatClient { token: Mutex<Option<AccessToken>> }
///
/// #[async_trait]
/// impl TokenConsumer for ChatClient {
///     fn name(&self) -> &str { "chat" }
///     fn required_grant(&self) -> Option<GrantKind> { Some(GrantKind::Chat) }
///     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
///         *self.token.lock().unwrap() = Some(token.clone()); // a real SDK reconnects with it
///         Ok(())
///     }
///     async fn signed_out(&self) {
///         self.token.lock().unwrap().take();
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mint = || AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                                    "SKfedcba9876543210fedcba9876543210", "api-secret")
///     .identity("alice");
/// let chat = Arc::new(ChatClient::default());
/// let manager = AccessManager::builder().build()?;
/// manager.register(&chat); // held weakly: the app keeps `chat`
///
/// let report = manager.update_token(mint().to_jwt()?).await?; // no chat grant: not delivered
/// assert_eq!((report.delivered(), report.failed().count()), (0, 1));
/// let report = manager.update_token(mint().grant(ChatGrant::default()).to_jwt()?).await?;
/// assert_eq!(report.delivered(), 1);
/// assert_eq!(chat.token.lock().unwrap().as_ref(), Some(report.token()));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait TokenConsumer: Send + Sync + 'static {
    /// A short name used in events and reports ("chat", "sync", …).
    fn name(&self) -> &str;

    /// A grant the token must carry for this consumer; a token without it is not delivered and the
    /// miss is reported as a failure. Default: none.
    fn required_grant(&self) -> Option<GrantKind> {
        None
    }

    /// Takes a new token.
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError>;

    /// The app signed out ([`AccessManager::sign_out`](crate::AccessManager::sign_out)): drop the
    /// session and anything derived from the token. Called once per sign-out, after any
    /// [`update_token`](Self::update_token) call in progress, under the same timeout. Default: does
    /// nothing.
    async fn signed_out(&self) {}
}

/// A consumer's refusal or failure to take a token: a failure ([`new`](Self::new)), or a refusal
/// by the SDK's service with its Twilio error code ([`rejected`](Self::rejected)). Its message is
/// the wrapped error's, with the code when there is one.
///
/// ```
/// use access_manager::ConsumerError;
///
/// let refused = ConsumerError::rejected(20104, "sync: token expired");
/// assert_eq!(
///     refused.to_string(),
///     "sync: token expired (refused by the service: Twilio error 20104)"
/// );
/// assert_eq!(ConsumerError::new("chat: offline").to_string(), "chat: offline");
/// ```
pub struct ConsumerError {
    code: Option<u32>,
    /// The app's error: its `Drop` is the app's code, so it is dropped with any panic caught.
    source: Caught<Box<dyn Error + Send + Sync>>,
}

impl ConsumerError {
    /// Wraps the consumer's error: the delivery failed. The manager reports it (a `ConsumerFailed`
    /// event, a row of the [`UpdateReport`](crate::UpdateReport)) and goes on; the next token is
    /// delivered as usual.
    ///
    /// ```
    /// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
    /// use std::sync::Arc;
    ///
    /// struct Voice;
    ///
    /// #[async_trait]
    /// impl TokenConsumer for Voice {
    ///     fn name(&self) -> &str { "voice" }
    ///     async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
    ///         Err(ConsumerError::new(std::io::Error::other("websocket closed")))
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .to_jwt()?;
    /// let voice = Arc::new(Voice);
    /// let manager = AccessManager::builder().build()?;
    /// manager.register(&voice);
    /// let report = manager.update_token(jwt).await?; // the token is current all the same
    /// let failed: Vec<String> = report.failed().map(|(name, e)| format!("{name}: {e}")).collect();
    /// assert_eq!(failed, ["voice: websocket closed"]);
    /// # Ok(()) }
    /// ```
    pub fn new(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ConsumerError {
            code: None,
            source: Caught::new(err.into()),
        }
    }

    /// The SDK's service refused the token with this Twilio error code (51215, 20104, …): the
    /// manager acts on it as on
    /// [`AccessManager::report_service_error`](crate::AccessManager::report_service_error),
    /// fetching a new token at once for a stale or invalid token.
    ///
    /// ```
    /// use access_manager::ConsumerError;
    ///
    /// let refused = ConsumerError::rejected(51215, "voice: token unauthorized");
    /// assert_eq!(refused.code(), Some(51215));
    /// ```
    pub fn rejected(code: u32, err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ConsumerError {
            code: Some(code),
            source: Caught::new(err.into()),
        }
    }

    /// The service's error code, for a [`rejected`](Self::rejected) token.
    ///
    /// ```
    /// use access_manager::ConsumerError;
    ///
    /// assert_eq!(ConsumerError::rejected(20107, "bad signature").code(), Some(20107));
    /// assert_eq!(ConsumerError::new("offline").code(), None);
    /// ```
    pub fn code(&self) -> Option<u32> {
        self.code
    }
}

impl fmt::Debug for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerError")
            .field("code", &self.code)
            .field("source", &*self.source)
            .finish()
    }
}

impl fmt::Display for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.source, f)?;
        if let Some(code) = self.code {
            write!(f, " (refused by the service: Twilio error {code})")?;
        }
        Ok(())
    }
}

impl Error for ConsumerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.source)
    }
}

/// Identifies a registered consumer, for
/// [`AccessManager::unregister`](crate::AccessManager::unregister).
///
/// ```
/// use access_manager::{async_trait, AccessManager, AccessToken, ConsumerError, TokenConsumer};
/// use std::sync::Arc;
///
/// struct Video;
///
/// #[async_trait]
/// impl TokenConsumer for Video {
///     fn name(&self) -> &str { "video" }
///     async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = AccessManager::builder().build().unwrap();
/// let video = Arc::new(Video);
/// let id = manager.register(&video);
/// assert_ne!(id, manager.register(&Arc::new(Video))); // each registration has its own id
/// assert!(manager.unregister(id)); // the room closed: no more tokens for it
/// assert!(!manager.unregister(id));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub(crate) u64);

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consumer#{}", self.0)
    }
}

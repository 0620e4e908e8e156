//! Receiving tokens: the [`TokenConsumer`] trait an SDK client implements.

use crate::{AccessToken, GrantKind};
use async_trait::async_trait;
use std::error::Error;
use std::fmt;

/// An SDK client (chat, sync, voice, video) that must hold the newest token.
///
/// The manager calls [`update_token`](Self::update_token) for every new token, one call at a time
/// per consumer, newest first: a consumer still busy when two newer tokens arrive gets only the
/// newest. Calls have a timeout; an error, a timeout or a panic becomes a `ConsumerFailed` event
/// and harms no other consumer.
///
/// ```
/// use access_manager::{AccessToken, ConsumerError, GrantKind, TokenConsumer};
/// use std::sync::Mutex;
///
/// #[derive(Debug, Default)]
/// struct ChatClient { token: Mutex<Option<String>> }
///
/// #[async_trait::async_trait]
/// impl TokenConsumer for ChatClient {
///     fn name(&self) -> &str { "chat" }
///     fn required_grant(&self) -> Option<GrantKind> { Some(GrantKind::Chat) }
///     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
///         *self.token.lock().unwrap() = Some(token.as_str().to_owned());
///         Ok(())
///     }
/// }
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
}

/// A consumer's refusal or failure to take a token.
pub struct ConsumerError {
    source: Box<dyn Error + Send + Sync>,
}

impl ConsumerError {
    /// Wraps the consumer's error.
    pub fn new(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ConsumerError { source: err.into() }
    }
}

impl fmt::Debug for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConsumerError").field(&self.source).finish()
    }
}

impl fmt::Display for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl Error for ConsumerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Identifies a registered consumer, for [`AccessManager::unregister`](crate::AccessManager::unregister).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub(crate) u64);

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consumer#{}", self.0)
    }
}

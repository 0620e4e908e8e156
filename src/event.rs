//! What the manager tells the app: [`Event`]s, received through [`Events`].

use crate::{ServiceAction, TokenError, TokenInfo};
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

/// Something that happened to the manager's token.
///
/// For each token, `TokenUpdated`, `TokenWillExpire` and `TokenExpired` come in that order, each at
/// most once, and never for a token that has been replaced. They carry a [`TokenInfo`] (identity,
/// account, grants, times, generation), never the token itself: an event buffer nobody reads keeps
/// no token alive, and events are safe to log. The app reads the token with
/// [`AccessManager::token`](crate::AccessManager::token).
///
/// ```
/// use access_manager::{AccessManager, AccessToken, Event};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                                "SKfedcba9876543210fedcba9876543210", "secret")
///     .identity("alice")
///     .to_jwt()
///     .unwrap();
/// let (manager, mut events) = AccessManager::builder().build_with_events().unwrap();
/// manager.update_token(&jwt).await.unwrap();
/// match events.recv().await {
///     Some(Event::TokenUpdated { token }) => {
///         assert_eq!(token.identity(), Some("alice"));
///         assert_eq!(token.generation(), 1);
///         // The event describes the token; the token itself is read from the manager.
///         assert_eq!(manager.token().unwrap().as_str(), jwt);
///     }
///     other => panic!("expected TokenUpdated, got {other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A new token became current (pushed by the app or fetched). Delivery to consumers follows.
    TokenUpdated {
        /// What the new token says.
        token: TokenInfo,
    },
    /// The current token entered its refresh-ahead window (`exp - refresh_ahead`). With a fetcher,
    /// fetching starts then (spread by `refresh_jitter` if set), except for fetched tokens that
    /// live less than twice the lead: their next fetch waits half their remaining life (at least
    /// 1 s), so a backend handing out short tokens is not called in a loop.
    TokenWillExpire {
        /// The token about to expire.
        token: TokenInfo,
    },
    /// The current token expired and no new one arrived in time; fetching goes on.
    TokenExpired {
        /// The expired token, still held (it is replaced by the next valid one).
        token: TokenInfo,
    },
    /// A fetch failed (or its token was rejected). The current token is kept.
    RefreshFailed {
        /// 1 for the first try of this refresh.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next automatic attempt happens; `None` after a permanent failure.
        retry_at: Option<SystemTime>,
    },
    /// An offered token (pushed or fetched) was invalid; the current token is kept.
    TokenRejected {
        /// Why.
        error: TokenError,
    },
    /// A consumer failed, timed out, panicked, or lacked its required grant.
    ConsumerFailed {
        /// The consumer's name.
        consumer: String,
        /// What went wrong.
        error: String,
    },
    /// The manager clock looks wrong: fetched tokens look expired or nearly expired on it, or were
    /// issued far from it. Said once per manager.
    ClockSkewSuspected {
        /// The estimated offset of the issuer's clock from the manager's clock, in seconds
        /// (positive: the issuer is ahead).
        offset_secs: i64,
    },
    /// A service refused the current token (reported by the app through
    /// [`report_service_error`](crate::AccessManager::report_service_error) or by a consumer through
    /// [`ConsumerError::rejected`](crate::ConsumerError::rejected)), and what the manager does.
    ServiceRejected {
        /// The service's Twilio error code.
        code: u32,
        /// What the manager does about it.
        action: ServiceAction,
    },
    /// The app signed out: the token is forgotten and every consumer's `signed_out` has run. When
    /// a new token becomes current before those calls have all run, `SignedOut` comes just before
    /// its `TokenUpdated` (the calls still run, each before the consumer's next token).
    SignedOut,
    /// This subscriber fell behind and lost its oldest events; it goes on with the next.
    Lagged {
        /// How many events it lost.
        missed: u64,
    },
    /// The manager shut down. Nothing follows.
    Closed,
}

/// A subscription to a manager's events. `recv()` or use it as a `Stream`.
///
/// A subscriber that falls behind loses its oldest events (never blocking the manager), is told so
/// by an [`Event::Lagged`], and keeps receiving from there. After [`Event::Closed`], `recv()`
/// returns `None`. A subscription that is never read costs the manager at most its event buffer
/// ([`event_capacity`](crate::AccessManagerBuilder::event_capacity) events), and holds no token.
///
/// ```
/// use access_manager::{AccessManager, Event};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = AccessManager::builder().build().unwrap();
/// let events = manager.subscribe();
/// manager.shutdown().await;
/// // As a stream: it ends after `Closed`.
/// let all: Vec<Event> = events.collect().await;
/// assert_eq!(all, [Event::Closed]);
/// # }
/// ```
#[derive(Debug)]
pub struct Events {
    stream: Option<BroadcastStream<Event>>,
    closed_pending: bool,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Events {
            stream: Some(BroadcastStream::new(rx)),
            closed_pending: false,
        }
    }

    /// A subscription to a manager that has already shut down: yields `Closed`, then `None`.
    pub(crate) fn closed() -> Self {
        Events {
            stream: None,
            closed_pending: true,
        }
    }

    /// The next event; `None` once the manager has closed.
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity("alice")
    ///     .to_jwt()
    ///     .unwrap();
    /// let manager = AccessManager::builder().build().unwrap();
    /// let mut events = manager.subscribe();
    /// manager.update_token(jwt).await.unwrap();
    /// manager.shutdown().await;
    /// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. })));
    /// assert_eq!(events.recv().await, Some(Event::Closed));
    /// assert_eq!(events.recv().await, None);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped `recv()` loses no event.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Events {
    /// The next event if one is waiting, without waiting: handy in tests.
    ///
    /// ```
    /// use access_manager::{AccessManager, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = AccessManager::builder().build().unwrap();
    /// let mut events = manager.subscribe();
    /// assert_eq!(events.try_recv(), None); // nothing happened yet
    /// manager.shutdown().await;
    /// assert_eq!(events.try_recv(), Some(Event::Closed));
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Option<Event> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Unconstrained: inside a tokio task that has spent its cooperative budget, the channel
        // would answer "not yet" although an event is waiting.
        let next = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx));
        let mut next = std::pin::pin!(tokio::task::coop::unconstrained(next));
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(event) => event,
            Poll::Pending => None,
        }
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.closed_pending {
            self.closed_pending = false;
            return Poll::Ready(Some(Event::Closed));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(stream).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            // The oldest events are gone: say how many, then go on with the next.
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                Poll::Ready(Some(Event::Lagged { missed }))
            }
            Poll::Ready(Some(Ok(event))) => {
                if matches!(event, Event::Closed) {
                    self.stream = None;
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                self.stream = None;
                Poll::Ready(None)
            }
        }
    }
}

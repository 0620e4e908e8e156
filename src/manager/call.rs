//! One call of a consumer: how the manager holds a consumer (weakly, whatever its type) and runs
//! a call on it, caught if it panics (when called, polled or dropped), timed out on elapsed time,
//! as one boxed future.

use super::plugin::{self, drop_caught, Ended, Plugin};
use crate::clock::Clock;
use crate::consumer::{ConsumerError, ConsumerId};
use crate::{AccessToken, TokenConsumer};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the manager asks of a consumer.
pub(super) enum Job {
    /// Take the token of this generation.
    Token(AccessToken, u64),
    SignedOut,
}

/// Who is called, under which limits: what a call needs besides the consumer.
pub(super) struct Setup {
    pub(super) id: ConsumerId,
    pub(super) name: Arc<str>,
    pub(super) timeout: Duration,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) plugin: Plugin,
    pub(super) span: tracing::Span,
}

/// A finished call.
pub(super) struct Done {
    pub(super) id: ConsumerId,
    pub(super) name: Arc<str>,
    /// The generation of the token delivered; `None` for a `signed_out` call.
    pub(super) generation: Option<u64>,
    pub(super) outcome: Result<(), ConsumerError>,
}

/// A consumer as the manager holds it: weakly, whatever its type (sized, or `dyn TokenConsumer`).
pub(super) trait HeldConsumer: Send + Sync {
    /// Whether the app still holds it.
    fn is_alive(&self) -> bool;

    /// The call doing `job`; `None` when the app has dropped the consumer.
    fn call(&self, job: Job, setup: Setup) -> Option<BoxFuture<'static, Done>>;
}

/// A consumer held through a `Weak`.
pub(super) struct Held<C: ?Sized>(pub(super) Weak<C>);

impl<C: TokenConsumer + ?Sized> HeldConsumer for Held<C> {
    fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn call(&self, job: Job, setup: Setup) -> Option<BoxFuture<'static, Done>> {
        let consumer = self.0.upgrade()?;
        let (plugin, span) = (setup.plugin, setup.span.clone());
        let call = plugin::scope(plugin, run(consumer, job, setup));
        Some(tracing::Instrument::instrument(call, span).boxed())
    }
}

/// Runs `job` on `consumer`: a panic (before or inside its future) and a timeout are failures, and
/// the consumer is dropped here, caught too (if the app let go meanwhile, ours is the last `Arc`,
/// and its `Drop` is user code).
async fn run<C: TokenConsumer + ?Sized>(consumer: Arc<C>, job: Job, setup: Setup) -> Done {
    let generation = match &job {
        Job::Token(_, generation) => Some(*generation),
        Job::SignedOut => None,
    };
    let call = async {
        match &job {
            Job::Token(token, _) => consumer.update_token(token).await,
            Job::SignedOut => {
                consumer.signed_out().await;
                Ok(())
            }
        }
    };
    let timeout = setup.timeout;
    let outcome = match plugin::bounded(call, &*setup.clock, timeout).await {
        Ended::Answered(outcome) => outcome,
        Ended::Panicked(panic) => Err(failure(format!("consumer panicked: {panic}"))),
        Ended::TimedOut => Err(failure(format!(
            "consumer did not answer within {} s",
            timeout.as_secs_f64()
        ))),
    };
    let outcome = match (outcome, drop_caught(consumer)) {
        (Ok(()), Err(panic)) => Err(failure(format!("consumer panicked when dropped: {panic}"))),
        (outcome, _) => outcome,
    };
    Done {
        id: setup.id,
        name: setup.name,
        generation,
        outcome,
    }
}

#[derive(Debug)]
struct DeliveryFailure(String);
impl std::fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DeliveryFailure {}

/// A failure the manager found (a panic, a timeout, a missing grant), as a consumer error.
pub(super) fn failure(msg: String) -> ConsumerError {
    ConsumerError::new(DeliveryFailure(msg))
}

//! Per-consumer delivery: each consumer gets tokens one at a time, newest wins, failures isolated.

use super::error::{UpdateError, UpdateReport};
use super::shared::{after, lock, Shared, Slot};
use crate::consumer::{ConsumerError, ConsumerId};
use crate::event::Event;
use crate::{AccessToken, TokenConsumer};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

pub(super) type ReportReply = oneshot::Sender<Result<UpdateReport, UpdateError>>;

/// A finished delivery.
pub(super) struct Delivered {
    id: ConsumerId,
    name: Arc<str>,
    generation: u64,
    outcome: Result<(), ConsumerError>,
}

/// An `update_token` call waiting until every consumer has taken its token (or a newer one).
struct Tracker {
    generation: u64,
    token: AccessToken,
    waiting: Vec<ConsumerId>,
    delivered: usize,
    failures: Vec<(String, ConsumerError)>,
    reply: ReportReply,
}

pub(super) struct Fanout {
    /// Deliveries in flight; made when the first starts and dropped when the last ends, so an idle
    /// manager holds none.
    deliveries: Option<FuturesUnordered<BoxFuture<'static, Delivered>>>,
    trackers: Vec<Tracker>,
    timeout: Duration,
    /// The generation of the current token.
    generation: u64,
}

/// What to do for one slot, decided under the consumers lock and done after it.
enum Start {
    Call(ConsumerId, Arc<dyn TokenConsumer>, Arc<str>),
    MissingGrant(ConsumerId, Arc<str>),
}

#[derive(Debug)]
struct DeliveryFailure(String);
impl std::fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DeliveryFailure {}

fn failure(msg: String) -> ConsumerError {
    ConsumerError::new(DeliveryFailure(msg))
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// Decides, for a slot that should get `token`, whether to call it now, queue it, or report a
/// missing grant. `None` when the slot's consumer is gone.
fn plan(slot: &mut Slot, token: &AccessToken) -> Option<Option<Start>> {
    // No `Arc` is made unless it goes into a delivery, where its drop is caught: if the app lets
    // go meanwhile, ours may be the last one, and its `Drop` is user code.
    if slot.consumer.strong_count() == 0 {
        return None;
    }
    slot.needs_current = false;
    if slot.busy {
        slot.wants_current = true;
        return Some(None);
    }
    if let Some(kind) = slot.required {
        if !token.has_grant(kind) {
            return Some(Some(Start::MissingGrant(slot.id, slot.name.clone())));
        }
    }
    let consumer = slot.consumer.upgrade()?;
    slot.busy = true;
    Some(Some(Start::Call(slot.id, consumer, slot.name.clone())))
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Fanout {
    pub(super) fn new(timeout: Duration, generation: u64) -> Self {
        Fanout {
            deliveries: None,
            trackers: Vec::new(),
            timeout,
            generation,
        }
    }

    /// Drops the unfinished deliveries one by one, each under `catch_unwind` (dropping one runs user
    /// code: the consumer's `Drop`, when ours is its last `Arc`; a panic escaping the set's own drop
    /// would leak the deliveries after it), and the waiting reports (their callers answer `Closed`).
    pub(super) fn abandon(&mut self) {
        for delivery in self.deliveries.take().into_iter().flatten() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(delivery)));
        }
        self.trackers.clear();
    }

    /// Whether deliveries are in flight.
    pub(super) fn is_busy(&self) -> bool {
        self.deliveries.is_some()
    }

    /// A finished delivery, if any.
    pub(super) fn poll_delivered(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivered>> {
        let Some(deliveries) = &mut self.deliveries else {
            return Poll::Ready(None);
        };
        match deliveries.poll_next_unpin(cx) {
            Poll::Ready(Some(done)) => {
                if deliveries.is_empty() {
                    self.deliveries = None;
                }
                Poll::Ready(Some(done))
            }
            Poll::Ready(None) => {
                self.deliveries = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Delivers a new current token to every consumer; `reply` (from `update_token`) is answered
    /// once each has taken it, a newer one, or failed.
    pub(super) fn publish(
        &mut self,
        shared: &Shared,
        token: &AccessToken,
        generation: u64,
        reply: Option<ReportReply>,
    ) {
        self.generation = generation;
        let mut starts = Vec::new();
        let mut waiting = Vec::new();
        lock(&shared.consumers).retain_mut(|slot| match plan(slot, token) {
            None => false,
            Some(start) => {
                waiting.push(slot.id);
                starts.extend(start);
                true
            }
        });
        if let Some(reply) = reply {
            self.trackers.push(Tracker {
                generation,
                token: token.clone(),
                waiting,
                delivered: 0,
                failures: Vec::new(),
                reply,
            });
        }
        if !starts.is_empty() {
            // One deadline for the whole publish: the deliveries all start now.
            let deadline = after(shared.clock.now(), self.timeout);
            for start in starts {
                self.start(shared, start, token, generation, deadline);
            }
        }
        self.answer_finished();
    }

    /// Delivers the current token to one (newly registered) consumer.
    pub(super) fn deliver_one(
        &mut self,
        shared: &Shared,
        id: ConsumerId,
        token: &AccessToken,
        generation: u64,
    ) {
        let start = {
            let mut consumers = lock(&shared.consumers);
            let Some(pos) = consumers.iter().position(|s| s.id == id) else {
                return;
            };
            if !consumers[pos].needs_current {
                // A publish since it registered already planned the current token for it: in
                // flight, queued by `wants_current`, or reported as lacking its grant.
                return;
            }
            match plan(&mut consumers[pos], token) {
                None => {
                    consumers.swap_remove(pos);
                    None
                }
                Some(start) => start,
            }
        };
        if let Some(start) = start {
            let deadline = after(shared.clock.now(), self.timeout);
            self.start(shared, start, token, generation, deadline);
        }
    }

    /// Starts one delivery, which times out at `deadline`.
    fn start(
        &mut self,
        shared: &Shared,
        start: Start,
        token: &AccessToken,
        generation: u64,
        deadline: SystemTime,
    ) {
        match start {
            Start::MissingGrant(id, name) => {
                let kind = lock(&shared.consumers)
                    .iter()
                    .find(|s| s.id == id)
                    .and_then(|s| s.required);
                let msg = match kind {
                    Some(kind) => format!("token lacks the {kind} grant this consumer requires"),
                    None => "token lacks the grant this consumer requires".into(),
                };
                self.finish(
                    shared,
                    Delivered {
                        id,
                        name,
                        generation,
                        outcome: Err(failure(msg)),
                    },
                );
            }
            Start::Call(id, consumer, name) => {
                let token = token.clone();
                let timeout = self.timeout;
                // The timer is made only if the consumer does not answer at its first poll.
                let clock = shared.clock.clone();
                let sleep = async move { clock.sleep_until(deadline).await };
                // A root span: an update run on the app's thread must not hang the delivery under
                // (and keep open) whatever span the app was in.
                let span =
                    tracing::debug_span!(parent: None, "deliver", consumer = %name, generation);
                self.deliveries
                    .get_or_insert_with(FuturesUnordered::new)
                    .push(
                        async move {
                            let call =
                                AssertUnwindSafe(async { consumer.update_token(&token).await })
                                    .catch_unwind();
                            let outcome = tokio::select! {
                                biased;
                                result = call => match result {
                                    Ok(result) => result,
                                    Err(panic) => Err(failure(format!(
                                        "consumer panicked: {}",
                                        panic_message(&*panic)
                                    ))),
                                },
                                _ = sleep => Err(failure(format!(
                                    "consumer did not answer within {} s",
                                    timeout.as_secs_f64()
                                ))),
                            };
                            // Dropped here, on the driver: a consumer that panics in `drop` is caught too.
                            let dropped =
                                std::panic::catch_unwind(AssertUnwindSafe(move || drop(consumer)));
                            let outcome = match (outcome, dropped) {
                                (Ok(()), Err(panic)) => Err(failure(format!(
                                    "consumer panicked when dropped: {}",
                                    panic_message(&*panic)
                                ))),
                                (outcome, _) => outcome,
                            };
                            Delivered {
                                id,
                                name,
                                generation,
                                outcome,
                            }
                        }
                        .instrument_boxed(span),
                    );
            }
        }
    }

    /// Records a finished delivery and starts the consumer's next one if a newer token waits.
    pub(super) fn finish(&mut self, shared: &Shared, done: Delivered) {
        if let Err(e) = &done.outcome {
            tracing::warn!(consumer = %done.name, generation = done.generation, error = %e, "consumer failed");
            let (consumer, error) = (done.name.to_string(), e.to_string());
            shared.emit(|| Event::ConsumerFailed { consumer, error });
        }
        let (id, mut gone) = (done.id, false);
        let next = {
            let mut consumers = lock(&shared.consumers);
            match consumers.iter().position(|s| s.id == done.id) {
                None => None,
                Some(pos) => {
                    let slot = &mut consumers[pos];
                    slot.busy = false;
                    if std::mem::take(&mut slot.wants_current) {
                        let current = shared.current.load();
                        match current.as_ref() {
                            Some(token) => match plan(slot, token) {
                                None => {
                                    consumers.swap_remove(pos);
                                    gone = true;
                                    None
                                }
                                Some(start) => start.map(|s| (s, token.clone())),
                            },
                            None => None,
                        }
                    } else {
                        None
                    }
                }
            }
        };
        self.settle(done);
        if gone {
            // Newer updates counted on it: they must not wait for it any more.
            self.forget(id);
        }
        if let Some((start, token)) = next {
            let deadline = after(shared.clock.now(), self.timeout);
            self.start(shared, start, &token, self.generation, deadline);
        }
    }

    fn settle(&mut self, done: Delivered) {
        let mut outcome = Some(done.outcome);
        for tracker in &mut self.trackers {
            if tracker.generation > done.generation {
                continue;
            }
            let Some(pos) = tracker.waiting.iter().position(|id| *id == done.id) else {
                continue;
            };
            tracker.waiting.swap_remove(pos);
            if tracker.generation == done.generation {
                match outcome.take() {
                    Some(Ok(())) => tracker.delivered += 1,
                    Some(Err(e)) => tracker.failures.push((done.name.to_string(), e)),
                    None => {}
                }
            }
        }
        self.answer_finished();
    }

    /// A consumer is gone (unregistered or dropped): nobody waits for it any more.
    pub(super) fn forget(&mut self, id: ConsumerId) {
        for tracker in &mut self.trackers {
            tracker.waiting.retain(|w| *w != id);
        }
        self.answer_finished();
    }

    fn answer_finished(&mut self) {
        let mut i = 0;
        while i < self.trackers.len() {
            if self.trackers[i].waiting.is_empty() {
                let t = self.trackers.swap_remove(i);
                let _ = t.reply.send(Ok(UpdateReport {
                    token: t.token,
                    changed: true,
                    delivered: t.delivered,
                    failures: t.failures,
                }));
            } else {
                i += 1;
            }
        }
    }
}

trait InstrumentBoxed: std::future::Future + Sized + Send + 'static {
    fn instrument_boxed(self, span: tracing::Span) -> BoxFuture<'static, Self::Output> {
        tracing::Instrument::instrument(self, span).boxed()
    }
}
impl<F: std::future::Future + Send + 'static> InstrumentBoxed for F {}

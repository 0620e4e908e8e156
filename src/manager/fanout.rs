//! Per-consumer delivery: each consumer gets tokens one call at a time, newest wins, failures
//! isolated. The consumer list lives here, inside the driver: only the driver touches it.

use super::call::{failure, Done, HeldConsumer, Job, Setup};
use super::error::UpdateReport;
use super::plugin::drop_caught;
use super::plugin::{Plugin, Role};
use super::shared::{Registration, ReportReply, Shared};
use super::stats::bump;
use crate::consumer::{ConsumerError, ConsumerId};
use crate::event::Event;
use crate::{AccessToken, GrantKind};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The token the driver holds, when it may be delivered (not refused by a service).
#[derive(Clone, Copy)]
pub(super) struct Deliverable<'a> {
    pub(super) token: &'a AccessToken,
    pub(super) generation: u64,
}

/// A service refused a token through a consumer's answer: the driver acts on it.
pub(super) struct Refusal {
    pub(super) code: u32,
    pub(super) generation: u64,
}

/// A registered consumer and where its calls stand.
struct Slot {
    id: ConsumerId,
    consumer: Box<dyn HeldConsumer>,
    name: Arc<str>,
    required: Option<GrantKind>,
    /// A call is in flight (or its outcome is waiting in `ready`).
    busy: bool,
    /// The call in flight is `signed_out`.
    in_sign_out: bool,
    /// The app signed out during a call: `signed_out` is called next.
    owes_sign_out: bool,
    /// A token became current during a call: the current token is delivered next.
    owes_token: bool,
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

impl Tracker {
    fn answer(self) {
        let _ = self.reply.send(Ok(UpdateReport {
            token: self.token,
            changed: true,
            delivered: self.delivered,
            failures: self.failures,
        }));
    }
}

pub(super) struct Fanout {
    slots: Vec<Slot>,
    /// Calls in flight; made when the first starts and dropped when the last ends, so that an idle
    /// manager holds none.
    calls: Option<FuturesUnordered<BoxFuture<'static, Done>>>,
    /// Outcomes known without a call (a missing grant), handed out before the calls'.
    ready: VecDeque<Done>,
    trackers: Vec<Tracker>,
    /// `sign_out()` callers waiting for every consumer's `signed_out`.
    sign_out_waiters: Vec<oneshot::Sender<()>>,
    timeout: Duration,
    /// The list's length after the last sweep for consumers the app dropped: registering sweeps
    /// again once it has doubled, so that dropped consumers cost no more than the live ones.
    swept_len: usize,
}

impl Fanout {
    pub(super) fn new(timeout: Duration) -> Self {
        Fanout {
            slots: Vec::new(),
            calls: None,
            ready: VecDeque::new(),
            trackers: Vec::new(),
            sign_out_waiters: Vec::new(),
            timeout,
            swept_len: 0,
        }
    }

    /// Drops the unfinished calls one by one, each under `catch_unwind` (dropping one may run a
    /// consumer's `Drop`, when ours is its last `Arc`; a panic escaping the set's own drop would
    /// leak the calls after it), and the waiting callers (they answer `Closed`). The driver calls
    /// it when it stops, which it does whenever it is dropped.
    pub(super) fn abandon(&mut self) {
        for call in self.calls.take().into_iter().flatten() {
            let _ = drop_caught(call);
        }
        self.ready.clear();
        self.trackers.clear();
        self.sign_out_waiters.clear();
        self.slots.clear();
    }

    /// A consumer registers; it gets `current` at once.
    pub(super) fn register(
        &mut self,
        shared: &Shared,
        registration: Registration,
        current: Option<Deliverable<'_>>,
    ) {
        if self.slots.len() >= 2 * self.swept_len.max(4) {
            self.sweep(shared);
        }
        self.slots.push(Slot {
            id: registration.id,
            consumer: registration.consumer,
            name: registration.name,
            required: registration.required,
            busy: false,
            in_sign_out: false,
            owes_sign_out: false,
            owes_token: false,
        });
        if let Some(current) = current {
            self.start_token(shared, self.slots.len() - 1, current);
        }
    }

    /// A consumer unregisters: it gets nothing more, and no update waits for it.
    pub(super) fn unregister(&mut self, shared: &Shared, id: ConsumerId) {
        self.slots.retain(|slot| slot.id != id);
        self.forget(id);
        self.check_signed_out(shared);
    }

    /// Drops the consumers the app has dropped (their memory is freed with our `Weak`).
    fn sweep(&mut self, shared: &Shared) {
        let mut gone = Vec::new();
        self.slots.retain(|slot| {
            // A busy slot's call holds the consumer: it is swept once the call ends.
            let alive = slot.busy || slot.consumer.is_alive();
            if !alive {
                gone.push(slot.id);
            }
            alive
        });
        self.swept_len = self.slots.len();
        shared.forget_consumers(&gone);
        for id in gone {
            self.forget(id);
        }
    }

    /// Delivers a new current token to every consumer; `reply` (from `update_token`) is answered
    /// once each has taken it, a newer one, or failed.
    pub(super) fn publish(
        &mut self,
        shared: &Shared,
        current: Deliverable<'_>,
        reply: Option<ReportReply>,
    ) {
        self.sweep(shared);
        let mut waiting = Vec::with_capacity(if reply.is_some() { self.slots.len() } else { 0 });
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let answers = if slot.busy {
                slot.owes_token = true;
                true
            } else {
                self.start_token(shared, i, current)
            };
            if answers && reply.is_some() {
                waiting.push(self.slots[i].id);
            }
        }
        if let Some(reply) = reply {
            self.trackers.push(Tracker {
                generation: current.generation,
                token: current.token.clone(),
                waiting,
                delivered: 0,
                failures: Vec::new(),
                reply,
            });
            self.answer_finished();
        }
    }

    /// Starts delivering `current` to slot `i`; `false` when its consumer is gone.
    fn start_token(&mut self, shared: &Shared, i: usize, current: Deliverable<'_>) -> bool {
        let slot = &mut self.slots[i];
        if let Some(kind) = slot.required.filter(|k| !current.token.has_grant(*k)) {
            slot.busy = true;
            self.ready.push_back(Done {
                id: slot.id,
                name: slot.name.clone(),
                generation: Some(current.generation),
                outcome: Err(failure(format!(
                    "token lacks the {kind} grant this consumer requires"
                ))),
            });
            return true;
        }
        let (id, name, generation) = (slot.id, slot.name.clone(), current.generation);
        // A root span: the delivery belongs to no caller's span.
        let span = tracing::debug_span!(parent: None, "deliver", consumer = %name, generation);
        let setup = self.setup(shared, id, name, span);
        let job = Job::Token(current.token.clone(), generation);
        let Some(call) = self.slots[i].consumer.call(job, setup) else {
            return false;
        };
        self.slots[i].busy = true;
        bump(&shared.counters.deliveries);
        self.calls
            .get_or_insert_with(FuturesUnordered::new)
            .push(call);
        true
    }

    /// Starts slot `i`'s `signed_out` call; `false` when its consumer is gone.
    fn start_sign_out(&mut self, shared: &Shared, i: usize) -> bool {
        let (id, name) = (self.slots[i].id, self.slots[i].name.clone());
        let span = tracing::debug_span!(parent: None, "signed_out", consumer = %name);
        let setup = self.setup(shared, id, name, span);
        let Some(call) = self.slots[i].consumer.call(Job::SignedOut, setup) else {
            return false;
        };
        let slot = &mut self.slots[i];
        slot.busy = true;
        slot.in_sign_out = true;
        self.calls
            .get_or_insert_with(FuturesUnordered::new)
            .push(call);
        true
    }

    /// What a call of consumer `id` runs under: the timeout, the clock, and the scope that tells
    /// the consumer's calls back into this manager apart.
    fn setup(&self, shared: &Shared, id: ConsumerId, name: Arc<str>, span: tracing::Span) -> Setup {
        Setup {
            id,
            name,
            timeout: self.timeout,
            clock: shared.clock.clone(),
            plugin: Plugin {
                manager: shared.key(),
                role: Role::Consumer,
            },
            span,
        }
    }

    /// A finished call, if any.
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        if let Some(done) = self.ready.pop_front() {
            return Poll::Ready(Some(done));
        }
        let Some(calls) = &mut self.calls else {
            return Poll::Ready(None);
        };
        match calls.poll_next_unpin(cx) {
            Poll::Ready(done) => {
                if calls.is_empty() {
                    self.calls = None;
                }
                Poll::Ready(done)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Records a finished call, starts the consumer's next one, and hands a service refusal to
    /// the driver.
    pub(super) fn finish(
        &mut self,
        shared: &Shared,
        done: Done,
        current: Option<Deliverable<'_>>,
    ) -> Option<Refusal> {
        let Done {
            id,
            name,
            generation,
            outcome,
        } = done;
        if let Err(e) = &outcome {
            tracing::warn!(consumer = %name, error = %e, "consumer failed");
            bump(&shared.counters.consumer_failures);
            let (consumer, error) = (name.to_string(), e.to_string());
            shared.emit(|| Event::ConsumerFailed { consumer, error });
        }
        let refusal = match (generation, &outcome) {
            (Some(generation), Err(e)) => e.code().map(|code| Refusal { code, generation }),
            _ => None,
        };
        let mut next_token = false;
        if let Some(i) = self.slots.iter().position(|s| s.id == id) {
            let slot = &mut self.slots[i];
            slot.busy = false;
            slot.in_sign_out = false;
            if !slot.consumer.is_alive() {
                // The app dropped it during the call.
                self.slots.remove(i);
                shared.forget_consumers(&[id]);
            } else if std::mem::take(&mut slot.owes_sign_out) {
                self.start_sign_out(shared, i);
            } else if std::mem::take(&mut slot.owes_token) {
                next_token = current.is_some_and(|c| self.start_token(shared, i, c));
            }
        }
        if let Some(generation) = generation {
            self.settle(id, generation, name, outcome);
        }
        if !next_token {
            // No newer token is coming to it: newer updates must not wait for it.
            self.forget(id);
        }
        self.check_signed_out(shared);
        refusal
    }

    /// Counts a finished delivery for the updates waiting on it.
    fn settle(
        &mut self,
        id: ConsumerId,
        generation: u64,
        name: Arc<str>,
        outcome: Result<(), ConsumerError>,
    ) {
        let mut outcome = Some(outcome);
        for tracker in &mut self.trackers {
            // A newer update waits for this consumer's next call.
            if tracker.generation > generation {
                continue;
            }
            let Some(pos) = tracker.waiting.iter().position(|w| *w == id) else {
                continue;
            };
            tracker.waiting.swap_remove(pos);
            if tracker.generation == generation {
                match outcome.take() {
                    Some(Ok(())) => tracker.delivered += 1,
                    Some(Err(e)) => tracker.failures.push((name.to_string(), e)),
                    None => {}
                }
            }
        }
        self.answer_finished();
    }

    /// Nobody waits for consumer `id` any more.
    fn forget(&mut self, id: ConsumerId) {
        for tracker in &mut self.trackers {
            tracker.waiting.retain(|w| *w != id);
        }
        self.answer_finished();
    }

    fn answer_finished(&mut self) {
        let mut i = 0;
        while i < self.trackers.len() {
            if self.trackers[i].waiting.is_empty() {
                self.trackers.swap_remove(i).answer();
            } else {
                i += 1;
            }
        }
    }

    /// The app signed out: updates still waiting are answered with what was delivered so far, and
    /// every consumer's `signed_out` is called (after its call in flight, if any). `reply` is
    /// answered, and `SignedOut` emitted, once all of them have run.
    pub(super) fn sign_out(&mut self, shared: &Shared, reply: oneshot::Sender<()>) {
        for tracker in self.trackers.drain(..) {
            tracker.answer();
        }
        self.sweep(shared);
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            slot.owes_token = false;
            if slot.in_sign_out {
                // Already signing out: this sign-out joins it.
            } else if slot.busy {
                slot.owes_sign_out = true;
            } else {
                self.start_sign_out(shared, i);
            }
        }
        self.sign_out_waiters.push(reply);
        self.check_signed_out(shared);
    }

    /// Emits `SignedOut` and answers the `sign_out()` callers once no `signed_out` call is left.
    fn check_signed_out(&mut self, shared: &Shared) {
        if self.sign_out_waiters.is_empty()
            || self.slots.iter().any(|s| s.in_sign_out || s.owes_sign_out)
        {
            return;
        }
        tracing::info!("signed out");
        shared.emit(|| Event::SignedOut);
        for waiter in self.sign_out_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

//! Per-consumer delivery: each consumer gets tokens one call at a time, newest wins, failures
//! isolated. The consumers and where their calls stand live here, inside the driver: only the
//! driver touches them. Which ids are registered is recorded once, in the mailbox (`Members`),
//! whose writes queue the `Register` and `Unregister` commands that shape the list here.

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
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    consumer: Box<dyn HeldConsumer>,
    name: Arc<str>,
    required: Option<GrantKind>,
    state: State,
}

/// Where a consumer's calls stand: one call at a time, and what it is owed once that call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No call in flight.
    Idle,
    /// Taking a token (or its outcome, known without a call, waits in `ready`); then `next`.
    Delivering(Next),
    /// In `signed_out`; then the current token, if one became current meanwhile.
    SigningOut { then_token: bool },
}

/// What a consumer busy taking a token is owed once its call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Nothing,
    /// A newer token became current: the current token (newest wins).
    Token,
    /// The app signed out: `signed_out`, then the current token if one became current since.
    SignOut {
        then_token: bool,
    },
}

impl State {
    /// A new token became current: what the consumer is in now (`None`: idle, start a call).
    fn with_new_token(self) -> Option<State> {
        match self {
            State::Idle => None,
            State::Delivering(Next::SignOut { .. }) => {
                Some(State::Delivering(Next::SignOut { then_token: true }))
            }
            State::Delivering(_) => Some(State::Delivering(Next::Token)),
            State::SigningOut { .. } => Some(State::SigningOut { then_token: true }),
        }
    }

    /// The app signed out: what the consumer is in now (`None`: idle, start `signed_out`). A
    /// token owed is forgotten with the session; a `signed_out` in flight serves this sign-out too.
    fn with_sign_out(self) -> Option<State> {
        match self {
            State::Idle => None,
            State::Delivering(_) => Some(State::Delivering(Next::SignOut { then_token: false })),
            State::SigningOut { .. } => Some(State::SigningOut { then_token: false }),
        }
    }

    /// What follows the call in flight, once it ends.
    fn after_call(self) -> Then {
        match self {
            State::Idle
            | State::Delivering(Next::Nothing)
            | State::SigningOut { then_token: false } => Then::Idle,
            State::Delivering(Next::Token) | State::SigningOut { then_token: true } => Then::Token,
            State::Delivering(Next::SignOut { then_token }) => Then::SignOut { then_token },
        }
    }

    /// Whether the consumer's `signed_out` is still to run or running.
    fn signing_out(self) -> bool {
        matches!(
            self,
            State::SigningOut { .. } | State::Delivering(Next::SignOut { .. })
        )
    }
}

/// What follows a finished call.
enum Then {
    Idle,
    Token,
    SignOut { then_token: bool },
}

/// An `update_token` call waiting until every consumer has taken its token (or a newer one).
struct Tracker {
    generation: u64,
    token: AccessToken,
    waiting: BTreeSet<ConsumerId>,
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

/// A sign-out whose consumers' `signed_out` calls have not all run.
struct SignOut {
    /// The `sign_out()` callers, answered once every call has run.
    waiters: Vec<oneshot::Sender<()>>,
    /// `SignedOut` was emitted already: a token became current before the calls ended, and the
    /// sign-out was told before it.
    announced: bool,
}

/// The calls in flight and how they are made.
struct Calls {
    /// Made when the first call starts and dropped when the last ends, so that an idle manager
    /// holds none.
    running: Option<FuturesUnordered<BoxFuture<'static, Done>>>,
    /// Outcomes known without a call (a missing grant), handed out before the calls'.
    ready: VecDeque<Done>,
    timeout: Duration,
}

pub(super) struct Fanout {
    /// By id: registration order, for a delivery order that a seed replays.
    slots: BTreeMap<ConsumerId, Slot>,
    calls: Calls,
    trackers: Vec<Tracker>,
    /// Boxed: most of the time there is none, and an idle manager is mostly its driver.
    signing_out: Option<Box<SignOut>>,
    /// The list's length after the last sweep for consumers the app dropped: registering sweeps
    /// again once it has doubled, so that dropped consumers cost no more than the live ones.
    swept_len: usize,
}

impl Fanout {
    pub(super) fn new(timeout: Duration) -> Self {
        Fanout {
            slots: BTreeMap::new(),
            calls: Calls {
                running: None,
                ready: VecDeque::new(),
                timeout,
            },
            trackers: Vec::new(),
            signing_out: None,
            swept_len: 0,
        }
    }

    /// Answers the updates no consumer keeps waiting any more, then drops the unfinished calls
    /// one by one, each under `catch_unwind` (dropping one may run a consumer's `Drop`, when ours
    /// is its last `Arc`; a panic escaping the set's own drop would leak the calls after it), and
    /// the waiting callers (they answer `Closed`). The driver calls it when it stops, which it does
    /// whenever it is dropped.
    pub(super) fn abandon(&mut self) {
        self.send_answers();
        for call in self.calls.running.take().into_iter().flatten() {
            let _ = drop_caught(call);
        }
        self.calls.ready.clear();
        self.trackers.clear();
        self.signing_out = None;
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
        let id = registration.id;
        let mut slot = Slot {
            consumer: registration.consumer,
            name: registration.name,
            required: registration.required,
            state: State::Idle,
        };
        if let Some(current) = current {
            self.calls.start_token(shared, id, &mut slot, current);
        }
        self.slots.insert(id, slot);
    }

    /// A consumer unregisters: it gets nothing more, and no update waits for it.
    pub(super) fn unregister(&mut self, shared: &Shared, id: ConsumerId) {
        self.slots.remove(&id);
        self.forget(&[id]);
        self.check_signed_out(shared);
    }

    /// Drops the consumers the app has dropped (their memory is freed with our `Weak`).
    fn sweep(&mut self, shared: &Shared) {
        let mut gone = Vec::new();
        self.slots.retain(|id, slot| {
            // A busy slot's call holds the consumer: it is swept once the call ends.
            let alive = slot.state != State::Idle || slot.consumer.is_alive();
            if !alive {
                gone.push(*id);
            }
            alive
        });
        self.swept_len = self.slots.len();
        shared.forget_consumers(&gone);
        self.forget(&gone);
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
        let mut waiting = BTreeSet::new();
        for (id, slot) in &mut self.slots {
            let answers = match slot.state.with_new_token() {
                Some(state) => {
                    slot.state = state;
                    true
                }
                None => self.calls.start_token(shared, *id, slot, current),
            };
            if answers && reply.is_some() {
                waiting.insert(*id);
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
        }
    }
    /// A finished call, if any.
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        if let Some(done) = self.calls.ready.pop_front() {
            return Poll::Ready(Some(done));
        }
        let Some(running) = &mut self.calls.running else {
            return Poll::Ready(None);
        };
        match running.poll_next_unpin(cx) {
            Poll::Ready(done) => {
                if running.is_empty() {
                    self.calls.running = None;
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
        if let Some(slot) = self.slots.get_mut(&id) {
            let then = slot.state.after_call();
            slot.state = State::Idle;
            if !slot.consumer.is_alive() {
                // The app dropped it during the call.
                self.slots.remove(&id);
                shared.forget_consumers(&[id]);
            } else {
                match then {
                    Then::Idle => {}
                    Then::Token => {
                        next_token =
                            current.is_some_and(|c| self.calls.start_token(shared, id, slot, c));
                    }
                    Then::SignOut { then_token } => {
                        if self.calls.start_sign_out(shared, id, slot, then_token) {
                            // Its next token follows the `signed_out` call.
                            next_token = then_token;
                        }
                    }
                }
            }
        }
        if let Some(generation) = generation {
            self.settle(id, generation, name, outcome);
        }
        if !next_token {
            // No newer token is coming to it: newer updates must not wait for it.
            self.forget(&[id]);
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
            if !tracker.waiting.remove(&id) {
                continue;
            }
            if tracker.generation == generation {
                match outcome.take() {
                    Some(Ok(())) => tracker.delivered += 1,
                    Some(Err(e)) => tracker.failures.push((name.to_string(), e)),
                    None => {}
                }
            }
        }
    }

    /// Nobody waits for these consumers any more.
    fn forget(&mut self, ids: &[ConsumerId]) {
        if self.trackers.is_empty() {
            return;
        }
        for tracker in &mut self.trackers {
            for id in ids {
                tracker.waiting.remove(id);
            }
        }
    }

    /// Answers the `update_token` callers whose updates no consumer keeps waiting any more. The
    /// driver calls it when its turn ends, not as each update completes: on a multi-thread
    /// runtime, a caller woken while the driver still works is often taken by another worker, and
    /// from then on the caller and the driver wake each other across threads on every update.
    pub(super) fn send_answers(&mut self) {
        let mut i = 0;
        while i < self.trackers.len() {
            if self.trackers[i].waiting.is_empty() {
                self.trackers.swap_remove(i).answer();
            } else {
                i += 1;
            }
        }
    }

    /// The app signed out: updates still waiting are answered with what was delivered so far (when
    /// the turn ends), and every consumer's `signed_out` is called (after its call in flight, if
    /// any). `reply` is answered, and `SignedOut` emitted, once all of them have run (`SignedOut`
    /// sooner if a token becomes current first: see [`Fanout::announce_sign_out`]).
    pub(super) fn sign_out(&mut self, shared: &Shared, reply: oneshot::Sender<()>) {
        for tracker in &mut self.trackers {
            tracker.waiting.clear();
        }
        self.sweep(shared);
        for (id, slot) in &mut self.slots {
            match slot.state.with_sign_out() {
                Some(state) => slot.state = state,
                None => {
                    self.calls.start_sign_out(shared, *id, slot, false);
                }
            }
        }
        let signing_out = self.signing_out.get_or_insert_with(|| {
            Box::new(SignOut {
                waiters: Vec::new(),
                announced: false,
            })
        });
        // A sign-out after one already told is told again.
        signing_out.announced = false;
        signing_out.waiters.push(reply);
        self.check_signed_out(shared);
    }

    /// A token is about to become current: a sign-out whose `signed_out` calls are still running
    /// is told first, so that `SignedOut` never follows the next token's `TokenUpdated`.
    pub(super) fn announce_sign_out(&mut self, shared: &Shared) {
        if let Some(signing_out) = self.signing_out.as_mut().filter(|s| !s.announced) {
            signing_out.announced = true;
            tracing::info!("signed out");
            shared.emit(|| Event::SignedOut);
        }
    }

    /// Emits `SignedOut` (unless told already) and answers the `sign_out()` callers once no
    /// `signed_out` call is left.
    fn check_signed_out(&mut self, shared: &Shared) {
        if self.signing_out.is_none() || self.slots.values().any(|s| s.state.signing_out()) {
            return;
        }
        self.announce_sign_out(shared);
        if let Some(signing_out) = self.signing_out.take() {
            for waiter in signing_out.waiters {
                let _ = waiter.send(());
            }
        }
    }
}

impl Calls {
    /// Starts delivering `current` to `slot`; `false` when its consumer is gone.
    fn start_token(
        &mut self,
        shared: &Shared,
        id: ConsumerId,
        slot: &mut Slot,
        current: Deliverable<'_>,
    ) -> bool {
        if let Some(kind) = slot.required.filter(|k| !current.token.has_grant(*k)) {
            slot.state = State::Delivering(Next::Nothing);
            self.ready.push_back(Done {
                id,
                name: slot.name.clone(),
                generation: Some(current.generation),
                outcome: Err(failure(format!(
                    "token lacks the {kind} grant this consumer requires"
                ))),
            });
            return true;
        }
        let (name, generation) = (slot.name.clone(), current.generation);
        // A root span: the delivery belongs to no caller's span.
        let span = tracing::debug_span!(parent: None, "deliver", consumer = %name, generation);
        let setup = self.setup(shared, id, name, span);
        let job = Job::Token(current.token.clone(), generation);
        let Some(call) = slot.consumer.call(job, setup) else {
            return false;
        };
        slot.state = State::Delivering(Next::Nothing);
        bump(&shared.counters.deliveries);
        self.running
            .get_or_insert_with(FuturesUnordered::new)
            .push(call);
        true
    }

    /// Starts `slot`'s `signed_out` call, to be followed by the current token if `then_token`;
    /// `false` when its consumer is gone.
    fn start_sign_out(
        &mut self,
        shared: &Shared,
        id: ConsumerId,
        slot: &mut Slot,
        then_token: bool,
    ) -> bool {
        let name = slot.name.clone();
        let span = tracing::debug_span!(parent: None, "signed_out", consumer = %name);
        let setup = self.setup(shared, id, name, span);
        let Some(call) = slot.consumer.call(Job::SignedOut, setup) else {
            return false;
        };
        slot.state = State::SigningOut { then_token };
        self.running
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
}

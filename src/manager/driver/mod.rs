//! The driver: the one owner of the manager's state (the token and its timers, the fetch, the
//! consumers). It is the manager's task; handles reach it only through the mailbox, and read what
//! it publishes.

use super::call::Done;
use super::error::{UpdateError, UpdateReport};
use super::fanout::{Deliverable, Fanout};
use super::plugin::drop_caught;
use super::shared::{shift, Command, Published, ReportReply, Shared};
use super::stats::bump;
use crate::backoff::{Backoff, SplitMix64};
use crate::clock::{saturating_add, Sleep};
use crate::event::Event;
use crate::limiter::Member;
use crate::store::TokenStore;
use crate::{AccessToken, TokenFetcher, TokenInfo};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod fetching;
mod persist;
mod schedule;
mod session;

use persist::Persistence;
use schedule::{Fetching, Next};

/// What the builder hands the driver.
pub(super) struct Config {
    pub(super) fetcher: Option<Arc<dyn TokenFetcher>>,
    pub(super) refresh_ahead: Duration,
    pub(super) fetch_timeout: Duration,
    pub(super) consumer_timeout: Duration,
    pub(super) backoff: Backoff,
    /// The shared limiter, with the ticket of the planned fetch (boxed: most managers share none).
    pub(super) limiter: Option<Box<Member>>,
    pub(super) refresh_jitter: Duration,
    pub(super) estimate_clock_skew: bool,
}

/// What the builder hands the driver beside its [`Config`], used once at start.
pub(super) struct Start {
    pub(super) initial: Option<AccessToken>,
    pub(super) store: Option<Arc<dyn TokenStore>>,
    /// The jitter's seed.
    pub(super) seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Fresh,
    WillExpire,
    Expired,
}

/// The current token and where it stands.
/// Its generation is the driver's `generation`.
struct Current {
    token: AccessToken,
    phase: Phase,
    /// On the manager's clock (the issuer's `exp` shifted by the applied offset).
    expires_at: SystemTime,
    /// How long after its refresh point its automatic refresh starts (`refresh_jitter`).
    jitter: Duration,
    /// A service refused it: it is not delivered again.
    refused: bool,
    /// How many tokens in a row a service refused before this one.
    refused_before: u32,
}

/// Where an offered token came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    App,
    Fetcher,
    /// The token store, at start.
    Stored,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    config: Config,
    rng: SplitMix64,
    current: Option<Current>,
    /// The generation of the last token installed (0 before the first).
    generation: u64,
    fetching: Fetching,
    /// The generation of the last token a service refused with an "invalid" code (0: none).
    invalid_strike: u64,
    /// Issuer clock minus manager clock, in seconds, as timers and validation use it (0 unless
    /// clock-skew estimation applies one).
    applied_offset: i64,
    fanout: Fanout,
    /// The commands of the turn, swapped with the mailbox's queue.
    inbox: VecDeque<Command>,
    /// The armed wall-clock timer and its deadline.
    timer: Option<(SystemTime, Sleep)>,
    /// The token store, if the app gave one (boxed: most managers have none).
    persistence: Option<Box<Persistence>>,
    skew_reported: bool,
    stopped: bool,
}

/// The driver stops when it is dropped, whatever the reason (shutdown, the last handle gone, the
/// runtime dropping its task): the manager closes.
impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
        self.close();
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let driver = &mut *self;
        if !driver.stopped && driver.step(cx).is_pending() {
            return Poll::Pending;
        }
        driver.stop();
        // The store's last calls end before the manager closes (behaviour 17).
        if driver.poll_store_stopped(cx).is_pending() {
            return Poll::Pending;
        }
        driver.close();
        Poll::Ready(())
    }
}

impl Driver {
    pub(super) fn new(config: Config, shared: Arc<Shared>, start: Start) -> Self {
        let Start {
            initial,
            store,
            seed,
        } = start;
        let now = shared.clock.now();
        let persistence = store.map(|store| {
            // Without an initial token, the stored one (if valid) is taken before any fetch.
            Box::new(Persistence::new(
                store,
                shared.clock.clone(),
                initial.is_none(),
            ))
        });
        let mut driver = Driver {
            persistence,
            rng: SplitMix64::new(seed),
            fanout: Fanout::new(config.consumer_timeout),
            config,
            shared,
            current: None,
            generation: 0,
            fetching: Fetching::Idle,
            invalid_strike: 0,
            applied_offset: 0,
            inbox: VecDeque::new(),
            timer: None,
            skew_reported: false,
            stopped: false,
        };
        let loading = driver.persistence.as_ref().is_some_and(|p| p.loading);
        if let Some(token) = initial {
            driver.install(token, Source::App);
        }
        // The first fetch starts on the driver's first turn, after the commands sent before it:
        // a token pushed right after `build()` is taken first.
        if !loading {
            driver.plan(Next::Renew { spacing: None }, now);
        }
        driver
    }

    /// Stops: drops the fetcher, the fetch in flight, the consumers' calls and the timers (their
    /// callers answer `Closed`), the store's queued save, and forgets the token. The manager
    /// closes once the store's last calls are done ([`close`](Self::close)).
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Dropping these runs user code (a fetch future's or the fetcher's `Drop`): a panic there
        // must not keep the manager from closing, or `shutdown()` would wait forever.
        // The store's queued operations and the unread commands may hold tokens: none is kept.
        // One at a time: a second panic while the first unwinds would abort the process.
        let _ = drop_caught(std::mem::replace(&mut self.fetching, Fetching::Idle));
        let _ = drop_caught(self.config.fetcher.take());
        let _ = drop_caught(self.timer.take());
        let _ = drop_caught(std::mem::take(&mut self.inbox));
        self.fanout.abandon();
        if let Some(persistence) = &mut self.persistence {
            persistence.stop();
        }
        self.current = None;
        self.shared.current.store(None);
    }

    /// Marks the manager closed, so that `shutdown()` returns once all of it is gone. A store call
    /// still running past its deadline is left to finish on its own (a queued clear after it).
    fn close(&mut self) {
        let _ = drop_caught(self.persistence.take());
        if !self.shared.is_closed() {
            self.shared.close();
        }
    }

    /// Runs until nothing is ready: commands, then whatever finished; `Ready` to stop.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let handles_gone = self.shared.take_commands(&mut self.inbox, cx.waker());
            // One clock reading a pass. The token's phase first, so that commands see the state
            // as of now; the automatic fetch last, so that it sees what the commands changed.
            let now = self.shared.clock.now();
            self.on_time(now);
            while let Some(command) = self.inbox.pop_front() {
                if let Command::Shutdown = command {
                    return Poll::Ready(());
                }
                self.on_command(command, now);
            }
            if handles_gone {
                return Poll::Ready(());
            }
            self.fetch_if_due(now);
            if let Some(fetch) = self.fetching.in_flight() {
                if let Poll::Ready(result) = fetch.poll(cx) {
                    self.on_fetched(result);
                    continue;
                }
            }
            if let Poll::Ready(Some(done)) = self.fanout.poll_done(cx) {
                self.on_delivered(done);
                continue;
            }
            if self.poll_store(cx) {
                continue;
            }
            if self.poll_wait(cx) {
                continue;
            }
            if self.poll_ticket(cx) {
                continue;
            }
            let deadline = self.next_deadline();
            if self.must_rearm(deadline) {
                self.timer = deadline.map(|d| (d, self.shared.clock.sleep_until(d)));
            }
            if let Some((_, timer)) = &mut self.timer {
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    continue;
                }
            }
            // Last, so that a woken caller finds the turn over (see `send_answers`).
            self.fanout.send_answers();
            return Poll::Pending;
        }
    }

    /// The next wall-clock instant something is due: the token's next phase, or the automatic
    /// fetch once its elapsed-time wait is over.
    fn next_deadline(&self) -> Option<SystemTime> {
        let phase = self.current.as_ref().and_then(|c| match c.phase {
            Phase::Fresh => Some(c.will_expire_at(self.config.refresh_ahead)),
            Phase::WillExpire => Some(c.expires_at),
            Phase::Expired => None,
        });
        match (phase, self.fetch_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the armed timer does not serve `deadline`. One armed no later than the deadline is
    /// kept: waking early only runs the loop once more, and re-arming on every new token would cost
    /// a timer each update.
    fn must_rearm(&self, deadline: Option<SystemTime>) -> bool {
        let armed = self.timer.as_ref().map(|(d, _)| *d);
        let early_enough = matches!((armed, deadline), (Some(a), Some(d)) if a <= d);
        armed != deadline && !early_enough
    }

    fn on_command(&mut self, command: Command, now: SystemTime) {
        match command {
            Command::Update {
                token,
                reply,
                from_consumer,
            } => self.on_update(token, reply, from_consumer, now),
            Command::Rejected(error) => {
                self.reject(&UpdateError::Invalid(error));
            }
            Command::Refresh {
                min_remaining,
                from_fetcher,
                reply,
            } => self.on_refresh(min_remaining, from_fetcher, reply, now),
            Command::Register(registration) => {
                let current = deliverable(&self.current, self.generation);
                self.fanout.register(&self.shared, registration, current);
            }
            Command::Unregister(id) => self.fanout.unregister(&self.shared, id),
            Command::ServiceRefused { code, reply } => {
                let generation = self.current.as_ref().map_or(0, |_| self.generation);
                let action = self.on_service_refused(code, generation, now);
                let _ = reply.send(action);
            }
            Command::SignOut { reply, cleared } => self.on_sign_out(reply, cleared),
            Command::Resume => self.on_resume(now),
            Command::Shutdown => {}
        }
    }

    /// A consumer's call ended.
    fn on_delivered(&mut self, done: Done) {
        let current = deliverable(&self.current, self.generation);
        if let Some(refusal) = self.fanout.finish(&self.shared, done, current) {
            let now = self.shared.clock.now();
            self.on_consumer_refused(refusal, now);
        }
    }

    /// The manager's now on the issuer's clock, at which tokens are judged.
    fn token_time(&self, now: SystemTime) -> SystemTime {
        shift(now, self.applied_offset)
    }

    /// Checks an offered token against the time and the token held: `Ok(false)` for the token
    /// held.
    fn check(&self, token: &AccessToken, now: SystemTime) -> Result<bool, UpdateError> {
        self.check_with_offset(token, now, self.applied_offset)
    }

    /// [`check`](Self::check), judging the token with the issuer's clock `offset` seconds from the
    /// manager's.
    fn check_with_offset(
        &self,
        token: &AccessToken,
        now: SystemTime,
        offset: i64,
    ) -> Result<bool, UpdateError> {
        token
            .validate_at(shift(now, offset))
            .map_err(UpdateError::Invalid)?;
        if let Some(current) = &self.current {
            let held = &current.token;
            if held == token {
                return Ok(false);
            }
            if held.account_sid() != token.account_sid() {
                return Err(UpdateError::AccountMismatch {
                    current: held.account_sid().to_owned(),
                    offered: token.account_sid().to_owned(),
                });
            }
            if held.identity() != token.identity() {
                return Err(UpdateError::IdentityMismatch {
                    current: held.identity().map(str::to_owned),
                    offered: token.identity().map(str::to_owned),
                });
            }
        }
        Ok(true)
    }

    /// Counts, logs and tells subscribers of a refused token.
    fn reject(&self, error: &UpdateError) {
        if let Some(error) = error.token_error() {
            bump(&self.shared.counters.tokens_rejected);
            tracing::warn!(code = error.code(), %error, "token rejected");
            self.shared.emit(|| Event::TokenRejected { error });
        }
    }

    fn on_update(
        &mut self,
        token: AccessToken,
        reply: ReportReply,
        from_consumer: bool,
        now: SystemTime,
    ) {
        match self.check(&token, now) {
            Err(e) => {
                self.reject(&e);
                let _ = reply.send(Err(e));
            }
            Ok(false) => {
                let _ = reply.send(Ok(UpdateReport::unchanged(token)));
            }
            Ok(true) => {
                // A pushed token restarts the refresh cycle, after a permanent failure too.
                self.invalid_strike = 0;
                if from_consumer {
                    // Its caller is a consumer: deliveries would wait for it.
                    self.install_and_publish(token.clone(), Source::App, now, None);
                    let _ = reply.send(Ok(UpdateReport::undelivered(token)));
                } else {
                    self.install_and_publish(token, Source::App, now, Some(reply));
                }
                match self.fetching.in_flight() {
                    // The fetch plans the next one when it ends.
                    Some(fetch) => fetch.halt_after = false,
                    None => {
                        self.plan(Next::Renew { spacing: None }, now);
                    }
                }
            }
        }
    }

    /// Makes `token` current and publishes it; its timers follow from its deadlines. The caller
    /// plans the next fetch.
    fn install(&mut self, token: AccessToken, source: Source) {
        self.generation += 1;
        let jitter = self.rng.up_to(self.config.refresh_jitter);
        bump(&self.shared.counters.tokens_installed);
        if let Some(persistence) = self
            .persistence
            .as_mut()
            .filter(|_| source != Source::Stored)
        {
            persistence.save(&token);
        }
        let refused_before = self
            .current
            .as_ref()
            .filter(|c| c.refused)
            .map_or(0, |c| c.refused_before.saturating_add(1));
        self.current = Some(Current {
            token,
            phase: Phase::Fresh,
            expires_at: UNIX_EPOCH,
            jitter,
            refused: false,
            refused_before,
        });
        self.place_current();
    }

    /// Computes the current token's deadlines on the manager's clock from the applied offset, and
    /// publishes it with that offset: at install, and again when the offset changes.
    fn place_current(&mut self) {
        let offset = self.applied_offset;
        let Some(c) = &mut self.current else {
            return;
        };
        // On the manager's clock: the issuer's `exp` less the issuer's lead.
        c.expires_at = shift(c.token.expires_at(), -offset);
        self.shared.current.store(Some(Arc::new(Published {
            token: c.token.clone(),
            applied_offset: offset,
        })));
    }

    fn install_and_publish(
        &mut self,
        token: AccessToken,
        source: Source,
        now: SystemTime,
        reply: Option<ReportReply>,
    ) {
        self.install(token.clone(), source);
        tracing::info!(
            generation = self.generation,
            identity = token.identity().unwrap_or(""),
            expires_unix = token.exp_secs(),
            "token updated"
        );
        self.fanout.announce_sign_out(&self.shared);
        // Made only for subscribers: without any, an update builds no `TokenInfo`.
        let generation = self.generation;
        self.shared.emit(|| Event::TokenUpdated {
            token: TokenInfo::of(&token, generation),
        });
        let current = Deliverable {
            token: &token,
            generation: self.generation,
        };
        self.fanout.publish(&self.shared, current, reply);
        self.on_time(now);
    }

    /// Moves the token's phase to the time: WillExpire, then Expired.
    fn on_time(&mut self, now: SystemTime) {
        let lead = self.config.refresh_ahead;
        // The current token is the last one installed.
        let generation = self.generation;
        if let Some(c) = &mut self.current {
            if c.phase == Phase::Fresh && now >= c.will_expire_at(lead) {
                c.phase = Phase::WillExpire;
                let token = TokenInfo::of(&c.token, generation);
                self.shared.emit(|| Event::TokenWillExpire { token });
            }
            if c.phase == Phase::WillExpire && now >= c.expires_at {
                c.phase = Phase::Expired;
                tracing::warn!(expires_unix = c.token.exp_secs(), "token expired");
                let token = TokenInfo::of(&c.token, generation);
                self.shared.emit(|| Event::TokenExpired { token });
            }
        }
    }

    /// The shared limiter's plan says the planned fetch starts now: it no longer waits for its
    /// wall-clock instant (an elapsed-time wait still holds it back). `true` when it did.
    fn poll_ticket(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self
            .config
            .limiter
            .as_mut()
            .is_some_and(|member| member.poll_start(cx));
        if !due {
            return false;
        }
        if let Fetching::Planned(plan) = &mut self.fetching {
            plan.at = None;
            let now = self.shared.clock.now();
            if plan.wait.is_none() {
                self.shared.counters.set_next_fetch_at(Some(now));
            }
        }
        true
    }
}

impl Current {
    /// Its refresh point on the manager's clock: `lead` before it expires, when `TokenWillExpire`
    /// fires.
    fn will_expire_at(&self, lead: Duration) -> SystemTime {
        self.expires_at.checked_sub(lead).unwrap_or(UNIX_EPOCH)
    }

    /// When its automatic refresh starts: its refresh point, spread by the jitter.
    fn refresh_at(&self, lead: Duration) -> SystemTime {
        saturating_add(self.will_expire_at(lead), self.jitter)
    }
}

/// The current token (of `generation`), unless a service refused it.
fn deliverable(current: &Option<Current>, generation: u64) -> Option<Deliverable<'_>> {
    current
        .as_ref()
        .filter(|c| !c.refused)
        .map(|c| Deliverable {
            token: &c.token,
            generation,
        })
}

#[cfg(test)]
mod tests {
    /// A manager's task is the driver itself: its size is most of an idle manager's memory.
    #[test]
    fn the_driver_task_stays_small() {
        let size = std::mem::size_of::<super::Driver>();
        assert!(size <= 512, "the driver grew to {size} bytes");
    }
}

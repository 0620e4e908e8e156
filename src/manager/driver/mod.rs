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
use crate::fetcher::FetchReason;
use crate::store::TokenStore;
use crate::{AccessToken, FetchLimiter, TokenFetcher, TokenInfo};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod fetching;
mod persist;
mod session;

use fetching::InFlight;
use persist::Persistence;

/// What the builder hands the driver.
pub(super) struct Config {
    pub(super) fetcher: Option<Arc<dyn TokenFetcher>>,
    pub(super) refresh_ahead: Duration,
    pub(super) fetch_timeout: Duration,
    pub(super) consumer_timeout: Duration,
    pub(super) backoff: Backoff,
    pub(super) seed: u64,
    pub(super) limiter: Option<FetchLimiter>,
    pub(super) refresh_jitter: Duration,
    pub(super) estimate_clock_skew: bool,
    pub(super) store: Option<Arc<dyn TokenStore>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Fresh,
    WillExpire,
    Expired,
}

/// The current token and where it stands.
struct Current {
    token: AccessToken,
    generation: u64,
    phase: Phase,
    /// On the manager's clock (the issuer's times shifted by the estimated offset).
    will_expire_at: SystemTime,
    expires_at: SystemTime,
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
    /// Boxed: most of the time there is none, and an idle manager is mostly its driver.
    fetch: Option<Box<InFlight>>,
    /// The next automatic fetch starts once the wall clock reaches this…
    next_fetch: Option<SystemTime>,
    /// …and this elapsed-time wait (backoff after a failure, spacing after a short token) is over.
    fetch_wait: Option<Sleep>,
    /// Failed attempts of the refresh under way.
    failures: u32,
    /// Automatic fetching stopped (a permanent failure, a service refusing every token, sign-out)
    /// until `refresh()` or `update_token()`.
    halted: bool,
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
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let driver = &mut *self;
        if driver.stopped || driver.step(cx).is_ready() {
            driver.stop();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Driver {
    pub(super) fn new(
        mut config: Config,
        shared: Arc<Shared>,
        initial: Option<AccessToken>,
    ) -> Self {
        let now = shared.clock.now();
        let persistence = config.store.take().map(|store| {
            // Without an initial token, the stored one (if valid) is taken before any fetch.
            Box::new(Persistence::new(store, initial.is_none()))
        });
        let mut driver = Driver {
            persistence,
            rng: SplitMix64::new(config.seed),
            fanout: Fanout::new(config.consumer_timeout),
            config,
            shared,
            current: None,
            generation: 0,
            fetch: None,
            next_fetch: None,
            fetch_wait: None,
            failures: 0,
            halted: false,
            inbox: VecDeque::new(),
            timer: None,
            skew_reported: false,
            stopped: false,
        };
        let loading = driver.persistence.as_ref().is_some_and(|p| p.loading);
        match initial {
            Some(token) => driver.install(token, Source::App, now),
            None if driver.config.fetcher.is_some() && !loading => {
                driver.plan_fetch(Some(ANY_TIME), None)
            }
            None => {}
        }
        driver
    }

    /// Stops: drops the fetcher, the fetch in flight, the consumers' calls and the timers (their
    /// callers answer `Closed`) and forgets the token, then marks the manager closed, so that
    /// `shutdown()` returns once all of it is gone.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Dropping these runs user code (a fetch future's or the fetcher's `Drop`): a panic there
        // must not keep the manager from closing, or `shutdown()` would wait forever.
        // The store's queued operations and the unread commands may hold tokens: none is kept.
        // One at a time: a second panic while the first unwinds would abort the process.
        let _ = drop_caught(self.fetch.take());
        let _ = drop_caught(self.config.fetcher.take());
        let _ = drop_caught((self.timer.take(), self.fetch_wait.take()));
        let _ = drop_caught(self.persistence.take());
        let _ = drop_caught(std::mem::take(&mut self.inbox));
        self.fanout.abandon();
        self.current = None;
        self.shared.current.store(None);
        self.shared.close();
    }

    /// Runs until nothing is ready: commands, then whatever finished; `Ready` to stop.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let handles_gone = self.shared.take_commands(&mut self.inbox, cx.waker());
            // One clock reading a pass. Timers first, so that commands see the state as of now.
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
            if let Some(fetch) = &mut self.fetch {
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
            if let Some(wait) = &mut self.fetch_wait {
                if wait.as_mut().poll(cx).is_ready() {
                    self.fetch_wait = None;
                    continue;
                }
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
            return Poll::Pending;
        }
    }

    /// The next wall-clock instant something is due: the token's next phase, or the automatic
    /// fetch once its elapsed-time wait is over.
    fn next_deadline(&self) -> Option<SystemTime> {
        let phase = self.current.as_ref().and_then(|c| match c.phase {
            Phase::Fresh => Some(c.will_expire_at),
            Phase::WillExpire => Some(c.expires_at),
            Phase::Expired => None,
        });
        let fetch = match (&self.fetch, &self.fetch_wait) {
            (None, None) => self.next_fetch,
            _ => None,
        };
        match (phase, fetch) {
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
                let current = deliverable(&self.current);
                self.fanout.register(&self.shared, registration, current);
            }
            Command::Unregister(id) => self.fanout.unregister(&self.shared, id),
            Command::ServiceRefused {
                code,
                generation,
                action,
            } => self.on_service_refused(code, generation, action, now),
            Command::SignOut { reply } => self.on_sign_out(reply),
            Command::Resume => self.on_resume(now),
            Command::Shutdown => {}
        }
    }

    /// A consumer's call ended.
    fn on_delivered(&mut self, done: Done) {
        let current = deliverable(&self.current);
        if let Some(refusal) = self.fanout.finish(&self.shared, done, current) {
            let now = self.shared.clock.now();
            self.on_consumer_refused(refusal, now);
        }
    }

    /// The manager's now on the issuer's clock, at which tokens are judged.
    fn token_time(&self, now: SystemTime) -> SystemTime {
        shift(now, self.shared.applied_offset())
    }

    /// Checks an offered token against the time and the token held: `Ok(false)` for the token
    /// held.
    fn check(&self, token: &AccessToken, now: SystemTime) -> Result<bool, UpdateError> {
        token
            .validate_at(self.token_time(now))
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
                self.failures = 0;
                self.set_halted(false);
                self.set_invalid_strike(0);
                if from_consumer {
                    // Its caller is a consumer: deliveries would wait for it.
                    self.install_and_publish(token.clone(), Source::App, now, None);
                    let _ = reply.send(Ok(UpdateReport::undelivered(token)));
                } else {
                    self.install_and_publish(token, Source::App, now, Some(reply));
                }
            }
        }
    }

    /// Makes `token` current and schedules its timers and the next automatic fetch.
    fn install(&mut self, token: AccessToken, source: Source, now: SystemTime) {
        self.generation += 1;
        // On the manager's clock: the issuer's `exp` less the issuer's lead.
        let expires_at = shift(token.expires_at(), -self.shared.applied_offset());
        let will_expire_at = expires_at
            .checked_sub(self.config.refresh_ahead)
            .unwrap_or(UNIX_EPOCH);
        self.shared.current.store(Some(Arc::new(Published {
            token: token.clone(),
            generation: self.generation,
        })));
        bump(&self.shared.counters.tokens_installed);
        if let Some(persistence) = self
            .persistence
            .as_mut()
            .filter(|_| source != Source::Stored)
        {
            persistence.save(&token);
        }
        if self.config.fetcher.is_some() && !self.halted {
            let at = saturating_add(will_expire_at, self.rng.up_to(self.config.refresh_jitter));
            // Tokens shorter than the lead must not make the fetcher loop (behaviour 7).
            let spacing = (source == Source::Fetcher)
                .then(|| {
                    let half_life = expires_at.duration_since(now).unwrap_or_default() / 2;
                    half_life.max(MIN_FETCH_SPACING)
                })
                .filter(|spacing| saturating_add(now, *spacing) > at);
            self.plan_fetch(Some(at), spacing);
        }
        let refused_before = self
            .current
            .as_ref()
            .filter(|c| c.refused)
            .map_or(0, |c| c.refused_before.saturating_add(1));
        self.current = Some(Current {
            token,
            generation: self.generation,
            phase: Phase::Fresh,
            will_expire_at,
            expires_at,
            refused: false,
            refused_before,
        });
    }

    fn install_and_publish(
        &mut self,
        token: AccessToken,
        source: Source,
        now: SystemTime,
        reply: Option<ReportReply>,
    ) {
        self.install(token.clone(), source, now);
        tracing::info!(
            generation = self.generation,
            identity = token.identity().unwrap_or(""),
            expires_unix = token.exp_secs(),
            "token updated"
        );
        let updated = TokenInfo::of(&token, self.generation);
        self.fanout.announce_sign_out(&self.shared);
        self.shared.emit(|| Event::TokenUpdated { token: updated });
        let current = Deliverable {
            token: &token,
            generation: self.generation,
        };
        self.fanout.publish(&self.shared, current, reply);
        self.on_time(now);
    }

    /// Plans the next automatic fetch: once the wall clock reaches `at` and `wait` has elapsed.
    fn plan_fetch(&mut self, at: Option<SystemTime>, wait: Option<Duration>) {
        self.next_fetch = at;
        self.fetch_wait = wait.map(|wait| self.shared.clock.sleep(wait));
        let now = self.shared.clock.now();
        let planned = at.map(|at| at.max(saturating_add(now, wait.unwrap_or_default())));
        self.shared.counters.set_next_fetch_at(planned);
    }

    /// Fires what is due: WillExpire, Expired, and the automatic fetch.
    fn on_time(&mut self, now: SystemTime) {
        if let Some(c) = &mut self.current {
            if c.phase == Phase::Fresh && now >= c.will_expire_at {
                c.phase = Phase::WillExpire;
                let token = TokenInfo::of(&c.token, c.generation);
                self.shared.emit(|| Event::TokenWillExpire { token });
            }
            if c.phase == Phase::WillExpire && now >= c.expires_at {
                c.phase = Phase::Expired;
                tracing::warn!(expires_unix = c.token.exp_secs(), "token expired");
                let token = TokenInfo::of(&c.token, c.generation);
                self.shared.emit(|| Event::TokenExpired { token });
            }
        }
        let due = self.next_fetch.is_some_and(|at| now >= at);
        if due && self.fetch.is_none() && self.fetch_wait.is_none() && !self.halted {
            let reason = match &self.current {
                None => FetchReason::Initial,
                Some(c) if now >= c.expires_at => FetchReason::Expired,
                Some(_) => FetchReason::WillExpire,
            };
            self.start_fetch(reason, now);
        }
    }

    /// Publishes the generation of the last token refused with an invalid code (0: none).
    fn set_invalid_strike(&self, generation: u64) {
        self.shared
            .invalid_strike
            .store(generation, std::sync::atomic::Ordering::Release);
    }
}

/// A fetch planned at this wall time waits for no wall-clock instant, only for its elapsed-time
/// wait (if any): setting the clock back must not delay it.
const ANY_TIME: SystemTime = UNIX_EPOCH;

/// The shortest wait before an automatic fetch after a fetched token arrived (behaviour 7).
const MIN_FETCH_SPACING: Duration = Duration::from_secs(1);

/// The current token, unless a service refused it.
fn deliverable(current: &Option<Current>) -> Option<Deliverable<'_>> {
    current
        .as_ref()
        .filter(|c| !c.refused)
        .map(|c| Deliverable {
            token: &c.token,
            generation: c.generation,
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

//! The driver: the only place the token, the timers and the fetch change. Its task polls it; when
//! it is idle, `update_token` runs its turn on the caller's thread under the same lock
//! ([`run_inline`]), so its changes stay one sequence either way.

use super::error::{RefreshError, UpdateError, UpdateReport};
use super::fanout::{panic_message, Fanout, ReportReply};
use super::shared::{after, lock, shift, Command, Shared};
use super::AccessManagerBuilder;
use crate::backoff::{Backoff, SplitMix64};
use crate::event::Event;
use crate::fetcher::{FetchError, FetchReason, FetchRequest};
use crate::token::unix_secs;
use crate::{AccessToken, FetchLimiter, TokenFetcher, MAX_LIFETIME};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

mod fetching;

/// The shortest wait before an automatic fetch after a token arrived (behaviour 7).
const MIN_FETCH_SPACING: Duration = Duration::from_secs(1);
/// The shortest wait between two automatic attempts, whatever the backoff says.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The largest issuer clock offset the skew estimate applies.
const MAX_SKEW: Duration = Duration::from_secs(86_400);
/// An issuer clock offset above this is reported once as `ClockSkewSuspected`.
const SKEW_REPORT_THRESHOLD: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Fresh,
    WillExpire,
    Expired,
}

struct Current {
    token: AccessToken,
    phase: Phase,
    will_expire_at: SystemTime,
    expires_at: SystemTime,
}

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

type FetchReply = oneshot::Sender<Result<AccessToken, RefreshError>>;

struct InFlight {
    future: BoxFuture<'static, Result<String, FetchError>>,
    waiters: Vec<FetchReply>,
    /// The token generation when the fetch started: a token installed since is newer news.
    started_generation: u64,
}

/// Where an offered token came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    App,
    Fetcher,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    fetcher: Option<Arc<dyn TokenFetcher>>,
    refresh_ahead: Duration,
    fetch_timeout: Duration,
    backoff: Backoff,
    rng: SplitMix64,
    current: Option<Current>,
    generation: u64,
    fetch: Option<InFlight>,
    /// When the next automatic fetch starts (none while one is in flight or after a permanent
    /// failure).
    next_fetch_at: Option<SystemTime>,
    /// Failed attempts of the refresh under way.
    failures: u32,
    fanout: Fanout,
    /// The commands of the turn, swapped with the mailbox's queue.
    inbox: VecDeque<Command>,
    sleep: Option<(SystemTime, Sleep)>,
    limiter: Option<FetchLimiter>,
    refresh_jitter: Duration,
    estimate_clock_skew: bool,
    skew_reported: bool,
    stopped: bool,
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0x5EED);

/// The manager's task: polls the driver, which lives in [`Shared`] so that a handle can run a
/// command itself when the driver is idle ([`run_inline`]). Costs one pointer more than the driver.
pub(super) struct DriverTask(pub(super) Arc<Shared>);

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.0;
        // Registered before reading the mailbox: a command queued after this wakes the task.
        shared.driver_waker.register(cx.waker());
        let mut slot = lock(&shared.driver);
        let Some(driver) = slot.as_mut() else {
            return Poll::Ready(());
        };
        if driver.step(cx).is_pending() {
            return Poll::Pending;
        }
        // Stopped outside the lock: the driver's `Drop` closes the manager and drops user code.
        let driver = slot.take();
        drop(slot);
        drop(driver);
        Poll::Ready(())
    }
}

/// However the task ends (shutdown, the runtime dropping it, a bug's panic), the manager closes,
/// and the driver's `Arc` of the shared state goes with it.
impl Drop for DriverTask {
    fn drop(&mut self) {
        let driver = lock(&self.0.driver).take();
        drop(driver);
    }
}

/// Runs `command` on the caller's thread when the driver is idle (no poll under way, nothing
/// queued), so that the caller has its answer without waiting for the driver's task; the task is
/// woken only when the command left it something to do. Gives the command back otherwise.
///
/// A panic in the turn (a bug, or the app's `Clock` panicking) closes the manager, as it would on
/// the task: the driver is dropped, and the caller's reply with it (`Closed`).
pub(super) fn run_inline(shared: &Shared, command: Command) -> Result<(), Command> {
    let Ok(mut slot) = shared.driver.try_lock() else {
        return Err(command);
    };
    let Some(driver) = slot.as_mut() else {
        return Err(command);
    };
    {
        let mailbox = lock(&shared.mailbox);
        // Queued commands go first: they wait for the task, and so does this one.
        if mailbox.closed || mailbox.handles_gone || !mailbox.queue.is_empty() {
            return Err(command);
        }
    }
    // A turn of the driver's, as `step` takes it: timers first, then the command.
    let turn = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let now = shared.clock.now();
        driver.on_time(now);
        driver.on_command(command, now);
        driver.needs_poll()
    }));
    match turn {
        Ok(wake) => {
            drop(slot);
            if wake {
                shared.driver_waker.wake();
            }
        }
        Err(_) => {
            tracing::error!("the manager's driver panicked; the manager closes");
            let driver = slot.take();
            drop(slot);
            // Its `Drop` closes the manager; the task then finds the slot empty and ends.
            drop(driver);
            shared.driver_waker.wake();
        }
    }
    Ok(())
}

/// The driver stops when it is dropped, whatever the reason.
impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Driver {
    pub(super) fn new(
        config: AccessManagerBuilder,
        shared: Arc<Shared>,
        initial: Option<AccessToken>,
    ) -> Self {
        let now = shared.clock.now();
        let seed = config.seed.unwrap_or_else(|| {
            let nanos = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos
                ^ SEED_COUNTER
                    .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                    .rotate_left(17)
        });
        let mut driver = Driver {
            fetcher: config.fetcher,
            refresh_ahead: config.refresh_ahead,
            fetch_timeout: config.fetch_timeout,
            backoff: config.backoff,
            rng: SplitMix64::new(seed),
            current: None,
            generation: 0,
            fetch: None,
            next_fetch_at: None,
            failures: 0,
            fanout: Fanout::new(config.consumer_timeout, 0),
            inbox: VecDeque::new(),
            sleep: None,
            limiter: config.limiter,
            refresh_jitter: config.refresh_jitter,
            estimate_clock_skew: config.estimate_clock_skew,
            skew_reported: false,
            stopped: false,
            shared,
        };
        match initial {
            Some(token) => {
                driver.install(token, Source::App, now);
            }
            None if driver.fetcher.is_some() => driver.next_fetch_at = Some(now),
            None => {}
        }
        driver
    }

    /// Stops: drops the fetcher, the fetch in flight, the deliveries and the timers (their callers
    /// answer `Closed`), then marks the manager closed, so that `shutdown()` returns once all of
    /// it is gone.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Dropping these runs user code (a fetch future's or the fetcher's `Drop`): a panic there
        // must not keep the manager from closing, or `shutdown()` would wait forever.
        let owned = (self.fetch.take(), self.fetcher.take(), self.sleep.take());
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(owned)));
        self.fanout.abandon();
        self.current = None;
        self.shared.close();
    }

    /// One pass: timers, commands, then whatever finished; `true` when something happened that
    /// may have made more work ready.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // One clock reading a turn (commands run no user code, so the turn takes no time).
            // Timers first, so that commands see the state as of now.
            let now = self.shared.clock.now();
            self.on_time(now);
            let handles_gone = {
                let mut mailbox = lock(&self.shared.mailbox);
                // Swapped rather than taken, so that neither queue gives up its buffer.
                std::mem::swap(&mut mailbox.queue, &mut self.inbox);
                mailbox.handles_gone
            };
            while let Some(command) = self.inbox.pop_front() {
                if let Command::Shutdown = command {
                    return Poll::Ready(());
                }
                self.on_command(command, now);
            }
            if handles_gone {
                return Poll::Ready(());
            }
            self.on_time(now);

            if let Some(fetch) = &mut self.fetch {
                if let Poll::Ready(result) = fetch.future.as_mut().poll(cx) {
                    self.on_fetched(result);
                    continue;
                }
            }
            if let Poll::Ready(Some(done)) = self.fanout.poll_delivered(cx) {
                self.fanout.finish(&self.shared, done);
                continue;
            }
            let deadline = self.next_deadline();
            if self.must_rearm(deadline) {
                self.sleep = deadline.map(|d| (d, self.shared.clock.sleep_until(d)));
            }
            if let Some((_, sleep)) = &mut self.sleep {
                if sleep.as_mut().poll(cx).is_ready() {
                    self.sleep = None;
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    fn next_deadline(&self) -> Option<SystemTime> {
        let timer = self.current.as_ref().and_then(|c| match c.phase {
            Phase::Fresh => Some(c.will_expire_at),
            Phase::WillExpire => Some(c.expires_at),
            Phase::Expired => None,
        });
        let fetch = if self.fetch.is_none() {
            self.next_fetch_at
        } else {
            None
        };
        match (timer, fetch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the task must run for what a command run inline started: a fetch or deliveries to
    /// poll, or a timer due before the one armed.
    fn needs_poll(&self) -> bool {
        if self.fetch.is_some() || self.fanout.is_busy() {
            return true;
        }
        let deadline = self.next_deadline();
        // A sleep that is no longer needed is dropped at the task's next turn, whenever it comes.
        deadline.is_some() && self.must_rearm(deadline)
    }

    /// Whether the sleep armed does not serve `deadline`. One armed no later than the deadline is
    /// kept: waking early only runs the loop once more, and re-arming on every new token would cost
    /// a timer each update.
    fn must_rearm(&self, deadline: Option<SystemTime>) -> bool {
        let armed = self.sleep.as_ref().map(|(d, _)| *d);
        let early_enough = matches!((armed, deadline), (Some(a), Some(d)) if a <= d);
        armed != deadline && !early_enough
    }

    fn on_command(&mut self, command: Command, now: SystemTime) {
        match command {
            Command::Update { token, reply } => self.on_update(token, reply, now),
            Command::Rejected(error) => {
                self.shared.emit(|| Event::TokenRejected { error });
            }
            Command::Refresh {
                min_remaining,
                reply,
            } => self.on_refresh(min_remaining, reply, now),
            Command::Registered(id) => {
                if let Some(c) = &self.current {
                    let token = c.token.clone();
                    self.fanout
                        .deliver_one(&self.shared, id, &token, self.generation);
                }
            }
            Command::Unregistered(id) => self.fanout.forget(id),
            Command::Shutdown => {}
        }
    }

    /// Checks an offered token against the clock (on the issuer's time when skew is estimated) and
    /// the token held.
    fn check(&self, token: &AccessToken, now: SystemTime) -> Result<bool, UpdateError> {
        token
            .validate_at(shift(now, self.shared.applied_offset()))
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

    fn reject(&self, error: &UpdateError) {
        if let Some(error) = error.token_error() {
            tracing::warn!(code = error.code(), %error, "token rejected");
            self.shared.emit(|| Event::TokenRejected { error });
        }
    }

    fn on_update(&mut self, token: AccessToken, reply: ReportReply, now: SystemTime) {
        match self.check(&token, now) {
            Err(e) => {
                self.reject(&e);
                let _ = reply.send(Err(e));
            }
            Ok(false) => {
                let _ = reply.send(Ok(UpdateReport {
                    token,
                    changed: false,
                    delivered: 0,
                    failures: Vec::new(),
                }));
            }
            Ok(true) => {
                // A pushed token restarts the refresh cycle, after a permanent failure too.
                self.failures = 0;
                self.install_and_publish(token, Source::App, now, Some(reply));
            }
        }
    }

    /// Makes `token` current and schedules its timers and the next automatic fetch.
    fn install(&mut self, token: AccessToken, source: Source, now: SystemTime) {
        self.generation += 1;
        // On the manager's clock: the issuer's `exp` less the issuer's lead.
        let expires_at = shift(token.expires_at(), -self.shared.applied_offset());
        let will_expire_at = expires_at
            .checked_sub(self.refresh_ahead)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.shared.current.publish(&token);
        if self.fetcher.is_some() {
            let mut at = after(will_expire_at, self.rng.up_to(self.refresh_jitter));
            if source == Source::Fetcher {
                // Tokens shorter than the lead must not make the fetcher loop.
                let half_life = expires_at.duration_since(now).unwrap_or_default() / 2;
                at = at.max(after(now, half_life.max(MIN_FETCH_SPACING)));
            }
            self.next_fetch_at = Some(at);
        }
        self.current = Some(Current {
            token,
            phase: Phase::Fresh,
            will_expire_at,
            expires_at,
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
        let updated = token.clone();
        self.shared.emit(|| Event::TokenUpdated { token: updated });
        self.fanout
            .publish(&self.shared, &token, self.generation, reply);
        self.on_time(now);
    }

    /// Fires due timers: WillExpire, Expired, and the automatic fetch.
    fn on_time(&mut self, now: SystemTime) {
        if let Some(c) = &mut self.current {
            if c.phase == Phase::Fresh && now >= c.will_expire_at {
                c.phase = Phase::WillExpire;
                let token = c.token.clone();
                self.shared.emit(|| Event::TokenWillExpire { token });
            }
            if c.phase == Phase::WillExpire && now >= c.expires_at {
                c.phase = Phase::Expired;
                let token = c.token.clone();
                tracing::warn!(expires_unix = token.exp_secs(), "token expired");
                self.shared.emit(|| Event::TokenExpired { token });
            }
        }
        if self.fetch.is_none() && self.next_fetch_at.is_some_and(|at| now >= at) {
            let reason = match &self.current {
                None => FetchReason::Initial,
                Some(c) if now >= c.expires_at => FetchReason::Expired,
                Some(_) => FetchReason::WillExpire,
            };
            self.start_fetch(reason);
        }
    }
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

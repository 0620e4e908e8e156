//! The simulated consumers: a fault mode each (accepting, failing, hanging, panicking, slow,
//! refusing with a Twilio code, dropping the app's hold on itself, or all of these by turns), and a
//! log of every call that outlives the consumer.

use super::capture::SIM_PANIC;
use super::rng::{draw, SharedRng};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{AccessToken, ConsumerError, GrantKind, TokenConsumer};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What a consumer was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Token(String),
    SignedOut,
}

/// What the simulation sees of one consumer, kept after the consumer is dropped.
#[derive(Default)]
pub struct ConsumerLog {
    pub calls: Mutex<Vec<Received>>,
    pub in_call: AtomicUsize,
    /// Calls it failed itself: errors, refusals, panics.
    pub failed: AtomicU64,
    /// Calls the manager dropped before they ended (timeouts, or the manager stopping).
    pub cut: AtomicU64,
    pub dropped: AtomicBool,
    /// The codes it refused tokens with since the simulation last looked.
    pub refusals: Mutex<Vec<u32>>,
    pub activity: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Accept,
    Fail,
    Hang,
    Panic,
    /// Takes up to this long (on the manager's clock) to accept.
    Slow(Duration),
    /// Its service refuses every token with this code.
    Refuse(u32),
    /// Drops the app's last handle on it during its first call.
    DropSelf,
    /// A different behaviour every call, refusing with one of these codes now and then.
    Flaky(&'static [u32]),
}

/// The app's hold on a consumer: emptied when the app drops it.
pub type Home = Arc<Mutex<Option<Arc<SimConsumer>>>>;

pub struct SimConsumer {
    pub name: String,
    pub required: Option<GrantKind>,
    pub mode: Mode,
    pub log: Arc<ConsumerLog>,
    pub home: Weak<Mutex<Option<Arc<SimConsumer>>>>,
    pub clock: ManualClock,
    pub rng: SharedRng,
    pub consumer_timeout: Duration,
}

impl Drop for SimConsumer {
    fn drop(&mut self) {
        self.log.dropped.store(true, SeqCst);
        self.log.activity.fetch_add(1, SeqCst);
    }
}

/// Counts a call in progress; one dropped before it ended was cut by the manager.
struct InCall {
    log: Arc<ConsumerLog>,
    ended: bool,
}

impl InCall {
    fn enter(log: &Arc<ConsumerLog>, what: Received) -> Self {
        log.in_call.fetch_add(1, SeqCst);
        log.calls.lock().unwrap().push(what);
        log.activity.fetch_add(1, SeqCst);
        InCall {
            log: log.clone(),
            ended: false,
        }
    }
    fn end(mut self, failed: bool) {
        if failed {
            self.log.failed.fetch_add(1, SeqCst);
        }
        self.ended = true;
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        if !self.ended {
            if std::thread::panicking() {
                self.log.failed.fetch_add(1, SeqCst);
            } else {
                self.log.cut.fetch_add(1, SeqCst);
            }
        }
        self.log.in_call.fetch_sub(1, SeqCst);
        self.log.activity.fetch_add(1, SeqCst);
    }
}

impl SimConsumer {
    /// This call's behaviour.
    fn act(&self) -> Mode {
        match self.mode {
            Mode::Flaky(codes) => draw(&self.rng, |rng| {
                let slow = Mode::Slow(self.consumer_timeout * 2);
                let refuse = Mode::Refuse(if codes.is_empty() { 0 } else { rng.pick(codes) });
                rng.weighted(&[
                    (50, Mode::Accept),
                    (10, Mode::Fail),
                    (15, slow),
                    (if codes.is_empty() { 0 } else { 10 }, refuse),
                    (5, Mode::Panic),
                    (5, Mode::Hang),
                ])
            }),
            mode => mode,
        }
    }

    async fn linger(&self, longest: Duration) {
        let wait = draw(&self.rng, |rng| rng.duration(Duration::ZERO, longest));
        self.clock.sleep(wait).await;
    }
}

#[async_trait]
impl TokenConsumer for SimConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    fn required_grant(&self) -> Option<GrantKind> {
        self.required
    }

    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        let call = InCall::enter(&self.log, Received::Token(token.as_str().to_string()));
        match self.act() {
            Mode::Accept | Mode::Flaky(_) => {}
            Mode::Fail => {
                call.end(true);
                return Err(ConsumerError::new("[sim] the SDK could not reconnect"));
            }
            Mode::Hang => std::future::pending().await,
            Mode::Panic => panic!("{SIM_PANIC} consumer {} panics", self.name),
            Mode::Slow(longest) => self.linger(longest).await,
            Mode::Refuse(code) => {
                self.log.refusals.lock().unwrap().push(code);
                call.end(true);
                return Err(ConsumerError::rejected(
                    code,
                    "[sim] the service refused it",
                ));
            }
            Mode::DropSelf => {
                let app_hold = self
                    .home
                    .upgrade()
                    .and_then(|home| home.lock().unwrap().take());
                drop(app_hold);
            }
        }
        call.end(false);
        Ok(())
    }

    async fn signed_out(&self) {
        let call = InCall::enter(&self.log, Received::SignedOut);
        match self.act() {
            Mode::Hang => std::future::pending().await,
            Mode::Panic => panic!("{SIM_PANIC} consumer {} panics signing out", self.name),
            Mode::Slow(longest) => self.linger(longest).await,
            _ => {}
        }
        call.end(false);
    }
}

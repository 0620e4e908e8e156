//! The simulated fetcher: a backend profile (healthy, flaky, hostile) from which each call draws
//! its behaviour, and a log of every call the manager made, how many ran at once, and its drop.

use super::capture::SIM_PANIC;
use super::rng::{draw, Rng, SharedRng};
use super::tokens::{unix, Minter, Spec};
use crate::common::{ACCOUNT, OTHER_ACCOUNT};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{
    AccessToken, FetchError, FetchReason, FetchRequest, TokenFetcher, WeakAccessManager,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How a history's backend behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    /// Answers every fetch with a good, long token within `max_latency` (under the fetch timeout).
    Healthy { max_latency: Duration },
    /// Mostly good, with every fault now and then.
    Flaky,
    /// Mostly faults.
    Hostile,
}

/// The most an "older" token (issued 3000 s ago) may have left, to live under 24 h.
pub const MAX_LEFT_OLDER: u64 = 86_400 - 3000 - 1;

/// What one fetch call does.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Valid,
    NoVideo,
    Short,
    OtherIdentity,
    OtherAccount,
    Garbage,
    Expired,
    NotYetValid,
    Same,
    Older,
    Transient,
    RetryAfter,
    Permanent,
    Hang,
    Panic,
    PanicEarly,
}

/// One call the manager made.
#[derive(Debug, Clone)]
pub struct FetchCall {
    pub at: SystemTime,
    pub reason: FetchReason,
    pub attempt: u32,
    pub current: Option<AccessToken>,
    /// `stats().tokens_installed` when the call was made (`None` when no handle was left).
    pub installs_at_start: Option<u64>,
    pub behaviour: String,
    /// The token text it handed back, once it did.
    pub returned: Option<String>,
}

/// What the simulation sees of its fetcher.
#[derive(Default)]
pub struct FetchLog {
    pub calls: Mutex<Vec<FetchCall>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub dropped: AtomicBool,
    /// The identity and account the backend mints for (the app's user).
    pub identity: Mutex<String>,
    pub account: Mutex<&'static str>,
    pub manager: OnceLock<WeakAccessManager>,
    pub activity: AtomicU64,
    /// Calls since the simulation last looked (it looks after every quiet).
    pub calls_this_quiet: AtomicU64,
    /// Set when the manager called far more often than one quiet allows: a loop at a standing
    /// clock (which may never yield, so the fetcher breaks it with a permanent error).
    pub runaway: AtomicBool,
}

/// More calls than this in one quiet system are a loop.
pub const RUNAWAY_CALLS: u64 = 200;

impl FetchLog {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }
}

pub struct SimFetcher {
    pub log: Arc<FetchLog>,
    pub backend: Backend,
    pub refresh_ahead: Duration,
    pub fetch_timeout: Duration,
    pub clock: ManualClock,
    pub rng: SharedRng,
    pub minter: Arc<Minter>,
}

impl Drop for SimFetcher {
    fn drop(&mut self) {
        self.log.dropped.store(true, SeqCst);
        self.log.activity.fetch_add(1, SeqCst);
    }
}

/// Counts a call in flight until it ends, however it ends (answered, timed out, cancelled).
struct InFlight(Arc<FetchLog>);

impl InFlight {
    fn enter(log: &Arc<FetchLog>) -> Self {
        let now = log.in_flight.fetch_add(1, SeqCst) + 1;
        log.max_in_flight.fetch_max(now, SeqCst);
        log.activity.fetch_add(1, SeqCst);
        InFlight(log.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
        self.0.activity.fetch_add(1, SeqCst);
    }
}

impl SimFetcher {
    fn choose(&self, rng: &mut Rng) -> (Option<Duration>, Answer) {
        use Answer::*;
        match self.backend {
            Backend::Healthy { max_latency } => {
                let delay = rng
                    .chance(50)
                    .then(|| rng.duration(Duration::ZERO, max_latency));
                let answer = if rng.chance(10) { NoVideo } else { Valid };
                (delay, answer)
            }
            Backend::Flaky | Backend::Hostile => {
                let delay = rng
                    .chance(30)
                    .then(|| rng.duration(Duration::ZERO, self.fetch_timeout * 2));
                let table: &[(u64, Answer)] = if self.backend == Backend::Flaky {
                    &[
                        (40, Valid),
                        (4, NoVideo),
                        (8, Short),
                        (3, OtherIdentity),
                        (2, OtherAccount),
                        (4, Garbage),
                        (3, Expired),
                        (2, NotYetValid),
                        (4, Same),
                        (4, Older),
                        (10, Transient),
                        (3, RetryAfter),
                        (3, Permanent),
                        (4, Hang),
                        (3, Panic),
                        (2, PanicEarly),
                    ]
                } else {
                    &[
                        (10, Valid),
                        (10, Short),
                        (5, OtherIdentity),
                        (8, Garbage),
                        (5, Expired),
                        (5, Same),
                        (5, Older),
                        (25, Transient),
                        (5, RetryAfter),
                        (5, Permanent),
                        (10, Hang),
                        (5, Panic),
                        (2, PanicEarly),
                    ]
                };
                (delay, rng.weighted(table))
            }
        }
    }

    fn answer(&self, answer: Answer, request: &FetchRequest) -> Result<String, FetchError> {
        let now = self.clock.now();
        let identity = self.log.identity.lock().unwrap().clone();
        let account = *self.log.account.lock().unwrap();
        let ahead = self.refresh_ahead.as_secs();
        let mut rng = self.rng.lock().unwrap();
        let mint = |mut spec: Spec| -> Result<String, FetchError> {
            if spec.account != OTHER_ACCOUNT {
                spec.account = account;
            }
            Ok(self.minter.mint(&spec))
        };
        match answer {
            Answer::Valid | Answer::NoVideo => {
                let left = rng.range(2 * ahead + 10, 2 * ahead + 7200);
                let back = rng.range(0, 5);
                let mut spec = Spec::living(&identity, now, back, left);
                spec.video = matches!(answer, Answer::Valid);
                mint(spec)
            }
            Answer::Short => mint(Spec::living(&identity, now, 0, rng.range(1, ahead))),
            Answer::OtherIdentity => mint(Spec::living("mallory", now, 0, 3600)),
            Answer::OtherAccount => {
                let mut spec = Spec::living(&identity, now, 0, 3600);
                spec.account = if account == ACCOUNT {
                    OTHER_ACCOUNT
                } else {
                    ACCOUNT
                };
                Ok(self.minter.mint(&spec))
            }
            Answer::Garbage => Ok(self.minter.garbage(&mut rng, now)),
            Answer::Expired => {
                let mut spec = Spec::living(&identity, now, 7200, 1);
                spec.ttl = 3600;
                mint(spec)
            }
            Answer::NotYetValid => {
                let mut spec = Spec::living(&identity, now, 0, 3600);
                spec.nbf = Some(unix(now) + 600);
                mint(spec)
            }
            Answer::Same => match request.current() {
                Some(token) => Ok(token.as_str().to_string()),
                None => mint(Spec::living(&identity, now, 0, 3600)),
            },
            Answer::Older => {
                let left = request
                    .current()
                    .map(|t| t.remaining_at(now).as_secs())
                    .unwrap_or(600);
                // Within the 24 h a token may live (the wall clock may have been set back).
                mint(Spec::living(
                    &identity,
                    now,
                    3000,
                    rng.range(1, left.clamp(2, MAX_LEFT_OLDER)),
                ))
            }
            Answer::Transient => Err(FetchError::transient("[sim] backend unavailable")),
            Answer::RetryAfter => Err(FetchError::transient("[sim] backend busy")
                .with_retry_after(rng.duration(Duration::from_secs(1), Duration::from_secs(120)))),
            Answer::Permanent => Err(FetchError::permanent("[sim] user logged out")),
            Answer::Hang | Answer::Panic | Answer::PanicEarly => {
                unreachable!("not an answer")
            }
        }
    }
}

impl TokenFetcher for SimFetcher {
    // Written out (as `async_trait` would) so that it can panic before returning its future.
    fn fetch_token<'life0, 'async_trait>(
        &'life0 self,
        request: FetchRequest,
    ) -> Pin<Box<dyn Future<Output = Result<String, FetchError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let guard = InFlight::enter(&self.log);
        if self.log.calls_this_quiet.fetch_add(1, SeqCst) >= RUNAWAY_CALLS {
            self.log.runaway.store(true, SeqCst);
            return Box::pin(async move {
                let _guard = guard;
                Err(FetchError::permanent(
                    "[sim] runaway fetching stopped by the simulation",
                ))
            });
        }
        let (delay, answer) = draw(&self.rng, |rng| self.choose(rng));
        let installs_at_start = self
            .log
            .manager
            .get()
            .and_then(WeakAccessManager::upgrade)
            .map(|m| m.stats().tokens_installed);
        let index = {
            let mut calls = self.log.calls.lock().unwrap();
            calls.push(FetchCall {
                at: self.clock.now(),
                reason: request.reason(),
                attempt: request.attempt(),
                current: request.current().cloned(),
                installs_at_start,
                behaviour: match delay {
                    Some(d) => format!("{answer:?} after {} ms", d.as_millis()),
                    None => format!("{answer:?}"),
                },
                returned: None,
            });
            calls.len() - 1
        };
        if let Answer::PanicEarly = answer {
            drop(guard);
            panic!("{SIM_PANIC} the fetcher panics before returning its future");
        }
        Box::pin(async move {
            let _guard = guard;
            if let Some(delay) = delay {
                self.clock.sleep(delay).await;
            }
            let result = match answer {
                Answer::Hang => std::future::pending().await,
                Answer::Panic => panic!("{SIM_PANIC} the fetcher panics"),
                answer => self.answer(answer, &request),
            };
            if let Ok(jwt) = &result {
                self.log.calls.lock().unwrap()[index].returned = Some(jwt.clone());
            }
            self.log.activity.fetch_add(1, SeqCst);
            result
        })
    }
}

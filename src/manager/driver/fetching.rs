//! The driver's fetching: starting a fetch (single flight, limiter, timeout), taking its result
//! (validation, the issuer's clock, staleness) and retrying failures with backoff.

use super::super::error::{RefreshError, UpdateError};
use super::super::plugin::{self, Plugin, Role};
use super::super::plugin::{drop_caught, Ended};
use super::super::shared::FetchReply;
use super::super::stats::bump;
use super::schedule::{Fetching, Next};
use super::{Driver, Source};
use crate::event::Event;
use crate::fetcher::{FetchError, FetchReason, FetchRequest};
use crate::limiter::Outcome;
use crate::token::unix_secs;
use crate::{AccessToken, MAX_LIFETIME};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// The shortest wait between two automatic attempts, whatever the backoff says.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The largest issuer clock offset the skew estimate applies.
const MAX_SKEW: Duration = Duration::from_secs(86_400);
/// An issuer clock offset above this is reported once as `ClockSkewSuspected`.
const SKEW_REPORT_THRESHOLD: Duration = Duration::from_secs(300);

/// The fetch in flight and who waits for it.
pub(super) struct InFlight {
    future: BoxFuture<'static, Result<String, FetchError>>,
    waiters: Vec<Waiter>,
    /// The token generation when the fetch started: a token installed since is newer news.
    started_generation: u64,
    started_at: SystemTime,
    /// Why it fetches; a retry keeps the reason.
    reason: FetchReason,
    /// 1 for the first try of a refresh.
    attempt: u32,
    /// A service refused the backend's tokens while it ran: no automatic fetch after it.
    pub(super) halt_after: bool,
}

/// A `refresh()` or `fresh_token()` call joined to the fetch.
struct Waiter {
    reply: FetchReply,
    /// For `fresh_token`: the time the token must have left.
    min_remaining: Option<Duration>,
}

impl InFlight {
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, FetchError>> {
        self.future.as_mut().poll(cx)
    }

    /// Answers the waiters that the fetch will not bring a token.
    pub(super) fn fail(self, error: RefreshError) {
        for waiter in self.waiters {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }

    /// Drops the fetch (a panic in its `Drop` is caught) and answers the waiters with `error`.
    pub(super) fn cancel(self, error: RefreshError) {
        let InFlight {
            future, waiters, ..
        } = self;
        let _ = drop_caught(future);
        for waiter in waiters {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }
}

impl Driver {
    /// `refresh()` (`min_remaining` is `None`) or `fresh_token(min_remaining)`.
    pub(super) fn on_refresh(
        &mut self,
        min_remaining: Option<Duration>,
        from_fetcher: bool,
        reply: FetchReply,
        now: SystemTime,
    ) {
        if let (Some(min), Some(c)) = (min_remaining, &self.current) {
            // `expires_at` is on the device's clock, skew applied.
            let left = c.expires_at.duration_since(now).unwrap_or_default();
            if !c.refused && now < c.expires_at && left >= min {
                let _ = reply.send(Ok(c.token.clone()));
                return;
            }
        }
        if self.config.fetcher.is_none() {
            let _ = reply.send(Err(RefreshError::NoFetcher));
            return;
        }
        if from_fetcher {
            // The fetch it would join is its caller's own.
            let _ = reply.send(Err(RefreshError::Reentrant));
            return;
        }
        // The app asks: automatic fetching resumes, whatever stopped it.
        self.invalid_strike = 0;
        match self.fetching.in_flight() {
            Some(fetch) => fetch.halt_after = false,
            // Before the first token, the app's call is the first fetch (behaviour 5), even when it
            // is taken before the driver's first turn started it.
            None if self.generation == 0 => self.start_fetch(FetchReason::Initial, 1, now),
            None => self.start_fetch(FetchReason::Manual, 1, now),
        }
        if let Some(fetch) = self.fetching.in_flight() {
            fetch.waiters.push(Waiter {
                reply,
                min_remaining,
            });
        }
    }

    /// Starts attempt `attempt` of a fetch for `reason`, in place of any planned one.
    pub(super) fn start_fetch(&mut self, reason: FetchReason, attempt: u32, now: SystemTime) {
        let Some(fetcher) = self.config.fetcher.clone() else {
            return;
        };
        // Slots go earliest deadline first: by the held token's refresh point, at once without one.
        let lead = self.config.refresh_ahead;
        let deadline = self
            .current
            .as_ref()
            .map_or(std::time::UNIX_EPOCH, |c| c.refresh_at(lead));
        bump(&self.shared.counters.fetches);
        let request = FetchRequest::new(
            reason,
            attempt,
            self.current.as_ref().map(|c| c.token.clone()),
        );
        let timeout = self.config.fetch_timeout;
        let slot = self.config.limiter.as_ref().map(|m| m.acquire(deadline));
        let clock = self.shared.clock.clone();
        let plugin = Plugin {
            manager: self.shared.key(),
            role: Role::Fetcher,
        };
        // A root span: the fetch belongs to no caller's span.
        let span = tracing::info_span!(parent: None, "fetch", %reason, attempt);
        let future = async move {
            // The timeout runs from when the shared limiter lets the fetch go.
            let slot = match slot {
                Some(slot) => Some(slot.await),
                None => None,
            };
            // The call itself is inside the bounded future: a fetcher may panic before returning one.
            let call = async move { fetcher.fetch_token(request).await };
            let result = match plugin::bounded(call, &*clock, timeout).await {
                Ended::Answered(result) => result,
                Ended::Panicked(panic) => {
                    Err(FetchError::transient(format!("fetcher panicked: {panic}")))
                }
                Ended::TimedOut => Err(FetchError::transient(format!(
                    "fetch timed out after {} s",
                    timeout.as_secs_f64()
                ))),
            };
            if let Some(slot) = slot {
                slot.finish(match &result {
                    Err(e) => e
                        .retry_after()
                        .map_or(Outcome::Answered, Outcome::PushedBack),
                    Ok(_) => Outcome::Answered,
                });
            }
            result
        };
        let future = plugin::scope(plugin, future);
        let fetch = InFlight {
            future: tracing::Instrument::instrument(future, span).boxed(),
            waiters: Vec::new(),
            started_generation: self.generation,
            started_at: now,
            reason,
            attempt,
            halt_after: false,
        };
        self.set_unplanned(Fetching::InFlight(Box::new(fetch)));
    }

    pub(super) fn on_fetched(&mut self, result: Result<String, FetchError>) {
        let Fetching::InFlight(fetch) = std::mem::replace(&mut self.fetching, Fetching::Idle)
        else {
            return;
        };
        let now = self.shared.clock.now();
        let took = now.duration_since(fetch.started_at).unwrap_or_default();
        self.shared.counters.set_last_fetch_duration(took);
        let outcome = match result {
            Err(e) => Err(RefreshError::Fetch(Arc::new(e))),
            Ok(jwt) => self.offer_fetched(jwt, now, fetch.started_generation),
        };
        let refused_kept = matches!(
            (&outcome, &self.current),
            (Ok((_, false)), Some(c)) if c.refused
        );
        let outcome = if refused_kept {
            // A service refused the token held, and the backend handed back no other.
            Err(RefreshError::Fetch(Arc::new(FetchError::transient(
                "the backend handed back no token but the one a service refused",
            ))))
        } else {
            outcome
        };
        let (token, changed) = match outcome {
            Ok(taken) => taken,
            Err(error) => {
                self.on_fetch_failed(&error, &fetch, now);
                (*fetch).fail(error);
                return;
            }
        };
        // A token installed while the fetch ran is newer news: its refresh plan stands without
        // a spacing (a wait of half its life would outlast its refresh window if the wall clock
        // jumps forward meanwhile).
        let fetched = changed || fetch.started_generation == self.generation;
        if changed {
            self.install_and_publish(token.clone(), Source::Fetcher, now, None);
        }
        if fetch.halt_after {
            self.set_unplanned(Fetching::Halted);
        } else {
            // A fetched token, new or the one held handed back: the next fetch waits at least half
            // its remaining life (behaviour 7).
            let spacing = self
                .current
                .as_ref()
                .filter(|_| fetched)
                .map(|c| c.expires_at.duration_since(now).unwrap_or_default() / 2);
            self.plan(Next::Renew { spacing }, now);
        }
        let now = self.token_time(now);
        for waiter in fetch.waiters {
            let answer = match waiter.min_remaining {
                Some(wanted) if token.remaining_at(now) < wanted => Err(RefreshError::TooShort {
                    token: token.clone(),
                    wanted,
                }),
                _ => Ok(token.clone()),
            };
            let _ = waiter.reply.send(answer);
        }
    }

    /// Estimates the issuer's clock offset from a fetched token's `iat` (else `nbf`) and reports a
    /// large one once; answers the offset to judge and schedule the token with (the one applied
    /// now, unless skew estimation is on and the estimate applies).
    fn observe_issuer_clock(&mut self, token: &AccessToken, now: SystemTime) -> i64 {
        let Some(start) = token.start_secs() else {
            return self.applied_offset;
        };
        let offset = (start as i64).saturating_sub(unix_secs(now) as i64);
        self.shared.set_estimated_offset(offset);
        let nearly_expired = token.remaining_at(now) < self.config.refresh_ahead;
        // A token issued in the past with plenty left is a backend's cached token, not a device
        // ahead of the issuer: only a token that also looks (nearly) expired here moves the clock
        // back, or a cached token would be scheduled past its real expiry.
        let applicable = offset >= 0 || nearly_expired;
        // The issuer minted the token valid: its clock is somewhere in [iat, exp).
        let expires_in = (token.exp_secs() as i64).saturating_sub(unix_secs(now) as i64);
        let possible = offset..expires_in;
        let to_apply = if !self.config.estimate_clock_skew {
            self.applied_offset
        } else if applicable && offset.unsigned_abs() <= MAX_SKEW.as_secs() {
            // Within a couple of seconds the clocks agree: keep exact local scheduling.
            if offset.unsigned_abs() <= 2 {
                0
            } else {
                offset
            }
        } else if possible.contains(&self.applied_offset) {
            self.applied_offset
        } else {
            // The offset applied so far cannot be (the device's clock was set since): without a
            // usable estimate, the manager's own clock, which the token allows, is the best guess.
            0
        };
        // Issued in the future: the device is behind. Issued long ago and (nearly) expired on the
        // device: it is ahead (or the backend hands out stale tokens; worth saying either way).
        let threshold = SKEW_REPORT_THRESHOLD.as_secs() as i64;
        let suspicious = offset > threshold || (offset < -threshold && nearly_expired);
        if suspicious && !self.skew_reported {
            self.skew_reported = true;
            tracing::warn!(
                offset_secs = offset,
                applied = self.config.estimate_clock_skew,
                "the device clock looks wrong: fetched tokens were issued {offset} s from it"
            );
            self.shared.emit(|| Event::ClockSkewSuspected {
                offset_secs: offset,
            });
        }
        to_apply
    }

    /// A fetched token that expires before the one held is not taken when a newer token was
    /// installed while the fetch ran (the app pushed one), or when skew estimation is on (a stale
    /// token from the backend must not pass for a fresh one).
    fn is_stale(&self, token: &AccessToken, started_generation: u64) -> bool {
        (self.config.estimate_clock_skew || self.generation != started_generation)
            && self
                .current
                .as_ref()
                .is_some_and(|c| token.exp_secs() < c.token.exp_secs())
    }

    /// Parses and checks a fetched token: `Ok((token, changed))`, the held token when the fetched
    /// one is stale, or the refusal.
    fn offer_fetched(
        &mut self,
        jwt: String,
        now: SystemTime,
        started_generation: u64,
    ) -> Result<(AccessToken, bool), RefreshError> {
        let token = match AccessToken::try_from(jwt) {
            Ok(token) => token,
            Err(e) => {
                let e = UpdateError::Invalid(e);
                self.reject(&e);
                return Err(RefreshError::Rejected(e));
            }
        };
        let offset = self.observe_issuer_clock(&token, now);
        if self.is_stale(&token, started_generation) {
            tracing::warn!("fetched token expires before the token held; keeping the held one");
            if let Some(c) = &self.current {
                return Ok((c.token.clone(), false));
            }
        }
        match self.check_with_offset(&token, now, offset) {
            Ok(changed) => {
                // The issuer's clock moves only with a token taken; the held token's deadlines
                // move with it.
                if offset != self.applied_offset {
                    self.applied_offset = offset;
                    self.place_current();
                }
                Ok((token, changed))
            }
            Err(e) => {
                self.reject(&e);
                Err(RefreshError::Rejected(e))
            }
        }
    }

    /// The backoff before attempt `attempt + 1`, at least `at_least`, at most a token's longest
    /// life: after failed fetches, and after refused tokens.
    pub(super) fn backoff_wait(&mut self, attempt: u32, at_least: Duration) -> Duration {
        self.config
            .backoff
            .delay(attempt, &mut self.rng)
            .max(at_least)
            .min(MAX_LIFETIME)
    }

    fn on_fetch_failed(&mut self, error: &RefreshError, fetch: &InFlight, now: SystemTime) {
        bump(&self.shared.counters.fetch_failures);
        let (permanent, retry_after) = match error {
            RefreshError::Fetch(e) => (e.is_permanent(), e.retry_after()),
            _ => (false, None),
        };
        let attempt = fetch.attempt;
        let retry_at = if permanent || fetch.halt_after {
            self.set_unplanned(Fetching::Halted);
            None
        } else {
            // A zero backoff must not spin the driver on a fetcher that fails at once.
            let at_least = retry_after.unwrap_or(Duration::ZERO).max(MIN_RETRY_WAIT);
            let backoff = self.backoff_wait(attempt, at_least);
            let next = Next::Retry {
                reason: fetch.reason,
                attempt: attempt.saturating_add(1),
                backoff,
            };
            self.plan(next, now)
        };
        tracing::warn!(
            attempt,
            permanent,
            retry_in_s = retry_at.map(|at| unix_secs(at).saturating_sub(unix_secs(now))),
            error = %error,
            "token refresh failed"
        );
        let error = error.to_string();
        self.shared.emit(|| Event::RefreshFailed {
            attempt,
            error,
            retry_at,
        });
    }
}

//! The driver's session control: services refusing the token, sign-out and resume.

use super::super::error::RefreshError;
use super::super::fanout::Refusal;
use super::super::service::{decide, is_invalid, ServiceAction, Situation};
use super::super::stats::bump;
use super::persist::Cleared;
use super::schedule::{Fetching, Next, MIN_FETCH_SPACING};
use super::Driver;
use crate::event::Event;
use crate::fetcher::FetchReason;
use std::time::SystemTime;
use tokio::sync::oneshot;

impl Driver {
    /// What the driver knows for deciding on a refusal.
    fn situation(&self) -> Situation {
        Situation {
            has_fetcher: self.config.fetcher.is_some(),
            current: self.current.as_ref().map(|_| self.generation),
            invalid_strike: self.invalid_strike,
            halted: self.fetching.is_halted(),
        }
    }

    /// A consumer's service refused the token it was given.
    pub(super) fn on_consumer_refused(&mut self, refusal: Refusal, now: SystemTime) {
        self.on_service_refused(refusal.code, refusal.generation, now);
    }

    /// A service refused the token of `generation` with `code`: decides what to do by the service
    /// rules, does it, and answers it.
    pub(super) fn on_service_refused(
        &mut self,
        code: u32,
        generation: u64,
        now: SystemTime,
    ) -> ServiceAction {
        let action = decide(code, generation, self.situation());
        bump(&self.shared.counters.service_rejections);
        tracing::warn!(code, generation, %action, "a service refused the token");
        self.shared.emit(|| Event::ServiceRejected { code, action });
        let held = self.generation;
        let Some(current) = self.current.as_mut().filter(|_| held == generation) else {
            return action;
        };
        if action == ServiceAction::Ignore {
            return action;
        }
        current.refused = true;
        let refused_before = current.refused_before;
        match action {
            ServiceAction::Refresh => {
                if is_invalid(code) {
                    self.invalid_strike = generation;
                }
                let reason = FetchReason::Rejected { code };
                if self.fetching.in_flight().is_some() {
                    // Joined: the fetch in flight brings the new token.
                } else if refused_before == 0 {
                    self.start_fetch(reason, 1, now);
                } else {
                    // The token that replaced a refused one is refused too: fetching at once
                    // would loop as fast as the backend answers (never yielding, for one that
                    // answers at once). The next fetch backs off as after failed ones, and
                    // waits at least as long as after a short token (behaviour 7).
                    let backoff = self.backoff_wait(refused_before, MIN_FETCH_SPACING);
                    let next = Next::Retry {
                        reason,
                        attempt: 1,
                        backoff,
                    };
                    self.plan(next, now);
                }
            }
            ServiceAction::Permanent => match self.fetching.in_flight() {
                Some(fetch) => fetch.halt_after = true,
                None => {
                    self.set_unplanned(Fetching::Halted);
                }
            },
            ServiceAction::Ignore => {}
        }
        action
    }

    /// Forgets the token and the session: no timer, no fetch, no automatic fetch until
    /// `refresh()` or `update_token()`; each consumer's `signed_out` runs.
    pub(super) fn on_sign_out(&mut self, reply: oneshot::Sender<()>, cleared: Cleared) {
        if let Fetching::InFlight(fetch) = std::mem::replace(&mut self.fetching, Fetching::Halted) {
            (*fetch).cancel(RefreshError::SignedOut);
        }
        self.set_unplanned(Fetching::Halted);
        self.current = None;
        self.shared.current.store(None);
        self.timer = None;
        self.invalid_strike = 0;
        match &mut self.persistence {
            Some(persistence) => {
                // A stored token still being read belongs to the session signed out of.
                persistence.loading = false;
                persistence.clear(Some(cleared));
            }
            None => {
                let _ = cleared.send(Ok(()));
            }
        }
        self.fanout.sign_out(&self.shared, reply);
    }

    /// The app says time may have jumped (a wake from sleep, a network return): re-read the clock
    /// now (the timer is re-armed), and end a backoff, so that a fetch waiting it out is tried at
    /// once. A spacing stays: it protects the backend, and ends anyway once the token expired.
    pub(super) fn on_resume(&mut self, now: SystemTime) {
        self.timer = None;
        self.on_time(now);
        self.cut_backoff(now);
    }
}

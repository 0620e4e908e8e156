//! The driver's session control: services refusing the token, sign-out and resume.

use super::super::error::RefreshError;
use super::super::fanout::Refusal;
use super::super::service::{decide, is_invalid, ServiceAction, Situation};
use super::super::stats::bump;
use super::persist::Cleared;
use super::{Driver, ANY_TIME, MIN_FETCH_SPACING};
use crate::event::Event;
use crate::fetcher::FetchReason;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use tokio::sync::oneshot;

impl Driver {
    /// What the driver knows for deciding on a refusal.
    fn situation(&self) -> Situation {
        Situation {
            has_fetcher: self.config.fetcher.is_some(),
            current: self.current.as_ref().map(|c| c.generation),
            invalid_strike: self.shared.invalid_strike.load(Ordering::Acquire),
            halted: self.halted,
        }
    }

    /// Stops or resumes automatic fetching, and tells the handles.
    pub(super) fn set_halted(&mut self, halted: bool) {
        self.halted = halted;
        self.shared.halted.store(halted, Ordering::Release);
        if halted {
            self.plan_fetch(None, None);
        }
    }

    /// A consumer's service refused the token it was given.
    pub(super) fn on_consumer_refused(&mut self, refusal: Refusal, now: SystemTime) {
        let action = decide(refusal.code, refusal.generation, self.situation());
        self.on_service_refused(refusal.code, refusal.generation, action, now);
    }

    /// A service refused the token of `generation` with `code`; `action` was decided by the same
    /// rule (by the handle, for the app's reports).
    pub(super) fn on_service_refused(
        &mut self,
        code: u32,
        generation: u64,
        action: ServiceAction,
        now: SystemTime,
    ) {
        bump(&self.shared.counters.service_rejections);
        tracing::warn!(code, generation, %action, "a service refused the token");
        self.shared.emit(|| Event::ServiceRejected { code, action });
        let Some(current) = self.current.as_mut().filter(|c| c.generation == generation) else {
            return;
        };
        if action == ServiceAction::Ignore {
            return;
        }
        current.refused = true;
        let refused_before = current.refused_before;
        match action {
            ServiceAction::Refresh => {
                if is_invalid(code) {
                    self.set_invalid_strike(generation);
                }
                if self.fetch.is_none() {
                    self.failures = 0;
                    if refused_before == 0 {
                        self.start_fetch(FetchReason::Rejected { code }, now);
                    } else {
                        // The token that replaced a refused one is refused too: fetching at once
                        // would loop as fast as the backend answers (never yielding, for one that
                        // answers at once). The next fetch backs off as after failed ones, and
                        // waits at least as long as after a short token (behaviour 7).
                        let wait = self.backoff_wait(refused_before, MIN_FETCH_SPACING);
                        self.plan_fetch(Some(ANY_TIME), Some(wait));
                    }
                }
            }
            ServiceAction::Permanent => self.set_halted(true),
            ServiceAction::Ignore => {}
        }
    }

    /// Forgets the token and the session: no timer, no fetch, no automatic fetch until
    /// `refresh()` or `update_token()`; each consumer's `signed_out` runs.
    pub(super) fn on_sign_out(&mut self, reply: oneshot::Sender<()>, cleared: Cleared) {
        if let Some(fetch) = self.fetch.take() {
            (*fetch).cancel(RefreshError::SignedOut);
        }
        self.current = None;
        self.shared.current.store(None);
        self.timer = None;
        self.failures = 0;
        self.set_halted(true);
        self.set_invalid_strike(0);
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
    /// now, and try a fetch waiting out its backoff at once.
    pub(super) fn on_resume(&mut self, now: SystemTime) {
        self.fetch_wait = None;
        self.timer = None;
        self.on_time(now);
    }
}

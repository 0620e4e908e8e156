//! The driver's fetch scheduling: one state ([`Fetching`]) and one function that plans the next
//! automatic fetch ([`Driver::plan`]).

use super::fetching::InFlight;
use super::{Driver, Phase};
use crate::clock::{saturating_add, Sleep};
use crate::fetcher::FetchReason;
use std::time::{Duration, SystemTime};

/// The shortest wait before an automatic fetch after a fetched token arrived (behaviour 7).
pub(super) const MIN_FETCH_SPACING: Duration = Duration::from_secs(1);

/// Where automatic fetching stands: exactly one of these at a time.
pub(super) enum Fetching {
    /// Nothing planned: the manager has no fetcher, or the stored token is still being read.
    Idle,
    /// Stopped until `refresh()` or `update_token()`: a permanent failure, a service refusing the
    /// backend's tokens, a sign-out.
    Halted,
    /// The next automatic fetch, waiting for its time.
    Planned(Plan),
    /// A fetch in flight (boxed: most of the time there is none, and an idle manager is mostly its
    /// driver).
    InFlight(Box<InFlight>),
}

/// A planned fetch: it starts once the wall clock reaches `at` and `wait` is over.
pub(super) struct Plan {
    /// The reason the fetch will give its fetcher. `Initial`, `WillExpire` and `Expired` name the
    /// token's own refresh: which of them is read from the token held when the fetch starts.
    pub(super) reason: FetchReason,
    /// 1 for the first try of a refresh.
    pub(super) attempt: u32,
    /// The wall-clock instant it waits for; `None`: none, only `wait`.
    pub(super) at: Option<SystemTime>,
    pub(super) wait: Option<Wait>,
}

/// An elapsed-time wait before a planned fetch.
pub(super) struct Wait {
    pub(super) kind: WaitKind,
    pub(super) sleep: Sleep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitKind {
    /// After a failed attempt or a refused token: `resume()` cuts it short.
    Backoff,
    /// After a fetched token, so that short tokens do not make the fetcher loop (behaviour 7). It
    /// guards a valid token only: once the token expires it is over (behaviour 18), and `resume()`
    /// never cuts it.
    Spacing,
}

/// Why a fetch is planned: the input of [`Driver::plan`].
pub(super) enum Next {
    /// The current token's refresh at its refresh point, or the first token's fetch at once.
    /// `spacing`: after a fetched token, the wait of behaviour 7 (half the token's remaining life).
    Renew { spacing: Option<Duration> },
    /// Attempt `attempt` of a fetch for `reason` that failed `attempt - 1` times, after `backoff`.
    Retry {
        reason: FetchReason,
        attempt: u32,
        backoff: Duration,
    },
}

impl Fetching {
    /// Whether automatic fetching is stopped until the app acts, now or once the fetch in flight
    /// ends.
    pub(super) fn is_halted(&self) -> bool {
        match self {
            Fetching::Halted => true,
            Fetching::InFlight(fetch) => fetch.halt_after,
            Fetching::Idle | Fetching::Planned(_) => false,
        }
    }

    pub(super) fn in_flight(&mut self) -> Option<&mut InFlight> {
        match self {
            Fetching::InFlight(fetch) => Some(fetch),
            _ => None,
        }
    }
}

impl Driver {
    /// Plans the next automatic fetch (none without a fetcher), publishes when it is due and
    /// answers that instant.
    pub(super) fn plan(&mut self, next: Next, now: SystemTime) -> Option<SystemTime> {
        if self.config.fetcher.is_none() {
            self.set_unplanned(Fetching::Idle);
            return None;
        }
        let (reason, attempt, at, wait) = match next {
            Next::Renew { spacing } => match &self.current {
                None => (FetchReason::Initial, 1, None, None),
                Some(c) => {
                    let at = c.refresh_at(self.config.refresh_ahead);
                    // A spacing that ends before the refresh point changes nothing.
                    let spacing = spacing
                        .map(|s| s.max(MIN_FETCH_SPACING))
                        .filter(|s| saturating_add(now, *s) > at)
                        .map(|s| (WaitKind::Spacing, s));
                    (FetchReason::WillExpire, 1, Some(at), spacing)
                }
            },
            Next::Retry {
                reason,
                attempt,
                backoff,
            } => {
                // A token still good (fresh, and no service refused it) needs no retry before its
                // refresh point.
                let at = match &self.current {
                    Some(c) if c.phase == Phase::Fresh && !c.refused => {
                        Some(c.refresh_at(self.config.refresh_ahead))
                    }
                    _ => None,
                };
                (reason, attempt, at, Some((WaitKind::Backoff, backoff)))
            }
        };
        // Due at the wall-clock instant, or when the wait ends if that is later (as the wall
        // clock reads now).
        let due = at
            .unwrap_or(now)
            .max(wait.map_or(now, |(_, wait)| saturating_add(now, wait)));
        let wait = wait.map(|(kind, wait)| Wait {
            kind,
            sleep: self.shared.clock.sleep(wait),
        });
        let plan = Plan {
            reason,
            attempt,
            at,
            wait,
        };
        self.fetching = Fetching::Planned(plan);
        self.file_with_limiter(at);
        self.publish_next_fetch(Some(due))
    }

    /// Moves fetching to a state without a planned fetch.
    pub(super) fn set_unplanned(&mut self, state: Fetching) {
        debug_assert!(!matches!(state, Fetching::Planned(_)));
        self.fetching = state;
        self.file_with_limiter(None);
        self.publish_next_fetch(None);
    }

    /// A shared limiter plans the planned fetch with its group's, due by its wall-clock instant;
    /// a fetch with none (due at once, or after a wait alone), or none planned, files nothing.
    fn file_with_limiter(&mut self, at: Option<SystemTime>) {
        if let Some(member) = &mut self.config.limiter {
            member.plan(at);
        }
    }

    /// Publishes when the next automatic fetch is due, as `stats().next_fetch_at`, and answers it.
    fn publish_next_fetch(&self, due: Option<SystemTime>) -> Option<SystemTime> {
        self.shared.counters.set_next_fetch_at(due);
        due
    }

    /// Starts the planned fetch if it is due: its wall-clock instant reached, and its wait over
    /// (a spacing wait is over once the token expired, behaviour 18).
    pub(super) fn fetch_if_due(&mut self, now: SystemTime) {
        let Fetching::Planned(plan) = &self.fetching else {
            return;
        };
        // By the wall clock now: the phase never goes back when the clock is set back.
        let expired = self.current.as_ref().is_some_and(|c| now >= c.expires_at);
        let waited = match &plan.wait {
            None => true,
            Some(wait) => wait.kind == WaitKind::Spacing && expired,
        };
        if !waited || plan.at.is_some_and(|at| now < at) {
            return;
        }
        let reason = match plan.reason {
            // The token's own refresh says where the token held stands when the fetch starts.
            FetchReason::Initial | FetchReason::WillExpire | FetchReason::Expired => {
                match &self.current {
                    None => FetchReason::Initial,
                    Some(_) if expired => FetchReason::Expired,
                    Some(_) => FetchReason::WillExpire,
                }
            }
            reason => reason,
        };
        let attempt = plan.attempt;
        self.start_fetch(reason, attempt, now);
    }

    /// Polls the planned fetch's wait: `true` when it just ended.
    pub(super) fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let Fetching::Planned(Plan {
            wait: wait @ Some(_),
            ..
        }) = &mut self.fetching
        else {
            return false;
        };
        let ended = wait
            .as_mut()
            .is_some_and(|w| w.sleep.as_mut().poll(cx).is_ready());
        if ended {
            *wait = None;
        }
        ended
    }

    /// The wall-clock instant the planned fetch waits for, once its elapsed-time wait is over.
    pub(super) fn fetch_deadline(&self) -> Option<SystemTime> {
        match &self.fetching {
            Fetching::Planned(Plan {
                at: Some(at),
                wait: None,
                ..
            }) => Some(*at),
            _ => None,
        }
    }

    /// `resume()`: a backoff is over now (a spacing stays: it protects the backend).
    pub(super) fn cut_backoff(&mut self, now: SystemTime) {
        let Fetching::Planned(plan) = &mut self.fetching else {
            return;
        };
        if plan
            .wait
            .as_ref()
            .is_some_and(|w| w.kind == WaitKind::Backoff)
        {
            plan.wait = None;
            let due = plan.at.unwrap_or(now);
            self.publish_next_fetch(Some(due));
        }
    }
}

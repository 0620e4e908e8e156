//! The invariants, checked against the model after every quiet system: the current token, the
//! per-token event timeline, the fetches, the deliveries, the calls' answers, the logs, and what a
//! stopped manager leaves behind.

use super::fetcher::{FetchCall, RUNAWAY_CALLS};
use super::model::{rel, Answer, Done, Pending, Predicted};
use super::world::World;
use access_manager::clock::Clock;
use access_manager::{AccessToken, FetchLimiter, FetchReason, RefreshError, UpdateError};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, SystemTime};

/// Rounds of eight yields without any progress before the system counts as quiet.
const CALM_ROUNDS: usize = 3;
/// Rounds after which a system still busy at a standing clock is a livelock.
const MAX_ROUNDS: usize = 400;

impl World {
    /// Lets every ready task run until nothing moves, then checks every invariant.
    pub async fn quiet_and_check(&mut self) -> Result<(), String> {
        // The step's own effects (an update unhalts, a sign-out halts) are in; the quiet's are not.
        self.asks.halted_at_start = self.halted;
        self.quiet().await?;
        self.check()
    }

    async fn quiet(&mut self) -> Result<(), String> {
        let mut last = self.progress();
        let mut calm = 0;
        for _ in 0..MAX_ROUNDS {
            if let Some(store) = &self.store {
                store.settle();
            }
            for _ in 0..8 {
                tokio::task::yield_now().await;
                self.drain_events();
            }
            let now = self.progress();
            if now == last && self.store_answer_due() {
                // A store call on its way (spawned, or returned and not yet taken): not quiet.
                if let Some(store) = &self.store {
                    store.settle();
                }
            } else if now == last {
                calm += 1;
                if calm == CALM_ROUNDS {
                    return Ok(());
                }
            } else {
                calm = 0;
                last = now;
            }
        }
        let fetches = self
            .fetch
            .as_ref()
            .map_or(0, |f| f.calls.lock().unwrap().len());
        Err(format!(
            "no quiet system: the manager keeps working while the clock stands still (livelock; \
             {fetches} fetch calls so far, {} events)",
            self.event_log.len() + self.inbox.len()
        ))
    }

    /// A call waits for the manager's store, which runs on threads of its own: the store's answer
    /// is on its way unless a store call waits for the clock (or a consumer holds the call up).
    fn store_answer_due(&mut self) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        // A clear the manager started (or will start once the call before it returns) begins on
        // a pool thread a moment later: the clock must not move before it has.
        let entered = store.entered();
        let closed = self.closed;
        self.clears_due.retain(|&due| entered < due && !closed);
        if !self.clears_due.is_empty() && !store.waiting() {
            return true;
        }
        let delivering = self
            .consumers
            .iter()
            .any(|e| e.log.in_call.load(SeqCst) > 0);
        let answered: Vec<u64> = self.results.lock().unwrap().iter().map(|d| d.id).collect();
        let waits_for_store = self.pending.iter().any(|(id, p)| {
            matches!(p, Pending::SignOut | Pending::Shutdown) && !answered.contains(id)
        });
        waits_for_store && !delivering && !store.waiting()
    }

    /// A number that grows whenever anything happens.
    fn progress(&mut self) -> u64 {
        self.drain_events();
        let mut p = (self.inbox.len() + self.results.lock().unwrap().len()) as u64;
        if let Some(f) = &self.fetch {
            p += f.activity.load(SeqCst);
        }
        for e in &self.consumers {
            p += e.log.activity.load(SeqCst);
        }
        if let Some(store) = &self.store {
            p += store.activity();
        }
        if let Some(m) = &self.manager {
            let s = m.stats();
            p += s.tokens_installed
                + s.fetches
                + s.fetch_failures
                + s.tokens_rejected
                + s.deliveries
                + s.consumer_failures
                + s.service_rejections;
        }
        p
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.events.try_recv() {
            self.inbox.push(event);
        }
    }

    fn check(&mut self) -> Result<(), String> {
        let now = self.clock.now();
        self.quiets += 1;
        // Calls made in the quiet that closed the manager came before the close.
        self.asks.closed_before = self.closed;
        if self.last_check_at != Some(now) {
            self.tally.clock_moves += 1;
            self.last_check_at = Some(now);
        }
        self.drain_events();
        for e in &self.consumers {
            let codes = std::mem::take(&mut *e.log.refusals.lock().unwrap());
            self.asks.consumer_codes.extend(codes);
        }
        if let Some(log) = &self.fetch {
            if log.runaway.load(SeqCst) {
                return Err(format!(
                    "livelock: the manager fetched more than {RUNAWAY_CALLS} times while the \
                     clock stood still (the fetcher broke the loop)"
                ));
            }
        }
        for event in std::mem::take(&mut self.inbox) {
            self.on_event(event, now)?;
        }
        if !self.expect_install.is_empty() {
            return Err(format!(
                "update_token was given a valid new token but no TokenUpdated followed ({} pending)",
                self.expect_install.len()
            ));
        }
        self.check_fetches()?;
        self.check_limiter()?;
        self.check_consumers()?;
        self.check_answers()?;
        self.check_store()?;
        self.check_state(now)?;
        let logged = self.capture.take();
        if let Some(leak) = self.secrets.leak_in(&logged) {
            let line = logged
                .lines()
                .find(|l| self.secrets.leak_in(l).is_some())
                .unwrap_or_default();
            return Err(format!("the log shows {leak}: {line}"));
        }
        Ok(())
    }

    fn check_fetches(&mut self) -> Result<(), String> {
        let Some(log) = self.fetch.clone() else {
            return Ok(());
        };
        log.calls_this_quiet.store(0, SeqCst);
        let most = log.max_in_flight.load(SeqCst);
        if most > 1 {
            return Err(format!("{most} fetches were in flight at once"));
        }
        let calls: Vec<FetchCall> = log.calls.lock().unwrap()[self.fetch_cursor..].to_vec();
        self.fetch_cursor += calls.len();
        self.tally.fetches += calls.len() as u64;
        let ahead = self.profile.refresh_ahead;
        // A fetch that waited for a slot of the shared limiter at the last check reaches the
        // fetcher now: it was judged when it started (its reason and time are then's).
        let mut carried = std::mem::take(&mut self.slot_waited);
        for call in calls {
            self.history.push(format!(
                "    fetch: {} attempt {} → {}",
                call.reason, call.attempt, call.behaviour
            ));
            if self.asks.closed_before {
                return Err("the fetcher was called after the manager stopped".into());
            }
            if std::mem::take(&mut carried) {
                continue;
            }
            let asked_by_service = |code: u32| {
                self.asks.report_codes.contains(&code) || self.asks.consumer_codes.contains(&code)
            };
            // A retry keeps its reason: an automatic one, so not while fetching is stopped.
            let retry = call.attempt > 1;
            if retry && self.asks.halted_at_start {
                return Err(format!(
                    "a retry ({}, attempt {}) while automatic fetching is stopped",
                    call.reason, call.attempt
                ));
            }
            let refused_held = call.current.as_ref().is_some_and(|token| {
                self.installs
                    .iter()
                    .rev()
                    .find(|i| i.token == *token)
                    .is_some_and(|i| i.refused)
            });
            match call.reason {
                FetchReason::Manual => {
                    if !retry && !self.asks.manual {
                        return Err(
                            "a Manual fetch although no refresh() or fresh_token() needed one"
                                .into(),
                        );
                    }
                }
                FetchReason::Rejected { code } => {
                    // Reported now, or the backed-off fetch (or a retry) for a refused token.
                    if !asked_by_service(code) && !retry && !refused_held {
                        return Err(format!(
                            "a fetch for a service refusal ({code}) nobody reported in this step"
                        ));
                    }
                }
                reason => {
                    if self.asks.halted_at_start {
                        return Err(format!(
                            "an automatic fetch ({reason}) while automatic fetching is stopped \
                             (permanent failure, Permanent service action or sign-out)"
                        ));
                    }
                    match (&call.current, reason) {
                        (None, FetchReason::Initial) => {}
                        (Some(token), FetchReason::WillExpire | FetchReason::Expired) => {
                            let exp = token.expires_at();
                            if (call.at >= exp) != (reason == FetchReason::Expired) {
                                return Err(format!(
                                    "fetch reason {reason} at {} for a token expiring at {}",
                                    rel(call.at),
                                    rel(exp)
                                ));
                            }
                            // A shared limiter starts a refresh as early as its plan needs:
                            // a fetch's estimated duration at most, for a manager alone.
                            let planned = self
                                .limiter
                                .as_ref()
                                .map_or(Duration::ZERO, |_| FetchLimiter::MAX_FETCH_ESTIMATE);
                            let in_window = exp
                                .checked_sub(ahead + planned)
                                .is_none_or(|will_at| call.at >= will_at);
                            // The refresh cycle began (the clock may have been set back since),
                            // or a service refused the token: the fetch goes on.
                            let install = self.installs.iter().rev().find(|i| i.token == *token);
                            let cycle = install.is_some_and(|i| i.will_fired || i.refused);
                            if !in_window && !cycle {
                                return Err(format!(
                                    "an automatic fetch ({reason}) while the token had {} s \
                                     left, more than refresh_ahead ({} s), and nobody asked",
                                    token.remaining_at(call.at).as_secs(),
                                    ahead.as_secs()
                                ));
                            }
                        }
                        (current, reason) => {
                            return Err(format!(
                                "fetch reason {reason} with current token {:?}",
                                current.as_ref().map(AccessToken::identity)
                            ))
                        }
                    }
                }
            }
        }
        let still_waiting = self.limiter.as_ref().is_some_and(|l| l.waiting() > 0);
        if carried && !still_waiting {
            // It was cancelled (sign-out, shutdown) before it reached the fetcher.
            self.never_reached += 1;
        }
        Ok(())
    }

    /// The shared limiter: never more slots in use than it has, and none held without a fetch
    /// in the fetcher (no slot leaked); once stopped, no refresh left in its plan.
    fn check_limiter(&mut self) -> Result<(), String> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.peak() > limiter.max_concurrent() {
            return Err(format!(
                "{} fetches held the limiter's {} slots at once",
                limiter.peak(),
                limiter.max_concurrent()
            ));
        }
        let fetching = self.fetch.as_ref().map_or(0, |log| log.in_flight());
        if limiter.in_flight() > fetching {
            return Err(format!(
                "the limiter counts {} slots in use with {fetching} fetches in the fetcher: a \
                 slot leaked",
                limiter.in_flight()
            ));
        }
        self.slot_waited = limiter.waiting() > 0;
        if self.closed && limiter.planned() != 0 {
            return Err("a stopped manager's refresh stayed in the limiter's plan".into());
        }
        Ok(())
    }

    fn check_answers(&mut self) -> Result<(), String> {
        let done: Vec<Done> = std::mem::take(&mut *self.results.lock().unwrap());
        for Done { id, at, answer } in done {
            let pending = self.pending.remove(&id).expect("every call is recorded");
            let shown = match &answer {
                Answer::Update(r) => format!("{r:?} {}", display(r.as_ref().err())),
                Answer::Token(r) => format!("{r:?} {}", display(r.as_ref().err())),
                Answer::Cleared { result, .. } => format!("{result:?}"),
                Answer::Unit => String::new(),
            };
            if let Some(leak) = self.secrets.leak_in(&shown) {
                return Err(format!("an answer shows {leak}: {shown}"));
            }
            match (pending, answer) {
                (Pending::Update { text, predicted }, Answer::Update(result)) => {
                    let fits = match (&predicted, &result) {
                        (_, Err(UpdateError::Closed)) => self.closed,
                        (Predicted::Changed, Ok(r)) => r.changed() && r.token().as_str() == text,
                        (Predicted::Unchanged, Ok(r)) => !r.changed(),
                        (Predicted::Invalid(code), Err(UpdateError::Invalid(e))) => {
                            e.code() == *code
                        }
                        (Predicted::Identity, Err(UpdateError::IdentityMismatch { .. })) => true,
                        (Predicted::Account, Err(UpdateError::AccountMismatch { .. })) => true,
                        _ => false,
                    };
                    if !fits {
                        return Err(format!(
                            "update_token answered {result:?}, the model expected {predicted:?}"
                        ));
                    }
                }
                (pending @ (Pending::Refresh | Pending::Fresh(_)), Answer::Token(result)) => {
                    let min = match pending {
                        Pending::Fresh(min) => Some(min),
                        _ => None,
                    };
                    self.check_refresh_answer(min, at, result)?;
                }
                (
                    Pending::SignOut,
                    Answer::Cleared {
                        result,
                        writes,
                        installs_before,
                    },
                ) => self.check_cleared(result, writes, installs_before)?,
                (_, Answer::Unit) => {}
                (pending, _) => panic!("a call's answer does not fit its call {pending:?}"),
            }
        }
        Ok(())
    }

    /// A `sign_out()` answered `Ok` marks the store: from then on it holds no token but one
    /// installed after the call. Only a store that fails or blocks, or a stop, may answer `Err`.
    fn check_cleared(
        &mut self,
        result: std::io::Result<()>,
        writes: usize,
        installs_before: usize,
    ) -> Result<(), String> {
        match result {
            Ok(()) => {
                if self.store.is_some() {
                    self.cleared_marks.push((writes, installs_before));
                    self.tally.store_clears += 1;
                }
                Ok(())
            }
            Err(_) if self.closed => Ok(()),
            Err(_) if self.store.as_ref().is_some_and(|s| s.kind.may_fail()) => Ok(()),
            // A call the pool began only after the clock passed its deadline (a loaded machine):
            // the manager rightly went on without it, and a clear behind it hears so.
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Ok(()),
            Err(error) => Err(format!(
                "sign_out() answered {error} with a store that neither fails nor blocks"
            )),
        }
    }

    /// After `sign_out()` returned `Ok`, the store never holds a token again until a new one is
    /// installed (behaviour 17).
    fn check_store(&mut self) -> Result<(), String> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        // Each write is checked once against every mark before it, and each mark once against
        // what the store held when it was made.
        let (checked, new_marks) = (self.store_checked, self.marks_checked);
        self.marks_checked = self.cleared_marks.len();
        store.with_writes(|writes| {
            self.store_checked = writes.len();
            for (n, &(mark, installs_before)) in self.cleared_marks.iter().enumerate() {
                // What the store held when `sign_out()` returned, and every change since.
                let held_then = mark
                    .checked_sub(1)
                    .filter(|_| n >= new_marks)
                    .map(|i| &writes[i]);
                let since = held_then
                    .into_iter()
                    .chain(&writes[mark.max(checked).min(writes.len())..]);
                for held in since.flatten() {
                    let installed_after = self.installs[installs_before..]
                        .iter()
                        .any(|i| i.token.as_str() == held);
                    if !installed_after {
                        return Err(format!(
                            "the store holds a token installed before a sign-out that returned \
                             Ok (install #{})",
                            self.installs
                                .iter()
                                .position(|i| i.token.as_str() == held)
                                .map_or("?".into(), |i| (i + 1).to_string())
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    fn check_refresh_answer(
        &self,
        min: Option<Duration>,
        at: SystemTime,
        result: Result<AccessToken, RefreshError>,
    ) -> Result<(), String> {
        let call = match min {
            Some(min) => format!("fresh_token({} s)", min.as_secs()),
            None => "refresh()".into(),
        };
        match result {
            Ok(token) => {
                if !self.installs.iter().any(|i| i.token == token) {
                    return Err(format!("{call} answered a token that never became current"));
                }
                if min.is_some_and(|min| token.remaining_at(at) < min) {
                    return Err(format!(
                        "{call} answered a token with {} s left",
                        token.remaining_at(at).as_secs()
                    ));
                }
            }
            Err(RefreshError::TooShort { token, wanted }) => {
                if min != Some(wanted) || token.remaining_at(at) >= wanted {
                    return Err(format!(
                        "{call} answered TooShort (wanted {} s) with {} s left",
                        wanted.as_secs(),
                        token.remaining_at(at).as_secs()
                    ));
                }
            }
            Err(RefreshError::NoFetcher) if self.fetch.is_none() => {}
            Err(RefreshError::Closed) if self.shutdown_issued => {}
            Err(RefreshError::SignedOut) if self.signed_out_step.is_some() => {}
            Err(RefreshError::Fetch(_) | RefreshError::Rejected(_)) if self.fetch.is_some() => {}
            Err(e) => return Err(format!("{call} answered {e:?}")),
        }
        Ok(())
    }

    fn check_state(&mut self, now: SystemTime) -> Result<(), String> {
        let Some(manager) = self.manager.as_ref().filter(|_| !self.closed) else {
            return Ok(());
        };
        let held = manager.token();
        let current = self.current_install();
        if held.as_ref() != current.map(|c| &c.token) {
            return Err(format!(
                "token() is {:?} but the current token is install {:?}",
                held.as_ref().map(|t| (t.identity(), rel(t.expires_at()))),
                current.map(|c| c.idx)
            ));
        }
        if manager.is_expired() != current.is_some_and(|c| now >= c.exp) {
            return Err(format!("is_expired() is {}", manager.is_expired()));
        }
        let stats = manager.stats();
        if stats.tokens_installed != self.installs.len() as u64 {
            return Err(format!(
                "stats say {} tokens installed, the events {}",
                stats.tokens_installed,
                self.installs.len()
            ));
        }
        if let Some(c) = current {
            if now >= c.will_at && !c.will_fired {
                return Err(format!(
                    "install #{} is in its refresh window ({}) but no TokenWillExpire came",
                    c.idx,
                    rel(c.will_at)
                ));
            }
            if now >= c.exp && !c.expired_fired {
                return Err(format!(
                    "install #{} expired at {} but no TokenExpired came",
                    c.idx,
                    rel(c.exp)
                ));
            }
            if self.profile.healthy && !self.healthy_void && !c.refused && now >= c.exp {
                return Err(format!(
                    "install #{} expired although the backend is healthy and time only passed",
                    c.idx
                ));
            }
        }
        // A fetch started may wait for a slot of the shared limiter: the fetcher has not seen it.
        let waiting = self.limiter.as_ref().map_or(0, FetchLimiter::waiting) as u64;
        let fetching = self.fetch.as_ref().is_some_and(|f| f.in_flight() > 0) || waiting > 0;
        if let Some(log) = &self.fetch {
            let calls = log.calls.lock().unwrap().len() as u64;
            if stats.fetches != calls + waiting + self.never_reached {
                return Err(format!(
                    "stats say {} fetches, the fetcher saw {calls}, {waiting} wait for a slot, {} \
                     were cancelled waiting",
                    stats.fetches, self.never_reached
                ));
            }
            let planned = stats.next_fetch_at.is_some();
            if !fetching && !self.halted && !planned {
                return Err(
                    "automatic fetching stopped: nothing in flight, nothing planned, and nothing \
                     stopped it"
                        .into(),
                );
            }
            if self.halted && planned {
                return Err(format!(
                    "a fetch is planned at {} although automatic fetching is stopped",
                    rel(stats.next_fetch_at.unwrap())
                ));
            }
        }
        let delivering = self
            .consumers
            .iter()
            .any(|e| e.log.in_call.load(SeqCst) > 0);
        for pending in self.pending.values() {
            let stuck = match pending {
                Pending::Update { predicted, .. } => {
                    *predicted != Predicted::Changed || !delivering
                }
                Pending::Refresh | Pending::Fresh(_) => !fetching,
                Pending::SignOut => !delivering && !self.store.as_ref().is_some_and(|s| s.busy()),
                Pending::Shutdown => true,
            };
            if stuck {
                return Err(format!(
                    "{pending:?} still waits although nothing it waits for is running"
                ));
            }
        }
        Ok(())
    }
}

fn display(e: Option<&impl std::fmt::Display>) -> String {
    e.map(ToString::to_string).unwrap_or_default()
}

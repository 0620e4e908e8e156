//! The limiter's state, behind its one lock: the refreshes waiting for their planned start
//! (tickets), the fetches waiting for a slot, the slots in use, the pace after push-back and the
//! fetch durations observed. Every method does bounded work and runs no user code; wakers are
//! returned, to be woken after the lock is released.

use super::plan::{latest_starts, Capacity};
use crate::clock::saturating_add;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::task::Waker;
use std::time::{Duration, SystemTime};

/// What a push-back leaves of the fetches allowed at once (and of the rate).
const PACE_CUT: f64 = 0.75;

/// The longest fetch duration counted (see [`FetchLimiter::MAX_FETCH_ESTIMATE`]).
///
/// [`FetchLimiter::MAX_FETCH_ESTIMATE`]: super::FetchLimiter::MAX_FETCH_ESTIMATE
pub(super) const MAX_FETCH_ESTIMATE: Duration = Duration::from_secs(120);

/// How many recent fetch durations the estimate is drawn from.
const DURATIONS_KEPT: usize = 64;

/// What the limiter was told about the backend.
#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub(super) max_concurrent: usize,
    /// Fetches per second at most (none: no rate).
    pub(super) rate: Option<f64>,
    /// The fetch duration assumed before any fetch was observed.
    pub(super) initial_estimate: Duration,
}

/// Whether the limiter's planning task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Task {
    Stopped,
    Running,
}

/// What the planning task does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing waits: the task ends (a new ticket or fetch starts another).
    Exit,
    /// Sleep until told of a change, the wall clock reaches `plan` (the next planned start), or
    /// `grant` has elapsed (time frees a slot: the rate's spacing, a push-back's pause).
    Wait {
        plan: Option<SystemTime>,
        grant: Option<Duration>,
    },
}

/// A fetch's end, as its slot reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered (a token or an error): its duration counts towards the estimate.
    Answered,
    /// The backend pushed back (429 or 503 with `Retry-After`): the whole group slows down.
    PushedBack(Duration),
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) config: Config,
    /// Refreshes waiting for their planned start, by (deadline, id), with their manager's waker.
    tickets: BTreeMap<(SystemTime, u64), Option<Waker>>,
    /// Fetches waiting for a slot, by (deadline, id): earliest deadline first.
    waiters: BTreeMap<(SystemTime, u64), Option<Waker>>,
    /// Fetches given a slot that have not taken it yet.
    granted: HashSet<u64>,
    next_id: u64,
    pub(super) in_flight: usize,
    pub(super) peak: usize,
    /// Fetches allowed at once now: `max_concurrent`, less after push-back (at least 1).
    limit: f64,
    /// No slot is granted before this (the rate's spacing).
    next_start: Option<SystemTime>,
    /// No slot is granted before this, the backend's `Retry-After` (also kept, so that the wall
    /// clock set back does not stretch the pause).
    paused: Option<(SystemTime, Duration)>,
    /// When the pace was last cut: a push-back to a fetch granted before it is old news.
    last_cut: Option<SystemTime>,
    pub(super) pushbacks: u64,
    durations: VecDeque<Duration>,
    pub(super) task: Task,
}

impl State {
    pub(super) fn new(config: Config) -> Self {
        State {
            config,
            tickets: BTreeMap::new(),
            waiters: BTreeMap::new(),
            granted: HashSet::new(),
            next_id: 0,
            in_flight: 0,
            peak: 0,
            limit: config.max_concurrent as f64,
            next_start: None,
            paused: None,
            last_cut: None,
            pushbacks: 0,
            durations: VecDeque::with_capacity(DURATIONS_KEPT),
            task: Task::Stopped,
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Fetches allowed at once now.
    pub(super) fn slots(&self) -> usize {
        (self.limit as usize).clamp(1, self.config.max_concurrent)
    }

    /// The least time between two starts now: the rate, slowed in step with the slots.
    fn spacing(&self) -> Duration {
        match self.config.rate {
            Some(rate) => {
                let pace = self.limit / self.config.max_concurrent as f64;
                Duration::from_secs_f64(1.0 / (rate * pace.max(f64::MIN_POSITIVE)))
            }
            None => Duration::ZERO,
        }
    }

    /// The fetch duration to plan with: the 90th percentile of the recent ones, or the initial
    /// estimate before any.
    pub(super) fn estimate(&self) -> Duration {
        if self.durations.is_empty() {
            return self.config.initial_estimate;
        }
        let mut sorted: Vec<Duration> = self.durations.iter().copied().collect();
        sorted.sort_unstable();
        sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]
    }

    pub(super) fn capacity(&self) -> Capacity {
        Capacity {
            slots: self.slots(),
            spacing: self.spacing(),
            duration: self.estimate(),
        }
    }

    /// Files a refresh due by `deadline`; returns its key.
    pub(super) fn file(&mut self, deadline: SystemTime) -> (SystemTime, u64) {
        let key = (deadline, self.new_id());
        self.tickets.insert(key, None);
        key
    }

    /// `Some(true)` once the plan says the ticket's refresh starts; else keeps `waker`.
    pub(super) fn poll_ticket(&mut self, key: (SystemTime, u64), waker: &Waker) -> bool {
        match self.tickets.get_mut(&key) {
            None => true,
            Some(slot) => {
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                false
            }
        }
    }

    /// Forgets a ticket (its token was replaced, or its manager stopped planning a fetch).
    pub(super) fn drop_ticket(&mut self, key: (SystemTime, u64)) -> Option<Waker> {
        self.tickets.remove(&key).flatten()
    }

    /// Whether no refresh is planned and no fetch waits: the planning task has nothing to do.
    pub(super) fn is_idle(&self) -> bool {
        self.tickets.is_empty() && self.waiters.is_empty()
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    pub(super) fn tickets(&self) -> usize {
        self.tickets.len()
    }

    /// A fetch due by `deadline` asks for a slot; returns its id.
    pub(super) fn wait_for_slot(&mut self, deadline: SystemTime) -> (SystemTime, u64) {
        let key = (deadline, self.new_id());
        self.waiters.insert(key, None);
        key
    }

    /// `true` once the fetch was granted a slot (it now holds it); else keeps `waker`.
    pub(super) fn poll_slot(&mut self, key: (SystemTime, u64), waker: &Waker) -> bool {
        if self.granted.remove(&key.1) {
            return true;
        }
        if let Some(slot) = self.waiters.get_mut(&key) {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        false
    }

    /// A fetch stopped waiting (dropped): forgets it, and frees its slot if it had been granted
    /// one it never took.
    pub(super) fn stop_waiting(
        &mut self,
        key: (SystemTime, u64),
        now: SystemTime,
    ) -> (Option<Waker>, Vec<Waker>) {
        let own = self.waiters.remove(&key).flatten();
        let freed = if self.granted.remove(&key.1) {
            self.in_flight -= 1;
            self.grant(now)
        } else {
            Vec::new()
        };
        (own, freed)
    }

    /// Grants free slots to the waiting fetches, earliest deadline first, as the pace, the rate
    /// and any push-back allow; returns their wakers.
    pub(super) fn grant(&mut self, now: SystemTime) -> Vec<Waker> {
        self.rebase(now);
        let mut wakers = Vec::new();
        while self.in_flight < self.slots() && self.blocked_until(now).is_none() {
            let Some(((_, id), waker)) = self.waiters.pop_first() else {
                break;
            };
            self.granted.insert(id);
            self.in_flight += 1;
            self.peak = self.peak.max(self.in_flight);
            let spacing = self.spacing();
            if !spacing.is_zero() {
                self.next_start = Some(saturating_add(now, spacing));
            }
            wakers.extend(waker);
        }
        wakers
    }

    /// Whether fetches wait for a slot that only time will free (the rate or a push-back): the
    /// planning task must wake for them.
    pub(super) fn waits_on_time(&self, now: SystemTime) -> bool {
        !self.waiters.is_empty()
            && self.in_flight < self.slots()
            && self.blocked_until(now).is_some()
    }

    /// The instant before which no slot is granted (rate or push-back), if later than `now`.
    fn blocked_until(&self, now: SystemTime) -> Option<SystemTime> {
        let until = self.next_start.max(self.paused.map(|(at, _)| at))?;
        (until > now).then_some(until)
    }

    /// After the wall clock was set back, the spacing and the pause run from `now`: setting the
    /// clock back does not stretch them.
    fn rebase(&mut self, now: SystemTime) {
        let spacing = self.spacing();
        if let Some(at) = self.next_start.as_mut() {
            *at = (*at).min(saturating_add(now, spacing));
        }
        if let Some((at, pause)) = self.paused.as_mut() {
            *at = (*at).min(saturating_add(now, *pause));
        }
    }

    /// The slot of a fetch that started at `started` is free again.
    pub(super) fn release(
        &mut self,
        started: SystemTime,
        outcome: Option<Outcome>,
        now: SystemTime,
    ) -> Vec<Waker> {
        self.in_flight -= 1;
        match outcome {
            Some(Outcome::Answered) => {
                if self.durations.len() == DURATIONS_KEPT {
                    self.durations.pop_front();
                }
                // On the wall clock: a jump during the fetch is not a slow backend.
                let took = now.duration_since(started).unwrap_or_default();
                self.durations.push_back(took.min(MAX_FETCH_ESTIMATE));
                // Recovers by one slot per round of fetches answered.
                let max = self.config.max_concurrent as f64;
                self.limit = (self.limit + 1.0 / self.limit).min(max);
            }
            Some(Outcome::PushedBack(retry_after)) => self.push_back(started, retry_after, now),
            None => {}
        }
        self.grant(now)
    }

    /// The backend said "not now, retry after": the whole group pauses that long and cuts its
    /// pace to three quarters, once per round (a fetch started before the last cut was sent at
    /// the old pace, and its refusal is old news).
    fn push_back(&mut self, started: SystemTime, retry_after: Duration, now: SystemTime) {
        self.pushbacks += 1;
        let until = saturating_add(now, retry_after);
        if self
            .blocked_until(now)
            .is_none_or(|blocked| blocked < until)
        {
            self.paused = Some((until, retry_after));
        }
        if self.last_cut.is_none_or(|cut| started > cut) {
            self.limit = (self.limit * PACE_CUT).max(1.0);
            self.last_cut = Some(now);
        }
    }

    /// The planning task's turn: releases the refreshes the plan says start now, grants what
    /// slots it can, and says when to look again.
    pub(super) fn turn(&mut self, now: SystemTime) -> (Vec<Waker>, Next) {
        if self.is_idle() {
            self.task = Task::Stopped;
            return (Vec::new(), Next::Exit);
        }
        let deadlines: Vec<SystemTime> = self.tickets.keys().map(|&(d, _)| d).collect();
        let starts = latest_starts(&deadlines, self.capacity());
        let due = starts.iter().take_while(|&&start| start <= now).count();
        let mut wakers: Vec<Waker> = (0..due)
            .filter_map(|_| self.tickets.pop_first().and_then(|(_, w)| w))
            .collect();
        wakers.extend(self.grant(now));
        let grant = if self.waiters.is_empty() || self.in_flight >= self.slots() {
            None
        } else {
            self.blocked_until(now)
                .map(|until| until.duration_since(now).unwrap_or_default())
        };
        let plan = starts.get(due).copied();
        (wakers, Next::Wait { plan, grant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn state(max_concurrent: usize, rate: Option<f64>) -> State {
        State::new(Config {
            max_concurrent,
            rate,
            initial_estimate: Duration::from_secs(5),
        })
    }

    #[test]
    fn a_freed_slot_goes_to_the_earliest_deadline_whoever_asked_first() {
        let mut s = state(1, None);
        let holder = s.wait_for_slot(t(500));
        s.grant(t(0));
        let late = s.wait_for_slot(t(900));
        let early = s.wait_for_slot(t(100));
        assert!(s.grant(t(0)).is_empty() && s.granted.contains(&holder.1));
        s.granted.remove(&holder.1);
        s.release(t(0), Some(Outcome::Answered), t(2));
        assert!(s.granted.contains(&early.1) && !s.granted.contains(&late.1));
    }

    #[test]
    fn setting_the_clock_back_does_not_stretch_the_rates_spacing() {
        let mut s = state(8, Some(1.0));
        s.wait_for_slot(t(0));
        s.wait_for_slot(t(0));
        s.grant(t(10_000));
        assert_eq!(s.in_flight, 1, "one start a second");
        // Set back an hour: the next start is still one second away, not an hour and a second.
        assert!(s.grant(t(10_000 - 3600)).is_empty());
        s.grant(t(10_000 - 3599));
        assert_eq!(s.in_flight, 2);
    }

    #[test]
    fn a_round_of_push_backs_cuts_the_pace_once() {
        let mut s = state(8, None);
        for _ in 0..8 {
            s.wait_for_slot(t(0));
        }
        s.grant(t(100));
        for _ in 0..4 {
            s.release(
                t(100),
                Some(Outcome::PushedBack(Duration::from_secs(1))),
                t(100),
            );
        }
        assert_eq!((s.slots(), s.pushbacks), (6, 4));
        assert_eq!(
            s.blocked_until(t(100)),
            Some(t(101)),
            "the group pauses 1 s"
        );
        // A fetch started after the cut and refused again cuts again.
        s.release(
            t(102),
            Some(Outcome::PushedBack(Duration::from_secs(1))),
            t(103),
        );
        assert_eq!(s.slots(), 4);
    }

    #[test]
    fn answered_fetches_give_a_slot_back_per_round() {
        let mut s = state(8, None);
        s.limit = 4.0;
        for _ in 0..4 {
            s.in_flight += 1;
            s.release(t(0), Some(Outcome::Answered), t(2));
        }
        assert_eq!(s.slots(), 4, "just under a round: {}", s.limit);
        s.in_flight += 1;
        s.release(t(0), Some(Outcome::Answered), t(2));
        assert_eq!(s.slots(), 5);
        assert_eq!(s.estimate(), Duration::from_secs(2));
    }
}

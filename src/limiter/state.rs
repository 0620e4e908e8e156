//! The limiter's state, behind its one lock: the refreshes waiting for their planned start
//! (tickets), the fetches waiting for a slot, the slots in use, the backend's ceiling learned
//! from its push-backs and the fetch durations observed. Every method does bounded work and runs
//! no user code; wakers are returned, to be woken after the lock is released.

use super::plan::{self, instant, nanos, Capacity};
use crate::clock::saturating_add;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::task::Waker;
use std::time::{Duration, SystemTime};

/// The longest fetch duration counted (see [`FetchLimiter::MAX_FETCH_ESTIMATE`]).
///
/// [`FetchLimiter::MAX_FETCH_ESTIMATE`]: super::FetchLimiter::MAX_FETCH_ESTIMATE
pub(super) const MAX_FETCH_ESTIMATE: Duration = Duration::from_secs(120);

/// How long the backend must go without pushing back before the group probes above the ceiling
/// it learned (see [`FetchLimiter::QUIET_PERIOD`]).
///
/// [`FetchLimiter::QUIET_PERIOD`]: super::FetchLimiter::QUIET_PERIOD
pub(super) const QUIET_PERIOD: Duration = Duration::from_secs(30);

/// How many recent fetch durations the estimate is drawn from.
const DURATIONS_KEPT: usize = 64;

/// A ticket's or a waiting fetch's place: its deadline (in [`nanos`]) and an id, so that equal
/// deadlines go in the order they came.
pub(super) type Key = (u64, u64);

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

/// The fetches the group may run at once, as the backend's push-backs taught it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// No push-back to remember: `max_concurrent`.
    Full,
    /// The backend last pushed back at `since`, refusing a fetch sent while more than `ceiling`
    /// ran: the group holds at `ceiling` (at least 1) for a quiet period, then adds one slot, and
    /// after each further quiet period without push-back twice as many as the last time, up to
    /// `max_concurrent`.
    Learned { ceiling: usize, since: SystemTime },
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
    /// Refreshes waiting for their planned start, with their manager's waker.
    tickets: BTreeMap<Key, Option<Waker>>,
    /// Fetches waiting for a slot: earliest deadline first.
    waiters: BTreeMap<Key, Option<Waker>>,
    /// Fetches given a slot that have not taken it yet.
    granted: HashSet<u64>,
    next_id: u64,
    /// Slots granted: taken by a fetch, or given to one that has not taken it yet (`granted`).
    pub(super) in_flight: usize,
    pub(super) peak: usize,
    pace: Pace,
    /// No slot is granted before this (the rate's spacing).
    next_start: Option<SystemTime>,
    /// No slot is granted before this, the backend's `Retry-After` (also kept, so that the wall
    /// clock set back does not stretch the pause).
    paused: Option<(SystemTime, Duration)>,
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
            pace: Pace::Full,
            next_start: None,
            paused: None,
            pushbacks: 0,
            durations: VecDeque::with_capacity(DURATIONS_KEPT),
            task: Task::Stopped,
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Fetches allowed at once at `now`: `max_concurrent`, or the ceiling learned from the
    /// backend's push-backs plus what the quiet periods since the last one gave back.
    pub(super) fn slots(&self, now: SystemTime) -> usize {
        let max = self.config.max_concurrent;
        match self.pace {
            Pace::Full => max,
            Pace::Learned { ceiling, since } => {
                let quiet = now.duration_since(since).unwrap_or_default();
                let periods = quiet.as_nanos() / QUIET_PERIOD.as_nanos();
                // 1, 3, 7, ... slots above the ceiling after 1, 2, 3, ... quiet periods.
                let shift =
                    u32::try_from(periods).map_or(usize::BITS - 1, |p| p.min(usize::BITS - 1));
                let added = (1usize << shift) - 1;
                ceiling.saturating_add(added).clamp(1, max)
            }
        }
    }

    /// The least time between two starts at `now`: the rate, slowed in step with the slots.
    fn spacing(&self, now: SystemTime) -> Duration {
        match self.config.rate {
            Some(rate) => {
                let pace = self.slots(now) as f64 / self.config.max_concurrent as f64;
                Duration::from_secs_f64(1.0 / (rate * pace))
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

    pub(super) fn capacity(&self, now: SystemTime) -> Capacity {
        Capacity {
            slots: self.slots(now),
            spacing: self.spacing(now),
            duration: self.estimate(),
        }
    }

    /// Files a refresh due by `deadline`; returns its key.
    pub(super) fn file(&mut self, deadline: SystemTime) -> Key {
        let key = (nanos(deadline), self.new_id());
        self.tickets.insert(key, None);
        key
    }

    /// `Some(true)` once the plan says the ticket's refresh starts; else keeps `waker`.
    pub(super) fn poll_ticket(&mut self, key: Key, waker: &Waker) -> bool {
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
    pub(super) fn drop_ticket(&mut self, key: Key) -> Option<Waker> {
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
    pub(super) fn wait_for_slot(&mut self, deadline: SystemTime) -> Key {
        let key = (nanos(deadline), self.new_id());
        self.waiters.insert(key, None);
        key
    }

    /// Once the fetch was granted a slot, it takes it and goes out: how many fetches run then,
    /// itself included (the slots taken); else keeps `waker`.
    pub(super) fn poll_slot(&mut self, key: Key, waker: &Waker) -> Option<usize> {
        if self.granted.remove(&key.1) {
            return Some(self.in_flight - self.granted.len());
        }
        if let Some(slot) = self.waiters.get_mut(&key) {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        None
    }

    /// A fetch stopped waiting (dropped): forgets it, and frees its slot if it had been granted
    /// one it never took.
    pub(super) fn stop_waiting(
        &mut self,
        key: Key,
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
        while self.in_flight < self.slots(now) && self.blocked_until(now).is_none() {
            let Some(((_, id), waker)) = self.waiters.pop_first() else {
                break;
            };
            self.granted.insert(id);
            self.in_flight += 1;
            self.peak = self.peak.max(self.in_flight);
            let spacing = self.spacing(now);
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
            && self.in_flight < self.slots(now)
            && self.blocked_until(now).is_some()
    }

    /// The instant before which no slot is granted (rate or push-back), if later than `now`.
    fn blocked_until(&self, now: SystemTime) -> Option<SystemTime> {
        let until = self.next_start.max(self.paused.map(|(at, _)| at))?;
        (until > now).then_some(until)
    }

    /// After the wall clock was set back, the spacing, the pause and the quiet period run from
    /// `now`: setting the clock back does not stretch them. Once the quiet periods gave every slot
    /// back, the ceiling is forgotten.
    fn rebase(&mut self, now: SystemTime) {
        if let Pace::Learned { since, .. } = &mut self.pace {
            *since = (*since).min(now);
        }
        if self.slots(now) == self.config.max_concurrent {
            self.pace = Pace::Full;
        }
        let spacing = self.spacing(now);
        if let Some(at) = self.next_start.as_mut() {
            *at = (*at).min(saturating_add(now, spacing));
        }
        if let Some((at, pause)) = self.paused.as_mut() {
            *at = (*at).min(saturating_add(now, *pause));
        }
    }

    /// The slot of a fetch that went out at `started` with `running` fetches running (itself
    /// included) is free again.
    pub(super) fn release(
        &mut self,
        started: SystemTime,
        running: usize,
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
            }
            Some(Outcome::PushedBack(retry_after)) => self.push_back(running, retry_after, now),
            None => {}
        }
        self.grant(now)
    }

    /// The backend said "not now, retry after" to a fetch sent while `running` ran: the whole
    /// group pauses that long, and holds below `running` (the backend's ceiling as far as known:
    /// the refusals of one burst, in any order, leave the lowest) until a quiet period passes.
    fn push_back(&mut self, running: usize, retry_after: Duration, now: SystemTime) {
        self.pushbacks += 1;
        let until = saturating_add(now, retry_after);
        if self
            .blocked_until(now)
            .is_none_or(|blocked| blocked < until)
        {
            self.paused = Some((until, retry_after));
        }
        let ceiling = self.slots(now).min(running.saturating_sub(1)).max(1);
        self.pace = Pace::Learned {
            ceiling,
            since: now,
        };
    }

    /// The planning task's turn: releases the refreshes the plan says start now, grants what
    /// slots it can, and says when to look again.
    pub(super) fn turn(&mut self, now: SystemTime) -> (Vec<Waker>, Next) {
        if self.is_idle() {
            self.task = Task::Stopped;
            return (Vec::new(), Next::Exit);
        }
        let deadlines = self.tickets.keys().map(|&(deadline, _)| deadline);
        let (due, next) = plan::due(deadlines, self.capacity(now), nanos(now));
        let mut wakers: Vec<Waker> = (0..due)
            .filter_map(|_| self.tickets.pop_first().and_then(|(_, w)| w))
            .collect();
        wakers.extend(self.grant(now));
        let grant = if self.waiters.is_empty() || self.in_flight >= self.slots(now) {
            None
        } else {
            self.blocked_until(now)
                .map(|until| until.duration_since(now).unwrap_or_default())
        };
        let plan = next.map(instant);
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
        s.release(t(0), 1, Some(Outcome::Answered), t(2));
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

    /// `n` fetches granted at `now` that go out one after another: the ids and fetches running
    /// when each went out.
    fn sent(s: &mut State, n: usize, now: SystemTime) -> Vec<usize> {
        let keys: Vec<_> = (0..n).map(|_| s.wait_for_slot(t(0))).collect();
        s.grant(now);
        keys.into_iter()
            .map(|key| s.poll_slot(key, Waker::noop()).expect("granted"))
            .collect()
    }

    fn refused(s: &mut State, running: usize, now: SystemTime) {
        let retry_after = Some(Outcome::PushedBack(Duration::from_secs(1)));
        s.release(now, running, retry_after, now);
    }

    #[test]
    fn a_burst_refused_above_n_holds_the_group_at_n_whatever_order_the_refusals_come_in() {
        let mut s = state(64, None);
        let running = sent(&mut s, 64, t(100));
        assert_eq!(running, (1..=64).collect::<Vec<_>>());
        // The backend takes 32: the 33rd to 64th are refused, the last sent answered first.
        for &n in running[32..].iter().rev() {
            refused(&mut s, n, t(100));
        }
        assert_eq!((s.slots(t(100)), s.pushbacks, s.in_flight), (32, 32, 32));
        assert_eq!(
            s.blocked_until(t(100)),
            Some(t(101)),
            "the group pauses 1 s"
        );
        // A stale refusal of a fetch sent with more running learns nothing lower.
        refused(&mut s, 40, t(100));
        assert_eq!(s.slots(t(100)), 32);
    }

    #[test]
    fn the_ceiling_holds_for_a_quiet_period_then_slots_come_back_one_then_doubling() {
        let mut s = state(64, None);
        let running = sent(&mut s, 33, t(0));
        refused(&mut s, running[32], t(0));
        let at = |secs: u64| s.slots(t(secs));
        assert_eq!(at(29), 32, "above the ceiling before a quiet period");
        let limits: Vec<usize> = (1..=7).map(|k| at(30 * k)).collect();
        assert_eq!(limits, [33, 35, 39, 47, 63, 64, 64]);
        // Recovered: the ceiling is forgotten.
        s.grant(t(180));
        assert_eq!(s.pace, Pace::Full);
    }

    #[test]
    fn answered_fetches_do_not_raise_the_ceiling_before_the_quiet_period() {
        let mut s = state(64, None);
        let running = sent(&mut s, 33, t(0));
        refused(&mut s, running[32], t(0));
        for (i, &n) in running[..32].iter().enumerate() {
            s.release(t(0), n, Some(Outcome::Answered), t(2 + i as u64 / 4));
        }
        assert_eq!((s.slots(t(10)), s.in_flight), (32, 0));
    }

    #[test]
    fn setting_the_clock_back_restarts_the_quiet_period_rather_than_stretching_it() {
        let mut s = state(8, None);
        let running = sent(&mut s, 5, t(10_000));
        refused(&mut s, running[4], t(10_000));
        // Set back an hour: the quiet period runs from then, not from an hour later.
        s.grant(t(10_000 - 3600));
        assert_eq!(s.slots(t(10_000 - 3600 + 29)), 4);
        assert_eq!(s.slots(t(10_000 - 3600 + 30)), 5);
    }

    #[test]
    fn the_rate_slows_in_step_with_the_slots() {
        let mut s = state(8, Some(8.0));
        assert_eq!(s.spacing(t(0)), Duration::from_millis(125));
        s.pace = Pace::Learned {
            ceiling: 4,
            since: t(0),
        };
        assert_eq!(s.spacing(t(0)), Duration::from_millis(250));
    }
}

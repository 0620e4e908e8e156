//! Many managers on one fake clock, each token expiring at its own instant in a window: every
//! `TokenWillExpire` and `TokenExpired` must fire exactly at its instant, and with the clock still
//! the runtime must do nothing.

use super::{at, mint, run_until_quiet, timers_settled, unix_nanos, wall, CountingClock, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{AccessManager, Event};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Config {
    pub managers: usize,
    /// Expiries spread evenly over this window, starting 300 s after the clock's start.
    pub window: Duration,
    pub refresh_ahead: Duration,
    /// Scheduler passes with the clock still, for the idle check.
    pub idle_passes: usize,
}

impl Config {
    pub fn new(managers: usize, window: Duration) -> Self {
        Config {
            managers,
            window,
            refresh_ahead: Duration::from_secs(180),
            idle_passes: 1_000,
        }
    }

    /// Manager `i`'s expiry: `T0 + 300 + i × window / managers`, whole seconds (as `exp` is).
    pub fn expiry(&self, i: usize) -> SystemTime {
        let spread = self.window.as_secs() * i as u64 / self.managers.max(1) as u64;
        at(T0 + 300 + spread)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub managers: usize,
    /// Wall time to build the managers and let each driver start and go to sleep.
    pub build_wall: Duration,
    /// Live heap the managers took (from the `live` function given; 0 without one).
    pub manager_bytes: isize,
    /// Live heap the subscriptions and their recording tasks took.
    pub subscription_bytes: isize,
    pub will_expire: usize,
    pub expired: usize,
    /// Events other than the two expected kinds.
    pub unexpected: usize,
    pub early: usize,
    pub late: usize,
    pub missing: usize,
    pub duplicate: usize,
    /// Clock steps, and steps after which some timer due had not fired (must be 0).
    pub steps: usize,
    pub unsettled_steps: usize,
    pub simulated: Duration,
    pub stepping_wall: Duration,
    /// With the clock still: sleeps pending, driver polls and events over the idle passes.
    pub idle_pending_sleeps: usize,
    pub idle_polls: u64,
    pub idle_events: usize,
    /// Sleeps pending once every token has expired (no fetcher: none should be).
    pub pending_sleeps_after: usize,
}

/// When each manager saw each event, on the fake clock (unix nanos; 0: not yet).
struct Seen {
    will_expire: Vec<AtomicU64>,
    expired: Vec<AtomicU64>,
    duplicate: AtomicUsize,
    unexpected: AtomicUsize,
    total: AtomicUsize,
}

impl Seen {
    fn new(n: usize) -> Self {
        Seen {
            will_expire: (0..n).map(|_| AtomicU64::new(0)).collect(),
            expired: (0..n).map(|_| AtomicU64::new(0)).collect(),
            duplicate: AtomicUsize::new(0),
            unexpected: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        }
    }

    fn record(&self, i: usize, event: &Event, now: SystemTime) {
        let slot = match event {
            Event::TokenWillExpire { .. } => &self.will_expire[i],
            Event::TokenExpired { .. } => &self.expired[i],
            Event::Closed => return,
            _ => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        if slot.swap(unix_nanos(now), Ordering::Relaxed) != 0 {
            self.duplicate.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the simulation; `live` reads the live heap (a counting allocator's figure, or 0).
pub async fn run(config: &Config, live: fn() -> isize) -> Report {
    let n = config.managers;
    let manual = ManualClock::new(at(T0));
    let clock = CountingClock::new(manual.clone());
    let expiries: Vec<SystemTime> = (0..n).map(|i| config.expiry(i)).collect();
    let tokens: Vec<String> = expiries
        .iter()
        .enumerate()
        .map(|(i, exp)| mint(&format!("user-{i:06}"), at(T0), *exp))
        .collect();
    let mut report = Report {
        managers: n,
        ..Report::default()
    };

    let started = wall();
    let before = live();
    let mut managers = Vec::with_capacity(n);
    for jwt in &tokens {
        // Copied in here, so the figure is what a manager holds; the minted text stays outside.
        let manager = AccessManager::builder()
            .clock(clock.clone())
            .refresh_ahead(config.refresh_ahead)
            .initial_token(jwt.as_str())
            // Each manager says at most two things between drains.
            .event_capacity(2)
            .build()
            .expect("a valid initial token");
        managers.push(manager);
    }
    run_until_quiet(|| manual.pending_sleeps() == n).await;
    report.build_wall = wall() - started;
    report.manager_bytes = live() - before;

    // One subscription per manager, each read by a task that notes when (on the fake clock) each
    // event arrived: the clock moves only once the runtime is quiet, so that is when it fired.
    let before = live();
    let seen = Arc::new(Seen::new(n));
    for (i, manager) in managers.iter().enumerate() {
        let mut events = manager.subscribe();
        let seen = seen.clone();
        let clock = manual.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                seen.record(i, &event, clock.now());
            }
        });
    }
    tokio::task::yield_now().await;
    report.subscription_bytes = live() - before;

    // Idle: the clock does not move, so nothing may run. (On `SystemClock` neither: one
    // process-wide watcher re-reads the wall clock and wakes only the sleepers due; the scale
    // example's `--idle-secs` measures it.)
    let polls = clock.polls();
    for _ in 0..config.idle_passes {
        tokio::task::yield_now().await;
    }
    report.idle_polls = clock.polls() - polls;
    report.idle_pending_sleeps = manual.pending_sleeps();
    report.idle_events = seen.total.load(Ordering::Relaxed);

    // Step from deadline to deadline, letting everything due run after each step.
    let started = wall();
    while let Some(deadline) = manual.next_deadline() {
        manual.advance_to(deadline);
        report.steps += 1;
        tokio::task::yield_now().await;
        if !timers_settled(&manual) {
            report.unsettled_steps += 1;
            run_until_quiet(|| timers_settled(&manual)).await;
        }
    }
    report.stepping_wall = wall() - started;
    report.simulated = manual.now().duration_since(at(T0)).unwrap_or_default();
    report.pending_sleeps_after = manual.pending_sleeps();

    for (i, exp) in expiries.iter().enumerate() {
        let lead = config.refresh_ahead;
        for (slot, want) in [
            (&seen.will_expire[i], *exp - lead),
            (&seen.expired[i], *exp),
        ] {
            let got = slot.load(Ordering::Relaxed);
            let want = unix_nanos(want);
            match got {
                0 => report.missing += 1,
                got if got < want => report.early += 1,
                got if got > want => report.late += 1,
                _ => {}
            }
        }
    }
    report.will_expire = seen
        .will_expire
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) != 0)
        .count();
    report.expired = seen
        .expired
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) != 0)
        .count();
    report.duplicate = seen.duplicate.load(Ordering::Relaxed);
    report.unexpected = seen.unexpected.load(Ordering::Relaxed);

    // Dropping the handles stops the drivers; their subscriptions then close and the recording
    // tasks end.
    drop(managers);
    run_until_quiet(|| true).await;
    report
}

//! A fetch storm: many managers whose tokens all expire at one instant, each with a fetcher that
//! answers after a while on the fake clock and records how many fetches run at once.

use super::{at, mint, run_until_quiet, timers_settled, wall, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{fetcher_fn, AccessManager, FetchLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Config {
    pub managers: usize,
    pub refresh_ahead: Duration,
    /// How long each fetch takes, on the fake clock.
    pub fetch_time: Duration,
    /// `refresh_jitter` (zero: none).
    pub jitter: Duration,
    /// A `FetchLimiter` shared by every manager (none: no cap).
    pub limit: Option<NonZeroUsize>,
}

impl Config {
    pub fn new(managers: usize) -> Self {
        Config {
            managers,
            refresh_ahead: Duration::from_secs(180),
            fetch_time: Duration::from_secs(2),
            jitter: Duration::ZERO,
            limit: None,
        }
    }

    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = NonZeroUsize::new(limit);
        self
    }
}

#[derive(Debug)]
pub struct Report {
    pub managers: usize,
    /// When every initial token expires.
    pub expiry: SystemTime,
    /// The most fetches in the fetchers at once.
    pub peak: usize,
    /// The limiter's own peak, when there is one.
    pub limiter_peak: Option<usize>,
    /// When each fetch reached the fetcher, and when each answered, in order.
    pub starts: Vec<SystemTime>,
    pub answers: Vec<SystemTime>,
    /// Managers holding a token from a fetch answered before the initial tokens expired.
    pub refreshed_in_time: usize,
    pub steps: usize,
    pub wall: Duration,
}

impl Report {
    /// The most fetches that started within one whole second of the clock.
    pub fn max_starts_per_second(&self) -> usize {
        let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
        for t in &self.starts {
            let s = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            *per_second.entry(s).or_default() += 1;
        }
        per_second.values().copied().max().unwrap_or(0)
    }

    /// The last answer, relative to the expiry (negative: before it), in seconds.
    pub fn last_answer_vs_expiry(&self) -> f64 {
        let last = *self.answers.last().unwrap_or(&self.expiry);
        match last.duration_since(self.expiry) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        }
    }
}

#[derive(Default)]
struct Gauge {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    starts: Mutex<Vec<SystemTime>>,
    answers: Mutex<Vec<SystemTime>>,
}

/// One fetch in the fetcher; leaves the gauge however the fetch ends (answered or dropped).
struct Running<'a>(&'a Gauge);

impl<'a> Running<'a> {
    fn enter(gauge: &'a Gauge, now: SystemTime) -> Self {
        let running = gauge.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(running, Ordering::SeqCst);
        gauge.starts.lock().unwrap().push(now);
        Running(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub async fn run(config: &Config) -> Report {
    let n = config.managers;
    let clock = ManualClock::new(at(T0));
    let expiry = at(T0 + 3600);
    let limiter = config.limit.map(FetchLimiter::new);
    let gauge = Arc::new(Gauge::default());
    let started = wall();

    let managers: Vec<AccessManager> = (0..n)
        .map(|i| {
            let identity = format!("user-{i:06}");
            let (gauge, fetch_clock, fetch_time) =
                (gauge.clone(), clock.clone(), config.fetch_time);
            let name = identity.clone();
            let fetcher = fetcher_fn(move |_request| {
                let (gauge, clock, identity) = (gauge.clone(), fetch_clock.clone(), name.clone());
                async move {
                    let running = Running::enter(&gauge, clock.now());
                    clock.sleep_until(clock.now() + fetch_time).await;
                    let now = clock.now();
                    drop(running);
                    gauge.answers.lock().unwrap().push(now);
                    Ok(mint(&identity, now, now + Duration::from_secs(3600)))
                }
            });
            let mut builder = AccessManager::builder()
                .clock(clock.clone())
                .refresh_ahead(config.refresh_ahead)
                .refresh_jitter(config.jitter)
                .jitter_seed(i as u64 + 1)
                .initial_token(mint(&identity, at(T0), expiry))
                .fetcher(fetcher);
            if let Some(limiter) = &limiter {
                builder = builder.fetch_limiter(limiter);
            }
            builder.build().expect("a valid configuration")
        })
        .collect();
    run_until_quiet(|| clock.pending_sleeps() == n).await;

    let answered = || gauge.answers.lock().unwrap().len();
    let give_up = expiry + Duration::from_secs(3600);
    let mut steps = 0;
    while answered() < n && clock.now() < give_up {
        let Some(deadline) = clock.next_deadline() else {
            break;
        };
        clock.set(deadline);
        steps += 1;
        run_until_quiet(|| timers_settled(&clock)).await;
    }

    let refreshed_in_time = managers
        .iter()
        .filter(|m| {
            m.token().is_some_and(|t| {
                t.issued_at().is_some_and(|iat| iat < expiry) && t.expires_at() > expiry
            })
        })
        .count();
    let mut starts = std::mem::take(&mut *gauge.starts.lock().unwrap());
    let mut answers = std::mem::take(&mut *gauge.answers.lock().unwrap());
    starts.sort();
    answers.sort();
    drop(managers);
    run_until_quiet(|| true).await;
    Report {
        managers: n,
        expiry,
        peak: gauge.peak.load(Ordering::SeqCst),
        limiter_peak: limiter.as_ref().map(FetchLimiter::peak),
        starts,
        answers,
        refreshed_in_time,
        steps,
        wall: wall() - started,
    }
}

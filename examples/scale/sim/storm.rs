//! A fetch storm: many managers whose tokens all expire at one instant (or that start with no
//! token at all), each with a fetcher that answers after a while on the fake clock and records
//! how many fetches run at once; optionally a backend that pushes back above some concurrency.

use super::{at, mint, run_until_quiet, timers_settled, wall, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{fetcher_fn, AccessManager, FetchError, FetchLimiter};
use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
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
    /// A `FetchLimiter` shared by every manager (none: no cap)…
    pub limit: Option<NonZeroUsize>,
    /// …with this rate (fetches per second).
    pub rate: Option<NonZeroU32>,
    /// The backend answers 429 with `Retry-After: 1` to a fetch arriving while this many run.
    pub throttle_above: Option<usize>,
    /// The managers start with no token (a cold start) instead of tokens expiring together.
    pub cold: bool,
}

impl Config {
    pub fn new(managers: usize) -> Self {
        Config {
            managers,
            refresh_ahead: Duration::from_secs(180),
            fetch_time: Duration::from_secs(2),
            jitter: Duration::ZERO,
            limit: None,
            rate: None,
            throttle_above: None,
            cold: false,
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

    pub fn rate(mut self, rate: u32) -> Self {
        self.rate = NonZeroU32::new(rate);
        self
    }

    pub fn throttle_above(mut self, running: usize) -> Self {
        self.throttle_above = Some(running);
        self
    }

    pub fn cold(mut self) -> Self {
        self.cold = true;
        self
    }
}

#[derive(Debug)]
pub struct Report {
    pub managers: usize,
    /// When the clock started.
    pub start: SystemTime,
    /// When every initial token expires, and its refresh deadline (`exp - refresh_ahead`).
    pub expiry: SystemTime,
    pub deadline: SystemTime,
    /// The most fetches in the fetchers at once (throttled ones included).
    pub peak: usize,
    /// The limiter's own peak, when there is one.
    pub limiter_peak: Option<usize>,
    /// Fetches the backend throttled (429), the first of them, and push-backs the limiter saw.
    pub throttled: usize,
    pub first_throttled: Option<SystemTime>,
    pub pushbacks: u64,
    /// The limiter's fetch estimate at the end.
    pub estimate: Option<Duration>,
    /// When each fetch reached the fetcher (throttled ones included), in order.
    pub starts: Vec<SystemTime>,
    /// When each fetch that brought a token started, and when it answered, in order.
    pub ok_starts: Vec<SystemTime>,
    pub answers: Vec<SystemTime>,
    /// Managers holding a token from a fetch answered before the initial tokens expired, and
    /// before their refresh deadline.
    pub refreshed_in_time: usize,
    pub refreshed_by_deadline: usize,
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
        secs_from(self.expiry, *self.answers.last().unwrap_or(&self.expiry))
    }

    /// The most refreshes that could end before expiry once the backend first throttled, had the
    /// group known its limit from then on (see [`Fits`]).
    pub fn fits_after_throttle(&self, limit: usize, fetch_time: Duration) -> Fits {
        let Some(first) = self.first_throttled else {
            return Fits {
                done: self.managers,
                running: 0,
                rounds: 0,
                total: self.managers,
            };
        };
        let done = self.answers.iter().filter(|&&t| t <= first).count();
        // Fetches take `fetch_time` > 0: those started before `first` and not answered by then
        // were running at `first`.
        let started_before = self.ok_starts.iter().filter(|&&t| t < first).count();
        let running = started_before.saturating_sub(done).min(limit);
        // Back-to-back fetches from `first` end at `first + k * fetch_time`, k >= 1; those before
        // expiry are the k with `k * fetch_time < left`.
        let left = self
            .expiry
            .duration_since(first)
            .unwrap_or_default()
            .as_nanos();
        let rounds = left.saturating_sub(1) / fetch_time.as_nanos().max(1);
        let rounds = usize::try_from(rounds).unwrap_or(usize::MAX);
        let total = done
            .saturating_add(running)
            .saturating_add(rounds.saturating_mul(limit))
            .min(self.managers);
        Fits {
            done,
            running,
            rounds,
            total,
        }
    }

    /// How long after the clock's start the last answer came (a cold start's length), in s.
    pub fn last_answer_vs_start(&self) -> f64 {
        secs_from(self.start, *self.answers.last().unwrap_or(&self.start))
    }

    /// How long before the refresh deadline each successful fetch started, in seconds, sorted
    /// (negative: after it).
    pub fn leads(&self) -> Vec<f64> {
        let mut leads: Vec<f64> = self
            .ok_starts
            .iter()
            .map(|t| -secs_from(self.deadline, *t))
            .collect();
        leads.sort_by(f64::total_cmp);
        leads
    }
}

/// What fits once the backend first pushed back: the refreshes answered by then (`done`); on each
/// slot, one more for a fetch already running then (`running`); and `rounds` of `limit` fetches
/// at once, back to back from the first push-back, that end before expiry. "Before expiry" is
/// counted as `refreshed_in_time` counts it: a token answered at the expiry instant is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fits {
    pub done: usize,
    pub running: usize,
    pub rounds: usize,
    /// `done + running + rounds * limit`, at most the managers.
    pub total: usize,
}

/// `t - from` in seconds, negative when `t` is earlier.
pub fn secs_from(from: SystemTime, t: SystemTime) -> f64 {
    match t.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[derive(Default)]
struct Gauge {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    throttled: AtomicUsize,
    first_throttled: Mutex<Option<SystemTime>>,
    starts: Mutex<Vec<SystemTime>>,
    ok_starts: Mutex<Vec<SystemTime>>,
    answers: Mutex<Vec<SystemTime>>,
}

/// One fetch in the fetcher; leaves the gauge however the fetch ends (answered or dropped).
struct Running<'a>(&'a Gauge);

impl<'a> Running<'a> {
    /// Enters, returning how many run now (this one included).
    fn enter(gauge: &'a Gauge, now: SystemTime) -> (Self, usize) {
        let running = gauge.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(running, Ordering::SeqCst);
        gauge.starts.lock().unwrap().push(now);
        (Running(gauge), running)
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
    let limiter = config.limit.map(|limit| {
        let builder = FetchLimiter::builder(limit).clock(clock.clone());
        match config.rate {
            Some(rate) => builder.rate(rate).build(),
            None => builder.build(),
        }
    });
    let gauge = Arc::new(Gauge::default());
    let started = wall();

    let managers: Vec<AccessManager> = (0..n)
        .map(|i| {
            let identity = format!("user-{i:06}");
            let (gauge, fetch_clock, fetch_time) =
                (gauge.clone(), clock.clone(), config.fetch_time);
            let name = identity.clone();
            let throttle_above = config.throttle_above;
            let fetcher = fetcher_fn(move |_request| {
                let (gauge, clock, identity) = (gauge.clone(), fetch_clock.clone(), name.clone());
                async move {
                    let start = clock.now();
                    let (running, now_running) = Running::enter(&gauge, start);
                    if throttle_above.is_some_and(|limit| now_running > limit) {
                        gauge.throttled.fetch_add(1, Ordering::SeqCst);
                        gauge.first_throttled.lock().unwrap().get_or_insert(start);
                        return Err(FetchError::transient("429 Too Many Requests")
                            .with_retry_after(Duration::from_secs(1)));
                    }
                    clock.sleep_until(start + fetch_time).await;
                    let now = clock.now();
                    drop(running);
                    gauge.ok_starts.lock().unwrap().push(start);
                    gauge.answers.lock().unwrap().push(now);
                    Ok(mint(&identity, now, now + Duration::from_secs(3600)))
                }
            });
            let mut builder = AccessManager::builder()
                .clock(clock.clone())
                .refresh_ahead(config.refresh_ahead)
                .refresh_jitter(config.jitter)
                .jitter_seed(i as u64 + 1)
                .fetcher(fetcher);
            if !config.cold {
                builder = builder.initial_token(mint(&identity, at(T0), expiry));
            }
            if let Some(limiter) = &limiter {
                builder = builder.fetch_limiter(limiter);
            }
            builder.build().expect("a valid configuration")
        })
        .collect();
    if !config.cold {
        // One timer per manager, and the limiter's.
        run_until_quiet(|| clock.pending_sleeps() >= n).await;
    }

    let answered = || gauge.answers.lock().unwrap().len();
    let give_up = expiry + Duration::from_secs(3600);
    let mut steps = 0;
    while answered() < n && clock.now() < give_up {
        run_until_quiet(|| timers_settled(&clock)).await;
        if answered() >= n {
            break;
        }
        let Some(deadline) = clock.next_deadline() else {
            break;
        };
        clock.advance_to(deadline);
        steps += 1;
        run_until_quiet(|| timers_settled(&clock)).await;
    }

    let deadline = expiry - config.refresh_ahead;
    let fetched_by = |by: SystemTime| {
        managers
            .iter()
            .filter(|m| {
                m.token().is_some_and(|t| {
                    t.issued_at().is_some_and(|iat| iat <= by) && t.expires_at() > expiry
                })
            })
            .count()
    };
    let refreshed_in_time = fetched_by(expiry - Duration::from_secs(1));
    let refreshed_by_deadline = fetched_by(deadline);
    let take = |v: &Mutex<Vec<SystemTime>>| {
        let mut v = std::mem::take(&mut *v.lock().unwrap());
        v.sort();
        v
    };
    let (starts, ok_starts, answers) = (
        take(&gauge.starts),
        take(&gauge.ok_starts),
        take(&gauge.answers),
    );
    let first_throttled = *gauge.first_throttled.lock().unwrap();
    drop(managers);
    run_until_quiet(|| true).await;
    Report {
        managers: n,
        start: at(T0),
        expiry,
        deadline,
        peak: gauge.peak.load(Ordering::SeqCst),
        limiter_peak: limiter.as_ref().map(FetchLimiter::peak),
        throttled: gauge.throttled.load(Ordering::SeqCst),
        first_throttled,
        pushbacks: limiter.as_ref().map_or(0, FetchLimiter::pushbacks),
        estimate: limiter.as_ref().map(FetchLimiter::fetch_estimate),
        starts,
        ok_starts,
        answers,
        refreshed_in_time,
        refreshed_by_deadline,
        steps,
        wall: wall() - started,
    }
}

//! Steady state: many managers whose tokens were issued at random times refresh for hours through
//! one shared limiter; the backend's load per minute is recorded.

use super::{at, mint, run_until_quiet, timers_settled, wall, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{fetcher_fn, AccessManager, FetchLimiter};
use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub managers: usize,
    /// How long the simulation runs, on the fake clock.
    pub run_for: Duration,
    /// Each token's life (the initial ones were issued at random times within one life).
    pub ttl: Duration,
    pub refresh_ahead: Duration,
    pub fetch_time: Duration,
    pub limit: NonZeroUsize,
    pub rate: Option<NonZeroU32>,
    pub seed: u64,
}

impl Config {
    pub fn new(managers: usize, run_for: Duration) -> Self {
        Config {
            managers,
            run_for,
            ttl: Duration::from_secs(3600),
            refresh_ahead: Duration::from_secs(180),
            fetch_time: Duration::from_secs(2),
            limit: NonZeroUsize::new(64).unwrap(),
            rate: None,
            seed: 7,
        }
    }

    pub fn rate(mut self, rate: u32) -> Self {
        self.rate = NonZeroU32::new(rate);
        self
    }
}

#[derive(Debug)]
pub struct Report {
    pub managers: usize,
    /// Fetch starts per whole minute of the run.
    pub per_minute: Vec<usize>,
    pub fetches: usize,
    /// Fetches that answered after the refresh deadline of the token they replaced, and after
    /// its expiry.
    pub after_deadline: usize,
    pub after_expiry: usize,
    pub peak_concurrent: usize,
    pub wall: Duration,
}

impl Report {
    pub fn mean_per_minute(&self) -> f64 {
        self.per_minute.iter().sum::<usize>() as f64 / self.per_minute.len().max(1) as f64
    }

    pub fn peak_per_minute(&self) -> usize {
        self.per_minute.iter().copied().max().unwrap_or(0)
    }

    /// The busiest minute over the mean minute.
    pub fn peak_to_mean(&self) -> f64 {
        self.peak_per_minute() as f64 / self.mean_per_minute().max(f64::MIN_POSITIVE)
    }
}

#[derive(Default)]
struct Backend {
    starts: Mutex<BTreeMap<u64, usize>>,
    after_deadline: AtomicUsize,
    after_expiry: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

pub async fn run(config: &Config) -> Report {
    let n = config.managers;
    let clock = ManualClock::new(at(T0));
    let mut builder = FetchLimiter::builder(config.limit).clock(clock.clone());
    if let Some(rate) = config.rate {
        builder = builder.rate(rate);
    }
    let limiter = builder.build();
    let backend = Arc::new(Backend::default());
    let started = wall();
    let mut x = config.seed;
    let window = (config.ttl - config.refresh_ahead).as_secs() - 20;
    let managers: Vec<AccessManager> = (0..n)
        .map(|i| {
            // SplitMix64: the initial token's age, uniform in the first `window` seconds.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let age = Duration::from_millis((z ^ (z >> 31)) % (window * 1000));
            let iat = at(T0) - age;
            let identity = format!("user-{i:06}");
            let (clock2, backend2, name) = (clock.clone(), backend.clone(), identity.clone());
            let (ttl, lead, fetch_time) = (config.ttl, config.refresh_ahead, config.fetch_time);
            let fetcher = fetcher_fn(move |request| {
                let (clock, backend, name) = (clock2.clone(), backend2.clone(), name.clone());
                let held = request.current().map(|t| t.expires_at());
                async move {
                    let start = clock.now();
                    let minute = start.duration_since(at(T0)).unwrap_or_default().as_secs() / 60;
                    *backend.starts.lock().unwrap().entry(minute).or_default() += 1;
                    let running = backend.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    backend.peak.fetch_max(running, Ordering::SeqCst);
                    clock.sleep_until(start + fetch_time).await;
                    backend.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let now = clock.now();
                    if let Some(exp) = held {
                        if now > exp - lead {
                            backend.after_deadline.fetch_add(1, Ordering::SeqCst);
                        }
                        if now >= exp {
                            backend.after_expiry.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(mint(&name, now, now + ttl))
                }
            });
            AccessManager::builder()
                .clock(clock.clone())
                .refresh_ahead(config.refresh_ahead)
                .initial_token(mint(&identity, iat, iat + config.ttl))
                .fetch_limiter(&limiter)
                .fetcher(fetcher)
                .build()
                .expect("a valid configuration")
        })
        .collect();
    run_until_quiet(|| clock.pending_sleeps() >= n).await;

    let end = at(T0) + config.run_for;
    while let Some(next) = clock.next_deadline() {
        if next >= end {
            break;
        }
        clock.advance_to(next);
        run_until_quiet(|| timers_settled(&clock)).await;
    }
    let minutes = config.run_for.as_secs() / 60;
    let starts = backend.starts.lock().unwrap().clone();
    let per_minute: Vec<usize> = (0..minutes)
        .map(|m| starts.get(&m).copied().unwrap_or(0))
        .collect();
    drop(managers);
    run_until_quiet(|| true).await;
    Report {
        managers: n,
        fetches: per_minute.iter().sum(),
        per_minute,
        after_deadline: backend.after_deadline.load(Ordering::SeqCst),
        after_expiry: backend.after_expiry.load(Ordering::SeqCst),
        peak_concurrent: backend.peak.load(Ordering::SeqCst),
        wall: wall() - started,
    }
}

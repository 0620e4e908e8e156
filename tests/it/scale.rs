//! Many managers on one fake clock: a small run of `examples/scale` (the same code, included), with
//! its figures asserted. Timers fire at their exact instants; idle managers do no work; fetch storms
//! are capped by a `FetchLimiter` and spread by `refresh_jitter`.

#[path = "../../examples/scale/sim/mod.rs"]
pub(crate) mod sim;

use sim::{deadlines, storm};
use std::time::{Duration, SystemTime};

fn no_heap_count() -> isize {
    0
}

#[test]
fn every_will_expire_and_expired_of_2000_managers_fires_at_its_exact_instant() {
    let config = deadlines::Config::new(2_000, Duration::from_secs(600));
    let r = sim::runtime().block_on(deadlines::run(&config, no_heap_count));
    assert_eq!((r.will_expire, r.expired), (2_000, 2_000));
    assert_eq!(
        (r.early, r.late, r.missing, r.duplicate, r.unexpected),
        (0, 0, 0, 0, 0),
        "{r:?}"
    );
    // Expiries on 600 distinct seconds, WillExpire 180 s before: 780 distinct instants.
    assert_eq!(r.steps, 780);
    assert_eq!(r.unsettled_steps, 0, "a timer due fired late");
    assert_eq!(r.pending_sleeps_after, 0, "a timer outlived its token");
}

#[test]
fn idle_managers_on_a_still_clock_are_never_polled() {
    let mut config = deadlines::Config::new(500, Duration::from_secs(60));
    config.idle_passes = 5_000;
    let r = sim::runtime().block_on(deadlines::run(&config, no_heap_count));
    assert_eq!(r.idle_pending_sleeps, 500, "one timer per manager");
    assert_eq!(r.idle_polls, 0, "a driver ran with the clock still");
    assert_eq!(r.idle_events, 0);
}

fn secs_from(expiry: SystemTime, t: SystemTime) -> f64 {
    match t.duration_since(expiry) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[test]
fn a_storm_without_limiter_or_jitter_fetches_for_every_manager_at_once() {
    let r = sim::runtime().block_on(storm::run(&storm::Config::new(500)));
    assert_eq!(r.peak, 500);
    assert_eq!(r.refreshed_in_time, 500);
}

#[test]
fn a_fetch_limiter_caps_a_storm_and_every_manager_still_refreshes_before_expiry() {
    let config = storm::Config::new(1_000).limit(64);
    let r = sim::runtime().block_on(storm::run(&config));
    assert_eq!(r.peak, 64, "the limiter should bind, and never be exceeded");
    assert_eq!(r.limiter_peak, Some(64));
    assert_eq!(r.starts.len(), 1_000, "one fetch per manager");
    assert_eq!(r.refreshed_in_time, 1_000);
    assert!(*r.answers.last().unwrap() < r.expiry);
}

#[test]
fn refresh_jitter_spreads_a_storm_over_the_jitter_window() {
    let n = 1_000;
    let config = storm::Config::new(n).jitter(Duration::from_secs(120));
    let r = sim::runtime().block_on(storm::run(&config));
    assert_eq!(r.starts.len(), n);
    let offsets: Vec<f64> = r.starts.iter().map(|t| secs_from(r.expiry, *t)).collect();
    assert!(
        offsets.iter().all(|s| (-180.0..=-60.0).contains(s)),
        "a refresh outside [exp - lead, exp - lead + jitter]"
    );
    // Spread over the whole window, no second holding more than 3 % of the fetches (even would
    // be 0.8 %), and far fewer at once than managers.
    assert!(offsets[0] < -175.0 && offsets[n - 1] > -65.0, "{offsets:?}");
    assert!(
        r.max_starts_per_second() <= n * 3 / 100,
        "{}",
        r.max_starts_per_second()
    );
    assert!(r.peak <= n / 10, "peak {}", r.peak);
    assert_eq!(r.refreshed_in_time, n);
}

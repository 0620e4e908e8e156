//! A `FetchLimiter` shared by many managers: refreshes planned back from their deadlines, slots
//! given earliest deadline first, the fetch duration learned, the rate kept, the whole group paused
//! by a backend pushing back and held below the ceiling it showed until quiet periods give slots
//! back, and no slot or ticket left behind.

use crate::common::*;
use crate::scale::sim;
use access_manager::{AccessManager, FetchError, FetchLimiter};
use sim::storm;
use std::num::NonZeroUsize;

fn limiter(clock: &access_manager::clock::ManualClock, slots: usize) -> FetchLimiter {
    FetchLimiter::builder(NonZeroUsize::new(slots).unwrap())
        .clock(clock.clone())
        .initial_fetch_estimate(secs(10))
        .build()
}

/// A manager holding a token that reaches its refresh deadline (`exp - 180 s`) `deadline` seconds
/// after `T0`, fetching through `fetcher` and sharing `limiter`.
fn sharing(
    clock: &access_manager::clock::ManualClock,
    limiter: &FetchLimiter,
    who: &str,
    deadline: u64,
    fetcher: ScriptedFetcher,
) -> AccessManager {
    fetching(clock, fetcher)
        .initial_token(mint(who, T0, deadline + 180))
        .fetch_limiter(limiter)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_refresh_starts_when_the_plan_needs_it_and_no_earlier() {
    let clock = clock();
    let limiter = limiter(&clock, 1);
    let mut fetchers = Vec::new();
    let mut managers = Vec::new();
    for who in ["ann", "bob", "cat"] {
        let (fetcher, calls) = scripted();
        managers.push(sharing(&clock, &limiter, who, 1200, fetcher));
        fetchers.push(calls);
    }
    settle().await;
    assert_eq!(limiter.planned(), 3);
    // Three refreshes of 10 s, one at a time, due at T0 + 1200: the first starts at T0 + 1170.
    clock.advance(secs(1169));
    settle().await;
    assert_eq!(fetchers.iter().map(Calls::made).sum::<usize>(), 0);
    clock.advance(secs(1));
    settle().await;
    assert_eq!(fetchers.iter().map(Calls::made).sum::<usize>(), 1);
    assert_eq!(limiter.planned(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn slots_go_to_the_earliest_deadline_not_the_first_to_ask() {
    let clock = clock();
    let limiter = limiter(&clock, 1);
    let (holder_fetcher, mut holder) = scripted();
    let (late_fetcher, mut late) = scripted();
    let (early_fetcher, mut early) = scripted();
    let holder_manager = sharing(&clock, &limiter, "holder", 3000, holder_fetcher);
    let late_manager = sharing(&clock, &limiter, "late", 3000, late_fetcher);
    let early_manager = sharing(&clock, &limiter, "early", 2000, early_fetcher);
    settle().await;
    // The one slot is taken; the later deadline asks first, then the earlier one.
    let _holding = spawn_refresh(&holder_manager);
    let held = holder.next().await;
    let _late = spawn_refresh(&late_manager);
    settle().await;
    let _early = spawn_refresh(&early_manager);
    settle().await;
    assert_eq!((late.made(), early.made()), (0, 0), "only one slot");
    held.ok(mint("holder", T0, 3600));
    let call = early.next().await;
    assert_eq!(late.made(), 0, "the later deadline went first");
    call.ok(mint("early", T0, 3600));
    late.next().await.ok(mint("late", T0, 3600));
    assert_eq!(limiter.peak(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_fetch_estimate_is_learned_from_the_durations_observed() {
    let clock = clock();
    let limiter = limiter(&clock, 4);
    assert_eq!(limiter.fetch_estimate(), secs(10), "the initial estimate");
    let (fetcher, mut calls) = scripted();
    let manager = sharing(&clock, &limiter, "ann", 5000, fetcher);
    for _ in 0..3 {
        let refresh = spawn_refresh(&manager);
        let call = calls.next().await;
        clock.advance(secs(3));
        call.ok(mint("ann", T0, 3600));
        refresh.await.unwrap().unwrap();
    }
    assert_eq!(limiter.fetch_estimate(), secs(3));
}

#[tokio::test(flavor = "current_thread")]
async fn a_push_back_pauses_the_whole_group_and_cuts_its_pace() {
    let clock = clock();
    let limiter = limiter(&clock, 4);
    let (first_fetcher, mut first) = scripted();
    let (other_fetcher, mut other) = scripted();
    let first_manager = sharing(&clock, &limiter, "first", 5000, first_fetcher);
    let other_manager = sharing(&clock, &limiter, "other", 5000, other_fetcher);
    settle().await;
    let _refused = spawn_refresh(&first_manager);
    first
        .next()
        .await
        .answer(Err(FetchError::transient("429").with_retry_after(secs(30))));
    settle().await;
    assert_eq!(limiter.pushbacks(), 1);
    assert_eq!(limiter.current_limit(), 1, "refused with one running");
    // Another manager of the group waits out the backend's Retry-After too.
    let _waiting = spawn_refresh(&other_manager);
    settle().await;
    assert_eq!(other.made(), 0, "a manager ignored the group's push-back");
    clock.advance(secs(29));
    settle().await;
    assert_eq!(other.made(), 0);
    clock.advance(secs(1));
    other.next().await.ok(mint("other", T0 + 30, 3600));
}

/// A group of `members` managers sharing a limiter of `slots` (deadlines far off): `running` of
/// them fetch at once and the backend refuses the last to go out (429, `Retry-After: 1`) and
/// answers the others; the refused manager is then shut down, so that nothing runs. The clock
/// stands at the push-back.
async fn pushed_back(
    clock: &access_manager::clock::ManualClock,
    slots: usize,
    members: usize,
    running: usize,
) -> (FetchLimiter, Vec<AccessManager>, Vec<Calls>) {
    let limiter = limiter(clock, slots);
    let (mut managers, mut calls) = (Vec::new(), Vec::new());
    for i in 0..members {
        let (fetcher, made) = scripted();
        managers.push(sharing(clock, &limiter, &format!("m{i}"), 5000, fetcher));
        calls.push(made);
    }
    settle().await;
    let mut held = Vec::new();
    for (manager, made) in managers.iter().zip(&mut calls).take(running) {
        let _refresh = spawn_refresh(manager);
        held.push(made.next().await);
    }
    assert_eq!(limiter.in_flight(), running);
    let refused = held.pop().unwrap();
    refused.answer(Err(FetchError::transient("429").with_retry_after(secs(1))));
    settle().await;
    assert_eq!(limiter.pushbacks(), 1);
    managers[running - 1].shutdown().await;
    for (i, call) in held.into_iter().enumerate() {
        call.ok(mint(&format!("m{i}"), T0, 7200));
    }
    settle().await;
    assert_eq!(limiter.in_flight(), 0);
    (limiter, managers, calls)
}

#[tokio::test(flavor = "current_thread")]
async fn a_push_back_holds_the_group_just_below_the_fetches_running_when_it_came() {
    let clock = clock();
    let (limiter, managers, mut calls) = pushed_back(&clock, 8, 10, 5).await;
    assert_eq!(limiter.current_limit(), 4, "refused with 5 running");
    // Once the pause is over, five more refreshes: four go out, the fifth waits for a slot.
    clock.advance(secs(1));
    let refreshes: Vec<_> = managers[5..].iter().map(spawn_refresh).collect();
    settle().await;
    assert_eq!((limiter.in_flight(), limiter.waiting()), (4, 1));
    for (i, made) in calls[5..].iter_mut().enumerate() {
        made.next()
            .await
            .ok(mint(&format!("m{}", i + 5), T0 + 1, 7200));
    }
    for refresh in refreshes {
        refresh.await.unwrap().unwrap();
    }
    assert_eq!(
        limiter.peak(),
        5,
        "never more than 4 at once after the push-back"
    );
    // No climb back above the ceiling before a quiet period has passed.
    clock.advance(FetchLimiter::QUIET_PERIOD - secs(2));
    assert_eq!(limiter.current_limit(), 4);
    clock.advance(secs(1));
    assert_eq!(
        limiter.current_limit(),
        5,
        "one slot above, after a quiet period"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn after_quiet_periods_without_push_back_the_group_recovers_its_full_capacity() {
    let clock = clock();
    let (limiter, _managers, _calls) = pushed_back(&clock, 8, 5, 5).await;
    let mut limits = vec![limiter.current_limit()];
    for _ in 0..4 {
        clock.advance(FetchLimiter::QUIET_PERIOD);
        limits.push(limiter.current_limit());
    }
    // One slot above the ceiling, then two more, then four: back to all 8.
    assert_eq!(limits, [4, 5, 7, 8, 8]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_probe_holds_the_group_at_the_ceiling_again() {
    let clock = clock();
    let (limiter, managers, mut calls) = pushed_back(&clock, 8, 10, 5).await;
    clock.advance(FetchLimiter::QUIET_PERIOD);
    assert_eq!(limiter.current_limit(), 5);
    // The probe: five at once again, and the backend refuses the fifth again.
    let mut held = Vec::new();
    for (manager, made) in managers[5..].iter().zip(&mut calls[5..]) {
        let _refresh = spawn_refresh(manager);
        held.push(made.next().await);
    }
    held.pop()
        .unwrap()
        .answer(Err(FetchError::transient("429").with_retry_after(secs(1))));
    settle().await;
    assert_eq!(limiter.current_limit(), 4);
    // The quiet period starts again from the refused probe.
    clock.advance(FetchLimiter::QUIET_PERIOD - secs(1));
    assert_eq!(limiter.current_limit(), 4);
    drop(held);
}

#[test]
fn a_group_that_learns_the_backends_ceiling_refreshes_everything_that_fits() {
    // A lead of 10 s: 1 040 refreshes at the 32 the backend takes do not all fit. Planned with the
    // initial 5 s estimate, 16 go first; the other 1 024 are planned with the 2 s learned, at 64,
    // so the backend first pushes back 32 s before the deadline.
    let mut config = storm::Config::new(1_040).limit(64).throttle_above(32);
    config.refresh_ahead = secs(10);
    let r = sim::runtime().block_on(storm::run(&config));
    let fits = r.fits_after_throttle(32, secs(2));
    assert!(fits.total < 1_040, "{fits:?}");
    assert!(
        r.refreshed_in_time >= fits.total,
        "{} refreshed before expiry, {fits:?} fit; {} throttled",
        r.refreshed_in_time,
        r.throttled
    );
    assert!(r.peak <= 33, "peak {}", r.peak);
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetch_dropped_while_waiting_for_a_slot_leaves_no_slot_or_ticket_behind() {
    let clock = clock();
    let limiter = limiter(&clock, 1);
    let (holder_fetcher, mut holder) = scripted();
    let (waiting_fetcher, waiting) = scripted();
    let holder_manager = sharing(&clock, &limiter, "holder", 3000, holder_fetcher);
    let waiting_manager = sharing(&clock, &limiter, "waiting", 3000, waiting_fetcher);
    settle().await;
    let _holding = spawn_refresh(&holder_manager);
    let held = holder.next().await;
    let _refresh = spawn_refresh(&waiting_manager);
    settle().await;
    assert_eq!((limiter.in_flight(), waiting.made()), (1, 0));
    waiting_manager.shutdown().await;
    held.ok(mint("holder", T0, 3600));
    settle().await;
    assert_eq!(limiter.in_flight(), 0, "a slot leaked");
    assert_eq!(waiting.made(), 0);
    drop(holder_manager);
    settle().await;
    assert_eq!(
        limiter.planned(),
        0,
        "a stopped manager's ticket stayed in the plan"
    );
}

#[test]
fn a_storm_is_refreshed_before_every_deadline_without_exceeding_the_slots() {
    let n = 1_000;
    let r = sim::runtime().block_on(storm::run(&storm::Config::new(n).limit(16)));
    assert_eq!(r.refreshed_by_deadline, n);
    assert!(
        r.peak <= 16 && r.limiter_peak == Some(16),
        "peak {}",
        r.peak
    );
    // 1000 fetches of 2 s on 16 slots take 126 s: planned with the initial 5 s estimate, the
    // first start 315 s ahead; learned 2 s, the rest no earlier than the 2 s plan needs.
    let leads = r.leads();
    assert!(leads[0] >= 0.0, "a refresh ended after its deadline");
    assert!(*leads.last().unwrap() <= 315.0, "{leads:?}");
    assert!(
        leads[n / 2] <= 126.0,
        "the median refresh ran early: {}",
        leads[n / 2]
    );
    assert_eq!(r.estimate, Some(secs(2)));
}

#[test]
fn a_cold_start_keeps_the_rate_and_ends_within_five_percent_of_the_optimum() {
    let n = 400;
    let config = storm::Config::new(n).cold().limit(64).rate(20);
    let r = sim::runtime().block_on(storm::run(&config));
    assert_eq!(r.answers.len(), n);
    assert!(
        r.max_starts_per_second() <= 20,
        "{}",
        r.max_starts_per_second()
    );
    // 400 at 20/s: 20 s, and one fetch of 2 s.
    let took = r.last_answer_vs_start();
    assert!(took <= 20.0 * 1.05 + 2.0, "took {took} s");
}

#[test]
fn a_backend_throttling_the_group_slows_it_and_every_token_is_still_refreshed_in_time() {
    let n = 500;
    let config = storm::Config::new(n).limit(64).throttle_above(32);
    let r = sim::runtime().block_on(storm::run(&config));
    assert_eq!(
        r.refreshed_in_time,
        n,
        "last answer exp{:+}",
        r.last_answer_vs_expiry()
    );
    assert!(r.pushbacks >= 1);
    assert!(r.throttled < n / 10, "{} fetches throttled", r.throttled);
}

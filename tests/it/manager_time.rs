//! Behaviour 15: timeouts, backoff and spacing run on elapsed time, so a wall-clock change neither
//! stretches nor shortens them; token deadlines follow the wall clock.

use crate::common::*;
use access_manager::clock::{Clock, ManualClock, Sleep};
use access_manager::{AccessManager, FetchReason, RefreshError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "current_thread")]
async fn setting_the_wall_clock_back_an_hour_during_a_fetch_does_not_stretch_its_timeout() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 7200))
        .build()
        .unwrap();
    let refresh = spawn_refresh(&manager);
    let hanging = calls.next().await;
    clock.set(at(T0 - 3600));
    clock.advance(secs(29));
    settle().await;
    assert!(!refresh.is_finished(), "timed out early");
    clock.advance(secs(1));
    match refresh.await.unwrap() {
        Err(RefreshError::Fetch(e)) => assert!(e.to_string().contains("timed out"), "{e}"),
        other => panic!("expected the 30 s timeout, got {other:?}"),
    }
    assert!(hanging.abandoned());
}

#[tokio::test(flavor = "current_thread")]
async fn setting_the_wall_clock_forward_does_not_cut_a_fetch_short() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 7200))
        .build()
        .unwrap();
    let refresh = spawn_refresh(&manager);
    let slow = calls.next().await;
    clock.set(at(T0 + 600));
    settle().await;
    assert!(!slow.abandoned(), "a wall-clock jump timed the fetch out");
    slow.ok(mint("alice", T0 + 600, 3600));
    assert!(refresh.await.unwrap().is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn setting_the_wall_clock_back_does_not_stretch_a_consumers_timeout() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 7200));
    let stuck = Recorder::new("stuck", Mode::Accept);
    manager.register(&stuck);
    stuck.wait_calls(1).await;
    stuck.set_mode(Mode::Hang);
    let update = tokio::spawn(manager.update_token(mint("alice", T0 + 1, 7200)));
    stuck.wait_calls(2).await;
    clock.set(at(T0 - 3600));
    clock.advance(secs(10));
    let report = update.await.unwrap().unwrap();
    let failed: Vec<_> = report
        .failed()
        .map(|(name, e)| (name.to_owned(), e.to_string()))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].1.contains("did not answer within 10 s"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn backoff_waits_elapsed_time_whatever_the_wall_clock_does() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let _manager = fetching(&clock, fetcher).build().unwrap();
    calls.next().await.fail("down"); // retry in 1 s, then 2 s
    settle().await;
    clock.set(at(T0 - 3600)); // back an hour: the retry must not wait an hour more
    clock.advance(secs(1));
    let second = calls.next().await;
    assert_eq!(second.request.attempt(), 2);
    second.fail("down");
    settle().await;
    clock.set(at(T0 + 86_400)); // forward a day: the 2 s backoff must not be skipped
    assert!(
        calls.try_next().await.is_none(),
        "a wall-clock jump cut the backoff short"
    );
    clock.advance(secs(2));
    assert_eq!(calls.next().await.request.attempt(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn token_deadlines_follow_the_wall_clock() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    // A jump past expiry (a laptop waking up) fires both timers and starts fetching at once.
    clock.set(at(T0 + 3600 + 60));
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire", "expired"]);
    assert_eq!(calls.next().await.request.reason(), FetchReason::Expired);
    assert!(manager.is_expired());
    assert!(clock.now() > at(T0 + 3600));
}

/// A manual clock that counts the wall-clock timers armed on it.
#[derive(Debug, Clone)]
struct CountingClock(ManualClock, Arc<AtomicUsize>);

impl Clock for CountingClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.sleep_until(deadline)
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        self.0.sleep(duration)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_timer_armed_early_enough_is_kept_for_later_tokens_and_re_armed_when_it_fires() {
    let clock = clock();
    let armed = Arc::new(AtomicUsize::new(0));
    let manager = AccessManager::builder()
        .clock(CountingClock(clock.clone(), armed.clone()))
        .initial_token(mint("alice", T0, 600))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    settle().await;
    assert_eq!(armed.load(Ordering::SeqCst), 1, "WillExpire at T0 + 420");
    // Longer tokens: the timer armed for T0 + 420 wakes the manager early enough for each.
    for i in 1..=3 {
        let report = manager.update_token(mint("alice", T0 + i, 3600)).await;
        assert!(report.unwrap().changed());
    }
    settle().await;
    assert_eq!(
        armed.load(Ordering::SeqCst),
        1,
        "a timer was armed for each update although the one armed was early enough"
    );
    // The early wake fires nothing and arms the timer for the current token's WillExpire.
    clock.advance_to(at(T0 + 420));
    assert_eq!(kinds(&drain(&mut events).await), ["updated"; 3]);
    assert_eq!(armed.load(Ordering::SeqCst), 2);
    clock.advance_to(at(T0 + 3 + 3600 - 180 - 1));
    assert!(drain(&mut events).await.is_empty(), "WillExpire early");
    clock.advance(secs(1));
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire"]);
}

// ---------------------------------------------------------------------------------------------
// Behaviour 18: a spacing wait only guards a token that is still valid.

/// A manager holding a 24 h token that the backend handed back to `refresh()` (a caching backend):
/// the next automatic fetch waits for the refresh window and for half the token's remaining life,
/// 12 h of elapsed time.
async fn handed_back_a_day_token(clock: &ManualClock) -> (AccessManager, Calls) {
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 24 * 3600);
    let manager = fetching(clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    let refresh = spawn_refresh(&manager);
    calls.next().await.ok(held.clone());
    assert_eq!(refresh.await.unwrap().unwrap().as_str(), held);
    assert_eq!(
        manager.stats().next_fetch_at,
        Some(at(T0 + 24 * 3600 - 180))
    );
    (manager, calls)
}

#[tokio::test(flavor = "current_thread")]
async fn b18_a_sleep_past_expiry_fetches_at_once_whatever_spacing_was_left() {
    let clock = clock();
    let (manager, mut calls) = handed_back_a_day_token(&clock).await;
    // The laptop sleeps a day and a bit: the wall clock moves, elapsed time does not.
    clock.set(at(T0 + 25 * 3600));
    let call = calls
        .try_next()
        .await
        .expect("no fetch for an expired token");
    assert_eq!(call.request.reason(), FetchReason::Expired);
    assert!(manager.is_expired());
}

#[tokio::test(flavor = "current_thread")]
async fn b18_resume_after_a_sleep_past_expiry_fetches_at_once() {
    let clock = clock();
    let (manager, mut calls) = handed_back_a_day_token(&clock).await;
    clock.set(at(T0 + 25 * 3600));
    manager.resume();
    let call = calls
        .try_next()
        .await
        .expect("no fetch for an expired token");
    assert_eq!(call.request.reason(), FetchReason::Expired);
}

#[tokio::test(flavor = "current_thread")]
async fn b7_resume_never_shortens_the_spacing_that_guards_a_valid_token() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 300);
    let manager = fetching(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    clock.advance(secs(180));
    // In the refresh window the backend hands back the token held, 120 s from its expiry: the
    // next fetch waits 60 s.
    calls.next().await.ok(held.clone());
    settle().await;
    for _ in 0..20 {
        manager.resume();
    }
    assert!(calls.try_next().await.is_none(), "resume() cut the spacing");
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 180 + 60)));
    clock.advance(secs(60));
    assert!(
        calls.try_next().await.is_some(),
        "no fetch once the spacing is over"
    );
}

//! Behaviours 5–7 and 10 of DESIGN.md: fetching in time, one fetch at a time, retries, short tokens.

use crate::common::*;
use access_manager::clock::{Clock, ManualClock};
use access_manager::{AccessManager, Backoff, Event, FetchError, FetchReason, RefreshError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn exact_backoff() -> Backoff {
    Backoff::default().without_jitter()
}

fn with_fetcher(clock: &ManualClock, fetcher: ScriptedFetcher) -> AccessManager {
    fetching(clock, fetcher).build().unwrap()
}

fn retry_at(e: &Event) -> Option<SystemTime> {
    match e {
        Event::RefreshFailed { retry_at, .. } => *retry_at,
        other => panic!("expected RefreshFailed, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn b5_without_a_token_the_manager_fetches_at_once_and_early_callers_join_that_fetch() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher);
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Initial);
    assert_eq!(call.request.attempt(), 1);
    assert!(call.request.current().is_none());

    let waiting = spawn_refreshers(&manager, 3, secs(60));
    settle().await;
    let jwt = mint("alice", T0, 3600);
    call.ok(jwt.clone());
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap().as_str(), jwt);
    }
    assert_eq!(
        calls.made(),
        1,
        "the early callers started fetches of their own"
    );
    assert_eq!(manager.token().unwrap().as_str(), jwt);
}

#[tokio::test(flavor = "current_thread")]
async fn b5_at_will_expire_the_fetcher_is_called_and_after_exp_fetching_goes_on_as_expired() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(mint("alice", T0, 600))
        .backoff(exact_backoff())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    assert!(
        calls.try_next().await.is_none(),
        "fetched although the token is fresh"
    );

    clock.advance_to(at(T0 + 600 - 180));
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::WillExpire);
    assert_eq!(call.request.current().unwrap().identity(), Some("alice"));
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire"]);

    // The backend fails until after expiry: Expired fires, and the next attempt says so.
    call.fail("backend down");
    let failed = next(&mut events).await;
    assert_eq!(retry_at(&failed), Some(at(T0 + 600 - 180 + 1)));
    clock.advance_to(at(T0 + 600));
    let expired = drain(&mut events).await;
    assert_eq!(kinds(&expired), ["expired"]);
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Expired);
    assert_eq!(call.request.attempt(), 2);
    let fresh = mint("alice", T0 + 600, 3600);
    call.ok(fresh.clone());
    assert_eq!(kinds(&drain(&mut events).await), ["updated"]);
    assert_eq!(manager.token().unwrap().as_str(), fresh);
    assert!(!manager.is_expired());
}

#[tokio::test(flavor = "current_thread")]
async fn b5_failures_keep_the_token_and_back_off_exponentially_to_the_cap() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(&held)
        .refresh_ahead(secs(600))
        .backoff(exact_backoff())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    clock.advance_to(at(T0 + 3000));
    let mut waits = Vec::new();
    for attempt in 1..=9u32 {
        let call = calls.next().await;
        assert_eq!(call.request.attempt(), attempt);
        let now = clock.now();
        call.fail("503");
        let failed = loop {
            let e = next(&mut events).await;
            if matches!(e, Event::RefreshFailed { .. }) {
                break e;
            }
        };
        match &failed {
            Event::RefreshFailed {
                attempt: a, error, ..
            } => {
                assert_eq!(*a, attempt);
                assert!(error.contains("503"), "{error}");
            }
            _ => unreachable!(),
        }
        let at = retry_at(&failed).unwrap();
        waits.push(at.duration_since(now).unwrap().as_secs());
        assert_eq!(
            manager.token().unwrap().as_str(),
            held,
            "a failure cost the token"
        );
        // Nothing happens a second early.
        clock.advance_to(at - secs(1));
        assert!(calls.try_next().await.is_none(), "retried early");
        clock.advance_to(at);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

#[tokio::test(flavor = "current_thread")]
async fn b5_an_outage_longer_than_the_tokens_life_then_recovery() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(mint("alice", T0, 300))
        .backoff(exact_backoff())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let consumer = Recorder::new("chat", Mode::Accept);
    manager.register(&consumer);
    consumer.wait_calls(1).await;

    // Fail every attempt for an hour of fake time, stepping to each retry.
    clock.advance_to(at(T0 + 120));
    let mut attempts = 0;
    while clock.now() < at(T0 + 3600) {
        // Step from timer to timer; answer each fetch with a failure.
        if let Some(call) = calls.try_next().await {
            attempts += 1;
            call.fail("connection refused");
            settle().await;
        }
        let next_at = clock.next_deadline().expect("a retry is scheduled");
        assert!(
            next_at.duration_since(clock.now()).unwrap() <= secs(60),
            "backoff over its 60 s cap"
        );
        clock.advance_to(next_at);
    }
    assert!(manager.is_expired());
    assert!(
        attempts > 55 && attempts < 75,
        "{attempts} attempts in an hour"
    );
    let seen = drain(&mut events).await;
    assert_eq!(
        seen.iter().filter(|e| kind(e) == "expired").count(),
        1,
        "Expired once"
    );

    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Expired);
    let now = access_manager::clock::Clock::now(&clock);
    let secs_now = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let fresh = mint("alice", secs_now, 3600);
    call.ok(fresh.clone());
    consumer.wait_calls(2).await;
    assert_eq!(consumer.seen().last().unwrap(), &fresh);
    assert!(!manager.is_expired());
    // Recovered: the next fetch is an hour away, and attempts start at 1 again.
    clock.advance_to(at(secs_now + 3600 - 180));
    assert_eq!(calls.next().await.request.attempt(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn b5_a_rejected_fetched_token_keeps_the_current_one_and_is_retried() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 600);
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(&held)
        .backoff(exact_backoff())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    clock.advance_to(at(T0 + 420));
    calls.next().await.ok(mint("mallory", T0 + 420, 600));
    let seen = drain(&mut events).await;
    assert_eq!(kinds(&seen), ["will_expire", "rejected", "refresh_failed"]);
    assert_eq!(manager.token().unwrap().as_str(), held);
    clock.advance(secs(1));
    calls.next().await.ok("garbage".into());
    assert_eq!(
        kinds(&drain(&mut events).await),
        ["rejected", "refresh_failed"]
    );
    assert_eq!(manager.token().unwrap().as_str(), held);
}

#[tokio::test(flavor = "current_thread")]
async fn b6_sixty_four_concurrent_refresh_and_fresh_token_calls_make_one_fetch() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let callers = spawn_refreshers(&manager, 64, secs(7200));
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Manual);
    settle().await;
    let fresh = mint("alice", T0, 3600 * 2);
    call.ok(fresh.clone());
    for c in callers {
        assert_eq!(c.await.unwrap().unwrap().as_str(), fresh);
    }
    assert_eq!(calls.made(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn b6_a_fetch_that_hangs_times_out_after_30_s_on_the_clock_and_is_retried() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher);
    let mut events = manager.subscribe();
    let hung = calls.next().await; // never answered
    clock.advance(secs(29));
    assert!(drain(&mut events).await.is_empty());
    clock.advance(secs(1));
    match next(&mut events).await {
        Event::RefreshFailed { error, attempt, .. } => {
            assert_eq!(attempt, 1);
            assert!(error.contains("timed out after 30 s"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    clock.advance(secs(1));
    let retry = calls.next().await;
    assert_eq!(retry.request.attempt(), 2);
    drop(hung);
    retry.ok(mint("alice", T0 + 31, 3600));
    assert_eq!(kinds(&drain(&mut events).await), ["updated"]);
}

#[tokio::test(flavor = "current_thread")]
async fn b6_a_panicking_fetcher_is_a_transient_failure_and_the_manager_lives_on() {
    let clock = clock();
    let calls = Arc::new(AtomicUsize::new(0));
    let fetcher = {
        let calls = calls.clone();
        access_manager::fetcher_fn(move |_req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("fetcher bug");
                }
                Ok(mint("alice", T0 + 1, 3600))
            }
        })
    };
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .backoff(exact_backoff())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    settle().await;
    match next(&mut events).await {
        Event::RefreshFailed {
            error, retry_at, ..
        } => {
            assert!(error.contains("fetcher panicked: fetcher bug"), "{error}");
            assert_eq!(retry_at, Some(at(T0 + 1)));
        }
        other => panic!("{other:?}"),
    }
    clock.advance(secs(1));
    assert_eq!(kinds(&[next(&mut events).await]), ["updated"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn b6_a_permanent_error_stops_retries_until_refresh_or_update() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 600))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    clock.advance_to(at(T0 + 420));
    calls
        .next()
        .await
        .answer(Err(FetchError::permanent("401 logged out")));
    let seen = drain(&mut events).await;
    assert_eq!(kinds(&seen), ["will_expire", "refresh_failed"]);
    assert_eq!(retry_at(&seen[1]), None);
    clock.advance_to(at(T0 + 7200));
    assert!(
        calls.try_next().await.is_none(),
        "retried after a permanent error"
    );

    // refresh() tries again.
    let refresh = {
        let m = manager.clone();
        tokio::spawn(async move { m.refresh().await })
    };
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Manual);
    call.answer(Err(FetchError::permanent("401 still logged out")));
    match refresh.await.unwrap() {
        Err(RefreshError::Fetch(e)) => assert!(e.is_permanent()),
        other => panic!("{other:?}"),
    }
    // update_token() restarts the cycle: its refresh window brings a fetch again.
    let pushed = mint("alice", T0 + 7200, 600);
    manager.update_token(&pushed).await.unwrap();
    clock.advance_to(at(T0 + 7200 + 420));
    assert_eq!(calls.next().await.request.reason(), FetchReason::WillExpire);
}

/// A fetcher that mints a fresh `ttl`-second token at the clock's now, counting its calls.
fn minting_fetcher(
    clock: &ManualClock,
    ttl: u64,
) -> (impl access_manager::TokenFetcher + use<>, Arc<AtomicUsize>) {
    let fetched = Arc::new(AtomicUsize::new(0));
    let fetcher = {
        let clock = clock.clone();
        let fetched = fetched.clone();
        access_manager::fetcher_fn(move |_req| {
            fetched.fetch_add(1, Ordering::SeqCst);
            let now = clock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            async move { Ok(mint("alice", now, ttl)) }
        })
    };
    (fetcher, fetched)
}

#[tokio::test(flavor = "current_thread")]
async fn b7_tokens_shorter_than_the_lead_do_not_make_the_fetcher_loop() {
    let clock = clock();
    let (fetcher, fetched) = minting_fetcher(&clock, 60); // 60 s tokens, lead 180 s
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .build()
        .unwrap();
    settle().await;
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    // The next fetch waits half the token's life: 30 s.
    clock.advance(secs(29));
    settle().await;
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        1,
        "fetched again within half the life"
    );
    clock.advance(secs(1));
    settle().await;
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
    // Over ten minutes: one fetch per 30 s, not a loop.
    for _ in 0..20 {
        clock.advance(secs(30));
        settle().await;
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 22);
    assert!(!manager.is_expired());
}

#[tokio::test(flavor = "current_thread")]
async fn b7_even_two_second_tokens_wait_at_least_one_second_between_fetches() {
    let clock = clock();
    let (fetcher, fetched) = minting_fetcher(&clock, 2);
    let _manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .build()
        .unwrap();
    settle().await;
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_millis(999));
    settle().await;
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_millis(1));
    settle().await;
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn b7_a_token_whose_half_life_ends_at_its_refresh_window_is_refreshed_on_the_wall_clock() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher);
    // 360 s left, lead 180 s: half its life ends exactly where its refresh window starts, so
    // the spacing of behaviour 7 adds no elapsed-time wait.
    calls.next().await.ok(mint("alice", T0, 360));
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 180)));
    // The wall clock jumps into the refresh window (elapsed time does not move): fetch now.
    clock.set(at(T0 + 200));
    let call = calls
        .try_next()
        .await
        .expect("a fetch as soon as the wall clock is in the window");
    assert_eq!(call.request.reason(), FetchReason::WillExpire);
}

#[tokio::test(flavor = "current_thread")]
async fn b7_the_held_token_handed_back_is_fetched_again_after_half_its_remaining_life() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 300);
    let manager = fetching(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    clock.advance(secs(180));
    let call = calls
        .try_next()
        .await
        .expect("a fetch in the refresh window");
    // A backend that caches tokens answers with the one held, 120 s from its expiry.
    call.ok(held.clone());
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 180 + 60)));
    clock.advance(secs(59));
    assert!(calls.try_next().await.is_none(), "fetched again too soon");
    clock.advance(secs(1));
    let again = calls
        .try_next()
        .await
        .expect("a fetch after half the remaining life");
    assert_eq!(again.request.reason(), FetchReason::WillExpire);
}

#[tokio::test(flavor = "current_thread")]
async fn b10_fresh_token_returns_the_current_token_when_it_has_enough_left_else_fetches() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = fetching(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    assert_eq!(
        manager.fresh_token(secs(3600)).await.unwrap().as_str(),
        held
    );
    assert_eq!(calls.made(), 0);

    let wants_more = {
        let m = manager.clone();
        tokio::spawn(async move { m.fresh_token(secs(3601)).await })
    };
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Manual);
    let fresh = mint("alice", T0, 7200);
    call.ok(fresh.clone());
    assert_eq!(wants_more.await.unwrap().unwrap().as_str(), fresh);
}

#[tokio::test(flavor = "current_thread")]
async fn b10_fresh_token_right_after_a_reported_refusal_fetches_instead_of_answering_the_refused_token(
) {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = fetching(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    // The app hears "expired" (20104) from a service and asks at once for a good token: the
    // manager's task has not run in between.
    let report = manager.report_service_error(20104);
    let asked = {
        let m = manager.clone();
        tokio::spawn(async move { m.fresh_token(secs(60)).await })
    };
    assert_eq!(report.await, access_manager::ServiceAction::Refresh);
    let call = calls
        .try_next()
        .await
        .expect("a fetch for the refused token");
    let fresh = mint("alice", T0, 7200);
    call.ok(fresh.clone());
    assert_eq!(asked.await.unwrap().unwrap().as_str(), fresh);
}

#[tokio::test(flavor = "current_thread")]
async fn b10_fresh_token_of_zero_at_the_expiry_instant_fetches() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = fetching(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    // At `exp` the token is expired, even with nothing asked beyond "unexpired".
    clock.set(at(T0 + 3600));
    let asked = {
        let m = manager.clone();
        tokio::spawn(async move { m.fresh_token(Duration::ZERO).await })
    };
    let call = calls
        .try_next()
        .await
        .expect("a fetch for the expired token");
    let fresh = mint("alice", T0 + 3600, 3600);
    call.ok(fresh.clone());
    assert_eq!(asked.await.unwrap().unwrap().as_str(), fresh);
}

#[tokio::test(flavor = "current_thread")]
async fn b10_refresh_without_a_fetcher_says_so() {
    let manager = AccessManager::builder().clock(clock()).build().unwrap();
    assert!(matches!(
        manager.refresh().await,
        Err(RefreshError::NoFetcher)
    ));
    assert!(matches!(
        manager.fresh_token(secs(1)).await,
        Err(RefreshError::NoFetcher)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn jitter_is_exact_for_a_given_seed() {
    async fn first_retry_wait(seed: u64) -> Duration {
        let clock = clock();
        let (fetcher, mut calls) = scripted();
        let manager = AccessManager::builder()
            .clock(clock.clone())
            .fetcher(fetcher)
            .jitter_seed(seed)
            .backoff(Backoff::new(secs(8), secs(60)))
            .build()
            .unwrap();
        let mut events = manager.subscribe();
        calls.next().await.fail("down");
        retry_at(&next(&mut events).await)
            .unwrap()
            .duration_since(at(T0))
            .unwrap()
    }
    let a = first_retry_wait(42).await;
    assert_eq!(a, first_retry_wait(42).await);
    assert!(a > Duration::ZERO && a <= secs(8));
    let spread: std::collections::HashSet<_> = {
        let mut s = std::collections::HashSet::new();
        for seed in 0..8 {
            s.insert(first_retry_wait(seed).await);
        }
        s
    };
    assert!(
        spread.len() > 4,
        "jitter does not spread retries: {spread:?}"
    );
}

#[test]
fn build_with_events_never_misses_the_initial_fetchs_token_updated() {
    // On a multi-thread runtime a fast fetcher can answer before a `subscribe()` made after
    // `build()`; a subscription made by `build_with_events` is in place before the driver starts.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..100 {
            let clock = clock();
            let jwt = mint("alice", T0, 3600);
            let fetcher = {
                let jwt = jwt.clone();
                access_manager::fetcher_fn(move |_| std::future::ready(Ok(jwt.clone())))
            };
            let (manager, mut events) = AccessManager::builder()
                .clock(clock)
                .fetcher(fetcher)
                .build_with_events()
                .unwrap();
            match events.recv().await {
                Some(Event::TokenUpdated { token }) => assert!(is_of(&token, &jwt)),
                other => panic!("expected TokenUpdated first, got {other:?}"),
            }
            manager.shutdown().await;
        }
    });
}

#[tokio::test(flavor = "current_thread")]
async fn b10_fresh_token_without_a_fetcher_answers_the_held_token_when_it_qualifies() {
    let clock = clock();
    let held = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &held);
    assert_eq!(manager.fresh_token(secs(60)).await.unwrap().as_str(), held);
    assert!(matches!(
        manager.fresh_token(secs(3601)).await,
        Err(RefreshError::NoFetcher)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn b5_a_retry_of_a_manual_refresh_keeps_its_reason() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    // In the refresh window the backend fails for good; the app asks again.
    clock.advance_to(at(T0 + 3420));
    calls
        .next()
        .await
        .answer(Err(FetchError::permanent("backend broken")));
    let refresh = spawn_refresh(&manager);
    let manual = calls.next().await;
    assert_eq!(manual.request.reason(), FetchReason::Manual);
    manual.fail("down");
    assert!(refresh.await.unwrap().is_err());
    clock.advance(secs(1));
    let retry = calls.next().await;
    assert_eq!(
        (retry.request.reason(), retry.request.attempt()),
        (FetchReason::Manual, 2)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b5_a_retry_of_a_fetch_for_a_refused_token_keeps_its_reason() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let _ = manager.report_service_error(20104).await;
    calls.next().await.fail("down");
    settle().await;
    clock.advance(secs(1));
    let retry = calls.next().await;
    assert_eq!(
        (retry.request.reason(), retry.request.attempt()),
        (FetchReason::Rejected { code: 20104 }, 2)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b5_a_token_pushed_before_the_managers_first_turn_stops_the_initial_fetch() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher).build().unwrap();
    let pushed = mint("alice", T0, 3600);
    // Sent at the call, before the manager's task has run once.
    let report = manager.update_token(&pushed);
    assert!(report.await.unwrap().changed());
    assert!(
        calls.try_next().await.is_none(),
        "fetched over a pushed token"
    );
    assert_eq!(manager.token().unwrap().as_str(), pushed);
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 3420)));
}

#[tokio::test(flavor = "current_thread")]
async fn b5_a_refresh_sent_before_the_managers_first_turn_is_the_initial_fetch() {
    let reasons = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let fetcher = access_manager::fetcher_fn(move |request| {
        seen.lock().unwrap().push(request.reason());
        async move {
            access_manager::AccessToken::builder(
                "AC0123456789abcdef0123456789abcdef",
                "SKfedcba9876543210fedcba9876543210",
                "api-secret",
            )
            .identity("alice")
            .to_jwt()
            .map_err(access_manager::FetchError::transient)
        }
    });
    let manager = AccessManager::builder().fetcher(fetcher).build().unwrap();
    manager.refresh().await.unwrap(); // sent before the driver ran at all
    assert_eq!(*reasons.lock().unwrap(), [FetchReason::Initial]);
    manager.shutdown().await;
}

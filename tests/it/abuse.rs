//! Hostile and absurd input: huge or foreign tokens, far-future and one-second tokens, consumers
//! that panic when dropped, ten thousand consumers, sixteen tasks pushing at once. Nothing panics
//! out of the manager, and the valid token held is never lost.

use crate::common::*;
use access_manager::clock::{Clock, ManualClock};
use access_manager::{
    fetcher_fn, AccessManager, AccessToken, Event, Events, FetchError, RefreshError, UpdateError,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// A manager holding a fresh token for alice, whose fetcher always answers `answer`.
fn holding(clock: &ManualClock, answer: String) -> (AccessManager, String, Events) {
    let held = mint("alice", T0, 3_600);
    let fetcher = fetcher_fn(move |_| std::future::ready(Ok::<_, FetchError>(answer.clone())));
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .initial_token(&held)
        .fetcher(fetcher)
        .build()
        .unwrap();
    let events = manager.subscribe();
    (manager, held, events)
}

/// Offers `jwt` both ways (fetched and pushed): each is refused with `code`, and alice's token is
/// kept with its timers.
async fn refused_both_ways(jwt: String, code: u32) {
    let clock = clock();
    let (manager, held, mut events) = holding(&clock, jwt.clone());
    match manager.refresh().await {
        Err(RefreshError::Rejected(e)) => assert_eq!(e.code(), Some(code), "{e}"),
        other => panic!("fetched: expected a rejection, got {other:?}"),
    }
    let pushed = manager.update_token(&jwt).await.unwrap_err();
    let error = pushed.token_error().expect("a token error");
    assert_eq!(error.code(), code, "pushed: {pushed}");
    assert!(
        pushed.to_string().len() < 300,
        "the error carries the input: {} bytes",
        pushed.to_string().len()
    );
    assert_eq!(manager.token().unwrap().as_str(), held);
    assert_eq!(manager.expires_at(), Some(at(T0 + 3_600)));
    let seen = drain(&mut events).await;
    assert_eq!(
        kinds(&seen),
        ["rejected", "refresh_failed", "rejected"],
        "{seen:?}"
    );
    // The refresh cycle is intact: the fetch still happens at `exp - refresh_ahead`.
    clock.advance_to(at(T0 + 3_600 - 180));
    assert!(drain(&mut events)
        .await
        .iter()
        .any(|e| kind(e) == "will_expire"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_one_mib_token_is_rejected_as_malformed_and_the_token_kept() {
    let huge = "A".repeat(1 << 20);
    refused_both_ways(huge, 20101).await;
    // JWT-shaped, with a 1 MiB payload segment.
    let shaped = format!("eyJhbGciOiJIUzI1NiJ9.{}.c2ln", "e".repeat(1 << 20));
    refused_both_ways(shaped, 20101).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_token_for_another_account_is_rejected_and_the_token_kept() {
    let foreign = AccessToken::builder(OTHER_ACCOUNT, KEY, SECRET)
        .identity("alice")
        .issued_at(at(T0))
        .to_jwt()
        .unwrap();
    refused_both_ways(foreign, 20103).await;
    // The pushed refusal names both accounts.
    let clock = clock();
    let (manager, _, _) = holding(&clock, String::new());
    let foreign = AccessToken::builder(OTHER_ACCOUNT, KEY, SECRET)
        .identity("alice")
        .issued_at(at(T0))
        .to_jwt()
        .unwrap();
    assert!(matches!(
        manager.update_token(foreign).await,
        Err(UpdateError::AccountMismatch { .. })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn a_token_expiring_in_year_9999_is_rejected_as_too_long_lived() {
    let year_9999 = 253_402_300_799u64; // 9999-12-31T23:59:59Z
                                        // The builder refuses to mint it: signed by hand, with `iat` and without (counted from now).
    for iat in [json!(T0), serde_json::Value::Null] {
        let mut claims = json!({"jti": "x", "grants": {"identity": "alice"}, "exp": year_9999,
                                "iss": KEY, "sub": ACCOUNT});
        if !iat.is_null() {
            claims["iat"] = iat;
        }
        refused_both_ways(
            crate::token_support::sign(&crate::token_support::good_header(), &claims),
            20157,
        )
        .await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn absurd_expiry_numbers_are_refused_without_panicking() {
    let clock = clock();
    let (manager, held, _) = holding(&clock, String::new());
    for exp in [
        json!(u64::MAX),
        json!(1e300),
        json!(-1),
        json!(1.5),
        json!("9999999999"),
    ] {
        let jwt = crate::token_support::sign(
            &crate::token_support::good_header(),
            &json!({"jti": "x", "grants": {"identity": "alice"}, "iat": T0, "exp": exp,
                    "iss": KEY, "sub": ACCOUNT}),
        );
        let refused = manager.update_token(&jwt).await;
        assert!(refused.is_err(), "exp {exp} accepted");
    }
    assert_eq!(manager.token().unwrap().as_str(), held);
}

#[tokio::test(flavor = "current_thread")]
async fn one_second_tokens_are_taken_without_fetching_in_a_loop() {
    let clock = clock();
    let fetches = Arc::new(Mutex::new(Vec::new()));
    let (fetch_clock, log) = (clock.clone(), fetches.clone());
    let fetcher = fetcher_fn(move |_| {
        let now = fetch_clock.now();
        log.lock().unwrap().push(now);
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        std::future::ready(Ok::<_, FetchError>(mint("alice", secs, 1)))
    });
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .event_capacity(1_024)
        .build_with_events()
        .unwrap();
    let mut seen = Vec::new();
    while clock.now() < at(T0 + 60) {
        seen.extend(drain(&mut events).await);
        clock.advance_to(clock.next_deadline().expect("a next fetch"));
    }
    seen.extend(drain(&mut events).await);
    let fetches = fetches.lock().unwrap().clone();
    assert!(
        fetches
            .windows(2)
            .all(|w| w[1].duration_since(w[0]).unwrap() >= secs(1)),
        "fetches less than 1 s apart"
    );
    assert!((55..=61).contains(&fetches.len()), "{}", fetches.len());
    let updated = seen.iter().filter(|e| kind(e) == "updated").count();
    assert_eq!(updated, fetches.len(), "a one-second token was refused");
    assert!(!seen
        .iter()
        .any(|e| matches!(e, Event::RefreshFailed { .. } | Event::TokenRejected { .. })));
    assert!(manager.token().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn consumers_that_panic_when_dropped_by_the_manager_harm_nothing() {
    let clock = clock();
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .initial_token(mint("alice", T0, 3_600))
        .event_capacity(256)
        .build_with_events()
        .unwrap();
    let traces: Vec<_> = (0..100)
        .map(|i| {
            let (consumer, trace) = Detached::with(&format!("doomed-{i}"), true, true);
            manager.register(&consumer);
            (consumer, trace)
        })
        .collect();
    let mut traces_only = Vec::new();
    for (consumer, trace) in traces {
        trace.wait_calls(1).await;
        // The delivery in flight now holds the last `Arc`: the manager drops it, and it panics.
        drop(consumer);
        trace.release();
        traces_only.push(trace);
    }
    let failures = consumer_failures(&drain(&mut events).await);
    assert_eq!(failures.len(), 100, "{failures:?}");
    assert!(failures
        .iter()
        .all(|(_, e)| e.contains("panicked when dropped")));
    assert!(traces_only.iter().all(|t| t.dropped()));

    // The manager lives on.
    let next = mint("alice", T0 + 1, 3_600);
    let report = manager.update_token(&next).await.unwrap();
    assert!(report.changed());
    assert_eq!(report.delivered(), 0);
    assert_eq!(manager.token().unwrap().as_str(), next);
    // Their slots went with that delivery (they linger, unnoticed, until the next one).
    assert_eq!(manager.consumer_count(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_with_a_panicking_in_drop_consumer_mid_delivery_still_closes_cleanly() {
    for by_drop in [false, true] {
        let clock = clock();
        let manager = manager_holding(&clock, &mint("alice", T0, 3_600));
        let mut events = manager.subscribe();
        let (consumer, trace) = Detached::with("doomed", true, true);
        manager.register(&consumer);
        trace.wait_calls(1).await;
        drop(consumer); // the delivery in flight holds the last Arc
        if by_drop {
            drop(manager);
        } else {
            manager.shutdown().await;
            assert!(manager.is_closed());
        }
        // The teardown dropped it (and caught or contained its panic); Closed still came.
        trace.wait_dropped().await;
        let mut last = None;
        while let Some(e) = events.recv().await {
            last = Some(e);
        }
        assert_eq!(last, Some(Event::Closed), "by_drop: {by_drop}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_consumers_each_get_every_token() {
    let clock = clock();
    let first = mint("alice", T0, 3_600);
    let manager = manager_holding(&clock, &first);
    let consumers: Vec<_> = (0..10_000)
        .map(|i| {
            let c = Recorder::new(&format!("c{i}"), Mode::Accept);
            manager.register(&c);
            c
        })
        .collect();
    settle().await;
    assert!(consumers.iter().all(|c| c.seen() == [first.clone()]));
    let second = mint("alice", T0 + 1, 3_600);
    let report = manager.update_token(&second).await.unwrap();
    assert_eq!(report.delivered(), 10_000);
    assert_eq!(report.failed().count(), 0);
    assert!(consumers
        .iter()
        .all(|c| c.seen() == [first.clone(), second.clone()]));
    // Half go away; the rest still get the next one.
    let mut kept = consumers;
    let gone: Vec<_> = kept.drain(..5_000).collect();
    drop(gone);
    let third = mint("alice", T0 + 2, 3_600);
    let report = manager.update_token(&third).await.unwrap();
    assert_eq!(report.delivered(), 5_000);
    assert!(kept.iter().all(|c| c.seen().last() == Some(&third)));
    assert_eq!(manager.consumer_count(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_pushing_at_once_never_lose_the_valid_token() {
    let clock = clock();
    let first = mint("alice", T0, 3_600);
    let manager = manager_holding(&clock, &first);
    let consumer = Recorder::new("chat", Mode::Accept);
    manager.register(&consumer);
    // Distinct valid tokens (by expiry), and garbage in between.
    let valid: Vec<Vec<String>> = (0..16u64)
        .map(|task| {
            (0..40u64)
                .map(|k| mint("alice", T0, 3_000 + task * 40 + k))
                .collect()
        })
        .collect();
    let all_valid: Arc<HashSet<String>> = Arc::new(
        valid
            .iter()
            .flatten()
            .cloned()
            .chain([first.clone()])
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (manager, all_valid, stop) = (manager.clone(), all_valid.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let token = manager.token().expect("the token was lost");
                assert!(
                    all_valid.contains(token.as_str()),
                    "an invalid token is current"
                );
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let pushers: Vec<_> = valid
        .into_iter()
        .enumerate()
        .map(|(task, tokens)| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for (k, jwt) in tokens.into_iter().enumerate() {
                    let report = manager.update_token(&jwt).await.expect("a valid token");
                    assert!(report.changed());
                    let garbage = match (task + k) % 3 {
                        0 => "not.a.token".to_string(),
                        1 => mint("mallory", T0, 3_600),
                        _ => mint("alice", T0 - 7_200, 3_600), // expired
                    };
                    assert!(manager.update_token(&garbage).await.is_err());
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await.expect("a pusher panicked");
    }
    stop.store(true, Ordering::SeqCst);
    assert!(reader.await.expect("the reader panicked") > 0);
    let current = manager.token().unwrap();
    assert!(all_valid.contains(current.as_str()));
    // The consumer ends on the current token.
    manager.update_token(current.as_str()).await.unwrap();
    let settled = consumer.seen();
    assert_eq!(settled.last().map(String::as_str), Some(current.as_str()));
    assert!(!manager.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_panicking_in_drop_at_shutdown_does_not_keep_other_consumers_alive() {
    for doomed_first in [true, false] {
        let clock = clock();
        let manager = manager_holding(&clock, &mint("alice", T0, 3_600));
        let (doomed, doomed_trace) = Detached::with("doomed", true, true);
        let (fine, fine_trace) = Detached::with("fine", true, false);
        if doomed_first {
            manager.register(&doomed);
            manager.register(&fine);
        } else {
            manager.register(&fine);
            manager.register(&doomed);
        }
        doomed_trace.wait_calls(1).await;
        fine_trace.wait_calls(1).await;
        // Both deliveries in flight hold the last Arcs.
        drop((doomed, fine));
        manager.shutdown().await;
        assert!(doomed_trace.dropped());
        assert!(
            fine_trace.dropped(),
            "the well-behaved consumer outlived the manager (doomed registered first: {doomed_first})"
        );
    }
}

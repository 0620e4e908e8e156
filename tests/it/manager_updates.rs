//! Behaviours 1–4 of DESIGN.md: what `update_token` accepts and refuses, and the per-token timeline.

use crate::common::*;
use access_manager::{AccessManager, AccessToken, Event, RefreshError, TokenError, UpdateError};

#[tokio::test(flavor = "current_thread")]
async fn b1_update_rejects_bad_tokens_and_leaves_state_timers_and_consumers_untouched() {
    let clock = clock();
    let held = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &held);
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    let mut events = manager.subscribe();

    let expired = mint("alice", T0 - 7200, 3600);
    let not_yet = builder("alice", T0, 3600)
        .not_before(at(T0 + 60))
        .to_jwt()
        .unwrap();
    let bob = mint("bob", T0, 3600);
    let other_account = AccessToken::builder(OTHER_ACCOUNT, KEY, SECRET)
        .identity("alice")
        .issued_at(at(T0))
        .to_jwt()
        .unwrap();
    // Over 24 h: minted with a lifetime of 25 h by hand (the builder refuses it).
    let overlong = {
        let t = mint("alice", T0, 3600);
        let payload = t.split('.').nth(1).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        claims["exp"] = (T0 + 25 * 3600).into();
        let body = b64.encode(serde_json::to_vec(&claims).unwrap());
        format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            body,
            signature(&t)
        )
    };

    let cases: Vec<(&str, String, u32)> = vec![
        ("garbage", "not a token".into(), 20101),
        ("expired", expired, 20104),
        ("not yet valid", not_yet, 20105),
        ("over 24 h", overlong, 20157),
        ("other identity", bob, 20106),
        ("other account", other_account, 20103),
    ];
    for (what, jwt, code) in cases {
        let err = manager.update_token(&jwt).await.unwrap_err();
        assert_eq!(err.token_error().unwrap().code(), code, "{what}: {err}");
        match next(&mut events).await {
            Event::TokenRejected { error } => assert_eq!(error.code(), code, "{what}"),
            other => panic!("{what}: expected TokenRejected, got {other:?}"),
        }
        assert_eq!(
            manager.token().unwrap().as_str(),
            held,
            "{what}: the held token changed"
        );
    }
    assert!(matches!(
        manager.update_token(mint("bob", T0, 3600)).await,
        Err(UpdateError::IdentityMismatch { .. })
    ));
    assert!(matches!(
        manager.update_token("x.y").await,
        Err(UpdateError::Invalid(TokenError::Malformed { .. }))
    ));
    drain(&mut events).await;

    // Consumers saw only the held token; its timer still fires at exp - 180 s.
    assert_eq!(chat.seen(), vec![held.clone()]);
    clock.advance_to(at(T0 + 3600 - 180));
    match next(&mut events).await {
        Event::TokenWillExpire { token } => assert!(is_of(&token, &held)),
        other => panic!("expected TokenWillExpire, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn b2_the_same_token_again_changes_nothing() {
    let clock = clock();
    let held = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &held);
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    let mut events = manager.subscribe();

    let report = manager.update_token(&held).await.unwrap();
    assert!(!report.changed());
    // With surrounding whitespace it is still the same token.
    let report = manager.update_token(format!("  {held}\n")).await.unwrap();
    assert!(!report.changed());

    assert!(
        drain(&mut events).await.is_empty(),
        "no event for the same token"
    );
    assert_eq!(chat.calls(), 1, "no second delivery");
    clock.advance_to(at(T0 + 3600 - 180));
    assert_eq!(kinds(&[next(&mut events).await]), ["will_expire"]);
}

#[tokio::test(flavor = "current_thread")]
async fn b3_a_new_token_becomes_current_then_updated_then_delivered_and_update_waits_for_consumers()
{
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let fast = Recorder::new("chat", Mode::Accept);
    let slow = Recorder::new("video", Mode::Gate);
    manager.register(&fast);
    manager.register(&slow);
    let mut events = manager.subscribe();

    let jwt = mint("alice", T0, 3600);
    let update = {
        let manager = manager.clone();
        let jwt = jwt.clone();
        tokio::spawn(async move { manager.update_token(jwt).await })
    };
    slow.wait_calls(1).await;
    assert_eq!(
        manager.token().unwrap().as_str(),
        jwt,
        "current before delivery ends"
    );
    match next(&mut events).await {
        Event::TokenUpdated { token } => assert!(is_of(&token, &jwt)),
        other => panic!("expected TokenUpdated, got {other:?}"),
    }
    assert_eq!(fast.seen(), vec![jwt.clone()]);
    settle().await;
    assert!(
        !update.is_finished(),
        "update_token returned before every consumer answered"
    );

    slow.release();
    let report = update.await.unwrap().unwrap();
    assert!(report.changed());
    assert_eq!(report.delivered(), 2);
    assert_eq!(report.failed().count(), 0);
    assert_eq!(slow.seen(), vec![jwt]);
}

#[tokio::test(flavor = "current_thread")]
async fn b3_a_consumer_that_never_answers_times_out_after_10_s_on_the_clock() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let hung = Recorder::new("voice", Mode::Hang);
    let ok = Recorder::new("sync", Mode::Accept);
    manager.register(&hung);
    manager.register(&ok);
    let update = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.update_token(mint("alice", T0, 3600)).await })
    };
    hung.wait_calls(1).await;
    clock.advance(secs(9));
    settle().await;
    assert!(!update.is_finished(), "timed out before 10 s");
    clock.advance(secs(1));
    let report = update.await.unwrap().unwrap();
    let failed: Vec<_> = report
        .failed()
        .map(|(n, e)| (n.to_string(), e.to_string()))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "voice");
    assert!(failed[0].1.contains("10 s"), "{}", failed[0].1);
    assert_eq!(report.delivered(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn b4_will_expire_fires_at_exp_minus_lead_to_the_second_and_expired_at_exp() {
    let clock = clock();
    let jwt = mint("alice", T0, 3600);
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .refresh_ahead(secs(300))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    manager.update_token(&jwt).await.unwrap();
    assert_eq!(kinds(&drain(&mut events).await), ["updated"]);

    clock.advance_to(at(T0 + 3600 - 300 - 1));
    assert!(
        drain(&mut events).await.is_empty(),
        "WillExpire a second early"
    );
    clock.advance(secs(1));
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire"]);
    assert!(!manager.is_expired());

    clock.advance_to(at(T0 + 3600 - 1));
    assert!(
        drain(&mut events).await.is_empty(),
        "Expired a second early"
    );
    clock.advance(secs(1));
    assert_eq!(kinds(&drain(&mut events).await), ["expired"]);
    assert!(manager.is_expired());

    // Each at most once.
    clock.advance(secs(3600));
    assert!(drain(&mut events).await.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn b4_a_token_shorter_than_the_lead_gets_will_expire_right_after_updated() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    manager.update_token(mint("alice", T0, 120)).await.unwrap();
    assert_eq!(kinds(&drain(&mut events).await), ["updated", "will_expire"]);
    clock.advance(secs(120));
    assert_eq!(kinds(&drain(&mut events).await), ["expired"]);
}

#[tokio::test(flavor = "current_thread")]
async fn b4_a_replaced_tokens_timers_never_fire() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let first = mint("alice", T0, 600);
    manager.update_token(&first).await.unwrap();
    clock.advance(secs(100));
    let second = mint("alice", T0 + 100, 3600);
    manager.update_token(&second).await.unwrap();
    assert_eq!(kinds(&drain(&mut events).await), ["updated", "updated"]);

    // The first token's WillExpire (T0+420) and Expired (T0+600) instants pass silently.
    clock.advance_to(at(T0 + 700));
    assert!(
        drain(&mut events).await.is_empty(),
        "a replaced token's timer fired"
    );
    clock.advance_to(at(T0 + 100 + 3600 - 180));
    match next(&mut events).await {
        Event::TokenWillExpire { token } => assert!(is_of(&token, &second)),
        other => panic!("expected the second token's WillExpire, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn b4_an_already_expired_update_is_rejected_and_the_timeline_goes_on() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let err = manager
        .update_token(mint("alice", T0 - 3600, 3600))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "token expired 0 s ago (Twilio error 20104)"
    );
    assert!(manager.token().is_none());
    assert_eq!(kinds(&drain(&mut events).await), ["rejected"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_shorter_token_re_arms_the_timer_for_its_earlier_will_expire() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let mut events = manager.subscribe();
    // The task has armed WillExpire for T0 + 3420.
    settle().await;
    // A shorter token: its WillExpire (T0 + 420) is due long before the timer armed.
    manager.update_token(mint("alice", T0, 600)).await.unwrap();
    assert_eq!(kinds(&drain(&mut events).await), ["updated"]);
    clock.advance_to(at(T0 + 419));
    assert!(drain(&mut events).await.is_empty(), "WillExpire early");
    clock.advance(secs(1));
    assert_eq!(
        kinds(&drain(&mut events).await),
        ["will_expire"],
        "WillExpire of the new token not fired at its instant"
    );
    clock.advance_to(at(T0 + 600));
    assert_eq!(kinds(&drain(&mut events).await), ["expired"]);
}

#[tokio::test(flavor = "current_thread")]
async fn an_update_dropped_before_its_first_poll_still_happens() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    let next = mint("alice", T0 + 1, 3600);
    drop(manager.update_token(&next)); // never polled
    chat.wait_calls(2).await;
    assert_eq!(manager.token().unwrap().as_str(), next);
    assert_eq!(chat.seen().last().map(String::as_str), Some(next.as_str()));
}

#[tokio::test(flavor = "current_thread")]
async fn fresh_token_never_answers_ok_with_less_than_asked_and_too_short_carries_the_best() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(mint("alice", T0, 600))
        .build()
        .unwrap();
    let asking = tokio::spawn({
        let manager = manager.clone();
        async move { manager.fresh_token(secs(3600)).await }
    });
    // The backend only issues 20-minute tokens.
    let short = mint("alice", T0, 1200);
    calls.next().await.ok(short.clone());
    match asking.await.unwrap() {
        Err(RefreshError::TooShort { token, wanted }) => {
            assert_eq!(token.as_str(), short, "not the best token");
            assert_eq!(wanted, secs(3600));
        }
        other => panic!("expected TooShort, got {other:?}"),
    }
    assert_eq!(manager.token().unwrap().as_str(), short);
    // What it has is enough for a smaller ask: answered at once, without a fetch.
    assert_eq!(
        manager.fresh_token(secs(900)).await.unwrap().as_str(),
        short
    );
    assert!(calls.try_next().await.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn try_recv_hands_out_every_waiting_event_however_many_are_read_in_one_go() {
    let manager = AccessManager::builder()
        .clock(clock())
        .event_capacity(1024)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    for _ in 0..300 {
        manager.report_service_error(20003).await; // an event each
    }
    settle().await;
    // One pass of the task: past tokio's cooperative budget (128), the channel says "not yet".
    let read = std::iter::from_fn(|| events.try_recv()).count();
    assert_eq!(read, 300);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lagging_subscriber_is_told_how_many_events_it_missed() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .event_capacity(2)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let tokens: Vec<String> = (0..5).map(|i| mint("alice", T0 + i, 3600)).collect();
    for jwt in &tokens {
        manager.update_token(jwt).await.unwrap();
    }
    assert_eq!(next(&mut events).await, Event::Lagged { missed: 3 });
    for jwt in &tokens[3..] {
        match next(&mut events).await {
            Event::TokenUpdated { token } => assert!(is_of(&token, jwt)),
            other => panic!("expected an update, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn another_identity_or_account_is_refused_with_its_twilio_code() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let alice = mint("alice", T0, 3600);
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(alice.clone())
        .build_with_events()
        .unwrap();

    let bob = mint("bob", T0, 3600);
    let pushed = manager.update_token(&bob).await.unwrap_err();
    assert!(
        matches!(pushed, UpdateError::IdentityMismatch { .. }),
        "{pushed:?}"
    );
    assert_eq!(pushed.code(), Some(20106));
    let foreign = AccessToken::builder(OTHER_ACCOUNT, KEY, SECRET)
        .identity("alice")
        .issued_at(at(T0))
        .to_jwt()
        .unwrap();
    let pushed = manager.update_token(&foreign).await.unwrap_err();
    assert!(
        matches!(pushed, UpdateError::AccountMismatch { .. }),
        "{pushed:?}"
    );
    assert_eq!(pushed.code(), Some(20103));

    let refresh = spawn_refresh(&manager);
    calls.next().await.ok(bob);
    match refresh.await.unwrap() {
        Err(RefreshError::Rejected(UpdateError::IdentityMismatch { current, offered })) => {
            assert_eq!(
                (current.as_deref(), offered.as_deref()),
                (Some("alice"), Some("bob"))
            );
        }
        other => panic!("expected the manager's refusal, got {other:?}"),
    }
    let codes: Vec<u32> = drain(&mut events)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::TokenRejected { error } => Some(error.code()),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [20106, 20103, 20106]);
    assert_eq!(manager.token().unwrap().as_str(), alice);
}

//! Behaviours 8 and 9 of DESIGN.md: per-consumer delivery (order, newest wins, isolated failures,
//! required grants) and registration (weak, prompt, unregister, many consumers).

use crate::common::*;
use access_manager::clock::ManualClock;
use access_manager::grants::TaskRouterGrant;
use access_manager::{AccessManager, GrantKind, UpdateReport};
use std::collections::BTreeSet;

fn manager(clock: &ManualClock) -> AccessManager {
    AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Starts `update_token` on its own task (it waits for the consumers) and lets the manager run.
async fn spawn_update(
    manager: &AccessManager,
    jwt: &str,
) -> tokio::task::JoinHandle<Result<UpdateReport, access_manager::UpdateError>> {
    let (manager, jwt) = (manager.clone(), jwt.to_string());
    let task = tokio::spawn(async move { manager.update_token(jwt).await });
    settle().await;
    task
}

fn failed_names(report: &UpdateReport) -> BTreeSet<String> {
    report.failed().map(|(name, _)| name.to_string()).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Behaviour 8: fan-out

#[tokio::test(flavor = "current_thread")]
async fn b8_each_consumer_gets_every_token_in_the_order_they_became_current() {
    let clock = clock();
    let manager = manager(&clock);
    let chat = Recorder::new("chat", Mode::Accept);
    let sync = Recorder::new("sync", Mode::Accept);
    manager.register(&chat);
    manager.register(&sync);

    let tokens: Vec<String> = (0..5).map(|i| mint("alice", T0 - 10 + i, 3600)).collect();
    for jwt in &tokens {
        let report = manager.update_token(jwt).await.unwrap();
        assert_eq!(report.delivered(), 2);
    }
    assert_eq!(chat.seen(), tokens);
    assert_eq!(sync.seen(), tokens);
}

#[tokio::test(flavor = "current_thread")]
async fn b8_a_consumer_busy_while_two_newer_tokens_arrive_gets_only_the_newest() {
    let clock = clock();
    let manager = manager(&clock);
    let busy = Recorder::new("video", Mode::Gate);
    let quick = Recorder::new("chat", Mode::Accept);
    manager.register(&busy);
    manager.register(&quick);
    let (t1, t2, t3) = (
        mint("alice", T0 - 2, 3600),
        mint("alice", T0 - 1, 3600),
        mint("alice", T0, 3600),
    );

    let u1 = spawn_update(&manager, &t1).await;
    busy.wait_calls(1).await;
    let u2 = spawn_update(&manager, &t2).await;
    let u3 = spawn_update(&manager, &t3).await;
    assert_eq!(
        quick.seen(),
        [t1.as_str(), t2.as_str(), t3.as_str()],
        "the quick one is not held back"
    );
    assert_eq!(busy.calls(), 1, "a busy consumer got a second call at once");

    busy.release();
    busy.wait_calls(2).await;
    busy.release();
    let r3 = u3.await.unwrap().unwrap();
    assert_eq!(r3.delivered(), 2);
    assert_eq!(u1.await.unwrap().unwrap().delivered(), 2);
    let r2 = u2.await.unwrap().unwrap();
    assert_eq!(r2.failed().count(), 0, "being skipped is not a failure");

    settle().await;
    assert_eq!(
        busy.seen(),
        [t1.as_str(), t3.as_str()],
        "token 2 must be skipped, never delivered"
    );
    assert_eq!(busy.calls(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn b8_slow_failing_and_panicking_consumers_delay_and_harm_no_other() {
    let clock = clock();
    let manager = manager(&clock);
    let fast = Recorder::new("chat", Mode::Accept);
    let slow = Recorder::new("video", Mode::Gate);
    let failing = Recorder::new("sync", Mode::Fail);
    let panicking = Recorder::new("voice", Mode::Panic);
    for c in [&fast, &slow, &failing, &panicking] {
        manager.register(c);
    }
    let mut events = manager.subscribe();
    let (t1, t2) = (mint("alice", T0 - 1, 3600), mint("alice", T0, 3600));

    let u1 = spawn_update(&manager, &t1).await;
    slow.wait_calls(1).await;
    assert_eq!(
        fast.seen(),
        [t1.as_str()],
        "the fast one waited for the slow one"
    );
    assert_eq!((failing.calls(), panicking.calls()), (1, 1));
    assert!(
        !u1.is_finished(),
        "update_token returned before the slow one answered"
    );

    // While the slow one still holds token 1, token 2 reaches every other consumer at once.
    let u2 = spawn_update(&manager, &t2).await;
    assert_eq!(fast.seen(), [t1.as_str(), t2.as_str()]);
    assert_eq!((failing.calls(), panicking.calls()), (2, 2));

    slow.release();
    let r1 = u1.await.unwrap().unwrap();
    slow.wait_calls(2).await;
    slow.release();
    let r2 = u2.await.unwrap().unwrap();
    for report in [&r1, &r2] {
        assert_eq!(report.delivered(), 2, "chat and video took it");
        assert_eq!(failed_names(report), names(&["sync", "voice"]));
    }
    let why: Vec<String> = r1.failed().map(|(_, e)| e.to_string()).collect();
    assert!(
        why.iter().any(|e| e.contains("refused by the test")),
        "{why:?}"
    );
    assert!(why.iter().any(|e| e.contains("panicked")), "{why:?}");
    assert_eq!(slow.seen(), [t1.as_str(), t2.as_str()]);

    let events = drain(&mut events).await;
    let failures = consumer_failures(&events);
    assert_eq!(failures.len(), 4, "{events:?}");
    let failed: BTreeSet<String> = failures.into_iter().map(|(c, _)| c).collect();
    assert_eq!(failed, names(&["sync", "voice"]));
    assert_eq!(
        kinds(&events).iter().filter(|k| **k == "updated").count(),
        2
    );
    assert!(!manager.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn b8_a_consumer_lacking_its_required_grant_is_not_called_and_is_reported() {
    let clock = clock();
    let manager = manager(&clock);
    let router = Recorder::requiring("taskrouter", GrantKind::TaskRouter);
    let chat = Recorder::requiring("chat", GrantKind::Chat);
    manager.register(&router);
    manager.register(&chat);
    let mut events = manager.subscribe();

    // `mint` gives chat, sync, voice and video: no TaskRouter grant.
    let plain = mint("alice", T0 - 1, 3600);
    let report = manager.update_token(&plain).await.unwrap();
    assert_eq!(router.calls(), 0, "called without its required grant");
    assert_eq!(chat.seen(), [plain.as_str()]);
    assert_eq!(report.delivered(), 1);
    let rows: Vec<(String, String)> = report
        .failed()
        .map(|(n, e)| (n.to_string(), e.to_string()))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "taskrouter");
    assert!(rows[0].1.contains("grant"), "{}", rows[0].1);
    let events = drain(&mut events).await;
    assert_eq!(kinds(&events), ["updated", "consumer_failed"]);
    assert_eq!(consumer_failures(&events)[0].0, "taskrouter");

    // A token carrying the grant reaches it.
    let with_router = builder("alice", T0, 3600)
        .grant(TaskRouterGrant::default())
        .to_jwt()
        .unwrap();
    let report = manager.update_token(&with_router).await.unwrap();
    assert_eq!(report.failed().count(), 0);
    assert_eq!(router.seen(), [with_router.as_str()]);

    // Registered while a token lacking its grant is current: reported the same way, not called.
    let player = Recorder::requiring("player", GrantKind::Playback);
    let mut events = manager.subscribe();
    manager.register(&player);
    let events = drain(&mut events).await;
    assert_eq!(consumer_failures(&events).len(), 1, "{events:?}");
    assert_eq!(consumer_failures(&events)[0].0, "player");
    assert_eq!(player.calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn b8_a_consumer_panicking_in_drop_after_the_app_let_go_does_not_take_the_manager_down() {
    let clock = clock();
    let manager = manager(&clock);
    let (doomed, trace) = Detached::with("chat", true, true);
    let other = Recorder::new("sync", Mode::Accept);
    manager.register(&doomed);
    manager.register(&other);
    let (t1, t2) = (mint("alice", T0 - 1, 3600), mint("alice", T0, 3600));

    let u1 = spawn_update(&manager, &t1).await;
    trace.wait_calls(1).await;
    // The app drops its Arc while the manager is delivering: the manager's is now the last one,
    // and dropping it panics.
    drop(doomed);
    assert!(!trace.dropped());
    trace.release();
    let r1 = u1.await.unwrap().expect("the manager went down");
    assert!(trace.dropped());
    assert!(!manager.is_closed());
    assert!(
        r1.failed().all(|(name, _)| name == "chat"),
        "only the panicking consumer may be reported"
    );

    let r2 = manager
        .update_token(&t2)
        .await
        .expect("the manager went down");
    assert_eq!(r2.delivered(), 1);
    assert_eq!(other.seen(), [t1.as_str(), t2.as_str()]);
    assert_eq!(trace.calls(), 1, "a dropped consumer was called again");
    assert_eq!(manager.consumer_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Behaviour 9: registration

#[tokio::test(flavor = "current_thread")]
async fn b9_register_holds_the_consumer_weakly_and_dropping_the_last_arc_unregisters_it() {
    let clock = clock();
    let manager = manager(&clock);
    let (gone, trace) = Detached::new("chat");
    let kept = Recorder::new("sync", Mode::Accept);
    let gone_id = manager.register(&gone);
    manager.register(&kept);
    drop(gone);
    assert!(trace.dropped(), "the manager kept a strong reference");

    let report = manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    assert_eq!(trace.calls(), 0);
    assert_eq!(report.delivered(), 1);
    assert_eq!(
        report.failed().count(),
        0,
        "a dropped consumer is no failure"
    );
    assert_eq!(manager.consumer_count(), 1);
    assert!(
        !manager.unregister(gone_id),
        "already unregistered by the drop"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b9_update_does_not_wait_for_a_consumer_dropped_while_it_was_busy() {
    let clock = clock();
    let t1 = mint("alice", T0 - 1, 3600);
    let manager = manager_holding(&clock, &t1);
    let (gone, trace) = Detached::with("chat", true, false);
    manager.register(&gone);
    trace.wait_calls(1).await; // busy taking t1, which it got on registering
    drop(gone);

    let u2 = spawn_update(&manager, &mint("alice", T0, 3600)).await;
    // Its call for t1 ends; the manager then finds it gone and must not wait for it any more.
    trace.release();
    settle().await;
    assert!(trace.dropped());
    assert!(
        u2.is_finished(),
        "update_token still waits for a consumer the app dropped"
    );
    let report = u2.await.unwrap().unwrap();
    assert_eq!(report.delivered(), 0);
    assert_eq!(trace.calls(), 1);
    assert_eq!(manager.consumer_count(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn b9_a_consumer_registered_while_a_token_is_current_receives_it_promptly() {
    let clock = clock();
    let held = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &held);
    let mut events = manager.subscribe();
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    settle().await; // no update, no clock movement
    assert_eq!(chat.seen(), [held.as_str()]);
    assert!(
        drain(&mut events).await.is_empty(),
        "no event for a registration"
    );

    // Before any token, registering delivers nothing.
    let empty = self::manager(&clock);
    let early = Recorder::new("sync", Mode::Accept);
    empty.register(&early);
    settle().await;
    assert_eq!(early.calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn b9_a_consumer_registered_just_as_a_token_arrives_gets_it_once() {
    let clock = clock();
    let manager = manager(&clock);
    let jwt = mint("alice", T0, 3600);
    // Commands run in the order they were made: sync registers, the update is sent (when
    // `update_token` is called), then chat registers; the manager handles all three in one go.
    let sync = Recorder::new("sync", Mode::Accept);
    manager.register(&sync);
    let mut update = Box::pin(manager.update_token(&jwt));
    assert!(futures::poll!(&mut update).is_pending());
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    let report = update.await.unwrap();
    // The update counts the consumers registered before it; chat gets the token by registering.
    assert_eq!(report.delivered(), 1);
    settle().await;
    assert_eq!(
        chat.seen(),
        [jwt.as_str()],
        "the same token delivered twice"
    );
    assert_eq!(sync.seen(), [jwt.as_str()]);
}

#[tokio::test(flavor = "current_thread")]
async fn b9_unregister_answers_true_once_then_false_and_the_consumer_gets_nothing_after() {
    let clock = clock();
    let manager = manager(&clock);
    let chat = Recorder::new("chat", Mode::Accept);
    let id = manager.register(&chat);
    let t1 = mint("alice", T0 - 1, 3600);
    manager.update_token(&t1).await.unwrap();

    assert!(manager.unregister(id));
    assert!(!manager.unregister(id));
    let report = manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    assert_eq!(report.delivered(), 0);
    settle().await;
    assert_eq!(chat.seen(), [t1.as_str()]);
    assert_eq!(chat.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn b9_unregistering_a_busy_consumer_releases_the_update_waiting_for_it() {
    let clock = clock();
    let manager = manager(&clock);
    let slow = Recorder::new("video", Mode::Gate);
    let id = manager.register(&slow);
    let u1 = spawn_update(&manager, &mint("alice", T0 - 1, 3600)).await;
    slow.wait_calls(1).await;
    assert!(manager.unregister(id));
    settle().await;
    assert!(
        u1.is_finished(),
        "update_token waits for an unregistered consumer"
    );
    assert_eq!(u1.await.unwrap().unwrap().failed().count(), 0);

    slow.release();
    manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    settle().await;
    assert_eq!(slow.calls(), 1, "called after unregister");
}

#[tokio::test(flavor = "current_thread")]
async fn b9_ten_thousand_consumers_on_one_manager_all_get_the_token() {
    const N: usize = 10_000;
    let clock = clock();
    let manager = manager(&clock);
    let consumers: Vec<_> = (0..N)
        .map(|i| Recorder::new(&format!("c{i}"), Mode::Accept))
        .collect();
    for c in &consumers {
        manager.register(c);
    }
    let jwt = mint("alice", T0, 3600);
    let report = manager.update_token(&jwt).await.unwrap();
    assert_eq!(report.delivered(), N);
    assert_eq!(report.failed().count(), 0);
    assert!(consumers.iter().all(|c| c.seen() == [jwt.as_str()]));
}

#[tokio::test(flavor = "current_thread")]
async fn an_update_reports_at_once_past_a_consumer_the_app_dropped() {
    let manager = AccessManager::builder().clock(clock()).build().unwrap();
    let kept = Recorder::new("kept", Mode::Accept);
    let gone = Recorder::new("gone", Mode::Accept);
    manager.register(&kept);
    manager.register(&gone);
    settle().await;
    drop(gone);
    let update = tokio::spawn({
        let m = manager.clone();
        async move { m.update_token(mint("alice", T0, 3600)).await }
    });
    settle().await;
    assert!(
        update.is_finished(),
        "the update waits for a dropped consumer"
    );
    let report = update.await.unwrap().unwrap();
    assert_eq!(report.delivered(), 1);
    assert_eq!(report.failed().count(), 0);
    assert_eq!(kept.calls(), 1);
    assert_eq!(manager.consumer_count(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_sign_out_during_a_delivery_keeps_the_next_updates_report_whole_and_its_events_in_order()
{
    let clock = clock();
    let manager = manager(&clock);
    let mut events = manager.subscribe();
    let chat = Recorder::new("chat", Mode::Gate);
    manager.register(&chat);
    let alice = spawn_update(&manager, &mint("alice", T0, 3600)).await;
    chat.wait_calls(1).await;

    // Signed out while chat is busy with alice's token, then bob signs in.
    let sign_out = tokio::spawn(manager.sign_out());
    settle().await;
    let bob = mint("bob", T0, 3600);
    let second = spawn_update(&manager, &bob).await;
    chat.set_mode(Mode::Accept);
    chat.release();

    let report = second.await.unwrap().unwrap();
    assert_eq!(
        report.delivered(),
        1,
        "bob's update answered before chat took bob's token"
    );
    assert_eq!(chat.signed_outs(), 1);
    assert_eq!(chat.seen().last().map(String::as_str), Some(bob.as_str()));
    assert!(sign_out.await.is_ok(), "sign_out() panicked");
    alice.await.unwrap().unwrap();
    assert_eq!(
        kinds(&drain(&mut events).await),
        ["updated", "signed_out", "updated"],
        "SignedOut must come before the next token's TokenUpdated"
    );
}

//! DESIGN.md "Service feedback" and "Session control": what the manager does when a service refuses
//! its token, when the app signs out, when the app says it woke up, and what `stats()` counts.

use crate::common::*;
use access_manager::clock::{Clock, ManualClock, Sleep};
use access_manager::fetcher_fn;
use access_manager::{
    AccessManager, Backoff, Event, FetchError, FetchReason, GrantKind, RefreshError, ServiceAction,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn service_rejections(events: &[Event]) -> Vec<(u32, ServiceAction)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ServiceRejected { code, action } => Some((*code, *action)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_refusing_with_51215_gets_a_new_token_without_the_clock_moving() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let (manager, mut events) = fetching(&clock, fetcher).build_with_events().unwrap();
    let voice = Recorder::new("voice", Mode::Refuse(51215));
    manager.register(&voice);
    let t1 = mint("alice", T0, 3600);
    calls.next().await.ok(t1.clone());

    let again = calls.next().await;
    assert_eq!(
        again.request.reason(),
        FetchReason::Rejected { code: 51215 }
    );
    assert_eq!(
        again.request.current().map(|t| t.as_str()),
        Some(t1.as_str())
    );
    voice.set_mode(Mode::Accept);
    let t2 = mint("alice", T0 + 1, 3600);
    again.ok(t2.clone());
    voice.wait_calls(2).await;

    assert_eq!(voice.seen(), [t2.as_str()]);
    assert_eq!(manager.token().unwrap().as_str(), t2);
    assert_eq!(clock.now(), at(T0), "the clock moved");
    let seen = drain(&mut events).await;
    assert_eq!(service_rejections(&seen), [(51215, ServiceAction::Refresh)]);
    assert_eq!(manager.stats().service_rejections, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_service_refusing_every_new_token_backs_the_fetches_off() {
    let clock = clock();
    let minted = Arc::new(AtomicU64::new(0));
    // A backend that answers at once (it mints locally); past 50 calls it gives up, so that a
    // manager looping inside its task ends the loop rather than the test.
    let fetcher = {
        let minted = minted.clone();
        fetcher_fn(move |_| {
            let n = minted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n >= 50 {
                    return Err(FetchError::permanent("the test stops a loop"));
                }
                Ok(mint("alice", T0, 3600 + n))
            }
        })
    };
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .backoff(Backoff::default().without_jitter())
        .build()
        .unwrap();
    let voice = Recorder::new("voice", Mode::Refuse(51215));
    manager.register(&voice);
    settle().await;
    // The first token is refused and replaced at once; the replacement is refused too: the next
    // fetch waits 1 s, then 2 s, as retries do.
    assert_eq!(minted.load(Ordering::SeqCst), 2);
    clock.advance(secs(1));
    settle().await;
    assert_eq!(minted.load(Ordering::SeqCst), 3);
    clock.advance(secs(1));
    settle().await;
    assert_eq!(minted.load(Ordering::SeqCst), 3);
    clock.advance(secs(1));
    settle().await;
    assert_eq!(minted.load(Ordering::SeqCst), 4);
    voice.set_mode(Mode::Accept);
    clock.advance(secs(4));
    settle().await;
    assert_eq!(minted.load(Ordering::SeqCst), 5);
    assert_eq!(
        voice.seen().len(),
        1,
        "the accepted token was not delivered"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_token_is_not_delivered_again() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let t1 = mint("alice", T0, 3600);
    let manager = fetching(&clock, fetcher)
        .initial_token(t1.clone())
        .build()
        .unwrap();
    assert_eq!(
        manager.report_service_error(20104).await,
        ServiceAction::Refresh
    );
    let fetch = calls.next().await;
    assert_eq!(
        fetch.request.reason(),
        FetchReason::Rejected { code: 20104 }
    );

    // A consumer registered while the refused token is current is not handed it.
    let late = Recorder::new("late", Mode::Accept);
    manager.register(&late);
    settle().await;
    assert_eq!(late.calls(), 0, "the refused token was delivered");

    let t2 = mint("alice", T0 + 1, 3600);
    fetch.ok(t2.clone());
    late.wait_calls(1).await;
    assert_eq!(late.seen(), [t2.as_str()]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_handing_back_the_refused_token_is_retried_with_backoff() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let t1 = mint("alice", T0, 3600);
    let (manager, mut events) = fetching(&clock, fetcher)
        .initial_token(t1.clone())
        .build_with_events()
        .unwrap();
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Refresh
    );
    calls.next().await.ok(t1.clone()); // the backend's cache hands back the refused token
    settle().await;
    let failed: Vec<_> = drain(&mut events)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::RefreshFailed { retry_at, .. } => Some(retry_at),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [Some(at(T0 + 1))]);
    clock.advance(secs(1));
    let retry = calls.next().await;
    assert_eq!(retry.request.attempt(), 2);
    let t2 = mint("alice", T0 + 1, 3600);
    retry.ok(t2.clone());
    settle().await;
    assert_eq!(manager.token().unwrap().as_str(), t2);
}

#[tokio::test(flavor = "current_thread")]
async fn reports_join_the_fetch_in_flight() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let refresh = spawn_refresh(&manager);
    let fetch = calls.next().await;
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Refresh
    );
    assert_eq!(
        manager.report_service_error(20105).await,
        ServiceAction::Refresh
    );
    assert!(calls.try_next().await.is_none(), "a second fetch in flight");
    let t2 = mint("alice", T0 + 1, 3600);
    fetch.ok(t2.clone());
    assert_eq!(refresh.await.unwrap().unwrap().as_str(), t2);
    assert_eq!(manager.stats().fetches, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_token_pushed_after_a_permanent_failure_is_refreshed_when_a_service_refuses_it() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher).build().unwrap();
    calls
        .next()
        .await
        .answer(Err(FetchError::permanent("logged out")));
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, None);

    // The pushed token resumes automatic fetching, for the service rules too.
    manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Refresh
    );
    let fetch = calls.next().await;
    assert_eq!(
        fetch.request.reason(),
        FetchReason::Rejected { code: 51215 }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_same_invalid_class_twice_stops_automatic_fetching_while_refresh_still_works() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let (manager, mut events) = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build_with_events()
        .unwrap();

    assert_eq!(
        manager.report_service_error(20107).await,
        ServiceAction::Refresh
    );
    let fetch = calls.next().await;
    assert_eq!(
        fetch.request.reason(),
        FetchReason::Rejected { code: 20107 }
    );
    let t2 = mint("alice", T0 + 1, 3600);
    fetch.ok(t2.clone());
    settle().await;
    assert_eq!(manager.token().unwrap().as_str(), t2);

    // The next token is refused in the same class: the backend must be fixed, not hammered.
    assert_eq!(
        manager.report_service_error(20151).await,
        ServiceAction::Permanent
    );
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, None);
    clock.advance_to(at(T0 + 1 + 3600 + 600));
    assert!(calls.try_next().await.is_none(), "fetched automatically");
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Permanent
    );
    assert!(calls.try_next().await.is_none(), "fetched after Permanent");

    // The app can still ask, and that resumes automatic fetching.
    let refresh = spawn_refresh(&manager);
    let manual = calls.next().await;
    assert_eq!(manual.request.reason(), FetchReason::Manual);
    let now = clock.now().duration_since(at(0)).unwrap().as_secs();
    let t3 = mint("alice", now, 3600);
    manual.ok(t3.clone());
    assert_eq!(refresh.await.unwrap().unwrap().as_str(), t3);
    assert_eq!(
        manager.stats().next_fetch_at,
        Some(at(now + 3600 - 180)),
        "automatic fetching did not resume"
    );
    assert_eq!(
        service_rejections(&drain(&mut events).await),
        [
            (20107, ServiceAction::Refresh),
            (20151, ServiceAction::Permanent),
            (51215, ServiceAction::Permanent)
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_code_is_ignored_but_reported() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let (manager, mut events) = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build_with_events()
        .unwrap();
    assert_eq!(
        manager.report_service_error(20003).await,
        ServiceAction::Ignore
    );
    assert!(calls.try_next().await.is_none());
    assert_eq!(
        service_rejections(&drain(&mut events).await),
        [(20003, ServiceAction::Ignore)]
    );
    assert_eq!(manager.stats().service_rejections, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_fetcher_a_report_is_ignored_and_the_token_kept() {
    let clock = clock();
    let jwt = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &jwt);
    let mut events = manager.subscribe();
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Ignore
    );
    assert_eq!(
        manager.report_service_error(20107).await,
        ServiceAction::Ignore
    );
    assert_eq!(manager.token().unwrap().as_str(), jwt);
    assert_eq!(
        service_rejections(&drain(&mut events).await),
        [
            (51215, ServiceAction::Ignore),
            (20107, ServiceAction::Ignore)
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn after_shutdown_a_report_is_ignored() {
    let clock = clock();
    let (fetcher, _calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    manager.shutdown().await;
    assert_eq!(
        manager.report_service_error(51215).await,
        ServiceAction::Ignore
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sign_out_forgets_the_token_tells_every_consumer_and_then_takes_another_identity() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let alice = mint("alice", T0, 3600);
    let (manager, mut events) = fetching(&clock, fetcher)
        .initial_token(alice.clone())
        .build_with_events()
        .unwrap();
    let chat = Recorder::new("chat", Mode::Accept);
    let voice = Recorder::new("voice", Mode::Accept);
    manager.register(&chat);
    manager.register(&voice);
    chat.wait_calls(1).await;
    voice.wait_calls(1).await;

    manager.sign_out().await.unwrap();
    assert!(manager.token().is_none());
    assert_eq!((chat.signed_outs(), voice.signed_outs()), (1, 1));
    assert_eq!(kinds(&drain(&mut events).await), ["signed_out"]);

    // No timer and no automatic fetch for the forgotten token, even long past its expiry.
    clock.advance_to(at(T0 + 2 * 3600));
    assert!(calls.try_next().await.is_none(), "fetched after sign-out");
    assert!(
        drain(&mut events).await.is_empty(),
        "a timer of the forgotten token fired"
    );

    // Another user signs in on the same wiring.
    let now = T0 + 2 * 3600;
    let bob = mint("bob", now, 3600);
    let report = manager.update_token(&bob).await.unwrap();
    assert_eq!(report.delivered(), 2);
    assert_eq!(chat.seen(), [alice.as_str(), bob.as_str()]);
    assert_eq!(manager.identity().as_deref(), Some("bob"));
    // Automatic fetching is back for bob.
    clock.advance_to(at(now + 3600 - 180));
    let fetch = calls.next().await;
    assert_eq!(fetch.request.reason(), FetchReason::WillExpire);
}

#[tokio::test(flavor = "current_thread")]
async fn sign_out_cancels_the_fetch_in_flight_and_its_callers_get_signed_out() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let refresh = spawn_refresh(&manager);
    let fetch = calls.next().await;
    manager.sign_out().await.unwrap();
    assert!(matches!(
        refresh.await.unwrap(),
        Err(RefreshError::SignedOut)
    ));
    assert!(fetch.abandoned(), "the fetch was not cancelled");
    assert!(manager.token().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_busy_at_sign_out_is_told_once_its_call_ends() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let mut events = manager.subscribe();
    let chat = Recorder::new("chat", Mode::Gate);
    manager.register(&chat);
    chat.wait_calls(1).await;

    let sign_out = tokio::spawn(manager.sign_out());
    settle().await;
    assert_eq!(chat.signed_outs(), 0, "signed_out overlapped update_token");
    assert!(!sign_out.is_finished());
    assert!(manager.token().is_none(), "the token is forgotten at once");
    chat.release();
    sign_out.await.unwrap().unwrap();
    assert_eq!(chat.signed_outs(), 1);
    assert_eq!(kinds(&drain(&mut events).await), ["signed_out"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_sign_out_dropped_unpolled_still_signs_out() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    drop(manager.sign_out());
    settle().await;
    assert!(manager.token().is_none());
    assert_eq!(chat.signed_outs(), 1);
}

/// A clock whose timers never fire by themselves: only `resume()` makes the manager look at it.
#[derive(Debug, Clone)]
struct StuckClock(ManualClock);

impl Clock for StuckClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
    fn sleep_until(&self, _: SystemTime) -> Sleep {
        Box::pin(std::future::pending())
    }
    fn sleep(&self, _: Duration) -> Sleep {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn with_timers_that_never_fire_resume_fires_will_expire_fetches_and_retries_at_once() {
    let wall = clock();
    let (fetcher, mut calls) = scripted();
    let (manager, mut events) = AccessManager::builder()
        .clock(StuckClock(wall.clone()))
        .fetcher(fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build_with_events()
        .unwrap();
    assert!(drain(&mut events).await.is_empty());

    // The laptop slept into the refresh window: its timer did not fire.
    wall.set(at(T0 + 3600 - 100));
    assert!(drain(&mut events).await.is_empty());
    assert!(calls.try_next().await.is_none());

    manager.resume();
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire"]);
    let first = calls.next().await;
    assert_eq!(first.request.reason(), FetchReason::WillExpire);
    first.fail("network down");
    settle().await;
    // Its retry waits out a backoff that never ends on this clock…
    assert!(calls.try_next().await.is_none());
    // …until the app says the network is back.
    manager.resume();
    let retry = calls.next().await;
    assert_eq!(retry.request.attempt(), 2);
    retry.ok(mint("alice", T0 + 3600 - 100, 3600));
    settle().await;
    assert_eq!(manager.stats().tokens_installed, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn stats_count_a_known_sequence() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher).build().unwrap();
    let chat = Recorder::new("chat", Mode::Accept);
    let router = Recorder::requiring("router", GrantKind::TaskRouter);
    manager.register(&chat);
    manager.register(&router);

    calls.next().await.fail("down"); // fetch 1 fails
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 1)));
    clock.advance(secs(1));
    let second = calls.next().await;
    clock.advance(secs(2)); // the fetch takes 2 s
    let t1 = mint("alice", T0 + 3, 3600);
    second.ok(t1); // installed, delivered to chat; router lacks its grant
    chat.wait_calls(1).await;
    settle().await;
    assert!(manager.update_token("not a token").await.is_err());
    let t2 = mint("alice", T0 + 4, 3600);
    manager.update_token(&t2).await.unwrap();
    manager.report_service_error(20003).await;
    settle().await;

    let stats = manager.stats();
    assert_eq!(stats.tokens_installed, 2);
    assert_eq!(stats.fetches, 2);
    assert_eq!(stats.fetch_failures, 1);
    assert_eq!(stats.tokens_rejected, 1);
    assert_eq!(stats.deliveries, 2, "chat took two tokens");
    assert_eq!(stats.consumer_failures, 2, "router lacked its grant twice");
    assert_eq!(stats.service_rejections, 1);
    assert_eq!(stats.store_failures, 0);
    assert_eq!(stats.last_fetch_duration, Some(secs(2)));
    assert_eq!(stats.next_fetch_at, Some(at(T0 + 4 + 3600 - 180)));
}

// ---------------------------------------------------------------------------------------------
// The manager's task decides every report, in mailbox order.

#[tokio::test(flavor = "current_thread")]
async fn a_report_sent_after_refresh_resumed_fetching_is_decided_after_it() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let failed = spawn_refresh(&manager);
    calls
        .next()
        .await
        .answer(Err(FetchError::permanent("backend broken")));
    assert!(failed.await.unwrap().is_err());
    assert_eq!(manager.stats().next_fetch_at, None, "fetching not stopped");

    // `refresh()` is sent (behaviour 6: it resumes automatic fetching), then a service refuses the
    // held token, before the manager's task has run in between.
    let mut resumed = Box::pin(manager.refresh());
    assert!(futures::poll!(resumed.as_mut()).is_pending());
    let action = manager.report_service_error(51215).await;
    assert_eq!(action, ServiceAction::Refresh);

    let fetch = calls.next().await;
    assert_eq!(fetch.request.reason(), FetchReason::Manual);
    let t2 = mint("alice", T0 + 1, 3600);
    fetch.ok(t2.clone());
    assert_eq!(resumed.await.unwrap().as_str(), t2);
    assert_eq!(
        manager.stats().next_fetch_at,
        Some(at(T0 + 1 + 3600 - 180)),
        "the report stopped automatic fetching again"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_backed_off_fetch_after_a_second_refusal_keeps_the_refusals_reason() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher).build().unwrap();
    let voice = Recorder::new("voice", Mode::Refuse(51215));
    manager.register(&voice);
    calls.next().await.ok(mint("alice", T0, 3600));
    let again = calls.next().await;
    assert_eq!(
        again.request.reason(),
        FetchReason::Rejected { code: 51215 }
    );
    // The replacement is refused too: the next fetch backs off 1 s, and says why it fetches.
    again.ok(mint("alice", T0 + 1, 3600));
    voice.wait_calls(2).await;
    assert!(
        calls.try_next().await.is_none(),
        "fetched without backing off"
    );
    clock.advance(secs(1));
    let backed_off = calls.next().await;
    assert_eq!(
        backed_off.request.reason(),
        FetchReason::Rejected { code: 51215 }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn resume_cutting_a_backoff_publishes_the_next_fetch_it_plans() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .backoff(Backoff::new(secs(120), secs(120)).without_jitter())
        .build()
        .unwrap();
    // 30 s before the refresh window, a refresh fails: the retry waits out 120 s of backoff.
    clock.advance_to(at(T0 + 3420 - 30));
    let refresh = spawn_refresh(&manager);
    calls.next().await.fail("down");
    assert!(refresh.await.unwrap().is_err());
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 3420 + 90)));
    // The app says the network is back: the backoff is over, the refresh window stands.
    manager.resume();
    settle().await;
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 3420)));
}

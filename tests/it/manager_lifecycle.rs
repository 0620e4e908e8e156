//! Behaviours 11–13 of DESIGN.md: wall-clock jumps, shutdown and teardown, and secrets kept out of
//! logs, events and errors.

use crate::common::*;
use access_manager::clock::ManualClock;
use access_manager::{
    AccessManager, AccessManagerBuilder, Event, FetchError, FetchReason, RefreshError, UpdateError,
};
use std::sync::{Arc, Mutex};

fn with_fetcher(clock: &ManualClock, fetcher: ScriptedFetcher) -> AccessManagerBuilder {
    AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
}

// ---------------------------------------------------------------------------------------------
// Behaviour 11: wall-clock jumps

#[tokio::test(flavor = "current_thread")]
async fn b11_a_jump_past_exp_fires_will_expire_then_expired_once_each_and_fetches_with_reason_expired(
) {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = with_fetcher(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    assert!(calls.try_next().await.is_none(), "fetched a fresh token");

    // The laptop sleeps through the token's whole refresh window and expiry.
    clock.set(at(T0 + 3600 + 3 * 3600));
    let call = calls.next().await;
    assert_eq!(call.request.reason(), FetchReason::Expired);
    assert_eq!(call.request.attempt(), 1);
    assert_eq!(call.request.current().unwrap().as_str(), held);
    let fired = drain(&mut events).await;
    assert_eq!(kinds(&fired), ["will_expire", "expired"]);
    for e in &fired {
        match e {
            Event::TokenWillExpire { token } | Event::TokenExpired { token } => {
                assert!(is_of(token, &held))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(manager.is_expired());

    let fresh = mint("alice", T0 + 4 * 3600, 3600);
    call.ok(fresh.clone());
    assert_eq!(kinds(&drain(&mut events).await), ["updated"], "each once");
    assert_eq!(manager.token().unwrap().as_str(), fresh);
    assert!(!manager.is_expired());
    assert!(calls.try_next().await.is_none(), "fetched again");
}

#[tokio::test(flavor = "current_thread")]
async fn b11_a_jump_backwards_fires_nothing_early() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = with_fetcher(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let will_expire_at = T0 + 3600 - 180;

    clock.set(at(T0 + 3000));
    clock.set(at(T0 - 86_400));
    assert!(drain(&mut events).await.is_empty(), "fired on a jump back");
    assert!(calls.try_next().await.is_none(), "fetched on a jump back");
    clock.set(at(will_expire_at - 1));
    assert!(drain(&mut events).await.is_empty(), "WillExpire early");
    assert!(calls.try_next().await.is_none(), "fetched early");
    assert!(!manager.is_expired());

    clock.advance(secs(1));
    assert_eq!(kinds(&drain(&mut events).await), ["will_expire"]);
    assert_eq!(calls.next().await.request.reason(), FetchReason::WillExpire);
}

// ---------------------------------------------------------------------------------------------
// Behaviour 12: shutdown and teardown

#[tokio::test(flavor = "current_thread")]
async fn b12_shutdown_stops_the_driver_closed_is_the_last_event_and_the_fetcher_is_dropped() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher).build().unwrap();
    let mut events = manager.subscribe();
    let jwt = mint("alice", T0, 3600);
    calls.next().await.ok(jwt.clone());
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;

    manager.shutdown().await;
    assert!(manager.is_closed());
    calls.wait_fetcher_dropped().await;
    assert_eq!(clock.pending_sleeps(), 0, "a timer outlived the driver");
    let seen = drain(&mut events).await;
    assert_eq!(kinds(&seen), ["updated", "closed"]);
    assert!(events.recv().await.is_none(), "an event after Closed");

    // Nothing runs any more: no timer, no fetch, no delivery.
    clock.set(at(T0 + 10 * 3600));
    settle().await;
    assert_eq!(calls.made(), 1);
    assert_eq!(chat.calls(), 1);
    assert!(events.recv().await.is_none());
    assert!(
        manager.token().is_none(),
        "a stopped manager still holds its token"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b12_update_refresh_and_fresh_token_answer_closed_after_shutdown() {
    let clock = clock();
    let (fetcher, _calls) = scripted();
    let held = mint("alice", T0, 3600);
    let manager = with_fetcher(&clock, fetcher)
        .initial_token(&held)
        .build()
        .unwrap();
    manager.shutdown().await;

    assert_eq!(
        manager
            .update_token(mint("alice", T0, 1800))
            .await
            .unwrap_err(),
        UpdateError::Closed
    );
    assert_eq!(
        manager.update_token("garbage").await.unwrap_err(),
        UpdateError::Closed
    );
    assert!(matches!(manager.refresh().await, Err(RefreshError::Closed)));
    assert!(matches!(
        manager.fresh_token(secs(7200)).await,
        Err(RefreshError::Closed)
    ));
    // Even when the held token would qualify.
    assert!(matches!(
        manager.fresh_token(secs(60)).await,
        Err(RefreshError::Closed)
    ));

    let pushed_only = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    pushed_only.shutdown().await;
    assert!(
        matches!(pushed_only.refresh().await, Err(RefreshError::Closed)),
        "Closed, not NoFetcher"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b12_a_subscription_made_after_shutdown_yields_closed_then_none() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    manager.shutdown().await;
    let mut events = manager.subscribe();
    assert_eq!(events.recv().await, Some(Event::Closed));
    assert_eq!(events.recv().await, None);
    assert_eq!(events.recv().await, None);
}

#[tokio::test(flavor = "current_thread")]
async fn b12_a_refresh_waiting_on_an_in_flight_fetch_answers_closed_at_shutdown() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher).build().unwrap();
    let initial = calls.next().await;
    let waiting = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.refresh().await })
    };
    let waiting_fresh = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.fresh_token(secs(60)).await })
    };
    settle().await;
    assert!(!waiting.is_finished());
    assert_eq!(calls.made(), 1, "refresh must join the fetch in flight");

    manager.shutdown().await;
    assert!(matches!(waiting.await.unwrap(), Err(RefreshError::Closed)));
    assert!(matches!(
        waiting_fresh.await.unwrap(),
        Err(RefreshError::Closed)
    ));
    assert!(initial.abandoned(), "the in-flight fetch outlived shutdown");
    initial.ok(mint("alice", T0, 3600));
    settle().await;
    assert!(manager.token().is_none(), "a fetch answered after shutdown");
    calls.wait_fetcher_dropped().await;
}

#[tokio::test(flavor = "current_thread")]
async fn b12_an_update_waiting_on_a_slow_consumer_answers_closed_at_shutdown() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let slow = Recorder::new("video", Mode::Gate);
    manager.register(&slow);
    let update = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.update_token(mint("alice", T0, 3600)).await })
    };
    slow.wait_calls(1).await;
    manager.shutdown().await;
    assert_eq!(update.await.unwrap().unwrap_err(), UpdateError::Closed);
    assert_eq!(
        Arc::strong_count(&slow),
        1,
        "the manager still holds the consumer"
    );
    assert_eq!(
        clock.pending_sleeps(),
        0,
        "the delivery timeout outlived shutdown"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn b12_an_update_with_every_delivery_done_is_answered_even_when_shutdown_follows_in_the_same_turn(
) {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let jwt = mint("alice", T0, 3600);
    // Both commands are queued before the manager's task runs: it takes the token, owes no
    // consumer anything, then stops, all in one turn.
    let (report, ()) = tokio::join!(manager.update_token(&jwt), manager.shutdown());
    let report = report.expect("the update was taken before the shutdown");
    assert!(report.changed());
    assert_eq!(report.token().as_str(), jwt);
}

#[tokio::test(flavor = "current_thread")]
async fn b12_dropping_the_last_handle_stops_the_manager() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = with_fetcher(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
    let mut events = manager.subscribe();
    let clone = manager.clone();

    drop(manager);
    settle().await;
    assert!(!calls.fetcher_dropped(), "stopped while a clone lives");
    assert!(drain(&mut events).await.is_empty());
    assert!(!clone.is_closed());

    drop(clone);
    calls.wait_fetcher_dropped().await;
    assert_eq!(next(&mut events).await, Event::Closed);
    assert!(events.recv().await.is_none());
    assert_eq!(clock.pending_sleeps(), 0);
    clock.set(at(T0 + 10 * 3600));
    assert!(calls.try_next().await.is_none());
    assert_eq!(chat.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn b12_shutdown_is_idempotent() {
    let clock = clock();
    let (fetcher, calls) = scripted();
    let manager = with_fetcher(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let other = manager.clone();
    tokio::join!(manager.shutdown(), other.shutdown());
    manager.shutdown().await;
    other.shutdown().await;
    calls.wait_fetcher_dropped().await;
    assert_eq!(kinds(&drain(&mut events).await), ["closed"]);
    assert!(events.recv().await.is_none());
    assert!(manager.is_closed());
}

// ---------------------------------------------------------------------------------------------
// Behaviour 13: no signature and no secret anywhere

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn b13_no_signature_or_secret_reaches_logs_events_errors_or_debug_output() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(capture.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let builder = with_fetcher(&clock, fetcher).refresh_ahead(secs(300));
    let t1 = mint("alice", T0, 3600);
    let t2 = mint("alice", T0, 7200);
    let expired = mint("alice", T0 - 7200, 3600);
    let bob = mint("bob", T0, 3600);
    let fetched_expired = mint("alice", T0 - 3 * 3600, 3600);
    let bad_signature = format!("{}A", t2);
    let two_segments = format!("{}.{}", t1.split('.').next().unwrap(), signature(&t1));
    let secrets: Vec<String> = [&t1, &t2, &expired, &bob, &fetched_expired, &bad_signature]
        .iter()
        .map(|t| signature(t).to_string())
        .chain([SECRET.to_string()])
        .collect();

    let mut seen: Vec<(String, String)> = Vec::new(); // (what, text)
    let mut keep = |what: &str, text: String| seen.push((what.to_string(), text));
    keep("access manager builder", format!("{builder:?}"));
    keep(
        "builder with an initial token",
        format!("{:?}", AccessManager::builder().initial_token(&t1)),
    );
    keep(
        "token builder",
        format!("{:?}", builder_for_debug().identity("alice")),
    );

    let manager = builder.build().unwrap();
    let mut events = manager.subscribe();
    let chat = Recorder::new("chat", Mode::Accept);
    let sync = Recorder::new("sync", Mode::Fail);
    let voice = Recorder::new("voice", Mode::Panic);
    for c in [&chat, &sync, &voice] {
        manager.register(c);
    }

    // The initial fetch.
    let initial = calls.next().await;
    keep("fetch request", format!("{:?}", initial.request));
    initial.ok(t1.clone());
    settle().await;
    keep("manager", format!("{manager:?}"));
    keep("token Debug", format!("{:?}", manager.token().unwrap()));
    keep("token Display", format!("{}", manager.token().unwrap()));

    // An update, with a consumer failing and one panicking.
    let report = manager.update_token(&t2).await.unwrap();
    keep("update report", format!("{report:?}"));
    for (name, error) in report.failed() {
        keep(name, format!("{error} / {error:?}"));
    }

    // Rejections.
    for jwt in [&expired, &bob, &bad_signature, &two_segments] {
        let error = manager.update_token(jwt).await.unwrap_err();
        keep("update error", format!("{error} / {error:?}"));
    }

    // Refresh failures: a transient error, a rejected fetched token, a malformed one.
    for answer in [
        Err(FetchError::transient("backend down")),
        Ok(fetched_expired.clone()),
        Ok(two_segments.clone()),
    ] {
        let refresh = {
            let manager = manager.clone();
            tokio::spawn(async move { manager.refresh().await })
        };
        let call = calls.next().await;
        keep("fetch request", format!("{:?}", call.request));
        call.answer(answer);
        let error = refresh.await.unwrap().unwrap_err();
        keep("refresh error", format!("{error} / {error:?}"));
    }
    keep("manager", format!("{manager:?}"));
    manager.shutdown().await;

    let events: Vec<Event> = std::iter::from_fn(|| events.try_recv()).collect();
    for e in &events {
        keep("event", format!("{e:?}"));
    }
    let log = capture.text();
    keep("log", log.clone());

    // The scenario ran and was logged.
    let kinds = kinds(&events);
    for k in [
        "updated",
        "rejected",
        "refresh_failed",
        "consumer_failed",
        "closed",
    ] {
        assert!(kinds.contains(&k), "no {k} event: {kinds:?}");
    }
    for line in [
        "token updated",
        "token rejected",
        "token refresh failed",
        "consumer failed",
    ] {
        assert!(log.contains(line), "the log lacks {line:?}:\n{log}");
    }
    for (what, text) in &seen {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains the secret or a signature {secret:?}:\n{text}"
            );
        }
    }
}

fn builder_for_debug() -> access_manager::AccessTokenBuilder {
    access_manager::AccessToken::builder(ACCOUNT, KEY, SECRET)
}

/// A fetcher whose teardown takes a while (an HTTP client closing its connections, say).
struct SlowToDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SlowToDrop {
    // Not a wait for something to happen: a teardown that takes time, so that a shutdown() not
    // waiting for it returns visibly early.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_shutdown_returns_only_once_the_fetcher_is_dropped() {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = SlowToDrop(dropped.clone());
    let fetcher = access_manager::fetcher_fn(move |_| {
        let _keep = &guard;
        async { Err::<String, _>(FetchError::permanent("unused")) }
    });
    let clock = clock();
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    manager.shutdown().await;
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "shutdown() returned while the driver still held the fetcher"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_managers_debug_shows_its_token_summary_consumers_and_state() {
    let held = mint("alice", T0, 3600);
    let manager = AccessManager::builder()
        .clock(clock())
        .initial_token(&held)
        .build()
        .unwrap();
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    settle().await;
    let shown = format!("{manager:?}");
    assert!(
        shown.starts_with("AccessManager { token: Some(AccessToken {"),
        "{shown}"
    );
    assert!(shown.contains("identity: Some(\"alice\")"), "{shown}");
    assert!(shown.ends_with("consumers: 1, closed: false }"), "{shown}");
    manager.shutdown().await;
    assert_eq!(
        format!("{manager:?}"),
        "AccessManager { token: None, consumers: 0, closed: true }"
    );
}

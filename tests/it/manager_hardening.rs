//! Plugins that misbehave in unusual places, and races between the app and the fetcher: the
//! manager keeps its token, its consumers and its promise to close.

use crate::common::*;
use access_manager::clock::ManualClock;
use access_manager::{
    AccessManager, AccessToken, Backoff, ConsumerError, Event, FetchError, FetchRequest, GrantKind,
    TokenConsumer, TokenFetcher,
};
use async_trait::async_trait;
use futures::FutureExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A fetch that never ends and panics when dropped.
struct PanicsWhenDropped;
impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the fetch future panics when dropped");
        }
    }
}
struct HangingFetcher;
#[async_trait]
impl TokenFetcher for HangingFetcher {
    async fn fetch_token(&self, _request: FetchRequest) -> Result<String, FetchError> {
        let _guard = PanicsWhenDropped;
        std::future::pending::<()>().await;
        unreachable!()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_returns_even_when_dropping_the_fetch_in_flight_panics() {
    let (manager, mut events) = AccessManager::builder()
        .clock(clock())
        .fetcher(HangingFetcher)
        .build_with_events()
        .unwrap();
    settle().await; // the initial fetch is in flight
    manager.shutdown().await;
    assert!(manager.is_closed());
    assert!(matches!(next(&mut events).await, Event::Closed));
    assert!(matches!(
        manager.update_token(mint("alice", T0, 3600)).await,
        Err(access_manager::UpdateError::Closed)
    ));
}

/// A consumer (hand-written, not `async_trait`) that panics before it returns its future.
struct PanicsBeforeItsFuture;
impl TokenConsumer for PanicsBeforeItsFuture {
    fn name(&self) -> &str {
        "sync-panic"
    }
    fn update_token<'a, 'b, 'c>(
        &'a self,
        _token: &'b AccessToken,
    ) -> Pin<Box<dyn Future<Output = Result<(), ConsumerError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        panic!("panics before returning a future")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_panicking_before_returning_its_future_harms_no_one() {
    let manager = AccessManager::builder().clock(clock()).build().unwrap();
    let bad = Arc::new(PanicsBeforeItsFuture);
    let good = Recorder::new("chat", Mode::Accept);
    manager.register(&bad);
    manager.register(&good);
    let report = manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    let failed: Vec<_> = report.failed().map(|(name, _)| name.to_string()).collect();
    assert_eq!(failed, ["sync-panic"]);
    assert_eq!(good.seen().len(), 1);
    assert!(!manager.is_closed());
}

/// A fetcher that panics before returning its future.
struct FetcherPanicsBeforeItsFuture(AtomicUsize);
impl TokenFetcher for FetcherPanicsBeforeItsFuture {
    fn fetch_token<'a, 'b>(
        &'a self,
        _request: FetchRequest,
    ) -> Pin<Box<dyn Future<Output = Result<String, FetchError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("fetcher panics before returning a future")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_panicking_before_returning_its_future_is_a_transient_failure() {
    let (manager, mut events) = AccessManager::builder()
        .clock(clock())
        .fetcher(FetcherPanicsBeforeItsFuture(AtomicUsize::new(0)))
        .build_with_events()
        .unwrap();
    match next(&mut events).await {
        Event::RefreshFailed { error, .. } => assert!(error.contains("panicked"), "{error}"),
        other => panic!("expected RefreshFailed, got {other:?}"),
    }
    assert!(!manager.is_closed());
}

struct NeedsVoice;
#[async_trait]
impl TokenConsumer for NeedsVoice {
    fn name(&self) -> &str {
        "voice"
    }
    fn required_grant(&self) -> Option<GrantKind> {
        Some(GrantKind::Voice)
    }
    async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_registered_as_a_token_arrives_is_reported_once_for_it() {
    let (manager, mut events) = AccessManager::builder()
        .clock(clock())
        .build_with_events()
        .unwrap();
    let chat_only = AccessToken::builder(ACCOUNT, KEY, SECRET)
        .identity("alice")
        .issued_at(at(T0))
        .grant(access_manager::grants::ChatGrant::default())
        .to_jwt()
        .unwrap();
    // The update and the registration reach the driver in one turn.
    let _ = manager.update_token(&chat_only).now_or_never();
    let voice = Arc::new(NeedsVoice);
    manager.register(&voice);
    let seen = drain(&mut events).await;
    let failures = seen
        .iter()
        .filter(|e| matches!(e, Event::ConsumerFailed { .. }))
        .count();
    assert_eq!(failures, 1, "{seen:?}");
}

/// A fetcher answered by the test through a oneshot.
struct GatedFetcher(Mutex<Option<oneshot::Receiver<String>>>);
#[async_trait]
impl TokenFetcher for GatedFetcher {
    async fn fetch_token(&self, _request: FetchRequest) -> Result<String, FetchError> {
        let gate = self.0.lock().unwrap().take();
        match gate {
            Some(gate) => Ok(gate.await.unwrap()),
            None => std::future::pending().await,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_late_fetch_does_not_replace_a_newer_token_the_app_pushed() {
    let (answer, gate) = oneshot::channel();
    let manager = AccessManager::builder()
        .clock(clock())
        .fetcher(GatedFetcher(Mutex::new(Some(gate))))
        .build()
        .unwrap();
    settle().await; // the initial fetch is in flight
    let pushed = mint("alice", T0, 3600);
    manager.update_token(&pushed).await.unwrap();
    answer.send(mint("alice", T0 - 3000, 3600)).unwrap(); // expires 50 min earlier
    settle().await;
    assert_eq!(manager.token().unwrap().as_str(), pushed);
}

#[tokio::test(flavor = "current_thread")]
async fn a_late_fetch_leaves_the_pushed_tokens_refresh_plan_when_the_wall_clock_jumps() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .build()
        .unwrap();
    let initial = calls.next().await; // in flight
    let pushed = mint("alice", T0, 36_000);
    manager.update_token(&pushed).await.unwrap();
    initial.ok(mint("alice", T0 - 3000, 3600)); // expires earlier: not taken
    settle().await;
    assert_eq!(manager.token().unwrap().as_str(), pushed);
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 36_000 - 180)));

    // The wall clock jumps (a laptop waking up) into the pushed token's refresh window.
    clock.set(at(T0 + 36_000 - 100));
    let refresh = calls.try_next().await;
    assert!(refresh.is_some(), "no fetch in the refresh window");
}

#[tokio::test(flavor = "current_thread")]
async fn skew_estimation_leaves_a_backends_cached_token_on_the_device_clock() {
    let clock: ManualClock = clock();
    let fetched = Arc::new(AtomicUsize::new(0));
    let fetcher = {
        let fetched = fetched.clone();
        access_manager::fetcher_fn(move |_| {
            let n = fetched.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // Minted 50 min ago, 10 min left: cached by the backend, not a skewed clock.
                    Ok(mint("alice", T0 - 3000, 3600))
                } else {
                    std::future::pending().await
                }
            }
        })
    };
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .estimate_clock_skew(true)
        .build()
        .unwrap();
    settle().await;
    // Its refresh is due at exp - 180 s on the device clock, 420 s from now.
    clock.advance(secs(420));
    settle().await;
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        2,
        "refresh not started in time"
    );
    clock.advance(secs(180));
    assert!(manager.is_expired());
}

#[test]
fn a_zero_backoff_does_not_spin_the_driver() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let clock = clock();
    let calls = Arc::new(AtomicUsize::new(0));
    let fetcher = {
        let calls = calls.clone();
        access_manager::fetcher_fn(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<String, _>(FetchError::transient("down")) }
        })
    };
    runtime.block_on(async {
        let manager = AccessManager::builder()
            .clock(clock.clone())
            .fetcher(fetcher)
            .backoff(Backoff::new(secs(0), secs(0)))
            .build()
            .unwrap();
        // The fake clock stands still: one attempt, then a wait of at least 100 ms. (A spinning
        // driver, on the other worker, would make thousands of attempts meanwhile.)
        let until = |n: usize| {
            let calls = calls.clone();
            async move {
                for _ in 0..100_000 {
                    if calls.load(Ordering::SeqCst) >= n {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                for _ in 0..1000 {
                    tokio::task::yield_now().await;
                }
                calls.load(Ordering::SeqCst)
            }
        };
        assert_eq!(until(1).await, 1);
        clock.advance(std::time::Duration::from_millis(100));
        assert_eq!(until(2).await, 2);
        manager.shutdown().await;
    });
}

/// A clock that panics on `now` once told to.
#[derive(Debug, Clone)]
struct BreakableClock(ManualClock, Arc<std::sync::atomic::AtomicBool>);
impl access_manager::clock::Clock for BreakableClock {
    fn now(&self) -> std::time::SystemTime {
        if self.1.load(Ordering::SeqCst) {
            panic!("the clock broke");
        }
        access_manager::clock::Clock::now(&self.0)
    }
    fn sleep_until(&self, deadline: std::time::SystemTime) -> access_manager::clock::Sleep {
        self.0.sleep_until(deadline)
    }
    fn sleep(&self, duration: std::time::Duration) -> access_manager::clock::Sleep {
        self.0.sleep(duration)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_in_a_turn_run_by_update_token_closes_the_manager_and_the_caller_gets_closed() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let manager = AccessManager::builder()
        .clock(BreakableClock(clock(), broken.clone()))
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    settle().await;
    broken.store(true, Ordering::SeqCst);
    // The manager is idle: the caller runs the driver's turn, and the clock panics in it.
    let answer = std::panic::AssertUnwindSafe(manager.update_token(mint("alice", T0 + 1, 3600)))
        .catch_unwind()
        .await;
    broken.store(false, Ordering::SeqCst);
    settle().await;
    let answer = answer.expect("the driver's panic reached update_token's caller");
    assert!(
        matches!(answer, Err(access_manager::UpdateError::Closed)),
        "{answer:?}"
    );
    assert!(manager.is_closed());
    manager.shutdown().await;
}

/// A consumer whose call never ends and panics when dropped.
struct HangingConsumer;
#[async_trait]
impl TokenConsumer for HangingConsumer {
    fn name(&self) -> &str {
        "hanging"
    }
    async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
        let _guard = PanicsWhenDropped;
        std::future::pending::<()>().await;
        unreachable!()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_fetch_that_panics_when_dropped_leaves_the_manager_open() {
    let clock = clock();
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(HangingFetcher)
        .build_with_events()
        .unwrap();
    settle().await; // the initial fetch is in flight
    clock.advance(secs(31)); // past the 30 s fetch timeout: the fetch is dropped
    settle().await;
    assert!(
        !manager.is_closed(),
        "dropping the timed-out fetch closed the manager"
    );
    match next(&mut events).await {
        Event::RefreshFailed { error, .. } => assert!(error.contains("timed out"), "{error}"),
        other => panic!("expected RefreshFailed, got {other:?}"),
    }
    manager.update_token(mint("alice", T0, 3600)).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_consumer_call_that_panics_when_dropped_leaves_the_manager_open() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let mut events = manager.subscribe();
    let hanging = Arc::new(HangingConsumer);
    manager.register(&hanging);
    settle().await; // its call is in flight
    clock.advance(secs(11)); // past the 10 s consumer timeout: the call is dropped
    settle().await;
    assert!(
        !manager.is_closed(),
        "dropping the timed-out call closed the manager"
    );
    assert_eq!(
        consumer_failures(&drain(&mut events).await),
        [(
            "hanging".to_string(),
            "consumer did not answer within 10 s".to_string()
        )]
    );
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
}

/// A fetcher that panics when dropped, even while a panic unwinds.
struct FetcherPanickingWhenDropped;
#[async_trait]
impl TokenFetcher for FetcherPanickingWhenDropped {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        HangingFetcher.fetch_token(request).await
    }
}
impl Drop for FetcherPanickingWhenDropped {
    fn drop(&mut self) {
        panic!("the fetcher panics when dropped");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_returns_when_both_the_fetch_in_flight_and_the_fetcher_panic_when_dropped() {
    let manager = AccessManager::builder()
        .clock(clock())
        .fetcher(FetcherPanickingWhenDropped)
        .build()
        .unwrap();
    settle().await; // the initial fetch is in flight
    manager.shutdown().await;
    assert!(manager.is_closed());
}

/// An error whose `Drop` panics: what a plugin hands back is user code too.
#[derive(Debug)]
struct ErrorPanickingWhenDropped;
impl std::fmt::Display for ErrorPanickingWhenDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an error that panics when dropped")
    }
}
impl std::error::Error for ErrorPanickingWhenDropped {}
impl Drop for ErrorPanickingWhenDropped {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the error panics when dropped");
        }
    }
}

struct FailingWithAPanickyError;
#[async_trait]
impl TokenConsumer for FailingWithAPanickyError {
    fn name(&self) -> &str {
        "panicky"
    }
    async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
        Err(ConsumerError::new(ErrorPanickingWhenDropped))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_error_that_panics_when_dropped_leaves_the_manager_open() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let mut events = manager.subscribe();
    let panicky = Arc::new(FailingWithAPanickyError);
    manager.register(&panicky);
    settle().await; // the held token's delivery failed; nobody waits for its report
    assert!(
        !manager.is_closed(),
        "dropping the consumer's error closed the manager"
    );
    assert_eq!(
        consumer_failures(&drain(&mut events).await),
        [(
            "panicky".to_string(),
            "an error that panics when dropped".to_string()
        )]
    );
    // The app reads a report carrying one, and drops it.
    let report = manager
        .update_token(mint("alice", T0 + 1, 3600))
        .await
        .unwrap();
    assert_eq!(report.failed().count(), 1);
    drop(report);
    // An update nobody waits for: its report is dropped by the manager.
    drop(manager.update_token(mint("alice", T0 + 2, 3600)));
    settle().await;
    assert!(!manager.is_closed());
    let chat = Recorder::new("chat", Mode::Accept);
    manager.register(&chat);
    chat.wait_calls(1).await;
}

struct FetcherFailingWithAPanickyError;
#[async_trait]
impl TokenFetcher for FetcherFailingWithAPanickyError {
    async fn fetch_token(&self, _request: FetchRequest) -> Result<String, FetchError> {
        Err(FetchError::transient(ErrorPanickingWhenDropped))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetch_error_that_panics_when_dropped_leaves_the_manager_open() {
    let clock = clock();
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(FetcherFailingWithAPanickyError)
        .build_with_events()
        .unwrap();
    settle().await; // the initial fetch failed
    assert!(
        !manager.is_closed(),
        "dropping the fetcher's error closed the manager"
    );
    match next(&mut events).await {
        Event::RefreshFailed { error, .. } => {
            assert!(error.contains("panics when dropped"), "{error}")
        }
        other => panic!("expected RefreshFailed, got {other:?}"),
    }
    // A caller that gets the error and drops it.
    let err = manager.refresh().await.unwrap_err();
    drop(err);
    manager.update_token(mint("alice", T0, 3600)).await.unwrap();
}

//! Behaviour 14 and registration: plugins that need their manager hold a weak handle and never
//! wait for themselves; consumers of any type register, and dropped ones are let go promptly.

use crate::common::*;
use access_manager::clock::ManualClock;
use access_manager::{
    fetcher_fn, AccessManager, AccessToken, ConsumerError, Event, FetchError, FetchRequest,
    RefreshError, TokenConsumer, WeakAccessManager,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A slot for the manager's weak handle, filled once the manager is built.
type Slot = Arc<OnceLock<WeakAccessManager>>;

fn upgrade(slot: &Slot) -> AccessManager {
    slot.get()
        .and_then(WeakAccessManager::upgrade)
        .expect("the manager is gone")
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_holding_a_weak_handle_does_not_keep_its_manager_alive() {
    let clock = clock();
    let slot: Slot = Arc::default();
    let fetcher_slot = slot.clone();
    let fetcher = fetcher_fn(move |_: FetchRequest| {
        let manager = fetcher_slot.get().and_then(WeakAccessManager::upgrade);
        async move {
            drop(manager);
            Err::<String, _>(FetchError::transient("offline"))
        }
    });
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .build_with_events()
        .unwrap();
    slot.set(manager.downgrade()).unwrap();
    settle().await;
    drop(manager);
    // The manager stops: Closed comes, and the weak handle has nothing left to upgrade.
    loop {
        match events.recv().await {
            Some(Event::Closed) => break,
            Some(_) => continue,
            None => panic!("no Closed event"),
        }
    }
    assert!(slot.get().unwrap().upgrade().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_holding_a_strong_handle_keeps_its_manager_running_as_documented() {
    let clock = clock();
    let slot: Arc<OnceLock<AccessManager>> = Arc::default();
    let fetcher_slot = slot.clone();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let fetcher = fetcher_fn(move |_: FetchRequest| {
        counted.fetch_add(1, Ordering::SeqCst);
        let _held = fetcher_slot.get().cloned();
        async { Err::<String, _>(FetchError::transient("offline")) }
    });
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .backoff(access_manager::Backoff::default().without_jitter())
        .build()
        .unwrap();
    slot.set(manager.clone()).unwrap();
    let weak = manager.downgrade();
    drop(manager);
    settle().await;
    clock.advance(secs(1));
    settle().await;
    // The hazard the docs warn of: the app let go, yet the manager runs and fetches.
    let kept = weak
        .upgrade()
        .expect("the strong handle in the fetcher keeps it");
    assert!(!kept.is_closed());
    assert!(fetches.load(Ordering::SeqCst) >= 2);
    kept.shutdown().await;
}

/// A consumer that, on its first token, pushes `next` to its own manager and awaits the answer.
struct Pusher {
    manager: Slot,
    next: String,
    answered: Mutex<Option<bool>>,
    seen: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl TokenConsumer for Pusher {
    fn name(&self) -> &str {
        "pusher"
    }
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        self.seen.lock().unwrap().push(token.as_str().to_owned());
        if self.answered.lock().unwrap().is_none() {
            let report = upgrade(&self.manager).update_token(&self.next).await;
            *self.answered.lock().unwrap() = Some(report.is_ok_and(|r| r.changed()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_awaiting_update_token_on_its_own_manager_does_not_wait_for_itself() {
    let clock = clock();
    let first = mint("alice", T0, 3600);
    let second = mint("alice", T0 + 1, 3600);
    let manager = manager_holding(&clock, &first);
    let slot: Slot = Arc::default();
    slot.set(manager.downgrade()).unwrap();
    let pusher = Arc::new(Pusher {
        manager: slot,
        next: second.clone(),
        answered: Mutex::new(None),
        seen: Mutex::new(Vec::new()),
    });
    let other = Recorder::new("other", Mode::Accept);
    manager.register(&other);
    manager.register(&pusher);
    // No clock movement: a manager waiting for its own consumer would hang here.
    other.wait_calls(2).await;
    settle().await;
    assert_eq!(*pusher.answered.lock().unwrap(), Some(true));
    assert_eq!(
        *pusher.seen.lock().unwrap(),
        [first.as_str(), second.as_str()]
    );
    assert_eq!(manager.token().unwrap().as_str(), second);
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_calling_refresh_on_its_own_manager_is_answered_at_once() {
    let clock = clock();
    let slot: Slot = Arc::default();
    let fetcher_slot = slot.clone();
    let inner: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = inner.clone();
    let fetcher = fetcher_fn(move |_: FetchRequest| {
        let slot = fetcher_slot.clone();
        let seen = seen.clone();
        async move {
            let manager = upgrade(&slot);
            let refreshed = manager.refresh().await;
            let fresh = manager.fresh_token(Duration::from_secs(60)).await;
            seen.lock()
                .unwrap()
                .push(format!("{refreshed:?} / {fresh:?}"));
            assert!(matches!(refreshed, Err(RefreshError::Reentrant)));
            assert!(matches!(fresh, Err(RefreshError::Reentrant)));
            Ok(mint("alice", T0, 3600))
        }
    });
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .build()
        .unwrap();
    slot.set(manager.downgrade()).unwrap();
    // The app's refresh joins the initial fetch, which asked for itself and got its answer at once.
    let token = manager
        .refresh()
        .await
        .expect("the fetch waited for itself");
    assert_eq!(token.identity(), Some("alice"));
    assert_eq!(inner.lock().unwrap().len(), 1);
}

/// A consumer that asks its own manager for a fresh token from inside `update_token`.
struct Refresher {
    manager: Slot,
    got: Mutex<Vec<Result<String, String>>>,
}

#[async_trait::async_trait]
impl TokenConsumer for Refresher {
    fn name(&self) -> &str {
        "refresher"
    }
    async fn update_token(&self, _: &AccessToken) -> Result<(), ConsumerError> {
        if self.got.lock().unwrap().is_empty() {
            let got = upgrade(&self.manager).refresh().await;
            let got = got
                .map(|t| t.as_str().to_owned())
                .map_err(|e| e.to_string());
            self.got.lock().unwrap().push(got);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_calling_refresh_gets_the_fetched_token() {
    let clock = clock();
    let (fetcher, mut calls) = scripted();
    let first = mint("alice", T0, 3600);
    let manager = fetching(&clock, fetcher)
        .initial_token(first)
        .build()
        .unwrap();
    let slot: Slot = Arc::default();
    slot.set(manager.downgrade()).unwrap();
    let refresher = Arc::new(Refresher {
        manager: slot,
        got: Mutex::default(),
    });
    manager.register(&refresher);
    let fetch = calls.next().await;
    let second = mint("alice", T0 + 1, 3600);
    fetch.ok(second.clone());
    settle().await;
    assert_eq!(*refresher.got.lock().unwrap(), [Ok(second)]);
}

#[tokio::test(flavor = "current_thread")]
async fn register_takes_an_arc_of_dyn_token_consumer() {
    let clock = clock();
    let jwt = mint("alice", T0, 3600);
    let manager = manager_holding(&clock, &jwt);
    let recorder = Recorder::new("chat", Mode::Accept);
    let consumer: Arc<dyn TokenConsumer> = recorder.clone();
    let id = manager.register(&consumer);
    recorder.wait_calls(1).await;
    assert_eq!(recorder.seen(), [jwt.as_str()]);
    drop(consumer);
    assert!(manager.unregister(id));
}

#[tokio::test(flavor = "current_thread")]
async fn registering_after_shutdown_registers_nothing() {
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    manager.shutdown().await;
    let late = Recorder::new("late", Mode::Accept);
    let id = manager.register(&late);
    settle().await;
    assert_eq!(manager.consumer_count(), 0);
    assert!(!manager.unregister(id));
    assert_eq!(late.calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn consumers_dropped_without_any_update_are_let_go_promptly() {
    let clock = clock();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let kept = Recorder::new("kept", Mode::Accept);
    manager.register(&kept);
    let mut watched = Vec::new();
    for i in 0..100_000 {
        let gone = Recorder::new("gone", Mode::Accept);
        manager.register(&gone);
        if i % 10_000 == 0 {
            watched.push(Arc::downgrade(&gone));
        }
        drop(gone);
        if i % 1_000 == 0 {
            settle().await;
        }
    }
    settle().await;
    // No token came, yet the dropped consumers are not counted, nor kept in memory by the manager
    // (its `Weak` would keep each one's allocation).
    assert!(
        manager.consumer_count() <= 16,
        "{} consumers counted",
        manager.consumer_count()
    );
    let held = watched.iter().filter(|w| w.weak_count() > 1).count();
    assert!(
        held <= 1,
        "{held} of {} sampled dropped consumers still held",
        watched.len()
    );
    // The live one still gets tokens.
    manager.update_token(mint("alice", T0, 3600)).await.unwrap();
    assert_eq!(kept.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_may_sign_out_from_inside_update_token() {
    struct Leaver(Slot, Mutex<usize>);
    #[async_trait::async_trait]
    impl TokenConsumer for Leaver {
        fn name(&self) -> &str {
            "leaver"
        }
        async fn update_token(&self, _: &AccessToken) -> Result<(), ConsumerError> {
            upgrade(&self.0).sign_out().await.unwrap();
            Ok(())
        }
        async fn signed_out(&self) {
            *self.1.lock().unwrap() += 1;
        }
    }
    let clock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let slot: Slot = Arc::default();
    slot.set(manager.downgrade()).unwrap();
    let leaver = Arc::new(Leaver(slot, Mutex::new(0)));
    manager.register(&leaver);
    settle().await;
    assert!(manager.token().is_none());
    assert_eq!(*leaver.1.lock().unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_trait_attribute_is_re_exported() {
    struct Plain;
    #[access_manager::async_trait]
    impl TokenConsumer for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        async fn update_token(&self, _: &AccessToken) -> Result<(), ConsumerError> {
            Ok(())
        }
    }
    let clock: ManualClock = clock();
    let manager = manager_holding(&clock, &mint("alice", T0, 3600));
    let plain = Arc::new(Plain);
    manager.register(&plain);
    let report = manager
        .update_token(mint("alice", T0 + 1, 3600))
        .await
        .unwrap();
    assert_eq!(report.delivered(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_weak_handle_prints_whether_its_manager_is_alive_and_nothing_else() {
    let manager = AccessManager::builder().clock(clock()).build().unwrap();
    let weak = manager.downgrade();
    assert_eq!(format!("{weak:?}"), "WeakAccessManager { alive: true }");
    drop(manager);
    assert_eq!(format!("{weak:?}"), "WeakAccessManager { alive: false }");
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_may_wait_on_another_manager() {
    // Manager `b` gets its tokens from manager `a`: a call into another manager is no re-entry.
    let clock = clock();
    let a = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher_fn(|_: FetchRequest| async {
            Ok::<_, FetchError>(mint("alice", T0, 3600))
        }))
        .build()
        .unwrap();
    let from_a = a.clone();
    let b = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher_fn(move |_: FetchRequest| {
            let a = from_a.clone();
            async move {
                let token = a.refresh().await.map_err(FetchError::transient)?;
                Ok::<_, FetchError>(token.as_str().to_owned())
            }
        }))
        .build()
        .unwrap();
    let token = b.refresh().await.unwrap();
    assert_eq!(token.identity(), Some("alice"));
    assert_eq!(b.token().unwrap().as_str(), token.as_str());
    assert_eq!(a.token().unwrap().as_str(), token.as_str());
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetcher_asking_its_own_manager_for_a_fresh_token_gets_the_held_one_when_it_qualifies() {
    let clock = clock();
    let slot: Slot = Arc::default();
    let fetcher_slot = slot.clone();
    let fetcher = fetcher_fn(move |_: FetchRequest| {
        let slot = fetcher_slot.clone();
        async move {
            let manager = upgrade(&slot);
            let held = manager.fresh_token(Duration::from_secs(60)).await;
            let longer = manager.fresh_token(Duration::from_secs(7200)).await;
            assert!(matches!(longer, Err(RefreshError::Reentrant)), "{longer:?}");
            // A backend that needs the current token to issue the next one.
            let held = held.map_err(FetchError::transient)?;
            assert_eq!(held.identity(), Some("alice"));
            Ok::<_, FetchError>(mint("alice", T0, 7200))
        }
    });
    let manager = fetching(&clock, fetcher)
        .initial_token(mint("alice", T0, 3600))
        .build()
        .unwrap();
    slot.set(manager.downgrade()).unwrap();
    let token = manager.refresh().await.unwrap();
    assert_eq!(token.remaining_at(at(T0)), Duration::from_secs(7200));
}

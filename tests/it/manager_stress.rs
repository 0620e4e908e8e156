//! Stress on a multi-thread runtime: updates, refreshes, reads and (un)registrations at once. The
//! clock never moves, so only what the calls themselves cause happens.
//!
//! "Newer" is the order in which tokens became current, which is the order of their
//! `TokenUpdated` events: concurrent pushes may land in any order, and the manager does not rank
//! tokens by `iat`.

use crate::common::*;
use access_manager::clock::{Clock, ManualClock};
use access_manager::{
    fetcher_fn, AccessManager, AccessToken, ConsumerError, Event, TokenConsumer, TokenInfo,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `n`th distinct token for alice, valid at `T0`. Every seventh has under 180 s left, so it
/// gets `TokenWillExpire` right after `TokenUpdated`.
fn nth_token(n: u64) -> String {
    if n % 7 == 3 {
        // exp = T0 + 101; distinct by iat.
        mint("alice", T0 - 1000 - n, 1101 + n)
    } else {
        // iat = T0 - 1; distinct by exp.
        mint("alice", T0 - 1, 3600 + n)
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// Real time after which a stuck stress run fails instead of hanging (it takes about a second).
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(60);

/// A consumer that takes a few scheduler turns per token, so it is often busy when newer tokens
/// arrive. Its log is kept by the test, which may drop the consumer.
struct Yielding {
    name: String,
    yields: usize,
    seen: Log,
    calls: AtomicU64,
}

impl Yielding {
    fn new(name: String, yields: usize) -> (Arc<Yielding>, Log) {
        let seen = Log::default();
        let consumer = Arc::new(Yielding {
            name,
            yields,
            seen: seen.clone(),
            calls: AtomicU64::new(0),
        });
        (consumer, seen)
    }
}

#[async_trait]
impl TokenConsumer for Yielding {
    fn name(&self) -> &str {
        &self.name
    }
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        self.seen.lock().unwrap().push(token.as_str().to_string());
        Ok(())
    }
}

/// What tells this test's tokens apart in events (which carry no token text): their times.
fn key_of_info(info: &TokenInfo) -> String {
    format!("{:?} {:?}", info.issued_at(), info.expires_at())
}

fn key_of(jwt: &str) -> String {
    key_of_info(&AccessToken::parse(jwt).unwrap().info())
}

/// Reads every event up to `Closed`, checks the per-token timeline, and returns each token's rank
/// in the order tokens became current (the initial token, which has no `TokenUpdated`, first).
async fn check_events(
    events: &mut access_manager::Events,
    initial: Option<&str>,
) -> HashMap<String, usize> {
    let mut rank: HashMap<String, usize> = HashMap::new();
    // Per token, the events seen so far: 1 Updated, 2 WillExpire, 3 Expired.
    let mut stage: HashMap<String, u8> = HashMap::new();
    let mut current: Option<String> = initial.map(key_of);
    if let Some(initial) = initial {
        rank.insert(key_of(initial), 0);
        stage.insert(key_of(initial), 1);
    }
    let mut closed = false;
    while let Some(event) = events.recv().await {
        assert!(!closed, "an event after Closed: {event:?}");
        let (token, step) = match &event {
            Event::TokenUpdated { token } => (key_of_info(token), 1),
            Event::TokenWillExpire { token } => (key_of_info(token), 2),
            Event::TokenExpired { token } => (key_of_info(token), 3),
            Event::Closed => {
                closed = true;
                continue;
            }
            // Some fetched tokens were issued long ago and are nearly expired: the manager says
            // once that the clock looks wrong. Not part of the per-token timeline.
            Event::ClockSkewSuspected { .. } => continue,
            other => panic!("unexpected event {other:?}"),
        };
        let before = stage.get(&token).copied().unwrap_or(0);
        assert!(
            step > before,
            "event {step} after {before} for one token (duplicate or out of order)"
        );
        if step == 1 {
            let n = rank.len();
            rank.insert(token.clone(), n);
            current = Some(token.clone());
        } else {
            assert_eq!(
                current.as_deref(),
                Some(token.as_str()),
                "an event for a replaced token"
            );
        }
        stage.insert(token, step);
    }
    assert!(closed, "the stream ended without Closed");
    rank
}

/// Every token a consumer saw became current, and each came after the one before it.
fn check_in_order(name: &str, seen: &[String], rank: &HashMap<String, usize>) {
    let ranks: Vec<usize> = seen
        .iter()
        .map(|t| {
            *rank
                .get(&key_of(t))
                .unwrap_or_else(|| panic!("{name} got a token never current"))
        })
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "{name} saw tokens out of order (or twice): {ranks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_concurrent_updates_refreshes_reads_and_registrations_keep_every_consumer_in_order()
{
    let clock = clock();
    let initial = nth_token(0);
    let counter = Arc::new(AtomicU64::new(1));
    let fetcher = {
        let counter = counter.clone();
        fetcher_fn(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(nth_token(n)) }
        })
    };
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .initial_token(&initial)
        .event_capacity(1 << 16)
        .build()
        .unwrap();
    let mut events = manager.subscribe();

    let mut logs: Vec<(String, Log)> = Vec::new();
    let mut steady = Vec::new();
    for (i, yields) in [0, 1, 3, 8].into_iter().enumerate() {
        let (consumer, log) = Yielding::new(format!("steady{i}"), yields);
        manager.register(&consumer);
        logs.push((consumer.name.clone(), log));
        steady.push(consumer);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (manager, counter) = (manager.clone(), counter.clone());
        tasks.spawn(async move {
            for _ in 0..1000 {
                let jwt = nth_token(counter.fetch_add(1, Ordering::SeqCst));
                let report = manager.update_token(&jwt).await.unwrap();
                assert!(report.changed());
            }
            Vec::new()
        });
    }
    {
        let manager = manager.clone();
        tasks.spawn(async move {
            for _ in 0..500 {
                let token = manager.refresh().await.unwrap();
                assert_eq!(token.identity(), Some("alice"));
            }
            Vec::new()
        });
    }
    {
        let manager = manager.clone();
        tasks.spawn(async move {
            for _ in 0..5000 {
                let token = manager.token().expect("a token is always held");
                token.validate_at(manager.clock().now()).unwrap();
                if manager.identity().as_deref() != Some("alice") {
                    panic!("lost the identity");
                }
                tokio::task::yield_now().await;
            }
            Vec::new()
        });
    }
    {
        let manager = manager.clone();
        tasks.spawn(async move {
            let mut logs = Vec::new();
            let mut kept = Vec::new();
            for i in 0..2000 {
                let (consumer, log) = Yielding::new(format!("churn{i}"), 4 + i % 8);
                let id = manager.register(&consumer);
                // Let go of it mostly while it is busy taking a token, as newer ones arrive.
                for _ in 0..50 {
                    if consumer.calls.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                match i % 3 {
                    0 => assert!(manager.unregister(id)),
                    1 => drop(consumer),
                    _ => kept.push(consumer),
                }
                logs.push((format!("churn{i}"), log));
            }
            drop(kept);
            logs
        });
    }
    // A watchdog, not a wait: a hang (an update waiting for a consumer forever) fails the test.
    let all_done = async {
        while let Some(done) = tasks.join_next().await {
            logs.extend(done.expect("a stress task panicked"));
        }
    };
    tokio::time::timeout(WATCHDOG, all_done)
        .await
        .expect("the stress tasks hung");

    // Quiesce: one last update returns once every consumer has taken it.
    let last = nth_token(counter.fetch_add(1, Ordering::SeqCst));
    let report = tokio::time::timeout(WATCHDOG, manager.update_token(&last))
        .await
        .expect("the last update hung")
        .unwrap();
    assert_eq!(report.delivered(), steady.len());
    assert_eq!(report.failed().count(), 0);
    assert_eq!(manager.token().unwrap().as_str(), last);
    manager.shutdown().await;

    let rank = check_events(&mut events, Some(&initial)).await;
    assert!(
        rank.len() > 2000,
        "only {} tokens became current",
        rank.len()
    );
    assert_eq!(rank.len() - 1, rank[&key_of(&last)]);
    for (name, log) in &logs {
        check_in_order(name, &log.lock().unwrap(), &rank);
    }
    for (name, log) in logs.iter().take(steady.len()) {
        assert_eq!(
            log.lock().unwrap().last(),
            Some(&last),
            "{name} missed the last"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_sixteen_tasks_pushing_at_once_leave_one_of_the_offered_tokens_current() {
    let clock = ManualClock::new(at(T0));
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .event_capacity(1024)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let (consumer, log) = Yielding::new("chat".into(), 2);
    manager.register(&consumer);

    for round in 0..20u64 {
        let offered: Vec<String> = (0..16).map(|i| nth_token(1 + round * 16 + i)).collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(offered.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for jwt in offered.clone() {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            tasks.spawn(async move {
                barrier.wait().await;
                manager.update_token(&jwt).await
            });
        }
        let all_done = async {
            while let Some(done) = tasks.join_next().await {
                let report = done.expect("an update task panicked").unwrap();
                assert!(report.changed());
            }
        };
        tokio::time::timeout(WATCHDOG, all_done)
            .await
            .expect("the updates hung");
        let current = manager.token().unwrap();
        assert!(offered.iter().any(|t| t == current.as_str()));
        current.validate_at(clock.now()).unwrap();
        assert!(!manager.is_closed());
    }

    manager.shutdown().await;
    let rank = check_events(&mut events, None).await;
    assert_eq!(rank.len(), 20 * 16);
    check_in_order("chat", &log.lock().unwrap(), &rank);
}

/// A consumer that only counts its calls.
struct Counting(Arc<AtomicU64>);

#[async_trait]
impl TokenConsumer for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn update_token(&self, _: &AccessToken) -> Result<(), ConsumerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const THREADS: usize = 8;
const PER_THREAD: usize = 2_000;

#[test]
fn stress_eight_threads_registering_at_once_can_unregister_every_consumer_they_registered() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(at(T0));
    // No token yet: nothing is delivered until the one pushed at the end.
    let manager = {
        let _in = runtime.enter();
        AccessManager::builder().clock(clock).build().unwrap()
    };
    let calls = Arc::new(AtomicU64::new(0));
    let start = std::sync::Barrier::new(THREADS);
    let registered = std::sync::Barrier::new(THREADS);
    let answers: Vec<Vec<bool>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (manager, calls) = (manager.clone(), calls.clone());
                let (start, registered) = (&start, &registered);
                s.spawn(move || {
                    let consumers: Vec<Arc<Counting>> = (0..PER_THREAD)
                        .map(|_| Arc::new(Counting(calls.clone())))
                        .collect();
                    start.wait();
                    let ids: Vec<_> = consumers.iter().map(|c| manager.register(c)).collect();
                    registered.wait();
                    let answers = ids.into_iter().map(|id| manager.unregister(id)).collect();
                    // Alive until every thread has unregistered: none is unregistered by a drop.
                    registered.wait();
                    drop(consumers);
                    answers
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let refused = answers.iter().flatten().filter(|ok| !**ok).count();
    assert_eq!(
        refused, 0,
        "unregister answered false for {refused} registered consumers"
    );
    assert_eq!(manager.consumer_count(), 0);
    runtime.block_on(async {
        let before = calls.load(Ordering::SeqCst);
        let report = manager.update_token(mint("alice", T0, 3700)).await.unwrap();
        assert_eq!(
            report.delivered(),
            0,
            "an unregistered consumer got the token"
        );
        assert_eq!(calls.load(Ordering::SeqCst), before);
    });
}

#[test]
fn registering_a_million_dropped_consumers_finishes_and_none_stays_counted() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(at(T0));
    let manager = {
        let _in = runtime.enter();
        manager_holding(&clock, &mint("alice", T0, 3600))
    };
    let calls = Arc::new(AtomicU64::new(0));
    for _ in 0..1_000_000 {
        manager.register(&Arc::new(Counting(calls.clone())));
    }
    runtime.block_on(async {
        settle().await;
        let report = manager.update_token(mint("alice", T0, 3700)).await.unwrap();
        assert_eq!(report.delivered(), 0);
    });
    assert_eq!(
        manager.consumer_count(),
        0,
        "dropped consumers still counted"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a dropped consumer was called"
    );
}

//! Token churn: one manager taking many pushed tokens in a row, with consumers and a subscriber,
//! to show that memory does not grow with the number of updates.

use super::{at, mint, run_until_quiet, wall, T0};
use access_manager::clock::ManualClock;
use access_manager::{AccessManager, AccessToken, ConsumerError, TokenConsumer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub updates: usize,
    /// Live heap is first read after this many updates.
    pub warmup: usize,
    pub consumers: usize,
}

impl Config {
    pub fn new(updates: usize) -> Self {
        Config {
            updates,
            warmup: 1_000.min(updates),
            consumers: 4,
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub updates: usize,
    pub live_after_warmup: isize,
    pub live_after: isize,
    /// Tokens taken by the consumers, and events the subscriber read.
    pub deliveries: usize,
    pub events: usize,
    pub wall: Duration,
}

/// A consumer that counts what it is given.
#[derive(Debug)]
struct Counting {
    name: String,
    taken: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl TokenConsumer for Counting {
    fn name(&self) -> &str {
        &self.name
    }
    async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Pushes `config.updates` tokens, alternating between two (so each one is a change); `live`
/// reads the live heap.
pub async fn run(config: &Config, live: fn() -> isize) -> Report {
    let clock = ManualClock::new(at(T0));
    let tokens = [
        mint("alice", at(T0), at(T0 + 3600)),
        mint("alice", at(T0), at(T0 + 3601)),
    ];
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .build()
        .expect("a manager");
    let taken = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<Arc<Counting>> = (0..config.consumers)
        .map(|i| {
            Arc::new(Counting {
                name: format!("consumer-{i}"),
                taken: taken.clone(),
            })
        })
        .collect();
    for consumer in &consumers {
        manager.register(consumer);
    }
    let events = Arc::new(AtomicUsize::new(0));
    let mut subscription = manager.subscribe();
    let seen = events.clone();
    let subscriber = tokio::spawn(async move {
        while subscription.recv().await.is_some() {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });

    let started = wall();
    let mut live_after_warmup = 0;
    for k in 0..config.updates {
        let report = manager
            .update_token(&tokens[k % 2])
            .await
            .expect("a valid token");
        assert!(report.changed() && report.failed().next().is_none());
        if k + 1 == config.warmup {
            run_until_quiet(|| true).await;
            live_after_warmup = live();
        }
    }
    let elapsed = wall() - started;
    run_until_quiet(|| true).await;
    let live_after = live();

    manager.shutdown().await;
    subscriber.await.expect("the subscriber ends after Closed");
    drop(consumers);
    Report {
        updates: config.updates,
        live_after_warmup,
        live_after,
        deliveries: taken.load(Ordering::Relaxed),
        events: events.load(Ordering::Relaxed),
        wall: elapsed,
    }
}

//! The manager's two hot paths, each beside what it is built from in the same group, so that every
//! ratio comes from one run. Wall time throughout (criterion's `WallTime`): an update waits on the
//! manager's task and, from `block_on`, on another thread; the time the caller waits is the figure.
//!
//! - `token_read`: `AccessManager::token()` against its floor, `ArcSwapOption::load_full` (an
//!   arc-swap load and an `Arc` clone), and `with_token` against its floor, `ArcSwapOption::load`
//!   (the same read of the borrowed token through an arc-swap guard), and beside it the same load
//!   on the same data laid out as the manager holds it (its shared part, a snapshot holding the
//!   token), which tells the manager's code from its shape; `AccessToken::clone` (one
//!   reference count up, and down when the clone drops) for reference.
//! - `token_read_2_threads`: the same reads by two threads on one source at once.
//! - `update_token_from_task`, `update_token_block_on_current_thread`,
//!   `update_token_block_on_multi_thread`: an awaited `update_token` alternating two valid tokens
//!   (each one a change) with 0, 4 and 64 consumers that keep the token, against a baseline of
//!   `AccessToken::parse` + a `tokio::sync::watch` send + as many receiver tasks keeping the token
//!   and acknowledging, both awaited by the same caller. From a task, also the floors an update is
//!   built from, each alone: `AccessToken::parse`, a oneshot round trip to another task (a command
//!   and its answer), a task wake, and one consumer's call awaited directly.
//!
//! `cargo bench --bench manager -- --warm-up-time 1 --measurement-time 3`, then
//! `sh benches/ratios.sh` prints the ratios, over the baselines and over the peer (benches/peer).

use access_manager::{AccessManager, AccessToken, TokenConsumer};
use arc_swap::ArcSwapOption;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch, Notify};

#[path = "support/keeping_consumer.rs"]
mod keeping_consumer;
#[path = "support/peer_token.rs"]
mod peer_token;
use keeping_consumer::Keeping;

/// The bench's own stopwatch for `iter_custom`; no manager timer runs on it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The peer's all-grants token, issued `age` seconds ago: tokens of different ages differ.
fn mint(age: u64) -> String {
    let now = access_manager::clock::Clock::now(&access_manager::clock::SystemClock);
    let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs() - age;
    peer_token::peer_token("user-000001", iat)
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// As `#[tokio::main]` builds it: one worker a core.
fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The read sources, all holding the same token.
struct Sources {
    manager: AccessManager,
    swap: ArcSwapOption<AccessToken>,
    /// The same data laid out as the manager holds it.
    shaped: ShapedManager,
    token: AccessToken,
}

/// `AccessManager` as it is laid out (`AccessManager` → `Shared`, which holds the snapshot): what
/// `with_token` reads, with none of the manager's code.
struct ShapedManager {
    shared: Arc<ShapedShared>,
}

struct ShapedShared {
    current: ArcSwapOption<ShapedPublished>,
}

/// The snapshot: the token and the clock offset it is judged with.
struct ShapedPublished {
    token: AccessToken,
    #[allow(dead_code)]
    applied_offset: i64,
}

fn token_read(c: &mut Criterion) {
    let rt = current_thread();
    let manager = rt.block_on(async {
        let jwt = mint(1);
        AccessManager::builder().initial_token(jwt).build().unwrap()
    });
    let token = manager.token().unwrap();
    let s = Sources {
        swap: ArcSwapOption::from_pointee(token.clone()),
        shaped: ShapedManager {
            shared: Arc::new(ShapedShared {
                current: ArcSwapOption::from_pointee(ShapedPublished {
                    token: token.clone(),
                    applied_offset: 0,
                }),
            }),
        },
        token,
        manager,
    };

    // Criterion drops each result inside the timing: a read includes its token's drop.
    let mut group = c.benchmark_group("token_read");
    group.bench_function("AccessToken::clone (floor)", |b| {
        b.iter(|| black_box(&s.token).clone())
    });
    // `token()`'s floor.
    group.bench_function("ArcSwapOption::load_full", |b| {
        b.iter(|| black_box(&s.swap).load_full())
    });
    // `with_token(expires_at)`'s floor: the same read through a guard.
    group.bench_function("ArcSwapOption::load(expires_at)", |b| {
        b.iter(|| black_box(&s.swap).load().as_ref().map(|t| t.expires_at()))
    });
    // The same read through the manager's shape: one pointer followed to the snapshot first.
    group.bench_function("ArcSwapOption::load(expires_at), manager-shaped", |b| {
        b.iter(|| {
            let shaped = black_box(&s.shaped);
            let current = shaped.shared.current.load();
            current.as_ref().map(|p| p.token.expires_at())
        })
    });
    group.bench_function("AccessManager::token", |b| {
        b.iter(|| black_box(&s.manager).token())
    });
    group.bench_function("AccessManager::with_token(expires_at)", |b| {
        b.iter(|| black_box(&s.manager).with_token(|t| t.map(|t| t.expires_at())))
    });
    group.finish();

    let mut group = c.benchmark_group("token_read_2_threads");
    group.bench_function("AccessToken::clone (floor)", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&s.token).clone()))
    });
    group.bench_function("ArcSwapOption::load_full", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&s.swap).load_full()))
    });
    group.bench_function("AccessManager::token", |b| {
        b.iter_custom(|iters| on_two_threads(iters, || black_box(&s.manager).token()))
    });
    group.bench_function("AccessManager::with_token(expires_at)", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                black_box(&s.manager).with_token(|t| t.map(|t| t.expires_at()))
            })
        })
    });
    group.finish();
    rt.block_on(s.manager.shutdown());
}

/// Two threads make `iters` reads each, released together by a barrier; the time from the first
/// thread's start to the last one's end. Criterion divides it by `iters`, so a figure is the wall
/// time of one read on each thread while the other reads too (two reads done in that time). Time
/// the threads do not overlap counts too: it is the pair's time, not the faster thread's.
fn on_two_threads<T>(iters: u64, read: impl Fn() -> T + Sync) -> Duration {
    let start = Barrier::new(2);
    let run = || {
        start.wait();
        let began = now();
        for _ in 0..iters {
            black_box(read());
        }
        (began, now())
    };
    let ((a_began, a_ended), (b_began, b_ended)) = std::thread::scope(|scope| {
        let other = scope.spawn(run);
        (run(), other.join().unwrap())
    });
    a_ended.max(b_ended) - a_began.min(b_began)
}

/// Where the bench awaits its updates: the three ways an app calls `update_token`.
#[derive(Clone, Copy)]
enum Caller {
    /// A task spawned on a multi-thread runtime (an app's request handler, say).
    Task,
    /// `block_on` on a current-thread runtime: the manager's task shares the caller's thread.
    BlockOnCurrentThread,
    /// `block_on` on a multi-thread runtime (`#[tokio::main]`'s body): the caller's thread is not
    /// a worker, so it sleeps until a worker wakes it with the answer.
    BlockOnMultiThread,
}

impl Caller {
    fn group(self) -> &'static str {
        match self {
            Caller::Task => "update_token_from_task",
            Caller::BlockOnCurrentThread => "update_token_block_on_current_thread",
            Caller::BlockOnMultiThread => "update_token_block_on_multi_thread",
        }
    }

    fn runtime(self) -> Runtime {
        match self {
            Caller::BlockOnCurrentThread => current_thread(),
            Caller::Task | Caller::BlockOnMultiThread => multi_thread(),
        }
    }

    /// Runs `work` as this caller; the wall time it took, timed where it runs.
    fn time(self, rt: &Runtime, work: impl Future<Output = ()> + Send + 'static) -> Duration {
        let timed = async move {
            let began = now();
            work.await;
            now() - began
        };
        match self {
            Caller::Task => rt.block_on(async { tokio::spawn(timed).await.unwrap() }),
            Caller::BlockOnCurrentThread | Caller::BlockOnMultiThread => rt.block_on(timed),
        }
    }
}

/// `iters` awaited updates, each a change delivered to every consumer.
async fn updates(manager: AccessManager, jwts: Arc<[String; 2]>, iters: u64, consumers: usize) {
    // Start with the token not held, whatever the last run ended on.
    let mut next = manager.with_token(|t| usize::from(t.is_some_and(|t| t.as_str() == jwts[0])));
    for _ in 0..iters {
        let report = manager.update_token(&jwts[next]).await.unwrap();
        assert!(report.changed(), "an update did not change the token");
        assert_eq!(report.delivered(), consumers);
        next ^= 1;
    }
}

/// The baseline's receivers count down to the sender.
struct Acks {
    remaining: AtomicUsize,
    all_kept: Notify,
}

/// What an update is built from: parse, publish through a `watch` channel, and wait until
/// `receivers` tasks have each stored the new token.
struct WatchBaseline {
    tx: watch::Sender<Option<AccessToken>>,
    acks: Arc<Acks>,
    kept: Vec<Arc<Mutex<Option<AccessToken>>>>,
}

impl WatchBaseline {
    /// Spawns the receivers (inside a runtime); they end when the baseline drops.
    fn spawn(receivers: usize) -> Arc<Self> {
        let (tx, _) = watch::channel(None);
        let acks = Arc::new(Acks {
            remaining: AtomicUsize::new(0),
            all_kept: Notify::new(),
        });
        let kept: Vec<Arc<Mutex<Option<AccessToken>>>> =
            (0..receivers).map(|_| Arc::default()).collect();
        for slot in &kept {
            let (mut rx, acks, slot) = (tx.subscribe(), acks.clone(), Arc::clone(slot));
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let token = rx.borrow_and_update().clone();
                    *slot.lock().unwrap() = token;
                    if acks.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        acks.all_kept.notify_one();
                    }
                }
            });
        }
        Arc::new(WatchBaseline { tx, acks, kept })
    }

    async fn update(&self, jwt: &str) -> AccessToken {
        let token = AccessToken::parse(jwt).unwrap();
        self.acks
            .remaining
            .store(self.kept.len(), Ordering::Release);
        // `send_replace`: `send` refuses a value when there is no receiver (the 0-receiver case).
        self.tx.send_replace(Some(token.clone()));
        if !self.kept.is_empty() {
            // `notify_one` keeps its permit if the last receiver is faster than this await.
            self.acks.all_kept.notified().await;
        }
        token
    }

    async fn updates(self: Arc<Self>, jwts: Arc<[String; 2]>, iters: u64) {
        for i in 0..iters {
            black_box(self.update(&jwts[(i & 1) as usize]).await);
        }
    }
}

/// What an update from a task is built from, each alone and timed as the updates are: the parse
/// every update makes (src/token's work); a oneshot round trip, a command sent to another task
/// and its answer awaited (the least a one-owner design costs); a task wake (the wake and the
/// poll that follows it: a yield); and one consumer's call awaited directly (what each delivery
/// does at the least: the boxed future, the store of the token, the drop of the one it replaces).
fn floors(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    jwt: &str,
) {
    group.bench_function("AccessToken::parse", |b| {
        b.iter(|| AccessToken::parse(black_box(jwt)).unwrap())
    });

    let owner = rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(());
            }
        });
        tx
    });
    group.bench_function("oneshot round trip", |b| {
        b.iter_custom(|iters| {
            let owner = owner.clone();
            Caller::Task.time(rt, async move {
                for _ in 0..iters {
                    let (reply, answer) = oneshot::channel();
                    owner.send(reply).unwrap();
                    answer.await.unwrap();
                }
            })
        })
    });

    group.bench_function("task wake", |b| {
        b.iter_custom(|iters| {
            Caller::Task.time(rt, async move {
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
            })
        })
    });

    let token = AccessToken::parse(jwt).unwrap();
    let keeping = Arc::new(Keeping::default());
    group.bench_function("consumer call", |b| {
        b.iter_custom(|iters| {
            let (token, keeping) = (token.clone(), keeping.clone());
            Caller::Task.time(rt, async move {
                for _ in 0..iters {
                    keeping.update_token(black_box(&token)).await.unwrap();
                }
            })
        })
    });
}

fn update_token(c: &mut Criterion) {
    let jwts = Arc::new([mint(1), mint(2)]);
    for caller in [
        Caller::Task,
        Caller::BlockOnCurrentThread,
        Caller::BlockOnMultiThread,
    ] {
        let rt = caller.runtime();
        let mut group = c.benchmark_group(caller.group());
        if let Caller::Task = caller {
            floors(&mut group, &rt, &jwts[0]);
        }
        for consumers in [0usize, 4, 64] {
            // Held here for the whole run: the manager holds its consumers weakly.
            let keeping: Vec<Arc<Keeping>> = (0..consumers).map(|_| Arc::default()).collect();
            let manager = rt.block_on(async {
                let manager = AccessManager::builder().build().unwrap();
                for consumer in &keeping {
                    manager.register(consumer);
                }
                updates(manager.clone(), jwts.clone(), 4, consumers).await;
                manager
            });
            group.bench_with_input(
                BenchmarkId::new("AccessManager::update_token", consumers),
                &consumers,
                |b, &consumers| {
                    b.iter_custom(|iters| {
                        let work = updates(manager.clone(), jwts.clone(), iters, consumers);
                        caller.time(&rt, work)
                    })
                },
            );
            let last = manager.token();
            assert!(
                keeping.iter().all(|k| k.kept() == last),
                "a consumer missed the last token"
            );
            rt.block_on(manager.shutdown());

            let baseline = rt.block_on(async { WatchBaseline::spawn(consumers) });
            group.bench_with_input(
                BenchmarkId::new("parse+watch+acks (baseline)", consumers),
                &consumers,
                |b, _| {
                    b.iter_custom(|iters| {
                        caller.time(&rt, baseline.clone().updates(jwts.clone(), iters))
                    })
                },
            );
            let last = baseline.tx.borrow().clone();
            assert!(baseline.kept.iter().all(|k| *k.lock().unwrap() == last));
        }
        group.finish();
    }
}

criterion_group!(benches, token_read, update_token);
criterion_main!(benches);

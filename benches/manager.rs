//! The manager's two hot paths against what they are built from, each group with its baselines so
//! that ratios come from the same run.
//!
//! - `token_read`: `AccessManager::token()` against `ArcSwapOption::load_full`, a
//!   `parking_lot::RwLock<Option<AccessToken>>` read-and-clone, and the floor, a plain
//!   `AccessToken::clone` (one `Arc` increment). Also `with_token`, which clones nothing.
//! - `token_read_without_drop`: `token()` and the floor with the returned token dropped outside the
//!   timing (criterion's `iter_with_large_drop`): the read alone, as the peer's loop reads a string
//!   its garbage collector frees later.
//! - `token_read_16_managers_in_turn`: one thread reading 16 managers in turn, more than the
//!   per-thread cache of `token()` holds: the cost of its misses.
//! - `token_read_2_threads`: the same reads, two threads reading one source at once (time per read
//!   per thread).
//! - `update_token`: an awaited `update_token` alternating two valid tokens (each one a change)
//!   with 0, 4 and 64 no-op consumers, against a floor of `AccessToken::parse` +
//!   `tokio::sync::watch` send + the same number of receiver tasks acknowledging. Both on a
//!   current-thread runtime.
//!
//! `cargo bench --bench manager` (on a noisy machine: `-- --warm-up-time 1 --measurement-time 3`).
//!
//! Times are CPU time of the measuring thread (`CLOCK_THREAD_CPUTIME_ID`), so that other processes
//! on a loaded machine do not count: every update, the driver, the consumers and the timer run on
//! that thread (a current-thread runtime), and each of the two reading threads times itself.
//! `BENCH_CLOCK=wall` measures wall time instead.
//! The peer's figures (twilio-common 0.1.7 on node) are in `benches/peer/README.md`;
//! `benches/ratios.sh` prints the ratios from criterion's output.

use access_manager::{AccessManager, AccessToken};
use arc_swap::ArcSwapOption;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use parking_lot::RwLock;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Notify};

/// The all-grants token the peer benchmark uses (chat, sync, voice, video), issued `age` seconds
/// ago and valid for 24 h, so that tokens of different ages differ (`jti` carries `iat`).
#[path = "support/peer_token.rs"]
mod peer_token;

fn mint(age: u64) -> String {
    let now = access_manager::clock::Clock::now(&access_manager::clock::SystemClock);
    let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs() - age;
    peer_token::peer_token("user-000001", iat)
}

/// Whether to time with the wall clock (`BENCH_CLOCK=wall`) rather than the thread's CPU time.
fn wall() -> bool {
    static WALL: OnceLock<bool> = OnceLock::new();
    *WALL.get_or_init(|| std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "wall"))
}

/// The bench's own time reading (no manager timer runs on it): the calling thread's CPU time, or
/// the wall clock since the first reading.
#[allow(clippy::disallowed_methods)]
fn stopwatch() -> Duration {
    if wall() {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        return ORIGIN.get_or_init(Instant::now).elapsed();
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion's measurement, read with [`stopwatch`].
struct Stopwatch;

impl Measurement for Stopwatch {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        stopwatch()
    }
    fn end(&self, start: Duration) -> Duration {
        stopwatch().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL_TIME: WallTime = WallTime;
        WALL_TIME.formatter()
    }
}

fn config() -> Criterion<Stopwatch> {
    Criterion::default().with_measurement(Stopwatch)
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[path = "support/noop_consumer.rs"]
mod noop_consumer;
use noop_consumer::NoOp;

/// The read sources, all holding the same token.
struct Sources {
    manager: AccessManager,
    swap: ArcSwapOption<AccessToken>,
    rwlock: RwLock<Option<AccessToken>>,
    token: AccessToken,
}

fn sources(rt: &Runtime) -> Sources {
    let jwt = mint(1);
    let manager = rt.block_on(async {
        AccessManager::builder()
            .initial_token(jwt.clone())
            .build()
            .unwrap()
    });
    let token = manager.token().unwrap();
    Sources {
        swap: ArcSwapOption::from_pointee(token.clone()),
        rwlock: RwLock::new(Some(token.clone())),
        token,
        manager,
    }
}

/// Each read source, as a function the benches call.
type Read = fn(&Sources) -> Option<AccessToken>;
const READS: [(&str, Read); 4] = [
    ("AccessManager::token", |s| s.manager.token()),
    ("ArcSwapOption::load_full", |s| {
        s.swap.load_full().map(|t| AccessToken::clone(&t))
    }),
    ("RwLock::read_clone", |s| s.rwlock.read().clone()),
    ("AccessToken::clone (floor)", |s| Some(s.token.clone())),
];

fn token_read(c: &mut Criterion<Stopwatch>) {
    let rt = current_thread();
    let s = sources(&rt);
    let mut group = c.benchmark_group("token_read");
    for (name, read) in READS {
        group.bench_function(name, |b| b.iter(|| read(black_box(&s))));
    }
    group.bench_function("AccessManager::with_token(expires_at)", |b| {
        b.iter(|| black_box(&s.manager).with_token(|t| t.map(|t| t.expires_at())))
    });
    group.finish();

    // The read alone: criterion drops the returned tokens after the timing (`iter_with_large_drop`),
    // as the peer's garbage collector frees its strings outside its loop.
    let mut group = c.benchmark_group("token_read_without_drop");
    for (name, read) in [READS[0], READS[3]] {
        group.bench_function(name, |b| b.iter_with_large_drop(|| read(black_box(&s))));
    }
    group.finish();

    // Reading 16 managers in turn on one thread: more than the per-thread cache holds, so most
    // reads miss it and load from the manager's `ArcSwapOption`.
    let many: Vec<Sources> = (0..16).map(|_| sources(&rt)).collect();
    let mut group = c.benchmark_group("token_read_16_managers_in_turn");
    for (name, read) in [READS[0], READS[1], READS[3]] {
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % many.len();
                read(black_box(&many[i]))
            })
        });
    }
    group.finish();
    for s in &many {
        rt.block_on(s.manager.shutdown());
    }

    // Two threads reading the same source: wall time of `iters` reads on each, from a common start.
    let mut group = c.benchmark_group("token_read_2_threads");
    for (name, read) in READS {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Barrier::new(2);
                std::thread::scope(|scope| {
                    let run = || {
                        start.wait();
                        let t = stopwatch();
                        for _ in 0..iters {
                            black_box(read(black_box(&s)));
                        }
                        stopwatch() - t
                    };
                    let other = scope.spawn(run);
                    let mine = run();
                    mine.max(other.join().unwrap())
                })
            })
        });
    }
    group.finish();
    rt.block_on(s.manager.shutdown());
}

/// The floor for an update: parse, publish through a `watch` channel, and wait until `consumers`
/// receiver tasks have each seen the new value.
struct WatchFloor {
    tx: watch::Sender<Option<AccessToken>>,
    remaining: Arc<AtomicUsize>,
    all_acked: Arc<Notify>,
    consumers: usize,
}

impl WatchFloor {
    fn spawn(consumers: usize) -> Self {
        let (tx, _) = watch::channel(None);
        let remaining = Arc::new(AtomicUsize::new(0));
        let all_acked = Arc::new(Notify::new());
        for _ in 0..consumers {
            let mut rx = tx.subscribe();
            let (remaining, all_acked) = (remaining.clone(), all_acked.clone());
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    black_box(rx.borrow_and_update().clone());
                    if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        all_acked.notify_one();
                    }
                }
            });
        }
        WatchFloor {
            tx,
            remaining,
            all_acked,
            consumers,
        }
    }

    async fn update(&self, jwt: &str) -> AccessToken {
        let token = AccessToken::parse(jwt).unwrap();
        self.remaining.store(self.consumers, Ordering::Release);
        // `send_replace`: `send` refuses a value when there is no receiver (the 0-consumer case).
        self.tx.send_replace(Some(token.clone()));
        if self.consumers > 0 {
            self.all_acked.notified().await;
        }
        token
    }
}

fn update_token(c: &mut Criterion<Stopwatch>) {
    let rt = current_thread();
    let jwts = [mint(1), mint(2)];
    let mut group = c.benchmark_group("update_token");
    // What every update costs before the manager sees the token (src/token's work).
    group.bench_function("AccessToken::parse", |b| {
        b.iter(|| AccessToken::parse(black_box(&jwts[0])).unwrap())
    });
    for consumers in [0usize, 4, 64] {
        let held: Vec<Arc<NoOp>> = (0..consumers).map(|_| Arc::new(NoOp)).collect();
        let manager = rt.block_on(async {
            let m = AccessManager::builder().build().unwrap();
            for c in &held {
                m.register(c);
            }
            // Each of two alternating tokens is a change for the manager.
            for jwt in jwts.iter().cycle().take(4) {
                let report = m.update_token(jwt).await.unwrap();
                assert!(report.changed());
                assert_eq!(report.delivered(), consumers);
            }
            m
        });
        // Carried across criterion's calls: each must start with the token not held.
        let next = Cell::new(0usize);
        group.bench_with_input(
            BenchmarkId::new("AccessManager::update_token", consumers),
            &consumers,
            |b, _| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (m, jwts, next) = (manager.clone(), &jwts, &next);
                    async move {
                        let t = stopwatch();
                        for _ in 0..iters {
                            let i = next.replace(next.get() ^ 1);
                            let report = m.update_token(&jwts[i]).await.unwrap();
                            assert!(report.changed());
                            black_box(report);
                        }
                        stopwatch() - t
                    }
                })
            },
        );
        rt.block_on(manager.shutdown());

        let floor = rt.block_on(async { WatchFloor::spawn(consumers) });
        group.bench_with_input(
            BenchmarkId::new("parse+watch::send+acks (floor)", consumers),
            &consumers,
            |b, _| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (floor, jwts) = (&floor, &jwts);
                    async move {
                        let t = stopwatch();
                        for i in 0..iters {
                            black_box(floor.update(&jwts[(i & 1) as usize]).await);
                        }
                        stopwatch() - t
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = token_read, update_token
}
criterion_main!(benches);

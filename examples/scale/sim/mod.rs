//! Simulations of many managers on one fake clock, shared by `examples/scale` (full size, figures)
//! and the tests (small size, assertions): `tests/scale.rs` and `tests/abuse_memory.rs` include
//! this module with `#[path]`.
#![allow(dead_code)] // each includer uses its own part

pub mod churn;
pub mod deadlines;
pub mod idle;
pub mod steady;
pub mod storm;

use access_manager::clock::{Clock, ManualClock, Sleep};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::AccessToken;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const KEY: &str = "SKfedcba9876543210fedcba9876543210";
pub const SECRET: &str = "scale-secret-0123456789abcdef";
/// The fake clock's start: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A token for `identity` issued at `iat` expiring at `exp`, with four grants (a typical
/// multi-grant token, ~600 bytes).
pub fn mint(identity: &str, iat: SystemTime, exp: SystemTime) -> String {
    AccessToken::builder(ACCOUNT, KEY, SECRET)
        .identity(identity)
        .issued_at(iat)
        .ttl(exp.duration_since(iat).unwrap_or_default())
        .grant(ChatGrant::default())
        .grant(SyncGrant::default())
        .grant(VoiceGrant::default())
        .grant(VideoGrant::default())
        .to_jwt()
        .expect("a valid token")
}

/// Real time, to time the simulations themselves (never the managers', which is the fake clock).
#[allow(clippy::disallowed_methods)]
pub fn wall() -> Instant {
    Instant::now()
}

/// A current-thread runtime on which one `yield_now()` from the `block_on` future lets every
/// ready task run, and every task those wake, until none is ready: the scheduler polls the
/// `block_on` future again only after `event_interval` tasks or when its queue is empty, and the
/// interval is set out of reach. No I/O or timer driver: the fake clock needs neither.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .event_interval(u32::MAX)
        .build()
        .expect("a runtime")
}

/// Lets the runtime run until `quiet()` holds (from the `block_on` future of [`runtime`]: a
/// single pass normally suffices), then one pass more for anything deferred.
pub async fn run_until_quiet(quiet: impl Fn() -> bool) {
    let mut passes = 0u32;
    loop {
        tokio::task::yield_now().await;
        passes += 1;
        if quiet() {
            break;
        }
        assert!(passes < 1_000, "the runtime never went quiet");
    }
    tokio::task::yield_now().await;
}

/// Whether every sleeper due on `clock` has been polled: then every timer due has fired.
pub fn timers_settled(clock: &ManualClock) -> bool {
    clock.next_deadline().is_none_or(|d| d > clock.now())
}

/// A [`ManualClock`] that counts how often any of its sleeps is polled: a manager's driver polls
/// its timer each time it runs, so with no fetch or delivery in flight this counts driver polls.
#[derive(Debug, Clone)]
pub struct CountingClock {
    pub inner: ManualClock,
    polls: Arc<AtomicU64>,
}

impl CountingClock {
    pub fn new(inner: ManualClock) -> Self {
        CountingClock {
            inner,
            polls: Arc::default(),
        }
    }

    /// Sleep polls so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

impl Clock for CountingClock {
    fn now(&self) -> SystemTime {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        self.counted(self.inner.sleep_until(deadline))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.counted(self.inner.sleep(duration))
    }
}

impl CountingClock {
    /// `sleep`, counting its polls.
    fn counted(&self, mut sleep: Sleep) -> Sleep {
        let polls = self.polls.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            sleep.as_mut().poll(cx)
        }))
    }
}

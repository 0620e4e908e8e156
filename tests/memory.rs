//! Live heap, counted by a global allocator (hence a test binary of its own).
//!
//! Memory does not grow across token updates: one manager takes 50 000 pushed tokens, alternating
//! two, with 4 consumers and a subscriber that drains. `cargo run --release --example scale --
//! --updates 1000000` runs the same code at a million. (50 000, not more, keeps this debug test
//! near 3 s.) And behaviour 13: no copy of a token is kept once it is replaced or its manager is
//! gone, while the threads that read it live on.

#[path = "../examples/scale/sim/mod.rs"]
mod sim;

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;
use access_manager::clock::{Clock, ManualClock};
use access_manager::grants::VideoGrant;
use access_manager::{AccessManager, AccessToken};
use counting_alloc::{live, Counting};
use std::sync::{mpsc, Barrier, Mutex};
use std::time::{Duration, UNIX_EPOCH};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Room for allocator-independent noise (a collection that happens to grow once): far below one
/// byte per update (a leak of even one byte per update shows).
const SLACK: isize = 16 * 1024;

/// The tests of this binary run one at a time: the count is process-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn live_heap_does_not_grow_across_50_000_token_updates() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = sim::churn::Config::new(50_000);
    let r = sim::runtime().block_on(sim::churn::run(&config, live));
    assert_eq!(r.deliveries, 4 * r.updates, "a consumer missed a token");
    assert!(
        r.events > r.updates / 2,
        "the subscriber read {} events",
        r.events
    );
    assert!(
        r.live_after <= r.live_after_warmup + SLACK,
        "live heap grew from {} B after {} updates to {} B after {}",
        r.live_after_warmup,
        config.warmup,
        r.live_after,
        r.updates
    );
}

/// The size of the big token's room name: the token text is a bit over 4/3 of it.
const ROOM: usize = 8 * 1024;

fn token(clock: &ManualClock, room: usize) -> String {
    AccessToken::builder(
        "AC0123456789abcdef0123456789abcdef",
        "SKfedcba9876543210fedcba9876543210",
        "secret",
    )
    .identity("alice")
    .issued_at(clock.now())
    .grant(VideoGrant {
        room: Some("r".repeat(room)),
    })
    .to_jwt()
    .unwrap()
}

/// Four threads read the manager's big token and then stay alive, parked, while `after_reads`
/// runs; gives the live-heap drop `after_reads` caused.
fn freed_while_readers_live(
    after_reads: impl FnOnce(AccessManager, &tokio::runtime::Runtime),
) -> isize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let big = token(&clock, ROOM);
    let manager = runtime.block_on(async {
        AccessManager::builder()
            .clock(clock.clone())
            .initial_token(big)
            .build()
            .unwrap()
    });
    let read = Barrier::new(5);
    let (release, parked) = mpsc::channel::<()>();
    let parked = Mutex::new(parked);
    let (read, parked) = (&read, &parked);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let manager = manager.clone();
            s.spawn(move || {
                let token = manager.token().expect("a token");
                assert!(token.as_str().len() > ROOM);
                drop(token);
                manager.with_token(|t| assert!(t.is_some()));
                drop(manager);
                read.wait();
                // Alive (and holding whatever it keeps per thread) until the test is done.
                let _ = parked.lock().unwrap().recv();
            });
        }
        read.wait();
        let before = live();
        after_reads(manager.clone(), &runtime);
        drop(manager);
        runtime.block_on(async {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
        });
        let freed = before - live();
        drop(release);
        freed
    })
}

#[test]
fn a_replaced_token_is_freed_while_the_threads_that_read_it_live_on() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let freed = freed_while_readers_live(|manager, runtime| {
        let clock = ManualClock::new(manager.clock().now());
        let small = token(&clock, 8);
        runtime.block_on(manager.update_token(small)).unwrap();
        std::mem::forget(manager); // the manager lives on: only the replaced token may go
    });
    assert!(
        freed >= ROOM as isize,
        "replacing the token freed {freed} B; its text alone is over {ROOM} B"
    );
}

#[test]
fn a_gone_managers_token_is_freed_while_the_threads_that_read_it_live_on() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let freed = freed_while_readers_live(|_, _| {});
    assert!(
        freed >= ROOM as isize,
        "dropping the manager freed {freed} B; its token's text alone is over {ROOM} B"
    );
}

/// Builds a manager, with a subscription that is never read, and pushes it the big token; runs `then`,
/// and gives the live-heap drop it caused (the manager and the subscription still alive).
fn freed_with_an_unread_subscription(
    then: impl FnOnce(&AccessManager, &ManualClock, &tokio::runtime::Runtime),
) -> isize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let (manager, unread) = runtime.block_on(async {
        let (manager, unread) = AccessManager::builder()
            .clock(clock.clone())
            .build_with_events()
            .unwrap();
        // Pushed, so that its `TokenUpdated` waits in the subscription.
        manager.update_token(token(&clock, ROOM)).await.unwrap();
        (manager, unread)
    });
    let settle = || {
        runtime.block_on(async {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
        })
    };
    settle();
    let before = live();
    then(&manager, &clock, &runtime);
    settle();
    let freed = before - live();
    drop((unread, manager));
    freed
}

#[test]
fn an_unread_subscription_keeps_no_replaced_token() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let freed = freed_with_an_unread_subscription(|manager, clock, runtime| {
        runtime
            .block_on(manager.update_token(token(clock, 8)))
            .unwrap();
    });
    assert!(
        freed >= ROOM as isize,
        "replacing the token freed {freed} B with a subscription nobody reads; its text alone is \
         over {ROOM} B"
    );
}

#[test]
fn an_unread_subscription_keeps_no_token_of_a_signed_out_shut_down_manager() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let freed = freed_with_an_unread_subscription(|manager, _, runtime| {
        runtime.block_on(async {
            let _ = manager.sign_out().await;
            manager.shutdown().await;
        });
    });
    assert!(
        freed >= ROOM as isize,
        "signing out and shutting down freed {freed} B with a subscription nobody reads; the \
         token's text alone is over {ROOM} B"
    );
}

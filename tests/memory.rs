//! Memory does not grow across token updates: a counting global allocator (hence a test binary of
//! its own) watches one manager take 50 000 pushed tokens, alternating two, with 4 consumers and
//! a subscriber that drains. `cargo run --release --example scale -- --updates 1000000` runs the
//! same code at a million. (50 000, not more, keeps this debug test near 3 s.)

#[path = "../examples/scale/sim/mod.rs"]
mod sim;

#[path = "../benches/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Room for allocator-independent noise (a collection that happens to grow once): far below one
/// byte per update (a leak of even one byte per update shows).
const SLACK: isize = 16 * 1024;

#[test]
fn live_heap_does_not_grow_across_50_000_token_updates() {
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

//! Live heap per manager holding a token (one registered consumer, no subscription), counted by a
//! global allocator, beside the peer's figure (twilio-common 0.1.7 on node 20,
//! `benches/peer/twilio_common_bench.js`): read from `benches/peer/peer_results.json` when the peer
//! ran on this machine, else the figure in `benches/peer/README.md`.
//!
//! `cargo bench --bench memory` (N managers, default 100 000: `MEMORY_N=10000` for a quick run).

use access_manager::AccessManager;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/peer_token.rs"]
mod peer_token;
use counting_alloc::{Counting, LIVE};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The peer's live heap per manager holding a token, bytes, as `benches/peer/README.md` gives it.
const PEER_BYTES_README: f64 = 4170.0;

#[path = "support/noop_consumer.rs"]
mod noop_consumer;
use noop_consumer::NoOp;

/// The peer's figure from its last run here, if any.
fn peer_bytes_measured() -> Option<f64> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peer/peer_results.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["heap_bytes_per_manager"].as_f64()
}

fn main() {
    let n: usize = std::env::var("MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Tokens live long enough for any run; minted (and held) before the measurement.
    let now = access_manager::clock::Clock::now(&access_manager::clock::SystemClock);
    let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let tokens: Vec<String> = (0..n)
        .map(|i| peer_token::peer_token(&format!("user-{i:06}"), iat))
        .collect();
    let consumer = Arc::new(NoOp);

    rt.block_on(async {
        // Warm up the runtime's own structures.
        let warm = AccessManager::builder()
            .initial_token(tokens[0].clone())
            .build()
            .unwrap();
        warm.register(&consumer);
        tokio::task::yield_now().await;
        warm.shutdown().await;
        drop(warm);

        let tokens = tokens.clone(); // copies made before the measurement
        let before = LIVE.load(Ordering::SeqCst);
        let mut managers = Vec::with_capacity(n);
        for jwt in tokens {
            let m = AccessManager::builder().initial_token(jwt).build().unwrap();
            m.register(&consumer);
            managers.push(m);
        }
        let vec_bytes = (managers.capacity() * std::mem::size_of::<AccessManager>()) as isize;
        let per = |live: isize| (live - before - vec_bytes) as f64 / n as f64;
        let unstarted = per(LIVE.load(Ordering::SeqCst));
        // Settled, as the peer's figure is: every driver has had its first turn (one poll takes
        // the registration, delivers the token to the consumer and arms the timer). A yield lets
        // the current-thread scheduler run a batch of tasks, not all of them, hence the loop.
        while managers.iter().any(|m| m.stats().deliveries == 0) {
            tokio::task::yield_now().await;
        }
        let settled = per(LIVE.load(Ordering::SeqCst));
        let (peer, source) = match peer_bytes_measured() {
            Some(bytes) => (bytes, "benches/peer/peer_results.json"),
            None => (PEER_BYTES_README, "benches/peer/README.md"),
        };
        println!("managers: {n}");
        println!("live heap per manager holding a token, settled: {settled:.0} B");
        println!("  (before the drivers' first turn: {unstarted:.0} B)");
        println!("peer (twilio-common 0.1.7, node 20, from {source}): {peer:.0} B");
        println!("ratio ours/peer: {:.2}x (goal <= 0.50x)", settled / peer);
        for m in &managers {
            m.shutdown().await;
        }
    });
}

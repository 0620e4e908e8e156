//! A fetcher's `Retry-After` is a wish, not a reason to stop the manager.

use access_manager::clock::ManualClock;
use access_manager::{fetcher_fn, AccessManager, Event, FetchError, FetchRequest, MAX_LIFETIME};
use std::time::{Duration, UNIX_EPOCH};

#[tokio::test]
async fn a_huge_retry_after_delays_the_retry_without_killing_the_manager() {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = ManualClock::new(start);
    let fetcher = fetcher_fn(|_: FetchRequest| async {
        Err::<String, _>(FetchError::transient("busy").with_retry_after(Duration::MAX))
    });
    let manager = AccessManager::builder()
        .fetcher(fetcher)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    let Some(Event::RefreshFailed { retry_at, .. }) = events.recv().await else {
        panic!("expected RefreshFailed");
    };
    // Cut to the longest a token can live, rather than overflowing the clock in the driver.
    assert_eq!(retry_at, Some(start + MAX_LIFETIME));
    assert!(!manager.is_closed());
    manager.shutdown().await;
}

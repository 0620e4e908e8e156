//! A device clock hours off the token issuer's: with `estimate_clock_skew(true)` the manager
//! schedules by the issuer's clock (one fetch per token life, no premature expiry); without it, it
//! does not loop (failures back off) and says `ClockSkewSuspected` once. Both for tokens with `iat`
//! (twilio-node, this crate's builder) and tokens with only `nbf` (twilio-python style).

use crate::common::{at, drain, mint, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{fetcher_fn, AccessManager, Backoff, Event};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

const TWO_HOURS: i64 = 7_200;
/// A token lives 3600 s; the manager refreshes 180 s before its end.
const LIFE: u64 = 3_600 - 180;

#[derive(Clone, Copy, Debug)]
enum Style {
    /// `iat` = the issuer's now, no `nbf`.
    Node,
    /// No `iat`; `nbf` = the issuer's now.
    Python,
}

fn issue(style: Style, issuer_now: u64) -> String {
    match style {
        Style::Node => mint("alice", issuer_now, 3_600),
        Style::Python => crate::token_support::sign(
            &crate::token_support::good_header(),
            &json!({
                "jti": format!("{}-{issuer_now}", crate::common::KEY),
                "grants": {"identity": "alice", "chat": {}, "video": {}},
                "nbf": issuer_now,
                "exp": issuer_now + 3_600,
                "iss": crate::common::KEY,
                "sub": crate::common::ACCOUNT,
            }),
        ),
    }
}

struct Outcome {
    /// When each fetch was made: device seconds since the start.
    fetches: Vec<u64>,
    events: Vec<Event>,
    manager: AccessManager,
}

impl Outcome {
    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }
    fn skew_reports(&self) -> Vec<i64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ClockSkewSuspected { offset_secs } => Some(*offset_secs),
                _ => None,
            })
            .collect()
    }
}

/// Runs a manager whose device clock is `device_ahead` seconds ahead of the issuer's (negative:
/// behind) for `secs` device seconds, stepping from timer to timer; the fetcher answers at once.
async fn run(device_ahead: i64, estimate: bool, style: Style, secs: u64) -> Outcome {
    let clock = ManualClock::new(at(T0));
    let fetches = Arc::new(Mutex::new(Vec::new()));
    let (fetch_clock, log) = (clock.clone(), fetches.clone());
    let fetcher = fetcher_fn(move |_request| {
        let device = fetch_clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        log.lock().unwrap().push(device - T0);
        let issuer_now = device.checked_add_signed(-device_ahead).unwrap();
        std::future::ready(Ok(issue(style, issuer_now)))
    });
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .estimate_clock_skew(estimate)
        .backoff(Backoff::default().without_jitter())
        .event_capacity(4_096)
        .build_with_events()
        .unwrap();
    let mut seen = Vec::new();
    loop {
        seen.extend(drain(&mut events).await);
        match clock.next_deadline() {
            Some(next) if next <= at(T0 + secs) => clock.advance_to(next),
            _ => break,
        }
    }
    let fetches = fetches.lock().unwrap().clone();
    Outcome {
        fetches,
        events: seen,
        manager,
    }
}

/// Five token lives: one fetch at the start of each, at exactly `exp - refresh_ahead` on the
/// issuer's clock; no failure, no expiry; the offset estimated; the skew said once.
async fn absorbed(device_ahead: i64, style: Style) {
    let o = run(device_ahead, true, style, 5 * LIFE - 1).await;
    assert_eq!(
        o.fetches,
        [0, LIFE, 2 * LIFE, 3 * LIFE, 4 * LIFE],
        "{style:?}, device {device_ahead} s ahead"
    );
    assert_eq!(
        o.count(|e| matches!(e, Event::TokenUpdated { .. })),
        5,
        "{style:?}"
    );
    assert_eq!(o.count(|e| matches!(e, Event::TokenWillExpire { .. })), 4);
    assert_eq!(
        o.count(|e| matches!(
            e,
            Event::TokenExpired { .. } | Event::RefreshFailed { .. } | Event::TokenRejected { .. }
        )),
        0,
        "{style:?}: {:?}",
        o.events
    );
    assert_eq!(o.manager.clock_offset(), Some(-device_ahead));
    assert_eq!(o.skew_reports(), [-device_ahead]);
    assert!(!o.manager.is_expired());
    assert!(o.manager.fresh_token(crate::common::secs(60)).await.is_ok());
}

/// Every fetched token is rejected: the fetches back off to one a minute, for as long as it
/// lasts, with the skew said once.
async fn rejected_without_loop(device_ahead: i64, style: Style) {
    let hour = 3_600;
    let o = run(device_ahead, false, style, hour).await;
    let f = &o.fetches;
    assert!(
        f.len() >= 50 && f.len() <= 7 + hour as usize / 60,
        "{style:?}: {} fetches in an hour",
        f.len()
    );
    // 1, 2, 4, .. 32 s, then the 60 s cap.
    assert_eq!(f[..8], [0, 1, 3, 7, 15, 31, 63, 123], "{style:?}");
    assert!(f.windows(2).skip(7).all(|w| w[1] - w[0] >= 60), "{f:?}");
    assert_eq!(o.count(|e| matches!(e, Event::TokenUpdated { .. })), 0);
    assert_eq!(
        o.count(|e| matches!(e, Event::TokenRejected { .. })),
        f.len()
    );
    assert_eq!(o.skew_reports(), [-device_ahead], "{style:?}");
    assert!(o.manager.token().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn with_estimation_a_device_2h_ahead_fetches_once_per_token_life() {
    absorbed(TWO_HOURS, Style::Node).await;
    absorbed(TWO_HOURS, Style::Python).await;
}

#[tokio::test(flavor = "current_thread")]
async fn with_estimation_a_device_2h_behind_fetches_once_per_token_life() {
    absorbed(-TWO_HOURS, Style::Node).await;
    absorbed(-TWO_HOURS, Style::Python).await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_estimation_a_device_2h_ahead_rejects_tokens_as_expired_without_looping() {
    rejected_without_loop(TWO_HOURS, Style::Node).await;
    rejected_without_loop(TWO_HOURS, Style::Python).await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_estimation_python_tokens_on_a_device_2h_behind_are_not_yet_valid_without_looping()
{
    rejected_without_loop(-TWO_HOURS, Style::Python).await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_estimation_node_tokens_on_a_device_2h_behind_are_taken_and_refreshed_by_the_device_clock(
) {
    // The token's `exp` lies 3 h ahead on the device: it is refreshed once per 3 h minus the lead
    // of device time (2 h after it really expired), never in a loop.
    let device_life = 3 * 3_600 - 180;
    let o = run(-TWO_HOURS, false, Style::Node, 5 * device_life - 1).await;
    assert_eq!(
        o.fetches,
        [
            0,
            device_life,
            2 * device_life,
            3 * device_life,
            4 * device_life
        ]
    );
    assert_eq!(o.count(|e| matches!(e, Event::TokenExpired { .. })), 0);
    assert_eq!(o.count(|e| matches!(e, Event::RefreshFailed { .. })), 0);
    assert_eq!(o.manager.clock_offset(), Some(TWO_HOURS));
    assert_eq!(o.skew_reports(), [TWO_HOURS]);
}

/// The `ClockSkewSuspected` offsets reported for one fetched token issued at `iat` (device
/// clock at `T0`) and expiring at `exp`.
async fn reported_for(iat: u64, exp: u64) -> Vec<i64> {
    let token = crate::token_support::sign(
        &crate::token_support::good_header(),
        &json!({
            "jti": format!("{}-{iat}", crate::common::KEY),
            "grants": {"identity": "alice", "chat": {}},
            "iat": iat,
            "exp": exp,
            "iss": crate::common::KEY,
            "sub": crate::common::ACCOUNT,
        }),
    );
    let (manager, mut events) = AccessManager::builder()
        .clock(ManualClock::new(at(T0)))
        .fetcher(fetcher_fn(move |_| std::future::ready(Ok(token.clone()))))
        .build_with_events()
        .unwrap();
    manager.refresh().await.unwrap();
    drain(&mut events)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::ClockSkewSuspected { offset_secs } => Some(offset_secs),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn skew_is_reported_past_five_minutes_either_way_and_not_at_five() {
    // Issued in the device's future: the device is behind.
    assert_eq!(reported_for(T0 + 300, T0 + 3_900).await, [0i64; 0]);
    assert_eq!(reported_for(T0 + 301, T0 + 3_901).await, [301]);
    // Issued long ago and nearly expired here (100 s left, under the 180 s lead): ahead.
    assert_eq!(reported_for(T0 - 300, T0 + 100).await, [0i64; 0]);
    assert_eq!(reported_for(T0 - 301, T0 + 100).await, [-301]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_short_token_from_an_agreeing_clock_or_an_old_one_with_the_full_lead_is_not_skew() {
    // Issued 100 s ago with 100 s left: short, but the clocks agree.
    assert_eq!(reported_for(T0 - 100, T0 + 100).await, [0i64; 0]);
    // Issued 400 s ago (a backend's cached token) with exactly the 180 s lead left: not nearly
    // expired, so nothing says the device is ahead.
    assert_eq!(reported_for(T0 - 400, T0 + 180).await, [0i64; 0]);
    assert_eq!(reported_for(T0 - 400, T0 + 179).await, [-400]);
}

#[tokio::test(flavor = "current_thread")]
async fn with_skew_estimation_a_fetched_token_expiring_with_the_held_one_is_taken() {
    // Only a fetched token that expires *before* the held one counts as stale.
    let held = mint("alice", T0, 3_600);
    let same_end = mint("alice", T0 - 600, 4_200);
    assert_ne!(held, same_end);
    let answer = same_end.clone();
    let manager = AccessManager::builder()
        .clock(ManualClock::new(at(T0)))
        .initial_token(&held)
        .estimate_clock_skew(true)
        .fetcher(fetcher_fn(move |_| std::future::ready(Ok(answer.clone()))))
        .build()
        .unwrap();
    assert_eq!(manager.refresh().await.unwrap().as_str(), same_end);
    assert_eq!(manager.token().unwrap().as_str(), same_end);
}

// ---------------------------------------------------------------------------------------------
// The offset moves only with a token taken, and moves the held token's deadlines with it.

#[tokio::test(flavor = "current_thread")]
async fn a_refused_fetched_token_does_not_move_the_clock_offset() {
    let clock = ManualClock::new(at(T0));
    let (fetcher, mut calls) = crate::common::scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .initial_token(mint("alice", T0, 3_600))
        .estimate_clock_skew(true)
        .fetcher(fetcher)
        .build()
        .unwrap();
    clock.advance(std::time::Duration::from_secs(700));
    let refresh = crate::common::spawn_refresh(&manager);
    // The backend's clock is 3000 s ahead, and it hands out a token for someone else: refused.
    calls.next().await.ok(mint("bob", T0 + 700 + 3_000, 3_600));
    assert!(refresh.await.unwrap().is_err());
    // Judged by the old offset, alice's token has 2900 s left.
    assert!(
        !manager.is_expired(),
        "the refused token's clock was applied"
    );
    assert_eq!(
        manager.stats().next_fetch_at,
        Some(at(T0 + 3_420)),
        "the refused token's clock moved the refresh"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_offset_moves_the_held_tokens_deadlines_with_it() {
    let clock = ManualClock::new(at(T0));
    let (fetcher, mut calls) = crate::common::scripted();
    let held = mint("alice", T0, 3_600);
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .initial_token(&held)
        .estimate_clock_skew(true)
        .fetcher(fetcher)
        .build()
        .unwrap();
    // The device clock is set 3700 s forward: by it, the token expired.
    clock.set(at(T0 + 3_700));
    let call = calls.next().await;
    // The backend, whose clock says T0 + 100, hands back the token held: the device is 3700 s
    // ahead, and by the issuer's clock the token has 3500 s left.
    call.ok(held.clone());
    crate::common::settle().await;
    assert_eq!(manager.clock_offset(), Some(-3_700));
    assert!(!manager.is_expired());
    // Its refresh point, T0 + 3420 on the issuer's clock, is T0 + 3420 + 3700 on the device's.
    assert_eq!(manager.stats().next_fetch_at, Some(at(T0 + 3_420 + 3_700)));
}

#[tokio::test(flavor = "current_thread")]
async fn an_offset_the_device_clock_made_wrong_is_dropped_rather_than_refusing_fresh_tokens() {
    let clock = ManualClock::new(at(T0));
    let (fetcher, mut calls) = crate::common::scripted();
    let manager = AccessManager::builder()
        .clock(clock.clone())
        .estimate_clock_skew(true)
        .fetcher(fetcher)
        .build()
        .unwrap();
    // The backend's clock is an hour ahead: applied.
    calls.next().await.ok(mint("alice", T0 + 3_600, 3_600));
    crate::common::settle().await;
    assert_eq!(manager.clock_offset(), Some(3_600));
    // The device's clock is then set 100 minutes forward: it is now 40 minutes ahead of the
    // backend's, which mints an hour-long token on its own clock.
    clock.set(at(T0 + 6_000));
    let refresh = crate::common::spawn_refresh(&manager);
    let fresh = mint("alice", T0 + 3_600, 3_600);
    calls.next().await.ok(fresh.clone());
    assert_eq!(
        refresh
            .await
            .unwrap()
            .expect("a fresh token refused")
            .as_str(),
        fresh
    );
    assert!(!manager.is_expired());
}

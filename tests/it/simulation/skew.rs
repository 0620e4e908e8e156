//! Histories with a backend whose clock is off the device's, and clock-skew estimation on: the
//! backend mints each token on its own clock (and now and then hands back an older one it still
//! holds), the device's clock is set now and then, time passes deadline by deadline.
//!
//! Invariants, checked whenever the manager is quiet:
//! - no token is taken that is stale: each token taken expires no earlier than the one before it,
//!   and is not expired by the manager's clock (its own offset applied) when it is taken;
//! - timers follow the applied offset: while only time passes, the manager refreshes before it
//!   judges its own token expired (`is_expired()` never holds, no `TokenExpired`);
//! - it does not loop: a few fetches at most while the clock stands still.

use super::rng::Rng;
use crate::common::{mint, settle, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{fetcher_fn, AccessManager, AccessToken, Backoff, Event, Events};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// The manager's lead.
const LEAD: u64 = 180;

/// The backend: its clock runs `offset` seconds from the device's start, on elapsed time (setting
/// the device's clock does not move it).
struct Backend {
    clock: ManualClock,
    start: u64,
    ttl: u64,
    rng: Rng,
    /// Every token it minted, in order.
    minted: Vec<String>,
    /// It just handed back an older token: the next answer is a fresh one.
    replayed: bool,
}

impl Backend {
    fn now(&self) -> u64 {
        self.start + self.clock.elapsed().as_secs()
    }

    fn answer(&mut self) -> String {
        let now = self.now();
        let older = self
            .minted
            .iter()
            .rev()
            .skip(1)
            .find(|jwt| AccessToken::parse(jwt).is_ok_and(|t| unix(t.expires_at()) > now + 1));
        if let Some(older) = older.filter(|_| !self.replayed && self.rng.chance(20)) {
            self.replayed = true;
            return older.clone();
        }
        self.replayed = false;
        let jwt = mint("alice", now, self.ttl);
        self.minted.push(jwt.clone());
        jwt
    }
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What the history has seen so far.
struct Watch {
    /// The last token taken, as the manager held it at a quiet point.
    held: Option<AccessToken>,
    /// The device's clock was set since the token held was taken: it may look expired until the
    /// next one.
    clock_set: bool,
    fetches: u64,
}

/// Runs one history; `Err` names the broken invariant and the steps before it.
pub fn run(seed: u64, steps: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(history(seed, steps))
}

async fn history(seed: u64, steps: usize) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let ttl = rng.pick(&[600, 3_600, 4 * 3_600, 86_000]);
    let magnitude = match rng.below(4) {
        0 => rng.range(0, 3),
        1 => rng.range(3, 300),
        2 => rng.range(300, 6 * 3_600),
        _ => rng.range(6 * 3_600, 20 * 3_600),
    };
    let offset = if rng.chance(50) {
        magnitude as i64
    } else {
        -(magnitude as i64)
    };
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0));
    let backend = Arc::new(Mutex::new(Backend {
        clock: clock.clone(),
        start: T0.saturating_add_signed(offset),
        ttl,
        rng: Rng::new(seed ^ 0x5eed),
        minted: Vec::new(),
        replayed: false,
    }));
    let fetcher = {
        let backend = backend.clone();
        fetcher_fn(move |_| {
            let jwt = backend.lock().unwrap().answer();
            async move { Ok(jwt) }
        })
    };
    let (manager, mut events) = AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .estimate_clock_skew(true)
        .refresh_ahead(Duration::from_secs(LEAD))
        .backoff(Backoff::default().without_jitter())
        .jitter_seed(seed)
        .build_with_events()
        .expect("a manager");
    let mut log = vec![format!(
        "setup: backend clock {offset:+} s from the device's, tokens of {ttl} s"
    )];
    let mut watch = Watch {
        held: None,
        clock_set: false,
        fetches: 0,
    };
    let fail = |log: &[String], what: String| {
        let tail = log[log.len().saturating_sub(12)..].join("\n    ");
        Err(format!("seed {seed}: {what}\n    {tail}"))
    };
    quiet(&manager, &mut events, &mut watch, &clock, &mut log)
        .await
        .or_else(|e| fail(&log, e))?;
    for _ in 0..steps {
        match rng.below(10) {
            0 => {
                let by = rng.range(1, 2 * 3_600);
                let forward = rng.chance(50);
                // The issuer's clock stays within the ±24 h the estimate covers.
                let now = unix(clock.now()) as i64;
                let skew = backend.lock().unwrap().now() as i64 - now;
                let after = if forward {
                    skew - by as i64
                } else {
                    skew + by as i64
                };
                if after.unsigned_abs() > 22 * 3_600 {
                    continue;
                }
                log.push(format!(
                    "the device's clock is set {by} s {}",
                    if forward { "forward" } else { "back" }
                ));
                let now = clock.now();
                let by = Duration::from_secs(by);
                clock.set(if forward { now + by } else { now - by });
                watch.clock_set = true;
            }
            1 => {
                log.push("refresh()".into());
                if let Err(e) = manager.refresh().await {
                    return fail(&log, format!("refresh() failed: {e}"));
                }
            }
            2 => {
                log.push("resume()".into());
                manager.resume();
            }
            _ => {
                let by = Duration::from_secs(rng.range(1, ttl + ttl / 2));
                log.push(format!("time passes: {} s", by.as_secs()));
                let target = clock.now() + by;
                // Deadline by deadline, the manager running at each.
                for _ in 0..10_000 {
                    let now = clock.now();
                    if now >= target {
                        break;
                    }
                    let to = clock
                        .next_deadline()
                        .filter(|&next| next > now && next < target)
                        .unwrap_or(target);
                    clock.advance_to(to);
                    quiet(&manager, &mut events, &mut watch, &clock, &mut log)
                        .await
                        .or_else(|e| fail(&log, e))?;
                }
            }
        }
        quiet(&manager, &mut events, &mut watch, &clock, &mut log)
            .await
            .or_else(|e| fail(&log, e))?;
    }
    manager.shutdown().await;
    Ok(())
}

/// Lets the manager run, then checks the invariants.
async fn quiet(
    manager: &AccessManager,
    events: &mut Events,
    watch: &mut Watch,
    clock: &ManualClock,
    log: &mut Vec<String>,
) -> Result<(), String> {
    settle().await;
    let mut expired_event = false;
    while let Some(event) = events.try_recv() {
        if let Event::TokenExpired { .. } = event {
            expired_event = true;
        }
    }
    let fetches = manager.stats().fetches;
    if fetches > watch.fetches + 3 {
        return Err(format!(
            "{} fetches at one standing clock: the manager loops",
            fetches - watch.fetches
        ));
    }
    if fetches != watch.fetches {
        log.push(format!(
            "  {} fetch(es) by device now {}, next at {:?}",
            fetches - watch.fetches,
            unix(clock.now()),
            manager.stats().next_fetch_at.map(unix)
        ));
    }
    watch.fetches = fetches;
    let held = manager.token();
    if held != watch.held {
        let Some(token) = &held else {
            return Err("the token was forgotten".into());
        };
        log.push(format!(
            "  token taken: exp {} (device now {}, offset estimate {:?})",
            unix(token.expires_at()),
            unix(clock.now()),
            manager.clock_offset()
        ));
        if let Some(before) = &watch.held {
            if token.expires_at() < before.expires_at() {
                return Err(format!(
                    "a stale token was taken: exp {} after one expiring at {}",
                    unix(token.expires_at()),
                    unix(before.expires_at())
                ));
            }
        }
        if manager.is_expired() {
            return Err("a token expired by the manager's clock was taken".into());
        }
        watch.held = held;
        watch.clock_set = false;
        return Ok(());
    }
    if !watch.clock_set && (manager.is_expired() || expired_event) {
        return Err(format!(
            "the token expired by the manager's own clock while only time passed (device now {})",
            unix(clock.now())
        ));
    }
    Ok(())
}

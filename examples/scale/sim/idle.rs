//! Idle managers on the real clock: many managers holding tokens far from their deadlines on
//! `SystemClock`, left alone for a while of real time; how often any of their sleeps is polled,
//! and how much CPU the process uses meanwhile.

use super::{mint, wall};
use access_manager::clock::{Clock, Sleep, SystemClock};
use access_manager::AccessManager;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug)]
pub struct Report {
    pub managers: usize,
    pub idle_for: Duration,
    /// Sleep polls while idle, in all.
    pub polls: u64,
    /// CPU time the process used while idle (Linux only).
    pub cpu: Option<Duration>,
    pub build_wall: Duration,
}

/// `SystemClock`, counting how often any of its sleeps is polled (a manager's driver polls its
/// timer each time it runs).
#[derive(Debug, Clone, Default)]
struct Counting {
    polls: Arc<AtomicU64>,
}

impl Clock for Counting {
    fn now(&self) -> SystemTime {
        SystemClock.now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        self.counted(SystemClock.sleep_until(deadline))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.counted(SystemClock.sleep(duration))
    }
}

impl Counting {
    fn counted(&self, mut sleep: Sleep) -> Sleep {
        let polls = self.polls.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            sleep.as_mut().poll(cx)
        }))
    }
}

/// The process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime and stime are the 12th and
    // 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Builds `managers` managers on the real clock, lets them settle, then leaves them idle for
/// `idle_for` of real time.
pub async fn run(managers: usize, idle_for: Duration) -> Report {
    let clock = Counting::default();
    let started = wall();
    let now = clock.now();
    let held: Vec<AccessManager> = (0..managers)
        .map(|i| {
            AccessManager::builder()
                .clock(clock.clone())
                .initial_token(mint(
                    &format!("user-{i:06}"),
                    now,
                    now + Duration::from_secs(3600),
                ))
                .build()
                .expect("a valid token")
        })
        .collect();
    // Every driver runs once and arms its timer: then the runtime has nothing left to do.
    let mut last = u64::MAX;
    loop {
        tokio::task::yield_now().await;
        let polls = clock.polls.load(Ordering::Relaxed);
        if polls >= managers as u64 && polls == last {
            break;
        }
        last = polls;
    }
    let build_wall = wall() - started;
    let (polls, cpu) = (clock.polls.load(Ordering::Relaxed), cpu_time());
    // Not one of the managers' clocks: this sleep is not counted.
    SystemClock.sleep(idle_for).await;
    let report = Report {
        managers,
        idle_for,
        polls: clock.polls.load(Ordering::Relaxed) - polls,
        cpu: cpu.zip(cpu_time()).map(|(before, after)| after - before),
        build_wall,
    };
    drop(held);
    report
}

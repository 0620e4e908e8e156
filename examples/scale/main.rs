//! Scale figures: many managers in one process on one fake clock.
//!
//! ```text
//! cargo run --release --example scale -- [--managers N] [--window-secs S]
//!                                        [--storm [--storm-managers N]] [--updates N]
//! cargo run --release --example scale -- --idle-secs S [--idle-managers N]
//! ```
//!
//! - Deadlines (always): `--managers` managers (default 100 000), each holding a token expiring at
//!   its own second of a `--window-secs` window (default 600), with a 180 s refresh lead and no
//!   fetcher. The clock steps from deadline to deadline; every `TokenWillExpire` and
//!   `TokenExpired` must arrive at its exact instant. Prints build time, live heap per manager,
//!   events, early/late counts, wall time per simulated second, and the idle cost.
//! - `--storm`: on the fake clock, one line per scenario and one per goal (met or not):
//!   - the storm: `--storm-managers` managers (default 10 000) whose tokens all expire at once,
//!     each fetch taking 2 s: with nothing, with `refresh_jitter` 120 s, with a `FetchLimiter` of
//!     64 (and how early each refresh started), with both, and with a backend answering 429
//!     (`Retry-After: 1`) above 32 fetches at once;
//!   - the cold start: as many managers built at once with no token, a limiter of 64 and 20/s;
//!   - the steady state: as many managers whose 1 h tokens were issued at random times, for 6 h,
//!     with a limiter of 64, then 64 and 3/s: the busiest minute against the mean.
//! - `--updates N`: one manager with 4 consumers and a subscriber taking N pushed tokens; live
//!   heap after the first 1 000 and after all.
//! - `--idle-secs S` (alone, on the real clock): `--idle-managers` managers (default 100 000)
//!   holding 1 h tokens on `SystemClock`, left alone `S` seconds: how often any of their sleeps is
//!   polled, and the process's CPU time meanwhile. One process-wide watcher re-reads the wall
//!   clock (each 30 s slice at most) and wakes only the sleepers due, so the figure does not
//!   grow with the number of managers.

#[path = "sim/mod.rs"]
mod sim;

#[path = "../../benches/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};
use std::time::Duration;

#[global_allocator]
static GLOBAL: Counting = Counting;

const USAGE: &str =
    "usage: scale [--managers N] [--window-secs S] [--storm [--storm-managers N]] [--updates N]\n       scale --idle-secs S [--idle-managers N]";

struct Options {
    managers: usize,
    window_secs: u64,
    storm: bool,
    storm_managers: usize,
    updates: Option<usize>,
    idle_secs: Option<u64>,
    idle_managers: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        managers: 100_000,
        window_secs: 600,
        storm: false,
        storm_managers: 10_000,
        updates: None,
        idle_secs: None,
        idle_managers: 100_000,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--managers" => options.managers = value()? as usize,
            "--window-secs" => options.window_secs = value()?,
            "--storm" => options.storm = true,
            "--storm-managers" => options.storm_managers = value()? as usize,
            "--updates" => options.updates = Some(value()? as usize),
            "--idle-secs" => options.idle_secs = Some(value()?),
            "--idle-managers" => options.idle_managers = value()? as usize,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.managers == 0 || options.window_secs == 0 {
        return Err("--managers and --window-secs must be positive".into());
    }
    Ok(options)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Some(secs) = options.idle_secs {
        // Real time: a runtime with its timer, and nothing else from the simulations.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(idle(options.idle_managers, Duration::from_secs(secs)));
        return;
    }
    let runtime = sim::runtime();
    runtime.block_on(deadlines(&options));
    if options.storm {
        runtime.block_on(storms(options.storm_managers));
        runtime.block_on(cold_start(options.storm_managers));
        runtime.block_on(steady(options.storm_managers));
    }
    if let Some(updates) = options.updates {
        runtime.block_on(churn(updates));
    }
}

async fn deadlines(options: &Options) {
    let config =
        sim::deadlines::Config::new(options.managers, Duration::from_secs(options.window_secs));
    let r = sim::deadlines::run(&config, live).await;
    let n = r.managers as f64;
    println!("== deadlines: {} managers, one ManualClock, expiries over {} s, refresh_ahead 180 s, no fetcher",
        r.managers, options.window_secs);
    println!(
        "build + first poll: {:.3} s ({:.2} us per manager)",
        r.build_wall.as_secs_f64(),
        r.build_wall.as_secs_f64() * 1e6 / n
    );
    println!(
        "live heap per manager holding a token: {:.0} B (its own Arc'd clock handle and one \
              counting-clock box of 32 B included)",
        r.manager_bytes as f64 / n
    );
    println!(
        "live heap per subscription (event_capacity 2) + recording task: {:.0} B",
        r.subscription_bytes as f64 / n
    );
    println!(
        "events: {} ({} TokenWillExpire, {} TokenExpired), unexpected {}, duplicates {}",
        r.will_expire + r.expired,
        r.will_expire,
        r.expired,
        r.unexpected,
        r.duplicate
    );
    println!(
        "early: {}  late: {}  missing: {}",
        r.early, r.late, r.missing
    );
    println!("clock steps: {} over {} simulated s; steps where a due timer had not fired after one scheduler pass: {}",
        r.steps, r.simulated.as_secs(), r.unsettled_steps);
    println!(
        "stepping wall time: {:.3} s = {:.1} us per simulated second ({:.1} us per step)",
        r.stepping_wall.as_secs_f64(),
        r.stepping_wall.as_secs_f64() * 1e6 / r.simulated.as_secs_f64(),
        r.stepping_wall.as_secs_f64() * 1e6 / r.steps.max(1) as f64
    );
    println!("idle ({} scheduler passes, clock still): pending sleeps {} (= managers: {}), driver polls {}, events {}",
        config.idle_passes, r.idle_pending_sleeps, r.idle_pending_sleeps == r.managers, r.idle_polls, r.idle_events);
    println!(
        "pending sleeps once every token expired: {}",
        r.pending_sleeps_after
    );
    println!("idle on SystemClock: not run here (see --idle-secs)");
    let ok = r.early == 0
        && r.late == 0
        && r.missing == 0
        && r.duplicate == 0
        && r.unexpected == 0
        && r.idle_polls == 0
        && r.idle_events == 0
        && r.idle_pending_sleeps == r.managers;
    println!("check: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}

/// `PASS` or `FAIL`.
fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

/// The value at fraction `q` of sorted `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    values
        .get(((values.len().saturating_sub(1)) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

async fn storms(managers: usize) {
    use sim::storm::{run, Config};
    println!();
    println!("== fetch storm: {managers} managers, every token expiring at one instant (exp), refresh_ahead 180 s \
              (deadline = exp - 180 s), each fetch 2 s (fake clock)");
    let cases = [
        ("(a) nothing", Config::new(managers)),
        (
            "(b) refresh_jitter 120 s",
            Config::new(managers).jitter(Duration::from_secs(120)),
        ),
        ("(c) FetchLimiter 64", Config::new(managers).limit(64)),
        (
            "(d) jitter 120 s + limiter 64",
            Config::new(managers)
                .jitter(Duration::from_secs(120))
                .limit(64),
        ),
        (
            "(e) limiter 64, backend 429 > 32",
            Config::new(managers).limit(64).throttle_above(32),
        ),
    ];
    let mut reports = Vec::new();
    for (name, config) in cases {
        let r = run(&config).await;
        let first = r
            .starts
            .first()
            .map_or(0.0, |t| sim::storm::secs_from(r.expiry, *t));
        let last = r
            .starts
            .last()
            .map_or(0.0, |t| sim::storm::secs_from(r.expiry, *t));
        println!("{name:34} peak concurrent {:5}  max starts/s {:5}  starts exp{first:+.0} s .. exp{last:+.0} s  \
                  last answer exp{:+.0} s  by deadline {}/{}  before expiry {}/{}  ({} fetches, {} throttled, {:.2} s wall)",
            r.peak, r.max_starts_per_second(), r.last_answer_vs_expiry(), r.refreshed_by_deadline, r.managers,
            r.refreshed_in_time, r.managers, r.starts.len(), r.throttled, r.wall.as_secs_f64());
        if let Some(limiter_peak) = r.limiter_peak {
            assert!(
                r.peak <= limiter_peak,
                "more fetches ran than the limiter let through"
            );
        }
        reports.push(r);
    }
    let limited = &reports[2];
    let leads = limited.leads();
    println!(
        "(c) how early each refresh started, s before its deadline: min {:.0}  p10 {:.0}  p50 {:.0}  p90 {:.0}  max {:.0}  \
         (the backend needs {:.0} s for all at 64 x 2 s; first starts planned with the initial 5 s estimate, then {:?} learned)",
        quantile(&leads, 0.0),
        quantile(&leads, 0.1),
        quantile(&leads, 0.5),
        quantile(&leads, 0.9),
        quantile(&leads, 1.0),
        (managers as f64 / 64.0).ceil() * 2.0,
        limited.estimate.unwrap_or_default(),
    );
    let goal1 = limited.refreshed_by_deadline == managers && limited.peak <= 64;
    println!(
        "goal 1 (deadline-aware limiter): {}/{} refreshed before exp - refresh_ahead, peak {} <= 64: {}",
        limited.refreshed_by_deadline,
        managers,
        limited.peak,
        verdict(goal1)
    );
    let pushed = &reports[4];
    let fits = pushed.fits_after_throttle(32, Duration::from_secs(2));
    println!(
        "goal 4 (push-back): backend throttling above 32: {}/{} before expiry, {}/{} by deadline; what fits once \
         the backend first pushed back (exp{:+.0} s): {} answered by then + {} running then + 32 x {} rounds of 2 s \
         ending before expiry = {} ({:.1} % of it refreshed); {} fetches throttled, {} push-backs seen by the \
         limiter; everything that fits refreshed before expiry: {}",
        pushed.refreshed_in_time,
        managers,
        pushed.refreshed_by_deadline,
        managers,
        pushed
            .first_throttled
            .map_or(0.0, |t| sim::storm::secs_from(pushed.expiry, t)),
        fits.done,
        fits.running,
        fits.rounds,
        fits.total,
        pushed.refreshed_in_time as f64 * 100.0 / fits.total.max(1) as f64,
        pushed.throttled,
        pushed.pushbacks,
        verdict(pushed.refreshed_in_time >= fits.total)
    );
}

async fn cold_start(managers: usize) {
    use sim::storm::{run, Config};
    let config = Config::new(managers).cold().limit(64).rate(20);
    let r = run(&config).await;
    let optimum = managers as f64 / 20.0;
    let took = r.last_answer_vs_start();
    println!();
    println!("== cold start: {managers} managers built at once with no token, limiter 64 + 20 fetches/s, each fetch 2 s");
    println!(
        "all hold a token after {took:.1} s (optimum {optimum:.0} s + one 2 s fetch), max starts in one second {}, \
         peak concurrent {} ({:.2} s wall)",
        r.max_starts_per_second(),
        r.peak,
        r.wall.as_secs_f64()
    );
    let goal2 =
        r.answers.len() == managers && took <= optimum * 1.05 && r.max_starts_per_second() <= 20;
    println!(
        "goal 2 (cold start): within {:.1} % of the optimum, never over 20/s: {}",
        (took / optimum - 1.0) * 100.0,
        verdict(goal2)
    );
}

async fn steady(managers: usize) {
    use sim::steady::{run, Config};
    println!();
    println!("== steady state: {managers} managers, 1 h tokens issued at random times, 6 h on the fake clock, \
              refresh_ahead 180 s, each fetch 2 s");
    let hours = Duration::from_secs(6 * 3600);
    let mut met = false;
    for (name, config) in [
        ("limiter 64", Config::new(managers, hours)),
        (
            "limiter 64 + 3 fetches/s",
            Config::new(managers, hours).rate(3),
        ),
    ] {
        let r = run(&config).await;
        println!("{name:26} fetches {}  mean {:.1}/min  peak minute {}  peak/mean {:.2}  peak concurrent {}  \
                  after deadline {}  after expiry {}  ({:.2} s wall)",
            r.fetches, r.mean_per_minute(), r.peak_per_minute(), r.peak_to_mean(), r.peak_concurrent,
            r.after_deadline, r.after_expiry, r.wall.as_secs_f64());
        met = r.peak_to_mean() <= 1.2 && r.after_expiry == 0;
    }
    println!(
        "goal 3 (steady state): with a rate near the mean load, the busiest minute within 1.2x the mean: {} \
         (without a rate the refreshes follow the random issue times: see the line above)",
        verdict(met)
    );
}

async fn idle(managers: usize, idle_for: Duration) {
    let r = sim::idle::run(managers, idle_for).await;
    let secs = r.idle_for.as_secs_f64();
    println!(
        "== idle on SystemClock (real time): {} managers holding 1 h tokens, built in {:.2} s, then left alone {:.0} s",
        r.managers,
        r.build_wall.as_secs_f64(),
        secs
    );
    let cpu = r.cpu.map_or("n/a".to_string(), |cpu| {
        format!(
            "{:.2} s ({:.3} % of one core)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / secs * 100.0
        )
    });
    println!(
        "sleep polls while idle: {} = {:.2}/s (a wall-clock re-read per manager per 30 s slice would be {:.0}/s); \
         process CPU while idle: {cpu}",
        r.polls,
        r.polls as f64 / secs,
        r.managers as f64 / 30.0
    );
    let per_second = r.polls as f64 / secs;
    println!(
        "goal 5 (idle for free): at most a few polls a second in all, whatever the number of managers: {}",
        verdict(per_second <= 5.0)
    );
}

async fn churn(updates: usize) {
    let config = sim::churn::Config::new(updates);
    let r = sim::churn::run(&config, live).await;
    println!();
    println!(
        "== churn: {} pushed tokens, alternating two, 4 consumers, 1 draining subscriber",
        r.updates
    );
    println!(
        "live heap after {} updates: {} B; after {}: {} B; growth {} B",
        config.warmup,
        r.live_after_warmup,
        r.updates,
        r.live_after,
        r.live_after - r.live_after_warmup
    );
    println!(
        "deliveries {} (= 4 x updates: {}), events read {}",
        r.deliveries,
        r.deliveries == 4 * r.updates,
        r.events
    );
    println!(
        "wall {:.3} s = {:.2} us per update",
        r.wall.as_secs_f64(),
        r.wall.as_secs_f64() * 1e6 / r.updates as f64
    );
}

//! The whole token path on one machine, in real time.
//!
//! ```sh
//! cargo run --features http --example demo                    # about 41 s
//! cargo run --features http --example demo -- --ttl 6 --lead 3 --cycles 2   # about 8 s
//! ```
//!
//! - A token server on loopback plays the app's backend: it mints real Twilio access tokens for
//!   "alice" with chat, sync, voice and video grants, for requests carrying the session cookie.
//! - An `AccessManager` fetches from it with an `HttpFetcher`, `--lead` seconds before expiry.
//! - Four SDK-like clients (chat, sync, voice, video) take each token only after checking its
//!   signature with the server's current API key and their own grant, as Twilio's services do;
//!   they refuse a token with the service's Twilio error code (`ConsumerError::rejected`).
//! - Key rotation: a quarter of a cycle after refresh 1 (3 s by default), the server rotates its
//!   API key and the services learn the new one. They drop the sessions opened with the old key;
//!   each client reconnects (is registered again), is handed the current token and refuses it:
//!   `ConsumerError::rejected(20107, "signature no longer valid: the API key was rotated")`. The
//!   manager reports each refusal (`ServiceRejected`, action `Refresh`) and fetches at once,
//!   off-schedule (`FetchReason::Rejected { code: 20107 }`); the server signs with the new key
//!   and every client is back on a valid token long before the old one would have expired.
//! - At refresh 2 the server answers 503 twice: the manager keeps the still-valid token, retries
//!   with backoff (0.5 s, then 1 s) and recovers before expiry.
//!
//! It prints a timeline and a summary, and exits 0 when every client got at least two refreshed
//! tokens, the outage was survived (no token ever expired) and every client was on the new key
//! before the old token would have expired; 1 otherwise, 130 on Ctrl-C.

mod clients;
mod rotation;
mod server;
mod tally;

use access_manager::clock::{Clock, SystemClock};
use access_manager::http::HttpFetcher;
use access_manager::{
    AccessManager, Backoff, Event, FetchError, FetchReason, FetchRequest, GrantKind, TokenFetcher,
};
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use clients::SdkClient;
use rotation::Rotation;
use server::{serve, KeyRing, TokenServer};
use tally::{on_accepted, on_event, on_fetch, Tally};

const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
const IDENTITY: &str = "alice";
const SESSION_COOKIE: &str = "session=demo-session-7f3a";
/// How many consecutive requests the outage refuses.
const OUTAGE_REQUESTS: u32 = 2;

// ---------------------------------------------------------------------------------------------
// Options.

struct Options {
    ttl: u64,
    lead: u64,
    cycles: u32,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            ttl: 20,
            lead: 8,
            cycles: 3,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = |name: &str| -> Result<u64, String> {
                let v = args.next().ok_or(format!("{name} needs a value"))?;
                v.parse()
                    .map_err(|_| format!("{name}: not a whole number: {v}"))
            };
            match flag.as_str() {
                "--ttl" => options.ttl = value("--ttl")?,
                "--lead" => options.lead = value("--lead")?,
                "--cycles" => {
                    options.cycles = u32::try_from(value("--cycles")?)
                        .map_err(|_| "--cycles: too large".to_owned())?;
                }
                "-h" | "--help" => {
                    return Err(
                        "usage: demo [--ttl SECS (20)] [--lead SECS (8)] [--cycles N (3)]".into(),
                    )
                }
                other => return Err(format!("unknown argument {other} (try --help)")),
            }
        }
        // The outage costs 0.5 s + 1 s of backoff plus round trips; the lead must cover it.
        // Success means every client got two refreshed tokens: two cycles at least.
        if options.lead < 3 || options.ttl < options.lead + 2 || options.cycles < 2 {
            return Err("need --lead >= 3, --ttl >= lead + 2 and --cycles >= 2".into());
        }
        Ok(options)
    }

    /// The refresh whose requests meet the outage.
    fn outage_refresh(&self) -> u32 {
        2
    }

    /// The key rotates this long after refresh 1 has reached every client: early in the token's
    /// life, so that the old token has most of it left, and the run stays short.
    fn rotation_delay(&self) -> Duration {
        Duration::from_secs(self.ttl - self.lead) / 4
    }
}

/// Seconds since `start` on the demo's clock, for the timeline.
#[derive(Clone, Copy)]
struct Timeline {
    start: SystemTime,
}

impl Timeline {
    fn line(&self, who: &str, what: impl std::fmt::Display) {
        let at = SystemClock
            .now()
            .duration_since(self.start)
            .unwrap_or_default();
        println!("{:>7.2} s  {who:<7}  {what}", at.as_secs_f64());
    }
}

/// Seconds from now until `expires_at` (zero once past).
fn secs_left(expires_at: SystemTime) -> f64 {
    expires_at
        .duration_since(SystemClock.now())
        .unwrap_or_default()
        .as_secs_f64()
}

/// The manager's fetcher: the `HttpFetcher`, telling the timeline why each fetch starts.
struct TracedFetcher {
    http: HttpFetcher,
    started: mpsc::UnboundedSender<(FetchReason, u32)>,
}

#[async_trait::async_trait]
impl TokenFetcher for TracedFetcher {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        let _ = self.started.send((request.reason(), request.attempt()));
        self.http.fetch_token(request).await
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

const CLIENTS: [(&str, GrantKind); 4] = [
    ("chat", GrantKind::Chat),
    ("sync", GrantKind::Sync),
    ("voice", GrantKind::Voice),
    ("video", GrantKind::Video),
];

// One thread, like an app's UI loop: what the demo does between two awaits (the four clients'
// reconnections at the key rotation) reaches the manager as one batch.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let clock = SystemClock;
    let timeline = Timeline { start: clock.now() };

    // The backend.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!(
        "http://{}/token",
        listener.local_addr().expect("local address")
    );
    // Requests: #1 the first token, #2 refresh 1, #3 the fetch after the key rotation, then
    // refresh 2.
    let outage_first = options.outage_refresh() + 2;
    let keys = Arc::new(KeyRing::default());
    let server = Arc::new(TokenServer {
        ttl: Duration::from_secs(options.ttl),
        keys: keys.clone(),
        requests: AtomicU32::new(0),
        outage: outage_first..=outage_first + OUTAGE_REQUESTS - 1,
        refused: AtomicU32::new(0),
        timeline,
    });
    let server_task = tokio::spawn(serve(listener, server.clone()));

    // The manager, fetching over HTTP.
    let http = HttpFetcher::builder(&url)
        .no_proxy() // the server is on this machine, whatever proxy the environment names
        .header("Cookie", SESSION_COOKIE)
        .json_body(&serde_json::json!({ "identity": IDENTITY }))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a valid fetcher");
    let (started, mut fetches) = mpsc::unbounded_channel();
    let fetcher = TracedFetcher { http, started };
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4)).without_jitter();
    let manager = AccessManager::builder()
        .fetcher(fetcher)
        .clock(clock)
        .refresh_ahead(Duration::from_secs(options.lead))
        .backoff(backoff)
        .fetch_timeout(Duration::from_secs(10))
        .build()
        .expect("a tokio runtime");
    let mut events = manager.subscribe();

    // The SDK clients. The manager holds them weakly: `clients` keeps them alive.
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let clients: Vec<Arc<SdkClient>> = CLIENTS
        .iter()
        .map(|&(name, grant)| {
            Arc::new(SdkClient {
                name,
                grant,
                keys: keys.clone(),
                accepted: accepted_tx.clone(),
            })
        })
        .collect();
    let mut ids: Vec<_> = clients.iter().map(|c| manager.register(c)).collect();
    drop(accepted_tx);

    let cycle = options.ttl - options.lead;
    println!("access-manager demo: one identity, four SDK clients, a token server on loopback");
    println!("  token server  POST {url} (cookie session; mints {IDENTITY:?}: chat, sync, voice, video; ttl {} s)", options.ttl);
    println!("  manager       HttpFetcher; refresh {} s before expiry; retry after 0.5 s, doubling to 4 s", options.lead);
    println!(
        "  key rotation  {} s after refresh 1 the server rotates its API key; the clients reconnect",
        options.rotation_delay().as_secs_f64()
    );
    println!(
        "  outage        the server answers 503 to the {OUTAGE_REQUESTS} requests of refresh {}",
        options.outage_refresh()
    );
    // Each cycle, the rotation's head start on its cycle, and the outage's backoff.
    let about = Duration::from_secs(u64::from(options.cycles) * cycle)
        + options.rotation_delay()
        + Duration::from_millis(1500);
    println!(
        "  finish        after {} refreshes and the rotation's (about {:.0} s); Ctrl-C stops early",
        options.cycles,
        about.as_secs_f64()
    );
    println!();
    println!("{:>9}  {:<7}  what", "time", "who");

    // A bound on the whole run, should the manager stall.
    let limit = Duration::from_secs((u64::from(options.cycles) + 2) * options.ttl + 10);
    let watchdog = clock.sleep_until(clock.now() + limit);
    tokio::pin!(watchdog);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let mut tally = Tally::default();
    // The first fetch started at build(): had it finished before subscribe(), its TokenUpdated
    // went to nobody. Take the token from the manager then (on_event skips it if the event follows).
    if let Some(token) = manager.token() {
        let token = token.info();
        on_event(&timeline, &mut tally, Event::TokenUpdated { token });
    }
    let mut rotation_due: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    let mut interrupted = false;
    let mut timed_out = false;
    loop {
        tokio::select! {
            // Events first: a client's acceptance always follows its token's TokenUpdated, and a
            // fetch's start the refusal that caused it.
            biased;
            event = events.recv() => match event {
                Some(event) => on_event(&timeline, &mut tally, event),
                None => break,
            },
            Some((reason, attempt)) = fetches.recv() => on_fetch(&timeline, &mut tally, reason, attempt),
            Some((name, token)) = accepted.recv() => {
                match on_accepted(&timeline, &mut tally, name, token) {
                    // The rotation's token is one more than the scheduled refreshes.
                    Some(number) if number > options.cycles as usize + 1 => break,
                    Some(2) if tally.rotation.is_none() && rotation_due.is_none() => {
                        rotation_due = Some(clock.sleep(options.rotation_delay()));
                    }
                    _ => {}
                }
            }
            () = async { rotation_due.as_mut().expect("armed").await }, if rotation_due.is_some() => {
                rotation_due = None;
                let number = tally.tokens.len();
                tally.rotation = Rotation::start(&timeline, &keys, &manager, &clients, &mut ids, number);
            }
            _ = &mut ctrl_c => {
                interrupted = true;
                timeline.line("demo", "Ctrl-C: shutting down");
                break;
            }
            _ = &mut watchdog => {
                timed_out = true;
                timeline.line("demo", format!("not done after {} s: giving up", limit.as_secs()));
                break;
            }
        }
    }
    manager.shutdown().await;
    server_task.abort();
    timeline.line("manager", "shut down");

    let elapsed = clock
        .now()
        .duration_since(timeline.start)
        .unwrap_or_default();
    let requests = server.requests.load(Ordering::SeqCst);
    let refused = server.refused.load(Ordering::SeqCst);
    let survived = refused == OUTAGE_REQUESTS && tally.recovered && tally.expired == 0;
    let enough = CLIENTS
        .iter()
        .all(|(name, _)| tally.refreshed.get(name).copied().unwrap_or(0) >= 2);
    let rotated = tally
        .rotation
        .as_ref()
        .is_some_and(|r| r.absorbed(CLIENTS.len()));
    let refreshes = tally.tokens.len().saturating_sub(1);

    println!();
    println!("summary after {:.1} s", elapsed.as_secs_f64());
    println!(
        "  tokens            {} (1 initial + {refreshes} refreshes)",
        tally.tokens.len()
    );
    println!("  server requests   {requests} ({refused} answered 503)");
    let outage = match (survived, refused) {
        (true, _) => "survived",
        (false, 0) => "not reached",
        (false, _) => "NOT survived",
    };
    println!(
        "  refresh failures  {} (token kept, expired {} times): outage {outage}",
        tally.refresh_failures, tally.expired
    );
    println!("  consumer failures {}", tally.consumer_failures);
    let rejections: Vec<String> = tally
        .service_rejections
        .iter()
        .map(|((code, action), n)| format!("{n} × {code} → {action}"))
        .collect();
    println!(
        "  service refusals  {}; fetches at once: {}",
        if rejections.is_empty() {
            "none".to_owned()
        } else {
            rejections.join(", ")
        },
        tally.fetches_on_refusal
    );
    let rotation = tally
        .rotation
        .as_ref()
        .map_or("not reached".to_owned(), |r| {
            r.summary(timeline.start, CLIENTS.len())
        });
    println!("  key rotation      {rotation}");
    println!();
    println!("  {:<8} {:>10} {:>10}", "client", "delivered", "refreshed");
    for (name, _) in CLIENTS {
        println!(
            "  {:<8} {:>10} {:>10}",
            name,
            tally.deliveries.get(name).copied().unwrap_or(0),
            tally.refreshed.get(name).copied().unwrap_or(0)
        );
    }
    drop(clients);

    if interrupted {
        return ExitCode::from(130);
    }
    if timed_out || !survived || !enough || !rotated {
        println!();
        println!(
            "FAILED: every client needs >= 2 refreshed tokens, the outage must be survived, and \
             every client must be on the new key before the old token expires"
        );
        return ExitCode::FAILURE;
    }
    println!();
    println!(
        "ok: every client got {} refreshed tokens ({} on schedule, 1 after the key rotation); \
         neither the outage nor the rotation cost an expiry",
        options.cycles + 1,
        options.cycles
    );
    ExitCode::SUCCESS
}

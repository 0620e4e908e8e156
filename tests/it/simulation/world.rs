//! One history: a fresh runtime, a manager on a `ManualClock`, its simulated plugins, and the steps
//! the seed picks (operations and faults), each followed by a quiet system and the checks.

use super::capture::{Capture, Secrets};
use super::fetcher::{Backend, FetchLog, SimFetcher};
use super::model::{
    install_of, rel, Answer, Done, Entry, Install, Outcome, Pending, StepAsks, Tally, Violation,
};
use super::ops::{ALL_OPS, HEALTHY_OPS};
use super::rng::{Rng, SharedRng};
use super::store::{SimStore, StoreKind};
use super::tokens::{Minter, Spec};
use crate::common::{secs, ACCOUNT, T0};
use access_manager::clock::{Clock, ManualClock};
use access_manager::{AccessManager, AccessToken, Backoff, Event, Events, FetchLimiter};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most deadlines one passage of time visits one by one.
const MAX_HOPS: usize = 2000;

/// A history's configuration, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Profile {
    pub healthy: bool,
    pub backend: Option<Backend>,
    pub refresh_ahead: Duration,
    pub fetch_timeout: Duration,
    pub consumer_timeout: Duration,
    pub backoff: Backoff,
    pub refresh_jitter: Duration,
    pub event_capacity: usize,
    pub initial: bool,
    /// A `FetchLimiter` the manager shares: slots, and a rate (fetches per second).
    pub limiter: Option<(usize, Option<u32>)>,
    /// Only with an initial token: nothing is loaded, so the first fetch waits for no store.
    pub store: Option<StoreKind>,
}

impl Profile {
    fn draw(rng: &mut Rng) -> Profile {
        let kind = rng.weighted(&[(25, 0), (10, 1), (45, 2), (20, 3)]);
        let healthy = kind == 0;
        let ahead = if healthy {
            rng.pick(&[60, 180, 300])
        } else {
            rng.pick(&[10, 30, 60, 180, 300])
        };
        let refresh_ahead = secs(ahead);
        let fetch_timeout = if healthy {
            secs(rng.range(2, ahead / 2))
        } else {
            secs(rng.pick(&[2, 5, 10, 30]))
        };
        let backend = match kind {
            0 => Some(Backend::Healthy {
                // Some backends answer at once (a fetcher that mints locally).
                max_latency: if rng.chance(30) {
                    Duration::ZERO
                } else {
                    (fetch_timeout / 2).min(refresh_ahead / 4)
                },
            }),
            1 => None,
            2 => Some(Backend::Flaky),
            _ => Some(Backend::Hostile),
        };
        let backoff = match rng.below(3) {
            0 => Backoff::default(),
            1 => Backoff::new(
                rng.duration(Duration::from_millis(100), secs(2)),
                rng.duration(secs(5), secs(60)),
            ),
            _ => Backoff::new(
                rng.duration(Duration::from_millis(100), secs(2)),
                rng.duration(secs(5), secs(60)),
            )
            .without_jitter(),
        };
        Profile {
            healthy,
            backend,
            refresh_ahead,
            fetch_timeout,
            consumer_timeout: secs(rng.pick(&[1, 3, 10])),
            backoff,
            refresh_jitter: if rng.chance(30) {
                rng.duration(Duration::ZERO, refresh_ahead / 4)
            } else {
                Duration::ZERO
            },
            event_capacity: 256,
            initial: rng.chance(50),
            limiter: None,
            store: None,
        }
    }

    /// A third of the histories share a limiter (seeds ≡ 1 mod 3, drawn from a generator of
    /// their own: every other history, the regression seeds' among them, stays as it was found).
    fn draw_limiter(seed: u64) -> Option<(usize, Option<u32>)> {
        if seed % 3 != 1 {
            return None;
        }
        let mut rng = Rng::new(seed ^ 0x11_3173);
        let slots = rng.range(1, 3) as usize;
        let rate = rng.chance(50).then(|| rng.range(1, 5) as u32);
        Some((slots, rate))
    }
}

pub struct World {
    pub steps: usize,
    pub step: usize,
    pub history: Vec<String>,
    pub rng: Rng,
    pub plugin_rng: SharedRng,
    pub clock: ManualClock,
    pub profile: Profile,
    pub manager: Option<AccessManager>,
    pub events: Events,
    pub lagger: Events,
    pub event_log: Vec<Event>,
    pub lag_cursor: usize,
    pub inbox: Vec<Event>,
    pub fetch: Option<Arc<FetchLog>>,
    pub store: Option<Arc<SimStore>>,
    /// Per `sign_out()` answered `Ok`: the store's changes then, and the installs before the call.
    pub cleared_marks: Vec<(usize, usize)>,
    /// The store's writes `check_store` has seen, and the marks it has checked.
    pub store_checked: usize,
    pub marks_checked: usize,
    /// Per `sign_out()` whose clear has not begun: the store's count of calls begun once it has
    /// (the manager starts it on a pool thread, a moment after the command).
    pub clears_due: Vec<u64>,
    pub fetch_cursor: usize,
    /// Fetch calls before this one brought a token that became current, or never will.
    pub fetch_matched: usize,
    pub limiter: Option<FetchLimiter>,
    /// A fetch waited for a slot of the limiter at the last check.
    pub slot_waited: bool,
    /// Fetches started that were cancelled while they waited for a slot.
    pub never_reached: u64,
    pub consumers: Vec<Entry>,
    pub minter: Arc<Minter>,
    pub secrets: Secrets,
    pub capture: Capture,
    pub results: Arc<Mutex<Vec<Done>>>,
    pub pending: BTreeMap<u64, Pending>,
    pub next_op: u64,
    pub asks: StepAsks,
    pub session: String,
    pub account: &'static str,
    // The model.
    pub installs: Vec<Install>,
    /// The text of every token in `installs`, for a lookup that does not scan them all.
    pub installed_texts: HashSet<String>,
    pub current: Option<usize>,
    pub offered: HashSet<String>,
    pub halted: bool,
    pub strike: u64,
    pub closed: bool,
    pub expect_install: Vec<String>,
    pub signed_out_step: Option<usize>,
    pub sign_outs_waiting: usize,
    pub shutdown_issued: bool,
    pub failures_by_name: BTreeMap<String, u64>,
    pub healthy_void: bool,
    pub tally: Tally,
    pub last_check_at: Option<SystemTime>,
    /// How many quiet systems were checked.
    pub quiets: u64,
    /// Events and consumer calls go into the history too (replaying one seed).
    pub verbose: bool,
}

pub async fn run(seed: u64, steps: usize, capture: Capture, verbose: bool) -> Outcome {
    let mut world = World::new(seed, steps, capture, verbose);
    let result = world.play().await;
    world.tally.healthy = u64::from(world.profile.healthy);
    world.tally.stores = u64::from(world.store.is_some());
    world.tally.installs = world.installs.len() as u64;
    Outcome {
        tally: world.tally,
        history: world.history.clone(),
        steps: world.step + 1,
        violation: result.err().map(|message| Violation {
            seed,
            step: world.step,
            description: world
                .history
                .iter()
                .rev()
                .find(|line| line.starts_with('#'))
                .cloned()
                .unwrap_or_default(),
            message,
            history: world.history.clone(),
        }),
    }
}

/// However a history ends (a violation, a panic), calls hanging in its store return: the runtime
/// waits for its pool threads when it is dropped.
impl Drop for World {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            store.open_all();
        }
    }
}

impl World {
    fn new(seed: u64, steps: usize, capture: Capture, verbose: bool) -> World {
        let mut rng = Rng::new(seed);
        let mut profile = Profile::draw(&mut rng);
        profile.limiter = Profile::draw_limiter(seed);
        // The store draws from a generator of its own: the history's draws stay as they were.
        let mut store_rng = Rng::new(seed ^ 0x5703_E5A1_0000_0001);
        if profile.initial {
            profile.store = SimStore::draw_kind(&mut store_rng);
        }
        let plugin_rng = rng.fork();
        let clock =
            ManualClock::new(UNIX_EPOCH + secs(T0) + Duration::from_millis(rng.below(1000)));
        let secrets = Secrets::default();
        let minter = Arc::new(Minter::new(secrets.clone()));
        let mut builder = AccessManager::builder()
            .clock(clock.clone())
            .refresh_ahead(profile.refresh_ahead)
            .fetch_timeout(profile.fetch_timeout)
            .consumer_timeout(profile.consumer_timeout)
            .backoff(profile.backoff)
            .jitter_seed(rng.next_u64())
            .refresh_jitter(profile.refresh_jitter)
            .event_capacity(profile.event_capacity);
        let limiter = profile.limiter.map(|(slots, rate)| {
            let mut limiter = FetchLimiter::builder(std::num::NonZeroUsize::new(slots).unwrap())
                .clock(clock.clone());
            if let Some(rate) = rate.and_then(std::num::NonZeroU32::new) {
                limiter = limiter.rate(rate);
            }
            limiter.build()
        });
        if let Some(limiter) = &limiter {
            builder = builder.fetch_limiter(limiter);
        }
        let store = profile
            .store
            .map(|kind| SimStore::new(kind, clock.clone(), store_rng));
        if let Some(store) = &store {
            builder = builder.store(store.clone());
        }
        let fetch = profile.backend.map(|backend| {
            let log = Arc::new(FetchLog::default());
            *log.identity.lock().unwrap() = "alice".into();
            *log.account.lock().unwrap() = ACCOUNT;
            builder = std::mem::take(&mut builder).fetcher(SimFetcher {
                log: log.clone(),
                backend,
                refresh_ahead: profile.refresh_ahead,
                fetch_timeout: profile.fetch_timeout,
                clock: clock.clone(),
                rng: plugin_rng.clone(),
                minter: minter.clone(),
            });
            log
        });
        let mut offered = HashSet::new();
        let mut installs = Vec::new();
        let mut installed_texts = HashSet::new();
        if profile.initial {
            let left = if profile.healthy {
                rng.range(2 * profile.refresh_ahead.as_secs() + 10, 7200)
            } else {
                rng.range(1, 7200)
            };
            let jwt = minter.mint(&Spec::living("alice", clock.now(), rng.range(0, 60), left));
            offered.insert(jwt.clone());
            let token = AccessToken::parse(&jwt).unwrap();
            installed_texts.insert(jwt.clone());
            installs.push(install_of(1, token, profile.refresh_ahead));
            builder = builder.initial_token(jwt);
        }
        let (manager, events) = builder.build_with_events().expect("the profile is valid");
        let lagger = manager.subscribe();
        if let Some(log) = &fetch {
            log.manager.set(manager.downgrade()).unwrap();
        }
        World {
            steps,
            step: 0,
            history: Vec::new(),
            rng,
            plugin_rng,
            clock,
            manager: Some(manager),
            events,
            lagger,
            event_log: Vec::new(),
            lag_cursor: 0,
            inbox: Vec::new(),
            fetch,
            store,
            cleared_marks: Vec::new(),
            store_checked: 0,
            marks_checked: 0,
            clears_due: Vec::new(),
            fetch_cursor: 0,
            fetch_matched: 0,
            limiter,
            slot_waited: false,
            never_reached: 0,
            consumers: Vec::new(),
            minter,
            secrets,
            capture,
            results: Arc::default(),
            pending: BTreeMap::new(),
            next_op: 0,
            asks: StepAsks::default(),
            session: "alice".into(),
            account: ACCOUNT,
            current: (!installs.is_empty()).then_some(0),
            installs,
            installed_texts,
            offered,
            halted: false,
            strike: 0,
            closed: false,
            expect_install: Vec::new(),
            signed_out_step: None,
            sign_outs_waiting: 0,
            shutdown_issued: false,
            failures_by_name: BTreeMap::new(),
            healthy_void: false,
            tally: Tally::default(),
            last_check_at: None,
            quiets: 0,
            verbose,
            profile,
        }
    }

    async fn play(&mut self) -> Result<(), String> {
        self.history.push(format!(
            "setup {:?} (clock at {})",
            self.profile,
            rel(self.clock.now())
        ));
        self.begin_step();
        self.quiet_and_check().await?;
        for step in 1..self.steps {
            self.step = step;
            let ops = if self.profile.healthy {
                HEALTHY_OPS
            } else {
                ALL_OPS
            };
            let op = self.rng.weighted(ops);
            self.begin_step();
            self.apply(op).await?;
        }
        self.step = self.steps;
        self.finish().await
    }

    pub fn note(&mut self, what: String) {
        self.history.push(format!(
            "#{} at {}: {what}",
            self.step,
            rel(self.clock.now())
        ));
    }

    fn begin_step(&mut self) {
        self.asks = StepAsks {
            halted_at_start: self.halted,
            ..StepAsks::default()
        };
    }

    pub fn manager(&self) -> &AccessManager {
        self.manager
            .as_ref()
            .expect("a handle is held until the end")
    }

    pub fn current_install(&self) -> Option<&Install> {
        self.current.map(|i| &self.installs[i])
    }

    /// The time passes by `by`, the manager running all along: the clock moves from one pending
    /// deadline to the next, with a quiet system and the checks at each.
    pub async fn pass(&mut self, by: Duration) -> Result<(), String> {
        let target = self.clock.now() + by;
        for _ in 0..MAX_HOPS {
            let now = self.clock.now();
            if now >= target {
                return Ok(());
            }
            let to = self
                .clock
                .next_deadline()
                .filter(|&next| next > now && next < target)
                .unwrap_or(target);
            self.clock.advance_to(to);
            self.begin_step();
            self.quiet_and_check().await?;
        }
        // Something wakes too often to follow: finish in one go (no healthy guarantee then).
        self.healthy_void = true;
        self.tally.passes_cut_short += u64::from(self.profile.healthy);
        self.clock.advance_to(target);
        self.begin_step();
        self.quiet_and_check().await
    }

    pub fn spawn(
        &mut self,
        pending: Pending,
        call: impl std::future::Future<Output = Answer> + Send + 'static,
    ) {
        let id = self.next_op;
        self.next_op += 1;
        self.pending.insert(id, pending);
        let results = self.results.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let answer = call.await;
            results.lock().unwrap().push(Done {
                id,
                at: clock.now(),
                answer,
            });
        });
    }

    /// The end of the history: shutdown or the last handle dropped, then the checks of a stopped
    /// manager.
    async fn finish(&mut self) -> Result<(), String> {
        self.begin_step();
        // Calls hanging in the store return (the runtime waits for its pool threads at its end);
        // a stop would otherwise wait out their deadlines.
        if let Some(store) = &self.store {
            store.open_all();
        }
        if self.rng.chance(70) {
            self.note("shutdown()".into());
            self.shutdown_issued = true;
            let manager = self.manager().clone();
            self.spawn(Pending::Shutdown, async move {
                manager.shutdown().await;
                Answer::Unit
            });
            self.quiet_and_check().await?;
            if !self.closed {
                return Err("shutdown() did not close the manager".into());
            }
            self.after_shutdown_calls().await?;
            self.manager = None;
        } else {
            self.note("the app drops its last handle".into());
            self.shutdown_issued = true;
            self.manager = None;
            for _ in 0..300 {
                self.quiet_and_check().await?;
                if self.closed {
                    break;
                }
                let holders = self.pending.values().filter(|p| p.holds_handle()).count();
                // A manager with a store waits for its call in flight (up to the store's
                // deadline) before it closes.
                if holders == 0 && self.store.is_none() {
                    return Err("the last handle is gone but the manager did not stop".into());
                }
                // Calls still running hold handles: let their fetches time out.
                let to = self
                    .clock
                    .next_deadline()
                    .unwrap_or(self.clock.now() + secs(1));
                self.clock
                    .advance_to(to.max(self.clock.now() + Duration::from_millis(1)));
            }
            if !self.closed {
                return Err("the manager never stopped after the last handle was dropped".into());
            }
        }
        self.check_stopped().await
    }
}

//! Helpers shared by the manager tests: a fake-clock start, token minting, a scripted fetcher the
//! test answers call by call, and a recording consumer.
#![allow(dead_code, unreachable_pub)]

use access_manager::clock::ManualClock;
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::{
    AccessToken, AccessTokenBuilder, ConsumerError, Event, Events, FetchError, FetchRequest,
    GrantKind, TokenConsumer, TokenFetcher, TokenInfo,
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, Notify};

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const OTHER_ACCOUNT: &str = "AC99999999999999999999999999999999";
pub const KEY: &str = "SKfedcba9876543210fedcba9876543210";
pub const SECRET: &str = "test-secret-0123456789abcdef";
/// The fake clock's start: 2023-11-14T22:13:20Z.
pub const T0: u64 = 1_700_000_000;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn clock() -> ManualClock {
    ManualClock::new(at(T0))
}

/// A manager on `clock` holding `jwt`, with nothing else configured.
pub fn manager_holding(clock: &ManualClock, jwt: &str) -> access_manager::AccessManager {
    access_manager::AccessManager::builder()
        .clock(clock.clone())
        .initial_token(jwt)
        .build()
        .unwrap()
}

pub fn builder(identity: &str, iat: u64, ttl: u64) -> AccessTokenBuilder {
    AccessToken::builder(ACCOUNT, KEY, SECRET)
        .identity(identity)
        .issued_at(at(iat))
        .ttl(secs(ttl))
        .grant(ChatGrant::default())
        .grant(SyncGrant::default())
        .grant(VoiceGrant::default())
        .grant(VideoGrant::default())
}

/// A token for `identity` issued at `iat` living `ttl` seconds, with chat, sync, voice and video.
pub fn mint(identity: &str, iat: u64, ttl: u64) -> String {
    builder(identity, iat, ttl).to_jwt().unwrap()
}

/// Whether an event's description of a token is of the token `jwt` (events carry no token text).
pub fn is_of(info: &TokenInfo, jwt: &str) -> bool {
    info.describes(&AccessToken::parse(jwt).expect("a token"))
}

/// The signature segment of a JWT.
pub fn signature(jwt: &str) -> &str {
    jwt.rsplit('.').next().unwrap()
}

/// Lets every ready task run (the tests use a current-thread runtime, so this is deterministic).
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// The next event (waits; the test fails by hanging only if the manager is wrong).
pub async fn next(events: &mut Events) -> Event {
    events.recv().await.expect("the manager closed early")
}

/// Drains the events waiting now.
pub async fn drain(events: &mut Events) -> Vec<Event> {
    settle().await;
    std::iter::from_fn(|| events.try_recv()).collect()
}

pub fn kind(e: &Event) -> &'static str {
    match e {
        Event::TokenUpdated { .. } => "updated",
        Event::TokenWillExpire { .. } => "will_expire",
        Event::TokenExpired { .. } => "expired",
        Event::RefreshFailed { .. } => "refresh_failed",
        Event::TokenRejected { .. } => "rejected",
        Event::ConsumerFailed { .. } => "consumer_failed",
        Event::ServiceRejected { .. } => "service_rejected",
        Event::SignedOut => "signed_out",
        Event::Lagged { .. } => "lagged",
        Event::ClockSkewSuspected { .. } => "clock_skew",
        Event::Closed => "closed",
        _ => "other",
    }
}

pub fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(kind).collect()
}

// ---------------------------------------------------------------------------------------------
// Scripted fetcher

/// One fetch the test is asked to answer.
pub struct Call {
    pub request: FetchRequest,
    answer: oneshot::Sender<Result<String, FetchError>>,
}

impl Call {
    pub fn answer(self, result: Result<String, FetchError>) {
        let _ = self.answer.send(result);
    }
    pub fn ok(self, jwt: String) {
        self.answer(Ok(jwt));
    }
    pub fn fail(self, msg: &str) {
        self.answer(Err(FetchError::transient(msg.to_string())));
    }
    /// Whether the manager has given up on this fetch (dropped the future waiting for it).
    pub fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }
}

/// A fetcher whose every call the test answers by hand, through [`Calls`].
pub struct ScriptedFetcher {
    calls: mpsc::UnboundedSender<Call>,
    count: Arc<AtomicUsize>,
    dropped: Arc<Notify>,
    dropped_flag: Arc<AtomicUsize>,
}

pub struct Calls {
    rx: mpsc::UnboundedReceiver<Call>,
    pub count: Arc<AtomicUsize>,
    pub dropped: Arc<Notify>,
    dropped_flag: Arc<AtomicUsize>,
}

pub fn scripted() -> (ScriptedFetcher, Calls) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(Notify::new());
    let flag = Arc::new(AtomicUsize::new(0));
    (
        ScriptedFetcher {
            calls: tx,
            count: count.clone(),
            dropped: dropped.clone(),
            dropped_flag: flag.clone(),
        },
        Calls {
            rx,
            count,
            dropped,
            dropped_flag: flag,
        },
    )
}

impl Calls {
    /// The next fetch the manager makes.
    pub async fn next(&mut self) -> Call {
        self.rx.recv().await.expect("fetcher dropped")
    }
    /// A fetch already made, if any (after letting the manager run).
    pub async fn try_next(&mut self) -> Option<Call> {
        settle().await;
        self.rx.try_recv().ok()
    }
    pub fn made(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    pub fn fetcher_dropped(&self) -> bool {
        self.dropped_flag.load(Ordering::SeqCst) > 0
    }
    /// Waits until the manager has dropped the fetcher (its task is gone).
    pub async fn wait_fetcher_dropped(&self) {
        loop {
            let n = self.dropped.notified();
            if self.fetcher_dropped() {
                return;
            }
            n.await;
        }
    }
}

impl Drop for ScriptedFetcher {
    fn drop(&mut self) {
        self.dropped_flag.fetch_add(1, Ordering::SeqCst);
        self.dropped.notify_waiters();
    }
}

#[async_trait]
impl TokenFetcher for ScriptedFetcher {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        let (answer, answered) = oneshot::channel();
        if self.calls.send(Call { request, answer }).is_err() {
            return Err(FetchError::transient("test ended"));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(FetchError::transient("test dropped the call")))
    }
}

// ---------------------------------------------------------------------------------------------
// Recording consumer

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Fail,
    Panic,
    /// Waits for `release()` before accepting.
    Gate,
    /// Never answers.
    Hang,
    /// Answers that its service refused the token with this Twilio error code.
    Refuse(u32),
}

pub struct Recorder {
    pub name: String,
    pub required: Option<GrantKind>,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<String>>,
    calls: AtomicUsize,
    signed_outs: AtomicUsize,
    changed: Notify,
    gate: Notify,
}

impl Recorder {
    pub fn new(name: &str, mode: Mode) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.into(),
            required: None,
            mode: Mutex::new(mode),
            seen: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            signed_outs: AtomicUsize::new(0),
            changed: Notify::new(),
            gate: Notify::new(),
        })
    }
    /// How many times the manager called `signed_out`.
    pub fn signed_outs(&self) -> usize {
        self.signed_outs.load(Ordering::SeqCst)
    }
    pub fn requiring(name: &str, kind: GrantKind) -> Arc<Recorder> {
        Arc::new(Recorder {
            required: Some(kind),
            ..Arc::try_unwrap(Recorder::new(name, Mode::Accept))
                .ok()
                .unwrap()
        })
    }
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    /// Tokens this consumer accepted, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    /// How many times the manager called it (accepted or not).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// Lets one gated call through.
    pub fn release(&self) {
        self.gate.notify_one();
    }
    /// Waits until this consumer has been called `n` times in all.
    pub async fn wait_calls(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.calls() >= n {
                return;
            }
            changed.await;
        }
    }
}

#[async_trait]
impl TokenConsumer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn required_grant(&self) -> Option<GrantKind> {
        self.required
    }
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Accept => {}
            Mode::Fail => return Err(ConsumerError::new("refused by the test")),
            Mode::Panic => panic!("consumer {} panics on purpose", self.name),
            Mode::Gate => self.gate.notified().await,
            Mode::Hang => std::future::pending::<()>().await,
            Mode::Refuse(code) => {
                return Err(ConsumerError::rejected(
                    code,
                    "the service refused the token",
                ))
            }
        }
        self.seen.lock().unwrap().push(token.as_str().to_string());
        self.changed.notify_waiters();
        Ok(())
    }
    async fn signed_out(&self) {
        self.signed_outs.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------------
// A consumer whose record outlives it

/// What a [`Detached`] consumer did, kept by the test after the consumer itself is dropped.
#[derive(Default)]
pub struct Trace {
    seen: Mutex<Vec<String>>,
    calls: AtomicUsize,
    dropped: AtomicUsize,
    changed: Notify,
    gate: Notify,
}

impl Trace {
    /// Tokens the consumer accepted, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    /// How many times the manager called it.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// Whether the consumer has been dropped (by whoever held it last).
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst) > 0
    }
    /// Lets one gated call through.
    pub fn release(&self) {
        self.gate.notify_one();
    }
    /// Waits until the consumer has been called `n` times in all.
    pub async fn wait_calls(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.calls() >= n {
                return;
            }
            changed.await;
        }
    }
    /// Waits until the consumer has been dropped.
    pub async fn wait_dropped(&self) {
        loop {
            let changed = self.changed.notified();
            if self.dropped() {
                return;
            }
            changed.await;
        }
    }
}

/// A consumer that records into a [`Trace`] the test keeps, so the test can drop the consumer and
/// still see whether the manager called it. Optionally gated (each call waits for
/// `Trace::release`) and optionally panicking in `Drop`.
pub struct Detached {
    name: String,
    trace: Arc<Trace>,
    gated: bool,
    panic_on_drop: bool,
}

impl Detached {
    pub fn new(name: &str) -> (Arc<Detached>, Arc<Trace>) {
        Detached::with(name, false, false)
    }
    pub fn with(name: &str, gated: bool, panic_on_drop: bool) -> (Arc<Detached>, Arc<Trace>) {
        let trace = Arc::new(Trace::default());
        let consumer = Arc::new(Detached {
            name: name.into(),
            trace: trace.clone(),
            gated,
            panic_on_drop,
        });
        (consumer, trace)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.trace.dropped.fetch_add(1, Ordering::SeqCst);
        self.trace.changed.notify_waiters();
        if self.panic_on_drop && !std::thread::panicking() {
            panic!("consumer {} panics when dropped, on purpose", self.name);
        }
    }
}

#[async_trait]
impl TokenConsumer for Detached {
    fn name(&self) -> &str {
        &self.name
    }
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        self.trace.calls.fetch_add(1, Ordering::SeqCst);
        self.trace.changed.notify_waiters();
        if self.gated {
            self.trace.gate.notified().await;
        }
        self.trace
            .seen
            .lock()
            .unwrap()
            .push(token.as_str().to_string());
        self.trace.changed.notify_waiters();
        Ok(())
    }
}

/// The `ConsumerFailed` events among `events`, as (consumer, error).
pub fn consumer_failures(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ConsumerFailed { consumer, error } => Some((consumer.clone(), error.clone())),
            _ => None,
        })
        .collect()
}

/// A manager on `clock` fetching through `fetcher`, with exact (jitter-free) backoff.
pub fn fetching(
    clock: &ManualClock,
    fetcher: impl access_manager::TokenFetcher,
) -> access_manager::AccessManagerBuilder {
    access_manager::AccessManager::builder()
        .clock(clock.clone())
        .fetcher(fetcher)
        .backoff(access_manager::Backoff::default().without_jitter())
}

/// `manager.refresh()` on a task of its own, so that the test can answer the fetch meanwhile.
pub fn spawn_refresh(
    manager: &access_manager::AccessManager,
) -> tokio::task::JoinHandle<Result<AccessToken, access_manager::RefreshError>> {
    let manager = manager.clone();
    tokio::spawn(async move { manager.refresh().await })
}

/// `n` tasks asking for a token at once: the even ones through `refresh()`, the odd ones through
/// `fresh_token(min_remaining)`.
pub fn spawn_refreshers(
    manager: &access_manager::AccessManager,
    n: usize,
    min_remaining: Duration,
) -> Vec<tokio::task::JoinHandle<Result<AccessToken, access_manager::RefreshError>>> {
    (0..n)
        .map(|i| {
            let m = manager.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    m.refresh().await
                } else {
                    m.fresh_token(min_remaining).await
                }
            })
        })
        .collect()
}

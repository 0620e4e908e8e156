//! Token lifecycle for realtime apps: one short-lived Twilio access token, kept valid and handed to
//! every SDK client.
//!
//! One multi-grant access token authenticates all of an app's Twilio SDKs (chat, sync, voice,
//! video). Before it expires the app must get a new one from its backend and give it to every SDK,
//! or they disconnect. An [`AccessManager`] does that whole job for one identity: it holds the
//! token (lock-free reads), runs its expiry timers on an injectable [`Clock`](clock::Clock), calls
//! the app's async [`TokenFetcher`] in time (one fetch in flight, a timeout, backoff with jitter),
//! and fans each new token out to every registered [`TokenConsumer`], isolating the slow and the
//! broken. A valid token is never traded for an error. The crate also parses, verifies and mints
//! tokens ([`AccessToken`]), so one dependency serves the whole token path.
//!
//! # A tour of access-manager
//!
//! ## The one-page picture
//!
//! ```text
//!    app's backend (HTTP)            AccessManager (one per identity)          SDK clients
//!    ────────────────────      ┌──────────────────────────────────────────┐    ───────────────────
//!     TokenFetcher  ◀── fetch ─┤ the manager's task: one timer, one fetch │
//!    (your plugin,             │ at a time, retry with backoff, all on a  │─ update_token ─▶ chat
//!     HttpFetcher)  ── jwt ──▶ │ Clock; holds the current AccessToken     │─ update_token ─▶ sync
//!                              │ (lock-free read) and its generation      │─ update_token ─▶ voice
//!    app code ── update_token ▶│ fan-out: per-consumer delivery, latest   │─ update_token ─▶ video
//!             ◀── events ──────┤ wins, isolated failures                  │
//!                              └──────────────────────────────────────────┘
//! ```
//!
//! Data flows one way. A token's text (a JWT) enters from the fetcher or from
//! [`update_token`](AccessManager::update_token), is parsed and validated once into an
//! [`AccessToken`], becomes the current token, and leaves as deliveries to the consumers and as
//! [`Event`]s. Only the manager's task changes its state; every method of the handle either reads
//! what the task published or sends it a command. The task lives as long as the handles: it stops
//! on [`shutdown`](AccessManager::shutdown) or when the last [`AccessManager`] is dropped.
//!
//! ## Which type to reach for
//!
//! | you want to | reach for |
//! |---|---|
//! | hold a user's token, refresh it in time, give it to the SDKs | [`AccessManager`], from [`AccessManager::builder`] ([`AccessManagerBuilder`]) |
//! | get tokens from your backend | [`HttpFetcher`] (feature `http`), or your own [`TokenFetcher`], or an async closure through [`fetcher_fn`] |
//! | say why a fetch failed, and whether to retry | [`FetchError::transient`], [`FetchError::permanent`], [`FetchError::with_retry_after`] |
//! | hand each new token to an SDK client | implement [`TokenConsumer`]; [`register`](AccessManager::register) it (held weakly) |
//! | tell the manager a service refused the token | [`ConsumerError::rejected`] from a consumer, or [`report_service_error`](AccessManager::report_service_error); the answer is a [`ServiceAction`] |
//! | read the current token | [`token`](AccessManager::token), or [`fresh_token`](AccessManager::fresh_token) for one with time left |
//! | watch what happens, log it, show it | [`subscribe`](AccessManager::subscribe) → [`Events`] of [`Event`]; [`stats`](AccessManager::stats) → [`Stats`] |
//! | call the manager from inside a plugin | a [`WeakAccessManager`], from [`downgrade`](AccessManager::downgrade) |
//! | switch users, react to a wake from sleep | [`sign_out`](AccessManager::sign_out), [`resume`](AccessManager::resume) |
//! | keep the token across restarts | [`store::FileTokenStore`], or your own [`store::TokenStore`] |
//! | tune retries; cap fetches across many managers | [`Backoff`]; [`FetchLimiter`] |
//! | test your app's token handling without waiting | [`clock::ManualClock`] |
//! | parse, check or inspect a token | [`AccessToken::parse`], [`AccessToken::verify`], [`AccessToken::validate_at`]; [`TokenError::code`] is Twilio's error code |
//! | mint tokens (your backend, your tests) | [`AccessToken::builder`] ([`AccessTokenBuilder`]), with the grants of [`grants`] |
//!
//! ## A whole app
//!
//! The fetcher here mints tokens itself; yours calls your backend (or use [`HttpFetcher`]).
//!
//! ```
//! use access_manager::grants::{ChatGrant, VoiceGrant};
//! use access_manager::{async_trait, fetcher_fn, AccessManager, AccessToken, ConsumerError,
//!                      Event, FetchError, GrantKind, TokenConsumer};
//! use std::sync::Arc;
//! use tokio::sync::mpsc;
//!
//! /// An SDK client: it takes every new token (here it reports which one it got).
//! struct Sdk { name: &'static str, grant: GrantKind, got: mpsc::UnboundedSender<String> }
//!
//! #[async_trait] // re-exported: no extra dependency
//! impl TokenConsumer for Sdk {
//!     fn name(&self) -> &str { self.name }
//!     fn required_grant(&self) -> Option<GrantKind> { Some(self.grant) }
//!     async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
//!         let who = token.identity().unwrap_or_default();
//!         self.got.send(format!("{} for {who}", self.name)).map_err(ConsumerError::new)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fetcher = fetcher_fn(|_request| async {
//!     AccessToken::builder("AC0123456789abcdef0123456789abcdef",
//!                          "SKfedcba9876543210fedcba9876543210", "api-secret")
//!         .identity("alice")
//!         .grant(ChatGrant::default())
//!         .grant(VoiceGrant::default())
//!         .to_jwt()
//!         .map_err(FetchError::permanent)
//! });
//! let (manager, mut events) = AccessManager::builder().fetcher(fetcher).build_with_events()?;
//!
//! let (got, mut deliveries) = mpsc::unbounded_channel();
//! let sdks = [("chat", GrantKind::Chat), ("voice", GrantKind::Voice)]
//!     .map(|(name, grant)| Arc::new(Sdk { name, grant, got: got.clone() }));
//! for sdk in &sdks {
//!     manager.register(sdk); // held weakly: drop the Arc to unregister
//! }
//!
//! let Some(Event::TokenUpdated { .. }) = events.recv().await else { panic!("no token") };
//! assert_eq!(manager.identity().as_deref(), Some("alice"));
//! let mut got = vec![deliveries.recv().await.unwrap(), deliveries.recv().await.unwrap()];
//! got.sort();
//! assert_eq!(got, ["chat for alice", "voice for alice"]);
//! manager.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! From then on the manager fetches 180 s before expiry
//! ([`refresh_ahead`](AccessManagerBuilder::refresh_ahead)), retries failures with backoff while
//! keeping the valid token, and delivers each new token to every SDK.
//!
//! ## Time, and testing with `ManualClock`
//!
//! Every timer of the manager (expiry, refresh, fetch and consumer timeouts, backoff) runs on its
//! clock. A clock gives two kinds of time: wall time judges tokens, elapsed time runs timeouts,
//! backoff and spacing, so a wall-clock change neither stretches nor shortens them (the [`clock`]
//! module explains both). [`clock::SystemClock`] is the default; in tests, give the manager a
//! [`clock::ManualClock`] and move time yourself: nothing waits for real.
//!
//! ```
//! use access_manager::clock::{Clock, ManualClock};
//! use access_manager::{AccessManager, AccessToken, Event};
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
//! let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
//!                                "SKfedcba9876543210fedcba9876543210", "api-secret")
//!     .identity("alice")
//!     .issued_at(clock.now())
//!     .ttl(Duration::from_secs(600))
//!     .to_jwt()?;
//! let (manager, mut events) = AccessManager::builder()
//!     .clock(clock.clone())
//!     .initial_token(jwt)
//!     .build_with_events()?;
//!
//! clock.advance(Duration::from_secs(600 - 180)); // into the refresh window
//! assert!(matches!(events.recv().await, Some(Event::TokenWillExpire { .. })));
//! clock.advance(Duration::from_secs(180)); // past expiry
//! assert!(matches!(events.recv().await, Some(Event::TokenExpired { .. })));
//! assert!(manager.is_expired());
//! # Ok(()) }
//! ```
//!
//! ## What the manager promises
//!
//! The manager's behaviour is a numbered list, each line checked by a test: what an update does
//! with a bad, a repeated or a new token; the order of events; when and how it fetches, retries and
//! gives up; how deliveries are isolated; what a wall-clock jump, a sign-out or a shutdown does;
//! and that no token outlives its use. It lives with the manager: see [`AccessManager`].
//!
//! ## Errors
//!
//! Each call answers a typed error, and none of them costs the token held:
//! [`TokenError`] for a token that breaks Twilio's rules (its [`code`](TokenError::code) is the
//! Twilio error code a service would answer, 20101 to 20107 and 20157), [`UpdateError`] from
//! [`update_token`](AccessManager::update_token), [`RefreshError`] from
//! [`refresh`](AccessManager::refresh) and [`fresh_token`](AccessManager::fresh_token), and
//! [`BuildError`] from [`build`](AccessManagerBuilder::build). Plugins answer [`FetchError`] and
//! [`ConsumerError`].
//!
//! A token is a secret: no message, log line, event or `Debug` output of this crate contains a
//! token's signature or an API secret, and the manager keeps no copy of a token once it is
//! replaced, signed out or the manager is gone.
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `http` | off | [`HttpFetcher`]: fetches tokens from the app's backend over HTTP(S) (reqwest with rustls on ring: no OpenSSL, no system TLS library) |
//!
//! Everything else, [`clock::ManualClock`] included, needs no feature.
//!
//! ## More
//!
//! The repository's `examples/` hold a live demo of the whole token path (`demo`, feature `http`),
//! a token inspector (`inspect`) and a token server for your backend (`token_server`); its
//! `README.md` has the defaults, the events and the measured figures.
//!
#![cfg_attr(feature = "http", doc = "[`HttpFetcher`]: http::HttpFetcher")]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`HttpFetcher`]: https://docs.rs/access-manager/latest/access_manager/http/struct.HttpFetcher.html"
)]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod clock;
pub mod store;
mod token;

pub use token::grants;
pub use token::grants::{GrantKind, Grants};
pub use token::{
    AccessToken, AccessTokenBuilder, TokenError, TokenInfo, DEFAULT_TTL, MAX_LIFETIME,
    MAX_TOKEN_LEN,
};

mod backoff;
mod caught;
mod consumer;
mod event;
mod fetcher;
#[cfg(feature = "http")]
pub mod http;
mod limiter;
mod manager;
mod sync;

pub use backoff::Backoff;
pub use consumer::{ConsumerError, ConsumerId, TokenConsumer};
pub use event::{Event, Events};
pub use fetcher::{fetcher_fn, FetchError, FetchReason, FetchRequest, TokenFetcher};
pub use limiter::{FetchLimiter, FetchLimiterBuilder};
pub use manager::error::{BuildError, RefreshError, UpdateError, UpdateReport};
pub use manager::service::ServiceAction;
pub use manager::stats::Stats;
pub use manager::{
    AccessManager, AccessManagerBuilder, WeakAccessManager, DEFAULT_CONSUMER_TIMEOUT,
    DEFAULT_EVENT_CAPACITY, DEFAULT_FETCH_TIMEOUT, DEFAULT_REFRESH_AHEAD,
};

/// The `#[async_trait]` attribute, for implementing [`TokenFetcher`] and [`TokenConsumer`] without
/// adding the `async-trait` crate to your dependencies.
pub use async_trait::async_trait;

// The README's examples run as doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#![doc = include_str!("../README.md")]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
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
mod consumer;
mod event;
mod fetcher;
#[cfg(feature = "http")]
pub mod http;
mod limiter;
mod manager;

pub use backoff::Backoff;
pub use consumer::{ConsumerError, ConsumerId, TokenConsumer};
pub use event::{Event, Events};
pub use fetcher::{fetcher_fn, FetchError, FetchReason, FetchRequest, TokenFetcher};
pub use limiter::FetchLimiter;
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

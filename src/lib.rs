//! Token lifecycle for realtime apps.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub mod clock;
mod token;

pub use token::grants;
pub use token::grants::{GrantKind, Grants};
pub use token::{
    AccessToken, AccessTokenBuilder, TokenError, DEFAULT_TTL, MAX_LIFETIME, MAX_TOKEN_LEN,
};

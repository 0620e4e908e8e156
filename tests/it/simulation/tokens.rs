//! Minting the simulation's tokens: distinct (a serial number in a grant), signed with the
//! simulation's secret, every signature kept for the leak search.

use super::capture::{Secrets, SIM_SECRET};
use super::rng::Rng;
use crate::common::{ACCOUNT, KEY};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::AccessToken;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What to mint.
#[derive(Clone, Debug)]
pub struct Spec {
    pub identity: String,
    pub account: &'static str,
    pub iat: u64,
    pub ttl: u64,
    pub nbf: Option<u64>,
    pub video: bool,
}

impl Spec {
    /// A token for `identity` issued `back` seconds before `now`, with `left` seconds left.
    pub fn living(identity: &str, now: SystemTime, back: u64, left: u64) -> Spec {
        let now = unix(now);
        Spec {
            identity: identity.into(),
            account: ACCOUNT,
            iat: now - back,
            // `now` may be mid-second: `left` whole seconds from the next one.
            ttl: back + left.max(1),
            nbf: None,
            video: true,
        }
    }
}

/// Mints distinct tokens (a serial number in a grant), and keeps every signature for the leak
/// search.
pub struct Minter {
    serial: AtomicU64,
    pub secrets: Secrets,
}

impl Minter {
    pub fn new(secrets: Secrets) -> Self {
        Minter {
            serial: AtomicU64::new(0),
            secrets,
        }
    }

    pub fn mint(&self, spec: &Spec) -> String {
        let n = self.serial.fetch_add(1, SeqCst);
        let chat = ChatGrant {
            endpoint_id: Some(format!("sim-{n}")),
            ..ChatGrant::default()
        };
        let mut builder = AccessToken::builder(spec.account, KEY, SIM_SECRET)
            .identity(spec.identity.as_str())
            .issued_at(UNIX_EPOCH + Duration::from_secs(spec.iat))
            .ttl(Duration::from_secs(spec.ttl))
            .grant(chat)
            .grant(SyncGrant::default())
            .grant(VoiceGrant::default());
        if spec.video {
            builder = builder.grant(VideoGrant::default());
        }
        if let Some(nbf) = spec.nbf {
            builder = builder.not_before(UNIX_EPOCH + Duration::from_secs(nbf));
        }
        let jwt = builder.to_jwt().expect("the simulation mints valid specs");
        self.secrets.add_jwt(&jwt);
        jwt
    }

    /// Something that is not a usable token.
    pub fn garbage(&self, rng: &mut Rng, now: SystemTime) -> String {
        match rng.below(4) {
            0 => "<!DOCTYPE html><html>502 Bad Gateway</html>".into(),
            1 => "not-a-jwt".into(),
            2 => {
                // A real token cut short.
                let jwt = self.mint(&Spec::living("alice", now, 0, 600));
                jwt[..jwt.len() - 20].to_string()
            }
            _ => String::new(),
        }
    }
}

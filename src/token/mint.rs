//! [`AccessTokenBuilder`]: mint HS256 access tokens exactly as twilio-node does.

use super::grants::{Grant, Grants};
use super::{unix_secs, TokenError, CONTENT_TYPE, MAX_LIFETIME, MAX_TOKEN_LEN, SIGNATURE_LEN};
use crate::clock::{Clock, SystemClock};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::fmt;
use std::time::{Duration, SystemTime};

type HmacSha256 = Hmac<Sha256>;

/// The lifetime of a minted token when none is given: one hour, as in every helper library.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Mints a signed access token. Made by [`AccessToken::builder`](super::AccessToken::builder).
///
/// The header and claims are those twilio-node writes for the same inputs, key for key and in the
/// same order: header `alg`, `typ`, `cty` (and `twr` for a region); claims `jti`, `grants`, `nbf`
/// (only when set), `iat`, `exp`, `iss`, `sub`.
///
/// ```
/// use access_manager::{AccessToken, grants::{ChatGrant, VideoGrant}};
/// use std::time::{Duration, SystemTime};
///
/// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
///     .identity("alice")
///     .ttl(Duration::from_secs(600))
///     .grant(ChatGrant { service_sid: Some("IS00000000000000000000000000000001".into()), ..Default::default() })
///     .grant(VideoGrant::default())
///     .to_jwt()?;
/// let token = AccessToken::verify(&jwt, b"api-secret", SystemTime::now())?;
/// assert_eq!(token.identity(), Some("alice"));
/// # Ok::<(), access_manager::TokenError>(())
/// ```
#[derive(Clone)]
pub struct AccessTokenBuilder {
    account_sid: String,
    api_key_sid: String,
    secret: Vec<u8>,
    ttl: Duration,
    issued_at: Option<SystemTime>,
    not_before: Option<SystemTime>,
    region: Option<String>,
    grants: Grants,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    cty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    twr: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    jti: Jti<'a>,
    grants: &'a Grants,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    iat: u64,
    exp: u64,
    iss: &'a str,
    sub: &'a str,
}

impl AccessTokenBuilder {
    pub(super) fn new(account_sid: String, api_key_sid: String, secret: &[u8]) -> Self {
        AccessTokenBuilder {
            account_sid,
            api_key_sid,
            secret: secret.to_vec(),
            ttl: DEFAULT_TTL,
            issued_at: None,
            not_before: None,
            region: None,
            grants: Grants::default(),
        }
    }

    /// The user's identity (`grants.identity`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let jwt = builder.identity("alice").to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.identity(), Some("alice"));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.grants.identity = Some(identity.into());
        self
    }

    /// The lifetime, whole seconds (default [`DEFAULT_TTL`], 3600 s). As in twilio-node, zero means
    /// the default; a fraction of a second is dropped, so under one second also means the default.
    /// Twilio's servers refuse over 24 h, so [`to_jwt`](Self::to_jwt) does too.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let builder = builder.issued_at(issued);
    /// let token = AccessToken::parse(&builder.clone().ttl(Duration::from_secs(600)).to_jwt()?)?;
    /// assert_eq!(token.expires_at(), issued + Duration::from_secs(600));
    /// // Zero means the default; over 24 h is refused.
    /// let token = AccessToken::parse(&builder.clone().ttl(Duration::ZERO).to_jwt()?)?;
    /// assert_eq!(token.expires_at(), issued + access_manager::DEFAULT_TTL);
    /// let err = builder.ttl(Duration::from_secs(86_401)).to_jwt().unwrap_err();
    /// assert_eq!(err.code(), 20157);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The issue time, `iat` (default: the system clock when [`to_jwt`](Self::to_jwt) runs).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let token = AccessToken::parse(&builder.issued_at(issued).to_jwt()?)?;
    /// assert_eq!(token.issued_at(), Some(issued));
    /// assert_eq!(token.expires_at(), issued + Duration::from_secs(3600));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn issued_at(mut self, at: SystemTime) -> Self {
        self.issued_at = Some(at);
        self
    }

    /// The not-before time, `nbf` (default: none).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let nbf = issued + Duration::from_secs(60);
    /// let jwt = builder.issued_at(issued).not_before(nbf).to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert_eq!(token.not_before(), Some(nbf));
    /// assert_eq!(token.validate_at(issued).unwrap_err().code(), 20105);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.not_before = Some(at);
        self
    }

    /// The region, written to the header's `twr` field (default: none).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let jwt = builder.region("au1").to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.region(), Some("au1"));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Adds a grant; a second grant of the same kind replaces the first.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// use access_manager::grants::{SyncGrant, VideoGrant};
    /// use access_manager::GrantKind;
    /// let jwt = builder
    ///     .grant(SyncGrant::default())
    ///     .grant(VideoGrant { room: Some("lobby".into()) })
    ///     .grant(VideoGrant { room: Some("stage".into()) })
    ///     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert_eq!(token.grant_kinds().collect::<Vec<_>>(), [GrantKind::Sync, GrantKind::Video]);
    /// assert_eq!(token.grants().video.as_ref().unwrap().room.as_deref(), Some("stage"));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn grant(mut self, grant: impl Into<Grant>) -> Self {
        self.grants.set(grant.into());
        self
    }

    /// Signs the token.
    ///
    /// Grant fields are written as given: unlike twilio-node, which leaves out empty strings, a field
    /// set to `Some("")` is written as `""`.
    ///
    /// # Errors
    /// [`TokenError::InvalidIssuer`] when the account SID does not start with `AC` or the API key SID
    /// with `SK`; [`TokenError::LifetimeTooLong`] for a ttl over 24 h; [`TokenError::Malformed`]
    /// (20101) when the token would be longer than [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN), which
    /// [`AccessToken::parse`](super::AccessToken::parse) and Twilio refuse (long identities or
    /// grant values, and control characters, which JSON writes as six-byte `\u` escapes, add up).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// let builder = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                    "SKfedcba9876543210fedcba9876543210", "api-secret");
    /// let jwt = builder.identity("alice").to_jwt()?;
    /// assert_eq!(jwt.split('.').count(), 3);
    /// assert!(AccessToken::verify(&jwt, b"api-secret", std::time::SystemTime::now()).is_ok());
    ///
    /// let bad = AccessToken::builder("not-an-account", "SKfedcba9876543210fedcba9876543210", "s");
    /// assert_eq!(bad.to_jwt().unwrap_err().code(), 20103);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn to_jwt(&self) -> Result<String, TokenError> {
        if !self.account_sid.starts_with("AC") {
            return Err(TokenError::InvalidIssuer {
                reason: "the account SID must start with \"AC\"".into(),
            });
        }
        if !self.api_key_sid.starts_with("SK") {
            return Err(TokenError::InvalidIssuer {
                reason: "the API key SID must start with \"SK\"".into(),
            });
        }
        let ttl = match self.ttl.as_secs() {
            0 => DEFAULT_TTL.as_secs(),
            s => s,
        };
        if ttl > MAX_LIFETIME.as_secs() {
            return Err(TokenError::LifetimeTooLong { lifetime_secs: ttl });
        }
        let iat = unix_secs(self.issued_at.unwrap_or_else(|| SystemClock.now()));
        let claims = Claims {
            jti: Jti {
                api_key_sid: &self.api_key_sid,
                iat,
            },
            grants: &self.grants,
            nbf: self.not_before.map(unix_secs),
            iat,
            exp: iat.saturating_add(ttl),
            iss: &self.api_key_sid,
            sub: &self.account_sid,
        };
        let claims =
            serde_json::to_vec(&claims).map_err(|e| TokenError::malformed(e.to_string()))?;
        let mut jwt = String::with_capacity(claims.len() * 4 / 3 + 160);
        match self.region.as_deref() {
            // The usual header never changes: skip serialising and encoding it.
            None => jwt.push_str(HEADER_B64),
            Some(region) => {
                let header = Header {
                    alg: "HS256",
                    typ: "JWT",
                    cty: CONTENT_TYPE,
                    twr: Some(region),
                };
                let header = serde_json::to_vec(&header)
                    .map_err(|e| TokenError::malformed(e.to_string()))?;
                URL_SAFE_NO_PAD.encode_string(header, &mut jwt);
            }
        }
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        // `.` and the unpadded base64url of the 32-byte signature (43 chars) are still to come.
        let len = jwt.len() + 1 + (SIGNATURE_LEN * 4).div_ceil(3);
        if len > MAX_TOKEN_LEN {
            return Err(TokenError::malformed(format!(
                "the token would be {len} bytes, over the {MAX_TOKEN_LEN}-byte limit"
            )));
        }
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(jwt.as_bytes());
        let sig = mac.finalize().into_bytes();
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut jwt);
        Ok(jwt)
    }
}

/// base64url of `{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`, twilio-node's header without a
/// region (a unit test checks it against the serialised [`Header`]).
pub(super) const HEADER_B64: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0";

/// `jti`, `"{API key SID}-{iat}"`, written straight into the claims without a temporary string.
struct Jti<'a> {
    api_key_sid: &'a str,
    iat: u64,
}

impl Serialize for Jti<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}-{}", self.api_key_sid, self.iat))
    }
}

/// Constant-time check of an HS256 signature.
pub(super) fn verify_hs256(secret: &[u8], signed: &[u8], sig: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed);
    mac.verify_slice(sig).is_ok()
}

impl fmt::Debug for AccessTokenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenBuilder")
            .field("account_sid", &self.account_sid)
            .field("api_key_sid", &self.api_key_sid)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("issued_at", &self.issued_at)
            .field("not_before", &self.not_before)
            .field("region", &self.region)
            .field("grants", &self.grants)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_header_is_the_serialised_header() {
        let header = Header {
            alg: "HS256",
            typ: "JWT",
            cty: CONTENT_TYPE,
            twr: None,
        };
        let json = serde_json::to_vec(&header).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(json), HEADER_B64);
    }
}

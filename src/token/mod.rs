//! [`AccessToken`]: parse, inspect, validate and verify Twilio access tokens.
//!
//! A client never holds the API secret, so [`AccessToken::parse`] reads a token without checking its
//! signature, in the order of the token format's rules, and stops at the first that fails. The server
//! side (and tests) use [`AccessToken::verify`], which also checks the HS256 signature and the time rules.

pub(crate) mod error;
pub mod grants;
mod info;
mod json;
mod mint;
mod read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::TokenError;
use grants::{GrantKind, Grants};
pub use info::TokenInfo;
pub use mint::{AccessTokenBuilder, DEFAULT_TTL};

/// The largest token text accepted, in bytes (after trimming).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Twilio's cap on a token's lifetime: 24 hours.
pub const MAX_LIFETIME: Duration = Duration::from_secs(86_400);
/// Latest time representable by the accessors (9999-12-31T23:59:59Z); later claims are clamped.
const MAX_UNIX_SECS: u64 = 253_402_300_799;

pub(crate) const CONTENT_TYPE: &str = "twilio-fpa;v=1";
const SIGNATURE_LEN: usize = 32;

/// A parsed Twilio access token.
///
/// Cloning is cheap (the parsed token is shared). Two tokens are equal when their texts are equal.
/// `Debug` and `Display` never print the signature.
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
}

/// What a manager holds per token, so it is kept small: the text, one string for the short
/// claims, the times, and bits. The full [`Grants`] (a few hundred bytes with their strings) are
/// built only when asked for.
pub(crate) struct Inner {
    /// The token text, trimmed.
    jwt: Box<str>,
    /// The account SID, the API key SID, the region and the identity, one after the other: one
    /// allocation rather than four.
    strings: Box<str>,
    exp: u64,
    /// Meaningful with [`HAS_NBF`] in `flags`.
    nbf: u64,
    /// Meaningful with [`HAS_IAT`] in `flags`.
    iat: u64,
    /// Built from the payload on the first [`AccessToken::grants`] call (boxed: an empty cell
    /// costs a pointer, not a `Grants`).
    grants: OnceLock<Box<Grants>>,
    /// Byte offsets in `jwt` of the `.` before the payload and the `.` before the signature.
    payload_dot: u16,
    sig_dot: u16,
    /// Where the account SID, the API key SID and the region end in `strings`; the identity runs
    /// to its end.
    ends: [u16; 3],
    /// [`HAS_NBF`], [`HAS_IAT`], [`HAS_REGION`], [`HAS_IDENTITY`].
    flags: u8,
    /// One bit per kind of grant present.
    kinds: u8,
}

const HAS_NBF: u8 = 1;
const HAS_IAT: u8 = 2;
const HAS_REGION: u8 = 4;
const HAS_IDENTITY: u8 = 8;

impl Inner {
    fn new(jwt: Box<str>, p: read::Parsed) -> Inner {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        Inner {
            jwt,
            strings: p.strings,
            exp: p.exp,
            nbf: p.nbf.unwrap_or(0),
            iat: p.iat.unwrap_or(0),
            grants: OnceLock::new(),
            payload_dot: p.payload_dot,
            sig_dot: p.sig_dot,
            ends: p.ends,
            flags: flag(p.nbf.is_some(), HAS_NBF)
                | flag(p.iat.is_some(), HAS_IAT)
                | flag(p.has_region, HAS_REGION)
                | flag(p.has_identity, HAS_IDENTITY),
            kinds: p.kinds,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The `i`th of the account SID, the API key SID, the region and the identity.
    fn string(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let end = self.ends.get(i).map_or(self.strings.len(), |&e| e.into());
        &self.strings[usize::from(start)..end]
    }

    fn nbf(&self) -> Option<u64> {
        self.has(HAS_NBF).then_some(self.nbf)
    }

    fn iat(&self) -> Option<u64> {
        self.has(HAS_IAT).then_some(self.iat)
    }

    /// Builds the grants from the payload, which [`read::read`] has already checked.
    fn build_grants(&self) -> Grants {
        // The `grants` value is read on its own, as the check read it: read as part of the whole
        // payload it would sit one level deeper, and serde_json's nesting limit could then refuse
        // what the check accepted.
        #[derive(Deserialize)]
        struct GrantsClaim<'a> {
            #[serde(borrow)]
            grants: &'a serde_json::value::RawValue,
        }
        let payload = &self.jwt[usize::from(self.payload_dot) + 1..usize::from(self.sig_dot)];
        let grants = URL_SAFE_NO_PAD.decode(payload).ok().and_then(|json| {
            let claim = serde_json::from_slice::<GrantsClaim<'_>>(&json).ok()?;
            serde_json::from_str::<Grants>(claim.grants.get()).ok()
        });
        // Parsing deserialised these very grants from this very text, so a failure here is a bug
        // in this crate, not a bad token: say so, and keep what parse already read rather than
        // panic.
        match grants {
            Some(grants) => grants,
            None => {
                tracing::error!("token grants could not be read back; reporting the identity only");
                Grants {
                    identity: self.has(HAS_IDENTITY).then(|| self.string(3).to_owned()),
                    ..Grants::default()
                }
            }
        }
    }
}

/// The bit of `kind` in [`Inner`]'s `kinds`.
fn kind_bit(kind: GrantKind) -> u8 {
    1 << kind as u8
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX_SECS))
}

impl AccessToken {
    /// Reads a token without checking its signature or the time.
    ///
    /// Surrounding ASCII whitespace (a newline from a file or an HTTP body) is trimmed.
    ///
    /// # Errors
    /// The first broken rule of the token format, in its order: malformed (20101), header (20102),
    /// signature shape (20107), issuer/subject (20103), expiry claim (20104), `nbf`/`iat` (20101),
    /// grants (20106). Never panics, whatever the input.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&format!("{jwt}\n"))?;
    /// assert_eq!(token.identity(), Some("alice"));
    /// assert_eq!(token.as_str(), jwt, "the newline is trimmed");
    ///
    /// let err = AccessToken::parse("not.a.token").unwrap_err();
    /// assert_eq!(err.code(), 20101);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn parse(jwt: &str) -> Result<AccessToken, TokenError> {
        let jwt = read::trim(jwt);
        let parsed = read::read(jwt)?;
        Ok(AccessToken::new(jwt.into(), parsed))
    }

    /// [`parse`](Self::parse) for a token the caller owns: the text is kept in the caller's
    /// buffer (trimmed in place) rather than copied.
    pub(crate) fn parse_owned(mut jwt: String) -> Result<AccessToken, TokenError> {
        let trimmed = read::trim(&jwt);
        let parsed = read::read(trimmed)?;
        let start = trimmed.as_ptr() as usize - jwt.as_ptr() as usize;
        let end = start + trimmed.len();
        jwt.truncate(end);
        jwt.drain(..start);
        Ok(AccessToken::new(jwt.into_boxed_str(), parsed))
    }

    fn new(jwt: Box<str>, parsed: read::Parsed) -> AccessToken {
        AccessToken {
            inner: Arc::new(Inner::new(jwt, parsed)),
        }
    }

    /// Parses, checks the HS256 signature with `secret` (in constant time), then
    /// [`validate_at`](Self::validate_at) `now`. This is what Twilio's servers do.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), then [`TokenError::SignatureMismatch`] (20107), then the time rules.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
    /// let token = AccessToken::verify(&jwt, b"api-secret", now)?;
    /// assert_eq!(token.identity(), Some("alice"));
    ///
    /// let err = AccessToken::verify(&jwt, b"another secret", now).unwrap_err();
    /// assert_eq!(err.code(), 20107);
    /// let later = UNIX_EPOCH + Duration::from_secs(1_700_003_600);
    /// assert_eq!(AccessToken::verify(&jwt, b"api-secret", later).unwrap_err().code(), 20104);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn verify(jwt: &str, secret: &[u8], now: SystemTime) -> Result<AccessToken, TokenError> {
        let token = AccessToken::parse(jwt)?;
        let (signed, sig_b64) = token.inner.jwt.split_at(token.inner.sig_dot.into());
        let mut sig = [0u8; SIGNATURE_LEN + 3];
        let n = URL_SAFE_NO_PAD
            .decode_slice(&sig_b64[1..], &mut sig)
            .map_err(|_| TokenError::SignatureMismatch)?;
        if !mint::verify_hs256(secret, signed.as_bytes(), &sig[..n]) {
            return Err(TokenError::SignatureMismatch);
        }
        token.validate_at(now)?;
        Ok(token)
    }

    /// Checks the time rules at `now`: expired when `now >= exp` (20104), not yet valid when
    /// `nbf > now` (20105), and a lifetime over 24 h (20157), counted from `iat`, else `nbf`, else
    /// `now`, and also from `now` itself.
    ///
    /// # Errors
    /// The first of those rules the token breaks.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// assert!(token.validate_at(issued + Duration::from_secs(60)).is_ok());
    /// // An hour-long token (the default) has expired an hour after it was issued.
    /// let err = token.validate_at(issued + Duration::from_secs(3600)).unwrap_err();
    /// assert_eq!(err, access_manager::TokenError::Expired { ago_secs: 0 });
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn validate_at(&self, now: SystemTime) -> Result<(), TokenError> {
        let now = unix_secs(now);
        let inner = &self.inner;
        if now >= inner.exp {
            return Err(TokenError::Expired {
                ago_secs: now - inner.exp,
            });
        }
        if let Some(nbf) = inner.nbf() {
            if nbf > now {
                return Err(TokenError::NotYetValid { in_secs: nbf - now });
            }
        }
        let start = inner.iat().or(inner.nbf()).unwrap_or(now);
        let lifetime = inner.exp.saturating_sub(start);
        let remaining = inner.exp - now;
        let cap = MAX_LIFETIME.as_secs();
        if lifetime > cap || remaining > cap {
            return Err(TokenError::LifetimeTooLong {
                lifetime_secs: lifetime.max(remaining),
            });
        }
        Ok(())
    }

    /// Starts minting a token signed with an API key's secret.
    ///
    /// ```
    /// use access_manager::grants::ChatGrant;
    /// use access_manager::{AccessToken, GrantKind};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .identity("alice")
    ///     .issued_at(issued)
    ///     .grant(ChatGrant::default())
    ///     .to_jwt()?;
    /// let token = AccessToken::verify(&jwt, b"api-secret", issued)?;
    /// assert!(token.has_grant(GrantKind::Chat));
    /// assert_eq!(token.expires_at(), issued + access_manager::DEFAULT_TTL);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn builder(
        account_sid: impl Into<String>,
        api_key_sid: impl Into<String>,
        api_secret: impl AsRef<[u8]>,
    ) -> AccessTokenBuilder {
        AccessTokenBuilder::new(account_sid.into(), api_key_sid.into(), api_secret.as_ref())
    }

    /// The token text (trimmed), as given to an SDK.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token: AccessToken = format!("  {jwt}\r\n").parse()?;
    /// assert_eq!(token.as_str(), jwt);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.inner.jwt
    }

    /// `grants.identity`, the user.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.identity(), Some("alice"));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn identity(&self) -> Option<&str> {
        self.inner.has(HAS_IDENTITY).then(|| self.inner.string(3))
    }

    /// The account SID (`sub`, `AC…`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.account_sid(), "AC0123456789abcdef0123456789abcdef");
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn account_sid(&self) -> &str {
        self.inner.string(0)
    }

    /// The API key SID that signed the token (`iss`, `SK…`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.api_key_sid(), "SKfedcba9876543210fedcba9876543210");
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn api_key_sid(&self) -> &str {
        self.inner.string(1)
    }

    /// The region from the header's `twr` field (`"ie1"`, `"au1"`), if set.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.region(), None);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .region("ie1")
    ///     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.region(), Some("ie1"));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn region(&self) -> Option<&str> {
        self.inner.has(HAS_REGION).then(|| self.inner.string(2))
    }

    /// When the token expires (`exp`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert_eq!(token.expires_at(), UNIX_EPOCH + Duration::from_secs(1_700_003_600));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn expires_at(&self) -> SystemTime {
        from_unix_secs(self.inner.exp)
    }

    /// When the token becomes valid (`nbf`), if set.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.not_before(), None);
    /// let nbf = UNIX_EPOCH + Duration::from_secs(1_700_000_300);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "api-secret")
    ///     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    ///     .not_before(nbf)
    ///     .to_jwt()?;
    /// assert_eq!(AccessToken::parse(&jwt)?.not_before(), Some(nbf));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn not_before(&self) -> Option<SystemTime> {
        self.inner.nbf().map(from_unix_secs)
    }

    /// When the token was issued (`iat`), if set (twilio-python leaves it out).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert_eq!(token.issued_at(), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner.iat().map(from_unix_secs)
    }

    /// What an event would say about this token: identity, account, kinds of grant and times,
    /// without the token text (generation 0: no manager installed it). See [`TokenInfo`].
    ///
    /// ```
    /// use access_manager::AccessToken;
    ///
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity("alice")
    ///     .to_jwt()
    ///     .unwrap();
    /// let token = AccessToken::parse(&jwt).unwrap();
    /// let info = token.info();
    /// assert_eq!(info.identity(), Some("alice"));
    /// assert_eq!(info.expires_at(), token.expires_at());
    /// assert!(info.describes(&token));
    /// ```
    pub fn info(&self) -> TokenInfo {
        TokenInfo::of(self, 0)
    }

    /// The grants.
    ///
    /// Parsing checks them but keeps only the identity and the kinds present: the first call
    /// builds them again from the token text (a few microseconds) and later calls share the
    /// result. [`identity`](Self::identity),
    /// [`has_grant`](Self::has_grant) and [`grant_kinds`](Self::grant_kinds) never need them.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// let grants = token.grants();
    /// assert_eq!(grants.identity.as_deref(), Some("alice"));
    /// assert_eq!(grants.video, Some(access_manager::grants::VideoGrant { room: None }));
    /// assert!(grants.chat.is_none());
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn grants(&self) -> &Grants {
        self.inner
            .grants
            .get_or_init(|| Box::new(self.inner.build_grants()))
    }

    /// Whether the token carries a grant of this kind.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// use access_manager::GrantKind;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert!(token.has_grant(GrantKind::Video));
    /// assert!(!token.has_grant(GrantKind::Chat));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn has_grant(&self, kind: GrantKind) -> bool {
        self.inner.kinds & kind_bit(kind) != 0
    }

    /// The kinds of grant the token carries, in wire order.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// use access_manager::GrantKind;
    /// let token = AccessToken::parse(&jwt)?;
    /// assert_eq!(token.grant_kinds().collect::<Vec<_>>(), [GrantKind::Video]);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn grant_kinds(&self) -> impl Iterator<Item = GrantKind> + '_ {
        GrantKind::ALL.into_iter().filter(|k| self.has_grant(*k))
    }

    /// Time left before expiry at `now` (zero once expired).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// assert_eq!(token.remaining_at(issued + Duration::from_secs(600)), Duration::from_secs(3000));
    /// assert_eq!(token.remaining_at(issued + Duration::from_secs(7200)), Duration::ZERO);
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn remaining_at(&self, now: SystemTime) -> Duration {
        self.expires_at()
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// `exp` in whole unix seconds.
    // For the manager's timers, which live outside this module.
    #[allow(dead_code)]
    pub(crate) fn exp_secs(&self) -> u64 {
        self.inner.exp
    }

    /// `iat`, else `nbf`, in whole unix seconds.
    #[allow(dead_code)]
    pub(crate) fn start_secs(&self) -> Option<u64> {
        self.inner.iat().or(self.inner.nbf())
    }

    /// The token text up to (not including) the signature: safe to log.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    /// #     "SKfedcba9876543210fedcba9876543210", "api-secret")
    /// #     .identity("alice")
    /// #     .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    /// #     .grant(access_manager::grants::VideoGrant::default())
    /// #     .to_jwt()?;
    /// let token = AccessToken::parse(&jwt)?;
    /// let (unsigned, signature) = jwt.rsplit_once('.').unwrap();
    /// assert_eq!(token.unsigned_part(), unsigned);
    /// assert!(!token.unsigned_part().contains(signature));
    /// # Ok::<(), access_manager::TokenError>(())
    /// ```
    pub fn unsigned_part(&self) -> &str {
        &self.inner.jwt[..self.inner.sig_dot.into()]
    }
}

/// [`AccessToken::parse`], for `str::parse`.
///
/// ```
/// # use access_manager::AccessToken;
/// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
/// #     "SKfedcba9876543210fedcba9876543210", "api-secret").identity("alice").to_jwt()?;
/// let token: AccessToken = jwt.parse()?;
/// assert_eq!(token.identity(), Some("alice"));
/// assert_eq!("x".parse::<AccessToken>().unwrap_err().code(), 20101);
/// # Ok::<(), access_manager::TokenError>(())
/// ```
impl FromStr for AccessToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccessToken::parse(s)
    }
}

/// [`AccessToken::parse`], keeping the string's buffer as the token text instead of copying it.
///
/// ```
/// # use access_manager::AccessToken;
/// # let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
/// #     "SKfedcba9876543210fedcba9876543210", "api-secret").identity("alice").to_jwt()?;
/// let body = format!("{jwt}\n"); // as read from an HTTP response, say
/// let token = AccessToken::try_from(body)?;
/// assert_eq!(token.as_str(), jwt);
/// # Ok::<(), access_manager::TokenError>(())
/// ```
impl TryFrom<String> for AccessToken {
    type Error = TokenError;
    fn try_from(jwt: String) -> Result<Self, Self::Error> {
        AccessToken::parse_owned(jwt)
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.jwt == other.inner.jwt
    }
}
impl Eq for AccessToken {}

impl std::hash::Hash for AccessToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.jwt.hash(state);
    }
}

struct KindList<'a>(&'a AccessToken);
impl fmt::Debug for KindList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.grant_kinds()).finish()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("identity", &self.identity())
            .field("account_sid", &self.account_sid())
            .field("grants", &KindList(self))
            .field("expires_at_unix", &self.inner.exp)
            .finish_non_exhaustive()
    }
}

/// Prints who the token is for, its grants and its expiry; never the token text.
impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access token for {:?} ({}) expiring at unix {}",
            self.identity().unwrap_or(""),
            self.grant_kinds()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.inner.exp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_parsed_token_stays_small() {
        // A manager holds one per token: keep the full grants out of line.
        assert_eq!(std::mem::size_of::<Inner>(), 88);
    }

    #[test]
    fn far_future_times_are_clamped_not_overflowed() {
        assert_eq!(unix_secs(from_unix_secs(u64::MAX)), MAX_UNIX_SECS);
    }
}

//! [`AccessToken`]: parse, inspect, validate and verify Twilio access tokens.
//!
//! A client never holds the API secret, so [`AccessToken::parse`] reads a token without checking its
//! signature, in the order of the token format's rules, and stops at the first that fails. The server
//! side (and tests) use [`AccessToken::verify`], which also checks the HS256 signature and the time rules.

pub(crate) mod error;
pub mod grants;
mod mint;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::TokenError;
use grants::{GrantKind, Grants};
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

struct Inner {
    jwt: Box<str>,
    /// Byte offset of the `.` before the signature.
    sig_dot: usize,
    account_sid: Box<str>,
    api_key_sid: Box<str>,
    region: Option<Box<str>>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    grants: Grants,
}

// Every field goes through `present`: a plain `Option` would read `"nbf": null` as an absent
// claim, but the format's rules treat a present `null` as a claim of the wrong type.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    alg: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    typ: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    cty: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    twr: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    iss: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    sub: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    exp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    nbf: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    iat: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    grants: Option<&'a RawValue>,
}

/// A key that is present, whatever its value (`null` included).
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(deserializer).map(Some)
}

fn decode_segment(seg: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(seg)
        .map_err(|_| TokenError::malformed(format!("the {what} is not unpadded base64url")))
}

/// Decodes a JSON object; anything else (an array, a string, trailing text, bytes that are not
/// UTF-8 even inside a string nobody reads) is malformed.
fn json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, TokenError> {
    let not_object = || TokenError::malformed(format!("the {what} is not a JSON object"));
    let text = std::str::from_utf8(bytes)
        .map_err(|_| TokenError::malformed(format!("the {what} is not UTF-8")))?;
    if !text.trim_start().starts_with('{') {
        return Err(not_object());
    }
    serde_json::from_str(text).map_err(|_| not_object())
}

/// Whether `raw` is the JSON string `want`; compares the text first, so the usual case allocates
/// nothing, and decodes only when the token spelt it with escapes.
fn json_str_is(raw: Option<&RawValue>, want: &str) -> bool {
    let Some(text) = raw.map(RawValue::get) else {
        return false;
    };
    let plain = text.len() == want.len() + 2
        && text.starts_with('"')
        && text.ends_with('"')
        && &text[1..text.len() - 1] == want;
    plain || (text.contains('\\') && json_string(raw).as_deref() == Some(want))
}

fn json_string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

/// A non-negative JSON number, truncated to whole seconds and clamped to the representable range.
fn json_seconds(raw: &RawValue) -> Option<u64> {
    let Ok(n) = serde_json::from_str::<serde_json::Number>(raw.get()) else {
        // serde_json refuses numbers beyond f64 (`1e400`); a positive one is simply very late.
        return raw
            .get()
            .starts_with(|c: char| c.is_ascii_digit())
            .then_some(u64::MAX);
    };
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    if n.as_i64().is_some() {
        return None; // a negative integer
    }
    let f = n.as_f64()?;
    // `as` saturates for huge values; the negative check keeps -0.5 out.
    (f >= 0.0).then_some(f as u64)
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX_SECS))
}

/// Surrounding ASCII whitespace (a newline from a file or an HTTP body) is not part of a token.
fn trim(jwt: &str) -> &str {
    jwt.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Everything [`Inner`] holds but the token text, read from the (trimmed) text.
struct Claims {
    sig_dot: usize,
    account_sid: Box<str>,
    api_key_sid: Box<str>,
    region: Option<Box<str>>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    grants: Grants,
}

impl Claims {
    /// Runs the token format's checks, in order, on trimmed text.
    fn read(jwt: &str) -> Result<Claims, TokenError> {
        if jwt.len() > MAX_TOKEN_LEN {
            return Err(TokenError::malformed(format!(
                "{} bytes is over the {MAX_TOKEN_LEN}-byte limit",
                jwt.len()
            )));
        }
        let mut parts = jwt.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::malformed(
                "a JWT has three '.'-separated segments",
            ));
        };
        let header_bytes = decode_segment(header_b64, "header")?;
        let payload_bytes = decode_segment(payload_b64, "payload")?;
        let header: RawHeader<'_> = json_object(&header_bytes, "header")?;
        let claims: RawClaims<'_> = json_object(&payload_bytes, "payload")?;

        // Rule 2: Twilio's header.
        if !json_str_is(header.alg, "HS256") {
            return Err(TokenError::InvalidHeader {
                reason: match (json_string(header.alg), header.alg) {
                    (Some(a), _) => format!("alg is {a:?}, Twilio requires \"HS256\""),
                    (None, Some(_)) => "alg is not a string, Twilio requires \"HS256\"".into(),
                    (None, None) => "alg is missing, Twilio requires \"HS256\"".into(),
                },
            });
        }
        if !json_str_is(header.cty, CONTENT_TYPE) {
            return Err(TokenError::InvalidHeader {
                reason: format!("cty must be \"{CONTENT_TYPE}\""),
            });
        }
        if header.typ.is_some() && !json_str_is(header.typ, "JWT") {
            return Err(TokenError::InvalidHeader {
                reason: "typ must be \"JWT\" when present".into(),
            });
        }
        let region = match header.twr {
            None => None,
            Some(raw) => Some(
                json_string(Some(raw)).ok_or_else(|| TokenError::InvalidHeader {
                    reason: "twr (the region) must be a string".into(),
                })?,
            ),
        };

        // Rule 3: the signature's shape.
        let mut sig = [0u8; SIGNATURE_LEN + 3];
        match URL_SAFE_NO_PAD.decode_slice(sig_b64, &mut sig) {
            Ok(SIGNATURE_LEN) => {}
            Ok(n) => {
                return Err(TokenError::MalformedSignature {
                    reason: format!("{n} bytes, HS256 signatures are {SIGNATURE_LEN}"),
                })
            }
            Err(_) => {
                return Err(TokenError::MalformedSignature {
                    reason: "not 32 bytes of unpadded base64url".into(),
                })
            }
        }

        // Rule 4: issuer and subject.
        let api_key_sid = json_string(claims.iss)
            .filter(|s| s.starts_with("SK"))
            .ok_or_else(|| TokenError::InvalidIssuer {
                reason: "iss must be an API key SID starting with \"SK\"".into(),
            })?;
        let account_sid = json_string(claims.sub)
            .filter(|s| s.starts_with("AC"))
            .ok_or_else(|| TokenError::InvalidIssuer {
                reason: "sub must be an account SID starting with \"AC\"".into(),
            })?;

        // Rule 5: expiry.
        let exp = match claims.exp {
            None => {
                return Err(TokenError::InvalidExpiry {
                    reason: "exp is missing".into(),
                })
            }
            Some(raw) => json_seconds(raw).ok_or_else(|| TokenError::InvalidExpiry {
                reason: "exp must be a non-negative number of seconds".into(),
            })?,
        };

        // Rule 6: the other time claims.
        let time_claim = |raw: Option<&RawValue>, name: &str| match raw {
            None => Ok(None),
            Some(raw) => json_seconds(raw)
                .map(Some)
                .ok_or_else(|| TokenError::InvalidTimeClaim {
                    reason: format!("{name} must be a non-negative number of seconds"),
                }),
        };
        let nbf = time_claim(claims.nbf, "nbf")?;
        let iat = time_claim(claims.iat, "iat")?;

        // Rule 7: grants.
        let grants_raw = claims.grants.ok_or_else(|| TokenError::InvalidGrants {
            reason: "grants is missing".into(),
        })?;
        if !grants_raw.get().starts_with('{') {
            return Err(TokenError::InvalidGrants {
                reason: "grants must be an object".into(),
            });
        }
        let grants: Grants =
            serde_json::from_str(grants_raw.get()).map_err(|e| TokenError::InvalidGrants {
                reason: grants_reason(&e),
            })?;

        Ok(Claims {
            sig_dot: jwt.len() - sig_b64.len() - 1,
            account_sid: account_sid.into(),
            api_key_sid: api_key_sid.into(),
            region: region.map(Into::into),
            exp,
            nbf,
            iat,
            grants,
        })
    }

    /// The token, holding `jwt` (the text these claims were read from).
    fn into_token(self, jwt: Box<str>) -> AccessToken {
        AccessToken {
            inner: Arc::new(Inner {
                jwt,
                sig_dot: self.sig_dot,
                account_sid: self.account_sid,
                api_key_sid: self.api_key_sid,
                region: self.region,
                exp: self.exp,
                nbf: self.nbf,
                iat: self.iat,
                grants: self.grants,
            }),
        }
    }
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
    pub fn parse(jwt: &str) -> Result<AccessToken, TokenError> {
        let jwt = trim(jwt);
        Ok(Claims::read(jwt)?.into_token(jwt.into()))
    }

    /// [`parse`](Self::parse) for a token the caller owns: the text is kept in the caller's
    /// buffer (trimmed in place) rather than copied.
    pub(crate) fn parse_owned(mut jwt: String) -> Result<AccessToken, TokenError> {
        let trimmed = trim(&jwt);
        let claims = Claims::read(trimmed)?;
        let start = trimmed.as_ptr() as usize - jwt.as_ptr() as usize;
        let end = start + trimmed.len();
        jwt.truncate(end);
        jwt.drain(..start);
        Ok(claims.into_token(jwt.into_boxed_str()))
    }

    /// Parses, checks the HS256 signature with `secret` (in constant time), then
    /// [`validate_at`](Self::validate_at) `now`. This is what Twilio's servers do.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), then [`TokenError::SignatureMismatch`] (20107), then the time rules.
    pub fn verify(jwt: &str, secret: &[u8], now: SystemTime) -> Result<AccessToken, TokenError> {
        let token = AccessToken::parse(jwt)?;
        let (signed, sig_b64) = token.inner.jwt.split_at(token.inner.sig_dot);
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
    pub fn validate_at(&self, now: SystemTime) -> Result<(), TokenError> {
        let now = unix_secs(now);
        let inner = &self.inner;
        if now >= inner.exp {
            return Err(TokenError::Expired {
                ago_secs: now - inner.exp,
            });
        }
        if let Some(nbf) = inner.nbf {
            if nbf > now {
                return Err(TokenError::NotYetValid { in_secs: nbf - now });
            }
        }
        let start = inner.iat.or(inner.nbf).unwrap_or(now);
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
    pub fn builder(
        account_sid: impl Into<String>,
        api_key_sid: impl Into<String>,
        api_secret: impl AsRef<[u8]>,
    ) -> AccessTokenBuilder {
        AccessTokenBuilder::new(account_sid.into(), api_key_sid.into(), api_secret.as_ref())
    }

    /// The token text (trimmed), as given to an SDK.
    pub fn as_str(&self) -> &str {
        &self.inner.jwt
    }

    /// `grants.identity`, the user.
    pub fn identity(&self) -> Option<&str> {
        self.inner.grants.identity.as_deref()
    }

    /// The account SID (`sub`, `AC…`).
    pub fn account_sid(&self) -> &str {
        &self.inner.account_sid
    }

    /// The API key SID that signed the token (`iss`, `SK…`).
    pub fn api_key_sid(&self) -> &str {
        &self.inner.api_key_sid
    }

    /// The region from the header's `twr` field (`"ie1"`, `"au1"`), if set.
    pub fn region(&self) -> Option<&str> {
        self.inner.region.as_deref()
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        from_unix_secs(self.inner.exp)
    }

    /// When the token becomes valid (`nbf`), if set.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.inner.nbf.map(from_unix_secs)
    }

    /// When the token was issued (`iat`), if set (twilio-python leaves it out).
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner.iat.map(from_unix_secs)
    }

    /// The grants.
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// Whether the token carries a grant of this kind.
    pub fn has_grant(&self, kind: GrantKind) -> bool {
        self.inner.grants.has(kind)
    }

    /// Time left before expiry at `now` (zero once expired).
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
        self.inner.iat.or(self.inner.nbf)
    }

    /// The token text up to (not including) the signature: safe to log.
    pub fn unsigned_part(&self) -> &str {
        &self.inner.jwt[..self.inner.sig_dot]
    }
}

fn grants_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("identity") {
        "grants.identity must be a string".into()
    } else {
        // serde's message names the offending grant's field and type; it holds no token bytes
        // beyond the grant's own JSON structure.
        format!(
            "a grant is not of the expected shape ({})",
            strip_position(&msg)
        )
    }
}

fn strip_position(msg: &str) -> &str {
    msg.split(" at line ").next().unwrap_or(msg)
}

impl FromStr for AccessToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccessToken::parse(s)
    }
}

/// [`AccessToken::parse`], keeping the string's buffer as the token text instead of copying it.
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

struct KindList<'a>(&'a Grants);
impl fmt::Debug for KindList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.kinds()).finish()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("identity", &self.identity())
            .field("account_sid", &self.account_sid())
            .field("grants", &KindList(self.grants()))
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
            self.grants()
                .kinds()
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
    fn json_seconds_accepts_non_negative_numbers_only() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        assert_eq!(json_seconds(&raw("12")), Some(12));
        assert_eq!(json_seconds(&raw("12.9")), Some(12));
        assert_eq!(json_seconds(&raw("1e300")), Some(u64::MAX));
        assert_eq!(json_seconds(&raw("1e400")), Some(u64::MAX));
        assert_eq!(json_seconds(&raw("-1e400")), None);
        assert_eq!(json_seconds(&raw("-1")), None);
        assert_eq!(json_seconds(&raw("-0.5")), None);
        assert_eq!(json_seconds(&raw("\"12\"")), None);
        assert_eq!(json_seconds(&raw("null")), None);
    }

    #[test]
    fn far_future_times_are_clamped_not_overflowed() {
        assert_eq!(unix_secs(from_unix_secs(u64::MAX)), MAX_UNIX_SECS);
    }
}

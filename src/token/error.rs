//! [`TokenError`]: why a token was rejected, with the Twilio error code the server would answer.

use std::fmt;

/// A seconds count printed for people: `42 s`, `12 min`, `3 h 5 min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Secs(pub(crate) u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s {
            0..=119 => write!(f, "{s} s"),
            120..=7199 => write!(f, "{} min", s / 60),
            _ if s < 172_800 => write!(f, "{} h {} min", s / 3600, (s % 3600) / 60),
            _ => write!(f, "{} days", s / 86_400),
        }
    }
}

/// Why a token was rejected. One variant per rule of the token format; [`code`](Self::code) is the
/// Twilio error code the server would have answered, so an app can log the number Twilio's docs explain.
///
/// Messages never contain the token's signature or any secret.
///
/// ```
/// use access_manager::TokenError;
/// let err = TokenError::Expired { ago_secs: 90 };
/// assert_eq!(err.to_string(), "token expired 90 s ago (Twilio error 20104)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is not a well-formed JWT: size, segments, base64url or JSON (20101).
    #[error("malformed token: {reason} (Twilio error 20101)")]
    Malformed {
        /// What is wrong, in words.
        reason: String,
    },
    /// The header is not Twilio's: `alg` must be `HS256`, `cty` `twilio-fpa;v=1`, `typ` `JWT` (20102).
    #[error("unsupported token header: {reason} (Twilio error 20102)")]
    InvalidHeader {
        /// What is wrong, in words.
        reason: String,
    },
    /// The signature segment is not 32 bytes of unpadded base64url (20107).
    #[error("malformed signature: {reason} (Twilio error 20107)")]
    MalformedSignature {
        /// What is wrong, in words.
        reason: String,
    },
    /// `iss` is not an API key SID (`SK…`) or `sub` not an account SID (`AC…`) (20103).
    #[error("invalid issuer or subject: {reason} (Twilio error 20103)")]
    InvalidIssuer {
        /// What is wrong, in words.
        reason: String,
    },
    /// `exp` is missing, not a number, or negative (20104).
    #[error("invalid expiry: {reason} (Twilio error 20104)")]
    InvalidExpiry {
        /// What is wrong, in words.
        reason: String,
    },
    /// `nbf` or `iat` is present but not a non-negative number (20101).
    #[error("invalid time claim: {reason} (Twilio error 20101)")]
    InvalidTimeClaim {
        /// What is wrong, in words.
        reason: String,
    },
    /// `grants` is missing or not an object, or `grants.identity` is not a string (20106).
    #[error("invalid grants: {reason} (Twilio error 20106)")]
    InvalidGrants {
        /// What is wrong, in words.
        reason: String,
    },
    /// The HMAC-SHA256 signature does not match the secret (20107).
    #[error("signature does not match the secret (Twilio error 20107)")]
    SignatureMismatch,
    /// The token has expired (`now >= exp`) (20104).
    #[error("token expired {} ago (Twilio error 20104)", Secs(*.ago_secs))]
    Expired {
        /// Seconds since `exp` (0 when it expires this very second).
        ago_secs: u64,
    },
    /// The token is not valid yet (`nbf > now`) (20105).
    #[error("token not valid for another {} (Twilio error 20105)", Secs(*.in_secs))]
    NotYetValid {
        /// Seconds until `nbf`.
        in_secs: u64,
    },
    /// The token's lifetime exceeds Twilio's 24 h cap (20157).
    #[error("token lifetime of {} exceeds the 24 h maximum (Twilio error 20157)", Secs(*.lifetime_secs))]
    LifetimeTooLong {
        /// The lifetime found, in seconds.
        lifetime_secs: u64,
    },
}

impl TokenError {
    /// The Twilio error code: 20101..=20107 or 20157.
    ///
    /// ```
    /// use access_manager::{AccessToken, TokenError};
    /// let err = AccessToken::parse("not a token").unwrap_err();
    /// assert!(matches!(err, TokenError::Malformed { .. }));
    /// assert_eq!(err.code(), 20101);
    /// assert_eq!(TokenError::Expired { ago_secs: 5 }.code(), 20104);
    /// assert_eq!(TokenError::SignatureMismatch.code(), 20107);
    /// ```
    pub fn code(&self) -> u32 {
        match self {
            TokenError::Malformed { .. } | TokenError::InvalidTimeClaim { .. } => 20101,
            TokenError::InvalidHeader { .. } => 20102,
            TokenError::InvalidIssuer { .. } => 20103,
            TokenError::InvalidExpiry { .. } | TokenError::Expired { .. } => 20104,
            TokenError::NotYetValid { .. } => 20105,
            TokenError::InvalidGrants { .. } => 20106,
            TokenError::MalformedSignature { .. } | TokenError::SignatureMismatch => 20107,
            TokenError::LifetimeTooLong { .. } => 20157,
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        TokenError::Malformed {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_code_and_the_time() {
        let e = TokenError::Expired { ago_secs: 12 };
        assert_eq!(e.to_string(), "token expired 12 s ago (Twilio error 20104)");
        assert_eq!(e.code(), 20104);
        assert_eq!(Secs(3 * 3600 + 5 * 60).to_string(), "3 h 5 min");
        assert_eq!(Secs(600).to_string(), "10 min");
    }
}

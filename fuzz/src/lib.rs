//! Checks shared by the fuzz targets: everything a parsed token must satisfy, and an independent
//! model of the time rules of `/work/shared/TOKEN_FORMAT.md` ("at `now`" rows).

use access_manager::{AccessToken, GrantKind, Grants, TokenError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The accessors clamp times to 9999-12-31T23:59:59Z; a claim read back at this value may have been
/// larger, so the time model only runs when every claim reads back below it.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;
/// Twilio's 24 h cap.
pub const CAP: u64 = 86_400;

/// `SystemTime` at `secs` after the epoch, or `None` when the platform cannot represent it.
pub fn at(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Whole unix seconds, 0 before the epoch (as the crate counts).
pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The three time claims, when they read back exactly (below the clamp).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
}

impl Times {
    pub fn of(token: &AccessToken) -> Option<Times> {
        let exp = secs(token.expires_at());
        let nbf = token.not_before().map(secs);
        let iat = token.issued_at().map(secs);
        let exact = |s: u64| s < MAX_UNIX_SECS;
        (exact(exp) && nbf.is_none_or(exact) && iat.is_none_or(exact)).then_some(Times {
            exp,
            nbf,
            iat,
        })
    }

    /// The format's time rules, written out independently of the crate.
    pub fn expect_at(&self, now: u64) -> Result<(), TokenError> {
        if now >= self.exp {
            return Err(TokenError::Expired {
                ago_secs: now - self.exp,
            });
        }
        if let Some(nbf) = self.nbf {
            if nbf > now {
                return Err(TokenError::NotYetValid { in_secs: nbf - now });
            }
        }
        let start = self.iat.or(self.nbf).unwrap_or(now);
        let lifetime = self.exp.saturating_sub(start);
        let remaining = self.exp - now;
        if lifetime > CAP || remaining > CAP {
            return Err(TokenError::LifetimeTooLong {
                lifetime_secs: lifetime.max(remaining),
            });
        }
        Ok(())
    }
}

/// Times worth validating a token at: the epoch and before it, around each claim, far future.
pub fn interesting_times(token: &AccessToken) -> Vec<SystemTime> {
    let mut out = vec![
        UNIX_EPOCH,
        UNIX_EPOCH - Duration::from_secs(1),
        UNIX_EPOCH - Duration::from_secs(1 << 40),
    ];
    let mut around = |s: u64| {
        for d in [0i64, -1, 1, -(CAP as i64), -(CAP as i64) - 1, CAP as i64] {
            if let Some(t) = s.checked_add_signed(d).and_then(at) {
                out.push(t);
            }
        }
    };
    around(secs(token.expires_at()));
    if let Some(t) = token.not_before() {
        around(secs(t));
    }
    if let Some(t) = token.issued_at() {
        around(secs(t));
    }
    around(1_700_000_000);
    // The farthest the platform can go (i64 seconds on Linux), plus a sub-second part.
    if let Some(t) = at(i64::MAX as u64) {
        out.push(t);
    }
    if let Some(t) =
        at(MAX_UNIX_SECS).and_then(|t| t.checked_add(Duration::from_nanos(999_999_999)))
    {
        out.push(t);
    }
    out
}

/// The signature segment of a (trimmed) token text: after the last '.'.
pub fn signature_segment(jwt: &str) -> &str {
    jwt.rsplit('.').next().unwrap_or("")
}

/// Checks a parse error: a code from the parse rules, a message without the signature.
pub fn check_parse_error(err: &TokenError, input: &str) {
    let code = err.code();
    assert!(
        matches!(code, 20101..=20104 | 20106 | 20107),
        "parse answered {code} ({err})"
    );
    assert!(
        !matches!(
            err,
            TokenError::Expired { .. }
                | TokenError::NotYetValid { .. }
                | TokenError::LifetimeTooLong { .. }
                | TokenError::SignatureMismatch
        ),
        "parse answered a time or verify error: {err:?}"
    );
    let msg = err.to_string();
    let dbg = format!("{err:?}");
    assert!(
        msg.contains(&code.to_string()),
        "{msg:?} does not name {code}"
    );
    // The message must not echo the signature. Only meaningful for a long enough segment that does
    // not also occur in the header or payload (whose values a message may legitimately quote).
    let jwt = input.trim_matches(|c: char| c.is_ascii_whitespace());
    let segs: Vec<&str> = jwt.split('.').collect();
    // A segment that could be a signature (base64url, 16+ chars): fixed message text such as
    // "the header is not UTF-8" is not a leak even when the input repeats it as its third segment.
    let sig_like = |s: &str| {
        s.len() >= 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if segs.len() == 3 && sig_like(segs[2]) {
        let sig = segs[2];
        let decoded = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let quoted = decoded(segs[0]).contains(sig) || decoded(segs[1]).contains(sig);
        if !quoted {
            assert!(
                !msg.contains(sig),
                "error message leaks the signature: {msg}"
            );
            assert!(!dbg.contains(sig), "error Debug leaks the signature: {dbg}");
        }
    }
}

/// Everything a successfully parsed token must satisfy. `input` is what was given to `parse`.
pub fn check_token(token: &AccessToken, input: &str) {
    let jwt = input.trim_matches(|c: char| c.is_ascii_whitespace());
    assert_eq!(token.as_str(), jwt);
    let sig = signature_segment(jwt);
    assert_eq!(token.unsigned_part().len() + 1 + sig.len(), jwt.len());
    assert_eq!(format!("{}.{}", token.unsigned_part(), sig), jwt);
    assert_eq!(sig.len(), 43, "a 32-byte signature is 43 base64url chars");

    assert!(token.account_sid().starts_with("AC"));
    assert!(token.api_key_sid().starts_with("SK"));
    let _ = token.region();
    let identity = token.identity();
    assert_eq!(identity, token.grants().identity.as_deref());

    // Times: clamped, never panicking.
    for t in [
        Some(token.expires_at()),
        token.not_before(),
        token.issued_at(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(secs(t) <= MAX_UNIX_SECS);
    }

    // Grants: kinds agree with the fields, and serialise.
    let grants = token.grants();
    let kinds: Vec<GrantKind> = grants.kinds().collect();
    for k in GrantKind::ALL {
        assert_eq!(token.has_grant(k), kinds.contains(&k));
        assert_eq!(grants.has(k), kinds.contains(&k));
        let _ = k.wire_key();
    }
    let json = serde_json::to_string(grants).expect("grants serialise");
    // Re-serialisation is stable: what we write, we read back to the same JSON (numbers aside,
    // since serde_json without `float_roundtrip` may move a float by one ulp on the way in).
    if !has_float(&serde_json::from_str::<serde_json::Value>(&json).expect("grants JSON is JSON")) {
        let back: Grants = serde_json::from_str(&json).expect("our own grants JSON reads back");
        assert_eq!(
            &back, grants,
            "grants changed through a serialise/parse cycle"
        );
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    // Debug and Display never print the signature (unless the printed fields themselves hold it).
    let display = token.to_string();
    let debug = format!("{token:?}");
    let _ = format!("{:#?}", grants);
    let printed_fields_hold_it = identity.is_some_and(|i| format!("{i:?}").contains(sig))
        || format!("{:?}", token.account_sid()).contains(sig);
    if !printed_fields_hold_it {
        assert!(
            !display.contains(sig),
            "Display leaks the signature: {display}"
        );
        assert!(!debug.contains(sig), "Debug leaks the signature: {debug}");
    }
    assert!(!display.contains(jwt) && !debug.contains(jwt));

    // Equality and FromStr.
    let again: AccessToken = jwt.parse().expect("a parsed token parses again");
    assert_eq!(&again, token);

    // The time rules, at a few times, against the model when the claims read back exactly.
    let times = Times::of(token);
    for now in interesting_times(token) {
        let got = token.validate_at(now);
        if let Err(e) = &got {
            assert!(matches!(e.code(), 20104 | 20105 | 20157), "{e:?}");
            let _ = e.to_string();
        }
        if let Some(times) = times {
            assert_eq!(
                got,
                times.expect_at(secs(now)),
                "validate_at {:?}",
                secs(now)
            );
        }
        let remaining = token.remaining_at(now);
        if now >= token.expires_at() {
            assert_eq!(remaining, Duration::ZERO);
        }
    }
}

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// HMAC-SHA256, computed here (not by the crate) as the verify target's oracle.
pub fn hs256(secret: &[u8], signed: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signed);
    mac.finalize().into_bytes().into()
}

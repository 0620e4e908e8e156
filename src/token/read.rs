//! Reading a token's text: the token format's checks, in their order, stopping at the first that fails.
//!
//! Besides what the token keeps (one string holding the account SID, the API key SID, the region and
//! the identity), the reading allocates one buffer for the decoded segments: claims are borrowed
//! from the decoded JSON, and the grants are deserialised as [`Grants`] to check them, then dropped
//! but for the identity and which kinds are present ([`AccessToken::grants`] builds them again on
//! first use).
//!
//! [`AccessToken::grants`]: super::AccessToken::grants

use super::grants::Grants;
use super::{kind_bit, TokenError, CONTENT_TYPE, MAX_TOKEN_LEN, SIGNATURE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

// Offsets into the token and its strings are kept as u16.
const _: () = assert!(MAX_TOKEN_LEN <= u16::MAX as usize);

/// What a token keeps of its text, besides the text itself.
pub(super) struct Parsed {
    /// Byte offsets in the (trimmed) text of the `.` before the payload and the `.` before the signature.
    pub(super) payload_dot: u16,
    pub(super) sig_dot: u16,
    /// The account SID, the API key SID, the region and the identity, one after the other.
    pub(super) strings: Box<str>,
    /// Where the account SID, the API key SID and the region end in `strings`.
    pub(super) ends: [u16; 3],
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
    pub(super) iat: Option<u64>,
    pub(super) has_region: bool,
    pub(super) has_identity: bool,
    /// One bit per kind of grant present ([`kind_bit`]).
    pub(super) kinds: u8,
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

/// The claims, kept as text until their rule reads them, so that the first broken rule is the one
/// reported.
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

/// Surrounding ASCII whitespace (a newline from a file or an HTTP body) is not part of a token.
pub(super) fn trim(jwt: &str) -> &str {
    jwt.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// The decoded header and payload, one after the other in one buffer, and where the header ends.
fn decode_segments(header: &str, payload: &str) -> Result<(Vec<u8>, usize), TokenError> {
    let not_base64 =
        |what: &str| TokenError::malformed(format!("the {what} is not unpadded base64url"));
    let mut buf = Vec::with_capacity(
        base64::decoded_len_estimate(header.len()) + base64::decoded_len_estimate(payload.len()),
    );
    URL_SAFE_NO_PAD
        .decode_vec(header, &mut buf)
        .map_err(|_| not_base64("header"))?;
    let header_len = buf.len();
    URL_SAFE_NO_PAD
        .decode_vec(payload, &mut buf)
        .map_err(|_| not_base64("payload"))?;
    Ok((buf, header_len))
}

/// The text of a JSON object; anything else (an array, a string, bytes that are not UTF-8 even
/// inside a string nobody reads) is malformed.
fn json_object_text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, TokenError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| TokenError::malformed(format!("the {what} is not UTF-8")))?;
    if !text.trim_start().starts_with('{') {
        return Err(not_object(what));
    }
    Ok(text)
}

fn not_three_segments() -> TokenError {
    TokenError::malformed("a JWT has three '.'-separated segments")
}

fn not_object(what: &str) -> TokenError {
    TokenError::malformed(format!("the {what} is not a JSON object"))
}

/// The JSON string `raw` holds, if it is one: borrowed from the JSON unless spelt with escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // Valid JSON (the raw value is) without an escape: the text between the quotes is the string.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Whether `raw` is the JSON string `want` (compared as JSON, so escapes are decoded).
fn json_str_is(raw: Option<&RawValue>, want: &str) -> bool {
    raw.and_then(json_str).as_deref() == Some(want)
}

/// A non-negative JSON number, truncated to whole seconds and clamped to the representable range.
pub(super) fn json_seconds(raw: &RawValue) -> Option<u64> {
    // The usual case, a plain integer, without a second JSON parse (JSON has no `+` or leading zero,
    // so what `u64` parses here is exactly the JSON number).
    if let Ok(u) = raw.get().parse::<u64>() {
        return Some(u);
    }
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

/// Runs the token format's checks, in order, on trimmed text.
pub(super) fn read(jwt: &str) -> Result<Parsed, TokenError> {
    // Rule 1: size, segments, base64url, JSON objects.
    if jwt.len() > MAX_TOKEN_LEN {
        return Err(TokenError::malformed(format!(
            "{} bytes is over the {MAX_TOKEN_LEN}-byte limit",
            jwt.len()
        )));
    }
    // Only the short header and signature are searched for dots: a dot left in the long payload
    // fails its decoding, which then reports the segments.
    let (Some(first), Some(last)) = (jwt.find('.'), jwt.rfind('.')) else {
        return Err(not_three_segments());
    };
    if first == last {
        return Err(not_three_segments());
    }
    let (header_b64, payload_b64, sig_b64) =
        (&jwt[..first], &jwt[first + 1..last], &jwt[last + 1..]);
    let (decoded, header_len) = decode_segments(header_b64, payload_b64).map_err(|e| {
        if payload_b64.contains('.') {
            not_three_segments()
        } else {
            e
        }
    })?;
    let (header_bytes, payload_bytes) = decoded.split_at(header_len);
    let header: RawHeader<'_> = serde_json::from_str(json_object_text(header_bytes, "header")?)
        .map_err(|_| not_object("header"))?;
    let payload = json_object_text(payload_bytes, "payload")?;
    let claims =
        serde_json::from_str::<RawClaims<'_>>(payload).map_err(|_| not_object("payload"))?;

    // Rule 2: Twilio's header.
    let region = check_header(&header)?;

    // Rule 3: the signature's shape.
    let mut sig = [0u8; 64];
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
    let api_key_sid = claims
        .iss
        .and_then(json_str)
        .filter(|s| s.starts_with("SK"))
        .ok_or_else(|| TokenError::InvalidIssuer {
            reason: "iss must be an API key SID starting with \"SK\"".into(),
        })?;
    let account_sid = claims
        .sub
        .and_then(json_str)
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

    // Rule 7: grants. Read on their own, as `AccessToken::grants` reads them again on first use
    // (inside the payload they would sit one level deeper, nearer serde_json's nesting limit).
    let grants_raw = claims.grants.ok_or_else(|| TokenError::InvalidGrants {
        reason: "grants is missing".into(),
    })?;
    if !grants_raw.get().starts_with('{') {
        return Err(TokenError::InvalidGrants {
            reason: "grants must be an object".into(),
        });
    }
    let grants = serde_json::from_str::<Grants>(grants_raw.get()).map_err(|e| {
        TokenError::InvalidGrants {
            reason: grants_reason(&e),
        }
    })?;
    let kinds = grants.kinds().fold(0, |bits, kind| bits | kind_bit(kind));

    let region_str = region.as_deref().unwrap_or("");
    let identity = grants.identity.as_deref().unwrap_or("");
    let mut strings = String::with_capacity(
        account_sid.len() + api_key_sid.len() + region_str.len() + identity.len(),
    );
    let mut ends = [0; 3];
    for (end, s) in ends
        .iter_mut()
        .zip([&*account_sid, &*api_key_sid, region_str])
    {
        strings.push_str(s);
        *end = offset(strings.len());
    }
    strings.push_str(identity);
    Ok(Parsed {
        payload_dot: offset(header_b64.len()),
        sig_dot: offset(jwt.len() - sig_b64.len() - 1),
        strings: strings.into_boxed_str(),
        ends,
        exp,
        nbf,
        iat,
        has_region: region.is_some(),
        has_identity: grants.identity.is_some(),
        kinds,
    })
}

/// Rule 2; the header's region, if any.
fn check_header<'a>(header: &RawHeader<'a>) -> Result<Option<Cow<'a, str>>, TokenError> {
    if !json_str_is(header.alg, "HS256") {
        return Err(TokenError::InvalidHeader {
            reason: match (header.alg.and_then(json_str), header.alg) {
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
    match header.twr {
        None => Ok(None),
        Some(raw) => json_str(raw)
            .map(Some)
            .ok_or_else(|| TokenError::InvalidHeader {
                reason: "twr (the region) must be a string".into(),
            }),
    }
}

/// An offset into the token text, or into strings decoded from it (never longer than the text).
fn offset(n: usize) -> u16 {
    debug_assert!(n <= MAX_TOKEN_LEN);
    n as u16
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
    fn json_str_borrows_plain_strings_and_decodes_escaped_ones() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let plain = raw(r#""SK12""#);
        assert!(matches!(json_str(&plain), Some(Cow::Borrowed("SK12"))));
        let escaped = raw(r#""S\u004b12\"""#);
        assert_eq!(json_str(&escaped).as_deref(), Some("SK12\""));
        assert_eq!(json_str(&raw("12")), None);
        assert_eq!(json_str(&raw("null")), None);
    }

    #[test]
    fn segments_are_canonical_unpadded_base64url_only() {
        let decode =
            |payload: &str| decode_segments("e30", payload).map(|(buf, at)| buf[at..].to_vec());
        // "{}" is `e30`; one byte (`{`) is `ew`, two (`{}`) `e30`.
        assert_eq!(decode("e30").unwrap(), b"{}");
        assert_eq!(decode("ew").unwrap(), b"{");
        assert_eq!(decode("").unwrap(), b"");
        for bad in [
            "e30=",  // padding
            "ew==",  // padding
            "e31",   // set bits after the last byte
            "ex",    // set bits after the last byte
            "e30AB", // a length no base64 has
            "e+/A",  // the standard alphabet
            "e30 ",  // whitespace
        ] {
            let err = decode(bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("payload is not unpadded base64url"),
                "{bad}: {err}"
            );
        }
        let err = decode_segments("e30=", "e30").unwrap_err();
        assert!(
            err.to_string().contains("header is not unpadded base64url"),
            "{err}"
        );
    }

    #[test]
    fn extra_dots_are_reported_as_segments_before_any_decoding_error() {
        let segments = "a JWT has three '.'-separated segments";
        for jwt in [
            "a.b.c.d",
            "!.b.c.d",
            "a.b!.c.d",
            "...",
            "a.b.c..",
            "e30.e30.x.x.x",
        ] {
            let err = read(jwt).err().unwrap();
            assert!(err.to_string().contains(segments), "{jwt}: {err}");
        }
        for jwt in ["", "abc", "a.b"] {
            assert!(
                read(jwt).err().unwrap().to_string().contains(segments),
                "{jwt}"
            );
        }
        let err = read("!.b.c").err().unwrap();
        assert!(err.to_string().contains("header is not unpadded"), "{err}");
    }
}

//! Reading a token's text: the token format's checks, in their order, stopping at the first that fails.
//!
//! Besides what the token keeps (one string holding the account SID, the API key SID, the region and
//! the identity), the reading allocates one buffer for the decoded segments and one list of the JSON
//! members ([`json::Object`]): claims are read from the decoded JSON where they stand. The grants
//! are checked where they stand too when they have the usual shape ([`usual_grants`]); any other
//! shape is deserialised as [`Grants`], which decides. Either way only the identity and which kinds
//! are present are kept ([`AccessToken::grants`] builds the full grants on first use).
//!
//! [`AccessToken::grants`]: super::AccessToken::grants

use super::grants::{GrantKind, Grants};
use super::json::{self, Entry, Refusal};
use super::mint::HEADER_B64;
use super::{kind_bit, TokenError, CONTENT_TYPE, MAX_TOKEN_LEN, SIGNATURE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
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

/// The header fields the rules read, where they stand in the header's JSON. A present `null` is
/// a present field (of the wrong type), not an absent one.
#[derive(Default)]
struct RawHeader<'o, 'a> {
    alg: Option<Entry<'o, 'a>>,
    typ: Option<Entry<'o, 'a>>,
    cty: Option<Entry<'o, 'a>>,
    twr: Option<Entry<'o, 'a>>,
}

impl<'o, 'a> RawHeader<'o, 'a> {
    fn read(header: &'o json::Object<'a>) -> RawHeader<'o, 'a> {
        let mut raw = RawHeader::default();
        for member in header.members() {
            let slot = match member.key().as_deref() {
                Some("alg") => &mut raw.alg,
                Some("typ") => &mut raw.typ,
                Some("cty") => &mut raw.cty,
                Some("twr") => &mut raw.twr,
                _ => continue,
            };
            *slot = Some(member);
        }
        raw
    }
}

/// The claims the rules read, where they stand in the payload's JSON, until their rule reads
/// them, so that the first broken rule is the one reported.
#[derive(Default)]
struct RawClaims<'o, 'a> {
    iss: Option<Entry<'o, 'a>>,
    sub: Option<Entry<'o, 'a>>,
    exp: Option<Entry<'o, 'a>>,
    nbf: Option<Entry<'o, 'a>>,
    iat: Option<Entry<'o, 'a>>,
    grants: Option<Entry<'o, 'a>>,
}

impl<'o, 'a> RawClaims<'o, 'a> {
    fn read(payload: &'o json::Object<'a>) -> RawClaims<'o, 'a> {
        let mut raw = RawClaims::default();
        for member in payload.members() {
            let slot = match member.key().as_deref() {
                Some("iss") => &mut raw.iss,
                Some("sub") => &mut raw.sub,
                Some("exp") => &mut raw.exp,
                Some("nbf") => &mut raw.nbf,
                Some("iat") => &mut raw.iat,
                Some("grants") => &mut raw.grants,
                _ => continue,
            };
            *slot = Some(member);
        }
        raw
    }
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

/// The JSON text of the header or the payload, read: one object, no key twice in any object in
/// it. Anything else (an array, a string, bytes that are not UTF-8 even inside a string nobody
/// reads) is malformed.
fn json_object<'a>(bytes: &'a [u8], what: &str) -> Result<json::Object<'a>, TokenError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| TokenError::malformed(format!("the {what} is not UTF-8")))?;
    json::Object::scan(text).map_err(|refusal| match refusal {
        Refusal::NotObject => TokenError::malformed(format!("the {what} is not a JSON object")),
        Refusal::KeyTwice => {
            TokenError::malformed(format!("the {what} has a key twice in one object"))
        }
    })
}

fn not_three_segments() -> TokenError {
    TokenError::malformed("a JWT has three '.'-separated segments")
}

/// Whether the value is the JSON string `want` (compared as JSON, so escapes are decoded).
fn string_is(entry: Option<Entry<'_, '_>>, want: &str) -> bool {
    entry.and_then(|e| e.string()).as_deref() == Some(want)
}

/// A non-negative JSON number, truncated to whole seconds and clamped to the representable range.
pub(super) fn json_seconds(raw: &str) -> Option<u64> {
    // The usual case, a plain integer, without a second JSON parse (JSON has no `+` or leading zero,
    // so what `u64` parses here is exactly the JSON number).
    if let Ok(u) = raw.parse::<u64>() {
        return Some(u);
    }
    let Ok(n) = serde_json::from_str::<serde_json::Number>(raw) else {
        // serde_json refuses numbers beyond f64 (`1e400`); a positive one is simply very late.
        return raw
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
    // Rule 1: size, segments, base64url, JSON objects, no key twice.
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
    // twilio-node's header, which this crate mints too, passes rules 1 and 2 as it is, without a
    // region: recognised by its text, it is neither decoded nor read (see benches/README.md).
    let usual_header = header_b64 == HEADER_B64;
    let header_to_read = if usual_header { "" } else { header_b64 };
    let (decoded, header_len) = decode_segments(header_to_read, payload_b64).map_err(|e| {
        if payload_b64.contains('.') {
            not_three_segments()
        } else {
            e
        }
    })?;
    let (header_bytes, payload_bytes) = decoded.split_at(header_len);
    let header_json = match usual_header {
        true => None,
        false => Some(json_object(header_bytes, "header")?),
    };
    let payload = json_object(payload_bytes, "payload")?;
    let claims = RawClaims::read(&payload);

    // Rule 2: Twilio's header.
    let region = match &header_json {
        None => None,
        Some(header) => check_header(&RawHeader::read(header))?,
    };

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
        .and_then(|e| e.string())
        .filter(|s| s.starts_with("SK"))
        .ok_or_else(|| TokenError::InvalidIssuer {
            reason: "iss must be an API key SID starting with \"SK\"".into(),
        })?;
    let account_sid = claims
        .sub
        .and_then(|e| e.string())
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
        Some(raw) => json_seconds(raw.value()).ok_or_else(|| TokenError::InvalidExpiry {
            reason: "exp must be a non-negative number of seconds".into(),
        })?,
    };

    // Rule 6: the other time claims.
    let time_claim = |raw: Option<Entry<'_, '_>>, name: &str| match raw {
        None => Ok(None),
        Some(raw) => {
            json_seconds(raw.value())
                .map(Some)
                .ok_or_else(|| TokenError::InvalidTimeClaim {
                    reason: format!("{name} must be a non-negative number of seconds"),
                })
        }
    };
    let nbf = time_claim(claims.nbf, "nbf")?;
    let iat = time_claim(claims.iat, "iat")?;

    // Rule 7: grants.
    let grants = claims.grants.ok_or_else(|| TokenError::InvalidGrants {
        reason: "grants is missing".into(),
    })?;
    let (identity, kinds) = check_grants(grants)?;

    let region_str = region.as_deref().unwrap_or("");
    let identity_str = identity.as_deref().unwrap_or("");
    let mut strings = String::with_capacity(
        account_sid.len() + api_key_sid.len() + region_str.len() + identity_str.len(),
    );
    let mut ends = [0; 3];
    for (end, s) in ends
        .iter_mut()
        .zip([&*account_sid, &*api_key_sid, region_str])
    {
        strings.push_str(s);
        *end = offset(strings.len());
    }
    strings.push_str(identity_str);
    Ok(Parsed {
        payload_dot: offset(header_b64.len()),
        sig_dot: offset(jwt.len() - sig_b64.len() - 1),
        strings: strings.into_boxed_str(),
        ends,
        exp,
        nbf,
        iat,
        has_region: region.is_some(),
        has_identity: identity.is_some(),
        kinds,
    })
}

/// Rule 7: `grants` is an object that [`Grants`] reads; its identity and the kinds present.
fn check_grants<'a>(grants: Entry<'_, 'a>) -> Result<(Option<Cow<'a, str>>, u8), TokenError> {
    let text = grants.value();
    if !text.starts_with('{') {
        return Err(TokenError::InvalidGrants {
            reason: "grants must be an object".into(),
        });
    }
    if let Some(usual) = usual_grants(grants) {
        return Ok(usual);
    }
    // Read on their own, as `AccessToken::grants` reads them again on first use (inside the
    // payload they would sit one level deeper, nearer serde_json's nesting limit).
    let grants = serde_json::from_str::<Grants>(text).map_err(|e| TokenError::InvalidGrants {
        reason: grants_reason(&e),
    })?;
    let kinds = grants.kinds().fold(0, |bits, kind| bits | kind_bit(kind));
    Ok((grants.identity.map(Cow::Owned), kinds))
}

/// The identity and the kinds of grants in the shape every helper library writes, read where they
/// stand: a string identity, and known grants whose fields are all known and plain (strings
/// without escapes, voice's `allow` a boolean). Every such object is one [`Grants`] reads, field
/// by field, so the answer is the one deserialising would give. `None` for any other shape,
/// which [`Grants`] itself then decides.
fn usual_grants<'a>(grants: Entry<'_, 'a>) -> Option<(Option<Cow<'a, str>>, u8)> {
    let plain_string = |e: Entry<'_, 'a>| e.plain_str().is_some();
    // An object of plain strings under the given keys only.
    let fields_are = |grant: Entry<'_, 'a>, keys: &[&str]| {
        grant.value().starts_with('{')
            && grant
                .fields()
                .all(|f| f.plain_key().is_some_and(|k| keys.contains(&k)) && plain_string(f))
    };
    let mut identity = None;
    let mut kinds = 0;
    for member in grants.fields() {
        let kind = match member.plain_key()? {
            "identity" => {
                identity = Some(member.string()?);
                continue;
            }
            "chat" => fields_are(
                member,
                &[
                    "service_sid",
                    "endpoint_id",
                    "deployment_role_sid",
                    "push_credential_sid",
                ],
            )
            .then_some(GrantKind::Chat),
            "data_sync" => {
                fields_are(member, &["service_sid", "endpoint_id"]).then_some(GrantKind::Sync)
            }
            "video" => fields_are(member, &["room"]).then_some(GrantKind::Video),
            "task_router" => fields_are(member, &["workspace_sid", "worker_sid", "role"])
                .then_some(GrantKind::TaskRouter),
            "voice" => (member.value().starts_with('{')
                && member.fields().all(|f| match f.plain_key() {
                    Some("push_credential_sid" | "endpoint_id") => plain_string(f),
                    Some("incoming") => {
                        f.value().starts_with('{')
                            && f.fields().all(|a| {
                                a.plain_key() == Some("allow")
                                    && matches!(a.value(), "true" | "false")
                            })
                    }
                    Some("outgoing") => fields_are(f, &["application_sid"]),
                    _ => false,
                }))
            .then_some(GrantKind::Voice),
            _ => None, // `player`, legacy and unknown grants: any JSON, which `Grants` decides
        }?;
        kinds |= kind_bit(kind);
    }
    Some((identity, kinds))
}

/// Rule 2; the header's region, if any.
fn check_header<'a>(header: &RawHeader<'_, 'a>) -> Result<Option<Cow<'a, str>>, TokenError> {
    if !string_is(header.alg, "HS256") {
        return Err(TokenError::InvalidHeader {
            reason: match (header.alg.and_then(|e| e.string()), header.alg) {
                (Some(a), _) => format!("alg is {a:?}, Twilio requires \"HS256\""),
                (None, Some(_)) => "alg is not a string, Twilio requires \"HS256\"".into(),
                (None, None) => "alg is missing, Twilio requires \"HS256\"".into(),
            },
        });
    }
    if !string_is(header.cty, CONTENT_TYPE) {
        return Err(TokenError::InvalidHeader {
            reason: format!("cty must be \"{CONTENT_TYPE}\""),
        });
    }
    if header.typ.is_some() && !string_is(header.typ, "JWT") {
        return Err(TokenError::InvalidHeader {
            reason: "typ must be \"JWT\" when present".into(),
        });
    }
    match header.twr {
        None => Ok(None),
        Some(raw) => raw
            .string()
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
        let raw = |s| s;
        assert_eq!(json_seconds(raw("12")), Some(12));
        assert_eq!(json_seconds(raw("12.9")), Some(12));
        assert_eq!(json_seconds(raw("1e300")), Some(u64::MAX));
        assert_eq!(json_seconds(raw("1e400")), Some(u64::MAX));
        assert_eq!(json_seconds(raw("-1e400")), None);
        assert_eq!(json_seconds(raw("-1")), None);
        assert_eq!(json_seconds(raw("-0.5")), None);
        assert_eq!(json_seconds(raw("\"12\"")), None);
        assert_eq!(json_seconds(raw("null")), None);
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
    fn the_usual_header_reads_as_the_same_header_decoded() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = URL_SAFE_NO_PAD.encode(
            r#"{"iss":"SK1","sub":"AC1","exp":2000000000,"grants":{"identity":"a","chat":{}}}"#,
        );
        let sig = URL_SAFE_NO_PAD.encode([0u8; 32]);
        let spelt = URL_SAFE_NO_PAD.encode(r#"{"cty":"twilio-fpa;v=1","typ":"JWT","alg":"HS256"}"#);
        let usual = read(&format!("{HEADER_B64}.{payload}.{sig}")).unwrap();
        let other = read(&format!("{spelt}.{payload}.{sig}")).unwrap();
        assert_eq!(usual.strings, other.strings);
        assert_eq!(
            (usual.has_region, usual.kinds, usual.exp),
            (other.has_region, other.kinds, other.exp)
        );
        assert_eq!(usual.payload_dot as usize, HEADER_B64.len());
        // The shortcut skips the header only: the payload is read as ever.
        let broken = URL_SAFE_NO_PAD.encode(r#"{"iss":"SK1","iss":"SK1"}"#);
        let err = read(&format!("{HEADER_B64}.{broken}.{sig}")).err().unwrap();
        assert_eq!(err.code(), 20101);
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

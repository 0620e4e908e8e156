//! Helpers shared by the integration tests: hand-made tokens signed with HMAC-SHA256.
#![allow(dead_code)] // each test file uses its own subset

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const API_KEY_SID: &str = "SKfedcba9876543210fedcba9876543210";
pub const SECRET: &str = "tokenkitSecret0123456789abcdefXY";
/// The vectors' pinned time.
pub const NOW: u64 = 1_700_000_000;

pub fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hs256(signed: &str, secret: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    mac.finalize().into_bytes().into()
}

/// `header.payload.signature` from raw header and payload text, signed with [`SECRET`].
pub fn sign_raw(header: &str, claims: &str) -> String {
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = b64(&hs256(&signed, SECRET.as_bytes()));
    format!("{signed}.{sig}")
}

/// A token from header and claims JSON, signed with [`SECRET`].
pub fn sign(header: &Value, claims: &Value) -> String {
    sign_raw(&header.to_string(), &claims.to_string())
}

/// Twilio's header, as twilio-node writes it.
pub fn good_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"})
}

/// Claims of a valid one-hour token issued at [`NOW`].
pub fn good_claims() -> Value {
    json!({
        "jti": format!("{API_KEY_SID}-{NOW}"),
        "grants": {"identity": "alice", "video": {"room": "r1"}},
        "iat": NOW,
        "exp": NOW + 3600,
        "iss": API_KEY_SID,
        "sub": ACCOUNT_SID,
    })
}

/// A valid token whose header has been changed by `edit`.
pub fn with_header(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut header = good_header();
    edit(header.as_object_mut().unwrap());
    sign(&header, &good_claims())
}

/// A valid token whose claims have been changed by `edit`.
pub fn with_claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = good_claims();
    edit(claims.as_object_mut().unwrap());
    sign(&good_header(), &claims)
}

/// Decodes one base64url segment of a token into JSON.
pub fn decode_segment(seg: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
}

/// The vectors file, as shipped in `tests/data` (a copy of `../shared/vectors`).
pub fn vectors() -> Value {
    serde_json::from_str(include_str!("../data/twilio_tokens.json")).unwrap()
}

/// A valid token whose `grants` value is the raw JSON text `grants` (which may repeat keys, as a
/// `serde_json::Value` cannot).
pub fn with_grants_text(grants: &str) -> String {
    let claims = good_claims()
        .to_string()
        .replace(r#"{"identity":"alice","video":{"room":"r1"}}"#, grants);
    sign_raw(&good_header().to_string(), &claims)
}

/// Whether some object in the JSON text `json` has a key twice (keys compared as the strings they
/// spell, escapes decoded); `None` when `json` is not JSON serde_json reads.
pub fn has_duplicate_key(json: &str) -> Option<bool> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;

    /// Any JSON value; `.0` is whether it (or anything inside it) repeats a key.
    struct Dup(bool);
    impl<'de> serde::Deserialize<'de> for Dup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dup, D::Error> {
            d.deserialize_any(DupVisitor)
        }
    }
    struct DupVisitor;
    impl<'de> Visitor<'de> for DupVisitor {
        type Value = Dup;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_str<E>(self, _: &str) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_unit<E>(self) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dup, A::Error> {
            let mut dup = false;
            while let Some(Dup(d)) = seq.next_element()? {
                dup |= d;
            }
            Ok(Dup(dup))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dup, A::Error> {
            let mut seen = HashSet::new();
            let mut dup = false;
            while let Some(key) = map.next_key::<String>()? {
                dup |= !seen.insert(key);
                dup |= map.next_value::<Dup>()?.0;
            }
            Ok(Dup(dup))
        }
    }
    serde_json::from_str::<Dup>(json).ok().map(|d| d.0)
}

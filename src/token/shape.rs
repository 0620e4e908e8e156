//! A check of a token's `grants` object that accepts exactly what [`Grants`]' deserialiser accepts,
//! and fails with the same messages, but builds nothing. Parsing a token keeps only the identity and
//! which kinds of grant are present; [`AccessToken::grants`](super::AccessToken::grants) builds the
//! full [`Grants`] from the token text on first use, and relies on this check having passed.
//!
//! Each shape mirrors one wire type of `grants.rs` field for field, with the same serde attributes
//! and the same name (serde's messages name the type; a `rename` would not change that). Change them together; the tests at the end
//! and `tests/token_lazy_grants.rs` compare the two on hostile input.
//!
//! [`Grants`]: super::grants::Grants

use super::grants::GrantKind;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// What parsing keeps of the `grants` object.
pub(super) struct GrantsShape<'a> {
    /// `grants.identity`, borrowed from the payload unless spelt with escapes.
    pub(super) identity: Option<Cow<'a, str>>,
    /// One [`bit`] per kind present.
    pub(super) kinds: u8,
}

/// The bit of `kind` in [`GrantsShape::kinds`].
pub(super) fn bit(kind: GrantKind) -> u8 {
    1 << kind as u8
}

/// Checks the text of a `grants` object.
pub(super) fn read(json: &str) -> Result<GrantsShape<'_>, serde_json::Error> {
    serde_json::from_str(json)
}

impl<'de> Deserialize<'de> for GrantsShape<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GrantsVisitor;
        impl<'de> Visitor<'de> for GrantsVisitor {
            type Value = GrantsShape<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a grants object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut shape = GrantsShape {
                    identity: None,
                    kinds: 0,
                };
                while let Some(key) = access.next_key::<Key>()? {
                    let kind = match key {
                        Key::Identity => {
                            let Text(identity) = access.next_value().map_err(|_| {
                                de::Error::custom("grants.identity is not a string")
                            })?;
                            shape.identity = Some(identity);
                            continue;
                        }
                        Key::Other => {
                            access.next_value::<AnyValue>()?;
                            continue;
                        }
                        Key::Grant(kind) => kind,
                    };
                    match kind {
                        GrantKind::Chat => access.next_value::<ChatGrant>().map(|_| ())?,
                        GrantKind::Sync => access.next_value::<SyncGrant>().map(|_| ())?,
                        GrantKind::Voice => access.next_value::<VoiceWire>().map(|_| ())?,
                        GrantKind::Video => access.next_value::<VideoGrant>().map(|_| ())?,
                        GrantKind::TaskRouter => {
                            access.next_value::<TaskRouterGrant>().map(|_| ())?
                        }
                        GrantKind::Playback => access.next_value::<PlaybackGrant>().map(|_| ())?,
                    }
                    shape.kinds |= bit(kind);
                }
                Ok(shape)
            }
        }
        deserializer.deserialize_map(GrantsVisitor)
    }
}

/// A key of the `grants` object, matched without allocating.
enum Key {
    Identity,
    Grant(GrantKind),
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                if key == "identity" {
                    return Ok(Key::Identity);
                }
                Ok(GrantKind::ALL
                    .into_iter()
                    .find(|k| k.wire_key() == key)
                    .map_or(Key::Other, Key::Grant))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A JSON string, as `String` reads it; borrowed unless spelt with escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_string(TextVisitor)
    }
}

/// A JSON string, as `String` reads it, kept nowhere.
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyStrVisitor;
        impl Visitor<'_> for AnyStrVisitor {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        deserializer.deserialize_string(AnyStrVisitor)
    }
}

/// Any JSON value, exactly as `serde_json::Value` reads one (numbers beyond `f64` fail, and so does
/// the map key serde_json reserves for raw values), kept nowhere.
struct AnyValue;

/// serde_json's reserved key: `Value` reads a map starting with it as a raw value in a string.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyValueVisitor)
    }
}

struct AnyValueVisitor;

impl<'de> Visitor<'de> for AnyValueVisitor {
    type Value = AnyValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_none<E: de::Error>(self) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<AnyValue, D::Error> {
        AnyValue::deserialize(deserializer)
    }
    fn visit_unit<E: de::Error>(self) -> Result<AnyValue, E> {
        Ok(AnyValue)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        while seq.next_element::<AnyValue>()?.is_some() {}
        Ok(AnyValue)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        match map.next_key::<FirstKey>()? {
            None => {}
            Some(FirstKey::RawValue) => {
                let Text(raw) = map.next_value_seed(RawValueText)?;
                serde_json::from_str::<AnyValue>(&raw).map_err(de::Error::custom)?;
            }
            Some(FirstKey::Plain) => {
                map.next_value::<AnyValue>()?;
                while map.next_entry::<AnyStr, AnyValue>()?.is_some() {}
            }
        }
        Ok(AnyValue)
    }
}

/// The first key of a map inside a `Value`: serde_json's reserved key, or any other.
enum FirstKey {
    RawValue,
    Plain,
}

impl<'de> Deserialize<'de> for FirstKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstKeyVisitor;
        impl Visitor<'_> for FirstKeyVisitor {
            type Value = FirstKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FirstKey, E> {
                Ok(if key == RAW_VALUE_KEY {
                    FirstKey::RawValue
                } else {
                    FirstKey::Plain
                })
            }
        }
        deserializer.deserialize_str(FirstKeyVisitor)
    }
}

/// The string after serde_json's reserved key, read as serde_json reads it (its message included).
struct RawValueText;

impl<'de> DeserializeSeed<'de> for RawValueText {
    type Value = Text<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for RawValueText {
    type Value = Text<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raw value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(s.to_owned())))
    }
}

// The mirrors of the wire types, named as they are. Their fields are never read: deserialising
// them is the check.

/// Mirrors `ChatGrant`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct ChatGrant {
    #[serde(default)]
    service_sid: Option<AnyStr>,
    #[serde(default)]
    endpoint_id: Option<AnyStr>,
    #[serde(default)]
    deployment_role_sid: Option<AnyStr>,
    #[serde(default)]
    push_credential_sid: Option<AnyStr>,
}

/// Mirrors `SyncGrant`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct SyncGrant {
    #[serde(default)]
    service_sid: Option<AnyStr>,
    #[serde(default)]
    endpoint_id: Option<AnyStr>,
}

/// Mirrors `VoiceWire`, which `VoiceGrant` reads through.
#[derive(Deserialize)]
#[allow(dead_code)]
struct VoiceWire {
    #[serde(default)]
    incoming: Option<VoiceIncoming>,
    #[serde(default)]
    outgoing: Option<VoiceOutgoing>,
    #[serde(default)]
    push_credential_sid: Option<AnyStr>,
    #[serde(default)]
    endpoint_id: Option<AnyStr>,
}

/// Mirrors `VoiceIncoming`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct VoiceIncoming {
    #[serde(default)]
    allow: bool,
}

/// Mirrors `VoiceOutgoing`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct VoiceOutgoing {
    #[serde(default)]
    application_sid: Option<AnyStr>,
    #[serde(default)]
    params: Option<AnyValue>,
}

/// Mirrors `VideoGrant`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct VideoGrant {
    #[serde(default)]
    room: Option<AnyStr>,
}

/// Mirrors `TaskRouterGrant`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct TaskRouterGrant {
    #[serde(default)]
    workspace_sid: Option<AnyStr>,
    #[serde(default)]
    worker_sid: Option<AnyStr>,
    #[serde(default)]
    role: Option<AnyStr>,
}

/// Mirrors `PlaybackGrant`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct PlaybackGrant(AnyValue);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::grants::Grants;

    /// The check and the real deserialiser agree: same verdict, same message, same identity and kinds.
    fn agree(json: &str) {
        let shape = read(json);
        let grants = serde_json::from_str::<Grants>(json);
        match (&shape, &grants) {
            (Ok(s), Ok(g)) => {
                assert_eq!(s.identity.as_deref(), g.identity.as_deref(), "{json}");
                let kinds = g.kinds().fold(0, |acc, k| acc | bit(k));
                assert_eq!(s.kinds, kinds, "{json}");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{json}"),
            _ => panic!(
                "{json}: check {:?}, deserialiser {:?}",
                shape.as_ref().err(),
                grants.err()
            ),
        }
    }

    #[test]
    fn the_check_agrees_with_the_deserialiser_on_hostile_grants() {
        let cases = [
            r#"{}"#,
            r#"{"identity":"alice"}"#,
            r#"{"identity":"al\u0069ce","ch\u0061t":{}}"#,
            r#"{"identity":"a","identity":"b"}"#,
            r#"{"identity":"a","identity":1}"#,
            r#"{"identity":null}"#,
            r#"{"identity":["a"]}"#,
            r#"{"chat":{"service_sid":"IS1","endpoint_id":null,"extra":[1,{"x":1e400}]}}"#,
            r#"{"chat":{"service_sid":1}}"#,
            r#"{"chat":{"service_sid":"a","service_sid":"b"}}"#,
            r#"{"chat":["IS1",null,"RL",null]}"#,
            r#"{"chat":["IS1",null,"RL",null,"one too many"]}"#,
            r#"{"chat":[]}"#,
            r#"{"chat":null}"#,
            r#"{"chat":"x"}"#,
            r#"{"chat":{},"chat":{}}"#,
            r#"{"data_sync":{"endpoint_id":true}}"#,
            r#"{"voice":{"incoming":{"allow":true},"outgoing":{"application_sid":"AP","params":{"a":[1,2,{"b":null}]}}}}"#,
            r#"{"voice":{"incoming":{"allow":"yes"}}}"#,
            r#"{"voice":{"incoming":null,"outgoing":null}}"#,
            r#"{"voice":{"outgoing":{"params":1e400}}}"#,
            r#"{"voice":{"outgoing":{"params":99999999999999999999999}}}"#,
            r#"{"voice":{"outgoing":{"params":-1.5e300}}}"#,
            r#"{"voice":[null,[null,{"k":1}],"CR","EP"]}"#,
            r#"{"video":{"room":"r"},"task_router":{"role":"worker"}}"#,
            r#"{"video":{"room":{}}}"#,
            r#"{"task_router":{"worker_sid":[]}}"#,
            r#"{"player":null}"#,
            r#"{"player":{"a":1e400}}"#,
            r#"{"player":[{"$serde_json::private::RawValue":"[1,2]"}]}"#,
            r#"{"player":{"$serde_json::private::RawValue":"[1,2"}}"#,
            r#"{"player":{"$serde_json::private::RawValue":7}}"#,
            r#"{"player":{"$serde_json::private::RawValue":"1","b":2}}"#,
            r#"{"foo":{"$serde_json::private::RawValue":"{\"x\":1e400}"}}"#,
            r#"{"ip_messaging":{"service_sid":"IS"},"rtc":1,"foo":[1e400]}"#,
            r#"{"foo":{"a":1,"a":2}}"#,
            r#"{"foo":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
            r#"{"chat":{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}"#,
            r#"[]"#,
            r#"{"identity":"a""#,
        ];
        for json in cases {
            agree(json);
        }
    }
}

//! Properties: no input makes `parse` or `verify` panic, and a minted token reads back exactly.

use crate::token_support::*;
use access_manager::grants::{
    ChatGrant, PlaybackGrant, SyncGrant, TaskRouterGrant, VideoGrant, VoiceGrant,
};
use access_manager::{AccessToken, Grants};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::time::Duration;

const CASES: u32 = 256;
const KNOWN_KEYS: [&str; 7] = [
    "identity",
    "chat",
    "data_sync",
    "voice",
    "video",
    "task_router",
    "player",
];

/// Every token of the vectors file, valid and broken.
fn real_tokens() -> Vec<String> {
    let doc = vectors();
    doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["invalid"].as_array().unwrap())
        .map(|v| v["token"].as_str().unwrap().to_owned())
        .collect()
}

/// Parsing and verifying must answer, never panic; whatever they answer must be consistent.
fn check_no_panic(jwt: &str) {
    let parsed = AccessToken::parse(jwt);
    let verified = AccessToken::verify(jwt, SECRET.as_bytes(), at(NOW));
    match (&parsed, &verified) {
        (Err(p), Err(v)) => assert_eq!(p, v, "verify must report parse's error first"),
        (Err(p), Ok(_)) => panic!("verify accepted what parse rejected: {p}"),
        (Ok(token), _) => {
            let _ = (
                format!("{token:?}"),
                token.to_string(),
                token.validate_at(at(NOW)),
            );
            let _ = serde_json::to_string(token.grants()).unwrap();
        }
    }
    for e in [parsed.err(), verified.err()].into_iter().flatten() {
        assert!(
            [20101, 20102, 20103, 20104, 20105, 20106, 20107, 20157].contains(&e.code()),
            "{e}"
        );
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    SwapSegments(usize, usize),
    DuplicateSegment(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        prop::sample::select(b"AZaz09-_.=+/ {}\"\n".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        (0..3usize).prop_map(Mutation::DuplicateSegment),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match *m {
        Mutation::Flip(i, b) if len > 0 => bytes[i % len] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Delete(i) if len > 0 => drop(bytes.remove(i % len)),
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        Mutation::SwapSegments(a, b) => {
            let mut segs: Vec<Vec<u8>> = bytes.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
            if a < segs.len() && b < segs.len() {
                segs.swap(a, b);
            }
            *bytes = segs.join(&b'.');
        }
        Mutation::DuplicateSegment(a) => {
            let mut segs: Vec<Vec<u8>> = bytes.split(|c| *c == b'.').map(<[u8]>::to_vec).collect();
            if a < segs.len() {
                segs.insert(a, segs[a].clone());
            }
            *bytes = segs.join(&b'.');
        }
        _ => {}
    }
}

/// JSON without floats: serde_json only promises exact float round trips with `float_roundtrip`.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec(("[a-zA-Z_]{1,8}", json_value()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

fn chat() -> impl Strategy<Value = ChatGrant> {
    (text(), text(), text(), text()).prop_map(|(a, b, c, d)| ChatGrant {
        service_sid: a,
        endpoint_id: b,
        deployment_role_sid: c,
        push_credential_sid: d,
    })
}

fn sync() -> impl Strategy<Value = SyncGrant> {
    (text(), text()).prop_map(|(service_sid, endpoint_id)| SyncGrant {
        service_sid,
        endpoint_id,
    })
}

fn voice() -> impl Strategy<Value = VoiceGrant> {
    (
        any::<bool>(),
        text(),
        prop::option::of(json_object()),
        text(),
        text(),
    )
        .prop_map(|(incoming_allow, app, params, push, endpoint)| VoiceGrant {
            incoming_allow,
            outgoing_application_sid: app,
            outgoing_application_params: params,
            push_credential_sid: push,
            endpoint_id: endpoint,
        })
}

fn task_router() -> impl Strategy<Value = TaskRouterGrant> {
    (text(), text(), text()).prop_map(|(w, k, r)| TaskRouterGrant {
        workspace_sid: w,
        worker_sid: k,
        role: r,
    })
}

#[derive(Debug, Clone)]
struct Inputs {
    grants: Grants,
    ttl: u64,
    iat: u64,
    nbf_before_iat: Option<u64>,
    region: Option<String>,
}

fn inputs() -> impl Strategy<Value = Inputs> {
    let grants = (
        text(),
        prop::option::of(chat()),
        prop::option::of(sync()),
        prop::option::of(voice()),
        prop::option::of(text().prop_map(|room| VideoGrant { room })),
        prop::option::of(task_router()),
        prop::option::of(json_value().prop_map(PlaybackGrant)),
    )
        .prop_map(
            |(identity, chat, data_sync, voice, video, task_router, player)| {
                let mut g = Grants::default();
                g.identity = identity;
                g.chat = chat;
                g.data_sync = data_sync;
                g.voice = voice;
                g.video = video;
                g.task_router = task_router;
                g.player = player;
                g
            },
        );
    (
        grants,
        1..=86_400u64,
        86_400..=4_000_000_000u64,
        prop::option::of(0..=86_400u64),
        text(),
    )
        .prop_map(|(grants, ttl, iat, nbf_before_iat, region)| Inputs {
            grants,
            ttl,
            iat,
            nbf_before_iat,
            region,
        })
}

fn mint(i: &Inputs) -> String {
    let mut b = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET)
        .ttl(Duration::from_secs(i.ttl))
        .issued_at(at(i.iat));
    if let Some(identity) = &i.grants.identity {
        b = b.identity(identity.clone());
    }
    if let Some(before) = i.nbf_before_iat {
        b = b.not_before(at(i.iat - before));
    }
    if let Some(region) = &i.region {
        b = b.region(region.clone());
    }
    let g = i.grants.clone();
    let grants: [Option<access_manager::grants::Grant>; 6] = [
        g.chat.map(Into::into),
        g.data_sync.map(Into::into),
        g.voice.map(Into::into),
        g.video.map(Into::into),
        g.task_router.map(Into::into),
        g.player.map(Into::into),
    ];
    for grant in grants.into_iter().flatten() {
        b = b.grant(grant);
    }
    b.to_jwt().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_strings_never_panic_parse_or_verify(s in any::<String>()) {
        check_no_panic(&s);
    }

    #[test]
    fn jwt_shaped_strings_never_panic_parse_or_verify(s in "[A-Za-z0-9_=+/ -]{0,60}(\\.[A-Za-z0-9_=-]{0,80}){0,4}") {
        check_no_panic(&s);
    }

    #[test]
    fn mutated_real_tokens_never_panic_parse_or_verify(
        token in prop::sample::select(real_tokens()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = token.into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_no_panic(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_and_re_signed_claims_never_panic_parse_or_verify(
        token in prop::sample::select(real_tokens()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        // Mutating the JSON under a valid signature reaches the claim checks behind the signature.
        let segs: Vec<&str> = token.split('.').collect();
        prop_assume!(segs.len() == 3);
        let Ok(header) = base64_decode(segs[0]) else { return Ok(()) };
        let Ok(claims) = base64_decode(segs[1]) else { return Ok(()) };
        let mut claims = claims;
        for m in mutations.iter().filter(|m| !matches!(m, Mutation::SwapSegments(..) | Mutation::DuplicateSegment(_))) {
            apply(&mut claims, m);
        }
        let signed = format!("{}.{}", b64(&header), b64(&claims));
        let jwt = format!("{signed}.{}", b64(&hs256(&signed, SECRET.as_bytes())));
        check_no_panic(&jwt);
    }

    #[test]
    fn a_minted_token_reads_back_every_field(i in inputs()) {
        let jwt = mint(&i);
        let token = AccessToken::parse(&jwt).unwrap();
        prop_assert_eq!(token.as_str(), jwt.as_str());
        prop_assert_eq!(token.identity(), i.grants.identity.as_deref());
        prop_assert_eq!(token.account_sid(), ACCOUNT_SID);
        prop_assert_eq!(token.api_key_sid(), API_KEY_SID);
        prop_assert_eq!(token.region(), i.region.as_deref());
        prop_assert_eq!(token.issued_at(), Some(at(i.iat)));
        prop_assert_eq!(token.expires_at(), at(i.iat + i.ttl));
        prop_assert_eq!(token.not_before(), i.nbf_before_iat.map(|b| at(i.iat - b)));
        prop_assert_eq!(token.grants(), &i.grants);
        // Re-serialised grants are the wire grants, byte for byte.
        let claims = decode_segment(jwt.split('.').nth(1).unwrap());
        prop_assert_eq!(
            serde_json::to_string(token.grants()).unwrap(),
            claims["grants"].to_string()
        );
        let verified = AccessToken::verify(&jwt, SECRET.as_bytes(), at(i.iat)).unwrap();
        prop_assert_eq!(verified, token);
    }

    #[test]
    fn unknown_grant_keys_read_back_untouched_and_in_order(
        identity in any::<String>(),
        unknown in prop::collection::vec(("[a-z_]{1,12}", json_value()), 0..6),
    ) {
        let mut grants = Map::new();
        grants.insert("identity".into(), json!(identity));
        for (k, v) in unknown {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                grants.insert(k, v);
            }
        }
        let grants = Value::Object(grants);
        let mut claims = good_claims();
        claims["grants"] = grants.clone();
        let token = AccessToken::parse(&sign(&good_header(), &claims)).unwrap();
        prop_assert_eq!(serde_json::to_string(token.grants()).unwrap(), grants.to_string());
        prop_assert_eq!(token.grants().other.len(), grants.as_object().unwrap().len() - 1);
    }
}

fn base64_decode(seg: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seg)
}

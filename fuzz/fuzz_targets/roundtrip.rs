//! `arbitrary` builds identity, grants, ttl, iat, nbf, region, SIDs and a secret; the builder mints;
//! the header and claims must be exactly the JSON written out independently here (twilio-node's
//! keys and order), a token over 16 KiB must be refused, and `verify` (at iat) and `parse` must read
//! every field back.
#![no_main]

use access_manager::grants::{
    ChatGrant, Grant, PlaybackGrant, SyncGrant, TaskRouterGrant, VideoGrant, VoiceGrant,
};
use access_manager::{AccessToken, Grants, TokenError, MAX_TOKEN_LEN};
use access_manager_fuzz::{check_token, secs, CAP, MAX_UNIX_SECS};
use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A JSON value whose numbers survive a text round trip exactly (integers, and floats that are
/// quarters of an i32), nested at most a few levels.
fn json(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let pick = if depth == 0 { 5 } else { 7 };
    Ok(match u.choose_index(pick)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => {
            if u.arbitrary()? {
                Value::from(f64::from(u.arbitrary::<i32>()?) / 4.0)
            } else {
                Value::String(u.arbitrary()?)
            }
        }
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(u.arbitrary()?, json(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

#[derive(Debug, Arbitrary)]
struct Chat(
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
#[derive(Debug, Arbitrary)]
struct Voice {
    incoming: bool,
    app: Option<String>,
    has_params: bool,
    push: Option<String>,
    endpoint: Option<String>,
}
#[derive(Debug, Arbitrary)]
struct Input {
    account_suffix: String,
    key_suffix: String,
    secret: Vec<u8>,
    identity: Option<String>,
    chat: Option<Chat>,
    sync: Option<(Option<String>, Option<String>)>,
    voice: Option<Voice>,
    video: Option<Option<String>>,
    task_router: Option<(Option<String>, Option<String>, Option<String>)>,
    player: bool,
    ttl_secs: u32,
    ttl_nanos: u32,
    /// iat seconds, possibly before the epoch.
    iat: i64,
    iat_nanos: u32,
    nbf: Option<i64>,
    region: Option<String>,
}

fn time(s: i64, nanos: u32) -> Option<SystemTime> {
    let d = Duration::new(s.unsigned_abs(), nanos % 1_000_000_000);
    if s >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let params = if input.voice.as_ref().is_some_and(|v| v.has_params) {
        match json(&mut u, 3) {
            Ok(v) => Some(v),
            Err(_) => return,
        }
    } else {
        None
    };
    let player = if input.player {
        match json(&mut u, 3) {
            Ok(v) => Some(v),
            Err(_) => return,
        }
    } else {
        None
    };
    let Some(iat) = time(input.iat, input.iat_nanos) else {
        return;
    };
    let nbf = match input.nbf {
        None => None,
        Some(s) => match time(s, 0) {
            Some(t) => Some(t),
            None => return,
        },
    };
    // Keep the time claims below the accessors' clamp, so they read back exactly.
    let iat_s = secs(iat);
    if iat_s > MAX_UNIX_SECS - 2 * CAP || nbf.is_some_and(|n| secs(n) >= MAX_UNIX_SECS) {
        return;
    }

    let account_sid = format!("AC{}", input.account_suffix);
    let api_key_sid = format!("SK{}", input.key_suffix);
    let mut grants = Grants::default();
    let mut builder = AccessToken::builder(&account_sid, &api_key_sid, &input.secret)
        .ttl(Duration::new(
            u64::from(input.ttl_secs),
            input.ttl_nanos % 1_000_000_000,
        ))
        .issued_at(iat);
    if let Some(id) = &input.identity {
        builder = builder.identity(id);
        grants.identity = Some(id.clone());
    }
    let mut add = |g: Grant| {
        grants.set(g.clone());
        builder = builder.clone().grant(g);
    };
    if let Some(Chat(a, b, c, d)) = input.chat {
        add(Grant::Chat(ChatGrant {
            service_sid: a,
            endpoint_id: b,
            deployment_role_sid: c,
            push_credential_sid: d,
        }));
    }
    if let Some((a, b)) = input.sync {
        add(Grant::Sync(SyncGrant {
            service_sid: a,
            endpoint_id: b,
        }));
    }
    if let Some(v) = input.voice {
        add(Grant::Voice(VoiceGrant {
            incoming_allow: v.incoming,
            outgoing_application_sid: v.app,
            outgoing_application_params: params,
            push_credential_sid: v.push,
            endpoint_id: v.endpoint,
        }));
    }
    if let Some(room) = input.video {
        add(Grant::Video(VideoGrant { room }));
    }
    if let Some((a, b, c)) = input.task_router {
        add(Grant::TaskRouter(TaskRouterGrant {
            workspace_sid: a,
            worker_sid: b,
            role: c,
        }));
    }
    if let Some(p) = player {
        add(Grant::Playback(PlaybackGrant(p)));
    }
    if let Some(n) = nbf {
        builder = builder.not_before(n);
    }
    if let Some(r) = &input.region {
        builder = builder.region(r);
    }

    let ttl = match u64::from(input.ttl_secs) {
        0 => 3600,
        s => s,
    };
    let jwt = builder.to_jwt();
    if ttl > CAP {
        assert_eq!(jwt, Err(TokenError::LifetimeTooLong { lifetime_secs: ttl }));
        return;
    }
    // The token the builder must write, key for key (twilio-node's order), built independently.
    let header = match &input.region {
        None => serde_json::json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}),
        Some(r) => {
            serde_json::json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1", "twr": r})
        }
    };
    let mut claims = Map::new();
    claims.insert("jti".into(), format!("{api_key_sid}-{iat_s}").into());
    claims.insert("grants".into(), serde_json::to_value(&grants).unwrap());
    if let Some(n) = nbf {
        claims.insert("nbf".into(), secs(n).into());
    }
    claims.insert("iat".into(), iat_s.into());
    claims.insert("exp".into(), (iat_s + ttl).into());
    claims.insert("iss".into(), api_key_sid.clone().into());
    claims.insert("sub".into(), account_sid.clone().into());
    let (header, claims) = (header.to_string(), Value::Object(claims).to_string());
    let b64_len = |n: usize| (n * 4).div_ceil(3);
    let expected_len = b64_len(header.len()) + 1 + b64_len(claims.len()) + 1 + 43;
    if expected_len > MAX_TOKEN_LEN {
        // A token parse (and Twilio) would refuse is not minted.
        match jwt {
            Err(TokenError::Malformed { reason }) => assert!(reason.contains("limit"), "{reason}"),
            other => panic!("a {expected_len}-byte token: {other:?}"),
        }
        return;
    }
    let jwt = jwt.expect("valid SIDs, ttl and size mint");
    assert_eq!(jwt.len(), expected_len);
    let mut segs = jwt.split('.');
    let mut decode = || URL_SAFE_NO_PAD.decode(segs.next().unwrap()).unwrap();
    assert_eq!(String::from_utf8(decode()).unwrap(), header);
    assert_eq!(String::from_utf8(decode()).unwrap(), claims);
    // The builder's Debug never shows the secret.
    let bdbg = format!("{builder:?}");
    assert!(bdbg.contains("<redacted>"));

    let token = AccessToken::parse(&jwt).expect("a minted token parses");
    check_token(&token, &jwt);
    assert_eq!(token.account_sid(), account_sid);
    assert_eq!(token.api_key_sid(), api_key_sid);
    assert_eq!(token.region(), input.region.as_deref());
    assert_eq!(token.identity(), input.identity.as_deref());
    assert_eq!(
        secs(token.issued_at().expect("iat is always written")),
        iat_s
    );
    assert_eq!(secs(token.expires_at()), iat_s + ttl);
    assert_eq!(token.not_before().map(secs), nbf.map(secs));

    // What the builder was given, as it reads back: `null` voice params are left out.
    if let Some(v) = &mut grants.voice {
        if v.outgoing_application_params
            .as_ref()
            .is_some_and(Value::is_null)
        {
            v.outgoing_application_params = None;
        }
    }
    assert_eq!(token.grants(), &grants);
    assert_eq!(
        serde_json::to_string(token.grants()).unwrap(),
        serde_json::to_string(&grants).unwrap()
    );

    // Verify at issue time: the signature holds; valid unless nbf is later.
    let got = AccessToken::verify(&jwt, &input.secret, iat);
    match nbf.map(secs) {
        Some(n) if n > iat_s => {
            assert_eq!(got, Err(TokenError::NotYetValid { in_secs: n - iat_s }))
        }
        _ => assert_eq!(got.as_ref(), Ok(&token)),
    }
    // Expired from exp on.
    let exp = UNIX_EPOCH + Duration::from_secs(iat_s + ttl);
    assert_eq!(
        token.validate_at(exp),
        Err(TokenError::Expired { ago_secs: 0 })
    );
    let mut wrong = input.secret.clone();
    wrong.push(1);
    assert_eq!(
        AccessToken::verify(&jwt, &wrong, iat),
        Err(TokenError::SignatureMismatch)
    );
});

//! Parsing and minting against the `jsonwebtoken` crate doing the same work, in the same group.
//!
//! The baseline for `AccessToken::parse` is `jsonwebtoken::dangerous::insecure_decode`: header and
//! claims decoded, no signature check. It decodes into a claims type that uses this crate's own
//! `Grants`, which `AccessToken::parse` also deserialises (to check them, keeping the identity and
//! the kinds), so both sides do the same grants work and the comparison is of the JWT machinery
//! around it. Each token shape is timed on both sides: the twilio-node `all_six_grants` vector,
//! and the peer-shaped token, whose ratio is the one `benches/README.md` holds parse to (wall time,
//! criterion's default).

use access_manager::grants::{
    ChatGrant, PlaybackGrant, SyncGrant, TaskRouterGrant, VideoGrant, VoiceGrant,
};
use access_manager::{AccessToken, AccessTokenBuilder, Grants};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Serialize, Deserialize)]
struct Claims {
    jti: String,
    grants: Grants,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    iat: u64,
    exp: u64,
    iss: String,
    sub: String,
}

fn vector() -> Value {
    let doc: Value =
        serde_json::from_str(include_str!("../tests/data/twilio_tokens.json")).unwrap();
    doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "all_six_grants")
        .unwrap()
        .clone()
}

fn builder_for(v: &Value) -> AccessTokenBuilder {
    let claims = &v["expected_claims"];
    let g: Grants = serde_json::from_value(claims["grants"].clone()).unwrap();
    let mut b = AccessToken::builder(
        claims["sub"].as_str().unwrap(),
        claims["iss"].as_str().unwrap(),
        v["secret"].as_str().unwrap(),
    )
    .identity(g.identity.clone().unwrap())
    .issued_at(UNIX_EPOCH + Duration::from_secs(v["now"].as_u64().unwrap()));
    let grants: [Option<access_manager::grants::Grant>; 6] = [
        g.chat.map(|c: ChatGrant| c.into()),
        g.data_sync.map(|s: SyncGrant| s.into()),
        g.voice.map(|s: VoiceGrant| s.into()),
        g.video.map(|s: VideoGrant| s.into()),
        g.task_router.map(|s: TaskRouterGrant| s.into()),
        g.player.map(|s: PlaybackGrant| s.into()),
    ];
    for grant in grants.into_iter().flatten() {
        b = b.grant(grant);
    }
    b
}

#[path = "support/peer_token.rs"]
mod peer_token;

/// A token shaped like the peer benchmark's (benches/peer): identity, chat, sync, voice, video;
/// 734 bytes there, 731 here (a 6-character identity).
fn peer_shaped() -> String {
    peer_token::peer_token("user-m00001", 1_700_000_000)
}

fn parse(c: &mut Criterion) {
    let v = vector();
    let jwt = v["token"].as_str().unwrap().to_owned();
    let peer = peer_shaped();
    assert!(AccessToken::parse(&jwt).is_ok());
    assert!(jsonwebtoken::dangerous::insecure_decode::<Claims>(&jwt).is_ok());
    let mut group = c.benchmark_group("parse");
    group.bench_function("AccessToken::parse", |b| {
        b.iter(|| AccessToken::parse(black_box(&jwt)).unwrap())
    });
    // An owned token keeps its buffer: no copy of the text (a reshaped buffer is shrunk in place).
    group.bench_function("AccessToken::try_from(String)", |b| {
        b.iter_batched(
            || jwt.clone(),
            |s| AccessToken::try_from(s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("AccessToken::try_from(String with spare capacity)", |b| {
        b.iter_batched(
            || {
                let mut s = String::with_capacity(jwt.len() + 256);
                s.push_str(&jwt);
                s
            },
            |s| AccessToken::try_from(s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("jsonwebtoken::insecure_decode", |b| {
        b.iter(|| jsonwebtoken::dangerous::insecure_decode::<Claims>(black_box(&jwt)).unwrap())
    });
    group.bench_function("AccessToken::parse (peer-shaped token)", |b| {
        b.iter(|| AccessToken::parse(black_box(&peer)).unwrap())
    });
    group.bench_function("jsonwebtoken::insecure_decode (peer-shaped token)", |b| {
        b.iter(|| jsonwebtoken::dangerous::insecure_decode::<Claims>(black_box(&peer)).unwrap())
    });
    // The first `grants()` call builds the full grants from the token text.
    group.bench_function("AccessToken::parse + grants()", |b| {
        b.iter(|| {
            let token = AccessToken::parse(black_box(&jwt)).unwrap();
            black_box(token.grants().kinds().count());
            token
        })
    });
    group.finish();
}

fn mint(c: &mut Criterion) {
    let v = vector();
    let builder = builder_for(&v);
    let jwt = builder.to_jwt().unwrap();
    assert_eq!(
        jwt,
        v["token"].as_str().unwrap(),
        "the bench mints the vector"
    );

    let claims: Claims = serde_json::from_value(v["expected_claims"].clone()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some("twilio-fpa;v=1".into());
    let key = EncodingKey::from_secret(v["secret"].as_str().unwrap().as_bytes()).unwrap();
    let theirs = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let same = AccessToken::verify(&theirs, v["secret"].as_str().unwrap().as_bytes(), {
        UNIX_EPOCH + Duration::from_secs(v["now"].as_u64().unwrap())
    });
    assert!(same.is_ok(), "the baseline mints an equivalent token");

    let mut group = c.benchmark_group("mint");
    group.bench_function("AccessTokenBuilder::to_jwt", |b| {
        b.iter(|| black_box(&builder).to_jwt().unwrap())
    });
    group.bench_function("jsonwebtoken::encode", |b| {
        b.iter(|| jsonwebtoken::encode(black_box(&header), black_box(&claims), &key).unwrap())
    });
    group.finish();
}

criterion_group!(benches, parse, mint);
criterion_main!(benches);

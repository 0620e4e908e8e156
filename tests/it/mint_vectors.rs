//! `AccessToken::builder` mints, byte for byte, the tokens twilio-node minted for the same inputs.

use crate::token_support::*;
use access_manager::grants::{
    ChatGrant, PlaybackGrant, SyncGrant, TaskRouterGrant, VideoGrant, VoiceGrant,
};
use access_manager::{AccessToken, AccessTokenBuilder, TokenError};
use serde_json::Value;
use std::time::Duration;

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Our builder with the vector's inputs; the grant field values come from its expected claims,
/// read field by field (not through our own deserialiser, which would hide a symmetric mistake).
fn builder_for(v: &Value) -> AccessTokenBuilder {
    let inputs = &v["inputs"];
    let grants = &v["expected_claims"]["grants"];
    let mut b = AccessToken::builder(
        v["expected_claims"]["sub"].as_str().unwrap(),
        v["expected_claims"]["iss"].as_str().unwrap(),
        v["secret"].as_str().unwrap(),
    )
    .issued_at(at(v["now"].as_u64().unwrap()));
    if let Some(identity) = inputs["identity"].as_str() {
        b = b.identity(identity);
    }
    if let Some(ttl) = inputs["ttl"].as_u64() {
        b = b.ttl(Duration::from_secs(ttl));
    }
    if let Some(nbf) = inputs["nbf"].as_u64() {
        b = b.not_before(at(nbf));
    }
    if let Some(region) = inputs["region"].as_str() {
        b = b.region(region);
    }
    for kind in inputs["grants"].as_array().unwrap() {
        b = match kind.as_str().unwrap() {
            "chat" => {
                let g = &grants["chat"];
                b.grant(ChatGrant {
                    service_sid: string(g, "service_sid"),
                    endpoint_id: string(g, "endpoint_id"),
                    deployment_role_sid: string(g, "deployment_role_sid"),
                    push_credential_sid: string(g, "push_credential_sid"),
                })
            }
            "sync" => {
                let g = &grants["data_sync"];
                b.grant(SyncGrant {
                    service_sid: string(g, "service_sid"),
                    endpoint_id: string(g, "endpoint_id"),
                })
            }
            "voice" => {
                let g = &grants["voice"];
                b.grant(VoiceGrant {
                    incoming_allow: g["incoming"]["allow"] == Value::Bool(true),
                    outgoing_application_sid: string(&g["outgoing"], "application_sid"),
                    outgoing_application_params: g["outgoing"].get("params").cloned(),
                    push_credential_sid: string(g, "push_credential_sid"),
                    endpoint_id: string(g, "endpoint_id"),
                })
            }
            "video" => b.grant(VideoGrant {
                room: string(&grants["video"], "room"),
            }),
            "task_router" => {
                let g = &grants["task_router"];
                b.grant(TaskRouterGrant {
                    workspace_sid: string(g, "workspace_sid"),
                    worker_sid: string(g, "worker_sid"),
                    role: string(g, "role"),
                })
            }
            "playback" => b.grant(PlaybackGrant(grants["player"].clone())),
            other => panic!("{}: unknown grant input {other}", v["name"]),
        };
    }
    b
}

#[test]
fn minting_the_twilio_node_vectors_gives_the_same_header_claims_and_bytes() {
    let doc = vectors();
    let mut minted = 0;
    for v in doc["valid"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        if v["generator"] != "twilio-node" || v["inputs"]["algorithm"] != "HS256" {
            continue; // we only mint HS256, the one algorithm Twilio accepts
        }
        if v["inputs"]["ttl"].as_u64() > Some(86_400) {
            // twilio-node mints ttl 90000 happily; Twilio then answers 20157, so we refuse to mint it.
            let err = builder_for(v).to_jwt().unwrap_err();
            assert!(
                matches!(
                    err,
                    TokenError::LifetimeTooLong {
                        lifetime_secs: 90_000
                    }
                ),
                "{name}: {err:?}"
            );
            continue;
        }
        let jwt = builder_for(v)
            .to_jwt()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let segments: Vec<&str> = jwt.split('.').collect();
        assert_eq!(segments.len(), 3, "{name}");
        assert_eq!(
            decode_segment(segments[0]),
            v["expected_header"],
            "{name}: header"
        );
        assert_eq!(
            decode_segment(segments[1]),
            v["expected_claims"],
            "{name}: claims"
        );
        // Same keys in the same order, same escapes, same signature: the very same token.
        assert_eq!(jwt, v["token"].as_str().unwrap(), "{name}: token text");
        minted += 1;
    }
    assert!(minted >= 24, "only {minted} vectors minted");
}

#[test]
fn ttl_zero_means_the_default_hour_as_in_twilio_node() {
    let b = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET).issued_at(at(NOW));
    let zero = AccessToken::parse(&b.clone().ttl(Duration::ZERO).to_jwt().unwrap()).unwrap();
    let default = AccessToken::parse(&b.to_jwt().unwrap()).unwrap();
    assert_eq!(zero.expires_at(), at(NOW + 3600));
    assert_eq!(default.expires_at(), at(NOW + 3600));
}

#[test]
fn minting_refuses_sids_twilio_would_refuse() {
    let err = AccessToken::builder(API_KEY_SID, API_KEY_SID, SECRET)
        .to_jwt()
        .unwrap_err();
    assert_eq!(err.code(), 20103);
    let err = AccessToken::builder(ACCOUNT_SID, ACCOUNT_SID, SECRET)
        .to_jwt()
        .unwrap_err();
    assert_eq!(err.code(), 20103);
}

#[test]
fn a_token_minted_now_verifies_now() {
    // Without `issued_at` the builder reads the system clock; verify at the same clock.
    let jwt = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET)
        .identity("alice")
        .to_jwt()
        .unwrap();
    let now = access_manager::clock::Clock::now(&access_manager::clock::SystemClock);
    let token = AccessToken::verify(&jwt, SECRET.as_bytes(), now).unwrap();
    assert!(token.issued_at().unwrap() <= now);
}

#[test]
fn null_voice_params_are_left_out_as_in_twilio_node() {
    let voice = VoiceGrant {
        outgoing_application_sid: Some("AP00000000000000000000000000000005".into()),
        outgoing_application_params: Some(Value::Null),
        ..Default::default()
    };
    let json = serde_json::to_string(&voice).unwrap();
    assert_eq!(
        json,
        r#"{"outgoing":{"application_sid":"AP00000000000000000000000000000005"}}"#
    );
}

#[test]
fn voice_params_without_an_application_sid_survive_re_serialisation() {
    let wire = r#"{"outgoing":{"params":{"a":1}}}"#;
    let voice: VoiceGrant = serde_json::from_str(wire).unwrap();
    assert_eq!(
        voice.outgoing_application_params,
        Some(serde_json::json!({"a": 1}))
    );
    assert_eq!(serde_json::to_string(&voice).unwrap(), wire);
}

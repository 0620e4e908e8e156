//! Mints tokens for the interoperability check in CI (`.ci/interop.sh`), and verifies tokens that
//! the official libraries minted.
//!
//! ```text
//! cargo run --example mint_interop -- mint OUT.json     # our tokens, vectors format
//! cargo run --example mint_interop -- verify IN.json    # AccessToken::verify every token at its now
//! ```
//!
//! Each minted entry carries its `inputs` as twilio-node constructor options (`identity`, `ttl`,
//! `nbf`, `region`, and each grant's options in camelCase), so `.ci/interop/mint_reference.js` can mint
//! the same token with twilio-node and compare.

use access_manager::grants::{
    ChatGrant, Grant, PlaybackGrant, SyncGrant, TaskRouterGrant, VideoGrant, VoiceGrant,
};
use access_manager::AccessToken;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// The pinned minting time, the vectors' `now`.
const NOW: u64 = 1_700_000_000;
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const API_KEY_SID: &str = "SKfedcba9876543210fedcba9876543210";
const SECRET: &str = "interopSecret0123456789abcdefXYZ";

fn chat() -> Value {
    json!({"kind": "chat", "options": {
        "serviceSid": "IS00000000000000000000000000000001",
        "endpointId": "interop:chat:device-1",
        "deploymentRoleSid": "RL00000000000000000000000000000003",
        "pushCredentialSid": "CR00000000000000000000000000000004"}})
}
fn sync() -> Value {
    json!({"kind": "sync", "options": {
        "serviceSid": "IS00000000000000000000000000000002", "endpointId": "interop:sync:device-1"}})
}
fn voice() -> Value {
    json!({"kind": "voice", "options": {
        "incomingAllow": true,
        "outgoingApplicationSid": "AP00000000000000000000000000000005",
        "outgoingApplicationParams": {"mode": "interop", "n": 1, "nested": {"a": [1, 2], "ok": true}},
        "pushCredentialSid": "CR00000000000000000000000000000006",
        "endpointId": "interop:voice:device-1"}})
}
fn video() -> Value {
    json!({"kind": "video", "options": {"room": "interop-room"}})
}
fn task_router() -> Value {
    json!({"kind": "task_router", "options": {
        "workspaceSid": "WS00000000000000000000000000000007",
        "workerSid": "WK00000000000000000000000000000008", "role": "worker"}})
}
fn playback() -> Value {
    json!({"kind": "playback", "options": {"grant": {
        "requestCredentials": null,
        "playbackUrl": "https://example.invalid/interop.m3u8",
        "playerStreamerSid": "VJ00000000000000000000000000000009"}}})
}
fn all_six() -> Vec<Value> {
    vec![chat(), sync(), voice(), video(), task_router(), playback()]
}

/// One token to mint: twilio-node's constructor inputs.
struct Case {
    name: &'static str,
    identity: &'static str,
    ttl: Option<u64>,
    nbf: Option<u64>,
    region: Option<&'static str>,
    grants: Vec<Value>,
}

fn case(name: &'static str, grants: Vec<Value>) -> Case {
    Case {
        name,
        identity: "alice",
        ttl: None,
        nbf: None,
        region: None,
        grants,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("chat_only", vec![chat()]),
        case("sync_only", vec![sync()]),
        case("voice_only", vec![voice()]),
        case(
            "voice_incoming_only",
            vec![json!({"kind": "voice", "options": {"incomingAllow": true}})],
        ),
        case("video_only", vec![video()]),
        case(
            "video_any_room",
            vec![json!({"kind": "video", "options": {}})],
        ),
        case("task_router_only", vec![task_router()]),
        case("playback_only", vec![playback()]),
        case("no_grants", vec![]),
        case("all_six_grants", all_six()),
        Case {
            identity: "José Müller 用户 🎉 שלום \"q\" \\ \t",
            ..case("identity_unicode", vec![chat(), video()])
        },
        Case {
            ttl: Some(180),
            ..case("ttl_180", vec![chat()])
        },
        Case {
            ttl: Some(3600),
            ..case("ttl_3600", vec![sync()])
        },
        Case {
            ttl: Some(86_400),
            ..case("ttl_86400", vec![voice()])
        },
        Case {
            nbf: Some(NOW),
            ..case("nbf_now", vec![video()])
        },
        Case {
            ttl: Some(600),
            nbf: Some(NOW - 300),
            ..case("nbf_past", vec![chat()])
        },
        Case {
            region: Some("ie1"),
            ..case("region_ie1", vec![voice()])
        },
        Case {
            identity: "bob@example.com",
            ttl: Some(7200),
            nbf: Some(NOW - 60),
            region: Some("au1"),
            ..case("region_au1_all_six_nbf", all_six())
        },
    ]
}

fn s(options: &Value, key: &str) -> Option<String> {
    options.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Our grant for twilio-node's constructor options, field by field.
fn grant(spec: &Value) -> Grant {
    let o = &spec["options"];
    match spec["kind"].as_str().unwrap() {
        "chat" => ChatGrant {
            service_sid: s(o, "serviceSid"),
            endpoint_id: s(o, "endpointId"),
            deployment_role_sid: s(o, "deploymentRoleSid"),
            push_credential_sid: s(o, "pushCredentialSid"),
        }
        .into(),
        "sync" => SyncGrant {
            service_sid: s(o, "serviceSid"),
            endpoint_id: s(o, "endpointId"),
        }
        .into(),
        "voice" => VoiceGrant {
            incoming_allow: o["incomingAllow"] == Value::Bool(true),
            outgoing_application_sid: s(o, "outgoingApplicationSid"),
            outgoing_application_params: o.get("outgoingApplicationParams").cloned(),
            push_credential_sid: s(o, "pushCredentialSid"),
            endpoint_id: s(o, "endpointId"),
        }
        .into(),
        "video" => VideoGrant { room: s(o, "room") }.into(),
        "task_router" => TaskRouterGrant {
            workspace_sid: s(o, "workspaceSid"),
            worker_sid: s(o, "workerSid"),
            role: s(o, "role"),
        }
        .into(),
        "playback" => PlaybackGrant(o["grant"].clone()).into(),
        other => panic!("unknown grant kind {other}"),
    }
}

fn mint(out: &str) -> Result<(), String> {
    let mut valid = Vec::new();
    for Case {
        name,
        identity,
        ttl,
        nbf,
        region,
        grants,
    } in cases()
    {
        let mut b = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET)
            .identity(identity)
            .issued_at(UNIX_EPOCH + Duration::from_secs(NOW));
        if let Some(ttl) = ttl {
            b = b.ttl(Duration::from_secs(ttl));
        }
        if let Some(nbf) = nbf {
            b = b.not_before(UNIX_EPOCH + Duration::from_secs(nbf));
        }
        if let Some(region) = region {
            b = b.region(region);
        }
        for spec in &grants {
            b = b.grant(grant(spec));
        }
        let token = b.to_jwt().map_err(|e| format!("{name}: {e}"))?;
        valid.push(json!({
            "name": name,
            "generator": "access-manager",
            "inputs": {
                "account_sid": ACCOUNT_SID, "api_key_sid": API_KEY_SID,
                "identity": identity, "ttl": ttl, "nbf": nbf, "region": region, "grants": grants,
            },
            "now": NOW,
            "secret": SECRET,
            "token": token,
        }));
    }
    let n = valid.len();
    let doc = json!({"valid": valid, "invalid": []});
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))?;
    println!("mint_interop: minted {n} tokens -> {out}");
    Ok(())
}

fn verify(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut failed = Vec::new();
    let all = doc["valid"].as_array().cloned().unwrap_or_default();
    for v in &all {
        let now = UNIX_EPOCH + Duration::from_secs(v["now"].as_u64().unwrap_or(0));
        let token = v["token"].as_str().unwrap_or("");
        let secret = v["secret"].as_str().unwrap_or("");
        if let Err(e) = AccessToken::verify(token, secret.as_bytes(), now) {
            failed.push(format!("{}: {e}", v["name"]));
        }
    }
    if failed.is_empty() {
        println!(
            "mint_interop: access-manager verified all {} tokens of {path}",
            all.len()
        );
        Ok(())
    } else {
        Err(format!(
            "AccessToken::verify rejected:\n  {}",
            failed.join("\n  ")
        ))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["mint", out] => mint(out),
        ["verify", path] => verify(path),
        _ => {
            eprintln!("usage: mint_interop mint OUT.json | mint_interop verify IN.json");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("mint_interop: {e}");
        std::process::exit(1);
    }
}

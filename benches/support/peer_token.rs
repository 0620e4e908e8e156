//! The token the peer benchmark uses (benches/peer): identity, chat, sync, voice and video grants,
//! valid 24 h. Shared by the benches so that every figure is taken on the same shape of token.

use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::AccessToken;
use std::time::{Duration, UNIX_EPOCH};

/// A peer-shaped token for `identity`, issued at unix second `iat`.
pub fn peer_token(identity: &str, iat: u64) -> String {
    AccessToken::builder(
        "AC0123456789abcdef0123456789abcdef",
        "SKfedcba9876543210fedcba9876543210",
        "secret",
    )
    .identity(identity)
    .issued_at(UNIX_EPOCH + Duration::from_secs(iat))
    .ttl(Duration::from_secs(86_400))
    .grant(ChatGrant {
        service_sid: Some("IS00000000000000000000000000000001".into()),
        ..Default::default()
    })
    .grant(SyncGrant {
        service_sid: Some("IS00000000000000000000000000000002".into()),
        ..Default::default()
    })
    .grant(VoiceGrant {
        incoming_allow: true,
        outgoing_application_sid: Some("AP00000000000000000000000000000005".into()),
        ..Default::default()
    })
    .grant(VideoGrant {
        room: Some("room".into()),
    })
    .to_jwt()
    .expect("the peer-shaped token mints")
}

//! The demo's SDK clients: they take a token only after checking it as Twilio's services do.

use super::server::{ApiKey, KeyRing};
use access_manager::clock::{Clock, SystemClock};
use access_manager::{AccessToken, ConsumerError, GrantKind, TokenConsumer, TokenError};
use std::sync::Arc;
use tokio::sync::mpsc;

/// An SDK client as Twilio's services see tokens: it verifies the signature with the account's
/// current API key and checks its own grant, and refuses the token otherwise, with the service's
/// Twilio error code.
pub(super) struct SdkClient {
    pub(super) name: &'static str,
    pub(super) grant: GrantKind,
    /// What the services know: the current API key.
    pub(super) keys: Arc<KeyRing>,
    pub(super) accepted: mpsc::UnboundedSender<(&'static str, AccessToken)>,
}

#[async_trait::async_trait]
impl TokenConsumer for SdkClient {
    fn name(&self) -> &str {
        self.name
    }

    fn required_grant(&self) -> Option<GrantKind> {
        Some(self.grant)
    }

    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        let key = self.keys.current();
        let verified = AccessToken::verify(token.as_str(), key.secret, SystemClock.now())
            .map_err(|error| refusal(token, key, error))?;
        if !verified.has_grant(self.grant) {
            return Err(ConsumerError::new(format!(
                "token lacks the {} grant",
                self.grant
            )));
        }
        let _ = self.accepted.send((self.name, verified));
        Ok(())
    }
}

/// The service's refusal of `token`, checked with `key`.
fn refusal(token: &AccessToken, key: &ApiKey, error: TokenError) -> ConsumerError {
    if error.code() == 20107 && token.api_key_sid() != key.sid {
        // Signed with a key the services no longer hold.
        ConsumerError::rejected(20107, "signature no longer valid: the API key was rotated")
    } else {
        ConsumerError::rejected(error.code(), error)
    }
}

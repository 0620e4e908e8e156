//! The demo's SDK clients: they take a token only after checking it as Twilio's services do.

use super::API_SECRET;
use access_manager::clock::{Clock, SystemClock};
use access_manager::{AccessToken, ConsumerError, GrantKind, TokenConsumer};
use tokio::sync::mpsc;

/// An SDK client as Twilio's services see tokens: it verifies the signature and its own grant, and
/// refuses the token otherwise.
pub(super) struct SdkClient {
    pub(super) name: &'static str,
    pub(super) grant: GrantKind,
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
        let verified = AccessToken::verify(token.as_str(), API_SECRET, SystemClock.now())
            .map_err(ConsumerError::new)?;
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

//! A consumer that keeps each token it is given, as an SDK client does: the update benches time
//! deliveries that store the token, not ones that throw it away.

use access_manager::{AccessToken, ConsumerError, TokenConsumer};
use std::sync::Mutex;

/// Stores every token it takes, dropping the one it held.
#[derive(Debug, Default)]
pub struct Keeping {
    token: Mutex<Option<AccessToken>>,
}

impl Keeping {
    /// The token it holds.
    pub fn kept(&self) -> Option<AccessToken> {
        self.token.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl TokenConsumer for Keeping {
    fn name(&self) -> &str {
        "keeping"
    }
    async fn update_token(&self, token: &AccessToken) -> Result<(), ConsumerError> {
        *self.token.lock().unwrap() = Some(token.clone());
        Ok(())
    }
}

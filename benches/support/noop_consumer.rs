//! A consumer that takes every token and does nothing: the benches measure the manager, not it.

use access_manager::{AccessToken, ConsumerError, TokenConsumer};

/// Accepts every token at once.
#[derive(Debug)]
pub struct NoOp;

#[async_trait::async_trait]
impl TokenConsumer for NoOp {
    fn name(&self) -> &str {
        "noop"
    }
    async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
        Ok(())
    }
}

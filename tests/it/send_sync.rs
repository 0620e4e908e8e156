//! The public types cross threads and tasks: checked at compile time.

use access_manager::clock::{ManualClock, SystemClock};
use access_manager::*;

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync_where_users_need_it() {
    send_sync::<AccessToken>();
    send_sync::<AccessTokenBuilder>();
    send_sync::<TokenError>();
    send_sync::<Grants>();
    send_sync::<AccessManager>();
    send_sync::<AccessManagerBuilder>();
    send_sync::<UpdateReport>();
    send_sync::<UpdateError>();
    send_sync::<RefreshError>();
    send_sync::<BuildError>();
    send_sync::<FetchError>();
    send_sync::<FetchRequest>();
    send_sync::<ConsumerError>();
    send_sync::<ConsumerId>();
    send_sync::<Event>();
    send_sync::<FetchLimiter>();
    send_sync::<Backoff>();
    send_sync::<ManualClock>();
    send_sync::<SystemClock>();
    send_sync::<WeakAccessManager>();
    send_sync::<ServiceAction>();
    send_sync::<Stats>();
    send_sync::<access_manager::store::FileTokenStore>();
    send::<Events>();
}

#[test]
fn the_managers_futures_are_send() {
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let manager = AccessManager::builder().build().unwrap();
    future_is_send(manager.update_token("x"));
    future_is_send(manager.refresh());
    future_is_send(manager.fresh_token(std::time::Duration::ZERO));
    future_is_send(manager.shutdown());
    future_is_send(manager.sign_out());
    let mut events = manager.subscribe();
    future_is_send(events.recv());
}

#[test]
fn plugin_traits_fit_in_arc_dyn() {
    fn object_safe(
        _: Option<std::sync::Arc<dyn TokenFetcher>>,
        _: Option<std::sync::Arc<dyn TokenConsumer>>,
    ) {
    }
    object_safe(None, None);
    let _: Option<Box<dyn access_manager::clock::Clock>> = None;
    let _: Option<Box<dyn access_manager::store::TokenStore>> = None;
}

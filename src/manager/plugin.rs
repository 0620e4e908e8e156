//! Running the app's plugins (fetcher, consumers): their panics caught, and their calls back into
//! their own manager told apart (behaviour 14).
//!
//! The driver polls every fetch and delivery inside a scope naming the manager and the plugin's
//! role. A handle method called from inside that scope (awaited directly by the plugin) knows it
//! runs inside the manager's own plugin, and answers without waiting for what would wait for the
//! caller: a fetcher's `refresh()` would join its own fetch, a consumer's `update_token()` would
//! wait for its own delivery.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Which plugin of which manager is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plugin {
    pub(super) manager: usize,
    pub(super) role: Role,
}

/// The kind of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Fetcher,
    Consumer,
}

tokio::task_local! {
    static RUNNING: Plugin;
}

/// Runs `future` as the plugin `plugin`.
pub(super) fn scope<F: Future>(plugin: Plugin, future: F) -> impl Future<Output = F::Output> {
    RUNNING.scope(plugin, future)
}

/// Whether the caller runs inside manager `manager`'s own plugin of `role`.
pub(super) fn inside(manager: usize, role: Role) -> bool {
    RUNNING
        .try_with(|p| *p == Plugin { manager, role })
        .unwrap_or(false)
}

/// A panic's message, for the failure it becomes.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// Drops `value` (user code may run in its `Drop`), turning a panic into its message.
pub(super) fn drop_caught<T>(value: T) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(move || drop(value)))
        .map_err(|panic| panic_message(&*panic))
}

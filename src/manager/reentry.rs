//! Telling a plugin's call back into its own manager apart (behaviour 14).
//!
//! The driver polls every fetch and delivery inside a scope naming the manager and the plugin's
//! role. A handle method called from inside that scope (awaited directly by the plugin) knows it
//! runs inside the manager's own plugin, and answers without waiting for what would wait for the
//! caller: a fetcher's `refresh()` would join its own fetch, a consumer's `update_token()` would
//! wait for its own delivery.

use std::future::Future;

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

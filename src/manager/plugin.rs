//! Running the app's plugins (fetcher, consumers): their panics caught, their calls bounded on the
//! manager's clock, and their calls back into their own manager told apart (behaviour 14).
//!
//! Every drop of user code is caught too (behaviour 20): a call that times out is dropped here,
//! under `catch_unwind`, so that a value in it whose `Drop` panics fails the call instead of
//! unwinding through the manager's task and closing it.
//!
//! The driver polls every fetch and delivery inside a scope naming the manager and the plugin's
//! role. A handle method called from inside that scope (awaited directly by the plugin) knows it
//! runs inside the manager's own plugin, and answers without waiting for what would wait for the
//! caller: a fetcher's `refresh()` would join its own fetch, a consumer's `update_token()` would
//! wait for its own delivery.

use crate::clock::Clock;
use futures_util::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

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

/// How a bounded call of user code ended.
pub(super) enum Ended<T> {
    Answered(T),
    /// It panicked, before returning its future or inside it: the panic's message.
    Panicked(String),
    TimedOut,
}

/// Runs `call` (user code) for at most `timeout` of elapsed time on `clock`. A panic, before or
/// inside its future, is caught; a call that times out is dropped here, its `Drop` caught too.
pub(super) async fn bounded<F: Future>(
    call: F,
    clock: &dyn Clock,
    timeout: Duration,
) -> Ended<F::Output> {
    // Boxed, so that it outlives the `select!` and is dropped below, caught.
    let mut call = Box::pin(AssertUnwindSafe(call).catch_unwind());
    // The timer is made only if the call does not answer at its first poll.
    let timer = async { clock.sleep(timeout).await };
    let ended = tokio::select! {
        biased;
        result = &mut call => match result {
            Ok(answer) => Ended::Answered(answer),
            Err(panic) => Ended::Panicked(panic_message(&*panic)),
        },
        () = timer => Ended::TimedOut,
    };
    // A panic here only follows a timeout (a finished call holds nothing): the call has failed.
    let _ = drop_caught(call);
    ended
}

//! The synchronization types that the handles and the driver share: std's and futures' in every
//! build, loom's in the model-checking tests (`--cfg loom`, see TESTING.md), so that loom explores
//! every interleaving of the code as it ships.
//!
//! Loom's types stand in only for this crate's own tests (`all(test, loom)`): an app that model
//! checks its own code with `--cfg loom` still builds this crate on std.

#[cfg(not(all(test, loom)))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, MutexGuard,
};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, MutexGuard,
};

/// Loom's waker cell, under the name and signature of the futures one it stands in for.
#[cfg(all(test, loom))]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(all(test, loom))]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

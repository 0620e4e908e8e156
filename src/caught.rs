//! A value from user code, dropped under `catch_unwind` wherever it is dropped (behaviour 20).
//!
//! The errors a fetcher or a consumer returns wrap the app's own error value, whose `Drop` is the
//! app's code. The manager drops such errors in its own task (a failure nobody waits for, a report
//! whose caller went away), and a panic there would unwind through the manager and close it.
//! Holding the value in a [`Caught`] makes every drop of it safe, in the manager or in the app.

use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Holds a value whose `Drop` may panic, and drops it with the panic caught (the panic hook still
/// reports it).
pub(crate) struct Caught<T>(Option<T>);

impl<T> Caught<T> {
    pub(crate) fn new(value: T) -> Self {
        Caught(Some(value))
    }
}

impl<T> Deref for Caught<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // `None` only inside `drop`.
        self.0
            .as_ref()
            .expect("a Caught value is present until dropped")
    }
}

impl<T> Drop for Caught<T> {
    fn drop(&mut self) {
        let value = self.0.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::Caught;

    struct PanicsWhenDropped;
    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            panic!("dropped");
        }
    }

    #[test]
    fn a_value_whose_drop_panics_is_dropped_without_unwinding() {
        drop(Caught::new(PanicsWhenDropped));
    }

    #[test]
    fn the_value_is_dropped_with_its_holder() {
        let shared = std::sync::Arc::new(());
        let held = Caught::new(shared.clone());
        assert_eq!(std::sync::Arc::strong_count(&shared), 2);
        drop(held);
        assert_eq!(std::sync::Arc::strong_count(&shared), 1);
    }
}

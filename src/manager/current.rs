//! The current token as the handles read it: published by the driver, read without a lock, and
//! cached per thread, so that a read is one load, one comparison and one `Arc` increment.
//!
//! The driver stores each new token in an `ArcSwapOption` and then its address in `address`. A
//! reading thread keeps, in a small table of its own, the token it last read of each manager (one
//! entry per manager, chosen by the manager's address). A read whose cached token is at the
//! published address returns a clone of it: the cache holds that token alive, so no other token
//! can have been allocated at its address since, and the address is the token's identity. Any
//! other read (first read on the thread, a new token, two managers sharing an entry, a read inside
//! [`TokenCell::with`]) loads from the `ArcSwapOption` and, when it can, refreshes the entry.
//!
//! A token that stops being current (replaced, or its manager gone) bumps [`RETIRED`]; at its next
//! read of any manager, a thread that sees the bump drops the entries only its table still holds.
//! So a retired token stays in memory until each thread that read it reads again, or ends.

use crate::token::Inner;
use crate::AccessToken;
use arc_swap::ArcSwapOption;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Entries in each thread's table (a power of two).
const ENTRIES: usize = 8;
const ENTRY_BITS: u32 = ENTRIES.trailing_zeros();

/// How many tokens have stopped being current, process-wide.
static RETIRED: AtomicU64 = AtomicU64::new(0);

struct Cache {
    /// [`RETIRED`] when this thread last dropped its retired entries.
    swept: u64,
    entries: [Option<AccessToken>; ENTRIES],
}

impl Cache {
    /// Drops the entries of retired tokens that no one else holds, if any retired since the last
    /// sweep.
    fn sweep(&mut self) {
        let retired = RETIRED.load(Ordering::Acquire);
        if retired == self.swept {
            return;
        }
        self.swept = retired;
        for entry in &mut self.entries {
            // Only this entry holds it: it is no manager's current token, nor the app's. Dropping
            // it runs none of the app's code.
            if entry
                .as_ref()
                .is_some_and(|t| Arc::strong_count(t.shared()) == 1)
            {
                *entry = None;
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            swept: 0,
            entries: [None, None, None, None, None, None, None, None],
        })
    };
}

pub(crate) struct TokenCell {
    token: ArcSwapOption<Inner>,
    /// The published token's address; 0 before the first.
    address: AtomicUsize,
}

/// The manager is gone: its token is retired (released first, so that a sweep finds it unheld).
impl Drop for TokenCell {
    fn drop(&mut self) {
        if self.token.swap(None).is_some() {
            RETIRED.fetch_add(1, Ordering::Release);
        }
    }
}

impl TokenCell {
    pub(crate) fn new() -> Self {
        TokenCell {
            token: ArcSwapOption::empty(),
            address: AtomicUsize::new(0),
        }
    }

    /// Publishes `token`. Only the driver calls this (one writer).
    pub(crate) fn publish(&self, token: &AccessToken) {
        let replaced = self.token.swap(Some(token.shared().clone()));
        self.address.store(token.address(), Ordering::Release);
        if replaced.is_some() {
            drop(replaced);
            RETIRED.fetch_add(1, Ordering::Release);
        }
    }

    /// The published token, from the `ArcSwapOption` (no cache).
    pub(crate) fn load(&self) -> Option<AccessToken> {
        self.token.load_full().map(AccessToken::from_shared)
    }

    /// This manager's entry in every thread's table.
    fn entry(&self) -> usize {
        let at = std::ptr::from_ref(self) as usize;
        // Fibonacci hashing: the table index from the address's well-mixed top bits.
        at.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> (usize::BITS - ENTRY_BITS)
    }

    /// The current token.
    pub(crate) fn get(&self) -> Option<AccessToken> {
        let address = self.address.load(Ordering::Acquire);
        if address == 0 {
            return None;
        }
        let entry = self.entry();
        let cached = CACHE.try_with(|cache| {
            // Busy only inside `with`'s callback: that read goes to the `ArcSwapOption`.
            let mut cache = cache.try_borrow_mut().ok()?;
            cache.sweep();
            let slot = &mut cache.entries[entry];
            match slot {
                Some(token) if token.address() == address => Some(token.clone()),
                _ => {
                    let token = self.load()?;
                    // The token it replaces has no `Drop` of the app's to run here.
                    *slot = Some(token.clone());
                    Some(token)
                }
            }
        });
        match cached {
            Ok(Some(token)) => Some(token),
            _ => self.load(),
        }
    }

    /// Calls `f` with the current token, borrowed from this thread's table: no `Arc` is touched
    /// when the entry is current.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&AccessToken>) -> R) -> R {
        let address = self.address.load(Ordering::Acquire);
        if address == 0 {
            return f(None);
        }
        let entry = self.entry();
        let mut f = Some(f);
        let done = CACHE.try_with(|cache| {
            let current = |c: &Cache| {
                c.entries[entry]
                    .as_ref()
                    .is_some_and(|t| t.address() == address)
            };
            if !cache.try_borrow().is_ok_and(|c| current(&c)) {
                // Refreshed unless a callback of `with` up the stack holds the table.
                let mut c = cache.try_borrow_mut().ok()?;
                c.sweep();
                c.entries[entry] = Some(self.load()?);
            }
            let c = cache.try_borrow().ok()?;
            let token = c.entries[entry].as_ref()?;
            let f = f.take()?;
            Some(f(Some(token)))
        });
        match (done, f.take()) {
            (Ok(Some(result)), _) => result,
            (_, Some(f)) => f(self.load().as_ref()),
            // `f` ran and so returned its result above: this arm is never taken.
            (_, None) => unreachable!("with's callback ran but its result was lost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;
    use std::time::{Duration, UNIX_EPOCH};

    fn token(identity: &str) -> AccessToken {
        let jwt = AccessToken::builder(
            "AC0123456789abcdef0123456789abcdef",
            "SKfedcba9876543210fedcba9876543210",
            "secret",
        )
        .identity(identity)
        .issued_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .to_jwt()
        .unwrap();
        AccessToken::parse(&jwt).unwrap()
    }

    /// Publishes a fresh token in `cell` and gives back a weak reference to it.
    fn publish(cell: &TokenCell, identity: &str) -> Weak<Inner> {
        let t = token(identity);
        cell.publish(&t);
        Arc::downgrade(t.shared())
    }

    /// On a thread of its own, so that no other test's reads share the table.
    fn on_fresh_thread(f: impl FnOnce() + Send) {
        std::thread::scope(|s| s.spawn(f).join().unwrap());
    }

    /// Another manager with its own entry in the table, so that reading it leaves `cell`'s alone.
    fn other_than(cell: &TokenCell) -> Box<TokenCell> {
        // All alive at once: a cell dropped while searching would give its address to the next.
        let mut cells: Vec<Box<TokenCell>> = (0..64).map(|_| Box::new(TokenCell::new())).collect();
        let i = cells
            .iter()
            .position(|c| c.entry() != cell.entry())
            .expect("64 cells at 64 addresses all in one entry");
        cells.swap_remove(i)
    }

    #[test]
    fn a_replaced_token_is_released_at_the_threads_next_read_of_any_manager() {
        on_fresh_thread(|| {
            let cell = Box::new(TokenCell::new());
            let other = other_than(&cell);
            let first = publish(&cell, "alice");
            let _other = publish(&other, "dave");
            assert_eq!(cell.get().unwrap().identity(), Some("alice"));
            let _second = publish(&cell, "bob");
            assert!(
                first.upgrade().is_some(),
                "cached until the thread reads again"
            );
            assert_eq!(other.get().unwrap().identity(), Some("dave"));
            assert!(
                first.upgrade().is_none(),
                "the replaced token is still held"
            );
            assert_eq!(cell.get().unwrap().identity(), Some("bob"));
        });
    }

    #[test]
    fn a_gone_managers_token_is_released_at_the_threads_next_read_of_another() {
        on_fresh_thread(|| {
            let gone = Box::new(TokenCell::new());
            let other = other_than(&gone);
            let held = publish(&gone, "alice");
            let _other = publish(&other, "bob");
            assert!(gone.get().is_some() && other.with(|t| t.is_some()));
            drop(gone);
            assert!(
                held.upgrade().is_some(),
                "cached until the thread reads again"
            );
            assert_eq!(other.get().unwrap().identity(), Some("bob"));
            assert!(
                held.upgrade().is_none(),
                "the gone manager's token is still held"
            );
        });
    }

    #[test]
    fn a_sweep_never_takes_a_token_from_its_manager_or_the_app() {
        on_fresh_thread(|| {
            let (a, b) = (TokenCell::new(), TokenCell::new());
            let current = publish(&a, "alice");
            let kept = token("bob");
            b.publish(&kept);
            assert!(a.get().is_some() && b.get().is_some());
            let _ = publish(&b, "carol"); // retires `kept`, which the app still holds
            assert_eq!(a.get().unwrap().identity(), Some("alice")); // sweeps
            assert!(current.upgrade().is_some());
            assert_eq!(kept.identity(), Some("bob"));
            assert_eq!(b.get().unwrap().identity(), Some("carol"));
        });
    }
}

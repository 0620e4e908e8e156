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
//! A replaced token stays alive in a reading thread's entry until that thread next reads the same
//! manager (or another one sharing the entry), or ends: at most [`ENTRIES`] tokens per thread.

use crate::token::Inner;
use crate::AccessToken;
use arc_swap::ArcSwapOption;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Entries in each thread's table (a power of two).
const ENTRIES: usize = 8;
const ENTRY_BITS: u32 = ENTRIES.trailing_zeros();

thread_local! {
    static CACHE: RefCell<[Option<AccessToken>; ENTRIES]> =
        const { RefCell::new([None, None, None, None, None, None, None, None]) };
}

pub(crate) struct TokenCell {
    token: ArcSwapOption<Inner>,
    /// The published token's address; 0 before the first.
    address: AtomicUsize,
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
        self.token.store(Some(token.shared().clone()));
        self.address.store(token.address(), Ordering::Release);
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
            let slot = &mut cache[entry];
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
            let current = |c: &[Option<AccessToken>; ENTRIES]| {
                c[entry].as_ref().is_some_and(|t| t.address() == address)
            };
            if !cache.try_borrow().is_ok_and(|c| current(&c)) {
                // Refreshed unless a callback of `with` up the stack holds the table.
                let mut c = cache.try_borrow_mut().ok()?;
                c[entry] = Some(self.load()?);
            }
            let c = cache.try_borrow().ok()?;
            let token = c[entry].as_ref()?;
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

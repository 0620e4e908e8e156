//! The driver's token store: the stored token loaded at start, each new current token saved, the
//! store cleared on sign-out. Store calls run on tokio's blocking pool, one at a time, so that a slow
//! disk never holds up the runtime's threads; a failing store is a warning and a count, never a
//! stop.

use super::super::stats::bump;
use super::schedule::{Fetching, Next};
use super::{Driver, Source};
use crate::store::TokenStore;
use crate::AccessToken;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// A store call.
enum Op {
    Load,
    Save(AccessToken),
    Clear,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Save(_) => "save",
            Op::Clear => "clear",
        }
    }
}

/// The store and its calls: one running, and the latest one asked for since.
pub(super) struct Persistence {
    store: Arc<dyn TokenStore>,
    running: Option<(&'static str, JoinHandle<io::Result<Option<String>>>)>,
    /// Only the latest matters: a newer save, or a clear, replaces an older save.
    next: Option<Op>,
    /// The stored token has not been read yet: the first automatic fetch waits for it.
    pub(super) loading: bool,
}

impl Persistence {
    pub(super) fn new(store: Arc<dyn TokenStore>, load: bool) -> Self {
        let mut persistence = Persistence {
            store,
            running: None,
            next: None,
            loading: load,
        };
        if load {
            persistence.queue(Op::Load);
        }
        persistence
    }

    fn queue(&mut self, op: Op) {
        if self.running.is_some() {
            self.next = Some(op);
            return;
        }
        let store = self.store.clone();
        let name = op.name();
        let call = move || match op {
            Op::Load => store.load(),
            Op::Save(token) => store.save(token.as_str()).map(|()| None),
            Op::Clear => store.clear().map(|()| None),
        };
        self.running = Some((name, tokio::task::spawn_blocking(call)));
    }

    pub(super) fn save(&mut self, token: &AccessToken) {
        self.queue(Op::Save(token.clone()));
    }

    pub(super) fn clear(&mut self) {
        self.queue(Op::Clear);
    }

    /// A finished call: its name and what it gave; the next one is started.
    fn poll_done(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(&'static str, io::Result<Option<String>>)> {
        let Some((name, call)) = &mut self.running else {
            return Poll::Pending;
        };
        let name = *name;
        let result = match Pin::new(call).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(join)) => Err(io::Error::other(format!("the store panicked: {join}"))),
        };
        self.running = None;
        if let Some(op) = self.next.take() {
            self.queue(op);
        }
        Poll::Ready((name, result))
    }
}

impl Driver {
    /// Takes what the store's finished calls gave; `true` when one finished.
    pub(super) fn poll_store(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(persistence) = &mut self.persistence else {
            return false;
        };
        let Poll::Ready((op, result)) = persistence.poll_done(cx) else {
            return false;
        };
        match result {
            Err(error) => {
                bump(&self.shared.counters.store_failures);
                // An OS error names a path at most; a store must not put the token in its errors.
                tracing::warn!(op, %error, "token store failed; the manager goes on without it");
                if op == "load" {
                    self.on_loaded(None);
                }
            }
            Ok(stored) if op == "load" => self.on_loaded(stored),
            Ok(_) => {}
        }
        true
    }

    /// The stored token, if any, becomes current when it passes `update_token`'s rules and no
    /// token arrived meanwhile; a bad one is cleared. Then fetching starts as usual. Nothing
    /// happens when the app signed out meanwhile.
    fn on_loaded(&mut self, stored: Option<String>) {
        match &mut self.persistence {
            Some(persistence) if persistence.loading => persistence.loading = false,
            _ => return,
        }
        let now = self.shared.clock.now();
        // A token that arrived meanwhile is newer news: the stored one is left to be overwritten.
        if let Some(jwt) = stored.filter(|_| self.current.is_none()) {
            let checked = AccessToken::try_from(jwt)
                .map_err(super::super::error::UpdateError::Invalid)
                .and_then(|token| self.check(&token, now).map(|changed| (token, changed)));
            match checked {
                Ok((token, _)) => {
                    tracing::info!("stored token taken");
                    self.install_and_publish(token, Source::Stored, now, None);
                }
                Err(error) => {
                    self.reject(&error);
                    if let Some(persistence) = &mut self.persistence {
                        persistence.clear();
                    }
                }
            }
        }
        // A fetch the app started meanwhile plans the next one when it ends.
        if matches!(self.fetching, Fetching::Idle | Fetching::Planned(_)) {
            self.plan(Next::Renew { spacing: None }, now);
        }
    }
}

//! The driver's token store: the stored token loaded at start, each new current token saved, the
//! store cleared on sign-out. Store calls run on tokio's blocking pool, one after another, so that
//! a slow disk never holds up the runtime's threads. Each call has a deadline on elapsed time
//! ([`STORE_TIMEOUT`]): past it the manager goes on without the store and ignores the late answer.
//! A failing or blocking store is a warning and a count, never a stop.
//!
//! Order is what keeps a signed-out token off the disk. A call on the pool cannot be cancelled, so
//! the next call starts only once the one before has returned, whoever started it (even after the
//! manager stopped); a clear drops the save queued before it, and runs before the one queued after.

use super::super::stats::bump;
use super::schedule::{Fetching, Next};
use super::{Driver, Source};
use crate::clock::{Clock, Sleep};
use crate::store::{TokenStore, STORE_TIMEOUT};
use crate::AccessToken;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a store call gives: the stored token for a load, nothing for the others.
type Answer = io::Result<Option<String>>;

/// A `sign_out()` caller, answered once the store is cleared (or could not be).
pub(super) type Cleared = oneshot::Sender<io::Result<()>>;

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

/// The store call on the blocking pool.
enum Running {
    /// Within its deadline: its answer is taken. `waiters` are the sign-out callers of a clear.
    OnTime {
        op: &'static str,
        call: JoinHandle<Answer>,
        deadline: Sleep,
        waiters: Vec<Cleared>,
    },
    /// Past its deadline: the manager went on without it and will ignore its answer, but the next
    /// call still waits for it to return.
    Late { call: JoinHandle<Answer> },
}

/// What runs once the running call has returned: the clear first, then the save.
#[derive(Default)]
struct Queued {
    /// A clear, with the sign-out callers waiting for it.
    clear: Option<Vec<Cleared>>,
    /// The latest token to save; a newer one replaces it, a clear drops it.
    save: Option<AccessToken>,
}

/// What happened to the running call.
pub(super) enum Finished {
    /// It returned within its deadline.
    Answered { op: &'static str, answer: Answer },
    /// Its deadline passed.
    TimedOut { op: &'static str },
    /// It returned after its deadline: the answer is ignored.
    Late,
}

/// The store, its running call and what waits for it. Only the driver touches it.
pub(super) struct Persistence {
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    running: Option<Running>,
    queued: Queued,
    /// Disconnects once the last call started has returned: the next call waits for it.
    turn: Option<mpsc::Receiver<()>>,
    /// The stored token has not been read yet: the first automatic fetch waits for it.
    pub(super) loading: bool,
}

impl Persistence {
    pub(super) fn new(store: Arc<dyn TokenStore>, clock: Arc<dyn Clock>, load: bool) -> Self {
        let mut persistence = Persistence {
            store,
            clock,
            running: None,
            queued: Queued::default(),
            turn: None,
            loading: load,
        };
        if load {
            persistence.start(Op::Load, Vec::new());
        }
        persistence
    }

    /// Starts `op` on the blocking pool; it runs once the call started before it has returned.
    fn start(&mut self, op: Op, waiters: Vec<Cleared>) {
        let name = op.name();
        let (call, turn) = call_after(self.turn.take(), self.store.clone(), op);
        self.turn = Some(turn);
        self.running = Some(Running::OnTime {
            op: name,
            call: tokio::task::spawn_blocking(call),
            deadline: self.clock.sleep(STORE_TIMEOUT),
            waiters,
        });
    }

    pub(super) fn save(&mut self, token: &AccessToken) {
        if self.running.is_none() {
            self.start(Op::Save(token.clone()), Vec::new());
        } else {
            self.queued.save = Some(token.clone());
        }
    }

    /// Clears the store after the running call; `waiter`, if any, is answered once it has run. A
    /// save queued before never runs.
    pub(super) fn clear(&mut self, waiter: Option<Cleared>) {
        self.queued.save = None;
        let mut waiters: Vec<Cleared> = waiter.into_iter().collect();
        match &self.running {
            None => self.start(Op::Clear, waiters),
            // The store is stuck: the caller hears so now; the clear still runs if it returns.
            Some(Running::Late { .. }) => {
                tell(waiters, Err(&timed_out()));
                self.queued.clear.get_or_insert_with(Vec::new);
            }
            Some(Running::OnTime { .. }) => {
                self.queued
                    .clear
                    .get_or_insert_with(Vec::new)
                    .append(&mut waiters);
            }
        }
    }

    /// The manager stops: nothing more is saved or loaded. A queued clear still runs.
    pub(super) fn stop(&mut self) {
        self.queued.save = None;
        self.loading = false;
    }

    /// Whether the manager may close: no call it waits for is running (a late one is not waited
    /// for).
    pub(super) fn settled(&self) -> bool {
        !matches!(self.running, Some(Running::OnTime { .. }))
    }

    /// What happened to the running call, if anything; the next queued call is started.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Finished> {
        let finished = match self.running.as_mut() {
            None => return Poll::Pending,
            Some(Running::Late { call }) => match Pin::new(call).poll(cx) {
                Poll::Ready(_) => Finished::Late,
                Poll::Pending => return Poll::Pending,
            },
            Some(Running::OnTime {
                op,
                call,
                deadline,
                waiters,
            }) => {
                if let Poll::Ready(joined) = Pin::new(call).poll(cx) {
                    let answer = joined.unwrap_or_else(|join| {
                        Err(io::Error::other(format!("the store panicked: {join}")))
                    });
                    tell(std::mem::take(waiters), answer.as_ref().map(|_| ()));
                    Finished::Answered { op, answer }
                } else if deadline.as_mut().poll(cx).is_ready() {
                    let op = *op;
                    tell(std::mem::take(waiters), Err(&timed_out()));
                    if let Some(queued) = &mut self.queued.clear {
                        // Queued behind a stuck call: it runs if the call ever returns.
                        tell(std::mem::take(queued), Err(&timed_out()));
                    }
                    if let Some(Running::OnTime { call, .. }) = self.running.take() {
                        self.running = Some(Running::Late { call });
                    }
                    return Poll::Ready(Finished::TimedOut { op });
                } else {
                    return Poll::Pending;
                }
            }
        };
        self.running = None;
        if let Some(waiters) = self.queued.clear.take() {
            self.start(Op::Clear, waiters);
        } else if let Some(token) = self.queued.save.take() {
            self.start(Op::Save(token), Vec::new());
        }
        Poll::Ready(finished)
    }
}

/// The manager is gone with a clear still queued (behind a late call, or the driver dropped with
/// its runtime): it runs anyway, after the running call. Its callers, if any are left, hear that
/// the manager stopped first.
impl Drop for Persistence {
    fn drop(&mut self) {
        if self.queued.clear.take().is_none() {
            return;
        }
        let (call, _) = call_after(self.turn.take(), self.store.clone(), Op::Clear);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(call)),
            // Outside any runtime (its last task dropped as it shut down): a thread of its own.
            Err(_) => drop(std::thread::spawn(call)),
        }
    }
}

/// `op` as a blocking call that first waits for `before` (the previous call's turn) to disconnect,
/// and the turn of the next call, which disconnects once this one has returned.
fn call_after(
    before: Option<mpsc::Receiver<()>>,
    store: Arc<dyn TokenStore>,
    op: Op,
) -> (impl FnOnce() -> Answer + Send + 'static, mpsc::Receiver<()>) {
    let (done, turn) = mpsc::channel::<()>();
    let call = move || {
        if let Some(before) = before {
            // Disconnected once the call before returned (or panicked): calls never overlap.
            let _ = before.recv();
        }
        let answer = match op {
            Op::Load => store.load(),
            Op::Save(token) => store.save(token.as_str()).map(|()| None),
            Op::Clear => store.clear().map(|()| None),
        };
        drop(done);
        answer
    };
    (call, turn)
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the token store did not answer in time",
    )
}

/// Tells each sign-out caller how the clear went.
fn tell(waiters: Vec<Cleared>, result: Result<(), &io::Error>) {
    for waiter in waiters {
        // io::Error is not Clone; its kind and message are what the caller needs.
        let copy = result.map_err(|e| io::Error::new(e.kind(), e.to_string()));
        let _ = waiter.send(copy);
    }
}

impl Driver {
    /// Takes what the store's running call gave; `true` when something happened.
    pub(super) fn poll_store(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(persistence) = &mut self.persistence else {
            return false;
        };
        let Poll::Ready(finished) = persistence.poll(cx) else {
            return false;
        };
        match finished {
            Finished::Answered { op, answer } => {
                if let Err(error) = &answer {
                    bump(&self.shared.counters.store_failures);
                    // An OS error names a path at most; a store must not put the token in its errors.
                    tracing::warn!(op, %error, "token store failed; the manager goes on without it");
                }
                if op == "load" {
                    self.on_loaded(answer);
                }
            }
            Finished::TimedOut { op } => {
                bump(&self.shared.counters.store_timeouts);
                tracing::warn!(
                    op,
                    timeout_secs = STORE_TIMEOUT.as_secs(),
                    "token store did not answer in time; the manager goes on without it"
                );
                if op == "load" {
                    self.on_loaded(Err(timed_out()));
                }
            }
            Finished::Late => {}
        }
        true
    }

    /// The manager has stopped: `Ready` once the store's last calls are done (a save in flight
    /// has landed, a queued clear has run) or past their deadlines, so that no save lands after
    /// `shutdown()` returns.
    pub(super) fn poll_store_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.poll_store(cx) {}
        match &self.persistence {
            Some(persistence) if !persistence.settled() => Poll::Pending,
            _ => Poll::Ready(()),
        }
    }

    /// The stored token, if any, becomes current when it passes `update_token`'s rules and no
    /// token arrived meanwhile; a file that holds no usable token is cleared. Then fetching starts
    /// as usual. Nothing happens when the app signed out meanwhile, or for a late answer.
    fn on_loaded(&mut self, loaded: Answer) {
        match &mut self.persistence {
            Some(persistence) if persistence.loading => persistence.loading = false,
            _ => return,
        }
        let now = self.shared.clock.now();
        // A token that arrived meanwhile is newer news: the stored one is left to be overwritten.
        let unusable = match loaded {
            _ if self.current.is_some() => false,
            Ok(Some(jwt)) => {
                let checked = AccessToken::try_from(jwt)
                    .map_err(super::super::error::UpdateError::Invalid)
                    .and_then(|token| self.check(&token, now).map(|changed| (token, changed)));
                match checked {
                    Ok((token, _)) => {
                        tracing::info!("stored token taken");
                        self.install_and_publish(token, Source::Stored, now, None);
                        false
                    }
                    Err(error) => {
                        self.reject(&error);
                        true
                    }
                }
            }
            Ok(None) => false,
            // Over the size limit, not text, not a regular file: no token is in there.
            Err(error) => error.kind() == io::ErrorKind::InvalidData,
        };
        if unusable {
            if let Some(persistence) = &mut self.persistence {
                persistence.clear(None);
            }
        }
        // A fetch the app started meanwhile plans the next one when it ends.
        if matches!(self.fetching, Fetching::Idle | Fetching::Planned(_)) {
            self.plan(Next::Renew { spacing: None }, now);
        }
    }
}

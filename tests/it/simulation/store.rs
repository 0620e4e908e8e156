//! The simulated token store: in memory, on the history's clock, of one kind drawn per history:
//! fast; failing (calls fail at random); slow (each call takes a drawn time on the clock, some past
//! the manager's store deadline); blocking (from a drawn call on, every call hangs until the
//! history ends). It records every change of what it holds, so that the checks can tell whether a
//! token came back after a sign-out.
//!
//! Its calls run on tokio's blocking pool, on threads of their own: the quiet system waits for
//! each call that can return to have returned (`settle`), so that a history replays the same.

use super::rng::{draw, Rng, SharedRng};
use access_manager::clock::{Clock, ManualClock};
use access_manager::store::TokenStore;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Fast,
    Failing,
    Slow,
    /// Every call from this one on (0 for the first) hangs until the history ends.
    Blocking {
        from: u64,
    },
}

impl StoreKind {
    /// A store of this kind may leave a sign-out unanswered for a while, or answer it `Err`.
    pub fn may_fail(self) -> bool {
        self != StoreKind::Fast
    }
}

#[derive(Default)]
struct State {
    held: Option<String>,
    /// Every change of what the store holds, in order.
    writes: Vec<Option<String>>,
    calls: u64,
    entered: u64,
    returned: u64,
    /// The call running waits for the clock to reach this (`Some(None)`: for the end).
    waits_for: Option<Option<SystemTime>>,
    /// The history ended: every call returns at once.
    open: bool,
}

pub struct SimStore {
    pub kind: StoreKind,
    clock: ManualClock,
    rng: SharedRng,
    state: Mutex<State>,
    moved: Condvar,
}

impl SimStore {
    pub fn new(kind: StoreKind, clock: ManualClock, rng: Rng) -> Arc<SimStore> {
        Arc::new(SimStore {
            kind,
            clock,
            rng: Arc::new(Mutex::new(rng)),
            state: Mutex::default(),
            moved: Condvar::new(),
        })
    }

    /// Draws a kind, or none, from the store's own generator (the history's is left as it was).
    pub fn draw_kind(rng: &mut Rng) -> Option<StoreKind> {
        if !rng.chance(40) {
            return None;
        }
        Some(match rng.below(4) {
            0 => StoreKind::Fast,
            1 => StoreKind::Failing,
            2 => StoreKind::Slow,
            _ => StoreKind::Blocking { from: rng.below(6) },
        })
    }

    /// Runs `f` on every write so far, without copying them.
    pub fn with_writes<T>(&self, f: impl FnOnce(&[Option<String>]) -> T) -> T {
        f(&self.state.lock().unwrap().writes)
    }

    pub fn writes_len(&self) -> usize {
        self.state.lock().unwrap().writes.len()
    }

    /// Calls that have begun.
    pub fn entered(&self) -> u64 {
        self.state.lock().unwrap().entered
    }

    /// Calls entered plus calls returned: grows whenever the store does anything.
    pub fn activity(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state.entered + state.returned
    }

    /// A call is running (waiting or not).
    pub fn busy(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.entered > state.returned
    }

    /// A call is running and waits for the clock to move, or for the end.
    pub fn waiting(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.entered > state.returned && Self::held(&state, self.clock.now())
    }

    fn held(state: &State, now: SystemTime) -> bool {
        match state.waits_for {
            Some(Some(until)) => !state.open && now < until,
            Some(None) => !state.open,
            None => false,
        }
    }

    /// The clock moved: calls waiting for it look again. Then waits (on this thread, without
    /// sleeping) until no call that can return is still running.
    pub fn settle(&self) {
        {
            let _state = self.state.lock().unwrap();
            self.moved.notify_all();
        }
        for _ in 0..1_000_000 {
            {
                let state = self.state.lock().unwrap();
                let now = self.clock.now();
                let settled = state.entered == state.returned || Self::held(&state, now);
                if settled {
                    break;
                }
            }
            std::thread::yield_now();
        }
        // The pool thread hands its answer to the manager's task a moment after returning.
        for _ in 0..16 {
            std::thread::yield_now();
        }
    }

    /// The history ends: every call returns, now and later.
    pub fn open_all(&self) {
        self.state.lock().unwrap().open = true;
        self.moved.notify_all();
        self.settle();
    }

    fn call<T>(&self, op: impl FnOnce(&mut State) -> T) -> io::Result<T> {
        let calls = self.state.lock().unwrap().calls;
        let (wait, fail) = draw(&self.rng, |r| match self.kind {
            StoreKind::Fast => (Some(Duration::ZERO), false),
            StoreKind::Failing => (Some(Duration::ZERO), r.chance(40)),
            StoreKind::Slow => (
                Some(r.duration(Duration::ZERO, Duration::from_secs(8))),
                r.chance(10),
            ),
            StoreKind::Blocking { from } => ((calls < from).then_some(Duration::ZERO), false),
        });
        let mut state = self.state.lock().unwrap();
        state.calls += 1;
        state.entered += 1;
        let until = wait.map(|wait| self.clock.now() + wait);
        state.waits_for = Some(until);
        while !state.open && until.is_none_or(|until| self.clock.now() < until) {
            state = self.moved.wait(state).unwrap();
        }
        state.waits_for = None;
        let result = if fail {
            Err(io::Error::other("simulated store failure"))
        } else {
            Ok(op(&mut state))
        };
        state.returned += 1;
        result
    }
}

impl TokenStore for SimStore {
    fn load(&self) -> io::Result<Option<String>> {
        self.call(|state| state.held.clone())
    }

    fn save(&self, jwt: &str) -> io::Result<()> {
        self.call(|state| {
            state.held = Some(jwt.to_owned());
            state.writes.push(state.held.clone());
        })
    }

    fn clear(&self) -> io::Result<()> {
        self.call(|state| {
            state.held = None;
            state.writes.push(None);
        })
    }
}

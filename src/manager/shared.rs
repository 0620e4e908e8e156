//! What the handles and the driver share: the published token, the mailbox (the one way in, with
//! the record of which consumers are registered), the event channel and the counters. Only the
//! driver writes the token and the counters; handles read them and post commands. The mailbox's
//! lock, closed flag and waker come from `crate::sync`, so that loom model-checks them as they are
//! (`loom_tests`, TESTING.md "Model checking").

use super::call::HeldConsumer;
use super::error::{RefreshError, UpdateError, UpdateReport};
use super::service::ServiceAction;
use super::stats::Counters;
use crate::clock::Clock;
use crate::consumer::ConsumerId;
use crate::event::{Event, Events};
use crate::sync::{AtomicBool, AtomicWaker, Mutex, MutexGuard, Ordering};
use crate::{AccessToken, GrantKind, TokenError};
use arc_swap::ArcSwapOption;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot, Notify};

#[cfg(all(test, loom))]
mod loom_tests;

pub(super) type ReportReply = oneshot::Sender<Result<UpdateReport, UpdateError>>;
pub(super) type FetchReply = oneshot::Sender<Result<AccessToken, RefreshError>>;

/// What a handle asks of the driver.
pub(super) enum Command {
    /// A token the app pushed (parsed; the driver validates it).
    Update {
        token: AccessToken,
        reply: ReportReply,
        /// Sent from inside one of this manager's consumers: answered without waiting for
        /// deliveries, which would wait for the caller.
        from_consumer: bool,
    },
    /// A token the app pushed did not even parse.
    Rejected(TokenError),
    Refresh {
        min_remaining: Option<Duration>,
        /// Sent from inside this manager's own fetcher: answered without joining a fetch, which
        /// would wait for the caller.
        from_fetcher: bool,
        reply: FetchReply,
    },
    Register(Registration),
    Unregister(ConsumerId),
    /// A service refused the current token with `code`: the driver decides and answers.
    ServiceRefused {
        code: u32,
        reply: oneshot::Sender<ServiceAction>,
    },
    SignOut {
        reply: oneshot::Sender<()>,
        /// Answered once the store is cleared.
        cleared: oneshot::Sender<std::io::Result<()>>,
    },
    Resume,
    Shutdown,
}

/// A consumer being registered.
pub(super) struct Registration {
    pub(super) id: ConsumerId,
    pub(super) consumer: Box<dyn HeldConsumer>,
    pub(super) name: Arc<str>,
    pub(super) required: Option<GrantKind>,
}

#[derive(Default)]
struct Mailbox {
    queue: VecDeque<Command>,
    members: Members,
    /// Every handle is gone: the driver stops.
    handles_gone: bool,
}

/// Which consumers are registered: the one record of membership, so that `unregister` and
/// `consumer_count` answer at once, whatever thread registered the consumer.
///
/// Ids are assigned here, under the mailbox lock that stores them and queues their `Register`:
/// an id exists only once it is recorded, and the driver sees registrations in the order of their
/// ids. (An id drawn before the lock, as from a shared counter, could be recorded after a larger
/// one, and a record kept in id order would then lose it.) Each operation is one hash-set step, so
/// no caller holds the lock for more than a constant amount of work.
///
/// The driver holds the consumers themselves (for their calls) and never reads this back; it
/// removes a consumer here only when it finds that the app dropped it.
#[derive(Default)]
struct Members {
    /// The last id handed out (0: none yet).
    last_id: u64,
    registered: HashSet<ConsumerId>,
}

/// The current token as handles read it, with the issuer clock offset it is judged with.
pub(super) struct Published {
    pub(super) token: AccessToken,
    /// Issuer clock minus manager clock, seconds (0 unless clock-skew estimation applies one).
    pub(super) applied_offset: i64,
}

pub(super) struct Shared {
    /// The current token: written by the driver only, read by handles without a lock.
    pub(super) current: ArcSwapOption<Published>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) counters: Counters,
    /// Issuer clock minus manager clock, seconds, as last estimated; `i64::MIN` for none. Written
    /// by the driver only, which never reads it.
    estimated_offset: AtomicI64,
    mailbox: Mutex<Mailbox>,
    driver_waker: AtomicWaker,
    /// Made on the first subscription: a manager nobody listens to holds no event buffer.
    events: OnceLock<broadcast::Sender<Event>>,
    event_capacity: usize,
    /// The driver has stopped: commands are refused. Set once, under the mailbox lock, so that a
    /// command is either queued before it (and dropped by `close`) or refused after it; read
    /// without the lock by `is_closed`.
    closed: AtomicBool,
    closed_notify: Notify,
}

/// How many dropped consumers `forget_consumers` removes under one lock.
const FORGET_AT_ONCE: usize = 64;

/// Locks a mutex whose data stays consistent even if a holder panicked (no user code runs under
/// these locks).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `t` moved by `secs` seconds (either way), saturating at the representable ends.
pub(super) fn shift(t: SystemTime, secs: i64) -> SystemTime {
    let by = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        crate::clock::saturating_add(t, by)
    } else {
        t.checked_sub(by).unwrap_or(UNIX_EPOCH)
    }
}

impl Shared {
    pub(super) fn new(clock: Arc<dyn Clock>, event_capacity: usize) -> Self {
        Shared {
            current: ArcSwapOption::empty(),
            clock,
            counters: Counters::default(),
            estimated_offset: AtomicI64::new(i64::MIN),
            mailbox: Mutex::new(Mailbox::default()),
            driver_waker: AtomicWaker::new(),
            events: OnceLock::new(),
            event_capacity,
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
        }
    }

    /// This manager's identity, for telling its own plugins' calls apart.
    pub(super) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Queues a command for the driver; `false` once the driver has stopped.
    pub(super) fn send(&self, command: Command) -> bool {
        let mut mailbox = lock(&self.mailbox);
        if self.is_closed() {
            return false;
        }
        mailbox.queue.push_back(command);
        drop(mailbox);
        self.driver_waker.wake();
        true
    }

    /// Moves the queued commands into `inbox` (swapped, so that neither queue gives up its
    /// buffer); `true` once every handle is gone. Registers the driver's waker first, so that a
    /// command queued after this wakes it.
    pub(super) fn take_commands(
        &self,
        inbox: &mut VecDeque<Command>,
        waker: &std::task::Waker,
    ) -> bool {
        self.driver_waker.register(waker);
        let mut mailbox = lock(&self.mailbox);
        std::mem::swap(&mut mailbox.queue, inbox);
        mailbox.handles_gone
    }

    /// The last handle is gone: wakes the driver to stop.
    pub(super) fn handles_gone(&self) {
        lock(&self.mailbox).handles_gone = true;
        self.driver_waker.wake();
    }

    /// Registers a consumer: a fresh id, recorded and sent to the driver in one step. After
    /// shutdown the id is registered nowhere.
    pub(super) fn register(&self, make: impl FnOnce(ConsumerId) -> Registration) -> ConsumerId {
        let mut mailbox = lock(&self.mailbox);
        mailbox.members.last_id += 1;
        let id = ConsumerId(mailbox.members.last_id);
        if self.is_closed() {
            return id;
        }
        mailbox.members.registered.insert(id);
        mailbox.queue.push_back(Command::Register(make(id)));
        drop(mailbox);
        self.driver_waker.wake();
        id
    }

    /// Unregisters a consumer; `false` when it was not registered (or is already gone).
    pub(super) fn unregister(&self, id: ConsumerId) -> bool {
        let mut mailbox = lock(&self.mailbox);
        if !mailbox.members.registered.remove(&id) {
            return false;
        }
        if !self.is_closed() {
            mailbox.queue.push_back(Command::Unregister(id));
        }
        drop(mailbox);
        self.driver_waker.wake();
        true
    }

    /// The driver found these consumers dropped by the app. A few at a time, so that
    /// registrations waiting for the lock wait for no more than a constant amount of work.
    pub(super) fn forget_consumers(&self, gone: &[ConsumerId]) {
        for some in gone.chunks(FORGET_AT_ONCE) {
            let mut mailbox = lock(&self.mailbox);
            for id in some {
                mailbox.members.registered.remove(id);
            }
        }
    }

    pub(super) fn consumer_count(&self) -> usize {
        lock(&self.mailbox).members.registered.len()
    }

    pub(super) fn clock_offset(&self) -> Option<i64> {
        match self.estimated_offset.load(Ordering::Acquire) {
            i64::MIN => None,
            secs => Some(secs),
        }
    }

    pub(super) fn set_estimated_offset(&self, secs: i64) {
        self.estimated_offset.store(secs, Ordering::Release);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends an event to the subscribers, if there are any; never blocks.
    pub(super) fn emit(&self, make: impl FnOnce() -> Event) {
        if let Some(tx) = self.events.get() {
            if tx.receiver_count() > 0 {
                let _ = tx.send(make());
            }
        }
    }

    /// Marks the driver stopped: refuses further commands and drops the queued ones (their callers
    /// then answer `Closed`), tells subscribers, and wakes `shutdown()` callers.
    pub(super) fn close(&self) {
        let dropped = {
            // Under the mailbox lock, so that `subscribe` either sees `closed` or gets `Closed`.
            let mut mailbox = lock(&self.mailbox);
            let members = std::mem::take(&mut mailbox.members.registered);
            self.emit(|| Event::Closed);
            self.closed.store(true, Ordering::Release);
            (std::mem::take(&mut mailbox.queue), members)
        };
        drop(dropped);
        self.closed_notify.notify_waiters();
    }

    /// Waits until the driver has stopped.
    pub(super) async fn closed(&self) {
        let closed = self.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if !self.is_closed() {
            closed.await;
        }
    }

    pub(super) fn subscribe(&self) -> Events {
        let mailbox = lock(&self.mailbox);
        if self.is_closed() {
            return Events::closed();
        }
        let tx = self
            .events
            .get_or_init(|| broadcast::channel(self.event_capacity).0);
        let rx = tx.subscribe();
        drop(mailbox);
        Events::new(rx)
    }
}

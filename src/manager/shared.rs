//! State shared by the handles and the driver task. Only the driver changes the token; handles
//! read it lock-free and send the driver commands through the mailbox (or, for `update_token` when
//! the driver is idle, run its turn themselves: see `driver::run_inline`).

use super::current::TokenCell;
use super::driver::Driver;
use super::error::{RefreshError, UpdateError, UpdateReport};
use crate::clock::Clock;
use crate::consumer::ConsumerId;
use crate::event::{Event, Events};
use crate::{AccessToken, GrantKind, TokenConsumer, TokenError};
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot, Notify};

pub(crate) enum Command {
    Update {
        token: AccessToken,
        reply: oneshot::Sender<Result<UpdateReport, UpdateError>>,
    },
    Rejected(TokenError),
    Refresh {
        min_remaining: Option<Duration>,
        reply: oneshot::Sender<Result<AccessToken, RefreshError>>,
    },
    Registered(ConsumerId),
    Unregistered(ConsumerId),
    Shutdown,
}

#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) queue: VecDeque<Command>,
    /// Every handle is gone: the driver stops.
    pub(crate) handles_gone: bool,
    /// The driver has stopped: commands are refused.
    pub(crate) closed: bool,
}

/// A registered consumer and its delivery state.
pub(crate) struct Slot {
    pub(crate) id: ConsumerId,
    pub(crate) consumer: Weak<dyn TokenConsumer>,
    pub(crate) name: Arc<str>,
    pub(crate) required: Option<GrantKind>,
    /// A delivery is in flight.
    pub(crate) busy: bool,
    /// The current token has not been delivered yet (it is, once the delivery in flight ends).
    pub(crate) wants_current: bool,
    /// Registered, and no token planned for it yet: the `Registered` command delivers one.
    pub(crate) needs_current: bool,
}

pub(crate) struct Shared {
    /// The driver, polled by its task or, when idle, run by a handle; `None` once it has stopped.
    pub(crate) driver: Mutex<Option<Driver>>,
    pub(crate) current: TokenCell,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) mailbox: Mutex<Mailbox>,
    pub(crate) driver_waker: AtomicWaker,
    pub(crate) events: OnceLock<broadcast::Sender<Event>>,
    pub(crate) event_capacity: usize,
    pub(crate) consumers: Mutex<Vec<Slot>>,
    pub(crate) next_consumer_id: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) closed_notify: Notify,
    /// Issuer clock minus manager clock, seconds, as last estimated; `i64::MIN` for none.
    pub(crate) estimated_offset: AtomicI64,
    /// The offset timers and validation use (0 unless clock-skew estimation is on).
    pub(crate) applied_offset: AtomicI64,
}

/// `t + d`, saturating far in the future instead of overflowing (a huge timeout never fires).
pub(crate) fn after(t: SystemTime, d: Duration) -> SystemTime {
    // A century on is "never" for a token that lives a day, and every platform's clock holds it.
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}

/// `t` moved by `secs` seconds (either way), saturating at the representable ends.
pub(crate) fn shift(t: SystemTime, secs: i64) -> SystemTime {
    let by = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t.checked_add(by).unwrap_or(t)
    } else {
        t.checked_sub(by).unwrap_or(UNIX_EPOCH)
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (no user code runs under
/// these locks).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(clock: Arc<dyn Clock>, event_capacity: usize) -> Self {
        Shared {
            driver: Mutex::new(None),
            current: TokenCell::new(),
            clock,
            mailbox: Mutex::new(Mailbox::default()),
            driver_waker: AtomicWaker::new(),
            events: OnceLock::new(),
            event_capacity,
            consumers: Mutex::new(Vec::new()),
            next_consumer_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            estimated_offset: AtomicI64::new(i64::MIN),
            applied_offset: AtomicI64::new(0),
        }
    }

    /// Queues a command for the driver; `false` once the driver has stopped.
    pub(crate) fn send(&self, command: Command) -> bool {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return false;
        }
        mailbox.queue.push_back(command);
        drop(mailbox);
        self.driver_waker.wake();
        true
    }

    pub(crate) fn clock_offset(&self) -> Option<i64> {
        match self.estimated_offset.load(Ordering::Acquire) {
            i64::MIN => None,
            secs => Some(secs),
        }
    }

    pub(crate) fn applied_offset(&self) -> i64 {
        self.applied_offset.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends an event to the subscribers, if there are any; never blocks.
    pub(crate) fn emit(&self, make: impl FnOnce() -> Event) {
        if let Some(tx) = self.events.get() {
            if tx.receiver_count() > 0 {
                let _ = tx.send(make());
            }
        }
    }

    pub(crate) fn event_sender(&self) -> &broadcast::Sender<Event> {
        self.events
            .get_or_init(|| broadcast::channel(self.event_capacity).0)
    }

    /// Marks the driver stopped: refuses further commands and drops the queued ones (their callers
    /// then answer `Closed`), tells subscribers, and wakes `shutdown()` callers.
    pub(crate) fn close(&self) {
        let dropped = {
            // Under the mailbox lock, so that `subscribe` either sees `closed` or gets `Closed`.
            let mut mailbox = lock(&self.mailbox);
            mailbox.closed = true;
            self.emit(|| Event::Closed);
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut mailbox.queue)
        };
        drop(dropped);
        self.closed_notify.notify_waiters();
    }

    pub(crate) fn subscribe(&self) -> Events {
        let mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return Events::closed();
        }
        let rx = self.event_sender().subscribe();
        drop(mailbox);
        Events::new(rx)
    }
}

//! Model checks of the mailbox (run with `--cfg loom`, TESTING.md "Model checking"): handles on
//! two or three threads register, unregister, subscribe and send while the driver takes commands
//! and closes, and loom runs every interleaving of the mailbox lock, the closed flag and the
//! driver's waker. The event channel and the reply channels are not loom's: each of their calls is
//! one step of the model (none blocks or spins).

use super::{Command, Registration, Shared};
use crate::clock::ManualClock;
use crate::consumer::ConsumerId;
use crate::event::Event;
use crate::manager::call::{Done, HeldConsumer, Job, Setup};
use crate::manager::error::RefreshError;
use futures_util::future::BoxFuture;
use loom::sync::Arc;
use loom::thread;
use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::UNIX_EPOCH;
use tokio::sync::oneshot::{self, error::TryRecvError};

/// Runs `f` once for every interleaving with at most four preemptions (`LOOM_MAX_PREEMPTIONS`
/// sets another bound).
fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound.get_or_insert(4);
    model.check(f);
}

fn shared() -> Arc<Shared> {
    let clock = std::sync::Arc::new(ManualClock::new(UNIX_EPOCH));
    Arc::new(Shared::new(clock, 4))
}

/// A consumer as the driver would hold it; the models never call it.
struct Idle;

impl HeldConsumer for Idle {
    fn is_alive(&self) -> bool {
        true
    }

    fn call(&self, _: Job, _: Setup) -> Option<BoxFuture<'static, Done>> {
        None
    }
}

fn register(shared: &Shared) -> ConsumerId {
    shared.register(|id| Registration {
        id,
        consumer: Box::new(Idle),
        name: "chat".into(),
        required: None,
    })
}

/// One turn of the driver that does not wait: what is queued, and whether every handle is gone.
fn take(shared: &Shared) -> (VecDeque<Command>, bool) {
    let mut inbox = VecDeque::new();
    let handles_gone = shared.take_commands(&mut inbox, Waker::noop());
    (inbox, handles_gone)
}

/// The driver task: takes commands until `enough` says it has what it waits for, sleeping between
/// turns until its waker is woken. A wake-up lost leaves it asleep, and loom reports the deadlock.
fn drive_until(shared: &Shared, enough: impl Fn(&[Command], bool) -> bool) -> Vec<Command> {
    let mut taken = Vec::new();
    let mut inbox = VecDeque::new();
    loom::future::block_on(std::future::poll_fn(|cx| {
        let handles_gone = shared.take_commands(&mut inbox, cx.waker());
        taken.extend(inbox.drain(..));
        if enough(&taken, handles_gone) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    taken
}

fn refresh() -> (
    Command,
    oneshot::Receiver<Result<crate::AccessToken, RefreshError>>,
) {
    let (reply, answer) = oneshot::channel();
    let command = Command::Refresh {
        min_remaining: None,
        from_fetcher: false,
        reply,
    };
    (command, answer)
}

#[test]
fn ids_are_unique_reach_the_driver_in_order_and_unregister_once_from_any_thread() {
    check(|| {
        let shared = shared();
        let first = thread::spawn({
            let shared = shared.clone();
            move || register(&shared)
        });
        let second = thread::spawn({
            let shared = shared.clone();
            move || {
                let id = register(&shared);
                assert!(shared.unregister(id));
                id
            }
        });
        // Unregistered here while the second thread registers and unregisters its own.
        let a = first.join().unwrap();
        assert!(shared.unregister(a));
        let b = second.join().unwrap();
        assert_ne!(a, b);
        assert!(!shared.unregister(a));
        assert!(!shared.unregister(b));
        assert_eq!(shared.consumer_count(), 0);

        // The driver sees registrations in the order of their ids, each before its unregistration.
        let (inbox, _) = take(&shared);
        let mut seen = Vec::new();
        for command in inbox {
            match command {
                Command::Register(r) => {
                    assert!(seen.last().is_none_or(|&last| last < r.id));
                    seen.push(r.id);
                }
                Command::Unregister(id) => assert!(seen.contains(&id)),
                _ => unreachable!("only registrations were sent"),
            }
        }
        assert_eq!(seen.len(), 2);
    });
}

#[test]
fn a_command_sent_while_the_driver_sleeps_wakes_it() {
    check(|| {
        let shared = shared();
        let driver = thread::spawn({
            let shared = shared.clone();
            move || drive_until(&shared, |taken, _| taken.len() == 2).len()
        });
        let handle = thread::spawn({
            let shared = shared.clone();
            move || assert!(shared.send(Command::Resume))
        });
        assert!(shared.send(Command::Resume));
        handle.join().unwrap();
        assert_eq!(driver.join().unwrap(), 2);
    });
}

#[test]
fn the_last_handle_going_wakes_the_driver_after_its_commands() {
    check(|| {
        let shared = shared();
        let driver = thread::spawn({
            let shared = shared.clone();
            move || drive_until(&shared, |_, handles_gone| handles_gone)
        });
        let id = register(&shared);
        assert!(shared.send(Command::Resume));
        shared.handles_gone();
        let taken = driver.join().unwrap();
        assert!(matches!(&taken[..], [Command::Register(r), Command::Resume] if r.id == id));
    });
}

#[test]
fn a_command_racing_close_is_taken_or_answered_closed() {
    check(|| {
        let shared = shared();
        let handle = thread::spawn({
            let shared = shared.clone();
            move || {
                let (command, answer) = refresh();
                (shared.send(command), answer)
            }
        });
        // The driver's last turn, then its close; it answers what it took.
        let (inbox, _) = take(&shared);
        shared.close();
        for command in inbox {
            if let Command::Refresh { reply, .. } = command {
                let _ = reply.send(Err(RefreshError::NoFetcher));
            }
        }
        let (sent, mut answer) = handle.join().unwrap();
        match answer.try_recv() {
            Ok(answered) => {
                assert!(sent);
                assert!(matches!(answered, Err(RefreshError::NoFetcher)));
            }
            // Refused, or dropped by `close`: the caller answers `Closed`.
            Err(TryRecvError::Closed) => {}
            Err(TryRecvError::Empty) => panic!("a command was lost: its caller would wait forever"),
        }
        assert!(!shared.send(Command::Resume));
    });
}

#[test]
fn a_handle_that_sees_closed_is_refused() {
    check(|| {
        let shared = shared();
        let handle = thread::spawn({
            let shared = shared.clone();
            move || {
                let seen_closed = shared.is_closed();
                let sent = shared.send(Command::Resume);
                assert!(!(seen_closed && sent));
            }
        });
        shared.close();
        handle.join().unwrap();
    });
}

#[test]
fn a_registration_racing_close_is_not_left_counted() {
    check(|| {
        let shared = shared();
        let registering = thread::spawn({
            let shared = shared.clone();
            move || register(&shared)
        });
        let unregistering = thread::spawn({
            let shared = shared.clone();
            move || {
                let id = register(&shared);
                (id, shared.unregister(id))
            }
        });
        let (inbox, _) = take(&shared);
        shared.close();
        let a = registering.join().unwrap();
        let (b, _) = unregistering.join().unwrap();
        assert_ne!(a, b);
        assert_eq!(shared.consumer_count(), 0);
        assert!(!shared.unregister(a));
        assert!(!shared.unregister(b));
        drop(inbox);
    });
}

#[test]
fn a_subscription_racing_close_sees_closed() {
    check(|| {
        let shared = shared();
        let subscriber = thread::spawn({
            let shared = shared.clone();
            move || shared.subscribe()
        });
        shared.close();
        let mut events = subscriber.join().unwrap();
        assert_eq!(events.try_recv(), Some(Event::Closed));
        assert_eq!(events.try_recv(), None);
    });
}

#[test]
fn a_consumer_the_driver_forgets_is_unregistered_at_most_once_and_the_others_stay() {
    check(|| {
        let shared = shared();
        let gone = register(&shared);
        let handle = thread::spawn({
            let shared = shared.clone();
            move || {
                shared.unregister(gone);
                register(&shared)
            }
        });
        shared.forget_consumers(&[gone]);
        let live = handle.join().unwrap();
        assert_eq!(shared.consumer_count(), 1);
        assert!(!shared.unregister(gone));
        assert!(shared.unregister(live));
        assert_eq!(shared.consumer_count(), 0);
    });
}

#[test]
fn the_driver_closing_while_handles_register_subscribe_and_send_loses_nothing() {
    check(|| {
        let shared = shared();
        // The driver takes what comes until it has something, then stops, answering what it took.
        let driver = thread::spawn({
            let shared = shared.clone();
            move || {
                let taken = drive_until(&shared, |taken, _| !taken.is_empty());
                shared.close();
                for command in taken {
                    if let Command::Refresh { reply, .. } = command {
                        let _ = reply.send(Err(RefreshError::NoFetcher));
                    }
                }
            }
        });
        let handle = thread::spawn({
            let shared = shared.clone();
            move || {
                register(&shared);
                let (command, answer) = refresh();
                shared.send(command);
                answer
            }
        });
        let mut events = shared.subscribe();
        let id = register(&shared);
        shared.unregister(id);

        let mut answer = handle.join().unwrap();
        driver.join().unwrap();
        assert!(!matches!(answer.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(shared.consumer_count(), 0);
        assert_eq!(events.try_recv(), Some(Event::Closed));
    });
}

//! The process-wide wall-clock watcher behind [`SystemClock::sleep_until`]: one thread sleeps on
//! the monotonic clock until the earliest wall-clock deadline (a slice at most), re-reads the wall
//! clock, and wakes only the sleepers that are due. Idle sleepers cost nothing, however many there
//! are; a jump of the wall clock is noticed within one slice.
//!
//! [`SystemClock::sleep_until`]: crate::clock::SystemClock

use crate::clock::{saturating_add, SYSTEM_CLOCK_SLICE};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

/// Whether the watcher thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thread {
    Stopped,
    /// Running, asleep until about this wall time (the next due deadline, or a slice).
    Asleep(SystemTime),
}

/// What a registration asks of the watcher thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Nothing,
    /// Start it: it is not running.
    Start,
    /// Wake it: it sleeps past the new deadline.
    Notify,
}

/// The watcher's bookkeeping. It never reads a clock: each turn is given the wall time, so that
/// its logic is tested with any times, jumps included.
#[derive(Debug)]
struct Watch {
    /// Pending sleepers by (deadline, id).
    sleepers: BTreeMap<(SystemTime, u64), Waker>,
    next_id: u64,
    thread: Thread,
}

impl Watch {
    const fn new() -> Self {
        Watch {
            sleepers: BTreeMap::new(),
            next_id: 0,
            thread: Thread::Stopped,
        }
    }

    /// Registers (or refreshes) a sleeper's waker; returns its id and what the thread must do.
    fn register(&mut self, deadline: SystemTime, id: Option<u64>, waker: &Waker) -> (u64, Action) {
        let id = id.unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id
        });
        match self.sleepers.get_mut(&(deadline, id)) {
            Some(known) if known.will_wake(waker) => {}
            Some(known) => known.clone_from(waker),
            None => {
                self.sleepers.insert((deadline, id), waker.clone());
            }
        }
        let action = match self.thread {
            Thread::Stopped => {
                self.thread = Thread::Asleep(deadline);
                Action::Start
            }
            Thread::Asleep(until) if deadline < until => {
                self.thread = Thread::Asleep(deadline);
                Action::Notify
            }
            Thread::Asleep(_) => Action::Nothing,
        };
        (id, action)
    }

    /// Forgets a sleeper (resolved or dropped); returns its waker, to drop after unlocking.
    fn remove(&mut self, deadline: SystemTime, id: u64) -> Option<Waker> {
        self.sleepers.remove(&(deadline, id))
    }

    /// One turn of the thread at wall time `now`: takes the wakers of the sleepers due, and says
    /// how long to sleep before the next turn (the next deadline, a slice at most), or `None`
    /// when no sleeper remains: the thread then ends.
    fn turn(&mut self, now: SystemTime) -> (Vec<Waker>, Option<Duration>) {
        let later = self.sleepers.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.sleepers, later);
        let wait = match self.sleepers.keys().next() {
            None => {
                self.thread = Thread::Stopped;
                None
            }
            Some(&(deadline, _)) => {
                let left = deadline.duration_since(now).unwrap_or_default();
                let wait = left.min(SYSTEM_CLOCK_SLICE);
                self.thread = Thread::Asleep(saturating_add(now, wait));
                Some(wait)
            }
        };
        (due.into_values().collect(), wait)
    }
}

/// The one watcher of the process, and the condition its thread sleeps on.
static WATCH: Mutex<Watch> = Mutex::new(Watch::new());
static TURN: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Watch> {
    // No code that can panic runs under this lock: recover the guard if it ever did.
    WATCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one place that reads the wall clock for the watcher and its sleepers.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// The watcher thread: turns until no sleeper remains.
fn run() {
    let mut watch = lock();
    loop {
        let (wakers, wait) = watch.turn(wall_now());
        let planned = watch.thread;
        drop(watch);
        for waker in wakers {
            waker.wake();
        }
        let Some(wait) = wait else {
            return;
        };
        watch = lock();
        // An earlier deadline registered while the lock was free changed the plan (its notice
        // found no one waiting): turn again at once.
        if watch.thread == planned {
            watch = TURN
                .wait_timeout(watch, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A wall-clock sleep of [`SystemClock`](crate::clock::SystemClock): resolves once the wall clock
/// reads `deadline`, woken by the watcher.
#[derive(Debug)]
pub(crate) struct WallSleep {
    deadline: SystemTime,
    /// Set once registered with the watcher.
    id: Option<u64>,
}

impl WallSleep {
    pub(crate) fn new(deadline: SystemTime) -> Self {
        WallSleep { deadline, id: None }
    }
}

impl Future for WallSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if wall_now() >= self.deadline {
            if let Some(id) = self.id.take() {
                let waker = lock().remove(self.deadline, id);
                drop(waker);
            }
            return Poll::Ready(());
        }
        let mut watch = lock();
        let (id, action) = watch.register(self.deadline, self.id, cx.waker());
        self.id = Some(id);
        match action {
            Action::Nothing => {}
            Action::Notify => TURN.notify_one(),
            Action::Start => {
                // Registered first, under the lock: the thread's first turn sees this sleeper.
                let spawned = std::thread::Builder::new()
                    .name("access-manager-wall-clock".into())
                    .spawn(run);
                if spawned.is_err() {
                    // No thread: this sleep re-reads the clock when polled again, and the next
                    // registration tries to start the watcher again.
                    watch.thread = Thread::Stopped;
                    drop(watch);
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for WallSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut watch = lock();
            let waker = watch.remove(self.deadline, id);
            if watch.sleepers.is_empty() && watch.thread != Thread::Stopped {
                // The last sleeper left: the thread ends now rather than a slice later.
                TURN.notify_one();
            }
            drop(watch);
            drop(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    struct Count(AtomicUsize);
    impl futures::task::ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), futures::task::waker(count))
    }

    fn woken(wakers: Vec<Waker>) -> usize {
        let n = wakers.len();
        wakers.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn the_first_sleeper_starts_the_watcher_and_an_earlier_one_wakes_it() {
        let mut watch = Watch::new();
        let (_, waker) = counting();
        assert_eq!(watch.register(t(1000), None, &waker).1, Action::Start);
        assert_eq!(watch.register(t(2000), None, &waker).1, Action::Nothing);
        assert_eq!(watch.register(t(500), None, &waker).1, Action::Notify);
    }

    #[test]
    fn the_watcher_sleeps_until_the_next_deadline_but_never_longer_than_a_slice() {
        let mut watch = Watch::new();
        let (_, waker) = counting();
        watch.register(t(1005), None, &waker);
        assert_eq!(watch.turn(t(1000)).1, Some(Duration::from_secs(5)));
        watch.register(t(1000), None, &waker);
        let (due, _) = watch.turn(t(1000));
        assert_eq!(woken(due), 1);
        let mut far = Watch::new();
        far.register(t(100_000), None, &waker);
        assert_eq!(far.turn(t(1000)).1, Some(SYSTEM_CLOCK_SLICE));
    }

    #[test]
    fn only_the_sleepers_due_are_woken() {
        let mut watch = Watch::new();
        let (due_count, due_waker) = counting();
        let (idle_count, idle_waker) = counting();
        watch.register(t(1000), None, &due_waker);
        watch.register(t(1000), None, &due_waker);
        for s in 0..1000 {
            watch.register(t(5000 + s), None, &idle_waker);
        }
        assert_eq!(woken(watch.turn(t(1000)).0), 2);
        assert_eq!(due_count.0.load(Ordering::SeqCst), 2);
        assert_eq!(idle_count.0.load(Ordering::SeqCst), 0);
        assert_eq!(watch.sleepers.len(), 1000);
    }

    #[test]
    fn a_forward_jump_of_the_wall_clock_is_noticed_at_the_next_turn_within_a_slice() {
        let mut watch = Watch::new();
        let (count, waker) = counting();
        watch.register(t(1000 + 3600), None, &waker);
        let (due, wait) = watch.turn(t(1000));
        assert_eq!((woken(due), wait), (0, Some(SYSTEM_CLOCK_SLICE)));
        // The laptop slept an hour: the turn a slice later reads a wall clock past the deadline.
        let (due, _) = watch.turn(t(1000 + 3601));
        assert_eq!(woken(due), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_backward_jump_wakes_nobody_and_the_watcher_still_turns_each_slice() {
        let mut watch = Watch::new();
        let (count, waker) = counting();
        watch.register(t(10_010), None, &waker);
        assert_eq!(watch.turn(t(10_000)).1, Some(Duration::from_secs(10)));
        // Set back an hour: the sleeper is an hour and 10 s away, the watcher looks a slice on.
        let (due, wait) = watch.turn(t(10_000 - 3600));
        assert_eq!((woken(due), wait), (0, Some(SYSTEM_CLOCK_SLICE)));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_watcher_ends_when_no_sleeper_remains_and_restarts_for_the_next() {
        let mut watch = Watch::new();
        let (_, waker) = counting();
        let (id, _) = watch.register(t(2000), None, &waker);
        assert!(watch.remove(t(2000), id).is_some());
        assert_eq!(watch.turn(t(1000)).1, None);
        assert_eq!(watch.thread, Thread::Stopped);
        assert_eq!(watch.register(t(3000), None, &waker).1, Action::Start);
    }

    #[test]
    fn a_sleeper_polled_again_keeps_its_place_and_takes_the_new_waker() {
        let mut watch = Watch::new();
        let (old_count, old) = counting();
        let (new_count, new) = counting();
        let (id, _) = watch.register(t(1000), None, &old);
        assert_eq!(
            watch.register(t(1000), Some(id), &new),
            (id, Action::Nothing)
        );
        assert_eq!(watch.sleepers.len(), 1);
        woken(watch.turn(t(1000)).0);
        assert_eq!(old_count.0.load(Ordering::SeqCst), 0);
        assert_eq!(new_count.0.load(Ordering::SeqCst), 1);
    }
}

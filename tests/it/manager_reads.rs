//! `token()` and `with_token()` read the token the driver published, without a lock: they return
//! the current token, and only it, whatever the thread, the nesting or the number of managers.

use crate::common::*;
use access_manager::AccessManager;
use std::sync::Arc;

fn text(manager: &AccessManager) -> Option<String> {
    manager.token().map(|t| t.as_str().to_owned())
}

fn text_borrowed(manager: &AccessManager) -> Option<String> {
    manager.with_token(|t| t.map(|t| t.as_str().to_owned()))
}

#[tokio::test(flavor = "current_thread")]
async fn a_replaced_token_is_never_read_again_on_a_thread_that_read_it() {
    let clock = clock();
    let first = mint("alice", T0, 3600);
    let m = manager_holding(&clock, &first);
    assert_eq!(text(&m).as_deref(), Some(first.as_str()));
    assert_eq!(text_borrowed(&m).as_deref(), Some(first.as_str()));
    for i in 1..=20 {
        let next = mint("alice", T0 + i, 3600);
        m.update_token(&next).await.unwrap();
        // Read right after the update, on the thread that read the previous token.
        assert_eq!(
            text(&m).as_deref(),
            Some(next.as_str()),
            "token() after update {i}"
        );
        assert_eq!(
            text_borrowed(&m).as_deref(),
            Some(next.as_str()),
            "with_token() after update {i}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn before_the_first_token_both_reads_say_none() {
    let m = AccessManager::builder().clock(clock()).build().unwrap();
    assert!(m.token().is_none());
    assert!(m.with_token(|t| t.is_none()));
}

#[tokio::test(flavor = "current_thread")]
async fn many_managers_read_in_turn_on_one_thread_each_give_their_own_token() {
    let clock = clock();
    let mut managers: Vec<(AccessManager, String)> = (0..40)
        .map(|i| {
            let jwt = mint(&format!("user-{i}"), T0, 3600);
            (manager_holding(&clock, &jwt), jwt)
        })
        .collect();
    for round in 0..3u64 {
        for (m, jwt) in &managers {
            assert_eq!(text(m).as_deref(), Some(jwt.as_str()));
            assert_eq!(text_borrowed(m).as_deref(), Some(jwt.as_str()));
        }
        // Every other manager gets a new token; the rest keep theirs.
        for (i, (m, jwt)) in managers.iter_mut().enumerate().step_by(2) {
            let next = mint(&format!("user-{i}"), T0 + 1 + round, 3600);
            m.update_token(&next).await.unwrap();
            *jwt = next;
        }
    }
    for (m, jwt) in &managers {
        assert_eq!(text(m).as_deref(), Some(jwt.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_nested_inside_with_token_see_the_right_tokens() {
    let clock = clock();
    let (a_jwt, b_jwt) = (mint("alice", T0, 3600), mint("bob", T0, 3600));
    let (a, b) = (
        manager_holding(&clock, &a_jwt),
        manager_holding(&clock, &b_jwt),
    );
    let seen = a.with_token(|outer| {
        let outer = outer.unwrap().as_str().to_owned();
        // Inside the callback: the same manager again, another one, and both ways of reading.
        let again = text(&a).unwrap();
        let other = text(&b).unwrap();
        let nested = b.with_token(|t| {
            a.with_token(|u| {
                (
                    t.unwrap().as_str().to_owned(),
                    u.unwrap().as_str().to_owned(),
                )
            })
        });
        (outer, again, other, nested)
    });
    assert_eq!(seen.0, a_jwt);
    assert_eq!(seen.1, a_jwt);
    assert_eq!(seen.2, b_jwt);
    assert_eq!(seen.3, (b_jwt.clone(), a_jwt.clone()));

    // A token replaced while a callback borrows the old one: the nested read sees the new one.
    let next = mint("alice", T0 + 5, 3600);
    let a2 = a.clone();
    let handle = tokio::runtime::Handle::current();
    let inner = b.with_token(|_| {
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(a2.update_token(&next)).unwrap())
                .join()
                .unwrap()
        });
        text(&a)
    });
    assert_eq!(inner.as_deref(), Some(next.as_str()));
}

#[test]
fn every_thread_reads_the_token_published_last() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let clock = clock();
    let first = mint("alice", T0, 3600);
    let m = rt.block_on(async { manager_holding(&clock, &first) });
    let barrier = Arc::new(std::sync::Barrier::new(5));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (m, barrier) = (m.clone(), barrier.clone());
            let first = first.clone();
            std::thread::spawn(move || {
                // Reads the first token on this thread.
                assert_eq!(text(&m).as_deref(), Some(first.as_str()));
                barrier.wait(); // the update happens
                barrier.wait();
                (text(&m), text_borrowed(&m))
            })
        })
        .collect();
    barrier.wait();
    let next = mint("alice", T0 + 1, 3600);
    rt.block_on(m.update_token(&next)).unwrap();
    barrier.wait();
    for reader in readers {
        let (owned, borrowed) = reader.join().unwrap();
        assert_eq!(owned.as_deref(), Some(next.as_str()));
        assert_eq!(borrowed.as_deref(), Some(next.as_str()));
    }
}

/// A thread-local whose destructor reads a manager: by then the thread's other thread-locals (the
/// lock-free reads' bookkeeping among them) may be gone already; the read must still answer.
struct ReadsOnDrop(Option<AccessManager>, Arc<std::sync::Mutex<Option<String>>>);
impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            let owned = text(m);
            let borrowed = text_borrowed(m);
            assert_eq!(owned, borrowed);
            *self.1.lock().unwrap() = owned;
        }
    }
}

thread_local! {
    static LATE_READER: std::cell::RefCell<ReadsOnDrop> =
        std::cell::RefCell::new(ReadsOnDrop(None, Arc::default()));
}

#[test]
fn reads_from_a_thread_local_destructor_still_answer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let jwt = mint("alice", T0, 3600);
    let m = rt.block_on(async { manager_holding(&clock(), &jwt) });
    let out = Arc::new(std::sync::Mutex::new(None));
    let (m2, out2) = (m.clone(), out.clone());
    std::thread::spawn(move || {
        // Reads first (the read's thread-locals exist), then registers the late reader, so that it
        // is destroyed after or before them, depending on the platform's order; either must work.
        assert!(m2.token().is_some());
        LATE_READER.with(|r| *r.borrow_mut() = ReadsOnDrop(Some(m2), out2));
    })
    .join()
    .unwrap();
    assert_eq!(out.lock().unwrap().as_deref(), Some(jwt.as_str()));
}

//! loom models: the raw mutexes exclude each other's critical sections.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p
//! pinion-sync --release --test loom_mutex`. The guarded counter is a
//! `Locked`, whose cell loom watches: two guards alive at once fail the
//! model as a data race, and a lost update fails the final count.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use pinion_sync::{FutexMutex, Locked, RawMutex, SpinMutex};

/// `threads` threads (the model's main one included) each add 1 under the
/// mutex; every interleaving ends with the full count.
fn excludes<M: RawMutex + Send + Sync + 'static>(threads: usize) {
    loom::model(move || {
        let counter = Arc::new(Locked::<M, usize>::new(0));
        let others: Vec<_> = (1..threads)
            .map(|_| {
                let counter = Arc::clone(&counter);
                thread::spawn(move || *counter.lock() += 1)
            })
            .collect();
        *counter.lock() += 1;
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(*counter.lock(), threads);
    });
}

/// `lock` on the main thread against `try_lock` on `tries` others: a
/// `try_lock` that succeeds excludes everyone else, one that fails leaves
/// the mutex to its holder, and every holder unlocks.
///
/// This is also SpinMutex's three-thread model: with two threads spinning
/// in `lock`, loom (which has no fairness) explores schedules that starve
/// the holder forever and never finishes; `try_lock` never spins.
fn try_lock_excludes<M: RawMutex + Send + Sync + 'static>(tries: usize) {
    loom::model(move || {
        let counter = Arc::new(Locked::<M, usize>::new(0));
        let others: Vec<_> = (0..tries)
            .map(|_| {
                let counter = Arc::clone(&counter);
                thread::spawn(move || match counter.try_lock() {
                    Some(mut c) => {
                        *c += 1;
                        1
                    }
                    None => 0,
                })
            })
            .collect();
        *counter.lock() += 1;
        let added: usize = others.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(*counter.lock(), 1 + added);
    });
}

#[test]
fn futex_mutex_two_threads() {
    excludes::<FutexMutex>(2);
}

/// Three threads reach the contended state (FUTEX_WAIT / FUTEX_WAKE).
#[test]
fn futex_mutex_three_threads() {
    excludes::<FutexMutex>(3);
}

#[test]
fn futex_mutex_try_lock() {
    try_lock_excludes::<FutexMutex>(1);
}

#[test]
fn futex_mutex_try_lock_three_threads() {
    try_lock_excludes::<FutexMutex>(2);
}

#[test]
fn spin_mutex_two_threads() {
    excludes::<SpinMutex>(2);
}

#[test]
fn spin_mutex_try_lock() {
    try_lock_excludes::<SpinMutex>(1);
}

#[test]
fn spin_mutex_try_lock_three_threads() {
    try_lock_excludes::<SpinMutex>(2);
}

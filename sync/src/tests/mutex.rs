//! The raw mutexes: exclusion under contention, `try_lock`, `NullMutex`.

use std::sync::Arc;

use super::*;
use crate::*;

fn mutual_exclusion<M: RawMutex + Sync + Send + 'static>() {
    const THREADS: usize = 8;
    let per_thread = scaled(100_000, 200);
    let shared = Arc::new((M::INIT, Guarded::new(0usize)));
    let handles = (0..THREADS)
        .map(|_| {
            let shared = Arc::clone(&shared);
            spawn(move || {
                let (mutex, counter) = &*shared;
                for _ in 0..per_thread {
                    mutex.lock();
                    // SAFETY: `mutex` is held.
                    unsafe { *counter.get() += 1 };
                    // SAFETY: this thread locked `mutex` just above.
                    unsafe { mutex.unlock() };
                }
            })
        })
        .collect();
    join_bounded(handles);
    let (mutex, counter) = &*shared;
    mutex.lock();
    // SAFETY: `mutex` is held.
    assert_eq!(unsafe { *counter.get() }, THREADS * per_thread);
    // SAFETY: locked just above.
    unsafe { mutex.unlock() };
}

fn try_lock_semantics<M: RawMutex + Sync + Send + 'static>() {
    let mutex = Arc::new(M::INIT);
    assert!(mutex.try_lock(), "a free mutex is taken");
    assert!(!mutex.try_lock(), "a held mutex is not taken again");
    let other = Arc::clone(&mutex);
    let from_other = join_bounded(std::vec![spawn(move || other.try_lock())]);
    assert_eq!(from_other, [false], "nor from another thread");
    // SAFETY: this thread took it with the first try_lock.
    unsafe { mutex.unlock() };
    assert!(mutex.try_lock(), "free again after unlock");
    // SAFETY: taken just above.
    unsafe { mutex.unlock() };
    mutex.lock();
    assert!(!mutex.try_lock());
    // SAFETY: locked just above.
    unsafe { mutex.unlock() };
}

#[cfg(target_os = "linux")]
#[test]
fn futex_mutex_excludes() {
    mutual_exclusion::<FutexMutex>();
}

#[test]
fn spin_mutex_excludes() {
    mutual_exclusion::<SpinMutex>();
}

#[cfg(target_os = "linux")]
#[test]
fn futex_mutex_try_lock() {
    try_lock_semantics::<FutexMutex>();
}

#[test]
fn spin_mutex_try_lock() {
    try_lock_semantics::<SpinMutex>();
}

#[test]
fn null_mutex_locks_and_unlocks() {
    let m = NullMutex::INIT;
    m.lock();
    // SAFETY: locked just above.
    unsafe { m.unlock() };
    assert!(m.try_lock());
    // SAFETY: taken just above.
    unsafe { m.unlock() };
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "already held")]
fn null_mutex_relock_is_caught_in_debug() {
    let m = NullMutex::INIT;
    m.lock();
    m.lock();
}

#[test]
fn null_mutex_is_send_not_sync() {
    fn assert_send<T: Send>() {}
    assert_send::<NullMutex>();

    // Resolves only if exactly one impl applies, i.e. NullMutex is !Sync.
    trait AmbiguousIfSync<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    <NullMutex as AmbiguousIfSync<_>>::some_item();
}

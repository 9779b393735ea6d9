//! [`Locked`]: guard access, unlock on drop and on unwind, no lock for
//! `&mut`, no lost update across threads.

use std::sync::Arc;

use super::*;
use crate::*;

#[test]
fn guard_gives_access_and_unlocks_on_drop() {
    let l = Locked::<SpinMutex, _>::new(std::vec![1]);
    l.lock().push(2);
    let g = l.lock();
    assert!(l.try_lock().is_none(), "held while the guard lives");
    assert_eq!(*g, [1, 2]);
    drop(g);
    l.try_lock().expect("free after drop").push(3);
    assert_eq!(l.into_inner(), [1, 2, 3]);
}

#[test]
fn get_mut_needs_no_lock() {
    let mut l = Locked::<NullMutex, u8>::default();
    *l.get_mut() = 7;
    assert_eq!(*l.lock(), 7);
}

#[test]
fn unlocks_when_a_panic_unwinds_past_the_guard() {
    let l = Locked::<SpinMutex, u32>::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut g = l.lock();
        *g = 1;
        panic!("in the critical section");
    }));
    assert!(r.is_err());
    let g = l.try_lock().expect("the unwind released the mutex");
    assert_eq!(*g, 1, "what was written before the panic stays");
}

#[test]
fn debug_does_not_block() {
    let l = Locked::<SpinMutex, u8>::new(5);
    assert_eq!(std::format!("{l:?}"), "Locked { value: 5 }");
    let g = l.lock();
    assert_eq!(std::format!("{l:?}"), "Locked { value: <locked> }");
    assert_eq!(std::format!("{g:?}"), "5");
}

/// Many threads increment through guards; none is lost.
fn counts_from_threads<M: RawMutex + Send + Sync + 'static>() {
    const THREADS: usize = 4;
    let per_thread = scaled(10_000, 50);
    let l = Arc::new(Locked::<M, usize>::new(0));
    let threads = (0..THREADS)
        .map(|_| {
            let l = Arc::clone(&l);
            spawn(move || {
                for _ in 0..per_thread {
                    *l.lock() += 1;
                }
            })
        })
        .collect();
    join_bounded(threads);
    assert_eq!(*l.lock(), THREADS * per_thread);
}

#[test]
fn spin_counts_from_threads() {
    counts_from_threads::<SpinMutex>();
}

#[cfg(target_os = "linux")]
#[test]
fn futex_counts_from_threads() {
    counts_from_threads::<crate::FutexMutex>();
}

#[test]
fn auto_traits() {
    fn sync<T: Sync>() {}
    fn send<T: Send>() {}
    sync::<Locked<SpinMutex, core::cell::Cell<u8>>>();
    send::<Locked<NullMutex, u8>>();
    sync::<LockedGuard<'static, SpinMutex, u8>>();
}

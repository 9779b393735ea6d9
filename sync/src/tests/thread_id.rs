//! `current_thread_id` and the monotonic clock.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use super::*;
use crate::*;

/// Every target the tests run on (Linux, or std under Miri) has an id.
#[test]
fn thread_ids_distinct_and_stable() {
    const THREADS: usize = 8;
    // All threads stay alive until every one has read its id, so their
    // TCBs cannot be reused between them.
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles = (0..THREADS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            spawn(move || {
                let first = current_thread_id();
                barrier.wait();
                let second = current_thread_id();
                assert_eq!(first, second, "stable within a thread");
                first
            })
        })
        .collect();
    let ids = join_bounded(handles);
    let main = current_thread_id();
    assert!(ids.iter().all(|&id| id != 0), "non-zero: {ids:?}");
    assert!(ids.iter().all(|&id| id != usize::MAX), "not NO_THREAD");
    let distinct: BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), THREADS, "distinct: {ids:?}");
    assert!(main != 0 && !ids.contains(&main), "main thread differs");
    assert_eq!(main, current_thread_id(), "stable on the main thread");
}

/// On x86 the word at the thread pointer is the TCB's self-pointer, which
/// is what glibc's and musl's `pthread_self` return: checks the TLS ABI
/// claim `thread.rs` relies on, on the main thread and a spawned one.
#[cfg(all(
    not(miri),
    target_os = "linux",
    any(target_arch = "x86", target_arch = "x86_64")
))]
#[test]
fn x86_thread_id_is_the_tcb_self_pointer() {
    // SAFETY: `pthread_self` has no preconditions.
    let here = || {
        (current_thread_id(), unsafe { libc::pthread_self() }
            as usize)
    };
    let (id, me) = here();
    assert_eq!(id, me);
    let [(id, me)] = join_bounded(std::vec![spawn(here)])[..] else {
        unreachable!()
    };
    assert_eq!(id, me);
}

#[cfg(target_os = "linux")]
#[test]
fn monotonic_clock_does_not_go_back() {
    let a = monotonic_now_ns();
    let b = monotonic_now_ns();
    assert!(a > 0 && b >= a);
}

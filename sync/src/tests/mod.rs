//! Tests for the mutexes, events, `Locked` and thread ids.
//!
//! Deterministic: threads are ordered only by the primitives under test
//! (a waiter count read under the mutex, a flag the mutex guards), by
//! barriers and by channels, never by sleeping. Wall time appears only in
//! the [`WATCHDOG`], which turns a lost wake-up into a failure instead of
//! a hang; nothing asserts on how long anything took.

extern crate std;

use std::cell::UnsafeCell;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::vec::Vec;

mod event;
mod locked;
mod mutex;
mod thread_id;

/// How long a test may wait for its threads: a hang guard only, far above
/// the slowest correct run (armv5te under qemu, or Miri).
const WATCHDOG: Duration = Duration::from_secs(300);

/// Scales iteration counts down under Miri, which runs ~1000x slower.
const fn scaled(native: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// A thread started by [`spawn`]: its handle, and a channel that reports
/// when it has finished (returned or panicked).
struct Watched<T> {
    handle: JoinHandle<T>,
    done: mpsc::Receiver<()>,
}

/// Sends on drop, so a thread reports its end even while unwinding.
struct ReportEnd(mpsc::Sender<()>);
impl Drop for ReportEnd {
    fn drop(&mut self) {
        // The receiver only goes away once the test has failed anyway.
        let _ = self.0.send(());
    }
}

/// `thread::spawn`, watched so that [`join_bounded`] can give up on it.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Watched<T> {
    let (tx, done) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _end = ReportEnd(tx);
        f()
    });
    Watched { handle, done }
}

/// Joins `threads`, blocking on their end reports for at most
/// [`WATCHDOG`] in all: a lost wake-up fails the test instead of hanging it.
#[track_caller]
fn join_bounded<T>(threads: Vec<Watched<T>>) -> Vec<T> {
    let deadline = Instant::now() + WATCHDOG;
    threads
        .into_iter()
        .map(|t| {
            let left = deadline.saturating_duration_since(Instant::now());
            t.done
                .recv_timeout(left)
                .expect("threads still blocked: a wake-up was lost or a lock never released");
            t.handle.join().unwrap()
        })
        .collect()
}

/// Calls `ready` until it returns `true`, yielding in between; fails after
/// [`WATCHDOG`]. For waiting on another thread's progress as the primitive
/// itself reports it (no sleep, so no guessing how long it takes).
#[track_caller]
fn yield_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        thread::yield_now();
    }
}

/// Data guarded by the kit's own mutex, shared by reference.
struct Guarded<T>(UnsafeCell<T>);
// SAFETY: tests only touch the inner value while holding the mutex that
// guards it, which serialises all access across threads.
unsafe impl<T: Send> Sync for Guarded<T> {}

impl<T> Guarded<T> {
    fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }
    /// # Safety
    /// The caller holds the mutex guarding `self` for the borrow's life.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut T {
        // SAFETY: per this fn's contract the mutex is held, so no other
        // reference to the value exists.
        unsafe { &mut *self.0.get() }
    }
}

//! loom models of the wake-up event protocol: a waiter that checked its
//! condition under the mutex and then waits is always woken by a signaller
//! that changes the condition under the mutex and signals. A lost wake-up
//! leaves a `FutexEvent` waiter asleep (loom reports a deadlock) or a
//! `SpinEvent` waiter spinning (loom reports too many branches).
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p
//! pinion-sync --release --test loom_event`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use pinion_sync::{FutexKit, RawMutex, SpinKit, SyncKit, WakeEvent};

/// The scheduler's shape: a mutex, its event, and a condition (a count of
/// pending wake-ups) guarded by the mutex. loom checks every access to it.
struct Ctx<K: SyncKit> {
    mutex: K::Mutex,
    event: K::Event,
    pending: UnsafeCell<usize>,
}

// SAFETY: `pending` is only touched with `mutex` held (every helper below
// documents it), which serialises those accesses; the mutex and event are
// shared by design.
unsafe impl<K: SyncKit> Sync for Ctx<K>
where
    K::Mutex: Sync,
    K::Event: Sync,
{
}

trait Kit: SyncKit<Mutex: Send + Sync, Event: Send + Sync> {}
impl<K: SyncKit<Mutex: Send + Sync, Event: Send + Sync>> Kit for K {}

fn ctx<K: Kit>() -> Arc<Ctx<K>> {
    Arc::new(Ctx {
        mutex: K::Mutex::init(),
        event: K::Event::init(),
        pending: UnsafeCell::new(0),
    })
}

impl<K: Kit> Ctx<K> {
    /// Adds one pending wake-up. The caller holds `mutex`.
    fn post(&self) {
        // SAFETY: the caller holds `mutex` (see the `Sync` impl).
        self.pending.with_mut(|p| unsafe { *p += 1 });
    }

    /// Takes one pending wake-up if there is one. The caller holds `mutex`.
    fn take(&self) -> bool {
        // SAFETY: the caller holds `mutex` (see the `Sync` impl).
        self.pending.with_mut(|p| unsafe {
            let some = *p > 0;
            *p -= some as usize;
            some
        })
    }

    /// Waits, with `wait`, until it can take a wake-up. With `clear`, it
    /// first clears the event each round, as the scheduler's idle path does.
    fn wait_to_take(&self, clear: bool) {
        self.mutex.lock();
        while !self.take() {
            // SAFETY: the mutex is held here (taken above, and relocked by
            // every `wait`), as `clear` and `wait` require.
            unsafe {
                if clear {
                    self.event.clear(&self.mutex);
                }
                self.event.wait(&self.mutex);
            }
        }
        // SAFETY: held since `lock` or the last `wait`.
        unsafe { self.mutex.unlock() };
    }
}

/// How a signaller posts a wake-up and signals.
#[derive(Clone, Copy)]
enum Signal {
    One,
    All,
    UnlockAndOne,
    MaybeUnlockAndOne,
}

impl<K: Kit> Ctx<K> {
    fn post_and_signal(&self, how: Signal) {
        self.mutex.lock();
        self.post();
        // SAFETY: the mutex is held, as each call requires; each arm
        // leaves it unlocked (the last two through the call itself).
        unsafe {
            match how {
                Signal::One => {
                    self.event.signal_one(&self.mutex);
                    self.mutex.unlock();
                }
                Signal::All => {
                    self.event.signal_all(&self.mutex);
                    self.mutex.unlock();
                }
                Signal::UnlockAndOne => self.event.unlock_and_signal_one(&self.mutex),
                Signal::MaybeUnlockAndOne => {
                    if !self.event.maybe_unlock_and_signal_one(&self.mutex) {
                        self.mutex.unlock();
                    }
                }
            }
        }
    }
}

/// `waiters` threads each wait for one wake-up; the main thread posts as
/// many, signalling `how` after each. Every waiter must finish.
fn wakes<K: Kit + 'static>(how: Signal, waiters: usize, clear: bool) {
    loom::model(move || {
        let c = ctx::<K>();
        let threads: Vec<_> = (0..waiters)
            .map(|_| {
                let c = Arc::clone(&c);
                thread::spawn(move || c.wait_to_take(clear))
            })
            .collect();
        for _ in 0..waiters {
            c.post_and_signal(how);
        }
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// `wait_for` with a time-out, which the model may end at any moment, so
/// the waiter treats every return as "may be early" and re-checks; after
/// two timed waits it falls back to `wait`, so the model stays finite. A
/// `false` must mean what it says: nothing was posted and signalled before
/// the waiter looked again.
fn wait_for_wakes<K: Kit + 'static>(timeout_ns: u64) {
    loom::model(move || {
        let c = ctx::<K>();
        let waiter = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.mutex.lock();
                let mut timed_waits = 0;
                while !c.take() {
                    // SAFETY: the mutex is held here (taken above and
                    // relocked by every wait).
                    unsafe {
                        if timed_waits < 2 {
                            timed_waits += 1;
                            if !c.event.wait_for(&c.mutex, timeout_ns) {
                                // Still held: a post would have signalled.
                                let none = c.pending.with(|p| *p == 0);
                                assert!(none, "wait_for returned false after a signal");
                            }
                        } else {
                            c.event.wait(&c.mutex);
                        }
                    }
                }
                // SAFETY: held since `lock` or the last wait.
                unsafe { c.mutex.unlock() };
            })
        };
        c.post_and_signal(Signal::UnlockAndOne);
        waiter.join().unwrap();
    });
}

macro_rules! models {
    ($kit:ty, $($name:ident => $body:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                type K = $kit;
                $body;
            }
        )*
    };
}

// Two waiters clear the event before each wait, as the scheduler's idle
// path does: without it, the one whose wake-up the other took would find
// the event still signalled and loop without blocking, which loom (having
// no fairness) may let run forever.
mod futex {
    use super::*;
    models! {
        FutexKit,
        signal_one => wakes::<K>(Signal::One, 1, false),
        signal_all => wakes::<K>(Signal::All, 1, false),
        unlock_and_signal_one => wakes::<K>(Signal::UnlockAndOne, 1, false),
        maybe_unlock_and_signal_one => wakes::<K>(Signal::MaybeUnlockAndOne, 1, false),
        clear_then_wait => wakes::<K>(Signal::UnlockAndOne, 1, true),
        signal_one_two_waiters => wakes::<K>(Signal::One, 2, true),
        signal_all_two_waiters => wakes::<K>(Signal::All, 2, true),
        unlock_and_signal_one_two_waiters => wakes::<K>(Signal::UnlockAndOne, 2, true),
        maybe_unlock_and_signal_one_two_waiters => wakes::<K>(Signal::MaybeUnlockAndOne, 2, true),
        wait_for => wait_for_wakes::<K>(1_000_000),
    }
}

// One waiter only: two threads spinning at once (in `SpinEvent::wait` or
// `SpinMutex::lock`) let loom, which has no fairness, starve the signaller
// forever. SpinEvent's time-out is a budget of polls: a small one keeps
// the model small and still lets it run out.
mod spin {
    use super::*;
    models! {
        SpinKit,
        signal_one => wakes::<K>(Signal::One, 1, false),
        signal_all => wakes::<K>(Signal::All, 1, false),
        unlock_and_signal_one => wakes::<K>(Signal::UnlockAndOne, 1, false),
        maybe_unlock_and_signal_one => wakes::<K>(Signal::MaybeUnlockAndOne, 1, false),
        clear_then_wait => wakes::<K>(Signal::UnlockAndOne, 1, true),
        wait_for => wait_for_wakes::<K>(2),
    }
}

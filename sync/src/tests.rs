//! Tests for the mutexes, events and thread ids. Every loop is bounded;
//! blocking joins go through [`join_bounded`], which fails the test rather
//! than hanging if a wake-up is lost. Nothing asserts on elapsed time.

extern crate std;

use std::cell::UnsafeCell;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use std::vec::Vec;

use crate::*;

/// Scales iteration counts down under Miri, which runs ~1000x slower.
const fn scaled(native: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// Joins `handles`, polling instead of blocking so a lost wake-up fails the
/// test (after a generous bound) instead of hanging it.
fn join_bounded<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    const POLLS: usize = 12_000; // × 10 ms: two minutes, a hang guard only
    for _ in 0..POLLS {
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        handles.iter().all(|h| h.is_finished()),
        "threads still blocked: a wake-up was lost or a lock never released"
    );
    handles.into_iter().map(|h| h.join().unwrap()).collect()
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

// ---------------------------------------------------------------- mutexes

fn mutual_exclusion<M: RawMutex + Sync + Send + 'static>() {
    const THREADS: usize = 8;
    let per_thread = scaled(100_000, 200);
    let shared = Arc::new((M::INIT, Guarded::new(0usize)));
    let handles = (0..THREADS)
        .map(|_| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
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
    let from_other = join_bounded(std::vec![thread::spawn(move || other.try_lock())]);
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

// ----------------------------------------------------------------- events

/// Test access to an event's waiter count.
trait Waiters {
    fn waiters(&self) -> u32;
}
#[cfg(target_os = "linux")]
impl Waiters for FutexEvent {
    fn waiters(&self) -> u32 {
        FutexEvent::waiters(self)
    }
}
impl Waiters for SpinEvent {
    fn waiters(&self) -> u32 {
        SpinEvent::waiters(self)
    }
}

/// Mutex, event and a flag guarded by the mutex: the scheduler's shape.
struct Ctx<K: SyncKit> {
    mutex: K::Mutex,
    event: K::Event,
    flag: Guarded<bool>,
}
type Shared<K> = Arc<Ctx<K>>;

trait ThreadedKit: SyncKit<Mutex: Sync + Send, Event: Sync + Send + Waiters> {}
impl<K: SyncKit<Mutex: Sync + Send, Event: Sync + Send + Waiters>> ThreadedKit for K {}

fn ctx<K: SyncKit>() -> Shared<K> {
    Arc::new(Ctx {
        mutex: K::Mutex::INIT,
        event: K::Event::INIT,
        flag: Guarded::new(false),
    })
}

/// Spawns a thread that waits (with `wait`) until the flag is set.
fn spawn_flag_waiter<K: ThreadedKit>(c: &Shared<K>) -> JoinHandle<()> {
    let c = Arc::clone(c);
    thread::spawn(move || {
        const MAX_WAITS: usize = 1_000_000; // spurious wake-ups are rare
        c.mutex.lock();
        let mut waits = 0;
        // SAFETY: (flag read) the mutex is held here: taken before the loop
        // and relocked by every `wait`.
        while !unsafe { *c.flag.get() } {
            assert!(waits < MAX_WAITS, "too many spurious wake-ups");
            // SAFETY: the mutex is held, as `wait` requires.
            unsafe { c.event.wait(&c.mutex) };
            waits += 1;
        }
        // SAFETY: held since `lock`/the last `wait`.
        unsafe { c.mutex.unlock() };
    })
}

/// Blocks, with a bounded poll, until `n` threads are inside `wait`.
/// Returns with the mutex held, so they stay there.
fn lock_when_waiting<K: ThreadedKit>(c: &Ctx<K>, n: u32) {
    const POLLS: usize = 60_000; // × 1 ms, a hang guard only
    for _ in 0..POLLS {
        c.mutex.lock();
        if c.event.waiters() == n {
            return;
        }
        // SAFETY: locked just above.
        unsafe { c.mutex.unlock() };
        thread::sleep(Duration::from_millis(1));
    }
    panic!("waiters never reached wait()");
}

fn unlock_and_signal_one_wakes<K: ThreadedKit>() {
    let c = ctx::<K>();
    let waiter = spawn_flag_waiter(&c);
    lock_when_waiting(&c, 1);
    // SAFETY: the mutex is held.
    unsafe {
        *c.flag.get() = true;
        c.event.unlock_and_signal_one(&c.mutex);
    }
    join_bounded(std::vec![waiter]);
}

fn signal_all_wakes_all<K: ThreadedKit>() {
    let c = ctx::<K>();
    let waiters = (0..3).map(|_| spawn_flag_waiter(&c)).collect();
    lock_when_waiting(&c, 3);
    // SAFETY: the mutex is held, then released once.
    unsafe {
        *c.flag.get() = true;
        c.event.signal_all(&c.mutex);
        c.mutex.unlock();
    }
    join_bounded(waiters);
}

fn signal_one_wakes<K: ThreadedKit>() {
    let c = ctx::<K>();
    let waiter = spawn_flag_waiter(&c);
    lock_when_waiting(&c, 1);
    // SAFETY: the mutex is held, then released once.
    unsafe {
        *c.flag.get() = true;
        c.event.signal_one(&c.mutex);
        c.mutex.unlock();
    }
    join_bounded(std::vec![waiter]);
}

fn maybe_unlock_and_signal_one_reports_waiters<K: ThreadedKit>() {
    let c = ctx::<K>();

    // No waiter: false, and the mutex is still ours.
    c.mutex.lock();
    // SAFETY: the mutex is held.
    assert!(!unsafe { c.event.maybe_unlock_and_signal_one(&c.mutex) });
    assert!(!c.mutex.try_lock(), "mutex must still be held");
    // SAFETY: still held (checked above); clear the signal it left.
    unsafe {
        c.event.clear(&c.mutex);
        c.mutex.unlock();
    }

    // One waiter: true, and the mutex is released.
    let waiter = spawn_flag_waiter(&c);
    lock_when_waiting(&c, 1);
    // SAFETY: the mutex is held; `true` means the call released it.
    unsafe {
        *c.flag.get() = true;
        assert!(c.event.maybe_unlock_and_signal_one(&c.mutex));
    }
    join_bounded(std::vec![waiter]);
    assert!(c.mutex.try_lock(), "released by the call");
    // SAFETY: taken just above.
    unsafe { c.mutex.unlock() };
}

fn wait_for_times_out<K: ThreadedKit>() {
    let c = ctx::<K>();
    c.mutex.lock();
    // SAFETY: the mutex is held throughout (wait_for relocks it).
    unsafe {
        assert!(!c.event.wait_for(&c.mutex, 1_000_000), "nobody signals");
        assert!(!c.event.wait_for(&c.mutex, 0), "zero budget");
        c.event.signal_one(&c.mutex);
        assert!(c.event.wait_for(&c.mutex, 1_000_000), "already signalled");
        c.event.clear(&c.mutex);
        assert!(!c.event.wait_for(&c.mutex, 1_000), "cleared again");
        c.mutex.unlock();
    }
    assert_eq!(c.event.waiters(), 0);
}

fn wait_for_is_woken<K: ThreadedKit>() {
    let c = ctx::<K>();
    let w = Arc::clone(&c);
    let waiter = thread::spawn(move || {
        const MAX_WAITS: usize = 1_000_000;
        w.mutex.lock();
        let mut waits = 0;
        // SAFETY: (flag read) the mutex is held here: taken before the loop
        // and relocked by every `wait_for`.
        while !unsafe { *w.flag.get() } {
            assert!(waits < MAX_WAITS, "too many early returns");
            // A minute: it must be the signal, not the time-out, that ends it.
            // SAFETY: the mutex is held, as `wait_for` requires.
            let signalled = unsafe { w.event.wait_for(&w.mutex, 60_000_000_000) };
            assert!(signalled, "timed out: the signal was lost");
            waits += 1;
        }
        // SAFETY: held since `lock`/the last `wait_for`.
        unsafe { w.mutex.unlock() };
    });
    lock_when_waiting(&c, 1);
    // SAFETY: the mutex is held; the call releases it.
    unsafe {
        *c.flag.get() = true;
        c.event.unlock_and_signal_one(&c.mutex);
    }
    join_bounded(std::vec![waiter]);
}

/// Producers hand tokens to consumers through a queue guarded by the kit's
/// mutex, waking them with every signalling method; each token must be
/// consumed exactly once and every thread must finish.
fn handover_stress<K: ThreadedKit>() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    let tokens = scaled(100_000, 400);
    let per_producer = tokens / PRODUCERS;

    struct Queue {
        items: VecDeque<usize>,
        taken: usize,
    }
    struct Stress<K: SyncKit> {
        mutex: K::Mutex,
        event: K::Event,
        queue: Guarded<Queue>,
    }
    let s = Arc::new(Stress::<K> {
        mutex: K::Mutex::INIT,
        event: K::Event::INIT,
        queue: Guarded::new(Queue {
            items: VecDeque::new(),
            taken: 0,
        }),
    });

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // Each wait is preceded by a signal or is spurious; both
                // are far fewer than this.
                let max_waits = 10 * tokens + 1_000;
                let mut mine = Vec::new();
                let mut waits = 0;
                s.mutex.lock();
                loop {
                    // SAFETY: the mutex is held at the top of every round.
                    let q = unsafe { s.queue.get() };
                    if let Some(t) = q.items.pop_front() {
                        mine.push(t);
                        q.taken += 1;
                        if q.taken == tokens {
                            // Last token: release every idle consumer.
                            // SAFETY: the mutex is held.
                            unsafe { s.event.signal_all(&s.mutex) };
                        }
                        // Let others in between tokens.
                        // SAFETY: held; relocked at once.
                        unsafe { s.mutex.unlock() };
                        s.mutex.lock();
                    } else if q.taken == tokens {
                        break;
                    } else {
                        assert!(waits < max_waits, "consumer woke too often");
                        waits += 1;
                        // Asio's idle path: clear, then wait.
                        // SAFETY: the mutex is held; `wait` relocks it.
                        unsafe {
                            s.event.clear(&s.mutex);
                            s.event.wait(&s.mutex);
                        }
                    }
                }
                // SAFETY: held on leaving the loop.
                unsafe { s.mutex.unlock() };
                mine
            })
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for i in 0..per_producer {
                    let token = p * per_producer + i;
                    s.mutex.lock();
                    // SAFETY: the mutex is held for the push and the signal;
                    // each arm leaves it unlocked.
                    unsafe {
                        s.queue.get().items.push_back(token);
                        match i % 4 {
                            0 | 1 => s.event.unlock_and_signal_one(&s.mutex),
                            2 => {
                                if !s.event.maybe_unlock_and_signal_one(&s.mutex) {
                                    s.mutex.unlock();
                                }
                            }
                            _ => {
                                s.event.signal_one(&s.mutex);
                                s.mutex.unlock();
                            }
                        }
                    }
                }
            })
        })
        .collect();

    join_bounded(producers);
    let consumed = join_bounded(consumers);
    let mut all: Vec<usize> = consumed.into_iter().flatten().collect();
    assert_eq!(all.len(), tokens, "every token consumed exactly once");
    all.sort_unstable();
    assert!(
        all.iter().copied().eq(0..tokens),
        "no token lost or duplicated"
    );
    assert_eq!(s.event.waiters(), 0);
}

/// Two threads pass a turn back and forth, each sleeping on its own event
/// until the other hands it over. Every handover needs its wake-up, so a
/// single lost one deadlocks the pair (and fails `join_bounded`), unlike
/// the stress test, whose next signal would heal it.
fn ping_pong<K: ThreadedKit>() {
    let rounds = scaled(20_000, 100);
    struct PingPong<K: SyncKit> {
        mutex: K::Mutex,
        events: [K::Event; 2],
        turn: Guarded<usize>,
    }
    let s = Arc::new(PingPong::<K> {
        mutex: K::Mutex::INIT,
        events: [K::Event::INIT, K::Event::INIT],
        turn: Guarded::new(0),
    });
    let players = (0..2)
        .map(|me| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let other = 1 - me;
                let max_waits = 10 * rounds + 1_000;
                let mut waits = 0;
                s.mutex.lock();
                for round in 0..rounds {
                    // SAFETY: the mutex is held at the top of every round
                    // and whenever `wait` returns.
                    while unsafe { *s.turn.get() } != me {
                        assert!(waits < max_waits, "woke too often");
                        waits += 1;
                        // Clearing is sound: the other player signals only
                        // after handing over the turn, which it has not.
                        // SAFETY: the mutex is held; `wait` relocks it.
                        unsafe {
                            s.events[me].clear(&s.mutex);
                            s.events[me].wait(&s.mutex);
                        }
                    }
                    // SAFETY: the mutex is held; each arm leaves it held.
                    unsafe {
                        *s.turn.get() = other;
                        let e = &s.events[other];
                        match round % 4 {
                            0 => {
                                e.unlock_and_signal_one(&s.mutex);
                                s.mutex.lock();
                            }
                            1 => {
                                if e.maybe_unlock_and_signal_one(&s.mutex) {
                                    s.mutex.lock();
                                }
                            }
                            2 => e.signal_one(&s.mutex),
                            _ => e.signal_all(&s.mutex),
                        }
                    }
                }
                // SAFETY: held on leaving the loop.
                unsafe { s.mutex.unlock() };
            })
        })
        .collect();
    join_bounded(players);
}

macro_rules! event_tests {
    ($kit:ty, $($name:ident => $body:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $body::<$kit>();
            }
        )*
    };
}

#[cfg(target_os = "linux")]
mod futex_kit {
    use super::*;
    event_tests! {
    FutexKit,
    futex_unlock_and_signal_one_wakes => unlock_and_signal_one_wakes,
    futex_signal_all_wakes_all => signal_all_wakes_all,
    futex_signal_one_wakes => signal_one_wakes,
    futex_maybe_unlock_and_signal_one => maybe_unlock_and_signal_one_reports_waiters,
    futex_wait_for_times_out => wait_for_times_out,
    futex_wait_for_is_woken => wait_for_is_woken,
    futex_handover_stress => handover_stress,
    futex_ping_pong => ping_pong,
    }
}

event_tests! {
    SpinKit,
    spin_unlock_and_signal_one_wakes => unlock_and_signal_one_wakes,
    spin_signal_all_wakes_all => signal_all_wakes_all,
    spin_signal_one_wakes => signal_one_wakes,
    spin_maybe_unlock_and_signal_one => maybe_unlock_and_signal_one_reports_waiters,
    spin_wait_for_times_out => wait_for_times_out,
    spin_wait_for_is_woken => wait_for_is_woken,
    spin_handover_stress => handover_stress,
    spin_ping_pong => ping_pong,
}

#[test]
fn null_kit_never_waits() {
    let m = <NullKit as SyncKit>::Mutex::INIT;
    let e = <NullKit as SyncKit>::Event::INIT;
    m.lock();
    // SAFETY: `m` is held where required; `unlock_and_signal_one` is the
    // one call that releases it, and it is relocked before the final unlock.
    unsafe {
        e.wait(&m);
        assert!(!e.wait_for(&m, u64::MAX));
        e.signal_one(&m);
        e.signal_all(&m);
        e.clear(&m);
        assert!(!e.maybe_unlock_and_signal_one(&m));
        e.unlock_and_signal_one(&m);
        m.lock();
        m.unlock();
    }
}

// ----------------------------------------------------------- thread ids

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
            thread::spawn(move || {
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
    let [(id, me)] = join_bounded(std::vec![thread::spawn(here)])[..] else {
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

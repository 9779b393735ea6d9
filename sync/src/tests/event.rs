//! The wake-up events: every signalling method wakes a waiter that is
//! known (from the event's own waiter count, read under the mutex) to be
//! inside `wait`; time-outs; a stress hand-over and a ping-pong in which a
//! single lost wake-up deadlocks.

use std::collections::VecDeque;
use std::sync::Arc;

use super::*;
use crate::*;

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

/// Spawns a thread that waits (with `wait`) until the flag is set. Early
/// (spurious) returns are allowed by the contract and simply re-checked; a
/// lost wake-up leaves the thread waiting, which `join_bounded` reports.
fn spawn_flag_waiter<K: ThreadedKit>(c: &Shared<K>) -> Watched<()> {
    let c = Arc::clone(c);
    spawn(move || {
        c.mutex.lock();
        // SAFETY: (flag read) the mutex is held here: taken before the loop
        // and relocked by every `wait`.
        while !unsafe { *c.flag.get() } {
            // SAFETY: the mutex is held, as `wait` requires.
            unsafe { c.event.wait(&c.mutex) };
        }
        // SAFETY: held since `lock`/the last `wait`.
        unsafe { c.mutex.unlock() };
    })
}

/// Returns, with the mutex held, once the event counts `n` waiters: each
/// has then checked the flag under the mutex, registered and released it,
/// and cannot return before a signal (or spuriously), so the signal that
/// follows is one they must not miss, whether or not they already sleep.
fn lock_when_waiting<K: ThreadedKit>(c: &Ctx<K>, n: u32) {
    yield_until("waiters reaching wait()", || {
        c.mutex.lock();
        if c.event.waiters() == n {
            return true;
        }
        // SAFETY: locked just above.
        unsafe { c.mutex.unlock() };
        false
    });
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
    // With nobody to signal, `wait_for` ends in a time-out; it may return
    // `true` early first (spuriously, as the contract allows), so retry.
    // SAFETY (closure): the caller holds the mutex, as `wait_for` requires.
    let times_out = |ns| yield_until("a time-out", || !unsafe { c.event.wait_for(&c.mutex, ns) });
    c.mutex.lock();
    times_out(1_000_000);
    // SAFETY: the mutex is held throughout (wait_for relocks it).
    unsafe {
        assert!(!c.event.wait_for(&c.mutex, 0), "zero budget");
        c.event.signal_one(&c.mutex);
        assert!(c.event.wait_for(&c.mutex, 1_000_000), "already signalled");
        c.event.clear(&c.mutex);
    }
    times_out(1_000);
    // SAFETY: held since `lock` (wait_for relocks it).
    unsafe { c.mutex.unlock() };
    assert_eq!(c.event.waiters(), 0);
}

fn wait_for_is_woken<K: ThreadedKit>() {
    let c = ctx::<K>();
    let w = Arc::clone(&c);
    let waiter = spawn(move || {
        // The watchdog's length: only a lost signal lets it run out.
        let timeout_ns = WATCHDOG.as_nanos() as u64;
        w.mutex.lock();
        // SAFETY: (flag read) the mutex is held here: taken before the loop
        // and relocked by every `wait_for`.
        while !unsafe { *w.flag.get() } {
            // SAFETY: the mutex is held, as `wait_for` requires.
            let signalled = unsafe { w.event.wait_for(&w.mutex, timeout_ns) };
            assert!(signalled, "timed out: the signal was lost");
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
            spawn(move || {
                let mut mine = Vec::new();
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
            spawn(move || {
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
            spawn(move || {
                let other = 1 - me;
                s.mutex.lock();
                for round in 0..rounds {
                    // SAFETY: the mutex is held at the top of every round
                    // and whenever `wait` returns.
                    while unsafe { *s.turn.get() } != me {
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

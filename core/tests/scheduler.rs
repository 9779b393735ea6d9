//! Integration tests of pinion-core's scheduler (Asio's `io_context` run
//! loop): exactly-once execution under contention, stop/restart, work
//! guards, poll/run_one/run_for, dispatch/defer, pool exhaustion, shutdown,
//! nested runs, and a seeded randomized stress.
//!
//! Every wait is bounded (count and time) and nothing asserts on elapsed
//! time. Counts shrink drastically under miri. Under miri (and on targets
//! without a cheap thread id) `current_thread_id()` is 0: the scheduler
//! then cannot tell its own threads, so the checks that depend on it
//! (inline dispatch, `running_in_this_thread`) are skipped there.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pinion_core::backend::NoTask;
use pinion_core::{Error, Pool, Rejected, Scheduler, Strand};
use pinion_sync::{FutexKit, NullKit, SpinKit, SyncKit};

// ------------------------------------------------------------- helpers
mod common;
use common::*;

// ---------------------------------------- exactly once, under contention

const CHAINS: usize = scale(1000, 3);
const PER_CHAIN: usize = scale(1000, 4);
const OUTSIDE_THREADS: usize = 2;
const OUTSIDE_PER: usize = scale(25_000, 4);

fn chain_step(ctx: &'static Ctx, hits: &'static [AtomicU8], chain: usize, k: usize) {
    hits[chain * PER_CHAIN + k].fetch_add(1, Ordering::Relaxed);
    if k + 1 < PER_CHAIN
        && ctx
            .post(move || chain_step(ctx, hits, chain, k + 1))
            .is_err()
    {
        panic!("pool sized so that a chain's next post always fits");
    }
}

/// 1,000 chains x 1,000 handlers (seeds included) re-posted from inside
/// handlers, plus 50,000 posts from 2 outside threads, on `run_threads`
/// threads: each handler runs exactly once and the `run` totals add up.
fn million(hint: usize, run_threads: usize) {
    let _w = watchdog("million", 60);
    let chained = CHAINS * PER_CHAIN;
    let total = chained + OUTSIDE_THREADS * OUTSIDE_PER;
    let ctx: &'static Ctx = leak(CHAINS + OUTSIDE_THREADS * OUTSIDE_PER + 1024, hint);
    let hits = leak_slice(total, |_| AtomicU8::new(0));
    // Keeps `run` alive while the outside threads are still posting.
    let guard = ctx.work_guard();
    for c in 0..CHAINS {
        ctx.post(move || chain_step(ctx, hits, c, 0))
            .expect("pool sized for every seed");
    }
    let runners = spawn_runners(ctx, run_threads);
    let posters: Vec<_> = (0..OUTSIDE_THREADS)
        .map(|t| {
            thread::spawn(move || {
                assert!(!ctx.running_in_this_thread());
                for i in 0..OUTSIDE_PER {
                    let id = chained + t * OUTSIDE_PER + i;
                    ctx.post(move || {
                        hits[id].fetch_add(1, Ordering::Relaxed);
                    })
                    .expect("pool sized for every outside post");
                }
            })
        })
        .collect();
    join_all("outside posters", 50, posters);
    drop(guard);
    let ran: usize = join_all("run threads", 50, runners).into_iter().sum();
    assert_eq!(first_not_once(hits), None, "(handler id, times run)");
    assert_eq!(ran, total, "sum of run() return values");
    assert_eq!(ctx.outstanding_work(), 0);
    assert!(ctx.stopped());
    assert_eq!(ctx.ops_in_use().0, 0, "every slot back in the pool");
}

#[test]
fn million_handlers_each_run_once_hint_8_on_8_threads() {
    million(8, 8);
}

#[test]
fn million_handlers_each_run_once_hint_1_on_1_thread() {
    million(1, 1);
}

/// Hint 1 promises one thread; more threads must still be correct (only
/// slower: whole batches, no sibling wake-ups).
#[test]
fn million_handlers_each_run_once_hint_1_on_8_threads() {
    million(1, 8);
}

/// A thread idle in `run` is woken by every post from outside: ping-pong
/// one handler at a time, so a lost wake-up hangs (and fails) the test.
fn ping_pong<K: SyncKit>(hint: usize, rounds: usize)
where
    Ctx<K>: Sync,
{
    let _w = watchdog("ping_pong", 60);
    let ctx: &'static Ctx<K> = leak(64, hint);
    let count: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let guard = ctx.work_guard();
    let runner = spawn_runners(ctx, 1);
    let mut rng = XorShift(0x1234_5678);
    for i in 0..rounds {
        // Post at varying points of the runner's way into its wait.
        for _ in 0..rng.next() % 3000 {
            std::hint::spin_loop();
        }
        ctx.post(move || {
            count.fetch_add(1, Ordering::Release);
        })
        .expect("one handler in flight");
        wait_until("the handler posted from outside to run", 10, || {
            count.load(Ordering::Acquire) == i + 1
        });
    }
    drop(guard);
    let ran = join_all("run thread", 10, runner);
    assert_eq!(ran, vec![rounds]);
}

#[test]
fn post_from_outside_wakes_idle_thread_futex() {
    ping_pong::<FutexKit>(2, scale(20_000, 20));
}

#[test]
fn post_from_outside_wakes_idle_thread_futex_hint_1() {
    ping_pong::<FutexKit>(1, scale(20_000, 20));
}

#[test]
fn post_from_outside_wakes_idle_thread_spin() {
    ping_pong::<SpinKit>(2, scale(4_000, 20));
}

// ------------------------------------------------------------ stopping

fn stop_wakes_all<K: SyncKit>()
where
    Ctx<K>: Sync,
{
    let _w = watchdog("stop_wakes_all", 60);
    let ctx: &'static Ctx<K> = leak(scale(1000, 10) + 64, 4);
    let guard = ctx.work_guard();
    let entered: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let runners: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                entered.fetch_add(1, Ordering::SeqCst);
                ctx.run()
            })
        })
        .collect();
    wait_until("4 threads to enter run", 10, || {
        entered.load(Ordering::SeqCst) == 4
    });
    // Give them time to go to sleep (not asserted: stop must work either way).
    thread::sleep(Duration::from_millis(50));
    assert!(runners.iter().all(|h| !h.is_finished()), "work guard held");
    assert!(!ctx.stopped());
    ctx.stop();
    let ran = join_all("every run() to return after stop()", 10, runners);
    assert_eq!(ran, vec![0; 4]);
    assert!(ctx.stopped());

    // restart() + run() resume and run new handlers.
    ctx.restart();
    assert!(!ctx.stopped());
    let n = scale(1000, 10);
    let count: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let runners = spawn_runners(ctx, 4);
    for _ in 0..n {
        ctx.post(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .expect("pool large enough");
    }
    wait_until("handlers posted after restart to run", 10, || {
        count.load(Ordering::SeqCst) == n
    });
    drop(guard);
    let ran: usize = join_all("run() to return once the guard is gone", 10, runners)
        .into_iter()
        .sum();
    assert_eq!(ran, n);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn stop_wakes_every_waiting_thread_futex() {
    stop_wakes_all::<FutexKit>();
}

#[test]
fn stop_wakes_every_waiting_thread_spin() {
    stop_wakes_all::<SpinKit>();
}

/// A handler calling `stop()` mid-batch: the rest of the batch and what
/// the handler posted are kept, in order, and run after restart + run.
fn stop_mid_batch_single(hint: usize) {
    let _w = watchdog("stop_mid_batch", 60);
    let ctx: &'static Ctx = leak(256, hint);
    let order: &'static Mutex<Vec<usize>> = leak_box(Box::new(Mutex::new(Vec::new())));
    for i in 0..100 {
        ctx.post(move || {
            order.lock().unwrap().push(i);
            if i == 9 {
                ctx.stop();
                ctx.post(move || order.lock().unwrap().push(100))
                    .expect("slots free");
            }
        })
        .expect("pool sized for 100");
    }
    assert_eq!(ctx.run(), 10, "run returns after the stopping handler");
    assert!(ctx.stopped());
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(ctx.outstanding_work(), 91);
    // Still stopped: run and poll do nothing.
    assert_eq!(ctx.poll(), 0);
    assert_eq!(ctx.run(), 0);
    ctx.restart();
    assert_eq!(ctx.run(), 91);
    assert_eq!(*order.lock().unwrap(), (0..=100).collect::<Vec<_>>());
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn stop_mid_batch_keeps_remaining_handlers_hint_1() {
    stop_mid_batch_single(1);
}

#[test]
fn stop_mid_batch_keeps_remaining_handlers_hint_8() {
    stop_mid_batch_single(8);
}

#[test]
fn stop_mid_batch_on_4_threads_loses_nothing() {
    let _w = watchdog("stop_mid_batch_4", 60);
    let n = scale(20_000, 40);
    let ctx: &'static Ctx = leak(n + 512, 4);
    let hits = leak_slice(n, |_| AtomicU8::new(0));
    for (i, hit) in hits.iter().enumerate() {
        ctx.post(move || {
            hit.fetch_add(1, Ordering::Relaxed);
            if i == n / 2 {
                ctx.stop();
            }
        })
        .expect("pool sized for all");
    }
    let first: usize = join_all("run threads after stop", 30, spawn_runners(ctx, 4))
        .into_iter()
        .sum();
    assert!(ctx.stopped());
    ctx.restart();
    let second: usize = join_all("run threads after restart", 30, spawn_runners(ctx, 4))
        .into_iter()
        .sum();
    assert_eq!(first + second, n);
    assert_eq!(first_not_once(hits), None, "(handler id, times run)");
    assert_eq!(ctx.ops_in_use().0, 0);
}

// ---------------------------------------------------------- work guard

#[test]
fn work_guard_keeps_run_alive_until_dropped() {
    let _w = watchdog("work_guard", 60);
    let ctx: &'static Ctx = leak(16, 2);
    let ran = Arc::new(AtomicBool::new(false));
    let guard = ctx.work_guard();
    assert_eq!(ctx.outstanding_work(), 1);
    let runner = spawn_runners(ctx, 1);
    thread::sleep(Duration::from_millis(50));
    assert!(!runner[0].is_finished(), "run returned with a guard alive");
    let r = ran.clone();
    ctx.post(move || r.store(true, Ordering::SeqCst))
        .expect("free slots");
    wait_until("the handler posted after 50ms to run", 10, || {
        ran.load(Ordering::SeqCst)
    });
    assert!(!runner[0].is_finished(), "run returned with a guard alive");
    guard.reset();
    assert_eq!(
        join_all("run after the guard is dropped", 10, runner),
        vec![1]
    );
    assert!(ctx.stopped());
    assert_eq!(ctx.outstanding_work(), 0);
}

// ------------------------------------------- run / poll / run_one / run_for

#[test]
fn run_returns_at_once_without_work() {
    let _w = watchdog("run_no_work", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(4), 2);
    assert_eq!(ctx.run(), 0);
    assert!(ctx.stopped(), "running out of work stops the context");
    ctx.restart();
    assert_eq!(ctx.run_one(), 0);
    ctx.restart();
    assert_eq!(ctx.poll(), 0);
    ctx.restart();
    assert_eq!(ctx.poll_one(), 0);
    ctx.restart();
    assert_eq!(ctx.run_for(1_000_000_000), 0);
}

#[test]
fn poll_and_poll_one_run_only_ready_handlers() {
    let _w = watchdog("poll", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(16), 2);
    let count = Arc::new(AtomicUsize::new(0));
    let guard = ctx.work_guard();
    // Nothing ready: both return at once even though work is outstanding.
    assert_eq!(ctx.poll(), 0);
    assert_eq!(ctx.poll_one(), 0);
    for _ in 0..3 {
        let c = count.clone();
        ctx.post(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    assert_eq!(ctx.poll(), 3);
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(ctx.poll(), 0);
    for _ in 0..2 {
        let c = count.clone();
        ctx.post(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    assert_eq!(ctx.poll_one(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(ctx.poll_one(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 5);
    assert_eq!(ctx.poll_one(), 0);
    assert!(!ctx.stopped(), "the guard keeps work outstanding");
    drop(guard);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn run_one_runs_exactly_one() {
    let _w = watchdog("run_one", 60);
    for hint in [1, 8] {
        let ctx: Ctx = Scheduler::new(NoTask, slots(16), hint);
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let c = count.clone();
            ctx.post(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        assert_eq!(ctx.run_one(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.outstanding_work(), 2);
        assert_eq!(ctx.run_one(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(ctx.run(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(ctx.ops_in_use().0, 0);
    }
}

#[test]
fn run_for_returns_after_timeout_with_a_guard() {
    let _w = watchdog("run_for", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(16), 2);
    let guard = ctx.work_guard();
    assert_eq!(ctx.run_for(10_000_000), 0);
    assert!(!ctx.stopped());
    // With a handler ready it runs it, then times out.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    ctx.post(move || r.store(true, Ordering::SeqCst)).unwrap();
    assert_eq!(ctx.run_for(10_000_000), 1);
    assert!(ran.load(Ordering::SeqCst));
    drop(guard);
    assert_eq!(ctx.run_for(10_000_000), 0);
    assert!(ctx.stopped());
}

// ------------------------------------------------- dispatch and defer

thread_local! {
    static MARK: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn dispatch_runs_inline_inside_and_posts_outside() {
    let _w = watchdog("dispatch", 60);
    let ctx: &'static Ctx = leak(16, 2);
    let log: &'static Mutex<Vec<&'static str>> = leak_box(Box::new(Mutex::new(Vec::new())));
    assert!(!ctx.running_in_this_thread());

    // Outside run: dispatch queues the handler.
    ctx.dispatch(move || log.lock().unwrap().push("outside"))
        .unwrap();
    assert!(log.lock().unwrap().is_empty(), "not run inline outside run");
    assert_eq!(ctx.outstanding_work(), 1);

    // Inside a handler: dispatch runs it before returning.
    ctx.post(move || {
        if ids_available() {
            assert!(ctx.running_in_this_thread());
        }
        MARK.with(|m| m.set(1));
        ctx.dispatch(move || {
            log.lock().unwrap().push("inner");
            MARK.with(|m| m.set(2));
        })
        .unwrap();
        let inline = MARK.with(|m| m.get()) == 2;
        if ids_available() {
            assert!(inline, "dispatch from inside a handler runs inline");
        }
        log.lock().unwrap().push("after dispatch");
    })
    .unwrap();
    assert_eq!(ctx.run(), if ids_available() { 2 } else { 3 });
    let got = log.lock().unwrap().clone();
    if ids_available() {
        assert_eq!(got, ["outside", "inner", "after dispatch"]);
    } else {
        assert_eq!(got, ["outside", "after dispatch", "inner"]);
    }
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn defer_behaves_like_post() {
    let _w = watchdog("defer", 60);
    let ctx: &'static Ctx = leak(16, 2);
    let log: &'static Mutex<Vec<&'static str>> = leak_box(Box::new(Mutex::new(Vec::new())));
    ctx.defer(move || log.lock().unwrap().push("outside"))
        .unwrap();
    assert!(log.lock().unwrap().is_empty(), "defer never runs inline");
    assert_eq!(ctx.outstanding_work(), 1);
    ctx.post(move || {
        ctx.post(move || log.lock().unwrap().push("p1")).unwrap();
        ctx.defer(move || log.lock().unwrap().push("d2")).unwrap();
        ctx.post(move || log.lock().unwrap().push("p3")).unwrap();
        assert!(
            !log.lock().unwrap().contains(&"d2"),
            "defer from a handler does not run inline"
        );
        log.lock().unwrap().push("handler end");
    })
    .unwrap();
    assert_eq!(ctx.run(), 5);
    assert_eq!(
        *log.lock().unwrap(),
        ["outside", "handler end", "p1", "d2", "p3"]
    );
}

// ----------------------------------------------------- pool exhaustion

#[test]
fn pool_exhaustion_hands_the_handler_back() {
    let _w = watchdog("pool_exhaustion", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(8), 1);
    assert_eq!(ctx.ops_in_use().1, 8);
    let count = Arc::new(AtomicUsize::new(0));
    let mk = |count: &Arc<AtomicUsize>| {
        let c = count.clone();
        move || {
            c.fetch_add(1, Ordering::SeqCst);
        }
    };
    for _ in 0..8 {
        ctx.post(mk(&count)).expect("8 slots");
    }
    assert_eq!(ctx.ops_in_use().0, 8);
    match ctx.post(mk(&count)) {
        Err(Rejected {
            error: Error::PoolFull(Pool::Ops),
            handler,
        }) => {
            assert_eq!(count.load(Ordering::SeqCst), 0);
            handler();
            assert_eq!(count.load(Ordering::SeqCst), 1, "handed-back handler works");
        }
        Err(r) => panic!("wrong error {r:?}"),
        Ok(()) => panic!("9th post accepted by an 8-slot pool"),
    }
    // dispatch (outside run: a post) and defer are refused the same way.
    let r = ctx.dispatch(mk(&count)).unwrap_err();
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));
    let r2 = ctx.defer(mk(&count)).unwrap_err();
    assert_eq!(r2.error, Error::PoolFull(Pool::Ops));
    (r.handler)();
    (r2.handler)();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // The rejection did not count as work.
    assert_eq!(ctx.outstanding_work(), 8);
    assert_eq!(ctx.run(), 8);
    assert_eq!(count.load(Ordering::SeqCst), 11);
    assert_eq!(ctx.ops_in_use().0, 0);
    // Posting works again.
    ctx.restart();
    ctx.post(mk(&count)).expect("slots are free again");
    assert_eq!(ctx.run(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 12);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn pool_exhaustion_inside_a_handler() {
    let _w = watchdog("pool_exhaustion_inside", 60);
    let ctx: &'static Ctx = leak(4, 2);
    let count: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let rejected: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    ctx.post(move || {
        // This handler's slot is free again while it runs: 4 posts fit.
        for _ in 0..6 {
            match ctx.post(move || {
                count.fetch_add(1, Ordering::SeqCst);
            }) {
                Ok(()) => {}
                Err(Rejected { error, handler }) => {
                    assert_eq!(error, Error::PoolFull(Pool::Ops));
                    rejected.fetch_add(1, Ordering::SeqCst);
                    handler();
                }
            }
        }
    })
    .unwrap();
    assert_eq!(ctx.run(), 5);
    assert_eq!(rejected.load(Ordering::SeqCst), 2);
    assert_eq!(count.load(Ordering::SeqCst), 6);
    assert_eq!(ctx.ops_in_use().0, 0);
}

// ------------------------------------------------------------ shutdown

#[test]
fn dropping_the_context_drops_pending_handlers_unrun() {
    let _w = watchdog("drop", 60);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let ctx: Box<Ctx> = Box::new(Scheduler::new(NoTask, slots(64), 2));
    let handler = |drops: &Arc<AtomicUsize>, ran: &Arc<AtomicUsize>| {
        let d = DropCount(drops.clone());
        let r = ran.clone();
        move || {
            let _keep = &d;
            r.fetch_add(1, Ordering::SeqCst);
        }
    };
    for _ in 0..10 {
        ctx.post(handler(&drops, &ran)).unwrap();
    }
    {
        // A strand with one handler in `ready` and four in `waiting`, and
        // a second strand left with a single pending handler.
        let s = Strand::new(&*ctx).unwrap();
        for _ in 0..5 {
            s.post(handler(&drops, &ran)).unwrap();
        }
        let s2 = Strand::new(&*ctx).unwrap();
        s2.post(handler(&drops, &ran)).unwrap();
        // Handles gone, handlers still pending: slots stay in use.
    }
    // An idle strand whose handle is dropped returns its slot.
    drop(Strand::new(&*ctx).unwrap());
    // Bookkeeping before the drop: 16 handlers + 2 strands, nothing else.
    assert_eq!(ctx.ops_in_use().0, 10 + 5 + 1 + 2);
    assert_eq!(ctx.outstanding_work(), 10 + 2, "10 posts + 2 strand ops");
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 16, "every handler dropped");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "none ran");
}

#[test]
fn dropping_the_context_after_a_stop_drops_the_rest() {
    let _w = watchdog("drop_after_stop", 60);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let ctx: Box<Ctx> = Box::new(Scheduler::new(NoTask, slots(64), 1));
    for _ in 0..20 {
        let d = DropCount(drops.clone());
        let r = ran.clone();
        ctx.post(move || {
            let _keep = &d;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    assert_eq!(ctx.run_one(), 1);
    assert_eq!(ctx.poll_one(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(ctx.ops_in_use().0, 18);
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 20);
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

// -------------------------------------------------------------- nesting

#[test]
fn nested_poll_runs_queued_handlers_without_deadlock() {
    let _w = watchdog("nested_poll", 60);
    for hint in [1, 8] {
        let ctx: &'static Ctx = leak(16, hint);
        let hits = leak_slice(3, |_| AtomicU8::new(0));
        let nested: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(usize::MAX)));
        ctx.post(move || {
            hits[0].fetch_add(1, Ordering::SeqCst);
            nested.store(ctx.poll(), Ordering::SeqCst);
        })
        .unwrap();
        for hit in &hits[1..3] {
            ctx.post(move || {
                hit.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        // run_one takes exactly the first handler; its nested poll finds
        // the other two in the shared queue.
        assert_eq!(ctx.run_one(), 1);
        assert_eq!(nested.load(Ordering::SeqCst), 2, "hint {hint}");
        assert_eq!(first_not_once(hits), None);
        assert_eq!(ctx.outstanding_work(), 0);
        ctx.restart();
        assert_eq!(ctx.poll(), 0);
        assert_eq!(ctx.ops_in_use().0, 0);
    }
}

/// Handlers on 2 threads that call `poll()` (and `poll_one()`) nested and
/// post follow-ups: nothing deadlocks, nothing is lost or run twice.
#[test]
fn nested_poll_under_load_loses_nothing() {
    let _w = watchdog("nested_poll_load", 60);
    let n = scale(4000, 30);
    let total = 2 * n;
    let ctx: &'static Ctx = leak(total + 256, 2);
    let hits = leak_slice(total, |_| AtomicU8::new(0));
    thread_local! {
        static DEPTH: Cell<usize> = const { Cell::new(0) };
    }
    fn h(ctx: &'static Ctx, hits: &'static [AtomicU8], id: usize, n: usize) {
        hits[id].fetch_add(1, Ordering::Relaxed);
        if id < n {
            // Follow-up (second half of the ids), then a nested run, at
            // most 3 deep so the stack stays bounded.
            ctx.post(move || h(ctx, hits, id + n, n)).expect("sized");
            let depth = DEPTH.with(|d| d.get());
            if depth < 3 {
                DEPTH.with(|d| d.set(depth + 1));
                match id % 4 {
                    0 => {
                        ctx.poll();
                    }
                    1 => {
                        ctx.poll_one();
                    }
                    _ => {}
                }
                DEPTH.with(|d| d.set(depth));
            }
        }
    }
    for id in 0..n {
        ctx.post(move || h(ctx, hits, id, n)).expect("sized");
    }
    let ran: usize = join_all("run threads", 50, spawn_runners(ctx, 2))
        .into_iter()
        .sum();
    assert_eq!(first_not_once(hits), None, "(handler id, times run)");
    assert!(ran <= total);
    assert_eq!(ctx.outstanding_work(), 0);
    assert_eq!(ctx.ops_in_use().0, 0);
}

/// Asio's `scheduler::poll` first moves the outer run's thread-private
/// queue to the shared queue "to support nested calls to poll()", and
/// Asio's `post` from a handler on a multi-threaded context goes to the
/// shared queue anyway; so a handler that posts B and then polls until B
/// has run terminates. In pinion every post from inside `run` goes to the
/// outer `ThreadInfo`'s private queue, which the nested `poll` (with its
/// own `ThreadInfo`) never sees: the loop spins until its bound.
fn nested_poll_sees_own_posts(hint: usize) {
    let _w = watchdog("nested_poll_private", 60);
    let ctx: &'static Ctx = leak(16, hint);
    let b_ran: &'static AtomicBool = leak_box(Box::new(AtomicBool::new(false)));
    let polls: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    ctx.post(move || {
        ctx.post(move || b_ran.store(true, Ordering::SeqCst))
            .unwrap();
        for _ in 0..1000 {
            if b_ran.load(Ordering::SeqCst) {
                break;
            }
            ctx.poll();
            polls.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    ctx.run();
    assert!(b_ran.load(Ordering::SeqCst));
    assert!(
        polls.load(Ordering::SeqCst) <= 1,
        "handler B posted before the nested poll was not run by it ({} polls)",
        polls.load(Ordering::SeqCst)
    );
}

#[test]
fn nested_poll_runs_handlers_posted_by_the_calling_handler_hint_1() {
    nested_poll_sees_own_posts(1);
}

#[test]
fn nested_poll_runs_handlers_posted_by_the_calling_handler_hint_8() {
    nested_poll_sees_own_posts(8);
}

// --------------------------------------------------------- NullKit smoke

#[test]
fn null_kit_one_thread_smoke() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    let ctx: Scheduler<NoTask, NullKit> = Scheduler::new(NoTask, slots(128), 1);
    assert_eq!(ctx.run(), 0);
    ctx.restart();
    let order = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..50 {
        ctx.post(|| {
            RAN.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let strand = Strand::new(&ctx).unwrap();
    for i in 0..20 {
        let o = order.clone();
        strand.post(move || o.lock().unwrap().push(i)).unwrap();
    }
    assert_eq!(ctx.poll_one(), 1);
    assert_eq!(RAN.load(Ordering::SeqCst), 1);
    assert!(ctx.run() >= 50);
    assert_eq!(RAN.load(Ordering::SeqCst), 50);
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    assert_eq!(ctx.ops_in_use().0, 1, "the strand's slot");
    drop(strand);
    assert_eq!(ctx.ops_in_use().0, 0);
    ctx.restart();
    let g = ctx.work_guard();
    assert_eq!(ctx.poll(), 0);
    assert_eq!(ctx.run_for(1_000_000), 0);
    drop(g);
}

// ---------------------------------------------------- randomized stress

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

const STRESS_THREADS: usize = 4;
const STRESS_STEPS: usize = scale(20_000, 60);
/// Ids: each step posts at most one handler, each handler at most one
/// follow-up, follow-ups only from depth 0.
const STRESS_IDS: usize = STRESS_THREADS * STRESS_STEPS * 2;

struct Stress<K: SyncKit + 'static> {
    ctx: &'static Ctx<K>,
    strands: [Strand<'static, NoTask, K>; 2],
    in_flight: [AtomicU8; 2],
    overlaps: AtomicUsize,
    next_id: AtomicUsize,
    posted: Box<[AtomicU8]>,
    ran: Box<[AtomicU8]>,
    rejected: AtomicUsize,
}

fn stress_new_id<K: SyncKit>(w: &Stress<K>) -> usize {
    let id = w.next_id.fetch_add(1, Ordering::Relaxed);
    assert!(id < STRESS_IDS, "id space sized for every post");
    id
}

fn stress_post<K: SyncKit>(w: &'static Stress<K>, depth: u8, via_dispatch: bool)
where
    Ctx<K>: Sync,
    Strand<'static, NoTask, K>: Send + Sync,
{
    let id = stress_new_id(w);
    w.posted[id].store(1, Ordering::Relaxed);
    let h = move || {
        w.ran[id].fetch_add(1, Ordering::Relaxed);
        if depth == 0 && id % 3 == 1 {
            stress_post(w, 1, false);
        }
    };
    let r = if via_dispatch {
        w.ctx.dispatch(h)
    } else {
        w.ctx.post(h)
    };
    if let Err(Rejected { error, handler: _ }) = r {
        assert_eq!(error, Error::PoolFull(Pool::Ops));
        w.posted[id].store(0, Ordering::Relaxed);
        w.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

fn stress_strand_post<K: SyncKit>(w: &'static Stress<K>, s: usize, depth: u8)
where
    Ctx<K>: Sync,
    Strand<'static, NoTask, K>: Send + Sync,
{
    let id = stress_new_id(w);
    w.posted[id].store(1, Ordering::Relaxed);
    let h = move || {
        if w.in_flight[s].swap(1, Ordering::Acquire) != 0 {
            w.overlaps.fetch_add(1, Ordering::Relaxed);
        }
        w.ran[id].fetch_add(1, Ordering::Relaxed);
        if depth == 0 && id % 2 == 1 {
            stress_strand_post(w, s, 1);
        }
        if w.in_flight[s].swap(0, Ordering::Release) != 1 {
            w.overlaps.fetch_add(1, Ordering::Relaxed);
        }
    };
    if let Err(Rejected { error, handler: _ }) = w.strands[s].post(h) {
        assert_eq!(error, Error::PoolFull(Pool::Ops));
        w.posted[id].store(0, Ordering::Relaxed);
        w.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

fn stress<K: SyncKit>(seed: u64)
where
    Ctx<K>: Sync,
    Strand<'static, NoTask, K>: Send + Sync,
{
    let _w = watchdog("stress", 90);
    let ctx: &'static Ctx<K> = leak(scale(512, 64), STRESS_THREADS);
    let w: &'static Stress<K> = leak_box(Box::new(Stress {
        ctx,
        strands: [Strand::new(ctx).unwrap(), Strand::new(ctx).unwrap()],
        in_flight: [AtomicU8::new(0), AtomicU8::new(0)],
        overlaps: AtomicUsize::new(0),
        next_id: AtomicUsize::new(0),
        posted: (0..STRESS_IDS).map(|_| AtomicU8::new(0)).collect(),
        ran: (0..STRESS_IDS).map(|_| AtomicU8::new(0)).collect(),
        rejected: AtomicUsize::new(0),
    }));
    let finished: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..STRESS_THREADS as u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t + 1));
                for _ in 0..STRESS_STEPS {
                    match rng.next() % 100 {
                        0..=19 => {
                            ctx.run_one();
                        }
                        20..=34 => {
                            ctx.poll();
                        }
                        35..=44 => {
                            ctx.poll_one();
                        }
                        45..=69 => stress_post(w, 0, false),
                        70..=72 => stress_post(w, 0, true),
                        73..=96 => stress_strand_post(w, (rng.next() % 2) as usize, 0),
                        _ => {
                            ctx.stop();
                            ctx.restart();
                        }
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // A worker may block in run_one() while the others are done (as Asio's
    // would); an extra stop() now and then lets it go on. Bounded.
    let t0 = Instant::now();
    while finished.load(Ordering::SeqCst) < STRESS_THREADS {
        assert!(t0.elapsed() < limit(80), "stress workers did not finish");
        thread::sleep(Duration::from_millis(20));
        if t0.elapsed() > Duration::from_millis(500) {
            ctx.stop();
        }
    }
    join_all("stress workers", 10, workers);
    // Drain: everything still queued runs, then run() runs out of work.
    ctx.restart();
    let drained = join_all("final drain", 30, spawn_runners(ctx, 1));
    let issued = w.next_id.load(Ordering::SeqCst);
    let mut bad = Vec::new();
    for id in 0..issued {
        let p = w.posted[id].load(Ordering::Relaxed);
        let r = w.ran[id].load(Ordering::Relaxed);
        if p != r {
            bad.push((id, p, r));
        }
    }
    assert!(
        bad.is_empty(),
        "(id, posted, ran) mismatches after drain ({} total, drain ran {drained:?}): {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert_eq!(
        w.overlaps.load(Ordering::SeqCst),
        0,
        "strand handlers overlapped"
    );
    assert_eq!(ctx.outstanding_work(), 0);
    assert_eq!(ctx.ops_in_use().0, 2, "only the two strands' slots");
    let posted: usize = w
        .posted
        .iter()
        .map(|p| p.load(Ordering::Relaxed) as usize)
        .sum();
    assert!(posted > 0);
    assert_eq!(posted + w.rejected.load(Ordering::SeqCst), issued);
}

#[test]
fn randomized_stress_spin_kit() {
    stress::<SpinKit>(0x5EED_0001);
}

#[test]
fn randomized_stress_futex_kit() {
    stress::<FutexKit>(0x5EED_0002);
}

// ------------------------------------------------ slots cached by idle threads

/// Slots freed by a thread inside `run` go to its private cache (one
/// recycled slot plus up to `SLOT_CACHE_MAX` = 8) and would stay there
/// while it sleeps waiting for work:
/// `alloc_op` from any other thread only sees the shared free list. So
/// with one idle thread in `run`, an 8-slot pool refuses the next post
/// from outside although nothing is pending (`ops_in_use().0` says 8).
#[test]
fn slots_freed_by_an_idle_run_thread_can_be_posted_again() {
    let _w = watchdog("cache_hoard", 60);
    let ctx: &'static Ctx = leak(8, 2);
    let count: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let guard = ctx.work_guard();
    let runner = spawn_runners(ctx, 1);
    for _ in 0..8 {
        ctx.post(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .expect("8 slots");
    }
    wait_until("the 8 handlers to run", 10, || {
        count.load(Ordering::SeqCst) == 8
    });
    // Nothing is pending now. Once the runner has gone idle (it flushes
    // its slot cache before it sleeps), every slot is back in the pool.
    wait_until("the idle runner to return its cached slots", 10, || {
        ctx.ops_in_use().0 == 0
    });
    let r = ctx.post(move || {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let in_use = ctx.ops_in_use().0;
    ctx.stop();
    drop(guard);
    join_all("run thread", 10, runner);
    assert!(
        r.is_ok(),
        "post refused with PoolFull(Ops) while no handler was pending (ops_in_use().0 = {in_use})"
    );
}

// ---------------------------------------------------- panicking handlers

/// A handler that panics out of `run_one`: Asio's `work_cleanup` runs on
/// unwind and finishes the thrown handler's unit of work, so a later
/// `run()` runs the rest and returns. pinion's `run_batch` only settles
/// work after the whole batch (`work_cleanup(ti, ran)`), and `RunExit`
/// adds back private work but never subtracts the handler that unwound:
/// `outstanding_work` stays 1 too high and the next `run()` never
/// returns (here: bounded, then released with `stop()`).
#[test]
fn panicking_handler_does_not_leak_outstanding_work() {
    let _w = watchdog("panic_work", 60);
    let ctx: &'static Ctx = leak(16, 8);
    let b_ran: &'static AtomicBool = leak_box(Box::new(AtomicBool::new(false)));
    ctx.post(|| panic!("handler A panics (expected by this test)"))
        .unwrap();
    ctx.post(move || b_ran.store(true, Ordering::SeqCst))
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run_one()));
    assert!(r.is_err(), "the panic propagates out of run_one");
    assert_eq!(ctx.outstanding_work(), 1, "only B is left");
    let runner = spawn_runners(ctx, 1);
    let t0 = Instant::now();
    while !runner[0].is_finished() && t0.elapsed() < limit(5) {
        thread::sleep(Duration::from_millis(1));
    }
    let returned = runner[0].is_finished();
    if !returned {
        ctx.stop(); // release the blocked thread
    }
    join_all("run thread", 10, runner);
    assert!(b_ran.load(Ordering::SeqCst));
    assert!(returned, "run() did not return after running out of work");
}

/// A strand handler that panics leaves the strand locked for good:
/// `strand_complete` calls `release` only after its loop, with no unwind
/// guard (Asio's `on_do_complete_exit` re-posts the strand on unwind), so
/// the handlers queued behind it never run.
#[test]
fn panicking_strand_handler_does_not_wedge_the_strand() {
    let _w = watchdog("panic_strand", 60);
    let ctx: &'static Ctx = leak(16, 8);
    let s: &'static Strand<'static, NoTask, FutexKit> =
        leak_box(Box::new(Strand::new(ctx).unwrap()));
    let b_ran: &'static AtomicBool = leak_box(Box::new(AtomicBool::new(false)));
    s.post(|| panic!("strand handler A panics (expected by this test)"))
        .unwrap();
    s.post(move || b_ran.store(true, Ordering::SeqCst)).unwrap();
    let guard = ctx.work_guard();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run_one()));
    assert!(r.is_err(), "the panic propagates out of run_one");
    let runner = spawn_runners(ctx, 1);
    let t0 = Instant::now();
    while !b_ran.load(Ordering::SeqCst) && t0.elapsed() < limit(5) {
        thread::sleep(Duration::from_millis(1));
    }
    ctx.stop();
    drop(guard);
    join_all("run thread", 10, runner);
    assert!(
        b_ran.load(Ordering::SeqCst),
        "strand handler B never ran after A panicked"
    );
}

/// A handler panicking mid-batch: the rest of the batch sits in
/// `run_batch`'s local `OpQueue`, which is dropped during unwinding. In
/// debug builds its `Drop` debug assertion ("an OpQueue was dropped with
/// operations on it") panics while panicking and aborts the process; in
/// release builds the remaining handlers are leaked (never run nor
/// dropped, slots and work counts lost). Run in a child process so the
/// abort cannot take the test binary down.
#[test]
fn panicking_handler_mid_batch_keeps_the_rest_of_the_batch() {
    if std::env::var_os("PINION_PANIC_BATCH_CHILD").is_some() {
        panic_mid_batch_child();
        return;
    }
    if cfg!(miri) {
        return; // miri cannot spawn processes
    }
    let out = self_command()
        .args([
            "--exact",
            "panicking_handler_mid_batch_keeps_the_rest_of_the_batch",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env("PINION_PANIC_BATCH_CHILD", "1")
        .output()
        .expect("re-run this test binary");
    assert!(
        out.status.success(),
        "child failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that runs this test binary again. Under qemu-user (cross
/// tests) the binary cannot be exec'd directly: `ci/cross-env.sh` passes
/// the emulator in `PINION_TEST_RUNNER`.
fn self_command() -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("PINION_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut c = std::process::Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}

fn panic_mid_batch_child() {
    let _w = watchdog("panic_batch_child", 30);
    // Hint 1: one thread takes the whole ready queue as its batch.
    let ctx: &'static Ctx = leak(16, 1);
    let hits = leak_slice(4, |_| AtomicU8::new(0));
    for (i, hit) in hits.iter().enumerate() {
        ctx.post(move || {
            hit.fetch_add(1, Ordering::SeqCst);
            if i == 1 {
                panic!("handler 1 panics (expected by this test)");
            }
        })
        .unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run()));
    assert!(r.is_err());
    let rest = join_all("run after the panic", 10, spawn_runners(ctx, 1));
    assert_eq!(rest, vec![2]);
    assert_eq!(first_not_once(hits), None);
    assert_eq!(ctx.ops_in_use().0, 0);
}

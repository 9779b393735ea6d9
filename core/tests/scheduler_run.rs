//! Integration tests of pinion-core's scheduler (Asio's `io_context` run
//! loop) on the basics: stop/restart, work guards, poll/run_one/run_for,
//! dispatch/defer, nested runs, and a `NullKit` smoke test.
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

use pinion_core::backend::NoTask;
use pinion_core::{Scheduler, Strand};
use pinion_sync::{FutexKit, NullKit, SpinKit, SyncKit};

// ------------------------------------------------------------- helpers
mod common;
use common::*;

// ------------------------------------------------------------ stopping

/// `sleeps`: the kit's idle threads sleep in the kernel (futex), so the
/// test can wait until all four are asleep before it stops them; a spin
/// kit's idle threads spin, with no state to wait for.
fn stop_wakes_all<K: SyncKit>(sleeps: bool)
where
    Ctx<K>: Sync,
{
    let _w = watchdog("stop_wakes_all", 60);
    let ctx: &'static Ctx<K> = leak(scale(1000, 10) + 64, 4);
    let guard = ctx.work_guard();
    let tids: &'static Mutex<Vec<u32>> = leak_box(Box::new(Mutex::new(Vec::new())));
    let runners: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                tids.lock().unwrap().push(current_tid());
                ctx.run()
            })
        })
        .collect();
    wait_until("4 threads to enter run", 10, || {
        tids.lock().unwrap().len() == 4
    });
    if sleeps {
        // Asleep on the idle event (or briefly on the mutex on the way
        // there): the stop below must reach sleeping threads.
        for &t in tids.lock().unwrap().iter() {
            wait_blocked(t, "a runner to fall asleep");
        }
    }
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
    stop_wakes_all::<FutexKit>(true);
}

#[test]
fn stop_wakes_every_waiting_thread_spin() {
    stop_wakes_all::<SpinKit>(false);
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
    let (tx, tid) = std::sync::mpsc::channel();
    let runner = vec![thread::spawn(move || {
        tx.send(current_tid()).unwrap();
        ctx.run()
    })];
    // Asleep with nothing but the guard: `run` stayed (a `run` that
    // returned would show as an exited thread and fail below).
    wait_blocked(tid.recv().unwrap(), "the runner to fall asleep");
    assert!(!runner[0].is_finished(), "run returned with a guard alive");
    let r = ran.clone();
    ctx.post(move || r.store(true, Ordering::SeqCst))
        .expect("free slots");
    wait_until(
        "the handler posted to the sleeping runner to run",
        10,
        || ran.load(Ordering::SeqCst),
    );
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

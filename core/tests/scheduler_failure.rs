//! Integration tests of pinion-core's scheduler (Asio's `io_context` run
//! loop) when handlers cannot run normally: pool exhaustion, shutdown
//! with handlers still pending, and panicking handlers.
//!
//! Every wait is bounded (count and time) and nothing asserts on elapsed
//! time.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pinion_core::backend::NoTask;
use pinion_core::{Error, Pool, Rejected, Scheduler, Strand};
use pinion_sync::FutexKit;

// ------------------------------------------------------------- helpers
mod common;
use common::*;

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

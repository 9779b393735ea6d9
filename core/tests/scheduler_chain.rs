//! I/O continuations (`Scheduler::post_continuation_in`): an operation a
//! handler started and that completed at once runs right after that
//! handler, ahead of the batch, at most `CHAIN_MAX` in a row; `post` keeps
//! its place in the queue. The operations here stand in for a backend's
//! speculative `recv`/`send` completions.

use std::ptr::{self, NonNull};
use std::sync::Mutex;

use pinion_core::backend::NoTask;
use pinion_core::scheduler::CHAIN_MAX;
use pinion_core::{Invoke, Operation, Scheduler};
use pinion_sync::FutexKit;

mod common;
use common::*;

type Log = Mutex<Vec<String>>;

/// A completed operation that logs its name and, while `more > 0`,
/// starts the next one as a continuation (a connection that always has
/// data).
#[repr(C)]
struct Cont {
    op: Operation,
    ctx: &'static Ctx,
    log: &'static Log,
    name: &'static str,
    more: usize,
}

/// # Safety
/// `op` is a `Cont` in a slot of the scheduler `ctx` it names.
unsafe fn cont_complete(op: NonNull<Operation>, _owner: *const (), how: Invoke<'_>) {
    let p = op.cast::<Cont>();
    // SAFETY: live and ours; read once, then the slot is freed.
    let c = unsafe { ptr::read(p.as_ptr()) };
    // SAFETY: allocated from `c.ctx`, value moved out above.
    unsafe { c.ctx.free_op_in(how.here(), p) };
    if !how.is_run() {
        return;
    }
    c.log.lock().unwrap().push(c.name.to_string());
    if c.more > 0 {
        start(c.ctx, c.log, c.name, c.more - 1);
    }
}

/// Starts a `Cont` that "completed at once", from inside a handler.
fn start(ctx: &'static Ctx, log: &'static Log, name: &'static str, more: usize) {
    let here = ctx.here().expect("called from a handler inside run");
    let c = Cont {
        op: Operation::new(cont_complete),
        ctx,
        log,
        name,
        more,
    };
    // SAFETY: freed by `cont_complete`, once.
    let op = unsafe { ctx.alloc_op_in(Some(here), c) }.unwrap_or_else(|_| panic!("slot"));
    // SAFETY: fresh, on no queue, completes with `ctx`; `here` is ours.
    unsafe { ctx.post_continuation_in(Some(here), op.cast()) };
}

fn ctx() -> &'static Ctx {
    leak_box(Box::new(Scheduler::<NoTask, FutexKit>::new(
        NoTask,
        slots(64),
        1,
    )))
}

#[test]
fn a_continuation_runs_before_the_rest_of_the_batch_and_a_post_after() {
    if !ids_available() {
        eprintln!("SKIPPED continuation order: no thread ids here (miri), no `here()`");
        return;
    }
    let ctx = ctx();
    let log: &'static Log = leak_box(Box::new(Mutex::new(Vec::new())));
    ctx.post(move || {
        log.lock().unwrap().push("a".into());
        ctx.post(move || log.lock().unwrap().push("a-posted".into()))
            .unwrap();
        start(ctx, log, "a-io", 0);
    })
    .unwrap();
    ctx.post(move || log.lock().unwrap().push("b".into()))
        .unwrap();
    assert_eq!(ctx.run(), 4);
    assert_eq!(*log.lock().unwrap(), ["a", "a-io", "b", "a-posted"]);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn an_endless_chain_yields_to_the_batch_after_chain_max() {
    if !ids_available() {
        eprintln!("SKIPPED continuation chain: no thread ids here (miri), no `here()`");
        return;
    }
    let ctx = ctx();
    let log: &'static Log = leak_box(Box::new(Mutex::new(Vec::new())));
    let rounds = 3 * CHAIN_MAX;
    ctx.post(move || start(ctx, log, "x", rounds)).unwrap();
    ctx.post(move || log.lock().unwrap().push("b".into()))
        .unwrap();
    assert_eq!(ctx.run(), 2 + rounds + 1);
    let log = log.lock().unwrap();
    let b = log.iter().position(|n| n == "b").unwrap();
    assert_eq!(b, CHAIN_MAX, "b waited for exactly CHAIN_MAX continuations");
    assert_eq!(log.len(), rounds + 2);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn a_stop_keeps_the_continuations_not_run() {
    if !ids_available() {
        eprintln!("SKIPPED continuation stop: no thread ids here (miri), no `here()`");
        return;
    }
    let ctx = ctx();
    let log: &'static Log = leak_box(Box::new(Mutex::new(Vec::new())));
    ctx.post(move || {
        start(ctx, log, "first", 0);
        start(ctx, log, "second", 0);
        ctx.stop();
    })
    .unwrap();
    assert_eq!(ctx.run(), 1);
    assert_eq!(ctx.outstanding_work(), 2);
    ctx.restart();
    assert_eq!(ctx.run(), 2);
    assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    assert_eq!(ctx.ops_in_use().0, 0);
}

/// A task without continuations (`Task::CONTINUATIONS = false`, as on
/// io_uring): otherwise `NoTask`.
struct NoChainTask;

// SAFETY: holds nothing; every method forwards to `NoTask`.
unsafe impl pinion_core::backend::Task for NoChainTask {
    const PRESENT: bool = false;
    const CONTINUATIONS: bool = false;
    unsafe fn run(&self, w: pinion_core::backend::Wait, ops: &mut pinion_core::OpQueue) {
        // SAFETY: forwarded under the same contract.
        unsafe { NoTask.run(w, ops) }
    }
    fn interrupt(&self) {}
    unsafe fn shutdown(&self, ops: &mut pinion_core::OpQueue) {
        // SAFETY: forwarded under the same contract.
        unsafe { NoTask.shutdown(ops) }
    }
    fn now_ns(&self) -> u64 {
        NoTask.now_ns()
    }
}

type NoChainCtx = Scheduler<NoChainTask, FutexKit>;

/// A `Cont` of a [`NoChainCtx`], starting no further one.
#[repr(C)]
struct Plain {
    op: Operation,
    ctx: &'static NoChainCtx,
    log: &'static Log,
}

/// # Safety
/// `op` is a `Plain` in a slot of the scheduler it names.
unsafe fn plain_complete(op: NonNull<Operation>, _owner: *const (), how: Invoke<'_>) {
    let p = op.cast::<Plain>();
    // SAFETY: live and ours; read once, then the slot is freed.
    let c = unsafe { ptr::read(p.as_ptr()) };
    // SAFETY: allocated from `c.ctx`, value moved out above.
    unsafe { c.ctx.free_op_in(how.here(), p) };
    if how.is_run() {
        c.log.lock().unwrap().push("a-io".into());
    }
}

#[test]
fn without_continuations_a_continuation_is_an_ordinary_completion() {
    if !ids_available() {
        eprintln!("SKIPPED continuation-less task: no thread ids here (miri), no `here()`");
        return;
    }
    let ctx: &'static NoChainCtx = leak_box(Box::new(Scheduler::new(NoChainTask, slots(64), 1)));
    let log: &'static Log = leak_box(Box::new(Mutex::new(Vec::new())));
    ctx.post(move || {
        log.lock().unwrap().push("a".into());
        let here = ctx.here().expect("inside run");
        let c = Plain {
            op: Operation::new(plain_complete),
            ctx,
            log,
        };
        // SAFETY: freed by `plain_complete`, once.
        let op = unsafe { ctx.alloc_op_in(Some(here), c) }.unwrap_or_else(|_| panic!("slot"));
        // SAFETY: fresh, on no queue, completes with `ctx`; `here` is ours.
        unsafe { ctx.post_continuation_in(Some(here), op.cast()) };
    })
    .unwrap();
    ctx.post(move || log.lock().unwrap().push("b".into()))
        .unwrap();
    assert_eq!(ctx.run(), 3);
    // Queued behind the batch, as `post_immediate_completion` would.
    assert_eq!(*log.lock().unwrap(), ["a", "b", "a-io"]);
    assert_eq!(ctx.ops_in_use().0, 0);
}

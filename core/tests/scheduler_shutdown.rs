//! `Scheduler::shutdown` in place (no backend): pending handlers, strand
//! handlers and tasks are destroyed, not run; everything after is refused
//! with `ContextShutDown`; a thread inside `run` is waited for; a call
//! from inside `run` is refused; a second call and the drop are fine.
//! These run under miri too.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use common::{join_all, leak, wait_until, watchdog, with_tasks, Ctx};
use pinion_core::backend::NoTask;
use pinion_core::{Error, Strand};

/// Counts its drops.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Never ready.
struct Forever(#[allow(dead_code)] DropCount);

impl Future for Forever {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

#[test]
fn pending_handlers_are_destroyed_and_later_calls_refused() {
    let _w = watchdog("pending_handlers", 30);
    let ctx: &'static Ctx = leak(16, 1);
    let dropped = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (d, r) = (DropCount(dropped.clone()), ran.clone());
        ctx.post(move || {
            let _d = d;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let strand = Strand::new(ctx).unwrap();
    let (d, r) = (DropCount(dropped.clone()), ran.clone());
    strand
        .post(move || {
            let _d = d;
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(
        (ran.load(Ordering::SeqCst), dropped.load(Ordering::SeqCst)),
        (0, 4)
    );
    assert!(ctx.is_shut_down() && ctx.stopped());

    // Everything later is refused, clearly, with the handler handed back.
    assert_eq!(ctx.run(), 0);
    assert_eq!(ctx.poll(), 0);
    let r = ctx.post(|| unreachable!()).unwrap_err();
    assert_eq!(r.error, Error::ContextShutDown);
    assert_eq!(
        strand.post(|| unreachable!()).unwrap_err().error,
        Error::ContextShutDown
    );
    assert_eq!(Strand::new(ctx).err(), Some(Error::ContextShutDown));
    ctx.restart();
    assert!(ctx.stopped(), "a shut-down scheduler stays stopped");
    drop(strand);
    // Twice is fine.
    assert_eq!(ctx.shutdown(), Ok(()));
}

#[test]
fn from_inside_run_it_is_refused() {
    let _w = watchdog("inside_run", 30);
    let ctx: &'static Ctx = leak(16, 1);
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    ctx.post(move || *g.lock().unwrap() = Some(ctx.shutdown()))
        .unwrap();
    assert_eq!(ctx.run(), 1);
    assert_eq!(*got.lock().unwrap(), Some(Err(Error::ShutdownInsideRun)));
    assert!(!ctx.is_shut_down());
    assert_eq!(ctx.shutdown(), Ok(()));
}

#[test]
fn it_waits_for_threads_inside_run() {
    use std::sync::atomic::AtomicBool;
    let _w = watchdog("waits_for_runners", 30);
    let ctx: &'static Ctx = leak(16, 2);
    // A handler that runs until told to return, and says when it did.
    let (entered, go, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (e, g, d) = (entered.clone(), go.clone(), done.clone());
    ctx.post(move || {
        e.store(true, Ordering::SeqCst);
        wait_until("go", 20, || g.load(Ordering::SeqCst));
        d.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let runner = thread::spawn(move || ctx.run());
    wait_until("the handler runs", 20, || entered.load(Ordering::SeqCst));
    let d = done.clone();
    let shutting = thread::spawn(move || {
        let r = ctx.shutdown();
        // `run` has returned, so its handler has finished.
        (r, d.load(Ordering::SeqCst))
    });
    // The shutdown has begun (it stops first) while the handler runs.
    wait_until("shutdown stops the context", 20, || ctx.stopped());
    go.store(true, Ordering::SeqCst);
    assert_eq!(
        join_all("shutdown", 20, vec![shutting]),
        vec![(Ok(()), true)]
    );
    assert_eq!(join_all("runner", 20, vec![runner]), vec![1]);
    assert_eq!(ctx.run(), 0);
}

#[test]
fn racing_shutdowns_both_return_once_done() {
    let _w = watchdog("racing_shutdowns", 30);
    let ctx: &'static Ctx = leak(16, 2);
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = DropCount(dropped.clone());
    ctx.post(move || drop(d)).unwrap();
    let other = thread::spawn(move || ctx.shutdown());
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(join_all("other", 20, vec![other]), vec![Ok(())]);
}

#[test]
fn pending_tasks_are_dropped_and_spawn_refused() {
    let _w = watchdog("tasks", 30);
    let ctx: &'static Ctx = with_tasks(4, 256, 1);
    let dropped = Arc::new(AtomicUsize::new(0));
    let waiting = ctx.spawn(Forever(DropCount(dropped.clone()))).unwrap();
    // Polled once, now waiting for a wake-up that never comes.
    assert_eq!(ctx.poll(), 1);
    let queued = ctx.spawn(Forever(DropCount(dropped.clone()))).unwrap();
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    let r = ctx.spawn(async {}).unwrap_err();
    assert_eq!(r.error, Error::ContextShutDown);
    // The join handles see tasks that ended without output; `block_on`
    // answers at once.
    assert!(waiting.is_finished() && queued.is_finished());
    assert_eq!(ctx.block_on(async { 1 }), Ok(1));
    assert_eq!(
        ctx.block_on(Forever(DropCount(dropped.clone()))),
        Err(Error::ContextShutDown)
    );
    drop((waiting, queued));
}

#[test]
fn dropping_an_owned_scheduler_after_shutdown() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let ctx: Ctx = Ctx::new(NoTask, common::slots(8), 1);
    let d = DropCount(dropped.clone());
    ctx.post(move || drop(d)).unwrap();
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    drop(ctx);
}

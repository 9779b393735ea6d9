//! loom models of the scheduler's wake protocol and work counting, run on
//! the real `Scheduler` (through core's `src/loom.rs` facade) over a model
//! backend task (`loom_util::ModelTask`).
//!
//! A lost wake-up leaves every thread asleep, which loom reports as a
//! deadlock; work counted wrong makes `run` return with a handler unrun
//! (the counts below) or never (a deadlock); an access to the scheduler's
//! locked state not ordered by its mutex fails loom's cell check.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! pinion-core --release --test loom_scheduler`.
#![cfg(loom)]

mod loom_util;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_util::{post, scoped, start_io, Ctx, ModelTask};
use pinion_core::backend::NoTask;

fn hits() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn count(h: &Arc<AtomicUsize>) -> usize {
    h.load(Ordering::Relaxed)
}

/// A handler posted from outside while two threads are idle (one asleep
/// in the backend task, one on the event, in whatever order they got
/// there) runs exactly once, and both threads leave `run` once it did.
#[test]
fn post_from_outside_wakes_an_idle_thread() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(ModelTask::new(), 4, 0), |c| {
                let s = &*c.sched;
                let guard = s.work_guard();
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || s.run());
                let h = hits();
                let h2 = h.clone();
                post(s, move || {
                    h2.fetch_add(1, Ordering::Relaxed);
                });
                drop(guard);
                let ran = a.join().unwrap() + b.join().unwrap();
                assert_eq!((ran, count(&h)), (1, 1));
                assert_eq!(s.outstanding_work(), 0);
            })
        }
    });
}

/// Without a backend task idle threads only sleep on the event: a post
/// must signal one of them.
#[test]
fn post_wakes_a_thread_on_the_event() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(NoTask, 4, 0), |c| {
                let s = &*c.sched;
                let guard = s.work_guard();
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || s.run());
                let h = hits();
                let h2 = h.clone();
                post(s, move || {
                    h2.fetch_add(1, Ordering::Relaxed);
                });
                drop(guard);
                let ran = a.join().unwrap() + b.join().unwrap();
                assert_eq!((ran, count(&h)), (1, 1));
            })
        }
    });
}

/// `stop` reaches a thread wherever it is: running the task, asleep in
/// it, or asleep on the event; both return with work still counted.
#[test]
fn stop_wakes_every_runner() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(ModelTask::new(), 4, 0), |c| {
                let s = &*c.sched;
                let guard = s.work_guard();
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || s.run());
                s.stop();
                assert_eq!(a.join().unwrap() + b.join().unwrap(), 0);
                assert!(s.stopped());
                drop(guard);
            })
        }
    });
}

/// `stop` then `restart` from one thread race another thread's `run`;
/// a handler posted meanwhile runs exactly once, in that `run` or (if the
/// stop sent it home first) in the next one.
#[test]
fn stop_and_restart_race_run() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(ModelTask::new(), 4, 0), |c| {
                let s = &*c.sched;
                let guard = s.work_guard();
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || {
                    s.stop();
                    s.restart();
                });
                let h = hits();
                let h2 = h.clone();
                post(s, move || {
                    h2.fetch_add(1, Ordering::Relaxed);
                });
                drop(guard);
                let mut ran = a.join().unwrap();
                b.join().unwrap();
                if count(&h) == 0 {
                    // `a` left on the stop before the handler ran: the
                    // work is still counted, so the next run finds it.
                    assert_eq!(s.outstanding_work(), 1);
                    s.restart();
                    ran += s.run();
                }
                assert_eq!((ran, count(&h)), (1, 1));
                assert_eq!(s.outstanding_work(), 0);
            })
        }
    });
}

/// Work counted in a run thread's private count (posts from a handler)
/// and on the shared counter (an I/O started from a handler, which the
/// other thread may complete through the task before the first thread
/// settles its count) never lets the count reach zero early: `run`
/// returns on both threads only after all four ran.
#[test]
fn private_work_counts_never_stop_early() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(ModelTask::new(), 6, 0), |c| {
                let s = &*c.sched;
                let guard = s.work_guard();
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || s.run());
                let h = hits();
                let h1 = h.clone();
                post(s, move || {
                    let (h2, h3) = (h1.clone(), h1.clone());
                    post(s, move || {
                        start_io(s, h2);
                    });
                    post(s, move || {
                        h3.fetch_add(1, Ordering::Relaxed);
                    });
                    h1.fetch_add(1, Ordering::Relaxed);
                });
                drop(guard);
                let ran = a.join().unwrap() + b.join().unwrap();
                // h1, the poster of the I/O, h3, the I/O's completion.
                assert_eq!(ran, 4);
                assert_eq!(count(&h), 3);
                assert_eq!(s.outstanding_work(), 0);
                assert_eq!(s.ops_in_use().0, 0);
            })
        }
    });
}

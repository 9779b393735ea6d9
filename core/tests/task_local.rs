//! `spawn_local`: `!Send` futures on a context that one thread runs. They
//! are polled only on the thread that spawned them, even when another
//! thread runs the context after all; their wakers work from any thread;
//! a context that several threads may run refuses them. Also under miri
//! (`cargo +nightly miri test -p pinion-core --test task_local`).

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use common::{join_all, scale, task_storage, watchdog, with_tasks, Ctx};
use pinion_core::backend::NoTask;
use pinion_core::task::yield_now;
use pinion_core::Error;

/// Counts drops (and is `Send`, unlike the futures around it).
struct Dropped(Arc<AtomicUsize>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Pending until another thread takes its waker and wakes it.
struct Handoff(Arc<Mutex<Option<Waker>>>, bool);
impl Future for Handoff {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.1 {
            return Poll::Ready(());
        }
        self.1 = true;
        *self.0.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn a_local_task_holds_rc_and_refcell_and_is_woken_from_another_thread() {
    let _w = watchdog("local_task_rc", 60);
    let c = with_tasks(4, 512, 1);
    let home = thread::current().id();
    let log = Rc::new(RefCell::new(Vec::new()));
    let slot = Arc::new(Mutex::new(None::<Waker>));
    let (l, s) = (log.clone(), slot.clone());
    let h = c
        .spawn_local(async move {
            for i in 0..3 {
                assert_eq!(thread::current().id(), home, "polled off its thread");
                l.borrow_mut().push(i);
                Handoff(s.clone(), false).await;
            }
            Rc::strong_count(&l)
        })
        .unwrap();
    let waker = thread::spawn(move || {
        for _ in 0..3 {
            let w = loop {
                if let Some(w) = slot.lock().unwrap().take() {
                    break w;
                }
                thread::yield_now();
            };
            w.wake();
        }
    });
    // The output (an Rc count) comes back through the handle.
    assert_eq!(c.block_on(h).unwrap(), Ok(2));
    assert_eq!(*log.borrow(), [0, 1, 2]);
    waker.join().unwrap();
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_context_several_threads_may_run_refuses_it_and_hands_the_future_back() {
    let c = with_tasks(4, 512, 2);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Dropped(drops.clone());
    let rc = Rc::new(Cell::new(0));
    let r = rc.clone();
    let err = c
        .spawn_local(async move {
            r.set(1);
            drop(d);
        })
        .unwrap_err();
    assert_eq!(err.error, Error::NotOneThread);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the future came back whole"
    );
    // It is still runnable here, by hand.
    c.block_on(err.handler).unwrap();
    assert_eq!((rc.get(), drops.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(c.tasks_in_use().0, 0);
    // The text says what to change.
    assert!(Error::NotOneThread
        .to_string()
        .contains("concurrency_hint(1)"));
}

#[test]
fn another_thread_running_the_context_never_polls_a_local_task() {
    let _w = watchdog("local_task_foreign_runner", 120);
    let (tasks, turns) = (scale(4, 2), scale(200, 5));
    let c = with_tasks(tasks, 512, 1);
    let home = thread::current().id();
    let polls = Rc::new(Cell::new(0usize));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let p = polls.clone();
            c.spawn_local(async move {
                for _ in 0..turns {
                    assert_eq!(thread::current().id(), home, "polled off its thread");
                    p.set(p.get() + 1);
                    yield_now().await;
                }
            })
            .unwrap()
        })
        .collect();
    // A second runner, against the promise of hint 1: it keeps taking the
    // tasks off the queue, and must hand each one back untouched.
    let guard = c.work_guard();
    let foreign = thread::spawn(move || c.run());
    for h in handles {
        assert_eq!(c.block_on(h).unwrap(), Ok(()));
    }
    assert_eq!(polls.get(), tasks * turns);
    drop(guard);
    c.stop();
    join_all("the foreign runner", 60, vec![foreign]);
    assert_eq!(c.tasks_in_use().0, 0);
}

// Not under miri: dropping the Box retags the scheduler as unique while
// the task slot still holds its address from the spawn, which Stacked
// Borrows flags. Only unsafe code can free a scheduler that ran tasks
// (spawning needs `&'static`); this test does so to reach shutdown.
#[test]
#[cfg_attr(miri, ignore = "frees a 'static scheduler through its Box (see above)")]
fn shutdown_drops_a_local_future_on_its_thread_and_leaks_it_elsewhere() {
    for same_thread in [true, false] {
        let sched =
            Box::new(Ctx::new(NoTask, common::slots(16), 1).with_tasks(task_storage(2, 256)));
        let raw: *mut Ctx = Box::into_raw(sched);
        // SAFETY: freed below, once nothing refers to it (the handle is
        // dropped and the only waker is the task's own).
        let c: &'static Ctx = unsafe { &*raw };
        let drops = Arc::new(AtomicUsize::new(0));
        let (d, rc) = (Dropped(drops.clone()), Rc::new(()));
        let h = c
            .spawn_local(async move {
                let _keep = (d, rc);
                std::future::pending::<()>().await
            })
            .unwrap();
        c.poll();
        drop(h);
        let addr = raw as usize; // a raw pointer is not Send
        let free = move || {
            // SAFETY: the scheduler from `Box::into_raw` above, used no more.
            drop(unsafe { Box::from_raw(addr as *mut Ctx) })
        };
        if same_thread {
            free();
            assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped at shutdown");
        } else {
            thread::spawn(free).join().unwrap();
            assert_eq!(
                drops.load(Ordering::SeqCst),
                0,
                "leaked, not dropped off its thread"
            );
        }
    }
}

// ---- the slot a run thread keeps for its next spawn ------------------------

/// A run thread keeps the slot of a task that finished there for its next
/// spawn (no slab lock), but never past the moment it may block: another
/// thread can then spawn into it. One slot in the pool makes any hoarding
/// a `PoolFull`.
#[test]
fn a_kept_task_slot_goes_back_before_its_thread_blocks() {
    let _w = watchdog("kept_task_slot", 60);
    let c = with_tasks(1, 256, 1);
    // Chains of spawn-from-task reuse the one slot on the run thread.
    let rounds = Arc::new(AtomicUsize::new(0));
    fn hop(c: &'static Ctx, rounds: Arc<AtomicUsize>, left: usize) {
        rounds.fetch_add(1, Ordering::SeqCst);
        if left > 0 {
            // The finishing task's slot is free by the time this posted
            // handler spawns the next one.
            c.post(move || drop(c.spawn(async move { hop(c, rounds, left - 1) }).unwrap()))
                .unwrap();
        }
    }
    let r = rounds.clone();
    drop(c.spawn(async move { hop(c, r, scale(100, 5)) }).unwrap());
    c.run();
    assert_eq!(rounds.load(Ordering::SeqCst), scale(100, 5) + 1);
    assert_eq!(c.tasks_in_use().0, 0, "released when run returned");

    // A runner that finished a task and then waits idle has given it back.
    c.restart();
    let guard = c.work_guard();
    drop(c.spawn(async {}).unwrap());
    let runner = thread::spawn(move || c.run());
    let mut spawned = None;
    common::wait_until("a spawn from outside run", 30, || {
        // Refused while the runner still holds the slot (running the
        // task, or about to block); accepted once it has flushed it.
        spawned = c.spawn(async { 5 }).ok();
        spawned.is_some()
    });
    assert_eq!(c.block_on(spawned.unwrap()).unwrap(), Ok(5));
    drop(guard);
    c.stop();
    join_all("the runner", 30, vec![runner]);
    assert_eq!(c.tasks_in_use().0, 0);
}

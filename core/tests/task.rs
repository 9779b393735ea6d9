//! Tasks on the scheduler (no backend): spawn, JoinHandle, wakers from
//! other threads and after the task is gone, abort, panics, pool limits,
//! block_on. These run under miri too (`cargo +nightly miri test -p
//! pinion-core --test task`), which checks that no waker touches freed
//! or reused memory.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use common::{join_all, scale, spawn_runners, watchdog, Ctx};
use pinion_core::task::yield_now;
use pinion_core::{Error, Pool};

fn ctx(tasks: usize, bytes: usize, hint: usize) -> &'static Ctx {
    common::with_tasks(tasks, bytes, hint)
}

/// A one-shot signal: a future that completes once `fire` was called,
/// holding the latest waker it was polled with.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
    fn wait(self: &Arc<Self>) -> Wait {
        Wait(self.clone())
    }
}

struct Wait(Arc<Signal>);

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut w = self.0.waker.lock().unwrap();
        if self.0.fired.load(Ordering::SeqCst) {
            // Keep no waker past the end: it would hold the task's slot.
            *w = None;
            return Poll::Ready(());
        }
        *w = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts drops.
struct Dropped(Arc<AtomicUsize>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_task_runs_and_its_handle_gives_the_output() {
    let c = ctx(4, 256, 1);
    let h = c.spawn(async { 40 + 2 }).unwrap();
    assert_eq!(c.tasks_in_use(), (1, 4));
    assert_eq!(c.block_on(h).unwrap(), Ok(42));
    assert_eq!(
        c.tasks_in_use(),
        (0, 4),
        "slot back once the handle took the output"
    );
}

#[test]
fn run_returns_when_every_task_is_done() {
    let c = ctx(8, 256, 1);
    let n = Arc::new(AtomicUsize::new(0));
    for _ in 0..8 {
        let n = n.clone();
        // Detached: the output is dropped when the task ends.
        drop(c.spawn(async move {
            yield_now().await;
            n.fetch_add(1, Ordering::SeqCst);
        }));
    }
    c.run();
    assert_eq!(n.load(Ordering::SeqCst), 8);
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_task_waits_for_another() {
    let c = ctx(4, 256, 1);
    let inner = c.spawn(async { String::from("inner") }).unwrap();
    let outer = c
        .spawn(async move { format!("{} and outer", inner.await.unwrap()) })
        .unwrap();
    assert_eq!(c.block_on(outer).unwrap().unwrap(), "inner and outer");
}

#[test]
fn yield_now_lets_queued_handlers_run_first() {
    let c = ctx(2, 256, 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let h = c
        .spawn(async move {
            l.lock().unwrap().push("task 1");
            let l2 = l.clone();
            c.post(move || l2.lock().unwrap().push("handler")).unwrap();
            yield_now().await;
            l.lock().unwrap().push("task 2");
        })
        .unwrap();
    c.block_on(h).unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["task 1", "handler", "task 2"]);
}

#[test]
fn a_waker_from_another_thread_resumes_the_task() {
    let _w = watchdog("waker_from_another_thread", 60);
    let c = ctx(4, 256, 1);
    let s = Arc::new(Signal::default());
    let w = s.wait();
    let h = c
        .spawn(async move {
            w.await;
            7
        })
        .unwrap();
    let s2 = s.clone();
    let t = thread::spawn(move || {
        // Wait until the task has parked its waker, then fire.
        while s2.waker.lock().unwrap().is_none() {
            thread::yield_now();
        }
        s2.fire();
    });
    assert_eq!(c.block_on(h).unwrap(), Ok(7));
    t.join().unwrap();
}

#[test]
fn wakers_kept_after_the_task_finished_are_harmless_and_hold_the_slot() {
    let c = ctx(1, 256, 1);
    let kept: Arc<Mutex<Vec<Waker>>> = Arc::default();
    let k = kept.clone();
    let h = c
        .spawn(std::future::poll_fn(move |cx| {
            // Clone the waker several ways, then finish.
            let w = cx.waker().clone();
            k.lock().unwrap().push(w.clone());
            k.lock().unwrap().push(w);
            Poll::Ready(1)
        }))
        .unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(1));
    // The slot stays taken while wakers exist; waking is a no-op.
    assert_eq!(c.tasks_in_use().0, 1);
    let work = c.outstanding_work();
    for w in kept.lock().unwrap().iter() {
        w.wake_by_ref();
    }
    assert_eq!(c.outstanding_work(), work, "no wake-up was queued");
    let t = {
        let kept = kept.clone();
        thread::spawn(move || {
            for w in kept.lock().unwrap().drain(..) {
                w.wake();
            }
        })
    };
    t.join().unwrap();
    assert_eq!(c.tasks_in_use().0, 0, "the last waker gave the slot back");
    // The slot is reused by a new task, unharmed.
    let h = c.spawn(async { 2 }).unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(2));
}

#[test]
fn a_stale_waker_does_not_wake_the_slots_next_task() {
    let c = ctx(1, 256, 1);
    let first: Arc<Mutex<Option<Waker>>> = Arc::default();
    let f = first.clone();
    let h = c
        .spawn(std::future::poll_fn(move |cx| {
            *f.lock().unwrap() = Some(cx.waker().clone());
            Poll::Ready(())
        }))
        .unwrap();
    c.block_on(h).unwrap().unwrap();
    // The old waker pins the slot: a new task cannot take it.
    let r = c.spawn(async {}).map(|_| ()).unwrap_err();
    assert_eq!(r.error, Error::PoolFull(Pool::Tasks));
    first.lock().unwrap().take().unwrap().wake();
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let s = Arc::new(Signal::default());
    let w = s.wait();
    let h = c
        .spawn(async move {
            p.fetch_add(1, Ordering::SeqCst);
            w.await;
        })
        .unwrap();
    c.poll();
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    s.fire();
    c.block_on(h).unwrap().unwrap();
}

#[test]
fn abort_drops_a_waiting_future_and_the_handle_says_aborted() {
    let c = ctx(2, 256, 1);
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = Dropped(drops.clone());
    let s = Arc::new(Signal::default());
    let w = s.wait();
    let h = c
        .spawn(async move {
            let _g = guard;
            w.await;
            1
        })
        .unwrap();
    c.poll();
    assert!(!h.is_finished());
    h.abort();
    h.abort();
    c.poll();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the future was dropped");
    assert!(h.is_finished());
    assert_eq!(c.block_on(h).unwrap(), Err(Error::OperationAborted));
    s.fire(); // the stored waker wakes nothing
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_detached_tasks_output_is_dropped() {
    let c = ctx(1, 256, 1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    drop(c.spawn(async move { Dropped(d) }).unwrap());
    c.run();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn an_untaken_output_is_dropped_with_the_handle() {
    let c = ctx(1, 256, 1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let h = c.spawn(async move { Dropped(d) }).unwrap();
    c.run();
    assert!(h.is_finished());
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(h);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_full_pool_or_a_large_future_hands_the_future_back() {
    let c = ctx(1, 64, 1);
    let big = [0u8; 200];
    let r = c.spawn(async move { big.len() }).map(|_| ()).unwrap_err();
    assert!(
        matches!(r.error, Error::TaskTooLarge(n) if n >= 200),
        "{:?}",
        r.error
    );
    assert!(
        r.error.to_string().contains("Builder::tasks"),
        "{}",
        r.error
    );
    let h = c.spawn(async { 1 }).unwrap();
    let r = c.spawn(async { 2 }).map(|_| ()).unwrap_err();
    assert_eq!(r.error, Error::PoolFull(Pool::Tasks));
    assert!(
        r.error.to_string().contains("Builder::tasks"),
        "{}",
        r.error
    );
    // The future came back: it can be spawned once a slot is free.
    assert_eq!(c.block_on(h).unwrap(), Ok(1));
    let h = c.spawn(r.handler).unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(2));
    let none = ctx(0, 64, 1);
    let r = none.spawn(async {}).map(|_| ()).unwrap_err();
    assert_eq!(r.error, Error::NoPool(Pool::Tasks));
}

#[test]
fn a_panicking_task_unwinds_out_of_run_and_its_handle_says_aborted() {
    let c = ctx(2, 256, 1);
    let h = c
        .spawn(async {
            yield_now().await;
            panic!("task panics (expected by this test)");
        })
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.run()));
    assert!(r.is_err());
    assert!(h.is_finished());
    c.restart();
    assert_eq!(c.block_on(h).unwrap(), Err(Error::OperationAborted));
    assert_eq!(c.tasks_in_use().0, 0);
    assert_eq!(c.outstanding_work(), 0);
}

#[test]
#[should_panic(expected = "block_on called from a handler or task")]
fn block_on_inside_a_task_is_a_clear_error() {
    let c = ctx(2, 256, 1);
    let h = c.spawn(async move { c.block_on(async {}) }).unwrap();
    let _ = c.block_on(h);
}

#[test]
fn stop_makes_block_on_give_up() {
    let c = ctx(2, 256, 1);
    c.post(move || c.stop()).unwrap();
    let never = std::future::pending::<()>();
    assert_eq!(c.block_on(never), Err(Error::OperationAborted));
}

#[test]
fn many_threads_many_tasks_cross_thread_wakes() {
    let _w = watchdog("many_threads_many_tasks", 120);
    let tasks = scale(400, 16);
    let c = ctx(tasks, 256, 4);
    let done = Arc::new(AtomicUsize::new(0));
    let signals: Vec<Arc<Signal>> = (0..tasks).map(|_| Arc::new(Signal::default())).collect();
    let mut handles = Vec::new();
    for (i, s) in signals.iter().enumerate() {
        let w = s.wait();
        let d = done.clone();
        handles.push(
            c.spawn(async move {
                for _ in 0..3 {
                    yield_now().await;
                }
                w.await;
                d.fetch_add(1, Ordering::SeqCst);
                i
            })
            .unwrap(),
        );
    }
    let runners = spawn_runners(c, 3);
    let firer = {
        let signals = signals.clone();
        thread::spawn(move || {
            for s in signals.iter().rev() {
                s.fire();
            }
        })
    };
    firer.join().unwrap();
    let sum: usize = c
        .block_on(async move {
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(sum, tasks * (tasks - 1) / 2);
    assert_eq!(done.load(Ordering::SeqCst), tasks);
    join_all("runner", 60, runners);
    assert_eq!(c.tasks_in_use().0, 0);
}

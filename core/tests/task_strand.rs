//! Tasks bound to a strand (`Strand::spawn`): their polls never overlap
//! the strand's handlers or each other, they keep wake-up order with the
//! handlers, and the strand's slot lives as long as a task needs it. Also
//! under miri (`cargo +nightly miri test -p pinion-core --test task_strand`).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use common::{join_all, scale, spawn_runners, watchdog, with_tasks};
use pinion_core::task::yield_now;
use pinion_core::{Error, Pool, Strand};

/// Asserts that no other strand member is inside, for a few hundred
/// instructions, so an overlap would be caught.
fn exclusive(inside: &AtomicBool, runs: &AtomicUsize) {
    assert!(
        !inside.swap(true, Ordering::SeqCst),
        "two strand members ran at once"
    );
    for _ in 0..50 {
        std::hint::spin_loop();
    }
    runs.fetch_add(1, Ordering::SeqCst);
    inside.store(false, Ordering::SeqCst);
}

#[test]
fn strand_tasks_and_handlers_never_overlap_across_threads() {
    let _w = watchdog("strand_tasks_never_overlap", 120);
    let (tasks, polls, handlers) = (scale(8, 3), scale(50, 4), scale(400, 20));
    let c = with_tasks(tasks + 1, 256, 4);
    let strand: Strand<'static, _, _> = Strand::new(c).unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    // Work while the poster runs: otherwise a runner that finds the
    // strand idle for a moment sees no work, and `run` returns (Asio's rule).
    let guard = c.work_guard();
    let mut joins = Vec::new();
    for _ in 0..tasks {
        let (inside, runs, s) = (inside.clone(), runs.clone(), strand.clone());
        joins.push(
            strand
                .spawn(async move {
                    for _ in 0..polls {
                        assert!(
                            s.running_in_this_thread(),
                            "a strand task polled outside it"
                        );
                        exclusive(&inside, &runs);
                        yield_now().await;
                    }
                })
                .unwrap(),
        );
    }
    // Handlers posted from another thread while the tasks run.
    let poster = {
        let (inside, runs, s) = (inside.clone(), runs.clone(), strand.clone());
        thread::spawn(move || {
            for _ in 0..handlers {
                let (inside, runs) = (inside.clone(), runs.clone());
                let mut h = move || exclusive(&inside, &runs);
                // A full pool for a moment: the runners free slots.
                for attempt in 0.. {
                    assert!(
                        attempt < 10_000_000,
                        "the op pool never had room: ops {:?}, work {}, tasks {:?}",
                        c.ops_in_use(),
                        c.outstanding_work(),
                        c.tasks_in_use()
                    );
                    match s.post(h) {
                        Ok(()) => break,
                        Err(r) => h = r.handler,
                    }
                    thread::yield_now();
                }
            }
        })
    };
    let runners = spawn_runners(c, 3);
    poster.join().unwrap();
    c.block_on(async move {
        for j in joins {
            j.await.unwrap();
        }
    })
    .unwrap();
    drop(guard);
    join_all("runner", 60, runners);
    c.run();
    assert_eq!(runs.load(Ordering::SeqCst), tasks * polls + handlers);
    drop(strand);
    assert_eq!(c.ops_in_use().0, 0, "strand and handler slots all back");
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_strand_task_keeps_post_order_with_the_strands_handlers() {
    let c = with_tasks(2, 256, 1);
    let strand = Strand::new(c).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    strand.post(move || l.lock().unwrap().push("h1")).unwrap();
    let l = log.clone();
    drop(strand.spawn(async move {
        l.lock().unwrap().push("t1");
        yield_now().await;
        l.lock().unwrap().push("t2");
    }));
    let l = log.clone();
    strand.post(move || l.lock().unwrap().push("h2")).unwrap();
    c.run();
    // The task's wake-up from `yield_now` queues behind `h2`.
    assert_eq!(*log.lock().unwrap(), ["h1", "t1", "h2", "t2"]);
}

/// A one-shot signal another thread fires.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

struct Wait(Arc<Signal>);

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut w = self.0.waker.lock().unwrap();
        if self.0.fired.load(Ordering::SeqCst) {
            *w = None;
            return Poll::Ready(());
        }
        *w = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn the_strand_outlives_its_handles_while_a_task_needs_it() {
    let c = with_tasks(2, 256, 1);
    let base = c.ops_in_use().0;
    let strand = Strand::new(c).unwrap();
    let signal = Arc::new(Signal::default());
    let wait = Wait(signal.clone());
    let s2 = strand.clone();
    let h = strand
        .spawn(async move {
            wait.await;
            s2.running_in_this_thread()
        })
        .unwrap();
    drop(strand);
    c.poll(); // the task parks on the signal
    assert_eq!(c.ops_in_use().0, base + 1, "the task keeps the strand");
    let firer = thread::spawn(move || {
        let s = signal;
        s.fired.store(true, Ordering::SeqCst);
        let w = s.waker.lock().unwrap().take();
        w.expect("the task parked").wake();
    });
    firer.join().unwrap();
    assert_eq!(
        c.block_on(h).unwrap(),
        Ok(true),
        "resumed inside the strand"
    );
    assert_eq!(
        c.ops_in_use().0,
        base,
        "the last reference freed the strand"
    );
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_refused_strand_task_hands_the_future_and_the_reference_back() {
    let c = with_tasks(1, 64, 1);
    let base = c.ops_in_use().0;
    let strand = Strand::new(c).unwrap();
    let big = [0u8; 256];
    let r = strand
        .spawn(async move { big.len() })
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(r.error, Error::TaskTooLarge(n) if n >= 256),
        "{}",
        r.error
    );
    let first = strand.spawn(async { 1 }).unwrap();
    let r = strand.spawn(async { 2 }).map(|_| ()).unwrap_err();
    assert_eq!(r.error, Error::PoolFull(Pool::Tasks));
    assert_eq!(c.block_on(first).unwrap(), Ok(1));
    drop(strand);
    assert_eq!(c.ops_in_use().0, base, "no reference leaked by a refusal");
}

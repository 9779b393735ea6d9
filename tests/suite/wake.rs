//! Waking a thread blocked in the backend's wait (the interrupter): posts
//! and timers from other threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::b;
use crate::util;

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("watchdog: {what}");
}

#[test]
fn post_from_another_thread_wakes_a_blocked_run() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let guard = c.work_guard();
    let (tx, rx) = mpsc::channel();
    let (tid_tx, tid) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        tid_tx.send(util::current_tid()).unwrap();
        c.run();
        tx.send(()).unwrap();
    });
    let tid = tid.recv().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    for i in 0..5 {
        // The lone runner asleep can only be in the backend's wait: each
        // post must interrupt it.
        util::wait_blocked(tid, "the runner to block in the backend");
        let h = hits.clone();
        c.post(move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|r| r.error)
        .unwrap();
        wait_for("posted handler ran", || {
            hits.load(Ordering::SeqCst) == i + 1
        });
    }
    c.post(move || drop(guard)).map_err(|r| r.error).unwrap();
    rx.recv_timeout(util::WATCHDOG).expect("run returned");
    runner.join().unwrap();
}

#[test]
fn timer_armed_from_another_thread_wakes_a_blocked_run() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let guard = c.work_guard();
    let (tx, rx) = mpsc::channel();
    let (tid_tx, tid) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        tid_tx.send(util::current_tid()).unwrap();
        c.run();
        tx.send(()).unwrap();
    });
    util::wait_blocked(tid.recv().unwrap(), "the runner to block in the backend");
    let t = b::SteadyTimer::new(c).unwrap();
    assert_eq!(t.expires_after(Duration::from_millis(5)), Ok(0));
    t.async_wait(move |r| {
        assert_eq!(r, Ok(()));
        drop(guard);
    })
    .map_err(|r| r.error)
    .unwrap();
    rx.recv_timeout(util::WATCHDOG)
        .expect("run returned after the timer");
    runner.join().unwrap();
    t.close().unwrap();
}

//! Waiting, without sleeping for a guessed time, until another thread is
//! asleep in the kernel: what tests need before checking that a post, a
//! timer, a signal or `stop` wakes a thread that is blocked (in
//! `epoll_wait`, `io_uring_enter` or on a futex), rather than one that was
//! about to look for work anyway. Shared by the root tests
//! (`tests/util`) and core's (`core/tests/common`, through `#[path]`).
#![allow(dead_code)] // each binary uses a different subset

use std::time::{Duration, Instant};

/// The calling thread's kernel id, from `/proc/thread-self`
/// (`PID/task/TID`); std alone, so core's tests can use it too.
pub fn current_tid() -> u32 {
    if cfg!(miri) {
        return 0; // unused there: `wait_blocked` returns at once
    }
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let link = link.to_string_lossy();
    let tid = link.rsplit('/').next().unwrap_or_default();
    tid.parse()
        .unwrap_or_else(|_| panic!("/proc/thread-self -> {link}"))
}

/// The state letter of thread `tid` of this process (`R`, `S`, `D`, ...),
/// `None` once it has exited.
fn state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the state is the
    // first field after the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Returns once thread `tid` sleeps in the kernel (`S`: an interruptible
/// wait), or has exited; fails after a minute (a hang guard, not a
/// measurement). The caller knows where that thread can block; for a
/// lone runner of a context with no other thread inside it, that is only
/// the backend's wait or the scheduler's idle event.
#[track_caller]
pub fn wait_blocked(tid: u32, what: &str) {
    if cfg!(miri) {
        return; // no /proc; Miri explores the orders itself
    }
    let t0 = Instant::now();
    loop {
        match state(tid) {
            Some('S') | None => return,
            s => assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{what}: thread {tid} never blocked (state {s:?})"
            ),
        }
        std::thread::yield_now();
    }
}

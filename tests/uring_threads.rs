//! The io_uring backend on several threads: a runner blocked in
//! io_uring_enter is woken by posts and operations from other threads,
//! echo on four threads, strands.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pinion::uring::{Builder, IoContext, SteadyTimer, TcpListener, UdpSocket};
use uring_util::*;

/// A thread blocked in io_uring_enter wakes for a post from another thread.
/// A thread running `ctx`, returned once it is asleep in the kernel: a
/// lone runner can only be in `io_uring_enter` waiting, so what the test
/// does next must wake it.
fn spawn_blocked_runner(ctx: &'static IoContext) -> thread::JoinHandle<usize> {
    let (tx, tid) = std::sync::mpsc::channel();
    let runner = thread::spawn(move || {
        tx.send(util::current_tid()).unwrap();
        run_watched(ctx)
    });
    util::wait_blocked(tid.recv().unwrap(), "the runner to block in io_uring_enter");
    runner
}

#[test]
fn post_from_another_thread_wakes_blocked_runner() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(
        Builder::new(),
        "post_from_another_thread_wakes_blocked_runner",
    ) else {
        return;
    };
    let guard = Arc::new(Mutex::new(Some(ctx.work_guard())));
    let hit = Arc::new(AtomicBool::new(false));
    let runner = spawn_blocked_runner(ctx);
    let (h, g) = (hit.clone(), guard.clone());
    ctx.post(move || {
        h.store(true, Ordering::SeqCst);
        g.lock().unwrap().take();
    })
    .unwrap();
    assert!(runner.join().unwrap() >= 1);
    assert!(hit.load(Ordering::SeqCst));
    // SAFETY: the runner is gone; nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// An op started from a foreign thread while the runner is blocked is
/// submitted (the runner is interrupted) and completes.
#[test]
fn op_started_from_another_thread_while_runner_blocks() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(
        Builder::new(),
        "op_started_from_another_thread_while_runner_blocks",
    ) else {
        return;
    };
    let guard = Arc::new(Mutex::new(Some(ctx.work_guard())));
    let runner = spawn_blocked_runner(ctx);
    let t = SteadyTimer::new(ctx).unwrap();
    assert_eq!(t.expires_after(Duration::from_millis(10)), Ok(0));
    let g = guard.clone();
    t.async_wait(move |r| {
        r.unwrap();
        t.close().unwrap();
        g.lock().unwrap().take();
    })
    .unwrap();
    runner.join().unwrap();
    let guard = Arc::new(Mutex::new(Some(ctx.work_guard())));
    ctx.restart();
    let runner = spawn_blocked_runner(ctx);
    let sock = UdpSocket::bind(ctx, loopback()).unwrap();
    let addr = sock.local_addr().unwrap();
    let g = guard.clone();
    sock.async_receive_from(Vec::with_capacity(8), move |r, b| {
        assert_eq!(r.unwrap().0, 3);
        assert_eq!(b, b"abc");
        sock.close().unwrap();
        g.lock().unwrap().take();
    })
    .unwrap();
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"abc", addr)
        .unwrap();
    runner.join().unwrap();
    // SAFETY: the runner is gone; nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}
/// Four threads run one context: handlers start operations on any of
/// them while another may be blocked in io_uring_enter.
#[test]
fn echo_on_four_threads() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new().concurrency_hint(4), "echo_on_four_threads") else {
        return;
    };
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    serve_echo(l, 50);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        echo_client(ctx, addr, 50, 64, done.clone());
    }
    let threads: Vec<_> = (0..3).map(|_| thread::spawn(move || ctx.run())).collect();
    run_watched(ctx);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 50);
    assert_eq!(ctx.descriptors_in_use(), 0);
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: every runner joined; nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// Handlers posted through a strand never overlap, on several threads.
#[test]
fn strand_serialises_on_the_uring_context() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new().concurrency_hint(4), "strand_serialises") else {
        return;
    };
    let strand = pinion::uring::Strand::new(ctx).unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..200 {
        let (inside, count) = (inside.clone(), count.clone());
        strand
            .post(move || {
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "strand handlers overlapped"
                );
                count.fetch_add(1, Ordering::SeqCst);
                inside.store(false, Ordering::SeqCst);
            })
            .unwrap();
    }
    let threads: Vec<_> = (0..3).map(|_| thread::spawn(move || ctx.run())).collect();
    run_watched(ctx);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count.load(Ordering::SeqCst), 200);
    drop(strand);
    // SAFETY: every runner joined; nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

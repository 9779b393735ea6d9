//! Zero-copy sends (`Builder::send_zc`) over real loopback sockets: every
//! byte arrives, a write's buffer comes back only after the kernel's
//! notification (also when the write is cancelled or its future dropped
//! in between), Unix sockets get plain sends, and a kernel without
//! `IORING_OP_SEND_ZC` (the probe overridden) sends every write with a
//! copy.
//!
//! The notification is held back deterministically: the peer's receive
//! window is closed (a small `SO_RCVBUF`, nothing read) and the sender's
//! queue filled, then its `SO_SNDBUF` raised, so the zero-copy write is
//! taken into the send queue (its result CQE comes) but cannot be sent,
//! and its pages stay with the kernel until the peer reads.
#![cfg(all(feature = "uring", feature = "stats"))]

mod uring_util;
mod util;

use std::future::Future;
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::thread;
use std::time::{Duration, Instant};

use pinion::buf::IoBuf;
use pinion::uring::abi::IORING_OP_SEND_ZC;
use pinion::uring::{Builder, IoContext, TcpStream, UnixStream};
use pinion::Result;
use uring_util::*;

/// A context with zero-copy sends from `min` bytes, or a loud skip where
/// the kernel has no io_uring or no `SEND_ZC`.
fn zc_ctx(b: Builder, test: &str) -> Option<&'static IoContext> {
    let ctx = ctx_or_skip(b, test)?;
    if ctx.ring_info().send_zc.is_none() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: this kernel has no IORING_OP_SEND_ZC (Linux 6.0)"
        );
        return None;
    }
    Some(ctx)
}

/// A buffer that says when it is dropped.
struct Watched {
    data: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl Watched {
    fn new(len: usize) -> (Watched, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let data = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        (
            Watched {
                data,
                dropped: dropped.clone(),
            },
            dropped,
        )
    }
}

// SAFETY: the bytes of a Vec that is never resized stay put while the
// value moves.
unsafe impl IoBuf for Watched {
    fn read_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.data.len()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Polls `ctx` until `done()`, failing after 10 s (a bound, not a
/// measurement: every wait here ends in microseconds when things work).
fn poll_until(ctx: &IoContext, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s ({:?})",
            ctx.stats()
        );
        // A poll that found no work left stops the context.
        ctx.restart();
        ctx.poll();
        thread::yield_now();
    }
}

/// A pinion stream whose zero-copy writes are taken but cannot leave:
/// the peer (returned, unread) has a closed receive window, and the
/// stream's send queue was filled before its `SO_SNDBUF` was raised.
/// Also returns how many bytes were queued ahead.
fn stalled_pair(ctx: &'static IoContext) -> (TcpStream<'static>, std::net::TcpStream, usize) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    // Inherited by the accepted socket: a small, fixed receive window.
    set_int(l.as_raw_fd(), libc::SO_RCVBUF, 4096);
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    TcpStream::async_connect(ctx, addr, move |r| *g.lock().unwrap() = Some(r.unwrap())).unwrap();
    poll_until(ctx, "connect", || got.lock().unwrap().is_some());
    let s = got.lock().unwrap().take().unwrap();
    let (peer, _) = l.accept().unwrap();
    s.set_send_buffer_size(64 * 1024).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let fd = s.as_raw_fd();
    let mut queued = 0;
    for _ in 0..10_000 {
        // SAFETY: a valid buffer and length; the fd is the stream's.
        let n = unsafe { libc::send(fd, chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "filling: {e}");
            break;
        }
        queued += n as usize;
    }
    assert!(queued > 0, "some bytes were queued");
    // Room again in the send queue, none in the peer's window.
    s.set_send_buffer_size(4 * 1024 * 1024).unwrap();
    (s, peer, queued)
}

fn set_int(fd: i32, name: i32, v: i32) {
    // SAFETY: an int option on a valid socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&v as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt {name}");
}

/// Reads `n` bytes from `peer` on a thread (which opens the window).
fn drain(mut peer: std::net::TcpStream, n: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = vec![0; n];
        peer.read_exact(&mut got).unwrap();
        got
    })
}

#[test]
fn a_zero_copy_buffer_comes_back_only_after_its_notification() {
    let _g = serial();
    let name = "a_zero_copy_buffer_comes_back_only_after_its_notification";
    let Some(ctx) = zc_ctx(Builder::new().send_zc(Some(1024)), name) else {
        return;
    };
    let (s, peer, queued) = stalled_pair(ctx);
    let (buf, dropped) = Watched::new(4096);
    let want = buf.data.clone();
    let done = Arc::new(Mutex::new(None::<(Result<usize>, Watched)>));
    let d = done.clone();
    let before = ctx.stats();
    s.async_write_some(buf, move |r, b| *d.lock().unwrap() = Some((r, b)))
        .unwrap();
    // The result CQE (4096 bytes taken) is reaped, the notification is not
    // there: the handler must not have run.
    poll_until(ctx, "the zero-copy result", || {
        ctx.stats().cqes_reaped > before.cqes_reaped
    });
    let st = ctx.stats();
    assert_eq!(st.zc_sends - before.zc_sends, 1, "sent as SEND_ZC");
    assert_eq!(st.zc_notifs, before.zc_notifs, "no notification yet");
    for _ in 0..100 {
        ctx.poll();
    }
    assert!(
        done.lock().unwrap().is_none(),
        "handed back before the notification"
    );
    assert!(!dropped.load(Ordering::SeqCst));
    // A cancel now finds the kernel done with the request but not with the
    // pages: the write still waits.
    s.cancel().unwrap();
    for _ in 0..100 {
        ctx.poll();
    }
    assert!(
        done.lock().unwrap().is_none(),
        "handed back after a cancel, before the notification"
    );
    // The peer reads: the data leaves, the notification comes.
    let reader = drain(peer, queued + 4096);
    poll_until(ctx, "the notification", || done.lock().unwrap().is_some());
    let (r, b) = done.lock().unwrap().take().unwrap();
    assert_eq!(r.unwrap(), 4096);
    assert_eq!(b.data, want, "the buffer comes back intact");
    assert_eq!(ctx.stats().zc_notifs - before.zc_notifs, 1);
    let got = reader.join().unwrap();
    assert_eq!(
        &got[queued..],
        &want[..],
        "the bytes arrive after the queued ones"
    );
    drop(b);
    s.close().unwrap();
    ctx.restart();
    run_watched(ctx);
    assert_eq!(ctx.ops_in_use().0, 0, "every slot back");
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn a_dropped_zero_copy_write_keeps_its_buffer_until_the_notification() {
    let _g = serial();
    let name = "a_dropped_zero_copy_write_keeps_its_buffer_until_the_notification";
    let Some(ctx) = zc_ctx(Builder::new().send_zc(Some(1024)), name) else {
        return;
    };
    let (s, peer, queued) = stalled_pair(ctx);
    let (buf, dropped) = Watched::new(8192);
    let before = ctx.stats();
    {
        let mut fut = pin!(s.write(buf));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending(), "the write waits");
        poll_until(ctx, "the zero-copy result", || {
            ctx.stats().cqes_reaped > before.cqes_reaped
        });
        assert_eq!(ctx.stats().zc_sends - before.zc_sends, 1);
        // Dropped here: the write is cancelled, too late to matter.
    }
    for _ in 0..100 {
        ctx.poll();
    }
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the buffer was freed while the kernel still had its pages"
    );
    let reader = drain(peer, queued + 8192);
    poll_until(ctx, "the notification", || dropped.load(Ordering::SeqCst));
    assert_eq!(ctx.stats().zc_notifs - before.zc_notifs, 1);
    reader.join().unwrap();
    s.close().unwrap();
    ctx.restart();
    run_watched(ctx);
    assert_eq!(ctx.ops_in_use().0, 0, "every slot back");
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// Writes `total` bytes in `chunk`-byte writes to a std peer that reads
/// them all; returns the zero-copy sends the context made.
fn stream_to_peer(ctx: &'static IoContext, total: usize, chunk: usize) -> u64 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut p, _) = l.accept().unwrap();
        let mut got = Vec::with_capacity(total);
        p.read_to_end(&mut got).unwrap();
        got
    });
    let before = ctx.stats().zc_sends;
    let data: Arc<Vec<u8>> = Arc::new((0..total).map(|i| (i % 251) as u8).collect());
    let d = data.clone();
    TcpStream::async_connect(ctx, addr, move |r| {
        write_from(r.unwrap(), d, 0, chunk);
    })
    .unwrap();
    // A run that ran out of work leaves the context stopped.
    ctx.restart();
    run_watched(ctx);
    assert_eq!(reader.join().unwrap(), *data, "every byte, in order");
    ctx.stats().zc_sends - before
}

/// Writes `data[at..]` in `chunk`-byte slices (each write may take less),
/// then closes.
fn write_from(s: TcpStream<'static>, data: Arc<Vec<u8>>, at: usize, chunk: usize) {
    if at == data.len() {
        s.close().unwrap();
        return;
    }
    let end = (at + chunk).min(data.len());
    let piece = data[at..end].to_vec();
    s.async_write_some(piece, move |r, _| {
        let n = r.expect("write");
        write_from(s, data, at + n, chunk);
    })
    .unwrap();
}

#[test]
fn zero_copy_writes_deliver_every_byte() {
    let _g = serial();
    let name = "zero_copy_writes_deliver_every_byte";
    let Some(ctx) = zc_ctx(Builder::new().send_zc(Some(16 * 1024)), name) else {
        return;
    };
    // 64 KiB writes go zero-copy; the tail of a short write may not.
    let zc = stream_to_peer(ctx, 4 << 20, 64 * 1024);
    assert!(zc >= 32, "large writes went out as SEND_ZC ({zc})");
    let st = ctx.stats();
    assert_eq!(
        st.zc_notifs, st.zc_sends,
        "every zero-copy write was notified"
    );
    // Small writes stay plain sends.
    assert_eq!(stream_to_peer(ctx, 256 * 1024, 4096), 0);
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn a_kernel_without_send_zc_sends_with_a_copy() {
    let _g = serial();
    let name = "a_kernel_without_send_zc_sends_with_a_copy";
    let b = Builder::new()
        .send_zc(Some(1))
        .assume_missing(&[IORING_OP_SEND_ZC]);
    let Some(ctx) = ctx_or_skip(b, name) else {
        return;
    };
    assert_eq!(ctx.ring_info().send_zc, None, "the probe says no SEND_ZC");
    assert_eq!(
        stream_to_peer(ctx, 1 << 20, 64 * 1024),
        0,
        "no zero-copy send"
    );
    assert_eq!(ctx.stats().zc_notifs, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
    // The same context without the override does send zero-copy, so the
    // override (not the kernel) made the difference above.
    if let Some(ctx) = zc_ctx(Builder::new().send_zc(Some(1)), name) {
        assert!(stream_to_peer(ctx, 1 << 20, 64 * 1024) > 0);
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

#[test]
fn unix_streams_get_plain_sends() {
    let _g = serial();
    let name = "unix_streams_get_plain_sends";
    let Some(ctx) = zc_ctx(Builder::new().send_zc(Some(1)), name) else {
        return;
    };
    // Unix sockets refuse SEND_ZC (EOPNOTSUPP): pinion must not use it.
    let (a, b) = UnixStream::pair(ctx).unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    a.async_write_some(vec![9u8; 100_000], move |r, _| {
        *g.lock().unwrap() = Some(r);
    })
    .unwrap();
    let fd = b.as_raw_fd();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 200_000];
        let mut n = 0;
        while n == 0 {
            // SAFETY: a valid buffer; the fd stays open until joined.
            let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(r >= 0, "recv: {}", std::io::Error::last_os_error());
            n = r as usize;
        }
        n
    });
    poll_until(ctx, "the write", || got.lock().unwrap().is_some());
    let n = got
        .lock()
        .unwrap()
        .take()
        .unwrap()
        .expect("a plain send on a Unix socket");
    assert!(n > 0);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(ctx.stats().zc_sends, 0);
    a.close().unwrap();
    b.close().unwrap();
    ctx.restart();
    run_watched(ctx);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

//! The io_uring backend over real loopback sockets: what the conformance
//! suite does not reach (ring sizes, SQPOLL, registered files, multishot
//! accept, `ring_info`), and io_uring's own takes on the common behaviour.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pinion::uring::{Builder, IoContext, SteadyTimer, TcpListener, TcpStream, UdpSocket};
use pinion::{Error, IoBufMut};
use uring_util::*;
use util::open_fds;

fn echo(conns: usize, msgs: usize, b: Builder, name: &str) {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(b, name) else {
        return;
    };
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    serve_echo(l, conns);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..conns {
        echo_client(ctx, addr, msgs, 64, done.clone());
    }
    run_watched(ctx);
    assert_eq!(done.load(Ordering::SeqCst), conns);
    assert_eq!(ctx.descriptors_in_use(), 0, "every socket closed");
    assert_eq!(ctx.ops_in_use().0, 0, "every slot back");
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn echo_one_connection() {
    echo(1, 200, Builder::new(), "echo_one_connection");
}

#[test]
fn echo_200_connections() {
    echo(200, 20, Builder::new(), "echo_200_connections");
}

#[test]
fn echo_200_connections_single_shot_accept() {
    echo(
        200,
        5,
        Builder::new().multishot_accept(false),
        "echo_200_connections_single_shot_accept",
    );
}

#[test]
fn echo_200_connections_multishot_accept() {
    echo(
        200,
        5,
        Builder::new().multishot_accept(true),
        "echo_200_connections_multishot_accept",
    );
}

/// A tiny SQ and CQ: pushes find the SQ full (back-pressure, never an
/// error) and completions overflow into the kernel's backlog.
#[test]
fn echo_200_connections_tiny_rings() {
    echo(
        200,
        5,
        Builder::new().sq_entries(8).cq_entries(16),
        "echo_200_connections_tiny_rings",
    );
}

/// SQPOLL: a kernel thread consumes the SQ; the same echo works. Skipped
/// loudly where the kernel refuses SQPOLL (the context falls back).
#[test]
fn echo_with_sqpoll() {
    {
        let _g = serial();
        let Some(ctx) = ctx_or_skip(Builder::new().sqpoll(Some(50)), "echo_with_sqpoll") else {
            return;
        };
        let on = ctx.ring_info().sqpoll;
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
        if !on {
            eprintln!("SKIPPED echo_with_sqpoll: the kernel refused IORING_SETUP_SQPOLL");
            return;
        }
    }
    echo(20, 50, Builder::new().sqpoll(Some(50)), "echo_with_sqpoll");
}

/// 500 operations in flight through an 8-entry SQ.
#[test]
fn sq_full_is_back_pressure() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(
        Builder::new().sq_entries(8).cq_entries(16),
        "sq_full_is_back_pressure",
    ) else {
        return;
    };
    assert_eq!(ctx.ring_info().sq_entries, 8);
    let sock = UdpSocket::bind(ctx, loopback()).unwrap();
    let addr = sock.local_addr().unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    for _ in 0..500 {
        let got = got.clone();
        sock.async_receive_from(Vec::with_capacity(16), move |r, buf| {
            let (n, _) = r.expect("receive");
            assert_eq!((n, buf.len()), (4, 4));
            if got.fetch_add(1, Ordering::SeqCst) == 499 {
                sock.close().unwrap();
            }
        })
        .unwrap_or_else(|r| panic!("a full SQ must not be an error: {}", r.error));
    }
    let sender = thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..500u32 {
            s.send_to(&i.to_le_bytes(), addr).unwrap();
            if i % 50 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    run_watched(ctx);
    sender.join().unwrap();
    assert_eq!(got.load(Ordering::SeqCst), 500);
    #[cfg(feature = "stats")]
    assert!(ctx.stats().sq_full_events > 0, "{:?}", ctx.stats());
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn connect_refused() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "connect_refused") else {
        return;
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    TcpStream::async_connect(ctx, addr, move |r| *g.lock().unwrap() = Some(r.map(drop))).unwrap();
    run_watched(ctx);
    assert_eq!(*got.lock().unwrap(), Some(Err(Error::ConnectionRefused)));
    assert_eq!(ctx.descriptors_in_use(), 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// Accepts one connection and hands the server side and the client side
/// to `f` (both inside the running context).
fn with_pair<F>(ctx: &'static IoContext, f: F)
where
    F: FnOnce(TcpStream<'static>, TcpStream<'static>) + Send + 'static,
{
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    let client = Arc::new(Mutex::new(None::<TcpStream<'static>>));
    let server = Arc::new(Mutex::new(None::<TcpStream<'static>>));
    let f = Arc::new(Mutex::new(Some(f)));
    let go = {
        let (client, server, f) = (client.clone(), server.clone(), f.clone());
        move || {
            let (c, s) = (*client.lock().unwrap(), *server.lock().unwrap());
            if let (Some(c), Some(s)) = (c, s) {
                (f.lock().unwrap().take().unwrap())(s, c);
            }
        }
    };
    let go2 = go.clone();
    l.async_accept(move |r| {
        *server.lock().unwrap() = Some(r.unwrap().0);
        l.close().unwrap();
        go();
    })
    .unwrap();
    TcpStream::async_connect(ctx, addr, move |r| {
        *client.lock().unwrap() = Some(r.unwrap());
        go2();
    })
    .unwrap();
}

/// A read pending on an idle socket is cancelled while the kernel holds
/// its buffer: the handler gets OperationAborted and the buffer, the slot
/// goes back to the pool.
#[test]
fn cancel_read_returns_buffer_and_slot() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "cancel_read_returns_buffer_and_slot") else {
        return;
    };
    assert_eq!(ctx.ops_in_use().0, 0);
    let aborted = Arc::new(AtomicBool::new(false));
    let a = aborted.clone();
    with_pair(ctx, move |s, c| {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"keep");
        let ptr = buf.as_ptr() as usize;
        s.async_read_some(buf, move |r, buf| {
            assert_eq!(r, Err(Error::OperationAborted));
            assert_eq!((buf.as_ptr() as usize, buf.as_slice()), (ptr, &b"keep"[..]));
            a.store(true, Ordering::SeqCst);
            s.close().unwrap();
            c.close().unwrap();
        })
        .unwrap();
        // Cancel once the read is surely parked in the kernel.
        let t = SteadyTimer::new(s.context()).unwrap();
        assert_eq!(t.expires_after(Duration::from_millis(30)), Ok(0));
        t.async_wait(move |r| {
            r.unwrap();
            s.cancel().unwrap();
            t.close().unwrap();
        })
        .unwrap();
    });
    run_watched(ctx);
    assert!(aborted.load(Ordering::SeqCst));
    assert_eq!(ctx.ops_in_use().0, 0, "slot back in the pool");
    assert_eq!(ctx.descriptors_in_use(), 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// close() with a read and a write pending: both complete with
/// OperationAborted and get their buffers back.
#[test]
fn close_with_pending_read_and_write() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "close_with_pending_read_and_write") else {
        return;
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    let res = results.clone();
    with_pair(ctx, move |s, c| {
        s.set_send_buffer_size(4096).unwrap();
        c.set_recv_buffer_size(4096).unwrap();
        // The client never reads: writes go on until one stays pending.
        fn write_on(s: TcpStream<'static>, big: Vec<u8>, res: Results) {
            s.async_write_some(big, move |r, big| match r {
                Ok(_) => write_on(s, big, res),
                Err(e) => res.lock().unwrap().push(("write", Err(e), big.len())),
            })
            .unwrap();
        }
        write_on(s, vec![7u8; 1 << 20], res.clone());
        let r2 = res.clone();
        s.async_read_some(Vec::with_capacity(100), move |r, b| {
            r2.lock().unwrap().push(("read", r, b.capacity()));
        })
        .unwrap();
        let t = SteadyTimer::new(s.context()).unwrap();
        assert_eq!(t.expires_after(Duration::from_millis(100)), Ok(0));
        t.async_wait(move |_| {
            s.close().unwrap();
            assert_eq!(s.close(), Err(Error::BadDescriptor));
            c.close().unwrap();
            t.close().unwrap();
        })
        .unwrap();
    });
    run_watched(ctx);
    let mut r = results.lock().unwrap().clone();
    r.sort_by_key(|x| x.0);
    assert_eq!(
        r,
        vec![
            ("read", Err(Error::OperationAborted), 100),
            ("write", Err(Error::OperationAborted), 1 << 20)
        ]
    );
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

type Outcomes = Arc<Mutex<Vec<(&'static str, pinion::Result<usize>)>>>;
type Results = Arc<Mutex<Vec<(&'static str, pinion::Result<usize>, usize)>>>;

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Dropping the context with operations in the kernel: handlers are
/// dropped, never run; no fd leaks.
#[test]
fn drop_context_with_pending_ops() {
    let _g = serial();
    let fds_before = open_fds();
    let Some(ctx) = ctx_or_skip(Builder::new(), "drop_context_with_pending_ops") else {
        return;
    };
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    let (d, r) = (DropCount(drops.clone()), ran.clone());
    let (d3, r3) = (DropCount(drops.clone()), ran.clone());
    let armed = Arc::new(AtomicUsize::new(0));
    let a = armed.clone();
    // A connection whose server side reads forever.
    l.async_accept(move |res| {
        let (s, _) = res.unwrap();
        let (d2, r2) = (DropCount(d.0.clone()), r.clone());
        s.async_read_some(Vec::with_capacity(64), move |_, _| {
            r2.store(true, Ordering::SeqCst);
            drop(d2);
        })
        .unwrap();
        drop(d);
        // A second accept, pending too. Started only now: single-shot
        // accepts on one listener are separate SQEs, and one started
        // later may take a connection first.
        l.async_accept(move |_| {
            r3.store(true, Ordering::SeqCst);
            drop(d3);
        })
        .unwrap();
        a.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let (d, r) = (DropCount(drops.clone()), ran.clone());
    TcpStream::async_connect(ctx, addr, move |res| {
        let c = res.unwrap();
        let (d2, r2) = (DropCount(d.0.clone()), r.clone());
        c.async_read_some(Vec::with_capacity(64), move |_, _| {
            r2.store(true, Ordering::SeqCst);
            drop(d2);
        })
        .unwrap();
        drop(d);
    })
    .unwrap();
    // A far timer, pending too.
    let t = SteadyTimer::new(ctx).unwrap();
    assert_eq!(t.expires_after(Duration::from_secs(3600)), Ok(0));
    let (d, r) = (DropCount(drops.clone()), ran.clone());
    t.async_wait(move |_| {
        r.store(true, Ordering::SeqCst);
        drop(d);
    })
    .unwrap();
    // Run until the accept and connect handlers have run (2 drops).
    for _ in 0..200 {
        ctx.run_for(Duration::from_millis(10));
        if drops.load(Ordering::SeqCst) >= 2 && armed.load(Ordering::SeqCst) == 1 {
            break;
        }
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "accept and connect handlers ran"
    );
    assert!(
        ctx.ops_in_use().0 >= 4,
        "two reads, an accept and a wait pending: {:?}",
        ctx.ops_in_use()
    );
    // SAFETY: no handle is used after this.
    unsafe { free_ctx(ctx) };
    assert_eq!(
        drops.load(Ordering::SeqCst),
        6,
        "every pending handler dropped"
    );
    assert!(!ran.load(Ordering::SeqCst), "no pending handler ran");
    assert_eq!(open_fds(), fds_before, "no fd leaked");
}

#[test]
fn timers_fire_in_deadline_order_and_cancel() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "timers_fire_in_deadline_order_and_cancel") else {
        return;
    };
    let order = Arc::new(Mutex::new(Vec::new()));
    for ms in [50u64, 10, 40, 20, 30] {
        let t = SteadyTimer::new(ctx).unwrap();
        assert_eq!(t.expires_after(Duration::from_millis(ms)), Ok(0));
        let o = order.clone();
        t.async_wait(move |r| {
            r.unwrap();
            o.lock().unwrap().push(ms);
            t.close().unwrap();
        })
        .unwrap();
    }
    let cancelled = SteadyTimer::new(ctx).unwrap();
    assert_eq!(cancelled.expires_after(Duration::from_millis(20)), Ok(0));
    let o = order.clone();
    cancelled
        .async_wait(move |r| {
            assert_eq!(r, Err(Error::OperationAborted));
            o.lock().unwrap().push(0);
        })
        .unwrap();
    let o = order.clone();
    cancelled
        .async_wait(move |r| {
            assert_eq!(r, Err(Error::OperationAborted));
            o.lock().unwrap().push(1);
        })
        .unwrap();
    assert_eq!(cancelled.cancel(), Ok(2));
    // Resetting the expiry cancels too.
    let reset = SteadyTimer::new(ctx).unwrap();
    assert_eq!(reset.expires_after(Duration::from_secs(3600)), Ok(0));
    reset
        .async_wait(|r| assert_eq!(r, Err(Error::OperationAborted)))
        .unwrap();
    assert_eq!(reset.expires_after(Duration::from_millis(5)), Ok(1));
    reset.close().unwrap();
    assert!(
        reset.async_wait(|_| {}).is_err(),
        "closed timer refuses waits"
    );
    run_watched(ctx);
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 10, 20, 30, 40, 50]);
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// A thread blocked in io_uring_enter wakes for a post from another thread.
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
    let runner = thread::spawn(move || run_watched(ctx));
    // Give the runner time to block (no assertion on time: any order works).
    thread::sleep(Duration::from_millis(100));
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
    let runner = thread::spawn(move || run_watched(ctx));
    thread::sleep(Duration::from_millis(50));
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
    let runner = thread::spawn(move || run_watched(ctx));
    thread::sleep(Duration::from_millis(50));
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

#[test]
fn eof_reset_and_broken_pipe() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "eof_reset_and_broken_pipe") else {
        return;
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    // EOF: the client shuts down its writing half.
    let r = results.clone();
    with_pair(ctx, move |s, c| {
        c.shutdown(pinion::Shutdown::Write).unwrap();
        s.async_read_some(Vec::with_capacity(16), move |res, _| {
            r.lock().unwrap().push(("eof", res));
            s.close().unwrap();
            c.close().unwrap();
        })
        .unwrap();
    });
    // Reset: the client closes with SO_LINGER 0.
    let r = results.clone();
    with_pair(ctx, move |s, c| {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid fd and a valid linger struct for the call.
        let rc = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        s.async_read_some(Vec::with_capacity(16), move |res, _| {
            r.lock().unwrap().push(("reset", res));
            s.close().unwrap();
        })
        .unwrap();
        c.close().unwrap();
    });
    // Broken pipe: the server closes, the client keeps writing.
    let r = results.clone();
    with_pair(ctx, move |s, c| {
        s.close().unwrap();
        fn write_until_error(c: TcpStream<'static>, left: usize, r: Outcomes) {
            c.async_write_some(&b"data"[..], move |res, _| match res {
                Ok(_) if left > 0 => {
                    // Let the peer's RST arrive before the next write.
                    let t = SteadyTimer::new(c.context()).unwrap();
                    assert_eq!(t.expires_after(Duration::from_millis(2)), Ok(0));
                    t.async_wait(move |_| {
                        t.close().unwrap();
                        write_until_error(c, left - 1, r)
                    })
                    .unwrap();
                }
                other => {
                    r.lock().unwrap().push(("pipe", other));
                    c.close().unwrap();
                }
            })
            .unwrap();
        }
        write_until_error(c, 100, r);
    });
    run_watched(ctx);
    let mut got = results.lock().unwrap().clone();
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        vec![
            ("eof", Err(Error::Eof)),
            ("pipe", Err(Error::BrokenPipe)),
            ("reset", Err(Error::ConnectionReset)),
        ]
    );
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn udp_round_trip() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "udp_round_trip") else {
        return;
    };
    let a = UdpSocket::bind(ctx, loopback()).unwrap();
    let b = UdpSocket::bind(ctx, loopback()).unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    b.async_receive_from(Vec::with_capacity(64), move |r, buf| {
        let (n, from) = r.unwrap();
        *g.lock().unwrap() = Some((n, from, buf.clone()));
        b.async_send_to(buf, from, move |r, _| {
            r.unwrap();
            b.close().unwrap();
        })
        .unwrap();
    })
    .unwrap();
    a.async_send_to(&b"hello"[..], ba, |r, _| assert_eq!(r, Ok(5)))
        .unwrap();
    let echoed = Arc::new(AtomicBool::new(false));
    let e = echoed.clone();
    a.async_receive_from(Vec::with_capacity(64), move |r, buf| {
        let (n, from): (usize, SocketAddr) = r.unwrap();
        assert_eq!((n, from, &buf[..]), (5, ba, &b"hello"[..]));
        e.store(true, Ordering::SeqCst);
        a.close().unwrap();
    })
    .unwrap();
    run_watched(ctx);
    assert_eq!(*got.lock().unwrap(), Some((5, aa, b"hello".to_vec())));
    assert!(echoed.load(Ordering::SeqCst));
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// A full operation pool hands handler and buffer back at initiation.
#[test]
fn pool_full_at_initiation() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new().ops(2), "pool_full_at_initiation") else {
        return;
    };
    let s = UdpSocket::bind(ctx, loopback()).unwrap();
    s.async_receive_from(Vec::with_capacity(8), |_, _| {})
        .unwrap();
    s.async_receive_from(Vec::with_capacity(8), |_, _| {})
        .unwrap();
    let r = s.async_receive_from(Vec::with_capacity(8), |_, _| {});
    let Err(rej) = r else {
        panic!("third op must be rejected")
    };
    assert_eq!(rej.error, Error::PoolFull(pinion::Pool::Ops));
    assert_eq!(rej.handler.0.capacity(), 8);
    s.close().unwrap();
    run_watched(ctx);
    assert_eq!(ctx.ops_in_use().0, 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// Closed handles answer BadDescriptor; a zero-length write completes
/// with Ok(0) through the queue, never inline; a read into a buffer with
/// no room is refused at the call with BufferFull, the buffer handed back.
#[test]
fn bad_descriptor_and_zero_length() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new(), "bad_descriptor_and_zero_length") else {
        return;
    };
    let inline = Arc::new(AtomicBool::new(true));
    let ran = Arc::new(AtomicBool::new(false));
    let (i2, ran2) = (inline.clone(), ran.clone());
    with_pair(ctx, move |s, c| {
        let mut full = Vec::with_capacity(4);
        full.extend_from_slice(b"abcd");
        assert_eq!(full.spare(), 0);
        let r = s
            .async_read_some(full, |_, _| panic!("never queued"))
            .expect_err("a read with no room");
        assert_eq!(r.error, Error::BufferFull);
        assert_eq!(r.handler.0, b"abcd", "the buffer comes back");
        let i3 = i2.clone();
        s.async_write_some(&b""[..], move |r, _| {
            assert_eq!(r, Ok(0));
            assert!(!i3.load(Ordering::SeqCst), "handler ran inline");
            s.close().unwrap();
            c.close().unwrap();
            assert_eq!(c.as_raw_fd(), -1);
            assert!(matches!(
                c.async_read_some(Vec::with_capacity(1), |_, _| {}),
                Err(pinion::Rejected {
                    error: Error::BadDescriptor,
                    ..
                })
            ));
            ran2.store(true, Ordering::SeqCst);
        })
        .unwrap();
        i2.store(false, Ordering::SeqCst);
    });
    run_watched(ctx);
    assert!(
        ran.load(Ordering::SeqCst),
        "the zero-length write completed"
    );
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn ring_memory_is_reported_and_sized_by_the_user() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(Builder::new().sq_entries(64).cq_entries(256), "ring_memory")
    else {
        return;
    };
    let info = ctx.ring_info();
    assert_eq!((info.sq_entries, info.cq_entries), (64, 256));
    assert!(ctx.pinned_bytes() >= 64 * 64 + 256 * 16);
    let Some(big) = ctx_or_skip(Builder::new().sq_entries(1024), "ring_memory") else {
        return;
    };
    assert!(big.pinned_bytes() > ctx.pinned_bytes());
    assert!(ctx.now().as_nanos() > 0);
    // SAFETY: nothing uses them any more.
    unsafe {
        free_ctx(ctx);
        free_ctx(big);
    }
}

#[test]
fn build_error_says_what_to_do() {
    let e = pinion::BuildError::Disabled(2);
    let s = e.to_string();
    assert!(
        s.contains("io_uring_disabled") && s.contains("epoll"),
        "{s}"
    );
    assert!(pinion::BuildError::NotSupported
        .to_string()
        .contains("epoll"));
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

/// Multishot accept: connections the kernel accepts while nobody waits
/// are queued on the listener; closing the listener closes them (the
/// clients see EOF), aborts the waiting accept, and leaks no fd or slot.
#[test]
fn multishot_accept_queues_and_close_releases_everything() {
    let _g = serial();
    let fds_before = open_fds();
    let Some(ctx) = ctx_or_skip(
        Builder::new().multishot_accept(true),
        "multishot_accept_queues",
    ) else {
        return;
    };
    if !ctx.ring_info().multishot_accept {
        eprintln!("SKIPPED multishot_accept_queues: multishot accept is off");
        return;
    }
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    // Three clients connect; one accept claims one connection and arms the
    // multishot accept, which takes the other two off the listen queue.
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let first = Arc::new(Mutex::new(None));
    let f = first.clone();
    l.async_accept(move |r| *f.lock().unwrap() = Some(r.map(|(s, _)| s.close().unwrap())))
        .unwrap();
    for _ in 0..200 {
        ctx.run_for(Duration::from_millis(5));
        ctx.restart();
        if first.lock().unwrap().is_some() && ctx.descriptors_in_use() == 3 {
            break;
        }
    }
    assert_eq!(*first.lock().unwrap(), Some(Ok(())));
    assert_eq!(
        ctx.descriptors_in_use(),
        3,
        "listener + two queued connections"
    );
    // A second accept is served from the queue at once (through the run loop).
    let second = Arc::new(AtomicBool::new(false));
    let s2 = second.clone();
    l.async_accept(move |r| {
        let (s, peer) = r.unwrap();
        assert_eq!(peer.ip(), addr.ip());
        s.close().unwrap();
        s2.store(true, Ordering::SeqCst);
    })
    .unwrap();
    assert!(!second.load(Ordering::SeqCst), "never inline");
    // A third waits... until the close below aborts it, after the last
    // queued connection was handed to it or closed with the listener.
    let third = Arc::new(Mutex::new(None));
    let t3 = third.clone();
    l.async_accept(move |r| *t3.lock().unwrap() = Some(r.map(|(s, _)| s.close().unwrap())))
        .unwrap();
    let fourth = Arc::new(Mutex::new(None));
    let t4 = fourth.clone();
    l.async_accept(move |r| *t4.lock().unwrap() = Some(r.map(|(s, _)| s.close().unwrap())))
        .unwrap();
    l.close().unwrap();
    run_watched(ctx);
    assert!(second.load(Ordering::SeqCst));
    assert_eq!(*third.lock().unwrap(), Some(Ok(())));
    assert_eq!(*fourth.lock().unwrap(), Some(Err(Error::OperationAborted)));
    assert_eq!(ctx.descriptors_in_use(), 0);
    assert_eq!(ctx.ops_in_use().0, 0);
    // Every client sees EOF: its server side was closed.
    for mut c in clients {
        use std::io::Read;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
    // The listener's slot came back once the multishot request ended.
    let again = TcpListener::bind(ctx, loopback()).unwrap();
    again.close().unwrap();
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
    assert_eq!(open_fds(), fds_before, "no fd leaked");
}

/// More connections than the listener holds: the multishot accept is
/// stopped at the high-water mark, re-armed by later accepts, and every
/// connection is accepted exactly once.
#[test]
fn multishot_accept_stops_at_high_water_and_rearms() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(
        Builder::new().multishot_accept(true),
        "multishot_accept_rearms",
    ) else {
        return;
    };
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    let clients: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    fn accept_one(l: TcpListener<'static>, left: usize, n: Arc<AtomicUsize>) {
        l.async_accept(move |r| {
            r.unwrap().0.close().unwrap();
            n.fetch_add(1, Ordering::SeqCst);
            if left > 1 {
                accept_one(l, left - 1, n);
            } else {
                l.close().unwrap();
            }
        })
        .unwrap();
    }
    // One accept first: the multishot request takes connections off the
    // listen queue until it holds the high-water mark, then stops.
    let a = accepted.clone();
    l.async_accept(move |r| {
        r.unwrap().0.close().unwrap();
        a.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    for _ in 0..100 {
        ctx.run_for(Duration::from_millis(5));
        ctx.restart();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let held = ctx.descriptors_in_use() - 1;
    assert!(
        (1..40).contains(&held),
        "held {held} of 39 waiting connections"
    );
    eprintln!("multishot held {held} connections");
    accept_one(l, 39, accepted.clone());
    run_watched(ctx);
    assert_eq!(accepted.load(Ordering::SeqCst), 40);
    assert_eq!(ctx.descriptors_in_use(), 0);
    drop(clients);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn echo_200_connections_registered_files_on() {
    echo(
        200,
        20,
        Builder::new().registered_files(true),
        "echo_200_connections_registered_files_on",
    );
}

#[test]
fn echo_200_connections_registered_files_off() {
    echo(
        200,
        20,
        Builder::new().registered_files(false),
        "echo_200_connections_registered_files_off",
    );
}

/// `ring_info()` says whether sockets are registered files: on by default
/// (the kernels pinion-uring runs on have sparse file tables), off when
/// the Builder says so.
#[test]
fn ring_info_reports_registered_files() {
    let _g = serial();
    let Some(on) = ctx_or_skip(Builder::new().descriptors(64), "ring_info_registered_files") else {
        return;
    };
    assert!(on.ring_info().registered_files);
    // SAFETY: nothing uses the context any more.
    unsafe { free_ctx(on) };
    let Some(off) = ctx_or_skip(
        Builder::new().descriptors(64).registered_files(false),
        "ring_info_registered_files",
    ) else {
        return;
    };
    assert!(!off.ring_info().registered_files);
    // SAFETY: nothing uses the context any more.
    unsafe { free_ctx(off) };
}

/// The descriptor index in a handle's `Debug` output
/// (`TcpStream(Key(index#generation))`).
fn desc_index(dbg: &str) -> u32 {
    let rest = &dbg[dbg.find("Key(").expect("key") + 4..];
    rest[..rest.find('#').expect("generation")].parse().unwrap()
}

/// close() with a read pending on a registered file: the handler gets
/// OperationAborted and its buffer, the op slot goes back, and the freed
/// descriptor slot (and its registered-file index) carries a new
/// connection that echoes.
#[test]
fn close_pending_read_with_registered_files_and_reuse_slot() {
    let _g = serial();
    let Some(ctx) = ctx_or_skip(
        Builder::new().descriptors(64).registered_files(true),
        "close_pending_read_with_registered_files",
    ) else {
        return;
    };
    assert!(ctx.ring_info().registered_files);
    assert_eq!(ctx.ops_in_use().0, 0);
    // The second server, bound first so it does not take the freed slot.
    let l2 = TcpListener::bind(ctx, loopback()).unwrap();
    let addr2 = l2.local_addr().unwrap();
    let aborted = Arc::new(AtomicBool::new(false));
    let reused = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let (a, ru, d) = (aborted.clone(), reused.clone(), done.clone());
    with_pair(ctx, move |s, c| {
        let s_idx = desc_index(&format!("{s:?}"));
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"keep");
        let ptr = buf.as_ptr() as usize;
        s.async_read_some(buf, move |r, buf| {
            assert_eq!(r, Err(Error::OperationAborted));
            assert_eq!((buf.as_ptr() as usize, buf.as_slice()), (ptr, &b"keep"[..]));
            a.store(true, Ordering::SeqCst);
            // The freed slots are reused last-freed first: the new
            // client (registered as the connect starts) lands in the
            // closed server's slot. Connect first: a single-shot accept
            // reserves a slot for its connection when it starts.
            TcpStream::async_connect(ctx, addr2, move |r| {
                let n = r.expect("connect");
                ru.store(desc_index(&format!("{n:?}")) == s_idx, Ordering::SeqCst);
                client_step(n, 0, 50, Vec::with_capacity(64), Vec::with_capacity(64), d);
            })
            .unwrap();
            serve_echo(l2, 1);
            c.close().unwrap();
        })
        .unwrap();
        // Close once the read is surely parked in the kernel.
        let t = SteadyTimer::new(s.context()).unwrap();
        assert_eq!(t.expires_after(Duration::from_millis(30)), Ok(0));
        t.async_wait(move |r| {
            r.unwrap();
            s.close().unwrap();
            t.close().unwrap();
        })
        .unwrap();
    });
    run_watched(ctx);
    assert!(aborted.load(Ordering::SeqCst), "read aborted");
    assert!(
        reused.load(Ordering::SeqCst),
        "new connection in the freed slot"
    );
    assert_eq!(done.load(Ordering::SeqCst), 1, "echo on the reused slot");
    assert_eq!(ctx.ops_in_use().0, 0, "slot back in the pool");
    assert_eq!(ctx.descriptors_in_use(), 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

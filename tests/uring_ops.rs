//! The io_uring backend's operations over real loopback sockets, where
//! io_uring has its own take on the common behaviour: cancel and close with
//! operations in the kernel, dropping the context, timers, errors, UDP, a
//! full operation pool.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinion::uring::{Builder, SteadyTimer, TcpListener, TcpStream, UdpSocket};
use pinion::{Error, IoBufMut};
use uring_util::*;
use util::open_fds;

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

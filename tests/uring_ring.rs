//! The io_uring backend's ring configuration over real loopback sockets:
//! ring sizes and SQ back-pressure, SQPOLL, multishot accept, registered
//! files, `ring_info`, ring memory and build errors.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pinion::uring::{Builder, SteadyTimer, TcpListener, TcpStream, UdpSocket};
use pinion::Error;
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
    // UDP drops what the socket buffer cannot hold: the sender sends 50
    // datagrams (well under the default receive buffer) and waits until
    // they are received before the next 50. Unpaced, a runner kept off
    // the CPU let the kernel drop 143 of 500 (`RcvbufErrors` in
    // /proc/net/snmp went to 143) and the test waited for its watchdog.
    let seen = got.clone();
    let sender = thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = std::time::Instant::now();
        for i in 0..500u32 {
            if i % 50 == 0 {
                while seen.load(Ordering::SeqCst) < i as usize {
                    assert!(start.elapsed() < util::WATCHDOG, "receiver stuck at {i}");
                    thread::yield_now();
                }
            }
            s.send_to(&i.to_le_bytes(), addr).unwrap();
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

/// `IORING_SETUP_COOP_TASKRUN` is used where the kernel takes it (5.19 and
/// later, which the backend needs anyway) and `ring_info()` says so; the
/// ring without it (`coop_taskrun(false)`, which stands in for a kernel
/// that refuses the flag: the fallback ring is the same plain ring) and
/// the ring with SQPOLL (which the kernel refuses to combine with it)
/// echo just the same.
#[test]
fn coop_taskrun_on_by_default_off_by_switch_and_with_sqpoll() {
    {
        let _g = serial();
        let Some(ctx) = ctx_or_skip(Builder::new(), "coop_taskrun") else {
            return;
        };
        assert!(
            ctx.ring_info().coop_taskrun,
            "the kernel takes COOP_TASKRUN"
        );
        // SAFETY: nothing uses the context any more.
        unsafe { free_ctx(ctx) };
        let Some(off) = ctx_or_skip(Builder::new().coop_taskrun(false), "coop_taskrun") else {
            return;
        };
        assert!(!off.ring_info().coop_taskrun);
        // SAFETY: nothing uses the context any more.
        unsafe { free_ctx(off) };
        if let Some(sq) = ctx_or_skip(Builder::new().sqpoll(Some(50)), "coop_taskrun") {
            assert!(!sq.ring_info().coop_taskrun, "never with SQPOLL");
            // SAFETY: nothing uses the context any more.
            unsafe { free_ctx(sq) };
        }
    }
    echo(50, 50, Builder::new(), "coop_taskrun on");
    echo(
        50,
        50,
        Builder::new().coop_taskrun(false),
        "coop_taskrun off",
    );
}

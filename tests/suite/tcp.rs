//! TCP over loopback: accept, connect, echo, end-of-stream and errors.

use std::io::{Read, Write};
use std::net::Shutdown as StdShutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pinion::compose::{async_read, async_write, Completion};
use pinion::Error;

use super::{accept_one, b, listen, run_until, serve_echo};
use crate::util::{self, pattern_vec, FixedBuf};

type Slot<T> = Arc<Mutex<Option<T>>>;

fn slot<T>() -> Slot<T> {
    Arc::new(Mutex::new(None))
}

/// Connects, writes `msg`, reads the echo back exactly, closes; stores
/// what came back in `out`.
fn echo_client(
    ctx: &'static b::IoContext, addr: std::net::SocketAddr, msg: Vec<u8>, out: Slot<Vec<u8>>,
) {
    b::TcpStream::async_connect(ctx, addr, move |r| {
        let s = r.expect("connect");
        s.set_nodelay(true).unwrap();
        let n = msg.len();
        async_write(&s, msg, move |r, _| {
            assert_eq!(r, Ok(n));
            async_read(
                &s,
                FixedBuf::new(n),
                Completion::Exactly(n),
                move |r, buf| {
                    assert_eq!(r, Ok(n));
                    *out.lock().unwrap() = Some(buf.bytes().to_vec());
                    s.close().unwrap();
                },
            )
            .map_err(|r| r.error)
            .unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
}

#[test]
fn echo_one_connection() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let closed = Arc::new(AtomicUsize::new(0));
    serve_echo(l, 1, 4096, closed.clone());
    let out = slot();
    echo_client(c, addr, pattern_vec(1, 100_000), out.clone());
    run_until(c, "echo and close", || {
        out.lock().unwrap().is_some() && closed.load(Ordering::SeqCst) == 1
    });
    assert!(out.lock().unwrap().as_deref() == Some(&pattern_vec(1, 100_000)[..]));
    l.close().unwrap();
    assert_eq!(c.outstanding_work(), 0);
}

#[test]
fn echo_500_connections() {
    const N: usize = 500;
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let closed = Arc::new(AtomicUsize::new(0));
    serve_echo(l, N, 256, closed.clone());
    let outs: Vec<Slot<Vec<u8>>> = (0..N).map(|_| slot()).collect();
    for (i, out) in outs.iter().enumerate() {
        echo_client(c, addr, pattern_vec(i as u32, 64), out.clone());
    }
    run_until(c, "500 echoes", || closed.load(Ordering::SeqCst) == N);
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(
            out.lock().unwrap().as_deref(),
            Some(&pattern_vec(i as u32, 64)[..])
        );
    }
    l.close().unwrap();
}

#[test]
fn connect_refused() {
    let addr = {
        let l = std::net::TcpListener::bind(util::any_port()).unwrap();
        l.local_addr().unwrap()
    }; // closed: nobody listens there now
    let ctx = ctx_or_skip!();
    let got = slot();
    let g = got.clone();
    b::TcpStream::async_connect(ctx.get(), addr, move |r| {
        *g.lock().unwrap() = Some(r.map(|_| ()));
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(&ctx, "connect to refuse", || got.lock().unwrap().is_some());
    assert_eq!(got.lock().unwrap().unwrap(), Err(Error::ConnectionRefused));
    assert_eq!(ctx.outstanding_work(), 0);
}

#[test]
fn client_half_close_gets_every_byte_back() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let closed = Arc::new(AtomicUsize::new(0));
    serve_echo(l, 1, 16384, closed.clone());
    let data = pattern_vec(7, 300_000);
    let peer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut s = util::std_connect(addr);
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                util::std_write_all(&mut w, &data);
                w.shutdown(StdShutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back)
                .expect("read until the server closes");
            writer.join().unwrap();
            back
        })
    };
    run_until(c, "server closes", || closed.load(Ordering::SeqCst) == 1);
    assert!(peer.join().unwrap() == data);
}

#[test]
fn half_close_is_eof_and_the_other_half_still_works() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);
    util::std_write_all(&mut peer, b"abc");
    peer.shutdown(StdShutdown::Write).unwrap();

    let results = Arc::new(Mutex::new(Vec::new()));
    let r1 = results.clone();
    s.async_read_some(FixedBuf::new(64), move |r, buf| {
        r1.lock().unwrap().push((r, buf.bytes().to_vec()));
        s.async_read_some(buf, move |r, buf| {
            r1.lock().unwrap().push((r, buf.bytes().to_vec()));
            async_write(&s, &b"xyz"[..], move |r, _| {
                assert_eq!(r, Ok(3));
                s.close().unwrap();
            })
            .map_err(|r| r.error)
            .unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "two reads", || results.lock().unwrap().len() == 2);
    run_until(c, "write and close", || c.outstanding_work() == 0);
    let results = results.lock().unwrap();
    // The first read may already see "abc"; the end-of-stream comes after it.
    assert_eq!(results[0], (Ok(3), b"abc".to_vec()));
    assert_eq!(results[1], (Err(Error::Eof), b"abc".to_vec()));
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"xyz");
    l.close().unwrap();
}

#[test]
fn peer_reset_mid_read_is_connection_reset() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let got = slot();
    let g = got.clone();
    s.async_read_some(FixedBuf::new(64).tagged(9), move |r, buf| {
        *g.lock().unwrap() = Some((r, buf.tag));
        s.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    util::set_linger_zero(peer.as_raw_fd());
    drop(peer); // RST
    run_until(c, "read fails", || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().unwrap(),
        (Err(Error::ConnectionReset), 9)
    );
    l.close().unwrap();
}

#[test]
fn write_after_peer_close_is_broken_pipe_without_sigpipe() {
    util::count_sigpipes();
    let before = util::SIGPIPES.load(Ordering::SeqCst);
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let peer = util::std_connect(addr);
    let s = accept_one(c, l);
    drop(peer); // FIN; the next write draws a RST
    let err = slot();

    fn write_until_error(s: b::TcpStream<'static>, left: usize, err: Slot<Error>) {
        s.async_write_some(&b"0123456789"[..], move |r, _| match r {
            Ok(_) if left > 0 => write_until_error(s, left - 1, err),
            Ok(_) => panic!("every write succeeded after the peer closed"),
            Err(e) => *err.lock().unwrap() = Some(e),
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    write_until_error(s, 1000, err.clone());
    run_until(c, "a write fails", || err.lock().unwrap().is_some());
    assert_eq!(err.lock().unwrap().unwrap(), Error::BrokenPipe);
    assert_eq!(
        util::SIGPIPES.load(Ordering::SeqCst),
        before,
        "SIGPIPE raised"
    );
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn addresses_and_options() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    assert_ne!(addr.port(), 0);
    let peer = util::std_connect(addr);
    let s = accept_one(c, l);
    assert_eq!(s.local_addr().unwrap(), addr);
    assert_eq!(s.peer_addr().unwrap(), peer.local_addr().unwrap());
    s.set_nodelay(true).unwrap();
    s.set_send_buffer_size(8192).unwrap();
    s.set_recv_buffer_size(8192).unwrap();
    assert!(s.as_raw_fd() >= 0);
    s.shutdown(pinion::Shutdown::Both).unwrap();
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn closed_handles_answer_bad_descriptor() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let _peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let copy = s;
    s.close().unwrap();
    assert_eq!(copy.as_raw_fd(), -1);
    assert_eq!(copy.close().err(), Some(Error::BadDescriptor));
    assert_eq!(copy.cancel().err(), Some(Error::BadDescriptor));
    assert_eq!(copy.local_addr().err(), Some(Error::BadDescriptor));
    let r = copy
        .async_read_some(FixedBuf::new(8).tagged(3), |_, _| panic!("must not run"))
        .expect_err("read on a closed handle");
    assert_eq!(r.error, Error::BadDescriptor);
    assert_eq!(r.handler.0.tag, 3, "the buffer comes back");
    let r = copy
        .async_write_some(FixedBuf::from_bytes(b"x"), |_, _| panic!("must not run"))
        .expect_err("write on a closed handle");
    assert_eq!(r.error, Error::BadDescriptor);
    l.close().unwrap();
    let r = l
        .async_accept(|_| panic!("must not run"))
        .expect_err("accept");
    assert_eq!(r.error, Error::BadDescriptor);
    assert_eq!(c.ops_in_use().0, 0);
}

/// The descriptor index in a handle's `Debug` output (`...Key(index#gen)...`).
fn desc_index(dbg: &str) -> u32 {
    let rest = &dbg[dbg.find("Key(").expect("a key") + 4..];
    rest[..rest.find('#').expect("a generation")]
        .parse()
        .unwrap()
}

/// A copy of a closed handle whose descriptor slot the next connection
/// took (same index, later generation) is refused, and only the
/// successor's own handle reaches the successor. On 32-bit targets this is
/// the generation surviving every place a key travels (a dropped one made
/// the stale copy name the new socket).
#[test]
fn a_stale_handle_to_a_reused_slot_is_refused() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let _p1 = util::std_connect(addr);
    let old = accept_one(c, l);
    let old_dbg = format!("{old:?}");
    old.close().unwrap();
    let mut p2 = util::std_connect(addr);
    let new = accept_one(c, l);
    let new_dbg = format!("{new:?}");
    assert_eq!(
        desc_index(&old_dbg),
        desc_index(&new_dbg),
        "the freed slot is reused: {old_dbg}, then {new_dbg}"
    );
    assert_ne!(old_dbg, new_dbg, "the generation moved on");
    assert_eq!(old.local_addr().err(), Some(Error::BadDescriptor));
    assert_eq!(old.cancel().err(), Some(Error::BadDescriptor));
    let r = old
        .async_write_some(FixedBuf::from_bytes(b"stale"), |_, _| {
            panic!("must not run")
        })
        .expect_err("write on a stale handle");
    assert_eq!(r.error, Error::BadDescriptor);
    let r = old
        .async_read_some(FixedBuf::new(8), |_, _| panic!("must not run"))
        .expect_err("read on a stale handle");
    assert_eq!(r.error, Error::BadDescriptor);
    assert_eq!(old.close().err(), Some(Error::BadDescriptor));
    // The successor is untouched and works through its own handle.
    assert_eq!(new.peer_addr().unwrap(), p2.local_addr().unwrap());
    let wrote = slot();
    let w = wrote.clone();
    async_write(&new, FixedBuf::from_bytes(b"fresh"), move |r, _| {
        *w.lock().unwrap() = Some(r)
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "write on the successor", || {
        wrote.lock().unwrap().is_some()
    });
    assert_eq!(wrote.lock().unwrap().take(), Some(Ok(5)));
    let mut got = [0u8; 5];
    p2.read_exact(&mut got).unwrap();
    assert_eq!(
        &got, b"fresh",
        "only the successor's own bytes reach its peer"
    );
    new.close().unwrap();
    l.close().unwrap();
    assert_eq!(c.ops_in_use().0, 0);
}

#[test]
fn many_small_writes_from_a_std_peer_arrive_in_order() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let data = pattern_vec(3, 7 * 1000);
    let peer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut s = util::std_connect(addr);
            s.set_nodelay(true).unwrap();
            for chunk in data.chunks(7) {
                s.write_all(chunk).unwrap();
            }
            s
        })
    };
    let s = accept_one(c, l);
    let got = slot();
    let g = got.clone();
    let n = data.len();
    async_read(
        &s,
        FixedBuf::new(n + 100),
        Completion::Exactly(n),
        move |r, buf| {
            *g.lock().unwrap() = Some((r, buf.bytes().to_vec()));
            s.close().unwrap();
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "exact read", || got.lock().unwrap().is_some());
    let (r, bytes) = got.lock().unwrap().take().unwrap();
    assert_eq!(r, Ok(n));
    assert!(bytes == data);
    drop(peer.join().unwrap());
    l.close().unwrap();
}

#[test]
fn echo_on_four_threads_with_connections_closing_concurrently() {
    echo_on_four_threads(4);
}

/// A context built for one thread (epoll then does its I/O in the task)
/// must stay correct when several threads run it anyway, as in Asio.
#[test]
fn echo_on_four_threads_of_a_one_thread_context() {
    echo_on_four_threads(1);
}

fn echo_on_four_threads(hint: usize) {
    const N: usize = 300;
    let ctx = ctx_or_skip!(b::Builder::new()
        .ops(4096)
        .descriptors(2 * N + 16)
        .timers(16)
        .concurrency_hint(hint));
    let c = ctx.get();
    let (l, addr) = listen(c);
    let closed = Arc::new(AtomicUsize::new(0));
    serve_echo(l, N, 512, closed.clone());
    let outs: Vec<Slot<Vec<u8>>> = (0..N).map(|_| slot()).collect();
    for (i, out) in outs.iter().enumerate() {
        echo_client(c, addr, pattern_vec(i as u32, 3000), out.clone());
    }
    let guard = c.work_guard();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| c.run());
        }
        for _ in 0..20_000 {
            if closed.load(Ordering::SeqCst) == N {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        c.stop();
    });
    drop(guard);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        N,
        "watchdog: not every connection closed"
    );
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(
            out.lock().unwrap().as_deref(),
            Some(&pattern_vec(i as u32, 3000)[..])
        );
    }
    l.close().unwrap();
}

#[test]
fn eight_mib_through_a_small_send_buffer_arrive_in_order() {
    const N: usize = 8 << 20;
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let peer = std::thread::spawn(move || {
        let mut s = util::std_connect(addr);
        let mut got = vec![0u8; N];
        let mut off = 0;
        while off < N {
            let end = (off + 3000).min(N); // small reads: the writer waits often
            let n = s.read(&mut got[off..end]).expect("peer read");
            assert!(n > 0, "early EOF after {off} bytes");
            off += n;
        }
        got
    });
    let s = accept_one(c, l);
    // Small next to 8 MiB, yet not so small that TCP crawls (below ~32
    // KiB every segment waits for a delayed ACK).
    s.set_send_buffer_size(64 * 1024).unwrap();
    let done = slot();
    let d = done.clone();
    async_write(&s, util::pattern_vec(5, N), move |r, _| {
        *d.lock().unwrap() = Some(r);
        s.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "8 MiB written", || done.lock().unwrap().is_some());
    assert_eq!(done.lock().unwrap().unwrap(), Ok(N));
    assert!(
        peer.join().unwrap() == util::pattern_vec(5, N),
        "bytes out of order"
    );
    l.close().unwrap();
}

/// Reads `s` into `got`, one 64-byte read after another, until `want`
/// bytes are in or the stream ends.
fn read_into(s: b::TcpStream<'static>, got: Arc<Mutex<Vec<u8>>>, want: usize) {
    s.async_read_some(FixedBuf::new(64), move |r, buf| {
        r.expect("read");
        let mut g = got.lock().unwrap();
        g.extend_from_slice(buf.bytes());
        let more = g.len() < want;
        drop(g);
        if more {
            read_into(s, got, want);
        }
    })
    .map_err(|r| r.error)
    .expect("start read");
}

/// A TCP urgent byte (`MSG_OOB`) ends a read at the urgent mark with the
/// data behind it still queued, and no new edge comes for that data: the
/// next read must still get it. (epoll takes a short read for "drained";
/// the kernel's `tcp_recvmsg` stops at the mark. The urgent byte itself
/// is out of band: without `SO_OOBINLINE` the reads skip it.)
#[test]
fn a_read_cut_short_at_the_urgent_mark_still_gets_the_rest() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    peer.set_nodelay(true).unwrap();
    let s = accept_one(c, l);
    l.close().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    // Started before any byte is sent, so every byte comes in one edge.
    read_into(s, got.clone(), 10);
    util::std_write_all(&mut peer, b"hello");
    // SAFETY: sends one byte from a live buffer.
    let n = unsafe { libc::send(peer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(n, 1, "send MSG_OOB");
    util::std_write_all(&mut peer, b"world");
    // Every byte acknowledged, so all of it waits in the server's socket
    // before the context next runs.
    let unacked = || {
        let mut q: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int.
        assert_eq!(
            unsafe { libc::ioctl(peer.as_raw_fd(), libc::TIOCOUTQ, &mut q) },
            0
        );
        q
    };
    let mut spins = 0;
    while unacked() != 0 {
        spins += 1;
        assert!(spins < 1_000_000, "loopback never acknowledged the bytes");
        std::thread::yield_now();
    }
    run_until(c, "every byte after the urgent mark", || {
        got.lock().unwrap().len() >= 10
    });
    assert_eq!(&got.lock().unwrap()[..], b"helloworld");
    s.close().unwrap();
}

//! Scatter/gather I/O on stream sockets: a gather write keeps the byte
//! order across buffers, the composed gather write finishes across
//! partial writes (three 256 KiB buffers behind a small send buffer), a
//! scatter read fills its buffers in order, end of stream and a list with
//! no room. TCP and Unix; std peers on other threads. The same through
//! the futures, in a task (the fast path) and in `block_on` (the
//! rendezvous), and a dropped one cancelled.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnix;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use pinion::aio::timeout;
use pinion::compose::async_write_vectored;
use pinion::{Error, Owned};

use super::{b, connected_pair, run_until, Ctx};
use crate::util::pattern_vec;

type Got<T> = Arc<Mutex<Option<T>>>;

fn got<T>() -> Got<T> {
    Arc::new(Mutex::new(None))
}

/// A pinion Unix stream and its std peer.
fn unix_pair(ctx: &'static b::IoContext) -> (b::UnixStream<'static>, StdUnix) {
    let (ours, theirs) = StdUnix::pair().unwrap();
    theirs
        .set_read_timeout(Some(crate::util::WATCHDOG))
        .unwrap();
    let s = b::UnixStream::from_fd(ctx, std::os::fd::OwnedFd::from(ours).into()).unwrap();
    (s, theirs)
}

#[test]
fn a_gather_write_keeps_the_order_of_its_buffers() {
    let ctx = ctx_or_skip!();
    let ctx = ctx.get();
    let (s, mut peer) = unix_pair(ctx);
    let out = got();
    let o = out.clone();
    let bufs: [&'static [u8]; 4] = [b"one ", b"", b"two ", b"three"];
    s.async_write_some_vectored(bufs, move |r, b| *o.lock().unwrap() = Some((r, b)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(ctx, "the write", || out.lock().unwrap().is_some());
    let (r, back) = out.lock().unwrap().take().unwrap();
    assert_eq!(r, Ok(13));
    assert_eq!(back, bufs, "the buffers come back");
    let mut seen = [0u8; 13];
    peer.read_exact(&mut seen).unwrap();
    assert_eq!(&seen, b"one two three");
}

#[test]
fn the_composed_gather_write_finishes_across_partial_writes() {
    let ctx = ctx_or_skip!();
    let ctx = ctx.get();
    let (client, server) = connected_pair(ctx);
    // A small send buffer: 768 KiB takes many partial writes.
    client.set_send_buffer_size(4096).unwrap();
    let parts = [
        pattern_vec(1, 256 * 1024),
        pattern_vec(2, 256 * 1024),
        pattern_vec(3, 256 * 1024),
    ];
    let want: Vec<u8> = parts.concat();
    let server_fd = server.as_raw_fd();
    // The peer: a std stream on a duplicate of the server side, read to
    // the end slowly (small reads) on another thread.
    // SAFETY: a valid, open descriptor; the duplicate is ours.
    let dup = unsafe { libc::dup(server_fd) };
    assert!(dup >= 0);
    // SAFETY: `dup` was just made, and nothing else owns it.
    let mut peer = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(dup) };
    server.close().unwrap();
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(crate::util::WATCHDOG)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = [0u8; 1000];
        loop {
            match peer.read(&mut chunk).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let done = got();
    let d = done.clone();
    async_write_vectored(&client, parts, move |r, _| {
        *d.lock().unwrap() = Some(r);
        client.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(ctx, "the gather write", || done.lock().unwrap().is_some());
    assert_eq!(*done.lock().unwrap(), Some(Ok(3 * 256 * 1024)));
    let all = reader.join().unwrap();
    assert_eq!(all.len(), want.len());
    assert!(all == want, "bytes out of order across buffers");
}

#[test]
fn a_scatter_read_fills_its_buffers_in_order() {
    let ctx = ctx_or_skip!();
    let ctx = ctx.get();
    let (s, mut peer) = unix_pair(ctx);
    peer.write_all(b"0123456789").unwrap();
    let out = got();
    let o = out.clone();
    let bufs = [
        Vec::with_capacity(3),
        Vec::with_capacity(4),
        Vec::with_capacity(16),
    ];
    s.async_read_some_vectored(bufs, move |r, b| *o.lock().unwrap() = Some((r, b)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(ctx, "the read", || out.lock().unwrap().is_some());
    let (r, [a, b, c]) = out.lock().unwrap().take().unwrap();
    assert_eq!(r, Ok(10));
    assert_eq!(
        (&a[..], &b[..], &c[..]),
        (&b"012"[..], &b"3456"[..], &b"789"[..])
    );

    // Bytes already in a buffer stay; the room after them is filled.
    peer.write_all(b"ab").unwrap();
    let mut first = Vec::with_capacity(4);
    first.extend_from_slice(b"xy");
    let out2 = got();
    let o = out2.clone();
    s.async_read_some_vectored([first, Vec::with_capacity(4)], move |r, b| {
        *o.lock().unwrap() = Some((r, b))
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(ctx, "the second read", || out2.lock().unwrap().is_some());
    let (r, [a, b]) = out2.lock().unwrap().take().unwrap();
    assert_eq!((r, &a[..], &b[..]), (Ok(2), &b"xyab"[..], &b""[..]));
}

#[test]
fn a_scatter_read_ends_at_eof_and_refuses_a_list_without_room() {
    let ctx = ctx_or_skip!();
    let ctx = ctx.get();
    let (s, peer) = unix_pair(ctx);
    let full: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let r = s.async_read_some_vectored(full, |_, _| unreachable!());
    assert_eq!(r.unwrap_err().error, Error::BufferFull);
    drop(peer);
    let out = got();
    let o = out.clone();
    s.async_read_some_vectored([Vec::with_capacity(8)], move |r, _| {
        *o.lock().unwrap() = Some(r)
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(ctx, "the read", || out.lock().unwrap().is_some());
    assert_eq!(*out.lock().unwrap(), Some(Err(Error::Eof)));
    s.close().unwrap();
}

#[test]
fn a_gather_write_to_a_closed_peer_is_a_broken_pipe() {
    let ctx = ctx_or_skip!();
    let ctx = ctx.get();
    let (client, server) = connected_pair(ctx);
    server.close().unwrap();
    let out = got();
    // Keep writing until the reset arrives (the first write may still be
    // taken by the kernel).
    fn write(s: b::TcpStream<'static>, out: Got<Error>) {
        let bufs: [&'static [u8]; 2] = [b"ping", b"pong"];
        s.async_write_some_vectored(bufs, move |r, _| match r {
            Ok(_) => write(s, out),
            Err(e) => *out.lock().unwrap() = Some(e),
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    write(client, out.clone());
    run_until(ctx, "the failing write", || out.lock().unwrap().is_some());
    let e = out.lock().unwrap().unwrap();
    assert!(
        matches!(e, Error::BrokenPipe | Error::ConnectionReset),
        "{e}"
    );
    client.close().unwrap();
}

/// 768 KiB in three buffers, written by `write_all_vectored` in a task
/// behind a 4 KiB send buffer (many partial gather writes), read by
/// `read_vectored` in `block_on` into two buffers at a time.
#[test]
fn write_all_vectored_in_a_task_and_read_vectored_in_block_on() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (x, y) = b::UnixStream::pair(c).unwrap();
    let (x, y) = (Owned::new(x), Owned::new(y));
    x.set_send_buffer_size(4096).unwrap();
    let parts = [
        pattern_vec(4, 256 * 1024),
        pattern_vec(5, 256 * 1024),
        pattern_vec(6, 256 * 1024),
    ];
    let want: Vec<u8> = parts.concat();
    let writer = c
        .spawn(async move {
            let (r, back) = x.write_all_vectored(parts).await;
            (r, back.iter().map(Vec::len).sum::<usize>())
        })
        .map_err(|r| r.error)
        .unwrap();
    let got = c
        .block_on(async move {
            let mut all = Vec::new();
            while all.len() < 3 * 256 * 1024 {
                let bufs = [Vec::with_capacity(1000), Vec::with_capacity(3000)];
                let (r, [a, b]) = y.read_vectored(bufs).await;
                let n = r.expect("read_vectored");
                assert_eq!(n, a.len() + b.len());
                assert!(
                    b.is_empty() || a.len() == 1000,
                    "the first buffer fills first"
                );
                all.extend_from_slice(&a);
                all.extend_from_slice(&b);
            }
            (all, writer.await)
        })
        .unwrap();
    let (all, w) = got;
    assert_eq!(
        w.expect("task"),
        (Ok(()), 3 * 256 * 1024),
        "the buffers come back whole"
    );
    assert!(all == want, "bytes out of order across buffers");
    assert_eq!(c.descriptors_in_use(), 0);
}

/// A gather write and a scatter read in one task, then end of stream and
/// a list with no room.
#[test]
fn vectored_futures_end_of_stream_and_a_list_without_room() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (x, y) = b::UnixStream::pair(c).unwrap();
    let h = c
        .spawn(async move {
            // Owned buffers: `&'static` ones trip rust#102211 in a task.
            let out = [b"one ".to_vec(), b"two ".to_vec(), b"three".to_vec()];
            let (r, _) = x.write_vectored(out).await;
            assert_eq!(r, Ok(13));
            let bufs = [
                Vec::with_capacity(3),
                Vec::with_capacity(4),
                Vec::with_capacity(16),
            ];
            let (r, [a, b, cc]) = y.read_vectored(bufs).await;
            assert_eq!(r, Ok(13));
            assert_eq!(
                (&a[..], &b[..], &cc[..]),
                (&b"one"[..], &b" two"[..], &b" three"[..])
            );
            let (r, _) = y.read_vectored([Vec::<u8>::new()]).await;
            assert_eq!(r, Err(Error::BufferFull));
            x.close().unwrap();
            let (r, _) = y.read_vectored([Vec::with_capacity(8)]).await;
            assert_eq!(r, Err(Error::Eof));
            y.close().unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    c.block_on(h).unwrap().expect("task");
}

/// A scatter read dropped while it waits is cancelled: the bytes sent
/// afterwards go to the next read, and its slot comes back.
#[test]
fn a_dropped_vectored_read_is_cancelled() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (x, y) = b::UnixStream::pair(c).unwrap();
    let before = c.ops_in_use().0;
    c.block_on(async move {
        let r = timeout(
            c,
            Duration::from_millis(20),
            y.read_vectored([Vec::with_capacity(8)]),
        )
        .await;
        let got = format!("{:?}", r.as_ref().map(|(res, _)| res));
        assert_eq!(r.err(), Some(Error::TimedOut), "{got}");
    })
    .unwrap();
    run_until(c, "the cancelled read's slot is back", || {
        c.ops_in_use().0 == before
    });
    assert_eq!(x.try_write(b"after"), Ok(5));
    let h = c
        .spawn(async move {
            let (r, [a, b]) = y
                .read_vectored([Vec::with_capacity(2), Vec::with_capacity(8)])
                .await;
            assert_eq!(r, Ok(5));
            (a, b)
        })
        .map_err(|r| r.error)
        .unwrap();
    let (a, bb) = c.block_on(h).unwrap().expect("task");
    assert_eq!(
        (&a[..], &bb[..]),
        (&b"af"[..], &b"ter"[..]),
        "the dropped read took nothing"
    );
    x.close().unwrap();
    y.close().unwrap();
}

/// Connected datagram futures: `send` and `recv` over a Unix datagram
/// pair, a datagram of 0 bytes is `Ok(0)`, and over UDP.
#[test]
fn datagram_send_and_recv_futures() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (x, y) = b::UnixDatagram::pair(c).unwrap();
    let any = crate::util::any_port();
    let (u, v) = (
        b::UdpSocket::bind(c, any).unwrap(),
        b::UdpSocket::bind(c, any).unwrap(),
    );
    u.connect(&v.local_addr().unwrap()).unwrap();
    v.connect(&u.local_addr().unwrap()).unwrap();
    // The callback form sends an empty datagram too (io_uring's plain
    // write of nothing completed `Ok(0)` without sending one).
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    x.async_send(Vec::new(), |r, _| assert_eq!(r, Ok(0)))
        .map_err(|r| r.error)
        .unwrap();
    y.async_receive_from(Vec::with_capacity(8), move |r, _| {
        *g.lock().unwrap() = Some(r.map(|(n, _)| n))
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the empty datagram", || got.lock().unwrap().is_some());
    assert_eq!(*got.lock().unwrap(), Some(Ok(0)));
    let h = c
        .spawn(async move {
            let (r, _) = x.send(b"ping".to_vec()).await;
            assert_eq!(r, Ok(4));
            let (r, buf) = y.recv(Vec::with_capacity(16)).await;
            assert_eq!((r, &buf[..]), (Ok(4), &b"ping"[..]));
            let (r, _) = y.send(Vec::new()).await;
            assert_eq!(r, Ok(0));
            let (r, buf) = x.recv(Vec::with_capacity(16)).await;
            assert_eq!(
                (r, buf.len()),
                (Ok(0), 0),
                "an empty datagram is not an end"
            );
            let (r, _) = u.send(b"pong".to_vec()).await;
            assert_eq!(r, Ok(4));
            let (r, buf) = v.recv(Vec::with_capacity(16)).await;
            assert_eq!((r, &buf[..]), (Ok(4), &b"pong"[..]));
            for s in [x, y] {
                s.close().unwrap();
            }
            u.close().unwrap();
            v.close().unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    c.block_on(h).unwrap().expect("task");
    assert_eq!(c.descriptors_in_use(), 0);
}

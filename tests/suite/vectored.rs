//! Scatter/gather I/O on stream sockets: a gather write keeps the byte
//! order across buffers, the composed gather write finishes across
//! partial writes (three 256 KiB buffers behind a small send buffer), a
//! scatter read fills its buffers in order, end of stream and a list with
//! no room. TCP and Unix; std peers on other threads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnix;
use std::sync::{Arc, Mutex};

use pinion::compose::async_write_vectored;
use pinion::Error;

use super::{b, connected_pair, run_until};
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

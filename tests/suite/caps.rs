//! One set of semantics under pressure: every `Builder` size is an exact
//! cap, a full pool's error names it, a full descriptor table leaves new
//! connections in the listen backlog, and errors say what to change, the
//! same on every backend.

use std::sync::{Arc, Mutex};

use pinion::{BuildError, Error, Pool};

use super::{b, run_until};
use crate::util::{self, FixedBuf};

type Slot<T> = Arc<Mutex<Option<T>>>;

fn slot<T>() -> Slot<T> {
    Arc::new(Mutex::new(None))
}

#[test]
fn ops_is_an_exact_cap() {
    for n in [0usize, 1, 7] {
        let ctx = ctx_or_skip!(b::Builder::new().ops(n));
        let c = ctx.get();
        for i in 0..n {
            c.post(move || {
                let _ = i;
            })
            .unwrap_or_else(|r| panic!("post {i} of {n}: {}", r.error));
        }
        let r = c.post(|| ()).expect_err("one past the cap");
        assert_eq!(r.error, Error::PoolFull(Pool::Ops));
        assert_eq!(c.ops_in_use(), (n, n));
        assert_eq!(c.run(), n);
        assert_eq!(c.ops_in_use(), (0, n));
    }
}

#[test]
fn descriptors_is_an_exact_cap_and_names_its_pool() {
    for n in [0usize, 1, 3] {
        let ctx = ctx_or_skip!(b::Builder::new().descriptors(n));
        let c = ctx.get();
        let socks: Vec<_> = (0..n)
            .map(|i| {
                b::UdpSocket::bind(c, util::any_port())
                    .unwrap_or_else(|e| panic!("socket {i} of {n}: {e}"))
            })
            .collect();
        let e = b::UdpSocket::bind(c, util::any_port()).expect_err("one past the cap");
        assert_eq!(e, Error::PoolFull(Pool::Descriptors));
        assert!(e.to_string().contains("Builder::descriptors"), "{e}");
        let e = b::TcpListener::bind(c, util::any_port()).expect_err("listeners share the cap");
        assert_eq!(e, Error::PoolFull(Pool::Descriptors));
        assert_eq!(c.descriptors_in_use(), n);
        for s in socks {
            s.close().unwrap();
        }
        assert_eq!(c.descriptors_in_use(), 0);
    }
}

#[test]
fn timers_is_an_exact_cap_apart_from_descriptors() {
    for n in [0usize, 2] {
        let ctx = ctx_or_skip!(b::Builder::new().timers(n).descriptors(1));
        let c = ctx.get();
        let timers: Vec<_> = (0..n)
            .map(|_| b::SteadyTimer::new(c).expect("a timer"))
            .collect();
        let e = b::SteadyTimer::new(c).expect_err("one past the cap");
        assert_eq!(e, Error::PoolFull(Pool::Timers));
        assert!(e.to_string().contains("Builder::timers"), "{e}");
        // Timers take no descriptor slot: the one socket still opens.
        let s = b::UdpSocket::bind(c, util::any_port()).expect("timers do not use descriptors");
        s.close().unwrap();
        assert_eq!(c.timers_in_use(), n);
        for t in timers {
            t.close().unwrap();
        }
        assert_eq!(c.timers_in_use(), 0);
    }
}

#[test]
fn a_zero_concurrency_hint_is_a_build_error_that_names_the_knob() {
    let e = b::Builder::new()
        .concurrency_hint(0)
        .build()
        .expect_err("hint 0");
    assert!(
        matches!(
            e,
            BuildError::Invalid {
                knob: "concurrency_hint",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("concurrency_hint"), "{e}");
}

#[test]
fn read_buffers_too_small_is_a_build_error() {
    let e = b::Builder::new()
        .read_buffers(4, 8)
        .build()
        .expect_err("8-byte buffers");
    assert!(
        matches!(
            e,
            BuildError::Invalid {
                knob: "read_buffers",
                ..
            }
        ),
        "{e:?}"
    );
}

/// With the table full, an accept completes with `PoolFull(Descriptors)`
/// and the connection waits in the listen backlog; once a slot frees, the
/// next accept takes that same connection (it was never accepted and
/// closed).
#[test]
fn a_full_descriptor_table_leaves_connections_in_the_backlog() {
    let ctx = ctx_or_skip!(b::Builder::new().descriptors(2));
    let c = ctx.get();
    let l = b::TcpListener::bind(c, util::any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let filler = b::UdpSocket::bind(c, util::any_port()).unwrap();
    let mut client = util::std_connect(addr);
    let got: Slot<Result<(), Error>> = slot();
    let g = got.clone();
    l.async_accept(move |r| *g.lock().unwrap() = Some(r.map(|_| ())))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "the refused accept", || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().take(),
        Some(Err(Error::PoolFull(Pool::Descriptors)))
    );
    // Still connected: the client can write, and nothing closed it.
    use std::io::Write;
    client.write_all(b"still here").unwrap();
    filler.close().unwrap();
    let stream: Slot<b::TcpStream<'static>> = slot();
    let s2 = stream.clone();
    l.async_accept(move |r| *s2.lock().unwrap() = Some(r.expect("accept after a slot freed").0))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "the accept after a slot freed", || {
        stream.lock().unwrap().is_some()
    });
    let s = stream.lock().unwrap().take().unwrap();
    let bytes: Slot<Vec<u8>> = slot();
    let b2 = bytes.clone();
    // All ten bytes, however many reads they take (seed 454214032 cut
    // the first one short).
    pinion::compose::async_read(
        &s,
        FixedBuf::new(10),
        pinion::compose::Completion::TransferAll,
        move |r, buf| {
            r.expect("the backlog connection's bytes");
            *b2.lock().unwrap() = Some(buf.bytes().to_vec());
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the bytes sent while waiting", || {
        bytes.lock().unwrap().is_some()
    });
    assert_eq!(bytes.lock().unwrap().take().unwrap(), b"still here");
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn a_read_with_no_room_is_refused_not_end_of_stream() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (client, server) = super::connected_pair(c);
    let full = FixedBuf::from_bytes(b"full");
    let r = server
        .async_read_some(full, |_, _| panic!("must not run"))
        .expect_err("no room");
    assert_eq!(r.error, Error::BufferFull);
    assert_eq!(
        r.handler.0.bytes(),
        b"full",
        "the buffer comes back as it was"
    );
    let empty_vec: Vec<u8> = Vec::new();
    let r = server
        .async_read_some(empty_vec, |_, _| panic!("must not run"))
        .expect_err("a Vec without capacity has no room");
    assert_eq!(r.error, Error::BufferFull);
    assert!(
        r.error.to_string().contains("spare capacity"),
        "{}",
        r.error
    );
    client.close().unwrap();
    server.close().unwrap();
}

#[test]
fn a_pooled_read_without_read_buffers_names_the_missing_pool() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (client, server) = super::connected_pair(c);
    let r = server
        .async_read_pooled(|_| panic!("must not run"))
        .expect_err("no read buffers");
    assert_eq!(r.error, Error::NoPool(Pool::ReadBuffers));
    assert!(
        r.error.to_string().contains("Builder::read_buffers"),
        "{}",
        r.error
    );
    client.close().unwrap();
    server.close().unwrap();
}

#[test]
fn os_errors_print_their_errno_name_and_text() {
    let e = Error::from_errno(pinion::Errno::NOTSOCK);
    assert_eq!(e.to_string(), "ENOTSOCK: socket operation on non-socket");
    // A refused connect says so by name.
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let addr = {
        let l = std::net::TcpListener::bind(util::any_port()).unwrap();
        l.local_addr().unwrap()
    };
    let got: Slot<Error> = slot();
    let g = got.clone();
    b::TcpStream::async_connect(c, addr, move |r| {
        *g.lock().unwrap() = Some(r.expect_err("refused"))
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the refused connect", || got.lock().unwrap().is_some());
    let e = got.lock().unwrap().take().unwrap();
    assert_eq!(e, Error::ConnectionRefused);
    assert!(e.to_string().contains("ECONNREFUSED"), "{e}");
    assert_eq!(
        c.descriptors_in_use(),
        0,
        "the failed connect's socket is closed"
    );
}

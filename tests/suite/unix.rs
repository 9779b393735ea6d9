//! Unix-domain sockets: the TCP conformance behaviours (echo, half-close,
//! reset, broken pipe, a slow reader behind a small send buffer) over a
//! filesystem path and an abstract name, datagrams, `socketpair`, peer
//! credentials, a full descriptor table, and bad paths. The peers are
//! std's `UnixStream`/`UnixDatagram` on other threads.

use std::io::{Read, Write};
use std::net::Shutdown as StdShutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as StdUnixAddr, UnixStream as StdUnix};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pinion::compose::{async_read, async_write, Completion};
use pinion::net::UnixAddr;
use pinion::{Error, IoBufMut, Pool};

use super::{b, run_until, Ctx};
use crate::util::{self, pattern_vec, FixedBuf};

type Slot<T> = Arc<Mutex<Option<T>>>;

fn slot<T>() -> Slot<T> {
    Arc::new(Mutex::new(None))
}

/// A socket path of its own for each test (removed on drop).
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("pinion-{}-{tag}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }

    fn addr(&self) -> UnixAddr {
        UnixAddr::path(self.0.as_os_str().as_encoded_bytes()).unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A unique abstract name for this process and `tag`.
fn abstract_name(tag: &str) -> Vec<u8> {
    format!("pinion-test-{}-{tag}", std::process::id()).into_bytes()
}

fn accept_one(
    ctx: &'static b::IoContext, l: b::UnixListener<'static>,
) -> (b::UnixStream<'static>, UnixAddr) {
    let got = slot();
    let g = got.clone();
    l.async_accept(move |r| *g.lock().unwrap() = Some(r.expect("accept")))
        .map_err(|r| r.error)
        .unwrap();
    run_until(ctx, "accept", || got.lock().unwrap().is_some());
    let r = got.lock().unwrap().take().unwrap();
    r
}

/// A listener on a fresh path, a std client connected to it, and the
/// accepted pinion side.
fn connected(ctx: &'static b::IoContext, tag: &str) -> (TempPath, StdUnix, b::UnixStream<'static>) {
    let path = TempPath::new(tag);
    let l = b::UnixListener::bind(ctx, &path.addr()).unwrap();
    let peer = StdUnix::connect(&path.0).unwrap();
    let (s, from) = accept_one(ctx, l);
    assert!(from.is_unnamed(), "{from:?}");
    l.close().unwrap();
    (path, peer, s)
}

/// Echoes on `s` until the peer closes, then closes `s` and bumps
/// `closed`.
fn echo(s: b::UnixStream<'static>, buf: FixedBuf, closed: Arc<AtomicUsize>) {
    s.async_read_some(buf, move |r, buf| match r {
        Ok(_) => async_write(&s, buf, move |r, mut buf| {
            assert!(r.is_ok(), "echo write: {r:?}");
            buf.clear();
            echo(s, buf, closed)
        })
        .map_err(|r| r.error)
        .unwrap(),
        Err(_) => {
            s.close().unwrap();
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .map_err(|r| r.error)
    .unwrap();
}

#[test]
fn echo_over_a_path_with_a_half_closing_client() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let path = TempPath::new("echo");
    let l = b::UnixListener::bind(c, &path.addr()).unwrap();
    assert_eq!(l.local_addr(), Ok(path.addr()));
    let closed = Arc::new(AtomicUsize::new(0));
    let cl = closed.clone();
    l.async_accept(move |r| echo(r.unwrap().0, FixedBuf::new(4096), cl))
        .map_err(|r| r.error)
        .unwrap();
    let data = pattern_vec(11, 300_000);
    let peer = {
        let (data, p) = (data.clone(), path.0.clone());
        std::thread::spawn(move || {
            let mut s = StdUnix::connect(p).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                w.write_all(&data).unwrap();
                w.shutdown(StdShutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            writer.join().unwrap();
            back
        })
    };
    run_until(c, "the server closes", || {
        closed.load(Ordering::SeqCst) == 1
    });
    assert!(
        peer.join().unwrap() == data,
        "every byte came back in order"
    );
    l.close().unwrap();
}

#[test]
fn half_close_is_eof_and_the_other_half_still_works() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (_path, mut peer, s) = connected(c, "half");
    peer.write_all(b"abc").unwrap();
    peer.shutdown(StdShutdown::Write).unwrap();
    let got = slot();
    let g = got.clone();
    async_read(
        &s,
        FixedBuf::new(64),
        Completion::TransferAll,
        move |r, buf| {
            *g.lock().unwrap() = Some((r, buf.bytes().to_vec()));
            async_write(&s, &b"xyz"[..], move |r, _| {
                assert_eq!(r, Ok(3));
                s.close().unwrap();
            })
            .map_err(|r| r.error)
            .unwrap();
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "read to end, write, close", || {
        got.lock().unwrap().is_some() && c.outstanding_work() == 0
    });
    assert_eq!(
        got.lock().unwrap().take(),
        Some((Err(Error::Eof), b"abc".to_vec()))
    );
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"xyz");
}

#[test]
fn a_peer_closing_with_unread_data_resets_the_connection() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (_path, peer, s) = connected(c, "reset");
    // Bytes the peer never reads: closing with them queued is a reset.
    let wrote = slot();
    let w = wrote.clone();
    async_write(&s, &b"unread"[..], move |r, _| *w.lock().unwrap() = Some(r))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "write", || wrote.lock().unwrap().is_some());
    let got = slot();
    let g = got.clone();
    s.async_read_some(FixedBuf::new(64).tagged(4), move |r, buf| {
        *g.lock().unwrap() = Some((r, buf.tag));
        s.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    drop(peer);
    run_until(c, "the read fails", || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().take(),
        Some((Err(Error::ConnectionReset), 4))
    );
}

#[test]
fn write_after_peer_close_is_broken_pipe_without_sigpipe() {
    util::count_sigpipes();
    let before = util::SIGPIPES.load(Ordering::SeqCst);
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (_path, peer, s) = connected(c, "pipe");
    drop(peer);
    let got = slot();
    let g = got.clone();
    s.async_write_some(&b"late"[..], move |r, _| {
        *g.lock().unwrap() = Some(r);
        s.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the write fails", || got.lock().unwrap().is_some());
    assert_eq!(got.lock().unwrap().take(), Some(Err(Error::BrokenPipe)));
    assert_eq!(
        util::SIGPIPES.load(Ordering::SeqCst),
        before,
        "SIGPIPE raised"
    );
}

#[test]
fn eight_mib_through_a_small_send_buffer_to_a_slow_reader() {
    const N: usize = 8 << 20;
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (_path, mut peer, s) = connected(c, "8mib");
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; N];
        let mut off = 0;
        while off < N {
            let end = (off + 3000).min(N); // small reads: the writer waits often
            let n = peer.read(&mut got[off..end]).expect("peer read");
            assert!(n > 0, "early EOF after {off} bytes");
            off += n;
        }
        got
    });
    s.set_send_buffer_size(16 * 1024).unwrap();
    let done = slot();
    let d = done.clone();
    async_write(&s, pattern_vec(6, N), move |r, _| {
        *d.lock().unwrap() = Some(r);
        s.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "8 MiB written", || done.lock().unwrap().is_some());
    assert_eq!(done.lock().unwrap().take(), Some(Ok(N)));
    assert!(
        reader.join().unwrap() == pattern_vec(6, N),
        "bytes out of order"
    );
}

#[test]
fn abstract_names_connect_both_ways_with_peer_credentials() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let name = abstract_name("abstract");
    let at = UnixAddr::abstract_name(&name).unwrap();
    let l = b::UnixListener::bind(c, &at).unwrap();
    assert_eq!(l.local_addr(), Ok(at));
    // A std client finds it by the same name.
    let std_at = StdUnixAddr::from_abstract_name(&name).unwrap();
    let mut peer = StdUnix::connect_addr(&std_at).unwrap();
    let (s, _) = accept_one(c, l);
    let me = s.peer_cred().unwrap();
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(
        (me.pid, me.uid, me.gid),
        (std::process::id() as i32, uid, gid)
    );
    // And a pinion client, through the callback connect.
    let client = slot();
    let cl = client.clone();
    b::UnixStream::async_connect(c, &at, move |r| *cl.lock().unwrap() = Some(r))
        .map_err(|r| r.error)
        .unwrap();
    // The connect's result first: a failed one (an injected ENOBUFS on
    // its socket, seed 454214109) leaves nothing to accept.
    run_until(c, "connect", || client.lock().unwrap().is_some());
    let client = client.lock().unwrap().take().unwrap().unwrap();
    let (s2, _) = accept_one(c, l);
    assert_eq!(client.peer_addr(), Ok(at));
    let got = slot();
    let g = got.clone();
    async_write(&client, &b"ping"[..], |r, _| assert_eq!(r, Ok(4)))
        .map_err(|r| r.error)
        .unwrap();
    async_read(
        &s2,
        FixedBuf::new(4),
        Completion::TransferAll,
        move |r, buf| *g.lock().unwrap() = Some((r, buf.bytes().to_vec())),
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "ping", || got.lock().unwrap().is_some());
    assert_eq!(got.lock().unwrap().take(), Some((Ok(4), b"ping".to_vec())));
    peer.write_all(b"x").unwrap();
    for h in [s, s2, client] {
        h.close().unwrap();
    }
    l.close().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
}

// On io_uring a Unix datagram operation keeps the 110-byte address, the
// `msghdr` and the `iovec` in its slot: buffer and handler get 40 bytes
// (a `Vec` and a handle, or a future's rendezvous). The handlers here
// capture one `Arc` each.
#[test]
fn datagrams_round_trip_between_paths_and_over_a_pair() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (pa, pb) = (TempPath::new("dga"), TempPath::new("dgb"));
    let a = b::UnixDatagram::bind(c, &pa.addr()).unwrap();
    let bs = b::UnixDatagram::bind(c, &pb.addr()).unwrap();
    let got = slot();
    let g = got.clone();
    bs.async_receive_from(Vec::with_capacity(64), move |r, buf| {
        *g.lock().unwrap() = Some((r, buf))
    })
    .map_err(|r| r.error)
    .unwrap();
    a.async_send_to(&b"ping"[..], pb.addr(), |r, _| assert_eq!(r, Ok(4)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "ping", || got.lock().unwrap().is_some());
    let (r, buf) = got.lock().unwrap().take().unwrap();
    assert_eq!((r, &buf[..]), (Ok((4, pa.addr())), &b"ping"[..]));
    // The futures, replying to the sender by its address.
    let (pa2, pb2) = (pa.addr(), pb.addr());
    let (reply, from) = c
        .block_on(async move {
            let (r, _) = bs.send_to(&b"pong"[..], pa2).await;
            assert_eq!(r, Ok(4));
            let (r, buf) = a.recv_from(Vec::with_capacity(64)).await;
            (buf, r.unwrap().1)
        })
        .unwrap();
    assert_eq!((&reply[..], from), (&b"pong"[..], pb2));
    // A send to a path nobody bound fails with the kernel's reason.
    let gone = TempPath::new("nobody");
    let err = slot();
    let e = err.clone();
    a.async_send_to(&b"lost"[..], gone.addr(), move |r, _| {
        *e.lock().unwrap() = Some(r)
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "send fails", || err.lock().unwrap().is_some());
    assert_eq!(
        err.lock().unwrap().take(),
        Some(Err(Error::Os(pinion::Errno::NOENT)))
    );
    a.close().unwrap();
    bs.close().unwrap();

    // A pair: connected, unnamed, the same process at both ends.
    let (x, y) = b::UnixDatagram::pair(c).unwrap();
    assert_eq!(x.peer_cred().unwrap().pid, std::process::id() as i32);
    let got = slot();
    let g = got.clone();
    y.async_receive_from(Vec::with_capacity(64), move |r, buf| {
        *g.lock().unwrap() = Some((r, buf))
    })
    .map_err(|r| r.error)
    .unwrap();
    x.async_send(&b"one datagram"[..], |r, _| assert_eq!(r, Ok(12)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "pair datagram", || got.lock().unwrap().is_some());
    let (r, buf) = got.lock().unwrap().take().unwrap();
    assert_eq!(
        (r, &buf[..]),
        (Ok((12, UnixAddr::unnamed())), &b"one datagram"[..])
    );
    x.close().unwrap();
    y.close().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn a_stream_pair_with_futures() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (x, y) = b::UnixStream::pair(c).unwrap();
    let out = c
        .block_on(async move {
            let (r, _) = x.write_all(pattern_vec(2, 100_000)).await;
            r.unwrap();
            x.shutdown(pinion::Shutdown::Write).unwrap();
            let (r, buf) = y.read_exact(FixedBuf::new(100_000)).await;
            r.unwrap();
            let (r, _) = y.read(FixedBuf::new(8)).await;
            x.close().unwrap();
            y.close().unwrap();
            (buf.bytes().to_vec(), r)
        })
        .unwrap();
    assert!(out.0 == pattern_vec(2, 100_000));
    assert_eq!(out.1, Err(Error::Eof));
}

#[test]
fn a_full_descriptor_table_and_bad_addresses_are_clear_errors() {
    let ctx = ctx_or_skip!(Ctx::builder().descriptors(2));
    let c = ctx.get();
    let (x, y) = b::UnixStream::pair(c).unwrap();
    let path = TempPath::new("full");
    let e = b::UnixListener::bind(c, &path.addr()).map(drop);
    assert_eq!(e, Err(Error::PoolFull(Pool::Descriptors)));
    assert!(!path.0.exists(), "a failed bind leaves its socket file");
    assert_eq!(
        b::UnixStream::pair(c).map(drop),
        Err(Error::PoolFull(Pool::Descriptors))
    );
    assert_eq!(
        b::UnixDatagram::unbound(c).map(drop),
        Err(Error::PoolFull(Pool::Descriptors))
    );
    x.close().unwrap();
    // One slot free: a pair needs two and takes none.
    assert_eq!(
        b::UnixDatagram::pair(c).map(drop),
        Err(Error::PoolFull(Pool::Descriptors))
    );
    assert_eq!(c.descriptors_in_use(), 1);
    y.close().unwrap();

    // Bad addresses name the value.
    let long = vec![b'a'; 200];
    let e = Error::from(UnixAddr::path(&long).unwrap_err());
    assert_eq!(e, Error::UnixNameTooLong(200));
    assert!(e.to_string().contains("200 bytes"), "{e}");
    let missing = UnixAddr::path(b"/nonexistent-pinion/none.sock").unwrap();
    let got = slot();
    let g = got.clone();
    b::UnixStream::async_connect(c, &missing, move |r| *g.lock().unwrap() = Some(r.map(drop)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "connect fails", || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().take(),
        Some(Err(Error::Os(pinion::Errno::NOENT)))
    );
    assert_eq!(
        b::UnixListener::bind(c, &missing).map(drop),
        Err(Error::Os(pinion::Errno::NOENT))
    );
    // A closed listener leaves its file: binding it again is `AddrInUse`
    // (remove stale files first), connecting is refused.
    b::UnixListener::bind(c, &path.addr())
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(
        b::UnixListener::bind(c, &path.addr()).map(drop),
        Err(Error::AddrInUse)
    );
    assert_eq!(
        b::UnixStream::connect(c, &path.addr()).map(drop),
        Err(Error::ConnectionRefused)
    );
    assert_eq!(c.descriptors_in_use(), 0);
}

// ---- inherited descriptors ---------------------------------------------------

#[test]
fn inherited_unix_sockets_work_and_the_wrong_kind_is_a_clear_error() {
    use pinion::SocketKind;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::{UnixDatagram as StdDgram, UnixListener as StdListener};
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    // A listening socket, as systemd would pass it: accepts.
    let path = TempPath::new("inherit");
    let std_l = StdListener::bind(&path.0).unwrap();
    let l = b::UnixListener::from_fd(c, OwnedFd::from(std_l).into()).unwrap();
    let mut client = StdUnix::connect(&path.0).unwrap();
    let (s, _) = accept_one(c, l);
    client.write_all(b"hi").unwrap();
    let got = slot();
    let g = got.clone();
    async_read(
        &s,
        FixedBuf::new(2),
        Completion::TransferAll,
        move |r, b| *g.lock().unwrap() = Some((r, b.bytes().to_vec())),
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the read", || got.lock().unwrap().is_some());
    assert_eq!(*got.lock().unwrap(), Some((Ok(2), b"hi".to_vec())));
    s.close().unwrap();
    l.close().unwrap();
    // A datagram socket: sends.
    let (a, bb) = StdDgram::pair().unwrap();
    let d = b::UnixDatagram::from_fd(c, OwnedFd::from(a).into()).unwrap();
    let sent = slot();
    let s2 = sent.clone();
    d.async_send(&b"ping"[..], move |r, _| *s2.lock().unwrap() = Some(r))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "the send", || sent.lock().unwrap().is_some());
    // The send's result first, and a bounded recv: a failed send (an
    // injected ENOMEM, seed 454214117) left the recv blocked for good.
    assert_eq!(sent.lock().unwrap().take(), Some(Ok(4)));
    bb.set_read_timeout(Some(util::WATCHDOG)).unwrap();
    let mut four = [0u8; 8];
    assert_eq!(bb.recv(&mut four).unwrap(), 4);
    d.close().unwrap();

    // The wrong kinds: each a clear NotA, its fd closed.
    let not = |k| Some(Error::NotA(k));
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        b::UnixListener::from_fd(c, OwnedFd::from(tcp).into()).err(),
        not(SocketKind::UnixListener)
    );
    let (x, _y) = StdUnix::pair().unwrap();
    assert_eq!(
        b::UnixListener::from_fd(c, OwnedFd::from(x).into()).err(),
        not(SocketKind::UnixListener)
    );
    let (x, _y) = StdDgram::pair().unwrap();
    assert_eq!(
        b::UnixStream::from_fd(c, OwnedFd::from(x).into()).err(),
        not(SocketKind::UnixStream)
    );
    let path = TempPath::new("inherit-listener");
    let listening = StdListener::bind(&path.0).unwrap();
    assert_eq!(
        b::UnixStream::from_fd(c, OwnedFd::from(listening).into()).err(),
        not(SocketKind::UnixStream)
    );
    let (x, _y) = StdUnix::pair().unwrap();
    assert_eq!(
        b::UnixDatagram::from_fd(c, OwnedFd::from(x).into()).err(),
        not(SocketKind::UnixDatagram)
    );
    let file = std::fs::File::open("/proc/self/status").unwrap();
    assert_eq!(
        b::UnixDatagram::from_fd(c, std::os::fd::OwnedFd::from(file).into()).err(),
        not(SocketKind::UnixDatagram)
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        b::UnixDatagram::from_fd(c, std::os::fd::OwnedFd::from(udp).into()).err(),
        not(SocketKind::UnixDatagram)
    );
}

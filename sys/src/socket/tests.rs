//! Loopback tests of the socket calls. Every wait is a blocking call or a
//! `poll` on readiness, never a sleep; the poll timeout only keeps a
//! broken build from hanging.

use super::*;
use crate::event;

const V4_ANY: &str = "127.0.0.1:0";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A listening TCP socket on a free loopback port, and its address.
fn listener(at: &str, nonblocking: bool) -> (Fd, SocketAddr) {
    let at = addr(at);
    let l = socket(crate::addr::family(&at), libc::SOCK_STREAM, nonblocking).unwrap();
    set_int_opt(l.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
    bind(l.raw(), &at).unwrap();
    listen(l.raw(), 8).unwrap();
    let bound = local_addr(l.raw()).unwrap();
    (l, bound)
}

fn status_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL touches no memory.
    syscall!(fcntl(fd, libc::F_GETFL)).unwrap()
}

fn fd_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFD touches no memory.
    syscall!(fcntl(fd, libc::F_GETFD)).unwrap()
}

/// Waits until `fd` reports one of `events`.
fn wait_for(fd: i32, events: libc::c_short) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the call.
    let n = syscall_retry!(poll(&mut p, 1, 10_000)).unwrap();
    assert_eq!(n, 1, "no readiness: the test would hang");
    p.revents
}

fn send_all(fd: i32, bytes: &[u8]) {
    // SAFETY: `bytes` is readable for its length.
    let n = syscall_retry!(write(fd, bytes.as_ptr().cast(), bytes.len())).unwrap();
    assert_eq!(n as usize, bytes.len());
}

fn recv_some(fd: i32, buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is writable for its length.
    syscall_retry!(read(fd, buf.as_mut_ptr().cast(), buf.len())).unwrap() as usize
}

/// The whole path a TCP server and client take, on blocking sockets.
fn tcp_loopback(at: &str) {
    let (l, at) = listener(at, false);
    assert_ne!(at.port(), 0);
    assert_eq!(
        get_int_opt(l.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR),
        Ok(1)
    );
    assert_eq!(
        get_int_opt(l.raw(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN),
        Ok(1)
    );
    assert_eq!(fd_flags(l.raw()) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    assert_eq!(status_flags(l.raw()) & libc::O_NONBLOCK, 0);

    let c = socket(crate::addr::family(&at), libc::SOCK_STREAM, false).unwrap();
    assert_eq!(peer_addr(c.raw()), Err(Errno::NOTCONN));
    connect(c.raw(), &at).unwrap();
    let (s, peer) = accept(l.raw(), false).unwrap();
    assert_eq!(peer, local_addr(c.raw()).unwrap());
    assert_eq!(peer_addr(s.raw()), Ok(peer));
    assert_eq!(peer_addr(c.raw()), Ok(at));
    assert_eq!(local_addr(s.raw()), Ok(at));
    assert_eq!(fd_flags(s.raw()) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    assert_eq!(status_flags(s.raw()) & libc::O_NONBLOCK, 0);
    assert_eq!(socket_error(c.raw()), Ok(None));

    // Options.
    set_int_opt(c.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).unwrap();
    assert_eq!(
        get_int_opt(c.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY),
        Ok(1)
    );
    set_int_opt(c.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 0).unwrap();
    assert_eq!(
        get_int_opt(c.raw(), libc::IPPROTO_TCP, libc::TCP_NODELAY),
        Ok(0)
    );

    // Data, then the client's half-close reaches the server as EOF
    // while the other direction still works.
    send_all(c.raw(), b"ping");
    let mut buf = [0u8; 8];
    assert_eq!(recv_some(s.raw(), &mut buf), 4);
    assert_eq!(&buf[..4], b"ping");
    shutdown(c.raw(), Shutdown::Write).unwrap();
    assert_eq!(recv_some(s.raw(), &mut buf), 0);
    send_all(s.raw(), b"pong");
    assert_eq!(recv_some(c.raw(), &mut buf), 4);
    assert_eq!(&buf[..4], b"pong");
    shutdown(s.raw(), Shutdown::Both).unwrap();
    assert_eq!(recv_some(c.raw(), &mut buf), 0);
    // Both sides closed both ways: the connection is gone.
    assert_eq!(shutdown(c.raw(), Shutdown::Read), Err(Errno::NOTCONN));

    // A second connection, accepted non-blocking.
    let c2 = socket(crate::addr::family(&at), libc::SOCK_STREAM, false).unwrap();
    connect(c2.raw(), &at).unwrap();
    let (s2, peer2) = accept(l.raw(), true).unwrap();
    assert_eq!(peer2, local_addr(c2.raw()).unwrap());
    assert_eq!(status_flags(s2.raw()) & libc::O_NONBLOCK, libc::O_NONBLOCK);
    // Closing the read side: reads see end-of-file at once, even on a
    // non-blocking socket with nothing received.
    shutdown(s2.raw(), Shutdown::Read).unwrap();
    assert_eq!(recv_some(s2.raw(), &mut buf), 0);
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn tcp_loopback_v4() {
    tcp_loopback(V4_ANY);
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn tcp_loopback_v6() {
    // A machine without IPv6 (or without ::1) has nothing to test here.
    let probe = match socket(libc::AF_INET6, libc::SOCK_STREAM, false) {
        Ok(fd) => fd,
        Err(Errno::AFNOSUPPORT) => return std::eprintln!("no IPv6: skipped"),
        Err(e) => panic!("{e}"),
    };
    match bind(probe.raw(), &addr("[::1]:0")) {
        Ok(()) => {}
        Err(Errno::ADDRNOTAVAIL) => return std::eprintln!("no ::1: skipped"),
        Err(e) => panic!("{e}"),
    }
    tcp_loopback("[::1]:0");
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn nonblocking_listener_and_set_nonblocking() {
    let (l, _) = listener(V4_ANY, true);
    assert_eq!(status_flags(l.raw()) & libc::O_NONBLOCK, libc::O_NONBLOCK);
    assert_eq!(accept(l.raw(), true).map(drop), Err(Errno::AGAIN));

    set_nonblocking(l.raw(), false).unwrap();
    assert_eq!(status_flags(l.raw()) & libc::O_NONBLOCK, 0);
    set_nonblocking(l.raw(), false).unwrap(); // no change, no write
    set_nonblocking(l.raw(), true).unwrap();
    assert_eq!(status_flags(l.raw()) & libc::O_NONBLOCK, libc::O_NONBLOCK);
    assert_eq!(set_nonblocking(-1, true), Err(Errno::BADF));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn nonblocking_connect_completes_and_reports_no_error() {
    let (l, at) = listener(V4_ANY, false);
    let c = socket(libc::AF_INET, libc::SOCK_STREAM, true).unwrap();
    match connect(c.raw(), &at) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => panic!("connect: {e}"),
    }
    let ev = wait_for(c.raw(), libc::POLLOUT);
    assert_eq!(ev & (libc::POLLERR | libc::POLLHUP), 0);
    assert_eq!(socket_error(c.raw()), Ok(None));
    assert_eq!(peer_addr(c.raw()), Ok(at));
    let (_s, peer) = accept(l.raw(), false).unwrap();
    assert_eq!(Ok(peer), local_addr(c.raw()));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn refused_connect_shows_in_socket_error() {
    // Bound but not listening: the port is ours and answers with a reset.
    let closed = socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
    bind(closed.raw(), &addr(V4_ANY)).unwrap();
    let at = local_addr(closed.raw()).unwrap();

    let c = socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
    assert_eq!(connect(c.raw(), &at), Err(Errno::CONNREFUSED));

    let c = socket(libc::AF_INET, libc::SOCK_STREAM, true).unwrap();
    match connect(c.raw(), &at) {
        Err(Errno::CONNREFUSED) => {}
        Err(Errno::INPROGRESS) => {
            wait_for(c.raw(), libc::POLLOUT);
            assert_eq!(socket_error(c.raw()), Ok(Some(Errno::CONNREFUSED)));
            // Reading SO_ERROR cleared it.
            assert_eq!(socket_error(c.raw()), Ok(None));
        }
        other => panic!("connect to a closed port: {other:?}"),
    }
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn errors_come_back_as_errno() {
    let (_l, at) = listener(V4_ANY, false);
    let s = socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
    assert_eq!(bind(s.raw(), &at), Err(Errno::ADDRINUSE));
    assert_eq!(shutdown(s.raw(), Shutdown::Both), Err(Errno::NOTCONN));
    // An IPv6 address on an IPv4 socket.
    assert_eq!(bind(s.raw(), &addr("[::1]:0")), Err(Errno::AFNOSUPPORT));
    assert_eq!(
        socket(-1, libc::SOCK_STREAM, false).map(drop),
        Err(Errno::AFNOSUPPORT)
    );
    let efd = event::eventfd(true).unwrap();
    assert_eq!(
        get_int_opt(efd.raw(), libc::SOL_SOCKET, libc::SO_ERROR),
        Err(Errno::NOTSOCK)
    );
    assert_eq!(socket_error(-1), Err(Errno::BADF));
    assert_eq!(listen(efd.raw(), 1), Err(Errno::NOTSOCK));
    assert_eq!(accept(-1, false).map(drop), Err(Errno::BADF));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn udp_sockets_bind_and_connect_too() {
    let a = socket(libc::AF_INET, libc::SOCK_DGRAM, true).unwrap();
    bind(a.raw(), &addr(V4_ANY)).unwrap();
    let at = local_addr(a.raw()).unwrap();
    let b = socket(libc::AF_INET, libc::SOCK_DGRAM, false).unwrap();
    connect(b.raw(), &at).unwrap();
    assert_eq!(peer_addr(b.raw()), Ok(at));
    send_all(b.raw(), b"dgram");
    wait_for(a.raw(), libc::POLLIN);
    let mut buf = [0u8; 16];
    assert_eq!(recv_some(a.raw(), &mut buf), 5);
    assert_eq!(&buf[..5], b"dgram");
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn unix_stream_by_abstract_name_with_peer_credentials() {
    use crate::addr::UnixAddr;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let name = std::format!("pinion-sys-test-{pid}");
    let at = UnixAddr::abstract_name(name.as_bytes()).unwrap();
    let l = socket(libc::AF_UNIX, libc::SOCK_STREAM, false).unwrap();
    bind_to(l.raw(), &at).unwrap();
    listen(l.raw(), 4).unwrap();
    assert_eq!(local_addr_of::<UnixAddr>(l.raw()), Ok(at));
    assert_eq!(
        local_addr_of::<SocketAddr>(l.raw()),
        Err(Errno::AFNOSUPPORT)
    );
    let c = socket(libc::AF_UNIX, libc::SOCK_STREAM, false).unwrap();
    connect_to(c.raw(), &at).unwrap();
    assert_eq!(peer_addr_of::<UnixAddr>(c.raw()), Ok(at));
    let cred = peer_cred(c.raw()).unwrap();
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(cred, PeerCred { pid, uid, gid });
    send_all(c.raw(), b"hi");
    let s = syscall!(accept4(
        l.raw(),
        core::ptr::null_mut(),
        core::ptr::null_mut(),
        0
    ))
    .unwrap();
    // SAFETY: accept4 just returned it.
    let s = unsafe { Fd::from_raw(s) };
    let mut buf = [0u8; 8];
    assert_eq!(recv_some(s.raw(), &mut buf), 2);
    assert!(peer_addr_of::<UnixAddr>(s.raw()).unwrap().is_unnamed());
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn unix_connect_to_a_missing_path_is_enoent() {
    use crate::addr::UnixAddr;
    let c = socket(libc::AF_UNIX, libc::SOCK_STREAM, true).unwrap();
    let at = UnixAddr::path(b"/nonexistent-pinion-dir/x.sock").unwrap();
    assert_eq!(connect_to(c.raw(), &at), Err(Errno::NOENT));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn socketpair_gives_two_connected_ends() {
    let (a, b) = socketpair(libc::SOCK_STREAM, false).unwrap();
    assert_ne!(fd_flags(a.raw()) & libc::FD_CLOEXEC, 0);
    send_all(a.raw(), b"ping");
    let mut buf = [0u8; 8];
    assert_eq!(recv_some(b.raw(), &mut buf), 4);
    assert_eq!(&buf[..4], b"ping");
    let (c, _d) = socketpair(libc::SOCK_DGRAM, true).unwrap();
    assert_ne!(status_flags(c.raw()) & libc::O_NONBLOCK, 0);
}

//! Socket options and inherited descriptors, on real sockets: each option
//! read back from the kernel; a multicast datagram over loopback; sockets
//! adopted from std checked for their kind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, UdpSocket as StdUdp};
use std::os::fd::IntoRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinion::net::{BindOptions, KeepAlive};
use pinion::{Error, SocketKind};
use pinion_sys::Fd;

use super::{accept_one, b, listen, run_until};
use crate::util::{self, FixedBuf};

fn get(fd: i32, level: i32, name: i32) -> i32 {
    pinion_sys::socket::get_int_opt(fd, level, name).unwrap()
}

fn adopt(fd: impl IntoRawFd) -> Fd {
    // SAFETY: std gave up the open descriptor to us alone.
    unsafe { Fd::from_raw(fd.into_raw_fd()) }
}

#[test]
fn keepalive_timings_are_set_and_read_back() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let _client = util::std_connect(addr);
    let s = accept_one(c, l);
    assert_eq!(s.keepalive(), Ok(None));
    let k = KeepAlive {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(5),
        count: 4,
    };
    s.set_keepalive(Some(k)).unwrap();
    assert_eq!(s.keepalive(), Ok(Some(k)));
    let fd = s.as_raw_fd();
    assert_eq!(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
    s.set_keepalive(None).unwrap();
    assert_eq!(s.keepalive(), Ok(None));
    s.close().unwrap();
    assert_eq!(s.set_keepalive(Some(k)), Err(Error::BadDescriptor));
}

#[test]
fn reuse_port_lets_two_listeners_share_a_port() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let opts = BindOptions {
        reuse_port: true,
        ..BindOptions::default()
    };
    let a = b::TcpListener::bind_with(c, util::any_port(), &opts).unwrap();
    let port = a.local_addr().unwrap();
    let b2 = b::TcpListener::bind_with(c, port, &opts).expect("a second listener on the port");
    // Without it the port is taken.
    let plain = b::TcpListener::bind_with(c, port, &BindOptions::default());
    assert_eq!(plain.map(drop), Err(Error::AddrInUse));
    assert_eq!(get(a.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT), 1);
    a.close().unwrap();
    b2.close().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn an_ipv6_only_listener_and_a_device_bound_one() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let opts = BindOptions {
        only_v6: Some(true),
        ..BindOptions::default()
    };
    match b::TcpListener::bind_with(c, v6, &opts) {
        Ok(l) => {
            assert_eq!(get(l.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY), 1);
            l.close().unwrap();
        }
        Err(e) => eprintln!("SKIPPED the IPv6 part: no IPv6 loopback here ({e})"),
    }
    let opts = BindOptions {
        device: Some("lo"),
        ..BindOptions::default()
    };
    match b::TcpListener::bind_with(c, util::any_port(), &opts) {
        Ok(l) => {
            // Bound to lo, it still serves loopback clients.
            let addr = l.local_addr().unwrap();
            let _client = util::std_connect(addr);
            accept_one(c, l).close().unwrap();
            l.close().unwrap();
        }
        Err(e) => assert_eq!(e, Error::Os(pinion::Errno::PERM), "needs CAP_NET_RAW: {e}"),
    }
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn a_multicast_datagram_over_loopback() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let group = Ipv4Addr::new(239, 255, 77, 1);
    let opts = BindOptions {
        reuse_port: true,
        ..BindOptions::default()
    };
    let rx = b::UdpSocket::bind_with(c, "0.0.0.0:0".parse().unwrap(), &opts).unwrap();
    let port = rx.local_addr().unwrap().port();
    if let Err(e) = rx.join_multicast_v4(group, Ipv4Addr::LOCALHOST) {
        eprintln!("SKIPPED a_multicast_datagram_over_loopback: joining on lo refused ({e})");
        rx.close().unwrap();
        return;
    }
    assert_eq!(
        rx.join_multicast_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::LOCALHOST),
        Err(Error::Os(pinion::Errno::INVAL)),
        "not a group address"
    );
    let tx = b::UdpSocket::bind(c, "127.0.0.1:0".parse().unwrap()).unwrap();
    // qemu-user passes IP_ADD_MEMBERSHIP through but answers ENOPROTOOPT
    // for IP_MULTICAST_IF: skip there, loudly; anywhere else it is a failure.
    if let Err(e @ Error::Os(pinion::Errno::NOPROTOOPT)) =
        tx.set_multicast_if_v4(Ipv4Addr::LOCALHOST)
    {
        eprintln!("SKIPPED a_multicast_datagram_over_loopback: IP_MULTICAST_IF refused ({e}); an emulator?");
        rx.close().unwrap();
        tx.close().unwrap();
        return;
    }
    tx.set_multicast_if_v4(Ipv4Addr::LOCALHOST).unwrap();
    tx.set_multicast_loop_v4(true).unwrap();
    tx.set_multicast_ttl_v4(1).unwrap();
    tx.set_broadcast(true).unwrap();
    assert_eq!(get(tx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST), 1);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    rx.async_receive_from(FixedBuf::new(64), move |r, buf| {
        *g.lock().unwrap() = Some((r.map(|(n, _)| n), buf.bytes().to_vec()));
    })
    .map_err(|r| r.error)
    .unwrap();
    let to = SocketAddr::from((group, port));
    tx.async_send_to(&b"to the group"[..], to, |r, _| assert_eq!(r, Ok(12)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "the multicast datagram", || {
        got.lock().unwrap().is_some()
    });
    assert_eq!(
        got.lock().unwrap().take(),
        Some((Ok(12), b"to the group".to_vec()))
    );
    rx.leave_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap();
    rx.close().unwrap();
    tx.close().unwrap();
}

#[test]
fn inherited_sockets_are_checked_for_their_kind() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    // A listening socket from std serves.
    let std_l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = std_l.local_addr().unwrap();
    let l = b::TcpListener::from_fd(c, adopt(std_l)).unwrap();
    let _client = util::std_connect(addr);
    let s = accept_one(c, l);
    assert_eq!(s.peer_addr().unwrap().ip(), addr.ip());
    // A connected stream from std works too (it waits in the backlog).
    let conn = std::net::TcpStream::connect(addr).unwrap();
    let inherited = b::TcpStream::from_fd(c, adopt(conn)).unwrap();
    assert_eq!(inherited.peer_addr(), Ok(addr));
    // Wrong kinds: a clear error naming what was expected.
    let udp = StdUdp::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        b::TcpListener::from_fd(c, adopt(udp)).map(drop),
        Err(Error::NotA(SocketKind::TcpListener))
    );
    let listening = StdListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        b::TcpStream::from_fd(c, adopt(listening)).map(drop),
        Err(Error::NotA(SocketKind::TcpStream))
    );
    let file = std::fs::File::open("/proc/self/status").unwrap();
    assert_eq!(
        b::UdpSocket::from_fd(c, adopt(file)).map(drop),
        Err(Error::NotA(SocketKind::UdpSocket))
    );
    let e = Error::NotA(SocketKind::TcpListener).to_string();
    assert!(e.contains("not a listening TCP socket"), "{e}");
    // A refused descriptor is closed: a pipe's write end, refused, leaves
    // its read end at end of file.
    let mut p = [0i32; 2];
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: `p` has room for both descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), flags) }, 0);
    // SAFETY: both just made, ours alone.
    let (r, w) = unsafe { (Fd::from_raw(p[0]), Fd::from_raw(p[1])) };
    assert!(b::TcpListener::from_fd(c, w).is_err());
    assert_eq!(pinion_sys::fd::read(r.raw(), &mut [0u8; 1]), Ok(0));
    for h in [s, inherited] {
        h.close().unwrap();
    }
    l.close().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
}

//! The socket options appliances set: keep-alive with its timings, port
//! sharing, device binding, IPv6-only listeners, UDP broadcast and
//! multicast. Each is one `setsockopt(2)` on the socket's descriptor,
//! answered `BadDescriptor` on a closed handle.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use pinion_core::backend::{Backend, DescKind};
use pinion_core::{Error, Result};
use pinion_sys::socket as sys;

use super::{open_socket, TcpListener, TcpStream, UdpSocket, DEFAULT_BACKLOG};
use crate::context::IoContext;

/// TCP keep-alive timings (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`): a silent peer is probed after `idle`, every
/// `interval`, and the connection fails with `TimedOut` after `count`
/// unanswered probes. Seconds, rounded down, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

fn secs(d: Duration) -> i32 {
    d.as_secs().clamp(1, i32::MAX as u64) as i32
}

fn on(fd: i32, level: i32, name: i32, v: bool) -> Result<()> {
    Ok(sys::set_int_opt(fd, level, name, v as i32)?)
}

impl<B: Backend> TcpStream<'_, B> {
    /// Turns keep-alive on with `k`'s timings, or off with `None`.
    pub fn set_keepalive(&self, k: Option<KeepAlive>) -> Result<()> {
        self.with_fd(|fd| {
            on(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, k.is_some())?;
            if let Some(k) = k {
                let tcp = libc::IPPROTO_TCP;
                sys::set_int_opt(fd, tcp, libc::TCP_KEEPIDLE, secs(k.idle))?;
                sys::set_int_opt(fd, tcp, libc::TCP_KEEPINTVL, secs(k.interval))?;
                let count = k.count.clamp(1, i32::MAX as u32) as i32;
                sys::set_int_opt(fd, tcp, libc::TCP_KEEPCNT, count)?;
            }
            Ok(())
        })
    }

    /// The keep-alive timings in force, `None` when it is off.
    pub fn keepalive(&self) -> Result<Option<KeepAlive>> {
        self.with_fd(|fd| {
            if sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? == 0 {
                return Ok(None);
            }
            let get = |name| sys::get_int_opt(fd, libc::IPPROTO_TCP, name);
            Ok(Some(KeepAlive {
                idle: Duration::from_secs(get(libc::TCP_KEEPIDLE)? as u64),
                interval: Duration::from_secs(get(libc::TCP_KEEPINTVL)? as u64),
                count: get(libc::TCP_KEEPCNT)? as u32,
            }))
        })
    }
}

/// How [`TcpListener::bind_with`] and [`UdpSocket::bind_with`] set a
/// socket up before binding it.
#[derive(Clone, Copy, Debug)]
pub struct BindOptions<'a> {
    /// `listen(2)` backlog (listeners only).
    pub backlog: i32,
    /// `SO_REUSEPORT`: several sockets (processes, threads) share the port.
    pub reuse_port: bool,
    /// `IPV6_V6ONLY` for an IPv6 address: `Some(true)` takes no IPv4.
    pub only_v6: Option<bool>,
    /// `SO_BINDTODEVICE`: only this interface (needs `CAP_NET_RAW`).
    pub device: Option<&'a str>,
}

impl Default for BindOptions<'_> {
    fn default() -> Self {
        BindOptions {
            backlog: DEFAULT_BACKLOG,
            reuse_port: false,
            only_v6: None,
            device: None,
        }
    }
}

impl BindOptions<'_> {
    /// Applies the options to an unbound socket `fd` for `addr`.
    fn apply(&self, fd: i32, addr: &SocketAddr) -> Result<()> {
        on(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, true)?;
        if self.reuse_port {
            on(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, true)?;
        }
        if let (Some(v6), SocketAddr::V6(_)) = (self.only_v6, addr) {
            on(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6)?;
        }
        if let Some(dev) = self.device {
            sys::set_bytes_opt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, dev.as_bytes())?;
        }
        Ok(())
    }
}

impl<'c, B: Backend> TcpListener<'c, B> {
    /// A listener on `addr`, set up by `opts` first.
    pub fn bind_with(ctx: &'c IoContext<B>, addr: SocketAddr, opts: &BindOptions) -> Result<Self> {
        let fd = open_socket::<B>(&addr, libc::SOCK_STREAM)?;
        opts.apply(fd.raw(), &addr)?;
        sys::bind(fd.raw(), &addr)?;
        sys::listen(fd.raw(), opts.backlog)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Listener)?;
        Ok(TcpListener::from_key(ctx, key))
    }
}

impl<'c, B: Backend> UdpSocket<'c, B> {
    /// A socket bound to `addr`, set up by `opts` first (a multicast
    /// receiver binds the group's port with `reuse_port`).
    pub fn bind_with(ctx: &'c IoContext<B>, addr: SocketAddr, opts: &BindOptions) -> Result<Self> {
        let fd = open_socket::<B>(&addr, libc::SOCK_DGRAM)?;
        opts.apply(fd.raw(), &addr)?;
        sys::bind(fd.raw(), &addr)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Datagram)?;
        Ok(UdpSocket::from_key(ctx, key))
    }

    /// `SO_BROADCAST`: may send to broadcast addresses.
    pub fn set_broadcast(&self, v: bool) -> Result<()> {
        self.with_fd(|fd| on(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, v))
    }

    /// Joins the IPv4 multicast `group` on the interface with address
    /// `iface` (`UNSPECIFIED`: the kernel's choice).
    pub fn join_multicast_v4(&self, group: Ipv4Addr, iface: Ipv4Addr) -> Result<()> {
        self.mreq_v4(libc::IP_ADD_MEMBERSHIP, group, iface)
    }

    /// Leaves an IPv4 multicast group joined before.
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, iface: Ipv4Addr) -> Result<()> {
        self.mreq_v4(libc::IP_DROP_MEMBERSHIP, group, iface)
    }

    /// Joins the IPv6 multicast `group` on interface index `iface` (0:
    /// the kernel's choice).
    pub fn join_multicast_v6(&self, group: Ipv6Addr, iface: u32) -> Result<()> {
        self.mreq_v6(libc::IPV6_ADD_MEMBERSHIP, group, iface)
    }

    /// Leaves an IPv6 multicast group joined before.
    pub fn leave_multicast_v6(&self, group: Ipv6Addr, iface: u32) -> Result<()> {
        self.mreq_v6(libc::IPV6_DROP_MEMBERSHIP, group, iface)
    }

    /// `IP_MULTICAST_LOOP`: this host's own sockets receive what it sends
    /// to a group (on by default).
    pub fn set_multicast_loop_v4(&self, v: bool) -> Result<()> {
        self.with_fd(|fd| on(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, v))
    }

    /// `IP_MULTICAST_TTL`: hops a multicast datagram may take (default 1).
    pub fn set_multicast_ttl_v4(&self, ttl: u8) -> Result<()> {
        let ttl = i32::from(ttl);
        self.with_fd(|fd| {
            Ok(sys::set_int_opt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_TTL,
                ttl,
            )?)
        })
    }

    /// `IP_MULTICAST_IF`: send multicast from the interface with address
    /// `iface` instead of the route's.
    pub fn set_multicast_if_v4(&self, iface: Ipv4Addr) -> Result<()> {
        let a = iface.octets();
        self.with_fd(|fd| {
            Ok(sys::set_bytes_opt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &a,
            )?)
        })
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, v: bool) -> Result<()> {
        self.with_fd(|fd| on(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, v))
    }

    fn mreq_v4(&self, name: i32, group: Ipv4Addr, iface: Ipv4Addr) -> Result<()> {
        if !group.is_multicast() {
            return Err(Error::Os(pinion_core::Errno::INVAL));
        }
        // struct ip_mreq: the group, then the interface address, both in
        // network order.
        let mut m = [0u8; 8];
        m[..4].copy_from_slice(&group.octets());
        m[4..].copy_from_slice(&iface.octets());
        self.with_fd(|fd| Ok(sys::set_bytes_opt(fd, libc::IPPROTO_IP, name, &m)?))
    }

    fn mreq_v6(&self, name: i32, group: Ipv6Addr, iface: u32) -> Result<()> {
        if !group.is_multicast() {
            return Err(Error::Os(pinion_core::Errno::INVAL));
        }
        // struct ipv6_mreq: the group, then the interface index (host order).
        let mut m = [0u8; 20];
        m[..16].copy_from_slice(&group.octets());
        m[16..].copy_from_slice(&iface.to_ne_bytes());
        self.with_fd(|fd| Ok(sys::set_bytes_opt(fd, libc::IPPROTO_IPV6, name, &m)?))
    }
}

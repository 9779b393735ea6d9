//! Sockets handed to the program already open: systemd socket activation
//! (`LISTEN_FDS`), a parent process, a privileged helper. Each
//! constructor checks that the descriptor is the kind of socket it builds
//! (type, family, listening or connected) and answers `NotA(kind)` when it
//! is not, closing it, so a mixed-up `LISTEN_FDS` order is a clear error
//! and not a listener that never accepts.

use pinion_core::backend::{Backend, DescKind, Fd};
use pinion_core::{Error, Result, SocketKind};
use pinion_sys::socket as sys;

use super::{TcpListener, TcpStream, UdpSocket};
use crate::context::IoContext;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// The descriptors systemd passed to this process for socket activation:
/// `LISTEN_FDS_START..LISTEN_FDS_START + n`, or an empty range when
/// `LISTEN_PID` is not this process or the variables are missing. The
/// variables are left in place (take them once, at start-up).
#[cfg(feature = "std")]
pub fn listen_fds() -> core::ops::Range<i32> {
    let var = |k| std::env::var(k).ok();
    listen_fds_from(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )
}

/// [`listen_fds`] from the variables' values and this process's id.
///
/// ```
/// use pinion::net::listen_fds_from;
/// assert_eq!(listen_fds_from(Some("42"), Some("2"), 42), 3..5);
/// assert_eq!(listen_fds_from(Some("41"), Some("2"), 42), 3..3, "for another process");
/// assert_eq!(listen_fds_from(None, Some("2"), 42), 3..3);
/// assert_eq!(listen_fds_from(Some("42"), Some("x"), 42), 3..3);
/// ```
pub fn listen_fds_from(pid: Option<&str>, fds: Option<&str>, me: u32) -> core::ops::Range<i32> {
    let n = match (pid.and_then(|p| p.parse::<u32>().ok()), fds) {
        (Some(p), Some(n)) if p == me => n.parse::<i32>().unwrap_or(0).clamp(0, 1 << 16),
        _ => 0,
    };
    LISTEN_FDS_START..LISTEN_FDS_START + n
}

/// Checks `fd`'s type, family and state; `NotA(kind)` otherwise.
fn check(fd: i32, ty: i32, listening: Option<bool>, kind: SocketKind) -> Result<()> {
    let not_a = |_| Error::NotA(kind);
    let got_ty = sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(not_a)?;
    let family = sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(not_a)?;
    if got_ty != ty || (family != libc::AF_INET && family != libc::AF_INET6) {
        return Err(Error::NotA(kind));
    }
    if let Some(want) = listening {
        let accepting =
            sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(not_a)? != 0;
        if accepting != want || (!want && sys::peer_addr(fd).is_err()) {
            return Err(Error::NotA(kind));
        }
    }
    Ok(())
}

/// Checks, sets the blocking mode the backend wants, and registers.
fn adopt<B: Backend>(
    ctx: &IoContext<B>, fd: Fd, ty: i32, listening: Option<bool>, kind: SocketKind, desc: DescKind,
) -> Result<pinion_core::backend::Key> {
    check(fd.raw(), ty, listening, kind)?;
    sys::set_nonblocking(fd.raw(), !B::BLOCKING_SOCKETS)?;
    crate::context::register::<B>(ctx.sched(), fd, desc)
}

impl<'c, B: Backend> TcpListener<'c, B> {
    /// A listener from an inherited, already listening TCP socket (IPv4 or
    /// IPv6). `NotA(TcpListener)` for anything else (a UDP socket, a
    /// connected or unbound stream, a file); the fd is closed on error.
    pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
        let kind = SocketKind::TcpListener;
        let key = adopt(
            ctx,
            fd,
            libc::SOCK_STREAM,
            Some(true),
            kind,
            DescKind::Listener,
        )?;
        Ok(TcpListener::from_key(ctx, key))
    }
}

impl<'c, B: Backend> TcpStream<'c, B> {
    /// A stream from an inherited, connected TCP socket.
    /// `NotA(TcpStream)` for anything else; the fd is closed on error.
    pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
        let kind = SocketKind::TcpStream;
        let key = adopt(
            ctx,
            fd,
            libc::SOCK_STREAM,
            Some(false),
            kind,
            DescKind::Stream,
        )?;
        Ok(TcpStream::from_key(ctx, key))
    }
}

impl<'c, B: Backend> UdpSocket<'c, B> {
    /// A socket from an inherited UDP socket. `NotA(UdpSocket)` for
    /// anything else; the fd is closed on error.
    pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
        let kind = SocketKind::UdpSocket;
        let key = adopt(ctx, fd, libc::SOCK_DGRAM, None, kind, DescKind::Datagram)?;
        Ok(UdpSocket::from_key(ctx, key))
    }
}

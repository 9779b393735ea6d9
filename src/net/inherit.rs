//! Sockets handed to the program already open: systemd socket activation
//! (`LISTEN_FDS`), a parent process, a privileged helper. Each
//! constructor checks that the descriptor is the kind of socket it builds
//! (type, family, listening or connected) and answers `NotA(kind)` when it
//! is not, closing it, so a mixed-up `LISTEN_FDS` order is a clear error
//! and not a listener that never accepts.

use pinion_core::backend::{Backend, DescKind, Fd};
use pinion_core::{Error, Result, SocketKind};
use pinion_sys::socket as sys;

use super::{TcpListener, TcpStream, UdpSocket, UnixAddr, UnixDatagram, UnixListener, UnixStream};
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

/// The address family a constructor wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// IPv4 or IPv6.
    Ip,
    /// `AF_UNIX`.
    Unix,
}

/// Checks `fd`'s type, family and state; `NotA(kind)` otherwise.
fn check(fd: i32, ty: i32, fam: Family, listening: Option<bool>, kind: SocketKind) -> Result<()> {
    let not_a = |_| Error::NotA(kind);
    let got_ty = sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(not_a)?;
    let family = sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(not_a)?;
    let family_ok = match fam {
        Family::Ip => family == libc::AF_INET || family == libc::AF_INET6,
        Family::Unix => family == libc::AF_UNIX,
    };
    if got_ty != ty || !family_ok {
        return Err(Error::NotA(kind));
    }
    if let Some(want) = listening {
        let accepting =
            sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(not_a)? != 0;
        let connected = || match fam {
            Family::Ip => sys::peer_addr(fd).is_ok(),
            Family::Unix => sys::peer_addr_of::<UnixAddr>(fd).is_ok(),
        };
        if accepting != want || (!want && !connected()) {
            return Err(Error::NotA(kind));
        }
    }
    Ok(())
}

/// Checks, sets the blocking mode the backend wants, and registers.
fn adopt<B: Backend>(
    ctx: &IoContext<B>, fd: Fd, (ty, fam): (i32, Family), listening: Option<bool>,
    kind: SocketKind, desc: DescKind,
) -> Result<pinion_core::backend::Key> {
    check(fd.raw(), ty, fam, listening, kind)?;
    sys::set_nonblocking(fd.raw(), !B::BLOCKING_SOCKETS)?;
    crate::context::register::<B>(ctx.sched(), fd, desc)
}

/// Defines `from_fd` for one socket type.
macro_rules! from_fd {
    ($(#[$doc:meta])* $ty:ident, $kind:ident, $sock:expr, $fam:expr, $listening:expr, $desc:ident) => {
        impl<'c, B: Backend> $ty<'c, B> {
            $(#[$doc])*
            pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
                let key = adopt(
                    ctx,
                    fd,
                    ($sock, $fam),
                    $listening,
                    SocketKind::$kind,
                    DescKind::$desc,
                )?;
                Ok($ty::from_key(ctx, key))
            }
        }
    };
}

from_fd!(
    /// A listener from an inherited, already listening TCP socket (IPv4 or
    /// IPv6). `NotA(TcpListener)` for anything else (a UDP socket, a
    /// connected or unbound stream, a file); the fd is closed on error.
    TcpListener, TcpListener, libc::SOCK_STREAM, Family::Ip, Some(true), Listener
);
from_fd!(
    /// A stream from an inherited, connected TCP socket.
    /// `NotA(TcpStream)` for anything else; the fd is closed on error.
    TcpStream, TcpStream, libc::SOCK_STREAM, Family::Ip, Some(false), Stream
);
from_fd!(
    /// A socket from an inherited UDP socket. `NotA(UdpSocket)` for
    /// anything else; the fd is closed on error.
    UdpSocket, UdpSocket, libc::SOCK_DGRAM, Family::Ip, None, Datagram
);
from_fd!(
    /// A listener from an inherited, already listening Unix-domain stream
    /// socket (systemd's `ListenStream=/run/...`). `NotA(UnixListener)`
    /// for anything else (a TCP listener, a datagram socket, a connected
    /// stream, a file); the fd is closed on error.
    ///
    /// ```
    /// # let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// use pinion::{Error, SocketKind};
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let e = pinion::UnixListener::from_fd(ctx, std::os::fd::OwnedFd::from(a).into()).err();
    /// assert_eq!(e, Some(Error::NotA(SocketKind::UnixListener)));
    /// ```
    UnixListener, UnixListener, libc::SOCK_STREAM, Family::Unix, Some(true), Listener
);
from_fd!(
    /// A stream from an inherited, connected Unix-domain stream socket
    /// (one end of a `socketpair` a parent made, say).
    /// `NotA(UnixStream)` for anything else; the fd is closed on error.
    UnixStream, UnixStream, libc::SOCK_STREAM, Family::Unix, Some(false), Stream
);
from_fd!(
    /// A socket from an inherited Unix-domain datagram socket.
    /// `NotA(UnixDatagram)` for anything else; the fd is closed on error.
    UnixDatagram, UnixDatagram, libc::SOCK_DGRAM, Family::Unix, None, Datagram
);

//! Socket calls on raw descriptors: create, bind, listen, connect, accept,
//! addresses, shutdown, options.
//!
//! Everything but [`socket`] and [`accept`] takes the descriptor as a raw
//! `i32`, so a backend can call these under its own lock on a number it
//! keeps in a table.
//!
//! ```
//! # #[cfg(not(miri))] { // miri's isolation has no sockets
//! use pinion_sys::socket::{self, Shutdown};
//!
//! let any = "127.0.0.1:0".parse().unwrap();
//! let l = socket::socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
//! socket::bind(l.raw(), &any).unwrap();
//! socket::listen(l.raw(), 16).unwrap();
//! let at = socket::local_addr(l.raw()).unwrap();
//!
//! let c = socket::socket(libc::AF_INET, libc::SOCK_STREAM, false).unwrap();
//! socket::connect(c.raw(), &at).unwrap();
//! let (s, peer) = socket::accept(l.raw(), false).unwrap();
//! assert_eq!(peer, socket::local_addr(c.raw()).unwrap());
//! assert_eq!(socket::peer_addr(s.raw()), Ok(peer));
//! socket::shutdown(c.raw(), Shutdown::Write).unwrap();
//! # }
//! ```

use core::mem::size_of;
use core::net::SocketAddr;

use crate::addr::{RawAddr, SockAddr};
use crate::{Errno, Fd};

/// A new close-on-exec socket (`socket(2)` with protocol 0).
///
/// `nonblocking` adds `SOCK_NONBLOCK`: the epoll backend wants it, the
/// io_uring backend does not (io_uring fails an operation on a
/// non-blocking socket with `EAGAIN` instead of waiting for readiness).
/// `domain` is usually [`family`](crate::addr::family) of the address.
pub fn socket(domain: i32, ty: i32, nonblocking: bool) -> Result<Fd, Errno> {
    let mut ty = ty | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    if let Some(e) = crate::fault::fail(crate::fault::Site::Socket) {
        return Err(e);
    }
    // SAFETY: plain integers.
    let fd = syscall!(socket(domain, ty, 0))?;
    // SAFETY: `socket` just returned this descriptor; nobody else has it.
    Ok(unsafe { Fd::from_raw(fd) })
}

/// Binds `fd` to the IP address `addr` (`bind(2)`).
pub fn bind(fd: i32, addr: &SocketAddr) -> Result<(), Errno> {
    bind_to(fd, addr)
}

/// Binds `fd` to `addr` of any family: an IP [`SocketAddr`] or a
/// [`UnixAddr`](crate::addr::UnixAddr).
pub fn bind_to<A: SockAddr>(fd: i32, addr: &A) -> Result<(), Errno> {
    let (raw, len) = addr.to_raw();
    // SAFETY: `raw` holds `len` initialised bytes of a sockaddr of its
    // family and lives across the call.
    syscall!(bind(fd, (&raw as *const A::Raw).cast(), len)).map(drop)
}

/// Marks `fd` as accepting connections, with room for `backlog` pending
/// ones (`listen(2)`; the kernel caps it at `somaxconn`).
pub fn listen(fd: i32, backlog: i32) -> Result<(), Errno> {
    // SAFETY: plain integers.
    syscall!(listen(fd, backlog)).map(drop)
}

/// Connects `fd` to the IP address `addr` (`connect(2)`).
///
/// On a non-blocking socket the usual answer is `Err(Errno::INPROGRESS)`:
/// wait until it is writable, then read the outcome with
/// [`socket_error`]. `EINTR` is returned as it is, not retried: the
/// connection goes on in the background and a second `connect` would
/// answer `EALREADY`.
pub fn connect(fd: i32, addr: &SocketAddr) -> Result<(), Errno> {
    connect_to(fd, addr)
}

/// [`connect`] to `addr` of any family: an IP [`SocketAddr`] or a
/// [`UnixAddr`](crate::addr::UnixAddr).
///
/// A non-blocking Unix-domain connect has no handshake to wait for: it
/// succeeds or fails at once, and answers `EAGAIN` when the listener's
/// backlog is full.
pub fn connect_to<A: SockAddr>(fd: i32, addr: &A) -> Result<(), Errno> {
    let (raw, len) = addr.to_raw();
    // SAFETY: `raw` holds `len` initialised bytes of a sockaddr of its
    // family and lives across the call.
    syscall!(connect(fd, (&raw as *const A::Raw).cast(), len)).map(drop)
}

/// Takes one pending connection from the listener `fd` (`accept4(2)`,
/// close-on-exec, `SOCK_NONBLOCK` when `nonblocking`), retrying `EINTR`.
///
/// A non-blocking listener with nothing pending answers
/// `Err(Errno::AGAIN)`. `ECONNABORTED` (the peer gave up while queued) is
/// returned for the caller to skip.
pub fn accept(fd: i32, nonblocking: bool) -> Result<(Fd, SocketAddr), Errno> {
    let mut flags = libc::SOCK_CLOEXEC;
    if nonblocking {
        flags |= libc::SOCK_NONBLOCK;
    }
    let mut raw = RawAddr::zeroed();
    let mut len = RawAddr::CAPACITY;
    // SAFETY: `raw` is writable for `len` bytes; both live across the call.
    let new = syscall_retry!(accept4(fd, raw.as_mut_ptr(), &mut len, flags))?;
    // SAFETY: `accept4` just returned this descriptor; nobody else has it.
    let new = unsafe { Fd::from_raw(new) };
    // On error `new` is dropped, so closed.
    Ok((new, raw.to_socket_addr()?))
}

/// The IP address `fd` is bound to (`getsockname(2)`).
pub fn local_addr(fd: i32) -> Result<SocketAddr, Errno> {
    local_addr_of(fd)
}

/// The IP address `fd` is connected to (`getpeername(2)`); `ENOTCONN`
/// when it is not connected.
pub fn peer_addr(fd: i32) -> Result<SocketAddr, Errno> {
    peer_addr_of(fd)
}

/// The address of family `A` that `fd` is bound to (`getsockname(2)`);
/// `AFNOSUPPORT` when the socket is of another family.
pub fn local_addr_of<A: SockAddr>(fd: i32) -> Result<A, Errno> {
    let mut raw = A::raw_zeroed();
    let mut len = A::capacity();
    // SAFETY: `raw` is writable for `len` bytes; both live across the call.
    syscall!(getsockname(fd, (&mut raw as *mut A::Raw).cast(), &mut len))?;
    A::from_raw(&raw, len)
}

/// The address of family `A` that `fd` is connected to
/// (`getpeername(2)`); `ENOTCONN` when it is not connected.
pub fn peer_addr_of<A: SockAddr>(fd: i32) -> Result<A, Errno> {
    let mut raw = A::raw_zeroed();
    let mut len = A::capacity();
    // SAFETY: `raw` is writable for `len` bytes; both live across the call.
    syscall!(getpeername(fd, (&mut raw as *mut A::Raw).cast(), &mut len))?;
    A::from_raw(&raw, len)
}

/// Two connected Unix-domain sockets of type `ty` (`SOCK_STREAM`,
/// `SOCK_DGRAM`, `SOCK_SEQPACKET`), close-on-exec (`socketpair(2)`).
pub fn socketpair(ty: i32, nonblocking: bool) -> Result<(Fd, Fd), Errno> {
    let mut ty = ty | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    syscall!(socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()))?;
    // SAFETY: `socketpair` just returned both; nobody else has them.
    Ok(unsafe { (Fd::from_raw(fds[0]), Fd::from_raw(fds[1])) })
}

/// The credentials of the process at the other end of a Unix-domain
/// socket (`SO_PEERCRED`): as they were when it connected (or called
/// `socketpair`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Its process id.
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// `SO_PEERCRED` of `fd`.
pub fn peer_cred(fd: i32) -> Result<PeerCred, Errno> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` and `len` are writable, sized as passed, and live
    // across the call.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        (&mut c as *mut libc::ucred).cast(),
        &mut len
    ))?;
    Ok(PeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// Which directions [`shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more receiving (`SHUT_RD`): reads see end-of-file.
    Read,
    /// No more sending (`SHUT_WR`): the peer reads end-of-file once the
    /// data already sent has arrived.
    Write,
    /// Both (`SHUT_RDWR`).
    Both,
}

/// Closes one or both directions of a connected socket (`shutdown(2)`);
/// the descriptor stays open. `ENOTCONN` when it is not connected.
pub fn shutdown(fd: i32, how: Shutdown) -> Result<(), Errno> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: plain integers.
    syscall!(shutdown(fd, how)).map(drop)
}

/// `recv` without blocking (`MSG_DONTWAIT`), into `buf`: the count (0
/// at end of stream), or `EAGAIN` when nothing is there.
pub fn recv_nonblocking(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = crate::syscall_retry!(recv(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        libc::MSG_DONTWAIT
    ))?;
    Ok(n as usize)
}

/// `send` without blocking and without SIGPIPE (`MSG_DONTWAIT |
/// MSG_NOSIGNAL`): the count, or `EAGAIN` when the send buffer is full.
pub fn send_nonblocking(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = crate::syscall_retry!(send(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
    ))?;
    Ok(n as usize)
}

/// `setsockopt(2)` for an `int` option (`SO_REUSEADDR`, `TCP_NODELAY`,
/// `SO_SNDBUF`...).
pub fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) -> Result<(), Errno> {
    // SAFETY: `value` lives across the call and its size is passed with it.
    syscall!(setsockopt(
        fd,
        level,
        name,
        &value as *const i32 as *const libc::c_void,
        size_of::<i32>() as libc::socklen_t
    ))
    .map(drop)
}

/// `setsockopt(2)` for an option whose value is a byte string or a C
/// struct passed as its bytes (`SO_BINDTODEVICE`'s name, `ip_mreqn`,
/// `ipv6_mreq`).
pub fn set_bytes_opt(fd: i32, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `value` is readable for its length, passed with it.
    syscall!(setsockopt(
        fd,
        level,
        name,
        value.as_ptr() as *const libc::c_void,
        value.len() as libc::socklen_t
    ))
    .map(drop)
}

/// `getsockopt(2)` for an `int` option.
pub fn get_int_opt(fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are writable, sized as passed, and live
    // across the call.
    syscall!(getsockopt(
        fd,
        level,
        name,
        &mut value as *mut i32 as *mut libc::c_void,
        &mut len
    ))?;
    Ok(value)
}

/// The socket's pending error (`SO_ERROR`), which reading clears: after a
/// non-blocking [`connect`] became writable, `Ok(None)` means connected
/// and `Ok(Some(e))` is why it failed. `Err` is for the query itself.
pub fn socket_error(fd: i32) -> Result<Option<Errno>, Errno> {
    match get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(None),
        e => Ok(Some(Errno(e))),
    }
}

/// Sets or clears `O_NONBLOCK` on `fd` (any descriptor, not only
/// sockets). Writes the flags only when they change.
pub fn set_nonblocking(fd: i32, nonblocking: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an int and touches no memory.
        syscall!(fcntl(fd, libc::F_SETFL, new))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! The kernel boundary: the `syscall!` macro, owned descriptors and socket
//! addresses. Every `-1` becomes an [`Error`] here and nowhere else.

use core::mem::{size_of, zeroed};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use pinion_core::Error;

/// Calls `libc::$fn(args)` and turns `-1` into the calling thread's errno
/// as an [`Error`] (mio's `syscall!`). The call site's `// SAFETY:` comment
/// says why the arguments are valid for that system call.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: see the call site; the arguments are valid for this call.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err($crate::sys::last_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// The calling thread's errno.
#[inline]
pub(crate) fn errno() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

/// The calling thread's errno as an [`Error`].
#[inline]
pub(crate) fn last_error() -> Error {
    Error::from_errno(errno())
}

/// An owned file descriptor, closed on drop (no_std's `OwnedFd`).
#[derive(Debug)]
pub(crate) struct Fd(i32);

impl Fd {
    /// Takes ownership of `fd`.
    ///
    /// # Safety
    /// `fd` is an open descriptor that nothing else owns or will close.
    #[inline]
    pub(crate) unsafe fn from_raw(fd: i32) -> Fd {
        debug_assert!(fd >= 0);
        Fd(fd)
    }

    /// The descriptor number.
    #[inline]
    pub(crate) fn raw(&self) -> i32 {
        self.0
    }

    /// Gives up ownership without closing.
    #[inline]
    pub(crate) fn into_raw(self) -> i32 {
        let fd = self.0;
        core::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // Errors from close (EINTR, EIO) cannot be acted on; the descriptor
        // is released either way on Linux.
        let _ = syscall!(close(self.0));
    }
}

/// Room for an IPv4 or IPv6 socket address, as the kernel reads and
/// writes it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// All zeroes: `AF_UNSPEC`.
    #[inline]
    pub(crate) fn zeroed() -> RawAddr {
        // SAFETY: both members are plain integers; all-zero is valid.
        unsafe { zeroed() }
    }

    /// Pointer for `bind`, `connect`, `sendto`.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        self as *const RawAddr as *const libc::sockaddr
    }

    /// Pointer for `accept4`, `recvfrom`, `getsockname`.
    #[inline]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        self as *mut RawAddr as *mut libc::sockaddr
    }

    /// The full size, as the in/out length argument.
    pub(crate) const CAPACITY: libc::socklen_t = size_of::<RawAddr>() as libc::socklen_t;

    /// Encodes `addr`; returns the length to pass with it.
    pub(crate) fn from_socket_addr(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
        let mut raw = RawAddr::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                raw.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                (raw, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                raw.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                (raw, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }

    /// Decodes what the kernel wrote; `OperationNotSupported` for families
    /// other than IPv4 and IPv6.
    pub(crate) fn socket_addr(&self) -> Result<SocketAddr, Error> {
        // SAFETY: the family field sits at the same offset in both members
        // and every bit pattern is a valid integer.
        let family = unsafe { self.v4.sin_family } as i32;
        match family {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family says so).
                let a = unsafe { self.v4 };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family says so).
                let a = unsafe { self.v6 };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(Error::OperationNotSupported),
        }
    }
}

/// The address family for `addr`.
#[inline]
pub(crate) fn family(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// A new non-blocking, close-on-exec socket.
pub(crate) fn socket(domain: i32, ty: i32) -> Result<Fd, Error> {
    let fd = syscall!(socket(
        domain,
        ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: `socket` just returned this descriptor; nobody else has it.
    Ok(unsafe { Fd::from_raw(fd) })
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) -> Result<(), Error> {
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

/// `getsockopt` with an `int` value.
pub(crate) fn get_int_opt(fd: i32, level: i32, name: i32) -> Result<i32, Error> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live, writable and sized as passed.
    syscall!(getsockopt(
        fd,
        level,
        name,
        &mut value as *mut i32 as *mut libc::c_void,
        &mut len
    ))?;
    Ok(value)
}

/// `getsockname` (`peer == false`) or `getpeername`.
pub(crate) fn sock_addr(fd: i32, peer: bool) -> Result<SocketAddr, Error> {
    let mut raw = RawAddr::zeroed();
    let mut len = RawAddr::CAPACITY;
    if peer {
        // SAFETY: `raw` is writable for `len` bytes; `len` is live.
        syscall!(getpeername(fd, raw.as_mut_ptr(), &mut len))?;
    } else {
        // SAFETY: as above.
        syscall!(getsockname(fd, raw.as_mut_ptr(), &mut len))?;
    }
    raw.socket_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let addrs: [SocketAddr; 2] = [
            "127.0.0.1:7000".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        ];
        for a in addrs {
            let (raw, len) = RawAddr::from_socket_addr(&a);
            assert!(len <= RawAddr::CAPACITY);
            assert_eq!(raw.socket_addr(), Ok(a));
        }
        assert_eq!(
            RawAddr::zeroed().socket_addr(),
            Err(Error::OperationNotSupported)
        );
    }
}

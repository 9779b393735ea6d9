//! The kernel boundary that is not io_uring: sockets, socket options,
//! addresses. Every `-1` becomes an [`Error`] in one place ([`syscall!`]).

use core::mem::{size_of, zeroed};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use pinion_core::{Error, Result};

/// The calling thread's `errno` as an [`Error`].
pub(crate) fn last_error() -> Error {
    Error::from_errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// Calls a libc function, turning `-1` into `Err(last_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes valid pointers and lengths for
        // the duration of the call (see each caller).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err($crate::sys::last_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// A socket address in the form the kernel takes: big enough for IPv4 and
/// IPv6, small enough to live in an operation slot (28 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// Room for either family, all zero.
    pub(crate) fn zeroed() -> Self {
        // SAFETY: both members are plain integers; zero is valid.
        unsafe { zeroed() }
    }

    /// Capacity in bytes, as the kernel's `socklen_t`.
    pub(crate) const CAPACITY: libc::socklen_t = size_of::<RawAddr>() as libc::socklen_t;

    /// The kernel form of `addr` and its length.
    pub(crate) fn from_std(addr: SocketAddr) -> (Self, libc::socklen_t) {
        let mut raw = Self::zeroed();
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

    /// The address the kernel wrote, if it is IPv4 or IPv6.
    pub(crate) fn to_socket_addr(self) -> Option<SocketAddr> {
        // SAFETY: the family field sits at the same offset in both members
        // and every bit pattern is a valid integer.
        let family = unsafe { self.v4.sin_family } as i32;
        match family {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family says so).
                let a = unsafe { self.v4 };
                let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family says so).
                let a = unsafe { self.v6 };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        self as *const Self as *const libc::sockaddr
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        self as *mut Self as *mut libc::sockaddr
    }
}

fn family(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// A new close-on-exec socket for `addr`'s family. Blocking mode: io_uring
/// tries each operation without blocking and arms a poll itself.
pub(crate) fn socket(addr: &SocketAddr, ty: i32) -> Result<i32> {
    syscall!(socket(family(addr), ty | libc::SOCK_CLOEXEC, 0))
}

/// Closes `fd`, ignoring errors (there is nothing to do about them).
pub(crate) fn close(fd: i32) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe { libc::close(fd) };
}

pub(crate) fn set_opt_int(fd: i32, level: i32, name: i32, v: i32) -> Result<()> {
    syscall!(setsockopt(
        fd,
        level,
        name,
        &v as *const i32 as *const libc::c_void,
        size_of::<i32>() as libc::socklen_t
    ))
    .map(drop)
}

pub(crate) fn bind(fd: i32, addr: &SocketAddr) -> Result<()> {
    let (raw, len) = RawAddr::from_std(*addr);
    syscall!(bind(fd, raw.as_ptr(), len)).map(drop)
}

pub(crate) fn listen(fd: i32, backlog: i32) -> Result<()> {
    syscall!(listen(fd, backlog)).map(drop)
}

pub(crate) fn local_addr(fd: i32) -> Result<SocketAddr> {
    let mut raw = RawAddr::zeroed();
    let mut len = RawAddr::CAPACITY;
    syscall!(getsockname(fd, raw.as_mut_ptr(), &mut len))?;
    raw.to_socket_addr().ok_or(Error::OperationNotSupported)
}

pub(crate) fn peer_addr(fd: i32) -> Result<SocketAddr> {
    let mut raw = RawAddr::zeroed();
    let mut len = RawAddr::CAPACITY;
    syscall!(getpeername(fd, raw.as_mut_ptr(), &mut len))?;
    raw.to_socket_addr().ok_or(Error::OperationNotSupported)
}

/// A close-on-exec eventfd: the proactor's interrupter. Blocking on
/// purpose: io_uring fails a read of an `O_NONBLOCK` file with `EAGAIN`
/// instead of arming a poll for it.
pub(crate) fn eventfd() -> Result<i32> {
    syscall!(eventfd(0, libc::EFD_CLOEXEC))
}

/// Adds one to an eventfd's counter (wakes its pending read).
pub(crate) fn eventfd_signal(fd: i32) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64. The counter cannot come
    // near overflow (every read resets it), so the write never blocks.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_addr_round_trips_both_families() {
        for a in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%2]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let (raw, len) = RawAddr::from_std(a);
            assert!(len <= RawAddr::CAPACITY);
            assert_eq!(raw.to_socket_addr(), Some(a));
        }
        assert_eq!(RawAddr::zeroed().to_socket_addr(), None);
    }
}

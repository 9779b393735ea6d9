//! Socket addresses as the kernel reads and writes them: [`RawAddr`] and
//! the conversions from and to [`core::net::SocketAddr`]; [`UnixAddr`] for
//! Unix-domain sockets; and [`SockAddr`], what the socket calls and the
//! backends' datagram operations need of either.

use core::fmt;
use core::mem::size_of;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::Errno;

mod unix;
pub use unix::{UnixAddr, UnixAddrError, MAX_NAME};

/// An address family's socket address and its kernel form, so that one
/// `bind`, `connect`, `sendto` or `recvfrom` serves every family. An
/// operation in flight keeps the [`Raw`](Self::Raw) form in its slot: 28
/// bytes for IP, 110 for Unix.
pub trait SockAddr: Sized + Copy + Send + 'static {
    /// The kernel's layout, with room for any address of the family.
    type Raw: Copy + Send + 'static;

    /// The `domain` argument of `socket(2)`.
    fn domain(&self) -> i32;

    /// The kernel form and the length to pass with it.
    fn to_raw(&self) -> (Self::Raw, libc::socklen_t);

    /// Room for the kernel to write an address into.
    fn raw_zeroed() -> Self::Raw;

    /// The address the kernel wrote, `len` bytes of it (as the kernel
    /// reported: possibly more than `Raw` holds, when it cut the name);
    /// `AFNOSUPPORT` for another family.
    fn from_raw(raw: &Self::Raw, len: libc::socklen_t) -> Result<Self, Errno>;

    /// The size of [`Raw`](Self::Raw), as the in/out length of `accept4`,
    /// `recvfrom`, `getsockname`.
    fn capacity() -> libc::socklen_t {
        size_of::<Self::Raw>() as libc::socklen_t
    }
}

impl SockAddr for SocketAddr {
    type Raw = RawAddr;

    fn domain(&self) -> i32 {
        family(self)
    }

    fn to_raw(&self) -> (RawAddr, libc::socklen_t) {
        RawAddr::from_socket_addr(self)
    }

    fn raw_zeroed() -> RawAddr {
        RawAddr::zeroed()
    }

    fn from_raw(raw: &RawAddr, _: libc::socklen_t) -> Result<Self, Errno> {
        raw.to_socket_addr()
    }
}

/// Room for one IPv4 or IPv6 socket address in the kernel's layout, for
/// `bind`, `connect`, `accept4`, `recvfrom`, `sendto`, `getsockname`...
///
/// 28 bytes, not a 128-byte `sockaddr_storage`: the backends keep one in
/// every accept, recvfrom and sendto operation, and those must fit a
/// 256-byte operation slot next to the user's handler. Decoding goes by
/// the family field. Unix sockets have their own form ([`UnixAddr`]), so
/// that IP operations do not carry its 110 bytes.
///
/// ```
/// use core::net::SocketAddr;
/// use pinion_sys::addr::RawAddr;
///
/// let a: SocketAddr = "[fe80::1%2]:443".parse().unwrap();
/// let (raw, len) = RawAddr::from_socket_addr(&a);
/// assert!(len <= RawAddr::CAPACITY);
/// assert_eq!(raw.to_socket_addr(), Ok(a));
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
pub union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

// The size the doc above promises, on every Linux architecture.
const _: () = assert!(size_of::<RawAddr>() == 28);

impl RawAddr {
    /// The size in bytes, as the in/out length argument of `accept4`,
    /// `recvfrom`, `getsockname` and `getpeername`.
    pub const CAPACITY: libc::socklen_t = size_of::<RawAddr>() as libc::socklen_t;

    /// All zeroes: family `AF_UNSPEC`, for the kernel to write into.
    #[inline]
    pub fn zeroed() -> RawAddr {
        // SAFETY: both members are plain integers, for which all-zero
        // bytes are valid.
        unsafe { core::mem::zeroed() }
    }

    /// The kernel form of `addr` and the length to pass with it.
    pub fn from_socket_addr(addr: &SocketAddr) -> (RawAddr, libc::socklen_t) {
        match addr {
            SocketAddr::V4(a) => {
                let v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        // Octets are already in network order.
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // Start from zeroes so the bytes past the member are too.
                let mut raw = RawAddr::zeroed();
                raw.v4 = v4;
                (raw, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                let raw = RawAddr {
                    v6: libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: a.port().to_be(),
                        // Host order in SocketAddrV6, as in the kernel's
                        // struct: the kernel keeps it as the user gave it.
                        sin6_flowinfo: a.flowinfo(),
                        sin6_addr: libc::in6_addr {
                            s6_addr: a.ip().octets(),
                        },
                        sin6_scope_id: a.scope_id(),
                    },
                };
                (raw, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }

    /// The address the kernel wrote; `Err(Errno::AFNOSUPPORT)` for a family
    /// other than IPv4 and IPv6 (including a still-zeroed `RawAddr`).
    pub fn to_socket_addr(&self) -> Result<SocketAddr, Errno> {
        match self.family() as i32 {
            libc::AF_INET => {
                // SAFETY: the family field says a sockaddr_in was written,
                // and any bytes are valid for its integer fields.
                let a = unsafe { self.v4 };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { self.v6 };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(Errno::AFNOSUPPORT),
        }
    }

    /// The family field (`AF_INET`, `AF_INET6`, `AF_UNSPEC`...).
    #[inline]
    pub fn family(&self) -> libc::sa_family_t {
        // SAFETY: every member starts with the family field (the kernel's
        // `sockaddr` layout), and any bytes are a valid integer.
        unsafe { self.v4.sin_family }
    }

    /// Pointer for `bind`, `connect`, `sendto`.
    #[inline]
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        self as *const RawAddr as *const libc::sockaddr
    }

    /// Pointer for `accept4`, `recvfrom`, `getsockname`, `getpeername`:
    /// pass [`RawAddr::CAPACITY`] as the length.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        self as *mut RawAddr as *mut libc::sockaddr
    }
}

impl fmt::Debug for RawAddr {
    /// The decoded address, or the family number when it is not IP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_socket_addr() {
            Ok(a) => f.debug_tuple("RawAddr").field(&a).finish(),
            Err(_) => f
                .debug_struct("RawAddr")
                .field("family", &self.family())
                .finish(),
        }
    }
}

/// The address family for `addr`: `AF_INET` or `AF_INET6`, the `domain`
/// argument of [`socket`](crate::socket::socket).
#[inline]
pub fn family(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(a: SocketAddr) {
        let (raw, len) = RawAddr::from_socket_addr(&a);
        let want = match a {
            SocketAddr::V4(_) => size_of::<libc::sockaddr_in>(),
            SocketAddr::V6(_) => size_of::<libc::sockaddr_in6>(),
        };
        assert_eq!(len as usize, want);
        assert!(len <= RawAddr::CAPACITY);
        assert_eq!(raw.family() as i32, family(&a));
        assert_eq!(raw.to_socket_addr(), Ok(a));
        // Copies decode the same (the union is `Copy`).
        let copy = raw;
        assert_eq!(copy.to_socket_addr(), Ok(a));
    }

    #[test]
    fn v4_round_trips() {
        for a in ["127.0.0.1:7000", "0.0.0.0:0", "255.255.255.255:65535"] {
            round_trip(a.parse().unwrap());
        }
        let a: SocketAddr = "10.1.2.3:258".parse().unwrap();
        let (raw, _) = RawAddr::from_socket_addr(&a);
        // SAFETY: `from_socket_addr` wrote the v4 member.
        let v4 = unsafe { raw.v4 };
        // Network byte order in memory: most significant byte first.
        assert_eq!(v4.sin_port.to_ne_bytes(), [1, 2]);
        assert_eq!(v4.sin_addr.s_addr.to_ne_bytes(), [10, 1, 2, 3]);
    }

    #[test]
    fn v6_round_trips_with_scope_id_and_flowinfo() {
        for a in [
            "[::1]:443",
            "[::]:0",
            "[fe80::1%2]:9",
            "[::ffff:1.2.3.4]:80",
        ] {
            round_trip(a.parse().unwrap());
        }
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        round_trip(SocketAddr::V6(SocketAddrV6::new(ip, 8080, 0x000a_bcde, 42)));
        round_trip(SocketAddr::V6(SocketAddrV6::new(ip, 1, u32::MAX, u32::MAX)));
    }

    #[test]
    fn other_families_are_not_supported() {
        let zero = RawAddr::zeroed();
        assert_eq!(zero.family() as i32, libc::AF_UNSPEC);
        assert_eq!(zero.to_socket_addr(), Err(Errno::AFNOSUPPORT));
        let mut unix = RawAddr::zeroed();
        unix.v4.sin_family = libc::AF_UNIX as libc::sa_family_t;
        assert_eq!(unix.to_socket_addr(), Err(Errno::AFNOSUPPORT));
        assert_eq!(
            std::format!("{unix:?}"),
            std::format!("RawAddr {{ family: {} }}", libc::AF_UNIX)
        );
    }

    #[test]
    fn pointers_are_the_union_itself() {
        let mut raw = RawAddr::zeroed();
        let at = &raw as *const RawAddr as usize;
        assert_eq!(raw.as_ptr() as usize, at);
        assert_eq!(raw.as_mut_ptr() as usize, at);
        assert_eq!(RawAddr::CAPACITY, 28);
    }
}

//! Sockets, written once over the backend contract and generic over the
//! address family ([`Family`]: [`Ip`] or [`Unix`]), as Asio's socket
//! templates are over their protocol: [`Listener`], [`StreamSocket`] and
//! [`DatagramSocket`], named [`TcpListener`], [`TcpStream`], [`UdpSocket`]
//! for IP and [`UnixListener`], [`UnixStream`], [`UnixDatagram`] for
//! Unix-domain sockets. Reads, writes, the composed operations, futures,
//! cancel and close are the same code for both; each family adds its own
//! constructors and options.
//!
//! Every type here is a `Copy` handle `(context, key)` into the context's
//! descriptor table. A handle is stale once its socket is closed: every
//! call on it answers [`Error::BadDescriptor`]
//! (an initiating call hands handler and buffer back), under every
//! interleaving with a close on another thread. An operation started on a
//! handle runs on the socket the handle named, or is refused, or is
//! aborted by the close; it never reaches the socket that reuses the slot.

use core::fmt;
use core::net::SocketAddr;

use pinion_core::backend::{Backend, Fd, Key, Sched};
use pinion_core::{Error, Rejected, Result};
use pinion_sys::addr::{family, SockAddr};
use pinion_sys::socket;

mod datagram;
mod inherit;
mod opts;
mod stream;
mod unix;

#[cfg(feature = "std")]
pub use inherit::listen_fds;
pub use inherit::{listen_fds_from, LISTEN_FDS_START};
pub use opts::{BindOptions, KeepAlive};

pub use datagram::DatagramSocket;
pub use pinion_sys::addr::{UnixAddr, UnixAddrError};
pub use pinion_sys::socket::{PeerCred, Shutdown};
pub use stream::{Listener, StreamSocket, DEFAULT_BACKLOG};

/// A listening TCP socket.
pub type TcpListener<'c, B> = Listener<'c, B, Ip>;
/// A connected TCP socket.
pub type TcpStream<'c, B> = StreamSocket<'c, B, Ip>;
/// A UDP socket.
pub type UdpSocket<'c, B> = DatagramSocket<'c, B, Ip>;
/// A listening Unix-domain stream socket (a path or an abstract name).
pub type UnixListener<'c, B> = Listener<'c, B, Unix>;
/// A connected Unix-domain stream socket.
pub type UnixStream<'c, B> = StreamSocket<'c, B, Unix>;
/// A Unix-domain datagram socket.
///
/// **Room in the operation slot.** A send or receive keeps the peer's
/// address (a 110-byte `sockaddr_un`) in its operation slot, and on
/// io_uring the `msghdr` and iovec the kernel reads after the call too, so
/// the buffer and the handler share what is left of the
/// [`OP_SLOT_SIZE`](crate::OP_SLOT_SIZE)-byte slot: on 64-bit targets
/// **40 bytes on io_uring** (a `Vec<u8>` and a handler holding one socket
/// handle, or a `&'static [u8]` and 24 bytes of captures) and 96 on epoll
/// (measured by each backend's unit test). An operation that does not
/// fit does not compile ("does not fit in an OP_SLOT_SIZE slot"): capture
/// a `&'static` state or an index instead of several handles, or use a
/// connected socket's `async_send`, which needs no address.
pub type UnixDatagram<'c, B> = DatagramSocket<'c, B, Unix>;

mod sealed {
    pub trait Sealed {}
}

/// An address family the socket types are generic over: [`Ip`] (IPv4 and
/// IPv6) or [`Unix`]. Sealed.
pub trait Family: sealed::Sealed + Send + Sync + 'static {
    /// Its socket address: [`SocketAddr`] or [`UnixAddr`].
    type Addr: SockAddr + fmt::Debug + PartialEq;

    /// How its types print (`Debug`).
    #[doc(hidden)]
    const NAMES: Names;

    /// The peer of a connection accepted on socket `key`, from what the
    /// backend reported (an IP address, or the unspecified one for a
    /// peer that has none).
    #[doc(hidden)]
    fn accepted_peer<B: Backend>(reported: SocketAddr, sched: &Sched<B>, key: Key) -> Self::Addr;
}

/// The type names of a family, for `Debug`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Names {
    pub(crate) listener: &'static str,
    pub(crate) stream: &'static str,
    pub(crate) datagram: &'static str,
}

/// IPv4 and IPv6: TCP streams and UDP datagrams.
#[derive(Clone, Copy, Debug)]
pub enum Ip {}

/// Unix-domain sockets: filesystem paths and Linux abstract names.
#[derive(Clone, Copy, Debug)]
pub enum Unix {}

impl sealed::Sealed for Ip {}
impl sealed::Sealed for Unix {}

impl Family for Ip {
    type Addr = SocketAddr;
    const NAMES: Names = Names {
        listener: "TcpListener",
        stream: "TcpStream",
        datagram: "UdpSocket",
    };

    #[inline(always)]
    fn accepted_peer<B: Backend>(reported: SocketAddr, _: &Sched<B>, _: Key) -> SocketAddr {
        reported
    }
}

impl Family for Unix {
    type Addr = UnixAddr;
    const NAMES: Names = Names {
        listener: "UnixListener",
        stream: "UnixStream",
        datagram: "UnixDatagram",
    };

    /// The backend has no room for a Unix address in an accept: asked of
    /// the new socket (almost always unnamed: clients seldom bind).
    fn accepted_peer<B: Backend>(_: SocketAddr, sched: &Sched<B>, key: Key) -> UnixAddr {
        sched
            .task()
            .with_fd(key, |fd| Ok(socket::peer_addr_of(fd)?))
            .unwrap_or_else(|_| UnixAddr::unnamed())
    }
}

/// A socket for `addr`'s family and type `ty`, blocking or not as the
/// backend wants it.
pub(crate) fn open_socket<B: Backend>(addr: &SocketAddr, ty: i32) -> Result<Fd> {
    Ok(socket::socket(family(addr), ty, !B::BLOCKING_SOCKETS)?)
}

/// A refusal handing `value` back.
#[cold]
fn refuse<T>(error: Error, value: T) -> Rejected<T> {
    Rejected {
        error,
        handler: value,
    }
}

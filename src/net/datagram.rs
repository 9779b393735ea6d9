//! Datagram sockets of either family, written once over the backend
//! contract: [`DatagramSocket`] (Asio's `basic_datagram_socket`), named
//! [`UdpSocket`] for IP and [`UnixDatagram`](super::UnixDatagram) for
//! Unix-domain sockets.

use core::marker::PhantomData;
use core::net::SocketAddr;

use pinion_core::backend::{At, Backend, DescKind, Key};
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::{Error, Rejected, Result};
use pinion_sys::socket as sys;

use super::{open_socket, refuse, Family, UdpSocket};
use crate::context::IoContext;
use crate::handler::{io_back, Io, Single};

/// A datagram socket of family `P` ([`UdpSocket`],
/// [`UnixDatagram`](super::UnixDatagram)): a `Copy` handle into its
/// context's descriptor table.
///
/// ```
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// let any = "127.0.0.1:0".parse().unwrap();
/// let (a, b) = (pinion::UdpSocket::bind(ctx, any).unwrap(), pinion::UdpSocket::bind(ctx, any).unwrap());
/// let from = a.local_addr().unwrap();
/// b.async_receive_from(Vec::with_capacity(64), move |r, buf| {
///     assert_eq!(r, Ok((4, from)));
///     assert_eq!(buf, b"ping");
///     b.close().unwrap();
/// })
/// .unwrap();
/// a.async_send_to(&b"ping"[..], b.local_addr().unwrap(), move |r, _| {
///     assert_eq!(r, Ok(4));
///     a.close().unwrap();
/// })
/// .unwrap();
/// ctx.run();
/// ```
pub struct DatagramSocket<'c, B: Backend, P: Family> {
    ctx: &'c IoContext<B>,
    key: Key,
    _f: PhantomData<fn() -> P>,
}

impl<B: Backend, P: Family> Clone for DatagramSocket<'_, B, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend, P: Family> Copy for DatagramSocket<'_, B, P> {}

impl<B: Backend, P: Family> core::fmt::Debug for DatagramSocket<'_, B, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple(P::NAMES.datagram).field(&self.key).finish()
    }
}

impl<'c, B: Backend> UdpSocket<'c, B> {
    /// A socket bound to `addr` (port 0: the kernel picks one).
    pub fn bind(ctx: &'c IoContext<B>, addr: SocketAddr) -> Result<Self> {
        let fd = open_socket::<B>(&addr, libc::SOCK_DGRAM)?;
        sys::bind(fd.raw(), &addr)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Datagram)?;
        Ok(UdpSocket::from_key(ctx, key))
    }
}

impl<'c, B: Backend, P: Family> DatagramSocket<'c, B, P> {
    /// The descriptor's key (for the futures in `aio`).
    #[inline(always)]
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    pub(crate) fn from_key(ctx: &'c IoContext<B>, key: Key) -> Self {
        DatagramSocket {
            ctx,
            key,
            _f: PhantomData,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<P::Addr> {
        self.with_fd(|fd| Ok(sys::local_addr_of(fd)?))
    }

    /// Sends `buf` as one datagram to `to`; the handler gets the bytes sent
    /// and the buffer back.
    pub fn async_send_to<Buf, F>(
        &self, buf: Buf, to: P::Addr, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        B::send_to(self.at(), buf, to, Io(handler)).map_err(io_back)
    }

    /// Receives one datagram into `buf`'s room: the handler gets its
    /// length and sender (a datagram longer than the room is cut to it, as
    /// `recvfrom` does). A buffer with no room is refused with
    /// `BufferFull`.
    pub fn async_receive_from<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBufMut,
        F: FnOnce(Result<(usize, P::Addr)>, Buf) + Send + 'static,
    {
        if buf.spare() == 0 {
            return Err(refuse(Error::BufferFull, (buf, handler)));
        }
        B::recv_from(self.at(), buf, Io(handler)).map_err(io_back)
    }

    /// Sets the default peer (`connect(2)` on a datagram socket, which
    /// completes at once): [`async_send`](Self::async_send) goes there, and
    /// only its datagrams are received.
    pub fn connect(&self, peer: &P::Addr) -> Result<()> {
        self.with_fd(|fd| Ok(sys::connect_to(fd, peer)?))
    }

    /// The peer set by [`connect`](Self::connect) (`ENOTCONN` without
    /// one), or the other end of a pair.
    pub fn peer_addr(&self) -> Result<P::Addr> {
        self.with_fd(|fd| Ok(sys::peer_addr_of(fd)?))
    }

    /// Sends `buf` as one datagram to the connected peer (see
    /// [`connect`](Self::connect)); `Os(EDESTADDRREQ)` without one.
    pub fn async_send<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        B::write_some_vectored(self.at(), [buf], Single(handler))
            .map_err(|r| r.map(|([buf], h)| (buf, h.0)))
    }

    /// Every pending operation completes with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        B::cancel(self.at())
    }

    /// Cancels pending operations, closes the socket, frees its descriptor.
    pub fn close(&self) -> Result<()> {
        B::close(self.at())
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.with_fd(Ok).unwrap_or(-1)
    }

    /// The context this socket belongs to.
    pub fn context(&self) -> &'c IoContext<B> {
        self.ctx
    }

    #[inline(always)]
    pub(crate) fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx.sched().task().with_fd(self.key, f)
    }

    fn at(&self) -> At<'c, B> {
        At {
            sched: self.ctx.sched(),
            key: self.key,
        }
    }
}

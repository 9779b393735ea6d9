//! The socket futures: accept, connect, read, write, and the composed
//! `read_exact`, `write_all`, `read_until`; datagram `send_to`/`recv_from`.
//! The same for both families, but TCP's connect.

use core::marker::PhantomData;
use core::net::SocketAddr;

use pinion_core::backend::{At, Backend, DescKind, Key, Readiness, SockAddr};
use pinion_core::buf::{IoBuf, IoBufMut, Slice};
use pinion_core::compose::DelimSearch;
use pinion_core::{Error, Result};

use super::Waiter;
use super::{Op, Refusal, Start};
use crate::context::IoContext;
use crate::handler::AcceptedConn;
use crate::net::{open_socket, DatagramSocket, Family, Ip, Listener, StreamSocket, TcpStream};
use crate::owned::Owned;

/// `TcpStream::read`: one `read_some`.
pub type Read<'c, B, Buf> = Op<'c, B, ReadSome<Buf>>;
/// `TcpStream::write`: one `write_some`.
pub type Write<'c, B, Buf> = Op<'c, B, WriteSome<Buf>>;
/// `Listener::accept` (TCP's by default).
pub type Accept<'c, B, P = Ip> = Op<'c, B, AcceptOne<P>>;
/// `DatagramSocket::send_to`, to an address `A` (UDP's by default).
pub type SendTo<'c, B, Buf, A = SocketAddr> = Op<'c, B, SendOne<Buf, A>>;
/// `DatagramSocket::recv_from`, from an address `A` (UDP's by default).
pub type RecvFrom<'c, B, Buf, A = SocketAddr> = Op<'c, B, RecvOne<Buf, A>>;
/// `DatagramSocket::send`: a datagram to the connected peer.
pub type SendDatagram<'c, B, Buf> = Op<'c, B, SendConnected<Buf>>;
/// `DatagramSocket::recv`: a datagram from the connected peer, without
/// its address.
pub type Recv<'c, B, Buf, A = SocketAddr> = Op<'c, B, RecvOnly<Buf, A>>;
/// `TcpStream::connect`'s operation.
pub type Connect<'c, B> = Op<'c, B, ConnectTo>;
/// `TcpStream::ready`: a readiness wait.
pub type Ready<'c, B> = Op<'c, B, WaitFor>;

/// The start of a read.
pub struct ReadSome<Buf>(Buf);
/// The start of a write.
pub struct WriteSome<Buf>(Buf);
/// The start of an accept on a listener of family `P`.
pub struct AcceptOne<P = Ip>(PhantomData<fn() -> P>);
/// The start of a datagram send.
pub struct SendOne<Buf, A = SocketAddr>(Buf, A);
/// The start of a datagram receive.
pub struct RecvOne<Buf, A = SocketAddr>(Buf, PhantomData<fn() -> A>);
/// The start of a datagram send to the connected peer (a one-element
/// gather write, so an empty datagram is sent on every backend).
pub struct SendConnected<Buf>(Buf);
/// The start of a datagram receive whose sender is not wanted.
pub struct RecvOnly<Buf, A = SocketAddr>(RecvOne<Buf, A>);
/// The start of a connect.
pub struct ConnectTo(SocketAddr);
/// The start of a readiness wait.
pub struct WaitFor(pub(crate) Readiness);

impl<'c, B: Backend> Start<'c, B> for WaitFor {
    type Value = Result<()>;
    type Output = Result<()>;

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        B::wait(at, self.0, h).map_err(|r| (r.error, self, r.handler))
    }
    fn refused(self, error: Error) -> Self::Output {
        Err(error)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, Buf: IoBufMut> Start<'c, B> for ReadSome<Buf> {
    type Value = (Result<usize>, Buf);
    type Output = (Result<usize>, Buf);

    // Inlined into the future's poll: the start is most of that poll.
    #[inline(always)]
    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        if self.0.spare() == 0 {
            return Err((Error::BufferFull, self, h));
        }
        B::read_some(at, self.0, h).map_err(|r| (r.error, ReadSome(r.handler.0), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, Buf: IoBuf> Start<'c, B> for WriteSome<Buf> {
    type Value = (Result<usize>, Buf);
    type Output = (Result<usize>, Buf);
    const NOW: bool = true;

    #[inline(always)]
    fn now(self, at: At<'_, B>) -> core::result::Result<Self::Value, Self> {
        match B::write_now(at, &self.0) {
            Some(r) => Ok((r, self.0)),
            None => Err(self),
        }
    }

    // Inlined into the future's poll: the start is most of that poll.
    #[inline(always)]
    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        B::write_some(at, self.0, h).map_err(|r| (r.error, WriteSome(r.handler.0), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, P: Family> Start<'c, B> for AcceptOne<P> {
    type Value = AcceptedConn<'c, B, P>;
    type Output = AcceptedConn<'c, B, P>;

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        B::accept(at, h).map_err(|r| (r.error, self, r.handler))
    }
    fn refused(self, error: Error) -> Self::Output {
        Err(error)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, Buf: IoBuf, A: SockAddr> Start<'c, B> for SendOne<Buf, A> {
    type Value = (Result<usize>, Buf);
    type Output = (Result<usize>, Buf);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        let to = self.1;
        B::send_to(at, self.0, to, h).map_err(|r| (r.error, SendOne(r.handler.0, to), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, Buf: IoBufMut, A: SockAddr> Start<'c, B> for RecvOne<Buf, A> {
    type Value = (Result<(usize, A)>, Buf);
    type Output = (Result<(usize, A)>, Buf);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        if self.0.spare() == 0 {
            return Err((Error::BufferFull, self, h));
        }
        B::recv_from(at, self.0, h)
            .map_err(|r| (r.error, RecvOne(r.handler.0, PhantomData), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, Buf: IoBuf> Start<'c, B> for SendConnected<Buf> {
    type Value = (Result<usize>, [Buf; 1]);
    type Output = (Result<usize>, Buf);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        B::write_some_vectored(at, [self.0], h).map_err(|r| {
            let ([buf], h) = r.handler;
            (r.error, SendConnected(buf), h)
        })
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, (r, [buf]): Self::Value) -> Self::Output {
        (r, buf)
    }
}

impl<'c, B: Backend, Buf: IoBufMut, A: SockAddr> Start<'c, B> for RecvOnly<Buf, A> {
    type Value = (Result<(usize, A)>, Buf);
    type Output = (Result<usize>, Buf);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        self.0.start(at, h).map_err(|(e, s, h)| (e, RecvOnly(s), h))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), (self.0).0)
    }
    fn output(_: &'c IoContext<B>, (r, buf): Self::Value) -> Self::Output {
        (r.map(|(n, _)| n), buf)
    }
}

impl<'c, B: Backend> Start<'c, B> for ConnectTo {
    type Value = Result<()>;
    /// On failure the socket is closed: the key is only a stream on success.
    type Output = Result<()>;

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        let addr = self.0;
        B::connect(at, addr, h).map_err(|r| (r.error, ConnectTo(addr), r.handler))
    }
    fn refused(self, error: Error) -> Self::Output {
        Err(error)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
    /// A connect given up before it finished leaves no socket behind.
    fn dropped(ctx: &'c IoContext<B>, key: Key) {
        let _ = B::close(At {
            sched: ctx.sched(),
            key,
        });
    }
}

impl<'c, B: Backend, P: Family> Listener<'c, B, P> {
    /// Accepts one connection: the stream (closed when dropped) and the
    /// peer's address. Errors as for [`async_accept`](Self::async_accept).
    /// Dropping the future cancels this accept only; a connection accepted
    /// meanwhile is closed.
    pub fn accept(&self) -> Accept<'c, B, P> {
        Op::new(self.context(), self.key(), AcceptOne(PhantomData))
    }
}

impl<'c, B: Backend> TcpStream<'c, B> {
    /// Connects to `addr`: the stream (closed when dropped), or the error
    /// (the socket is closed by then). Dropping the future closes the
    /// socket.
    pub async fn connect(
        ctx: &'c IoContext<B>, addr: SocketAddr,
    ) -> Result<Owned<TcpStream<'c, B>>> {
        let fd = open_socket::<B>(&addr, libc::SOCK_STREAM)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Stream)?;
        match Op::new(ctx, key, ConnectTo(addr)).await {
            Ok(()) => Ok(Owned::new(TcpStream::from_key(ctx, key))),
            Err(e) => {
                // The op gave its output, so its drop closes nothing.
                let _ = B::close(At {
                    sched: ctx.sched(),
                    key,
                });
                Err(e)
            }
        }
    }
}

impl<'c, B: Backend, P: Family> StreamSocket<'c, B, P> {
    /// Reads at most `buf.spare()` bytes into `buf`'s room; `Eof` when
    /// the peer has closed, `BufferFull` for a buffer with no room. The
    /// buffer comes back with the result. Dropping the future cancels
    /// the read (bytes it had already read are lost).
    pub fn read<Buf: IoBufMut>(&self, buf: Buf) -> Read<'c, B, Buf> {
        Op::new(self.context(), self.key(), ReadSome(buf))
    }

    /// Writes at most `buf.bytes_len()` bytes of `buf` (without SIGPIPE:
    /// a closed peer is `BrokenPipe`).
    pub fn write<Buf: IoBuf>(&self, buf: Buf) -> Write<'c, B, Buf> {
        Op::new(self.context(), self.key(), WriteSome(buf))
    }

    /// Waits until the stream is readable or writable (end of stream and
    /// errors count as ready). Nothing is read or written, so dropping
    /// the future loses nothing: the base of the cancel-safe
    /// `embedded-io-async` streams.
    pub fn ready(&self, what: Readiness) -> Ready<'c, B> {
        Op::new(self.context(), self.key(), WaitFor(what))
    }

    /// Reads what is there now into `buf`, without waiting: the count (0
    /// at end of stream), or `WouldBlock`.
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize> {
        self.with_fd(|fd| Ok(pinion_sys::socket::recv_nonblocking(fd, buf)?))
    }

    /// Writes what fits now, without waiting (and without SIGPIPE): the
    /// count, or `WouldBlock`.
    pub fn try_write(&self, buf: &[u8]) -> Result<usize> {
        self.with_fd(|fd| Ok(pinion_sys::socket::send_nonblocking(fd, buf)?))
    }

    /// Reads until `buf` has no room left: `Ok(())`, or the error with
    /// every byte read so far in the buffer (`Eof` if the peer closed
    /// first).
    pub async fn read_exact<Buf: IoBufMut>(&self, mut buf: Buf) -> (Result<()>, Buf) {
        while buf.spare() > 0 {
            let (r, b) = self.read(buf).await;
            buf = b;
            if let Err(e) = r {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    /// Writes every byte of `buf`, across partial writes.
    pub async fn write_all<Buf: IoBuf>(&self, buf: Buf) -> (Result<()>, Buf) {
        let mut rest = Slice::new(buf, 0);
        while rest.bytes_len() > 0 {
            let (r, s) = self.write(rest).await;
            rest = s;
            match r {
                Ok(0) => return (Err(Error::BrokenPipe), rest.into_inner()),
                Ok(n) => rest.consume(n),
                Err(e) => return (Err(e), rest.into_inner()),
            }
        }
        (Ok(()), rest.into_inner())
    }

    /// Reads into `buf` until its bytes contain `delim`: `Ok(n)`, `n`
    /// just past the first occurrence (later bytes stay in the buffer for
    /// the next call); `Err(NotFound)` when the buffer filled up without
    /// it; `Err(Eof)` when the peer closed first. Searches the bytes
    /// already in the buffer first, as the callback form does.
    pub async fn read_until<Buf: IoBufMut>(
        &self, mut buf: Buf, delim: &'static [u8],
    ) -> (Result<usize>, Buf) {
        let mut search = DelimSearch::new(delim);
        loop {
            if let Some(r) = search.outcome(&buf) {
                return (r, buf);
            }
            let (r, b) = self.read(buf).await;
            buf = b;
            if let Err(e) = r {
                return (Err(e), buf);
            }
        }
    }
}

impl<'c, B: Backend, P: Family> DatagramSocket<'c, B, P> {
    /// Sends `buf` as one datagram to `to`.
    pub fn send_to<Buf: IoBuf>(&self, buf: Buf, to: P::Addr) -> SendTo<'c, B, Buf, P::Addr> {
        Op::new(self.context(), self.key(), SendOne(buf, to))
    }

    /// Receives one datagram into `buf`'s room, with its sender.
    pub fn recv_from<Buf: IoBufMut>(&self, buf: Buf) -> RecvFrom<'c, B, Buf, P::Addr> {
        Op::new(self.context(), self.key(), RecvOne(buf, PhantomData))
    }

    /// Sends `buf` as one datagram to the connected peer (see
    /// [`connect`](Self::connect)); `Os(EDESTADDRREQ)` without one.
    pub fn send<Buf: IoBuf>(&self, buf: Buf) -> SendDatagram<'c, B, Buf> {
        Op::new(self.context(), self.key(), SendConnected(buf))
    }

    /// Receives one datagram into `buf`'s room: its length (a datagram
    /// of 0 bytes is `Ok(0)`, not the end of anything). For a connected
    /// socket or a pair, where the sender is known.
    pub fn recv<Buf: IoBufMut>(&self, buf: Buf) -> Recv<'c, B, Buf, P::Addr> {
        Op::new(
            self.context(),
            self.key(),
            RecvOnly(RecvOne(buf, PhantomData)),
        )
    }
}

//! Stream sockets of either family, written once over the backend
//! contract: [`Listener`] and [`StreamSocket`] (Asio's
//! `basic_socket_acceptor` and `basic_stream_socket`), named
//! [`TcpListener`]/[`TcpStream`] for IP and
//! [`UnixListener`](super::UnixListener)/[`UnixStream`](super::UnixStream)
//! for Unix-domain sockets. What only one family has (TCP's connect and
//! options, Unix paths and credentials) is in its own impl block.

use core::marker::PhantomData;
use core::net::SocketAddr;

use pinion_core::backend::{At, Backend, DescKind, Key};
use pinion_core::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut};
use pinion_core::compose::{
    post_value, AsyncReadSome, AsyncWriteSome, AsyncWriteSomeVectored, Post,
};
use pinion_core::pooled::PooledBuf;
use pinion_core::{Error, Pool, Rejected, Result};
use pinion_sys::socket::{self as sys, Shutdown};

use super::{open_socket, refuse, Family, TcpListener, TcpStream};
use crate::context::IoContext;
use crate::handler::{io_back, Accepted, Connected, Io, Pooled};

/// Listen backlog of [`TcpListener::bind`].
pub const DEFAULT_BACKLOG: i32 = 1024;

/// A listening stream socket of family `F` ([`TcpListener`],
/// [`UnixListener`](super::UnixListener)): a `Copy` handle into its
/// context's descriptor table. A handle whose socket was closed answers
/// [`Error::BadDescriptor`].
pub struct Listener<'c, B: Backend, P: Family> {
    ctx: &'c IoContext<B>,
    key: Key,
    _f: PhantomData<fn() -> P>,
}

/// A connected stream socket of family `F` ([`TcpStream`],
/// [`UnixStream`](super::UnixStream)): a `Copy` handle, like [`Listener`].
///
/// Handles are cheap to copy into handlers; [`close`](Self::close) is
/// explicit (as in Asio), or wrap one in [`Owned`](crate::Owned) to close
/// it when dropped. `examples/echo_server.rs` serves with
/// `async_read_some`/`async_write` (and `async_read_pooled` with
/// `--read-buffers N`).
///
/// An HTTP/1.0 GET (the server answers and closes, so the body ends at
/// end of stream):
///
/// ```
/// use pinion::compose::{async_read, async_write, Completion};
/// # let addr = { // a one-shot HTTP/1.0 server on loopback
/// #     use std::io::{Read, Write};
/// #     let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// #     let a = l.local_addr().unwrap();
/// #     std::thread::spawn(move || {
/// #         let (mut s, _) = l.accept().unwrap();
/// #         let mut req = [0u8; 512];
/// #         let _ = s.read(&mut req).unwrap();
/// #         s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
/// #     });
/// #     a
/// # };
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// pinion::TcpStream::async_connect(ctx, addr, move |s| {
///     let s = s.expect("connect");
///     async_write(&s, &b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"[..], move |r, _| {
///         r.expect("send the request");
///         let buf = Vec::with_capacity(4096);
///         async_read(&s, buf, Completion::TransferAll, move |r, reply| {
///             assert_eq!(r, Err(pinion::Error::Eof), "HTTP/1.0: the reply ends the stream");
///             let text = String::from_utf8_lossy(&reply);
///             assert!(text.starts_with("HTTP/1.0 200") && text.ends_with("hello"));
///             s.close().unwrap();
///         })
///         .unwrap();
///     })
///     .unwrap();
/// })
/// .unwrap();
/// ctx.run();
/// ```
pub struct StreamSocket<'c, B: Backend, P: Family> {
    ctx: &'c IoContext<B>,
    key: Key,
    _f: PhantomData<fn() -> P>,
}

impl<B: Backend, P: Family> Clone for Listener<'_, B, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend, P: Family> Copy for Listener<'_, B, P> {}
impl<B: Backend, P: Family> Clone for StreamSocket<'_, B, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend, P: Family> Copy for StreamSocket<'_, B, P> {}

impl<B: Backend, P: Family> core::fmt::Debug for Listener<'_, B, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple(P::NAMES.listener).field(&self.key).finish()
    }
}
impl<B: Backend, P: Family> core::fmt::Debug for StreamSocket<'_, B, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple(P::NAMES.stream).field(&self.key).finish()
    }
}

impl<'c, B: Backend> TcpListener<'c, B> {
    /// A listener on `addr` (`SO_REUSEADDR`, backlog [`DEFAULT_BACKLOG`]).
    pub fn bind(ctx: &'c IoContext<B>, addr: SocketAddr) -> Result<Self> {
        Self::bind_with_backlog(ctx, addr, DEFAULT_BACKLOG)
    }

    /// A listener on `addr` with the given listen backlog.
    pub fn bind_with_backlog(
        ctx: &'c IoContext<B>, addr: SocketAddr, backlog: i32,
    ) -> Result<Self> {
        let fd = open_socket::<B>(&addr, libc::SOCK_STREAM)?;
        sys::set_int_opt(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        sys::bind(fd.raw(), &addr)?;
        sys::listen(fd.raw(), backlog)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Listener)?;
        Ok(TcpListener::from_key(ctx, key))
    }
}

impl<'c, B: Backend, P: Family> Listener<'c, B, P> {
    /// The descriptor's key (for the futures in `aio`).
    #[inline(always)]
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    pub(crate) fn from_key(ctx: &'c IoContext<B>, key: Key) -> Self {
        Listener {
            ctx,
            key,
            _f: PhantomData,
        }
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Result<P::Addr> {
        self.with_fd(|fd| Ok(sys::local_addr_of(fd)?))
    }

    /// Accepts one connection: the handler gets the new stream and the
    /// peer's address (a Unix peer's is usually unnamed), or the error
    /// (`TooManyOpenFiles` at the fd limit,
    /// `PoolFull(Descriptors)` with the descriptor table full: the
    /// connection then waits in the listen backlog, and the listener keeps
    /// working), or `OperationAborted` after `cancel`/`close`.
    pub fn async_accept<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<(StreamSocket<'c, B, P>, P::Addr)>) + Send + 'static,
    {
        let h = Accepted {
            f: handler,
            _c: PhantomData,
        };
        B::accept(self.at(), h).map_err(|r| r.map(|h| h.f))
    }

    /// Every pending accept completes with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        B::cancel(self.at())
    }

    /// Cancels pending accepts, closes the socket, frees its descriptor.
    pub fn close(&self) -> Result<()> {
        B::close(self.at())
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.with_fd(Ok).unwrap_or(-1)
    }

    /// The context this listener belongs to.
    pub fn context(&self) -> &'c IoContext<B> {
        self.ctx
    }

    pub(crate) fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx.sched().task().with_fd(self.key, f)
    }

    #[inline(always)]
    fn at(&self) -> At<'c, B> {
        At {
            sched: self.ctx.sched(),
            key: self.key,
        }
    }
}

impl<'c, B: Backend> TcpStream<'c, B> {
    /// Connects to `addr`. The handler gets the stream, or
    /// `ConnectionRefused` and friends (the socket is closed by then).
    pub fn async_connect<F>(
        ctx: &'c IoContext<B>, addr: SocketAddr, handler: F,
    ) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<TcpStream<'c, B>>) + Send + 'static,
    {
        let sched = ctx.sched();
        let key = match open_socket::<B>(&addr, libc::SOCK_STREAM)
            .and_then(|fd| crate::context::register::<B>(sched, fd, DescKind::Stream))
        {
            Ok(key) => key,
            Err(error) => return Err(Rejected { error, handler }),
        };
        let h = Connected::new(handler, key);
        B::connect(At { sched, key }, addr, h).map_err(|r| {
            let _ = B::close(At { sched, key });
            r.map(Connected::into_inner)
        })
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.with_fd(|fd| {
            Ok(sys::set_int_opt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                on as i32,
            )?)
        })
    }
}

impl<'c, B: Backend, P: Family> StreamSocket<'c, B, P> {
    /// The descriptor's key (for the futures in `aio`).
    #[inline(always)]
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    #[inline(always)]
    pub(crate) fn from_key(ctx: &'c IoContext<B>, key: Key) -> Self {
        StreamSocket {
            ctx,
            key,
            _f: PhantomData,
        }
    }

    /// Reads at most `buf.spare()` bytes into `buf`'s room. The handler
    /// gets the count and the buffer back, advanced by it, or `Eof` when
    /// the peer has closed its side (the one way end of stream is told on
    /// every backend). A buffer with no room is refused with `BufferFull`
    /// (a `Vec` reads into its spare capacity, not its length).
    #[inline(always)]
    pub fn async_read_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBufMut,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        if buf.spare() == 0 {
            return Err(refuse(Error::BufferFull, (buf, handler)));
        }
        B::read_some(self.at(), buf, Io(handler)).map_err(io_back)
    }

    /// Writes at most `buf.bytes_len()` bytes of `buf` (without SIGPIPE: a
    /// closed peer is `BrokenPipe`). The handler gets the count and the
    /// buffer back; a write of 0 bytes completes with `Ok(0)`.
    #[inline(always)]
    pub fn async_write_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        B::write_some(self.at(), buf, Io(handler)).map_err(io_back)
    }

    /// Reads at most `bufs.total_spare()` bytes into the room of several
    /// buffers, filling each before the next (a scatter read: one
    /// `recvmsg`; on io_uring `IORING_OP_RECVMSG`). The handler gets the
    /// count and the buffers back, each advanced by what it got, or `Eof`
    /// when the peer has closed its side. A list with no room is refused
    /// with `BufferFull`.
    ///
    /// ```
    /// # let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// let (a, b) = pinion::UnixStream::pair(ctx).unwrap();
    /// pinion::compose::async_write(&a, &b"headerbody"[..], |r, _| assert_eq!(r, Ok(10))).unwrap();
    /// let bufs = [Vec::with_capacity(6), Vec::with_capacity(64)];
    /// b.async_read_some_vectored(bufs, |r, [head, body]| {
    ///     // Whatever arrived in one piece fills the first buffer first.
    ///     let n = r.unwrap();
    ///     assert_eq!((head.as_slice(), &body[..n - 6]), (&b"header"[..], &b"body"[..n - 6]));
    /// })
    /// .unwrap();
    /// ctx.run();
    /// ```
    pub fn async_read_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufsMut,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        if bufs.total_spare() == 0 {
            return Err(refuse(Error::BufferFull, (bufs, handler)));
        }
        B::read_some_vectored(self.at(), bufs, Io(handler)).map_err(io_back)
    }

    /// Writes at most `bufs.total_len()` bytes of several buffers, in
    /// order (a gather write: one `sendmsg`, without SIGPIPE; on io_uring
    /// `IORING_OP_SENDMSG`). The handler gets the count and the buffers
    /// back. [`async_write_vectored`](crate::compose::async_write_vectored)
    /// writes them all.
    ///
    /// The list, its iovecs and the handler travel in one operation slot
    /// ([`OP_SLOT_SIZE`](crate::OP_SLOT_SIZE) bytes), which bounds how many
    /// buffers one call takes: a list that does not fit does not compile.
    ///
    /// ```compile_fail
    /// # let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// let (a, _b) = pinion::UnixStream::pair(ctx).unwrap();
    /// let bufs: [Vec<u8>; 32] = Default::default(); // 32 × 24 bytes (× 12 on 32-bit)
    /// let _ = a.async_write_some_vectored(bufs, |_, _| ());
    /// ```
    pub fn async_write_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufs,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        B::write_some_vectored(self.at(), bufs, Io(handler)).map_err(io_back)
    }

    /// Reads into a buffer of the context's read pool
    /// ([`Builder::read_buffers`](crate::builder::Builder::read_buffers)),
    /// taken only once data has arrived, so a waiting read holds no memory.
    /// The buffer goes back to the pool when the [`PooledBuf`] drops.
    /// `PoolFull(ReadBuffers)` when data arrived but every buffer was in use
    /// (the data stays in the socket for the next read); `Eof` when the
    /// peer closed; a context without read buffers refuses with
    /// `NoPool(ReadBuffers)`.
    pub fn async_read_pooled<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<PooledBuf<'c>>) + Send + 'static,
    {
        let sched = self.ctx.sched();
        if sched.task().read_buffers().is_none() {
            return Err(refuse(Error::NoPool(Pool::ReadBuffers), handler));
        }
        let h = Pooled {
            f: handler,
            _c: PhantomData,
        };
        B::read_pooled(self.at(), h).map_err(|r| r.map(|h| h.f))
    }

    /// Shuts down one or both directions (`shutdown(2)`): after
    /// [`Shutdown::Write`] the peer reads end of stream.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.with_fd(|fd| Ok(sys::shutdown(fd, how)?))
    }

    /// `SO_SNDBUF` (the kernel doubles it and applies its limits).
    pub fn set_send_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| Ok(sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n)?))
    }

    /// `SO_RCVBUF` (the kernel doubles it and applies its limits).
    pub fn set_recv_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| Ok(sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n)?))
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<P::Addr> {
        self.with_fd(|fd| Ok(sys::local_addr_of(fd)?))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<P::Addr> {
        self.with_fd(|fd| Ok(sys::peer_addr_of(fd)?))
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.with_fd(Ok).unwrap_or(-1)
    }

    /// Every pending read and write completes with `OperationAborted` (or
    /// its real result, if it finished first), buffer handed back.
    pub fn cancel(&self) -> Result<()> {
        B::cancel(self.at())
    }

    /// Cancels pending operations, closes the socket, frees its descriptor.
    pub fn close(&self) -> Result<()> {
        B::close(self.at())
    }

    /// The context this stream belongs to.
    pub fn context(&self) -> &'c IoContext<B> {
        self.ctx
    }

    pub(crate) fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx.sched().task().with_fd(self.key, f)
    }

    #[inline(always)]
    fn at(&self) -> At<'c, B> {
        At {
            sched: self.ctx.sched(),
            key: self.key,
        }
    }
}

impl<B: Backend, P: Family> AsyncReadSome for StreamSocket<'static, B, P> {
    #[inline(always)]
    fn async_read_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBufMut,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        StreamSocket::async_read_some(self, buf, handler)
    }
}

impl<B: Backend, P: Family> AsyncWriteSome for StreamSocket<'static, B, P> {
    #[inline(always)]
    fn async_write_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        StreamSocket::async_write_some(self, buf, handler)
    }
}

impl<B: Backend, P: Family> AsyncWriteSomeVectored for StreamSocket<'static, B, P> {
    fn async_write_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufs,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        StreamSocket::async_write_some_vectored(self, bufs, handler)
    }
}

impl<B: Backend, P: Family> Post for StreamSocket<'_, B, P> {
    /// Composed operations with nothing to transfer complete through this.
    #[inline]
    fn post_handler<T: Send + 'static>(
        &self, value: T, run: fn(T),
    ) -> core::result::Result<(), Rejected<T>> {
        post_value(self.ctx.sched(), value, run)
    }
}

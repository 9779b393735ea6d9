//! TCP and UDP sockets: `Copy` handles `(context, index, generation)` into
//! the reactor's descriptor table.
//!
//! A handle whose socket was closed answers [`Error::BadDescriptor`]: from
//! the initiating call, with the handler handed back in the [`Rejected`].
//! Handlers never run inside the initiating call, even when the
//! speculative attempt completed the operation there.

use core::net::SocketAddr;

use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::compose::{post_value, AsyncReadSome, AsyncWriteSome, Post};
use pinion_core::{Error, Rejected, Result};

use crate::ops::{self, Accept, Connect, Recv, RecvFrom, RecvPooled, Send, SendTo};
use crate::reactor::{CONNECT_OP, READ_OP, WRITE_OP};
use crate::stats::stat;
use crate::sys::{self, syscall, RawAddr};
use crate::IoContext;
use pinion_core::pooled::PooledBuf;

/// Which half of a connection [`TcpStream::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reads: later reads see end-of-file.
    Read,
    /// No more writes: the peer sees end-of-file (a half-close).
    Write,
    /// Both.
    Both,
}

/// Maps rejected `(state, handler)` back to the caller's `(buffer, handler)`.
macro_rules! buf_back {
    ($r:expr) => {
        $r.map_err(|r| Rejected {
            error: r.error,
            handler: (r.handler.0.buf, r.handler.1),
        })
    };
}

/// A listening TCP socket.
#[derive(Clone, Copy)]
pub struct TcpListener<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

impl<'c> TcpListener<'c> {
    /// Binds to `addr` with `SO_REUSEADDR` and listens with a backlog of 1024.
    pub fn bind(ctx: &'c IoContext, addr: SocketAddr) -> Result<Self> {
        Self::bind_with_backlog(ctx, addr, 1024)
    }

    /// As [`bind`](Self::bind) with the given backlog.
    pub fn bind_with_backlog(ctx: &'c IoContext, addr: SocketAddr, backlog: i32) -> Result<Self> {
        let fd = sys::socket(sys::family(&addr), libc::SOCK_STREAM)?;
        sys::set_int_opt(fd.raw(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        let (raw, len) = RawAddr::from_socket_addr(&addr);
        // SAFETY: `raw` holds `len` initialised bytes of a socket address.
        syscall!(bind(fd.raw(), raw.as_ptr(), len))?;
        syscall!(listen(fd.raw(), backlog))?;
        let (index, gen) = ctx.task().register(fd)?;
        Ok(TcpListener { ctx, index, gen })
    }

    /// The address the listener is bound to (with the port the kernel
    /// chose when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.ctx
            .task()
            .with_fd(self.index, self.gen, |fd| sys::sock_addr(fd, false))
    }

    /// Accepts one connection. The new socket is non-blocking and
    /// registered with the reactor. Errors such as `TooManyOpenFiles` go to
    /// the handler; the listener keeps working.
    pub fn async_accept<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<(TcpStream<'c>, SocketAddr)>) + core::marker::Send + 'static,
    {
        let state = Accept {
            ctx: self.ctx,
            peer: RawAddr::zeroed(),
            accepted: None,
        };
        ops::start::<READ_OP, _, _>(self.ctx, self.index, self.gen, state, handler, true).map_err(
            |r| Rejected {
                error: r.error,
                handler: r.handler.1,
            },
        )
    }

    /// Completes every pending accept with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        self.ctx.task().cancel(self.ctx, self.index, self.gen)
    }

    /// Cancels, closes the socket and frees its slot.
    pub fn close(&self) -> Result<()> {
        self.ctx.task().close(self.ctx, self.index, self.gen)
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.ctx.task().raw_fd(self.index, self.gen)
    }
}

/// A connected TCP socket.
#[derive(Clone, Copy)]
pub struct TcpStream<'c> {
    ctx: &'c IoContext,
    /// Descriptor index (low half) and generation (high half): as two
    /// scalars the handle travels in two registers (into handlers,
    /// through calls) rather than through the stack.
    id: u64,
}

impl<'c> TcpStream<'c> {
    #[inline(always)]
    pub(crate) fn new(ctx: &'c IoContext, index: u32, gen: u32) -> Self {
        TcpStream {
            ctx,
            id: (gen as u64) << 32 | index as u64,
        }
    }

    /// The descriptor-table index.
    #[inline(always)]
    fn index(&self) -> u32 {
        self.id as u32
    }

    /// The generation the descriptor must still have.
    #[inline(always)]
    fn gen(&self) -> u32 {
        (self.id >> 32) as u32
    }

    /// Connects to `addr` (non-blocking connect, then `SO_ERROR`). The
    /// handler gets the stream, or the error (`ConnectionRefused`...).
    pub fn async_connect<F>(
        ctx: &'c IoContext,
        addr: SocketAddr,
        handler: F,
    ) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<TcpStream<'c>>) + core::marker::Send + 'static,
    {
        let state = Connect {
            ctx,
            index: u32::MAX,
            gen: 0,
        };
        let op = ops::alloc(ctx, state, handler).map_err(|r| Rejected {
            error: r.error,
            handler: r.handler.1,
        })?;
        let reject = |error| Rejected {
            error,
            // SAFETY: `op` was allocated above and never queued.
            handler: unsafe { ops::take_back(ctx, op) }.1,
        };
        let fd = sys::socket(sys::family(&addr), libc::SOCK_STREAM).map_err(reject)?;
        let (raw, len) = RawAddr::from_socket_addr(&addr);
        stat!(ctx.task(), op_attempts);
        // SAFETY: `raw` holds `len` initialised bytes of a socket address.
        let pending = match syscall!(connect(fd.raw(), raw.as_ptr(), len)) {
            Ok(_) => false,
            Err(Error::Os(libc::EINPROGRESS)) => true,
            Err(e) => {
                // Failed at once (loopback refuses synchronously): no
                // socket to register; the handler gets the error.
                drop(fd);
                ops::post_result(ctx, op, Err(e));
                return Ok(());
            }
        };
        let (index, gen) = ctx.task().register(fd).map_err(reject)?;
        // SAFETY: `op` is ours and not queued yet; fill in the socket.
        unsafe {
            let st = (*op.as_ptr()).state_mut();
            st.index = index;
            st.gen = gen;
        }
        if !pending {
            ops::post_result(ctx, op, Ok(0));
            return Ok(());
        }
        // Not speculative: readiness comes from the EPOLL_CTL_MOD that
        // start_op makes for a connect (Asio's start_connect_op).
        // SAFETY: `op` is ours; never performed here (not speculative).
        let perform = |fd| unsafe { ops::perform_now(op, fd) };
        // SAFETY: `here` is this thread's.
        let started = unsafe {
            ctx.task().start_op::<CONNECT_OP>(
                ctx,
                ctx.here(),
                index,
                gen,
                op.cast(),
                false,
                perform,
            )
        };
        if let Err(e) = started {
            // Unreachable in practice: nobody else has the handle yet.
            let _ = ctx.task().close(ctx, index, gen);
            return Err(reject(e));
        }
        Ok(())
    }

    /// The context this stream belongs to.
    pub fn context(&self) -> &'c IoContext {
        self.ctx
    }

    /// Reads at most `buf.spare()` bytes into `buf`. `Err(Eof)` when the
    /// peer closed its side; `Ok(0)` only for a buffer with no room.
    #[inline(always)]
    pub fn async_read_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<usize>, B) + core::marker::Send + 'static,
    {
        if buf.spare() == 0 {
            let op = buf_back!(ops::alloc(self.ctx, Recv { buf }, handler))?;
            ops::post_result(self.ctx, op, Ok(0));
            return Ok(());
        }
        buf_back!(ops::start::<READ_OP, _, _>(
            self.ctx,
            self.index(),
            self.gen(),
            Recv { buf },
            handler,
            true
        ))
    }

    /// Reads into a buffer of the context's read pool
    /// ([`Builder::read_buffers`](crate::Builder::read_buffers)), taken
    /// only once data has arrived, so a waiting read holds no memory.
    /// The handler gets the filled buffer, which goes back to the pool
    /// when dropped; `Err(PoolExhausted)` when data arrived but every
    /// buffer was in use (the data stays in the socket for the next
    /// read), `Err(Eof)` when the peer closed its side. A context built
    /// without read buffers refuses with `OperationNotSupported`.
    pub fn async_read_pooled<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<PooledBuf<'c>>) + core::marker::Send + 'static,
    {
        if self.ctx.task().read_buffers().is_none() {
            return Err(Rejected {
                error: Error::OperationNotSupported,
                handler,
            });
        }
        let state = RecvPooled {
            ctx: self.ctx,
            buf: None,
        };
        ops::start::<READ_OP, _, _>(self.ctx, self.index(), self.gen(), state, handler, true)
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.1,
            })
    }

    /// Writes at most `buf.bytes_len()` bytes from `buf`. Never raises
    /// SIGPIPE: a closed peer is `Err(BrokenPipe)` (or `ConnectionReset`).
    #[inline(always)]
    pub fn async_write_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + core::marker::Send + 'static,
    {
        if buf.bytes_len() == 0 {
            let op = buf_back!(ops::alloc(self.ctx, Send { buf }, handler))?;
            ops::post_result(self.ctx, op, Ok(0));
            return Ok(());
        }
        buf_back!(ops::start::<WRITE_OP, _, _>(
            self.ctx,
            self.index(),
            self.gen(),
            Send { buf },
            handler,
            true
        ))
    }

    /// Shuts down one or both halves (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.with_fd(|fd| syscall!(shutdown(fd, how)).map(drop))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.with_fd(|fd| sys::set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as i32))
    }

    /// Sets `SO_SNDBUF` (the kernel doubles it and enforces a minimum).
    pub fn set_send_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n))
    }

    /// Sets `SO_RCVBUF` (the kernel doubles it and enforces a minimum).
    pub fn set_recv_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n))
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.with_fd(|fd| sys::sock_addr(fd, false))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.with_fd(|fd| sys::sock_addr(fd, true))
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.ctx.task().raw_fd(self.index(), self.gen())
    }

    /// Completes every pending read and write with `OperationAborted`,
    /// handing their buffers back.
    pub fn cancel(&self) -> Result<()> {
        self.ctx.task().cancel(self.ctx, self.index(), self.gen())
    }

    /// Cancels, closes the socket and frees its slot; the handle (and its
    /// copies) then answer `BadDescriptor`.
    pub fn close(&self) -> Result<()> {
        self.ctx.task().close(self.ctx, self.index(), self.gen())
    }

    fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx.task().with_fd(self.index(), self.gen(), f)
    }
}

impl AsyncReadSome for TcpStream<'static> {
    #[inline(always)]
    fn async_read_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<usize>, B) + core::marker::Send + 'static,
    {
        TcpStream::async_read_some(self, buf, handler)
    }
}

impl AsyncWriteSome for TcpStream<'static> {
    #[inline(always)]
    fn async_write_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + core::marker::Send + 'static,
    {
        TcpStream::async_write_some(self, buf, handler)
    }
}

impl Post for TcpStream<'_> {
    /// Composed operations that have nothing to transfer complete from
    /// the run loop through this.
    #[inline]
    fn post_handler<T: core::marker::Send + 'static>(
        &self,
        value: T,
        run: fn(T),
    ) -> core::result::Result<(), Rejected<T>> {
        post_value(self.ctx, value, run)
    }
}

/// A UDP socket.
#[derive(Clone, Copy)]
pub struct UdpSocket<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

impl<'c> UdpSocket<'c> {
    /// A socket bound to `addr`.
    pub fn bind(ctx: &'c IoContext, addr: SocketAddr) -> Result<Self> {
        let fd = sys::socket(sys::family(&addr), libc::SOCK_DGRAM)?;
        let (raw, len) = RawAddr::from_socket_addr(&addr);
        // SAFETY: `raw` holds `len` initialised bytes of a socket address.
        syscall!(bind(fd.raw(), raw.as_ptr(), len))?;
        let (index, gen) = ctx.task().register(fd)?;
        Ok(UdpSocket { ctx, index, gen })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.ctx
            .task()
            .with_fd(self.index, self.gen, |fd| sys::sock_addr(fd, false))
    }

    /// Sends one datagram of `buf`'s bytes to `to`.
    pub fn async_send_to<B, F>(
        &self,
        buf: B,
        to: SocketAddr,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + core::marker::Send + 'static,
    {
        let (to, to_len) = RawAddr::from_socket_addr(&to);
        let state = SendTo { buf, to, to_len };
        buf_back!(ops::start::<WRITE_OP, _, _>(
            self.ctx, self.index, self.gen, state, handler, true
        ))
    }

    /// Receives one datagram into `buf`'s spare room (truncated to fit).
    pub fn async_receive_from<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<(usize, SocketAddr)>, B) + core::marker::Send + 'static,
    {
        let state = RecvFrom {
            buf,
            from: RawAddr::zeroed(),
        };
        buf_back!(ops::start::<READ_OP, _, _>(
            self.ctx, self.index, self.gen, state, handler, true
        ))
    }

    /// Completes every pending operation with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        self.ctx.task().cancel(self.ctx, self.index, self.gen)
    }

    /// Cancels, closes the socket and frees its slot.
    pub fn close(&self) -> Result<()> {
        self.ctx.task().close(self.ctx, self.index, self.gen)
    }

    /// The socket's descriptor, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.ctx.task().raw_fd(self.index, self.gen)
    }
}

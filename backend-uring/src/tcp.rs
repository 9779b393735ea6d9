//! TCP on the proactor: Asio's `io_uring_socket_{accept,connect,recv,send}_op`.
//!
//! Each operation is one `#[repr(C)]` struct in one pool slot: the
//! [`Operation`] header, whatever the kernel reads or writes (address,
//! buffer handle), and the handler. Its SQE's `user_data` is the slot.
//! The complete function moves buffer and handler out, frees the slot,
//! then runs (or, at shutdown, drops) the handler.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::ptr::{addr_of, NonNull};

use io_uring::opcode;
use pinion_core::buf::{IoBuf, IoBufMut};
use pinion_core::compose::{post_value, AsyncReadSome, AsyncWriteSome, Post};
use pinion_core::{Error, Here, Invoke, Operation, Rejected, Result};

use crate::bufs::start_pooled;
use crate::proactor::{unpack_desc, with_target, Sched};
use crate::ring::Sqe;
use crate::sys::{self, RawAddr};
use crate::{IoContext, Shutdown};
use pinion_core::pooled::PooledBuf;

/// Listen backlog of [`TcpListener::bind`].
const DEFAULT_BACKLOG: i32 = 1024;

fn unspecified() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

/// A listening socket. `Copy`: a handle into the context's descriptor
/// table; a closed handle answers [`Error::BadDescriptor`].
#[derive(Clone, Copy)]
pub struct TcpListener<'c> {
    ctx: &'c IoContext,
    index: u32,
    gen: u32,
}

/// A connected TCP socket. `Copy`, like [`TcpListener`].
#[derive(Clone, Copy)]
pub struct TcpStream<'c> {
    ctx: &'c IoContext,
    /// Descriptor index (low half) and generation (high half), as an
    /// operation result packs them (`proactor::pack_desc`):
    /// two scalars make the handle travel in two registers (into
    /// handlers, through calls) rather than through the stack.
    id: u64,
}

impl core::fmt::Debug for TcpStream<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpStream")
            .field("index", &self.index())
            .field("gen", &self.gen())
            .finish()
    }
}

impl core::fmt::Debug for TcpListener<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpListener")
            .field("index", &self.index)
            .field("gen", &self.gen)
            .finish()
    }
}

/// Registers `fd` in the table, closing it if the table is full.
fn register(ctx: &IoContext, fd: i32) -> Result<(u32, u32)> {
    ctx.proactor().open_desc(fd).inspect_err(|_| sys::close(fd))
}

// ---- accept -------------------------------------------------------------

#[repr(C)]
struct AcceptOp<'c, F> {
    header: Operation,
    /// Written by the kernel (single-shot accept only).
    addr: RawAddr,
    addrlen: libc::socklen_t,
    multishot: bool,
    _ctx: PhantomData<&'c IoContext>,
    handler: ManuallyDrop<F>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is an `AcceptOp<'c, F>` whose
/// result slot holds the accepted fd or the error.
unsafe fn complete_accept<'c, F>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    F: FnOnce(Result<(TcpStream<'c>, SocketAddr)>) + Send + 'static,
{
    let p = op.cast::<AcceptOp<'c, F>>();
    // SAFETY: `p` is live and ours; fields are read once, then the slot is
    // freed and never touched again.
    let (res, multishot, addr, handler) = unsafe {
        let o = p.as_ptr();
        let multishot = (*o).multishot;
        let addr = if multishot {
            None
        } else {
            (*o).addr.to_socket_addr()
        };
        (
            (*o).header.result(),
            multishot,
            addr,
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: the owner is the context that allocated the op, alive for 'c.
    let ctx: &'c IoContext = unsafe { IoContext::from_owner(owner) };
    // SAFETY: values moved out above; freed once.
    unsafe { ctx.free_op_in(how.here(), p) };
    match how {
        // A multishot result is already a registered descriptor, which
        // the context closes as it goes; a single-shot one is a bare fd.
        Invoke::Destroy => {
            if let (Ok(fd), false) = (res, multishot) {
                sys::close(fd as i32);
            }
        }
        Invoke::Run(_) => {
            let r = res.and_then(|v| {
                let (index, gen) = if multishot {
                    unpack_desc(v)
                } else {
                    register(ctx, v as i32)?
                };
                let s = TcpStream::new(ctx, index, gen);
                let addr = addr
                    .or_else(|| s.peer_addr().ok())
                    .unwrap_or_else(unspecified);
                Ok((s, addr))
            });
            handler(r)
        }
    }
}

impl<'c> TcpListener<'c> {
    /// A listener on `addr` (`SO_REUSEADDR`, backlog 1024).
    pub fn bind(ctx: &'c IoContext, addr: SocketAddr) -> Result<Self> {
        Self::bind_with_backlog(ctx, addr, DEFAULT_BACKLOG)
    }

    /// A listener on `addr` with the given listen backlog.
    pub fn bind_with_backlog(ctx: &'c IoContext, addr: SocketAddr, backlog: i32) -> Result<Self> {
        let fd = sys::socket(&addr, libc::SOCK_STREAM)?;
        let setup = || {
            sys::set_opt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            sys::bind(fd, &addr)?;
            sys::listen(fd, backlog)
        };
        if let Err(e) = setup() {
            sys::close(fd);
            return Err(e);
        }
        let (index, gen) = register(ctx, fd)?;
        Ok(TcpListener { ctx, index, gen })
    }

    /// Runs `f` on the socket's fd, which cannot be closed meanwhile.
    fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx.proactor().descs.with_fd(self.index, self.gen, f)
    }

    /// The bound address (with the port the kernel picked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.with_fd(sys::local_addr)
    }

    /// Accepts one connection. The handler gets the stream and the peer's
    /// address, or the error (`TooManyOpenFiles` at the fd limit; the
    /// listener keeps working), or `OperationAborted` after
    /// `cancel`/`close`.
    pub fn async_accept<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<(TcpStream<'c>, SocketAddr)>) + Send + 'static,
    {
        let sched: &Sched = self.ctx;
        let multishot = self.ctx.ring_info().multishot_accept;
        let op = AcceptOp {
            header: Operation::new(complete_accept::<F>),
            addr: RawAddr::zeroed(),
            addrlen: RawAddr::CAPACITY,
            multishot,
            _ctx: PhantomData,
            handler: ManuallyDrop::new(handler),
        };
        let here = sched.here();
        // SAFETY: `here` came from this scheduler.
        let p = unsafe {
            sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
        }?;
        // SAFETY: `p` is ours until handed on below.
        unsafe { p.as_ref().header.set_result(Err(Error::OperationAborted)) };
        if multishot {
            // SAFETY: a live accept op on no queue; `here` came from this
            // scheduler.
            let queued = unsafe {
                self.ctx
                    .proactor()
                    .accept_multishot(sched, here, self.index, self.gen, p.cast())
            };
            return queued.map_err(|error| Rejected {
                error,
                // SAFETY: refused, the op was never queued: still ours.
                handler: unsafe { take_handler(sched, here, p) },
            });
        }
        let o = p.as_ptr();
        // SAFETY: `addr`/`addrlen` live in the op's slot, which stays
        // allocated until the CQE has been reaped; the index is a table
        // index; `here` came from this scheduler.
        let pushed = unsafe {
            self.ctx.proactor().push_on(
                self.index,
                self.gen,
                true,
                || sched.compensating_work_started_in(here),
                |target| {
                    with_target!(target, |t| opcode::Accept::new(
                        t,
                        (*o).addr.as_mut_ptr(),
                        core::ptr::addr_of_mut!((*o).addrlen),
                    )
                    .flags(libc::SOCK_CLOEXEC)
                    .build())
                    .user_data(o as u64)
                },
            )
        };
        // SAFETY: refused, the op was never queued: still ours.
        pushed.map_err(|error| Rejected {
            error,
            handler: unsafe { take_handler(sched, here, p) },
        })
    }

    /// Every pending accept completes with `OperationAborted`.
    pub fn cancel(&self) -> Result<()> {
        self.ctx
            .proactor()
            .cancel_desc(self.ctx, self.index, self.gen)
    }

    /// Cancels pending accepts, closes the socket, frees its slot.
    pub fn close(&self) -> Result<()> {
        self.ctx
            .proactor()
            .close_desc(self.ctx, self.index, self.gen)
    }
}

// ---- connect ------------------------------------------------------------

#[repr(C)]
struct ConnectOp<'c, F> {
    header: Operation,
    /// Read by the kernel when the SQE is issued.
    addr: RawAddr,
    index: u32,
    gen: u32,
    _ctx: PhantomData<&'c IoContext>,
    handler: ManuallyDrop<F>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `ConnectOp<'c, F>`.
unsafe fn complete_connect<'c, F>(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>)
where
    F: FnOnce(Result<TcpStream<'c>>) + Send + 'static,
{
    let p = op.cast::<ConnectOp<'c, F>>();
    // SAFETY: as in `complete_accept`.
    let (res, index, gen, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            (*o).index,
            (*o).gen,
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: the owner is the context that allocated the op.
    let ctx: &'c IoContext = unsafe { IoContext::from_owner(owner) };
    // SAFETY: values moved out above; freed once.
    unsafe { ctx.free_op_in(how.here(), p) };
    if how.is_run() {
        let r = match res {
            Ok(_) => Ok(TcpStream::new(ctx, index, gen)),
            Err(e) => {
                let _ = ctx.proactor().close_desc(ctx, index, gen);
                Err(e)
            }
        };
        handler(r)
    }
    // Destroy: the socket stays in the table, which shutdown closes.
}

impl<'c> TcpStream<'c> {
    #[inline(always)]
    fn new(ctx: &'c IoContext, index: u32, gen: u32) -> Self {
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

    /// Connects to `addr` (`IORING_OP_CONNECT`). The handler gets the
    /// stream, or `ConnectionRefused` and friends.
    pub fn async_connect<F>(
        ctx: &'c IoContext,
        addr: SocketAddr,
        handler: F,
    ) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<TcpStream<'c>>) + Send + 'static,
    {
        let fd = match sys::socket(&addr, libc::SOCK_STREAM) {
            Ok(fd) => fd,
            Err(error) => return Err(Rejected { error, handler }),
        };
        let (index, gen) = match register(ctx, fd) {
            Ok(x) => x,
            Err(error) => return Err(Rejected { error, handler }),
        };
        let (raw, len) = RawAddr::from_std(addr);
        let op = ConnectOp {
            header: Operation::new(complete_connect::<F>),
            addr: raw,
            index,
            gen,
            _ctx: PhantomData,
            handler: ManuallyDrop::new(handler),
        };
        let sched: &Sched = ctx;
        let here = sched.here();
        // SAFETY: `here` came from this scheduler.
        let p = unsafe {
            sched.alloc_op_in_or_reject(here, op, |op| ManuallyDrop::into_inner(op.handler))
        }
        .inspect_err(|_| {
            let _ = ctx.proactor().close_desc(ctx, index, gen);
        })?;
        let o = p.as_ptr();
        // SAFETY: the address lives in the op's slot until the CQE; the
        // index came from the table; `here` came from this scheduler.
        let pushed = unsafe {
            ctx.proactor().push_on(
                index,
                gen,
                true,
                || sched.compensating_work_started_in(here),
                |target| {
                    with_target!(target, |t| opcode::Connect::new(t, (*o).addr.as_ptr(), len)
                        .build())
                    .user_data(o as u64)
                },
            )
        };
        pushed.map_err(|error| {
            // Nobody else has the fresh socket's handle: only a bug could
            // get here; still hand everything back.
            let _ = ctx.proactor().close_desc(ctx, index, gen);
            Rejected {
                error,
                // SAFETY: refused, the op was never queued: still ours.
                handler: unsafe { take_handler(sched, here, p) },
            }
        })
    }

    /// Runs `f` on the socket's fd, which cannot be closed meanwhile.
    #[inline]
    fn with_fd<T>(&self, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        self.ctx
            .proactor()
            .descs
            .with_fd(self.index(), self.gen(), f)
    }

    /// The context this stream belongs to.
    pub fn context(&self) -> &'c IoContext {
        self.ctx
    }

    /// Reads at most `buf.spare()` bytes into `buf` (`IORING_OP_RECV`).
    /// The handler gets the count (`Eof` for a peer that closed) and the
    /// buffer back, advanced by the count.
    #[inline(always)]
    pub fn async_read_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        let mut buf = buf;
        let region = (buf.ptr_for_op(), buf.len_for_op());
        start_buf_op::<B, F, true>(self.ctx, self.id, region, buf, handler)
    }

    /// Reads into a buffer of the context's read pool
    /// ([`Builder::read_buffers`](crate::Builder::read_buffers)) that the
    /// kernel picks from the provided buffer ring only once data has
    /// arrived, so a waiting read holds no memory (see [`crate::bufs`],
    /// also for the software fallback, which holds one). The handler gets
    /// the filled buffer, which goes back to the ring when dropped;
    /// `Err(PoolExhausted)` when data arrived but every buffer was in use
    /// (the data stays in the socket for the next read), `Err(Eof)` when
    /// the peer closed its side, `OperationAborted` after
    /// `cancel`/`close`. A context built without read buffers refuses with
    /// `OperationNotSupported`.
    pub fn async_read_pooled<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<PooledBuf<'c>>) + Send + 'static,
    {
        let Some(pool) = self.ctx.proactor().read_pool() else {
            return Err(Rejected {
                error: Error::OperationNotSupported,
                handler,
            });
        };
        start_pooled(self.ctx, pool, self.index(), self.gen(), handler)
    }

    /// Writes at most `buf.bytes_len()` bytes from `buf` (`IORING_OP_SEND`
    /// with `MSG_NOSIGNAL`: a closed peer is `BrokenPipe`, never SIGPIPE).
    #[inline(always)]
    pub fn async_write_some<B, F>(
        &self,
        buf: B,
        handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        let mut buf = WriteOnly(buf);
        let region = (buf.ptr_for_op(), buf.len_for_op());
        start_buf_op::<WriteOnly<B>, WriteHandler<F>, false>(
            self.ctx,
            self.id,
            region,
            buf,
            WriteHandler(handler),
        )
        .map_err(|r| Rejected {
            error: r.error,
            handler: (r.handler.0 .0, r.handler.1 .0),
        })
    }

    /// Shuts down one or both halves (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.with_fd(|fd| sys::syscall!(shutdown(fd, how)).map(drop))
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.with_fd(|fd| sys::set_opt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as i32))
    }

    /// `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| sys::set_opt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n))
    }

    /// `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, n: usize) -> Result<()> {
        let n = n.min(i32::MAX as usize) as i32;
        self.with_fd(|fd| sys::set_opt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n))
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.with_fd(sys::local_addr)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.with_fd(sys::peer_addr)
    }

    /// The socket's fd, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.with_fd(Ok).unwrap_or(-1)
    }

    /// Every pending read and write completes with `OperationAborted`
    /// (or its real result, if it finished first), buffer handed back.
    pub fn cancel(&self) -> Result<()> {
        self.ctx
            .proactor()
            .cancel_desc(self.ctx, self.index(), self.gen())
    }

    /// Cancels pending operations, closes the socket, frees its slot.
    pub fn close(&self) -> Result<()> {
        self.ctx
            .proactor()
            .close_desc(self.ctx, self.index(), self.gen())
    }
}

// ---- read / write -------------------------------------------------------

/// An `IoBuf` going out: no commit.
struct WriteOnly<B>(B);

// SAFETY: forwards to `B`, which is an `IoBuf`.
unsafe impl<B: IoBuf> IoBuf for WriteOnly<B> {
    fn read_ptr(&self) -> *const u8 {
        self.0.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.0.bytes_len()
    }
}

/// Adapts a write handler to the shared op shape.
struct WriteHandler<F>(F);

/// The handler side of a buffer op: how the result reaches the user.
trait BufHandler<B>: Send + 'static {
    fn call(self, r: Result<usize>, b: B);
}

impl<B, F: FnOnce(Result<usize>, B) + Send + 'static> BufHandler<B> for F {
    #[inline]
    fn call(self, r: Result<usize>, b: B) {
        self(r, b)
    }
}

impl<B: IoBuf, F: FnOnce(Result<usize>, B) + Send + 'static> BufHandler<WriteOnly<B>>
    for WriteHandler<F>
{
    #[inline]
    fn call(self, r: Result<usize>, b: WriteOnly<B>) {
        (self.0)(r, b.0)
    }
}

#[repr(C)]
struct BufOp<B, F> {
    header: Operation,
    buf: ManuallyDrop<B>,
    handler: ManuallyDrop<F>,
}

/// # Safety
/// See `pinion_core::op::CompleteFn`; `op` is a `BufOp<B, F>`.
unsafe fn complete_buf<B: BufLike, F: BufHandler<B>, const READ: bool>(
    op: NonNull<Operation>,
    owner: *const (),
    how: Invoke<'_>,
) {
    let p = op.cast::<BufOp<B, F>>();
    // SAFETY: `p` is live and ours; each field read once, then freed.
    let (res, mut buf, handler) = unsafe {
        let o = p.as_ptr();
        (
            (*o).header.result(),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf))),
            ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler))),
        )
    };
    // SAFETY: `owner` is the scheduler that allocated `p`.
    let sched = unsafe { &*(owner as *const Sched) };
    // SAFETY: values moved out above; freed once.
    unsafe { sched.free_op_in(how.here(), p) };
    if how.is_run() {
        let r = if READ {
            match res {
                // Data first: the room is only looked at for 0 bytes.
                Ok(n) if n != 0 => {
                    // SAFETY: the kernel reported `n` bytes received into
                    // the region this op gave it.
                    unsafe { buf.commit_read(n) };
                    Ok(n)
                }
                Ok(_) if buf.len_for_op() > 0 => Err(Error::Eof),
                r => r,
            }
        } else {
            res
        };
        handler.call(r, buf)
    }
}

/// What `complete_buf` needs of a buffer of either direction.
trait BufLike: Send + 'static {
    fn ptr_for_op(&mut self) -> *mut u8;
    fn len_for_op(&self) -> usize;
    /// # Safety
    /// `n` bytes were written at `ptr_for_op()` (reads only).
    unsafe fn commit_read(&mut self, n: usize);
}

impl<B: IoBufMut> BufLike for B {
    #[inline]
    fn ptr_for_op(&mut self) -> *mut u8 {
        self.write_ptr()
    }
    #[inline]
    fn len_for_op(&self) -> usize {
        self.spare()
    }
    #[inline]
    unsafe fn commit_read(&mut self, n: usize) {
        let n = n.min(self.spare());
        // SAFETY: the kernel wrote `n <= spare()` bytes (per contract).
        unsafe { self.advance(n) }
    }
}

impl<B: IoBuf> BufLike for WriteOnly<B> {
    #[inline]
    fn ptr_for_op(&mut self) -> *mut u8 {
        self.0.read_ptr() as *mut u8
    }
    #[inline]
    fn len_for_op(&self) -> usize {
        self.0.bytes_len()
    }
    unsafe fn commit_read(&mut self, _: usize) {}
}

/// Starts a read (`READ`) or a write with `buf`, whose `(ptr_for_op(),
/// len_for_op())` is `region`, on the socket the stream handle `id`
/// (index and generation, as [`TcpStream`] packs them) names.
#[inline(always)]
fn start_buf_op<B: BufLike, F: BufHandler<B>, const READ: bool>(
    ctx: &IoContext,
    id: u64,
    region: (*mut u8, usize),
    buf: B,
    handler: F,
) -> core::result::Result<(), Rejected<(B, F)>> {
    let (index, gen) = (id as u32, (id >> 32) as u32);
    let (ptr, len) = region;
    let len = len.min(u32::MAX as usize) as u32;
    let op = BufOp {
        header: Operation::new(complete_buf::<B, F, READ>),
        buf: ManuallyDrop::new(buf),
        handler: ManuallyDrop::new(handler),
    };
    let sched: &Sched = ctx;
    // The thread is looked up once for the whole initiation.
    let here = sched.here();
    // Spelled out, not `alloc_op_in_or_reject`: with the helper LLVM
    // tests `here` twice on this, the hottest start (+3 instr/op).
    // SAFETY: `here` came from this scheduler.
    let p = match unsafe { sched.alloc_op_in(here, op) } {
        Ok(p) => p,
        Err(op) => {
            return Err(Rejected {
                error: Error::PoolExhausted,
                handler: (
                    ManuallyDrop::into_inner(op.buf),
                    ManuallyDrop::into_inner(op.handler),
                ),
            })
        }
    };
    if len == 0 {
        // Nothing to transfer: complete with Ok(0), through the queue.
        if let Err(error) = ctx.proactor().descs.check(index, gen) {
            // SAFETY: never queued: still ours.
            return Err(unsafe { refuse_buf_op(sched, here, p, error) });
        }
        // SAFETY: a fresh op, on no queue, completing with this scheduler;
        // `here` is this scheduler's.
        unsafe { sched.post_immediate_completion_in(here, p.cast()) };
        return Ok(());
    }
    // IORING_OP_RECV / IORING_OP_SEND, written in place (as io-uring's
    // `Recv`/`Send` builders would, without the copy).
    let user_data = p.as_ptr() as u64;
    // SAFETY: the buffer's bytes stay put while the buffer value sits in
    // the op's slot (IoBuf/IoBufMut contract), and the slot stays
    // allocated until this SQE's CQE has been reaped; the index came from
    // the table; `here` came from this scheduler.
    let pushed = unsafe {
        ctx.proactor().push_sqe_on(
            index,
            gen,
            || sched.compensating_work_started_in(here),
            |target| {
                let (fd, fixed) = target.raw();
                let mut e = if READ {
                    Sqe::new(opcode::Recv::CODE, fd, fixed)
                } else {
                    let mut e = Sqe::new(opcode::Send::CODE, fd, fixed);
                    e.op_flags = libc::MSG_NOSIGNAL as u32;
                    e
                };
                e.addr = ptr as u64;
                e.len = len;
                e.user_data = user_data;
                e
            },
        )
    };
    match pushed {
        Ok(()) => Ok(()),
        // SAFETY: refused, the op was never queued: still ours.
        Err(error) => Err(unsafe { refuse_buf_op(sched, here, p, error) }),
    }
}

/// Hands buffer and handler of an op that was never queued back to the
/// caller and frees its slot: a stale handle's refusal, off the hot path.
///
/// # Safety
/// `p` is a live `BufOp` of `sched`'s pool, on no queue; `here` came from
/// `sched`.
#[cold]
#[inline(never)]
unsafe fn refuse_buf_op<B, F>(
    sched: &Sched,
    here: Option<Here<'_>>,
    p: NonNull<BufOp<B, F>>,
    error: Error,
) -> Rejected<(B, F)> {
    // SAFETY: per contract; each field read once, then the slot freed.
    unsafe {
        let o = p.as_ptr();
        let buf = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).buf)));
        let handler = ManuallyDrop::into_inner(core::ptr::read(addr_of!((*o).handler)));
        sched.free_op_in(here, p);
        Rejected {
            error,
            handler: (buf, handler),
        }
    }
}

/// An op with a `handler` field that was never queued: the handler back
/// out, the slot freed.
///
/// # Safety
/// `p` is a live op of `sched`'s pool, on no queue, whose handler has not
/// been moved out; `here` came from `sched`.
unsafe fn take_handler<O: HasHandler>(
    sched: &Sched,
    here: Option<Here<'_>>,
    p: NonNull<O>,
) -> O::Handler {
    // SAFETY: per contract.
    unsafe {
        let h = O::take(p);
        sched.free_op_in(here, p);
        h
    }
}

/// Ops whose refusal hands back only a handler.
trait HasHandler {
    type Handler;
    /// Moves the handler out.
    ///
    /// # Safety
    /// `p` is live and its handler still in place; it is not used again.
    unsafe fn take(p: NonNull<Self>) -> Self::Handler;
}

impl<F> HasHandler for AcceptOp<'_, F> {
    type Handler = F;
    unsafe fn take(p: NonNull<Self>) -> F {
        // SAFETY: per contract.
        unsafe { ManuallyDrop::into_inner(core::ptr::read(addr_of!((*p.as_ptr()).handler))) }
    }
}

impl<F> HasHandler for ConnectOp<'_, F> {
    type Handler = F;
    unsafe fn take(p: NonNull<Self>) -> F {
        // SAFETY: per contract.
        unsafe { ManuallyDrop::into_inner(core::ptr::read(addr_of!((*p.as_ptr()).handler))) }
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
        F: FnOnce(Result<usize>, B) + Send + 'static,
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
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        TcpStream::async_write_some(self, buf, handler)
    }
}

impl Post for TcpStream<'_> {
    /// Composed operations that have nothing to transfer complete from
    /// the run loop through this.
    #[inline]
    fn post_handler<T: Send + 'static>(
        &self,
        value: T,
        run: fn(T),
    ) -> core::result::Result<(), Rejected<T>> {
        post_value(self.ctx, value, run)
    }
}

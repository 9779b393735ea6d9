//! Any descriptor the kernel can poll: pipes, ttys, eventfds, signalfds,
//! inotify, netlink, character devices (Asio's `posix::stream_descriptor`).
//!
//! A [`StreamDescriptor`] is registered like a socket, in a descriptor slot
//! of the context, and every operation is a readiness wait followed by
//! `read(2)` or `write(2)`: on epoll the reactor's edge-triggered
//! registration, on io_uring a `POLL_ADD`. So it works for descriptors no
//! socket call accepts, and a wait can be given up without losing data. A
//! regular file cannot be polled: `from_fd` refuses it on epoll
//! (`OperationNotSupported`), and there it would always be ready anyway.

use core::fmt;

use pinion_core::backend::{At, Backend, DescKind, Handler, Key, OpHooks, Readiness, Sched};
use pinion_core::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut};
use pinion_core::compose::{
    post_value, AsyncReadSome, AsyncWriteSome, AsyncWriteSomeVectored, Post,
};
use pinion_core::{Error, Rejected, Result};
use pinion_sys::Fd;

use crate::aio::Ready;
use crate::context::IoContext;
use crate::owned::Close;

mod step;
use step::{ReadList, ReadOne, Step, WriteList, WriteOne};

/// A registered descriptor read and written asynchronously (see the
/// [module docs](self)). `Copy`, like the socket handles; [`Owned`] closes
/// it on drop.
///
/// ```
/// # #[cfg(not(miri))] {
/// use pinion::fd::StreamDescriptor;
/// use pinion::{Builder, IoContext, Owned};
/// let ctx: &'static IoContext = Builder::new().build_static().unwrap();
/// let mut p = [0i32; 2];
/// // SAFETY: `p` has room for the pipe's two descriptors.
/// assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
/// // SAFETY: both descriptors were just made, and are ours alone.
/// let (r, w) = unsafe { (pinion_sys::Fd::from_raw(p[0]), pinion_sys::Fd::from_raw(p[1])) };
/// let r = Owned::new(StreamDescriptor::from_fd(ctx, r).unwrap());
/// let w = Owned::new(StreamDescriptor::from_fd(ctx, w).unwrap());
/// r.async_read_some(Vec::with_capacity(16), |n, buf| {
///     assert_eq!(n, Ok(5));
///     assert_eq!(buf, b"hello");
/// })
/// .unwrap();
/// w.async_write_some(&b"hello"[..], |n, _| assert_eq!(n, Ok(5))).unwrap();
/// ctx.run();
/// # }
/// ```
///
/// [`Owned`]: crate::Owned
pub struct StreamDescriptor<'c, B: Backend> {
    ctx: &'c IoContext<B>,
    key: Key,
}

impl<B: Backend> Clone for StreamDescriptor<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for StreamDescriptor<'_, B> {}

impl<B: Backend> fmt::Debug for StreamDescriptor<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamDescriptor").field(&self.key).finish()
    }
}

impl<'c, B: Backend> StreamDescriptor<'c, B> {
    /// Takes `fd` over: makes it non-blocking and registers it in a
    /// descriptor slot (`PoolFull(Descriptors)` when the table is full).
    /// On error `fd` is closed.
    pub fn from_fd(ctx: &'c IoContext<B>, fd: Fd) -> Result<Self> {
        pinion_sys::socket::set_nonblocking(fd.raw(), true)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Other)?;
        Ok(StreamDescriptor { ctx, key })
    }

    /// [`from_fd`](Self::from_fd) for a std descriptor.
    #[cfg(feature = "std")]
    pub fn from_owned_fd(ctx: &'c IoContext<B>, fd: std::os::fd::OwnedFd) -> Result<Self> {
        use std::os::fd::IntoRawFd;
        // SAFETY: `into_raw_fd` gives up std's ownership of an open fd.
        Self::from_fd(ctx, unsafe { Fd::from_raw(fd.into_raw_fd()) })
    }

    /// Calls `handler` once the descriptor is ready for `what` (readable:
    /// data, end of file, a hang-up or an error; writable: room, or an
    /// error). Nothing is read or written.
    pub fn async_wait<F>(
        &self, what: Readiness, handler: F,
    ) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<()>) + Send + 'static,
    {
        B::wait(self.at(), what, Waited(handler)).map_err(|r| r.map(|w| w.0))
    }

    /// [`async_wait`](Self::async_wait) with a handler of the crate's own
    /// (which a refusal hands back whole).
    pub(crate) fn wait_with<H>(
        &self, what: Readiness, h: H,
    ) -> core::result::Result<(), Rejected<H>>
    where
        H: Handler<B, Result<()>>,
    {
        B::wait(self.at(), what, h)
    }

    /// Reads what is there now: the count (0 at end of file), or
    /// `WouldBlock`.
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize> {
        self.with_fd(|fd| Ok(pinion_sys::fd::read(fd, buf)?))
    }

    /// Writes what fits now: the count, or `WouldBlock`. (A pipe whose
    /// reader is gone gives `BrokenPipe`, and raises SIGPIPE unless the
    /// program ignores it.)
    pub fn try_write(&self, buf: &[u8]) -> Result<usize> {
        self.with_fd(|fd| Ok(pinion_sys::fd::write(fd, buf)?))
    }

    /// Reads at most `buf.spare()` bytes into `buf`'s room once the
    /// descriptor is readable: the count and the buffer back, `Eof` at end
    /// of file (a pipe's writer closed), `BufferFull` for a buffer with no
    /// room.
    pub fn async_read_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBufMut,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        if buf.spare() == 0 {
            return Err(Rejected {
                error: Error::BufferFull,
                handler: (buf, handler),
            });
        }
        Step::start(self.at(), ReadOne(buf), handler)
    }

    /// Writes at most `buf.bytes_len()` bytes of `buf` once the descriptor
    /// is writable: the count and the buffer back.
    pub fn async_write_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        Step::start(self.at(), WriteOne(buf), handler)
    }

    /// Reads at most `bufs.total_spare()` bytes into the room of several
    /// buffers, each filled before the next (`readv(2)` once the
    /// descriptor is readable): the count and the buffers back, `Eof` at
    /// end of file, `BufferFull` for a list with no room.
    pub fn async_read_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufsMut,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        if bufs.total_spare() == 0 {
            return Err(Rejected {
                error: Error::BufferFull,
                handler: (bufs, handler),
            });
        }
        Step::start(self.at(), ReadList(bufs), handler)
    }

    /// Writes at most `bufs.total_len()` bytes of several buffers, in
    /// order (`writev(2)` once the descriptor is writable): the count and
    /// the buffers back.
    /// [`async_write_vectored`](crate::compose::async_write_vectored)
    /// writes them all.
    pub fn async_write_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufs,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        Step::start(self.at(), WriteList(bufs), handler)
    }

    /// Waits until the descriptor is ready for `what` (a future; dropping
    /// it loses nothing).
    pub fn ready(&self, what: Readiness) -> Ready<'c, B> {
        crate::aio::Op::new(self.ctx, self.key, crate::aio::WaitFor(what))
    }

    /// Reads into `buf` once data is there: the count, 0 at end of file.
    /// Cancel-safe: dropping the future before it completes reads nothing.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.try_read(buf) {
                Err(Error::WouldBlock) => self.ready(Readiness::Readable).await?,
                r => return r,
            }
        }
    }

    /// Writes from `buf` once there is room: the count. Cancel-safe.
    pub async fn write(&self, buf: &[u8]) -> Result<usize> {
        loop {
            match self.try_write(buf) {
                Err(Error::WouldBlock) => self.ready(Readiness::Writable).await?,
                r => return r,
            }
        }
    }

    /// Reads into the room of several buffers, each filled before the
    /// next, once data is there (`readv(2)`): the count, `Eof` at end of
    /// file, `BufferFull` for a list with no room. Cancel-safe: dropping
    /// the future before it completes reads nothing.
    pub async fn read_vectored<T: IoBufsMut>(&self, bufs: &mut T) -> Result<usize> {
        if bufs.total_spare() == 0 {
            return Err(Error::BufferFull);
        }
        loop {
            match self.with_fd(|fd| step::read_list(bufs, fd)) {
                Err(Error::WouldBlock) => self.ready(Readiness::Readable).await?,
                r => return r,
            }
        }
    }

    /// Writes the bytes of several buffers, in order, once there is room
    /// (`writev(2)`): the count. Cancel-safe.
    pub async fn write_vectored<T: IoBufs>(&self, bufs: &T) -> Result<usize> {
        loop {
            match self.with_fd(|fd| step::write_list(bufs, fd)) {
                Err(Error::WouldBlock) => self.ready(Readiness::Writable).await?,
                r => return r,
            }
        }
    }

    /// The descriptor number, or -1 once closed.
    pub fn as_raw_fd(&self) -> i32 {
        self.with_fd(Ok).unwrap_or(-1)
    }

    /// Every pending wait, read and write completes with
    /// `OperationAborted`, buffers handed back.
    pub fn cancel(&self) -> Result<()> {
        B::cancel(self.at())
    }

    /// Cancels what is pending, closes the descriptor, frees its slot.
    pub fn close(&self) -> Result<()> {
        B::close(self.at())
    }

    /// Hands the descriptor back out of the context: a duplicate of it
    /// (`F_DUPFD_CLOEXEC`, the same open file) that the caller owns, the
    /// registered one closed as by [`close`](Self::close).
    pub fn release(&self) -> Result<Fd> {
        let fd = self.with_fd(|fd| Ok(pinion_sys::fd::duplicate(fd)?))?;
        self.close()?;
        Ok(fd)
    }

    /// The context this descriptor belongs to.
    pub fn context(&self) -> &'c IoContext<B> {
        self.ctx
    }

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

/// A readiness wait's handler: the user's closure.
struct Waited<F>(F);

impl<B: Backend, F: FnOnce(Result<()>) + Send> Handler<B, Result<()>> for Waited<F> {
    fn call(self, _: &Sched<B>, r: Result<()>) {
        (self.0)(r)
    }
}
impl<F> OpHooks for Waited<F> {}

impl<B: Backend> Close for StreamDescriptor<'_, B> {
    fn close(&self) -> Result<()> {
        StreamDescriptor::close(self)
    }
}

impl<B: Backend> AsyncReadSome for StreamDescriptor<'static, B> {
    fn async_read_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBufMut,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        StreamDescriptor::async_read_some(self, buf, handler)
    }
}

impl<B: Backend> AsyncWriteSome for StreamDescriptor<'static, B> {
    fn async_write_some<Buf, F>(
        &self, buf: Buf, handler: F,
    ) -> core::result::Result<(), Rejected<(Buf, F)>>
    where
        Buf: IoBuf,
        F: FnOnce(Result<usize>, Buf) + Send + 'static,
    {
        StreamDescriptor::async_write_some(self, buf, handler)
    }
}

impl<B: Backend> AsyncWriteSomeVectored for StreamDescriptor<'static, B> {
    fn async_write_some_vectored<Bufs, F>(
        &self, bufs: Bufs, handler: F,
    ) -> core::result::Result<(), Rejected<(Bufs, F)>>
    where
        Bufs: IoBufs,
        F: FnOnce(Result<usize>, Bufs) + Send + 'static,
    {
        StreamDescriptor::async_write_some_vectored(self, bufs, handler)
    }
}

impl<B: Backend> Post for StreamDescriptor<'_, B> {
    /// Composed operations with nothing to transfer complete through this.
    fn post_handler<T: Send + 'static>(
        &self, value: T, run: fn(T),
    ) -> core::result::Result<(), Rejected<T>> {
        post_value(self.ctx.sched(), value, run)
    }
}

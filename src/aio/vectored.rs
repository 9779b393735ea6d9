//! The stream futures over buffer lists (scatter reads, gather writes,
//! and the composed `write_all_vectored`) and over the read pool (pooled
//! reads): the same operations as the callback forms, with the futures'
//! rules (owned buffers back in the output, drop = cancel).

use pinion_core::backend::{At, Backend};
use pinion_core::buf::{Consuming, IoBufs, IoBufsMut};
use pinion_core::pooled::PooledBuf;
use pinion_core::{Error, Pool, Result};

use super::{Op, Refusal, Start, Waiter};
use crate::context::IoContext;
use crate::net::{Family, StreamSocket};

/// `StreamSocket::read_vectored`: one scatter read.
pub type ReadVectored<'c, B, T> = Op<'c, B, ReadSomeVectored<T>>;
/// `StreamSocket::write_vectored`: one gather write.
pub type WriteVectored<'c, B, T> = Op<'c, B, WriteSomeVectored<T>>;
/// `StreamSocket::read_pooled`: one read into a buffer of the read pool.
pub type ReadPooled<'c, B> = Op<'c, B, PooledOne>;

/// The start of a scatter read.
pub struct ReadSomeVectored<T>(T);
/// The start of a gather write.
pub struct WriteSomeVectored<T>(T);
/// The start of a pooled read.
pub struct PooledOne;
/// A pooled read's result as its future keeps it: the buffer, with the
/// context's lifetime (a type of its own, so that the backend's buffer of
/// any lifetime converts into it).
pub struct PooledRead<'c>(pub(crate) Result<PooledBuf<'c>>);

impl<'c, B: Backend, T: IoBufsMut> Start<'c, B> for ReadSomeVectored<T> {
    type Value = (Result<usize>, T);
    type Output = (Result<usize>, T);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        // A list with no room would read 0 bytes, which means end of
        // stream: refused, as the callback form does.
        if self.0.total_spare() == 0 {
            return Err((Error::BufferFull, self, h));
        }
        B::read_some_vectored(at, self.0, h)
            .map_err(|r| (r.error, ReadSomeVectored(r.handler.0), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend, T: IoBufs> Start<'c, B> for WriteSomeVectored<T> {
    type Value = (Result<usize>, T);
    type Output = (Result<usize>, T);

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        B::write_some_vectored(at, self.0, h)
            .map_err(|r| (r.error, WriteSomeVectored(r.handler.0), r.handler.1))
    }
    fn refused(self, error: Error) -> Self::Output {
        (Err(error), self.0)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v
    }
}

impl<'c, B: Backend> Start<'c, B> for PooledOne {
    type Value = PooledRead<'c>;
    type Output = Result<PooledBuf<'c>>;

    fn start(
        self, at: At<'_, B>, h: Waiter<B, Self::Value>,
    ) -> core::result::Result<(), Refusal<'c, B, Self>> {
        if at.sched.task().read_buffers().is_none() {
            return Err((Error::NoPool(Pool::ReadBuffers), self, h));
        }
        B::read_pooled(at, h).map_err(|r| (r.error, self, r.handler))
    }
    fn refused(self, error: Error) -> Self::Output {
        Err(error)
    }
    fn output(_: &'c IoContext<B>, v: Self::Value) -> Self::Output {
        v.0
    }
}

impl<'c, B: Backend, P: Family> StreamSocket<'c, B, P> {
    /// Reads at most `bufs.total_spare()` bytes into the room of several
    /// buffers, each filled before the next (one `recvmsg`; on io_uring
    /// `IORING_OP_RECVMSG`): the count and the buffers back; `Eof` when
    /// the peer has closed, `BufferFull` for a list with no room. Dropping
    /// the future cancels the read (bytes it had already read are lost).
    ///
    /// ```
    /// # #[cfg(not(miri))] {
    /// let ctx: &'static pinion::IoContext = pinion::Builder::new().tasks(2, 1024).build_static().unwrap();
    /// let (a, b) = pinion::net::UnixStream::pair(ctx).unwrap();
    /// let bufs = ctx.block_on(async move {
    ///     let (r, _) = a.write_all(&b"headbody"[..]).await;
    ///     r.unwrap();
    ///     let (r, bufs) = b.read_vectored([Vec::with_capacity(4), Vec::with_capacity(16)]).await;
    ///     assert_eq!(r, Ok(8));
    ///     bufs
    /// });
    /// assert_eq!(bufs.unwrap(), [b"head".to_vec(), b"body".to_vec()]);
    /// # }
    /// ```
    pub fn read_vectored<T: IoBufsMut>(&self, bufs: T) -> ReadVectored<'c, B, T> {
        Op::new(self.context(), self.key(), ReadSomeVectored(bufs))
    }

    /// Writes at most `bufs.total_len()` bytes of several buffers, in
    /// order (one `sendmsg`, without SIGPIPE; on io_uring
    /// `IORING_OP_SENDMSG`): the count and the buffers back.
    pub fn write_vectored<T: IoBufs>(&self, bufs: T) -> WriteVectored<'c, B, T> {
        Op::new(self.context(), self.key(), WriteSomeVectored(bufs))
    }

    /// Writes every byte of every buffer of `bufs`, in order, across
    /// partial gather writes (each goes on inside the buffer the last one
    /// ended in): `Ok(())`, or the first error (`BrokenPipe` for a write
    /// that took nothing); the buffers come back either way.
    pub async fn write_all_vectored<T: IoBufs>(&self, bufs: T) -> (Result<()>, T) {
        let mut rest = Consuming::new(bufs);
        while rest.total_len() > 0 {
            let (r, back) = self.write_vectored(rest).await;
            rest = back;
            match r {
                Ok(0) => return (Err(Error::BrokenPipe), rest.into_inner()),
                Ok(n) => rest.consume(n),
                Err(e) => return (Err(e), rest.into_inner()),
            }
        }
        (Ok(()), rest.into_inner())
    }

    /// Reads into a buffer of the context's read pool, taken only once
    /// data has arrived (see [`async_read_pooled`](Self::async_read_pooled)
    /// for the errors). Dropping the future cancels the read; a buffer it
    /// had filled meanwhile goes back to the pool.
    pub fn read_pooled(&self) -> ReadPooled<'c, B> {
        Op::new(self.context(), self.key(), PooledOne)
    }
}

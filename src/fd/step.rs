//! A descriptor's read or write: a readiness wait, then one attempt in
//! the wait's completion (another wait if the readiness was spurious,
//! i.e. another reader took the data first). The step is written once;
//! what one attempt moves ([`Transfer`]) is one buffer (`read(2)`,
//! `write(2)`) or a buffer list (`readv(2)`, `writev(2)`).
//!
//! Every attempt asks the kernel, whatever the last one moved: a short
//! read here does not mean the descriptor is drained (a tty in canonical
//! mode gives one line per read with more lines queued), and the next
//! step's wait reports readiness that is still there (epoll re-arms the
//! descriptor for it, io_uring's `POLL_ADD` looks at it first).

use core::marker::PhantomData;
use core::mem::{align_of, size_of};

use pinion_core::backend::{At, Backend, Handler, Key, OpHooks, Readiness, Sched};
use pinion_core::buf::{IoBuf, IoBufMut, IoBufs, IoBufsMut, IoVec};
use pinion_core::{Error, Rejected, Result};

// The kernel reads pinion's `IoVec`s as its `struct iovec`s.
const _: () = assert!(
    size_of::<IoVec>() == size_of::<libc::iovec>()
        && align_of::<IoVec>() == align_of::<libc::iovec>()
);

/// What one attempt of a step moves, and what its handler gets back.
pub(super) trait Transfer: Send {
    /// The buffer (or list) handed back with the result.
    type Buf;
    /// What the step waits for before each attempt.
    const READY: Readiness;
    /// One attempt on `fd`: the count (a read's bytes committed to its
    /// buffers, a read of 0 is `Eof`), or the error (`WouldBlock`: wait
    /// again).
    fn attempt(&mut self, fd: i32) -> Result<usize>;
    /// The buffer back.
    fn into_buf(self) -> Self::Buf;
}

/// `read(2)` into one buffer's room.
pub(super) struct ReadOne<Buf>(pub(super) Buf);
/// `write(2)` of one buffer's bytes.
pub(super) struct WriteOne<Buf>(pub(super) Buf);
/// `readv(2)` into the room of a list, each buffer filled before the next.
pub(super) struct ReadList<T>(pub(super) T);
/// `writev(2)` of a list's bytes, in order.
pub(super) struct WriteList<T>(pub(super) T);

/// A read's count: 0 is end of file (a step is only started with room,
/// so 0 bytes cannot mean "no room").
fn read_count(n: usize) -> Result<usize> {
    if n == 0 {
        Err(Error::Eof)
    } else {
        Ok(n)
    }
}

/// The iovecs in the kernel's form.
fn as_iovecs(v: &[IoVec]) -> &[libc::iovec] {
    // SAFETY: same size and alignment (asserted above), and `IoVec` is
    // `repr(C)` with the fields of `struct iovec` in its order.
    unsafe { core::slice::from_raw_parts(v.as_ptr().cast(), v.len()) }
}

impl<Buf: IoBufMut> Transfer for ReadOne<Buf> {
    type Buf = Buf;
    const READY: Readiness = Readiness::Readable;

    fn attempt(&mut self, fd: i32) -> Result<usize> {
        // SAFETY: `write_ptr` is valid for `spare()` bytes of writes
        // (IoBufMut's contract), and nothing else touches the buffer
        // while this step owns it.
        let room = unsafe { core::slice::from_raw_parts_mut(self.0.write_ptr(), self.0.spare()) };
        let n = read_count(pinion_sys::fd::read(fd, room)?)?;
        // SAFETY: the kernel wrote `n` bytes into the room.
        unsafe { self.0.advance(n) };
        Ok(n)
    }

    fn into_buf(self) -> Buf {
        self.0
    }
}

impl<Buf: IoBuf> Transfer for WriteOne<Buf> {
    type Buf = Buf;
    const READY: Readiness = Readiness::Writable;

    fn attempt(&mut self, fd: i32) -> Result<usize> {
        Ok(pinion_sys::fd::write(fd, self.0.as_slice())?)
    }

    fn into_buf(self) -> Buf {
        self.0
    }
}

/// One `readv(2)` into the room of `bufs`, committing what came.
pub(super) fn read_list<T: IoBufsMut>(bufs: &mut T, fd: i32) -> Result<usize> {
    let room = bufs.total_spare();
    let iov = bufs.io_vecs_mut();
    // SAFETY: every iovec is valid for writes of its length (IoBufsMut),
    // and the caller holds the buffers exclusively.
    let n = read_count(unsafe { pinion_sys::fd::readv(fd, as_iovecs(iov.as_ref())) }?)?;
    // SAFETY: the kernel filled the first `n <= room` bytes of the
    // iovecs, in order.
    unsafe { bufs.advance(n.min(room)) };
    Ok(n)
}

/// One `writev(2)` of the bytes of `bufs`.
pub(super) fn write_list<T: IoBufs>(bufs: &T, fd: i32) -> Result<usize> {
    let iov = bufs.io_vecs(0);
    // SAFETY: every iovec is valid for reads of its length (IoBufs).
    Ok(unsafe { pinion_sys::fd::writev(fd, as_iovecs(iov.as_ref())) }?)
}

impl<T: IoBufsMut> Transfer for ReadList<T> {
    type Buf = T;
    const READY: Readiness = Readiness::Readable;

    fn attempt(&mut self, fd: i32) -> Result<usize> {
        read_list(&mut self.0, fd)
    }

    fn into_buf(self) -> T {
        self.0
    }
}

impl<T: IoBufs> Transfer for WriteList<T> {
    type Buf = T;
    const READY: Readiness = Readiness::Writable;

    fn attempt(&mut self, fd: i32) -> Result<usize> {
        write_list(&self.0, fd)
    }

    fn into_buf(self) -> T {
        self.0
    }
}

/// One read or write of the descriptor `key`: the wait's handler.
pub(super) struct Step<B, X, F> {
    key: Key,
    x: X,
    f: F,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, X: Transfer, F> Step<B, X, F>
where
    F: FnOnce(Result<usize>, X::Buf) + Send,
{
    /// Starts the step's first wait; a refusal hands the buffer and the
    /// handler back.
    pub(super) fn start(
        at: At<'_, B>, x: X, f: F,
    ) -> core::result::Result<(), Rejected<(X::Buf, F)>> {
        let step = Step {
            key: at.key,
            x,
            f,
            _b: PhantomData,
        };
        B::wait(at, X::READY, step).map_err(|r| r.map(|s| (s.x.into_buf(), s.f)))
    }
}

impl<B: Backend, X: Transfer, F> Handler<B, Result<()>> for Step<B, X, F>
where
    F: FnOnce(Result<usize>, X::Buf) + Send,
{
    fn call(mut self, sched: &Sched<B>, r: Result<()>) {
        let moved = r.and_then(|()| sched.task().with_fd(self.key, |fd| self.x.attempt(fd)));
        if moved == Err(Error::WouldBlock) {
            let at = At {
                sched,
                key: self.key,
            };
            if let Err(r) = B::wait(at, X::READY, self) {
                let s = r.handler;
                (s.f)(Err(r.error), s.x.into_buf());
            }
            return;
        }
        (self.f)(moved, self.x.into_buf())
    }
}
impl<B, X, F> OpHooks for Step<B, X, F> {}

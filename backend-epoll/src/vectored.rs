//! Vectored reads and writes on a socket (`recvmsg`/`sendmsg` with one
//! iovec per buffer): the same reactor operations as `recv`/`send`, with
//! a buffer list instead of one buffer. The iovecs are built on the stack
//! for each attempt: the kernel reads them only during the call.

use core::mem::{align_of, size_of, zeroed};

use pinion_core::backend::{Handler, OpResult, Sched};
use pinion_core::buf::{IoBufs, IoBufsMut, IoVec};
use pinion_core::{Error, Result};

use crate::ops::{stream_call, Attempt, OpState};
use crate::reactor::Reactor;

// The kernel reads pinion's `IoVec`s as its `struct iovec`s.
const _: () = assert!(
    size_of::<IoVec>() == size_of::<libc::iovec>()
        && align_of::<IoVec>() == align_of::<libc::iovec>()
);

/// A `msghdr` naming `iov` and nothing else.
fn msghdr(iov: &mut [IoVec]) -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr (no address, no control data).
    let mut m: libc::msghdr = unsafe { zeroed() };
    m.msg_iov = iov.as_mut_ptr().cast();
    // usize on glibc, i32 on musl.
    m.msg_iovlen = iov.len() as _;
    m
}

/// `recvmsg` into the room of every buffer, in order.
pub(crate) struct RecvV<T> {
    pub(crate) bufs: T,
}

impl<T: IoBufsMut, H: Handler<Reactor, (Result<usize>, T)>> OpState<H> for RecvV<T> {
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        let room = self.bufs.total_spare();
        let mut iov = self.bufs.io_vecs_mut();
        let mut msg = msghdr(iov.as_mut());
        // SAFETY: every iovec is valid for writes of its length
        // (IoBufsMut), and `msg` and `iov` outlive the call.
        match stream_call(|| unsafe { libc::recvmsg(fd, &mut msg, 0) }) {
            // The facade refuses a list with no room: 0 is end of stream.
            Ok(0) => Attempt::Done(Err(Error::Eof)),
            Ok(n) => {
                // SAFETY: the kernel filled the first `n <= room` bytes of
                // the iovecs, in order.
                unsafe { self.bufs.advance(n) };
                if n < room {
                    Attempt::Exhausted(Ok(n))
                } else {
                    Attempt::Done(Ok(n))
                }
            }
            Err(Error::WouldBlock) => Attempt::NotDone,
            Err(e) => Attempt::Done(Err(e)),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, (r, self.bufs))
    }
}

/// `sendmsg` of every buffer's bytes, in order, without SIGPIPE.
pub(crate) struct SendV<T> {
    pub(crate) bufs: T,
}

impl<T: IoBufs, H: Handler<Reactor, (Result<usize>, T)>> OpState<H> for SendV<T> {
    fn perform(&mut self, _: &Reactor, fd: i32) -> Attempt {
        let len = self.bufs.total_len();
        let mut iov = self.bufs.io_vecs(0);
        let msg = msghdr(iov.as_mut());
        // SAFETY: every iovec is valid for reads of its length (IoBufs),
        // and `msg` and `iov` outlive the call.
        match stream_call(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }) {
            Ok(n) if n < len => Attempt::Exhausted(Ok(n)),
            Ok(n) => Attempt::Done(Ok(n)),
            Err(Error::WouldBlock) => Attempt::NotDone,
            Err(e) => Attempt::Done(Err(e)),
        }
    }

    fn run(self, sched: &Sched<Reactor>, r: OpResult, handler: H) {
        handler.call(sched, (r, self.bufs))
    }
}

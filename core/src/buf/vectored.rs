//! Buffer lists for vectored I/O (scatter reads, gather writes): several
//! buffers moved by one system call (`readv`/`writev`, `recvmsg`/
//! `sendmsg`; on io_uring `IORING_OP_RECVMSG`/`SENDMSG`).
//!
//! A list is a fixed array `[T; N]` of [`IoBuf`]s ([`IoBufMut`]s to read
//! into), owned by the operation while it is in flight like any buffer,
//! with its kernel form ([`IoVec`]s) kept beside it in the operation's
//! slot where the kernel reads it after the call returns (io_uring). No
//! allocation: the array and its iovecs fit one operation slot, or the
//! operation does not compile (a slot-size error names the type), which
//! is the limit on `N` (how many fit depends on `T`, the handler and the
//! backend; three `Vec`s and a small handler do on both).
//! [`Consuming`] is a list from a byte offset on: what is left to write
//! after partial gather writes (Asio's `consuming_buffers`).
//!
//! ```
//! use pinion_core::buf::{IoBufs, IoBufsMut};
//!
//! let out: [&'static [u8]; 3] = [b"GET ", b"/ HTTP/1.0", b"\r\n\r\n"];
//! assert_eq!(out.total_len(), 18);
//! // Skipping what a partial write took: 6 bytes are the first buffer
//! // and 2 of the second.
//! let v = out.io_vecs(6);
//! assert_eq!((v[0].len, v[1].len, v[2].len), (0, 8, 4));
//!
//! # #[cfg(feature = "alloc")] {
//! let mut into = [Vec::with_capacity(2), Vec::with_capacity(8)];
//! assert_eq!(into.total_spare(), 10);
//! // SAFETY (of the example): nothing was read, 0 bytes are committed.
//! unsafe { into.advance(0) };
//! # }
//! ```

use super::{IoBuf, IoBufMut};

/// One buffer of a vectored call, laid out as the kernel's `struct
/// iovec` (a pointer and a length; checked where the backends hand it to
/// the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoVec {
    /// Start of the bytes.
    pub base: *mut u8,
    /// How many.
    pub len: usize,
}

// SAFETY: an address and a length, with no access of its own: what it
// points to is owned by the buffer list next to it.
unsafe impl Send for IoVec {}
// SAFETY: as above.
unsafe impl Sync for IoVec {}

impl IoVec {
    /// No bytes.
    pub const EMPTY: IoVec = IoVec {
        base: core::ptr::null_mut(),
        len: 0,
    };
}

/// Several buffers written as one, in order (a gather write).
///
/// # Safety
/// Each iovec [`io_vecs`](Self::io_vecs) returns is valid for reads of its
/// length, and stays valid and unchanged while the value moves, until it
/// is dropped or a `&mut` method is called; together they hold
/// `total_len() - skip` bytes.
pub unsafe trait IoBufs: Send + 'static {
    /// The kernel form of the list: one [`IoVec`] per buffer.
    type IoVecs: AsRef<[IoVec]> + AsMut<[IoVec]> + Send + 'static;

    /// The initialised bytes of every buffer, in order, without the first
    /// `skip` bytes of the whole (what a partial write took): those
    /// buffers come out empty.
    fn io_vecs(&self, skip: usize) -> Self::IoVecs;

    /// Initialised bytes in all the buffers.
    fn total_len(&self) -> usize;
}

/// Several buffers read into as one, in order (a scatter read): the room
/// after each buffer's initialised bytes.
///
/// # Safety
/// Each iovec [`io_vecs_mut`](Self::io_vecs_mut) returns is valid for
/// writes of its length and stays valid while the value moves; together
/// they hold `total_spare()` bytes; `advance(n)` makes the first `n`
/// bytes of that room (in order) initialised.
pub unsafe trait IoBufsMut: IoBufs {
    /// The room of every buffer, in order.
    fn io_vecs_mut(&mut self) -> Self::IoVecs;

    /// Bytes of room in all the buffers.
    fn total_spare(&self) -> usize;

    /// Marks the first `n` bytes of the room initialised: each buffer is
    /// filled before the next (as the kernel fills iovecs).
    ///
    /// # Safety
    /// `n <= total_spare()` and those bytes were written.
    unsafe fn advance(&mut self, n: usize);
}

// SAFETY: each iovec is a suffix of one buffer's initialised bytes, which
// `IoBuf` keeps valid and in place while the array moves.
unsafe impl<T: IoBuf, const N: usize> IoBufs for [T; N] {
    type IoVecs = [IoVec; N];

    fn io_vecs(&self, mut skip: usize) -> [IoVec; N] {
        let mut v = [IoVec::EMPTY; N];
        for (b, out) in self.iter().zip(v.iter_mut()) {
            let len = b.bytes_len();
            let cut = skip.min(len);
            skip -= cut;
            *out = IoVec {
                // Within the buffer (or one past its end when all of it
                // was taken, with length 0).
                base: b.read_ptr().wrapping_add(cut) as *mut u8,
                len: len - cut,
            };
        }
        v
    }

    fn total_len(&self) -> usize {
        self.iter().map(IoBuf::bytes_len).sum()
    }
}

// SAFETY: each iovec is one buffer's room (`IoBufMut`), and `advance`
// commits bytes in the order the iovecs list them.
unsafe impl<T: IoBufMut, const N: usize> IoBufsMut for [T; N] {
    fn io_vecs_mut(&mut self) -> [IoVec; N] {
        let mut v = [IoVec::EMPTY; N];
        for (b, out) in self.iter_mut().zip(v.iter_mut()) {
            *out = IoVec {
                base: b.write_ptr(),
                len: b.spare(),
            };
        }
        v
    }

    fn total_spare(&self) -> usize {
        self.iter().map(IoBufMut::spare).sum()
    }

    unsafe fn advance(&mut self, mut n: usize) {
        for b in self.iter_mut() {
            let k = n.min(b.spare());
            // SAFETY: the first `k <= spare()` bytes of this buffer's room
            // were written (the caller's `n` covers them, in order).
            unsafe { b.advance(k) };
            n -= k;
        }
    }
}

/// A buffer list from a byte offset on (Asio's `consuming_buffers`): the
/// bytes a gather write has still to send after partial writes took the
/// first [`consumed`](Self::consumed). The vectored form of
/// [`Slice`](super::Slice).
///
/// ```
/// use pinion_core::buf::{Consuming, IoBufs};
///
/// let mut rest = Consuming::new([&b"head"[..], &b"body"[..]]);
/// rest.consume(6);
/// assert_eq!(rest.total_len(), 2);
/// let v = rest.io_vecs(0);
/// assert_eq!((v[0].len, v[1].len), (0, 2));
/// assert_eq!(rest.into_inner(), [&b"head"[..], &b"body"[..]]);
/// ```
#[derive(Debug)]
pub struct Consuming<T> {
    bufs: T,
    consumed: usize,
}

impl<T: IoBufs> Consuming<T> {
    /// All of `bufs`.
    pub fn new(bufs: T) -> Self {
        Consuming { bufs, consumed: 0 }
    }

    /// `n` more bytes were written (clamped to what is left).
    pub fn consume(&mut self, n: usize) {
        self.consumed = (self.consumed + n).min(self.bufs.total_len());
    }

    /// Bytes written so far.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The underlying list, whole.
    pub fn into_inner(self) -> T {
        self.bufs
    }

    /// The underlying list.
    pub fn get_ref(&self) -> &T {
        &self.bufs
    }
}

// SAFETY: the iovecs of `T` past the bytes consumed, which `T` keeps
// valid and in place while it, and so this struct, moves.
unsafe impl<T: IoBufs> IoBufs for Consuming<T> {
    type IoVecs = T::IoVecs;

    fn io_vecs(&self, skip: usize) -> T::IoVecs {
        self.bufs.io_vecs(self.consumed + skip)
    }

    fn total_len(&self) -> usize {
        self.bufs.total_len() - self.consumed
    }
}

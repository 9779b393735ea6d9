//! [`async_read_until`] (Asio's `read_until.hpp`).

use crate::buf::{IoBuf, IoBufMut};
use crate::{Error, Rejected, Result};

use super::{AsyncReadSome, Post, MAX_TRANSFER_SIZE};

/// Reads into `buf` until its initialised bytes contain `delim` (Asio's
/// `async_read_until` with a string delimiter).
///
/// `handler` gets `Ok(n)`, `n` being the index just past the first
/// occurrence of `delim` in the buffer. Bytes after it may already be in
/// the buffer; they stay there for the next call, as in Asio. The search
/// covers the bytes already in the buffer when this is called; if they
/// hold the delimiter, nothing is read and `Ok(n)` comes through [`Post`].
/// Errors, with the buffer and every byte read so far in it:
/// - `Err(NotFound)`: the buffer filled up without the delimiter;
/// - `Err(Eof)`: the peer closed first;
/// - any error of the stream's read, or `PoolFull(Ops)` when a later step
///   cannot be queued.
///
/// Each search resumes where the last one stopped, less `delim.len() - 1`
/// bytes, so a delimiter split across reads is found without rescanning
/// (Asio's partial-match search). Each read asks for
/// `min(spare, MAX_TRANSFER_SIZE)` bytes: Asio's `read_size_helper`,
/// `min(max(512, capacity - size), min(65536, max_size - size))`, with
/// `capacity == max_size` for a fixed-capacity buffer.
///
/// An empty `delim` is found at once, at offset 0. The handler never runs
/// inside this call; if the first step cannot be queued, buffer and
/// handler come back in the `Err`.
pub fn async_read_until<S, B, F>(
    stream: &S, buf: B, delim: &'static [u8], handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncReadSome + Post,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    let mut op = ReadUntilOp {
        buf,
        stream: stream.clone(),
        handler,
        search: DelimSearch::new(delim),
    };
    let started = match op.outcome() {
        Some(res) => stream
            .post_handler((op, res), |(op, res)| op.finish(res))
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            }),
        None => op.issue(),
    };
    started.map_err(|r| Rejected {
        error: r.error,
        handler: (r.handler.buf, r.handler.handler),
    })
}

/// [`async_read_until`] with a one-byte delimiter (Asio's `char` overload).
pub fn async_read_until_byte<S, B, F>(
    stream: &S, buf: B, delim: u8, handler: F,
) -> core::result::Result<(), Rejected<(B, F)>>
where
    S: AsyncReadSome + Post,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    async_read_until(stream, buf, byte_delim(delim), handler)
}

/// A one-byte delimiter as a `'static` slice.
pub fn byte_delim(b: u8) -> &'static [u8] {
    core::slice::from_ref(&BYTE_VALUES[b as usize])
}

/// Every byte value at its own index, so that any one-byte delimiter is a
/// `'static` slice.
static BYTE_VALUES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// [`async_read_until`]'s state machine, and the buffer each step reads
/// into.
pub(super) struct ReadUntilOp<S, B, F> {
    buf: B,
    stream: S,
    handler: F,
    search: DelimSearch,
}

/// `read_until`'s search, resumable across reads: the same for the
/// callback form and for futures.
#[derive(Clone, Copy, Debug)]
pub struct DelimSearch {
    delim: &'static [u8],
    /// Where the next search starts: no match begins before it.
    from: usize,
}

impl DelimSearch {
    /// A search for `delim` from the start of the buffer.
    pub const fn new(delim: &'static [u8]) -> Self {
        DelimSearch { delim, from: 0 }
    }

    /// Searches the bytes of `buf` not yet searched: `Some(Ok(n))` when
    /// the delimiter ends at `n`, `Some(Err(NotFound))` when `buf` is full
    /// without it, `None` when more bytes must be read.
    pub fn outcome<B: IoBufMut>(&mut self, buf: &B) -> Option<Result<usize>> {
        let hay = buf.as_slice();
        let start = self.from.min(hay.len());
        if let Some(i) = find(&hay[start..], self.delim) {
            return Some(Ok(start + i + self.delim.len()));
        }
        // A match not yet whole can start no earlier than the last
        // `delim.len() - 1` bytes.
        let tail = self.delim.len().saturating_sub(1);
        self.from = hay.len().saturating_sub(tail).max(start);
        if buf.spare() == 0 {
            return Some(Err(Error::NotFound));
        }
        None
    }
}

impl<S, B, F> ReadUntilOp<S, B, F>
where
    S: AsyncReadSome,
    B: IoBufMut,
    F: FnOnce(Result<usize>, B) + Send + 'static,
{
    /// Searches the bytes not yet searched. `Some` ends the operation
    /// (found, or full); `None` asks for another read.
    fn outcome(&mut self) -> Option<Result<usize>> {
        self.search.outcome(&self.buf)
    }

    /// Starts the next read, or hands the operation back.
    fn issue(self) -> core::result::Result<(), Rejected<Self>> {
        let stream = self.stream.clone();
        stream
            .async_read_some(self, Self::on_read)
            .map_err(|r| Rejected {
                error: r.error,
                handler: r.handler.0,
            })
    }

    /// Each read's completion: Asio's `read_until_delim_string_op` past
    /// `default:`.
    fn on_read(res: Result<usize>, mut op: Self) {
        match res {
            // No step asks for 0 bytes, so 0 means the peer closed.
            Ok(0) => return op.finish(Err(Error::Eof)),
            Ok(_) => {}
            Err(e) => return op.finish(Err(e)),
        }
        match op.outcome() {
            Some(res) => op.finish(res),
            None => {
                if let Err(r) = op.issue() {
                    r.handler.finish(Err(r.error));
                }
            }
        }
    }

    fn finish(self, res: Result<usize>) {
        (self.handler)(res, self.buf)
    }
}

/// Index of the first `needle` in `hay`; an empty needle is at 0.
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [] => Some(0),
        [b] => hay.iter().position(|x| x == b),
        _ => hay.windows(needle.len()).position(|w| w == needle),
    }
}

// SAFETY: the bytes are `buf`'s, which keeps them valid and in place while
// it, and so this struct, moves.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBuf for ReadUntilOp<S, B, F> {
    fn read_ptr(&self) -> *const u8 {
        self.buf.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.buf.bytes_len()
    }
}

// SAFETY: the room is a prefix of `buf`'s (`spare()` never exceeds
// `buf.spare()`), so `buf`'s guarantees cover it.
unsafe impl<S: Send + 'static, B: IoBufMut, F: Send + 'static> IoBufMut for ReadUntilOp<S, B, F> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.buf.write_ptr()
    }
    fn spare(&self) -> usize {
        self.buf.spare().min(MAX_TRANSFER_SIZE)
    }
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        // SAFETY: `n <= self.spare() <= self.buf.spare()` and those bytes
        // were written, per this function's contract.
        unsafe { self.buf.advance(n) }
    }
    fn clear(&mut self) {
        self.buf.clear()
    }
}

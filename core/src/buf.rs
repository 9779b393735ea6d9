//! Buffers that an operation owns while it is in flight.
//!
//! A kernel may write into a read buffer after the call that started the
//! read has returned (io_uring does, and a cancelled operation may still
//! be in the kernel), so pinion's I/O operations take their buffers by
//! value and hand them back in the completion, as tokio-uring and monoio
//! do. The traits say where the bytes are; moving the buffer value must not
//! move them (a `Vec`'s heap block, a pool chunk, a `'static` slice).
//!
//! - [`IoBuf`]: bytes to write, `read_ptr()..read_ptr()+bytes_len()`.
//! - [`IoBufMut`]: room to read into, after the initialised bytes:
//!   `write_ptr()..write_ptr()+spare()`; a read of `n` bytes calls
//!   `advance(n)`.
//! - [`Slice`]: a window of an `IoBuf` from an offset (partial writes).
//! - [`BufPool`] / [`PoolBuf`]: fixed-size chunks from fixed storage, for
//!   programs that allocate nothing; `Vec<u8>` with the `alloc` feature.
//! - [`IoBufs`] / [`IoBufsMut`]: a fixed array of buffers moved by one
//!   vectored call (gather writes, scatter reads).

use core::cell::{Cell, UnsafeCell};
use core::ptr::NonNull;

use pinion_sync::{Locked, RawMutex};

use crate::storage::Storage;

mod vectored;
pub use vectored::{Consuming, IoBufs, IoBufsMut, IoVec};

/// A buffer whose initialised bytes can be written to a descriptor.
///
/// # Safety
/// `read_ptr()` is valid for reads of `bytes_len()` bytes, and stays valid
/// and unchanged while the value is moved, until it is dropped or a `&mut`
/// method is called.
pub unsafe trait IoBuf: Send + 'static {
    /// Start of the initialised bytes.
    fn read_ptr(&self) -> *const u8;
    /// Number of initialised bytes.
    fn bytes_len(&self) -> usize;
    /// The initialised bytes.
    fn as_slice(&self) -> &[u8] {
        // SAFETY: per the trait's contract.
        unsafe { core::slice::from_raw_parts(self.read_ptr(), self.bytes_len()) }
    }
}

/// A buffer a descriptor can read into, after its initialised bytes.
///
/// # Safety
/// `write_ptr()` is valid for writes of `spare()` bytes and stays valid
/// while the value is moved; `advance(n)` with `n <= spare()` makes those
/// `n` bytes part of the initialised bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the free room (just past the initialised bytes).
    fn write_ptr(&mut self) -> *mut u8;
    /// Bytes of free room.
    fn spare(&self) -> usize;
    /// Marks `n` more bytes initialised.
    ///
    /// # Safety
    /// `n <= spare()` and those bytes were written.
    unsafe fn advance(&mut self, n: usize);
    /// Forgets every initialised byte (length 0), keeping the room.
    fn clear(&mut self);
}

/// A window `[begin..]` of an [`IoBuf`]: what a partial write leaves.
pub struct Slice<B> {
    buf: B,
    begin: usize,
}

impl<B: IoBuf> Slice<B> {
    /// The bytes of `buf` from `begin` on (clamped to its length).
    pub fn new(buf: B, begin: usize) -> Self {
        let begin = begin.min(buf.bytes_len());
        Slice { buf, begin }
    }
    /// Where the window starts in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }
    /// Moves the window's start `n` bytes on (clamped).
    pub fn consume(&mut self, n: usize) {
        self.begin = (self.begin + n).min(self.buf.bytes_len());
    }
    /// The underlying buffer, whole.
    pub fn into_inner(self) -> B {
        self.buf
    }
    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }
}

// SAFETY: a sub-range of `B`'s initialised bytes, which `B` keeps valid.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn read_ptr(&self) -> *const u8 {
        // SAFETY: begin <= bytes_len, so the offset stays in bounds.
        unsafe { self.buf.read_ptr().add(self.begin) }
    }
    fn bytes_len(&self) -> usize {
        self.buf.bytes_len() - self.begin
    }
}

// SAFETY: a `'static` slice never moves or frees.
unsafe impl IoBuf for &'static [u8] {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

// SAFETY: a `'static` str never moves or frees.
unsafe impl IoBuf for &'static str {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

#[cfg(any(test, feature = "alloc"))]
// SAFETY: a Vec's heap block does not move when the Vec value moves.
unsafe impl IoBuf for alloc::vec::Vec<u8> {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

#[cfg(any(test, feature = "alloc"))]
// SAFETY: the spare capacity belongs to the Vec and does not move with it.
unsafe impl IoBufMut for alloc::vec::Vec<u8> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.spare_capacity_mut().as_mut_ptr() as *mut u8
    }
    fn spare(&self) -> usize {
        self.capacity() - self.len()
    }
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        // SAFETY: the caller wrote `n` bytes of spare capacity.
        unsafe { self.set_len(self.len() + n) }
    }
    fn clear(&mut self) {
        alloc::vec::Vec::clear(self)
    }
}

// A `heapless::Vec` keeps its bytes inline, so the vector itself cannot
// be the buffer (moving it would move them); a `'static` one, borrowed
// for the operation, can: a fixed-capacity read_until buffer in a static.
#[cfg(feature = "heapless")]
// SAFETY: the vector is `'static` and exclusively borrowed: its bytes stay
// where they are however the reference moves.
unsafe impl<const N: usize> IoBuf for &'static mut heapless::Vec<u8, N> {
    fn read_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "heapless")]
// SAFETY: as for `IoBuf`; the room is the vector's own, past its length.
unsafe impl<const N: usize> IoBufMut for &'static mut heapless::Vec<u8, N> {
    fn write_ptr(&mut self) -> *mut u8 {
        let len = self.len();
        // SAFETY: `len <= N`: at most one past the vector's storage.
        unsafe { self.as_mut_ptr().add(len) }
    }
    fn spare(&self) -> usize {
        N - self.len()
    }
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        let len = self.len();
        // SAFETY: the caller wrote `n <= spare()` bytes after the length.
        unsafe { self.set_len(len + n) }
    }
    fn clear(&mut self) {
        heapless::Vec::clear(self)
    }
}

/// One chunk of a [`BufPool`].
#[repr(C, align(64))]
pub struct Chunk<const SIZE: usize>(UnsafeCell<[u8; SIZE]>);

impl<const SIZE: usize> Chunk<SIZE> {
    /// A zeroed chunk, for `static` initialisers (a `const` so that
    /// `[Chunk::ZERO; N]` works).
    #[allow(clippy::declare_interior_mutable_const)]
    pub const ZERO: Self = Chunk(UnsafeCell::new([0; SIZE]));
}

/// One chunk's link on its [`BufPool`]'s free list: a pool over static
/// memory takes one per chunk ([`BufPool::from_static`]).
pub struct ChunkLink(Cell<u32>);

impl ChunkLink {
    /// An unlinked link, for `static` initialisers (`[ChunkLink::NEW; N]`).
    #[allow(clippy::declare_interior_mutable_const)]
    pub const NEW: Self = ChunkLink(Cell::new(NIL));
}

/// A fixed pool of `SIZE`-byte buffers over fixed storage: the no-alloc
/// buffer source. A chunk goes back to the pool when its [`PoolBuf`] drops.
///
/// On static memory, with no allocation (a no_std program):
///
/// ```
/// use pinion_core::buf::{BufPool, Chunk, ChunkLink, IoBuf};
/// use pinion_core::{StaticArray, StaticCell};
/// use pinion_sync::SpinMutex;
///
/// static CHUNKS: StaticArray<Chunk<512>, 4> = StaticArray::new([Chunk::ZERO; 4]);
/// static LINKS: StaticArray<ChunkLink, 4> = StaticArray::new([ChunkLink::NEW; 4]);
/// // 'static, so that its buffers are I/O buffers.
/// static POOL: StaticCell<BufPool<SpinMutex, 512>> = StaticCell::new();
/// let pool = BufPool::from_static(CHUNKS.take().unwrap(), LINKS.take().unwrap());
/// let pool: &'static BufPool<SpinMutex, 512> = POOL.init(pool).ok().unwrap();
/// let buf = pool.alloc().unwrap();
/// assert_eq!((pool.capacity(), buf.bytes_len()), (4, 0));
/// ```
pub struct BufPool<M: RawMutex, const SIZE: usize> {
    list: Locked<M, FreeChunks>,
    /// Each free chunk's successor on the list, guarded with it.
    next: Storage<ChunkLink>,
    chunks: Storage<Chunk<SIZE>>,
}

/// The free chunks: a list through `next`, and the never-used ones from
/// `bump` on.
struct FreeChunks {
    free: u32,
    bump: u32,
}

const NIL: u32 = u32::MAX;

// SAFETY: the free list (and `next`) is only touched through its guard; each chunk's bytes
// are reachable only through the one PoolBuf that holds it.
unsafe impl<M: RawMutex + Sync, const SIZE: usize> Sync for BufPool<M, SIZE> {}
// SAFETY: as above; storage is owned.
unsafe impl<M: RawMutex + Send, const SIZE: usize> Send for BufPool<M, SIZE> {}

impl<M: RawMutex, const SIZE: usize> BufPool<M, SIZE> {
    /// A pool over `chunks`, with `links` (one per chunk) for its free list.
    /// Panics if the two differ in length or exceed `u32::MAX - 1`, a
    /// programming error at build time.
    pub fn new(chunks: Storage<Chunk<SIZE>>, links: Storage<ChunkLink>) -> Self {
        assert!(chunks.len() == links.len() && chunks.len() < NIL as usize);
        BufPool {
            list: Locked::new(FreeChunks { free: NIL, bump: 0 }),
            next: links,
            chunks,
        }
    }

    /// A pool over `static` memory (see [`StaticArray`](crate::StaticArray)):
    /// `chunks` and one link per chunk; panics if the lengths differ.
    pub fn from_static(
        chunks: &'static mut [Chunk<SIZE>], links: &'static mut [ChunkLink],
    ) -> Self {
        Self::new(Storage::from_static(chunks), Storage::from_static(links))
    }

    /// A pool of `n` chunks in one boxed allocation each for data and links;
    /// the data's pages are committed as chunks are first used.
    #[cfg(any(test, feature = "alloc"))]
    pub fn boxed(n: usize) -> Self {
        Self::new(
            // SAFETY: a chunk is bytes; all zero is a valid chunk.
            unsafe { Storage::boxed_zeroed(n) },
            Storage::boxed_with(n, || ChunkLink::NEW),
        )
    }

    /// Number of chunks.
    pub fn capacity(&self) -> usize {
        self.chunks.len()
    }

    /// An empty buffer of `SIZE` bytes of room, or `None` when all are out.
    pub fn alloc(&self) -> Option<PoolBuf<'_, M, SIZE>> {
        let mut list = self.list.lock();
        let i = list.free;
        let got = if i != NIL {
            // SAFETY: `i` came from the free list, so it is in bounds.
            list.free = unsafe { (*self.next.as_ptr().add(i as usize)).0.get() };
            Some(i)
        } else if (list.bump as usize) < self.chunks.len() {
            let b = list.bump;
            list.bump = b + 1;
            Some(b)
        } else {
            None
        };
        drop(list);
        got.map(|index| PoolBuf {
            pool: self,
            index,
            len: 0,
        })
    }

    fn release(&self, i: u32) {
        let mut list = self.list.lock();
        // SAFETY: `i` is a chunk index handed out by `alloc`.
        unsafe { (*self.next.as_ptr().add(i as usize)).0.set(list.free) };
        list.free = i;
    }

    fn chunk_ptr(&self, i: u32) -> NonNull<u8> {
        // SAFETY: `i` is in bounds (handed out by `alloc`).
        let c = unsafe { &*self.chunks.as_ptr().add(i as usize) };
        // SAFETY: UnsafeCell::get is never null.
        unsafe { NonNull::new_unchecked(c.0.get() as *mut u8) }
    }
}

/// A buffer leased from a [`BufPool`]; returns to it on drop.
pub struct PoolBuf<'p, M: RawMutex, const SIZE: usize> {
    pool: &'p BufPool<M, SIZE>,
    index: u32,
    len: usize,
}

// SAFETY: the chunk is exclusively this PoolBuf's; the pool is Sync.
unsafe impl<M: RawMutex + Sync, const SIZE: usize> Send for PoolBuf<'_, M, SIZE> {}

impl<M: RawMutex, const SIZE: usize> PoolBuf<'_, M, SIZE> {
    /// The chunk's index in its pool.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// Sets the initialised length (bytes past it keep their old contents).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(SIZE);
    }
    /// The whole chunk, for filling by hand; pair with `set_len`.
    pub fn as_mut_full(&mut self) -> &mut [u8; SIZE] {
        // SAFETY: the chunk is exclusively ours while leased.
        unsafe { &mut *(self.pool.chunk_ptr(self.index).as_ptr() as *mut [u8; SIZE]) }
    }
}

impl<M: RawMutex, const SIZE: usize> Drop for PoolBuf<'_, M, SIZE> {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

// SAFETY: the chunk lives in the pool's fixed storage and does not move.
unsafe impl<M: RawMutex + Sync + 'static, const SIZE: usize> IoBuf for PoolBuf<'static, M, SIZE> {
    fn read_ptr(&self) -> *const u8 {
        self.pool.chunk_ptr(self.index).as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; the room is the chunk past `len`.
unsafe impl<M: RawMutex + Sync + 'static, const SIZE: usize> IoBufMut
    for PoolBuf<'static, M, SIZE>
{
    fn write_ptr(&mut self) -> *mut u8 {
        // SAFETY: len <= SIZE, in bounds of the chunk.
        unsafe { self.pool.chunk_ptr(self.index).as_ptr().add(self.len) }
    }
    fn spare(&self) -> usize {
        SIZE - self.len
    }
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        self.len += n;
    }
    fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinion_sync::SpinMutex;

    #[test]
    fn pool_buf_fill_and_return() {
        // The pool must be 'static for PoolBuf to be an IoBuf; a static
        // keeps it reachable, so miri does not count it as a leak.
        static POOL: std::sync::OnceLock<BufPool<SpinMutex, 64>> = std::sync::OnceLock::new();
        let pool = POOL.get_or_init(|| BufPool::boxed(2));
        let mut a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_ne!(a.index(), b.index());
        assert_eq!(a.spare(), 64);
        // SAFETY: write within spare, then advance by what was written.
        unsafe {
            a.write_ptr().copy_from_nonoverlapping(b"hello".as_ptr(), 5);
            a.advance(5);
        }
        assert_eq!(a.as_slice(), b"hello");
        let s = Slice::new(a, 2);
        assert_eq!(s.as_slice(), b"llo");
        drop(s);
        let c = pool.alloc().unwrap();
        assert_eq!(c.bytes_len(), 0);
        drop((b, c));
        assert!(pool.alloc().is_some());
    }

    #[cfg(any(test, feature = "alloc"))]
    #[test]
    fn vec_as_buffer() {
        let mut v: std::vec::Vec<u8> = std::vec::Vec::with_capacity(8);
        v.push(1);
        assert_eq!(v.spare(), v.capacity() - 1);
        // SAFETY: one byte written into spare capacity.
        unsafe {
            *v.write_ptr() = 2;
            v.advance(1);
        }
        assert_eq!(v.as_slice(), &[1, 2]);
    }
}

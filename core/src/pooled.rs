//! Pooled reads' buffers, shared by both backends: the buffer a pooled
//! read hands its handler ([`PooledBuf`]), the pool interface a backend
//! implements ([`BufSource`]), the software pool itself ([`SlabPool`]),
//! and the pool's counts ([`ReadBufferCount`]).
//!
//! A pooled read takes its buffer only when data arrives (epoll: from a
//! [`SlabPool`] when the socket is readable; io_uring: the kernel picks
//! from a provided buffer ring), so a waiting read holds no memory. The
//! buffer goes back to its pool when the [`PooledBuf`] is dropped.

use core::ops::{Deref, DerefMut};
use core::ptr;

use pinion_sync::{Locked, RawMutex};

use crate::buf::IoBuf;
use crate::memory::{Contents, MemPool, Region};
use crate::storage::Storage;

/// A fixed pool of equal-sized byte buffers named by index, whose
/// buffers a backend hands out as [`PooledBuf`]s.
///
/// # Safety
/// For every index the pool hands out, `buf_ptr(index)` is valid for
/// `buf_size()` bytes, stays in place while the pool lives, and is used
/// by nobody else until it is given back.
pub unsafe trait BufSource: Sync {
    /// The first byte of buffer `index`.
    fn buf_ptr(&self, index: u32) -> *mut u8;
    /// Bytes per buffer.
    fn buf_size(&self) -> usize;
    /// Puts buffer `index` back in the pool.
    ///
    /// # Safety
    /// The pool handed `index` out, and its holder no longer uses it.
    unsafe fn give_back(&self, index: u32);
}

/// A buffer of a context's read pool holding the bytes a pooled read
/// received; back to the pool when dropped, from any thread.
///
/// Derefs to the received bytes; it is an [`IoBuf`], so it can be written
/// back out as it is (`async_write(&stream, buf, ..)`).
pub struct PooledBuf<'a> {
    pool: &'a dyn BufSource,
    index: u32,
    len: u32,
}

impl<'a> PooledBuf<'a> {
    /// Buffer `index` of `pool`, holding `len` received bytes.
    ///
    /// # Safety
    /// `pool` handed `index` out to the caller, who gives up its use; the
    /// first `len <= buf_size()` bytes are initialised.
    #[inline]
    pub unsafe fn new(pool: &'a dyn BufSource, index: u32, len: usize) -> Self {
        debug_assert!(len <= pool.buf_size());
        PooledBuf {
            pool,
            index,
            len: len as u32,
        }
    }

    /// Marks the first `n` bytes as received.
    ///
    /// # Safety
    /// `n <= capacity()`, and those bytes are initialised.
    #[inline]
    pub unsafe fn set_len(&mut self, n: usize) {
        debug_assert!(n <= self.capacity());
        self.len = n as u32;
    }

    /// Bytes received.
    #[allow(clippy::len_without_is_empty)] // Deref gives is_empty
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Size of every buffer in the pool.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.pool.buf_size()
    }

    /// Keeps the first `n` bytes (`n` at most `len()`).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n.min(u32::MAX as usize) as u32);
    }

    /// The buffer's index in the pool (io_uring: its buffer id in the
    /// ring), for diagnostics.
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Deref for PooledBuf<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer is ours while this value lives (BufSource's
        // contract), and its first `len` bytes are initialised (`new`).
        unsafe { core::slice::from_raw_parts(self.pool.buf_ptr(self.index), self.len as usize) }
    }
}

impl DerefMut for PooledBuf<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let (p, n) = (self.pool.buf_ptr(self.index), self.len as usize);
        // SAFETY: as for `deref`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(p, n) }
    }
}

impl Drop for PooledBuf<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: handed out to this value (`new`), which is going away.
        unsafe { self.pool.give_back(self.index) }
    }
}

impl core::fmt::Debug for PooledBuf<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PooledBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the bytes live in the pool, which outlives `'static` here, and
// stay in place while this value (their only holder) moves.
unsafe impl IoBuf for PooledBuf<'static> {
    fn read_ptr(&self) -> *const u8 {
        self.pool.buf_ptr(self.index)
    }
    fn bytes_len(&self) -> usize {
        self.len as usize
    }
}

/// Free and total buffers of a context's read pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBufferCount {
    /// Buffers in the pool now: not held by a read or a [`PooledBuf`].
    pub free: usize,
    /// Buffers in the pool.
    pub total: usize,
    /// Bytes per buffer.
    pub size: usize,
}

const NIL: u32 = u32::MAX;

/// Smallest buffer of a [`SlabPool`]: a free buffer holds its link.
pub const SLAB_MIN_SIZE: usize = 16;

/// The free chain and its length, guarded by the pool's lock.
struct Chain {
    head: u32,
    free: usize,
}

/// A software pool of equal-sized buffers cut from one block of memory.
/// Free buffers are chained through their own first four bytes (no side
/// table), under one lock.
pub struct SlabPool<M: RawMutex> {
    mem: Storage<u8>,
    size: usize,
    count: usize,
    chain: Locked<M, Chain>,
}

// SAFETY: the chain (and the links in free buffers) is only touched
// through its guard; a taken buffer's bytes belong
// to its one holder (BufSource's contract).
unsafe impl<M: RawMutex + Sync> Sync for SlabPool<M> {}
// SAFETY: owns its storage.
unsafe impl<M: RawMutex + Send> Send for SlabPool<M> {}

impl<M: RawMutex> SlabPool<M> {
    /// `mem.len() / size` buffers of `size` bytes (at least
    /// [`SLAB_MIN_SIZE`]), all free.
    pub fn new(mem: Storage<u8>, size: usize) -> Self {
        let size = size.max(SLAB_MIN_SIZE);
        let count = (mem.len() / size).min(NIL as usize);
        let pool = SlabPool {
            mem,
            size,
            count,
            chain: Locked::new(Chain { head: NIL, free: 0 }),
        };
        for i in (0..count as u32).rev() {
            // SAFETY: buffer `i` is out of the chain: the pool is new.
            unsafe { pool.release(i) };
        }
        pool
    }

    /// Buffers in the pool.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The buffers' memory (free buffers hold the pool's links).
    pub fn region(&self) -> Region {
        Region {
            count: self.count,
            item_bytes: self.size,
            ..self.mem.region(MemPool::ReadBuffers, Contents::State)
        }
    }

    /// The pool's counts now.
    pub fn counts(&self) -> ReadBufferCount {
        ReadBufferCount {
            free: self.with_chain(|c| c.free),
            total: self.count,
            size: self.size,
        }
    }

    #[inline]
    fn with_chain<R>(&self, f: impl FnOnce(&mut Chain) -> R) -> R {
        f(&mut self.chain.lock())
    }

    #[inline]
    fn ptr(&self, index: u32) -> *mut u8 {
        assert!((index as usize) < self.count, "buffer index out of range");
        // SAFETY: `index < count`, so the buffer lies inside `mem`.
        unsafe { self.mem.as_ptr().add(index as usize * self.size) }
    }

    /// # Safety
    /// As for [`BufSource::give_back`].
    #[inline]
    unsafe fn release(&self, index: u32) {
        let p = self.ptr(index);
        self.with_chain(|c| {
            // SAFETY: buffer `index` is ours again (contract), so its first
            // bytes may hold the link; the chain is ours under the lock.
            unsafe { ptr::write_unaligned(p as *mut u32, c.head) };
            c.head = index;
            c.free += 1;
        })
    }

    /// Takes a free buffer's index.
    #[inline]
    pub fn take(&self) -> Option<u32> {
        self.with_chain(|c| {
            if c.head == NIL {
                return None;
            }
            let i = c.head;
            // SAFETY: a free buffer's first four bytes hold the next free
            // index (written by `give_back`); the chain is ours.
            c.head = unsafe { ptr::read_unaligned(self.ptr(i) as *const u32) };
            c.free -= 1;
            Some(i)
        })
    }
}

// SAFETY: buffers are disjoint `size`-byte pieces of `mem`, which the pool
// owns; a taken buffer is on no chain, so nobody else uses it.
unsafe impl<M: RawMutex + Sync> BufSource for SlabPool<M> {
    #[inline]
    fn buf_ptr(&self, index: u32) -> *mut u8 {
        self.ptr(index)
    }

    #[inline]
    fn buf_size(&self) -> usize {
        self.size
    }

    #[inline]
    unsafe fn give_back(&self, index: u32) {
        // SAFETY: forwarded.
        unsafe { self.release(index) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinion_sync::SpinMutex;

    #[test]
    fn slab_pool_takes_every_buffer_once_and_pooled_bufs_give_them_back() {
        let pool = SlabPool::<SpinMutex>::new(Storage::boxed_with(4 * 32, || 0), 32);
        assert_eq!(
            pool.counts(),
            ReadBufferCount {
                free: 4,
                total: 4,
                size: 32
            }
        );
        let mut taken = [0u32; 4];
        for t in taken.iter_mut() {
            *t = pool.take().expect("a free buffer");
        }
        assert!(pool.take().is_none());
        let mut sorted = taken;
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3]);
        // Buffers are disjoint: fill each with its index and read back.
        for &i in &taken {
            // SAFETY: taken above, 32 bytes each.
            unsafe { ptr::write_bytes(pool.ptr(i), i as u8, 32) };
        }
        // SAFETY: taken above and handed over; 5 bytes are initialised.
        let mut b = unsafe { PooledBuf::new(&pool, taken[2], 5) };
        assert_eq!(&*b, &[taken[2] as u8; 5]);
        b[0] = 9;
        b.truncate(2);
        assert_eq!((b.len(), b.capacity()), (2, 32));
        assert_eq!(&*b, &[9, taken[2] as u8]);
        drop(b);
        assert_eq!(pool.counts().free, 1);
        for &i in &[taken[0], taken[1], taken[3]] {
            // SAFETY: taken above and no longer used.
            unsafe { pool.release(i) };
        }
        assert_eq!(pool.counts().free, 4);
        assert!(pool.take().is_some());
    }

    #[test]
    fn slab_pool_rounds_small_sizes_up() {
        let pool = SlabPool::<SpinMutex>::new(Storage::boxed_with(64, || 0), 4);
        assert_eq!((pool.count(), pool.counts().size), (4, SLAB_MIN_SIZE));
    }
}

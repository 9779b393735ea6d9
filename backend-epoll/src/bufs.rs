//! Read buffers taken when data arrives ([`TcpStream::async_read_pooled`]).
//!
//! A context may own one pool of equal-sized buffers, reserved when it is
//! built ([`Builder::read_buffers`](crate::Builder::read_buffers)). A
//! pooled read holds no buffer while it waits: the reactor takes one only
//! when the socket is readable, and gives it back at once if `recv` finds
//! nothing after all. So ten thousand idle connections pin no buffer
//! memory; only data in flight does. This is the epoll counterpart of
//! io_uring's provided buffer rings, with the same API on both backends.
//!
//! Free buffers are chained through their own first four bytes (no side
//! table), under one lock.
//!
//! [`TcpStream::async_read_pooled`]: crate::TcpStream::async_read_pooled

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use pinion_core::buf::IoBuf;
use pinion_core::Storage;
use pinion_sync::{FutexMutex, RawMutex};

use crate::IoContext;

const NIL: u32 = u32::MAX;

/// Smallest buffer: a free buffer holds its free-list link.
pub(crate) const MIN_SIZE: usize = 16;

/// The fixed pool behind pooled reads.
pub(crate) struct ReadBuffers {
    mem: Storage<u8>,
    size: usize,
    count: usize,
    lock: FutexMutex,
    /// Head of the free chain; guarded by `lock`.
    free: UnsafeCell<u32>,
    available: AtomicUsize,
}

// SAFETY: the free chain is guarded by `lock`; a taken buffer's bytes
// belong to the one `PooledBuf` (or read operation) that took it.
unsafe impl Sync for ReadBuffers {}
// SAFETY: owns its storage.
unsafe impl Send for ReadBuffers {}

impl ReadBuffers {
    /// `mem.len() / size` buffers of `size` bytes, all free.
    pub(crate) fn new(mem: Storage<u8>, size: usize) -> Self {
        assert!(
            size >= MIN_SIZE,
            "read buffers must be at least {MIN_SIZE} bytes"
        );
        let count = (mem.len() / size).min(NIL as usize);
        let bufs = ReadBuffers {
            mem,
            size,
            count,
            lock: FutexMutex::new(),
            free: UnsafeCell::new(NIL),
            available: AtomicUsize::new(0),
        };
        for i in (0..count as u32).rev() {
            bufs.release(i);
        }
        bufs
    }

    /// Bytes per buffer.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Buffers in the pool.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Buffers free now.
    pub(crate) fn available(&self) -> usize {
        self.available.load(Relaxed)
    }

    #[inline]
    fn ptr(&self, i: u32) -> *mut u8 {
        debug_assert!((i as usize) < self.count);
        // SAFETY: `i < count`, so the buffer lies inside `mem`.
        unsafe { self.mem.as_ptr().add(i as usize * self.size) }
    }

    /// Takes a free buffer's index.
    #[inline]
    pub(crate) fn take(&self) -> Option<u32> {
        self.lock.lock();
        // SAFETY: the chain is guarded by `lock`, held; a free buffer's
        // first four bytes hold the next free index (written by `release`).
        let head = unsafe {
            let head = *self.free.get();
            if head != NIL {
                *self.free.get() = ptr::read_unaligned(self.ptr(head) as *const u32);
            }
            head
        };
        // SAFETY: locked above.
        unsafe { self.lock.unlock() };
        if head == NIL {
            return None;
        }
        self.available.fetch_sub(1, Relaxed);
        Some(head)
    }

    /// Returns buffer `i`, which the caller took and no longer uses.
    #[inline]
    pub(crate) fn release(&self, i: u32) {
        self.lock.lock();
        // SAFETY: guarded by `lock`, held; buffer `i` is ours again, so its
        // first bytes may hold the link.
        unsafe {
            ptr::write_unaligned(self.ptr(i) as *mut u32, *self.free.get());
            *self.free.get() = i;
            self.lock.unlock();
        }
        self.available.fetch_add(1, Relaxed);
    }
}

/// A buffer of the context's read pool holding the bytes a pooled read
/// received; returns to the pool when dropped.
///
/// Derefs to the received bytes; it is an [`IoBuf`], so it can be written
/// back out as it is (`async_write(&stream, buf, ..)`).
pub struct PooledBuf<'c> {
    ctx: &'c IoContext,
    index: u32,
    len: u32,
}

impl<'c> PooledBuf<'c> {
    /// Takes a buffer of `ctx`'s pool, empty.
    #[inline]
    pub(crate) fn take(ctx: &'c IoContext) -> Option<Self> {
        let index = ctx.task().read_buffers()?.take()?;
        Some(PooledBuf { ctx, index, len: 0 })
    }

    #[inline]
    fn pool(&self) -> &ReadBuffers {
        // A PooledBuf exists only for a context that has a pool.
        match self.ctx.task().read_buffers() {
            Some(p) => p,
            None => unreachable!("a PooledBuf without a pool"),
        }
    }

    /// The whole buffer, for the read to fill.
    #[inline]
    pub(crate) fn room(&mut self) -> (*mut u8, usize) {
        let p = self.pool();
        (p.ptr(self.index), p.size())
    }

    /// Marks the first `n` bytes as received.
    #[inline]
    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= self.capacity());
        self.len = n as u32;
    }

    /// Bytes received.
    #[allow(clippy::len_without_is_empty)] // Deref gives is_empty
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Size of every buffer in the pool.
    pub fn capacity(&self) -> usize {
        self.pool().size()
    }

    /// Keeps the first `n` bytes (`n` at most `len()`).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n as u32);
    }

    /// The buffer's index in the pool (for diagnostics).
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Deref for PooledBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer is ours while this value lives, and its first
        // `len` bytes were written by the read.
        unsafe { core::slice::from_raw_parts(self.pool().ptr(self.index), self.len as usize) }
    }
}

impl DerefMut for PooledBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.pool().ptr(self.index), self.len as usize) }
    }
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        self.pool().release(self.index);
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

// SAFETY: the bytes live in the context's pool, which outlives `'static`
// here, and stay in place while this value (the only owner) moves.
unsafe impl IoBuf for PooledBuf<'static> {
    fn read_ptr(&self) -> *const u8 {
        self.pool().ptr(self.index)
    }
    fn bytes_len(&self) -> usize {
        self.len as usize
    }
}

/// Free and total buffers of a context's read pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBufferCount {
    /// Buffers not held by a read or a [`PooledBuf`] now.
    pub free: usize,
    /// Buffers in the pool.
    pub total: usize,
    /// Bytes per buffer.
    pub size: usize,
}

//! Fixed-capacity pools of operation slots.
//!
//! Every operation (a posted handler, a socket read with its buffer and
//! handler, a strand, a timer wait) lives in one fixed-size [`OpSlot`] taken
//! from the context's pool. The pool's memory is reserved when the context
//! is built, either from `static` storage ([`StaticArray`](crate::storage::StaticArray)) or, with the
//! `alloc` feature, one boxed slice; nothing is allocated afterwards.
//!
//! A value that does not fit a slot is rejected at compile time
//! ([`assert_fits`]); a pool with no free slot hands the value back with
//! [`Error::PoolFull`](crate::Error::PoolFull)`(Ops)`.
//!
//! Free slots form an intrusive LIFO list threaded through their first
//! word; slots never handed out yet are taken by bumping an index, so a
//! pool is built in O(1) whatever its size.

use core::cell::UnsafeCell;
use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr::{self, NonNull};

use pinion_sync::{Locked, RawMutex};

use crate::memory::{Contents, MemPool, Region};
use crate::storage::Storage;

/// Bytes in one operation slot: header, operation state, buffer handle and
/// handler together. Chosen so a composed read or write with a buffer and
/// a closure capturing a few handles fits, with room to spare.
pub const OP_SLOT_SIZE: usize = 256;
/// Alignment of every slot.
pub const OP_SLOT_ALIGN: usize = 16;

/// One slot of raw, suitably aligned storage.
#[repr(C, align(16))]
pub struct OpSlot {
    bytes: UnsafeCell<MaybeUninit<[u8; OP_SLOT_SIZE]>>,
}

impl OpSlot {
    /// An unused slot, for `static` initialisers. A `const` on purpose:
    /// array repeat expressions (`[OpSlot::EMPTY; N]`) need one.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: OpSlot = OpSlot {
        bytes: UnsafeCell::new(MaybeUninit::uninit()),
    };
}

/// `true` when a `T` fits in one slot.
pub const fn fits<T>() -> bool {
    size_of::<T>() <= OP_SLOT_SIZE && align_of::<T>() <= OP_SLOT_ALIGN
}

/// Fails to compile when `T` does not fit in a slot.
///
/// Handlers are stored inline; a closure that captures too much is caught
/// when the program is built, not when the pool is used.
#[inline(always)]
pub const fn assert_fits<T>() {
    const {
        assert!(
            fits::<T>(),
            "pinion: this operation (handler + state) does not fit in an OP_SLOT_SIZE slot; \
             capture less in the handler (e.g. a handle or an index instead of a large value)"
        )
    }
}

/// Where a pool's slots live.
pub type SlotStorage = Storage<OpSlot>;

/// A fixed pool of [`OpSlot`]s behind a raw mutex.
///
/// The scheduler keeps a few free slots per running thread in front of
/// this pool, so the mutex is taken only when a thread's cache runs dry or
/// overflows.
pub struct SlotPool<M: RawMutex> {
    list: Locked<M, FreeList>,
    base: *mut OpSlot,
    len: usize,
    _storage: SlotStorage,
}

/// The free slots: a list linked through each free slot's first word (the
/// links guarded with it), and the never-used ones from `bump` on.
struct FreeList {
    free: *mut OpSlot,
    bump: usize,
    /// [`SlotPool::close`]d: no slot is handed out any more.
    closed: bool,
}

// SAFETY: the free list is only touched through its guard; slots are
// raw memory whose contents the caller synchronises (they travel on
// queues under the scheduler's mutex).
unsafe impl<M: RawMutex + Sync> Sync for SlotPool<M> {}
// SAFETY: as above; the storage is owned.
unsafe impl<M: RawMutex + Send> Send for SlotPool<M> {}

impl<M: RawMutex> SlotPool<M> {
    /// A pool over `storage`, with every slot free.
    pub fn new(storage: SlotStorage) -> Self {
        let (base, len) = (storage.as_ptr(), storage.len());
        SlotPool {
            list: Locked::new(FreeList {
                free: ptr::null_mut(),
                bump: 0,
                closed: false,
            }),
            base,
            len,
            _storage: storage,
        }
    }

    /// Number of slots in the pool.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// The slots' memory: scratch until a slot is first taken.
    pub fn region(&self) -> Region {
        self._storage.region(MemPool::Ops, Contents::Scratch)
    }

    /// Takes a free slot, or `None` when every slot is in use.
    #[inline]
    pub fn alloc(&self) -> Option<NonNull<OpSlot>> {
        let mut list = self.list.lock();
        let head = list.free;
        let slot = if list.closed {
            ptr::null_mut()
        } else if !head.is_null() {
            // SAFETY: a free slot's first word holds the next free slot
            // (written by `free`), and the list is ours under the guard.
            list.free = unsafe { ptr::read(head as *const *mut OpSlot) };
            head
        } else if list.bump < self.len {
            let i = list.bump;
            list.bump = i + 1;
            // SAFETY: `i < len`, inside the storage.
            unsafe { self.base.add(i) }
        } else {
            ptr::null_mut()
        };
        drop(list);
        NonNull::new(slot)
    }

    /// Hands out no slot any more: every later [`alloc`](Self::alloc)
    /// answers `None` (a context shut down in place). Slots still go back.
    pub fn close(&self) {
        self.list.lock().closed = true;
    }

    /// Returns a slot to the pool.
    ///
    /// # Safety
    /// `slot` came from this pool, is not in use, and is freed once.
    #[inline]
    pub unsafe fn free(&self, slot: NonNull<OpSlot>) {
        debug_assert!(self.owns(slot));
        let mut list = self.list.lock();
        // SAFETY: the slot is ours again; its first word becomes the link.
        unsafe { ptr::write(slot.as_ptr() as *mut *mut OpSlot, list.free) };
        list.free = slot.as_ptr();
    }

    /// Returns a chain of slots linked through their first word (a thread
    /// cache), ending in null.
    ///
    /// # Safety
    /// Every slot on the chain came from this pool and is not in use.
    pub unsafe fn free_chain(&self, head: *mut OpSlot) {
        if head.is_null() {
            return;
        }
        let mut tail = head;
        // SAFETY: chain links were written by the cache that owns them.
        unsafe {
            loop {
                debug_assert!(self.owns(NonNull::new_unchecked(tail)));
                let next = ptr::read(tail as *const *mut OpSlot);
                if next.is_null() {
                    break;
                }
                tail = next;
            }
        }
        // One lock for the whole chain: splice it in front of the free list.
        let mut list = self.list.lock();
        // SAFETY: `tail` is the chain's last slot, ours to relink.
        unsafe { ptr::write(tail as *mut *mut OpSlot, list.free) };
        list.free = head;
    }

    /// `true` when `slot` points into this pool's storage.
    pub fn owns(&self, slot: NonNull<OpSlot>) -> bool {
        let p = slot.as_ptr() as usize;
        let b = self.base as usize;
        p >= b && p < b + self.len * size_of::<OpSlot>()
    }

    /// Slots currently handed out (O(free slots); for tests and stats).
    pub fn in_use(&self) -> usize {
        let list = self.list.lock();
        let mut n = 0;
        let mut p = list.free;
        while !p.is_null() {
            n += 1;
            // SAFETY: walking the free list under its guard.
            p = unsafe { ptr::read(p as *const *mut OpSlot) };
        }
        list.bump - n
    }
}

/// Writes `value` into `slot` and returns a typed pointer to it.
///
/// # Safety
/// `slot` is a free slot the caller now owns.
#[inline(always)]
pub unsafe fn emplace<T>(slot: NonNull<OpSlot>, value: T) -> NonNull<T> {
    assert_fits::<T>();
    let p = slot.cast::<T>();
    // SAFETY: the slot is free, large and aligned enough (checked above at
    // compile time).
    unsafe { p.as_ptr().write(value) };
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinion_sync::SpinMutex;

    fn pool(n: usize) -> SlotPool<SpinMutex> {
        SlotPool::new(SlotStorage::boxed_with(n, || OpSlot::EMPTY))
    }

    #[test]
    fn alloc_until_exhausted_then_reuse() {
        let p = pool(4);
        let mut got = std::vec::Vec::new();
        while let Some(s) = p.alloc() {
            assert!(p.owns(s));
            got.push(s);
            assert!(got.len() <= 4);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(p.in_use(), 4);
        let distinct: std::collections::HashSet<_> = got.iter().map(|s| s.as_ptr()).collect();
        assert_eq!(distinct.len(), 4);
        let last = got.pop().unwrap();
        // SAFETY: came from `p`, freed once.
        unsafe { p.free(last) };
        assert_eq!(p.alloc(), Some(last));
        assert!(p.alloc().is_none());
        for s in got.drain(..).chain(core::iter::once(last)) {
            // SAFETY: each came from `p` and is freed once.
            unsafe { p.free(s) };
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn emplace_and_read_back() {
        let p = pool(2);
        let s = p.alloc().unwrap();
        // SAFETY: `s` is a free slot we own.
        let v = unsafe { emplace(s, [7u64; 20]) };
        // SAFETY: just written.
        assert_eq!(unsafe { v.as_ptr().read() }, [7u64; 20]);
        // SAFETY: from `p`, freed once.
        unsafe { p.free(s) };
    }

    #[test]
    fn free_chain_returns_everything() {
        let p = pool(3);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        // SAFETY: build a chain a -> b -> null in the slots' first words.
        unsafe {
            ptr::write(a.as_ptr() as *mut *mut OpSlot, b.as_ptr());
            ptr::write(b.as_ptr() as *mut *mut OpSlot, ptr::null_mut());
            p.free_chain(a.as_ptr());
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn static_slots_taken_once() {
        static S: crate::StaticArray<OpSlot, 3> = crate::StaticArray::new([OpSlot::EMPTY; 3]);
        let s = S.take().unwrap();
        assert_eq!(s.len(), 3);
        assert!(S.take().is_none());
        let p: SlotPool<SpinMutex> = SlotPool::new(SlotStorage::from_static(s));
        assert_eq!(p.capacity(), 3);
    }

    #[test]
    fn threads_share_a_pool() {
        let p = std::sync::Arc::new(pool(64));
        let hs: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let n = if cfg!(miri) { 50 } else { 20_000 };
                    for _ in 0..n {
                        let mut held = std::vec::Vec::new();
                        for _ in 0..8 {
                            held.push(p.alloc().expect("64 slots, 4 threads x 8"));
                        }
                        for s in held {
                            // SAFETY: each came from `p`, freed once.
                            unsafe { p.free(s) };
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(p.in_use(), 0);
    }
}

//! The one fixed-capacity slab: entries named by a [`Key`] of index and
//! generation.
//!
//! Descriptor tables (both backends), timer objects and the timer heap's
//! entries are slabs. A slot is taken with [`insert`](Slab::insert) and
//! named by the key it returns; [`retire`](Slab::retire) moves its
//! generation on, so every key handed out for it is stale from then on
//! (a handle to a closed socket answers `BadDescriptor` instead of
//! reaching the next socket in that slot), and [`release`](Slab::release)
//! puts it back on the free list once nothing refers to it any more. The
//! two steps are apart on purpose: a backend retires a descriptor at
//! close, and releases it when the kernel has let go of it.
//!
//! ```text
//!   free ──insert──► live (key = index, gen) ──retire──► retired ──release──► free
//!                     get(key) finds it          get(key) = None
//! ```
//!
//! Keys are 64 bits on every target (index in the low half, generation in
//! the high half), so a generation survives a trip through the kernel
//! (epoll data, io_uring `user_data`) on 32-bit CPUs too. A generation
//! wraps after 2³² reuses of one slot.
//!
//! The slab synchronises only its free list (under its mutex `M`) and the
//! generations (atomics). The values are shared: `T` brings its own
//! interior mutability and locking, and a caller that must be sure a key
//! stays current while it works re-checks the generation under `T`'s own
//! lock (the lock its retire takes too).
//!
//! Memory is a [`Storage`] handed over at build; nothing is allocated
//! afterwards. Never-used slots are taken by bumping an index, so a slab
//! is built in O(1) whatever its size.

use core::cell::Cell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use pinion_sync::{Locked, RawMutex};

use crate::memory::{Contents, MemPool, Region};
use crate::storage::Storage;

/// Names a slab entry: its index and the generation it had when the key
/// was made. Stale once the entry is retired.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u64);

impl Key {
    /// The key of entry `index` at generation `gen`.
    #[inline(always)]
    pub const fn new(index: u32, gen: u32) -> Key {
        Key((gen as u64) << 32 | index as u64)
    }

    /// The entry's index.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self.0 as u32
    }

    /// The generation the entry must still have.
    #[inline(always)]
    pub const fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The key as one 64-bit word (what travels through the kernel).
    #[inline(always)]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The inverse of [`to_bits`](Self::to_bits).
    #[inline(always)]
    pub const fn from_bits(bits: u64) -> Key {
        Key(bits)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}#{})", self.index(), self.gen())
    }
}

/// One slot of a [`Slab`]'s storage: the value, its generation and its
/// free-list link.
pub struct Entry<T> {
    gen: AtomicU32,
    /// Next free index; guarded by the slab's lock.
    next_free: Cell<u32>,
    value: T,
}

impl<T> Entry<T> {
    /// An unused entry holding `value` (its state while the slot is free),
    /// for initialising storage: `[const { Entry::new(T::EMPTY) }; N]` or
    /// `Storage::boxed_with(n, || Entry::new(..))`.
    pub const fn new(value: T) -> Self {
        Entry {
            gen: AtomicU32::new(0),
            next_free: Cell::new(NIL),
            value,
        }
    }
}

// SAFETY: `next_free` is only touched under the owning slab's lock; the
// generation is atomic; the value is shared only as `&T`, which needs
// `T: Sync`.
unsafe impl<T: Sync> Sync for Entry<T> {}

/// One entry of a [`Slab`], found by index ([`Slab::slot`]).
pub struct Slot<'a, T> {
    entry: &'a Entry<T>,
}

impl<'a, T> Slot<'a, T> {
    /// The value, whatever the generation.
    #[inline(always)]
    pub fn value(&self) -> &'a T {
        &self.entry.value
    }

    /// Whether `key` names this entry at its current generation.
    #[inline(always)]
    pub fn is_current(&self, key: Key) -> bool {
        self.entry.gen.load(Ordering::Acquire) == key.gen()
    }
}

/// End of the free list.
const NIL: u32 = u32::MAX;

/// Free-list state, guarded by the slab's lock.
struct Alloc {
    free: u32,
    bump: u32,
    live: u32,
}

/// A fixed-capacity slab of `T`s (see the module docs).
pub struct Slab<T: 'static, M: RawMutex> {
    entries: Storage<Entry<T>>,
    /// Entries in use by the slab: at most `u32::MAX - 1` (`NIL` is none).
    cap: u32,
    /// The free list; the entries' `next_free` links are also guarded by it.
    alloc: Locked<M, Alloc>,
    /// [`close`](Self::close)d: no entry is taken any more. Written under
    /// the lock, read with it (by `insert`) or without (`is_closed`).
    closed: AtomicBool,
}

// SAFETY: `alloc` (and every `next_free`) is only touched through its
// guard; entries are Sync for
// `T: Sync`; the storage is owned.
unsafe impl<T: Sync + Send, M: RawMutex + Sync> Sync for Slab<T, M> {}
// SAFETY: as above; moving the slab moves no entry (the storage is a
// separate allocation or a static).
unsafe impl<T: Send, M: RawMutex + Send> Send for Slab<T, M> {}

impl<T: 'static, M: RawMutex> Slab<T, M> {
    /// A slab over `storage`, every entry free. At most `u32::MAX - 1`
    /// entries are used.
    pub fn new(storage: Storage<Entry<T>>) -> Self {
        let cap = storage.len().min(NIL as usize - 1) as u32;
        Slab {
            entries: storage,
            cap,
            alloc: Locked::new(Alloc {
                free: NIL,
                bump: 0,
                live: 0,
            }),
            closed: AtomicBool::new(false),
        }
    }

    /// How many entries the slab holds.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    #[inline]
    fn with_alloc<R>(&self, f: impl FnOnce(&mut Alloc) -> R) -> R {
        // `f` does not reenter the slab.
        f(&mut self.alloc.lock())
    }

    /// The entries' memory, as a region of `pool`.
    pub fn region(&self, pool: MemPool) -> Region {
        self.entries.region(pool, Contents::State)
    }

    /// Entries taken and not released (retired ones included).
    pub fn in_use(&self) -> usize {
        self.with_alloc(|a| a.live as usize)
    }

    /// Entries ever taken: `0..used()` may be in use (for walks at
    /// shutdown and in diagnostics).
    pub fn used(&self) -> u32 {
        self.with_alloc(|a| a.bump)
    }

    #[inline(always)]
    fn entry(&self, index: u32) -> Option<&Entry<T>> {
        if index < self.cap {
            // SAFETY: `index < cap <= storage.len()`: an initialised entry
            // of the storage, which lives as long as `self`.
            Some(unsafe { &*self.entries.as_ptr().add(index as usize) })
        } else {
            None
        }
    }

    /// Takes a free entry; `None` when every entry is in use. The key
    /// names it at its current generation. The value is in whatever state
    /// its last user left it (or its initial one): the caller sets it up,
    /// under the value's own lock if it has one.
    pub fn insert(&self) -> Option<(Key, &T)> {
        let index = self.with_alloc(|a| {
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            let i = if a.free != NIL {
                let i = a.free;
                // SAFETY: `i` came off the free list, so it is in bounds;
                // its link is guarded by the lock, held.
                a.free = unsafe { self.entry(i).unwrap_unchecked() }.next_free.get();
                i
            } else if a.bump < self.cap {
                a.bump += 1;
                a.bump - 1
            } else {
                return None;
            };
            a.live += 1;
            Some(i)
        })?;
        let e = self.entry(index)?;
        Some((Key::new(index, e.gen.load(Ordering::Acquire)), &e.value))
    }

    /// Takes no entry any more: every later [`insert`](Self::insert)
    /// answers `None` (a context shut down in place). Entries taken stay
    /// taken until released; released ones stay free.
    pub fn close(&self) {
        self.with_alloc(|_| self.closed.store(true, Ordering::Release));
    }

    /// [`close`](Self::close) has run. A caller that set an entry up under
    /// the entry's own lock and then sees `false` here (under that lock)
    /// knows that a walk made after `close` under the same lock sees it.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The entry `key` names, while the key is current.
    #[inline]
    pub fn get(&self, key: Key) -> Option<&T> {
        let e = self.entry(key.index())?;
        (e.gen.load(Ordering::Acquire) == key.gen()).then_some(&e.value)
    }

    /// Entry `index` whatever its generation (a walk over the table, or a
    /// backend that keeps its own record of which entries are live).
    #[inline]
    pub fn at(&self, index: u32) -> Option<&T> {
        self.entry(index).map(|e| &e.value)
    }

    /// Entry `index` with its generation, for callers that lock the value
    /// and then check a key against it: one bounds check serves both.
    #[inline(always)]
    pub fn slot(&self, index: u32) -> Option<Slot<'_, T>> {
        self.entry(index).map(|entry| Slot { entry })
    }

    /// The generation of entry `index` now (`None` out of bounds).
    #[inline]
    pub fn gen(&self, index: u32) -> Option<u32> {
        self.entry(index).map(|e| e.gen.load(Ordering::Acquire))
    }

    /// The current key of entry `index`.
    #[inline]
    pub fn key_of(&self, index: u32) -> Option<Key> {
        self.gen(index).map(|g| Key::new(index, g))
    }

    /// The index of `value`, an entry of this slab.
    pub fn index_of(&self, value: &T) -> u32 {
        let base = self.entries.as_ptr() as usize;
        let offset = value as *const T as usize - base;
        (offset / core::mem::size_of::<Entry<T>>()) as u32
    }

    /// Moves the generation of the entry `key` names on, so that every
    /// key made for it so far is stale; `false` if `key` was stale
    /// already. The entry stays taken until [`release`](Self::release).
    /// Callers that race on one key decide the winner here (or under
    /// their own lock).
    pub fn retire(&self, key: Key) -> bool {
        let Some(e) = self.entry(key.index()) else {
            return false;
        };
        e.gen
            .compare_exchange(
                key.gen(),
                key.gen().wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// [`retire`](Self::retire) for an entry nobody else can retire (its
    /// owner holds it alone): a plain store instead of a compare-and-swap.
    ///
    /// # Safety
    /// `key` is current and no other thread retires or releases the entry
    /// meanwhile.
    #[inline]
    pub unsafe fn retire_owned(&self, key: Key) {
        if let Some(e) = self.entry(key.index()) {
            debug_assert_eq!(e.gen.load(Ordering::Relaxed), key.gen());
            e.gen.store(key.gen().wrapping_add(1), Ordering::Release);
        }
    }

    /// Puts entry `index` back on the free list.
    ///
    /// # Safety
    /// The entry was taken, and since either retired or never named by a
    /// key anyone else holds; it is released once: nothing refers to it
    /// any more, as a live entry, from here on.
    pub unsafe fn release(&self, index: u32) {
        let Some(e) = self.entry(index) else { return };
        self.with_alloc(|a| {
            debug_assert!(a.live > 0);
            e.next_free.set(a.free);
            a.free = index;
            a.live -= 1;
        });
    }

    /// Exclusive access to every entry ever taken (`0..used()`), for
    /// teardown when nothing else can reach the slab.
    pub fn taken_mut(&mut self) -> impl Iterator<Item = &mut T> {
        let used = self.alloc.get_mut().bump as usize;
        // SAFETY: `&mut self`: no other reference to the entries exists;
        // `used <= cap <= storage.len()` entries are initialised.
        let entries = unsafe { core::slice::from_raw_parts_mut(self.entries.as_ptr(), used) };
        entries.iter_mut().map(|e| &mut e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinion_sync::SpinMutex;
    use std::vec::Vec;

    fn slab(n: usize) -> Slab<Cell<u32>, SpinMutex> {
        Slab::new(Storage::boxed_with(n, || Entry::new(Cell::new(0))))
    }

    #[test]
    fn insert_until_full_then_reuse_with_a_new_generation() {
        let s = slab(3);
        let keys: Vec<Key> = (0..3).map(|_| s.insert().unwrap().0).collect();
        assert!(s.insert().is_none());
        assert_eq!(s.in_use(), 3);
        let mut idx: Vec<u32> = keys.iter().map(|k| k.index()).collect();
        idx.sort();
        assert_eq!(idx, [0, 1, 2]);
        let k = keys[1];
        assert!(s.get(k).is_some());
        assert!(s.retire(k));
        assert!(!s.retire(k), "a key retires once");
        assert!(s.get(k).is_none(), "stale after retire");
        assert_eq!(s.in_use(), 3, "retired but not released");
        // SAFETY: retired above, released once.
        unsafe { s.release(k.index()) };
        let (k2, _) = s.insert().unwrap();
        assert_eq!(k2.index(), k.index(), "the freed entry is reused");
        assert_ne!(k2.gen(), k.gen());
        assert!(s.get(k).is_none(), "the old key stays stale");
        assert!(s.get(k2).is_some());
    }

    #[test]
    fn keys_are_64_bits_everywhere() {
        let k = Key::new(u32::MAX - 1, u32::MAX);
        assert_eq!(Key::from_bits(k.to_bits()), k);
        assert_eq!((k.index(), k.gen()), (u32::MAX - 1, u32::MAX));
        assert_eq!(core::mem::size_of::<Key>(), 8);
    }

    #[test]
    fn values_are_shared_and_found_by_index() {
        let s = slab(4);
        let (k, v) = s.insert().unwrap();
        v.set(7);
        assert_eq!(s.get(k).unwrap().get(), 7);
        assert_eq!(s.index_of(v), k.index());
        assert_eq!(s.at(k.index()).unwrap().get(), 7);
        assert_eq!(s.key_of(k.index()), Some(k));
        assert!(s.at(4).is_none() && s.get(Key::new(9, 0)).is_none());
    }

    #[test]
    fn threads_share_a_slab() {
        let s = std::sync::Arc::new(Slab::<AtomicU32, SpinMutex>::new(Storage::boxed_with(
            64,
            || Entry::new(AtomicU32::new(0)),
        )));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let n = if cfg!(miri) { 20 } else { 5_000 };
                    for i in 0..n {
                        let (k, v) = s.insert().expect("64 entries, 4 threads x 1");
                        v.store(t * 1_000_000 + i, Ordering::Relaxed);
                        assert_eq!(s.get(k).unwrap().load(Ordering::Relaxed), t * 1_000_000 + i);
                        assert!(s.retire(k));
                        // SAFETY: retired by this thread, released once.
                        unsafe { s.release(k.index()) };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(s.in_use(), 0);
    }
}

//! Fixed storage for pools: a `'static` slice the user provides, or one
//! boxed slice made when the context is built (`alloc` feature).
//!
//! Held as raw parts, not as a reference or a `Box`, because pools hand out
//! raw pointers into it for their whole life; a reference moved with the
//! pool would be retagged and invalidate them (miri's aliasing model).

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::memory::{Contents, MemPool, Region};

/// A fixed slice of `T` that a pool owns for its whole life.
pub struct Storage<T: 'static> {
    ptr: NonNull<T>,
    len: usize,
    #[cfg(any(test, feature = "alloc"))]
    boxed: bool,
    /// The allocation `boxed_zeroed` aligned `ptr` inside (null otherwise):
    /// freed with [`over_aligned`](Self::over_aligned)'s layout.
    #[cfg(any(test, feature = "alloc"))]
    base: *mut u8,
}

// SAFETY: Storage is an owning handle to `[T]`, like `Box<[T]>`.
unsafe impl<T: Send + 'static> Send for Storage<T> {}
// SAFETY: as above; shared access goes through the pool's own locking.
unsafe impl<T: Sync + 'static> Sync for Storage<T> {}

impl<T: 'static> Storage<T> {
    /// Caller-provided memory that outlives the program (a `static`).
    pub fn from_static(s: &'static mut [T]) -> Self {
        Storage {
            len: s.len(),
            ptr: NonNull::from(s).cast(),
            #[cfg(any(test, feature = "alloc"))]
            boxed: false,
            #[cfg(any(test, feature = "alloc"))]
            base: core::ptr::null_mut(),
        }
    }

    /// `n` boxed values made by `f`: the one allocation, at build time.
    #[cfg(any(test, feature = "alloc"))]
    pub fn boxed_with(n: usize, f: impl FnMut() -> T) -> Self {
        let mut v = alloc::vec::Vec::with_capacity(n);
        v.resize_with(n, f);
        let b = v.into_boxed_slice();
        let len = b.len();
        // SAFETY: Box::into_raw never returns null.
        let ptr = unsafe { NonNull::new_unchecked(alloc::boxed::Box::into_raw(b) as *mut T) };
        Storage {
            ptr,
            len,
            boxed: true,
            base: core::ptr::null_mut(),
        }
    }

    /// `n` values whose bytes are all zero, in one zeroed allocation. The
    /// allocator may hand over fresh pages (calloc's mmap) that the kernel
    /// commits only when first touched: a large buffer pool then costs no
    /// time at build (`boxed_with` writes every byte) and no resident
    /// memory until used.
    ///
    /// # Safety
    /// The all-zero byte pattern is a valid `T`.
    #[cfg(any(test, feature = "alloc"))]
    pub unsafe fn boxed_zeroed(n: usize) -> Self {
        if n == 0 || core::mem::size_of::<T>() == 0 {
            // SAFETY: all-zero is a valid T (contract).
            return Self::boxed_with(n, || unsafe { core::mem::zeroed() });
        }
        // Asked for at an alignment of 8, which every target's allocator
        // serves through `calloc` (std zeroes by hand, touching every page,
        // above its minimum alignment: 16 on 64-bit targets, while a
        // buffer chunk is aligned to 64), with room to align `T` inside.
        let layout = Self::over_aligned(n);
        // SAFETY: the layout's size is not zero (checked above).
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            alloc::alloc::handle_alloc_error(layout)
        }
        let skip = base.align_offset(core::mem::align_of::<T>());
        // SAFETY: `skip < align_of::<T>()`, the slack `over_aligned` adds,
        // so `n` values fit behind it; not null (`base` is not).
        let ptr = unsafe { NonNull::new_unchecked(base.add(skip).cast::<T>()) };
        Storage {
            ptr,
            len: n,
            boxed: true,
            base,
        }
    }

    /// The layout `boxed_zeroed` allocates for `n` values: their bytes plus
    /// the slack to align them, at alignment 8.
    #[cfg(any(test, feature = "alloc"))]
    fn over_aligned(n: usize) -> core::alloc::Layout {
        // As `Vec::with_capacity`, a size past isize::MAX is a panic.
        let bytes = core::mem::size_of::<T>()
            .checked_mul(n)
            .and_then(|b| b.checked_add(core::mem::align_of::<T>()))
            .expect("capacity overflow");
        core::alloc::Layout::from_size_align(bytes, 8).expect("capacity overflow")
    }

    /// Pointer to the first element.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for zero elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The storage as a region of `pool` holding `contents`, one item per
    /// element.
    pub fn region(&self, pool: MemPool, contents: Contents) -> Region {
        Region {
            pool,
            ptr: self.ptr.as_ptr().cast(),
            count: self.len,
            item_bytes: core::mem::size_of::<T>(),
            contents,
        }
    }
}

impl<T: 'static> Drop for Storage<T> {
    fn drop(&mut self) {
        #[cfg(any(test, feature = "alloc"))]
        if self.boxed && !self.base.is_null() {
            // SAFETY: the values are all-zero-valid plain data handed to
            // pools, dropped in place; `base` came from `alloc_zeroed`
            // with this layout (`boxed_zeroed`); freed once.
            unsafe {
                core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(
                    self.ptr.as_ptr(),
                    self.len,
                ));
                alloc::alloc::dealloc(self.base, Self::over_aligned(self.len));
            }
        } else if self.boxed {
            let s = core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
            // SAFETY: made by Box::into_raw in `boxed_with`; dropped once.
            drop(unsafe { alloc::boxed::Box::from_raw(s) });
        }
    }
}

/// `N` items in `static` memory, handed out once as `&'static mut [T]`:
/// storage for contexts built without allocation.
///
/// ```
/// use pinion_core::{OpSlot, StaticArray};
/// static SLOTS: StaticArray<OpSlot, 64> = StaticArray::new([OpSlot::EMPTY; 64]);
/// let slots = SLOTS.take().unwrap();
/// assert_eq!(slots.len(), 64);
/// assert!(SLOTS.take().is_none());
/// ```
pub struct StaticArray<T, const N: usize> {
    taken: AtomicBool,
    items: UnsafeCell<[T; N]>,
}

// SAFETY: the items are reachable only through the one `&'static mut`
// that `take` hands out, guarded by `taken`.
unsafe impl<T: Send, const N: usize> Sync for StaticArray<T, N> {}

impl<T, const N: usize> StaticArray<T, N> {
    /// Wraps `items` (typically `[T::EMPTY; N]`).
    pub const fn new(items: [T; N]) -> Self {
        StaticArray {
            taken: AtomicBool::new(false),
            items: UnsafeCell::new(items),
        }
    }

    /// The items, the first time; `None` afterwards.
    #[allow(clippy::mut_from_ref)] // unique by the `taken` flag, like StaticCell
    pub fn take(&'static self) -> Option<&'static mut [T]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `taken` flipped from false exactly once, so this is the
        // only reference ever made to the array.
        Some(unsafe { &mut *self.items.get() })
    }
}

/// A `static` that is initialised once at run time and handed out as
/// `&'static mut T` (embassy's `StaticCell`): how a no_std program gets a
/// `&'static IoContext` without `unsafe`.
///
/// ```
/// use pinion_core::StaticCell;
/// static CELL: StaticCell<u32> = StaticCell::new();
/// let x: &'static mut u32 = CELL.init(7).unwrap();
/// *x += 1;
/// assert_eq!(*x, 8);
/// assert_eq!(CELL.init(9), Err(9), "only once: the value comes back");
/// ```
pub struct StaticCell<T> {
    taken: AtomicBool,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

// SAFETY: the value is reachable only through the one `&'static mut`
// that `init` hands out, guarded by `taken`; sending it to another thread
// needs `T: Send`.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        StaticCell {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Moves `value` in and hands it out, the first time; hands `value`
    /// back afterwards.
    #[allow(clippy::mut_from_ref)] // unique by the `taken` flag
    pub fn init(&'static self, value: T) -> Result<&'static mut T, T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return Err(value);
        }
        // SAFETY: `taken` flipped from false exactly once, so this is the
        // only reference ever made to the cell's contents.
        Ok(unsafe { (*self.value.get()).write(value) })
    }
}

impl<T> Default for StaticCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

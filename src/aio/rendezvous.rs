//! Where an operation's completion meets the future awaiting it.
//!
//! A [`Rendezvous`] lives in an operation slot of its own (not in the
//! future, which may be dropped while the operation is in flight, nor in
//! the operation's slot, which the backend frees before the handler
//! runs). The operation's handler, a [`CellHandler`], holds a pointer to
//! it; so does the future. A small spin lock orders the four events that
//! touch it:
//!
//! ```text
//!   PENDING ──completing()──► COMPLETING ──call(value)──► DONE ──poll──► TAKEN ──► (freed by the future)
//!      │                          │
//!      └─future dropped──► ABANDONED (cancel_op sent while PENDING) ──call/drop──► (freed by the handler)
//!   handler destroyed unrun (shutdown) ──► DESTROYED ──future dropped──► (freed by the future)
//! ```
//!
//! The cancel is sent while holding the lock, and `completing` (which the
//! backend calls before it frees the operation's slot) waits for it, so
//! the `OpId` the cancel names is still that operation's. Whoever comes
//! last frees the rendezvous; a value nobody will take (a read finished
//! after its future was dropped) is dropped there, which gives its buffer
//! back to its owner or pool.

use core::cell::{Cell, UnsafeCell};
use core::hint::spin_loop;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;

use pinion_core::backend::{At, Backend, Key, OpHooks, OpId, Sched};
use pinion_core::{Pool, Result};

const PENDING: u8 = 0;
const COMPLETING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;
const DESTROYED: u8 = 4;
const TAKEN: u8 = 5;

/// The meeting point of one operation and its future (see the module docs).
pub(crate) struct Rendezvous<T> {
    lock: AtomicBool,
    // Guarded by `lock`:
    state: Cell<u8>,
    op: Cell<Option<OpId>>,
    waker: UnsafeCell<Option<Waker>>,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The lock, held until dropped.
struct Held<'a, T>(&'a Rendezvous<T>);

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        self.0.lock.store(false, Ordering::Release);
    }
}

impl<T> Rendezvous<T> {
    fn lock(&self) -> Held<'_, T> {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spin_loop();
        }
        Held(self)
    }
}

/// What the future sees when it looks.
pub(crate) enum Looked<T> {
    /// Still in flight (the waker is stored).
    Pending,
    /// The result.
    Ready(T),
}

/// The future's side of a rendezvous: owns its share of the slot.
pub(crate) struct Waiting<T> {
    cell: NonNull<Rendezvous<T>>,
}

// SAFETY: the rendezvous is shared with the handler only through `lock`;
// the value moves between threads (`T: Send`).
unsafe impl<T: Send> Send for Waiting<T> {}
// SAFETY: `&Waiting` gives access to nothing.
unsafe impl<T: Send> Sync for Waiting<T> {}

impl<T: Send> Waiting<T> {
    /// A fresh rendezvous in an operation slot of `sched`, with `waker`
    /// stored, and the handler for the operation that will fill it.
    /// `PoolFull(Ops)` when no slot is free.
    pub(crate) fn new<B: Backend>(
        sched: &Sched<B>, waker: &Waker,
    ) -> Result<(Waiting<T>, CellHandler<B, T>)> {
        let r = Rendezvous {
            lock: AtomicBool::new(false),
            state: Cell::new(PENDING),
            op: Cell::new(None),
            waker: UnsafeCell::new(Some(waker.clone())),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        };
        // SAFETY: freed once, by whichever side comes last (module docs),
        // or by `refused`.
        let cell = unsafe { sched.alloc_op(r) }.map_err(|_| sched.pool_error(Pool::Ops))?;
        Ok((
            Waiting { cell },
            CellHandler {
                cell,
                sched: sched as *const Sched<B>,
            },
        ))
    }

    fn r(&self) -> &Rendezvous<T> {
        // SAFETY: the slot lives until both sides let go; we have not.
        unsafe { self.cell.as_ref() }
    }

    /// The operation was refused and its handler came back: free the
    /// rendezvous, which nobody else knows.
    pub(crate) fn refused<B: Backend>(self, h: CellHandler<B, T>, sched: &Sched<B>) {
        core::mem::forget(h);
        let cell = self.cell;
        core::mem::forget(self);
        // SAFETY: never shared (the operation never started); holds no
        // value; its waker is dropped here.
        unsafe {
            drop((*cell.as_ref().waker.get()).take());
            sched.free_op(cell);
        }
    }

    /// Takes the value if it is there, else stores `waker` for the
    /// completion.
    pub(crate) fn look(&mut self, waker: &Waker) -> Looked<T> {
        let r = self.r();
        let held = r.lock();
        match r.state.get() {
            DONE => {
                r.state.set(TAKEN);
                // SAFETY: DONE means the value is written, and it is
                // taken once (the state moves on).
                let v = unsafe { (*r.value.get()).assume_init_read() };
                drop(held);
                Looked::Ready(v)
            }
            DESTROYED => {
                drop(held);
                panic!("pinion: the context shut down while this operation was pending")
            }
            _ => {
                // SAFETY: the waker is guarded by the lock, held.
                let slot = unsafe { &mut *r.waker.get() };
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                Looked::Pending
            }
        }
    }

    /// After [`look`](Self::look) gave the value: free the rendezvous.
    pub(crate) fn release<B: Backend>(self, sched: &Sched<B>) {
        let cell = self.cell;
        core::mem::forget(self);
        // SAFETY: TAKEN: the handler is done with it, the value gone; the
        // waker was taken by the handler.
        unsafe {
            debug_assert_eq!(cell.as_ref().state.get(), TAKEN);
            drop((*cell.as_ref().waker.get()).take());
            sched.free_op(cell);
        }
    }

    /// The future is dropped while its operation may be in flight:
    /// cancel it (by its id, on `key`), and leave the rendezvous to the
    /// handler, or free it if the handler is done with it.
    pub(crate) fn abandon<B: Backend>(self, sched: &Sched<B>, key: Key) {
        let cell = self.cell;
        core::mem::forget(self);
        // SAFETY: the slot lives until both sides let go; we have not.
        let r = unsafe { cell.as_ref() };
        let held = r.lock();
        let free = match r.state.get() {
            PENDING => {
                r.state.set(ABANDONED);
                if let Some(op) = r.op.get() {
                    // SAFETY: `op` was bound by the backend and its
                    // `completing` has not run: it waits for this lock.
                    unsafe { B::cancel_op(At { sched, key }, op) };
                }
                false
            }
            COMPLETING => {
                r.state.set(ABANDONED);
                false
            }
            DONE => {
                // A value nobody will take: dropped below, with the slot.
                // SAFETY: DONE: written, not taken.
                unsafe { (*r.value.get()).assume_init_drop() };
                true
            }
            // DESTROYED, or TAKEN by `look`.
            _ => true,
        };
        // SAFETY: the waker is guarded by the lock, held.
        let waker = unsafe { (*r.waker.get()).take() };
        drop(held);
        drop(waker);
        if free {
            // SAFETY: the handler is done with it (DONE, DESTROYED or
            // TAKEN): we are last.
            unsafe { sched.free_op(cell) };
        }
    }
}

impl<T> Drop for Waiting<T> {
    fn drop(&mut self) {
        // Futures call `abandon` (which needs the backend); a bare drop
        // would leak the slot.
        debug_assert!(false, "pinion: a Waiting was dropped without abandon");
    }
}

/// The handler of an operation whose future awaits it.
pub struct CellHandler<B: Backend, T> {
    cell: NonNull<Rendezvous<T>>,
    sched: *const Sched<B>,
}

// SAFETY: as for `Waiting`; `sched` is the 'static context's scheduler.
unsafe impl<B: Backend, T: Send> Send for CellHandler<B, T> {}

impl<B: Backend, T: Send> CellHandler<B, T> {
    /// Delivers `value` as the operation's result (for completions that
    /// come through a closure, such as a timer wait).
    pub(crate) fn finish(self, value: T) {
        // SAFETY: the scheduler of a context that outlives its operations.
        let sched = unsafe { &*self.sched };
        self.deliver(sched, value)
    }

    /// Leaves `value` at the rendezvous and wakes the future, or drops it
    /// (with the rendezvous) if the future is gone.
    pub(crate) fn deliver(self, sched: &Sched<B>, value: T) {
        let cell = self.cell;
        core::mem::forget(self);
        // SAFETY: the slot lives while the handler does.
        let r = unsafe { cell.as_ref() };
        let held = r.lock();
        if r.state.get() == ABANDONED {
            drop(held);
            drop(value);
            // SAFETY: the future is gone: we are last.
            unsafe { sched.free_op(cell) };
            return;
        }
        // SAFETY: not DONE yet, so nothing is written; guarded by the lock.
        unsafe { (*r.value.get()).write(value) };
        r.state.set(DONE);
        // SAFETY: guarded by the lock, held.
        let waker = unsafe { (*r.waker.get()).take() };
        drop(held);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<B: Backend, T> OpHooks for CellHandler<B, T> {
    fn bind(&mut self, op: OpId) {
        // SAFETY: called before the operation is visible to anyone else,
        // and the future does not look at `op` before the start returns.
        unsafe { self.cell.as_ref() }.op.set(Some(op));
    }

    fn completing(&self) {
        // SAFETY: the slot lives while the handler does.
        let r = unsafe { self.cell.as_ref() };
        let _held = r.lock();
        if r.state.get() == PENDING {
            r.state.set(COMPLETING);
        }
    }
}

/// How a backend's result becomes what the rendezvous keeps (the same
/// value, or, for accepts, a stream that closes if nobody takes it).
pub(crate) trait FromValue<B: Backend, V>: Sized {
    fn from_value(sched: &Sched<B>, v: V) -> Self;
}

impl<B: Backend, T> FromValue<B, T> for T {
    #[inline(always)]
    fn from_value(_: &Sched<B>, v: T) -> T {
        v
    }
}

impl<B: Backend, T> Drop for CellHandler<B, T> {
    /// Destroyed without running (context shutdown).
    fn drop(&mut self) {
        // SAFETY: the slot lives while the handler does.
        let r = unsafe { self.cell.as_ref() };
        let held = r.lock();
        if r.state.get() == ABANDONED {
            drop(held);
            // SAFETY: the future is gone: we are last; `sched` is the
            // scheduler being shut down, still alive.
            unsafe { (*self.sched).free_op(self.cell) };
            return;
        }
        r.state.set(DESTROYED);
        // SAFETY: guarded by the lock, held.
        let waker = unsafe { (*r.waker.get()).take() };
        drop(held);
        drop(waker);
    }
}

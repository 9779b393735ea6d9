//! Asio's strand: handlers posted through one strand never run
//! concurrently and run in the order they were posted.
//!
//! The strand is itself an operation. While it is *locked* it sits in (or
//! is being run from) the scheduler's queue exactly once; handlers posted
//! meanwhile wait in `waiting`. When the strand runs it drains `ready`, and
//! on exit moves `waiting` to `ready` and, if anything is there, posts
//! itself again: the hand-over that lets another thread continue.
//!
//! ```text
//!   post(h): unlocked ─► lock, ready.push(h), post strand op
//!            locked   ─► waiting.push(h)
//!   strand op runs: drain ready ─► on exit: ready += waiting
//!            ready empty ─► unlock          ready non-empty ─► post again
//! ```
//!
//! A strand's state lives in one operation slot of the context's pool, so
//! creating a strand allocates nothing; the slot returns to the pool when
//! the last `Strand` handle is dropped and no handler is pending.

use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use pinion_sync::{Locked, SyncKit};

use crate::backend::Task;
use crate::loom::cell::UnsafeCell;
use crate::op::{Invoke, Operation};
use crate::queue::OpQueue;
use crate::scheduler::{complete_handler, HandlerOp, Scheduler, StrandFrame};
use crate::{Error, Pool, Rejected};

#[repr(C)]
struct StrandImpl<K: SyncKit> {
    op: Operation,
    shared: Locked<K::Mutex, Shared>,
    /// Handlers about to run: only the holder of the strand lock
    /// (`locked == true`) touches it.
    ready: UnsafeCell<OpQueue>,
}

/// A strand's state behind its mutex.
struct Shared {
    /// The strand lock: a thread is running (or about to run) its handlers.
    locked: bool,
    /// Handles and task references.
    refs: usize,
    /// Handlers posted while the strand was locked.
    waiting: OpQueue,
}

/// A handle to a strand. Cloning makes another handle to the same strand.
pub struct Strand<'s, T: Task, K: SyncKit> {
    sched: &'s Scheduler<T, K>,
    imp: NonNull<StrandImpl<K>>,
}

// SAFETY: the strand state is guarded by its mutex and the `locked` flag;
// handlers are Send. Same conditions as the scheduler it points into.
unsafe impl<T: Task + Sync, K: SyncKit> Send for Strand<'_, T, K>
where
    K::Mutex: Sync,
    K::Event: Sync,
{
}
// SAFETY: as above.
unsafe impl<T: Task + Sync, K: SyncKit> Sync for Strand<'_, T, K>
where
    K::Mutex: Sync,
    K::Event: Sync,
{
}

impl<'s, T: Task, K: SyncKit> Strand<'s, T, K> {
    /// A new strand on `sched`, in one slot of its pool.
    pub fn new(sched: &'s Scheduler<T, K>) -> Result<Self, Error> {
        let imp = StrandImpl::<K> {
            op: Operation::new(strand_complete::<T, K>),
            shared: Locked::new(Shared {
                locked: false,
                refs: 1,
                waiting: OpQueue::new(),
            }),
            ready: UnsafeCell::new(OpQueue::new()),
        };
        // SAFETY: the slot is given back by the last handle's drop or the
        // last hand-over (`release`), once.
        match unsafe { sched.alloc_op(imp) } {
            Ok(imp) => Ok(Strand { sched, imp }),
            Err(_) => Err(sched.pool_error(Pool::Ops)),
        }
    }

    fn imp(&self) -> &StrandImpl<K> {
        // SAFETY: the slot lives while any handle exists (refs > 0).
        unsafe { self.imp.as_ref() }
    }

    /// `true` when the calling thread is running one of this strand's
    /// handlers.
    pub fn running_in_this_thread(&self) -> bool {
        match self.sched.this_thread() {
            Some(ti) => ti.in_strand(self.imp.as_ptr() as *const ()),
            None => false,
        }
    }

    /// Queues `handler` to run in the strand, after every handler posted
    /// to it before. Hands it back with `PoolFull(Ops)` when no slot is free.
    pub fn post<F>(&self, handler: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let op = HandlerOp {
            header: Operation::new(complete_handler::<F, T, K>),
            handler: ManuallyDrop::new(handler),
        };
        // SAFETY: the slot is freed by the handler op's complete function.
        let p = unsafe {
            self.sched
                .alloc_op_or_reject(op, |op| ManuallyDrop::into_inner(op.handler))
        }?;
        self.enqueue(p.cast());
        Ok(())
    }

    /// Runs `handler` now if that keeps the strand's guarantees (the
    /// calling thread is in this strand, or is inside `run` and the strand
    /// is idle); otherwise posts it.
    pub fn dispatch<F>(&self, handler: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if self.running_in_this_thread() {
            handler();
            return Ok(());
        }
        if self.sched.running_in_this_thread() {
            let imp = self.imp();
            let mut shared = imp.shared.lock();
            if !shared.locked {
                shared.locked = true;
                drop(shared);
                let frame = frame_for(self.sched, self.imp);
                let _exit = Running::enter(self.sched, self.imp, &frame);
                handler();
                return Ok(());
            }
        }
        self.post(handler)
    }

    fn enqueue(&self, op: NonNull<Operation>) {
        let imp = self.imp();
        let mut shared = imp.shared.lock();
        if shared.locked {
            // SAFETY: `op` is on no queue.
            unsafe { shared.waiting.push(op) };
        } else {
            shared.locked = true;
            drop(shared);
            // SAFETY: `ready` is ours: we hold the strand lock; `op` is on
            // no queue.
            unsafe {
                (*imp.ready.get()).push(op);
                self.sched.post_immediate_completion(self.imp.cast());
            }
        }
    }
}

impl<T: Task, K: SyncKit> Strand<'static, T, K> {
    /// A task bound to this strand: its polls are queued through the
    /// strand, so they never overlap the strand's handlers (or each
    /// other's), and run in wake-up order with them. Hands the future back
    /// as [`Scheduler::spawn`] does.
    pub fn spawn<F>(&self, future: F) -> Result<crate::task::JoinHandle<F::Output>, Rejected<F>>
    where
        F: core::future::Future + Send + 'static,
        F::Output: Send + 'static,
        T: Sync + 'static,
        K: 'static,
        Scheduler<T, K>: Sync,
    {
        // The task holds a strand reference, so a wake-up after the last
        // handle is gone still finds the strand (released with the slot).
        let held = ManuallyDrop::new(self.clone());
        let strand = held.imp.as_ptr() as *const ();
        // SAFETY: `schedule_in_strand` queues through the strand `strand`
        // of this scheduler, whose reference the task now holds.
        let spawned = unsafe {
            self.sched.spawn_with(
                future,
                crate::task::schedule_in_strand::<Scheduler<T, K>>,
                strand,
            )
        };
        if spawned.is_err() {
            drop(ManuallyDrop::into_inner(held));
        }
        spawned
    }
}

/// Queues `op` in the strand `imp` (a reference a task holds).
///
/// # Safety
/// `imp` is a live strand of `sched` (the caller holds a reference); `op`
/// is an operation of `sched` on no queue.
pub(crate) unsafe fn enqueue_raw<T: Task, K: SyncKit>(
    sched: &Scheduler<T, K>, imp: *const (), op: NonNull<Operation>,
) {
    let strand = ManuallyDrop::new(Strand {
        sched,
        // SAFETY: non-null: a strand's slot (contract).
        imp: unsafe { NonNull::new_unchecked(imp as *mut StrandImpl<K>) },
    });
    strand.enqueue(op);
}

/// Gives back a task's strand reference (freeing the strand if it was the
/// last and nothing is queued).
///
/// # Safety
/// `imp` is a strand of `sched` whose reference the caller owns.
pub(crate) unsafe fn drop_ref_raw<T: Task, K: SyncKit>(sched: &Scheduler<T, K>, imp: *const ()) {
    drop(Strand {
        sched,
        // SAFETY: non-null: a strand's slot (contract).
        imp: unsafe { NonNull::new_unchecked(imp as *mut StrandImpl<K>) },
    });
}

impl<T: Task, K: SyncKit> Clone for Strand<'_, T, K> {
    fn clone(&self) -> Self {
        let imp = self.imp();
        imp.shared.lock().refs += 1;
        Strand {
            sched: self.sched,
            imp: self.imp,
        }
    }
}

impl<T: Task, K: SyncKit> Drop for Strand<'_, T, K> {
    fn drop(&mut self) {
        let imp = self.imp();
        let free = {
            let mut shared = imp.shared.lock();
            shared.refs -= 1;
            shared.refs == 0 && !shared.locked
        };
        if free {
            // SAFETY: no handle and no pending handler: nobody else can
            // reach the slot. Its queues are empty.
            unsafe { self.sched.free_op(self.imp) };
        }
    }
}

/// The strand's on-exit hand-over: move waiting handlers to ready; post
/// the strand again if there are any, else unlock it (and free it if no
/// handle is left).
///
/// # Safety
/// The caller holds the strand lock (`locked == true`). `ready` may still
/// hold handlers (a handler unwound); they stay queued and run next.
unsafe fn release<T: Task, K: SyncKit>(sched: &Scheduler<T, K>, imp: NonNull<StrandImpl<K>>) {
    // SAFETY: the slot lives while the strand is locked.
    let s = unsafe { imp.as_ref() };
    let mut shared = s.shared.lock();
    // SAFETY: `ready` is ours through the strand lock.
    let ready = unsafe { &mut *s.ready.get() };
    ready.push_queue(&mut shared.waiting);
    let more = !ready.is_empty();
    shared.locked = more;
    let free = !more && shared.refs == 0;
    drop(shared);
    if more {
        // SAFETY: the strand op is on no queue (it is running or was
        // dispatched inline) and belongs to `sched`.
        unsafe { sched.post_immediate_completion(imp.cast()) };
    } else if free {
        // SAFETY: no handle, no handler: the slot is unreachable.
        unsafe { sched.free_op(imp) };
    }
}

/// The strand operation's complete function: run every ready handler,
/// then hand over. On destroy, destroy every handler it holds.
///
/// # Safety
/// See [`CompleteFn`](crate::op::CompleteFn).
unsafe fn strand_complete<T: Task, K: SyncKit>(
    op: NonNull<Operation>, owner: *const (), how: Invoke<'_>,
) {
    let imp = op.cast::<StrandImpl<K>>();
    // SAFETY: `owner` is the scheduler that owns this strand's slot.
    let sched = unsafe { &*(owner as *const Scheduler<T, K>) };
    // SAFETY: the strand is locked while its op is queued, so its slot is
    // live and `ready` is ours.
    let s = unsafe { imp.as_ref() };
    if !how.is_run() {
        // Shutdown: destroy every handler. Handles may still exist (a
        // context shut down in place), and tasks bound to the strand may
        // still hold references (a task slot outlives its poll while a
        // waker or join handle exists): the last one frees the slot, and
        // a later post is refused (no operation slot is handed out).
        let mut all = OpQueue::new();
        // SAFETY: exclusive at shutdown.
        all.push_queue(unsafe { &mut *s.ready.get() });
        all.push_queue(&mut s.shared.lock().waiting);
        while let Some(h) = all.pop() {
            // SAFETY: each handler op is live and owned by `sched`.
            unsafe { Operation::complete(h, owner, Invoke::Destroy) };
        }
        let free = {
            let mut shared = s.shared.lock();
            shared.locked = false;
            shared.refs == 0
        };
        if free {
            // SAFETY: nothing refers to the slot any more.
            unsafe { sched.free_op(imp) };
        }
        return;
    }
    // Hands over on exit, also if a handler unwinds (Asio's
    // on_do_complete_exit), so a panic cannot wedge the strand.
    let frame = frame_for(sched, imp);
    let _exit = Running::enter(sched, imp, &frame);
    loop {
        // SAFETY: `ready` is ours through the strand lock; the reference
        // ends before the handler runs (a handler may post to the strand,
        // which touches only `waiting`).
        let next = unsafe { (*s.ready.get()).pop() };
        let Some(h) = next else { break };
        // SAFETY: each handler op is live, dequeued, owned by `sched`.
        unsafe { Operation::complete(h, owner, how) };
    }
}

/// A strand running on this thread: links `frame` as the innermost entry
/// of the thread's strand call stack, and on drop (return or unwind)
/// unlinks it and hands the strand over.
struct Running<'a, T: Task, K: SyncKit> {
    sched: &'a Scheduler<T, K>,
    imp: NonNull<StrandImpl<K>>,
    frame: &'a StrandFrame,
}

impl<'a, T: Task, K: SyncKit> Running<'a, T, K> {
    /// The caller holds the strand lock (`locked == true`); `frame` is a
    /// local of the caller, so its address is stable while linked.
    fn enter(
        sched: &'a Scheduler<T, K>, imp: NonNull<StrandImpl<K>>, frame: &'a StrandFrame,
    ) -> Self {
        if let Some(ti) = sched.this_thread() {
            ti.strand.set(frame);
        }
        Running { sched, imp, frame }
    }
}

impl<T: Task, K: SyncKit> Drop for Running<'_, T, K> {
    fn drop(&mut self) {
        if let Some(ti) = self.sched.this_thread() {
            ti.strand.set(self.frame.outer);
        }
        // SAFETY: the strand lock has been held since `enter`.
        unsafe { release(self.sched, self.imp) };
    }
}

/// A frame for `imp` whose outer frame is the thread's current one.
fn frame_for<T: Task, K: SyncKit>(
    sched: &Scheduler<T, K>, imp: NonNull<StrandImpl<K>>,
) -> StrandFrame {
    StrandFrame {
        strand: imp.as_ptr() as *const (),
        outer: sched
            .this_thread()
            .map_or(core::ptr::null(), |ti| ti.strand.get()),
    }
}

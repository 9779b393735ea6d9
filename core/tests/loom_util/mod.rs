//! What the loom models share: the real scheduler over a model of the
//! backend task, contexts that live for one model run, and an operation
//! that stands for a finished I/O.
#![allow(dead_code)]

use core::mem::ManuallyDrop;
use core::ptr::{self, addr_of, NonNull};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use pinion_core::backend::{Invoke, NoTask, OpQueue, Operation, Task, Wait};
use pinion_core::{OpSlot, Scheduler, Storage};
use pinion_sync::FutexKit;

/// The backend task as the scheduler sees it: `run(Forever)` sleeps until
/// interrupted or until the "kernel" finished an operation; `run(Poll)`
/// and `run(Until)` return at once (a deadline may pass at any moment).
/// An interrupt that no run consumed yet stays pending, as an eventfd
/// stays readable.
pub struct ModelTask {
    kernel: Mutex<Kernel>,
    wake: Condvar,
    /// Set while a thread is inside `run`: two at once break the
    /// single-runner promise the scheduler makes to every backend.
    running: AtomicBool,
}

struct Kernel {
    interrupted: bool,
    done: OpQueue,
}

// SAFETY: the queued operations are the scheduler's, made to be completed
// on any of its threads; the queue is only reached under `kernel`'s lock.
unsafe impl Send for Kernel {}

impl ModelTask {
    pub fn new() -> Self {
        ModelTask {
            kernel: Mutex::new(Kernel {
                interrupted: false,
                done: OpQueue::new(),
            }),
            wake: Condvar::new(),
            running: AtomicBool::new(false),
        }
    }

    /// The kernel finishes `op` (its work was counted when it started).
    ///
    /// # Safety
    /// `op` is a live operation of the scheduler this task serves, on no
    /// queue.
    pub unsafe fn finish(&self, op: NonNull<Operation>) {
        let mut k = self.kernel.lock().unwrap();
        // SAFETY: per contract.
        unsafe { k.done.push(op) };
        self.wake.notify_one();
    }
}

// SAFETY: `run` asserts it is never entered twice at once; everything else
// is behind `kernel`'s lock.
unsafe impl Task for ModelTask {
    unsafe fn run(&self, wait: Wait, ops: &mut OpQueue) {
        assert!(
            !self.running.swap(true, Ordering::Relaxed),
            "two threads inside the backend task at once"
        );
        let mut k = self.kernel.lock().unwrap();
        if wait == Wait::Forever {
            while !k.interrupted && k.done.is_empty() {
                k = self.wake.wait(k).unwrap();
            }
        }
        k.interrupted = false;
        ops.push_queue(&mut k.done);
        drop(k);
        self.running.store(false, Ordering::Relaxed);
    }

    fn interrupt(&self) {
        self.kernel.lock().unwrap().interrupted = true;
        self.wake.notify_one();
    }

    unsafe fn shutdown(&self, ops: &mut OpQueue) {
        ops.push_queue(&mut self.kernel.lock().unwrap().done);
    }

    fn now_ns(&self) -> u64 {
        0
    }
}

/// A scheduler and the slot memory under it, freed together when the
/// model run ends.
pub struct Ctx<T: Task> {
    pub sched: ManuallyDrop<Scheduler<T, FutexKit>>,
    slots: *mut [OpSlot],
}

impl<T: Task> Ctx<T> {
    pub fn new(task: T, slots: usize, hint: usize) -> Self {
        let v: Vec<OpSlot> = (0..slots).map(|_| OpSlot::EMPTY).collect();
        let raw = Box::into_raw(v.into_boxed_slice());
        // SAFETY: `raw` is a fresh allocation that only this storage uses
        // until `drop` frees it, after the scheduler is gone.
        let storage = Storage::from_static(unsafe { &mut *raw });
        Ctx {
            sched: ManuallyDrop::new(Scheduler::new(task, storage, hint)),
            slots: raw,
        }
    }
}

impl<T: Task> Drop for Ctx<T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the slots are freed after the
        // scheduler that used them (`Box::into_raw` in `new`).
        unsafe {
            ManuallyDrop::drop(&mut self.sched);
            drop(Box::from_raw(self.slots));
        }
    }
}

/// Runs `f` with `value` as a `'static` reference (handlers and strands
/// need one) and drops `value` after it.
///
/// # Safety
/// Every thread `f` starts is joined before `f` returns, and nothing else
/// keeps the reference past that.
pub unsafe fn scoped<V: 'static, R>(value: V, f: impl FnOnce(&'static V) -> R) -> R {
    let p = Box::into_raw(Box::new(value));
    // SAFETY: live until the `from_raw` below; per contract nobody uses
    // the reference after `f` returns.
    let r = f(unsafe { &*p });
    // SAFETY: allocated above, freed once.
    drop(unsafe { Box::from_raw(p) });
    r
}

pub type ModelSched = Scheduler<ModelTask, FutexKit>;
pub type IdleSched = Scheduler<NoTask, FutexKit>;

/// An operation standing for I/O that the kernel finished: counts into
/// `hits` when it runs.
#[repr(C)]
pub struct IoOp {
    header: Operation,
    hits: ManuallyDrop<Arc<AtomicUsize>>,
}

/// Starts one model I/O on `sched`'s task as a backend does: a slot from
/// the pool, the work counted on the shared counter (`io_work_started`),
/// then handed to the kernel, which finishes it at once.
pub fn start_io(sched: &'static ModelSched, hits: Arc<AtomicUsize>) {
    let op = IoOp {
        header: Operation::new(io_complete),
        hits: ManuallyDrop::new(hits),
    };
    // SAFETY: freed by `io_complete`, once.
    let p = unsafe { sched.alloc_op(op) }.ok().expect("a free slot");
    // SAFETY: matched by the op's completion; `p` is live and on no queue.
    unsafe {
        sched.io_work_started();
        sched.task().finish(p.cast());
    }
}

/// # Safety
/// A `CompleteFn`: `op` is an `IoOp` of the `ModelSched` at `owner`.
unsafe fn io_complete(op: NonNull<Operation>, owner: *const (), how: Invoke<'_>) {
    let op = op.cast::<IoOp>();
    // SAFETY: a live IoOp, read once before its slot is freed.
    let hits = ManuallyDrop::into_inner(unsafe { ptr::read(addr_of!((*op.as_ptr()).hits)) });
    // SAFETY: `owner` is the scheduler whose pool holds the slot.
    let sched = unsafe { &*(owner as *const ModelSched) };
    // SAFETY: the value was moved out; freed once; `how` is this
    // scheduler's.
    unsafe { sched.free_op_in(how.here(), op) };
    if how.is_run() {
        hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Posts `f`, which must find a free slot.
pub fn post<T: Task>(sched: &Scheduler<T, FutexKit>, f: impl FnOnce() + Send + 'static) {
    assert!(sched.post(f).is_ok(), "a free slot");
}

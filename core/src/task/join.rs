//! `JoinHandle`: the spawner's side of a task.

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};

use super::raw::{self, TaskHeader, COMPLETE, JOIN_INTEREST, JOIN_WAKER, OUTPUT};
use crate::Error;

/// Awaits a spawned task's output, or aborts it.
///
/// Awaiting gives `Ok(output)`, or `Err(Error::OperationAborted)` if the
/// task was aborted, panicked, or its context shut down before it
/// finished. Dropping the handle detaches the task: it runs on, and its
/// output is dropped when it finishes.
#[must_use = "dropping a JoinHandle detaches the task; bind it to `_task` to keep it running on purpose"]
pub struct JoinHandle<T> {
    h: NonNull<TaskHeader>,
    /// The output was taken (polling again is a bug).
    done: bool,
    _t: PhantomData<T>,
}

// SAFETY: the handle only moves the output (`T: Send`) between threads;
// its accesses to the slot follow the state protocol.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only reads the state (`is_finished`) or aborts.
unsafe impl<T: Send> Sync for JoinHandle<T> {}
impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// # Safety
    /// `h` is a task whose output has type `T`; the caller hands over the
    /// JoinHandle's reference and `JOIN_INTEREST`.
    pub(crate) unsafe fn new(h: NonNull<TaskHeader>) -> Self {
        JoinHandle {
            h,
            done: false,
            _t: PhantomData,
        }
    }

    fn hdr(&self) -> &TaskHeader {
        // SAFETY: the handle's reference keeps the slot alive.
        unsafe { self.h.as_ref() }
    }

    /// `true` once the task has finished (or was aborted).
    pub fn is_finished(&self) -> bool {
        self.hdr().state.load(Ordering::Acquire) & COMPLETE != 0
    }

    /// Stops the task: unless it already finished, its future is dropped
    /// at its next turn (not while a poll of it is running) and awaiting
    /// the handle gives `Err(OperationAborted)`. Harmless if repeated.
    pub fn abort(&self) {
        // SAFETY: the handle holds a reference.
        unsafe { raw::abort(self.h) }
    }

    /// The output of a COMPLETE task, once.
    fn take(&mut self, cur: usize) -> Result<T, Error> {
        self.done = true;
        if cur & OUTPUT == 0 {
            return Err(Error::OperationAborted);
        }
        // Only the JoinHandle clears OUTPUT: the value is ours from here.
        self.hdr().state.fetch_and(!OUTPUT, Ordering::AcqRel);
        // SAFETY: OUTPUT says the storage holds a live `T`, which we now
        // own; the bit is clear, so nobody else drops it.
        Ok(unsafe { ptr::read(self.hdr().storage() as *const T) })
    }
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "pinion: JoinHandle polled after it completed");
        let hdr = self.hdr();
        let mut cur = hdr.state.load(Ordering::Acquire);
        if cur & COMPLETE != 0 {
            return Poll::Ready(self.take(cur));
        }
        let join_waker = hdr_join_waker(hdr);
        if cur & JOIN_WAKER != 0 {
            // SAFETY: set: the runner may read the waker, and so may we.
            if let Some(w) = unsafe { &*join_waker } {
                if w.will_wake(cx.waker()) {
                    return Poll::Pending;
                }
            }
            // Take the waker back before replacing it.
            loop {
                if cur & COMPLETE != 0 {
                    return Poll::Ready(self.take(cur));
                }
                match hdr.state.compare_exchange_weak(
                    cur,
                    cur & !JOIN_WAKER,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        cur &= !JOIN_WAKER;
                        break;
                    }
                    Err(actual) => cur = actual,
                }
            }
        }
        // JOIN_WAKER is clear and the task is not complete: the field is
        // ours to write.
        // SAFETY: per the protocol above.
        unsafe { *join_waker = Some(cx.waker().clone()) };
        loop {
            if cur & COMPLETE != 0 {
                // The waker stays in the field, unused; dropped with the slot.
                return Poll::Ready(self.take(cur));
            }
            match hdr.state.compare_exchange_weak(
                cur,
                cur | JOIN_WAKER,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Poll::Pending,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// The header's join-waker field.
fn hdr_join_waker(hdr: &TaskHeader) -> *mut Option<core::task::Waker> {
    hdr.join_waker_ptr()
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let hdr = self.hdr();
        let mut cur = hdr.state.load(Ordering::Acquire);
        loop {
            let next = cur & !(JOIN_INTEREST | OUTPUT);
            match hdr
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur & OUTPUT != 0 {
            // SAFETY: OUTPUT was set and we cleared it: the output is ours.
            unsafe { (hdr.vtable().drop_output)(hdr.storage()) };
        }
        // SAFETY: the handle's reference, dropped once.
        unsafe { raw::drop_ref(self.h) };
    }
}

//! [`Strand`]: handlers that never run concurrently, in the order posted
//! (Asio's `io_context::strand`).

use pinion_core::backend::Backend;
use pinion_core::{Rejected, Result};

use crate::context::IoContext;

/// A strand on an [`IoContext`]: handlers posted through it run one at a
/// time, in the order they were posted, on whichever thread runs the
/// context. Cloning makes another handle to the same strand; its state
/// takes one operation slot until the last handle is dropped and no
/// handler is pending.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// let strand = pinion::Strand::new(ctx).unwrap();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// for i in 0..3 {
///     let seen = seen.clone();
///     strand.post(move || seen.lock().unwrap().push(i)).unwrap();
/// }
/// ctx.run();
/// assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
/// ```
pub struct Strand<'c, B: Backend> {
    inner: pinion_core::Strand<'c, B, B::Kit>,
}

impl<'c, B: Backend> Strand<'c, B> {
    /// A new strand in one operation slot of `ctx` (`PoolFull(Ops)` when
    /// none is free).
    pub fn new(ctx: &'c IoContext<B>) -> Result<Self> {
        Ok(Strand {
            inner: pinion_core::Strand::new(ctx.sched())?,
        })
    }

    /// Queues `handler` to run in the strand, after every handler posted
    /// to it before.
    pub fn post<F: FnOnce() + Send + 'static>(
        &self, handler: F,
    ) -> core::result::Result<(), Rejected<F>> {
        self.inner.post(handler)
    }

    /// Runs `handler` now if that keeps the strand's guarantees (the
    /// calling thread is in this strand, or is inside `run` and the strand
    /// is idle); otherwise posts it.
    pub fn dispatch<F: FnOnce() + Send + 'static>(
        &self, handler: F,
    ) -> core::result::Result<(), Rejected<F>> {
        self.inner.dispatch(handler)
    }

    /// `true` when the calling thread is running one of this strand's
    /// handlers.
    pub fn running_in_this_thread(&self) -> bool {
        self.inner.running_in_this_thread()
    }
}

impl<B: Backend> Strand<'static, B> {
    /// Runs `future` as a task bound to this strand: its polls never
    /// overlap the strand's handlers (or other tasks of the strand), and
    /// its wake-ups queue behind handlers posted before them. Hands the
    /// future back as [`IoContext::spawn`] does. The task keeps the
    /// strand alive until it is gone.
    ///
    /// ```
    /// let ctx: &'static pinion::IoContext =
    ///     pinion::Builder::new().tasks(2, 256).build_static().unwrap();
    /// let strand = pinion::Strand::new(ctx).unwrap();
    /// let s = strand.clone();
    /// let h = strand.spawn(async move { s.running_in_this_thread() }).unwrap();
    /// assert_eq!(ctx.block_on(h).unwrap(), Ok(true));
    /// ```
    pub fn spawn<F>(
        &self, future: F,
    ) -> core::result::Result<pinion_core::task::JoinHandle<F::Output>, Rejected<F>>
    where
        F: core::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawn(future)
    }
}

impl<B: Backend> Clone for Strand<'_, B> {
    fn clone(&self) -> Self {
        Strand {
            inner: self.inner.clone(),
        }
    }
}

//! The scheduler's guards: the end of a batch, a thread leaving `run`,
//! and the user's work guard; each also runs on unwind.

use pinion_sync::SyncKit;

use super::thread::Registration;
use super::{Scheduler, ThreadInfo};
use crate::backend::Task;
use crate::queue::OpQueue;

/// Ends a batch, also when a handler unwinds: returns the unrun rest to the
/// front of the queue and settles the work of the handlers that ran.
pub(super) struct BatchGuard<'a, T: Task, K: SyncKit> {
    pub(super) sched: &'a Scheduler<T, K>,
    pub(super) ti: &'a ThreadInfo,
    pub(super) batch: OpQueue,
    pub(super) ran: usize,
}

impl<T: Task, K: SyncKit> Drop for BatchGuard<'_, T, K> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            self.sched.lock();
            // SAFETY: held.
            unsafe {
                self.sched.locked().ready.push_queue_front(&mut self.batch);
                self.sched.unlock();
            }
        }
        self.sched.work_cleanup(self.ti, self.ran);
    }
}

/// Unregisters a thread leaving `run` (also on unwind) and gives back what
/// it held privately.
pub(super) struct RunExit<'a, T: Task, K: SyncKit> {
    pub(super) sched: &'a Scheduler<T, K>,
    pub(super) ti: &'a ThreadInfo,
    pub(super) reg: Option<Registration>,
}

impl<T: Task, K: SyncKit> Drop for RunExit<'_, T, K> {
    fn drop(&mut self) {
        if let Some(r) = self.reg.take() {
            self.sched.threads.unregister(r);
        }
        // Anything left privately (a stop mid-task, an unwinding handler)
        // goes back to the shared queue with its work counted.
        self.sched.publish_private(self.ti);
        self.sched.flush_cache(self.ti);
    }
}

/// Keeps a scheduler's `run` from returning for lack of work while alive
/// (Asio's `executor_work_guard`); made by [`Scheduler::work_guard`].
pub struct WorkGuard<'a, T: Task, K: SyncKit> {
    pub(super) sched: &'a Scheduler<T, K>,
}

impl<T: Task, K: SyncKit> WorkGuard<'_, T, K> {
    /// Releases the guard now (same as dropping it).
    pub fn reset(self) {}
}

impl<T: Task, K: SyncKit> Drop for WorkGuard<'_, T, K> {
    fn drop(&mut self) {
        // SAFETY: matches the `work_started` of `work_guard`, once.
        unsafe { self.sched.work_finished() };
    }
}

//! The backend contract: what a reactor or proactor gives the scheduler.
//!
//! This is the one place where backends plug in, like Asio's `reactor`
//! typedef or mio's `sys` module. A backend is the scheduler's *task*: the
//! scheduler runs it once whenever the task sentinel reaches the front of
//! its queue (Asio's `task_operation_`), and interrupts it when work arrives
//! for a thread that is blocked inside it.

use crate::queue::OpQueue;

/// How long [`Task::run`] may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Return at once with whatever is ready (Asio's `usec == 0`).
    Poll,
    /// Block until something is ready or [`Task::interrupt`] is called.
    Forever,
    /// Block at most until this monotonic time (ns of [`Task::now_ns`]).
    Until(u64),
}

/// A backend the scheduler drives: a reactor (epoll) or a proactor
/// (io_uring). Every method may be called from any thread that runs the
/// context; `run` is called by one thread at a time.
pub trait Task: 'static {
    /// `false` only for [`NoTask`]: the scheduler then keeps no task
    /// sentinel and idle threads simply wait for posted work.
    const PRESENT: bool = true;

    /// Waits per `wait` for readiness or completions and pushes the
    /// operations that are ready onto `ops`, which the scheduler splices
    /// into its queue as one batch.
    fn run(&self, wait: Wait, ops: &mut OpQueue);

    /// Makes a `run` blocked in another thread return soon. Called with the
    /// scheduler's mutex held, at most once per blocking `run`.
    fn interrupt(&self);

    /// Hands every operation the backend still holds to `ops` for
    /// destruction (context shutdown). No thread is running the context.
    fn shutdown(&self, ops: &mut OpQueue);

    /// The monotonic clock, in nanoseconds, that deadlines refer to.
    fn now_ns(&self) -> u64;
}

/// The task of a context without I/O: posted handlers, strands and work
/// guards only. Idle threads sleep on the scheduler's wake-up event.
///
/// Its clock is `CLOCK_MONOTONIC` on Linux. On targets with no clock it
/// reads `u64::MAX`, so every deadline has passed and `run_for` behaves
/// like `poll`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTask;

impl Task for NoTask {
    const PRESENT: bool = false;
    fn run(&self, _: Wait, _: &mut OpQueue) {}
    fn interrupt(&self) {}
    fn shutdown(&self, _: &mut OpQueue) {}
    fn now_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            pinion_sync::monotonic_now_ns()
        }
        #[cfg(not(target_os = "linux"))]
        {
            u64::MAX
        }
    }
}

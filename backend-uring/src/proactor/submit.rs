//! Submission: the SQ under `sq_lock`, every push, the start/close
//! protocol's checked pushes, submitting, and the wait.
//!
//! The SQ ring is written in place (`pinion_sys::uring::Sq`), only under
//! `sq_lock`: the SQE goes into its slot and the tail, kept in the locked
//! state, is published before the lock is released.

use core::sync::atomic::Ordering;

use pinion_core::backend::{Key, Task};
use pinion_core::Result;
use pinion_sync::RawMutex;
use pinion_sys::uring::abi::KernelTimespec;
use pinion_sys::uring::{Sq, Sqe, Target};
use pinion_sys::Errno;

use super::{stat, Proactor, UD_INTERRUPT};

/// Submission attempts a close makes for its cancel before it leaves the
/// teardown to the runner (see `Proactor::submit_through`).
const SUBMIT_TRIES: usize = 1000;

/// State guarded by `sq_lock`.
pub(crate) struct SqState {
    /// SQEs queued that post no CQE we wait for (cancels): counting
    /// these, rarely queued, instead of the others spares every
    /// operation an increment.
    pub(crate) no_cqe: u64,
    /// The submission ring (points into `Proactor::ring`).
    pub(crate) sq: Sq,
}

impl SqState {
    /// SQEs queued that will post a final CQE we wait for.
    pub(crate) fn expected(&self) -> u64 {
        self.sq.pushed() - self.no_cqe
    }
}

/// Unlocks `sq_lock` on drop (also on unwind).
struct Unlock<'a>(&'a pinion_sync::FutexMutex);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        // SAFETY: made right after locking; unlocks once.
        unsafe { self.0.unlock() }
    }
}

impl Proactor {
    /// Queues one SQE that names no socket (the proactor's own requests).
    /// `expects_cqe`: the SQE will post a final CQE that shutdown must
    /// wait for (every user operation and internal request; not cancels,
    /// whose CQEs are ignored).
    ///
    /// A full SQ is submitted to make room, then the push is retried:
    /// back-pressure, never an error. If a thread is blocked in
    /// `io_uring_enter`, it is interrupted so that it submits.
    ///
    /// # Safety
    /// The buffer-lifetime rule (`Sq::push`'s):
    /// every pointer `sqe` carries (buffer, address, `msghdr`, and the
    /// operation its `user_data` names) stays valid, unmoved and unfreed
    /// until the kernel has posted the SQE's final CQE and the reaper has
    /// handed it on. Operations keep it by pointing only into their own
    /// slot, which is freed only by their complete function.
    #[inline]
    pub(crate) unsafe fn push(&self, sqe: &Sqe, expects_cqe: bool) {
        // SAFETY: forwarded.
        unsafe { self.push_with(expects_cqe, |sq| sq.push(sqe)) }
    }

    /// The body of every push: `write` puts the entry at the tail.
    ///
    /// # Safety
    /// `write` is a push (`Sq::push` or `Sq::push_lean`) of an SQE that
    /// keeps [`push`](Self::push)'s rule; it is called with room in the SQ.
    #[inline(always)]
    unsafe fn push_with(&self, expects_cqe: bool, write: impl FnOnce(&mut Sq)) {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `sq_state` is only touched under `sq_lock`, held until
        // `_u` drops: this is the only reference.
        let st = unsafe { &mut *self.sq_state.get() };
        // SAFETY: forwarded.
        unsafe { self.push_locked(st, expects_cqe, write) }
    }

    /// [`push_with`](Self::push_with) with `sq_lock` already held.
    ///
    /// # Safety
    /// As for `push_with`; `st` is the SQ state, reached under `sq_lock`.
    #[inline(always)]
    pub(crate) unsafe fn push_locked(
        &self, st: &mut SqState, expects_cqe: bool, write: impl FnOnce(&mut Sq),
    ) {
        if st.sq.looks_full() {
            self.push_slow(&mut st.sq);
        }
        // There is room; the entry's pointers stay valid per the callers'
        // contract. The tail is published before the lock drops.
        write(&mut st.sq);
        crate::tsan::published();
        if !expects_cqe {
            st.no_cqe += 1;
        }
        stat!(self, sqes_submitted);
    }

    /// Queues the SQE `make` builds for the socket `key` names, or refuses
    /// with `BadDescriptor` if the key is stale. The handle is checked and the SQE written in one stretch
    /// under `sq_lock`, the lock under which `close_desc`
    /// moves the generation on and queues its cancel: an SQE pushed here
    /// is either refused or ahead of that cancel in the SQ, and the close
    /// tears the socket down (registered file, fd, slot) only once the
    /// kernel has taken every SQE up to its cancel. So an operation never
    /// reaches the socket that reuses the slot, index or fd number.
    /// `started` runs once the handle passed, before the SQE is visible
    /// (where an operation counts its work: it cannot complete earlier).
    ///
    /// # Safety
    /// [`push`](Self::push)'s rule for the SQE `make` returns, which is
    /// lean ([`Sqe::is_lean`], as one made by `Sqe::recv`/`Sqe::send`
    /// is): only the fields such SQEs use are written.
    #[inline(always)]
    pub(crate) unsafe fn push_sqe_on(
        &self, key: Key, started: impl FnOnce(), make: impl FnOnce(Target) -> Sqe,
    ) -> Result<()> {
        // SAFETY: forwarded; `make`'s SQE is lean per contract.
        unsafe {
            self.push_checked(key, true, started, |sq, t| {
                let e = make(t);
                debug_assert!(e.is_lean());
                sq.push_lean(&e)
            })
        }
    }

    /// [`push_sqe_on`](Self::push_sqe_on) for any SQE (cold paths: every
    /// field is written). `expects_cqe` as for [`push`](Self::push).
    ///
    /// # Safety
    /// As for `push_sqe_on`, without the leanness.
    #[inline]
    pub(crate) unsafe fn push_on(
        &self, key: Key, expects_cqe: bool, started: impl FnOnce(),
        make: impl FnOnce(Target) -> Sqe,
    ) -> Result<()> {
        // SAFETY: forwarded.
        unsafe { self.push_checked(key, expects_cqe, started, |sq, t| sq.push(&make(t))) }
    }

    /// The body of the checked pushes.
    ///
    /// # Safety
    /// As for [`push_with`](Self::push_with).
    #[inline(always)]
    unsafe fn push_checked(
        &self, key: Key, expects_cqe: bool, started: impl FnOnce(),
        write: impl FnOnce(&mut Sq, Target),
    ) -> Result<()> {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `sq_lock` is held.
        let target = unsafe { self.sqe_target(key) }?;
        started();
        // SAFETY: `sq_state` is only touched under `sq_lock`, held until
        // `_u` drops; the rest is forwarded.
        unsafe {
            let st = &mut *self.sq_state.get();
            self.push_locked(st, expects_cqe, |sq| write(sq, target));
        }
        Ok(())
    }

    /// A push found the SQ full by the last head read, or made to look
    /// full by a thread about to block (`Task::run`): interrupt that
    /// thread if it still waits, then make room. Called with `sq_lock`
    /// held; the lock is kept until the entry is published, so the woken
    /// thread sees it before it can wait again.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, sq: &mut Sq) {
        if self.waiting.load(Ordering::Relaxed) {
            self.wake_waiter();
        }
        if !sq.sync_head() {
            self.make_room(sq);
        }
    }

    /// A thread is blocked in `io_uring_enter` with SQEs it has not seen:
    /// interrupt it (once per wait) so that it submits them. Called with
    /// `sq_lock` held.
    #[cold]
    #[inline(never)]
    fn wake_waiter(&self) {
        self.waiting.store(false, Ordering::Relaxed);
        self.signal();
    }

    /// The SQ is full even by the kernel's latest head: submit until it
    /// is not. Called with `sq_lock` held.
    #[cold]
    #[inline(never)]
    fn make_room(&self, sq: &mut Sq) {
        loop {
            stat!(self, sq_full_events);
            self.submit_for_room();
            if sq.sync_head() {
                return;
            }
        }
    }

    /// Runs `f` with the SQ state under `sq_lock`.
    #[inline]
    pub(crate) fn with_sq<R>(&self, f: impl FnOnce(&mut SqState) -> R) -> R {
        self.sq_lock.lock();
        let _u = Unlock(&self.sq_lock);
        // SAFETY: `sq_state` is only touched under `sq_lock`, held.
        f(unsafe { &mut *self.sq_state.get() })
    }

    /// The SQ is full: have the kernel consume it. Called with `sq_lock`
    /// held. Only fails to make room on kernels that refuse submission
    /// while completions overflow (before 5.19-ish, `EBUSY`); then waits
    /// for the runner to reap, briefly sleeping.
    fn submit_for_room(&self) {
        stat!(self, enter_calls);
        match self.ring.submit(0, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => {
                self.signal();
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// Queues the interrupter's read of its eventfd.
    pub(crate) fn arm_interrupter(&self) {
        let e = Sqe::read(
            Target::Fd(self.efd.raw()),
            self.efd_buf.get() as *mut u8,
            8,
            0,
        )
        .user_data(UD_INTERRUPT);
        // SAFETY: `efd_buf` is boxed, lives as long as the proactor, and
        // the ring is dropped (after every CQE was reaped in shutdown)
        // before it is.
        unsafe { self.push(&e, true) };
    }

    /// Has the kernel take the SQ up to `fence` (a [`Sq::tail_pos`]):
    /// submits what is queued, retrying an interrupted call; with SQPOLL,
    /// wakes the kernel thread and gives it a moment. `false` if the
    /// kernel has not consumed it yet (a failed submission, a busy SQPOLL
    /// thread); never `true` before it has.
    pub(crate) fn submit_through(&self, fence: u64) -> bool {
        for _ in 0..SUBMIT_TRIES {
            let r = self.with_sq(|st| {
                if st.sq.consumed_before(fence) {
                    return Some(true);
                }
                stat!(self, enter_calls);
                match self.ring.submit(0, None) {
                    // EAGAIN (no memory for a request) and EBUSY (an
                    // overflowing CQ, kernels before 5.19-ish) may pass:
                    // try again, within the bound.
                    Ok(_) | Err(Errno::INTR | Errno::AGAIN | Errno::BUSY) => None,
                    Err(_) => Some(false),
                }
            });
            match r {
                Some(done) => return done,
                None if self.info.sqpoll => std::thread::yield_now(),
                None => {}
            }
        }
        self.with_sq(|st| st.sq.consumed_before(fence))
    }

    /// One `io_uring_enter`: submit the SQ and wait for a CQE, at most
    /// until `deadline` (ns on the monotonic clock).
    pub(crate) fn enter_and_wait(&self, deadline: Option<u64>) {
        stat!(self, enter_calls);
        let r = match deadline {
            None => self.ring.submit(1, None),
            Some(d) => {
                let rel = d.saturating_sub(self.now_ns());
                let ts = KernelTimespec {
                    tv_sec: (rel / 1_000_000_000) as i64,
                    tv_nsec: (rel % 1_000_000_000) as i64,
                };
                self.ring.submit(1, Some(&ts))
            }
        };
        // ETIME: the time-out passed; EINTR: a signal; EBUSY/EAGAIN:
        // completions to reap first. The scheduler simply runs us again.
        let _ = r;
    }

    /// Submits without waiting.
    pub(crate) fn enter_submit(&self) {
        stat!(self, enter_calls);
        let _ = self.ring.submit(0, None);
    }

    /// Whether SQEs wait to be submitted.
    pub(crate) fn sq_pending(&self) -> bool {
        self.with_sq(|st| st.sq.pending())
    }

    /// The CQ overflowed into the kernel's backlog and must be flushed.
    pub(crate) fn cq_overflowed(&self) -> bool {
        self.with_sq(|st| st.sq.cq_overflow())
    }
}

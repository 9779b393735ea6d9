//! The completion faults of the seeded injector (feature
//! `fault-injection`, tests only; `pinion_sys::fault`): CQEs of user
//! operations held back and handed on one to three reaping passes later,
//! after CQEs that came after them (`Late`), and an operation whose
//! cancel was sent reported as cancelled (`Canceled`) where the kernel
//! could have done so: it failed (so it did nothing), or it was a
//! readiness poll (which consumes nothing).
//!
//! Only single-CQE user operations are touched (`TAG_OP`, `TAG_POOLED`):
//! a multishot request's CQEs come in order from the kernel, and the
//! proactor's own requests are not the program's.
//!
//! While CQEs are held the runner does not sleep ([`Held::holding`]), so
//! a held CQE is never waiting for a wake-up; at shutdown every held CQE
//! is handed on at the next reap.

use std::sync::Mutex;

use pinion_core::OpQueue;
use pinion_sys::fault::{self, Fault, Site};
use pinion_sys::uring::Cqe;

use super::{Proactor, RunnerState, TAG_MASK, TAG_OP, TAG_POOLED};

/// CQEs held back at most at once (more are handed on in time).
const HELD_MAX: usize = 8;
/// Operations with a cancel sent that are remembered at once.
const CANCELLED_MAX: usize = 16;

/// The runner's held CQEs, each with the passes it still waits.
pub(crate) struct Held {
    cqes: [(Cqe, u8); HELD_MAX],
    len: usize,
    /// CQEs held so far: picks how many passes the next one waits.
    count: u32,
}

impl Held {
    pub(crate) const EMPTY: Held = Held {
        cqes: [(
            Cqe {
                user_data: 0,
                res: 0,
                flags: 0,
            },
            0,
        ); HELD_MAX],
        len: 0,
        count: 0,
    };

    /// Some CQE is held: the runner must come back without sleeping.
    pub(crate) fn holding(&self) -> bool {
        self.len > 0
    }
}

/// `user_data` of the latest operations whose cancel was sent, and of
/// the latest readiness polls in flight (a ring of each).
pub(crate) struct Cancelled(Mutex<[Notes; 2]>);

/// A ring of the latest `user_data` noted.
#[derive(Clone, Copy)]
struct Notes([u64; CANCELLED_MAX], usize);

impl Notes {
    fn note(&mut self, user_data: u64) {
        self.0[self.1 % CANCELLED_MAX] = user_data;
        self.1 += 1;
    }

    /// Whether `user_data` was noted; forgets it.
    fn take(&mut self, user_data: u64) -> bool {
        match self.0.iter_mut().find(|u| **u == user_data) {
            Some(u) => {
                *u = 0;
                true
            }
            None => false,
        }
    }
}

impl Cancelled {
    pub(crate) const fn new() -> Cancelled {
        Cancelled(Mutex::new([Notes([0; CANCELLED_MAX], 0); 2]))
    }

    fn with<R>(&self, f: impl FnOnce(&mut [Notes; 2]) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut g| f(&mut g))
    }

    /// A cancel of the operation `user_data` names was queued.
    pub(crate) fn note(&self, user_data: u64) {
        self.with(|n| n[0].note(user_data));
    }

    /// A readiness poll (`user_data`) was queued.
    pub(crate) fn note_poll(&self, user_data: u64) {
        self.with(|n| n[1].note(user_data));
    }

    /// The CQE of `user_data` came: (its cancel was sent, it is a poll).
    fn take(&self, user_data: u64) -> (bool, bool) {
        self.with(|n| (n[0].take(user_data), n[1].take(user_data)))
            .unwrap_or((false, false))
    }
}

impl Proactor {
    /// A CQE as the reaper met it: `Some` (maybe with `-ECANCELED` put
    /// in), or `None` when it was held back.
    #[cold]
    pub(crate) fn fault_cqe(&self, rs: &mut RunnerState, mut cqe: Cqe) -> Option<Cqe> {
        let tag = cqe.user_data & TAG_MASK;
        if tag != TAG_OP && tag != TAG_POOLED {
            return Some(cqe);
        }
        let (cancel_sent, poll) = self.cancelled.take(cqe.user_data);
        if cancel_sent
            && (cqe.res < 0 || poll)
            && cqe.res != -libc::ECANCELED
            && fault::fault(Site::UringCancelled) == Some(Fault::Canceled)
        {
            // The operation did nothing (it failed, or it was a poll): its
            // cancel could as well have won.
            cqe.res = -libc::ECANCELED;
        }
        let h = &mut rs.held;
        if h.len < HELD_MAX && fault::fault(Site::UringReap) == Some(Fault::Late) {
            h.count = h.count.wrapping_add(1);
            h.cqes[h.len] = (cqe, 1 + (h.count % 3) as u8);
            h.len += 1;
            return None;
        }
        Some(cqe)
    }

    /// Hands on the held CQEs whose passes are up (all of them at
    /// shutdown), in the order they were held; returns how many.
    #[cold]
    pub(crate) fn release_held(&self, rs: &mut RunnerState, ops: &mut OpQueue) -> usize {
        let mut kept = 0;
        let mut released = 0;
        for i in 0..rs.held.len {
            let (cqe, wait) = rs.held.cqes[i];
            if wait > 1 && !rs.shutting_down {
                rs.held.cqes[kept] = (cqe, wait - 1);
                kept += 1;
                continue;
            }
            // SAFETY: a user operation's CQE, which the reaper held
            // instead of handing on: the op still waits for it, live and
            // on no queue (push's contract), until queued here.
            unsafe {
                let op = if cqe.user_data & TAG_MASK == TAG_POOLED {
                    self.pooled_cqe(cqe)
                } else {
                    Self::op_cqe(cqe)
                };
                ops.push(op);
            }
            released += 1;
        }
        rs.held.len = kept;
        rs.completed += released as u64;
        released
    }
}

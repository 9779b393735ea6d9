//! pinion-core: the backend-independent heart of pinion.
//!
//! Asio's core, rebuilt with intrusive lists and fixed pools:
//!
//! - [`op`]: the operation header (link, complete-or-destroy function,
//!   result slot) every piece of queued work starts with;
//! - [`queue`]: the intrusive FIFO of operations;
//! - [`pool`] and [`storage`]: fixed-capacity slot pools whose memory is
//!   reserved when a context is built;
//! - [`scheduler`]: Asio's `scheduler`, the run loop (`run`, `poll`,
//!   `stop`, `restart`, `post`, `dispatch`, `defer`, work guards), generic
//!   over the backend [`task`] and the sync kit;
//! - [`strand`]: serialised, ordered handler execution;
//! - [`timer`]: the deadline heap both backends drive;
//! - [`buf`]: buffers that operations own while in flight;
//! - [`pooled`]: pooled reads' buffers and the software pool behind them;
//! - [`compose`]: `read`, `read_until` and `write`, written once over
//!   `read_some`/`write_some`.
//!
//! No allocation, no `std`: with the `alloc` feature, storage may be boxed
//! once at build time, and `Vec<u8>` can serve as a buffer.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

// Tests use boxed storage too, so miri sees no leak from them.
#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod buf;
pub mod compose;
mod error;
pub mod op;
pub mod pool;
pub mod pooled;
pub mod queue;
pub mod scheduler;
pub mod storage;
pub mod strand;
pub mod task;
pub mod timer;

pub use error::{Error, Result};
pub use op::{Invoke, OpResult, Operation};
pub use pool::{OpSlot, SlotPool, StaticSlots, OP_SLOT_SIZE};
pub use queue::OpQueue;
pub use scheduler::{Here, Scheduler, WorkGuard};
pub use storage::Storage;
pub use strand::Strand;
pub use task::{NoTask, Task, Wait};

use core::fmt;

/// A value handed back because it could not be queued: the error says
/// why, `handler` is the caller's handler (with its buffer, for I/O).
pub struct Rejected<H> {
    /// Why the value was not accepted.
    pub error: Error,
    /// The handler (and buffer) the caller gave, unrun.
    pub handler: H,
}

impl<H> fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<H> fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

//! pinion-core: the backend-independent heart of pinion.
//!
//! Asio's core, rebuilt with intrusive lists and fixed pools:
//!
//! - [`op`]: the operation header (link, complete-or-destroy function,
//!   result slot) every piece of queued work starts with;
//! - [`queue`]: the intrusive FIFO of operations;
//! - [`pool`] and [`storage`]: fixed-capacity operation slots whose memory
//!   is reserved when a context is built;
//! - [`slab`]: the one fixed-capacity table of entries named by index and
//!   generation (descriptor tables, timer objects);
//! - [`scheduler`]: Asio's `scheduler`, the run loop (`run`, `poll`,
//!   `stop`, `restart`, `post`, `dispatch`, `defer`, work guards), generic
//!   over the backend task and the sync kit;
//! - [`backend`]: the contract a backend implements and the plumbing only
//!   a backend may use;
//! - [`strand`]: serialised, ordered handler execution;
//! - [`timer`]: the deadline heap and the timer service both backends use;
//! - [`buf`]: buffers that operations own while in flight;
//! - [`pooled`]: pooled reads' buffers and the software pool behind them;
//! - [`compose`]: `read`, `read_until` and `write`, written once over
//!   `read_some`/`write_some`;
//! - [`memory`]: the regions of a context's fixed memory and the report
//!   made from them;
//! - [`word64`]: a 64-bit value shared without 64-bit atomics where the
//!   target has none.
//!
//! No allocation, no `std`: with the `alloc` feature, storage may be boxed
//! once at build time, and `Vec<u8>` can serve as a buffer.
#![cfg_attr(not(any(test, feature = "std", loom)), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

// Tests use boxed storage too, so miri sees no leak from them.
#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod backend;
pub mod buf;
pub mod compose;
mod error;
// The fuzz targets' entry points (fuzz/fuzz_targets/*.rs call them, as
// tokio's `fuzz_linked_list` does), next to the test helpers they reuse;
// the unit tests replay the committed seed corpus through them.
#[cfg(any(test, all(fuzzing, feature = "std")))]
#[doc(hidden)]
pub mod fuzz;
mod loom;
pub mod memory;
pub mod op;
pub mod pool;
pub mod pooled;
pub mod queue;
pub mod scheduler;
pub mod slab;
pub mod stats;
pub mod storage;
pub mod strand;
pub mod task;
pub mod timer;
pub mod word64;

pub use error::{Errno, Error, Pool, Rejected, Result, SocketKind};
pub use op::{Invoke, OpResult, Operation};
pub use pool::{OpSlot, SlotPool, OP_SLOT_SIZE};
pub use queue::OpQueue;
pub use scheduler::{Here, Scheduler, WorkGuard};
pub use storage::{StaticArray, StaticCell, Storage};
pub use strand::Strand;

//! pinion's own io_uring ABI: the kernel's structs and constants, the
//! three system calls, the ring's mappings and in-place SQ/CQ views.
//! No bindings generated for another target: every struct shared with
//! the kernel has its size and offsets asserted at compile time, the
//! system call numbers are libc's for the target (`SYS_io_uring_*`), and
//! the mmap offsets are the target's `off_t`. So the same code serves
//! x86_64, i686, armv7, armv5te, aarch64, riscv64 and MIPS.
//!
//! - [`abi`]: `io_uring_sqe`, `io_uring_cqe`, `io_uring_params` and its
//!   offsets, `__kernel_timespec`, `io_uring_getevents_arg`, the buffer
//!   ring, the probe; opcodes, SQE/CQE flags, setup flags, feature bits,
//!   register opcodes;
//! - `call`: [`setup`], [`enter`], [`register`]: **every**
//!   `io_uring_enter` and `io_uring_register` pinion makes goes through
//!   [`enter`] and [`register`] (the seam for fault injection);
//! - `ring`: [`Ring`] (setup and mappings, submit, registrations) and
//!   [`Probe`];
//! - `queue`: [`Sq`] and [`Cq`], the rings read and written in place;
//! - `prep`: [`Target`] and the [`Sqe`] constructors.
//!
//! ```
//! use pinion_sys::uring::{abi::Params, Ring, Sqe};
//!
//! # #[cfg(not(miri))] {
//! let Ok(ring) = Ring::new(4, Params::default()) else {
//!     use std::io::Write;
//!     let _ = writeln!(std::io::stderr(), "SKIPPED the uring doctest: no io_uring here");
//!     return;
//! };
//! // SAFETY: the first and only call; the views die with `ring`.
//! let (mut sq, cq) = unsafe { ring.queues() };
//! // SAFETY: room in a fresh ring; a NOP carries no pointer.
//! unsafe { sq.push(&Sqe::nop().user_data(42)) };
//! ring.submit(1, None).unwrap();
//! // SAFETY: the only reaper; the CQE is read before the head moves.
//! let cqe = unsafe {
//!     let head = cq.head();
//!     let (p, n) = cq.entries().run(head, cq.tail());
//!     assert_eq!(n, 1);
//!     let cqe = *p;
//!     cq.set_head(head.wrapping_add(1));
//!     cqe
//! };
//! assert_eq!((cqe.user_data, cqe.res), (42, 0));
//! # }
//! ```

pub mod abi;
mod call;
mod prep;
mod queue;
mod ring;

pub use abi::{Cqe, Sqe};
pub use call::{enter, register, setup};
pub use prep::{cqe_buffer, cqe_more, cqe_notif, Target};
pub use queue::{Cq, CqEntries, Sq};
pub use ring::{Probe, Ring};

#[cfg(test)]
mod tests;

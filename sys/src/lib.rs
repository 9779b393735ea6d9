//! pinion-sys: the kernel boundary that pinion's backends share.
//!
//! Every system call the epoll and io_uring backends make outside their
//! own polling interface goes through here, and every `-1` becomes an
//! [`Errno`] in one place. No allocation, no std (see the `std` feature).
//!
//! - `errno`: [`Errno`], an error number with its name (`ECONNRESET`) and a
//!   short description; one associated constant per Linux errno
//!   ([`Errno::CONNRESET`]...), all taken from `libc` so that MIPS, SPARC
//!   and the other architectures with their own numbering are right.
//!
//! Only [`Errno`] exists on targets other than Linux (bare metal): without
//! libc it has no names, no constants and no [`Errno::last`].
//!
//! Features: `std` adds `std::error::Error` for [`Errno`] and
//! `From<Errno>` for `std::io::Error`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

mod errno;

pub use errno::Errno;

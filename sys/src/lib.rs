//! pinion-sys: the kernel boundary that pinion's backends share.
//!
//! Every system call the epoll and io_uring backends make outside their
//! own polling interface goes through here, and every `-1` becomes an
//! [`Errno`] in one place. No allocation, no std (see the `std` feature).
//!
//! - `errno`: [`Errno`], an error number with its name (`ECONNRESET`) and a
//!   short description; one associated constant per Linux errno
//!   ([`Errno::CONNRESET`]...), all taken from `libc` so that MIPS, SPARC
//!   and the other architectures with their own numbering are right;
//! - `syscall`: [`syscall!`] (call a libc function, `-1` becomes
//!   `Err(Errno)`), [`syscall_retry!`] and [`retry_eintr`] for `EINTR`;
//! - `fd`: [`Fd`], an owned descriptor closed on drop;
//! - [`addr`]: [`RawAddr`](addr::RawAddr), an IPv4 or IPv6 socket address
//!   in the kernel's layout, and the conversions from and to
//!   [`core::net::SocketAddr`];
//! - [`socket`]: socket, bind, listen, connect, accept, addresses,
//!   shutdown, `int` options, `SO_ERROR`, `O_NONBLOCK`, on raw descriptors;
//! - [`event`]: eventfd (signal, drain) and timerfd (absolute monotonic
//!   deadlines);
//! - [`fault`]: the seeded fault injector the backends' calls consult
//!   (feature `fault-injection`, tests only; empty hooks without it);
//! - [`mem`]: committing and locking memory (`MADV_POPULATE_WRITE`,
//!   `mlock`, `RLIMIT_MEMLOCK`);
//! - [`uring`]: pinion's own io_uring ABI (kernel structs, opcodes, the
//!   three system calls, the ring's mappings and in-place SQ/CQ views),
//!   the same on every Linux target.
//!
//! Only [`Errno`] exists on targets other than Linux (bare metal): without
//! libc it has no names, no constants and no [`Errno::last`].
//!
//! Features: `std` adds `std::error::Error` for [`Errno`], `From<Errno>`
//! for `std::io::Error`, `AsRawFd` and `From<Fd>` for `OwnedFd`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

// First, so that the macros are in scope in the modules below.
#[cfg(target_os = "linux")]
#[macro_use]
mod syscall;

mod errno;
#[cfg(target_os = "linux")]
pub mod fd;

// A no_std program on musl, or on 32-bit ARM with glibc, links libc or
// libgcc through here (see the module's docs for why).
#[cfg(all(
    target_os = "linux",
    not(feature = "std"),
    any(target_env = "musl", all(target_arch = "arm", target_env = "gnu"))
))]
mod link;

#[cfg(target_os = "linux")]
pub mod addr;
#[cfg(target_os = "linux")]
pub mod event;
#[cfg(target_os = "linux")]
pub mod fault;
#[cfg(target_os = "linux")]
pub mod mem;
#[cfg(target_os = "linux")]
pub mod socket;
#[cfg(target_os = "linux")]
pub mod uring;

pub use errno::Errno;
#[cfg(target_os = "linux")]
pub use fd::Fd;
#[cfg(target_os = "linux")]
pub use syscall::retry_eintr;

/// libc for the macros' expansions, so that callers need not name it.
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub use libc as __libc;

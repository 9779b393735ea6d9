//! pinion: Asio's core (scheduler, reactor, strands, composed operations)
//! in Rust, with every byte of memory fixed when the context is built, on
//! epoll or io_uring.
//!
//! The backend is chosen with a cargo feature and nothing else:
//!
//! | feature | backend | the top-level types are |
//! |---|---|---|
//! | `epoll` (default) | Asio's `epoll_reactor` | [`epoll`]'s |
//! | `uring` | an io_uring proactor | [`uring`]'s (when `epoll` is off) |
//!
//! With both features on, the top level is epoll and both are reachable
//! side by side as `pinion::epoll::…` and `pinion::uring::…`, which is how
//! `examples/compare.rs` runs one program on each.
//!
//! # Layout
//!
//! - [`context`]: [`IoContext`], the run loop and handler queue, and
//!   [`builder`]: [`Builder`], which sizes every pool, and [`memory`]:
//!   what the pools reserve, committing and locking them;
//! - [`net`]: [`TcpListener`], [`TcpStream`], [`UdpSocket`], and the Unix
//!   forms [`UnixListener`], [`UnixStream`], [`UnixDatagram`], one code
//!   generic over the address family; [`timer`]:
//!   [`SteadyTimer`]; [`strand`]: [`Strand`]; [`Owned`], the closing form
//!   of any handle;
//! - [`compose`]: `async_read`, `async_read_until`, `async_write` over any
//!   stream; [`buf`]: the buffer traits and fixed buffer pools;
//! - [`process`]: the entry point, arguments, stderr and exit of a
//!   `#![no_std]` `#![no_main]` program ([`no_std_main!`]);
//! - [`backend`]: the contract a backend implements (for generic code:
//!   every type above is generic over `B: Backend`, and the top-level and
//!   per-backend names are aliases for one backend).
//!
//! ```
//! use pinion::compose::async_write;
//! use std::net::SocketAddr;
//!
//! let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
//! let listener = pinion::TcpListener::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
//! let addr: SocketAddr = listener.local_addr().unwrap();
//! listener
//!     .async_accept(move |r| {
//!         let (s, _) = r.unwrap();
//!         async_write(&s, &b"hello\n"[..], move |r, _| {
//!             assert_eq!(r, Ok(6));
//!             s.close().unwrap();
//!         })
//!         .unwrap();
//!         listener.close().unwrap();
//!     })
//!     .unwrap();
//! let client = std::thread::spawn(move || {
//!     use std::io::Read;
//!     let mut s = std::net::TcpStream::connect(addr).unwrap();
//!     let mut got = String::new();
//!     s.read_to_string(&mut got).unwrap();
//!     got
//! });
//! ctx.run();
//! assert_eq!(client.join().unwrap(), "hello\n");
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]

#[cfg(not(any(feature = "epoll", feature = "uring")))]
compile_error!(
    "pinion: no backend selected. Enable feature `epoll` (the default) or `uring`, \
     e.g. `cargo build --no-default-features --features uring`."
);

pub mod aio;
pub mod builder;
pub mod context;
pub mod fd;
mod handler;
pub mod memory;
pub mod net;
mod owned;
pub mod process;
pub mod serial;
pub mod signal;
pub mod strand;
pub mod time;
pub mod timer;

/// Tasks (async/await): [`IoContext::spawn`](crate::IoContext::spawn),
/// [`JoinHandle`](task::JoinHandle), [`yield_now`](task::yield_now), and
/// the memory of task slots for contexts built on static memory.
pub mod task {
    pub use pinion_core::slab::Entry;
    pub use pinion_core::task::{
        yield_now, JoinHandle, TaskChunk, TaskHeader, TaskStorage, YieldNow,
    };

    /// Runs `future` as a task bound to `strand` (see
    /// [`Strand::spawn`](crate::strand::Strand::spawn)).
    pub fn spawn_on<B, F>(
        strand: &crate::strand::Strand<'static, B>, future: F,
    ) -> Result<JoinHandle<F::Output>, crate::Rejected<F>>
    where
        B: crate::Backend,
        F: core::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        strand.spawn(future)
    }
}

/// Buffers that operations own while in flight, and fixed pools of them.
pub mod buf {
    /// The `heapless` pinion's buffer impls are written for (feature
    /// `heapless`): a `&'static mut heapless::Vec<u8, N>` is an
    /// [`IoBuf`]/[`IoBufMut`].
    #[cfg(feature = "heapless")]
    pub use heapless;
    pub use pinion_core::buf::*;
    pub use pinion_core::pooled::{PooledBuf, ReadBufferCount};
}

/// Composed operations over any stream: `async_read` with completion
/// conditions, `async_read_until`, `async_write`.
pub mod compose {
    pub use pinion_core::compose::*;
}

/// The backend contract (for generic code and backend implementors).
pub mod backend {
    pub use pinion_core::backend::*;
}

/// The synchronisation primitives pinion is built on (for buffer pools
/// and programs that want the same mutexes).
pub mod sync {
    pub use pinion_sync::*;
}

pub use buf::{IoBuf, IoBufMut, PooledBuf, ReadBufferCount, Slice};
pub use owned::{Close, Owned};
pub use pinion_core::backend::{Backend, BuildError};
pub use pinion_core::{Errno, Error, Pool, Rejected, Result, SocketKind};
pub use pinion_core::{OpSlot, StaticArray, StaticCell, OP_SLOT_SIZE};
/// Tests only: the seeded fault injector at the kernel boundary (feature
/// `fault-injection`; see `scripts/faults.sh`).
#[cfg(feature = "fault-injection")]
pub use pinion_sys::fault;
pub use pinion_sys::socket::Shutdown;
pub use time::Instant;

/// Names every user type for one backend.
macro_rules! aliases {
    ($b:ty) => {
        /// The I/O context.
        pub type IoContext = $crate::context::IoContext<$b>;
        /// Sizes and builds an [`IoContext`].
        pub type Builder = $crate::builder::Builder<$b>;
        /// Keeps `run` from running out of work while alive.
        pub type WorkGuard<'a> = $crate::context::WorkGuard<'a, $b>;
        /// A listening TCP socket.
        pub type TcpListener<'c> = $crate::net::TcpListener<'c, $b>;
        /// A connected TCP socket.
        pub type TcpStream<'c> = $crate::net::TcpStream<'c, $b>;
        /// A UDP socket.
        pub type UdpSocket<'c> = $crate::net::UdpSocket<'c, $b>;
        /// A listening Unix-domain stream socket.
        pub type UnixListener<'c> = $crate::net::UnixListener<'c, $b>;
        /// A connected Unix-domain stream socket.
        pub type UnixStream<'c> = $crate::net::UnixStream<'c, $b>;
        /// A Unix-domain datagram socket.
        pub type UnixDatagram<'c> = $crate::net::UnixDatagram<'c, $b>;
        /// A timer on the context's steady clock.
        pub type SteadyTimer<'c> = $crate::timer::SteadyTimer<'c, $b>;
        /// Serialised, ordered handlers.
        pub type Strand<'c> = $crate::strand::Strand<'c, $b>;
    };
}

/// The epoll backend (Asio's `epoll_reactor`), named.
#[cfg(feature = "epoll")]
pub mod epoll {
    pub use pinion_core::slab::Entry;
    pub use pinion_core::timer::{TimerEntry, TimerObj, TimerSlot};
    pub use pinion_epoll::{DescriptorSlot, Parts, Reactor, Stats};
    /// This module's backend.
    pub type Backend = Reactor;
    aliases!(Reactor);
}

/// The io_uring backend (a proactor), named.
#[cfg(feature = "uring")]
pub mod uring {
    /// The kernel's io_uring ABI as pinion speaks it (opcodes for
    /// [`Builder::assume_missing`], flags, structs).
    pub use pinion_sys::uring::abi;
    pub use pinion_uring::{Options, Parts, Proactor, RingInfo, Stats};
    /// This module's backend.
    pub type Backend = Proactor;
    aliases!(Proactor);
}

/// The backend the top-level names use: epoll when its feature is on,
/// otherwise io_uring.
#[cfg(feature = "epoll")]
pub type DefaultBackend = pinion_epoll::Reactor;
/// The backend the top-level names use: epoll when its feature is on,
/// otherwise io_uring.
#[cfg(all(feature = "uring", not(feature = "epoll")))]
pub type DefaultBackend = pinion_uring::Proactor;

aliases!(DefaultBackend);

/// The README's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

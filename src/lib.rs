//! pinion: Asio's core (scheduler, reactor, strands, composed operations)
//! in Rust, with every byte of memory fixed when the context is built, on
//! epoll or io_uring.
//!
//! The backend is chosen with a cargo feature and nothing else:
//!
//! | feature | backend | top-level types come from |
//! |---|---|---|
//! | `epoll` (default) | Asio's `epoll_reactor` | [`epoll`] |
//! | `uring` | io_uring proactor | [`uring`] (when `epoll` is off) |
//!
//! With both features on, the top level is epoll and both are reachable
//! side by side as `pinion::epoll::…` and `pinion::uring::…`, which is how
//! `examples/compare.rs` runs one program on each.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

#[cfg(not(any(feature = "epoll", feature = "uring")))]
compile_error!(
    "pinion: no backend selected. Enable feature `epoll` (the default) or `uring`, \
     e.g. `cargo build --no-default-features --features uring`."
);

pub use pinion_core as core;
pub use pinion_sync as sync;

pub use pinion_core::buf::{IoBuf, IoBufMut, Slice};
pub use pinion_core::compose::{AsyncReadSome, AsyncWriteSome};
pub use pinion_core::{Error, Rejected, Result};

/// The epoll reactor backend.
#[cfg(feature = "epoll")]
pub use pinion_epoll as epoll;

/// The io_uring proactor backend.
#[cfg(feature = "uring")]
pub use pinion_uring as uring;

#[cfg(feature = "epoll")]
pub use pinion_epoll::{
    Builder, IoContext, PooledBuf, ReadBufferCount, Shutdown, SteadyTimer, Strand, TcpListener,
    TcpStream, UdpSocket,
};

#[cfg(all(feature = "uring", not(feature = "epoll")))]
pub use pinion_uring::{
    BuildError, Builder, IoContext, PooledBuf, ReadBufferCount, RingInfo, Shutdown, SteadyTimer,
    Strand, TcpListener, TcpStream, UdpSocket,
};

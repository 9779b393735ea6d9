//! Process-wide descriptor tests (fd limit, fd leaks), per backend, in a
//! binary of their own so no other test opens descriptors meanwhile.
//! Instantiated like `conformance.rs`.

// The same suite files are loaded once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

mod util;

#[cfg(feature = "epoll")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::epoll as $b;
    };
}
#[cfg(feature = "epoll")]
#[path = "process/mod.rs"]
mod epoll;

#[cfg(feature = "uring")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::uring as $b;
    };
}
#[cfg(feature = "uring")]
#[path = "process/mod.rs"]
mod uring;

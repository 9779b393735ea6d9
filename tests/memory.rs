//! Process-wide memory tests (resident set size, locked memory,
//! `RLIMIT_MEMLOCK`), per backend, in a binary of their own so no other
//! test allocates or locks meanwhile; one test at a time. Instantiated
//! like `conformance.rs`.

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
#[path = "memory/mod.rs"]
mod epoll;

#[cfg(feature = "uring")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::uring as $b;
    };
}
#[cfg(feature = "uring")]
#[path = "memory/mod.rs"]
mod uring;

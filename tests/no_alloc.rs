//! No heap allocation on any I/O path: 10,000 echo round trips under a
//! counting global allocator (a global allocator is per binary, hence a
//! binary of its own). Instantiated per backend like `conformance.rs`.

// The same suite files are loaded once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

mod util;

#[global_allocator]
static ALLOC: util::CountingAlloc = util::CountingAlloc;

#[cfg(feature = "epoll")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::epoll as $b;
    };
}
#[cfg(feature = "epoll")]
#[path = "alloc/mod.rs"]
mod epoll;

#[cfg(feature = "uring")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::uring as $b;
    };
}
#[cfg(feature = "uring")]
#[path = "alloc/mod.rs"]
mod uring;

//! Process-wide descriptor tests (fd limit, fd leaks), per backend, in a
//! binary of their own so no other test opens descriptors meanwhile.
//! Instantiated like `conformance.rs`.

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

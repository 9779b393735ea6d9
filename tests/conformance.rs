//! The conformance suite (`tests/suite/`), once per enabled backend.
//!
//! The suite names its backend only as `b`, which `backend!(b)` (first
//! line of `suite/mod.rs`) defines. Each instantiation below defines
//! `backend!` for one backend, then includes the same suite as a module
//! named after it (`macro_rules!` scope is textual, so the later
//! definition is the one the later module sees). A new backend adds two
//! items here and changes nothing in the suite.

// The same suite files are loaded once per backend, on purpose.
#![allow(clippy::duplicate_mod)]

mod util;

#[cfg(feature = "epoll")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::epoll as $b;
        /// The builders `race.rs` runs on.
        pub(crate) fn race_builders() -> Vec<(&'static str, $b::Builder)> {
            vec![("the default builder", $b::Builder::new())]
        }
    };
}
#[cfg(feature = "epoll")]
macro_rules! pooled_reads {
    () => {
        mod pooled;
    };
}
#[cfg(feature = "epoll")]
#[path = "suite/mod.rs"]
mod epoll;

#[cfg(feature = "uring")]
macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::uring as $b;
        /// The builders `race.rs` runs on: every way a socket can be named
        /// in an SQE, and both kinds of accept.
        pub(crate) fn race_builders() -> Vec<(&'static str, $b::Builder)> {
            vec![
                (
                    "registered files and single-shot accept (the defaults)",
                    $b::Builder::new(),
                ),
                ("plain fds", $b::Builder::new().registered_files(false)),
                (
                    "multishot accept",
                    $b::Builder::new().multishot_accept(true),
                ),
            ]
        }
    };
}
#[cfg(feature = "uring")]
macro_rules! pooled_reads {
    () => {
        mod pooled;
    };
}
#[cfg(feature = "uring")]
#[path = "suite/mod.rs"]
mod uring;

//! The interrupter: a descriptor that is always readable, registered
//! edge-triggered, so that `EPOLL_CTL_MOD` on it makes a blocked
//! `epoll_wait` return (Asio's `eventfd_select_interrupter` /
//! `pipe_select_interrupter` as the epoll_reactor uses them).
//!
//! It is made readable once, at creation, and never drained: re-arming the
//! registration with `EPOLL_CTL_MOD` re-evaluates readiness, which queues
//! one new edge. One variant per file, picked by the `pipe-interrupter`
//! feature.

#[cfg(not(feature = "pipe-interrupter"))]
#[path = "interrupter/eventfd.rs"]
mod imp;
#[cfg(feature = "pipe-interrupter")]
#[path = "interrupter/pipe.rs"]
mod imp;

pub(crate) use imp::Interrupter;

//! The conformance suite: every test here is written against the backend
//! module alias `b` (defined by the includer's `backend!` macro), and
//! `tests/conformance.rs` instantiates the whole suite once per enabled
//! backend. Nothing in it names a backend.
//!
//! Every wait is bounded ([`run_until`] gives up after the watchdog) and
//! no test asserts on elapsed time. Helpers written against `b` live in
//! `support.rs`, which the other per-backend binaries include too.

backend!(b);

mod support;
pub(crate) use support::*;

mod aio;
mod cancel;
mod caps;
mod compose;
mod pool;
// Pooled reads, for the backends that have them (see conformance.rs).
pooled_reads!();
mod race;
mod tcp;
mod timer;
mod udp;
mod wake;

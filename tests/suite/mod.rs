//! The conformance suite: every test here is written against the backend
//! module alias `b` (defined by the includer's `backend!` macro), and
//! `tests/conformance.rs` instantiates the whole suite once per enabled
//! backend. Nothing in it names a backend.
//!
//! Every wait is bounded ([`run_until`] gives up after the watchdog) and
//! no test asserts on elapsed time. Helpers written against `b` live in
//! `support.rs`, which the other per-backend binaries include too.

backend!(b);

/// The test's context (`ctx_or_skip!()`: the suite's default builder;
/// `ctx_or_skip!(builder)`), or a return from the test, skipped and said
/// so on stderr, where the backend cannot run here ([`Ctx::try_with`]).
macro_rules! ctx_or_skip {
    () => {
        ctx_or_skip!(super::Ctx::builder())
    };
    ($builder:expr $(,)?) => {
        match super::Ctx::try_with($builder) {
            Some(ctx) => ctx,
            None => return,
        }
    };
}

mod support;
pub(crate) use support::*;

mod aio;
mod cancel;
mod caps;
mod compose;
mod fd;
mod opts;
mod pool;
// Pooled reads, for the backends that have them (see conformance.rs).
pooled_reads!();
mod race;
mod serial;
mod tcp;
mod timer;
mod udp;
mod unix;
mod vectored;
mod wake;

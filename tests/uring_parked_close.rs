//! io_uring: a close whose cancel the kernel could not take (every
//! `io_uring_enter` failing, as the fault injector makes it) parks its
//! teardown, and the slot it holds comes back without a runner: to the
//! next registration that finds the table full, and to the next close.
//! Before, only `Task::run` finished a parked close, which a context with
//! no outstanding work never runs, so the slot stayed taken (found by
//! the fault-injection helper).
//!
//! Needs `--features uring,fault-injection`.
#![cfg(all(feature = "uring", feature = "fault-injection"))]

mod uring_util;
mod util;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnix;

use pinion::fault::{self, Fault, Schedule, Site};
use pinion::uring::{Builder, UnixStream};
use pinion::{Error, Pool};
use uring_util::*;

/// Every `io_uring_enter` on this thread fails with `EAGAIN` (the kernel
/// could not allocate request memory), which a close retries within its
/// bound, so its cancel is never submitted.
fn fail_every_enter() {
    fault::arm(Schedule {
        seed: 1,
        rate: fault::ALWAYS,
        kinds: 1 << Fault::Again as u32,
        surfacing_budget: 0,
    });
}

/// A registered stream on one end of a socketpair, and the other end.
fn stream(
    ctx: &'static pinion::uring::IoContext,
) -> pinion::Result<(UnixStream<'static>, StdUnix)> {
    let (a, b) = StdUnix::pair().unwrap();
    UnixStream::from_fd(ctx, OwnedFd::from(a).into()).map(|s| (s, b))
}

/// Parks the close of `s` (its cancel cannot be submitted) and checks it
/// was parked: the slot still counts.
fn park_close(ctx: &'static pinion::uring::IoContext, s: UnixStream<'static>) {
    let before = ctx.descriptors_in_use();
    fail_every_enter();
    let closed = s.close();
    let log = fault::disarm();
    assert_eq!(closed, Ok(()));
    assert!(
        log.injected_at(Site::UringEnter) > 0,
        "the close tried to submit its cancel"
    );
    assert_eq!(
        ctx.descriptors_in_use(),
        before,
        "the close is parked: its slot waits for the kernel"
    );
    assert_eq!(s.as_raw_fd(), -1, "the handle is stale at once");
}

#[test]
fn a_full_table_takes_the_slot_of_a_parked_close_without_a_runner() {
    let _g = serial();
    let test = "a_full_table_takes_the_slot_of_a_parked_close_without_a_runner";
    let Some(ctx) = ctx_or_skip(Builder::new().ops(8).descriptors(1).timers(1), test) else {
        return;
    };
    let (s, peer) = stream(ctx).unwrap();
    park_close(ctx, s);
    // No run(): the context has no work. The one slot is the parked
    // close's; registering finishes that close and takes it.
    let (s2, _peer2) = stream(ctx).expect("the parked close's slot is taken");
    assert_eq!(ctx.descriptors_in_use(), 1);
    // The parked socket itself was closed: its peer reads end of stream.
    peer.set_read_timeout(Some(util::WATCHDOG)).unwrap();
    assert_eq!(std::io::Read::read(&mut &peer, &mut [0u8; 1]).unwrap(), 0);
    // Full for real: the named error.
    assert_eq!(stream(ctx).err(), Some(Error::PoolFull(Pool::Descriptors)));
    s2.close().unwrap();
    assert_eq!(ctx.descriptors_in_use(), 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn the_next_close_finishes_a_parked_one() {
    let _g = serial();
    let test = "the_next_close_finishes_a_parked_one";
    let Some(ctx) = ctx_or_skip(Builder::new().ops(8).descriptors(4).timers(1), test) else {
        return;
    };
    let (a, _pa) = stream(ctx).unwrap();
    let (b, _pb) = stream(ctx).unwrap();
    park_close(ctx, a);
    assert_eq!(ctx.descriptors_in_use(), 2);
    b.close().unwrap();
    assert_eq!(ctx.descriptors_in_use(), 0, "both torn down, no run()");
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// The last handler parks a close: `run` does not return with the socket
/// half closed (before, it returned at once for lack of work and the slot
/// and fd stayed taken until a later call: `echo_with_sqpoll` on i686 and
/// the race suite under load saw one descriptor left after `run`).
#[test]
fn run_returns_only_after_a_close_parked_by_its_last_handler() {
    let _g = serial();
    let test = "run_returns_only_after_a_close_parked_by_its_last_handler";
    let Some(ctx) = ctx_or_skip(Builder::new().ops(8).descriptors(2).timers(1), test) else {
        return;
    };
    let (s, peer) = stream(ctx).unwrap();
    ctx.post(move || park_close(ctx, s)).unwrap();
    run_watched(ctx);
    assert_eq!(
        ctx.descriptors_in_use(),
        0,
        "the parked close finished inside run"
    );
    peer.set_read_timeout(Some(util::WATCHDOG)).unwrap();
    assert_eq!(std::io::Read::read(&mut &peer, &mut [0u8; 1]).unwrap(), 0);
    // A context with no work and nothing parked still returns at once.
    assert_eq!(ctx.run(), 0);
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

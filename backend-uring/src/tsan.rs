//! The io_uring hand-over, told to ThreadSanitizer.
//!
//! A thread that starts an operation writes it, then publishes its SQE
//! (the SQ tail, a Release store the kernel reads); the runner that reaps
//! its CQE (after an Acquire load of the CQ tail the kernel wrote) writes
//! the operation's result. The kernel orders the two, but TSan sees
//! neither side of the kernel and reports the runner's write as a race
//! with the starter's (issue 15: 51 reports, `Operation::set_result`).
//!
//! Built with `--cfg pinion_tsan` (`scripts/sanitize.sh thread`), every
//! publish is a Release read-modify-write of one counter, and every reap
//! starts with an Acquire load of it: the load reads the last increment,
//! whose release sequence holds every earlier publish, so each SQE
//! published before the reap happens-before it, as the kernel makes it.
//! Without the cfg both functions are empty: nothing changes in a normal
//! build (`instr.sh` io_uring figures identical).

#[cfg(pinion_tsan)]
static HANDOVER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// After writing an operation and its SQE, before the kernel may see it.
#[inline(always)]
pub(crate) fn published() {
    #[cfg(pinion_tsan)]
    HANDOVER.fetch_add(1, core::sync::atomic::Ordering::Release);
}

/// Before reading the CQEs the kernel published.
#[inline(always)]
pub(crate) fn reaping() {
    #[cfg(pinion_tsan)]
    HANDOVER.load(core::sync::atomic::Ordering::Acquire);
}
